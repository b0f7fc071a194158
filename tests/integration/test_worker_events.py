"""A worker's two watches (assignments, cancels) are separate streams: either may deliver
first. These drive one Worker's own event handlers, on a real etcd and a real job supervisor,
in the order a loaded machine can produce, which the end-to-end tests cannot force."""

from __future__ import annotations

import threading
from pathlib import Path

from picluster_agent.config import Connection, build_agent_config
from picluster_agent.coord.session import Session
from picluster_agent.duties.worker import Worker
from picluster_agent.etcd.adapter import KV, EtcdClient, Event
from picluster_agent.etcd.keys import Keys
from picluster_agent.etcd.localcluster import LEASE_TTL, EtcdCluster
from picluster_agent.jobs import transitions
from picluster_agent.jobs.records import JobState
from picluster_agent.jobs.spec import build_spec


def _worker(etcd: EtcdCluster, session: Session, prefix: str, data_dir: Path) -> Worker:
    """A worker of node pi1 with one slot whose loop does not run: the test drives it."""
    cfg = build_agent_config(
        {"slots": 1, "data_dir": str(data_dir), "etcd_election_timeout": etcd.election_timeout,
         "lease_ttl": LEASE_TTL},
        Connection(endpoints=tuple(etcd.endpoints), prefix=prefix),
        name="pi1",
    )  # fmt: skip
    return Worker(cfg, session, threading.Event())


def _assigned(
    client: EtcdClient, keys: Keys, session: Session, job_id: str, command: list[str]
) -> KV:
    """Submit `command` as `job_id` and assign it to pi1 as the master would."""
    spec = build_spec(command)
    client.put(keys.queue(job_id), spec.to_json())
    queued = client.get(keys.queue(job_id))
    assert queued is not None
    base = transitions.first_record(job_id, spec, queued.create_revision, 0.0)
    change = transitions.assign(
        keys, base, queued.key, queued.mod_revision,
        fresh=True, node="pi1", lease=session.lease_id, now=0.0, epoch=0,
    )  # fmt: skip
    assert client.txn(change.compares, change.ops).succeeded
    kv = client.get(keys.assign("pi1", job_id))
    assert kv is not None
    return kv


def test_a_cancel_seen_before_its_assignment_ends_the_job_without_a_slot(
    etcd1: EtcdCluster, prefix: str, tmp_path: Path
) -> None:
    client = etcd1.client()
    keys = Keys(prefix)
    session = Session(client, LEASE_TTL)
    worker = _worker(etcd1, session, prefix, tmp_path)

    def assigned(job_id: str, command: list[str]) -> KV:
        return _assigned(client, keys, session, job_id, command)

    try:
        worker._on_assignment(assigned("busy", ["sleep", "60"]))  # takes the only slot
        assert worker.busy_slots == 1
        cancelled = assigned("later", ["true"])
        client.put(keys.cancel("later"), "1")
        cancel_kv = client.get(keys.cancel("later"))
        assert cancel_kv is not None
        worker._on_cancel_events([Event("PUT", cancel_kv)], cancel_kv.mod_revision)
        worker._on_assignment(cancelled)  # the assignment's watch delivers second

        # Reported cancelled at once, not once "busy" has ended and freed the slot (this
        # worker's loop does not run, so nothing extends its fence: "busy" would be killed
        # when the fence passes, seconds from now).
        report = worker.reporter.reports.get(timeout=1)
        busy = worker.jobs["busy"].process
        assert busy is not None and busy.wait(0) is None, "busy ended: the check came too late"
        assert report.job.record.id == "later"
        assert report.result.state is JobState.CANCELLED
        assert worker.waiting == []
    finally:
        worker._stop_all_jobs("test over")
        session.close()


def test_a_fenced_job_drops_the_session_instead_of_holding_its_assignment(
    etcd1: EtcdCluster, prefix: str, tmp_path: Path
) -> None:
    # The supervisor killed a job because the fence passed (here: nothing extends it, as
    # when the agent is frozen). The session may still be alive, and then the job's
    # assignment would stay, "running" on a node that runs nothing, for good. The worker
    # must give the session up so that the master runs the job again.
    client = etcd1.client()
    keys = Keys(prefix)
    session = Session(client, LEASE_TTL)
    worker = _worker(etcd1, session, prefix, tmp_path)
    try:
        worker._on_assignment(_assigned(client, keys, session, "held", ["sleep", "60"]))
        assert session.done.wait(LEASE_TTL + 5), "the session was kept"
        assert worker.abandoned.is_set()
        outcome = worker.jobs["held"].process.wait(5)
        assert outcome is not None and outcome.fenced
        assert worker.reporter.reports.empty()  # a fenced attempt is never reported
    finally:
        worker._stop_all_jobs("test over")
        session.close()
