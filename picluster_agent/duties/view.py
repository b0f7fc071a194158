"""What the master knows of the cluster between two steps, kept current by watch events.

The scheduler's watches (queue/, assign/, nodes/, drain/, cancel/) deliver their events
here; each scheduling step then acts on what has gathered: submissions not read yet,
assignments that ended, new cancel requests, and the nodes with their capacity.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..coord.registry import NodeInfo, UnreadableRegistration
from ..etcd.adapter import KV, EtcdClient, Event, Watch
from ..etcd.keys import Keys
from ..jobs.placement import Capacity, NodeSlots
from ..jobs.records import JobRecord, UnreadableRecord

log = logging.getLogger(__name__)


class ClusterView:
    def __init__(self, keys: Keys) -> None:
        self.keys = keys
        self.capacity = Capacity()
        self.drained: set[str] = set()
        self.cancels: set[str] = set()
        self.new_cancels: set[str] = set()  # cancel requests the scheduler has not seen
        self.fresh_queue: dict[str, KV] = {}  # submissions (queue keys) not read yet
        self.ended: list[tuple[str, str]] = []  # (node, job id) whose assignment vanished

    def load(self, client: EtcdClient) -> tuple[int, list[KV], set[str], list[KV]]:
        """Nodes, drains and cancels from one read at one revision; returned with that
        revision: the job records, the assignment keys and the queue keys read at it."""
        keys, read = self.keys, client.get_prefix
        nodes, rev = read(keys.nodes_dir)
        drains, _ = read(keys.drain_dir, keys_only=True, revision=rev)
        jobs, _ = read(keys.jobs_dir, revision=rev)
        assigns, _ = read(keys.assign_root, keys_only=True, revision=rev)
        queued, _ = read(keys.queue_dir, revision=rev)
        cancels, _ = read(keys.cancel_dir, keys_only=True, revision=rev)
        self.drained = {n for kv in drains if (n := keys.node_of(keys.drain_dir, kv.key))}
        for kv in nodes:
            self.node_event(kv)
        self.cancels = {j for kv in cancels if (j := keys.job_id_of(keys.cancel_dir, kv.key))}
        self.new_cancels = set(self.cancels)
        return rev, jobs, {kv.key for kv in assigns}, queued

    def watch(
        self, client: EtcdClient, revision: int, deliver: Callable[[str, list[Event]], None]
    ) -> list[Watch]:
        """The master's watches, from just after `revision`; `deliver(kind, events)` runs on
        their threads (the scheduler's thread `apply`s them), ("compacted", []) when one
        lost its place in etcd's history.

        Only the event kinds acted on are sent: the master's own writes (an assignment PUT
        and a queue DELETE per job) would otherwise come back to it, costing etcd CPU. A
        queue key deleted by hand is noticed when its assignment's compare fails."""
        keys = self.keys
        return [
            client.watch(
                prefix,
                lambda events, _rev, kind=kind: deliver(kind, events),
                start_revision=revision + 1,
                name=f"master-{kind}",
                on_compacted=lambda _e: deliver("compacted", []),
                only=only,
            )
            for kind, prefix, only in (
                ("queue", keys.queue_dir, "PUT"),
                ("assign", keys.assign_root, "DELETE"),
                ("nodes", keys.nodes_dir, None),
                ("drain", keys.drain_dir, None),
                ("cancel", keys.cancel_dir, None),
            )
        ]

    def apply(self, kind: str, events: list[Event]) -> None:
        """Events of one watch (`kind`: queue, assign, nodes, drain or cancel).

        Anyone with write access can put any key under the prefix: a key that no picluster
        writer makes (an invalid or nested name) is ignored with one warning, never acted
        on in part.
        """
        keys = self.keys
        for e in events:
            key = e.kv.key
            if kind == "queue":  # PUTs only (see `watch`)
                job_id = keys.job_id_of(keys.queue_dir, key)
                if job_id is None:
                    ignored(key, "not a valid job id")
                else:
                    self.fresh_queue[job_id] = e.kv
            elif kind == "assign" and e.type == "DELETE":
                assignment = keys.assignment_of(key)
                if assignment is not None:  # else never one of ours
                    self.ended.append(assignment)
            elif kind == "nodes":
                self.node_event(e.kv, e.type)
            elif kind == "drain":
                name = keys.node_of(keys.drain_dir, key)
                if name is None:
                    if e.type == "PUT":
                        ignored(key, "not a valid node name")
                    continue
                drained = e.type == "PUT"
                (self.drained.add if drained else self.drained.discard)(name)
                if name in self.capacity.nodes:
                    self.capacity.nodes[name].drained = drained
            elif kind == "cancel":
                job_id = keys.job_id_of(keys.cancel_dir, key)
                if job_id is None:
                    if e.type == "PUT":
                        ignored(key, "not a valid job id")
                elif e.type == "PUT":
                    self.cancels.add(job_id)
                    self.new_cancels.add(job_id)
                else:
                    self.cancels.discard(job_id)

    def node_event(self, kv: KV, kind: str = "PUT") -> None:
        """A registration put or deleted: a node to place work on, gone, or ignored."""
        name = self.keys.node_of(self.keys.nodes_dir, kv.key)
        if name is None:
            if kind == "PUT":
                ignored(kv.key, "not a valid node name")
            return
        if kind == "DELETE":
            gone = self.capacity.nodes.pop(name, None)
            if gone is not None:
                log.info("node %s left (%d job(s) there)", name, len(gone.jobs))
            return
        try:
            info = NodeInfo.from_json(kv.value)
            if info.name != name:
                raise UnreadableRegistration(f"it names node {info.name!r}")
            if kv.lease == 0:
                # Work placed there would never run: only a live agent's lease makes a node.
                raise UnreadableRegistration("no agent's lease holds it")
        except UnreadableRegistration as e:
            ignored(kv.key, f"not a registration: {e}")
            self.capacity.nodes.pop(name, None)  # whatever it held before is gone
            return
        node = NodeSlots(
            name=info.name,
            lease=kv.lease,
            create_revision=kv.create_revision,
            slots=info.slots,
            labels=dict(info.labels),
            memory_mb=info.memory_mb,
            prefetch=info.prefetch,
            drained=info.name in self.drained,
        )
        self.capacity.node_seen(node)


def ignored(key: str, why: str) -> None:
    """One warning for a key that no picluster writer makes: it is left alone."""
    log.warning("ignored %r: %s", key, why)


def record_or_none(kv: KV, job_id: str) -> JobRecord | None:
    """The job record at `kv`, or None (and one warning) for one that picluster did not
    write: it is left alone, never acted on."""
    try:
        return JobRecord.from_json(kv.value, job_id)
    except UnreadableRecord as e:
        ignored(kv.key, f"unreadable job record: {e}")
        return None
