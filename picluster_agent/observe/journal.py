"""Log lines for journald: a priority per line, structured fields, no second timestamp.

Under systemd (stderr is the journal stream named by $JOURNAL_STREAM) each record goes to
journald's native socket as one datagram of fields: MESSAGE, PRIORITY (so that
`journalctl -p warning` shows only warnings and errors), SYSLOG_IDENTIFIER, NODE (the
agent's name), JOB_ID (when the record names a job: `extra={"job_id": ...}`), LOGGER and the
code location. journald stamps the time itself. If the socket refuses a datagram, the line
goes to stderr with a `<N>` priority prefix, which journald also understands.
Outside systemd, lines keep the plain format with a timestamp (a terminal, a test log).
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import sys
from typing import TextIO

JOURNAL_SOCKET = "/run/systemd/journal/socket"
IDENTIFIER = "picluster"
# A datagram must fit the socket's send buffer; a longer message (a huge traceback) is cut.
MAX_MESSAGE = 48 * 1024

# logging level -> syslog priority (journald's PRIORITY=)
_PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))


def priority(level: int) -> int:
    for threshold, prio in _PRIORITIES:
        if level >= threshold:
            return prio
    return 7  # debug


def under_journald(stream: TextIO | None = None, environ: dict[str, str] | None = None) -> bool:
    """True when `stream` (stderr) is connected to journald (systemd.exec(5): JOURNAL_STREAM)."""
    env = os.environ if environ is None else environ
    stream = sys.stderr if stream is None else stream
    try:
        device, inode = (int(x) for x in env.get("JOURNAL_STREAM", "").split(":"))
        st = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (device, inode)


def _field(name: str, value: str) -> bytes:
    data = value.encode("utf-8", errors="replace")
    if b"\n" not in data:
        return name.encode() + b"=" + data + b"\n"
    # Multi-line values (tracebacks): the name, a newline, a 64-bit little-endian length.
    return name.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"


class JournalHandler(logging.Handler):
    """Sends each record to journald's native socket with its priority and fields."""

    def __init__(self, node: str, socket_path: str = JOURNAL_SOCKET) -> None:
        super().__init__()
        self.node = node
        self.socket_path = socket_path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.setFormatter(logging.Formatter("%(message)s"))

    def fields(self, record: logging.LogRecord) -> bytes:
        message = self.format(record)
        if len(message) > MAX_MESSAGE:
            message = message[:MAX_MESSAGE] + " [cut]"
        parts = [
            _field("MESSAGE", message),
            _field("PRIORITY", str(priority(record.levelno))),
            _field("SYSLOG_IDENTIFIER", IDENTIFIER),
            _field("NODE", self.node),
            _field("LOGGER", record.name),
            _field("CODE_FILE", record.pathname or ""),
            _field("CODE_LINE", str(record.lineno)),
            _field("CODE_FUNC", record.funcName or ""),
            _field("THREAD", record.threadName or ""),
        ]
        job_id = getattr(record, "job_id", None)
        if job_id:
            parts.append(_field("JOB_ID", str(job_id)))
        return b"".join(parts)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = self.fields(record)
        except Exception:
            self.handleError(record)
            return
        try:
            self._sock.sendto(data, self.socket_path)
        except OSError:
            # journald is restarting, or the datagram was too large: the stream still works.
            line = self.format(record).replace("\n", "\n  ")
            sys.stderr.write(f"<{priority(record.levelno)}>{record.name}: {line}\n")

    def close(self) -> None:
        self._sock.close()
        super().close()


def configure(node: str, level: int | str) -> None:
    """The agent's logging: journald's fields under systemd, else lines with a timestamp."""
    root = logging.getLogger()
    root.setLevel(level)
    if under_journald():
        handler: logging.Handler = JournalHandler(node)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s {node} %(levelname)s %(name)s: %(message)s")
        )
    root.addHandler(handler)
