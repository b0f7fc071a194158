"""systemd's service notification protocol (sd_notify(3)), without libsystemd.

The protocol is one datagram of `KEY=VALUE` lines to the unix socket named by
$NOTIFY_SOCKET (a path, or `@name` in the abstract namespace). Ten lines of standard library
rather than a dependency: the PyPI implementations are unmaintained (sdnotify: 2017) or need
libsystemd's headers to build (systemd-python), and the protocol is a stable interface of
systemd's.
"""

from __future__ import annotations

import os
import socket


def notify(*lines: str, environ: dict[str, str] | None = None) -> bool:
    """Send `READY=1`, `WATCHDOG=1`, `STATUS=...`; False when not run by systemd (or failed)."""
    address = (os.environ if environ is None else environ).get("NOTIFY_SOCKET", "")
    if not address or address[0] not in "/@":
        return False
    if address[0] == "@":
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto("\n".join(lines).encode(), address)
    except OSError:
        return False  # systemd went away (shutdown): nothing to tell
    return True


def watchdog_interval(environ: dict[str, str] | None = None) -> float | None:
    """The unit's WatchdogSec in seconds when the watchdog is on for this very process."""
    env = os.environ if environ is None else environ
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return None
    return usec / 1_000_000
