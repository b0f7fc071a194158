"""Long polls: one watch on `<prefix>/jobs/` wakes every waiter whose job became final
(or, waiting on an array, any of whose members did).

A waiter is registered before its handler reads the job's status, so a job that ends
between the read and the wait still wakes it. Whatever wakes a waiter, the handler reads
the status again: the watch only says when to look.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Iterator

from ..etcd.adapter import EtcdClient, Event, Watch, WatchCompacted
from ..etcd.keys import Keys
from ..jobs.records import FINAL_STATE_MARKS

log = logging.getLogger(__name__)


class Waiter:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._event = asyncio.Event()

    def clear(self) -> None:
        self._event.clear()

    def wake(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
            self._loop.call_soon_threadsafe(self._event.set)

    async def wait(self, timeout: float) -> bool:
        """True when woken, False after `timeout` seconds."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            return False
        return True


class FinalStates:
    def __init__(self, etcd: EtcdClient, keys: Keys) -> None:
        self._etcd = etcd
        self._keys = keys
        self._lock = threading.Lock()
        self._waiters: dict[str, set[Waiter]] = {}
        self._watch: Watch | None = None

    def ensure_watching(self) -> None:
        """Start the watch if it is not running (blocking: call it off the event loop)."""
        with self._lock:
            if self._watch is not None and self._watch.alive:
                return
            revision = self._etcd.txn([], []).revision
            self._watch = self._etcd.watch(
                self._keys.jobs_dir,
                self._on_events,
                start_revision=revision + 1,
                name="api-wait-watch",
                on_compacted=self._on_compacted,
                only="PUT",
            )

    @contextlib.contextmanager
    def waiter(self, job_id: str) -> Iterator[Waiter]:
        """Woken when job `job_id`, or a member of array `job_id` (`job_id.N`), ends."""
        w = Waiter(asyncio.get_running_loop())
        with self._lock:
            self._waiters.setdefault(job_id, set()).add(w)
        try:
            yield w
        finally:
            with self._lock:
                group = self._waiters.get(job_id)
                if group is not None:
                    group.discard(w)
                    if not group:
                        del self._waiters[job_id]

    def close(self) -> None:
        with self._lock:
            if self._watch is not None:
                self._watch.stop()
                self._watch = None

    def _on_events(self, events: list[Event], _revision: int) -> None:
        woken: list[Waiter] = []
        with self._lock:
            if not self._waiters:
                return
            for e in events:
                job_id = self._keys.job_id_of(self._keys.jobs_dir, e.kv.key)
                if job_id is None or not any(m in e.kv.value for m in FINAL_STATE_MARKS):
                    continue
                parent = job_id.rpartition(".")[0]  # an array member's parent, or ""
                for waited in (job_id, parent):
                    woken.extend(self._waiters.get(waited, ()))
        for w in woken:
            w.wake()

    def _on_compacted(self, _e: WatchCompacted) -> None:
        # The watch has stopped; the next long poll starts a new one. Wake everyone now:
        # each reads its job's status again.
        with self._lock:
            self._watch = None
            woken = [w for group in self._waiters.values() for w in group]
        for w in woken:
            w.wake()
