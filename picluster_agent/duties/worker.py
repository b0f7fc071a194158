"""The worker side of an agent: run what the master assigns here, report back, fenced.

Per session:
- a watch on `<prefix>/assign/<node>/` brings assignments (the job record rides in the value);
- a watch on `<prefix>/cancel/` brings cancellations;
- each job runs through `runner.JobProcess`, at most `slots` at once: it is started from the
  thread that found it a free slot and finished on the job supervisor's reader thread, so no
  thread waits on a job (thread handoffs were most of a short job's cost);
- a reporter thread (reporter.py) batches "running" marks and results into few transactions,
  each report guarded by a compare on its own assignment key (created at the attempt's
  revision): once that key is gone (lease expired, job re-queued elsewhere) it is refused;
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
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from .. import defaults, timing
from ..config import AgentConfig
from ..coord.session import Session
from ..errors import PiclusterError
from ..etcd.adapter import KV, EtcdClient, Event
from ..etcd.keys import Keys
from ..etcd.limits import MAX_REQUEST_BYTES
from ..jobs import transitions
from ..jobs.records import JobRecord, JobResult, JobState, UnreadableRecord
from ..jobs.spec import JobSpec, SpecError, retry_delay
from ..node import cgroups
from ..node.janitor import JobDirJanitor
from ..node.runner import JobProcess, Outcome, batched_requests, extend_fence, supervisor_pid
from ..observe.metrics import AgentMetrics
from ..stopping import AnyEvent, Flag, StopSignal
from .agent import WorkerDuty
from .reporter import Report, Reporter, report_interval

log = logging.getLogger(__name__)

# How often finished jobs' directories past retention are looked for.
JANITOR_INTERVAL = 10.0
# The fence follows each renewal of the session as it happens; it also looks this often
# whether the worker has ended.
FENCE_TICK = 1.0
# A result whose output tails would take its report past etcd's request limit (a large
# result_tail_bytes, or output that JSON escapes six-fold) is sent with this much of each
# stream instead; all of it stays in the job's files.
SHORT_TAIL_CHARS = 4096
# A failure reason is kept in the job's record: bounded, so that the record stays small.
MAX_REASON_CHARS = 1000


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


def worker_duty_factory(cfg: AgentConfig, metrics: AgentMetrics | None = None) -> WorkerDuty:
    said = False
    metrics = metrics if metrics is not None else AgentMetrics()

    def duty(session: Session, stop: StopSignal) -> None:
        nonlocal said
        if not said:  # once, when the first session starts: how jobs will be confined
            said = True  # (not before: an agent refused at start says one line, its refusal)
            confined, how = cgroups.probe()
            log.log(logging.INFO if confined else logging.WARNING, "%s", how)
        Worker(cfg, session, stop, metrics).run()

    return duty


class Worker:
    def __init__(
        self,
        cfg: AgentConfig,
        session: Session,
        stop: StopSignal,
        metrics: AgentMetrics | None = None,
    ) -> None:
        self.cfg = cfg
        self.metrics = metrics if metrics is not None else AgentMetrics()
        self.session = session
        self.client: EtcdClient = session.client
        self.keys = Keys(cfg.connection.prefix)
        self.stop = stop
        self.jobs: dict[str, RunningJob] = {}
        self.cancels: set[str] = set()
        self.lock = threading.Lock()
        self.abandoned = threading.Event()
        self.reporter = Reporter(
            self.client,
            self.keys,
            interval=report_interval(cfg.slots, cfg.prefetch),
            stop=stop,
            abandoned=self.abandoned,
            busy=self._busy,
            on_done=self._reported,
        )
        self.waiting: list[RunningJob] = []  # assigned here, not started yet
        self.busy_slots = 0
        self._dispatching = threading.local()  # set while this thread is in _dispatch
        self.resync = Flag()
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

    # ------------------------------------------------------------ main loop

    def run(self) -> None:
        reporter = threading.Thread(target=self.reporter.run, name="reporter", daemon=True)
        reporter.start()
        sweeping = threading.Event()
        threading.Thread(
            target=self.janitor.run, args=(sweeping, JANITOR_INTERVAL), name="janitor", daemon=True
        ).start()
        # Its own thread: this loop may wait seconds on an etcd read, and the fence must keep
        # up with every renewal meanwhile, or the supervisor kills jobs of a live session;
        # the lease guard's deadline must hold meanwhile too.
        threading.Thread(
            target=self._keep_fence, args=(sweeping,), name="fence", daemon=True
        ).start()
        readings = self._readings()
        self.metrics.read_from(readings)
        liveness, loop = self.session.liveness, f"worker (lease {self.session.lease_id:x})"
        # What ends a wait of this loop early; the lease guard's deadline ends it in time.
        wake = AnyEvent(self.stop, self.session.done, self.resync, self.reporter.failed)
        watches: list = []  # type: ignore[type-arg]
        watching = False
        next_try, backoff = 0.0, defaults.RETRY_BACKOFF_MIN
        try:
            while not self.stop.is_set():
                liveness.beat(loop, defaults.LOOP_STALL)
                # The lease is gone (revoked, expired) or could be soon: stop every job now,
                # before the master can hand them to another node.
                if self.session.done.is_set() or time.monotonic() > self._guard_deadline():
                    self._lease_guard_fired()
                    break
                # A reporter thread that failed beyond retrying: the agent stops as a whole
                # (no part of it may die alone).
                if self.reporter.failure is not None:
                    raise self.reporter.failure
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
                wake.wait(self._idle_wait(watching, next_try))
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
            self.metrics.stop_reading(readings)
            liveness.end(loop)

    def _readings(self) -> dict[str, Callable[[], float]]:
        """This node's gauges, read when metrics are scraped."""

        def running() -> int:
            with self.lock:
                return sum(1 for j in self.jobs.values() if j.started and not j.ended.is_set())

        def processes() -> int:
            with self.lock:
                jobs = [j for j in self.jobs.values() if j.process is not None]
            return sum(1 for j in jobs if not j.ended.is_set() and j.process.pid is not None)

        return {
            "waiting": lambda: len(self.waiting),
            "running": running,
            "slots_used": lambda: self.busy_slots,
            "slots_free": lambda: max(0, self.cfg.slots - self.busy_slots),
            "supervisors": lambda: 0 if supervisor_pid() is None else 1,
            "job_processes": processes,
        }

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
            # The cancel watch may deliver before this one: such a job never waits for a slot.
            job.cancel_requested = record.id in self.cancels
            waits = spec is not None and not job.cancel_requested
            if waits:
                self.waiting.append(job)
        if not waits:
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
            log.info(
                "cancelling job %s (attempt %d)",
                job.record.id,
                job.record.attempt,
                extra={"job_id": job.record.id},
            )
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
                pids_max=self.cfg.job_pids_max,
                cpu_weight=self.cfg.job_cpu_weight,
                output_cap=self.cfg.output_cap_bytes,
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
        started = time.time()
        self.reporter.mark_running_later(job, started)
        process.start(wait_started=False)
        self.metrics.attempt_started(record.attempt, record.submitted_at, started)

    def _ended(self, job: RunningJob) -> None:
        """The attempt is over (on the supervisor's reader thread): report it, free its slot."""
        try:
            assert job.process is not None
            outcome = job.process.wait(0)
            assert outcome is not None
            # Killed by the lease guard, or by the supervisor because the lease may be gone:
            # not reported (the master runs the job again once the lease has expired).
            if outcome.fenced:
                # The fence passed while this session may still be alive (this process was
                # frozen, or the fence fell behind): its assignments would hold jobs that no
                # longer run. Drop the session, so that the master runs them again.
                self._lease_guard_fired()
            elif not self.abandoned.is_set():
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
            cpu_seconds=outcome.cpu_seconds if outcome else None,
            peak_memory_bytes=outcome.peak_memory_bytes if outcome else None,
        )
        spec = job.spec
        retrying = (
            state is JobState.FAILED
            and error is None
            and spec is not None
            and record.failures + 1 < spec.max_attempts
        )

        def report(result: JobResult) -> Report:
            fence = (self.keys, record, result, job.assign_key, job.assign_revision)
            if retrying:
                assert spec is not None
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
                extra={"job_id": record.id},
            )
            done = report(
                replace(
                    result,
                    stdout_tail=result.stdout_tail[-SHORT_TAIL_CHARS:],
                    stderr_tail=result.stderr_tail[-SHORT_TAIL_CHARS:],
                )
            )
        run_seconds = outcome.ended_at - outcome.started_at if outcome else None
        self.metrics.attempt_ended(state.value, run_seconds, retrying)
        self.reporter.drop_mark(record.id)
        self.janitor.note_finished(record.id)
        self.reporter.put(done)

    def _busy(self) -> bool:
        with self.lock:
            return bool(self.jobs)

    def _reported(self, r: Report) -> None:
        """A result is in etcd (or refused: the attempt is no longer ours): the job is over."""
        with self.lock:
            self.jobs.pop(r.record.id, None)
        # Per-job lines at INFO only when something went wrong: SD cards wear out.
        log.log(
            logging.DEBUG if r.record.state is JobState.SUCCEEDED else logging.INFO,
            "job %s attempt %d: %s",
            r.record.id,
            r.record.attempt,
            r.record.state.value,
            extra={"job_id": r.record.id},
        )

    # ------------------------------------------------------------ losing the lease

    def _lease_guard_fired(self) -> None:
        """Keepalives are not getting through: stop every job before the lease can expire.
        Once per session, from whichever thread sees it first."""
        with self.lock:
            if self.abandoned.is_set():
                return
            self.abandoned.set()
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

    def _guard_deadline(self) -> float:
        """When the lease guard must have stopped every job (monotonic): the margin before
        the earliest instant the lease could expire at the server."""
        return self.session.safe_until() - self.margin

    def _idle_wait(self, watching: bool, next_try: float) -> float:
        """How long the main loop may sleep: until the lease guard must look again (the
        session's renewals move that deadline on), the next try at watching, or half the
        loop's stall allowance, whichever comes first."""
        now = time.monotonic()
        waits = [self._guard_deadline() - now, defaults.LOOP_STALL / 2]
        if not watching:
            waits.append(next_try - now)
        return max(0.0, min(waits))

    def _keep_fence(self, done: threading.Event) -> None:
        """Follow each renewal with the supervisor's fence, and hold the lease guard's
        deadline here too. The main loop alone was late for it under load: in 2 of 18
        cut-off runs at load 6 only the supervisor's fence acted (docs/BENCHMARKS.md); this
        thread waits on nothing but the renewals, and it has not been late in 18 runs."""
        seen = 0
        while not done.is_set():
            if self.abandoned.is_set() or self.session.done.is_set():
                return
            self._extend_fence()
            to_guard = self._guard_deadline() - time.monotonic()
            if to_guard < 0:
                self._lease_guard_fired()
                return
            seen = self.session.wait_renewal(seen, min(FENCE_TICK, to_guard))

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
    if outcome.oom_killed:
        return "out of memory"
    if outcome.timed_out:
        return "timed out"
    if outcome.signal:
        return f"killed by signal {outcome.signal}"
    return f"exit code {outcome.exit_code}"


__all__ = ["Worker", "worker_duty_factory"]
