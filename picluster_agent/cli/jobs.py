"""Job subcommands: submit, status, jobs, wait, cancel, drain, undrain (logs, run: logs.py).

Exit codes beyond the common ones (see cli.py):
  5  submit: this job id had been accepted before; nothing new was created
  6  wait / submit --wait: at least one job ended without success
  7  wait: timed out before every job finished
  8  submit of many jobs: only some were accepted (their ids, and only theirs, are printed);
     cancel of several ids: only the first were handled (those, and only those, are printed)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from ..client import (
    ArrayStatus,
    Client,
    JobStatus,
    PartialCancel,
    PartialSubmit,
    SubmitResult,
    summarize,
)
from ..config import from_flags, parse_labels
from ..errors import ConfigError, NotFound
from ..jobs.arrays import member_specs
from ..jobs.ids import new_job_id
from ..jobs.records import JobState
from ..jobs.spec import JobSpec, SpecError, build_spec, parse_spec, parse_start_time
from . import argtypes
from .output import emit, error, warn_alarms
from .watch import watch, watch_option

EXIT_DUPLICATE = 5
EXIT_JOB_FAILED = 6
EXIT_TIMEOUT = 7
EXIT_PARTIAL = PartialSubmit.exit_code  # 8

JOB_EXIT_CODES = """job exit codes:
  5  submit: the job id had been accepted before (nothing new was created)
  6  wait, submit --wait: at least one job ended without success
  7  wait: timed out before every job finished
  8  submit of many jobs: only some were accepted (their ids, and only theirs, are printed);
     cancel of several ids: only the first were handled (those, and only those, are printed)
"""


def _client(args: argparse.Namespace) -> Client:
    return Client.from_connection(from_flags(args)[1])


# ---------------------------------------------------------------- submit


def _env(items: list[str] | None) -> dict[str, str]:
    """KEY=VALUE, or NAME alone: the submitter's own value of NAME (as `docker run -e`)."""
    env: dict[str, str] = {}
    for item in items or []:
        k, sep, v = item.partition("=")
        if not sep:
            if item not in os.environ:
                raise SpecError(
                    f"--env {item!r}: not set here; give NAME=VALUE, or NAME of a variable "
                    "set in this environment",
                    field="env",
                )
            v = os.environ[item]
        env[k] = v
    return env


def _spec_from_args(args: argparse.Namespace, command: list[str]) -> JobSpec:
    now = time.time()
    if args.at is not None and args.after is not None:
        raise SpecError("give --at or --after, not both", field="not_before")
    not_before = None
    if args.at is not None:
        not_before = parse_start_time(args.at, now)
    elif args.after is not None:
        not_before = now + args.after
    if not command:
        raise SpecError("no command given: picluster submit [OPTIONS] -- CMD ARGS...")
    return build_spec(
        " ".join(command) if args.shell else command,
        shell=args.shell or None,
        env=_env(args.env),
        cwd=args.cwd,
        timeout=args.timeout,
        max_attempts=args.max_attempts,
        priority=args.priority,
        slots=args.slots,
        memory_mb=args.memory,
        constraints=parse_labels(args.label) if args.label else None,
        not_before=not_before,
        name=args.name,
        submitted_at=now,
        after=_after(args),
    )


def _after(args: argparse.Namespace) -> dict[str, list[str]] | None:
    """--after-ok/--after-any/--after-fail, each repeatable and comma-separated."""
    after = {
        cond: [i for ids in given for i in ids]
        for cond, given in (
            ("ok", args.after_ok),
            ("any", args.after_any),
            ("fail", args.after_fail),
        )
        if given
    }
    return after or None


