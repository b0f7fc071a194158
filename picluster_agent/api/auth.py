"""Who is calling, and may they: certificate -> identity -> role, checked per route.

TLS asks every caller for a certificate of the cluster CA but does not require one, so that
routes declared `public` (health checks) answer anyone. Every other route declares the least
role it needs with `requires(Role.X)`; the middleware refuses a caller without a certificate
(401) or whose role is below (403), before the handler runs.

A certificate's CN is an etcd user name (docs/SECURITY.md). Its role comes from
`<prefix>/users/<name>` (value: the etcd role, e.g. `picluster-submitter`), which the
playbooks write as etcd root next to the etcd user and delete with it when a person or a
node is revoked. The agents watch that directory (`UserDirectory`), so a revocation holds
for the API within the watch's delay (milliseconds), and a name the watched copy lacks is
read from etcd before it is refused, so an add holds at once. No entry: no access, whatever
the certificate.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web

from ..errors import PiclusterError, Unavailable
from ..etcd.adapter import EtcdClient, Event, WatchCompacted
from ..etcd.keys import Keys

log = logging.getLogger(__name__)


class Role(enum.IntEnum):
    """The API's roles, in order: each may do what the ones below it may."""

    READER = 1
    SUBMITTER = 2
    OPERATOR = 3
    AGENT = 4

    @property
    def label(self) -> str:
        return self.name.lower()


# `<prefix>/users/<name>` holds the etcd role's name (roles/etcd/files/rbac.yml).
ETCD_ROLES = {
    "picluster-reader": Role.READER,
    "picluster-submitter": Role.SUBMITTER,
    "picluster-operator": Role.OPERATOR,
    "picluster-agent": Role.AGENT,
}


@dataclass(frozen=True)
class Identity:
    name: str  # the certificate's CN, an etcd user name
    role: Role


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
H = TypeVar("H", bound=Handler)

_LEAST_ROLE = "_picluster_least_role"
_PUBLIC = "public"


def requires(role: Role) -> Callable[[H], H]:
    """Declare the least role a route's handler needs."""

    def mark(handler: H) -> H:
        setattr(handler, _LEAST_ROLE, role)
        return handler

    return mark


def public(handler: H) -> H:
    """Declare a route that answers without a certificate (health checks only)."""
    setattr(handler, _LEAST_ROLE, _PUBLIC)
    return handler


def declared_role(handler: Any) -> Role | str | None:
    """What `requires`/`public` declared on `handler` (None: nothing)."""
    return getattr(handler, _LEAST_ROLE, None)


IDENTITY = web.RequestKey("picluster_identity", Identity)


def identity(request: web.Request) -> Identity:
    """The caller of a route that `requires` a role (set by the middleware)."""
    return request[IDENTITY]


def peer_name(request: web.Request) -> str | None:
    """The CN of the caller's certificate, once TLS has verified it against the cluster CA."""
    transport = request.transport
    cert = transport.get_extra_info("peercert") if transport is not None else None
    if not cert:
        return None
    for rdn in cert.get("subject", ()):
        for attr, value in rdn:
            if attr == "commonName":
                return str(value)
    return None


class UserDirectory:
    """`<prefix>/users/`, read once and then followed by a watch; thread-safe."""

    def __init__(self, etcd: EtcdClient, keys: Keys) -> None:
        self._etcd = etcd
        self._keys = keys
        self._lock = threading.Lock()
        self._roles: dict[str, str] | None = None  # None: never read yet
        self._watch: Any = None
        self._stopped = threading.Event()
        self._reload_wanted = threading.Event()
        self._loaded = threading.Event()
        self._thread = threading.Thread(target=self._run, name="api-users", daemon=True)

    def start(self) -> UserDirectory:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._reload_wanted.set()
        watch = self._watch
        if watch is not None:
            watch.stop()
        self._thread.join(5)

    def role_of(self, name: str) -> Role | None:
        """The role of etcd user `name`, None if it has none (unknown or revoked)."""
        with self._lock:
            roles = self._roles
            if roles is None:
                raise Unavailable("the list of users has not been read from etcd yet")
            return ETCD_ROLES.get(roles.get(name, ""))

    def read_role_of(self, name: str) -> Role | None:
        """The role of `name` as etcd has it now (blocking): for a name the watched copy
        lacks, which may be a user added a moment ago whose put the watch has not yet
        delivered."""
        kv = self._etcd.get(self._keys.user(name))
        return None if kv is None else ETCD_ROLES.get(_stored_role(kv.value))

    async def admitted_role_of(self, name: str) -> Role | None:
        """The watched copy's answer; for a name it lacks, etcd's, so that a user can call
        the API as soon as their add returned (read-your-writes). A revocation is followed
        through the watch alone: a revoked caller may be admitted for as long as the watch
        lags (milliseconds), never longer."""
        role = self.role_of(name)
        if role is not None:
            return role
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self.read_role_of, name)

    def wait_loaded(self, timeout: float) -> bool:
        return self._loaded.wait(timeout)

    def _run(self) -> None:
        # Read, then watch from just after the read; on compaction read again.
        backoff = 0.1
        while not self._stopped.is_set():
            self._reload_wanted.clear()
            try:
                self._load_and_watch()
                backoff = 0.1
            except PiclusterError as e:
                log.warning("API users not read (%s); retrying in %.1fs", e, backoff)
                self._stopped.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            self._reload_wanted.wait()
            if self._watch is not None:
                self._watch.stop()

    def _load_and_watch(self) -> None:
        kvs, revision = self._etcd.get_prefix(self._keys.users_dir)
        roles = {}
        for kv in kvs:
            name = self._keys.user_of(kv.key)
            if name is not None:
                roles[name] = _stored_role(kv.value)
        with self._lock:
            self._roles = roles
        self._loaded.set()
        self._watch = self._etcd.watch(
            self._keys.users_dir,
            self._on_events,
            start_revision=revision + 1,
            name="api-users-watch",
            on_compacted=self._on_compacted,
        )

    def _on_events(self, events: list[Event], _revision: int) -> None:
        with self._lock:
            assert self._roles is not None
            for e in events:
                name = self._keys.user_of(e.kv.key)
                if name is None:
                    continue
                if e.type == "DELETE":
                    self._roles.pop(name, None)
                else:
                    self._roles[name] = _stored_role(e.kv.value)

    def _on_compacted(self, _e: WatchCompacted) -> None:
        self._reload_wanted.set()


def _stored_role(value: bytes) -> str:
    """The etcd role a `<prefix>/users/<name>` value names."""
    return value.decode("utf-8", "replace").strip()


def auth_middleware(directory: UserDirectory) -> Any:
    """Refuse a caller the route's declared role does not admit, before the handler runs."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route
        if request.match_info.http_exception is not None:
            return await handler(request)  # no such route (404/405): nothing to guard
        least = declared_role(route.handler)
        if least == _PUBLIC:
            return await handler(request)
        if not isinstance(least, Role):
            # server.py refuses such routes at start; never serve one unguarded.
            raise web.HTTPForbidden(text="this route declares no role")
        name = peer_name(request)
        if name is None:
            raise web.HTTPUnauthorized(
                text="a client certificate of the cluster CA is required for this route"
            )
        role = await directory.admitted_role_of(name)
        if role is None:
            raise web.HTTPForbidden(
                text=f"{name} is not a user of this cluster (never added, or revoked)"
            )
        if role < least:
            raise web.HTTPForbidden(
                text=f"{name} is a {role.label}; this needs a {least.label} or more"
            )
        request[IDENTITY] = Identity(name, role)
        return await handler(request)

    return check
