"""Node registration: `<prefix>/nodes/<node>` under the node's own lease."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields

from .. import __version__
from ..errors import ConfigError
from ..etcd.adapter import EtcdClient, cmp_absent, op_get, op_put
from ..etcd.keys import Keys
from .election import current_leader
from .session import Session


@dataclass(frozen=True)
class NodeInfo:
    name: str
    slots: int
    labels: dict[str, str] = field(default_factory=dict)
    address: str = ""
    version: str = __version__
    master_eligible: bool = True
    started_at: float = 0.0
    memory_mb: int | None = None  # total RAM: jobs with memory_mb are placed within it
    prefetch: int = 0  # extra assignments the master may queue here beyond `slots`
    lease: str = ""

    def to_json(self) -> str:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: bytes) -> NodeInfo:
        data = json.loads(raw)
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


def register(session: Session, keys: Keys, info: NodeInfo) -> None:
    """Claim the node's name for this lease; refuse if another live agent holds it.

    Put-if-absent closes the race of two agents started with the same name; a key already
    under our own lease (a retried request) counts as ours.
    """
    key = keys.node(info.name)
    res = session.client.txn(
        [cmp_absent(key)],
        [op_put(key, info.to_json(), lease=session.lease_id)],
        [op_get(key)],
    )
    if res.succeeded:
        return
    holder = res.ranges[0][0] if res.ranges and res.ranges[0] else None
    if holder is not None and holder.lease == session.lease_id:
        return
    raise ConfigError(
        f"node name {info.name!r} is already registered by a live agent (lease {holder.lease:x})"
        if holder
        else f"node name {info.name!r} is taken"
    )


def update(session: Session, keys: Keys, info: NodeInfo) -> None:
    session.client.put(keys.node(info.name), info.to_json(), lease=session.lease_id)


@dataclass(frozen=True)
class NodeView:
    """What `picluster nodes` shows: a registration plus its role and drain flag."""

    info: NodeInfo
    role: str
    drained: bool


def list_nodes(client: EtcdClient, keys: Keys) -> list[NodeView]:
    kvs, _ = client.get_prefix(keys.nodes_dir)
    drained_kvs, _ = client.get_prefix(keys.drain_dir, keys_only=True)
    drained = {Keys.last_segment(kv.key) for kv in drained_kvs}
    leader = current_leader(client, keys)
    views = []
    for kv in kvs:
        info = NodeInfo.from_json(kv.value)
        is_master = leader is not None and leader.name == info.name and leader.lease == kv.lease
        views.append(
            NodeView(
                info=info,
                role="master" if is_master else "worker",
                drained=info.name in drained,
            )
        )
    return views
