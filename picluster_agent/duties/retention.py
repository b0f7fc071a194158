"""Finished jobs, kept for a while: the master removes the oldest past a count or an age."""

from __future__ import annotations

from collections import deque


class Finished:
    """Finished job ids by the time they finished (oldest first)."""

    def __init__(self) -> None:
        self._jobs: deque[tuple[float, str]] = deque()

    def __len__(self) -> int:
        return len(self._jobs)

    def add(self, when: float, job_id: str) -> None:
        self._jobs.append((when, job_id))

    def sort(self) -> None:
        """After a load, which meets them in key order."""
        self._jobs = deque(sorted(self._jobs))

    def past_retention(self, keep: int, cutoff: float, limit: int) -> list[str]:
        """Take out (up to `limit`) the jobs beyond the newest `keep` or finished before
        `cutoff`; `put_back` those that could not be removed."""
        doomed: list[str] = []
        while self._jobs and (len(self._jobs) > keep or self._jobs[0][0] < cutoff):
            doomed.append(self._jobs.popleft()[1])
            if len(doomed) >= limit:
                break
        return doomed

    def put_back(self, job_ids: list[str]) -> None:
        """Removed at the next round instead (the times only order them)."""
        self._jobs.extendleft((0.0, j) for j in reversed(job_ids))
