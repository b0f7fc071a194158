"""Node registration: `<prefix>/nodes/<node>` under the node's own lease."""

from __future__ import annotations

import json
import logging
import math
import threading
from dataclasses import dataclass, field, fields
from typing import Any

from .. import __version__, defaults
from ..errors import ConfigError, InvalidName, PiclusterError
from ..etcd.adapter import (
    KV,
    EtcdClient,
    Event,
    Watch,
    cmp_absent,
    cmp_modified_at,
    op_get,
    op_put,
)
from ..etcd.keys import Keys, validate_node_name
from .election import current_leader
from .session import Session

log = logging.getLogger(__name__)


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
    api: str = ""  # the agent's HTTPS API (https://host:port), "" when it serves none

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
    if not all(isinstance(v, str) for v in (info.address, info.version, info.lease, info.api)):
        raise UnreadableRegistration("address, version, lease and api must be text")
    if not isinstance(info.master_eligible, bool):
        raise UnreadableRegistration("master_eligible is not true or false")
    started = info.started_at
    if (
        isinstance(started, bool)
        or not isinstance(started, int | float)
        or not math.isfinite(started)
    ):
        raise UnreadableRegistration("started_at is not a time")


def register(session: Session, keys: Keys, info: NodeInfo) -> int:
    """Claim the node's name for this lease; refuse if another live agent holds it. Returns
    the revision at which the registration is ours.

    Put-if-absent closes the race of two agents started with the same name; a key already
    under our own lease (a retried request) counts as ours. A key under no lease is no
    agent's (a plain `etcdctl put`): it is taken over, if nobody wrote it since we read it.
    """
    key = keys.node(info.name)
    res = session.client.txn(
        [cmp_absent(key)],
        [op_put(key, info.to_json(), lease=session.lease_id)],
        [op_get(key)],
    )
    if res.succeeded:
        return res.revision
    holder = res.ranges[0][0] if res.ranges and res.ranges[0] else None
    if holder is not None and holder.lease == session.lease_id:
        return holder.mod_revision
    if holder is not None and holder.lease == 0:
        taken = session.client.txn(
            [cmp_modified_at(key, holder.mod_revision)],
            [op_put(key, info.to_json(), lease=session.lease_id)],
        )
        if taken.succeeded:
            log.warning("registration %s held no agent's lease: taken over", key)
            return taken.revision
    raise ConfigError(
        f"node name {info.name!r} is already registered by a live agent (lease {holder.lease:x})"
        if holder
        else f"node name {info.name!r} is taken"
    )


class RegistrationKeeper:
    """Puts the node's registration back whenever someone else deletes or overwrites it (a
    plain `etcdctl`): without it the master gives the node no work while it runs.

    Watches the node's key from `revision` (where `register` left it). `stop()` it before
    the lease is revoked, whose deletion of the key is not to be undone.
    """

    def __init__(self, session: Session, keys: Keys, info: NodeInfo, revision: int) -> None:
        self.session = session
        self.key = keys.node(info.name)
        self.value = info.to_json().encode()
        self._stopped = threading.Event()
        self._watch = self._watch_from(revision)

    def stop(self) -> None:
        self._stopped.set()
        self._watch.stop()

    def _watch_from(self, revision: int) -> Watch:
        return self.session.client.watch(
            self.key,
            self._on_events,
            start_revision=revision + 1,
            is_prefix=False,
            name="registration-watch",
            on_compacted=lambda _e: self._resume(),
        )

    def _on_events(self, events: list[Event], _revision: int) -> None:
        for e in events:
            self._check(e.kv if e.type == "PUT" else None)

    def _check(self, kv: KV | None) -> None:
        """`kv`: the key as it now is (None: deleted). An error here makes the watch
        deliver the event again: retried with backoff."""
        if self._stopped.is_set() or self.session.done.is_set():
            return  # the lease is gone or going: so must the registration
        lease = self.session.lease_id
        if kv is not None and kv.lease == lease:
            return  # our own (`update` may have changed it)
        if kv is not None and kv.lease != 0:
            log.error("registration %s now held by lease %x: left to it", self.key, kv.lease)
            return
        # Only if nothing was written since (a newer event comes next otherwise).
        guard = cmp_absent(self.key) if kv is None else cmp_modified_at(self.key, kv.mod_revision)
        res = self.session.client.txn([guard], [op_put(self.key, self.value, lease=lease)])
        if res.succeeded:
            how = "deleted" if kv is None else "overwritten"
            log.warning("registration %s was %s by someone else: put back", self.key, how)

    def _resume(self) -> None:
        """The watch fell behind compaction: look at the key now, then watch from there."""
        backoff = defaults.RETRY_BACKOFF_MIN
        while not (self._stopped.is_set() or self.session.done.is_set()):
            try:
                now = self.session.client.txn([], [op_get(self.key)])
                self._check(now.ranges[0][0] if now.ranges[0] else None)
                self._watch = self._watch_from(now.revision)
                return
            except PiclusterError as e:
                log.warning("registration watch: %s; again in %.1fs", e, backoff)
                self._stopped.wait(backoff)
                backoff = min(backoff * 2, defaults.RETRY_BACKOFF_MAX)


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
