"""The only module that talks to etcd. Everything else gets plain Python values from here.

Built on etcd3gw (etcd's HTTP/JSON gRPC gateway; see docs/ETCD_CLIENT.md for why). What this
adapter adds on top of it:

* several endpoints: a request that cannot reach one member is retried on the next;
* int revisions and bool txn results (etcd3gw hands back strings and omits `succeeded`);
* errors translated once into picluster's own (`Unavailable`, `Indeterminate`);
* a supervised watch (`Watch`) that survives server restarts and dead streams and resumes
  from the last revision it delivered, which etcd3gw's own watch does not.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests
from etcd3gw import exceptions as gw_errors
from etcd3gw.client import Etcd3Client

from . import defaults
from .errors import ConfigError, Indeterminate, PiclusterError, Unavailable
from .keys import prefix_end

log = logging.getLogger(__name__)


def _b64(data: str | bytes) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8")
    return base64.b64encode(data).decode("ascii")


def _unb64(data: str | None) -> bytes:
    return base64.b64decode(data) if data else b""


@dataclass(frozen=True)
class KV:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> KV:
        return cls(
            key=_unb64(raw.get("key")).decode("utf-8", errors="replace"),
            value=_unb64(raw.get("value")),
            create_revision=int(raw.get("create_revision", 0)),
            mod_revision=int(raw.get("mod_revision", 0)),
            version=int(raw.get("version", 0)),
            lease=int(raw.get("lease", 0)),
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


def cmp_absent(key: str) -> dict[str, Any]:
    """The key does not exist (put-if-absent)."""
    return {"key": _b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}


def cmp_exists(key: str) -> dict[str, Any]:
    return {"key": _b64(key), "target": "CREATE", "result": "GREATER", "create_revision": "0"}


def cmp_created_at(key: str, revision: int) -> dict[str, Any]:
    """The key exists and is the very incarnation created at `revision` (a fencing token)."""
    return {
        "key": _b64(key),
        "target": "CREATE",
        "result": "EQUAL",
        "create_revision": str(revision),
    }


def cmp_modified_at(key: str, revision: int) -> dict[str, Any]:
    """Nobody wrote the key since we read it at `revision`."""
    return {"key": _b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(revision)}


def cmp_value(key: str, value: str | bytes) -> dict[str, Any]:
    return {"key": _b64(key), "target": "VALUE", "result": "EQUAL", "value": _b64(value)}


def op_put(key: str, value: str | bytes, lease: int = 0) -> dict[str, Any]:
    req: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
    if lease:
        req["lease"] = str(lease)
    return {"request_put": req}


def op_delete(key: str) -> dict[str, Any]:
    return {"request_delete_range": {"key": _b64(key)}}


def op_delete_prefix(prefix: str) -> dict[str, Any]:
    return {"request_delete_range": {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix))}}


def op_get(key: str) -> dict[str, Any]:
    return {"request_range": {"key": _b64(key)}}


def op_get_prefix(prefix: str) -> dict[str, Any]:
    return {"request_range": {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix))}}


# ---------------------------------------------------------------- the client


@dataclass(frozen=True)
class TLSFiles:
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None


def _parse_endpoint(url: str) -> tuple[str, str, int]:
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"bad etcd endpoint {url!r}: expected http(s)://HOST:PORT")
    try:
        port = parts.port or 2379
    except ValueError as e:
        raise ConfigError(f"bad etcd endpoint {url!r}: {e}") from e
    return parts.scheme, parts.hostname, port


def _request_never_reached_server(exc: BaseException) -> bool:
    """True when the failure happened while connecting, so a write was surely not applied."""
    cause = exc.__context__ or exc
    return isinstance(cause, requests.exceptions.ConnectTimeout) or (
        isinstance(cause, requests.exceptions.ConnectionError)
        and "NewConnectionError" in repr(cause)
    )


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
        self._check_tls_files()
        self._clients = [self._make_client(url) for url in self.endpoints]
        self._current = 0
        self._lock = threading.Lock()

    def _check_tls_files(self) -> None:
        for label, path in (
            ("CA", self.tls.cacert),
            ("cert", self.tls.cert),
            ("key", self.tls.key),
        ):
            if path is None:
                continue
            try:
                with open(path, "rb"):
                    pass
            except OSError as e:
                raise ConfigError(f"cannot read TLS {label} file {path}: {e.strerror}") from e
        if bool(self.tls.cert) != bool(self.tls.key):
            raise ConfigError("a client certificate needs both --cert and --key")

    def _make_client(self, url: str) -> Etcd3Client:
        scheme, host, port = _parse_endpoint(url)
        client = Etcd3Client(
            host=host,
            port=port,
            protocol=scheme,
            ca_cert=self.tls.cacert,
            cert_cert=self.tls.cert,
            cert_key=self.tls.key,
            timeout=self.timeout,
            api_path="/v3/",  # etcd >= 3.4; skips a discovery round trip per endpoint
        )
        # Ignore the environment: REQUESTS_CA_BUNDLE would silently replace our CA (seen:
        # "unable to get local issuer certificate"), and HTTP(S)_PROXY must never carry
        # cluster traffic.
        client.session.trust_env = False
        return client

    @property
    def current_endpoint(self) -> str:
        return self.endpoints[self._current]

    # ------------------------------------------------------------ transport

    def _post(self, path: str, payload: dict[str, Any], *, idempotent: bool) -> dict[str, Any]:
        """POST to the current endpoint; on connection trouble try the others once each."""
        errors: list[str] = []
        start = self._current
        for i in range(len(self._clients)):
            index = (start + i) % len(self._clients)
            client = self._clients[index]
            try:
                result = client.post(client.get_url(path), data=json.dumps(payload))
            except (gw_errors.ConnectionFailedError, gw_errors.ConnectionTimeoutError) as e:
                if isinstance(e.__context__, requests.exceptions.SSLError):
                    raise ConfigError(
                        f"TLS failure talking to {self.endpoints[index]}: "
                        f"{_tls_reason(e.__context__)}"
                    ) from e
                errors.append(f"{self.endpoints[index]}: {type(e).__name__}")
                if not idempotent and not _request_never_reached_server(e):
                    self._rotate_from(index)
                    raise Indeterminate(
                        f"etcd {self.endpoints[index]} failed mid-request; outcome unknown"
                    ) from e
                continue
            except gw_errors.Etcd3Exception as e:
                detail = (e.detail_text or "").strip()
                if "SSL" in detail or "certificate" in detail:
                    raise ConfigError(f"TLS failure talking to etcd: {detail}") from e
                raise PiclusterError(f"etcd refused the request: {_etcd_message(detail)}") from e
            except requests.exceptions.SSLError as e:
                raise ConfigError(f"TLS failure talking to {self.endpoints[index]}: {e}") from e
            if index != self._current:
                log.warning("etcd: now using endpoint %s", self.endpoints[index])
                with self._lock:
                    self._current = index
            return result
        self._rotate_from(start)
        raise Unavailable("no etcd endpoint reachable (" + "; ".join(errors) + ")")

    def _rotate_from(self, index: int) -> None:
        with self._lock:
            if self._current != index or len(self._clients) == 1:
                return
            self._current = (index + 1) % len(self._clients)
            log.warning("etcd: now using endpoint %s", self.endpoints[self._current])

    # ------------------------------------------------------------ KV

    def get(self, key: str) -> KV | None:
        res = self._post("/kv/range", {"key": _b64(key)}, idempotent=True)
        kvs = res.get("kvs") or []
        return KV.from_json(kvs[0]) if kvs else None

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
        payload: dict[str, Any] = {
            "key": _b64(prefix),
            "range_end": _b64(prefix_end(prefix)),
            "sort_target": sort_target,
            "sort_order": sort_order,
        }
        if limit:
            payload["limit"] = str(limit)
        if keys_only:
            payload["keys_only"] = True
        if max_create_revision:
            payload["max_create_revision"] = str(max_create_revision)
        if revision:
            payload["revision"] = str(revision)
        res = self._post("/kv/range", payload, idempotent=True)
        kvs = [KV.from_json(kv) for kv in res.get("kvs") or []]
        return kvs, int(res["header"]["revision"])

    def count_prefix(self, prefix: str) -> int:
        payload = {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix)), "count_only": True}
        res = self._post("/kv/range", payload, idempotent=True)
        return int(res.get("count", 0))

    def put(self, key: str, value: str | bytes, lease: int = 0) -> int:
        payload: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            payload["lease"] = str(lease)
        res = self._post("/kv/put", payload, idempotent=False)
        return int(res["header"]["revision"])

    def delete(self, key: str) -> int:
        res = self._post("/kv/deleterange", {"key": _b64(key)}, idempotent=False)
        return int(res.get("deleted", 0))

    def delete_prefix(self, prefix: str) -> int:
        payload = {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix))}
        res = self._post("/kv/deleterange", payload, idempotent=False)
        return int(res.get("deleted", 0))

    def txn(
        self,
        compare: Iterable[dict[str, Any]],
        success: Iterable[dict[str, Any]],
        failure: Iterable[dict[str, Any]] = (),
    ) -> TxnResult:
        payload = {"compare": list(compare), "success": list(success), "failure": list(failure)}
        res = self._post("/kv/txn", payload, idempotent=False)
        ranges = [
            [KV.from_json(kv) for kv in (r.get("response_range") or {}).get("kvs") or []]
            for r in res.get("responses") or []
        ]
        return TxnResult(
            succeeded=bool(res.get("succeeded", False)),
            revision=int(res["header"]["revision"]),
            ranges=ranges,
        )

    # ------------------------------------------------------------ leases

    def grant(self, ttl: int) -> tuple[int, int]:
        """A new lease: (id, granted ttl). A lost grant reply only leaks a lease until its TTL."""
        res = self._post("/lease/grant", {"TTL": str(ttl), "ID": "0"}, idempotent=True)
        if res.get("error"):
            raise PiclusterError(f"etcd refused the lease: {res['error']}")
        return int(res["ID"]), int(res["TTL"])

    def keepalive(self, lease_id: int) -> int:
        """Renew once; returns the remaining TTL, or <= 0 when the lease is gone."""
        res = self._post("/lease/keepalive", {"ID": str(lease_id)}, idempotent=True)
        return int((res.get("result") or {}).get("TTL", -1))

    def revoke(self, lease_id: int) -> None:
        try:
            self._post("/kv/lease/revoke", {"ID": str(lease_id)}, idempotent=True)
        except PiclusterError as e:
            if "not found" not in str(e):
                raise

    def time_to_live(self, lease_id: int) -> int:
        """Seconds left (0 in the last second: the gateway omits zero), -1 once expired."""
        res = self._post("/kv/lease/timetolive", {"ID": str(lease_id)}, idempotent=True)
        return int(res.get("TTL", 0))

    # ------------------------------------------------------------ cluster

    def status(self) -> dict[str, Any]:
        return self._post("/maintenance/status", {}, idempotent=True)

    def members(self) -> list[dict[str, Any]]:
        return list(self._post("/cluster/member/list", {}, idempotent=True).get("members", []))

    def watch(
        self,
        prefix: str,
        on_events: Callable[[list[Event], int], None],
        *,
        start_revision: int,
        is_prefix: bool = True,
        prev_kv: bool = False,
        name: str = "watch",
        on_compacted: Callable[[WatchCompacted], None] | None = None,
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
        for client in self._clients:
            client.session.close()


def _tls_reason(exc: BaseException) -> str:
    text = str(exc)
    for marker in ("certificate verify failed", "CERTIFICATE", "alert", "SSL:"):
        at = text.find(marker)
        if at >= 0:
            return text[at:].split("(_ssl")[0].rstrip(" )'\"")
    return text[:200]


def _etcd_message(detail: str) -> str:
    try:
        body = json.loads(detail)
        return str(body.get("message") or body.get("error") or detail)
    except (ValueError, AttributeError):
        return detail or "unknown error"


class WatchCompacted(PiclusterError):
    """The revision a watch wanted to resume from was compacted away: re-read, then re-watch."""

    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"watch start revision compacted (now at {compact_revision})")
        self.compact_revision = compact_revision


class Watch:
    """A watch that keeps going: reconnects (any endpoint), resumes at last revision + 1.

    `on_events(events, revision)` is called from the watch thread, in order, with every
    event exactly once, and also with an empty list on progress notifications, so that
    `revision` (everything up to it was delivered) keeps moving. A stream that stays silent
    longer than `defaults.WATCH_IDLE_TIMEOUT` is treated as dead and re-created: this is
    the failure mode where etcd restarts and the HTTP stream hangs without an error.
    If the resume revision was compacted, `on_compacted(exc)` runs (if given) and the watch
    stops; the owner re-reads and starts a new one.
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
        on_compacted: Callable[[WatchCompacted], None] | None = None,
        idle_timeout: float = defaults.WATCH_IDLE_TIMEOUT,
        only: str | None = None,
    ) -> None:
        if only not in (None, "PUT", "DELETE"):
            raise ValueError(f"only must be PUT or DELETE, not {only!r}")
        self._filters = {"PUT": ["NODELETE"], "DELETE": ["NOPUT"], None: []}[only]
        self._client = client
        self._key = key
        self._on_events = on_events
        self._on_compacted = on_compacted
        self.next_revision = start_revision
        self._is_prefix = is_prefix
        self._prev_kv = prev_kv
        self._idle_timeout = idle_timeout
        self._stopped = threading.Event()
        self._response: requests.Response | None = None
        self.reconnects = 0
        self.created = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        response = self._response
        if response is not None:
            _interrupt(response)

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
            except WatchCompacted as e:
                log.error("%s: %s", self._thread.name, e)
                if self._on_compacted is not None:
                    self._on_compacted(e)
                return
            except Exception as e:  # the stream may die in many ways; all mean "reconnect"
                if self._stopped.is_set():
                    return
                log.warning(
                    "%s: stream to %s lost (%s); resuming at revision %d",
                    self._thread.name,
                    self._client.current_endpoint,
                    type(e).__name__,
                    self.next_revision,
                )
                self._client._rotate_from(self._client._current)
                self._stopped.wait(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, defaults.RETRY_BACKOFF_MAX)
                self.reconnects += 1

    def _stream_once(self) -> None:
        create: dict[str, Any] = {
            "key": _b64(self._key),
            "start_revision": str(self.next_revision),
            "progress_notify": True,
            "prev_kv": self._prev_kv,
        }
        if self._is_prefix:
            create["range_end"] = _b64(prefix_end(self._key))
        if self._filters:
            create["filters"] = self._filters
        index = self._client._current
        gw = self._client._clients[index]
        response = gw.session.post(
            gw.get_url("/watch"),
            data=json.dumps({"create_request": create}),
            stream=True,
            timeout=(self._client.timeout, self._idle_timeout),
        )
        self._response = response
        try:
            if response.status_code != 200:
                raise ConnectionError(f"watch refused: HTTP {response.status_code}")
            for line in response.iter_lines(chunk_size=None):
                if self._stopped.is_set():
                    return
                if not line.strip():
                    continue
                self._handle(json.loads(line))
            if not self._stopped.is_set():
                raise ConnectionError("watch stream ended")
        finally:
            response.close()
            self._response = None

    def _handle(self, message: dict[str, Any]) -> None:
        if "error" in message:
            raise ConnectionError(f"watch error: {message['error']}")
        result = message.get("result") or {}
        compact = int(result.get("compact_revision", 0))
        if compact:
            raise WatchCompacted(compact)
        if result.get("canceled"):
            raise ConnectionError(f"watch canceled: {result.get('cancel_reason', '')}")
        header_rev = int((result.get("header") or {}).get("revision", 0))
        if result.get("created"):
            self.created.set()
            return
        events = [
            Event(
                type=raw.get("type", "PUT"),
                kv=KV.from_json(raw["kv"]),
                prev_kv=KV.from_json(raw["prev_kv"]) if raw.get("prev_kv") else None,
            )
            for raw in result.get("events") or []
        ]
        # Duplicates can arrive after a reconnect if the server replays; drop them.
        events = [e for e in events if e.revision >= self.next_revision]
        if events:
            last = max(e.revision for e in events)
            self._on_events(events, last)
            self.next_revision = last + 1
        elif header_rev >= self.next_revision:
            # A progress notification: every event up to header_rev was delivered.
            self._on_events([], header_rev)
            self.next_revision = header_rev + 1


def _interrupt(response: requests.Response) -> None:
    """Wake a thread blocked reading `response` from another thread.

    Closing the response here would block on the reader's buffer lock (seen: stop() hung
    until the next byte arrived); shutting the socket down makes the blocked read return.
    """
    try:
        response.raw.shutdown()  # urllib3 >= 2.3 offers exactly this
        return
    except (AttributeError, ValueError, RuntimeError, OSError):
        pass
    sock = getattr(getattr(response.raw, "connection", None), "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def wait_until_reachable(client: EtcdClient, deadline: float) -> None:
    """Block until etcd answers a status request or `deadline` (monotonic) passes."""
    backoff = defaults.RETRY_BACKOFF_MIN
    while True:
        try:
            client.status()
            return
        except Unavailable:
            if time.monotonic() + backoff > deadline:
                raise
            time.sleep(backoff)
            backoff = min(backoff * 2, 1.0)
