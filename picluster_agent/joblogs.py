"""Job output from the nodes that run the jobs: whole, followed live, or a job run in the
foreground. The Python API behind `picluster logs` and `picluster run`.

    from picluster_agent.client import Client
    from picluster_agent import joblogs

    client = Client()                                   # the CLI's connection settings
    out = joblogs.read_output(client, job_id)           # bytes: all of stdout, from its node
    status = joblogs.follow(client, job_id, on_output=lambda stream, data: print(data))
    run = joblogs.run(client, ["python3", "train.py"])  # submit, stream to our stdout/stderr
    raise SystemExit(run.exit_code)                     # the job's (128+N for signal N)

Only the node that ran an attempt keeps its full output (node/outputs.py, under the node's
output cap); etcd keeps a 64 KiB tail in the job's result. These functions find the node in
etcd (the job record and its history say which node has which attempt), ask that node's
HTTPS API (api/logs.py; the node's registration carries its URL) with the caller's client
certificate, and follow the job from attempt to attempt: when a node dies or the job is
retried elsewhere, the stream goes on with the new attempt (a note says so).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

from .client import Client, JobStatus
from .errors import ConfigError, NotFound, PiclusterError, Unavailable
from .etcd.keys import validate_job_id
from .jobs.records import JobState

STREAMS = ("stdout", "stderr")  # as node/outputs.py names them
CONNECT_TIMEOUT = 5.0
# A follow whose node sends nothing (not even its heartbeat line, every few seconds) for
# this long is taken as lost: the node is asked again, or the next attempt followed.
READ_TIMEOUT = 15.0
RETRY_MIN = 0.05  # seconds between tries to reach an attempt that has not started yet ...
RETRY_MAX = 1.0  # ... growing to this
STATE_POLL = 0.1  # seconds between looks at the job record while between attempts
# A follow rides out etcd being unreachable (a leader election, a member restarting) this long.
ETCD_PATIENCE = 30.0

OnOutput = Callable[[str, bytes], None]  # (stream, bytes)
OnNote = Callable[[str], None]  # one line for the person watching
OnEnd = Callable[[int, "dict[str, Any] | None"], None]  # (attempt, outcome as its node saw it)


class NodeUnreachable(Unavailable):
    """The node that has the output does not answer (or is not registered any more)."""

    def __init__(self, node: str, why: str) -> None:
        super().__init__(f"node {node} is not reachable ({why})")
        self.node = node


@dataclass(frozen=True)
class RunResult:
    id: str
    status: JobStatus
    exit_code: int  # the job's: its exit code, 128+N for signal N, 1 when it never ran


def outcome_exit_code(outcome: dict[str, Any] | None) -> int:
    """The exit code of an attempt's outcome as the logs route sends it (see exit_code_of)."""
    if not isinstance(outcome, dict):
        return 1
    if isinstance(outcome.get("exit_code"), int):
        return int(outcome["exit_code"])
    if isinstance(outcome.get("signal"), int):
        return 128 + int(outcome["signal"])
    return 1


def exit_code_of(status: JobStatus) -> int:
    """The exit code a shell would show for the job: its own, 128+N when a signal ended it,
    1 when it never ran (could not start, rejected, cancelled before starting)."""
    if status.state is JobState.SUCCEEDED:
        return 0
    result = status.result
    if result is not None and result.exit_code is not None:
        return result.exit_code
    if result is not None and result.signal is not None:
        return 128 + result.signal
    if status.record is not None and status.record.exit_code is not None:
        return status.record.exit_code
    return 1


# ---------------------------------------------------------------- finding the node


def node_of_attempt(status: JobStatus, attempt: int) -> str | None:
    """Which node was given `attempt` of the job (the record's history says)."""
    record = status.record
    if record is None:
        return None
    if record.attempt == attempt and record.node:
        return record.node
    for entry in reversed(record.history):
        if entry.get("event") == "assigned" and entry.get("attempt") == attempt:
            node = entry.get("node")
            return node if isinstance(node, str) else None
    if status.result is not None and status.result.attempt == attempt:
        return status.result.node
    return None


