"""The status page's JSON from etcd records: pure logic, so records are made by hand here."""

from __future__ import annotations

import json

import pytest

from picluster_agent.coord.registry import NodeInfo
from picluster_agent.errors import Compacted
from picluster_agent.etcd.adapter import KV
from picluster_agent.etcd.keys import Keys
from picluster_agent.jobs.records import JobRecord, JobState
from picluster_agent.ui.snapshot import LeaderHistory, Snapshot
from picluster_agent.ui.state import CHART_MINUTES, ParsedRecords, build_state

KEYS = Keys("/pc")
NOW = 1_800_000_000.0  # a whole minute
LEASES = {"pi1": 0x11, "pi2": 0x22, "pi3": 0x33}


def kv(key: str, value: str | bytes, *, created: int = 1, lease: int = 0, mod: int = 0) -> KV:
    raw = value.encode() if isinstance(value, str) else value
    return KV(key, raw, created, mod or created, 1, lease)


def node(name: str, slots: int = 2, **extra: object) -> KV:
    info = NodeInfo(name=name, slots=slots, lease=f"{LEASES[name]:x}", **extra)  # type: ignore[arg-type]
    return kv(KEYS.node(name), info.to_json(), lease=LEASES[name])


def candidate(name: str, created: int) -> KV:
    return kv(KEYS.election(LEASES[name]), name, created=created, lease=LEASES[name])


def leader_record(name: str, epoch: int, since: float, heartbeat: float) -> bytes:
    record = {"name": name, "lease": f"{LEASES[name]:x}", "epoch": epoch}
    record |= {"since": since, "heartbeat": heartbeat, "pid": 1}
    return json.dumps(record).encode()


def job(job_id: str, state: JobState, **fields: object) -> JobRecord:
    fields.setdefault("spec", {"command": ["echo", job_id]})
    return JobRecord(id=job_id, state=state, **fields)  # type: ignore[arg-type]


def snapshot(**overrides: object) -> Snapshot:
    base: dict[str, object] = {
        "now": NOW,
        "candidates": [],
        "leader": None,
        "earlier_leaders": [],
        "nodes": [],
        "drained": set(),
        "leases": {},
        "assignments": [],
        "queue": [],
        "queue_total": 0,
        "jobs": [],
    }
    base.update(overrides)
    return Snapshot(**base)  # type: ignore[arg-type]


def records(*jobs: JobRecord) -> list[KV]:
    return [kv(KEYS.job(j.id), j.to_json()) for j in jobs]


def state_of(**overrides: object) -> dict:
    return build_state(snapshot(**overrides), KEYS, "pi3")


def test_master_is_the_lowest_candidate_with_since_from_its_own_record():
    s = state_of(
        candidates=[candidate("pi2", 40), candidate("pi1", 30)],
        leader=kv(KEYS.leader, leader_record("pi1", 30, NOW - 100, NOW - 1)),
    )
    assert s["master"] == {"name": "pi1", "epoch": 30, "since": NOW - 100, "heartbeat": NOW - 1}
    assert s["served_by"] == "pi3"


def test_a_predecessors_record_gives_no_since():
    # pi2 just won; the leader key still holds pi1's last record.
    s = state_of(
        candidates=[candidate("pi2", 40)],
        leader=kv(KEYS.leader, leader_record("pi1", 30, NOW - 100, NOW - 6)),
    )
    assert s["master"]["name"] == "pi2" and s["master"]["since"] is None


def test_no_candidate_no_master_and_a_stray_election_key_is_not_one():
    stray = kv(KEYS.election_dir + "junk", "evil", created=1)  # no lease: an etcdctl put
    assert state_of(candidates=[stray])["master"] is None


def test_earlier_masters_listed_newest_first():
    s = state_of(
        earlier_leaders=[
            leader_record("pi2", 20, NOW - 300, NOW - 200),
            leader_record("pi3", 10, NOW - 900, NOW - 301),
        ]
    )
    assert [(m["name"], m["epoch"], m["last_seen"]) for m in s["masters_before"]] == [
        ("pi2", 20, NOW - 200),
        ("pi3", 10, NOW - 301),
    ]


