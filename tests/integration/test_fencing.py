"""Fencing tokens on real etcd: a stale attempt's report is refused and recorded nowhere."""

from __future__ import annotations

import logging
import time

from picluster_agent.config import build_agent_config, build_connection
from picluster_agent.coord.session import Session
from picluster_agent.duties.reporter import Report
from picluster_agent.duties.worker import RunningJob, Worker
from picluster_agent.etcd.adapter import op_delete, op_put
from picluster_agent.etcd.keys import Keys
from picluster_agent.jobs import transitions
from picluster_agent.jobs.records import JobRecord, JobResult, JobState
from picluster_agent.stopping import AnyEvent


def _record(attempt: int, node: str) -> JobRecord:
    return JobRecord(
        id="job1", spec={"command": ["true"]}, state=JobState.ASSIGNED, attempt=attempt, node=node
    )


def _result(attempt: int, node: str) -> JobResult:
    return JobResult(
        id="job1", attempt=attempt, node=node, state=JobState.SUCCEEDED, exit_code=0,
        signal=None, timed_out=False, started_at=time.time(), finished_at=time.time(),
        stdout_tail=f"attempt {attempt}", stderr_tail="",
    )  # fmt: skip


def _success(keys: Keys, job: RunningJob, result: JobResult) -> Report:
    change = transitions.finish(
        keys, job.record, result, job.assign_key, job.assign_revision, reason=None, cancelled=False
    )
    return Report(job, change, result)


def test_report_of_a_superseded_attempt_is_refused(etcd1, prefix, tmp_path, caplog):
    client = etcd1.client()
    keys = Keys(prefix)
    conn = build_connection({}, endpoints=etcd1.endpoints_csv, prefix=prefix)
    cfg = build_agent_config({}, conn, name="pi1", data_dir=str(tmp_path))
    session = Session(client, ttl=5)
    worker = Worker(cfg, session, AnyEvent())

    # Attempt 1 was assigned to pi1 ...
    first = client.txn(
        [],
        [op_put(keys.assign("pi1", "job1"), _record(1, "pi1").to_json(), lease=session.lease_id)],
    )
    stale = RunningJob(_record(1, "pi1"), keys.assign("pi1", "job1"), first.revision)
    # ... then, as after a lease expiry, re-queued and assigned again as attempt 2.
    client.txn([], [op_delete(keys.assign("pi1", "job1"))])
    second = client.txn([], [
        op_put(keys.assign("pi1", "job1"), _record(2, "pi1").to_json(), lease=session.lease_id),
        op_put(keys.job("job1"), _record(2, "pi1").to_json()),
    ])  # fmt: skip

    with caplog.at_level(logging.WARNING):
        worker.reporter._commit([_success(keys, stale, _result(1, "pi1"))])

    assert "refused" in caplog.text
    assert client.get(keys.result("job1")) is None  # recorded nowhere as the result
    record = JobRecord.from_json(client.get(keys.job("job1")).value)
    assert record.attempt == 2 and record.state is JobState.ASSIGNED
    assert client.get(keys.assign("pi1", "job1")).create_revision == second.revision

    # The current attempt's report goes through.
    current = RunningJob(_record(2, "pi1"), keys.assign("pi1", "job1"), second.revision)
    worker.reporter._commit([_success(keys, current, _result(2, "pi1"))])
    assert JobResult.from_json(client.get(keys.result("job1")).value).attempt == 2
    assert client.get(keys.assign("pi1", "job1")) is None
    session.close()
