"""Each job transition's exact compares and operations (pure: no etcd).

The lost-reply behaviour of every caller is tested on real etcd in
tests/integration/test_lost_replies.py.
"""

from __future__ import annotations

import json

from picluster_agent.etcd.adapter import (
    KV,
    cmp_absent,
    cmp_created_at,
    cmp_modified_at,
    op_delete,
    op_get,
    op_put,
)
from picluster_agent.etcd.keys import Keys
from picluster_agent.jobs import transitions as t
from picluster_agent.jobs.records import MAX_NODE_LOSSES, JobRecord, JobResult, JobState
from picluster_agent.jobs.spec import build_spec

K = Keys("/t")
SPEC = build_spec(["true"], submitted_at=100.0)
NOW = 200.0
EPOCH = 7


def _kv(key: str, value: bytes | str, mod: int = 5, create: int = 4) -> KV:
    data = value.encode() if isinstance(value, str) else value
    return KV(key, data, create_revision=create, mod_revision=mod, version=1, lease=0)


def _queued(job_id: str = "j1") -> JobRecord:
    return t.first_record(job_id, SPEC, seq=4, now=NOW)


def _assigned(attempt: int = 1, node: str = "pi1") -> JobRecord:
    return _queued().with_(state=JobState.ASSIGNED, attempt=attempt, node=node)


def _result(state: JobState, exit_code: int = 0) -> JobResult:
    return JobResult(
        id="j1", attempt=1, node="pi1", state=state, exit_code=exit_code, signal=None,
        timed_out=False, started_at=150.0, finished_at=160.0, stdout_tail="", stderr_tail="",
    )  # fmt: skip


def _put_value(change: t.Transition, i: int) -> JobRecord:
    return JobRecord.from_json(change.ops[i].request_put.value)


def test_submit() -> None:
    change = t.submit(K, "j1", SPEC.to_json())
    assert change.compares == [cmp_absent(K.queue("j1")), cmp_absent(K.job("j1"))]
    assert change.ops == [op_put(K.queue("j1"), SPEC.to_json())]
    assert change.failure == [op_get(K.queue("j1")), op_get(K.job("j1"))]
    assert change.record is None


def test_request_cancel() -> None:
    change = t.request_cancel(K, "j1", NOW)
    assert change.compares == [cmp_absent(K.cancel("j1"))]
    assert change.ops == [op_put(K.cancel("j1"), str(NOW))]


def test_reject() -> None:
    queued = _kv(K.queue("j1"), b"{not json")
    change = t.reject(K, queued, "bad JSON", NOW, EPOCH)
    assert change.compares == [cmp_modified_at(K.queue("j1"), 5), cmp_absent(K.job("j1"))]
    assert change.record is not None
    assert change.ops == [op_delete(K.queue("j1")), op_put(K.job("j1"), change.record.to_json())]
    assert change.record.state is JobState.REJECTED and change.record.epoch == EPOCH
    assert change.record.spec == {"raw": "{not json"} and change.record.reason == "bad JSON"


def test_drop_duplicate() -> None:
    change = t.drop_duplicate(_kv(K.queue("j1"), "{}", mod=9))
    assert change.compares == [cmp_modified_at(K.queue("j1"), 9)]
    assert change.ops == [op_delete(K.queue("j1"))]


def test_assign_fresh() -> None:
    change = t.assign(
        K, _queued(), K.queue("j1"), 5, fresh=True, node="pi2", lease=0x42, now=NOW, epoch=EPOCH
    )
    rec = change.record
    assert rec is not None
    assert (rec.state, rec.attempt, rec.node, rec.assigned_at, rec.epoch) == (
        JobState.ASSIGNED, 1, "pi2", NOW, EPOCH,
    )  # fmt: skip
    assert change.compares == [cmp_modified_at(K.queue("j1"), 5), cmp_absent(K.job("j1"))]
    assert change.ops == [
        op_delete(K.queue("j1")),
        op_put(K.job("j1"), rec.to_json()),
        op_put(K.assign("pi2", "j1"), rec.to_json(), lease=0x42),
    ]


