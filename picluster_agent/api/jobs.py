"""Jobs over HTTPS: submit, list, status, cancel, wait (docs/API.md).

Every route is the Python API (client.py) that the CLI uses, run over the agent's etcd
client: the same validation, the same transactions, the same idempotent ids. A submit
answers only once etcd has committed the job (or found it committed before: same id).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..client import ArrayStatus, JobStatus, PartialSubmit
from ..errors import ConfigError, NotFound, Unavailable
from ..etcd.keys import validate_job_id, validate_node_name
from ..jobs.arrays import ArrayRange, member_specs, parse_array
from ..jobs.ids import new_job_id
from ..jobs.records import JobState
from ..jobs.spec import MAX_SPEC_BYTES, JobSpec, SpecError, parse_spec
from .auth import Role, requires
from .finals import FinalStates
from .listener import IDLE_TIMEOUT
from .replies import json_reply

if TYPE_CHECKING:
    from .context import ApiContext

# A long poll waits at most this long (seconds), and this long when not told.
MAX_WAIT = 300.0
DEFAULT_WAIT = 30.0
# Bodies past this are refused by aiohttp (413) before they are read; up to it, the spec
# check itself says how large the spec is and what the limit is.
MAX_BODY_BYTES = 2 * MAX_SPEC_BYTES
MAX_LIST = 10_000
# Seconds a submission's body may stop arriving before the request ends (408): a caller
# gone mid-upload (its host lost power, a Content-Length larger than what it sends) held
# the handler and the connection for ever, as the idle bound counts only between requests.
BODY_STALL = IDLE_TIMEOUT


def add_routes(app: web.Application, ctx: ApiContext) -> None:
    client = ctx.client
    finals = FinalStates(ctx.etcd, ctx.keys)

    async def stop_watching(_app: web.Application) -> None:
        finals.close()

    app.on_cleanup.append(stop_watching)

    @requires(Role.SUBMITTER)
    async def submit(request: web.Request) -> web.Response:
        array = parse_array(request.query["array"]) if "array" in request.query else None
        body = await _read_body(request)
        job_id = _chosen_id(body) or new_job_id()
        spec = parse_spec(body, job_id)  # the one gate every submission passes
        if spec.submitted_at is None:
            spec = dataclasses.replace(spec, submitted_at=time.time())
        if array is not None:
            return await submit_array(job_id, spec, array)
        result = await ctx.blocking(client.submit_spec, spec, id=job_id)
        # 201: this request made the job; 200: it existed already (a retry with its id).
        return json_reply(
            {"id": result.id, "accepted": result.accepted}, status=201 if result.accepted else 200
        )

    async def submit_array(parent: str, spec: JobSpec, array: ArrayRange) -> web.Response:
        specs, ids = member_specs(spec, parent, array.indices, array.max_running)
        try:
            results = await ctx.blocking(client.submit_many, specs, ids)
        except PartialSubmit as e:
            # The same parent id again settles the rest and creates nothing twice.
            raise Unavailable(f"array {parent}: {e}; submit again with id {parent!r}") from e
        accepted = sum(r.accepted for r in results)
        return json_reply(
            {"id": parent, "array": True, "size": len(results), "accepted": accepted,
             "members": [r.id for r in results]},
            status=201 if accepted else 200,
        )  # fmt: skip

    @requires(Role.READER)
    async def list_jobs(request: web.Request) -> web.Response:
        q = request.query
        state = _state(q.get("state"))
        node = validate_node_name(q["node"]) if "node" in q else None
        limit = _integer(q.get("limit"), "limit", 1, MAX_LIST)
        active = _flag(q.get("active"), "active")
        found = await ctx.blocking(client.jobs, state, node, limit, active=active)
        return json_reply({"jobs": [_status(s) for s in found]})

    def read(job_id: str) -> dict[str, Any]:
        """A job's status, or an array's (its parent id stands for its members), as the
        CLI's `status` reads them."""
        try:
            return _status(client.status(job_id))
        except NotFound:
            return _array(client.array(job_id))  # NotFound again: neither

    @requires(Role.READER)
    async def status(request: web.Request) -> web.Response:
        job_id = validate_job_id(request.match_info["id"])
        return json_reply(await ctx.blocking(read, job_id))

    @requires(Role.SUBMITTER)
    async def cancel(request: web.Request) -> web.Response:
        job_id = validate_job_id(request.match_info["id"])
        try:
            before = await ctx.blocking(client.cancel, job_id)
        except NotFound:
            array = await ctx.blocking(client.cancel_array, job_id)
            requested = sum(not m.state.final for m in array.members)
            return json_reply(
                {**_array(array), "cancel_requested": requested > 0, "requested": requested},
                status=202 if requested else 200,
            )
        return json_reply(
            {**_status(before), "cancel_requested": not before.state.final},
            status=200 if before.state.final else 202,
        )

    @requires(Role.READER)
    async def wait(request: web.Request) -> web.Response:
        job_id = validate_job_id(request.match_info["id"])
        timeout = _seconds(request.query.get("timeout"), "timeout", MAX_WAIT, DEFAULT_WAIT)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        await ctx.blocking(finals.ensure_watching)
        with finals.waiter(job_id) as woken:
            while True:
                # Cleared before the read: a job (or member) that ends between the read and
                # the wait still wakes it.
                woken.clear()
                current = await ctx.blocking(read, job_id)
                left = deadline - loop.time()
                if current["final"] or left <= 0:
                    return json_reply(current)
                await woken.wait(left)  # woken, or the time is up: read once more

    app.router.add_post("/v1/jobs", submit)
    app.router.add_get("/v1/jobs", list_jobs)
    app.router.add_get("/v1/jobs/{id}", status)
    app.router.add_post("/v1/jobs/{id}/cancel", cancel)
    app.router.add_get("/v1/jobs/{id}/wait", wait)


