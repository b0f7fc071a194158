"""`/metrics`: the agent's Prometheus metrics (observe/metrics.py), for readers and up."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from ..observe.metrics import CONTENT_TYPE
from .auth import Role, requires
from .replies import error_reply

if TYPE_CHECKING:
    from .context import ApiContext


def add_routes(app: web.Application, ctx: ApiContext) -> None:
    @requires(Role.READER)
    async def metrics(_request: web.Request) -> web.Response:
        agent_metrics = getattr(ctx.agent, "metrics", None)
        if agent_metrics is None:
            return error_reply(503, "this API runs without an agent: no metrics")
        # Off the event loop: the readings take the worker's lock.
        body = await ctx.blocking(agent_metrics.exposition)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    app.router.add_get("/metrics", metrics)
