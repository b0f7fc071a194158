"""The cluster's checks: etcd (health, alarms, members, database size, clocks), the
certificates, the master, the nodes. Each returns one `Check`; none raises for what it
finds wrong, only for bugs."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..client import Client
from ..errors import ConfigError, PermissionDenied, PiclusterError
from ..etcd.adapter import EtcdClient, TLSFiles
from ..etcd.keys import Keys
from . import certs
from .clock import ClockReading, read_clock
from .result import Check, Level

# Per member: a status answer must come this fast (an SD card's fsync is tens of ms).
MEMBER_TIMEOUT = 2.0
DB_WARN = 0.8  # of the quota: time to defragment (docs/OPERATIONS.md)
DB_FAIL = 0.95  # etcd raises NOSPACE at 100 %
CLOCK_WARN = 1.0  # seconds of offset beyond the reading's own precision
# Certificates a node has, read when this runs on the node (and readable by its user).
NODE_CERTS = (
    "/etc/etcd/pki/member.crt",
    "/etc/etcd/pki/peer.crt",
    "/etc/etcd/pki/maint.crt",
    "/etc/picluster/pki/client.crt",
    "/etc/picluster/pki/api.crt",
    "/etc/picluster/pki/group.crt",
    "/etc/picluster/pki/ca.crt",
)


@dataclass
class MemberProbe:
    """What one member said, or why it said nothing."""

    id: int
    name: str
    url: str
    status: dict[str, Any] | None = None
    error: str | None = None
    clock: ClockReading | None = None
    clock_error: str | None = None


@dataclass
class Survey:
    members: list[MemberProbe] = field(default_factory=list)
    unreachable: str | None = None  # no endpoint answered at all


def _probe(member: MemberProbe, tls: TLSFiles) -> MemberProbe:
    try:
        member.status = EtcdClient([member.url], tls, timeout=MEMBER_TIMEOUT).status()
    except PiclusterError as e:
        member.error = str(e)
        return member
    try:
        member.clock = read_clock(member.url, tls, timeout=MEMBER_TIMEOUT)
    except Exception as e:
        member.clock_error = f"{type(e).__name__}: {e}"
    return member


def survey(client: Client) -> Survey:
    """Every member's status and clock, asked of each member directly and at once."""
    try:
        listed = client.etcd.members()
    except ConfigError:
        raise  # TLS files, permissions: the CLI's one line and exit 2, like every command
    except PiclusterError as e:
        return Survey(unreachable=str(e))
    probes = [
        MemberProbe(
            m["ID"], m["name"] or f"{m['ID']:x} (never started)", (m["clientURLs"] or [""])[0]
        )
        for m in listed
    ]
    tls = client.etcd.tls
    with ThreadPoolExecutor(max_workers=max(1, len(probes))) as pool:
        for p in probes:
            if not p.url:
                p.error = "no client URL: the member was added but never started"
        done = list(pool.map(lambda p: p if p.error else _probe(p, tls), probes))
    return Survey(done)


# ---------------------------------------------------------------- etcd


def health_check(s: Survey) -> Check:
    if s.unreachable:
        return Check("etcd-health", Level.FAIL, f"cluster unreachable: {s.unreachable}")
    down = [m for m in s.members if m.status is None]
    details = {m.name: {"url": m.url, "error": m.error} for m in s.members}
    if down:
        said = "; ".join(f"{m.name} ({m.url or 'no URL'}): {m.error}" for m in down)
        return Check(
            "etcd-health",
            Level.FAIL,
            f"{len(s.members) - len(down)}/{len(s.members)} members answer; down: {said}",
            details,
        )
    return Check(
        "etcd-health", Level.OK, f"{len(s.members)}/{len(s.members)} members answer", details
    )


def alarms_check(client: Client) -> Check:
    try:
        alarms = client.etcd.alarms()
    except PiclusterError as e:
        return Check("etcd-alarms", Level.FAIL, f"cannot read etcd's alarms: {e}")
    if alarms:
        why = {
            "NOSPACE": "etcd refuses every write until space is freed and the alarm "
            "disarmed (docs/OPERATIONS.md, NOSPACE)",
            "CORRUPT": "members' data differ: see etcd's logs",
        }
        text = "; ".join(f"{a}: {why.get(a, 'see etcd logs')}" for a in alarms)
        return Check("etcd-alarms", Level.FAIL, text, {"alarms": alarms})
    return Check("etcd-alarms", Level.OK, "no alarm raised", {"alarms": []})


def members_check(s: Survey) -> Check:
    if s.unreachable:
        return Check("etcd-members", Level.FAIL, "no member list (cluster unreachable)")
    names = {m.id: m.name for m in s.members}
    leaders = {m.status["leader"] for m in s.members if m.status and m.status["leader"]}
    details = {
        "members": [{"id": f"{m.id:x}", "name": m.name, "url": m.url} for m in s.members],
        "leader": [names.get(x, f"{x:x}") for x in sorted(leaders)],
    }
    listing = ", ".join(m.name for m in s.members)
    if len(leaders) != 1:
        said = (
            "no member knows a leader" if not leaders else f"members disagree: {details['leader']}"
        )
        return Check(
            "etcd-members", Level.FAIL, f"{len(s.members)} members ({listing}); {said}", details
        )
    leader = names.get(next(iter(leaders)), "?")
    level = Level.WARN if len(s.members) % 2 == 0 else Level.OK
    even = " (an even count: no more failures tolerated than one fewer)" if level else ""
    return Check(
        "etcd-members",
        level,
        f"{len(s.members)} members ({listing}), leader {leader}{even}",
        details,
    )