async def _read_body(request: web.Request) -> bytes:
    """The body, as `request.read()` reads it (413 past MAX_BODY_BYTES), but each wait for
    more of it lasts at most BODY_STALL seconds (408)."""
    body = bytearray()
    while True:
        try:
            chunk = await asyncio.wait_for(request.content.readany(), BODY_STALL)
        except TimeoutError:
            raise web.HTTPRequestTimeout(
                text=f"the request body stopped arriving (nothing for {BODY_STALL:g} s)"
            ) from None
        if not chunk:
            return bytes(body)
        body.extend(chunk)
        if len(body) > MAX_BODY_BYTES:
            raise web.HTTPRequestEntityTooLarge(MAX_BODY_BYTES, len(body))


def _status(s: JobStatus) -> dict[str, Any]:
    return {**s.to_dict(), "final": s.state.final}


def _array(a: ArrayStatus) -> dict[str, Any]:
    return {**a.to_dict(), "final": all(m.state.final for m in a.members)}


def _chosen_id(body: bytes) -> str | None:
    """The `id` a submission names, if any; any problem is left to parse_spec to report."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    given = data.get("id") if isinstance(data, dict) else None
    if given is None:
        return None
    if not isinstance(given, str):
        raise SpecError(f"must be a job id (a string), got {type(given).__name__}", field="id")
    try:
        return validate_job_id(given)
    except ConfigError as e:
        raise SpecError(str(e), field="id") from e


def _state(text: str | None) -> JobState | None:
    if text is None:
        return None
    try:
        return JobState(text)
    except ValueError:
        names = ", ".join(s.value for s in JobState)
        raise ConfigError(f"state: {text!r} is not one of {names}") from None


def _integer(text: str | None, name: str, low: int, high: int) -> int | None:
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ConfigError(f"{name}: must be an integer from {low} to {high}, got {text!r}")
    return value


def _flag(text: str | None, name: str) -> bool:
    if text in (None, "0", "false"):
        return False
    if text in ("1", "true"):
        return True
    raise ConfigError(f"{name}: must be 1 or 0 (true or false), got {text!r}")


def _seconds(text: str | None, name: str, high: float, default: float) -> float:
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= high:  # NaN fails this too
        raise ConfigError(f"{name}: must be seconds from 0 to {high:g}, got {text!r}")
    return value
