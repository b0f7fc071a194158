"""The stored form of specs, job records and results: fields at their defaults left out.

etcd's cost grows with the bytes written (docs/BENCHMARKS.md), and a job's spec and record
are written several times per job; readers construct the dataclass, which fills them back in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import MISSING, fields
from typing import Any


def field_defaults(cls: type) -> dict[str, Any]:
    """Each field of dataclass `cls` that has a default, with that default."""
    return {
        f.name: f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        for f in fields(cls)
        if f.default is not MISSING or f.default_factory is not MISSING
    }


def without_defaults(items: Iterable[tuple[str, Any]], defaults: dict[str, Any]) -> dict[str, Any]:
    """The (name, value) pairs as a dict, leaving out those equal to their default."""
    return {name: value for name, value in items if name not in defaults or value != defaults[name]}
