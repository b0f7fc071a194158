"""Node-side retention: the output directories of finished jobs do not pile up on the card.

Every attempt writes into `<data_dir>/jobs/<job-id>/` (its stdout, stderr and work dir).
The master removes finished jobs from etcd past `keep_finished` / `keep_finished_seconds`;
the janitor applies the same two limits to the job directories of its own node, oldest
first, and never touches a job that is assigned to the node.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

# One sweep removes at most this many directories, so that a worker's loop is never held
# up for long (a backlog after a restart goes away over a few sweeps).
SWEEP_BATCH = 200


class JobDirJanitor:
    def __init__(
        self,
        jobs_dir: Path,
        keep: int,
        max_age: float,
        in_use: Callable[[str], bool],
    ) -> None:
        self.jobs_dir = jobs_dir
        self.keep = keep
        self.max_age = max_age
        self.in_use = in_use
        # job id -> when it last finished here (wall clock), oldest first
        self.finished: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()  # jobs finish on runner threads; sweeps on their own

    def adopt_existing(self) -> None:
        """Directories left from earlier runs of the agent, aged by their modification time
        (older than anything noted since: they go first)."""
        try:
            entries = list(os.scandir(self.jobs_dir))
        except OSError:
            return
        found = []
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    found.append((entry.stat(follow_symlinks=False).st_mtime, entry.name))
            except OSError:
                continue
        with self._lock:
            for mtime, name in sorted(found, reverse=True):
                if name not in self.finished:
                    self.finished[name] = mtime
                    self.finished.move_to_end(name, last=False)

    def note_finished(self, job_id: str, when: float | None = None) -> None:
        with self._lock:
            self.finished[job_id] = time.time() if when is None else when
            self.finished.move_to_end(job_id)

    def _next_doomed(self, now: float, skipped: list[tuple[str, float]]) -> str | None:
        """Take the oldest entry past a limit out of the list; None when there is none."""
        with self._lock:
            while self.finished:
                job_id, when = next(iter(self.finished.items()))
                over_count = len(self.finished) + len(skipped) > self.keep
                if not over_count and now - when <= self.max_age:
                    return None
                del self.finished[job_id]
                if not self.in_use(job_id):
                    return job_id
                skipped.append((job_id, when))  # assigned here again: keep it, look later
            return None

    def sweep(self, now: float | None = None) -> int:
        """Remove what is past either limit; returns how many job directories went."""
        now = time.time() if now is None else now
        removed = 0
        skipped: list[tuple[str, float]] = []
        while removed < SWEEP_BATCH:
            job_id = self._next_doomed(now, skipped)
            if job_id is None:
                break
            # Past retention, a job is not assigned again (its record is gone or going).
            shutil.rmtree(self.jobs_dir / job_id, ignore_errors=True)
            removed += 1
        with self._lock:
            for job_id, when in reversed(skipped):
                self.finished[job_id] = when
                self.finished.move_to_end(job_id, last=False)
        if removed:
            log.info("removed %d job directories past retention", removed)
        return removed

    def run(self, stop: threading.Event, interval: float) -> None:
        """Sweep every `interval` seconds until `stop` (on its own thread: removing many
        directories from an SD card can take a while, and must not delay anything else)."""
        self.adopt_existing()
        while not stop.wait(interval):
            try:
                self.sweep()
            except Exception:  # a sweep must never take the worker down
                log.exception("job directory sweep failed")
