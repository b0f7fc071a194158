"""Where a job may run: node capacity, the fit rule, and why a queued job waits.

The master's scheduler places jobs by `pick`; `picluster status` explains a wait by
`why_waiting`, which applies the same rule (`runs_there`) to the registered nodes, so the
explanation is the scheduler's own.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from .arrays import capped_parent
from .spec import JobSpec, matches


class NodeShape(Protocol):
    """What the fit rule needs of a node (a registration, or the master's `NodeSlots`)."""

    @property
    def name(self) -> str: ...
    @property
    def slots(self) -> int: ...
    @property
    def labels(self) -> Mapping[str, str]: ...
    @property
    def memory_mb(self) -> int | None: ...


def big_enough(spec: JobSpec, slots: int) -> bool:
    return spec.slots <= slots


def memory_enough(spec: JobSpec, memory_mb: int | None) -> bool:
    """A node that does not say how much memory it has takes any job."""
    return not spec.memory_mb or memory_mb is None or spec.memory_mb <= memory_mb


def runs_there(spec: JobSpec, node: NodeShape) -> bool:
    """The fit rule with the node empty: labels, slots and memory."""
    return (
        matches(spec.constraints, node.labels)
        and big_enough(spec, node.slots)
        and memory_enough(spec, node.memory_mb)
    )


@dataclass
class NodeSlots:
    """A node as the master sees it: its registration and what it has been given."""

    name: str
    lease: int
    create_revision: int
    slots: int
    labels: dict[str, str]
    memory_mb: int | None = None
    prefetch: int = 0
    drained: bool = False
    used_slots: int = 0
    used_memory: int = 0
    jobs: set[str] = field(default_factory=set)

    @property
    def capacity(self) -> int:
        """Slots the master may fill here: the node's own, plus its prefetch allowance."""
        return self.slots + self.prefetch

    @property
    def free(self) -> int:
        return self.capacity - self.used_slots

    def fits(self, spec: JobSpec) -> bool:
        """The fit rule now: `runs_there`, undrained, and room left for it."""
        if self.drained or not runs_there(spec, self):
            return False
        if self.used_slots + spec.slots > self.capacity:
            return False
        if spec.memory_mb and self.memory_mb is not None:
            return self.used_memory + spec.memory_mb <= self.memory_mb
        return True

    def take(self, spec: JobSpec) -> None:
        self.used_slots += spec.slots
        self.used_memory += spec.memory_mb or 0

    def give_back(self, spec: JobSpec) -> None:
        self.used_slots -= spec.slots
        self.used_memory -= spec.memory_mb or 0


def pick(spec: JobSpec, candidates: Iterable[NodeSlots]) -> NodeSlots | None:
    """The node a job goes to: of those it fits, the one with the most free slots."""
    best: NodeSlots | None = None
    for n in candidates:
        if n.fits(spec) and (best is None or n.free > best.free):
            best = n
    return best


def why_waiting(
    spec: JobSpec,
    *,
    not_before: float | None,
    reason: str | None,
    nodes: list[NodeShape],
    drained: set[str],
    now: float | None = None,
) -> str:
    """One line on why a queued job has not started, by the scheduler's own rule."""
    now = time.time() if now is None else now
    not_before = not_before or spec.not_before
    if not_before and not_before > now:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(not_before))
        return f"not before {when}"
    if not nodes:
        return "no node is registered"
    matching = [n for n in nodes if matches(spec.constraints, n.labels)]
    if not matching:
        wanted = ",".join(f"{k}={v}" for k, v in sorted(spec.constraints.items()))
        return f"no registered node has the labels {wanted}"
    big = [n for n in matching if big_enough(spec, n.slots)]
    if not big:
        largest = max(n.slots for n in matching)
        return f"needs {spec.slots} slots; the largest matching node has {largest}"
    big = [n for n in big if memory_enough(spec, n.memory_mb)]
    if not big:
        return f"needs {spec.memory_mb} MiB of memory; no matching node has that much"
    if all(n.name in drained for n in big):
        return "every node that could run it is drained"
    if reason:
        return reason
    return "waiting for a free slot"


@dataclass
class Placed:
    id: str
    node: str
    attempt: int
    slots: int
    memory: int
    array: str | None = None  # the capped array it belongs to (`arrays.ArrayCaps`)


class Capacity:
    """The master's view of the nodes and of what it has placed on each."""

    def __init__(self) -> None:
        self.nodes: dict[str, NodeSlots] = {}
        self.running: dict[str, Placed] = {}

    def node_seen(self, node: NodeSlots) -> None:
        """A registration (new or rewritten); the same incarnation keeps what it runs."""
        old = self.nodes.get(node.name)
        if old is not None and old.create_revision == node.create_revision:
            node.used_slots, node.used_memory, node.jobs = old.used_slots, old.used_memory, old.jobs
        self.nodes[node.name] = node

    def candidates(self) -> list[NodeSlots]:
        """Nodes that could take one more job of one slot."""
        return [n for n in self.nodes.values() if not n.drained and n.used_slots < n.capacity]

    def place(self, job_id: str, node_name: str, attempt: int, spec: JobSpec) -> None:
        self.running[job_id] = Placed(
            job_id, node_name, attempt, spec.slots, spec.memory_mb or 0, capped_parent(spec)
        )
        node = self.nodes.get(node_name)
        if node is not None:
            node.take(spec)
            node.jobs.add(job_id)

    def unplace(self, job_id: str, node_name: str) -> None:
        placed = self.running.get(job_id)
        if placed is None or placed.node != node_name:
            return
        del self.running[job_id]
        node = self.nodes.get(node_name)
        if node is not None and job_id in node.jobs:
            node.jobs.discard(job_id)
            node.used_slots -= placed.slots
            node.used_memory -= placed.memory