def _specs_from_file(path: str) -> tuple[list[JobSpec], list[str | None]]:
    """JSON lines, or one JSON array, of spec objects; an object may carry its own "id"."""
    text = sys.stdin.read() if path == "-" else _read(path)
    text = text.strip()
    try:
        items = (
            json.loads(text)
            if text.startswith("[")
            else [json.loads(line) for line in text.splitlines() if line.strip()]
        )
    except ValueError as e:
        raise SpecError(f"{path}: not JSON lines or a JSON array: {e}") from e
    specs: list[JobSpec] = []
    ids: list[str | None] = []
    now = time.time()
    for n, item in enumerate(items, 1):
        if not isinstance(item, dict):
            raise SpecError(f"{path}: item {n} is not a JSON object")
        job_id = item.pop("id", None)
        item.setdefault("submitted_at", now)
        try:
            specs.append(parse_spec(item, job_id or "placeholder"))
        except SpecError as e:
            where = f"{e.field}: " if e.field else ""
            raise SpecError(f"{path}: item {n}: {where}{e.reason}") from e
        ids.append(job_id)
    if not specs:
        raise SpecError(f"{path}: no job specs found")
    return specs, ids


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from e


def cmd_submit(args: argparse.Namespace) -> int:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    parent = None
    if args.file:
        if command:
            raise SpecError("give a command or --file, not both")
        specs, ids = _specs_from_file(args.file)
    else:
        base = _spec_from_args(args, command)
        if args.array:
            if args.id:
                raise SpecError("--id cannot be combined with --array (ids are made per job)")
            parent = new_job_id()
            specs, member_ids = member_specs(
                base, parent, args.array.indices, args.array.max_running
            )
            ids = list[str | None](member_ids)
        else:
            specs, ids = [base], [args.id]
    client = _client(args)
    if len(specs) == 1 and parent is None:
        results = [client.submit_spec(specs[0], id=ids[0])]
    else:
        try:
            results = _submit_with_progress(client, specs, ids)
        except PartialSubmit as e:
            # Earlier transactions committed: those jobs are accepted, and their ids must
            # be known (submitting them again with the same ids creates nothing).
            _print_submitted(e.results, args.output, wait=False, array=parent)
            error(str(e))
            return EXIT_PARTIAL
    duplicate = any(not r.accepted for r in results)
    _print_submitted(results, args.output, wait=args.wait, array=parent)
    if args.wait:
        ids_ = [r.id for r in results]
        return _wait_and_report(client, ids_, None, args.output, results, array=parent)
    return EXIT_DUPLICATE if duplicate else 0


def _print_submitted(
    results: list[SubmitResult], fmt: str, *, wait: bool, array: str | None = None
) -> None:
    if fmt == "json":
        if not wait:  # with --wait, the one JSON document comes at the end
            emit("json", [_submitted(r, array) for r in results])
    else:
        for r in results:
            print(r.id, flush=True)
        if array is not None:
            # The members' ids stay on stdout (as before arrays had a parent); the parent,
            # which status, wait and cancel take for all of them, is said once here.
            sys.stderr.write(f"array {array}: {len(results)} jobs\n")
    for r in results:
        if not r.accepted:
            error(f"job {r.id} was already accepted; nothing new was created")


def _submitted(r: SubmitResult, array: str | None) -> dict[str, Any]:
    return {"id": r.id, "accepted": r.accepted, **({"array": array} if array else {})}


def _submit_with_progress(client: Client, specs: list[JobSpec], ids: list[str | None]) -> list:  # type: ignore[type-arg]
    from rich.progress import Progress

    with Progress(transient=True, console=_stderr_console()) as bar:
        task = bar.add_task("submitting", total=len(specs))
        return client.submit_many(specs, ids, progress=lambda n: bar.advance(task, n))


def _stderr_console():  # type: ignore[no-untyped-def]
    from rich.console import Console

    return Console(stderr=True)


# ---------------------------------------------------------------- inspect


def _status_row(s: JobStatus) -> tuple[Any, ...]:
    r = s.record
    command = ""
    if r is not None:
        cmd = r.spec.get("command", r.spec.get("raw", ""))
        command = cmd if isinstance(cmd, str) else " ".join(cmd)
    return (
        s.id,
        s.state.value,
        r.attempt if r else 0,
        (r.node if r else None) or "-",
        (r.exit_code if r and r.exit_code is not None else "-"),
        command[:40],
    )


