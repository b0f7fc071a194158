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
from dataclasses import dataclass, field, fields, replace
from typing import Any

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
    def from_json(cls, raw: bytes | str) -> JobRecord:
        data = json.loads(raw)
        data["state"] = JobState(data["state"])
        data["history"] = tuple(data.get("history") or ())
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

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
class Assignment:
    """The value of `<prefix>/assign/<node>/<id>`: everything the worker needs, no read."""

    record: JobRecord

    def to_json(self) -> str:
        return self.record.to_json()

    @classmethod
    def from_json(cls, raw: bytes) -> Assignment:
        return cls(JobRecord.from_json(raw))


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

    def to_json(self) -> str:
        data = without_defaults(((n, getattr(self, n)) for n in _RESULT_FIELDS), _RESULT_DEFAULTS)
        return _encode(data)

    @classmethod
    def from_json(cls, raw: bytes | str) -> JobResult:
        data = json.loads(raw)
        data["state"] = JobState(data["state"])
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


_RECORD_FIELDS = tuple(f.name for f in fields(JobRecord))
_RECORD_DEFAULTS = field_defaults(JobRecord)
_RESULT_FIELDS = tuple(f.name for f in fields(JobResult))
_RESULT_DEFAULTS = field_defaults(JobResult)
