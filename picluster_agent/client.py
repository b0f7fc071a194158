"""The Python API: submit, inspect, wait for and cancel jobs, from any node or a laptop.

    from picluster_agent.client import Client
    client = Client(endpoints="http://pi1:2379,http://pi2:2379")
    job = client.submit(["python3", "simulate.py", "--seed", "7"], max_attempts=3)
    print(job.id, client.wait([job.id])[job.id].state)

A submission is accepted exactly when etcd has committed `<prefix>/queue/<id>`; `submit`
returns only then. Ids are chosen here (ULIDs), so a retry with the same id is idempotent:
the transaction refuses to create a job whose id exists in the queue or among the jobs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from . import defaults
from .config import Connection, build_connection, default_config_path, load_file
from .coord.election import Leader, current_leader
from .coord.registry import NodeView, list_nodes
from .errors import Indeterminate, NotFound, PiclusterError, Unavailable
from .etcd.adapter import (
    KV,
    EtcdClient,
    Event,
    TLSFiles,
    cmp_absent,
    cmp_modified_at,
    op_get,
    op_put,
)
from .etcd.keys import Keys, validate_job_id, validate_node_name
from .etcd.limits import READS_PER_TXN, txn_bytes, txn_chunks
from .jobs import transitions
from .jobs.arrays import member_specs, members_prefix, parse_array
from .jobs.dependencies import dependencies, judge
from .jobs.ids import new_job_id
from .jobs.periodic import CronEntry
from .jobs.periodic import check as check_cron
from .jobs.placement import why_waiting
from .jobs.records import FINAL_STATE_MARKS, JobRecord, JobResult, JobState, UnreadableRecord
from .jobs.spec import MAX_SPEC_BYTES, JobSpec, SpecError, build_spec, parse_spec

INDETERMINATE_RETRIES = 5
JOBS_PAGE = 200  # records per read when `jobs` looks for the newest that match
_NEWEST_FIRST: dict[str, Any] = {"sort_target": "CREATE", "sort_order": "DESCEND"}


@dataclass(frozen=True)
class SubmitResult:
    id: str
    accepted: bool  # False: this id had been accepted before; nothing new was created


class PartialSubmit(PiclusterError):
    """A submission of many jobs stopped part-way: the jobs in `results` are settled
    (accepted, or accepted before), in order; the others were not accepted, for `cause`."""

    exit_code = 8

    def __init__(self, results: list[SubmitResult], total: int, cause: PiclusterError) -> None:
        super().__init__(
            f"only {len(results)} of {total} jobs were accepted (their ids are printed); "
            f"the others were not: {cause}"
        )
        self.results = results
        self.total = total
        self.cause = cause


@dataclass(frozen=True)
class JobStatus:
    id: str
    state: JobState
    record: JobRecord | None
    result: JobResult | None
    waiting: str | None = None  # why a queued job has not started yet

    def to_dict(self) -> dict[str, Any]:
        r = self.record
        out: dict[str, Any] = {"id": self.id, "state": self.state.value, "waiting": self.waiting}
        if r is not None:
            out.update(
                attempt=r.attempt,
                node=r.node,
                exit_code=r.exit_code,
                reason=r.reason,
                submitted_at=r.submitted_at,
                started_at=r.started_at,
                finished_at=r.finished_at,
                failures=r.failures,
                losses=r.losses,
                spec=r.spec,
                history=list(r.history),
            )
        if self.result is not None:
            out["result"] = {
                "attempt": self.result.attempt,
                "node": self.result.node,
                "exit_code": self.result.exit_code,
                "signal": self.result.signal,
                "timed_out": self.result.timed_out,
                "error": self.result.error,
                "cpu_seconds": self.result.cpu_seconds,
                "peak_memory_bytes": self.result.peak_memory_bytes,
            }
        return out


@dataclass(frozen=True)
class ArraySubmission:
    parent: str  # the id that `status`, `wait` and `cancel` take for the whole array
    results: list[SubmitResult]  # one per member, in index order


@dataclass(frozen=True)
class ArrayStatus:
    parent: str
    members: list[JobStatus]  # in index order

    @property
    def counts(self) -> dict[str, int]:
        return summarize({m.id: m for m in self.members})

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.parent,
            "array": True,
            "size": len(self.members),
            "counts": self.counts,
            "members": [{"id": m.id, "state": m.state.value} for m in self.members],
        }


class PartialCancel(PiclusterError):
    """A cancel of several ids stopped part-way: those in `done` were handled (a request
    written, or found final), in order; the others were not, for `cause`."""

    exit_code = 8

    def __init__(self, done: list[JobStatus | ArrayStatus], total: int, cause: PiclusterError):
        super().__init__(
            f"only {len(done)} of {total} ids were handled (printed); the others were not: {cause}"
        )
        self.done = done
        self.cause = cause


@dataclass(frozen=True)
class Master:
    leader: Leader
    since: float | None  # when it became master, from its own leader record


class Client:
    def __init__(
        self,
        endpoints: str | Sequence[str] | None = None,
        *,
        prefix: str | None = None,
        cacert: str | None = None,
        cert: str | None = None,
        key: str | None = None,
        config: str | None = None,
    ) -> None:
        """Connection settings: arguments, then PICLUSTER_* environment, then config file."""
        file = load_file(config or default_config_path(), required=bool(config))
        eps = ",".join(endpoints) if isinstance(endpoints, list | tuple) else endpoints
        conn = build_connection(
            file, endpoints=eps, prefix=prefix, cacert=cacert, cert=cert, key=key
        )
        self._init(conn)

    @classmethod
    def from_connection(cls, conn: Connection, etcd: EtcdClient | None = None) -> Client:
        """A client for `conn`; over `etcd` if given (the agent's API shares its own)."""
        self = cls.__new__(cls)
        self._init(conn, etcd)
        return self

    def _init(self, conn: Connection, etcd: EtcdClient | None = None) -> None:
        self.connection = conn
        self.keys = Keys(conn.prefix)
        self.etcd = etcd or EtcdClient(conn.endpoints, TLSFiles(conn.cacert, conn.cert, conn.key))

    def close(self) -> None:
        self.etcd.close()

    # ------------------------------------------------------------ submitting

    def submit(
        self, command: Sequence[str] | str, *, id: str | None = None, **fields: Any
    ) -> SubmitResult:
        """Submit one job; `fields` are JobSpec fields (shell, env, cwd, timeout, ...)."""
        fields.setdefault("submitted_at", time.time())
        return self.submit_spec(build_spec(command, **fields), id=id)

    def submit_spec(self, spec: JobSpec, *, id: str | None = None) -> SubmitResult:
        job_id = validate_job_id(id) if id is not None else new_job_id()
        self._check_dependencies([spec])
        return self._settle(job_id, _encoded(spec), maybe_sent=False)

    def _check_dependencies(self, specs: Sequence[JobSpec]) -> None:
        """Every job named in a spec's `after` must exist already: so no cycle can form.

        A job of the same submission does not count (it would not be older than its
        dependent, and the master cancels a job whose dependency is younger)."""
        wanted = sorted({dep for s in specs for _, dep in dependencies(s.after)})
        if not wanted:
            return
        found = self.etcd.get_many(
            [k for dep in wanted for k in (self.keys.queue(dep), self.keys.job(dep))]
        )
        for dep in wanted:
            if self.keys.queue(dep) not in found and self.keys.job(dep) not in found:
                raise SpecError(
                    f"job {dep} not found: a dependency must be submitted first "
                    "(unknown, or removed after its retention period)",
                    field="after",
                )

    def submit_array(
        self,
        command: Sequence[str] | str,
        indices: Iterable[int] | str,
        *,
        max_running: int | None = None,
        parent: str | None = None,
        **fields: Any,
    ) -> ArraySubmission:
        """One job per index (`range(0, 100, 2)`, or the CLI's text `"0-99:2%10"`), ids
        `PARENT.INDEX`, PICLUSTER_ARRAY_INDEX in the environment; at most `max_running`
        assigned or running at once. A retry with the same `parent` creates nothing new."""
        if isinstance(indices, str):
            parsed = parse_array(indices)
            indices, max_running = parsed.indices, parsed.max_running or max_running
        parent = validate_job_id(parent) if parent is not None else new_job_id()
        fields.setdefault("submitted_at", time.time())
        specs, ids = member_specs(build_spec(command, **fields), parent, indices, max_running)
        return ArraySubmission(parent, self.submit_many(specs, ids))

    def array(self, parent: str) -> ArrayStatus:
        """The members of array `parent` (NotFound if it has none), from one read."""
        first = members_prefix(parent)
        queued, rev = self.etcd.get_prefix(self.keys.queue_dir + first)
        records, _ = self.etcd.get_prefix(self.keys.jobs_dir + first, revision=rev)
        members: dict[str, JobStatus] = {}
        for kv in queued:
            job_id = Keys.last_segment(kv.key)
            members[job_id] = JobStatus(job_id, JobState.QUEUED, None, None, "submitted")
        for kv in records:
            record = _readable(kv.value, self.keys.job_id_of(self.keys.jobs_dir, kv.key))
            if record is not None:
                members[record.id] = JobStatus(record.id, record.state, record, None)
        if not members:
            raise NotFound(
                f"job {parent} not found: never accepted, or removed after its retention period"
            )
        return ArrayStatus(parent, sorted(members.values(), key=lambda m: _index_of(m.id)))

    def cancel_array(self, parent: str) -> ArrayStatus:
        """Ask for every member not yet finished to be cancelled; returns the status before."""
        return self._request_array_cancel(self.array(parent))

    def _request_array_cancel(self, before: ArrayStatus) -> ArrayStatus:
        now = str(time.time())
        puts = [op_put(self.keys.cancel(m.id), now) for m in before.members if not m.state.final]
        for i in range(0, len(puts), READS_PER_TXN):
            # Plain puts: a request already there only gets a later time.
            self.etcd.txn([], puts[i : i + READS_PER_TXN])
        return before

    def _settle(self, job_id: str, value: str, *, maybe_sent: bool) -> SubmitResult:
        """Submit one job until etcd answers, and tell a job made by us from one that existed.

        `maybe_sent`: an earlier try (a lost reply, here or to a batch) may have committed;
        a refusal is then our own job if `submission_landed` says so."""
        change = transitions.submit(self.keys, job_id, value)
        for attempt in range(INDETERMINATE_RETRIES):
            try:
                res = self.etcd.txn(change.compares, change.ops, change.failure)
            except Indeterminate:
                # The try may have committed: asking again is safe (same id), and a
                # refusal then tells us whether the job that exists is ours.
                maybe_sent = True
                time.sleep(defaults.RETRY_BACKOFF_MIN * (attempt + 1))
                continue
            if res.succeeded:
                return SubmitResult(job_id, accepted=True)
            queued, job = (kvs[0] if kvs else None for kvs in res.ranges)
            ours = maybe_sent and transitions.submission_landed(queued, job, value)
            return SubmitResult(job_id, accepted=ours)
        raise Unavailable(f"could not learn whether job {job_id} was accepted; ask `status`")

    def submit_many(
        self,
        specs: Sequence[JobSpec],
        ids: Sequence[str | None] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> list[SubmitResult]:
        """Submit many jobs, as many per transaction as etcd allows (64: two compares each;
        fewer when their bytes would pass its request limit). Results keep the order.

        If a transaction fails after others committed, raises PartialSubmit carrying the
        results of every job settled so far; if none was, the error itself.
        """
        if ids is not None and len(ids) != len(specs):
            raise SpecError("ids and specs differ in length")
        chosen = [
            validate_job_id(i) if i else new_job_id()
            for i in (ids if ids is not None else [None] * len(specs))
        ]
        if len(set(chosen)) != len(chosen):
            raise SpecError("the same job id appears twice in one submission")
        values = [_encoded(s) for s in specs]
        self._check_dependencies(specs)
        results: list[SubmitResult] = []
        changes = [transitions.submit(self.keys, i, v) for i, v in zip(chosen, values, strict=True)]
        try:
            for chunk in txn_chunks(zip(chosen, values, changes, strict=True), _submit_cost):
                self._submit_chunk(chunk, results)
                if progress is not None:
                    progress(len(chunk))
        except PiclusterError as e:
            if not results:
                raise
            raise PartialSubmit(results, len(specs), e) from e
        return results

    def _submit_chunk(self, chunk: list[Submission], results: list[SubmitResult]) -> None:
        """Submit `chunk` in one txn; add each job to `results` once it is settled."""
        changes = [change for _, _, change in chunk]
        try:
            res = self.etcd.txn(
                [c for change in changes for c in change.compares],
                [op for change in changes for op in change.ops],
            )
            if res.succeeded:
                results.extend(SubmitResult(job_id, True) for job_id, _, _ in chunk)
                return
            maybe_sent = False  # refused as a whole: some id exists already
        except Indeterminate:
            maybe_sent = True  # the whole batch may have committed
        # Settle each job by itself.
        for job_id, value, _ in chunk:
            results.append(self._settle(job_id, value, maybe_sent=maybe_sent))

    # ------------------------------------------------------------ inspecting

    def status(self, job_id: str) -> JobStatus:
        validate_job_id(job_id)
        res = self.etcd.txn(
            [],
            [
                op_get(self.keys.queue(job_id)),
                op_get(self.keys.job(job_id)),
                op_get(self.keys.result(job_id)),
            ],
        )
        queued, job, result = (r[0] if r else None for r in res.ranges)
        if job is not None:
            try:
                record = JobRecord.from_json(job.value, job_id)
                res_obj = JobResult.from_json(result.value) if result is not None else None
            except UnreadableRecord as e:
                raise PiclusterError(
                    f"job {job_id}: its record in etcd was not written by picluster ({e})"
                ) from e
            waiting = None
            if record.state is JobState.QUEUED:
                try:
                    waiting = self._why_waiting(record, record.job_spec())
                except SpecError as e:
                    waiting = f"cannot run: {e}"
            return JobStatus(job_id, record.state, record, res_obj, waiting)
        if queued is not None:
            try:
                spec = parse_spec(queued.value, job_id)
                record = JobRecord(
                    id=job_id,
                    spec=spec.stored_dict(),
                    state=JobState.QUEUED,
                    seq=queued.create_revision,
                    submitted_at=spec.submitted_at,
                )
                waiting = self._why_waiting(record, spec)
            except SpecError as e:
                record, waiting = None, f"will be rejected: {e}"
            return JobStatus(job_id, JobState.QUEUED, record, None, waiting)
        raise NotFound(
            f"job {job_id} not found: never accepted, or removed after its retention period"
        )

    def _why_waiting(self, record: JobRecord, spec: JobSpec) -> str:
        if spec.after and record.attempt == 0:
            held = self._dependency_wait(spec)
            if held is not None:
                return held
        nodes = [view.info for view in list_nodes(self.etcd, self.keys)]
        drained = {
            Keys.last_segment(kv.key)
            for kv in self.etcd.get_prefix(self.keys.drain_dir, keys_only=True)[0]
        }
        return why_waiting(
            spec, not_before=record.not_before, reason=record.reason, nodes=nodes, drained=drained
        )

    def _dependency_wait(self, spec: JobSpec) -> str | None:
        """Which dependency a queued job waits on (the master's rule, `judge`)."""
        deps = [dep for _, dep in dependencies(spec.after)]
        found = self.etcd.get_many(
            [k for dep in deps for k in (self.keys.queue(dep), self.keys.job(dep))]
        )
        states: dict[str, str] = {}
        outcomes: dict[str, JobState] = {}
        for dep in deps:
            job_kv = found.get(self.keys.job(dep))
            record = _readable(job_kv.value, dep) if job_kv is not None else None
            if record is not None:
                states[dep] = record.state.value
                if record.state.final:
                    outcomes[dep] = record.state
            elif self.keys.queue(dep) in found:
                states[dep] = JobState.QUEUED.value
            else:
                # Never submitted, or removed: the master cancels the job.
                return f"will be cancelled: dependency {dep} does not exist"
        return judge(spec.after, outcomes.get).describe(states)

    def jobs(
        self,
        state: JobState | str | None = None,
        node: str | None = None,
        limit: int | None = None,
        *,
        active: bool = False,
    ) -> list[JobStatus]:
        """Jobs, oldest first: the newest `limit` of them, or all.

        `active`: only those not finished, found without reading finished records: the
        queue (new submissions), the inboxes (assigned or running) and the re-run index
        (waiting for another attempt: a retry's backoff, or re-queued after a lost node),
        then the records of the last two. Otherwise the records are read newest first in
        pages of etcd's own `limit`, until `limit` match."""
        want = JobState(state) if state is not None else None
        out: list[JobStatus] = []
        queued, rev = self.etcd.get_prefix(self.keys.queue_dir, limit=limit or 0, **_NEWEST_FIRST)
        order = {}  # a submission's place: its queue key's create revision (a record's seq)
        if want in (None, JobState.QUEUED) and node is None:
            for kv in queued:
                job_id = Keys.last_segment(kv.key)
                order[job_id] = kv.create_revision
                out.append(JobStatus(job_id, JobState.QUEUED, _submitted(kv), None, "submitted"))
        if active or (want is not None and not want.final):
            keys = self.keys
            inboxes, _ = self.etcd.get_prefix(keys.assign_root, keys_only=True, revision=rev)
            reruns, _ = self.etcd.get_prefix(keys.rerun_dir, keys_only=True, revision=rev)
            ids = [a[1] for kv in inboxes if (a := keys.assignment_of(kv.key))]
            ids += [j for kv in reruns if (j := keys.job_id_of(keys.rerun_dir, kv.key))]
            # Each once: the two never name one job at one revision, unless made by hand.
            found = self.etcd.get_many([keys.job(i) for i in dict.fromkeys(ids)])
            out += self._matching(found.values(), want, node, active=True)
        else:
            out += self._newest_records(want, node, limit, rev)
        out.sort(key=lambda s: (s.record.seq if s.record else order.get(s.id, 0), s.id))
        return out[-limit:] if limit else out

    def _newest_records(
        self, want: JobState | None, node: str | None, limit: int | None, rev: int
    ) -> list[JobStatus]:
        """Records newest first, a page at a time, until `limit` match (all without one)."""
        page = max(limit or 0, JOBS_PAGE) if limit else 0
        out: list[JobStatus] = []
        below = 0  # max_create_revision of the next page (0: no bound)
        while True:
            kvs, _ = self.etcd.get_prefix(
                self.keys.jobs_dir,
                limit=page,
                max_create_revision=below,
                revision=rev,
                **_NEWEST_FIRST,
            )
            out += self._matching(kvs, want, node)
            if not page or len(kvs) < page or (limit and len(out) >= limit):
                return out
            below = kvs[-1].create_revision - 1

    def _matching(
        self, kvs: Iterable[KV], want: JobState | None, node: str | None, active: bool = False
    ) -> list[JobStatus]:
        out = []
        for kv in kvs:
            record = _readable(kv.value, self.keys.job_id_of(self.keys.jobs_dir, kv.key))
            if record is None:
                continue  # not written by picluster: the master ignores it too
            if want is not None and record.state is not want:
                continue
            if node is not None and record.node != node:
                continue
            if active and record.state.final:
                continue
            out.append(JobStatus(record.id, record.state, record, None))
        return out

    def logs(self, job_id: str, *, stderr: bool = False) -> str:
        status = self.status(job_id)
        if status.result is None:
            raise NotFound(f"job {job_id} has no output yet (state {status.state.value})")
        return status.result.stderr_tail if stderr else status.result.stdout_tail

    def wait(
        self,
        job_ids: Iterable[str],
        *,
        timeout: float | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> dict[str, JobStatus]:
        """Block until every job is final (or `timeout`); returns the statuses seen last.

        One prefix watch on `<prefix>/jobs/` serves any number of ids.
        """
        ids = list(dict.fromkeys(validate_job_id(i) for i in job_ids))
        wanted = set(ids)
        done: dict[str, JobStatus] = {}
        changed = threading.Event()
        lock = threading.Lock()

        def on_events(events: list[Event], _rev: int) -> None:
            for e in events:
                job_id = Keys.last_segment(e.kv.key)
                if job_id not in wanted or not any(m in e.kv.value for m in FINAL_STATE_MARKS):
                    continue
                record = _readable(e.kv.value, job_id)
                if record is not None and record.state.final:
                    with lock:
                        done[job_id] = JobStatus(job_id, record.state, record, None)
                    changed.set()

        # One consistent snapshot, then the watch continues exactly where it was taken.
        records, rev = self.etcd.get_prefix(self.keys.jobs_dir)
        queued, _ = self.etcd.get_prefix(self.keys.queue_dir, keys_only=True, revision=rev)
        known = {Keys.last_segment(kv.key) for kv in queued}
        for kv in records:
            job_id = Keys.last_segment(kv.key)
            if job_id in wanted:
                known.add(job_id)
                record = _readable(kv.value, job_id)
                if record is not None and record.state.final:
                    done[job_id] = JobStatus(job_id, record.state, record, None)
        missing = [i for i in ids if i not in known]
        if missing:
            # An array's parent id stands for its members (NotFound when it has none).
            members = {m: [s.id for s in self.array(m).members] for m in missing}
            ids = [j for i in ids for j in members.get(i, [i])]
            return self.wait(ids, timeout=timeout, progress=progress)
        compacted = threading.Event()
        watch = self.etcd.watch(
            self.keys.jobs_dir,
            on_events,
            start_revision=rev + 1,
            on_compacted=lambda _e: (compacted.set(), changed.set()),
            only="PUT",
        )
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                if compacted.is_set():
                    # The watch lost its place in etcd's history: ask job by job instead.
                    for job_id in ids:
                        if job_id not in done:
                            status = self.status(job_id)
                            if status.state.final:
                                with lock:
                                    done[job_id] = status
                with lock:
                    finished = len(done)
                if progress is not None:
                    progress(finished, len(ids))
                if finished >= len(ids):
                    break
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                changed.wait(0.5 if left is None else min(0.5, left))
                changed.clear()
        finally:
            watch.stop()
        with lock:
            final = dict(done)
        results = {}
        for kv in self.etcd.get_many([self.keys.result(i) for i in final]).values():
            try:
                results[Keys.last_segment(kv.key)] = JobResult.from_json(kv.value)
            except UnreadableRecord:
                continue  # not written by picluster: shown as no result

        return {
            i: replace(final[i], result=results.get(i)) if i in final else self.status(i)
            for i in ids
        }

    # ------------------------------------------------------------ control

    def cancel(self, job_id: str) -> JobStatus:
        """Ask for a job to be cancelled; returns its status at the time of asking."""
        status = self.status(job_id)
        return self._request_cancel(status)

    def _request_cancel(self, status: JobStatus) -> JobStatus:
        if status.state.final:
            return status
        change = transitions.request_cancel(self.keys, status.id, time.time())
        self.etcd.txn(change.compares, change.ops)
        return status

    def cancel_each(self, ids: Sequence[str]) -> list[JobStatus | ArrayStatus]:
        """Cancel several jobs or arrays (`scancel A B C`): each as `cancel` or
        `cancel_array` would, in the order given, each status as it was before.

        Every id is looked up first: one that names neither a job nor an array raises
        NotFound and nothing is cancelled, so a typo in a list does not cancel half of it.
        A job that ends between the look-up and its request is reported as it was looked
        up; its request then finds the job final and is dropped by the master. A request
        that fails after others went in raises PartialCancel, which holds those.
        """
        found: list[JobStatus | ArrayStatus] = []
        unknown: list[str] = []
        for job_id in dict.fromkeys(ids):  # once each, in the order given
            try:
                found.append(self.status(job_id))
            except NotFound:
                try:
                    found.append(self.array(job_id))
                except NotFound:
                    unknown.append(job_id)
        if unknown:
            raise NotFound(
                f"job{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} not found "
                "(never accepted, or removed after its retention period): nothing cancelled"
            )
        done: list[JobStatus | ArrayStatus] = []
        for f in found:
            try:
                if isinstance(f, ArrayStatus):
                    done.append(self._request_array_cancel(f))
                else:
                    done.append(self._request_cancel(f))
            except PiclusterError as e:
                if not done:
                    raise
                # Those before went in: say which, not that nothing changed (exit 2, 3).
                raise PartialCancel(done, len(found), e) from e
        return done

    # ------------------------------------------------------------ periodic jobs

    def cron_add(
        self,
        name: str,
        expr: str,
        command: Sequence[str] | str,
        *,
        tz: str = "UTC",
        catch_up: bool = False,
        **fields: Any,
    ) -> CronEntry:
        """A periodic job: the master submits `<name>-<slot>` at each slot of `expr` (in
        `tz`) from now on. Refused if `name` exists (remove it first)."""
        spec = build_spec(command, name=name, **fields).stored_dict()  # jobs named after it
        entry = CronEntry(name, expr, spec, tz, catch_up, created_at=time.time())
        check_cron(entry)
        key = self.keys.cron(name)
        res = self.etcd.txn([cmp_absent(key)], [op_put(key, entry.to_json())])
        if not res.succeeded:
            raise SpecError(f"periodic job {name} exists; remove it first", field="name")
        return entry

    def cron_list(self) -> list[CronEntry]:
        out = []
        for kv in self.etcd.get_prefix(self.keys.cron_dir)[0]:
            try:
                out.append(CronEntry.from_json(kv.value))
            except ValueError:
                continue  # not written by picluster: the master ignores it too
        return out

    def cron_pause(self, name: str, paused: bool = True) -> CronEntry:
        """Pause (or resume) an entry; a resumed one skips the slots missed while paused."""
        key = self.keys.cron(name)
        for _ in range(INDETERMINATE_RETRIES):
            kv = self.etcd.get(key)
            if kv is None:
                raise NotFound(f"periodic job {name} not found")
            try:
                entry = CronEntry.from_json(kv.value)
            except ValueError as e:  # not written by picluster: remove it instead
                raise SpecError(str(e), field="name") from None
            new = entry.with_(paused=paused)
            if not paused:
                new = new.with_(created_at=time.time())  # slots from now on
            change = [cmp_modified_at(key, kv.mod_revision)]
            if self.etcd.txn(change, [op_put(key, new.to_json())]).succeeded:
                return new
        raise Unavailable(f"periodic job {name} kept changing; try again")

    def cron_remove(self, name: str) -> bool:
        return self.etcd.delete(self.keys.cron(name)) > 0

    # ------------------------------------------------------------ the cluster

    def nodes(self) -> list[NodeView]:
        """Registered nodes, with their role (master or worker) and drain flag."""
        return list_nodes(self.etcd, self.keys)

    def master(self) -> Master | None:
        """The elected master, if any, and since when it has been master."""
        leader = current_leader(self.etcd, self.keys)
        if leader is None:
            return None
        since = None
        record = self.etcd.get(self.keys.leader)
        if record is not None:
            info = record.json()
            if info.get("lease") == f"{leader.lease:x}":  # its own record, not a predecessor's
                since = info.get("since")
        return Master(leader, since)

    def drain(self, node: str, *, force: bool = False) -> None:
        validate_node_name(node)
        if not force and self.etcd.get(self.keys.node(node)) is None:
            raise NotFound(f"node {node} is not registered (use --force to drain it anyway)")
        self.etcd.put(self.keys.drain(node), str(time.time()))

    def undrain(self, node: str) -> bool:
        validate_node_name(node)
        return self.etcd.delete(self.keys.drain(node)) > 0


def _encoded(spec: JobSpec) -> str:
    value = spec.to_json()
    size = len(value.encode("utf-8"))
    if size > MAX_SPEC_BYTES:
        raise SpecError(f"the spec is {size} bytes; the limit is {MAX_SPEC_BYTES}")
    return value


Submission = tuple[str, str, transitions.Transition]  # job id, spec JSON, its submit txn


def _submit_cost(item: Submission) -> tuple[int, int, int]:
    change = item[2]
    return len(change.compares), len(change.ops), txn_bytes(change.compares, change.ops)


def _submitted(queued: KV) -> JobRecord | None:
    """The record a submission will get, to show it (None for a spec that will be rejected)."""
    job_id = Keys.last_segment(queued.key)
    try:
        spec = parse_spec(queued.value, job_id)
    except SpecError:
        return None
    return JobRecord(
        id=job_id,
        spec=spec.stored_dict(),
        state=JobState.QUEUED,
        seq=queued.create_revision,
        submitted_at=spec.submitted_at,
    )


def _readable(raw: bytes, job_id: str | None) -> JobRecord | None:
    """A job record, or None for a value that picluster did not write."""
    try:
        return JobRecord.from_json(raw, job_id)
    except UnreadableRecord:
        return None


def _index_of(member: str) -> int:
    index = member.rsplit(".", 1)[-1]
    return int(index) if index.isdigit() else -1


def summarize(statuses: Mapping[str, JobStatus]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for s in statuses.values():
        counts[s.state.value] = counts.get(s.state.value, 0) + 1
    return counts


__all__ = [
    "ArrayStatus",
    "ArraySubmission",
    "Client",
    "JobStatus",
    "PiclusterError",
    "SubmitResult",
    "summarize",
]
