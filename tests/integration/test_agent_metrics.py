"""Two agents in one process against a real etcd: each registry holds its own agent's numbers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from picluster_agent.client import Client
from picluster_agent.config import AgentConfig, Connection
from picluster_agent.duties.agent import Agent, leader_heartbeat
from picluster_agent.duties.scheduler import scheduler_duty
from picluster_agent.duties.worker import worker_duty_factory
from picluster_agent.etcd.localcluster import EtcdCluster, wait_for
from picluster_agent.observe.metrics import AgentMetrics


def value(metrics: AgentMetrics, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    raise KeyError(name)


@pytest.fixture
def two_agents(etcd1: EtcdCluster, prefix: str, tmp_path: Path) -> Iterator[list[Agent]]:
    agents, threads = [], []
    for name in ("pi1", "pi2"):
        cfg = AgentConfig(
            connection=Connection(endpoints=tuple(etcd1.endpoints), prefix=prefix),
            name=name,
            slots=2,
            labels={"model": "pi5"},
            data_dir=str(tmp_path / name),
            lease_ttl=3,
            etcd_election_timeout=etcd1.election_timeout,
        )
        m = AgentMetrics()
        agent = Agent(
            cfg,
            master_duties=[leader_heartbeat, scheduler_duty(cfg, m)],
            worker_duty=worker_duty_factory(cfg, m),
            metrics=m,
        )
        t = threading.Thread(target=agent.run, name=f"agent-{name}", daemon=True)
        t.start()
        agents.append(agent)
        threads.append(t)
        # pi1 first, so that it is the master.
        wanted = (
            ("picluster_master", {})
            if name == "pi1"
            else ("picluster_session_state", {"state": "connected"})
        )
        wait_for(lambda a=agent, w=wanted: value(a.metrics, w[0], **w[1]) == 1, timeout=15)
    yield agents
    for agent in agents:
        agent.stop()
    for t in threads:
        t.join(timeout=30)


def test_each_agent_counts_its_own_work(
    two_agents: list[Agent], etcd1: EtcdCluster, prefix: str
) -> None:
    pi1, pi2 = two_agents
    client = Client(etcd1.endpoints, prefix=prefix)
    try:
        ok = [client.submit(["true"]).id for _ in range(6)]
        bad = client.submit(["false"], max_attempts=2, retry_backoff=0).id
        statuses = client.wait([*ok, bad], timeout=60)
    finally:
        client.close()
    assert statuses[bad].state.value == "failed"
    both = (pi1.metrics, pi2.metrics)
    assert value(pi2.metrics, "picluster_master") == 0
    assert value(pi1.metrics, "picluster_master_epoch") > 0
    assert sum(value(m, "picluster_job_attempts_total") for m in both) == 8
    assert sum(value(m, "picluster_jobs_finished_total", state="succeeded") for m in both) == 6
    assert sum(value(m, "picluster_jobs_finished_total", state="failed") for m in both) == 2
    assert sum(value(m, "picluster_job_retries_total") for m in both) == 1
    assert sum(value(m, "picluster_job_start_latency_seconds_count") for m in both) == 7
    for m in both:
        assert value(m, "picluster_etcd_requests_total", kind="Txn") > 0
        wait_for(lambda m=m: value(m, "picluster_lease_keepalive_seconds_count") > 0, timeout=10)
        assert value(m, "picluster_slots", state="free") == 2
        assert value(m, "picluster_job_supervisors") == 1
    assert value(pi1.metrics, "picluster_queue_depth") == 0
    info = [s.labels for f in text_string_to_metric_families(pi2.metrics.exposition().decode())
            for s in f.samples if s.name == "picluster_node_info"]  # fmt: skip
    assert info[0]["node"] == "pi2" and info[0]["label_model"] == "pi5"
