"""Agents under etcd faults: lost members, paused members, a whole cluster down."""

from __future__ import annotations

import time

from picluster_agent.etcd.localcluster import LEASE_TTL, wait_for

TTL = LEASE_TTL  # the smallest the timing rule allows with the loopback etcd


def _lease_of(agents, name: str) -> int:
    kv = agents.client.get(agents.keys.node(name))
    assert kv is not None
    return kv.lease


def test_agent_moves_to_another_member_when_its_member_stops(agents3):
    cluster = agents3.cluster
    agent = agents3.start("pi1", lease_ttl=TTL)  # talks to member 0 first
    agents3.wait_registered(1)
    leader = agents3.wait_leader()
    lease = _lease_of(agents3, "pi1")

    stopped_at = time.monotonic()
    cluster.members[0].stop()
    wait_for(lambda: "now using endpoint" in agent.log_text(), 10, what="endpoint switch")
    # More than a TTL later the same lease is alive: it was renewed through another member.
    wait_for(
        lambda: (
            time.monotonic() > stopped_at + TTL + 0.5 and agents3.client.time_to_live(lease) >= 0
        ),
        TTL + 5,
        what="lease renewed through another member",
    )
    assert _lease_of(agents3, "pi1") == lease
    assert agents3.leader().key == leader.key
    assert "session ended" not in agent.log_text()


def test_paused_member_is_left_behind_without_losing_the_session(agents3):
    cluster = agents3.cluster
    agent = agents3.start("pi1", lease_ttl=5)
    agents3.wait_registered(1)
    lease = _lease_of(agents3, "pi1")
    leader = agents3.wait_leader()

    # SIGSTOP looks like a network cut: connections hang instead of failing.
    cluster.members[0].pause()
    try:
        wait_for(lambda: "now using endpoint" in agent.log_text(), 15, what="endpoint switch")
        wait_for(lambda: agents3.client.time_to_live(lease) >= 0, 5, what="lease alive")
        assert _lease_of(agents3, "pi1") == lease
        assert agents3.leader().key == leader.key
    finally:
        cluster.members[0].resume()
    assert "session ended" not in agent.log_text()


def test_agent_survives_total_etcd_outage_and_rejoins(agents):
    cluster = agents.cluster
    agent = agents.start("pi1", lease_ttl=TTL)
    agents.wait_registered(1)
    agents.wait_leader()

    cluster.members[0].stop()
    wait_for(
        lambda: agent.log_text().count("cannot reach etcd") >= 3,
        30,
        what="retries with backoff in the log",
    )
    assert agent.running, "the agent crashed while etcd was down"
    log = agent.log_text()
    assert "retrying in" in log

    cluster.members[0].start()
    cluster.wait_healthy()
    agents.wait_registered(1, timeout=30)
    leader = agents.wait_leader(timeout=30)
    assert leader.name == "pi1"
    assert agent.running


def test_watches_that_fall_behind_compaction_resync(agents3):
    """Master and worker watches resume after an outage; if etcd compacted the revisions they
    missed meanwhile, they re-read instead of silently missing events."""
    from picluster_agent.client import Client
    from picluster_agent.jobs.records import JobState

    cluster = agents3.cluster
    agent = agents3.start("pi1", lease_ttl=8, endpoints=cluster.members[0].client_url)
    agents3.wait_registered(1)
    agents3.wait_leader()
    others = ",".join(m.client_url for m in cluster.members[1:])
    client = Client(others, prefix=agents3.prefix)
    warm = client.submit(["true"])
    assert client.wait([warm.id], timeout=30)[warm.id].state is JobState.SUCCEEDED

    cluster.members[0].stop()
    job = client.submit(["true"])  # the agent's watches are cut off: they miss this
    for i in range(5):
        client.etcd.put(f"{agents3.prefix}-noise/{i}", "x")
    _, rev = client.etcd.get_prefix(agents3.keys.queue_dir)
    client.etcd.compact(rev)
    cluster.members[0].start()

    status = client.wait([job.id], timeout=60)[job.id]
    assert status.state is JobState.SUCCEEDED
    log = agent.log_text()
    assert "compacted" in log
    assert "session ended" not in log  # same session throughout: the watches resynced


