"""Stop signals that threads share: a plain Event, or several combined."""

from __future__ import annotations

import time
from typing import Protocol


class StopSignal(Protocol):
    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


class AnyEvent:
    """Set when any of its parts is set (e.g. 'agent stopping' or 'session lost')."""

    def __init__(self, *events: StopSignal) -> None:
        self._events = events

    def is_set(self) -> bool:
        return any(e.is_set() for e in self._events)

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            step = 0.05 if deadline is None else min(0.05, deadline - time.monotonic())
            if step <= 0:
                return False
            time.sleep(step)
        return True
