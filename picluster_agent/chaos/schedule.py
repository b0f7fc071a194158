"""Random faults from a seed, and the run that injects them while jobs stream in.

The plan is a pure function of (seed, duration, nodes): the same seed gives the same faults
at the same times on the same nodes (or roles: "the etcd leader", "the master", resolved
when the fault starts) with the same durations, and the same jobs. One fault at a time,
each healed before the next: etcd keeps its quorum throughout, so every accepted job must
complete, and a violation can be pinned on the fault that was active.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..client import Client
from ..errors import NotFound
from .cluster import NetCluster, Node
from .history import Verdict, check, job_story
from .recorder import (
    Submitter,
    job_command,
    read_history,
    read_marks,
    ride_out,
    wait_final,
)

FAULT_KINDS = (
    "agent_kill",  # kill -9 of an agent, started again after the fault's duration
    "agent_pause",  # SIGSTOP of an agent, SIGCONT after the duration
    "leader_kill",  # kill -9 of the etcd raft leader (quorum intact)
    "member_kill",  # kill -9 of an etcd follower
    "member_pause",  # SIGSTOP of an etcd member (leader or not)
    "member_restart",  # clean restart of an etcd member (SIGTERM, start)
    "isolate",  # a node cut off from everything
    "asymmetric",  # a node's packets reach etcd, the answers are dropped
    "master_cut",  # the master cut off from the etcd majority, still reaching workers
    "blackhole",  # one etcd member blackholed (DROP, no RST)
    "clock_step",  # an agent's wall clock stepped forwards or backwards
)


@dataclass(frozen=True)
class Fault:
    at: float  # seconds after the start
    kind: str
    target: str  # a node name, or "leader" / "master" (resolved when injected)
    duration: float
    offset: float = 0.0  # clock_step: seconds added to the node's wall clock

    def describe(self) -> str:
        extra = f" {self.offset:+.0f}s" if self.kind == "clock_step" else ""
        return f"t={self.at:6.1f}s {self.kind:<14} {self.target:<7} {self.duration:4.1f}s{extra}"


@dataclass(frozen=True)
class JobPlan:
    at: float
    seconds: float


# Faults that matter only when they outlast a lease (a shorter one must merely be ridden out).
LEASE_KINDS = frozenset({"agent_pause", "isolate", "asymmetric", "master_cut"})


def plan_faults(
    seed: int,
    duration: float,
    nodes: list[str],
    etcd_nodes: list[str],
    every_kind: bool,
    ttl: float,
) -> list[Fault]:
    """Faults from 3 s on, until `duration` (seconds); `every_kind`: each kind once first,
    in an order drawn from the seed, briskly (so that a short run sees every kind)."""
    rng = random.Random(f"faults-{seed}")
    kinds: list[str] = list(FAULT_KINDS) if every_kind else []
    rng.shuffle(kinds)
    faults = []
    t = 3.0
    while True:
        first_round = bool(kinds)
        kind = kinds.pop(0) if kinds else rng.choice(FAULT_KINDS)
        if kind in LEASE_KINDS and (first_round or rng.random() < 0.5):
            hold = ttl + rng.uniform(0.5, 3.0 if first_round else 4.0)  # outlasts a lease
        else:
            hold = rng.uniform(2.0, 5.0) if first_round else rng.uniform(1.0, 9.0)
        hold = round(hold, 1)
        if t + hold > duration:
            break
        offset = 0.0
        if kind in ("agent_kill", "agent_pause", "isolate", "asymmetric"):
            target = rng.choice([*nodes, "master"])
        elif kind == "clock_step":
            target = rng.choice([*nodes, "master"])
            offset = rng.choice((-1, 1)) * rng.choice((30, 120, 600, 3600))
        elif kind in ("member_kill", "member_restart", "blackhole"):
            target = rng.choice(etcd_nodes)
        elif kind == "member_pause":
            target = rng.choice([*etcd_nodes, "leader"])
        elif kind == "leader_kill":
            target = "leader"
        else:  # master_cut
            target = "master"
        faults.append(Fault(round(t, 1), kind, target, hold, offset))
        # Healed, then a breath before the next.
        t += hold + (rng.uniform(1.5, 3.0) if first_round else rng.uniform(2.0, 6.0))
    return faults


def plan_jobs(seed: int, count: int, duration: float, ttl: float) -> list[JobPlan]:
    """`count` jobs spread over `duration`: a third longer than the lease TTL (ttl + 1 to
    ttl + 15 s: they outlive a lost lease), the rest short (0.05 to 1 s)."""
    rng = random.Random(f"jobs-{seed}")
    plans = []
    for i in range(count):
        at = duration * i / count
        if rng.random() < 1 / 3:
            seconds = round(rng.uniform(ttl + 1, ttl + 15), 2)
        else:
            seconds = round(rng.uniform(0.05, 1.0), 2)
        plans.append(JobPlan(at, seconds))
    return plans


@dataclass
class Injected:
    fault: Fault
    node: str
    started: float
    error: str | None = None


class Injector:
    """Applies faults to a NetCluster and heals them."""

    def __init__(self, cluster: NetCluster) -> None:
        self.cluster = cluster

    def resolve(self, fault: Fault) -> Node:
        c = self.cluster
        if fault.target == "leader":
            return c.etcd_leader()
        if fault.target == "master":
            return c.wait_master(timeout=15)
        return c.nodes[fault.target]

    def inject(self, fault: Fault, node: Node) -> Callable[[], None]:
        """Start the fault on `node`; returns what heals it."""
        c = self.cluster
        kind = fault.kind
        if kind == "agent_kill":
            c.kill_agent(node)
            return lambda: c.restart_agent(node)
        if kind == "agent_pause":
            c.pause_agent(node)
            return lambda: c.resume_agent(node)
        if kind in ("leader_kill", "member_kill"):
            c.kill_member(node)
            return lambda: c.start_member(node)
        if kind == "member_pause":
            c.pause_member(node)
            return lambda: c.resume_member(node)
        if kind == "member_restart":
            c.restart_member(node)
            return lambda: None
        if kind == "isolate":
            c.isolate(node)
            return lambda: c.heal_network(node)
        if kind == "asymmetric":
            c.cut_replies(node)
            return lambda: c.heal_network(node)
        if kind == "master_cut":
            changed = c.cut_from_majority(node)
            return lambda: [c.heal_network(n) for n in changed] and None
        if kind == "blackhole":
            c.blackhole_member(node)
            return lambda: c.heal_network(node)
        if kind == "clock_step":
            c.step_clock(node, fault.offset)
            return lambda: c.step_clock(node, 0.0)
        raise ValueError(f"unknown fault kind {kind!r}")

    def run(
        self,
        faults: list[Fault],
        t0: float,
        stop: threading.Event,
        log: Callable[[str], None] = print,
    ) -> list[Injected]:
        done: list[Injected] = []
        for fault in faults:
            if stop.wait(max(0.0, t0 + fault.at - time.monotonic())):
                break
            try:
                node = self.resolve(fault)
            except TimeoutError as e:
                done.append(Injected(fault, "-", time.monotonic() - t0, f"no target: {e}"))
                log(f"{fault.describe()} skipped: no target ({e})")
                continue
            record = Injected(fault, node.name, time.monotonic() - t0)
            done.append(record)
            log(f"{fault.describe()} on {node.name}")
            heal = self.inject(fault, node)
            stop.wait(fault.duration)
            heal()
        return done


@dataclass
class ChaosResult:
    seed: int
    faults: list[Injected]
    verdict: Verdict
    unfinished: int
    seconds: float
    settings: dict[str, object] = field(default_factory=dict)

    def faults_by_kind(self) -> Counter[str]:
        return Counter(i.fault.kind for i in self.faults if i.error is None)

    def table(self) -> str:
        v = self.verdict
        rows = [("faults injected", str(sum(self.faults_by_kind().values())))]
        rows += [(f"  {k}", str(self.faults_by_kind()[k])) for k in FAULT_KINDS]
        rows += [
            ("jobs submitted", str(v.submitted)),
            ("  acknowledged", str(v.acked)),
            ("  completed", str(v.completed)),
            ("  final states", ", ".join(f"{k} {n}" for k, n in sorted(v.final_states.items()))),
            ("runs (re-runs)", f"{v.runs} ({v.reruns})"),
            ("master epochs", str(v.epochs)),
            ("  writes under them", str(sum(v.writes_by_epoch.values()))),
            ("overlaps", str(v.count("overlap"))),
            ("lost", str(v.count("lost"))),
            ("duplicate finals", str(v.count("duplicate_final"))),
            ("stale results", str(v.count("stale_result"))),
            ("stale master writes", str(v.count("stale_master_write"))),
            ("duplicate epochs", str(v.duplicate_epochs)),
            ("unacked, half done", str(v.count("unacked_half_done"))),
        ]
        width = max(len(r[0]) for r in rows)
        return "\n".join(f"{k:<{width}}  {val}" for k, val in rows)


def chaos_run(
    cluster: NetCluster,
    *,
    seed: int,
    jobs: int,
    seconds: float,
    every_kind: bool,
    work_dir: Path,
    drain_stall: float = 120.0,
    log: Callable[[str], None] = print,
) -> ChaosResult:
    """Stream `jobs` jobs over `seconds` while the seed's faults hit `cluster` (started),
    heal everything, wait for the acknowledged jobs, then check the whole history."""
    names = list(cluster.nodes)
    etcd_names = [n.name for n in cluster.members()]
    faults = plan_faults(seed, seconds, names, etcd_names, every_kind, cluster.lease_ttl)
    job_plans = plan_jobs(seed, jobs, seconds, cluster.lease_ttl)
    marks_file = work_dir / "marks"
    client = Client(",".join(cluster.endpoints), prefix=cluster.prefix)
    submitter = Submitter(client)
    stop = threading.Event()
    t0 = time.monotonic()

    def submit_all() -> None:
        for plan in job_plans:
            if stop.wait(max(0.0, t0 + plan.at - time.monotonic())):
                return
            submitter.submit(job_command(marks_file, plan.seconds))

    feeder = threading.Thread(target=submit_all, name="submitter", daemon=True)
    feeder.start()
    injected: list[Injected] = []
    try:
        injected = Injector(cluster).run(faults, t0, stop, log)
        feeder.join(max(0.0, t0 + seconds - time.monotonic()) + 120)
    finally:
        stop.set()
        cluster.heal_all()
    cluster.wait_etcd_healthy(60)
    unfinished = _wait_acked(client, submitter.acked(), drain_stall)
    events = read_history(cluster.client, cluster.prefix)
    marks = read_marks(marks_file)
    verdict = check(submitter.submissions, marks, events)
    client.close()
    if verdict.violations:
        _write_stories(work_dir / "violations.txt", verdict, events, marks)
    return ChaosResult(seed, injected, verdict, unfinished, time.monotonic() - t0)


def _write_stories(path: Path, verdict: Verdict, events: list, marks: list) -> None:
    """Each violation with the story of its job: what to read first after a failed run."""
    with path.open("w") as out:
        for v in verdict.violations:
            out.write(f"{v.kind}: {v.job or ''} {v.detail}\n")
            for line in job_story(v.job, events, marks) if v.job else []:
                out.write(f"    {line}\n")


def _wait_acked(client: Client, ids: list[str], stall: float) -> int:
    """Wait until every acknowledged job is final, for as long as jobs keep finishing (a
    backlog left by the faults can take minutes): give up only after `stall` seconds without
    one job becoming final. Returns how many are not final."""
    known = []
    for job_id in ids:
        with contextlib.suppress(NotFound):  # an acknowledged job etcd lost: the checker says so
            ride_out(lambda job_id=job_id: client.status(job_id))
            known.append(job_id)
    pending = set(known)
    while pending:
        statuses = wait_final(client, sorted(pending), stall)
        done = {job_id for job_id, status in statuses.items() if status.state.final}
        if not done:
            break
        pending -= done
    return len(ids) - len(known) + len(pending)