def _wide_row(s: JobStatus) -> tuple[Any, ...]:
    r = s.record
    spec = r.spec if r is not None else {}
    cmd = spec.get("command", spec.get("raw", ""))
    times = [_clock(r and getattr(r, f)) for f in ("submitted_at", "started_at", "finished_at")]
    row = _status_row(s)
    return (*row[:5], spec.get("priority", 0), *times, spec.get("name") or "-",
            cmd if isinstance(cmd, str) else " ".join(cmd))  # fmt: skip


def _clock(t: float | None) -> str:
    return time.strftime("%F %T", time.localtime(t)) if t else "-"


def cmd_status(args: argparse.Namespace) -> int:
    client = _client(args)
    if not args.watch:
        return _show_status(client, args)
    keys = client.keys
    prefixes = [keys.job(args.id), keys.queue(args.id), keys.cancel(args.id)]
    return watch(
        client,
        prefixes,
        args.output,
        lambda: _show_status(client, args),
        lambda: _ended(client, args.id),
    )


def _ended(client: Client, job_id: str) -> bool:
    """A job, or every member of an array, is final: nothing more to watch."""
    try:
        return client.status(job_id).state.final
    except NotFound:
        return all(m.state.final for m in client.array(job_id).members)


def _show_status(client: Client, args: argparse.Namespace) -> int:
    try:
        s = client.status(args.id)
    except NotFound:
        return _array_status(client.array(args.id), args.output)  # else NotFound again
    alarms = client.etcd.raised_alarms()  # why a job may be stuck: etcd refusing writes
    if args.output == "json":
        emit("json", {**s.to_dict(), **({"alarms": alarms} if alarms else {})})
        return 0
    warn_alarms(alarms)
    d = s.to_dict()
    print(f"job {s.id}: {s.state.value}")
    for key in ("attempt", "node", "exit_code", "reason", "waiting"):
        if d.get(key) not in (None, ""):
            print(f"  {key.replace('_', ' ')}: {d[key]}")
    for key in ("submitted_at", "started_at", "finished_at"):
        if d.get(key):
            print(f"  {key.replace('_at', '')}: {time.strftime('%F %T', time.localtime(d[key]))}")
    if s.result is not None:  # what the last finished attempt used
        if s.result.cpu_seconds is not None:
            print(f"  cpu time: {s.result.cpu_seconds:.3f} s (attempt {s.result.attempt})")
        if s.result.peak_memory_bytes is not None:
            mib = s.result.peak_memory_bytes / 2**20
            print(f"  peak memory: {mib:.1f} MiB (attempt {s.result.attempt})")
    if s.record is not None:
        print(f"  command: {json.dumps(s.record.spec.get('command', s.record.spec))}")
    return 0


def _array_status(array: ArrayStatus, fmt: str) -> int:
    if fmt == "json":
        emit("json", array.to_dict())
        return 0
    print(f"array {array.parent}: {len(array.members)} jobs")
    for state in JobState:
        ids = [m.id for m in array.members if m.state is state]
        if ids:
            print(f"  {state.value}: {len(ids)}")
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    client = _client(args)
    if not args.watch:
        return _show_jobs(client, args)
    prefixes = [client.keys.queue_dir, client.keys.jobs_dir]
    return watch(client, prefixes, args.output, lambda: _show_jobs(client, args))


def _show_jobs(client: Client, args: argparse.Namespace) -> int:
    active = not args.all and args.state is None
    statuses = client.jobs(state=args.state, node=args.node, limit=args.limit, active=active)
    emit(
        args.output,
        [s.to_dict() for s in statuses],
        ("id", "state", "attempt", "node", "exit", "command"),
        [_status_row(s) for s in statuses],
        wide=(
            ("id", "state", "attempt", "node", "exit", "priority", "submitted", "started",
             "finished", "name", "command"),
            [_wide_row(s) for s in statuses],
        ),
    )  # fmt: skip
    return 0


