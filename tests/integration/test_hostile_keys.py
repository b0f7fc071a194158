"""Nothing anyone writes under the prefix can stop the master (issue 13, finding 2).

Every key and value, whoever wrote it, is processed, rejected with a reason, or ignored with
one warning line; an ordinary job submitted after it still completes. One etcd and two agents
serve the whole module: the garbage piles up, as it would on a real cluster.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from picluster_agent.client import Client
from picluster_agent.etcd.localcluster import EtcdCluster, wait_for
from picluster_agent.jobs.records import JobState
from picluster_agent.jobs.spec import MAX_SPEC_BYTES

from conftest import Agents, _dump_logs_on_failure

NODES = ("pi1", "pi2")


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agents]:
    base = tmp_path_factory.mktemp("hostile")
    cluster = EtcdCluster(base / "etcd", 1).start()
    group = Agents(cluster, f"/hostile-{uuid.uuid4().hex[:6]}", base / "agents")
    for name in NODES:
        group.start(name, slots=2)
    group.wait_registered(len(NODES))
    group.wait_leader()
    yield group
    group.stop_all()
    _dump_logs_on_failure(group)
    cluster.stop_all()


@pytest.fixture(scope="module")
def client(hostile: Agents) -> Iterator[Client]:
    c = Client(hostile.cluster.endpoints_csv, prefix=hostile.prefix)
    yield c
    c.close()


def ordinary_job_completes(client: Client, timeout: float = 30) -> None:
    job = client.submit(["true"])
    status = client.wait([job.id], timeout=timeout)[job.id]
    assert status.state is JobState.SUCCEEDED, status.to_dict()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        # The examples: each one stopped every master in turn.
        ("queue/x/", "{}"),
        ("queue/bad!id", '{"command": ["true"]}'),
        ("cancel/bad!id", "1"),
        ("nodes/ghost", '{"name": "ghost", "slots": "4"}'),
        # A registration no agent holds (no lease): work given to it would never run.
        ("nodes/pi9", '{"name": "pi9", "slots": 8}'),
        ("nodes/pi8", '{"name": "../pi8", "slots": 1}'),
        ("drain/a/b", "1"),
        ("assign/pi1/not-json", "{"),
        ("assign/pi1/wrong", '{"id": "wrong", "state": "assigned", "spec": "nope"}'),
    ],
)
def test_a_bad_key_does_not_stop_scheduling(
    hostile: Agents, client: Client, key: str, value: str
) -> None:
    hostile.client.put(f"{hostile.prefix}/{key}", value)
    ordinary_job_completes(client)


def test_an_invalid_queue_key_is_ignored_with_one_warning(hostile: Agents, client: Client) -> None:
    key = f"{hostile.prefix}/queue/no way!{uuid.uuid4().hex[:6]}"
    hostile.client.put(key, '{"command": ["true"]}')
    ordinary_job_completes(client)
    master = hostile.by_name(hostile.wait_leader().name)
    warned = [line for line in master.log_text().splitlines() if key in line]
    assert len(warned) == 1 and "WARNING" in warned[0], warned


def test_live_registrations_overwritten_or_deleted_are_put_back(
    hostile: Agents, client: Client
) -> None:
    """Without them the master would give those nodes no work while their agents run."""
    hostile.client.put(hostile.keys.node("pi1"), "garbage")
    hostile.client.put(hostile.keys.node("pi2"), '{"name": "pi2", "slots": 2}')  # no lease
    hostile.client.delete(hostile.keys.node("pi2"))
    ordinary_job_completes(client)
    for name in NODES:
        wait_for(
            lambda name=name: (
                (kv := hostile.client.get(hostile.keys.node(name))) is not None and kv.lease != 0
            ),
            10,
            what=f"{name}'s registration back under its lease",
        )


def test_an_agent_starts_over_a_registration_no_agent_holds(hostile: Agents) -> None:
    hostile.client.put(hostile.keys.node("pi3"), '{"name": "pi3", "slots": 1}')  # no lease
    agent = hostile.start("pi3", slots=1)
    wait_for(
        lambda: (kv := hostile.client.get(hostile.keys.node("pi3"))) is not None and kv.lease,
        20,
        what="pi3 registered under its lease",
    )
    agent.terminate()
    assert agent.proc is not None and agent.proc.returncode == 0


def test_a_spec_too_large_to_assign_is_rejected_and_the_queue_moves_on(
    hostile: Agents, client: Client
) -> None:
    """Finding 4: the assignment writes the record twice in one request; a spec that makes it
    exceed etcd's request limit can never be assigned and must not block the queue."""
    job_id = f"huge-{uuid.uuid4().hex[:6]}"
    spec = {"command": ["true"], "env": {"BIG": "x" * (900 * 1024)}}
    hostile.client.put(hostile.keys.queue(job_id), json.dumps(spec))  # what etcdctl can do
    status = client.wait([job_id], timeout=30)[job_id]
    assert status.state is JobState.REJECTED
    assert str(MAX_SPEC_BYTES) in (status.record.reason or "")
    ordinary_job_completes(client)