def api_url(client: Client, node: str) -> str:
    """The HTTPS API of `node`, from its registration; NodeUnreachable when it has none."""
    kv = client.etcd.get(client.keys.node(node))
    if kv is None:
        raise NodeUnreachable(node, "not registered: the node or its agent is down")
    try:
        info = json.loads(kv.value)
        url = info.get("api") if isinstance(info, dict) else None
    except ValueError:
        url = None
    if not isinstance(url, str) or not url.startswith("https://"):
        raise NodeUnreachable(node, "its agent serves no HTTPS API")
    return url


def tls_context(client: Client) -> ssl.SSLContext:
    """TLS to the agents' APIs: the cluster CA checks them, our certificate names us."""
    conn = client.connection
    if conn.cacert is None:
        raise ConfigError("the nodes' HTTPS APIs need the cluster CA: give --cacert")
    context = ssl.create_default_context(cafile=conn.cacert)
    if conn.cert and conn.key:
        context.load_cert_chain(conn.cert, conn.key)
    return context


# ---------------------------------------------------------------- one request


@dataclass
class _Request:
    client: Client
    job_id: str
    attempt: int
    node: str
    stream: str
    offset: int = 0


def _open(req: _Request, *, follow: bool, fmt: str, tls: ssl.SSLContext | None) -> Any:
    """GET the attempt's stream from its node; the response, status 200, or raises."""
    url = urlsplit(api_url(req.client, req.node))
    tls = tls or tls_context(req.client)
    query = {"stream": req.stream, "attempt": req.attempt, "offset": req.offset, "format": fmt}
    if follow:
        query["follow"] = 1
    conn = http.client.HTTPSConnection(
        url.hostname or "", url.port or 443, context=tls, timeout=CONNECT_TIMEOUT
    )
    try:
        conn.request("GET", f"/v1/jobs/{req.job_id}/logs?{urlencode(query)}")
        response = conn.getresponse()
    except ssl.SSLCertVerificationError as e:
        conn.close()
        raise PiclusterError(
            f"node {req.node}: its certificate does not check out against --cacert "
            f"({e.verify_message})"
        ) from e
    except (OSError, http.client.HTTPException) as e:
        conn.close()
        raise NodeUnreachable(req.node, _why(e)) from e
    if response.status == 200:
        if conn.sock is not None:
            conn.sock.settimeout(READ_TIMEOUT)
        return response
    body = response.read(4096)
    conn.close()
    try:
        message = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        message = body.decode("utf-8", "replace").strip() or response.reason
    if response.status == 404:
        raise NotFound(message)
    if response.status in (401, 403):
        raise PiclusterError(f"node {req.node} refused: {message}")
    if response.status == 400:
        raise ConfigError(message)
    raise NodeUnreachable(req.node, f"HTTP {response.status}: {message}")


def _why(e: BaseException) -> str:
    return getattr(e, "strerror", None) or getattr(e, "reason", None) or str(e) or type(e).__name__


def _events(response: Any, req: _Request) -> Iterator[dict[str, Any]]:
    """The JSON lines of a response; the node's heartbeat (an empty line) as `{}`, so that a
    follower of a quiet job still looks at its stop every few seconds."""
    try:
        while True:
            line = response.readline()
            if not line:
                return
            yield json.loads(line) if line.strip() else {}
    except (OSError, http.client.HTTPException, ValueError) as e:
        raise NodeUnreachable(req.node, f"the stream broke: {_why(e)}") from e
    finally:
        response.close()


# ---------------------------------------------------------------- whole output


def read_output(
    client: Client, job_id: str, *, stream: str = "stdout", attempt: int | None = None
) -> bytes:
    """The whole output of an attempt (default: the job's latest), from its node.

    NotFound: no such job, or no attempt has run yet; NodeUnreachable: the node that has it
    does not answer (`JobStatus.result` still has the tail kept in etcd)."""
    validate_job_id(job_id)
    if stream not in STREAMS:
        raise ConfigError(f"stream must be one of {', '.join(STREAMS)}, got {stream!r}")
    status = client.status(job_id)
    chosen = attempt or (status.record.attempt if status.record else 0)
    node = node_of_attempt(status, chosen) if chosen else None
    if node is None:
        what = f"attempt {attempt}" if attempt else "an attempt"
        raise NotFound(f"job {job_id} has not run {what} (state {status.state.value})")
    req = _Request(client, job_id, chosen, node, stream)
    response = _open(req, follow=False, fmt="raw", tls=None)
    try:
        return bytes(response.read())
    except (OSError, http.client.HTTPException) as e:
        raise NodeUnreachable(node, f"the transfer broke: {_why(e)}") from e
    finally:
        response.close()


