"""The master's side of cancellation: cancel requests (cancel/<id>) for jobs it holds.

A queued job is cancelled at once (one fenced txn); a running one is left to its worker; a
request for a job that is finished or unknown here is re-checked, then its key dropped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ..errors import PiclusterError
from ..etcd.adapter import EtcdClient
from ..etcd.keys import Keys
from ..jobs import transitions
from ..jobs.records import JobState
from .backlog import Backlog, Pending
from .dependencies import Dependencies
from .view import ClusterView, record_or_none

# Its lines keep the scheduler's logger name, as before this was split off from it.
log = logging.getLogger(__package__ + ".scheduler")


class Cancels:
    """Acts on the cancel requests in `view`; every write goes through `fenced`."""

    def __init__(
        self,
        client: EtcdClient,
        keys: Keys,
        view: ClusterView,
        backlog: Backlog,
        held: Dependencies,
        on_final: Callable[[str, JobState, float], None],
        fenced: Callable[[transitions.Transition], bool],
        epoch: Callable[[], int],
    ) -> None:
        self.client = client
        self.keys = keys
        self.view = view
        self.backlog = backlog
        self.held = held  # fresh jobs waiting for their dependencies
        self._on_final = on_final
        self._fenced = fenced
        self._epoch = epoch  # the election's, read at each write

    def process(self) -> None:
        new, self.view.new_cancels = self.view.new_cancels, set()
        waiting = (*self.backlog, *self.held)
        todo = sorted(new | {job_id for job_id in waiting if job_id in self.view.cancels})
        for i, job_id in enumerate(todo):
            if job_id not in self.view.cancels:
                continue
            try:
                p = self.backlog.get(job_id) or self.held.get(job_id)
                if p is not None:
                    self._cancel_pending(p)
                elif job_id not in self.view.capacity.running:
                    self._cleanup_cancel(job_id)
            except PiclusterError:
                self.view.new_cancels.update(todo[i:])  # tried again at the next step
                raise

    def _cancel_pending(self, p: Pending) -> None:
        now = time.time()
        change = transitions.cancel_queued(
            self.keys,
            p.record or transitions.first_record(p.id, p.spec, p.seq, now),
            p.source_key,
            p.source_revision,
            fresh=p.fresh,
            now=now,
            epoch=self._epoch(),
        )
        done = self._fenced(change)  # raises with nothing changed here: retried
        self.backlog.pop(p.id)
        self.held.pop(p.id)
        self.view.cancels.discard(p.id)
        if done:
            log.info("job %s cancelled while queued", p.id, extra={"job_id": p.id})
            self._on_final(p.id, JobState.CANCELLED, now)

    def _cleanup_cancel(self, job_id: str) -> None:
        """A cancel for a job that is finished or unknown here: re-check, then drop the key."""
        kv = self.client.get(self.keys.job(job_id))
        queued = self.client.get(self.keys.queue(job_id))
        if queued is not None:
            return  # a submission not yet seen by us: handled when it arrives
        record = record_or_none(kv, job_id) if kv is not None else None
        if record is not None and not record.state.final:
            return  # running or about to be re-run: the worker / the re-queue handles it
        self.view.cancels.discard(job_id)
        self._fenced(transitions.drop_cancel(self.keys, job_id))
