"""`picluster logs` and `picluster run`: a job's output from the node that runs it.

    picluster logs ID [--stderr] [--attempt N]     the whole output of the latest attempt
    picluster logs -f ID                           follow it live; exit with the job's code
    picluster run [submit flags] -- CMD ARGS       submit, stream, exit with the job's code

Exit codes of `logs -f` and `run` once the job has ended: the job's own (128+N when signal
N ended it; 1 when it never ran; `run` interrupted with Ctrl-C: 130). Before that, the
common ones (2 bad input, 3 cluster unreachable, 4 unknown job).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from ..client import Client, JobStatus
from ..config import from_flags
from ..errors import NotFound
from ..joblogs import (
    NodeUnreachable,
    exit_code_of,
    follow,
    outcome_exit_code,
    read_output,
    run,
)
from . import argtypes
from .output import emit

# Flags of `submit` that `run` does not take: one job, streamed, not a batch.
NOT_FOR_RUN = {"help", "file", "wait", "array", "output", "command"}
MAX_ATTEMPT = 999_999_999


def _client(args: argparse.Namespace) -> Client:
    return Client.from_connection(from_flags(args)[1])


def _note(line: str) -> None:
    print(f"picluster: {line}", file=sys.stderr, flush=True)


class _Output:
    """Writes each stream's bytes to ours as they come. When the reader of our stdout goes
    away (`logs -f ID | head`), sets `closed`: the follow stops (and `run` cancels its job,
    as a closed pipe ends a local command)."""

    def __init__(self) -> None:
        self.closed = threading.Event()

    def __call__(self, stream: str, data: bytes) -> None:
        if self.closed.is_set():
            return
        out = sys.stdout.buffer if stream == "stdout" else sys.stderr.buffer
        try:
            out.write(data)
            out.flush()
        except BrokenPipeError:
            self.closed.set()
            # Nothing more reaches it; nor may the interpreter's last flush fail on it.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, out.fileno())
            os.close(devnull)


# ---------------------------------------------------------------- logs


def cmd_logs(args: argparse.Namespace) -> int:
    client = _client(args)
    stream = "stderr" if args.stderr else "stdout"
    status = client.status(args.id)
    if args.follow and not status.state.final:
        ends: dict[int, int] = {}
        output = _Output()
        final = follow(
            client,
            args.id,
            on_output=output,
            stop=output.closed,
            on_note=_note,
            streams=[stream],
            attempt=args.attempt,
            on_end=lambda attempt, outcome: _ended(ends, attempt, outcome),
        )
        if output.closed.is_set():
            return 0  # our reader left: not an error worth a code
        if args.attempt is not None and args.attempt in ends:
            return ends[args.attempt]  # that attempt's own, as its node saw it end
        return _exit_code(final, args.attempt)
    text, source = _whole_output(client, status, stream, args.attempt)
    if args.output == "json":
        emit("json", {"id": args.id, "stream": stream, "source": source, "output": text})
    else:
        sys.stdout.buffer.write(text.encode("utf-8", "surrogateescape"))
        sys.stdout.flush()
    return _exit_code(status, args.attempt) if args.follow else 0


def _ended(ends: dict[int, int], attempt: int, outcome: dict[str, Any] | None) -> None:
    # None: the node's agent did not see the attempt end (restarted since): etcd says.
    if outcome is not None:
        ends[attempt] = outcome_exit_code(outcome)


def _whole_output(
    client: Client, status: JobStatus, stream: str, attempt: int | None
) -> tuple[str, str]:
    """(the output, where it came from: "node" or "etcd")."""
    try:
        data = read_output(client, status.id, stream=stream, attempt=attempt)
        return data.decode("utf-8", "surrogateescape"), "node"
    except NodeUnreachable as e:
        result = status.result
        if result is None or (attempt is not None and result.attempt != attempt):
            raise NotFound(f"{e}, and etcd keeps no output of that attempt") from e
        _note(f"{e}; showing the last part of the output, kept in etcd")
        return (result.stderr_tail if stream == "stderr" else result.stdout_tail), "etcd"


def _exit_code(status: JobStatus, attempt: int | None) -> int:
    """The job's exit code; with --attempt, that attempt's (from the job's history once a
    later attempt has replaced its result; 1 when etcd no longer says)."""
    if attempt is None:
        return exit_code_of(status) if status.state.final else 1
    if status.result is not None and status.result.attempt == attempt:
        return exit_code_of(status)  # that attempt's result, final or retried since
    history = status.record.history if status.record is not None else ()
    for entry in reversed(history):
        code = entry.get("exit_code")
        if (
            entry.get("attempt") == attempt
            and isinstance(code, int)
            and entry.get("event") != "assigned"
        ):
            return code
    return 1


# ---------------------------------------------------------------- run


def cmd_run(args: argparse.Namespace) -> int:
    from .jobs import _spec_from_args

    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    spec = _spec_from_args(args, command)  # bad input is refused before any connection
    client = _client(args)
    output = _Output()
    stop = output.closed  # Ctrl-C, or our stdout's reader gone: cancel the job
    job: dict[str, str] = {}

    def on_interrupt(_signum: int, _frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt  # a second Ctrl-C: stop waiting (the cancel stands)
        stop.set()
        _note(f"cancelling job {job.get('id', '')} (Ctrl-C again to stop waiting)")

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        result = run(
            client,
            spec.command,
            id=args.id,
            on_output=output,
            on_note=_note,
            on_submitted=lambda job_id: (job.update(id=job_id), _note(f"job {job_id}")),
            stop=stop,
            **_spec_fields(spec),
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    if result.status.state.value not in ("succeeded",):
        reason = result.status.record.reason if result.status.record else None
        _note(f"job {result.id} {result.status.state.value}" + (f": {reason}" if reason else ""))
    return result.exit_code


def _spec_fields(spec: Any) -> dict[str, Any]:
    data = spec.to_dict()
    data.pop("command")
    return data


# ---------------------------------------------------------------- parsers


def add_parsers(
    sub: Any, connection_options: Callable[..., None], output_option: Callable[..., None]
) -> None:
    p = sub.add_parser(
        "logs",
        help="a job's whole output from its node, or follow it live (-f)",
        description="A job's whole output (stdout, or --stderr), read from the node that ran "
        "it; if that node is gone, the last 64 KiB kept in etcd. -f follows the job live, "
        "attempt after attempt, and exits with its exit code.",
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    connection_options(p)
    output_option(p)
    p.add_argument("id", type=argtypes.job_id)
    p.add_argument("--stderr", action="store_true", help="stderr instead of stdout")
    p.add_argument(
        "--attempt",
        type=argtypes.integer(1, MAX_ATTEMPT),
        metavar="N",
        help="this attempt (default: the latest)",
    )
    p.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="stream new output until the job ends; exit with its exit code",
    )
    p.set_defaults(func=cmd_logs)

    p = sub.add_parser(
        "run",
        help="submit a job, stream its output here, exit with its exit code",
        description="Submit one job (the flags of `submit`), stream its stdout and stderr "
        "to ours as it runs, and exit with its exit code (128+N for signal N). Ctrl-C "
        "cancels the job. A failover is ridden out: the stream goes on with the next attempt.",
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    submit = sub.choices["submit"]
    for action in submit._actions:  # the same spec flags as submit, whatever they become
        if action.dest not in NOT_FOR_RUN:
            p._add_action(action)
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    p.set_defaults(func=cmd_run)
