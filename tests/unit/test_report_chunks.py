"""How a worker packs its reports into txns: pure logic, no etcd."""

from __future__ import annotations

from picluster_agent.duties.reporter import Report
from picluster_agent.duties.worker import RunningJob
from picluster_agent.etcd.keys import Keys
from picluster_agent.etcd.limits import MAX_TXN_BYTES, MAX_TXN_OPS, txn_chunks
from picluster_agent.jobs import transitions
from picluster_agent.jobs.records import JobRecord, JobResult, JobState

KEYS = Keys("/chunks")


def _report(n: int, *, result: bool, tail: str = "") -> Report:
    record = JobRecord(id=f"j{n}", spec={"command": ["true"]}, state=JobState.RUNNING, attempt=1)
    job = RunningJob(record, KEYS.assign("pi1", record.id), assign_revision=10 + n)
    fence = (KEYS, record, job.assign_key, job.assign_revision)
    if not result:
        return Report(job, transitions.running(*fence, started_at=1.0))  # one operation
    outcome = JobResult(
        id=record.id,
        attempt=1,
        node="pi1",
        state=JobState.SUCCEEDED,
        exit_code=0,
        signal=None,
        timed_out=False,
        started_at=1.0,
        finished_at=2.0,
        stdout_tail=tail,
        stderr_tail="",
    )
    change = transitions.finish(
        KEYS, record, outcome, job.assign_key, job.assign_revision, reason=None, cancelled=False
    )
    return Report(job, change, outcome)


def _fits(chunk: list[Report]) -> bool:
    ops = sum(len(r.ops()) for r in chunk)
    return ops <= MAX_TXN_OPS and len(chunk) <= MAX_TXN_OPS  # one compare per report


def test_results_are_packed_by_operations_not_by_compares_plus_operations() -> None:
    reports = [_report(i, result=True) for i in range(100)]
    chunks = list(txn_chunks(reports, Report.cost))
    # Three operations per result: 42 of them (126 operations, 42 compares) per txn.
    assert [len(c) for c in chunks] == [42, 42, 16]
    assert all(_fits(c) for c in chunks)
    assert [r for c in chunks for r in c] == reports  # nothing lost, order kept


def test_running_marks_are_limited_by_compares() -> None:
    reports = [_report(i, result=False) for i in range(300)]
    chunks = list(txn_chunks(reports, Report.cost))
    assert [len(c) for c in chunks] == [128, 128, 44]
    assert all(_fits(c) for c in chunks)


def test_large_outputs_split_by_size() -> None:
    tail = "x" * (300 * 1024)  # a 300 KiB output tail in each result
    reports = [_report(i, result=True, tail=tail) for i in range(7)]
    chunks = list(txn_chunks(reports, Report.cost))
    assert len(chunks) > 1
    assert all(sum(r.size() for r in c) <= MAX_TXN_BYTES or len(c) == 1 for c in chunks)
    assert [r for c in chunks for r in c] == reports


def test_no_reports_no_txn() -> None:
    assert list(txn_chunks([], Report.cost)) == []