def test_jobs_in_flight_when_the_agents_member_pauses_all_complete(agents3):
    """Every agent talks to member 0 first. Paused (SIGSTOP: calls hang, then time out), it
    fails the master's reads and assignments and the workers' reports mid-flight; the agents
    move to other members. Nothing accepted may be lost: plain jobs, jobs that need a
    second attempt, and every result."""
    from picluster_agent.client import Client
    from picluster_agent.jobs.records import JobState
    from picluster_agent.jobs.spec import build_spec

    cluster = agents3.cluster
    for name in ("pi1", "pi2", "pi3"):
        agents3.start(name, lease_ttl=10, slots=4)
    agents3.wait_registered(3)
    master = agents3.by_name(agents3.wait_leader().name)
    client = Client(",".join(m.client_url for m in cluster.members[1:]), prefix=agents3.prefix)
    retry_once = build_spec(
        'test "$PICLUSTER_ATTEMPT" -ge 2', shell=True, max_attempts=2, retry_backoff=0.1
    )
    # A steady stream of short jobs keeps the master stepping, so the pause lands mid-step.
    specs = [build_spec(["true"]), retry_once] * 150
    ids = [r.id for r in client.submit_many(specs)]
    wait_for(
        lambda: client.etcd.count_prefix(agents3.keys.results_dir) >= 30, 30, what="jobs running"
    )

    cluster.members[0].pause()
    try:
        wait_for(lambda: "now using endpoint" in master.log_text(), 30, what="the master moving on")
    finally:
        cluster.members[0].resume()

    statuses = client.wait(ids, timeout=120)
    assert {s.state for s in statuses.values()} == {JobState.SUCCEEDED}
    for job_id, spec in zip(ids, specs, strict=True):
        expected = 2 if spec is retry_once else 1
        assert statuses[job_id].record.attempt == expected, statuses[job_id].record
    assert all(a.running for a in agents3.started)


def test_losing_the_etcd_leader_kills_no_job_and_keeps_the_master(tmp_path):
    """Issue 13, finding 6: with the etcd role's raft timing (heartbeat 200 ms, election
    timeout 2 s) and the default TTL that the timing rule derives from it, kill -9 of the etcd
    leader (quorum intact) while jobs run: no job is killed or run again, the master stays."""
    import uuid

    from picluster_agent import defaults
    from picluster_agent.client import Client
    from picluster_agent.etcd.adapter import EtcdClient
    from picluster_agent.etcd.localcluster import EtcdCluster
    from picluster_agent.jobs.records import JobState

    from conftest import Agents

    cluster = EtcdCluster(tmp_path / "etcd", 3, heartbeat_ms=200, election_timeout_ms=2000)
    cluster.start()
    agents = Agents(cluster, f"/t-{uuid.uuid4().hex[:8]}", tmp_path / "agents")
    try:
        for name in ("pi1", "pi2", "pi3"):
            agents.start(name, lease_ttl=defaults.LEASE_TTL, slots=2)
        agents.wait_registered(3)
        master = agents.wait_leader()
        client = Client(cluster.endpoints_csv, prefix=agents.prefix)
        runs = tmp_path / "runs"
        ids = [
            client.submit(f"echo $PICLUSTER_ATTEMPT >> {runs}; sleep 12", shell=True).id
            for _ in range(6)
        ]
        wait_for(lambda: runs.exists() and len(runs.read_text().split()) == 6, 30, what="6 runs")
        statuses = {m.name: EtcdClient([m.client_url]).status() for m in cluster.members}
        leader = next(
            m
            for m in cluster.members
            if statuses[m.name]["header"]["member_id"] == statuses[m.name]["leader"]
        )
        old_leader_id = statuses[leader.name]["leader"]
        killed_at = time.monotonic()
        leader.kill()
        survivor = EtcdClient([m.client_url for m in cluster.members if m is not leader])
        # (the test's own client waits out the election too: a linearizable read has none)
        wait_for(
            lambda: survivor.status()["leader"] not in (0, old_leader_id),
            15,
            what="a new etcd leader",
        )
        print(f"new etcd leader after {time.monotonic() - killed_at:.2f}s")
        statuses = client.wait(ids, timeout=60)
        assert {s.state for s in statuses.values()} == {JobState.SUCCEEDED}
        assert [s.record.attempt for s in statuses.values()] == [1] * 6
        assert runs.read_text().split() == ["1"] * 6  # no job started twice
        assert agents.wait_leader().name == master.name
        for agent in agents.started:
            assert "lost or not renewed in time" not in agent.log_text()
    finally:
        agents.stop_all()
        cluster.stop_all()
