"""One printer: tables for people (`-o text`), JSON for programs (`-o json`)."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any


def emit_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


def emit_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(h).upper() for h in headers]] + [
        ["" if c is None else str(c) for c in r] for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        line = "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True))
        sys.stdout.write(line.rstrip() + "\n")


def emit(
    fmt: str, data: Any, headers: Sequence[str] = (), rows: Sequence[Sequence[Any]] = ()
) -> None:
    if fmt == "json":
        emit_json(data)
    else:
        emit_table(headers, rows)


def error(message: str) -> None:
    sys.stderr.write(f"picluster: {message}\n")


_ALARMS = {
    "NOSPACE": "etcd is out of space: it refuses new jobs and the agents' writes (nothing "
    "already accepted is lost) until an operator frees space: docs/OPERATIONS.md",
    "CORRUPT": "etcd found its members' data inconsistent: see etcd's logs",
}


def warn_alarms(alarms: Sequence[str]) -> None:
    """One line on stderr per alarm etcd has raised: the reason the cluster is stuck."""
    for name in alarms:
        error(f"warning: etcd alarm {name}: {_ALARMS.get(name, 'see etcd logs')}")