def _wait_and_report(
    client: Client,
    ids: list[str],
    timeout: float | None,
    fmt: str,
    submitted: list[SubmitResult] | None = None,
    *,
    array: str | None = None,
) -> int:
    """Wait, print the outcome (one JSON document with `-o json`), return the exit code.

    `submitted`: what `submit --wait` committed, shown in the JSON document as "submitted".
    """
    if len(ids) > 1 and sys.stderr.isatty():
        from rich.progress import Progress

        with Progress(transient=True, console=_stderr_console()) as bar:
            task = bar.add_task("waiting", total=len(ids))
            statuses = client.wait(
                ids, timeout=timeout, progress=lambda done, _t: bar.update(task, completed=done)
            )
    else:
        statuses = client.wait(ids, timeout=timeout)
    counts = summarize(statuses)
    if fmt == "json":
        doc: dict[str, Any] = {
            "jobs": [s.to_dict() for s in statuses.values()],
            "counts": counts,
        }
        if submitted is not None:
            doc["submitted"] = [_submitted(r, array) for r in submitted]
        emit("json", doc)
    elif len(statuses) == 1:
        s = next(iter(statuses.values()))
        extra = f" (exit code {s.record.exit_code})" if s.record and s.record.exit_code else ""
        print(f"{s.id} {s.state.value}{extra}")
    else:
        print(", ".join(f"{n} {state}" for state, n in sorted(counts.items())))
    if any(not s.state.final for s in statuses.values()):
        return EXIT_TIMEOUT
    if any(s.state is not JobState.SUCCEEDED for s in statuses.values()):
        return EXIT_JOB_FAILED
    return 0


def cmd_wait(args: argparse.Namespace) -> int:
    return _wait_and_report(_client(args), args.ids, args.timeout, args.output)


def cmd_cancel(args: argparse.Namespace) -> int:
    """One line (text) or one document (json) per id; several ids give a JSON list."""
    try:
        before = _client(args).cancel_each(args.id)
    except PartialCancel as e:
        # Earlier requests went in: each is said, as if the others had not been asked.
        docs = [_cancelled(b, args.output) for b in e.done]
        if args.output == "json":
            emit("json", docs)
        error(str(e))
        return EXIT_PARTIAL
    docs = [_cancelled(b, args.output) for b in before]
    if args.output == "json":
        emit("json", docs[0] if len(docs) == 1 else docs)
    return 0


def _cancelled(before: JobStatus | ArrayStatus, fmt: str) -> dict[str, Any]:
    if isinstance(before, ArrayStatus):
        requested = [m.id for m in before.members if not m.state.final]
        total = len(before.members)
        if fmt != "json":
            print(f"array {before.parent}: cancel requested for {len(requested)} of {total} jobs")
        return {"id": before.parent, "array": True, "requested": len(requested)}
    if fmt != "json":
        if before.state.final:
            print(f"job {before.id} already {before.state.value}; nothing to cancel")
        else:
            print(f"job {before.id}: cancel requested (was {before.state.value})")
    return {"id": before.id, "was": before.state.value, "requested": not before.state.final}


def cmd_drain(args: argparse.Namespace) -> int:
    _client(args).drain(args.node, force=args.force)
    if args.output == "json":
        emit("json", {"node": args.node, "drained": True})
    else:
        print(f"node {args.node} drained: no new jobs; running jobs finish")
    return 0


def cmd_undrain(args: argparse.Namespace) -> int:
    was = _client(args).undrain(args.node)
    if args.output == "json":
        emit("json", {"node": args.node, "drained": False, "was_drained": was})
    else:
        print(f"node {args.node} {'undrained' if was else 'was not drained'}")
    return 0


# ---------------------------------------------------------------- parsers


