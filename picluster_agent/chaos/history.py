"""The history checker: did the cluster keep its promises through a run? Pure logic.

Three sources, each recorded where it is true:
- the submitter: each submission's outcome (acknowledged, or not: refused or unknown);
- the jobs themselves: every attempt appends marks (start, a beat every BEAT seconds, end)
  to one file on the host, with the host's own clock, so the times of all nodes compare;
- etcd: the history of every key under the cluster's prefix, revision by revision (a watch
  from the first revision; the test etcd never compacts). Election keys give the master
  epochs (an epoch is a master's election key create revision); job records, assignments
  and the leader record written by a master carry the epoch they were written under.

Checks, each a kind of violation:
    overlap              two runs of one job alive at once
    lost                 an acknowledged job without a final record
    duplicate_final      a job that reached a final state more than once
    stale_result         a result accepted for an attempt that was not the current one
    stale_master_write   a master write accepted from an epoch other than the current one
    unacked_half_done    a job never acknowledged that ran but did not complete once
    rerun_index          at the end of a revision, `rerun/<id>` present and the job's
                         record not waiting for another attempt (`queued`), or the reverse
A run alive for less than one beat interval after another run's start can go unseen.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

FINAL_STATES = frozenset({"succeeded", "failed", "cancelled", "rejected"})
KINDS = (
    "overlap",
    "lost",
    "duplicate_final",
    "stale_result",
    "stale_master_write",
    "unacked_half_done",
    "rerun_index",
)


@dataclass(frozen=True)
class Submission:
    """Source: the submitter. `acked`: the client returned the id (etcd committed it)."""

    job: str
    acked: bool
    t: float = 0.0


@dataclass(frozen=True)
class Mark:
    """Source: the job. One line of the marks file: `kind t job attempt node pid`."""

    kind: str  # start, beat, end
    t: float
    job: str
    attempt: int
    node: str
    pid: int

    def line(self) -> str:
        return f"{self.kind} {self.t:.6f} {self.job} {self.attempt} {self.node} {self.pid}\n"

    @classmethod
    def parse(cls, line: str) -> Mark | None:
        parts = line.split()
        if len(parts) != 6:
            return None  # a line cut short when its writer was killed mid-write
        kind, t, job, attempt, node, pid = parts
        return cls(kind, float(t), job, int(attempt), node, int(pid))


@dataclass(frozen=True)
class KeyEvent:
    """Source: etcd. `key` is relative to the prefix (`jobs/<id>`, `election/<hex>`, ...)."""

    revision: int
    type: str  # PUT or DELETE
    key: str
    value: dict[str, Any] | None = None
    create_revision: int = 0

    @classmethod
    def from_raw(
        cls, revision: int, type_: str, key: str, raw: bytes, create_revision: int
    ) -> KeyEvent:
        value = None
        if type_ == "PUT" and raw[:1] == b"{":
            try:
                value = json.loads(raw)
            except ValueError:
                value = None
        return cls(revision, type_, key, value, create_revision)


@dataclass(frozen=True)
class Violation:
    kind: str
    job: str | None
    detail: str
    epoch: int | None = None  # the writer's epoch, for stale master writes


@dataclass
class Run:
    job: str
    attempt: int
    node: str
    pid: int
    start: float
    last: float
    ended: bool = False


@dataclass
class Verdict:
    submitted: int = 0
    acked: int = 0
    completed: int = 0
    runs: int = 0
    reruns: int = 0  # runs beyond the first, per job
    epochs: int = 0
    writes_by_epoch: Counter[int] = field(default_factory=Counter)
    final_states: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    violations: list[Violation] = field(default_factory=list)

    def count(self, kind: str) -> int:
        return sum(1 for v in self.violations if v.kind == kind)

    @property
    def duplicate_epochs(self) -> int:
        """Epochs that had a write accepted while they were not the current master."""
        return len({v.epoch for v in self.violations if v.kind == "stale_master_write"})

    @property
    def ok(self) -> bool:
        return not self.violations


def runs_from_marks(marks: Iterable[Mark]) -> dict[str, list[Run]]:
    """Each run (one process of one attempt) of each job, by job, in order of start."""
    runs: dict[tuple[str, int, str, int], Run] = {}
    for m in marks:
        key = (m.job, m.attempt, m.node, m.pid)
        run = runs.get(key)
        if run is None:
            run = runs[key] = Run(m.job, m.attempt, m.node, m.pid, m.t, m.t)
        run.start = min(run.start, m.t)
        run.last = max(run.last, m.t)
        run.ended = run.ended or m.kind == "end"
    by_job: dict[str, list[Run]] = defaultdict(list)
    for run in runs.values():
        by_job[run.job].append(run)
    for job_runs in by_job.values():
        job_runs.sort(key=lambda r: r.start)
    return by_job


def overlaps(job_runs: list[Run]) -> list[Violation]:
    """Two runs overlap when one starts before the other's last sign of life."""
    found = []
    for i, a in enumerate(job_runs):
        for b in job_runs[i + 1 :]:
            if b.start < a.last:
                found.append(
                    Violation(
                        "overlap",
                        a.job,
                        f"attempt {a.attempt} on {a.node} alive until {a.last:.3f}, "
                        f"attempt {b.attempt} on {b.node} started {b.start:.3f} "
                        f"({min(a.last, b.last) - b.start:.3f}s together)",
                    )
                )
    return found


