"""`picluster provision`: run site.yml (or another playbook of the repo) through ansible-runner.

A live per-host view (tasks ok / changed / failed / unreachable, the task each host is on) while
the playbook runs, a summary table at the end, and a non-zero exit that names the failing host and
task. The event -> state logic (`RunState.handle`) is pure and unit-tested; everything that
touches Ansible or the terminal is in `run`.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from . import argtypes

# Exit codes, aligned with the CLI's: 1 a host failed, 2 bad input.
EXIT_FAILED = 1
EXIT_USAGE = 2


@dataclass
class HostState:
    """What one host has done so far."""

    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0
    task: str = ""
    # (task, message) of the first failure that was not ignored
    failure: tuple[str, str] | None = None

    @property
    def status(self) -> str:
        if self.unreachable:
            return "unreachable"
        if self.failed:
            return "failed"
        return "ok"


@dataclass
class RunState:
    """Per-host progress built from ansible-runner events."""

    hosts: dict[str, HostState] = field(default_factory=dict)
    play: str = ""
    task: str = ""
    tasks_started: int = 0
    finished: bool = False

    def host(self, name: str) -> HostState:
        return self.hosts.setdefault(name, HostState())

    def handle(self, event: Mapping[str, Any]) -> None:
        """Fold one ansible-runner event into the state. Unknown events are ignored."""
        kind = event.get("event", "")
        data: Mapping[str, Any] = event.get("event_data") or {}
        name = data.get("host") or ""
        if kind == "playbook_on_play_start":
            self.play = str(data.get("play", ""))
        elif kind in ("playbook_on_task_start", "playbook_on_handler_task_start"):
            self.task = str(data.get("task", ""))
            self.tasks_started += 1
        elif kind == "runner_on_start" and name:
            self.host(name).task = str(data.get("task", ""))
        elif kind == "runner_on_ok" and name:
            h = self.host(name)
            res = data.get("res") or {}
            if res.get("changed"):
                h.changed += 1
            else:
                h.ok += 1
        elif kind == "runner_on_skipped" and name:
            self.host(name).skipped += 1
        elif kind == "runner_on_failed" and name:
            h = self.host(name)
            if data.get("ignore_errors"):
                h.ok += 1
                return
            h.failed += 1
            if h.failure is None:
                h.failure = (str(data.get("task", "")), _message(data.get("res") or {}))
        elif kind == "runner_on_unreachable" and name:
            h = self.host(name)
            h.unreachable += 1
            if h.failure is None:
                h.failure = (str(data.get("task", "")), _message(data.get("res") or {}))
        elif kind == "playbook_on_stats":
            self.finished = True
            for host in _stats_hosts(data):
                self.host(host).task = ""

    def failures(self) -> list[tuple[str, str, str]]:
        """(host, task, message) for every host that failed or was unreachable."""
        return [
            (name, h.failure[0], h.failure[1])
            for name, h in sorted(self.hosts.items())
            if h.failure is not None
        ]


def _message(res: Mapping[str, Any]) -> str:
    msg = res.get("msg") or res.get("stderr") or res.get("reason") or ""
    lines = [line.strip() for line in str(msg).strip().splitlines() if line.strip()]
    return " / ".join(lines[:3])[:300]


def _stats_hosts(data: Mapping[str, Any]) -> set[str]:
    names: set[str] = set()
    for key in ("ok", "changed", "failures", "dark", "skipped", "processed"):
        value = data.get(key)
        if isinstance(value, Mapping):
            names.update(str(k) for k in value)
    return names


# --- the command -----------------------------------------------------------------------------


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `picluster provision` on the CLI's subparsers."""
    p = subparsers.add_parser(
        "provision",
        help="configure the nodes: run site.yml (or another playbook) with a live view",
        description="Run an Ansible playbook of this repository through ansible-runner, "
        "showing per-host progress; exit 1 naming the failing host and task.",
    )
    p.add_argument(
        "playbook",
        type=argtypes.text,
        nargs="?",
        default="site.yml",
        metavar="PLAYBOOK",
        help="playbook, relative to the repository (default site.yml; e.g. playbooks/upgrade.yml)",
    )
    p.add_argument(
        "-i",
        "--inventory",
        type=argtypes.text,
        help="inventory file or directory (default: ansible.cfg's)",
    )
    p.add_argument(
        "-l", "--limit", type=argtypes.text, help="only these hosts or groups (Ansible pattern)"
    )
    p.add_argument(
        "-e",
        "--extra-vars",
        type=argtypes.text,
        action="append",
        default=[],
        metavar="VARS",
        help="extra variables: key=value, JSON or @file (repeatable)",
    )
    p.add_argument("--check", action="store_true", help="dry run: report what would change")
    p.add_argument(
        "--project-dir",
        type=argtypes.text,
        help="repository holding ansible.cfg and the playbooks (default: found from here)",
    )
    p.set_defaults(func=run)
    return p


def find_project_dir(start: Path | None = None) -> Path | None:
    """The repository: the current directory or a parent with ansible.cfg and site.yml,
    else the checkout this module runs from (an editable install)."""
    here = (start or Path.cwd()).resolve()
    candidates = [here, *here.parents, Path(__file__).resolve().parents[2]]
    for d in candidates:
        if (d / "ansible.cfg").is_file() and (d / "site.yml").is_file():
            return d
    return None


def build_cmdline(args: argparse.Namespace) -> list[str]:
    """ansible-playbook options that ansible-runner passes through."""
    out: list[str] = []
    for ev in args.extra_vars:
        out += ["-e", ev]
    if args.check:
        out.append("--check")
    return out