# ---------------------------------------------------------------- following


@dataclass
class _Follower:
    """Follows one job's streams, attempt after attempt, until the job is final."""

    client: Client
    job_id: str
    streams: Sequence[str]
    on_output: OnOutput
    on_note: OnNote
    only_attempt: int | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    on_end: OnEnd = lambda _attempt, _outcome: None
    tls: ssl.SSLContext | None = None
    failure: PiclusterError | None = None  # what ended a stream for good (bad input, refused)

    def halted(self) -> bool:
        return self.stop.is_set() or self.failure is not None

    def status(self) -> JobStatus:
        """The job's status, waiting out a short etcd outage."""
        deadline = time.monotonic() + ETCD_PATIENCE
        while True:
            try:
                return self.client.status(self.job_id)
            except Unavailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(RETRY_MAX)

    def run(self) -> JobStatus:
        status = self.status()
        attempt = self.only_attempt
        while not self.stop.is_set():
            if attempt is None:
                status, attempt = self._next_attempt(status, 1)
                if attempt is None:
                    return status  # final before (another) attempt began
            node = self._wait_for_node(attempt)
            if node is None:
                return self.status()
            self._follow_attempt(attempt, node)
            if self.failure is not None:
                raise self.failure
            if self.stop.is_set():
                break
            status = self._after_attempt(attempt)
            if self.only_attempt is not None or status.state.final:
                return status
            status, attempt = self._next_attempt(status, attempt + 1)
            if attempt is None:
                return status
        return self.status()

    def _next_attempt(self, status: JobStatus, least: int) -> tuple[JobStatus, int | None]:
        """Wait until the job has an attempt >= `least` (None: it became final first)."""
        while not self.stop.is_set():
            record = status.record
            if record is not None and record.attempt >= least and record.node:
                if least > 1:
                    self.on_note(f"attempt {record.attempt} on node {record.node}")
                return status, record.attempt
            if status.state.final:
                return status, None
            self.stop.wait(STATE_POLL)
            status = self.status()
        return status, None

    def _wait_for_node(self, attempt: int) -> str | None:
        return node_of_attempt(self.status(), attempt)

    def _after_attempt(self, attempt: int) -> JobStatus:
        """The job once etcd has taken in the attempt's end (the node may say so first)."""
        while True:
            status = self.status()
            record = status.record
            moved_on = record is None or record.attempt != attempt or status.state.final
            if moved_on or status.state is JobState.QUEUED or self.stop.is_set():
                return status
            self.stop.wait(STATE_POLL)

    def _follow_attempt(self, attempt: int, node: str) -> None:
        threads = [
            threading.Thread(
                target=self._follow_stream,
                args=(_Request(self.client, self.job_id, attempt, node, stream),),
                name=f"follow-{stream}",
                daemon=True,
            )
            for stream in self.streams
        ]
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.2)

    def _follow_stream(self, req: _Request) -> None:
        """Stream one attempt's stream until its end, across lost connections."""
        delay = RETRY_MIN
        told = False
        after_end = True  # one more try once the attempt has ended (see below)
        while not self.halted():
            began_at = req.offset
            try:
                response = _open(req, follow=True, fmt="json", tls=self.tls)
                for event in _events(response, req):
                    if self.halted():
                        return
                    if event.get("end"):
                        self.on_end(req.attempt, event.get("outcome"))
                        return
                    self._deliver(req, event)
                    delay = RETRY_MIN
                # No end line: the agent stopped while serving (a restart, a clean stop).
                raise NodeUnreachable(req.node, "its agent closed the stream")
            except (NotFound, NodeUnreachable) as e:
                # Not started there yet, the node restarted, or it is gone: go on while the
                # job record still gives this attempt to this node.
                if not self._attempt_current(req):
                    # It ended while the stream was down: its node still has the output (a
                    # stream also breaks when we stopped reading it for a while: the node
                    # cuts a reply nobody takes). Read on while a try brings more.
                    if isinstance(e, NodeUnreachable) and (after_end or req.offset > began_at):
                        after_end = False
                        continue
                    if isinstance(e, NodeUnreachable) and not told:
                        self.on_note(f"{e}; output of attempt {req.attempt} may be incomplete")
                    return
                if isinstance(e, NodeUnreachable) and not told:
                    self.on_note(f"{e}; trying again")
                    told = True
            except Unavailable:
                pass  # etcd, asked for the node's URL, is away for a moment: ask again
            except PiclusterError as e:  # refused, bad input: trying again changes nothing
                self.failure = e
                return
            self.stop.wait(delay)
            delay = min(RETRY_MAX, delay * 2)

    def _attempt_current(self, req: _Request) -> bool:
        try:
            record = self.client.status(self.job_id).record
        except Unavailable:
            return True  # etcd is away for a moment: keep trying the node
        return (
            record is not None
            and record.attempt == req.attempt
            and record.node == req.node
            and record.state.active
        )

    def _deliver(self, req: _Request, event: dict[str, Any]) -> None:
        if "dropped" in event:
            dropped = event["dropped"]
            what = f"{dropped} bytes" if dropped >= 0 else "output"
            self.on_note(f"{what} of {req.stream} dropped on node {req.node} (its output cap)")
            return
        if "text" in event:
            data = event["text"].encode("utf-8")
        elif "base64" in event:
            data = base64.b64decode(event["base64"])
        else:
            return
        offset = int(event.get("offset", req.offset))
        if offset + len(data) <= req.offset:
            return  # seen already (a resumed stream)
        data = data[max(0, req.offset - offset) :]
        req.offset = max(req.offset, offset) + len(data)
        self.on_output(req.stream, data)


