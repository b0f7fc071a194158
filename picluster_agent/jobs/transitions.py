"""The job state machine: every transition a job makes, as one guarded etcd txn.

    (etcdctl put) ─┐
    submit ──> queue/<id> ──assign──> assigned ──running──> running ──finish──> succeeded
                  │  reject──> rejected  │  ^                  │     │          failed
                  │                      │  │                  │     │          cancelled
                  │       cancel-queued  │  └───retry──────────┘     │
                  │  ──────> cancelled   │  └───requeue-lost─────────┘ (node lost: to queued,
                  └──> queued (re-run) ──┘                             cancelled or failed)
    finished records ──expire──> (deleted after retention)

A job waiting between two attempts (`retry`, `requeue-lost`) has only its record to show it,
so those two transitions also put `rerun/<id>`, and the ones that take a job out of that
wait (`assign`, `cancel-queued`, `expire`) delete it, in the same txn as the record: the
index never disagrees with the record it stands for, whichever master or worker writes,
and a listing of active jobs reads it instead of every finished record. (The race this
closes: with the index in a txn of its own, a master deposed between the two writes, or a
worker stopped between them, would leave a re-run missing from `picluster jobs`, or a
finished job in it, until some later write happened to fix it.)

Each function is pure: it returns the compares that make the transition safe, the operations
that make it, and the job's new record. The master's scheduler, the worker and the client
commit what these build (the scheduler adds its election guard to every txn: a deposed master
writes nothing); none of them builds a job's compares or operations itself. The comment on
each function names the race its compares close.

After a reply that was lost (`Indeterminate`) a caller asks `landed` (or `submission_landed`)
whether its write committed: every write here is designed so that a re-read answers that.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..etcd.adapter import (
    KV,
    Compare,
    Op,
    cmp_absent,
    cmp_created_at,
    cmp_modified_at,
    landed,
    op_delete,
    op_get,
    op_put,
)
from ..etcd.keys import Keys
from .records import MAX_NODE_LOSSES, JobRecord, JobResult, JobState
from .spec import JobSpec

RAW_SPEC_CHARS = 4096  # of a rejected spec, kept in its record to show what was refused
# The value of `rerun/<id>`: why the job waits for another attempt (its record says more).
RERUN_RETRY = "retry"
RERUN_LOST = "lost"


@dataclass(frozen=True)
class Transition:
    """One txn: `compares` then `ops`, else `failure` (reads that explain a refusal)."""

    compares: list[Compare]
    ops: list[Op]
    record: JobRecord | None = None  # the job's record after the transition, if it has one
    failure: list[Op] = field(default_factory=list)


def submission_landed(queued: KV | None, job: KV | None, value: str) -> bool:
    """After a lost reply to a submission: our spec is in the queue, or the master has taken
    it already and the job's record holds our spec."""
    if landed(queued, value):
        return True
    if job is not None:
        return JobRecord.from_json(job.value).spec == dict(json.loads(value))
    return False


# ---------------------------------------------------------------- the client's


def submit(keys: Keys, job_id: str, value: str) -> Transition:
    # Put-if-absent in both places: a retried or repeated submission of an id (or two
    # submitters choosing it) never makes a second job; the reads tell whose job it is.
    return Transition(
        compares=[cmp_absent(keys.queue(job_id)), cmp_absent(keys.job(job_id))],
        ops=[op_put(keys.queue(job_id), value)],
        failure=[op_get(keys.queue(job_id)), op_get(keys.job(job_id))],
    )


def request_cancel(keys: Keys, job_id: str, now: float) -> Transition:
    # Put-if-absent: a repeated request keeps the first one's time.
    return Transition(
        compares=[cmp_absent(keys.cancel(job_id))], ops=[op_put(keys.cancel(job_id), str(now))]
    )


# ---------------------------------------------------------------- the master's


def first_record(job_id: str, spec: JobSpec, seq: int, now: float) -> JobRecord:
    """The record a fresh submission gets when the master first writes it."""
    return JobRecord(
        id=job_id,
        spec=spec.stored_dict(),
        state=JobState.QUEUED,
        seq=seq,
        submitted_at=spec.submitted_at or now,
        queued_at=now,
    )


def reject(keys: Keys, queued: KV, reason: str, now: float, epoch: int) -> Transition:
    # The queue key is the one we read (not re-submitted since) and no job has its id: a
    # rejection never overwrites a job, and a duplicate's put is not taken for a new job.
    job_id = Keys.last_segment(queued.key)
    record = JobRecord(
        id=job_id,
        spec={"raw": queued.value[:RAW_SPEC_CHARS].decode("utf-8", errors="replace")},
        state=JobState.REJECTED,
        seq=queued.create_revision,
        submitted_at=now,
        finished_at=now,
        reason=reason,
        epoch=epoch,
    )
    return Transition(
        compares=[cmp_modified_at(queued.key, queued.mod_revision), cmp_absent(keys.job(job_id))],
        ops=[op_delete(queued.key), op_put(keys.job(job_id), record.to_json())],
        record=record,
    )


