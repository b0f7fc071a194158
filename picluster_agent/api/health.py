"""`/healthz`: the listener answers (a placeholder; the health checks proper are h-obs's)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from .auth import public
from .replies import json_reply

if TYPE_CHECKING:
    from .context import ApiContext


def add_routes(app: web.Application, ctx: ApiContext) -> None:
    @public
    async def healthz(_request: web.Request) -> web.Response:
        return json_reply({"ok": True, "node": ctx.node})

    app.router.add_get("/healthz", healthz)