# ---------------------------------------------------------------- anything at all

SUBDIRS = ("election", "leader", "nodes", "drain", "queue", "jobs", "assign", "results", "cancel")

names = st.one_of(
    st.sampled_from(["", "x", "a/b", "x/", "..", "bad!id", "pi1", "9" * 200, "ünï", "a b"]),
    st.text(max_size=12),
)


def _key(sub: str, name: str) -> str:
    if sub == "assign":
        return f"assign/{name}" if "/" in name else f"assign/pi1/{name}"
    return f"{sub}/{name}" if sub != "leader" else "leader"


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=8)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=8,
)
# Objects with the field names picluster reads, holding values of any type: what gets past
# `json.loads` and into the code behind it.
FIELDS = (
    "id", "command", "shell", "env", "slots", "priority", "memory_mb", "constraints", "state",
    "spec", "attempt", "node", "name", "labels", "prefetch", "not_before", "seq", "losses",
    "failures", "finished_at", "history", "lease", "max_attempts", "reason",
)  # fmt: skip
field_values = st.one_of(
    json_values,
    st.sampled_from(["queued", "assigned", "running", "succeeded", "pi1", "../x", "bad!id"]),
    st.just({"command": ["true"]}),
    st.just(["true"]),
)
records = st.dictionaries(st.sampled_from(FIELDS), field_values, max_size=8)
values = st.one_of(
    st.binary(max_size=40),
    json_values.map(json.dumps),
    records.map(lambda r: json.dumps(r, allow_nan=True)),
)
writes = st.lists(
    st.tuples(st.sampled_from(SUBDIRS), names, values, st.booleans()), min_size=1, max_size=4
)


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,  # the same examples in every run: a failure is reproducible
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(ops=writes)
def test_no_write_under_the_prefix_stops_scheduling(
    hostile: Agents, client: Client, ops: list[tuple[str, str, bytes | str, bool]]
) -> None:
    for sub, name, value, then_delete in ops:
        key = f"{hostile.prefix}/{_key(sub, name)}"
        hostile.client.put(key, value)
        if then_delete:
            hostile.client.delete(key)
    ordinary_job_completes(client)


def test_a_new_master_reads_all_of_it_and_schedules(hostile: Agents, client: Client) -> None:
    """Everything written above is read again in one piece by a new master (and by the
    election of one): kill the master, and an ordinary job still completes."""
    for record in (
        {"id": "r1", "state": "assigned", "node": "../x", "spec": {"command": ["true"]}},
        {"id": "r2", "state": "queued", "attempt": "1", "spec": {"command": ["true"]}},
        {"id": "other", "state": "queued", "spec": {"command": ["true"]}},
        {"id": "r4", "state": "succeeded", "finished_at": "yesterday", "spec": {}},
    ):
        hostile.client.put(f"{hostile.prefix}/jobs/r{uuid.uuid4().hex[:4]}", json.dumps(record))
        hostile.client.put(hostile.keys.job(str(record["id"])), json.dumps(record))
    # Older than every candidate once all agents restart: it must not count as the master.
    hostile.client.put(f"{hostile.prefix}/election/ffff", "an impostor, without a lease")
    old = hostile.wait_leader()
    for name in NODES:
        hostile.by_name(name).kill()
    for name in NODES:
        hostile.start(name, slots=2)
    wait_for(
        lambda: (leader := hostile.leader()) is not None and leader.lease not in (0, old.lease),
        30,
        what="a new master",
    )
    ordinary_job_completes(client, timeout=60)
