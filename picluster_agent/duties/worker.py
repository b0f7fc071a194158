"""The worker side of an agent: run what the master assigns here, report back, fenced.

Per session:
- a watch on `<prefix>/assign/<node>/` brings assignments (the job record rides in the value);
- a watch on `<prefix>/cancel/` brings cancellations;
- each job runs through `runner.JobProcess`, at most `slots` at once: it is started from the
  thread that found it a free slot and finished on the job supervisor's reader thread, so no
  thread waits on a job (thread handoffs were most of a short job's cost);
- a reporter thread batches "running" marks and results into few transactions, each report
  guarded by a compare on its own assignment key (created at the attempt's revision): once
  that key is gone (lease expired, job re-queued elsewhere) the report is refused;
- a lease guard kills every job *before* the lease can have expired at the server, i.e.
  before `session.safe_until()`, when keepalives stop getting through; the session is then
  dropped, so the master re-runs the jobs elsewhere and never twice at once;
- the job supervisor holds the same deadline as a fence (`runner.extend_fence`), extended
  after each good keepalive: if this process is frozen and cannot act, the supervisor kills
  the jobs itself, a little later than the guard would (timing.py has the rule).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from .. import defaults, timing
from ..config import AgentConfig
from ..coord.session import Session
from ..errors import Indeterminate, PiclusterError, RequestTooLarge
from ..etcd.adapter import KV, EtcdClient, Event, Op
from ..etcd.keys import Keys
from ..etcd.limits import MAX_REQUEST_BYTES, txn_bytes, txn_chunks
from ..jobs import transitions
from ..jobs.records import JobRecord, JobResult, JobState, UnreadableRecord
from ..jobs.spec import JobSpec, SpecError, retry_delay
from ..jobs.transitions import Transition
from ..node.janitor import JobDirJanitor
from ..node.runner import JobProcess, Outcome, batched_requests, extend_fence
from ..stopping import StopSignal
from .agent import WorkerDuty

log = logging.getLogger(__name__)

# A job still running this long after its start gets a "running" mark in etcd.
RUNNING_MARK_DELAY = 0.5
REPORTS_IN_FLIGHT = 2
# How often finished jobs' directories past retention are looked for.
JANITOR_INTERVAL = 10.0
COALESCE = 0.003
# Report txns leave at most this often: under load each carries more results (etcd's cost
# is mostly per txn). A result waits at most this long, and only on a busy node; the next
# job's start does not wait for it (the node's own slot is free already).
MIN_REPORT_INTERVAL = 0.05
# A result whose output tails would take its report past etcd's request limit (a large
# result_tail_bytes, or output that JSON escapes six-fold) is sent with this much of each
# stream instead; all of it stays in the job's files.
SHORT_TAIL_CHARS = 4096
# A failure reason is kept in the job's record: bounded, so that the record stays small.
MAX_REASON_CHARS = 1000


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
class RunningJob:
    record: JobRecord  # as assigned (attempt = the fencing token)
    assign_key: str
    assign_revision: int  # create revision of the assignment key
    spec: JobSpec | None = None  # parsed once, when assigned (None: an invalid spec)
    process: JobProcess | None = None
    cancel_requested: bool = False
    started: bool = False
    ended: threading.Event = field(default_factory=threading.Event)


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


def worker_duty_factory(cfg: AgentConfig) -> WorkerDuty:
    def duty(session: Session, stop: StopSignal) -> None:
        Worker(cfg, session, stop).run()

    return duty


class Worker:
    def __init__(self, cfg: AgentConfig, session: Session, stop: StopSignal) -> None:
        self.cfg = cfg
        self.session = session
        self.client: EtcdClient = session.client
        self.keys = Keys(cfg.connection.prefix)
        self.stop = stop
        self.jobs: dict[str, RunningJob] = {}
        self.cancels: set[str] = set()
        self.lock = threading.Lock()
        self.reports: queue.Queue[Report] = queue.Queue()
        # Running marks not sent yet: job id -> (when due, the job, its start time).
        self.marks: dict[str, tuple[float, RunningJob, float]] = {}
        self._in_flight = threading.BoundedSemaphore(REPORTS_IN_FLIGHT)
        self._last_report = 0.0
        self.report_interval = report_interval(cfg.slots, cfg.prefetch)
        self.abandoned = threading.Event()
        self.waiting: list[RunningJob] = []  # assigned here, not started yet
        self.busy_slots = 0
        self._dispatching = threading.local()  # set while this thread is in _dispatch
        self.resync = threading.Event()
        self.run_as = cfg.job_user if os.geteuid() == 0 else None
        self.data_dir = Path(cfg.data_dir)
        self.janitor = JobDirJanitor(
            self.data_dir / "jobs",
            cfg.keep_finished,
            cfg.keep_finished_seconds,
            in_use=lambda job_id: job_id in self.jobs,
        )
        # Kill jobs this long before the lease could expire: SIGKILL of a process group and
        # its reaping take milliseconds; the margin covers a slow, loaded board.
        self.margin = timing.kill_margin(session.ttl)
        self._fenced_until = 0.0
        self._extend_fence()
        # Set by a thread of this worker that failed beyond retrying: `run` raises it, and
        # the agent stops as a whole (no part of it may die alone).
        self.failure: BaseException | None = None

    # ------------------------------------------------------------ main loop

    def run(self) -> None:
        reporter = threading.Thread(target=self._report_loop, name="reporter", daemon=True)
        reporter.start()
        sweeping = threading.Event()
        threading.Thread(
            target=self.janitor.run, args=(sweeping, JANITOR_INTERVAL), name="janitor", daemon=True
        ).start()
        watches: list = []  # type: ignore[type-arg]
        watching = False
        next_try, backoff = 0.0, defaults.RETRY_BACKOFF_MIN
        try:
            while not self.stop.is_set():
                # The lease is gone (revoked, expired) or could be soon: stop every job now,
                # before the master can hand them to another node.
                if (
                    self.session.done.is_set()
                    or time.monotonic() > self.session.safe_until() - self.margin
                ):
                    self._lease_guard_fired()
                    break
                self._extend_fence()
                if self.failure is not None:
                    raise self.failure
                if self.resync.is_set():
                    # A watch lost its place in etcd's history: list again, watch again.
                    self.resync.clear()
                    for w in watches:
                        w.stop()
                    watches, watching = [], False
                if not watching and time.monotonic() >= next_try:
                    # A failed read here is retried: the node stays registered meanwhile,
                    # and work given to it must be found once etcd answers again.
                    try:
                        watches, watching = self._watch(), True
                        backoff = defaults.RETRY_BACKOFF_MIN
                    except PiclusterError as e:
                        log.warning("cannot watch for assignments (%s); again in %.1fs", e, backoff)
                        next_try = time.monotonic() + backoff
                        backoff = min(backoff * 2, defaults.RETRY_BACKOFF_MAX)
                self.stop.wait(0.05)
        finally:
            sweeping.set()
            for w in watches:
                w.stop()
            if not self.abandoned.is_set() and self.session.done.is_set():
                self._lease_guard_fired()
            if self.abandoned.is_set():
                # Only once the jobs are confirmed dead may the agent revoke the old lease
                # (the master re-runs them as soon as it is gone).
                self._join_jobs(timeout=5)
            else:
                # The agent is stopping: its jobs are stopped, not reported; when the lease
                # is revoked right after, the master re-runs them elsewhere.
                self.abandoned.set()
                self._stop_all_jobs(reason="agent stopping")
            reporter.join(timeout=5)

    def _watch(self) -> list:  # type: ignore[type-arg]
        """Read assignments and cancels at one revision, then watch both from there."""
        assign_dir = self.keys.assign_dir(self.cfg.name)
        existing, rev = self.client.get_prefix(assign_dir)
        cancels, _ = self.client.get_prefix(self.keys.cancel_dir, keys_only=True, revision=rev)
        cancel_dir = self.keys.cancel_dir
        with self.lock:
            self.cancels = {j for kv in cancels if (j := self.keys.job_id_of(cancel_dir, kv.key))}
        for kv in existing:
            self._on_assignment(kv)  # ignores the ones already running here
        resync = lambda _e: self.resync.set()  # noqa: E731
        return [
            self.client.watch(assign_dir, self._on_assign_events, start_revision=rev + 1,
                              name="assign-watch", on_compacted=resync, only="PUT"),
            self.client.watch(self.keys.cancel_dir, self._on_cancel_events,
                              start_revision=rev + 1, name="cancel-watch", on_compacted=resync),
        ]  # fmt: skip

    # ------------------------------------------------------------ events

    def _on_assign_events(self, events: list[Event], _revision: int) -> None:
        with batched_requests():  # the jobs these start reach the supervisor in one write
            for e in events:
                if e.type == "PUT" and e.kv.version == 1:
                    self._on_assignment(e.kv)

    def _on_cancel_events(self, events: list[Event], _revision: int) -> None:
        for e in events:
            job_id = self.keys.job_id_of(self.keys.cancel_dir, e.kv.key)
            if job_id is None:
                continue  # no picluster client makes such a key
            if e.type == "PUT":
                with self.lock:
                    self.cancels.add(job_id)
                    job = self.jobs.get(job_id)
                if job is not None:
                    self._cancel(job)
            else:
                with self.lock:
                    self.cancels.discard(job_id)

    def _on_assignment(self, kv: KV) -> None:
        if self.abandoned.is_set():
            return
        where = self.keys.assignment_of(kv.key)
        try:
            if where is None or where[0] != self.cfg.name:
                raise UnreadableRecord("not an assignment key of this node")
            record = JobRecord.from_json(kv.value, where[1])
        except UnreadableRecord as e:
            # Only the master writes here, under this node's lease; anything else is left.
            log.warning("ignored %r: %s", kv.key, e)
            return
        try:
            spec, invalid = record.job_spec(), None
        except SpecError as e:
            spec, invalid = None, f"invalid spec: {e}"
        # The worker's own writes of the record carry no master epoch.
        job = RunningJob(record.with_(epoch=0), kv.key, kv.create_revision, spec)
        with self.lock:
            if record.id in self.jobs:
                return
            self.jobs[record.id] = job
            job.cancel_requested = record.id in self.cancels
            if spec is not None:
                self.waiting.append(job)
        if invalid is not None:
            self._finish(job, None, error=invalid)  # never takes a slot
            return
        self._dispatch()

    def _dispatch(self) -> None:
        """Start waiting assignments, best first, while this node's slots allow.

        The master may assign up to `slots + prefetch` jobs here; the node itself keeps
        at most `slots` running, so a prefetched job starts the moment a slot frees.
        """
        if getattr(self._dispatching, "active", False):
            # A job that ended while being started (say, a bad cwd) frees its slot from
            # inside this very loop: the loop below looks again, no recursion needed.
            self._dispatching.again = True
            return
        self._dispatching.active = True
        try:
            while True:
                self._dispatching.again = False
                for job in self._take_startable():
                    self._start(job)
                if not self._dispatching.again:
                    return
        finally:
            self._dispatching.active = False

    def _take_startable(self) -> list[RunningJob]:
        with self.lock:
            if self.abandoned.is_set():
                return []
            self.waiting.sort(key=_start_order)
            starting = []
            for job in list(self.waiting):
                need = _slots(job)
                if self.busy_slots and self.busy_slots + need > self.cfg.slots:
                    continue
                self.waiting.remove(job)
                self.busy_slots += need
                job.started = True
                starting.append(job)
            return starting

    def _cancel(self, job: RunningJob) -> None:
        job.cancel_requested = True
        with self.lock:
            waiting = job in self.waiting
            if waiting:
                self.waiting.remove(job)
        if waiting:
            self._finish(job, None)  # never started: reported cancelled at once
            return
        if job.process is not None:
            log.info("cancelling job %s (attempt %d)", job.record.id, job.record.attempt)
            job.process.stop(self.cfg.kill_grace)

    # ------------------------------------------------------------ running one job

    def _start(self, job: RunningJob) -> None:
        """Start one attempt; `_ended` runs when it is over (here, if it cannot start)."""
        record = job.record
        try:
            process = JobProcess(
                _spec(job),
                job_id=record.id,
                attempt=record.attempt,
                node=self.cfg.name,
                data_dir=self.data_dir,
                tail_bytes=self.cfg.result_tail_bytes,
                run_as=self.run_as,
                kill_grace=self.cfg.kill_grace,
                on_done=lambda _process: self._ended(job),
                fence=self.session.lease_id,
            )
        except (OSError, ValueError) as e:  # say, an attempt number no master writes
            self._finish(job, None, error=f"could not start: {e}")
            self._release(job)
            return
        job.process = process
        # Checked after `process` is set: the lease guard sets `abandoned` before it stops
        # every job's process, so a job being started right then is stopped by one of us.
        if job.cancel_requested or self.abandoned.is_set():
            process.stop(0)
        # The "running" mark waits a moment: most short jobs finish first and then need
        # only their result written (one write saved per job, and no queue ahead of it).
        # Queued before the start, so that an attempt ending at once finds and drops it; its
        # record is made only when it is due.
        with self.lock:
            self.marks[record.id] = (time.monotonic() + RUNNING_MARK_DELAY, job, time.time())
        process.start(wait_started=False)

    def _ended(self, job: RunningJob) -> None:
        """The attempt is over (on the supervisor's reader thread): report it, free its slot."""
        try:
            assert job.process is not None
            outcome = job.process.wait(0)
            assert outcome is not None
            # Killed by the lease guard, or by the supervisor because the lease may be gone:
            # not reported (the master runs the job again once the lease has expired).
            if not self.abandoned.is_set() and not outcome.fenced:
                self._finish(job, outcome)
        finally:
            self._release(job)

    def _release(self, job: RunningJob) -> None:
        with self.lock:
            self.busy_slots -= _slots(job)
        job.ended.set()
        self._dispatch()

    def _finish(self, job: RunningJob, outcome: Outcome | None, error: str | None = None) -> None:
        record = job.record
        now = time.time()
        if outcome is not None:
            error = outcome.error
        cancelled = job.cancel_requested or (outcome is not None and outcome.cancelled)
        succeeded = outcome is not None and outcome.succeeded and not cancelled
        exit_code = outcome.exit_code if outcome is not None else None
        if succeeded:
            state, reason = JobState.SUCCEEDED, None
        elif cancelled:
            state, reason = JobState.CANCELLED, "cancelled by request"
        else:
            state, reason = JobState.FAILED, _failure_reason(outcome, error)
        result = JobResult(
            id=record.id,
            attempt=record.attempt,
            node=self.cfg.name,
            state=state,
            exit_code=exit_code,
            signal=outcome.signal if outcome else None,
            timed_out=bool(outcome and outcome.timed_out),
            started_at=outcome.started_at if outcome else None,
            finished_at=outcome.ended_at if outcome else now,
            stdout_tail=outcome.stdout_tail if outcome else "",
            stderr_tail=outcome.stderr_tail if outcome else "",
            error=error,
        )
        spec = job.spec

        def report(result: JobResult) -> Report:
            fence = (self.keys, record, result, job.assign_key, job.assign_revision)
            if (
                state is JobState.FAILED
                and error is None
                and spec is not None
                and record.failures + 1 < spec.max_attempts
            ):
                delay = retry_delay(spec, record.attempt + 1)
                assert reason is not None
                change = transitions.retry(*fence, reason=reason, not_before=now + delay)
            else:
                change = transitions.finish(*fence, reason=reason, cancelled=cancelled)
            return Report(job, change, result)

        done = report(result)
        if done.size() > MAX_REQUEST_BYTES - 4096:
            # etcd would refuse it for good: the job would never be recorded as ended.
            log.warning(
                "job %s: output tails too large for etcd; the last %d characters of each go "
                "to etcd (all of it is in the job's files)",
                record.id,
                SHORT_TAIL_CHARS,
            )
            done = report(
                replace(
                    result,
                    stdout_tail=result.stdout_tail[-SHORT_TAIL_CHARS:],
                    stderr_tail=result.stderr_tail[-SHORT_TAIL_CHARS:],
                )
            )
        with self.lock:
            self.marks.pop(record.id, None)
        self.janitor.note_finished(record.id)
        self.reports.put(done)

    # ------------------------------------------------------------ reporting

    def _report_loop(self) -> None:
        try:
            self._report_until_done()
        except Exception as e:  # a bug: results would pile up unsent; stop the agent instead
            log.exception("reporter failed")
            self.failure = e

    def _report_until_done(self) -> None:
        while True:
            batch: list[Report] = []
            try:
                batch.append(self.reports.get(timeout=self._next_mark_in()))
                # Results of jobs ending together share one txn.
                time.sleep(
                    max(COALESCE, self._last_report + self.report_interval - time.monotonic())
                )
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
            self.failure = e
        finally:
            self._in_flight.release()

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

    def _busy(self) -> bool:
        with self.lock:
            return bool(self.jobs)

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
                )
                self._done([report])
                return
            except RequestTooLarge as e:  # not by design (see _finish): say so, loudly
                log.error("report of job %s can never be written: %s", report.record.id, e)
                return
            except PiclusterError as e:
                if self.stop.is_set():
                    log.error("could not report job %s: %s", report.record.id, e)
                    return
                log.warning(
                    "report of job %s not written (%s); kept, again in %.1fs",
                    report.record.id,
                    e,
                    backoff,
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
            with self.lock:
                self.jobs.pop(r.record.id, None)
            # Per-job lines at INFO only when something went wrong: SD cards wear out.
            log.log(
                logging.DEBUG if r.record.state is JobState.SUCCEEDED else logging.INFO,
                "job %s attempt %d: %s",
                r.record.id,
                r.record.attempt,
                r.record.state.value,
            )

    # ------------------------------------------------------------ losing the lease

    def _lease_guard_fired(self) -> None:
        """Keepalives are not getting through: stop every job before the lease can expire."""
        self.abandoned.set()
        with self.lock:
            jobs = list(self.jobs.values())
        for job in jobs:
            if job.process is not None:
                job.process.stop(0)
        log.warning(
            "lease %x lost or not renewed in time: killed %d job(s) before it could expire; "
            "the master re-runs them",
            self.session.lease_id,
            len(jobs),
        )
        self.session.expire_locally()

    def _extend_fence(self) -> None:
        """Tell the supervisor how long this session's jobs may run if we cannot act."""
        until = self.session.safe_until() - timing.fence_margin(self.session.ttl)
        if until > self._fenced_until:
            self._fenced_until = until
            extend_fence(self.session.lease_id, until)

    def _join_jobs(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self.lock:
            started = [j for j in self.jobs.values() if j.started]
        for job in started:
            job.ended.wait(max(0.0, deadline - time.monotonic()))

    def _stop_all_jobs(self, reason: str) -> None:
        with self.lock:
            jobs = list(self.jobs.values())
        if not jobs:
            return
        log.info("%s: stopping %d job(s)", reason, len(jobs))
        for job in jobs:
            if job.process is not None:
                job.process.stop(self.cfg.kill_grace)
        for job in jobs:
            if job.started:
                job.ended.wait(self.cfg.kill_grace + 5)


def _spec(job: RunningJob) -> JobSpec:
    assert job.spec is not None  # a job with an invalid spec never waits for a slot
    return job.spec


def _slots(job: RunningJob) -> int:
    return _spec(job).slots


def _start_order(job: RunningJob) -> tuple[int, int]:
    return (-_spec(job).priority, job.record.seq)


def _failure_reason(outcome: Outcome | None, error: str | None) -> str:
    if error:
        return error[:MAX_REASON_CHARS]
    if outcome is None:
        return "did not run"
    if outcome.timed_out:
        return "timed out"
    if outcome.signal:
        return f"killed by signal {outcome.signal}"
    return f"exit code {outcome.exit_code}"


__all__ = ["Worker", "worker_duty_factory"]
