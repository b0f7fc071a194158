"""A unix datagram socket standing in for systemd's notify socket or journald's socket."""

from __future__ import annotations

import socket
import threading


class Listener:
    """A unix datagram socket standing in for systemd (or journald): keeps what it receives."""

    def __init__(self, address: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.1)
        self.received: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.received.append(self.sock.recv(65536))
            except TimeoutError:
                continue

    def count(self, line: str) -> int:
        return sum(1 for d in list(self.received) if line.encode() in d.split(b"\n"))

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()
