"""The HTTPS listener: an aiohttp application in a thread of its own, inside the agent.

The agent's own threads stay synchronous; this thread runs one asyncio loop, and routes
hand their blocking etcd calls to `ApiContext.blocking`. Each feature's routes live in a
module of this package with `add_routes(app, ctx)`, listed once in ROUTE_MODULES; every
route declares the least role it needs (auth.py), and the server refuses to start with one
that does not.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from aiohttp import web

from ..client import Client
from ..config import AgentConfig
from ..errors import ConfigError
from ..etcd.adapter import EtcdClient
from . import describe, health, jobs, logs, metrics, page
from .auth import UserDirectory, auth_middleware, declared_role
from .context import ApiContext
from .listener import (
    HANDSHAKE_TIMEOUT,
    IDLE_TIMEOUT,
    MAX_CONNECTIONS,
    WRITE_TIMEOUT,
    BoundedTLSSite,
)
from .replies import errors_middleware

log = logging.getLogger(__name__)

# Every route module, in one place: each has `add_routes(app: web.Application, ctx)`.
ROUTE_MODULES: list[ModuleType] = [health, metrics, describe, jobs, logs, page]

CONTEXT = web.AppKey("picluster_context", ApiContext)
# How long a stopping server lets requests in flight finish before it cancels them.
SHUTDOWN_GRACE = 2.0


def server_tls(cacert: str, cert: str, key: str) -> ssl.SSLContext:
    """TLS that asks each caller for a certificate of the cluster CA but lets one without
    in (CERT_OPTIONAL): the routes decide (auth.py). A certificate of another CA, or an
    expired one, fails the handshake."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"api_cert/api_key ({cert}, {key}) cannot be used: {_why(e)}") from e
    try:
        context.load_verify_locations(cacert)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"cacert {cacert} cannot be used for the API: {_why(e)}") from e
    context.verify_mode = ssl.CERT_OPTIONAL
    return context


def _why(e: OSError | ssl.SSLError) -> str:
    return getattr(e, "strerror", None) or getattr(e, "reason", None) or str(e)


def build_app(ctx: ApiContext, modules: Sequence[ModuleType] = ROUTE_MODULES) -> web.Application:
    app = web.Application(
        middlewares=[errors_middleware, auth_middleware(ctx.users)],
        client_max_size=jobs.MAX_BODY_BYTES,
    )
    app[CONTEXT] = ctx
    for module in modules:
        module.add_routes(app, ctx)
    unguarded = [
        f"{route.method} {route.resource.canonical if route.resource else '?'}"
        for route in app.router.routes()
        if route.method != "HEAD" and declared_role(route.handler) is None
    ]
    if unguarded:
        # A programming error: fail the agent's start, never serve a route unguarded.
        raise TypeError(f"API routes without a declared role: {', '.join(unguarded)}")
    return app


def context_of(request: web.Request) -> ApiContext:
    return request.app[CONTEXT]


class ApiServer:
    """Serves `ctx` on host:port with `tls` from its own thread; start() returns once
    listening (or raises ConfigError: the port is taken, the certificate unusable)."""

    def __init__(
        self,
        ctx: ApiContext,
        *,
        host: str,
        port: int,
        tls: ssl.SSLContext,
        modules: Sequence[ModuleType] = ROUTE_MODULES,
        max_connections: int = MAX_CONNECTIONS,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
        write_timeout: float = WRITE_TIMEOUT,
    ) -> None:
        """The bounds on callers (listener.py) are arguments for the tests' sake."""
        self.ctx = ctx
        self.host = host
        self.port = port
        self._tls = tls
        self._bounds = (max_connections, handshake_timeout, idle_timeout, write_timeout)
        self._app = build_app(ctx, modules)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._listening = threading.Event()
        self._failure: BaseException | None = None

    def start(self) -> None:
        self.ctx.users.start()
        self._thread = threading.Thread(target=self._serve, name="api", daemon=True)
        self._thread.start()
        self._listening.wait()
        if self._failure is not None:
            self.ctx.users.stop()
            raise self._failure
        log.info("HTTPS API listening on %s:%d", self.host, self.port)

    def stop(self) -> None:
        if self._thread is None:
            return
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)
        self._thread.join(SHUTDOWN_GRACE + 5)
        self.ctx.executor.shutdown(wait=False, cancel_futures=True)
        self.ctx.users.stop()
        self._thread = None

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as e:  # reported by start(), or logged once serving
            if not self._listening.is_set():
                self._failure = e
            else:
                log.exception("the HTTPS API stopped")
        finally:
            self._listening.set()
            loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        max_connections, handshake_timeout, idle_timeout, write_timeout = self._bounds
        runner = web.AppRunner(
            self._app,
            handle_signals=False,
            access_log=None,
            shutdown_timeout=SHUTDOWN_GRACE,
            keepalive_timeout=idle_timeout,
        )
        await runner.setup()
        try:
            site = BoundedTLSSite(
                runner,
                self.host,
                self.port,
                ssl_context=self._tls,
                max_connections=max_connections,
                handshake_timeout=handshake_timeout,
                write_timeout=write_timeout,
            )
            try:
                await site.start()
            except OSError as e:
                raise ConfigError(
                    f"api_port: cannot listen on {self.host}:{self.port}: {e.strerror or e}"
                ) from e
            self._listening.set()
            await self._stop.wait()
        finally:
            await runner.cleanup()


def make_server(cfg: AgentConfig, etcd: EtcdClient, agent: Any = None) -> ApiServer:
    """The API of the agent configured by `cfg`, over the agent's own etcd client."""
    assert cfg.api_cert is not None and cfg.api_key is not None
    assert cfg.connection.cacert is not None  # config.py refuses an API without it
    client = Client.from_connection(cfg.connection, etcd)
    ctx = ApiContext(
        cfg=cfg, etcd=etcd, client=client, users=UserDirectory(etcd, client.keys), agent=agent
    )
    tls = server_tls(cfg.connection.cacert, cfg.api_cert, cfg.api_key)
    return ApiServer(ctx, host=cfg.api_listen, port=cfg.api_port, tls=tls)
