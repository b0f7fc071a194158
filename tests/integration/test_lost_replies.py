"""A write that commits but whose reply is lost (`Indeterminate`), for each caller that writes.

Real etcd: the txn is sent and committed, then the reply is thrown away as a broken connection
would. Each caller must then learn from etcd that the write was its own (`landed`), not take
its own commit for someone else's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from picluster_agent.client import Client
from picluster_agent.config import build_agent_config, build_connection
from picluster_agent.coord.election import Election
from picluster_agent.coord.session import Session
from picluster_agent.duties.reporter import Report
from picluster_agent.duties.worker import RunningJob, Worker
from picluster_agent.errors import Indeterminate
from picluster_agent.etcd.adapter import EtcdClient, TxnResult, op_put
from picluster_agent.etcd.keys import Keys
from picluster_agent.etcd.localcluster import EtcdCluster
from picluster_agent.jobs import transitions
from picluster_agent.jobs.records import JobRecord, JobResult, JobState
from picluster_agent.jobs.spec import build_spec
from picluster_agent.stopping import AnyEvent


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    cluster = EtcdCluster(tmp_path_factory.mktemp("etcd"), 1).start()
    yield cluster
    cluster.stop_all()


def lose_replies(
    monkeypatch: pytest.MonkeyPatch, etcd: EtcdClient, times: int = 1
) -> Callable[[], int]:
    """The next `times` txns commit at the server, then their replies are lost."""
    real = etcd.txn
    lost = 0

    def txn(*args: Any, **kwargs: Any) -> TxnResult:
        nonlocal lost
        res = real(*args, **kwargs)
        if lost < times:
            lost += 1
            raise Indeterminate(f"reply {lost} lost (test)")
        return res

    monkeypatch.setattr(etcd, "txn", txn)
    return lambda: lost


def _client(etcd: EtcdCluster, prefix: str) -> Client:
    return Client(etcd.endpoints_csv, prefix=prefix)


def test_submit_with_a_lost_reply_is_accepted(etcd, prefix, monkeypatch):
    client = _client(etcd, prefix)
    lost = lose_replies(monkeypatch, client.etcd)
    result = client.submit(["true"], id="lost-1")
    assert lost() == 1
    assert result.accepted  # our own commit, found on the retry
    assert client.status("lost-1").state is JobState.QUEUED
    client.close()


def test_batch_submit_with_a_lost_reply_is_accepted(etcd, prefix, monkeypatch):
    """The bug of issue 14: every job was reported 'already accepted' (CLI exit 5)."""
    client = _client(etcd, prefix)
    lost = lose_replies(monkeypatch, client.etcd)
    specs = [build_spec(["true"], submitted_at=time.time()) for _ in range(5)]
    results = client.submit_many(specs, [f"batch-{i}" for i in range(5)])
    assert lost() == 1
    assert [r.accepted for r in results] == [True] * 5
    assert len(client.etcd.get_prefix(client.keys.queue_dir)[0]) == 5  # made once each
    client.close()


def test_a_lost_reply_does_not_claim_someone_elses_job(etcd, prefix, monkeypatch):
    client = _client(etcd, prefix)
    assert client.submit(["true"], id="theirs").accepted
    lose_replies(monkeypatch, client.etcd)
    # Our try is refused (the id exists) and its reply lost; the job there is not ours.
    assert not client.submit(["false"], id="theirs").accepted
    client.close()


def test_worker_report_with_a_lost_reply_is_done(etcd, prefix, tmp_path: Path, monkeypatch):
    client = etcd.client()
    keys = Keys(prefix)
    conn = build_connection({}, endpoints=etcd.endpoints_csv, prefix=prefix)
    cfg = build_agent_config({}, conn, name="pi1", data_dir=str(tmp_path))
    session = Session(client, ttl=5)
    worker = Worker(cfg, session, AnyEvent())
    record = JobRecord(id="job1", spec={"command": ["true"]}, state=JobState.ASSIGNED, attempt=1)
    assigned = client.txn(
        [], [op_put(keys.assign("pi1", "job1"), record.to_json(), lease=session.lease_id)]
    )
    job = RunningJob(record, keys.assign("pi1", "job1"), assigned.revision)
    worker.jobs["job1"] = job
    result = JobResult(
        id="job1", attempt=1, node="pi1", state=JobState.SUCCEEDED, exit_code=0, signal=None,
        timed_out=False, started_at=1.0, finished_at=2.0, stdout_tail="", stderr_tail="",
    )  # fmt: skip
    change = transitions.finish(
        keys, record, result, job.assign_key, job.assign_revision, reason=None, cancelled=False
    )
    lost = lose_replies(monkeypatch, client)
    worker.reporter._commit_one(Report(job, change, result))
    assert lost() == 1
    # The retry was refused (the assignment is gone: our own commit deleted it) and the
    # report found to be ours: the job is done here, recorded once.
    assert "job1" not in worker.jobs
    stored = JobRecord.from_json(client.get(keys.job("job1")).value)
    assert stored.state is JobState.SUCCEEDED and stored.attempt == 1
    session.close()


def test_election_candidate_with_a_lost_reply(etcd, prefix, monkeypatch):
    client = etcd.client()
    session = Session(client, ttl=5)
    election = Election(session, Keys(prefix), "pi1")
    lost = lose_replies(monkeypatch, client)
    assert election.campaign(AnyEvent())
    assert lost() == 1
    kv = client.get(election.key)
    assert kv is not None and election.create_revision == kv.create_revision
    session.close()
