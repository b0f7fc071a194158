"""Leader election with the key layout of etcd's `concurrency.Election`.

Each candidate puts `<prefix>/election/<lease-hex>` = node name under its session lease.
The key with the lowest create revision is the master. A candidate waits only for the key
created just before its own (its predecessor) to vanish, so a crash wakes one agent, not all.
`etcdctl elect --listen <prefix>/election` therefore shows the same master we do.

Leadership is a comparison: `guard()` returns the compare that every master write carries
(our key still exists with the create revision we campaigned with). A txn whose guard fails
means we are not master any more: raise `NotLeader` and step down; never retry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from .. import defaults
from ..errors import NotLeader, PiclusterError, SessionLost, Unavailable
from ..etcd.adapter import (
    KV,
    Compare,
    EtcdClient,
    Event,
    Op,
    TxnResult,
    cmp_absent,
    cmp_created_at,
    landed,
    op_delete,
    op_get,
    op_put,
)
from ..etcd.keys import Keys
from ..stopping import AnyEvent, Flag, StopSignal
from .session import Session

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Leader:
    name: str
    key: str
    create_revision: int
    lease: int


def current_leader(client: EtcdClient, keys: Keys) -> Leader | None:
    """The candidate with the lowest create revision, if any."""
    kvs, _ = client.get_prefix(keys.election_dir, sort_target="CREATE", sort_order="ASCEND")
    kv = next((kv for kv in kvs if is_candidate(kv, keys)), None)
    if kv is None:
        return None
    return Leader(kv.value.decode(errors="replace"), kv.key, kv.create_revision, kv.lease)


def is_candidate(kv: KV, keys: Keys) -> bool:
    """A real candidate's key is named after the lease it lives under. Anything else under
    election/ (a plain `etcdctl put`, without a lease) would never go away: counted as a
    candidate, it would stand before every new one and no master would ever be elected."""
    return kv.lease != 0 and kv.key == keys.election(kv.lease)


def retry_transient(fn: Callable[[], T], session: Session, stop: StopSignal) -> T:
    """Call `fn` until it gets through, while the session lives and nobody asked to stop.

    Only for idempotent steps (reads, put-if-absent with read-back): an indeterminate
    outcome is then resolved by simply asking again.
    """
    backoff = defaults.RETRY_BACKOFF_MIN
    while True:
        try:
            return fn()
        except Unavailable as e:
            if stop.is_set() or session.done.is_set():
                raise
            log.warning("etcd unavailable (%s); retrying in %.1fs", e, backoff)
            stop.wait(backoff)
            backoff = min(backoff * 2, defaults.RETRY_BACKOFF_MAX)


class Election:
    def __init__(self, session: Session, keys: Keys, name: str) -> None:
        self.session = session
        self.client = session.client
        self.keys = keys
        self.name = name
        self.key = keys.election(session.lease_id)
        self.create_revision = 0

    def campaign(self, stop: StopSignal) -> bool:
        """Block until we are master (True) or `stop`/session loss (False)."""
        retry_transient(self._put_candidate, self.session, stop)
        while not stop.is_set():
            self.session.check()
            predecessor = retry_transient(self._predecessor, self.session, stop)
            if predecessor is None:
                log.info("elected master (key %s, revision %d)", self.key, self.create_revision)
                return True
            log.info("candidate behind %s (%s)", predecessor.value.decode(), predecessor.key)
            self._wait_deleted(predecessor, stop)
        return False

    def _put_candidate(self) -> None:
        # Put-if-absent, reading our key back otherwise: a retried campaign (after an
        # indeterminate reply) finds the key it already made instead of making a second.
        res = self.client.txn(
            [cmp_absent(self.key)],
            [op_put(self.key, self.name, lease=self.session.lease_id)],
            [op_get(self.key)],
        )
        if res.succeeded:
            self.create_revision = res.revision
            return
        mine = res.ranges[0][0]
        if not landed(mine, self.name):  # the key is named after our own lease
            raise PiclusterError(f"election key {self.key} holds {mine.value!r}, not our name")
        self.create_revision = mine.create_revision

    def _predecessor(self) -> KV | None:
        kvs, _ = self.client.get_prefix(
            self.keys.election_dir,
            sort_target="CREATE",
            sort_order="DESCEND",
            max_create_revision=self.create_revision - 1,
        )
        return next((kv for kv in kvs if is_candidate(kv, self.keys)), None)

    def _wait_deleted(self, predecessor: KV, stop: StopSignal) -> None:
        gone = Flag()

        def on_events(events: list[Event], _revision: int) -> None:
            if any(e.type == "DELETE" for e in events):
                gone.set()

        watch = self.client.watch(
            predecessor.key,
            on_events,
            start_revision=predecessor.mod_revision + 1,
            is_prefix=False,
            name="election-watch",
            # History gone: just look at the predecessor again (the loop re-checks it).
            on_compacted=lambda _e: gone.set(),
        )
        try:
            AnyEvent(gone, stop, self.session.done).wait()
        finally:
            watch.stop()

    # ------------------------------------------------------------ while master

    def guard(self) -> Compare:
        """The compare every master write must carry: closes the deposed-master race."""
        return cmp_created_at(self.key, self.create_revision)

    def fenced_txn(
        self, success: list[Op], extra_compare: list[Compare] | None = None
    ) -> TxnResult:
        """Run `success` only if we are still master; raise NotLeader otherwise.

        With `extra_compare`, a failed txn is ambiguous (lost leadership or a stale read),
        so the guard is re-checked on its own to tell the two apart: callers get NotLeader
        or a result with succeeded=False.
        """
        if self.session.done.is_set():
            raise SessionLost("session lost")
        res = self.client.txn([self.guard(), *(extra_compare or [])], success)
        if res.succeeded:
            return res
        if extra_compare and self.is_leader():
            return res
        raise NotLeader(f"{self.name}: election key {self.key} no longer ours")

    def is_leader(self) -> bool:
        res = self.client.txn([self.guard()], [], [])
        return res.succeeded

    def resign(self) -> None:
        """Give up leadership at once (delete our key if it is still ours)."""
        try:
            self.client.txn([self.guard()], [op_delete(self.key)])
        except Exception as e:
            log.warning("resign failed: %s", e)
