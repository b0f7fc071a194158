"""JSON answers, and every failure as one line: `{"error": "..."}` with a fitting status."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from ..errors import (
    ConfigError,
    NotFound,
    PermissionDenied,
    PiclusterError,
    RequestTooLarge,
    Unavailable,
)

log = logging.getLogger(__name__)


def json_reply(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


def error_reply(status: int, message: str) -> web.Response:
    return web.json_response({"error": one_line(message)}, status=status)


def one_line(message: str) -> str:
    return " ".join(str(message).split()) or "error"


def status_for(e: PiclusterError) -> int:
    """The HTTP status of a picluster error, as the CLI's exit code is chosen."""
    if isinstance(e, PermissionDenied):
        # etcd refused this agent's own identity: the caller did nothing wrong.
        return 502
    if isinstance(e, ConfigError):
        return 400
    if isinstance(e, RequestTooLarge):
        return 413
    if isinstance(e, NotFound):
        return 404
    if isinstance(e, Unavailable):
        return 503
    return 500


@web.middleware
async def errors_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """The outermost middleware: whatever went wrong, the caller reads one JSON line."""
    try:
        return await handler(request)  # type: ignore[no-any-return]
    except web.HTTPException as e:
        if e.status < 400:
            raise
        text = e.text if e.text and not e.text.startswith(f"{e.status}:") else e.reason
        reply = error_reply(e.status, text or e.reason)
        for name in ("Allow", "WWW-Authenticate"):
            if name in e.headers:
                reply.headers[name] = e.headers[name]
        return reply
    except PiclusterError as e:
        status = status_for(e)
        if status >= 500 and status != 503:
            log.error("API %s %s: %s", request.method, request.path, e)
        return error_reply(status, str(e))
    except Exception as e:
        log.exception("API %s %s failed", request.method, request.path)
        return error_reply(500, f"internal error: {type(e).__name__}: {e}")
