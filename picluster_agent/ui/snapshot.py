"""What the status page shows, read from etcd: a handful of bounded reads per refresh.

The page must stay cheap on a cluster that keeps 10,000 finished jobs, so nothing here reads
a whole directory of job records: the queue is counted and its oldest entries read, the
active jobs are found through the workers' inboxes (`assign/`, at most the cluster's slots
plus prefetch) and the re-run index (`rerun/`: jobs between two attempts), and "recent"
means the job records modified last (`RECENT_JOBS` of them, newest first). The masters
before the current one come from etcd's own history of the `leader` key, which each master
rewrites, fenced, while it leads (see `LeaderHistory`).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field

from ..errors import Compacted, PiclusterError
from ..etcd.adapter import KV, EtcdClient
from ..etcd.keys import Keys

QUEUE_SHOWN = 50  # oldest queue entries read (the rest is only counted)
RECENT_JOBS = 500  # job records read, the most recently modified first
MASTERS_SHOWN = 6  # the current master and up to five before it


@dataclass(frozen=True)
class Snapshot:
    """Raw reads for one refresh of the page; `state.build_state` makes sense of them."""

    now: float
    candidates: list[KV]  # election/: the lowest create revision is the master
    leader: KV | None  # the master's own record
    earlier_leaders: list[bytes]  # leader records of earlier masters, newest first
    nodes: list[KV]
    drained: set[str]
    leases: dict[int, tuple[int, int]]  # lease id -> (seconds left, granted TTL)
    assignments: list[KV]
    queue: list[KV]
    queue_total: int
    jobs: list[KV]  # records: the recently modified ones and every active one
    revision: int = 0
    errors: list[str] = field(default_factory=list)  # reads that failed (shown on the page)


class LeaderHistory:
    """Earlier masters, from etcd's history of the `leader` key.

    Every record a master writes carries its epoch (its election key's create revision), and
    epochs rise from one master to the next (the lowest candidate wins, and a new candidate
    comes after every existing one). So the first revision at which the key holds epoch E is
    found by bisection over the revisions since E, and the key just before that revision is
    the last record of the master before; from there the walk goes on. Past revisions never
    change: each master's step is searched once and kept. Where etcd has compacted the
    history away (the etcd role keeps an hour) the walk ends.
    """

    def __init__(self, client: EtcdClient, keys: Keys) -> None:
        self._client = client
        self._keys = keys
        # epoch -> the master before's last record and its revision (None: not known)
        self._before: dict[int, tuple[bytes, int] | None] = {}
        self._lock = threading.Lock()

    def before(self, leader: KV | None, count: int) -> list[bytes]:
        """Up to `count` records of the masters before the one `leader` names, newest first."""
        out: list[bytes] = []
        if leader is None:
            return out
        epoch, revision = _epoch_of(leader.value), leader.mod_revision
        while epoch > 0 and len(out) < count:
            try:
                found = self._last_before(epoch, revision)
            except PiclusterError:  # etcd unavailable: ask again at the next refresh
                break
            if found is None:
                break
            record, revision = found
            older = _epoch_of(record)
            if not 0 < older < epoch:
                break
            out.append(record)
            epoch = older
        return out

    def _last_before(self, epoch: int, revision: int) -> tuple[bytes, int] | None:
        """The last record written before the first of `epoch`, which `revision` holds."""
        with self._lock:
            if epoch in self._before:
                return self._before[epoch]
        low, high = epoch, revision  # the key holds `epoch` at `high`, not before `low`
        while low < high:
            middle = (low + high) // 2
            if self._epoch_at(middle) >= epoch:
                high = middle
            else:
                low = middle + 1
        try:
            kv = self._client.get(self._keys.leader, revision=low - 1)
            found = (kv.value, kv.mod_revision) if kv is not None else None
        except Compacted:
            found = None
        with self._lock:
            self._before[epoch] = found
        return found

    def _epoch_at(self, revision: int) -> int:
        try:
            kv = self._client.get(self._keys.leader, revision=revision)
        except Compacted:
            return -1  # before what etcd keeps: earlier than anything the walk can use
        return _epoch_of(kv.value) if kv is not None else 0


def _epoch_of(record: bytes | None) -> int:
    if record is None:
        return 0
    try:
        epoch = json.loads(record).get("epoch")
    except (ValueError, AttributeError):
        return 0
    return epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else 0


def read_snapshot(client: EtcdClient, keys: Keys, history: LeaderHistory) -> Snapshot:
    """Read what the page shows. Blocking (gRPC): call it from a worker thread."""
    now = time.time()
    candidates, revision = client.get_prefix(keys.election_dir)
    leader = client.get(keys.leader)
    nodes, _ = client.get_prefix(keys.nodes_dir)
    drained_kvs, _ = client.get_prefix(keys.drain_dir, keys_only=True)
    assignments, _ = client.get_prefix(keys.assign_root)
    queue, _ = client.get_prefix(keys.queue_dir, limit=QUEUE_SHOWN)
    queue_total = client.count_prefix(keys.queue_dir)
    recent, _ = client.get_prefix(
        keys.jobs_dir, limit=RECENT_JOBS, sort_target="MOD", sort_order="DESCEND"
    )
    reruns, _ = client.get_prefix(keys.rerun_dir, keys_only=True)
    jobs = _with_active(client, keys, recent, assignments, reruns)
    errors: list[str] = []
    leases: dict[int, tuple[int, int]] = {}
    for kv in nodes:
        if kv.lease and kv.lease not in leases:
            try:
                leases[kv.lease] = client.lease_ttls(kv.lease)
            except PiclusterError as e:
                errors.append(f"lease of {Keys.last_segment(kv.key)}: {e}")
    earlier = history.before(leader, MASTERS_SHOWN - 1)
    return Snapshot(
        now=now,
        candidates=candidates,
        leader=leader,
        earlier_leaders=earlier,
        nodes=nodes,
        drained={Keys.last_segment(kv.key) for kv in drained_kvs},
        leases=leases,
        assignments=assignments,
        queue=queue,
        queue_total=queue_total,
        jobs=jobs,
        revision=revision,
        errors=errors,
    )


def _with_active(
    client: EtcdClient, keys: Keys, recent: list[KV], assignments: list[KV], reruns: list[KV]
) -> list[KV]:
    """`recent` plus the records of active jobs that were not among them: assigned (a long
    run) or between two attempts (a long backoff)."""
    have = {kv.key for kv in recent}
    ids = [found[1] for kv in assignments if (found := keys.assignment_of(kv.key))]
    ids += [j for kv in reruns if (j := keys.job_id_of(keys.rerun_dir, kv.key))]
    missing = [k for k in dict.fromkeys(keys.job(j) for j in ids) if k not in have]
    if not missing:
        return recent
    return recent + list(client.get_many(missing).values())
