"""Job records and their states: what `<prefix>/jobs/<id>` and `<prefix>/results/<id>` hold.

    queued ──> assigned ──> running ──> succeeded
      │  ^        │            │    └──> failed      (after the last attempt)
      │  └────────┴────────────┘         cancelled
      │   retry (non-zero exit, attempts left) or worker lost (lease expired)
      └──> cancelled / rejected (invalid spec from a plain etcdctl put)

Every transition is one etcd transaction. The attempt number rises with each assignment and
is the fencing token: a worker's report carries a compare on its own assignment key, which
exists only while that attempt is current.
"""

from __future__ import annotations

import enum
import json
import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

from ..errors import InvalidName
from ..etcd.keys import validate_job_id, validate_node_name
from .spec import JobSpec, parse_spec
from .stored import field_defaults, without_defaults


class JobState(enum.StrEnum):
    QUEUED = "queued"
    ASSIGNED = "assigned"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REJECTED = "rejected"

    @property
    def final(self) -> bool:
        return self in FINAL_STATES

    @property
    def active(self) -> bool:
        return self in (JobState.ASSIGNED, JobState.RUNNING)


FINAL_STATES = frozenset(
    {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.REJECTED}
)
# How a final state appears in a stored record (`JobRecord.to_json` writes compact JSON):
# a record without any of these is not final, and need not be parsed to know it.
FINAL_STATE_MARKS = tuple(f'"state":"{s.value}"'.encode() for s in FINAL_STATES)

# Compact, sorted, UTF-8 JSON. One encoder for all: json.dumps with options builds a new one
# per call, and records are encoded several times per job.
_encode = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode

# A node that dies mid-job is not the job's fault: such re-runs don't use up max_attempts,
# but a job that keeps killing its nodes is stopped after this many losses.
MAX_NODE_LOSSES = 5


class UnreadableRecord(ValueError):
    """A stored value that picluster did not write: not JSON, or fields of the wrong kind."""


def _load_object(raw: bytes | str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise UnreadableRecord(f"not JSON: {e}") from None
    if not isinstance(data, dict):
        raise UnreadableRecord("not a JSON object")
    return data


def _check_record(r: JobRecord, job_id: str | None) -> None:
    """Every field of a record read from etcd has the kind the code behind it relies on."""
    try:
        validate_job_id(r.id)
        if r.node is not None:
            validate_node_name(r.node)
    except InvalidName as e:
        raise UnreadableRecord(str(e)) from None
    if job_id is not None and r.id != job_id:
        raise UnreadableRecord(f"its id {r.id!r} is not the {job_id!r} of its key")
    if not isinstance(r.spec, dict):
        raise UnreadableRecord("spec is not an object")
    for name in ("seq", "attempt", "failures", "losses", "epoch"):
        value = getattr(r, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise UnreadableRecord(f"{name} is not a whole number >= 0")
    for name in _TIME_FIELDS:
        value = getattr(r, name)
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise UnreadableRecord(f"{name} is not a time")
    if r.exit_code is not None and (
        isinstance(r.exit_code, bool) or not isinstance(r.exit_code, int)
    ):
        raise UnreadableRecord("exit_code is not an integer")
    if r.reason is not None and not isinstance(r.reason, str):
        raise UnreadableRecord("reason is not text")


_TIME_FIELDS = (
    "submitted_at",
    "queued_at",
    "assigned_at",
    "started_at",
    "finished_at",
    "not_before",
)


@dataclass(frozen=True)
class JobRecord:
    """The state of one job; the value of `<prefix>/jobs/<id>` (JSON)."""

    id: str
    spec: dict[str, Any]
    state: JobState
    seq: int = 0  # submission order (the queue key's create revision): FIFO tiebreak
    attempt: int = 0  # rises with every assignment: the fencing token
    failures: int = 0  # attempts that ended non-zero / timed out
    losses: int = 0  # attempts lost with their node
    node: str | None = None
    submitted_at: float | None = None
    queued_at: float | None = None
    assigned_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    not_before: float | None = None  # earliest start: the spec's, or a retry's backoff
    exit_code: int | None = None
    reason: str | None = None  # why it failed / was rejected / is waiting
    history: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    # The master that wrote this record: its election key's create revision (its epoch).
    # 0 (left out) when a worker wrote it. Lets a history checker tie every master write to
    # an epoch and prove that no deposed master's write was accepted.
    epoch: int = 0

    def to_json(self) -> str:
        """Compact JSON; fields at their defaults (null, 0, no history) are left out."""
        data = without_defaults(((n, getattr(self, n)) for n in _RECORD_FIELDS), _RECORD_DEFAULTS)
        if "history" in data:
            data["history"] = list(self.history)
        return _encode(data)

    @classmethod
    def from_json(cls, raw: bytes | str, job_id: str | None = None) -> JobRecord:
        """Read a stored record; `job_id`, when given, is the id its key names.

        Raises UnreadableRecord for anything picluster would not have written: a record is
        read from keys anyone with write access can put, and must not crash its reader.
        """
        data = _load_object(raw)
        try:
            data["state"] = JobState(data.get("state"))
        except ValueError:
            raise UnreadableRecord(f"state {data.get('state')!r} is not a job state") from None
        history = data.get("history") or ()
        if not isinstance(history, list | tuple) or not all(isinstance(h, dict) for h in history):
            raise UnreadableRecord("history is not a list of objects")
        data["history"] = tuple(history)
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        try:
            record = cls(**known)
        except TypeError as e:  # a required field missing
            raise UnreadableRecord(str(e)) from None
        _check_record(record, job_id)
        return record

    def job_spec(self) -> JobSpec:
        return parse_spec(self.spec, self.id)

    def with_(self, **changes: Any) -> JobRecord:
        return replace(self, **changes)

    def note(self, event: str, **details: Any) -> tuple[dict[str, Any], ...]:
        """History plus one entry (`details` may name the attempt it is about); bounded so
        that a record stays small."""
        entry = {"event": event, "attempt": self.attempt, **details}
        return (*self.history, entry)[-20:]


@dataclass(frozen=True)
class JobResult:
    """The value of `<prefix>/results/<id>`: the last finished attempt."""

    id: str
    attempt: int
    node: str
    state: JobState
    exit_code: int | None
    signal: int | None
    timed_out: bool
    started_at: float | None
    finished_at: float
    stdout_tail: str
    stderr_tail: str
    error: str | None = None
    # What the attempt used (all of its cgroup's processes; without cgroups, the main
    # process and the children it waited for). None: not known.
    cpu_seconds: float | None = None
    peak_memory_bytes: int | None = None

    def to_json(self) -> str:
        data = without_defaults(((n, getattr(self, n)) for n in _RESULT_FIELDS), _RESULT_DEFAULTS)
        return _encode(data)

    @classmethod
    def from_json(cls, raw: bytes | str) -> JobResult:
        data = _load_object(raw)
        try:
            data["state"] = JobState(data.get("state"))
            known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
            return cls(**known)
        except (ValueError, TypeError) as e:
            raise UnreadableRecord(f"not a job result: {e}") from None


_RECORD_FIELDS = tuple(f.name for f in fields(JobRecord))
_RECORD_DEFAULTS = field_defaults(JobRecord)
_RESULT_FIELDS = tuple(f.name for f in fields(JobResult))
_RESULT_DEFAULTS = field_defaults(JobResult)
