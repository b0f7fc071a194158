"""The status page: `/` and `/ui/...` (static files shipped in the package), the JSON it
polls, `/v1/ui/state` and `/v1/ui/jobs/{id}/tail`, and a running job's output as it is
written, `/v1/ui/jobs/{id}/live`. Read-only; a reader may see it.

Several browsers polling every second share one etcd snapshot per `STATE_MAX_AGE`, so the
page costs the cluster the same with one viewer or ten. A job's live output is on the node
that runs it: this agent follows it there (joblogs, the agent's own certificate) and passes
it on, so that the browser talks to one origin with one certificate.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import json
import threading
import time
from importlib import resources
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .. import joblogs
from ..client import Client
from ..errors import NotFound, PiclusterError
from ..etcd.keys import validate_job_id
from ..jobs.records import JobResult, UnreadableRecord
from ..ui.snapshot import LeaderHistory, read_snapshot
from ..ui.state import ParsedRecords, build_state
from .auth import Role, requires
from .replies import json_reply

if TYPE_CHECKING:
    from .context import ApiContext

STATE_MAX_AGE = 0.8  # seconds a built state is served again before etcd is read anew
# Live outputs followed at once by one agent; each holds a thread of the API's pool. A page
# refused one shows the tail recorded in etcd instead.
LIVE_TAILS = 8
LIVE_CHUNKS = 64  # pieces of output waiting for a slow browser before the follower waits
LEFT_CHECK = 1.0  # seconds between looks whether the browser of a quiet live output left
STATIC_TYPES = {".html": "text/html", ".css": "text/css", ".js": "text/javascript"}
_STATIC = resources.files("picluster_agent.ui") / "static"


def add_routes(app: web.Application, ctx: ApiContext) -> None:
    history = LeaderHistory(ctx.etcd, ctx.keys)
    parsed = ParsedRecords()  # used by one build at a time (_StateCache)
    cache = _StateCache()

    def state_now() -> dict[str, Any]:
        snap = read_snapshot(ctx.etcd, ctx.keys, history)
        return build_state(snap, ctx.keys, ctx.node, parsed)

    @requires(Role.READER)
    async def index(_request: web.Request) -> web.Response:
        return _static_file("index.html")

    @requires(Role.READER)
    async def static(request: web.Request) -> web.Response:
        return _static_file(request.match_info["name"])

    def state_json() -> bytes:
        return json.dumps(state_now(), separators=(",", ":")).encode()

    @requires(Role.READER)
    async def state(_request: web.Request) -> web.Response:
        body = await cache.get(lambda: ctx.blocking(state_json))
        return web.Response(body=body, content_type="application/json")

    @requires(Role.READER)
    async def tail(request: web.Request) -> web.Response:
        job_id = validate_job_id(request.match_info["id"])
        return json_reply(await ctx.blocking(_recorded_tail, ctx, job_id))

    live_tails = asyncio.BoundedSemaphore(LIVE_TAILS)
    nodes_client = _nodes_client(ctx)

    @requires(Role.READER)
    async def live(request: web.Request) -> web.StreamResponse:
        job_id = validate_job_id(request.match_info["id"])
        if live_tails.locked():
            raise web.HTTPTooManyRequests(text=f"{LIVE_TAILS} live outputs are followed already")
        async with live_tails:
            return await _follow(request, ctx, nodes_client, job_id)

    app.router.add_get("/", index)
    app.router.add_get("/ui/{name}", static)
    app.router.add_get("/v1/ui/state", state)
    app.router.add_get("/v1/ui/jobs/{id}/tail", tail)
    app.router.add_get("/v1/ui/jobs/{id}/live", live)


def _static_file(name: str) -> web.Response:
    kind = next((t for suffix, t in STATIC_TYPES.items() if name.endswith(suffix)), None)
    # Only plain names of the package's own files: no path reaches outside static/.
    if kind is None or "/" in name or name.startswith("."):
        raise web.HTTPNotFound(text=f"no such file: {name}")
    file = _STATIC / name
    if not file.is_file():
        raise web.HTTPNotFound(text=f"no such file: {name}")
    return web.Response(
        body=file.read_bytes(),
        content_type=kind,
        charset="utf-8",
        headers={
            "Cache-Control": "no-cache",
            # The page loads nothing from elsewhere and runs no inline script.
            "Content-Security-Policy": "default-src 'self'; img-src 'self' data:",
            "X-Content-Type-Options": "nosniff",
        },
    )


def _recorded_tail(ctx: ApiContext, job_id: str) -> dict[str, Any]:
    """The output tails etcd holds for a job: its last finished attempt's (results/<id>)."""
    if ctx.etcd.get(ctx.keys.job(job_id)) is None:
        raise NotFound(f"job {job_id} not found")
    kv = ctx.etcd.get(ctx.keys.result(job_id))
    empty = {"id": job_id, "attempt": None, "node": None, "stdout": "", "stderr": ""}
    if kv is None:
        return empty
    try:
        result = JobResult.from_json(kv.value)
    except UnreadableRecord:
        return empty
    return {
        "id": job_id,
        "attempt": result.attempt,
        "node": result.node,
        "stdout": result.stdout_tail if isinstance(result.stdout_tail, str) else "",
        "stderr": result.stderr_tail if isinstance(result.stderr_tail, str) else "",
    }


