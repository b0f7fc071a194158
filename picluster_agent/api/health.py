"""`/healthz` and `/readyz`, for systemd, load balancers and people: public (no certificate).

`/healthz`: the agent is alive: this listener answers and none of its loops is stuck (the
same rule as systemd's watchdog, liveness.py). `/readyz`: it can do its work: its session
(lease) is connected and etcd answers a read now (within READ_TIMEOUT). Each answers 200 or
503 with a small JSON body that says why.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..errors import PiclusterError
from .auth import public
from .replies import json_reply

if TYPE_CHECKING:
    from .context import ApiContext

# A readiness probe must answer before the prober gives up (Prometheus, a balancer: ~1-10 s).
READ_TIMEOUT = 1.0


class SharedRead:
    """One etcd read at a time for the readiness probes; probes that come while it runs
    wait for the same answer. Each probe waits at most READ_TIMEOUT, and the read itself
    asks each endpoint for at most that long: a prober that asks faster than etcd answers,
    or an etcd gone silent, holds at most one of the API's threads, never the pool."""

    def __init__(self, read: Callable[[], Awaitable[object]], timeout: float = READ_TIMEOUT):
        self._read = read
        self._timeout = timeout
        self._running: asyncio.Task[object] | None = None

    async def check(self) -> str:
        """`ok`, or why etcd did not answer."""
        if self._running is None or self._running.done():
            self._running = asyncio.ensure_future(self._read())
            # Nobody may be left to await it (every prober timed out): take its outcome.
            self._running.add_done_callback(lambda t: t.cancelled() or t.exception())
        try:
            await asyncio.wait_for(asyncio.shield(self._running), self._timeout)
        except TimeoutError:
            return f"etcd did not answer a read within {self._timeout:g} s"
        except PiclusterError as e:
            return str(e)
        return "ok"


def add_routes(app: web.Application, ctx: ApiContext) -> None:
    etcd_read = SharedRead(
        lambda: ctx.blocking(ctx.etcd.get, ctx.keys.leader, timeout=READ_TIMEOUT)
    )

    @public
    async def healthz(_request: web.Request) -> web.Response:
        stuck = _stuck(ctx.agent)
        body = {"alive": not stuck, "node": ctx.node, "stuck": stuck}
        return json_reply(body, status=503 if stuck else 200)

    @public
    async def readyz(_request: web.Request) -> web.Response:
        session = getattr(ctx.agent, "session", None)
        state = session.state.value if session is not None else "none"
        etcd = await etcd_read.check()
        ready = state == "connected" and etcd == "ok"
        body = {"ready": ready, "node": ctx.node, "session": state, "etcd": etcd}
        return json_reply(body, status=200 if ready else 503)

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)


def _stuck(agent: Any) -> list[str]:
    liveness = getattr(agent, "liveness", None)
    return sorted(liveness.stuck()) if liveness is not None else []