def drop_duplicate(queued: KV) -> Transition:
    # A plain `etcdctl put` of an id that exists already: only the put we read is dropped,
    # not a later one.
    return Transition(
        compares=[cmp_modified_at(queued.key, queued.mod_revision)], ops=[op_delete(queued.key)]
    )


def assign(
    keys: Keys,
    base: JobRecord,
    source_key: str,
    source_revision: int,
    *,
    fresh: bool,
    node: str,
    lease: int,
    now: float,
    epoch: int,
) -> Transition:
    # The source (queue/<id> of a fresh job, jobs/<id> of a re-run) is as we read it, and a
    # fresh job's id is unused: a cancel or a re-submission in between is never overwritten,
    # and a job is never assigned twice. The inbox key lives under the node's lease.
    attempt = base.attempt + 1
    record = base.with_(
        state=JobState.ASSIGNED,
        attempt=attempt,
        node=node,
        assigned_at=now,
        started_at=None,
        finished_at=None,
        reason=None,
        history=base.note("assigned", attempt=attempt, node=node),
        epoch=epoch,
    )
    compares = [cmp_modified_at(source_key, source_revision)]
    ops = []
    if fresh:
        compares.append(cmp_absent(keys.job(base.id)))
        ops.append(op_delete(source_key))
    else:
        ops.append(op_delete(keys.rerun(base.id)))  # its wait is over
    value = record.to_json()
    ops.append(op_put(keys.job(base.id), value))
    ops.append(op_put(keys.assign(node, base.id), value, lease=lease))
    return Transition(compares, ops, record)


def node_takes_work(keys: Keys, node: str, create_revision: int) -> list[Compare]:
    """Added once per node to an assignment txn."""
    # The registration is the one whose lease the inbox key is put under: a node that died
    # (or restarted) since we looked is given no work. Nor is one drained since: the master
    # hears of drain/ on another watch stream than queue/, maybe after the job (both may
    # even be one revision), so its view alone cannot promise the node is not drained.
    return [cmp_created_at(keys.node(node), create_revision), cmp_absent(keys.drain(node))]


def requeue_lost(
    keys: Keys, record: JobRecord, mod_revision: int, *, cancelled: bool, now: float, epoch: int
) -> Transition:
    # The record is as we read it after its assignment vanished: a report that the worker
    # got in first (a result, a retry) is never overwritten by "lost".
    losses = record.losses + 1
    lost_on = record.node
    if cancelled:
        new = record.with_(
            state=JobState.CANCELLED,
            finished_at=now,
            reason=f"cancelled (node {lost_on} was lost)",
            history=record.note("cancelled", node=lost_on),
        )
    elif losses >= MAX_NODE_LOSSES:
        new = record.with_(
            state=JobState.FAILED,
            losses=losses,
            finished_at=now,
            reason=f"lost with its node {losses} times (last: {lost_on})",
            history=record.note("lost", node=lost_on),
        )
    else:
        new = record.with_(
            state=JobState.QUEUED,
            losses=losses,
            node=None,
            reason=f"node {lost_on} lost during attempt {record.attempt}",
            history=record.note("lost", node=lost_on),
        )
    new = new.with_(epoch=epoch)
    key = keys.job(record.id)
    ops = [op_put(key, new.to_json())]
    if cancelled:
        ops.append(op_delete(keys.cancel(record.id)))
    if new.state is JobState.QUEUED:
        ops.append(op_put(keys.rerun(record.id), RERUN_LOST))
    return Transition([cmp_modified_at(key, mod_revision)], ops, new)


def cancel_queued(
    keys: Keys,
    base: JobRecord,
    source_key: str,
    source_revision: int,
    *,
    fresh: bool,
    now: float,
    epoch: int,
    reason: str = "cancelled before it started",
) -> Transition:
    # As `assign`: the source is as we read it and a fresh id unused, so a job assigned or
    # re-submitted in between is not marked cancelled behind its worker's back. Also the
    # way out for a job whose dependency can no longer be met (`reason` says which).
    record = base.with_(
        state=JobState.CANCELLED,
        finished_at=now,
        reason=reason,
        history=base.note("cancelled"),
        epoch=epoch,
    )
    ops = [op_put(keys.job(base.id), record.to_json()), op_delete(keys.cancel(base.id))]
    compares = [cmp_modified_at(source_key, source_revision)]
    if fresh:
        ops.insert(0, op_delete(source_key))
        compares.append(cmp_absent(keys.job(base.id)))
    else:
        ops.append(op_delete(keys.rerun(base.id)))
    return Transition(compares, ops, record)


def drop_cancel(keys: Keys, job_id: str) -> Transition:
    # No compare beyond the master's guard: the job is final or unknown (re-read just before).
    return Transition([], [op_delete(keys.cancel(job_id))])