def test_assign_rerun() -> None:
    base = _queued().with_(attempt=2, failures=2, reason="retrying", not_before=150.0)
    change = t.assign(
        K, base, K.job("j1"), 11, fresh=False, node="pi1", lease=3, now=NOW, epoch=EPOCH
    )
    rec = change.record
    assert rec is not None and rec.attempt == 3 and rec.reason is None
    assert change.compares == [cmp_modified_at(K.job("j1"), 11)]
    assert change.ops == [
        op_delete(K.rerun("j1")),  # its wait is over: out of the re-run index
        op_put(K.job("j1"), rec.to_json()),
        op_put(K.assign("pi1", "j1"), rec.to_json(), lease=3),
    ]


def test_node_takes_work_only_while_registered_and_not_drained() -> None:
    assert t.node_takes_work(K, "pi1", 12) == [
        cmp_created_at(K.node("pi1"), 12),
        cmp_absent(K.drain("pi1")),
    ]


def test_requeue_lost() -> None:
    change = t.requeue_lost(K, _assigned(), 8, cancelled=False, now=NOW, epoch=EPOCH)
    rec = change.record
    assert rec is not None and rec.state is JobState.QUEUED and rec.node is None
    assert rec.losses == 1 and rec.epoch == EPOCH
    assert change.compares == [cmp_modified_at(K.job("j1"), 8)]
    assert change.ops == [op_put(K.job("j1"), rec.to_json()), op_put(K.rerun("j1"), t.RERUN_LOST)]


def test_requeue_lost_too_often_fails() -> None:
    record = _assigned().with_(losses=MAX_NODE_LOSSES - 1)
    change = t.requeue_lost(K, record, 8, cancelled=False, now=NOW, epoch=EPOCH)
    assert change.record is not None and change.record.state is JobState.FAILED
    assert change.ops == [op_put(K.job("j1"), change.record.to_json())]


def test_requeue_lost_when_cancelled() -> None:
    change = t.requeue_lost(K, _assigned(), 8, cancelled=True, now=NOW, epoch=EPOCH)
    rec = change.record
    assert rec is not None and rec.state is JobState.CANCELLED and rec.finished_at == NOW
    assert change.compares == [cmp_modified_at(K.job("j1"), 8)]
    assert change.ops == [op_put(K.job("j1"), rec.to_json()), op_delete(K.cancel("j1"))]


def test_cancel_queued_fresh() -> None:
    change = t.cancel_queued(K, _queued(), K.queue("j1"), 5, fresh=True, now=NOW, epoch=EPOCH)
    rec = change.record
    assert rec is not None and rec.state is JobState.CANCELLED and rec.epoch == EPOCH
    assert change.compares == [cmp_modified_at(K.queue("j1"), 5), cmp_absent(K.job("j1"))]
    assert change.ops == [
        op_delete(K.queue("j1")),
        op_put(K.job("j1"), rec.to_json()),
        op_delete(K.cancel("j1")),
    ]


def test_cancel_queued_rerun() -> None:
    change = t.cancel_queued(K, _queued(), K.job("j1"), 6, fresh=False, now=NOW, epoch=EPOCH)
    assert change.record is not None
    assert change.compares == [cmp_modified_at(K.job("j1"), 6)]
    assert change.ops == [
        op_put(K.job("j1"), change.record.to_json()),
        op_delete(K.cancel("j1")),
        op_delete(K.rerun("j1")),
    ]


def test_drop_cancel_and_expire() -> None:
    assert t.drop_cancel(K, "j1") == t.Transition([], [op_delete(K.cancel("j1"))])
    change = t.expire(K, ["a", "b"])
    assert change.compares == []
    assert change.ops == [
        op_delete(K.job("a")),
        op_delete(K.result("a")),
        op_delete(K.rerun("a")),
        op_delete(K.job("b")),
        op_delete(K.result("b")),
        op_delete(K.rerun("b")),
    ]


