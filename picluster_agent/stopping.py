"""Stop signals that threads share: a plain Event, or several combined.

A thread waiting on several signals at once (AnyEvent) sleeps until one of them is set, with
no polling, when each part is a Flag (or an AnyEvent of Flags): the set() of a Flag wakes the
waiters subscribed to it. An idle agent's CPU is mostly its wakeups (issue 18: <= 1 % of a
core); a poll every 50 ms per waiting thread was most of it. A part that is a plain Event
cannot wake anyone, so an AnyEvent holding one falls back to looking every POLL seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

POLL = 0.05  # seconds between looks when a part cannot wake its waiters


class StopSignal(Protocol):
    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


Waker = Callable[[], None]


class Flag(threading.Event):
    """An Event whose set() also calls the wakers subscribed to it (AnyEvent's waits, a
    queue's reader). A waker runs in the setting thread: it must be quick and not block."""

    def __init__(self) -> None:
        super().__init__()
        self._wakers: list[Waker] = []
        self._wakers_lock = threading.Lock()

    def set(self) -> None:
        super().set()
        with self._wakers_lock:
            wakers = list(self._wakers)
        for wake in wakers:
            wake()

    def subscribe(self, wake: Waker) -> None:
        """Call `wake` at each set() from now on, and now if already set (no lost wakeup:
        a set() between the caller's check and this call is not missed)."""
        with self._wakers_lock:
            self._wakers.append(wake)
        if self.is_set():
            wake()

    def unsubscribe(self, wake: Waker) -> None:
        with self._wakers_lock:
            if wake in self._wakers:
                self._wakers.remove(wake)


class AnyEvent:
    """Set when any of its parts is set (e.g. 'agent stopping' or 'session lost')."""

    def __init__(self, *events: StopSignal) -> None:
        self._events = events

    def is_set(self) -> bool:
        return any(e.is_set() for e in self._events)

    def flags(self) -> list[Flag] | None:
        """The Flags under this signal, or None if a part cannot wake its waiters."""
        found: list[Flag] = []
        for e in self._events:
            if isinstance(e, Flag):
                found.append(e)
            elif isinstance(e, AnyEvent) and (inner := e.flags()) is not None:
                found.extend(inner)
            else:
                return None
        return found

    def subscribe(self, wake: Waker) -> bool:
        """Call `wake` when any part is set; False (nothing subscribed) if a part cannot."""
        flags = self.flags()
        if flags is None:
            return False
        for f in flags:
            f.subscribe(wake)
        return True

    def unsubscribe(self, wake: Waker) -> None:
        for f in self.flags() or []:
            f.unsubscribe(wake)

    def wait(self, timeout: float | None = None) -> bool:
        if self.is_set():
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        woken = threading.Event()
        if not self.subscribe(woken.set):
            return self._poll(deadline)
        try:
            while not self.is_set():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                woken.wait(left)
                woken.clear()  # a part set and cleared again (a resync flag): wait on
            return True
        finally:
            self.unsubscribe(woken.set)

    def _poll(self, deadline: float | None) -> bool:
        while not self.is_set():
            step = POLL if deadline is None else min(POLL, deadline - time.monotonic())
            if step <= 0:
                return False
            time.sleep(step)
        return True
