"""The only module that talks to etcd. Everything else gets plain Python values from here.

Speaks etcd's v3 gRPC API directly (grpcio, with the generated messages of
etcd-sdk-python; see docs/ETCD_CLIENT.md for why). What this adapter adds on top of it:

* several endpoints: a request that cannot reach one member is retried on the next;
* errors translated once into picluster's own (`Unavailable`, `Indeterminate`,
  `ConfigError`, `PiclusterError`), including the "was my write applied?" question;
* a supervised watch (`Watch`) that survives server restarts, paused members and dead
  streams, and resumes from the last revision it delivered.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

# grpc's C core logs to stderr on its own ("E1125 ... Corruption detected."); the CLI's
# contract is one clear line per error, made from the error we raise.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

import grpc
from pyetcd import etcdrpc  # generated etcd v3 API messages and stubs only

from .. import defaults
from ..endpoints import parse_endpoint
from ..errors import (
    Compacted,
    ConfigError,
    Indeterminate,
    NoSpace,
    PermissionDenied,
    PiclusterError,
    RequestTooLarge,
    TooManyRequests,
    Unavailable,
)
from .keys import prefix_end
from .limits import READS_PER_TXN

log = logging.getLogger(__name__)

# Txn building blocks are etcd's own protobuf messages.
Op = etcdrpc.RequestOp
Compare = etcdrpc.Compare

_EVENT_TYPES = {0: "PUT", 1: "DELETE"}  # mvccpb.Event.EventType

# (kind: the gRPC method, seconds, the picluster error class's name or None)
RequestObserver = Callable[[str, float, str | None], None]


def _bytes(data: str | bytes) -> bytes:
    return data.encode("utf-8") if isinstance(data, str) else data


@dataclass(frozen=True)
class KV:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int

    @classmethod
    def from_pb(cls, raw: Any) -> KV:
        return cls(
            key=raw.key.decode("utf-8", errors="replace"),
            value=raw.value,
            create_revision=raw.create_revision,
            mod_revision=raw.mod_revision,
            version=raw.version,
            lease=raw.lease,
        )

    def json(self) -> Any:
        return json.loads(self.value)


@dataclass(frozen=True)
class Event:
    type: str  # "PUT" or "DELETE"
    kv: KV
    prev_kv: KV | None = None

    @property
    def revision(self) -> int:
        return self.kv.mod_revision


@dataclass(frozen=True)
class TxnResult:
    succeeded: bool
    revision: int
    # One entry per operation of the branch that ran: the KVs of a range op, else [].
    ranges: list[list[KV]] = field(default_factory=list)


# ---------------------------------------------------------------- txn building blocks
# Small named helpers so that every txn reads like the race it closes.


def cmp_absent(key: str) -> Compare:
    """The key does not exist (put-if-absent)."""
    return Compare(key=_bytes(key), target=Compare.CREATE, result=Compare.EQUAL, create_revision=0)


def cmp_created_at(key: str, revision: int) -> Compare:
    """The key exists and is the very incarnation created at `revision` (a fencing token)."""
    return Compare(
        key=_bytes(key), target=Compare.CREATE, result=Compare.EQUAL, create_revision=revision
    )


def cmp_modified_at(key: str, revision: int) -> Compare:
    """Nobody wrote the key since we read it at `revision`."""
    return Compare(key=_bytes(key), target=Compare.MOD, result=Compare.EQUAL, mod_revision=revision)


def landed(kv: KV | None, value: str | bytes) -> bool:
    """After a lost reply (`Indeterminate`): the key holds exactly what we wrote, so our write
    committed. Sound for values only the caller would write (its own spec under an id it
    chose, its own report of its own attempt, its name under its own lease's key)."""
    return kv is not None and kv.value == _bytes(value)


def op_put(key: str, value: str | bytes, lease: int = 0) -> Op:
    return Op(request_put=etcdrpc.PutRequest(key=_bytes(key), value=_bytes(value), lease=lease))


def op_delete(key: str) -> Op:
    return Op(request_delete_range=etcdrpc.DeleteRangeRequest(key=_bytes(key)))


def op_get(key: str) -> Op:
    return Op(request_range=etcdrpc.RangeRequest(key=_bytes(key)))


# ---------------------------------------------------------------- the client


@dataclass(frozen=True)
class TLSFiles:
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None


_CHANNEL_OPTIONS = [
    # grpc honours http_proxy/grpc_proxy from the environment: cluster traffic never
    # goes through a proxy.
    ("grpc.enable_http_proxy", 0),
    # A range over many job records can exceed the 4 MiB default.
    ("grpc.max_receive_message_length", -1),
    # After a member restarts, reconnect within a second (the default backoff grows to
    # two minutes, and a single-endpoint client would be stuck that long).
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    # Not a backoff: the least time grpc gives one attempt to connect (TCP, TLS handshake).
    # At 100 ms every handshake slower than that on a loaded machine failed its request at
    # once ("handshaker shutdown", "Endpoint closing"): a request's own deadline is the
    # limit that counts. No longer than that either, so that a member cut off by the
    # network (packets dropped) is asked again soon after the network heals.
    ("grpc.min_reconnect_backoff_ms", int(defaults.REQUEST_TIMEOUT * 1000)),
    # Detect a dead peer under a long watch. etcd refuses pings more often than every 5 s
    # and pings without an active call (`--grpc-keepalive-min-time`, its enforcement policy).
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 0),
]

