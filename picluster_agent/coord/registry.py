"""Node registration: `<prefix>/nodes/<node>` under the node's own lease."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from typing import Any

from .. import __version__
from ..errors import ConfigError, InvalidName
from ..etcd.adapter import EtcdClient, cmp_absent, op_get, op_put
from ..etcd.keys import Keys, validate_node_name
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
        """Read a registration; UnreadableRegistration for anything an agent would not write
        (anyone with write access can put a key under nodes/: it must not crash the master)."""
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError) as e:
            raise UnreadableRegistration(f"not JSON: {e}") from None
        if not isinstance(data, dict):
            raise UnreadableRegistration("not a JSON object")
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        try:
            info = cls(**known)
        except TypeError as e:
            raise UnreadableRegistration(str(e)) from None
        _check_registration(info)
        return info


class UnreadableRegistration(ValueError):
    """A value under nodes/ that no agent wrote."""


def _whole(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _check_registration(info: NodeInfo) -> None:
    try:
        validate_node_name(info.name)
        # Labels are matched by equality against a job's constraints: text to text.
        if not isinstance(info.labels, dict):
            raise UnreadableRegistration("labels is not an object")
        for key, value in info.labels.items():
            validate_node_name(key)
            if not isinstance(value, str):
                raise UnreadableRegistration(f"label {key!r} is not text")
    except InvalidName as e:
        raise UnreadableRegistration(str(e)) from None
    if not _whole(info.slots, 1):
        raise UnreadableRegistration("slots is not a whole number >= 1")
    if not _whole(info.prefetch, 0):
        raise UnreadableRegistration("prefetch is not a whole number >= 0")
    if info.memory_mb is not None and not _whole(info.memory_mb, 1):
        raise UnreadableRegistration("memory_mb is not a whole number >= 1")
    if not all(isinstance(v, str) for v in (info.address, info.version, info.lease)):
        raise UnreadableRegistration("address, version and lease must be text")
    if not isinstance(info.master_eligible, bool):
        raise UnreadableRegistration("master_eligible is not true or false")
    started = info.started_at
    if (
        isinstance(started, bool)
        or not isinstance(started, int | float)
        or not math.isfinite(started)
    ):
        raise UnreadableRegistration("started_at is not a time")


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
        try:
            info = NodeInfo.from_json(kv.value)
        except UnreadableRegistration:
            continue  # not an agent's: the master ignores it too
        if kv.lease == 0 or keys.node_of(keys.nodes_dir, kv.key) != info.name:
            continue
        is_master = leader is not None and leader.name == info.name and leader.lease == kv.lease
        views.append(
            NodeView(
                info=info,
                role="master" if is_master else "worker",
                drained=info.name in drained,
            )
        )
    return views
