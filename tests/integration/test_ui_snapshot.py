"""The status page's reads against a real etcd and real agents: earlier masters from etcd's
history of the leader key (until compaction), and each node's lease."""

from __future__ import annotations

import json

from picluster_agent.client import Client
from picluster_agent.etcd.localcluster import wait_for
from picluster_agent.ui.snapshot import LeaderHistory, read_snapshot
from picluster_agent.ui.state import build_state


def test_earlier_masters_and_leases_from_etcd(agents):
    # pa2 campaigns while pa1 leads: its epoch is older than its own first leader record
    # (and may be older than pa1's first).
    first = agents.start("pa1")
    agents.wait_leader()
    agents.start("pa2")
    agents.wait_registered(2)
    history = LeaderHistory(agents.client, agents.keys)

    def state() -> dict:
        snap = read_snapshot(agents.client, agents.keys, history)
        return build_state(snap, agents.keys, "test")

    now = state()
    assert now["master"]["name"] == "pa1" and now["masters_before"] == []
    leases = {n["name"]: n["lease"] for n in now["nodes"]}
    assert all(lease["state"] == "live" and lease["ttl"] for lease in leases.values())

    first.kill()
    wait_for(lambda: state()["master"]["name"] == "pa2", 20, what="pa2 master")
    after = wait_for(lambda: (s := state())["master"]["since"] and s, 10, what="pa2's record")
    assert [m["name"] for m in after["masters_before"]] == ["pa1"]
    assert after["masters_before"][0]["last_seen"] <= after["master"]["since"]
    assert [n["name"] for n in after["nodes"]] == ["pa2"]  # pa1's lease expired with it

    # Compacted history: no earlier masters to show, and no error either.
    revision = agents.client.get_prefix(agents.keys.election_dir)[1]
    agents.client.compact(revision)
    fresh = LeaderHistory(agents.client, agents.keys)
    leader = agents.client.get(agents.keys.leader)
    assert leader is not None and json.loads(leader.value)["name"] == "pa2"
    assert fresh.before(leader, 5) == []


def test_a_job_waiting_to_retry_is_shown_however_many_records_changed_since(agents, monkeypatch):
    """The page reads the RECENT_JOBS records modified last, and the active ones beside them:
    a job in a long retry backoff is among those (through `rerun/`) when newer records
    push it out of the recent ones."""
    monkeypatch.setattr("picluster_agent.ui.snapshot.RECENT_JOBS", 1)
    agents.start("pa1")
    agents.wait_leader()
    client = Client(agents.cluster.endpoints_csv, prefix=agents.prefix)
    waiting = client.submit(["false"], max_attempts=2, retry_backoff=120.0).id
    wait_for(lambda: client.status(waiting).record.failures == 1, 30, what="waiting to retry")
    later = client.submit(["true"]).id
    client.wait([later], timeout=30)  # its record is the one modified last
    snap = read_snapshot(agents.client, agents.keys, LeaderHistory(agents.client, agents.keys))
    state = build_state(snap, agents.keys, "test")
    assert waiting in {row["id"] for row in state["queue"]}
