"""Periodic jobs on real agents: one job per slot, pause/resume/remove, and a master killed
at a slot boundary makes no slot twice and misses none.

One etcd member and two agents serve the module; the failover test runs last (it kills one).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from picluster_agent.client import Client
from picluster_agent.coord.election import current_leader
from picluster_agent.etcd.localcluster import AgentProcess, EtcdCluster, wait_for
from picluster_agent.jobs.periodic import GRACE, CronEntry, slot_id
from picluster_agent.jobs.spec import SpecError, build_spec

PREFIX = "/cron"
EVERY_2S = "* * * * * */2"  # croniter: a sixth field is seconds


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[tuple[Client, dict[str, AgentProcess]]]:
    base = tmp_path_factory.mktemp("cron")
    cluster = EtcdCluster(base / "etcd", 1).start()
    agents = {
        name: AgentProcess(
            name,
            cluster.endpoints_csv,
            PREFIX,
            base / name,
            etcd_election_timeout=cluster.election_timeout,
        ).start()
        for name in ("cron1", "cron2")
    }
    c = Client(cluster.endpoints_csv, prefix=PREFIX)
    wait_for(lambda: len(c.nodes()) == 2, 15, what="two agents")
    yield c, agents
    c.close()
    for a in agents.values():
        a.terminate()
    cluster.stop_all()


def made(client: Client, name: str) -> list[str]:
    """Ids of the jobs made for `name`, queued or not (each key can exist once)."""
    ids = []
    for d in (client.keys.queue_dir, client.keys.jobs_dir):
        ids += [kv.key.rsplit("/", 1)[1] for kv in client.etcd.get_prefix(d + name + "-")[0]]
    return sorted(ids)


def slots(start: float, end: float) -> list[str]:
    """Even seconds in (start, end]."""
    first = int(start) + 1 + (int(start) + 1) % 2
    return [slot_id("", s)[1:] for s in range(first, int(end) + 1, 2)]


def test_one_job_per_slot_then_pause_resume_remove(world):
    client, _ = world
    added = client.cron_add("tick", EVERY_2S, ["echo", "tick"]).created_at
    wait_for(lambda: len(made(client, "tick")) >= 2, 20, what="two slots")
    job = made(client, "tick")[0]
    assert client.wait([job], timeout=30)[job].state.value == "succeeded"
    assert client.logs(job) == "tick\n"
    client.cron_pause("tick")
    paused_at = time.time()
    before = made(client, "tick")
    time.sleep(2.5)
    assert made(client, "tick") == before
    assert [i.removeprefix("tick-") for i in before] == slots(added, paused_at)[: len(before)]
    client.cron_pause("tick", paused=False)
    wait_for(lambda: len(made(client, "tick")) > len(before), 20, what="a slot after resume")
    assert client.cron_remove("tick") and not client.cron_remove("tick")
    with pytest.raises(SpecError, match="not a cron expression"):
        client.cron_add("bad", "61 * * * *", ["true"])
    with pytest.raises(SpecError, match="unknown time zone"):
        client.cron_add("bad", "* * * * *", ["true"], tz="Mars/Olympus")


def test_an_entry_whose_slot_never_comes_stops_no_master(world):
    """Entries written by hand (etcdctl put) that the CLI refuses are ignored by the
    master, and the others go on. February 30th is a valid cron expression with no slot
    ever (croniter raises when asked for the next one): it made every master's periodic
    duty fail, so each stepped down in turn. A spec this version cannot read (a field it
    does not know, written by a newer CLI) stopped every entry after it in key order."""
    client, _ = world
    with pytest.raises(SpecError, match="no slot"):
        client.cron_add("feb30", "0 0 30 2 *", ["true"])
    spec = build_spec(["true"], name="feb30").stored_dict()
    bad = {
        "feb30": CronEntry("feb30", "0 0 30 2 *", spec, created_at=time.time()),
        "newer": CronEntry("newer", EVERY_2S, {**spec, "gpus": 1}, created_at=time.time()),
    }
    for name, entry in bad.items():
        client.etcd.put(client.keys.cron(name), entry.to_json())
    master = current_leader(client.etcd, client.keys)
    assert master is not None
    try:
        client.cron_add("tock", EVERY_2S, ["true"])  # after both in key order
        wait_for(lambda: len(made(client, "tock")) >= 2, 20, what="two slots of tock")
        assert current_leader(client.etcd, client.keys) == master
        assert made(client, "newer") == []
    finally:
        for name in ("tock", *bad):
            client.cron_remove(name)


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


def test_master_killed_at_a_slot_boundary_makes_each_slot_once(world):
    client, agents = world
    added = client.cron_add("edge", EVERY_2S, ["true"]).created_at
    wait_for(lambda: made(client, "edge"), 20, what="a first slot")
    master = current_leader(client.etcd, client.keys)
    assert master is not None
    boundary = (int(time.time()) // 2 + 2) * 2  # an even second, 2-4 s ahead
    time.sleep(max(0.0, boundary - 0.02 - time.time()))
    agents[master.name].kill()  # SIGKILL: its lease expires, the other agent takes over
    wait_for(
        lambda: (leader := current_leader(client.etcd, client.keys)) and leader.name != master.name,
        30,
        what="a new master",
    )
    time.sleep(3)
    client.cron_pause("edge")
    ids = made(client, "edge")
    expected = slots(added, boundary + 3)
    got = [i.removeprefix("edge-") for i in ids]
    assert got[: len(expected)] == expected  # the boundary's slot and every other, once
    assert slot_id("edge", boundary) in ids
