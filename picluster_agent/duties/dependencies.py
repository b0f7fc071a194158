"""The master's side of dependencies: submissions held back until the jobs they name finish.

A fresh submission whose spec names dependencies (`after`) waits here, not in the backlog.
The scheduler tells this module of every job that reaches a final state (`finished`), which
wakes the jobs waiting on it; a dependency not known to be final is read from etcd (its
record and its queue key in one read, so a job moving from one to the other is not missed).
A job whose dependency can no longer be met, or names one that does not exist or was
submitted after it (so no cycle can form, even from etcdctl), is cancelled with the reason:
one fenced txn (`transitions.cancel_queued`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

from ..errors import PiclusterError
from ..etcd.adapter import EtcdClient
from ..etcd.keys import Keys
from ..jobs import transitions
from ..jobs.dependencies import dependencies, judge
from ..jobs.records import JobState
from .backlog import Pending
from .view import record_or_none

# Its lines keep the scheduler's logger name: they are the master's decisions.
log = logging.getLogger(__package__ + ".scheduler")

RECHECK_INTERVAL = 5.0  # seconds: dependencies not final are read again this often


class Dependencies:
    def __init__(
        self,
        client: EtcdClient,
        keys: Keys,
        fenced: Callable[[transitions.Transition], bool],
        epoch: Callable[[], int],
        on_final: Callable[[str, JobState, float], None],
    ) -> None:
        self.client = client
        self.keys = keys
        self._fenced = fenced
        self._epoch = epoch
        self._on_final = on_final
        self.outcomes: dict[str, JobState] = {}  # final states seen
        self._pending_seq: dict[str, int] = {}  # dependencies read as not final: their seq
        self.held: dict[str, Pending] = {}
        self._waiters: dict[str, set[str]] = {}  # dependency -> held jobs naming it
        self._dirty: set[str] = set()  # held jobs to judge at the next step
        self._next_recheck = time.monotonic() + RECHECK_INTERVAL

    def __contains__(self, job_id: str) -> bool:
        return job_id in self.held

    def __iter__(self) -> Iterator[str]:
        return iter(list(self.held))

    def __len__(self) -> int:
        return len(self.held)

    def get(self, job_id: str) -> Pending | None:
        return self.held.get(job_id)

    def hold(self, p: Pending) -> bool:
        """Keep a fresh submission that names dependencies; False: it has none."""
        if not p.fresh or not p.spec.after:
            return False
        self.held[p.id] = p
        for _, dep in dependencies(p.spec.after):
            self._waiters.setdefault(dep, set()).add(p.id)
        self._dirty.add(p.id)
        return True

    def pop(self, job_id: str) -> Pending | None:
        p = self.held.pop(job_id, None)
        if p is not None:
            for _, dep in dependencies(p.spec.after):
                self._waiters.get(dep, set()).discard(job_id)
        self._dirty.discard(job_id)
        return p

    def finished(self, job_id: str, state: JobState) -> None:
        """A job reached a final state: the jobs waiting on it are judged again."""
        self.outcomes[job_id] = state
        self._pending_seq.pop(job_id, None)
        self._dirty.update(self._waiters.pop(job_id, ()))

    def forget(self, job_ids: list[str]) -> None:
        """Records removed after retention: their outcomes are no longer needed."""
        for job_id in job_ids:
            self.outcomes.pop(job_id, None)

    def release(self) -> list[Pending]:
        """Judge the held jobs that may have changed: the ready ones leave (for the
        backlog), those that can never start are cancelled. Raises on etcd errors with
        the undecided ones kept."""
        if time.monotonic() >= self._next_recheck:
            # A safety net: a final state learnt in a way that did not pass `finished`.
            self._pending_seq.clear()
            self._dirty.update(self.held)
            self._next_recheck = time.monotonic() + RECHECK_INTERVAL
        ready: list[Pending] = []
        while self._dirty:
            todo = sorted(self._dirty)
            self._read_unknown(todo)
            for job_id in todo:
                self._dirty.discard(job_id)
                p = self.held.get(job_id)
                if p is None:
                    continue
                why = self._unknown_or_later(p)
                verdict = judge(p.spec.after, self.outcomes.get)
                if why is None and verdict.impossible:
                    why = verdict.impossible
                if why is not None:
                    self._cancel(p, why)  # wakes its own dependents (loop again)
                elif verdict.ready:
                    self.pop(job_id)
                    ready.append(p)
        return ready

    def _read_unknown(self, job_ids: list[str]) -> None:
        unknown = sorted(
            {
                dep
                for job_id in job_ids
                if (p := self.held.get(job_id)) is not None
                for _, dep in dependencies(p.spec.after)
                if dep not in self.outcomes and dep not in self._pending_seq
            }
        )
        if not unknown:
            return
        # Queue key and record side by side: one txn reads both at one revision.
        keys = [k for dep in unknown for k in (self.keys.queue(dep), self.keys.job(dep))]
        found = self.client.get_many(keys)
        for dep in unknown:
            job_kv = found.get(self.keys.job(dep))
            queued = found.get(self.keys.queue(dep))
            record = record_or_none(job_kv, dep) if job_kv is not None else None
            if record is not None and record.state.final:
                self.outcomes[dep] = record.state
            elif record is not None:
                self._pending_seq[dep] = record.seq
            elif queued is not None:
                self._pending_seq[dep] = queued.create_revision

    def _unknown_or_later(self, p: Pending) -> str | None:
        for _, dep in dependencies(p.spec.after):
            if dep in self.outcomes:
                continue
            seq = self._pending_seq.get(dep)
            if seq is None:
                return f"dependency {dep} does not exist (never submitted, or removed)"
            if seq >= p.seq:
                return f"dependency {dep} was submitted after this job"
        return None

    def _cancel(self, p: Pending, why: str) -> None:
        now = time.time()
        reason = f"cancelled: {why}"
        change = transitions.cancel_queued(
            self.keys,
            transitions.first_record(p.id, p.spec, p.seq, now),
            p.source_key,
            p.source_revision,
            fresh=True,
            now=now,
            epoch=self._epoch(),
            reason=reason,
        )
        try:
            done = self._fenced(change)
        except PiclusterError:
            self._dirty.add(p.id)  # judged again at the next step
            raise
        self.pop(p.id)
        if done:
            log.info("job %s %s", p.id, reason)
            self._on_final(p.id, JobState.CANCELLED, now)
