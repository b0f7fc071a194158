"""Certificate expiry: which certificates end when, and which end within the warning time.

h-sec's certificate rotation may bring a shared function for this; `expiry_check` is the
one place doctor asks, so it can be replaced there.
"""

from __future__ import annotations

import ssl
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from .result import Check, Level

WARN_DAYS = 30
DAY = 86400.0


def not_after_of_file(path: str) -> float | None:
    """The certificate's end of validity (epoch seconds), None when the file is no PEM
    certificate we can read. The first certificate of a bundle counts."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError):
        return None
    begin = text.find("-----BEGIN CERTIFICATE-----")
    end = text.find("-----END CERTIFICATE-----", begin)
    if begin < 0 or end < 0:
        return None
    pem = text[begin : end + len("-----END CERTIFICATE-----")] + "\n"
    # The standard library decodes a certificate only from a file (ssl._ssl's test helper
    # is the one decoder it has; it takes a path).
    with tempfile.NamedTemporaryFile("w", suffix=".pem") as f:
        f.write(pem)
        f.flush()
        try:
            decoded = ssl._ssl._test_decode_cert(f.name)  # type: ignore[attr-defined]
        except (ssl.SSLError, ValueError):
            return None
    return not_after_of_decoded(decoded)


def not_after_of_decoded(decoded: Mapping[str, object]) -> float | None:
    """From the dict `SSLSocket.getpeercert()` returns."""
    value = decoded.get("notAfter")
    if not isinstance(value, str):
        return None
    return float(ssl.cert_time_to_seconds(value))


def expiry_check(
    not_after: Mapping[str, float], unreadable: list[str], now: float | None = None
) -> Check:
    """One line for all certificates: fail if one has expired, warn within WARN_DAYS."""
    now = time.time() if now is None else now
    days = {name: (end - now) / DAY for name, end in not_after.items()}
    expired = sorted(n for n, d in days.items() if d <= 0)
    soon = sorted(n for n, d in days.items() if 0 < d <= WARN_DAYS)
    details = {
        "days_left": {n: round(d, 1) for n, d in sorted(days.items())},
        "unreadable": unreadable,
        "warn_days": WARN_DAYS,
    }
    if expired:
        return Check("certificates", Level.FAIL, f"expired: {', '.join(expired)}", details)
    if soon:
        which = ", ".join(f"{n} in {days[n]:.0f} days" for n in soon)
        return Check(
            "certificates", Level.WARN, f"expire within {WARN_DAYS} days: {which}", details
        )
    if not days:
        return Check("certificates", Level.OK, "no TLS certificates in use", details)
    first = min(days, key=lambda n: days[n])
    extra = f"; unreadable: {', '.join(unreadable)}" if unreadable else ""
    return Check(
        "certificates",
        Level.OK,
        f"{len(days)} checked, the first to expire: {first} in {days[first]:.0f} days{extra}",
        details,
    )
