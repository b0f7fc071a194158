"""The master's job: take submissions from the queue and assign them to workers, fenced.

Driven by watches (queue/, assign/, nodes/, drain/, cancel/), never by polling. One thread
owns the in-memory model; watch threads only hand events over. Every write is a transaction
that carries the election guard (`Election.fenced_txn`): a deposed master cannot assign.

Scheduling: ready jobs in (priority desc, submission order) order, each placed on the
least-loaded live, undrained node whose labels satisfy the job's constraints and that has
the slots (and memory) free. Assignments share txns, as many as etcd allows (`limits.txn_chunks`).
"""

from __future__ import annotations

import logging
import queue
import time

from .. import defaults
from ..config import AgentConfig
from ..coord.election import Election
from ..coord.session import SessionState
from ..errors import NotLeader, PiclusterError, RequestTooLarge, SessionLost
from ..etcd import limits
from ..etcd.adapter import KV, EtcdClient, Event
from ..etcd.keys import Keys
from ..etcd.limits import EXPIRES_PER_TXN, txn_bytes, txn_chunks
from ..jobs import transitions
from ..jobs.arrays import ArrayCaps
from ..jobs.placement import NodeSlots, pick
from ..jobs.records import JobRecord, JobState, UnreadableRecord
from ..jobs.spec import SpecError, parse_spec
from ..observe.metrics import AgentMetrics
from ..stopping import AnyEvent, StopSignal
from .backlog import Backlog, Pending
from .cancels import Cancels
from .dependencies import Dependencies
from .retention import Finished
from .view import ClusterView, ignored, record_or_none

log = logging.getLogger(__name__)

GC_INTERVAL = 5.0
COALESCE = 0.003  # seconds a step waits for more events after the first
# Under load (the last step assigned more than one job), steps come at most this often, so
# that each assignment txn carries more jobs: etcd's cost is mostly per txn (~2-3 ms of CPU
# over 3 members, against ~0.1 ms per key). A quiet cluster answers within COALESCE.
MIN_STEP_INTERVAL = 0.015
# A quiet scheduler steps this often (a stop request wakes it at once: a word in its inbox).
IDLE_WAKEUP = 1.0


class _Resync(Exception):
    """A watch lost its place in etcd's history: the model must be rebuilt from a read."""


def scheduler_duty(cfg: AgentConfig, metrics: AgentMetrics | None = None):  # type: ignore[no-untyped-def]
    def scheduler(election: Election, stop: StopSignal) -> None:
        Scheduler(election, cfg, stop, metrics).run()

    return scheduler


