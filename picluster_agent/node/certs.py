"""When certificate files expire: the expiry check of `picluster doctor` (issue 16).

Stdlib only, so that it runs on a node (whose venv has no `cryptography`) and on a laptop: a
PEM file is read as DER and only the fields needed are walked (RFC 5280: Certificate ->
tbsCertificate -> validity, subject). A file may hold several certificates (a trust bundle
holds two during a CA rotation): it is as good as its first to expire.

    file_expiries(node_cert_files())       # what `picluster doctor` reports on a node
    [f for f in ... if f.expires_within(CERT_EXPIRY_WARNING_DAYS)]
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from picluster_agent.defaults import CERT_EXPIRY_WARNING_DAYS

# Where the roles put certificates on a node: the agent's and the node group's
# (roles/picluster_agent), the member's and the peer's (roles/etcd); ca.crt in both.
NODE_CERT_DIRS = (Path("/etc/picluster/pki"), Path("/etc/etcd/pki"))

_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----\s*(.+?)\s*-----END CERTIFICATE-----", re.S)
_OID_COMMON_NAME = bytes([0x55, 0x04, 0x03])  # 2.5.4.3


class CertificateUnreadable(ValueError):
    """A file that is not a PEM certificate this module can read (the message says why)."""


@dataclass(frozen=True)
class FileExpiry:
    """One certificate file: when its first certificate to expire does, or why unknown."""

    path: Path
    subject: str = ""  # the CN of that certificate
    not_after: datetime | None = None
    error: str | None = None

    def days_left(self, now: datetime | None = None) -> float | None:
        if self.not_after is None:
            return None
        return (self.not_after - (now or datetime.now(UTC))) / timedelta(days=1)

    def expires_within(self, days: float = CERT_EXPIRY_WARNING_DAYS,
                       now: datetime | None = None) -> bool:  # fmt: skip
        """True when it expires (or has expired) within `days`; False when unknown."""
        left = self.days_left(now)
        return left is not None and left < days

    def describe(self, now: datetime | None = None) -> str:
        if self.error is not None:
            return f"{self.path}: {self.error}"
        left = self.days_left(now)
        assert self.not_after is not None and left is not None
        when = self.not_after.strftime("%Y-%m-%d %H:%M UTC")
        state = f"expired {-left:.0f} days ago" if left < 0 else f"{left:.0f} days left"
        return f"{self.path}: {self.subject or '(no CN)'} expires {when} ({state})"


def node_cert_files(dirs: Iterable[Path] = NODE_CERT_DIRS) -> list[Path]:
    """The certificate files (*.crt) of the directories that exist and can be listed."""
    files: list[Path] = []
    for d in dirs:
        try:
            files.extend(sorted(d.glob("*.crt")))
        except OSError:
            continue
    return files


def file_expiries(paths: Iterable[Path | str]) -> list[FileExpiry]:
    """Each file's expiry, in the order given; an unreadable file carries its error."""
    out = []
    for p in map(Path, paths):
        try:
            certs = read_certificates(p.read_bytes())
        except (OSError, CertificateUnreadable) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            out.append(FileExpiry(p, error=reason))
            continue
        subject, not_after = min(certs, key=lambda c: c[1])
        out.append(FileExpiry(p, subject, not_after))
    return out


def read_certificates(pem: bytes) -> list[tuple[str, datetime]]:
    """(CN, notAfter) of each certificate in a PEM text."""
    blocks = _PEM.findall(pem)
    if not blocks:
        raise CertificateUnreadable("no PEM certificate in the file")
    try:
        return [_subject_and_not_after(base64.b64decode(b, validate=False)) for b in blocks]
    except (IndexError, ValueError) as e:
        raise CertificateUnreadable(f"not a readable certificate ({e})") from e


# --- DER, just enough of it ---------------------------------------------------------------


def _tlv(der: bytes, at: int) -> tuple[int, int, int]:
    """(tag, start of the value, end of the value) of the element at `at`."""
    tag, length = der[at], der[at + 1]
    at += 2
    if length & 0x80:
        n = length & 0x7F
        if n == 0 or n > 4:
            raise ValueError("unsupported DER length")
        length = int.from_bytes(der[at : at + n], "big")
        at += n
    if at + length > len(der):
        raise ValueError("truncated DER")
    return tag, at, at + length


def _children(der: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    out = []
    while start < end:
        tag, vstart, vend = _tlv(der, start)
        out.append((tag, vstart, vend))
        start = vend
    return out


def _subject_and_not_after(der: bytes) -> tuple[str, datetime]:
    _, cstart, cend = _tlv(der, 0)  # Certificate
    _, tstart, tend = _children(der, cstart, cend)[0]  # tbsCertificate
    fields = _children(der, tstart, tend)
    if fields and fields[0][0] == 0xA0:  # [0] version, present from v2 on
        fields = fields[1:]
    # serialNumber, signature, issuer, validity, subject, ...
    validity, subject = fields[3], fields[4]
    not_after = _time(der, _children(der, validity[1], validity[2])[1])
    return _common_name(der, subject), not_after


def _time(der: bytes, element: tuple[int, int, int]) -> datetime:
    tag, start, end = element
    text = der[start:end].decode("ascii")
    if tag == 0x17:  # UTCTime, YYMMDDHHMMSSZ: years 1950-2049
        t = datetime.strptime(text, "%y%m%d%H%M%SZ")
        if t.year >= 2050:
            t = t.replace(year=t.year - 100)
    elif tag == 0x18:  # GeneralizedTime, YYYYMMDDHHMMSSZ
        t = datetime.strptime(text, "%Y%m%d%H%M%SZ")
    else:
        raise ValueError(f"unexpected time tag {tag:#x}")
    return t.replace(tzinfo=UTC)


def _common_name(der: bytes, subject: tuple[int, int, int]) -> str:
    for _, rstart, rend in _children(der, subject[1], subject[2]):  # each RDN (a SET)
        for _, astart, aend in _children(der, rstart, rend):  # AttributeTypeAndValue
            (_, ostart, oend), (_, vstart, vend) = _children(der, astart, aend)[:2]
            if der[ostart:oend] == _OID_COMMON_NAME:
                return der[vstart:vend].decode("utf-8", "replace")
    return ""
