"""Reading what anyone may have written under the prefix: keys, records, registrations.

Each reader either returns what picluster wrote or says "not ours" (None, or a named
ValueError): never an exception of another kind, never a part of a key acted on.
"""

from __future__ import annotations

import json

import pytest

from picluster_agent.coord.election import is_candidate
from picluster_agent.coord.registry import NodeInfo, UnreadableRegistration
from picluster_agent.etcd.adapter import KV
from picluster_agent.etcd.keys import Keys
from picluster_agent.jobs.records import JobRecord, JobResult, JobState, UnreadableRecord

KEYS = Keys("/p")


@pytest.mark.parametrize(
    ("key", "job_id"),
    [
        ("/p/queue/01ABC", "01ABC"),
        ("/p/queue/", None),
        ("/p/queue/x/", None),
        ("/p/queue/a/b", None),
        ("/p/queue/bad!id", None),
        ("/p/queue/\ufffd", None),
        ("/p/queued/x", None),
        ("/p/queue/" + "9" * 129, None),
    ],
)
def test_job_ids_are_read_from_whole_keys_only(key: str, job_id: str | None) -> None:
    assert KEYS.job_id_of(KEYS.queue_dir, key) == job_id


@pytest.mark.parametrize(
    ("key", "parts"),
    [
        ("/p/assign/pi1/j1", ("pi1", "j1")),
        ("/p/assign/pi1/a/b", None),
        ("/p/assign/pi1", None),
        ("/p/assign//j1", None),
        ("/p/assign/pi 1/j1", None),
    ],
)
def test_assignment_keys_name_a_node_and_a_job(key: str, parts: tuple[str, str] | None) -> None:
    assert KEYS.assignment_of(key) == parts


def test_node_names_are_read_from_whole_keys_only() -> None:
    assert KEYS.node_of(KEYS.nodes_dir, "/p/nodes/pi1") == "pi1"
    assert KEYS.node_of(KEYS.nodes_dir, "/p/nodes/a/b") is None
    assert KEYS.node_of(KEYS.drain_dir, "/p/drain/") is None


GOOD = {"id": "j1", "spec": {"command": ["true"]}, "state": "queued"}


@pytest.mark.parametrize(
    "value",
    [
        b"\xff\xfe",
        b"{",
        b"[]",
        b"null",
        b"[" * 5000,  # nested deeper than the parser goes
        json.dumps({**GOOD, "state": "sleeping"}).encode(),
        json.dumps({"state": "queued", "spec": {}}).encode(),  # no id
        json.dumps({**GOOD, "id": "../x"}).encode(),
        json.dumps({**GOOD, "spec": "nope"}).encode(),
        json.dumps({**GOOD, "attempt": "1"}).encode(),
        json.dumps({**GOOD, "attempt": True}).encode(),
        json.dumps({**GOOD, "losses": -1}).encode(),
        json.dumps({**GOOD, "node": "../x"}).encode(),
        json.dumps({**GOOD, "finished_at": "yesterday"}).encode(),
        json.dumps({**GOOD, "history": [1, 2]}).encode(),
        json.dumps({**GOOD, "reason": 5}).encode(),
        json.dumps({**GOOD, "exit_code": 1.5}).encode(),
    ],
)
def test_a_record_picluster_would_not_write_is_unreadable(value: bytes) -> None:
    with pytest.raises(UnreadableRecord):
        JobRecord.from_json(value)


def test_a_record_must_name_the_job_of_its_key() -> None:
    raw = json.dumps(GOOD)
    assert JobRecord.from_json(raw, "j1").state is JobState.QUEUED
    with pytest.raises(UnreadableRecord, match="not the"):
        JobRecord.from_json(raw, "j2")


def test_a_record_round_trips() -> None:
    record = JobRecord(id="j1", spec={"command": ["true"]}, state=JobState.RUNNING, attempt=2)
    assert JobRecord.from_json(record.to_json(), "j1") == record


@pytest.mark.parametrize("value", [b"{", b"[]", b'{"state": "done"}', b'{"state": "failed"}'])
def test_an_unreadable_result(value: bytes) -> None:
    with pytest.raises(UnreadableRecord):
        JobResult.from_json(value)


REGISTRATION = {"name": "pi1", "slots": 4}


@pytest.mark.parametrize(
    "change",
    [
        {"slots": "4"},
        {"slots": 0},
        {"slots": True},
        {"name": "../pi"},
        {"labels": ["a"]},
        {"labels": {"a": 1}},
        {"labels": {"a b": "c"}},
        {"memory_mb": "lots"},
        {"prefetch": -1},
        {"started_at": "now"},
        {"master_eligible": "yes"},
        {"address": 5},
    ],
)
def test_a_registration_no_agent_would_write_is_unreadable(change: dict[str, object]) -> None:
    with pytest.raises(UnreadableRegistration):
        NodeInfo.from_json(json.dumps({**REGISTRATION, **change}).encode())


def test_a_registration_round_trips() -> None:
    info = NodeInfo(name="pi1", slots=4, labels={"model": "pi5"}, memory_mb=8000)
    assert NodeInfo.from_json(info.to_json().encode()) == info


def _kv(key: str, lease: int) -> KV:
    return KV(key, b"pi1", create_revision=5, mod_revision=5, version=1, lease=lease)


def test_only_a_key_named_after_its_own_lease_is_a_candidate() -> None:
    assert is_candidate(_kv("/p/election/1f", 0x1F), KEYS)
    assert not is_candidate(_kv("/p/election/1f", 0), KEYS)  # etcdctl put: no lease
    assert not is_candidate(_kv("/p/election/ffff", 0x1F), KEYS)
