"""What the master knows of the cluster between two steps, kept current by watch events.

The scheduler's watches (queue/, assign/, nodes/, drain/, cancel/) deliver their events
here; each scheduling step then acts on what has gathered: submissions not read yet,
assignments that ended, new cancel requests, and the nodes with their capacity.
"""

from __future__ import annotations

import logging

from ..coord.registry import NodeInfo
from ..etcd.adapter import KV, Event
from ..etcd.keys import Keys
from ..jobs.placement import Capacity, NodeSlots

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

    def apply(self, kind: str, events: list[Event]) -> None:
        """Events of one watch (`kind`: queue, assign, nodes, drain or cancel)."""
        for e in events:
            name = Keys.last_segment(e.kv.key)
            if kind == "queue":  # PUTs only (Scheduler._run_from_snapshot)
                self.fresh_queue[name] = e.kv
            elif kind == "assign" and e.type == "DELETE":
                node = e.kv.key[len(self.keys.assign_root) :].split("/", 1)[0]
                self.ended.append((node, name))
            elif kind == "nodes":
                if e.type == "PUT":
                    self.node_put(e.kv)
                else:
                    gone = self.capacity.nodes.pop(name, None)
                    if gone is not None:
                        log.info("node %s left (%d job(s) there)", name, len(gone.jobs))
            elif kind == "drain":
                drained = e.type == "PUT"
                (self.drained.add if drained else self.drained.discard)(name)
                if name in self.capacity.nodes:
                    self.capacity.nodes[name].drained = drained
            elif kind == "cancel":
                if e.type == "PUT":
                    self.cancels.add(name)
                    self.new_cancels.add(name)
                else:
                    self.cancels.discard(name)

    def node_put(self, kv: KV) -> None:
        try:
            info = NodeInfo.from_json(kv.value)
        except (ValueError, TypeError) as e:
            log.error("unreadable registration %s: %s", kv.key, e)
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