def follow(
    client: Client,
    job_id: str,
    *,
    on_output: OnOutput,
    on_note: OnNote = lambda _line: None,
    streams: Sequence[str] = STREAMS,
    attempt: int | None = None,
    stop: threading.Event | None = None,
    on_end: OnEnd = lambda _attempt, _outcome: None,
) -> JobStatus:
    """Stream a job's output as it is written, from attempt to attempt, until it is final
    (with `attempt`: until that attempt has ended); returns the job's status then.

    `on_output(stream, data)` gets the bytes, in order per stream; `on_note(line)` what a
    person watching should know (the next attempt began elsewhere, a node went away);
    `on_end(attempt, outcome)` how an attempt ended as its node saw it (once per stream;
    outcome None when the node's agent did not see it end). Setting `stop` ends the follow
    early."""
    validate_job_id(job_id)
    for stream in streams:
        if stream not in STREAMS:
            raise ConfigError(f"stream must be one of {', '.join(STREAMS)}, got {stream!r}")
    follower = _Follower(
        client, job_id, list(streams), on_output, on_note, attempt, stop or threading.Event()
    )
    follower.on_end = on_end
    return follower.run()


def run(
    client: Client,
    command: Sequence[str] | str,
    *,
    on_output: OnOutput,
    on_note: OnNote = lambda _line: None,
    on_submitted: Callable[[str], None] = lambda _id: None,
    stop: threading.Event | None = None,
    id: str | None = None,
    **fields: Any,
) -> RunResult:
    """Submit a job (`fields` as for `Client.submit`), stream its output until it is final,
    and return its status and exit code. Setting `stop` cancels the job (and still waits
    for it to end)."""
    submitted = client.submit(command, id=id, **fields)
    on_submitted(submitted.id)
    if not submitted.accepted:  # a retry of an earlier run: follow that job
        on_note(f"job {submitted.id} was accepted before; following it")
    stop = stop or threading.Event()
    cancelled = threading.Event()

    def cancel_on_stop() -> None:
        while not done.wait(0.05):  # ends with the run, even if `stop` is never set
            if stop.is_set():
                cancelled.set()
                with contextlib.suppress(PiclusterError):
                    client.cancel(submitted.id)
                return

    done = threading.Event()
    watcher = threading.Thread(target=cancel_on_stop, name="run-cancel", daemon=True)
    watcher.start()
    try:
        status = follow(client, submitted.id, on_output=on_output, on_note=on_note)
    finally:
        done.set()
    if not status.state.final:  # the follow stopped early: wait for the end itself
        status = client.wait([submitted.id])[submitted.id]
    if status.result is None:
        status = client.status(submitted.id)
    code = exit_code_of(status)
    if cancelled.is_set() and status.state is JobState.CANCELLED:
        code = 130  # as a shell reports Ctrl-C
    return RunResult(submitted.id, status, code)


__all__ = [
    "NodeUnreachable",
    "RunResult",
    "exit_code_of",
    "follow",
    "outcome_exit_code",
    "read_output",
    "run",
]
