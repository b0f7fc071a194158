"""`/healthz` and `/readyz`, for systemd, load balancers and people: public (no certificate).

`/healthz`: the agent is alive: this listener answers and none of its loops is stuck (the
same rule as systemd's watchdog, liveness.py). `/readyz`: it can do its work: its session
(lease) is connected and etcd answers a read now. Each answers 200 or 503 with a small JSON
body that says why.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..errors import PiclusterError
from .auth import public
from .replies import json_reply

if TYPE_CHECKING:
    from .context import ApiContext

# A readiness probe must answer before the prober gives up (Prometheus, a balancer: ~1-10 s).
READ_TIMEOUT = 1.0


def add_routes(app: web.Application, ctx: ApiContext) -> None:
    @public
    async def healthz(_request: web.Request) -> web.Response:
        stuck = _stuck(ctx.agent)
        body = {"alive": not stuck, "node": ctx.node, "stuck": stuck}
        return json_reply(body, status=503 if stuck else 200)

    @public
    async def readyz(_request: web.Request) -> web.Response:
        session = getattr(ctx.agent, "session", None)
        state = session.state.value if session is not None else "none"
        try:
            await ctx.blocking(ctx.etcd.get, ctx.keys.leader)
            etcd = "ok"
        except PiclusterError as e:
            etcd = str(e)
        ready = state == "connected" and etcd == "ok"
        body = {"ready": ready, "node": ctx.node, "session": state, "etcd": etcd}
        return json_reply(body, status=200 if ready else 503)

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)


def _stuck(agent: Any) -> list[str]:
    liveness = getattr(agent, "liveness", None)
    return sorted(liveness.stuck()) if liveness is not None else []
