"""The status page's JSON (`GET /v1/ui/state`), made from one snapshot of etcd records.

Pure: no etcd, no clock. Every value was read from keys anyone with write access can put,
so anything a picluster writer would not have written is left out, never trusted.
"""

from __future__ import annotations

import json
import math
from typing import Any

from ..coord.election import is_candidate
from ..coord.registry import NodeInfo, UnreadableRegistration
from ..etcd.adapter import KV
from ..etcd.keys import Keys
from ..jobs.records import JobRecord, JobState, UnreadableRecord
from .snapshot import RECENT_JOBS, Snapshot

CHART_MINUTES = 15  # the jobs-per-minute chart: the last quarter of an hour
FAILED_SHOWN = 10
FINISHED_SHOWN = 15
COMMAND_CHARS = 120
# A live agent renews its lease at least every second (coord/session.py); with a little room
# for a slow etcd, a lease with more than this missing from its TTL has not been renewed.
LATE_RENEWAL = 3


class ParsedRecords:
    """Job records parsed at the last refresh, by key and mod revision (a key's value at one
    revision never changes): an unchanged record is not parsed again. Parsing was most of a
    refresh's CPU. Entries not seen at a refresh are dropped."""

    def __init__(self) -> None:
        self._parsed: dict[tuple[str, int], JobRecord | None] = {}

    def of(self, kvs: list[KV], keys: Keys) -> dict[str, JobRecord]:
        seen: dict[tuple[str, int], JobRecord | None] = {}
        out = {}
        for kv in kvs:
            job_id = keys.job_id_of(keys.jobs_dir, kv.key)
            if job_id is None:
                continue
            mark = (kv.key, kv.mod_revision)
            record = self._parsed[mark] if mark in self._parsed else _parse(kv, job_id)
            seen[mark] = record
            if record is not None:
                out[job_id] = record
        self._parsed = seen
        return out


def build_state(
    snap: Snapshot, keys: Keys, served_by: str, parsed: ParsedRecords | None = None
) -> dict[str, Any]:
    master = _master(snap, keys)
    jobs = (parsed or ParsedRecords()).of(snap.jobs, keys)
    active = _active(snap.assignments, jobs, keys)
    return {
        "served_by": served_by,
        "generated_at": snap.now,
        "revision": snap.revision,
        "master": master,
        "masters_before": [_leader_entry(r) for r in snap.earlier_leaders],
        "nodes": _nodes(snap, keys, master, active),
        "queue": _queue(snap, keys, jobs),
        "queue_total": snap.queue_total + _waiting_count(jobs),
        "running": [_job_row(r) for r in sorted(active.values(), key=_started_key)],
        "failed": [_job_row(r) for r in _finished(jobs, {JobState.FAILED})[:FAILED_SHOWN]],
        "finished": [_job_row(r) for r in _finished(jobs, set(JobState))[:FINISHED_SHOWN]],
        "chart": _chart(jobs, snap.now),
        "errors": list(snap.errors),
    }


# ------------------------------------------------------------------ the master


def _master(snap: Snapshot, keys: Keys) -> dict[str, Any] | None:
    """The election's answer (lowest create revision), with `since` from its own record."""
    live = sorted((kv for kv in snap.candidates if is_candidate(kv, keys)), key=_created)
    if not live:
        return None
    kv = live[0]
    out: dict[str, Any] = {
        "name": kv.value.decode(errors="replace"),
        "epoch": kv.create_revision,
        "since": None,
        "heartbeat": None,
    }
    record = _object(snap.leader.value) if snap.leader else {}
    if record.get("lease") == f"{kv.lease:x}":  # its own record, not its predecessor's
        out["since"] = _time(record.get("since"))
        out["heartbeat"] = _time(record.get("heartbeat"))
    return out


def _leader_entry(raw: bytes) -> dict[str, Any]:
    record = _object(raw)
    name = record.get("name")
    return {
        "name": name if isinstance(name, str) else "?",
        "epoch": record.get("epoch") if isinstance(record.get("epoch"), int) else None,
        "since": _time(record.get("since")),
        "last_seen": _time(record.get("heartbeat")),
    }


def _created(kv: KV) -> int:
    return kv.create_revision


# ------------------------------------------------------------------ nodes


def _nodes(
    snap: Snapshot,
    keys: Keys,
    master: dict[str, Any] | None,
    active: dict[str, JobRecord],
) -> list[dict[str, Any]]:
    used: dict[str, int] = {}
    for record in active.values():
        if record.node:
            used[record.node] = used.get(record.node, 0) + _slots_of(record)
    out = []
    for kv in sorted(snap.nodes, key=lambda kv: kv.key):
        try:
            info = NodeInfo.from_json(kv.value)
        except UnreadableRegistration:
            continue
        if kv.lease == 0 or keys.node_of(keys.nodes_dir, kv.key) != info.name:
            continue
        is_master = master is not None and master["name"] == info.name
        out.append(
            {
                "name": info.name,
                "role": "master" if is_master else "worker",
                "eligible": info.master_eligible,
                "slots": info.slots,
                "used": used.get(info.name, 0),
                "labels": dict(info.labels),
                "version": info.version,
                "address": info.address,
                "drained": info.name in snap.drained,
                "lease": _lease(snap.leases.get(kv.lease)),
            }
        )
    return out