def expire(keys: Keys, job_ids: Iterable[str]) -> Transition:
    # No compare beyond the master's guard: a final record never changes again. Its re-run
    # index is gone already, unless an agent older than the index left one (see `index_rerun`).
    ids = list(job_ids)
    ops = [op_delete(k) for j in ids for k in (keys.job(j), keys.result(j), keys.rerun(j))]
    return Transition([], ops)


def index_rerun(keys: Keys, record: JobRecord, mod_revision: int) -> Transition:
    # A master's repair at load, after an agent older than `rerun/` (a rolling upgrade)
    # re-queued a job without its index. The record is as read: a job assigned, cancelled
    # or expired since is not indexed again.
    return Transition(
        [cmp_modified_at(keys.job(record.id), mod_revision)],
        [op_put(keys.rerun(record.id), _why_rerun(record))],
    )


def _why_rerun(record: JobRecord) -> str:
    last = record.history[-1].get("event") if record.history else None
    return RERUN_LOST if last == "lost" else RERUN_RETRY


def unindex_rerun(keys: Keys, job_id: str, record_revision: int | None) -> Transition:
    # The other repair: an index whose job no longer waits (an older master assigned it
    # without the delete). The record is as read (or still absent): a job that went back
    # to waiting since keeps its index.
    guard = (
        cmp_absent(keys.job(job_id))
        if record_revision is None
        else cmp_modified_at(keys.job(job_id), record_revision)
    )
    return Transition([guard], [op_delete(keys.rerun(job_id))])


# ---------------------------------------------------------------- the worker's


def _fenced_by(assign_key: str, assign_revision: int) -> list[Compare]:
    # The assignment key is the very one made for this attempt (the fencing token): once
    # it is gone (lease expired, job re-queued elsewhere) a late report is refused.
    return [cmp_created_at(assign_key, assign_revision)]


def running(
    keys: Keys, record: JobRecord, assign_key: str, assign_revision: int, started_at: float
) -> Transition:
    # Fenced by the attempt's assignment key: a stale worker cannot mark a re-run running.
    new = record.with_(state=JobState.RUNNING, started_at=started_at)
    return Transition(
        _fenced_by(assign_key, assign_revision), [op_put(keys.job(record.id), new.to_json())], new
    )


def finish(
    keys: Keys,
    record: JobRecord,
    result: JobResult,
    assign_key: str,
    assign_revision: int,
    *,
    reason: str | None,
    cancelled: bool,
) -> Transition:
    # Fenced by the attempt's assignment key: a stale worker's result is refused, and the
    # inbox key and (when cancelled) the cancel request go in the same txn as the result.
    new = record.with_(
        state=result.state,
        failures=record.failures + (result.state is JobState.FAILED),
        exit_code=result.exit_code,
        reason=reason,
        started_at=result.started_at,
        finished_at=result.finished_at,
        history=record.note(result.state.value, node=result.node, exit_code=result.exit_code),
    )
    extra = [keys.cancel(record.id)] if cancelled else []
    return Transition(
        _fenced_by(assign_key, assign_revision),
        _report_ops(keys, new, result, assign_key, extra),
        new,
    )


def retry(
    keys: Keys,
    record: JobRecord,
    result: JobResult,
    assign_key: str,
    assign_revision: int,
    *,
    reason: str,
    not_before: float,
) -> Transition:
    # Fenced like `finish`: back to the queue with a backoff; the master assigns the next
    # attempt (the record's state is what it watches, the inbox key's deletion wakes it).
    new = record.with_(
        state=JobState.QUEUED,
        failures=record.failures + 1,
        node=None,
        exit_code=result.exit_code,
        reason=f"retrying after attempt {record.attempt}: {reason}",
        not_before=not_before,
        started_at=result.started_at,
        finished_at=None,
        history=record.note("retry", node=result.node, exit_code=result.exit_code),
    )
    ops = _report_ops(keys, new, result, assign_key, [])
    ops.append(op_put(keys.rerun(record.id), RERUN_RETRY))
    return Transition(_fenced_by(assign_key, assign_revision), ops, new)


def _report_ops(
    keys: Keys, record: JobRecord, result: JobResult, assign_key: str, extra_deletes: list[str]
) -> list[Op]:
    return [
        op_put(keys.job(record.id), record.to_json()),
        op_put(keys.result(record.id), result.to_json()),
        op_delete(assign_key),
        *(op_delete(k) for k in extra_deletes),
    ]


__all__ = [
    "Transition",
    "assign",
    "cancel_queued",
    "drop_cancel",
    "drop_duplicate",
    "expire",
    "finish",
    "first_record",
    "index_rerun",
    "landed",
    "node_takes_work",
    "reject",
    "request_cancel",
    "requeue_lost",
    "retry",
    "running",
    "submission_landed",
    "submit",
    "unindex_rerun",
]