class _EtcdReplay:
    """Replays etcd's history revision by revision, checking each accepted write against
    the state just before its revision (a txn's compares see exactly that state)."""

    def __init__(self) -> None:
        self.candidates: dict[str, int] = {}  # election key -> create revision
        self.epochs: set[int] = set()  # every master's epoch, in turn
        self.writes_by_epoch: Counter[int] = Counter()  # master writes (puts) accepted
        self.assigned: dict[str, tuple[str, int, str]] = {}  # job -> (node, attempt, key)
        self.state: dict[str, str | None] = {}  # job -> state of its record
        self.finals: Counter[str] = Counter()
        self.final_state: dict[str, str] = {}
        self.reasons: Counter[str] = Counter()  # why jobs ended other than succeeded
        self.committed: set[str] = set()  # jobs etcd has seen (queue or record)
        self.indexed: set[str] = set()  # jobs with a rerun/ key
        self.violations: list[Violation] = []

    def master(self) -> int | None:
        return min(self.candidates.values()) if self.candidates else None

    def replay(self, events: Iterable[KeyEvent]) -> None:
        batch: list[KeyEvent] = []
        for e in events:
            if batch and e.revision != batch[0].revision:
                self._revision(batch)
                batch = []
            batch.append(e)
        if batch:
            self._revision(batch)

    def _revision(self, events: list[KeyEvent]) -> None:
        for e in events:
            self._check(e)
        for e in events:
            self._apply(e)
        self._check_index(events)
        master = self.master()
        if master is not None:
            self.epochs.add(master)

    def _check(self, e: KeyEvent) -> None:
        if e.type != "PUT" or e.value is None:
            return
        kind, _, rest = e.key.partition("/")
        epoch = e.value.get("epoch") or 0
        if kind in ("jobs", "assign", "leader") and epoch:
            self.writes_by_epoch[epoch] += 1
            current = self.master()
            if epoch != current:
                job = e.value.get("id") if kind != "leader" else None
                self.violations.append(
                    Violation(
                        "stale_master_write",
                        job,
                        f"epoch {epoch} wrote {e.key} at revision {e.revision}; "
                        f"the master's epoch then was {current}",
                        epoch,
                    )
                )
        if kind == "results":
            job = rest
            attempt, node = e.value.get("attempt"), e.value.get("node")
            current = self.assigned.get(job)
            if current is None or current[:2] != (node, attempt):
                now = f"attempt {current[1]} on {current[0]}" if current else "no assignment"
                self.violations.append(
                    Violation(
                        "stale_result",
                        job,
                        f"result of attempt {attempt} on {node} accepted at revision "
                        f"{e.revision}; current then: {now}",
                    )
                )

    def _check_index(self, events: list[KeyEvent]) -> None:
        """Each job whose record or index changed at this revision: both agree after it."""
        touched = {rest for e in events for kind, _, rest in [e.key.partition("/")]
                   if kind in ("jobs", "rerun")}  # fmt: skip
        for job in sorted(touched):
            waiting = self.state.get(job) == "queued"
            if (job in self.indexed) != waiting:
                self.violations.append(
                    Violation(
                        "rerun_index",
                        job,
                        f"at revision {events[0].revision} the record says "
                        f"{self.state.get(job)} and rerun/{job} is "
                        f"{'present' if job in self.indexed else 'absent'}",
                    )
                )

    def _apply(self, e: KeyEvent) -> None:
        kind, _, rest = e.key.partition("/")
        if kind == "rerun":
            if e.type == "PUT":
                self.indexed.add(rest)
            else:
                self.indexed.discard(rest)
        elif kind == "election":
            if e.type == "PUT":
                self.candidates[e.key] = e.create_revision
            else:
                self.candidates.pop(e.key, None)
        elif kind == "assign":
            node, _, job = rest.partition("/")
            if e.type == "PUT" and e.value is not None:
                self.assigned[job] = (node, int(e.value.get("attempt", 0)), e.key)
                self.committed.add(job)
            elif e.type == "DELETE" and self.assigned.get(job, ("", 0, ""))[2] == e.key:
                del self.assigned[job]
        elif kind == "queue":
            if e.type == "PUT":
                self.committed.add(rest)
        elif kind == "jobs":
            job = rest
            if e.type == "DELETE":
                self.state[job] = None  # retention: the job had ended
                return
            if e.value is None:
                return
            self.committed.add(job)
            state = e.value.get("state")
            before = self.state.get(job)
            if state in FINAL_STATES and before not in FINAL_STATES:
                self.finals[job] += 1
                self.final_state[job] = state
                if state != "succeeded":
                    self.reasons[f"{state}: {e.value.get('reason')}"] += 1
            self.state[job] = state


