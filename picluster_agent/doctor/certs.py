"""Certificate expiry: which certificates end when, and which end within the warning time.
Files are read by node/certs.py, the one certificate reader of the package."""

from __future__ import annotations

import ssl
import time
from collections.abc import Mapping

from ..node.certs import file_expiries
from .result import Check, Level

WARN_DAYS = 30
DAY = 86400.0


def not_after_of_file(path: str) -> float | None:
    """When the file's first certificate to expire does (epoch seconds): a trust bundle
    holds two during a CA rotation, and the older ends first. None when the file holds no
    certificate node/certs.py can read."""
    (expiry,) = file_expiries([path])
    return None if expiry.not_after is None else expiry.not_after.timestamp()


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