def test_nodes_role_slots_used_drain_and_lease_state():
    running = job("j1", JobState.RUNNING, node="pi2", attempt=1, spec={"command": "x", "slots": 2})
    s = state_of(
        candidates=[candidate("pi1", 5)],
        nodes=[node("pi1", 4), node("pi2", 2), node("pi3", 1, master_eligible=False)],
        drained={"pi3"},
        leases={0x11: (8, 8), 0x22: (3, 8), 0x33: (-1, 0)},
        assignments=[kv(KEYS.assign("pi2", "j1"), running.to_json(), lease=0x22)],
        jobs=records(running),
    )
    table = {n["name"]: n for n in s["nodes"]}
    assert table["pi1"]["role"] == "master" and table["pi2"]["role"] == "worker"
    assert (table["pi2"]["used"], table["pi2"]["slots"]) == (2, 2)
    assert table["pi1"]["used"] == 0
    leases = [table[n]["lease"]["state"] for n in ("pi1", "pi2", "pi3")]
    assert leases == ["live", "late", "expired"]
    assert table["pi3"]["drained"] and not table["pi3"]["eligible"]


def test_a_node_key_without_lease_or_with_someone_elses_name_is_not_shown():
    forged = kv(KEYS.node("pi1"), NodeInfo(name="pi2", slots=1).to_json(), lease=7)
    no_lease = kv(KEYS.node("pi3"), NodeInfo(name="pi3", slots=1).to_json())
    garbage = kv(KEYS.node("pi2"), b"\xff not json", lease=LEASES["pi2"])
    assert state_of(nodes=[forged, no_lease, garbage])["nodes"] == []


def test_queue_holds_waiting_records_then_untaken_submissions():
    retry = job("r1", JobState.QUEUED, seq=3, reason="retrying after attempt 1: exit 1")
    submitted = kv(KEYS.queue("q1"), json.dumps({"command": ["sleep", "1"], "priority": 5}))
    taken = kv(KEYS.queue("r1"), json.dumps({"command": ["x"]}))  # its record exists: shown once
    s = state_of(jobs=records(retry), queue=[submitted, taken], queue_total=2)
    assert [(q["id"], q["state"]) for q in s["queue"]] == [("r1", "queued"), ("q1", "queued")]
    assert s["queue"][1]["priority"] == 5 and s["queue"][1]["command"] == "sleep 1"
    assert s["queue_total"] == 3


def test_running_are_the_assigned_records_that_say_so():
    runs = job("a", JobState.RUNNING, node="pi1", attempt=1, started_at=NOW - 5)
    moved = job("b", JobState.SUCCEEDED, node="pi1", attempt=1, finished_at=NOW - 1)
    s = state_of(
        assignments=[
            kv(KEYS.assign("pi1", "a"), runs.to_json()),
            kv(KEYS.assign("pi1", "b"), moved.to_json()),  # reported, inbox not yet cleared
        ],
        jobs=records(runs, moved),
    )
    assert [j["id"] for j in s["running"]] == ["a"]
    assert [j["id"] for j in s["finished"]] == ["b"]


def test_failed_and_finished_newest_first():
    jobs = [
        job("old", JobState.FAILED, finished_at=NOW - 50, exit_code=1, reason="exit 1"),
        job("new", JobState.FAILED, finished_at=NOW - 5, exit_code=2),
        job("ok", JobState.SUCCEEDED, finished_at=NOW - 10, exit_code=0),
    ]
    s = state_of(jobs=records(*jobs))
    assert [j["id"] for j in s["failed"]] == ["new", "old"]
    assert [j["id"] for j in s["finished"]] == ["new", "ok", "old"]
    assert s["failed"][1]["reason"] == "exit 1"


def test_chart_counts_finishes_per_minute():
    jobs = [
        job("a", JobState.SUCCEEDED, submitted_at=NOW - 800, finished_at=NOW + 1),
        job("b", JobState.SUCCEEDED, submitted_at=NOW - 800, finished_at=NOW + 59),
        job("c", JobState.FAILED, submitted_at=NOW - 800, finished_at=NOW - 61),
        job("d", JobState.SUCCEEDED, submitted_at=NOW - 9000, finished_at=NOW - 3600),  # before
    ]
    chart = build_state(snapshot(now=NOW + 30, jobs=records(*jobs)), KEYS, "pi3")["chart"]
    bars = chart["bars"]
    assert len(bars) == CHART_MINUTES and bars[-1]["t"] == NOW
    assert (bars[-1]["succeeded"], bars[-1]["failed"]) == (2, 0)
    assert (bars[-3]["succeeded"], bars[-3]["failed"]) == (0, 1)
    assert sum(b["succeeded"] + b["failed"] for b in bars) == 3
    assert chart["complete"]


