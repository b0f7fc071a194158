"""Loops that must keep turning, and whether one has stopped.

Each long-lived loop of an agent (the lease keepalive, the worker, the master's scheduler)
calls `beat(name, within)` on every turn, saying how long its next turn may take at most.
A loop that misses its own deadline is stuck (a deadlock, a call that never returns); the
systemd watchdog (observe/watchdog.py) stops pinging then, and systemd restarts the agent.
A loop that ends on purpose calls `end(name)`. A beat is a clock read and a dict store:
loops beat freely.
"""

from __future__ import annotations

import threading
import time


class Liveness:
    def __init__(self) -> None:
        self._due: dict[str, float] = {}  # name -> monotonic time of the next beat at the latest
        self._lock = threading.Lock()

    def beat(self, name: str, within: float) -> None:
        due = time.monotonic() + within
        with self._lock:
            self._due[name] = due

    def end(self, name: str) -> None:
        with self._lock:
            self._due.pop(name, None)

    def stuck(self, now: float | None = None) -> dict[str, float]:
        """Loops past their deadline, with the seconds they are late."""
        now = time.monotonic() if now is None else now
        with self._lock:
            due = dict(self._due)
        return {name: now - t for name, t in due.items() if now > t}

    def loops(self) -> list[str]:
        with self._lock:
            return sorted(self._due)
