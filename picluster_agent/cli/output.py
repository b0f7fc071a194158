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
