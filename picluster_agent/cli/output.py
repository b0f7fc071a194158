"""One printer: tables for people (`-o text`, `-o wide` with more columns), one document
for programs (`-o json`, `-o yaml`).

Commands choose between a table and a document (`args.output == "json"` means "a document");
`-o yaml` is parsed as "json" with the document's syntax set here (`DocumentFormat`), so that
every command that prints JSON prints the same data as YAML, with nothing of its own to add.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

OUTPUT_FORMATS = ("text", "json", "yaml", "wide")
_document = {"syntax": "json"}


class DocumentFormat(argparse.Action):
    """`-o/--output`: "yaml" is stored as "json" (a document) and sets the syntax."""

    def __call__(self, parser: Any, namespace: Any, value: Any, option: Any = None) -> None:
        _document["syntax"] = "yaml" if value == "yaml" else "json"
        setattr(namespace, self.dest, "json" if value == "yaml" else value)


def reset() -> None:
    """Before each parse (the tests run many commands in one process)."""
    _document["syntax"] = "json"


def emit_json(data: Any) -> None:
    """One document: JSON, or YAML after `-o yaml`."""
    if _document["syntax"] == "yaml":
        import yaml

        plain = json.loads(json.dumps(data, default=str))  # the same values as the JSON
        sys.stdout.write("---\n")
        yaml.safe_dump(plain, sys.stdout, sort_keys=True, allow_unicode=True)
        return
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
    fmt: str,
    data: Any,
    headers: Sequence[str] = (),
    rows: Sequence[Sequence[Any]] = (),
    wide: tuple[Sequence[str], Sequence[Sequence[Any]]] | None = None,
) -> None:
    """`wide`: the table's headers and rows for `-o wide` (else the normal table)."""
    if fmt == "json":
        emit_json(data)
    elif fmt == "wide" and wide is not None:
        emit_table(*wide)
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