def add_parsers(
    sub: Any, connection_options: Callable[..., None], output_option: Callable[..., None]
) -> None:
    def parser(name: str, help_text: str, func: Callable[[argparse.Namespace], int]) -> Any:
        p = sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=JOB_EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        connection_options(p)
        output_option(p)
        p.set_defaults(func=func)
        return p

    p = parser("submit", "submit a job; prints its id once etcd has committed it", cmd_submit)
    # Spec fields are checked when the spec is built, before any connection: the types
    # here only convert, so that each rule lives in spec.py.
    p.add_argument(
        "--id",
        type=argtypes.job_id,
        help="job id (default: a new ULID); the same id again creates nothing",
    )
    p.add_argument(
        "--priority", type=argtypes.integer(), help="higher runs first (-1000..1000, default 0)"
    )
    p.add_argument(
        "--max-attempts", type=argtypes.integer(), help="run again on failure, up to N attempts"
    )
    p.add_argument(
        "--timeout", type=argtypes.duration, help="stop the job after this long (e.g. 90s, 5m, 2h)"
    )
    p.add_argument(
        "--slots", type=argtypes.integer(), help="slots the job occupies on its node (default 1)"
    )
    p.add_argument(
        "--memory", type=argtypes.integer(), metavar="MB", help="memory the job needs, in MiB"
    )
    p.add_argument(
        "--label",
        type=argtypes.label,
        action="append",
        metavar="K=V",
        help="run only on nodes with it",
    )
    p.add_argument(
        "--env",
        type=argtypes.nonempty,
        action="append",
        metavar="K=V|NAME",
        help="environment variable; NAME alone passes this shell's value of NAME",
    )
    p.add_argument("--cwd", type=argtypes.nonempty, help="working directory on the node (absolute)")
    p.add_argument("--at", type=argtypes.text, help="not before this time (ISO 8601, or HH:MM)")
    p.add_argument(
        "--after", type=argtypes.duration, help="not before this long from now (e.g. 10m)"
    )
    for cond, when in (("ok", "succeeded"), ("any", "finished"), ("fail", "failed")):
        p.add_argument(
            f"--after-{cond}",
            type=argtypes.job_ids,
            action="append",
            metavar="ID[,ID...]",
            help=f"start only once these jobs have {when} (else: cancelled)",
        )
    p.add_argument("--name", type=argtypes.text, help="a human-readable name")
    p.add_argument("--shell", action="store_true", help="run the command through /bin/sh -c")
    p.add_argument(
        "--array",
        type=argtypes.array_range,
        metavar="RANGE",
        help="N (0..N-1), FIRST-LAST or FIRST-LAST:STEP, then %%CAP for at most CAP running "
        "at once (e.g. 0-99:2%%10); one job per index, PICLUSTER_ARRAY_INDEX set; the parent "
        "id (on stderr) stands for all in status, wait and cancel",
    )
    p.add_argument(
        "--file",
        type=argtypes.text,
        metavar="FILE",
        help="specs as JSON lines or an array ('-': stdin)",
    )
    p.add_argument("--wait", action="store_true", help="wait for the jobs to finish")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")

    p = parser("status", "show one job: state, attempts, node, result, why it waits", cmd_status)
    p.add_argument("id", type=argtypes.job_id)
    watch_option(p, "until the job has finished")

    p = parser("jobs", "list jobs: those not finished, or with --all or --state any", cmd_jobs)
    p.add_argument("--all", action="store_true", help="finished jobs too")
    watch_option(p, "until Ctrl-C")
    p.add_argument("--state", choices=[s.value for s in JobState])
    p.add_argument("--node", type=argtypes.node_name)
    p.add_argument("--limit", type=argtypes.integer(1), help="only the last N")

    p = parser("wait", "wait for jobs to finish; exit 0 only if all succeeded", cmd_wait)
    p.add_argument("ids", nargs="+", metavar="ID", type=argtypes.job_id)
    p.add_argument(
        "--timeout", type=argtypes.duration, help="give up after this long (e.g. 30s, 10m)"
    )

    p = parser(
        "cancel", "cancel jobs: queued ones never start, running ones are stopped", cmd_cancel
    )
    p.add_argument("id", nargs="+", metavar="ID", type=argtypes.job_id, help="jobs or arrays")

    p = parser("drain", "give a node no new jobs; its running jobs finish", cmd_drain)
    p.add_argument("node", type=argtypes.node_name)
    p.add_argument("--force", action="store_true", help="even if the node is not registered")

    p = parser("undrain", "let a drained node take jobs again", cmd_undrain)
    p.add_argument("node", type=argtypes.node_name)
