"""systemd's watchdog: ping while every loop of the agent turns, stop when one is stuck."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from ..liveness import Liveness
from . import sdnotify

log = logging.getLogger(__name__)


class Watchdog:
    """Sends WATCHDOG=1 every interval/4 while `liveness` reports no stuck loop.

    systemd restarts the agent once no ping came for WatchdogSec: a stuck loop is noticed
    when it misses its own deadline, and acted on at most WatchdogSec later.
    """

    def __init__(
        self,
        liveness: Liveness,
        interval: float,
        send: Callable[[str], bool] = sdnotify.notify,
    ) -> None:
        self.liveness = liveness
        self.period = interval / 4
        self._send = send
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
        self.pings = 0

    def start(self) -> Watchdog:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        said: set[str] = set()
        while not self._stop.is_set():
            stuck = self.liveness.stuck()
            if stuck:
                new = set(stuck) - said
                if new:
                    log.error(
                        "stuck: %s; no more watchdog pings, so systemd restarts the agent",
                        ", ".join(f"{n} ({late:.0f}s late)" for n, late in sorted(stuck.items())),
                    )
                said |= new
            else:
                said.clear()
                if self._send("WATCHDOG=1"):
                    self.pings += 1
            self._stop.wait(self.period)
