"""A worker's reports: "running" marks and results, sent in few txns, each fenced.

Each report is one transition built by `transitions` (running, finish, retry), guarded by a
compare on the job's own assignment key (created at the attempt's revision): once that key
is gone (lease expired, job re-queued elsewhere) the report is refused. Results of jobs
that end together share a txn; a mark waits a moment, since most short jobs finish first
and then need only their result written.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .. import defaults
from ..errors import Indeterminate, PiclusterError, RequestTooLarge
from ..etcd.adapter import EtcdClient, Op
from ..etcd.keys import Keys
from ..etcd.limits import txn_bytes, txn_chunks
from ..jobs import transitions
from ..jobs.records import JobRecord, JobResult
from ..jobs.transitions import Transition
from ..stopping import Flag, StopSignal

if TYPE_CHECKING:
    from .worker import RunningJob

log = logging.getLogger("picluster_agent.duties.worker")

# A job still running this long after its start gets a "running" mark in etcd.
RUNNING_MARK_DELAY = 0.5
REPORTS_IN_FLIGHT = 2
COALESCE = 0.003
# Report txns leave at most this often: under load each carries more results (etcd's cost
# is mostly per txn). A result waits at most this long, and only on a busy node; the next
# job's start does not wait for it (the node's own slot is free already).
MIN_REPORT_INTERVAL = 0.05


def report_interval(slots: int, prefetch: int) -> float:
    """A node with prefetched work may report less often (more results per txn): its free
    slots are filled from its own queue, not by the master's answer to the report.

    Up to twice the base interval once the queue is as deep as the slots; beyond two slots'
    worth, growing with half the depth, up to four times the base. The queue must outlast
    the wait: a node that reports later than its queue lasts idles (measured: prefetch 16
    on 8 slots does ~10 % fewer jobs/s with 150 ms than with 100 ms; prefetch 48 with
    200 ms does ~12 % more than prefetch 16 with 100 ms, with a third fewer txns; see
    docs/BENCHMARKS.md)."""
    depth = prefetch / max(1, slots)
    return MIN_REPORT_INTERVAL * min(4.0, max(1.0 + min(1.0, depth), 1.0 + depth / 2))


@dataclass
class Report:
    """One transition of a job run here (built by `transitions`), waiting to be sent."""

    job: RunningJob
    change: Transition
    result: JobResult | None = None  # None: a "running" mark
    _size: int = field(default=0, repr=False)

    @property
    def record(self) -> JobRecord:
        assert self.change.record is not None
        return self.change.record

    def ops(self) -> list[Op]:
        return self.change.ops

    def size(self) -> int:
        if not self._size:
            self._size = txn_bytes(self.change.compares, self.change.ops)
        return self._size

    def cost(self) -> tuple[int, int, int]:
        """Its share of a txn (see `limits.txn_chunks`): one compare (on its assignment) and
        one to four operations, so up to 42 results share a txn (etcd counts the two apart).
        """
        return len(self.change.compares), len(self.change.ops), self.size()


class Reporter:
    def __init__(
        self,
        client: EtcdClient,
        keys: Keys,
        *,
        interval: float,
        stop: StopSignal,
        abandoned: threading.Event,
        busy: Callable[[], bool],
        on_done: Callable[[Report], None],
    ) -> None:
        self.client = client
        self.keys = keys
        self.interval = interval
        self.stop = stop
        self.abandoned = abandoned  # set: the worker gave up its session; nothing is sent
        self._busy = busy  # whether the worker still has jobs (a stop waits for their reports)
        self._on_done = on_done  # a result that etcd took, or refused as no longer ours
        self.lock = threading.Lock()
        self.reports: queue.Queue[Report] = queue.Queue()
        # Running marks not sent yet: job id -> (when due, the job, its start time).
        self.marks: dict[str, tuple[float, RunningJob, float]] = {}
        self._in_flight = threading.BoundedSemaphore(REPORTS_IN_FLIGHT)
        self._last_report = 0.0
        # Set when a thread of the reporter failed beyond retrying (a bug): the worker raises
        # it, and the agent stops as a whole.
        self.failure: BaseException | None = None
        self.failed = Flag()  # set with `failure`: wakes the worker's loop

    def put(self, report: Report) -> None:
        self.reports.put(report)

    def mark_running_later(self, job: RunningJob, started_at: float) -> None:
        """Queued before the job starts, so that an attempt ending at once finds and drops
        it; its record is made only when it is due."""
        with self.lock:
            self.marks[job.record.id] = (time.monotonic() + RUNNING_MARK_DELAY, job, started_at)

    def drop_mark(self, job_id: str) -> None:
        with self.lock:
            self.marks.pop(job_id, None)

    def run(self) -> None:
        try:
            self._report_until_done()
        except Exception as e:  # a bug: results would pile up unsent; stop the agent instead
            log.exception("reporter failed")
            self._fail(e)

    def _report_until_done(self) -> None:
        while True:
            batch: list[Report] = []
            try:
                batch.append(self.reports.get(timeout=self._next_mark_in()))
                # Results of jobs ending together share one txn.
                time.sleep(max(COALESCE, self._last_report + self.interval - time.monotonic()))
            except queue.Empty:
                if self.abandoned.is_set() or (self.stop.is_set() and not self._busy()):
                    return
            while True:
                try:
                    batch.append(self.reports.get_nowait())
                except queue.Empty:
                    break
            batch.extend(self._due_marks())
            if batch:
                # Two reports in flight at once: completions do not queue behind one slow
                # txn. Safe in any order: a mark that lands after its result is refused by
                # the same assignment compare that fences stale results.
                self._in_flight.acquire()
                self._last_report = time.monotonic()
                threading.Thread(target=self._send_and_release, args=(batch,), daemon=True).start()

    def _send_and_release(self, batch: list[Report]) -> None:
        try:
            self._send(batch)
        except Exception as e:  # a bug: these results would be lost; stop the agent instead
            log.exception("report sender failed")
            self._fail(e)
        finally:
            self._in_flight.release()

    def _fail(self, e: BaseException) -> None:
        self.failure = e
        self.failed.set()

    def _next_mark_in(self) -> float:
        with self.lock:
            due = min((m[0] for m in self.marks.values()), default=None)
        return 0.2 if due is None else max(0.001, min(0.2, due - time.monotonic()))

    def _due_marks(self) -> list[Report]:
        now = time.monotonic()
        with self.lock:
            due = [job_id for job_id, mark in self.marks.items() if mark[0] <= now]
            marks = [self.marks.pop(job_id) for job_id in due]
        return [
            Report(
                job,
                transitions.running(
                    self.keys, job.record, job.assign_key, job.assign_revision, started_at
                ),
            )
            for _, job, started_at in marks
        ]

    def _send(self, batch: list[Report]) -> None:
        # A job that finished before its "running" mark was sent needs only the result.
        finished = {r.record.id for r in batch if r.result is not None}
        batch = [r for r in batch if r.result is not None or r.record.id not in finished]
        for chunk in txn_chunks(batch, Report.cost):
            self._commit(chunk)

    def _commit(self, chunk: list[Report]) -> None:
        """Send reports in one txn until etcd takes them. What etcd cannot take now
        (unavailable, NOSPACE, too many requests, permission denied) is kept and sent again
        with backoff (docs/OPERATIONS.md); given up only with the session or the agent."""
        compares = [c for r in chunk for c in r.change.compares]
        ops = [op for r in chunk for op in r.ops()]
        backoff = defaults.RETRY_BACKOFF_MIN
        while not self.abandoned.is_set():
            try:
                res = self.client.txn(compares, ops)
            except (Indeterminate, RequestTooLarge):
                break  # one by one: each learns whether it landed, or fails alone
            except PiclusterError as e:
                if self.stop.is_set():
                    log.error("could not report %d job(s): %s", len(chunk), e)
                    return
                log.warning(
                    "report of %d job(s) not written (%s); kept, again in %.1fs",
                    len(chunk),
                    e,
                    backoff,
                )
                self.stop.wait(backoff)
                backoff = min(defaults.RETRY_BACKOFF_MAX, backoff * 2)
                continue
            if res.succeeded:
                self._done(chunk)
                return
            break  # some assignment is no longer ours: one by one
        else:
            return
        for report in chunk:
            self._commit_one(report)

    def _commit_one(self, report: Report) -> None:
        """Send one report until etcd takes or refuses it. Given up only with the session
        (the lease then expires and the master runs the job again) or when the agent stops."""
        backoff = defaults.RETRY_BACKOFF_MIN
        while not self.abandoned.is_set():
            try:
                res = self.client.txn(report.change.compares, report.ops())
                if res.succeeded:
                    self._done([report])
                    return
                if self._already_recorded(report):
                    self._done([report])
                    return
                log.warning(
                    "result of job %s attempt %d refused: the assignment is no longer ours",
                    report.record.id,
                    report.record.attempt,
                    extra={"job_id": report.record.id},
                )
                self._done([report])
                return
            except RequestTooLarge as e:  # not by design (see _finish): say so, loudly
                log.error(
                    "report of job %s can never be written: %s",
                    report.record.id,
                    e,
                    extra={"job_id": report.record.id},
                )
                return
            except PiclusterError as e:
                if self.stop.is_set():
                    log.error(
                        "could not report job %s: %s",
                        report.record.id,
                        e,
                        extra={"job_id": report.record.id},
                    )
                    return
                log.warning(
                    "report of job %s not written (%s); kept, again in %.1fs",
                    report.record.id,
                    e,
                    backoff,
                    extra={"job_id": report.record.id},
                )
                self.stop.wait(backoff)
                backoff = min(defaults.RETRY_BACKOFF_MAX, backoff * 2)

    def _already_recorded(self, report: Report) -> bool:
        """After an indeterminate write: did our report commit after all?"""
        kv = self.client.get(self.keys.job(report.record.id))
        return transitions.landed(kv, report.record.to_json())

    def _done(self, reports: list[Report]) -> None:
        for r in reports:
            if r.result is None:
                continue  # a running mark: the job goes on
            self._on_done(r)