# grpc's blocking stream readers (each watch's thread) wait on a condition in slices of
# MAXIMUM_WAIT_TIMEOUT (0.1 s) so that no signal handler waits longer on a blocked main
# thread. Our streams are read by other threads, and the kernel gives a process' signals to
# its main thread first, interrupting its waits: the slices only woke each watch thread ten
# times a second, most of an idle agent's CPU (docs/BENCHMARKS.md). A reply still wakes its
# reader at once (the condition is notified).
GRPC_WAIT_SLICE = 2.0


def _lengthen_grpc_wait_slices() -> None:
    common = getattr(grpc, "_common", None)  # private: left alone if a release drops it
    current = getattr(common, "MAXIMUM_WAIT_TIMEOUT", None)
    if isinstance(current, int | float) and current < GRPC_WAIT_SLICE:
        common.MAXIMUM_WAIT_TIMEOUT = GRPC_WAIT_SLICE  # type: ignore[union-attr]


_lengthen_grpc_wait_slices()


class _Member:
    """One endpoint: its channel and the service stubs on it."""

    def __init__(self, url: str, credentials: grpc.ChannelCredentials | None) -> None:
        scheme, host, port = parse_endpoint(url)
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if scheme == "https":
            self.channel = grpc.secure_channel(
                target, credentials or grpc.ssl_channel_credentials(), _CHANNEL_OPTIONS
            )
        else:
            self.channel = grpc.insecure_channel(target, _CHANNEL_OPTIONS)
        self.kv = etcdrpc.KVStub(self.channel)
        self.lease = etcdrpc.LeaseStub(self.channel)
        self.watch = etcdrpc.WatchStub(self.channel)
        self.maintenance = etcdrpc.MaintenanceStub(self.channel)
        self.cluster = etcdrpc.ClusterStub(self.channel)


_RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
# The same deadline as seen by the server: etcd 3.4 answers UNKNOWN "context deadline
# exceeded" when the client's deadline passes while it waits (for a leader, a read index, a
# commit), which can arrive before the client's own DEADLINE_EXCEEDED. Not a refusal: the
# request may have been applied, and another member may answer.
_SERVER_SIDE_DEADLINE = "context deadline exceeded"


def _connection_trouble(e: grpc.RpcError) -> bool:
    """Trouble that another try (or another member) may cure; anything else is a refusal."""
    if e.code() in _RETRYABLE:
        return True
    return e.code() == grpc.StatusCode.UNKNOWN and (e.details() or "") == _SERVER_SIDE_DEADLINE


# The connection died before any request could be written: while connecting, or during the
# TLS handshake because the peer went away (a killed node: "handshaker shutdown").
_NOT_SENT_MARKS = ("failed to connect", "connection refused", "handshaker shutdown")
_HANDSHAKE_CUT_SHORT = ("handshake read failed", "handshake write failed")


def _never_sent(e: grpc.RpcError) -> bool:
    """True when the call failed while connecting, so a write was surely not applied."""
    details = (e.details() or "").lower()
    return e.code() == grpc.StatusCode.UNAVAILABLE and any(m in details for m in _NOT_SENT_MARKS)


