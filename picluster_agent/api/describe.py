"""`/v1/openapi.json`: the API's description (openapi.yaml beside this module)."""

from __future__ import annotations

import functools
from importlib import resources
from typing import TYPE_CHECKING, Any

import yaml
from aiohttp import web

from .auth import public
from .replies import json_reply

if TYPE_CHECKING:
    from .context import ApiContext


@functools.cache
def openapi() -> dict[str, Any]:
    text = resources.files(__package__).joinpath("openapi.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)  # type: ignore[no-any-return]


def add_routes(app: web.Application, _ctx: ApiContext) -> None:
    @public
    async def describe(_request: web.Request) -> web.Response:
        return json_reply(openapi())

    app.router.add_get("/v1/openapi.json", describe)
