"""Races between the master's watch streams, forced by holding one stream's events back.

The scheduler learns of queue/, nodes/, drain/ and cancel/ on separate watches, so it may act
on one before it has heard of another written at the same revision. Its guarded txns must
make the late event harmless; these tests deliver the events in the unlucky order on purpose.
"""

from __future__ import annotations

import threading

from picluster_agent.config import AgentConfig, Connection
from picluster_agent.coord.election import Election
from picluster_agent.coord.registry import NodeInfo, register
from picluster_agent.coord.session import Session
from picluster_agent.duties.scheduler import Scheduler
from picluster_agent.etcd.adapter import Event, op_put
from picluster_agent.etcd.keys import Keys
from picluster_agent.jobs.ids import new_job_id
from picluster_agent.jobs.spec import build_spec


def test_a_drain_the_master_has_not_heard_of_yet_still_keeps_jobs_off_the_node(etcd1):
    client = etcd1.client()
    keys = Keys("/race")
    stop = threading.Event()
    session = Session(client, ttl=5)
    try:
        info = NodeInfo(name="pi1", slots=2, lease=format(session.lease_id, "x"))
        register(session, keys, info)
        election = Election(session, keys, "pi1")
        assert election.campaign(stop)
        cfg = AgentConfig(connection=Connection(tuple(etcd1.endpoints), "/race"), name="pi1")
        scheduler = Scheduler(election, cfg, stop)
        scheduler._load()

        # The drain and the job in one txn; the master hears only of the job.
        job_id = new_job_id()
        spec = build_spec(["true"]).to_json()
        txn = client.txn([], [op_put(keys.drain("pi1"), "1"), op_put(keys.queue(job_id), spec)])
        assert txn.succeeded
        queued = client.get(keys.queue(job_id))
        scheduler._apply("queue", [Event(type="PUT", kv=queued, prev_kv=None)])
        scheduler._step()
        scheduler._step()  # a second step: what the refused txn taught it holds

        assigned, _ = client.get_prefix(keys.assign_root)
        assert assigned == []  # before the fix: assign/pi1/<job> and the job started there
        assert client.get(keys.queue(job_id)) is not None  # still queued, nothing lost
        assert "pi1" in scheduler.view.drained
    finally:
        stop.set()
        session.close()
