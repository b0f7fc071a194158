"""Election and failover with real etcd and real agent processes (guarantees 3 and 6)."""

from __future__ import annotations

import json
import signal
import time

from picluster_agent.etcd.adapter import Event
from picluster_agent.etcd.localcluster import LEASE_TTL, wait_for

TTL = LEASE_TTL  # the smallest the timing rule allows with the loopback etcd


def _three_agents(agents):
    """pi1..pi3 running and registered; returns the master they elected."""
    for name in ("pi1", "pi2", "pi3"):
        agents.start(name, lease_ttl=TTL)
    agents.wait_registered(3)
    return agents.wait_leader()


def test_exactly_one_master_among_three(agents, cli):
    leader = _three_agents(agents)

    out = cli(
        "nodes",
        "-o",
        "json",
        "--endpoints",
        agents.cluster.endpoints_csv,
        "--prefix",
        agents.prefix,
    )
    assert out.returncode == 0, out.stderr
    nodes = json.loads(out.stdout)
    assert sorted(n["name"] for n in nodes) == ["pi1", "pi2", "pi3"]
    assert [n["name"] for n in nodes if n["role"] == "master"] == [leader.name]
    assert all(n["slots"] == 2 and n["version"] for n in nodes)

    out = cli(
        "master",
        "-o",
        "json",
        "--endpoints",
        agents.cluster.endpoints_csv,
        "--prefix",
        agents.prefix,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["name"] == leader.name
    text = cli("nodes", "--endpoints", agents.cluster.endpoints_csv, "--prefix", agents.prefix)
    assert "master" in text.stdout and "pi2" in text.stdout


def test_kill_9_of_master_fails_over_within_ttl_plus_one_second(agents):
    old = _three_agents(agents)

    started = time.monotonic()
    agents.by_name(old.name).kill()
    new = agents.wait_leader(timeout=TTL + 5, other_than=old.name)
    elapsed = time.monotonic() - started

    assert new.name != old.name
    assert elapsed <= TTL + 1.0, f"failover took {elapsed:.2f}s"
    # The new master's log says so: it was woken by its predecessor's key vanishing.
    wait_for(lambda: "MASTER" in agents.by_name(new.name).log_text(), 5, what="MASTER log")


def test_sigterm_of_master_hands_over_within_one_second(agents):
    old = _three_agents(agents)
    process = agents.by_name(old.name)

    started = time.monotonic()
    process.signal(signal.SIGTERM)
    new = agents.wait_leader(timeout=5, other_than=old.name)
    elapsed = time.monotonic() - started

    assert elapsed < 1.0, f"clean handover took {elapsed:.2f}s"
    assert process.proc.wait(10) == 0
    assert "revoking lease" in process.log_text()
    assert new.name != old.name


def test_old_master_rejoins_as_worker_and_does_not_take_over(agents, cli):
    old = _three_agents(agents)
    agents.by_name(old.name).kill()
    new = agents.wait_leader(timeout=TTL + 5, other_than=old.name)

    agents.start(old.name, lease_ttl=TTL)
    agents.wait_registered(3, timeout=TTL + 10)
    # Watch the election for two TTLs: no change of master may happen.
    changes: list[Event] = []
    _, rev = agents.client.get_prefix(agents.keys.election_dir)
    watch = agents.client.watch(
        agents.keys.election_dir, lambda ev, _r: changes.extend(ev), start_revision=rev + 1
    )
    try:
        deadline = time.monotonic() + 2 * TTL
        while time.monotonic() < deadline:
            leader = agents.leader()
            assert leader is not None and leader.name == new.name
            time.sleep(0.1)
    finally:
        watch.stop()
    assert all(e.kv.key != new.key for e in changes)

    out = cli(
        "nodes",
        "-o",
        "json",
        "--endpoints",
        agents.cluster.endpoints_csv,
        "--prefix",
        agents.prefix,
    )
    roles = {n["name"]: n["role"] for n in json.loads(out.stdout)}
    assert roles[old.name] == "worker"
    assert roles[new.name] == "master"


def test_paused_master_is_replaced_and_its_writes_are_refused(agents):
    old = _three_agents(agents)
    paused = agents.by_name(old.name)

    paused.pause()
    new = agents.wait_leader(timeout=TTL + 5, other_than=old.name)
    # Everything the leader record receives from now on must come from the new master.
    writes: list[Event] = []
    _, rev = agents.client.get_prefix(agents.keys.leader)
    watch = agents.client.watch(
        agents.keys.leader,
        lambda ev, _r: writes.extend(ev),
        start_revision=rev + 1,
        is_prefix=False,
    )
    try:
        # The new master writes its record (fenced) soon after election.
        wait_for(
            lambda: any(json.loads(e.kv.value)["name"] == new.name for e in writes),
            10,
            what="new master's record",
        )
        paused.resume()
        # The old master notices it lost its session (or has a write refused) and rejoins.
        wait_for(
            lambda: "stepping down" in paused.log_text() or "session ended" in paused.log_text(),
            15,
            what="old master steps down",
        )
        wait_for(
            lambda: paused.log_text().count("registered as") >= 2,
            15,
            what="old master re-registered",
        )
        # Give the old master's heartbeat thread time to try at least one more write.
        wait_for(lambda: len(writes) >= 3, 10, what="more heartbeats")
    finally:
        watch.stop()
    authors = {json.loads(e.kv.value)["lease"] for e in writes if e.type == "PUT"}
    assert authors == {f"{new.lease:x}"}, "a deposed master's write was accepted"
    leader = agents.leader()
    assert leader is not None and leader.name == new.name
    assert paused.running


def test_no_master_agent_never_campaigns(agents):
    agents.start("small1", lease_ttl=TTL, master=False)
    agents.wait_registered(1)
    eligible = agents.start("big1", lease_ttl=TTL)
    leader = agents.wait_leader()
    assert leader.name == "big1"
    eligible.kill()
    # With the only eligible node gone, nobody may become master.
    wait_for(lambda: agents.leader() is None, TTL + 5, what="no master")
    assert agents.client.count_prefix(agents.keys.election_dir) == 0
    assert agents.by_name("small1").running
