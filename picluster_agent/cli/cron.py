"""`picluster cron`: periodic jobs. add, list, pause, resume, remove.

picluster cron add NAME 'EXPR' [--tz ZONE] [--catch-up] [submit flags] -- CMD ARGS
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from ..client import Client
from ..config import from_flags
from ..errors import NotFound
from ..jobs.periodic import CronEntry, slot_id
from . import argtypes
from .argtypes import Parser
from .jobs import _spec_from_args
from .output import emit

# Flags of `submit` that a periodic job does not take: its start times are the slots, its
# ids are made per slot, it is one job each time.
NOT_FOR_CRON = {
    *("help", "file", "wait", "array", "output", "command", "id", "at", "after"),
    *("after_ok", "after_any", "after_fail"),
}


def _client(args: argparse.Namespace) -> Client:
    return Client.from_connection(from_flags(args)[1])


def _row(e: CronEntry) -> dict[str, Any]:
    return {
        "name": e.name,
        "cron": e.expr,
        "tz": e.tz,
        "catch_up": e.catch_up,
        "paused": e.paused,
        "last_job": slot_id(e.name, e.last) if e.last else None,
        "spec": e.spec,
    }


def cmd_add(args: argparse.Namespace) -> int:
    command = list(args.command)
    if "--" in command:
        # Flags after EXPR land in the remainder (argparse ends options at the first
        # positional's REMAINDER): those before "--" are parsed here, by the same rules.
        cut = command.index("--")
        args.options_parser.parse_args(command[:cut], namespace=args)
        command = command[cut + 1 :]
    spec = _spec_from_args(args, command).to_dict()
    command_value = spec.pop("command")
    for name in ("submitted_at", "not_before", "after", "array", "name"):
        spec.pop(name, None)
    entry = _client(args).cron_add(
        args.name, args.expr, command_value, tz=args.tz, catch_up=args.catch_up, **spec
    )
    if args.output == "json":
        emit("json", _row(entry))
    else:
        print(f"periodic job {entry.name} added: {entry.expr} ({entry.tz})")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    entries = _client(args).cron_list()
    rows = [
        (
            e.name,
            e.expr,
            e.tz,
            "paused" if e.paused else "active",
            time.strftime("%F %T", time.localtime(e.last)) if e.last else "-",
            _command(e.spec.get("command", "")),
        )
        for e in entries
    ]
    headers = ("name", "cron", "tz", "state", "last slot", "command")
    emit(args.output, [_row(e) for e in entries], headers, rows)
    return 0


def _command(cmd: Any) -> str:
    return cmd if isinstance(cmd, str) else " ".join(cmd)


def _set_paused(paused: bool) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        entry = _client(args).cron_pause(args.name, paused)
        word = "paused" if paused else "resumed"
        if args.output == "json":
            emit("json", _row(entry))
        else:
            print(f"periodic job {entry.name} {word}")
        return 0

    return run


def cmd_remove(args: argparse.Namespace) -> int:
    if not _client(args).cron_remove(args.name):
        raise NotFound(f"periodic job {args.name} not found")
    if args.output == "json":
        emit("json", {"name": args.name, "removed": True})
    else:
        print(f"periodic job {args.name} removed (its jobs stay)")
    return 0


def add_parser(
    sub: Any, connection_options: Callable[..., None], output_option: Callable[..., None]
) -> None:
    group = sub.add_parser("cron", help="periodic jobs: add, list, pause, resume, remove")
    actions = group.add_subparsers(dest="cron_command", required=True, metavar="ACTION")

    def action(name: str, help_text: str, func: Callable[[argparse.Namespace], int]) -> Any:
        p = actions.add_parser(name, help=help_text, description=help_text)
        connection_options(p)
        output_option(p)
        p.set_defaults(func=func)
        return p

    p = action(
        "add",
        "add a periodic job: the master submits NAME-<slot time> at each slot of EXPR",
        cmd_add,
    )
    p.add_argument("name", type=argtypes.text, metavar="NAME")
    p.add_argument(
        "expr", type=argtypes.text, metavar="EXPR", help="cron expression ('*/5 * * * *')"
    )
    p.add_argument("--tz", type=argtypes.text, default="UTC", help="time zone of EXPR")
    p.add_argument(
        "--catch-up",
        action="store_true",
        help="after the cluster was down, run the latest missed slot once (default: skip)",
    )
    submit = sub.choices["submit"]
    for flag in submit._actions:  # the spec flags of submit, whatever they become
        if flag.dest not in NOT_FOR_CRON and flag.dest not in {a.dest for a in p._actions}:
            p._add_action(flag)
    p.set_defaults(at=None, after=None, after_ok=None, after_any=None, after_fail=None)
    options = Parser(prog="picluster cron add", add_help=False)
    for flag in p._actions:
        if flag.option_strings and flag.dest != "help":
            options._add_action(flag)
    p.set_defaults(options_parser=options)
    p.add_argument("command", nargs=argparse.REMAINDER, help="[flags] -- CMD ARGS...")

    action("list", "list periodic jobs", cmd_list)
    for name, paused in (("pause", True), ("resume", False)):
        p = action(name, f"{name} a periodic job", _set_paused(paused))
        p.add_argument("name", type=argtypes.job_id, metavar="NAME")
    p = action("remove", "remove a periodic job (its jobs stay)", cmd_remove)
    p.add_argument("name", type=argtypes.job_id, metavar="NAME")