def check_extra_vars(value: str) -> None:
    """Refuse what ansible-playbook would refuse only after starting: a missing @file,
    broken inline JSON/YAML, a word that is not key=value."""
    if value.startswith("@"):
        path = Path(value[1:])
        if not path.is_file() or not os.access(path, os.R_OK):
            raise ConfigError(f"extra vars {value!r}: no readable file {path}")
        return
    if value.lstrip().startswith(("{", "[")):
        try:
            data = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise ConfigError(f"extra vars {value!r}: not valid JSON or YAML") from e
        if not isinstance(data, dict):
            raise ConfigError(f"extra vars {value!r}: must be a mapping")
        return
    try:
        words = shlex.split(value)
    except ValueError as e:
        raise ConfigError(f"extra vars {value!r}: {e}") from e
    for word in words:
        key, sep, _ = word.partition("=")
        if not sep or not key:
            raise ConfigError(f"extra vars {value!r}: {word!r} is not key=value")


def _checked_paths(args: argparse.Namespace) -> tuple[Path, Path]:
    """The project dir and playbook, after every argument was checked."""
    if args.project_dir:
        project: Path | None = Path(args.project_dir).resolve()
        if not (project / "ansible.cfg").is_file():  # type: ignore[operator]
            raise ConfigError(f"--project-dir {args.project_dir}: no ansible.cfg there")
    else:
        project = find_project_dir()
        if project is None:
            raise ConfigError("no repository with ansible.cfg and site.yml found (--project-dir)")
    playbook = (project / args.playbook).resolve()  # type: ignore[operator]
    if not playbook.is_file():
        raise ConfigError(f"playbook {playbook} not found")
    if args.inventory and not Path(args.inventory).exists():
        raise ConfigError(f"inventory {args.inventory} not found")
    for value in args.extra_vars:
        check_extra_vars(value)
    return project, playbook  # type: ignore[return-value]


def run(args: argparse.Namespace) -> int:
    try:
        import ansible_runner
    except ImportError:
        raise ConfigError(
            "provision needs ansible-runner, from the provision extra of "
            "picluster-agent: in the checkout, pip install '.[provision]' "
            "(or pipx install --force '.[provision]')"
        ) from None
    project, playbook = _checked_paths(args)
    from rich.console import Console
    from rich.live import Live

    err = Console(stderr=True)

    state = RunState()
    console = Console()
    live_view = console.is_terminal

    # ansible-playbook from the same venv as this CLI, the repository's ansible.cfg.
    env = {
        "ANSIBLE_CONFIG": str(project / "ansible.cfg"),
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "ANSIBLE_FORCE_COLOR": "0",
    }
    kwargs: dict[str, Any] = {
        "project_dir": str(project),
        "playbook": str(playbook),
        "envvars": env,
        "quiet": True,
    }
    if args.inventory:
        kwargs["inventory"] = str(Path(args.inventory).resolve())
    if args.limit:
        kwargs["limit"] = args.limit
    cmdline = build_cmdline(args)
    if cmdline:
        kwargs["cmdline"] = shlex.join(cmdline)

    with tempfile.TemporaryDirectory(prefix="picluster-provision-") as private:
        kwargs["private_data_dir"] = private
        if live_view:
            with Live(render(state, playbook.name), console=console, refresh_per_second=8) as live:
                handler = _handler(state, lambda: live.update(render(state, playbook.name)))
                result = ansible_runner.run(
                    private_data_dir=private, event_handler=handler, **kwargs
                )
        else:
            handler = _handler(state, _line_printer(state, console))
            result = ansible_runner.run(event_handler=handler, **kwargs)

    console.print(render(state, playbook.name, final=True))
    failures = state.failures()
    for host, task, message in failures:
        err.print(f"picluster: provision failed on {host}, task '{task}': {message}")
    if failures:
        return EXIT_FAILED
    if result.rc != 0:
        err.print(f"picluster: ansible-playbook exited {result.rc} ({result.status})")
        return EXIT_FAILED
    return 0


def _handler(state: RunState, refresh: Callable[[], None]) -> Callable[[dict[str, Any]], bool]:
    def handle(event: dict[str, Any]) -> bool:
        state.handle(event)
        refresh()
        return True  # keep the event in the artifacts

    return handle


def _line_printer(state: RunState, console: Any) -> Callable[[], None]:
    """Without a terminal (CI logs): one line per new task, not a redrawn table."""
    seen: dict[str, object] = {"tasks": 0, "line": ""}

    def refresh() -> None:
        if state.tasks_started == seen["tasks"]:
            return
        seen["tasks"] = state.tasks_started
        line = f"[{state.play}] {state.task}"
        if line != seen["line"]:  # meta tasks start once per host
            seen["line"] = line
            console.print(line, highlight=False, markup=False)

    return refresh


def render(state: RunState, title: str, final: bool = False) -> Any:
    from rich.table import Table

    table = Table(title=f"{title}: {'summary' if final else state.play}", title_justify="left")
    table.add_column("host")
    table.add_column("ok", justify="right")
    table.add_column("changed", justify="right", style="yellow")
    table.add_column("failed", justify="right", style="red")
    table.add_column("unreachable", justify="right", style="red")
    table.add_column("skipped", justify="right", style="dim")
    table.add_column("status" if final else "task")
    for name, h in sorted(state.hosts.items()):
        last = h.status if final else h.task
        table.add_row(
            name,
            str(h.ok),
            str(h.changed),
            str(h.failed),
            str(h.unreachable),
            str(h.skipped),
            last,
        )
    return table
