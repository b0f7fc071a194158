"""An attempt's output, from the node that runs or ran it (docs/API.md, "Logs").

    GET /v1/jobs/{id}/logs?stream=stdout|stderr&attempt=N&offset=B&follow=1&format=raw|json

Only the node that ran an attempt has its output (node/outputs.py); the CLI finds that node
in etcd (the job record names it) and asks it here. Without `attempt`: the latest attempt
this node has of the job. `offset`: start at this byte of the stream (to resume).

- `format=raw` (the default without `follow`): the bytes as written; bytes dropped by the
  node's output cap are replaced by one line saying how many.
- `format=json` (the default with `follow`): one JSON object per line: `{"offset": B,
  "text": "..."}` (or `"base64"` for bytes that are not UTF-8), `{"offset": B, "dropped":
  N}` (N = -1: cut back), and last `{"end": true, "running": false, "outcome": {...}}`
  with the attempt's exit code, signal, timeout, cancel and error as the node saw them
  (`outcome` is null when this agent did not see it end: it was restarted since).
- `follow=1`: keeps streaming new bytes as the job writes them (a new look every
  outputs.FOLLOW_POLL seconds) and ends when the attempt has ended and everything is sent.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import re
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web

from ..errors import ConfigError, NotFound
from ..etcd.keys import validate_job_id
from ..node.outputs import FOLLOW_POLL, STREAMS, OutputReader, Piece, dropped_note, output_path
from ..node.runner import AttemptEnd, attempt_state
from .auth import Role, requires

if TYPE_CHECKING:
    from .context import ApiContext

FORMATS = ("raw", "json")
CONTENT_TYPES = {"raw": "application/octet-stream", "json": "application/x-ndjson"}
# A quiet follow sends an empty line this often (json format), so that a caller can tell a
# quiet job from a dead node (the CLI gives up on a silent stream after 15 s).
HEARTBEAT = 5.0
_ATTEMPT_FILE = re.compile(r"([1-9][0-9]{0,8})\.(stdout|stderr)")
MAX_ATTEMPT = 999_999_999
# Threads that read output files: a slow card (or a read that blocks) stalls these, not the
# event loop that serves every other request of the node, nor the etcd calls' pool, whose
# threads long polls may hold. A follow reads 64 KiB at a time, at most this many per call.
FILE_THREADS = 4
PIECES_PER_READ = 16

T = TypeVar("T")


class ThreadedReader:
    """An OutputReader used from the file threads, one call at a time. Closed only once its
    last call has returned: a request cancelled mid-read (the caller went away) must not
    close the descriptor under a read still running in its thread."""

    def __init__(self, reader: OutputReader, threads: ThreadPoolExecutor) -> None:
        self.reader = reader
        self._threads = threads
        self._last: Future[Any] | None = None

    async def call(self, fn: Callable[[OutputReader], T]) -> T:
        self._last = self._threads.submit(fn, self.reader)
        return await asyncio.wrap_future(self._last)

    def close(self) -> None:
        if self._last is None:
            self.reader.close()
        else:  # at once when done; else when its thread is
            self._last.add_done_callback(lambda _: self.reader.close())


def add_routes(app: web.Application, ctx: ApiContext) -> None:
    data_dir = ctx.cfg.data_dir
    node = ctx.node
    threads = ThreadPoolExecutor(FILE_THREADS, thread_name_prefix="api-files")

    async def stop_reading(_app: web.Application) -> None:
        threads.shutdown(wait=False, cancel_futures=True)

    app.on_cleanup.append(stop_reading)

    @requires(Role.READER)
    async def logs(request: web.Request) -> web.StreamResponse:
        job_id = validate_job_id(request.match_info["id"])
        q = request.query
        stream = _choice(q.get("stream", "stdout"), "stream", STREAMS)
        follow = _flag(q.get("follow"), "follow")
        fmt = _choice(q.get("format", "json" if follow else "raw"), "format", FORMATS)
        offset = _whole(q.get("offset"), "offset", 0) or 0
        attempt = _whole(q.get("attempt"), "attempt", 1, MAX_ATTEMPT)
        loop = asyncio.get_running_loop()
        if attempt is None:
            attempt = await loop.run_in_executor(threads, latest_attempt, data_dir, job_id)
        if attempt is None:
            raise NotFound(f"job {job_id} has no output on node {node}: it did not run here")
        reader = ThreadedReader(
            OutputReader(output_path(data_dir, job_id, attempt, stream), offset), threads
        )
        try:
            running, _ = attempt_state(data_dir, job_id, attempt)
            if not await reader.call(OutputReader.open) and not running:
                raise NotFound(
                    f"job {job_id} attempt {attempt} has no output on node {node}: not run "
                    "here, or removed past its retention"
                )
            return await respond(request, reader, fmt, follow, attempt, job_id)
        finally:
            reader.close()

    async def respond(
        request: web.Request,
        reader: ThreadedReader,
        fmt: str,
        follow: bool,
        attempt: int,
        job_id: str,
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "application/x-ndjson"
                if fmt == "json"
                else "application/octet-stream",
                "X-Picluster-Attempt": str(attempt),
                "X-Picluster-Node": node,
                "Cache-Control": "no-store",
            }
        )
        await response.prepare(request)
        try:
            await _send(
                response,
                reader,
                fmt,
                follow,
                lambda: attempt_state(data_dir, job_id, attempt),
                left=lambda: request.transport is None,
            )
        except (ConnectionResetError, asyncio.CancelledError):
            return response  # the caller went away, or the server stops
        await response.write_eof()
        return response

    app.router.add_get("/v1/jobs/{id}/logs", logs)


def _some_pieces(reader: OutputReader) -> list[Piece]:
    """What a file thread reads in one call: up to PIECES_PER_READ pieces."""
    return list(itertools.islice(reader.pieces(), PIECES_PER_READ))


async def _send(
    response: web.StreamResponse,
    reader: ThreadedReader,
    fmt: str,
    follow: bool,
    state: Any,
    *,
    left: Callable[[], bool],
) -> None:
    """Send what there is; following, until the attempt has ended and all is sent, or
    the caller has left."""
    loop = asyncio.get_running_loop()
    last_write = loop.time()
    while True:
        running, outcome = state()  # before reading: once it has ended, one last read is all
        sent = False
        while True:
            pieces = await reader.call(_some_pieces)
            sent = sent or bool(pieces)
            for piece in pieces:
                await _write_piece(response, piece, fmt)
            if len(pieces) < PIECES_PER_READ:
                break
        if not follow or not running:
            if fmt == "json":
                end = {"end": True, "running": running, "outcome": _outcome(outcome)}
                await response.write(_line(end))
            return
        if sent:
            last_write = loop.time()
        else:
            # aiohttp does not cancel a handler whose caller left, and only a write tells
            # it: raw output has no heartbeat, so a quiet job's follow would go on reading
            # the file until the job ends.
            if left():
                raise ConnectionResetError("the caller left")
            if fmt == "json" and loop.time() - last_write >= HEARTBEAT:
                await response.write(b"\n")
                last_write = loop.time()
            await asyncio.sleep(FOLLOW_POLL)


async def _write_piece(response: web.StreamResponse, piece: Piece, fmt: str) -> None:
    if fmt == "raw":
        if piece.dropped:
            await response.write(dropped_note(piece))
        await response.write(piece.data)
        return
    if piece.dropped:
        skipped = piece.offset - piece.dropped if piece.dropped > 0 else piece.offset
        await response.write(_line({"offset": skipped, "dropped": piece.dropped}))
    if piece.data:
        await response.write(_line({"offset": piece.offset, **_encoded(piece.data)}))


def latest_attempt(data_dir: str, job_id: str) -> int | None:
    """The highest attempt of `job_id` with output on this node, if any."""
    try:
        names = os.listdir(f"{os.path.abspath(data_dir)}/jobs/{validate_job_id(job_id)}")
    except OSError:
        return None
    found = [int(m.group(1)) for name in names if (m := _ATTEMPT_FILE.fullmatch(name))]
    return max(found, default=None)


def _outcome(outcome: AttemptEnd | None) -> dict[str, Any] | None:
    if outcome is None:
        return None
    return {
        "exit_code": outcome.exit_code,
        "signal": outcome.signal,
        "timed_out": outcome.timed_out,
        "cancelled": outcome.cancelled,
        "error": outcome.error,
    }


def _encoded(data: bytes) -> dict[str, str]:
    try:
        return {"text": data.decode("utf-8")}
    except UnicodeDecodeError:  # binary, or a character split between two reads
        return {"base64": base64.b64encode(data).decode("ascii")}


def _line(event: dict[str, Any]) -> bytes:
    return (json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def _choice(value: str, name: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _flag(value: str | None, name: str) -> bool:
    if value is None or value in ("0", "false"):
        return False
    if value in ("1", "true", ""):
        return True
    raise ConfigError(f"{name} must be 1 or 0, got {value!r}")


def _whole(value: str | None, name: str, low: int, high: int | None = None) -> int | None:
    if value is None:
        return None
    if not value.isascii() or not value.isdigit() or len(value) > 18:
        raise ConfigError(f"{name} must be a whole number, got {value!r}")
    number = int(value)
    if number < low or (high is not None and number > high):
        top = f"-{high}" if high is not None else " or more"
        raise ConfigError(f"{name} must be {low}{top}, got {value!r}")
    return number