class Scheduler:
    def __init__(
        self,
        election: Election,
        cfg: AgentConfig,
        stop: StopSignal,
        metrics: AgentMetrics | None = None,
    ) -> None:
        self.metrics = metrics if metrics is not None else AgentMetrics()
        self.election = election
        self.client: EtcdClient = election.client
        self.keys = election.keys
        self.cfg = cfg
        self.stop = stop
        self._reset()

    def _reset(self) -> None:
        """An empty model: filled by `_load` from one consistent read."""
        self.inbox: queue.Queue[tuple[str, list[Event]]] = queue.Queue()
        self.view = ClusterView(self.keys)
        self.backlog = Backlog()
        self.finished = Finished()
        epoch = lambda: self.election.create_revision  # noqa: E731
        self.deps = Dependencies(self.client, self.keys, self._fenced, epoch, self._final)
        self.cancels = Cancels(
            self.client,
            self.keys,
            self.view,
            self.backlog,
            self.deps,
            self._final,
            self._fenced,
            epoch,
        )
        self._next_gc = time.monotonic() + GC_INTERVAL
        self._last_step = 0.0
        self._last_assigned = 0  # jobs assigned by the last step

    # ------------------------------------------------------------ lifecycle

    def run(self) -> None:
        # Read at scrape time; the attributes are replaced by _reset, so look them up then.
        readings = {
            "queue_depth": lambda: len(self.backlog) + len(self.view.fresh_queue),
            "jobs_assigned": lambda: len(self.view.capacity.running),
        }
        self.metrics.read_from(readings)
        self._loop = f"scheduler (epoch {self.election.create_revision})"
        try:
            self._run()
        finally:
            self.metrics.stop_reading(readings)
            self.election.session.liveness.end(self._loop)

    def _run(self) -> None:
        backoff = defaults.RETRY_BACKOFF_MIN
        while not self.stop.is_set():
            self.election.session.liveness.beat(self._loop, defaults.LOOP_STALL)
            try:
                self._run_from_snapshot()
            except _Resync:
                log.warning("scheduler: a watch fell behind etcd's compaction; reloading")
                self._reset()
            except (NotLeader, SessionLost):
                raise
            except PiclusterError as e:
                # Reading the state (or re-queueing what it found lost) failed: read again.
                log.warning("scheduler: cannot load the cluster (%s); again in %.1fs", e, backoff)
                self._reset()
                self.stop.wait(backoff)
                backoff = min(backoff * 2, defaults.RETRY_BACKOFF_MAX)

    def _run_from_snapshot(self) -> None:
        revision = self._load()
        watches = self.view.watch(
            self.client, revision, lambda kind, events: self.inbox.put((kind, events))
        )
        log.info(
            "scheduler: %d queued, %d running, %d node(s) at revision %d",
            len(self.backlog) + len(self.deps) + len(self.view.fresh_queue),
            len(self.view.capacity.running),
            len(self.view.capacity.nodes),
            revision,
        )
        backoff = defaults.RETRY_BACKOFF_MIN
        wake = lambda: self.inbox.put(("stop", []))  # noqa: E731 (the inbox of the moment)
        if isinstance(self.stop, AnyEvent):
            self.stop.subscribe(wake)
        try:
            while not self.stop.is_set():
                self.election.session.liveness.beat(self._loop, defaults.LOOP_STALL)
                if self.election.session.state is not SessionState.CONNECTED:
                    # SUSPENDED: the lease may be gone; decide nothing until it is renewed.
                    self.stop.wait(0.1)
                    continue
                self._drain_inbox(self._wait_time())
                try:
                    self._step()
                    backoff = defaults.RETRY_BACKOFF_MIN
                except (NotLeader, SessionLost):
                    raise
                except PiclusterError as e:
                    # Unavailable, NOSPACE, too many requests, refused: every part of a step
                    # keeps what it has not done yet, so the next step takes it up again.
                    # Nothing is dropped (docs/OPERATIONS.md).
                    log.warning("scheduler: step not finished (%s); again in %.1fs", e, backoff)
                    self.stop.wait(backoff)
                    backoff = min(backoff * 2, defaults.RETRY_BACKOFF_MAX)
        finally:
            if isinstance(self.stop, AnyEvent):
                self.stop.unsubscribe(wake)
            for w in watches:
                w.stop()

    def _step(self) -> None:
        self._last_step = time.monotonic()
        self._process_submissions()
        for p in self.deps.release():
            self.backlog.add(p, time.time())
        self._release_ended()
        self.cancels.process()
        self._last_assigned = len(self.view.capacity.running)
        self._schedule()
        self._last_assigned = len(self.view.capacity.running) - self._last_assigned
        # After scheduling: the freed slots are filled without waiting for this read.
        self._classify_ended()
        if time.monotonic() >= self._next_gc:
            self._collect_garbage()
            self._next_gc = time.monotonic() + GC_INTERVAL

    def _wait_time(self) -> float:
        now = time.time()
        waits = [IDLE_WAKEUP, max(0.0, self._next_gc - time.monotonic())]
        next_start = self.backlog.next_start()
        if next_start is not None:
            waits.append(next_start - now)
        return max(0.0, min(waits))

    # ------------------------------------------------------------ loading state

    def _load(self) -> int:
        """Read everything at one revision, so that the watches continue exactly from it."""
        rev, jobs, assigned, queued = self.view.load(self.client)
        keys, view = self.keys, self.view
        indexed, _ = self.client.get_prefix(keys.rerun_dir, keys_only=True, revision=rev)
        lost: list[tuple[JobRecord, int]] = []
        revisions: dict[str, int] = {}  # every job record's mod revision, by id
        waiting: list[tuple[JobRecord, int]] = []  # records between two attempts
        for kv in jobs:
            job_id = keys.job_id_of(keys.jobs_dir, kv.key)
            if job_id is None:
                ignored(kv.key, "not a valid job id")
                continue
            revisions[job_id] = kv.mod_revision
            try:
                record = JobRecord.from_json(kv.value, job_id)
                if record.state.final:
                    self._final(record.id, record.state, record.finished_at or 0.0)
                elif record.state is JobState.QUEUED:
                    self._add_rerun(record, kv.mod_revision)
                    waiting.append((record, kv.mod_revision))
                elif record.node and keys.assign(record.node, record.id) in assigned:
                    view.capacity.place(record.id, record.node, record.attempt, record.job_spec())
                else:
                    lost.append((record, kv.mod_revision))
            except (UnreadableRecord, SpecError) as e:
                ignored(kv.key, f"unreadable job record: {e}")
        self.finished.sort()
        for kv in queued:
            job_id = keys.job_id_of(keys.queue_dir, kv.key)
            if job_id is None:
                ignored(kv.key, "not a valid job id")
            else:
                view.fresh_queue[job_id] = kv
        self._repair_rerun_index(
            {j for kv in indexed if (j := keys.job_id_of(keys.rerun_dir, kv.key))},
            waiting,
            revisions,
        )
        for record, mod in lost:
            self._requeue_lost(record, mod)
        return rev

    def _repair_rerun_index(
        self, indexed: set[str], waiting: list[tuple[JobRecord, int]], revisions: dict[str, int]
    ) -> None:
        """Make `rerun/` agree with the records read at the same revision. Every transition
        keeps the two together, so this finds work only after agents older than the index
        (a rolling upgrade: an old worker's retry, an old master's assignment) or a hand edit.
        A master deposed mid-retry leaves nothing to repair: its txns wrote both or neither."""
        waiting_ids = {record.id for record, _ in waiting}
        changes = [
            transitions.index_rerun(self.keys, record, mod)
            for record, mod in waiting
            if record.id not in indexed
        ]
        changes += [
            transitions.unindex_rerun(self.keys, job_id, revisions.get(job_id))
            for job_id in sorted(indexed - waiting_ids)
        ]
        for change in changes:
            self._fenced(change)  # refused: the job moved on since, with its index
        if changes:
            log.warning("repaired %d re-run index key(s) (rerun/)", len(changes))

    def _add_rerun(self, record: JobRecord, mod_revision: int) -> None:
        try:
            spec = record.job_spec()
        except SpecError as e:
            log.error(
                "job %s has an invalid stored spec: %s", record.id, e, extra={"job_id": record.id}
            )
            return
        rerun = Pending(record.id, spec, self.keys.job(record.id), mod_revision, record.seq, record)
        self.backlog.add(rerun, time.time())

    # ------------------------------------------------------------ events

    def _drain_inbox(self, timeout: float) -> None:
        try:
            kind, events = self.inbox.get(timeout=timeout)
        except queue.Empty:
            return
        self._apply(kind, events)
        # Let a burst gather: one step (one read, one assignment txn) serves all of it.
        pause = COALESCE
        if self._last_assigned > 1:
            pause = max(pause, self._last_step + MIN_STEP_INTERVAL - time.monotonic())
        time.sleep(pause)
        while True:
            try:
                kind, events = self.inbox.get_nowait()
            except queue.Empty:
                return
            self._apply(kind, events)

    def _apply(self, kind: str, events: list[Event]) -> None:
        if kind == "compacted":
            raise _Resync
        if kind == "stop":
            return
        self.view.apply(kind, events)

    # ------------------------------------------------------------ submissions

    def _process_submissions(self) -> None:
        if not self.view.fresh_queue:
            return
        fresh, self.view.fresh_queue = self.view.fresh_queue, {}
        rejects: list[tuple[KV, str]] = []
        # No read here: a queue key whose job exists already (a plain `etcdctl put` of a
        # used id) fails its assignment's `jobs/<id> absent` compare and is dropped then.
        for job_id, kv in fresh.items():
            try:
                spec = parse_spec(kv.value, job_id)
            except SpecError as e:
                rejects.append((kv, str(e)))
                continue
            fresh = Pending(job_id, spec, kv.key, kv.mod_revision, kv.create_revision)
            if not self.deps.hold(fresh):  # else it waits for its dependencies there
                self.backlog.add(fresh, time.time())
        for i, (kv, reason) in enumerate(rejects):
            try:
                self._reject(kv, reason)
            except PiclusterError:
                for later, _ in rejects[i:]:  # rejected at the next step, not forgotten
                    self.view.fresh_queue.setdefault(Keys.last_segment(later.key), later)
                raise

    def _reject(self, kv: KV, reason: str) -> None:
        job_id = Keys.last_segment(kv.key)
        now = time.time()
        epoch = self.election.create_revision
        if self._fenced(transitions.reject(self.keys, kv, reason, now, epoch)):
            log.warning("job %s rejected: %s", job_id, reason, extra={"job_id": job_id})
            self._final(job_id, JobState.REJECTED, now)
        elif self.client.get(self.keys.job(job_id)) is not None:
            self._drop_duplicate(kv)

    def _drop_duplicate(self, kv: KV) -> None:
        """A plain `etcdctl put` of an id that exists already: the job is not made twice."""
        log.warning("duplicate submission of %s ignored", Keys.last_segment(kv.key))
        self._fenced(transitions.drop_duplicate(kv))

    # ------------------------------------------------------------ ended assignments

    def _release_ended(self) -> None:
        """Free the slots of ended assignments (again, harmlessly, after a failed step)."""
        for node, job_id in self.view.ended:
            self.view.capacity.unplace(job_id, node)

    def _classify_ended(self) -> None:
        """Finished (kept until retention), back in the queue (a retry), or lost with its node.

        An entry leaves `_ended` only once handled: a step that fails on etcd leaves the
        rest for the next step, so no retry and no lost worker's job is forgotten.
        """
        if not self.view.ended:
            return
        records = self.client.get_many([self.keys.job(job_id) for _, job_id in self.view.ended])
        handled = 0
        try:
            for node, job_id in self.view.ended:
                kv = records.get(self.keys.job(job_id))
                if kv is not None:
                    self._classify(node, job_id, kv)
                handled += 1
        finally:
            del self.view.ended[:handled]

    def _classify(self, node: str, job_id: str, kv: KV) -> None:
        record = record_or_none(kv, job_id)
        if record is None:
            return
        if record.state.final:
            self._final(job_id, record.state, record.finished_at or time.time())
        elif record.state is JobState.QUEUED:
            if job_id not in self.backlog:
                self._add_rerun(record, kv.mod_revision)
        elif record.node == node:
            # Still marked as running there, but its assignment is gone: the worker's
            # lease expired (or it was revoked). Re-run it elsewhere.
            self._requeue_lost(record, kv.mod_revision)

    def _requeue_lost(self, record: JobRecord, mod_revision: int) -> None:
        now = time.time()
        change = transitions.requeue_lost(
            self.keys,
            record,
            mod_revision,
            cancelled=record.id in self.view.cancels,
            now=now,
            epoch=self.election.create_revision,
        )
        res = self._fenced_txn(change)
        if res is None or not res.succeeded:
            return
        new = change.record
        assert new is not None
        log.warning("job %s: %s", record.id, new.reason, extra={"job_id": record.id})
        if new.state.final:
            self._final(record.id, new.state, now)
        else:
            self._add_rerun(new, res.revision)

    # ------------------------------------------------------------ placement

    def _schedule(self) -> None:
        if not self.backlog:
            return
        now = time.time()
        self.backlog.release_due(now)
        candidates = self.view.capacity.candidates()
        if not candidates:
            return
        picked: list[tuple[Pending, NodeSlots]] = []
        taken = []
        caps = ArrayCaps(placed.array for placed in self.view.capacity.running.values())
        try:
            while candidates:
                entry = self.backlog.pop_ready()
                if entry is None:
                    break
                p = entry[2]
                taken.append(entry)
                if not caps.allows(p.spec):
                    continue  # its array runs as many as its cap allows
                node = pick(p.spec, candidates)
                if node is None:
                    continue
                caps.take(p.spec)
                node.take(p.spec)  # tentatively, for the next picks
                picked.append((p, node))
                if node.used_slots >= node.capacity:
                    candidates = [n for n in candidates if n.used_slots < n.capacity]
            for p, node in picked:  # undone: `place` takes the slots of what is committed
                node.give_back(p.spec)
            epoch = self.election.create_revision
            batch = [(p, node, self._assignment(p, node, now, epoch)) for p, node in picked]
            # The record (spec and all) goes into each txn twice: the chunker keeps a txn
            # within etcd's limits on compares, operations and bytes.
            for chunk in txn_chunks(batch, _assign_cost):
                self._commit(chunk, now)
        finally:
            # Whatever is still pending goes back; assigned jobs have left the backlog.
            self.backlog.push_back(taken)

    def _assignment(
        self, p: Pending, node: NodeSlots, now: float, epoch: int
    ) -> transitions.Transition:
        return transitions.assign(
            self.keys,
            p.record or transitions.first_record(p.id, p.spec, p.seq, now),
            p.source_key,
            p.source_revision,
            fresh=p.fresh,
            node=node.name,
            lease=node.lease,
            now=now,
            epoch=epoch,
        )

    def _commit(self, batch: list[Assignment], now: float) -> None:
        changes = [change for _, _, change in batch]
        compares = [c for change in changes for c in change.compares]
        compares += [
            compare
            for node in {n.name: n for _, n, _ in batch}.values()
            for compare in transitions.node_takes_work(self.keys, node.name, node.create_revision)
        ]
        try:
            res = self._fenced_txn(
                transitions.Transition(compares, [op for change in changes for op in change.ops])
            )
        except RequestTooLarge:
            if len(batch) == 1:
                self._too_large(batch[0][0])
                return
            res = None  # split below
        if res is not None and res.succeeded:
            for p, node, change in batch:
                assert change.record is not None
                self.backlog.pop(p.id)
                self.view.capacity.place(p.id, node.name, change.record.attempt, p.spec)
            return
        if len(batch) > 1:
            for item in batch:
                self._commit([item], now)
            return
        self._refresh(batch[0][0], batch[0][1])

    def _too_large(self, p: Pending) -> None:
        """An assignment that etcd refuses as too large can never be made: the job leaves the
        queue with the reason, rather than block it (rare: the size limit at submission
        keeps specs well within it)."""
        self.backlog.pop(p.id)
        reason = (
            f"too large to assign: its record, written twice in one request, exceeds etcd's "
            f"request limit ({limits.MAX_REQUEST_BYTES} bytes); keep specs under "
            f"{limits.MAX_SPEC_BYTES} bytes"
        )
        kv = self.client.get(p.source_key) if p.fresh else None
        if kv is None:
            log.error("job %s: %s; left as it is", p.id, reason, extra={"job_id": p.id})
            return
        try:
            self._reject(kv, reason)
        except PiclusterError:
            self.view.fresh_queue.setdefault(p.id, kv)  # rejected at a later step
            raise

    def _refresh(self, p: Pending, node: NodeSlots) -> None:
        """A single assignment was refused: learn what changed."""
        kv = self.client.get(p.source_key)
        job_kv = self.client.get(self.keys.job(p.id)) if p.fresh else kv
        if p.fresh and (kv is None or job_kv is not None):
            # Taken already (maybe by our own write whose reply was lost), withdrawn, or a
            # second submission of an id that exists.
            self.backlog.pop(p.id)
            if kv is not None and job_kv is not None:
                try:
                    self._drop_duplicate(kv)
                except PiclusterError:
                    self.view.fresh_queue.setdefault(p.id, kv)  # dropped at a later step
                    raise
                return
            if job_kv is not None:
                record = record_or_none(job_kv, p.id)
                running = self.view.capacity.running
                if record and record.state.active and record.node and p.id not in running:
                    self.view.capacity.place(p.id, record.node, record.attempt, p.spec)
            return
        if kv is None:
            self.backlog.pop(p.id)
            return
        if kv.mod_revision != p.source_revision:
            self.backlog.pop(p.id)
            if p.fresh:
                self.view.fresh_queue[p.id] = kv
            else:
                record = record_or_none(kv, p.id)
                if record is not None and record.state is JobState.QUEUED:
                    self._add_rerun(record, kv.mod_revision)
        node_kv = self.client.get(self.keys.node(node.name))
        if node_kv is None:
            self.view.capacity.nodes.pop(node.name, None)
        elif node_kv.create_revision != node.create_revision:
            self.view.node_event(node_kv)
        drain_kv = self.client.get(self.keys.drain(node.name))
        if drain_kv is not None:  # ahead of its own watch event (see `node_takes_work`)
            self.view.apply("drain", [Event("PUT", drain_kv)])

    # ------------------------------------------------------------ retention

    def _collect_garbage(self) -> None:
        cutoff = time.time() - self.cfg.keep_finished_seconds
        doomed = self.finished.past_retention(self.cfg.keep_finished, cutoff, EXPIRES_PER_TXN * 20)
        for i in range(0, len(doomed), EXPIRES_PER_TXN):
            try:
                self._fenced(transitions.expire(self.keys, doomed[i : i + EXPIRES_PER_TXN]))
            except PiclusterError:
                self.finished.put_back(doomed[i:])
                raise
        if doomed:
            self.deps.forget(doomed)
            log.info("removed %d finished job(s) past retention", len(doomed))

    def _final(self, job_id: str, state: JobState, when: float) -> None:
        """A job reached a final state: kept until retention; its dependents are woken."""
        self.finished.add(when, job_id)
        self.deps.finished(job_id, state)

    # ------------------------------------------------------------ fenced writes

    def _fenced_txn(self, change: transitions.Transition):  # type: ignore[no-untyped-def]
        # Every error propagates (NotLeader, Unavailable, NOSPACE, ...): the caller keeps
        # what it has not done, and the next step takes it up (docs/OPERATIONS.md).
        return self.election.fenced_txn(change.ops, extra_compare=change.compares)

    def _fenced(self, change: transitions.Transition) -> bool:
        res = self._fenced_txn(change)
        return res is not None and res.succeeded


Assignment = tuple[Pending, NodeSlots, transitions.Transition]


def _assign_cost(item: Assignment) -> tuple[int, int, int]:
    """An assignment's share of a txn: its compares plus (at most) those on its node."""
    change = item[2]
    node_compares = 2  # see `transitions.node_takes_work`
    return (
        len(change.compares) + node_compares,
        len(change.ops),
        txn_bytes(change.compares, change.ops) + 64 * node_compares,
    )
