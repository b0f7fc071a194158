"""Periodic jobs on real agents: an entry the CLI accepts must never fail the master's duty.

One etcd member and two agents (a master to watch, a second to take over if it fell).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from picluster_agent.client import Client
from picluster_agent.coord.election import current_leader
from picluster_agent.etcd.localcluster import AgentProcess, EtcdCluster, wait_for
from picluster_agent.jobs.periodic import GRACE, CronEntry
from picluster_agent.jobs.spec import build_spec

PREFIX = "/cronreview"
EVERY_2S = "* * * * * */2"  # croniter: a sixth field is seconds


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[tuple[Client, dict[str, AgentProcess]]]:
    base = tmp_path_factory.mktemp("cronreview")
    cluster = EtcdCluster(base / "etcd", 1).start()
    agents = {
        name: AgentProcess(
            name,
            cluster.endpoints_csv,
            PREFIX,
            base / name,
            etcd_election_timeout=cluster.election_timeout,
        ).start()
        for name in ("rv1", "rv2")
    }
    c = Client(cluster.endpoints_csv, prefix=PREFIX)
    wait_for(lambda: len(c.nodes()) == 2, 15, what="two agents")
    yield c, agents
    c.close()
    for a in agents.values():
        a.terminate()
    cluster.stop_all()


def made(client: Client, name: str) -> list[str]:
    ids = []
    for d in (client.keys.queue_dir, client.keys.jobs_dir):
        ids += [kv.key.rsplit("/", 1)[1] for kv in client.etcd.get_prefix(d + name + "-")[0]]
    return sorted(ids)


def test_an_entry_with_no_slot_before_now_stops_no_master(world):
    """croniter's seventh field is a year: `0 0 1 1 * 0 2030` is valid and has a next
    slot, so `picluster cron add` takes it. A minute later (GRACE) the master looks for
    missed slots before now, and croniter finds none: it raised, the periodic duty failed,
    and every master stepped down in turn; no other entry made a job."""
    client, agents = world
    year = "0 0 1 1 * 0 2030"
    client.cron_add("y2030", year, ["true"])  # accepted: a valid entry
    client.cron_remove("y2030")
    # The same entry as `cron add` left it more than GRACE seconds ago (no waiting here).
    spec = build_spec(["true"], name="y2030").stored_dict()
    old = CronEntry("y2030", year, spec, created_at=time.time() - 2 * GRACE)
    master = current_leader(client.etcd, client.keys)
    assert master is not None
    client.etcd.put(client.keys.cron("y2030"), old.to_json())
    try:
        client.cron_add("z-after", EVERY_2S, ["true"])  # after it in key order
        wait_for(lambda: len(made(client, "z-after")) >= 2, 20, what="two slots of z-after")
        assert current_leader(client.etcd, client.keys) == master
        assert made(client, "y2030") == []
        assert "master duty failed" not in agents[master.name].log_text()
    finally:
        for name in ("y2030", "z-after"):
            client.cron_remove(name)