def db_size_check(s: Survey, quota: int) -> Check:
    sizes = {m.name: m.status["db_size"] for m in s.members if m.status}
    if not sizes:
        return Check("etcd-db-size", Level.FAIL, "no member answered")
    biggest = max(sizes, key=lambda n: sizes[n])
    ratio = sizes[biggest] / quota
    level = Level.FAIL if ratio >= DB_FAIL else Level.WARN if ratio >= DB_WARN else Level.OK
    advice = "; defragment (docs/OPERATIONS.md)" if level else ""
    return Check(
        "etcd-db-size",
        level,
        f"largest {biggest} {sizes[biggest] / 2**20:.1f} MiB of the {quota / 2**20:.0f} MiB quota "
        f"({ratio:.1%}){advice}",
        {"db_size_bytes": sizes, "quota_bytes": quota},
    )


def clock_check(s: Survey) -> Check:
    readings = {m.name: m.clock for m in s.members if m.clock is not None}
    failed = {m.name: m.clock_error for m in s.members if m.clock_error}
    details: dict[str, Any] = {
        "offsets_s": {n: round(r.offset, 3) for n, r in readings.items()},
        "precision_s": {n: round(r.precision, 3) for n, r in readings.items()},
        "errors": failed,
        "source": "each member's HTTP Date header, against this machine's clock",
    }
    if not readings:
        return Check("clock", Level.WARN, "no member's clock could be read", details)
    # Beyond what the reading's own precision could explain.
    off_here = {n: max(0.0, abs(r.offset) - r.precision) for n, r in readings.items()}
    low = min(readings.values(), key=lambda r: r.offset)
    high = max(readings.values(), key=lambda r: r.offset)
    spread = max(0.0, (high.offset - low.offset) - (high.precision + low.precision))
    details["spread_between_members_s"] = round(high.offset - low.offset, 3)
    worst_here = max(off_here, key=lambda n: off_here[n])
    precision = max(r.precision for r in readings.values())
    text = (
        f"members within {high.offset - low.offset:.2f} s of each other, "
        f"{worst_here} {readings[worst_here].offset:+.2f} s from this machine "
        f"(+-{precision:.2f} s)"
    )
    level = Level.WARN if spread > CLOCK_WARN or off_here[worst_here] > CLOCK_WARN else Level.OK
    if failed:
        text += f"; unread: {', '.join(failed)}"
        level = max(level, Level.WARN)
    return Check("clock", level, text + ("; check chrony" if level else ""), details)


# ---------------------------------------------------------------- certificates


def certificates_check(
    client: Client, s: Survey, expiry: Callable[..., Check] = certs.expiry_check
) -> Check:
    conn = client.connection
    # Named by what they are and where: "client certificate /home/pi/...", "this node's /etc/...".
    files = {f"client certificate {conn.cert}": conn.cert, f"CA {conn.cacert}": conn.cacert}
    files.update({f"this node's {p}": p for p in NODE_CERTS})
    not_after: dict[str, float] = {}
    unreadable: list[str] = []
    for label, path in files.items():
        if not path or not os.path.exists(path):
            continue
        end = certs.not_after_of_file(path)
        if end is None:
            unreadable.append(label)
        else:
            not_after[label] = end
    for m in s.members:
        if m.clock is not None and m.clock.cert_not_after is not None:
            not_after[f"etcd {m.name}"] = m.clock.cert_not_after
    return expiry(not_after, unreadable)


# ---------------------------------------------------------------- agents


def master_check(client: Client) -> Check:
    try:
        master = client.master()
    except PiclusterError as e:
        return Check("master", Level.FAIL, f"cannot read the election: {e}")
    if master is None:
        return Check(
            "master", Level.FAIL, "no master elected: no agent is running, or none may lead"
        )
    details: dict[str, Any] = {"name": master.leader.name, "since": master.since}
    if master.since is None:
        return Check("master", Level.OK, f"{master.leader.name} (since unknown)", details)
    ago = max(0.0, time.time() - master.since)
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(master.since))
    return Check(
        "master",
        Level.OK,
        f"{master.leader.name}, master since {when} "
        f"({_ago(ago)} ago: the last failover or election)",
        details,
    )


def _ago(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


def nodes_check(client: Client) -> Check:
    keys: Keys = client.keys
    try:
        views = client.nodes()
        drain_kvs, _ = client.etcd.get_prefix(keys.drain_dir, keys_only=True)
    except PiclusterError as e:
        return Check("nodes", Level.FAIL, f"cannot read the nodes: {e}")
    registered = {v.info.name for v in views}
    drained = sorted({Keys.last_segment(kv.key) for kv in drain_kvs})
    lost: list[str] = []
    note = ""
    try:
        assign_kvs, _ = client.etcd.get_prefix(keys.assign_root, keys_only=True)
        holding = {a[0] for kv in assign_kvs if (a := keys.assignment_of(kv.key)) is not None}
        # Jobs assigned to a node that is not registered: it went away and the master has
        # not yet given them to others (or no master runs to do so).
        lost = sorted(holding - registered)
    except PermissionDenied:
        note = " (assignments unreadable with this identity: lost nodes not checked)"
    details = {
        "registered": sorted(registered),
        "drained": drained,
        "lost_with_jobs": lost,
        "drained_unregistered": sorted(set(drained) - registered),
    }
    if not registered:
        return Check("nodes", Level.FAIL, "no node registered: no agent runs" + note, details)
    parts = [f"{len(registered)} registered"]
    if drained:
        parts.append(f"drained: {', '.join(drained)}")
    if lost:
        parts.append(f"lost, holding jobs: {', '.join(lost)}")
    level = Level.WARN if drained or lost else Level.OK
    return Check("nodes", level, "; ".join(parts) + note, details)