def test_chart_says_when_the_records_read_do_not_reach_its_start(monkeypatch):
    monkeypatch.setattr("picluster_agent.ui.state.RECENT_JOBS", 2)
    jobs = [job(f"j{i}", JobState.SUCCEEDED, finished_at=NOW - i) for i in range(2)]
    assert not state_of(jobs=records(*jobs))["chart"]["complete"]


@pytest.mark.parametrize(
    "value",
    [b"not json", b"[]", b'{"id": "other", "state": "running", "spec": {}}', b'{"state": 7}'],
)
def test_unreadable_job_records_are_left_out(value):
    s = state_of(jobs=[kv(KEYS.job("x1"), value)], assignments=[kv(KEYS.assign("pi1", "x1"), "")])
    assert s["running"] == s["finished"] == s["queue"] == []


def test_long_commands_are_shortened():
    long = job("l", JobState.SUCCEEDED, finished_at=NOW, spec={"command": "y" * 1000})
    command = state_of(jobs=records(long))["finished"][0]["command"]
    assert len(command) == 120 and command.endswith("…")


class FakeEtcd:
    """The leader key at past revisions, as etcd would answer `get(key, revision=)`."""

    def __init__(self, versions: dict[int, bytes]) -> None:
        self.versions = versions  # revision -> value written at it
        self.reads: list[int] = []
        self.compacted = 0

    def get(self, key: str, *, revision: int = 0) -> KV | None:
        self.reads.append(revision)
        if revision < self.compacted:
            raise Compacted("required revision has been compacted")
        written = [r for r in self.versions if r <= revision]
        if not written:
            return None
        return kv(key, self.versions[max(written)], mod=max(written))


def test_leader_history_finds_each_masters_first_record_and_the_one_before():
    # All three campaigned at once (epochs 8, 9, 10), before pi1's first record: a
    # master's epoch is older than its first record, and than its predecessor's too.
    etcd = FakeEtcd(
        {
            11: leader_record("pi1", 8, NOW - 900, NOW - 900),
            15: leader_record("pi1", 8, NOW - 900, NOW - 600),
            21: leader_record("pi2", 9, NOW - 590, NOW - 590),
            25: leader_record("pi2", 9, NOW - 590, NOW - 100),
            31: leader_record("pi3", 10, NOW - 90, NOW),
        }
    )
    history = LeaderHistory(etcd, KEYS)  # type: ignore[arg-type]
    current = kv(KEYS.leader, etcd.versions[31], created=11, mod=31)
    earlier = [json.loads(r) for r in history.before(current, 5)]
    assert [(r["name"], r["heartbeat"]) for r in earlier] == [
        ("pi2", NOW - 100),
        ("pi1", NOW - 600),
    ]
    assert history.before(current, 1) == [etcd.versions[25]]
    reads = len(etcd.reads)
    history.before(current, 5)
    assert len(etcd.reads) == reads  # past revisions never change: searched once


def test_leader_history_ends_where_etcd_has_compacted():
    etcd = FakeEtcd(
        {
            11: leader_record("pi1", 10, NOW - 900, NOW - 600),
            21: leader_record("pi2", 12, NOW - 590, NOW),
        }
    )
    etcd.compacted = 21  # nothing before revision 21 can be read
    current = kv(KEYS.leader, etcd.versions[21], created=11, mod=21)
    assert LeaderHistory(etcd, KEYS).before(current, 5) == []  # type: ignore[arg-type]


def test_unchanged_records_are_parsed_once(monkeypatch):
    parses: list[str] = []
    real = JobRecord.from_json

    def counting(raw, job_id=None):
        parses.append(job_id)
        return real(raw, job_id)

    monkeypatch.setattr(JobRecord, "from_json", counting)
    parsed = ParsedRecords()
    done = job("a", JobState.SUCCEEDED, finished_at=NOW)
    runs = job("b", JobState.RUNNING, node="pi1", attempt=1)
    first = [kv(KEYS.job("a"), done.to_json(), mod=5), kv(KEYS.job("b"), runs.to_json(), mod=6)]
    build_state(snapshot(jobs=first), KEYS, "pi3", parsed)
    assert sorted(parses) == ["a", "b"]
    finished = runs.with_(state=JobState.SUCCEEDED, finished_at=NOW)
    second = [first[0], kv(KEYS.job("b"), finished.to_json(), mod=9)]  # b changed
    s = build_state(snapshot(jobs=second), KEYS, "pi3", parsed)
    assert sorted(parses) == ["a", "b", "b"]
    assert {j["id"] for j in s["finished"]} == {"a", "b"}