def refusal(e: grpc.RpcError) -> PiclusterError:
    """The named error for a request etcd refused (anything but connection trouble).

    Each class has one outcome for every caller: NoSpace and TooManyRequests are
    `Unavailable` (nothing written; retry with backoff), RequestTooLarge means split or
    shrink, PermissionDenied is a configuration fault, Compacted means read again.
    """
    code, details = e.code(), e.details() or ""
    said = f"etcd refused the request: {details}"
    if "database space exceeded" in details:
        return NoSpace(details)
    if "too many requests" in details:
        return TooManyRequests(said)
    if "request is too large" in details or "larger than max" in details:
        return RequestTooLarge(said)
    if code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED) or any(
        mark in details for mark in ("user name is empty", "invalid auth token")
    ):  # the last two: etcd's auth is on and this client has no user (no client cert)
        return PermissionDenied(said)
    if code == grpc.StatusCode.OUT_OF_RANGE or "has been compacted" in details:
        return Compacted(said)
    return PiclusterError(said)


def _tls_failure(e: grpc.RpcError) -> str | None:
    """A readable reason when TLS itself refused the connection (a certificate, a protocol
    mismatch): no other endpoint will do better. None for anything else, including a
    handshake cut short by the network, which another endpoint may well survive."""
    details = e.details() or ""
    lowered = details.lower()
    if "certificate_verify_failed" in lowered:
        return "the server's certificate is not signed by the given CA (--cacert)"
    if "tsi_data_corrupted" in lowered or "unwrap failed" in lowered:
        # What a server that requires client certificates does to a client without one.
        return "the server ended the TLS session: does it need a client certificate (--cert/--key)?"
    if "handshaker shutdown" in lowered or "endpoint closing" in lowered:
        # The peer went away mid-handshake (a killed node; an overloaded member dropping
        # the connection, seen at an agent's start under load): another try may do better.
        return None
    # A handshake cut short with no TLS error: the member closed the connection (it is
    # restarting: seen in a certificate rotation) or the call's deadline passed first (a
    # loaded machine). Another endpoint may well answer.
    if "ssl_error" not in lowered and any(m in lowered for m in _HANDSHAKE_CUT_SHORT):
        return None
    for marker in ("handshake", "ssl_error", "tsi_", "certificate"):
        at = lowered.find(marker)
        if at >= 0:
            return details[at:][:200]
    return None