def test_rerun_index_repairs() -> None:
    waiting = t.requeue_lost(K, _assigned(), 8, cancelled=False, now=NOW, epoch=EPOCH).record
    assert waiting is not None
    change = t.index_rerun(K, waiting, 9)
    assert change.compares == [cmp_modified_at(K.job("j1"), 9)]
    assert change.ops == [op_put(K.rerun("j1"), t.RERUN_LOST)]
    retried = _queued().with_(history=_queued().note("retry"))
    assert t.index_rerun(K, retried, 9).ops == [op_put(K.rerun("j1"), t.RERUN_RETRY)]
    assert t.unindex_rerun(K, "j1", 12) == t.Transition(
        [cmp_modified_at(K.job("j1"), 12)], [op_delete(K.rerun("j1"))]
    )
    assert t.unindex_rerun(K, "j1", None).compares == [cmp_absent(K.job("j1"))]


ASSIGN_KEY = K.assign("pi1", "j1")


def test_running() -> None:
    change = t.running(K, _assigned(), ASSIGN_KEY, 20, started_at=150.0)
    rec = change.record
    assert rec is not None and rec.state is JobState.RUNNING and rec.started_at == 150.0
    assert change.compares == [cmp_created_at(ASSIGN_KEY, 20)]
    assert change.ops == [op_put(K.job("j1"), rec.to_json())]


def test_finish() -> None:
    result = _result(JobState.SUCCEEDED)
    change = t.finish(K, _assigned(), result, ASSIGN_KEY, 20, reason=None, cancelled=False)
    rec = change.record
    assert rec is not None and rec.state is JobState.SUCCEEDED and rec.finished_at == 160.0
    assert change.compares == [cmp_created_at(ASSIGN_KEY, 20)]
    assert change.ops == [
        op_put(K.job("j1"), rec.to_json()),
        op_put(K.result("j1"), result.to_json()),
        op_delete(ASSIGN_KEY),
    ]


def test_finish_failed_and_cancelled() -> None:
    result = _result(JobState.FAILED, exit_code=3)
    change = t.finish(K, _assigned(), result, ASSIGN_KEY, 20, reason="exit code 3", cancelled=True)
    rec = change.record
    assert rec is not None and rec.failures == 1 and rec.exit_code == 3
    assert change.ops[-1] == op_delete(K.cancel("j1"))
    assert len(change.ops) == 4


def test_retry() -> None:
    result = _result(JobState.FAILED, exit_code=1)
    change = t.retry(K, _assigned(), result, ASSIGN_KEY, 20, reason="exit code 1", not_before=300)
    rec = change.record
    assert rec is not None and rec.state is JobState.QUEUED and rec.node is None
    assert (rec.failures, rec.not_before, rec.finished_at) == (1, 300, None)
    assert rec.reason == "retrying after attempt 1: exit code 1"
    assert change.compares == [cmp_created_at(ASSIGN_KEY, 20)]
    assert change.ops == [
        op_put(K.job("j1"), rec.to_json()),
        op_put(K.result("j1"), result.to_json()),
        op_delete(ASSIGN_KEY),
        op_put(K.rerun("j1"), t.RERUN_RETRY),  # waiting for its next attempt: listed
    ]


def test_landed() -> None:
    assert t.landed(_kv("k", "ours"), "ours")
    assert not t.landed(_kv("k", "theirs"), "ours")
    assert not t.landed(None, "ours")


def test_submission_landed() -> None:
    value = SPEC.to_json()
    other = build_spec(["false"]).to_json()
    assert t.submission_landed(_kv(K.queue("j1"), value), None, value)
    assert not t.submission_landed(_kv(K.queue("j1"), other), None, value)
    taken = _kv(K.job("j1"), _assigned().to_json())  # the master took ours already
    assert t.submission_landed(None, taken, value)
    theirs = _kv(K.job("j1"), _assigned().with_(spec=json.loads(other)).to_json())
    assert not t.submission_landed(None, theirs, value)
    assert not t.submission_landed(None, None, value)
