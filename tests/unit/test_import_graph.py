"""The package's rooms and what each may import (docs/ARCHITECTURE.md), checked on the source.

Every import of a picluster_agent module, at module level or inside a function, must point
to a room that the importing module's room may use. A new module must be given a room here
and in docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "picluster_agent"

# Module (dotted, under picluster_agent) or sub-package -> room. The most specific entry wins.
ROOMS = {
    "": "base",  # picluster_agent/__init__.py: the version
    "defaults": "base",
    "errors": "base",
    "stopping": "base",
    "endpoints": "base",
    "timing": "base",
    "liveness": "base",
    "etcd": "etcd",
    "coord": "coord",
    "jobs": "jobs",
    "config": "settings",
    "node": "node",
    "node.jobshim": "jobshim",
    "node.cgroups": "jobshim",
    "duties": "duties",
    "client": "api",
    "ui": "api",  # the status page's data: read like the Python API reads
    "doctor": "doctor",
    "joblogs": "api",
    "api_client": "api",
    "api": "http",
    "cli": "cli",
    "__main__": "cli",
    "chaos": "chaos",
    "observe": "observe",
}

# Room -> the rooms it may import (its own always included). Lower rooms never import upward.
ALLOWED = {
    "base": set(),
    "observe": {"base"},
    "etcd": {"base"},
    "coord": {"base", "etcd"},
    "jobs": {"base", "etcd"},
    "settings": {"base", "etcd", "jobs"},
    "jobshim": set(),  # run by path with `python -I -S`: the standard library only
    "node": {"base", "etcd", "jobs", "jobshim"},
    "duties": {"base", "etcd", "coord", "jobs", "settings", "node", "observe"},
    "api": {"base", "etcd", "coord", "jobs", "settings"},
    "doctor": {"base", "etcd", "coord", "jobs", "settings", "node", "api"},
    # node: the logs route reads the output files of this node's attempts (node/outputs.py)
    "http": {"base", "etcd", "coord", "jobs", "settings", "api", "observe", "node"},
    "cli": {
        "base",
        "etcd",
        "coord",
        "jobs",
        "settings",
        "node",
        "duties",
        "api",
        "observe",
        "doctor",
        "http",
    },
    "chaos": {"base", "etcd", "coord", "jobs", "settings", "api"},
}


def room_of(module: str) -> str:
    parts = module.split(".") if module else []
    for n in range(len(parts), -1, -1):
        key = ".".join(parts[:n])
        if key in ROOMS:
            return ROOMS[key]
    raise KeyError(module)


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    return imports_in(path.read_text(), module_name(path), is_package=path.name == "__init__.py")


def imports_in(source: str, module: str, *, is_package: bool) -> list[tuple[int, str]]:
    """(line, target module under picluster_agent) of every package-internal import."""
    parts = module.split(".") if module else []
    package = parts if is_package else parts[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = [*base, *(node.module.split(".") if node.module else [])]
            elif node.module and node.module.split(".")[0] == "picluster_agent":
                target = node.module.split(".")[1:]
            else:
                continue
            if node.module is None or (node.level and not node.module):
                # `from . import x, y`: each name may be a module of that package
                for alias in node.names:
                    candidate = [*target, alias.name]
                    known = (PACKAGE.joinpath(*candidate).with_suffix(".py").exists()
                             or PACKAGE.joinpath(*candidate).is_dir())  # fmt: skip
                    found.append((node.lineno, ".".join(candidate if known else target)))
            else:
                found.append((node.lineno, ".".join(target)))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "picluster_agent":
                    found.append((node.lineno, ".".join(alias.name.split(".")[1:])))
    return found


SOURCES = sorted(p for p in PACKAGE.rglob("*.py") if "wallclock" not in p.parts)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_imports_only_what_its_room_may(path: Path) -> None:
    room = room_of(module_name(path))
    may = ALLOWED[room] | {room}
    wrong = [
        f"{path.relative_to(PACKAGE)}:{line} imports {target or 'picluster_agent'} "
        f"({room_of(target)}); room {room} may import {sorted(may)}"
        for line, target in imports_of(path)
        if room_of(target) not in may
    ]
    assert not wrong, "\n".join(wrong)


def test_every_module_has_a_room() -> None:
    for path in SOURCES:
        room_of(module_name(path))  # raises KeyError for a module nobody placed


def test_the_rule_catches_an_upward_import() -> None:
    """The checker itself: the etcd adapter importing the scheduler would be reported."""
    source = (PACKAGE / "etcd" / "adapter.py").read_text()
    source += "\n\ndef _f():\n    from ..duties.scheduler import Scheduler\n"
    may = ALLOWED["etcd"] | {"etcd"}
    wrong = [
        t for _, t in imports_in(source, "etcd.adapter", is_package=False) if room_of(t) not in may
    ]
    assert wrong == ["duties.scheduler"]


def test_architecture_doc_names_every_module() -> None:
    doc = (PACKAGE.parent / "docs" / "ARCHITECTURE.md").read_text()
    unnamed = [
        str(p.relative_to(PACKAGE))
        for p in SOURCES
        if p.name != "__init__.py" and f"`{p.name}`" not in doc
    ]
    assert not unnamed, f"docs/ARCHITECTURE.md does not name {unnamed}"