class EtcdClient:
    """A thread-safe etcd client over several endpoints."""

    def __init__(
        self,
        endpoints: Sequence[str],
        tls: TLSFiles | None = None,
        timeout: float = defaults.REQUEST_TIMEOUT,
    ) -> None:
        if not endpoints:
            raise ConfigError("no etcd endpoints given")
        self.endpoints = list(endpoints)
        self.tls = tls or TLSFiles()
        self.timeout = timeout
        credentials = self._credentials()
        self._members = [_Member(url, credentials) for url in self.endpoints]
        self._current = 0
        self._lock = threading.Lock()
        # Told of every request once it is over: (kind, seconds, error class or None). The
        # agent's metrics set it; nothing here depends on who listens.
        self.observer: RequestObserver | None = None

    def _credentials(self) -> grpc.ChannelCredentials | None:
        if bool(self.tls.cert) != bool(self.tls.key):
            raise ConfigError("a client certificate needs both --cert and --key")
        contents: dict[str, bytes | None] = {}
        for label, path in (
            ("CA", self.tls.cacert),
            ("cert", self.tls.cert),
            ("key", self.tls.key),
        ):
            if path is None:
                contents[label] = None
                continue
            try:
                with open(path, "rb") as f:
                    contents[label] = f.read()
            except OSError as e:
                raise ConfigError(f"cannot read TLS {label} file {path}: {e.strerror}") from e
            # grpc would take any bytes and fail only at the handshake, far from the cause.
            if b"-----BEGIN " not in contents[label]:  # type: ignore[operator]
                raise ConfigError(f"TLS {label} file {path} holds no PEM data")
        if not any(contents.values()):
            return None
        return grpc.ssl_channel_credentials(
            root_certificates=contents["CA"],
            private_key=contents["key"],
            certificate_chain=contents["cert"],
        )

    @property
    def current_endpoint(self) -> str:
        return self.endpoints[self._current]

    # ------------------------------------------------------------ transport

    def _call(
        self,
        service: str,
        method: str,
        request: Any,
        *,
        idempotent: bool,
        stream: bool = False,
        timeout: float | None = None,
    ) -> Any:
        """Call the current endpoint; on connection trouble try the others once each.

        `stream`: the method is a stream; send `request` alone and return the first answer.
        `timeout`: per endpoint, instead of the client's own.
        """
        observer = self.observer
        if observer is None:
            return self._call_members(service, method, request, idempotent, stream, timeout)
        began = time.monotonic()
        try:
            result = self._call_members(service, method, request, idempotent, stream, timeout)
        except PiclusterError as e:
            observer(method, time.monotonic() - began, type(e).__name__)
            raise
        observer(method, time.monotonic() - began, None)
        return result

    def _call_members(
        self,
        service: str,
        method: str,
        request: Any,
        idempotent: bool,
        stream: bool,
        timeout: float | None,
    ) -> Any:
        timeout = self.timeout if timeout is None else timeout
        errors: list[str] = []
        start = self._current
        for i in range(len(self._members)):
            index = (start + i) % len(self._members)
            stub = getattr(self._members[index], service)
            try:
                if stream:
                    call = getattr(stub, method)(iter([request]), timeout=timeout)
                    result = next(call, None)
                    call.cancel()
                else:
                    result = getattr(stub, method)(request, timeout=timeout)
            except grpc.RpcError as e:
                self._raise_if_fatal(e, index)
                errors.append(f"{self.endpoints[index]}: {_short(e)}")
                if not idempotent and not _never_sent(e):
                    self._rotate_from(index)
                    raise Indeterminate(
                        f"etcd {self.endpoints[index]} failed mid-request ({_short(e)}); "
                        "outcome unknown"
                    ) from e
                continue
            if index != self._current:
                log.warning("etcd: now using endpoint %s", self.endpoints[index])
                with self._lock:
                    self._current = index
            return result
        self._rotate_from(start)
        raise Unavailable("no etcd endpoint reachable (" + "; ".join(errors) + ")")

    def _raise_if_fatal(self, e: grpc.RpcError, index: int) -> None:
        """TLS trouble and refusals are not cured by another endpoint."""
        reason = _tls_failure(e)
        if reason is not None:
            raise ConfigError(f"TLS failure talking to {self.endpoints[index]}: {reason}") from e
        if not _connection_trouble(e):
            raise refusal(e) from e

    def _rotate_from(self, index: int) -> None:
        with self._lock:
            if self._current != index or len(self._members) == 1:
                return
            self._current = (index + 1) % len(self._members)
            log.warning("etcd: now using endpoint %s", self.endpoints[self._current])

    # ------------------------------------------------------------ KV

    def get(self, key: str, *, revision: int = 0, timeout: float | None = None) -> KV | None:
        """The key now, or as it was at `revision` (a PiclusterError once etcd has
        compacted that revision away). `timeout`: per endpoint, instead of the client's."""
        request = etcdrpc.RangeRequest(key=_bytes(key), revision=revision)
        res = self._call("kv", "Range", request, idempotent=True, timeout=timeout)
        return KV.from_pb(res.kvs[0]) if res.kvs else None

    def get_prefix(
        self,
        prefix: str,
        *,
        limit: int = 0,
        keys_only: bool = False,
        sort_target: str = "KEY",
        sort_order: str = "ASCEND",
        max_create_revision: int = 0,
        revision: int = 0,
    ) -> tuple[list[KV], int]:
        """All KVs under `prefix` and the store revision they were read at."""
        request = etcdrpc.RangeRequest(
            key=_bytes(prefix),
            range_end=_bytes(prefix_end(prefix)),
            sort_target=etcdrpc.RangeRequest.SortTarget.Value(sort_target),
            sort_order=etcdrpc.RangeRequest.SortOrder.Value(sort_order),
            limit=limit,
            keys_only=keys_only,
            max_create_revision=max_create_revision,
            revision=revision,
        )
        res = self._call("kv", "Range", request, idempotent=True)
        return [KV.from_pb(kv) for kv in res.kvs], res.header.revision

    def get_many(self, keys: Sequence[str]) -> dict[str, KV]:
        """The keys that exist, by key: many reads per txn, each txn at one revision."""
        found: dict[str, KV] = {}
        for i in range(0, len(keys), READS_PER_TXN):
            res = self.txn([], [op_get(k) for k in keys[i : i + READS_PER_TXN]])
            for kvs in res.ranges:
                for kv in kvs:
                    found[kv.key] = kv
        return found

    def count_prefix(self, prefix: str) -> int:
        request = etcdrpc.RangeRequest(
            key=_bytes(prefix), range_end=_bytes(prefix_end(prefix)), count_only=True
        )
        return int(self._call("kv", "Range", request, idempotent=True).count)

    def put(self, key: str, value: str | bytes, lease: int = 0) -> int:
        request = etcdrpc.PutRequest(key=_bytes(key), value=_bytes(value), lease=lease)
        return int(self._call("kv", "Put", request, idempotent=False).header.revision)

    def delete(self, key: str) -> int:
        request = etcdrpc.DeleteRangeRequest(key=_bytes(key))
        return int(self._call("kv", "DeleteRange", request, idempotent=False).deleted)

    def txn(
        self,
        compare: Iterable[Compare],
        success: Iterable[Op],
        failure: Iterable[Op] = (),
    ) -> TxnResult:
        compare, success, failure = list(compare), list(success), list(failure)
        request = etcdrpc.TxnRequest(compare=compare, success=success, failure=failure)
        try:
            res = self._call("kv", "Txn", request, idempotent=False)
        except NoSpace:
            # etcd's quota check refuses every Txn, read-only ones too, once the database is
            # at its quota (a plain Range is not checked): reads must go on under NOSPACE
            # (status, the scheduler's loads), so they are asked one by one at one revision.
            if compare or failure or not all(op.HasField("request_range") for op in success):
                raise
            return self._ranges_at_one_revision([op.request_range for op in success])
        ranges = [
            [KV.from_pb(kv) for kv in r.response_range.kvs]
            if r.WhichOneof("response") == "response_range"
            else []
            for r in res.responses
        ]
        return TxnResult(succeeded=res.succeeded, revision=res.header.revision, ranges=ranges)

    def _ranges_at_one_revision(self, requests: list[Any]) -> TxnResult:
        revision = 0
        ranges: list[list[KV]] = []
        for request in requests:
            ask = etcdrpc.RangeRequest()
            ask.CopyFrom(request)
            ask.revision = revision
            res = self._call("kv", "Range", ask, idempotent=True)
            revision = revision or res.header.revision
            ranges.append([KV.from_pb(kv) for kv in res.kvs])
        return TxnResult(succeeded=True, revision=revision, ranges=ranges)

    def compact(self, revision: int, physical: bool = True) -> None:
        """Drop history before `revision` (what etcd's auto-compaction does on a schedule)."""
        request = etcdrpc.CompactionRequest(revision=revision, physical=physical)
        self._call("kv", "Compact", request, idempotent=True)

    # ------------------------------------------------------------ leases

    def grant(self, ttl: int) -> tuple[int, int]:
        """A new lease: (id, granted ttl). A lost grant reply only leaks a lease until its TTL."""
        res = self._call("lease", "LeaseGrant", etcdrpc.LeaseGrantRequest(TTL=ttl), idempotent=True)
        if res.error:
            raise PiclusterError(f"etcd refused the lease: {res.error}")
        return res.ID, res.TTL

    def keepalive(self, lease_id: int, timeout: float | None = None) -> int:
        """Renew once; returns the remaining TTL, or <= 0 when the lease is gone."""
        request = etcdrpc.LeaseKeepAliveRequest(ID=lease_id)
        res = self._call(
            "lease", "LeaseKeepAlive", request, idempotent=True, stream=True, timeout=timeout
        )
        return int(res.TTL) if res is not None else -1

    def revoke(self, lease_id: int) -> None:
        try:
            self._call(
                "lease", "LeaseRevoke", etcdrpc.LeaseRevokeRequest(ID=lease_id), idempotent=True
            )
        except PiclusterError as e:
            if "not found" not in str(e):
                raise

    def lease_ttls(self, lease_id: int) -> tuple[int, int]:
        """(seconds left, TTL granted) of a lease; (-1, 0) once it has expired."""
        request = etcdrpc.LeaseTimeToLiveRequest(ID=lease_id)
        res = self._call("lease", "LeaseTimeToLive", request, idempotent=True)
        return int(res.TTL), int(res.grantedTTL)

    def time_to_live(self, lease_id: int) -> int:
        """Seconds left (0 in its last second), -1 once expired."""
        request = etcdrpc.LeaseTimeToLiveRequest(ID=lease_id)
        return int(self._call("lease", "LeaseTimeToLive", request, idempotent=True).TTL)

    # ------------------------------------------------------------ cluster

    def status(self) -> dict[str, Any]:
        """The answering member's status: header (member_id, revision), leader, version."""
        res = self._call("maintenance", "Status", etcdrpc.StatusRequest(), idempotent=True)
        return {
            "header": {"member_id": res.header.member_id, "revision": res.header.revision},
            "leader": res.leader,
            "version": res.version,
            "db_size": res.dbSize,
            "raft_index": res.raftIndex,
        }

    def alarms(self) -> list[str]:
        """etcd's raised alarms ("NOSPACE", "CORRUPT"), one per kind, for people to see."""
        request = etcdrpc.AlarmRequest(action=etcdrpc.AlarmRequest.GET)
        res = self._call("maintenance", "Alarm", request, idempotent=True)
        names = {etcdrpc.AlarmType.Name(a.alarm) for a in res.alarms}
        return sorted(names - {"NONE"})

    def raised_alarms(self) -> list[str]:
        """`alarms()` for showing to people: [] when etcd cannot or will not say."""
        try:
            return self.alarms()
        except PiclusterError:
            return []

    def members(self) -> list[dict[str, Any]]:
        res = self._call("cluster", "MemberList", etcdrpc.MemberListRequest(), idempotent=True)
        return [
            {
                "ID": m.ID,
                "name": m.name,
                "peerURLs": list(m.peerURLs),
                "clientURLs": list(m.clientURLs),
            }
            for m in res.members
        ]

    def watch(
        self,
        prefix: str,
        on_events: Callable[[list[Event], int], None],
        *,
        start_revision: int,
        is_prefix: bool = True,
        prev_kv: bool = False,
        name: str = "watch",
        on_compacted: Callable[[WatchEnded], None] | None = None,
        only: str | None = None,
    ) -> Watch:
        """See `Watch`. Long-lived owners must pass `on_compacted` and re-read when called.

        `only="PUT"` or `only="DELETE"` asks etcd to send just that kind of event.
        """
        return Watch(
            self,
            prefix,
            on_events,
            start_revision=start_revision,
            is_prefix=is_prefix,
            prev_kv=prev_kv,
            name=name,
            on_compacted=on_compacted,
            only=only,
        )

    def close(self) -> None:
        for member in self._members:
            member.channel.close()