def check(
    submissions: Iterable[Submission], marks: Iterable[Mark], events: Iterable[KeyEvent]
) -> Verdict:
    subs = {s.job: s for s in submissions}
    by_job = runs_from_marks(marks)
    replay = _EtcdReplay()
    replay.replay(events)

    verdict = Verdict(
        submitted=len(subs),
        epochs=len(replay.epochs),
        writes_by_epoch=replay.writes_by_epoch,
        reasons=replay.reasons,
    )
    verdict.violations.extend(replay.violations)
    verdict.acked = sum(1 for s in subs.values() if s.acked)
    for job_runs in by_job.values():
        verdict.runs += len(job_runs)
        verdict.reruns += len(job_runs) - 1
        verdict.violations.extend(overlaps(job_runs))
    for job in sorted(subs.keys() | replay.committed | by_job.keys()):
        finals = replay.finals[job]
        if finals:
            verdict.completed += 1
            verdict.final_states[replay.final_state[job]] += 1
        if finals > 1:
            verdict.violations.append(
                Violation("duplicate_final", job, f"reached a final state {finals} times")
            )
        sub = subs.get(job)
        if sub is not None and sub.acked:
            if finals == 0:
                state = replay.state.get(job)
                verdict.violations.append(
                    Violation("lost", job, f"acknowledged, never final (last state: {state})")
                )
        elif finals == 0 and by_job.get(job):
            verdict.violations.append(
                Violation(
                    "unacked_half_done",
                    job,
                    f"never acknowledged, ran {len(by_job[job])} time(s), never final",
                )
            )
    return verdict


def job_story(job: str, events: Iterable[KeyEvent], marks: Iterable[Mark]) -> list[str]:
    """Everything recorded about one job, in order: its keys' changes, then its runs."""
    lines = []
    for e in events:
        rest = e.key.partition("/")[2]
        if rest != job and not rest.endswith(f"/{job}"):
            continue
        v = e.value or {}
        detail = " ".join(
            f"{k}={v[k]}" for k in ("state", "attempt", "node", "epoch", "reason") if k in v
        )
        lines.append(f"rev {e.revision} {e.type} {e.key} {detail}".rstrip())
    for run in runs_from_marks(m for m in marks if m.job == job).get(job, []):
        end = "ended" if run.ended else "last seen"
        lines.append(
            f"run attempt {run.attempt} on {run.node} pid {run.pid}: "
            f"start {run.start:.3f}, {end} {run.last:.3f}"
        )
    return lines
