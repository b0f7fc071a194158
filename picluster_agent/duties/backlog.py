"""The master's backlog: jobs waiting for a node, in the order they are to start.

Jobs that may start now come out by (priority desc, submission order); jobs with a start
time still ahead (the spec's `not_before`, or a retry's backoff) wait in a second heap by
that time. Both heaps hold entries that go stale when a job leaves the backlog (skipped when
popped), so a scheduling step costs what it assigns, not the backlog's size.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ..jobs.records import JobRecord
from ..jobs.spec import JobSpec


@dataclass
class Pending:
    id: str
    spec: JobSpec
    source_key: str  # queue/<id> for a fresh submission, jobs/<id> for a re-run
    source_revision: int  # mod revision of source_key when read: compared at assignment
    seq: int
    record: JobRecord | None = None  # the stored record, for re-runs

    @property
    def fresh(self) -> bool:
        return self.record is None

    @property
    def not_before(self) -> float:
        if self.record is not None and self.record.not_before:
            return self.record.not_before
        return self.spec.not_before or 0.0

    def order(self) -> tuple[int, int]:
        return (-self.spec.priority, self.seq)


Entry = tuple[tuple[int, int], int, Pending]


class Backlog:
    def __init__(self) -> None:
        self._jobs: dict[str, Pending] = {}
        self._ready: list[Entry] = []
        self._later: list[tuple[float, int, Pending]] = []
        self._pushes = 0

    def __contains__(self, job_id: str) -> bool:
        return job_id in self._jobs

    def __len__(self) -> int:
        return len(self._jobs)

    def __iter__(self) -> Iterator[str]:
        return iter(self._jobs)

    def get(self, job_id: str) -> Pending | None:
        return self._jobs.get(job_id)

    def pop(self, job_id: str) -> Pending | None:
        return self._jobs.pop(job_id, None)

    def add(self, p: Pending, now: float) -> None:
        self._jobs[p.id] = p
        self._pushes += 1
        if p.not_before > now:
            heapq.heappush(self._later, (p.not_before, self._pushes, p))
        else:
            heapq.heappush(self._ready, (p.order(), self._pushes, p))

    def next_start(self) -> float | None:
        """The earliest start time still ahead, if any job waits for one."""
        while self._later and not self._is_current(self._later[0][2]):
            heapq.heappop(self._later)
        return self._later[0][0] if self._later else None

    def release_due(self, now: float) -> None:
        """Jobs whose start time has come join the ready ones."""
        while self._later and self._later[0][0] <= now:
            _, n, p = heapq.heappop(self._later)
            if self._is_current(p):
                heapq.heappush(self._ready, (p.order(), n, p))

    def pop_ready(self) -> Entry | None:
        """The next job that may start now; `push_back` it unless it left the backlog."""
        while self._ready:
            entry = heapq.heappop(self._ready)
            if self._is_current(entry[2]):
                return entry
        return None

    def push_back(self, entries: Iterable[Entry]) -> None:
        """Entries popped by `pop_ready` whose jobs are still waiting (no node fits them, or
        their assignment was refused or failed)."""
        for entry in entries:
            if self._is_current(entry[2]):
                heapq.heappush(self._ready, entry)

    def _is_current(self, p: Pending) -> bool:
        return self._jobs.get(p.id) is p
