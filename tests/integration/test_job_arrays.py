"""Arrays on real agents: ranges with a step, the running cap, the parent id for all.

One etcd member and two agents (2 slots each) serve the whole module.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from picluster_agent.client import Client
from picluster_agent.errors import NotFound
from picluster_agent.etcd.localcluster import wait_for
from picluster_agent.jobs.records import JobState

from conftest import module_cluster

PREFIX = "/arrays"


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> Iterator[Client]:
    with module_cluster(tmp_path_factory.mktemp("arrays"), PREFIX, ("arr1", "arr2"), slots=2) as c:
        yield c


def test_range_with_a_step_and_the_parent_for_status_and_wait(client):
    sub = client.submit_array("echo $PICLUSTER_ARRAY_INDEX", "3-9:3", shell=True)
    assert [r.id for r in sub.results] == [f"{sub.parent}.{i}" for i in (3, 6, 9)]
    done = client.wait([sub.parent], timeout=30)
    assert sorted(done) == [r.id for r in sub.results]
    assert {s.state for s in done.values()} == {JobState.SUCCEEDED}
    assert client.logs(f"{sub.parent}.6") == "6\n"
    array = client.array(sub.parent)
    assert array.counts == {"succeeded": 3}
    assert [m.id for m in array.members] == [r.id for r in sub.results]
    with pytest.raises(NotFound):
        client.array("no-such-array")


def test_running_cap_holds_with_free_slots(client):
    # 4 free slots, a cap of 2: never more than 2 members at once.
    sub = client.submit_array(["sleep", "0.3"], range(8), max_running=2)
    done = client.wait([sub.parent], timeout=60)
    spans = sorted((s.record.assigned_at, s.record.finished_at) for s in done.values())
    for start, _ in spans:
        assert sum(1 for s, e in spans if s <= start < e) <= 2


def test_cancel_parent_cancels_what_has_not_finished(client, tmp_path):
    gate = tmp_path / "gate"
    sub = client.submit_array(f"while [ ! -e {gate} ]; do sleep 0.02; done", "0-5%2", shell=True)
    wait_for(
        lambda: client.array(sub.parent).counts.get("running") == 2, 20, what="2 members running"
    )
    before = client.cancel_array(sub.parent)
    assert before.counts == {"queued": 4, "running": 2}
    done = client.wait([sub.parent], timeout=30)
    assert {s.state for s in done.values()} == {JobState.CANCELLED}


def test_cli_array(client, cli):
    conn = ["--endpoints", ",".join(client.connection.endpoints), "--prefix", PREFIX]
    out = cli("submit", *conn, "--array", "3", "--", "true")  # as before: 0..N-1
    assert out.returncode == 0, out.stderr
    ids = out.stdout.split()
    parent = ids[0].rsplit(".", 1)[0]
    assert ids == [f"{parent}.{i}" for i in range(3)]
    assert out.stderr.strip() == f"array {parent}: 3 jobs"  # (after the progress bar)
    out = cli("wait", *conn, parent)
    assert (out.returncode, out.stdout) == (0, "3 succeeded\n"), out.stderr
    out = cli("status", *conn, "-o", "json", parent)
    doc = json.loads(out.stdout)
    assert doc["counts"] == {"succeeded": 3} and doc["size"] == 3
    out = cli("cancel", *conn, parent)
    assert out.stdout == f"array {parent}: cancel requested for 0 of 3 jobs\n"