def _short(e: grpc.RpcError) -> str:
    return f"{e.code().name}: {(e.details() or '')[:160]}"


class WatchEnded(PiclusterError):
    """A watch stopped for good: its owner must re-read, then start a new one."""


class WatchCompacted(WatchEnded):
    """The revision a watch wanted to resume from was compacted away: re-read, then re-watch."""

    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"watch start revision compacted (now at {compact_revision})")
        self.compact_revision = compact_revision


class WatchCallbackFailed(WatchEnded):
    """The owner's `on_events` raised. Resuming would replay the same events into the same
    failure for ever (a reconnect loop), so the watch ends and the owner re-reads instead."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(f"event handler failed: {type(error).__name__}: {error}")
        self.error = error


class Watch:
    """A watch that keeps going: reconnects (any endpoint), resumes at last revision + 1.

    `on_events(events, revision)` is called from the watch thread, in order, with every
    event exactly once, and also with an empty list on progress notifications, so that
    `revision` (everything up to it was delivered) keeps moving. A stream is probed with a
    progress request when it has been quiet for a third of `idle_timeout`, and re-created
    when it stays silent for `idle_timeout`: this is how a paused or cut-off member is
    noticed. If the resume revision was compacted, `on_compacted(exc)` runs (if given) and
    the watch stops; the owner re-reads and starts a new one. The same happens, with
    `WatchCallbackFailed`, when `on_events` itself raises.
    """

    def __init__(
        self,
        client: EtcdClient,
        key: str,
        on_events: Callable[[list[Event], int], None],
        *,
        start_revision: int,
        is_prefix: bool = True,
        prev_kv: bool = False,
        name: str = "watch",
        on_compacted: Callable[[WatchEnded], None] | None = None,
        idle_timeout: float = defaults.WATCH_IDLE_TIMEOUT,
        only: str | None = None,
    ) -> None:
        if only not in (None, "PUT", "DELETE"):
            raise ValueError(f"only must be PUT or DELETE, not {only!r}")
        no_put, no_delete = etcdrpc.WatchCreateRequest.NOPUT, etcdrpc.WatchCreateRequest.NODELETE
        self._filters = {"PUT": [no_delete], "DELETE": [no_put], None: []}[only]
        self._client = client
        self._key = key
        self._on_events = on_events
        self._on_compacted = on_compacted
        self.next_revision = start_revision
        self._is_prefix = is_prefix
        self._prev_kv = prev_kv
        self._idle_timeout = idle_timeout
        self._stopped = threading.Event()
        self._call: Any = None
        self._last_heard = time.monotonic()
        self.reconnects = 0
        self.created = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        call = self._call
        if call is not None:
            call.cancel()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        backoff = defaults.RETRY_BACKOFF_MIN
        while not self._stopped.is_set():
            try:
                self._stream_once()
                backoff = defaults.RETRY_BACKOFF_MIN
            except WatchEnded as e:
                log.error(
                    "%s: %s", self._thread.name, e, exc_info=isinstance(e, WatchCallbackFailed)
                )
                if self._on_compacted is not None:
                    self._on_compacted(e)
                return
            except Exception as e:  # the stream may die in many ways; all mean "reconnect"
                if self._stopped.is_set():
                    return
                reason = _short(e) if isinstance(e, grpc.RpcError) else type(e).__name__
                log.warning(
                    "%s: stream to %s lost (%s); resuming at revision %d",
                    self._thread.name,
                    self._client.current_endpoint,
                    reason,
                    self.next_revision,
                )
                self._client._rotate_from(self._client._current)
                self._stopped.wait(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, defaults.RETRY_BACKOFF_MAX)
                self.reconnects += 1

    def _requests(self, create: Any, done: threading.Event) -> Iterator[Any]:
        """The client half of the stream: the create request, then liveness probes.

        grpc runs this in its own thread. A stream silent for `idle_timeout` is cancelled,
        which ends the read loop with an error and so reconnects.
        """
        yield etcdrpc.WatchRequest(create_request=create)
        probe = etcdrpc.WatchRequest(progress_request=etcdrpc.WatchProgressRequest())
        tick = self._idle_timeout / 3
        while not done.wait(tick):
            silent = time.monotonic() - self._last_heard
            if silent >= self._idle_timeout:
                log.warning("%s: no word from etcd for %.0f s", self._thread.name, silent)
                call = self._call
                if call is not None:
                    call.cancel()
                return
            if silent >= tick:
                yield probe

    def _stream_once(self) -> None:
        create = etcdrpc.WatchCreateRequest(
            key=_bytes(self._key),
            range_end=_bytes(prefix_end(self._key)) if self._is_prefix else b"",
            start_revision=self.next_revision,
            progress_notify=True,
            prev_kv=self._prev_kv,
            filters=self._filters,
        )
        member = self._client._members[self._client._current]
        done = threading.Event()
        self._last_heard = time.monotonic()
        call = member.watch.Watch(self._requests(create, done))
        self._call = call
        try:
            if self._stopped.is_set():
                return
            for response in call:
                self._last_heard = time.monotonic()
                if self._stopped.is_set():
                    return
                self._handle(response)
            if not self._stopped.is_set():
                raise ConnectionError("watch stream ended")
        except grpc.RpcError as e:
            if self._stopped.is_set():
                return
            reason = _tls_failure(e)
            if reason is not None:
                log.error("%s: TLS failure: %s", self._thread.name, reason)
            raise
        finally:
            done.set()
            call.cancel()
            self._call = None

    def _handle(self, response: Any) -> None:
        if response.compact_revision:
            raise WatchCompacted(response.compact_revision)
        if response.canceled:
            raise ConnectionError(f"watch canceled: {response.cancel_reason}")
        header_rev = response.header.revision
        if response.created:
            self.created.set()
            return
        events = [
            Event(
                type=_EVENT_TYPES.get(raw.type, "PUT"),
                kv=KV.from_pb(raw.kv),
                prev_kv=KV.from_pb(raw.prev_kv) if raw.HasField("prev_kv") else None,
            )
            for raw in response.events
        ]
        # Duplicates can arrive after a reconnect if the server replays; drop them.
        events = [e for e in events if e.revision >= self.next_revision]
        if events:
            last = max(e.revision for e in events)
            self._deliver(events, last)
        elif header_rev >= self.next_revision:
            # A progress notification: every event up to header_rev was delivered.
            self._deliver([], header_rev)

    def _deliver(self, events: list[Event], revision: int) -> None:
        try:
            self._on_events(events, revision)
        except Exception as e:
            raise WatchCallbackFailed(e) from e
        self.next_revision = revision + 1