def _lease(ttls: tuple[int, int] | None) -> dict[str, Any]:
    if ttls is None:
        return {"state": "unknown", "left": None, "ttl": None}
    left, granted = ttls
    if left < 0:
        state = "expired"
    elif granted and left < granted - LATE_RENEWAL:
        state = "late"
    else:
        state = "live"
    return {"state": state, "left": left, "ttl": granted or None}


# ------------------------------------------------------------------ jobs


def _parse(kv: KV, job_id: str) -> JobRecord | None:
    try:
        return JobRecord.from_json(kv.value, job_id)
    except UnreadableRecord:
        return None


def _active(assignments: list[KV], jobs: dict[str, JobRecord], keys: Keys) -> dict[str, JobRecord]:
    """Jobs in a worker's inbox now, as their own records say (running or assigned)."""
    out = {}
    for kv in assignments:
        found = keys.assignment_of(kv.key)
        if found is None:
            continue
        node, job_id = found
        record = jobs.get(job_id)
        if record is not None and record.state.active and record.node == node:
            out[job_id] = record
    return out


def _queue(snap: Snapshot, keys: Keys, jobs: dict[str, JobRecord]) -> list[dict[str, Any]]:
    """Waiting jobs: retries and jobs lost with a node (records back in `queued`), then the
    submissions the master has not taken yet, oldest first."""
    rows = [_job_row(r) for r in sorted(jobs.values(), key=_seq) if r.state is JobState.QUEUED]
    for kv in snap.queue:
        job_id = keys.job_id_of(keys.queue_dir, kv.key)
        if job_id is None or job_id in jobs:
            continue
        spec = _object(kv.value)
        rows.append(
            {
                "id": job_id,
                "state": "queued",
                "command": _command(spec),
                "priority": spec.get("priority") if isinstance(spec.get("priority"), int) else 0,
                "not_before": _time(spec.get("not_before")),
                "reason": None,
            }
        )
    return rows


def _waiting_count(jobs: dict[str, JobRecord]) -> int:
    return sum(1 for r in jobs.values() if r.state is JobState.QUEUED)


def _finished(jobs: dict[str, JobRecord], states: set[JobState]) -> list[JobRecord]:
    done = [r for r in jobs.values() if r.state.final and r.state in states]
    return sorted(done, key=lambda r: r.finished_at or 0.0, reverse=True)


def _job_row(r: JobRecord) -> dict[str, Any]:
    return {
        "id": r.id,
        "state": r.state.value,
        "command": _command(r.spec),
        "node": r.node,
        "attempt": r.attempt,
        "priority": r.spec.get("priority") if isinstance(r.spec.get("priority"), int) else 0,
        "submitted_at": r.submitted_at,
        "started_at": r.started_at,
        "finished_at": r.finished_at,
        "not_before": r.not_before,
        "exit_code": r.exit_code,
        "reason": r.reason,
    }


def _chart(jobs: dict[str, JobRecord], now: float) -> dict[str, Any]:
    """Jobs finished per minute, succeeded and not, over the last CHART_MINUTES minutes.

    Counted from the records read (the most recently modified RECENT_JOBS): `complete` says
    whether they reach back to the chart's start, that is whether the bars are exact (a
    record left out was changed last before every record read).
    """
    end = math.floor(now / 60) * 60 + 60
    start = end - CHART_MINUTES * 60
    bars = [{"t": start + 60 * i, "succeeded": 0, "failed": 0} for i in range(CHART_MINUTES)]
    oldest = now
    for r in jobs.values():
        oldest = min(oldest, _last_change(r))
        if not r.state.final or r.finished_at is None or not start <= r.finished_at < end:
            continue
        bar = bars[int((r.finished_at - start) // 60)]
        bar["succeeded" if r.state is JobState.SUCCEEDED else "failed"] += 1
    return {"bars": bars, "complete": len(jobs) < RECENT_JOBS or oldest <= start}


# ------------------------------------------------------------------ values


def _object(raw: bytes | str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def _time(value: Any) -> float | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def _command(spec: dict[str, Any]) -> str:
    command = spec.get("command", spec.get("raw", ""))
    text = " ".join(map(str, command)) if isinstance(command, list) else str(command)
    return text if len(text) <= COMMAND_CHARS else text[: COMMAND_CHARS - 1] + "…"


def _slots_of(r: JobRecord) -> int:
    slots = r.spec.get("slots", 1)
    return slots if isinstance(slots, int) and not isinstance(slots, bool) and slots > 0 else 1


def _last_change(r: JobRecord) -> float:
    times = (r.submitted_at, r.queued_at, r.assigned_at, r.started_at, r.finished_at)
    return max((t for t in times if t is not None), default=0.0)


def _seq(r: JobRecord) -> int:
    return r.seq


def _started_key(r: JobRecord) -> float:
    return r.started_at or r.assigned_at or 0.0