def _nodes_client(ctx: ApiContext) -> Client:
    """This agent as a caller of the other agents' APIs: its etcd identity when it has one,
    else its API certificate (both name the agent; the cluster CA checks the nodes)."""
    conn = ctx.cfg.connection
    if not (conn.cert and conn.key):
        conn = dataclasses.replace(conn, cert=ctx.cfg.api_cert, key=ctx.cfg.api_key)
    return Client.from_connection(conn, ctx.etcd)


async def _follow(
    request: web.Request, ctx: ApiContext, client: Client, job_id: str
) -> web.StreamResponse:
    """Stream the job's stdout and stderr as text, as written, until it ends or the browser
    goes away; notes (another attempt, a node gone) and a failure as lines in brackets."""
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/plain; charset=utf-8",
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        }
    )
    await response.prepare(request)
    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue[bytes | None] = asyncio.Queue(LIVE_CHUNKS)
    stop = threading.Event()

    def send(data: bytes | None) -> None:
        # From the follower's thread: waits while the browser is behind, gives up once it left.
        future = asyncio.run_coroutine_threadsafe(pieces.put(data), loop)
        while not stop.is_set():
            try:
                future.result(timeout=1)
                return
            except concurrent.futures.TimeoutError:
                continue
        future.cancel()

    def follow() -> None:
        try:
            joblogs.follow(
                client,
                job_id,
                on_output=lambda _stream, data: send(data),
                on_note=lambda line: send(f"\n[{line}]\n".encode()),
                stop=stop,
            )
        except PiclusterError as e:
            send(f"\n[output not available: {e}]\n".encode())
        finally:
            send(None)

    done = loop.run_in_executor(ctx.executor, follow)
    try:
        while True:
            try:
                data = await asyncio.wait_for(pieces.get(), LEFT_CHECK)
            except TimeoutError:
                # A quiet job: nothing is written, so look whether the browser is still there.
                if request.transport is None:
                    break
                continue
            if data is None:
                await response.write_eof()
                break
            await response.write(data)
    except (ConnectionResetError, asyncio.CancelledError):
        pass  # the browser went away (another job picked, page closed)
    finally:
        stop.set()
        # The slot (a thread of the pool) stays taken until the follower has seen `stop`.
        await asyncio.wait([done])
    return response


class _StateCache:
    """One build at a time; callers within STATE_MAX_AGE of the last build get it again
    (encoded once)."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._built_at = 0.0
        self._state: bytes | None = None

    async def get(self, build: Any) -> bytes:
        async with self._lock:
            if self._state is None or time.monotonic() - self._built_at > STATE_MAX_AGE:
                self._state = await build()
                self._built_at = time.monotonic()
            return self._state
