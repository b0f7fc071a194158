"""Job arrays: many jobs of one command under one parent id, with an optional running cap.

    --array 100          indices 0..99 (as before: N jobs)
    --array 0-99:2       indices 0, 2, ..., 98 (first-last, inclusive, by a step)
    --array 0-99%10      at most 10 of them assigned or running at once

Member `i` of parent `P` has the id `P.i` and the spec field `array` = {"parent": P,
"index": i, "max_running": cap}; its environment has PICLUSTER_ARRAY_INDEX=i. The parent
is no job of its own: `status`, `wait` and `cancel` given a parent id act on its members,
found by one range read of `jobs/P.` (and `queue/P.`). The master enforces the cap with
`ArrayCaps`, counted from what it has placed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from ..etcd.keys import validate_job_id
from .spec import MAX_ARRAY_INDEX, JobSpec, SpecError, build_spec

MAX_ARRAY = 100_000  # members in one array
# The members' specs of one array together (3 % of etcd's default 2 GiB quota, each
# written twice): 100 000 members of a spec near its own limit would be ~50 GB, exhausting
# the memory of the agent (API) or CLI building them, and etcd's quota long before.
MAX_ARRAY_BYTES = 64 * 1024 * 1024
_RANGE = re.compile(r"(\d{1,7})(?:-(\d{1,7})(?::(\d{1,7}))?)?(?:%(\d{1,7}))?")


@dataclass(frozen=True)
class ArrayRange:
    indices: range
    max_running: int | None = None

    def __len__(self) -> int:
        return len(self.indices)


def parse_array(text: str) -> ArrayRange:
    """`N`, `FIRST-LAST`, `FIRST-LAST:STEP`, each optionally followed by `%CAP`."""
    m = _RANGE.fullmatch(text.strip())
    if m is None:
        raise SpecError(
            f"expected N, FIRST-LAST or FIRST-LAST:STEP, optionally %CAP (e.g. 0-99:2%10), "
            f"got {text!r}",
            field="--array",
        )
    first, last, step, cap = (int(g) if g is not None else None for g in m.groups())
    assert first is not None
    if last is None:
        if first < 1:
            raise SpecError("N must be at least 1", field="--array")
        indices = range(first)
    else:
        if last < first:
            raise SpecError(f"{first}-{last}: the last index is before the first", field="--array")
        if step is not None and step < 1:
            raise SpecError("the step must be at least 1", field="--array")
        indices = range(first, last + 1, step or 1)
    if indices[-1] > MAX_ARRAY_INDEX:
        raise SpecError(f"indices go up to {MAX_ARRAY_INDEX}", field="--array")
    if len(indices) > MAX_ARRAY:
        raise SpecError(f"{len(indices)} jobs; at most {MAX_ARRAY} in one array", field="--array")
    if cap is not None and cap < 1:
        raise SpecError("the %CAP must be at least 1", field="--array")
    return ArrayRange(indices, cap)


def member_id(parent: str, index: int) -> str:
    return validate_job_id(f"{parent}.{index}")


def members_prefix(parent: str) -> str:
    """What every member's id starts with (a key range under jobs/ and queue/)."""
    return f"{validate_job_id(parent)}."


def member_specs(
    base: JobSpec, parent: str, indices: Iterable[int], max_running: int | None
) -> tuple[list[JobSpec], list[str]]:
    """The members' specs (each `base` with its index) and ids, in index order."""
    indices = list(indices)
    # The base's size plus its member fields, times the members: refused before any is built.
    weight = len(indices) * (len(base.to_json().encode()) + len(parent) + 96)
    if weight > MAX_ARRAY_BYTES:
        raise SpecError(
            f"{len(indices)} members of this spec are about {weight // 2**20} MiB; at most "
            f"{MAX_ARRAY_BYTES // 2**20} MiB in one array (pass large data in files)",
            field="array",
        )
    fields = base.to_dict()
    command = fields.pop("command")
    specs, ids = [], []
    for i in indices:
        env = {**base.env, "PICLUSTER_ARRAY_INDEX": str(i)}
        array = {"parent": parent, "index": i, "max_running": max_running}
        specs.append(build_spec(command, **{**fields, "env": env, "array": array}))
        ids.append(member_id(parent, i))
    if not specs:
        raise SpecError("an array needs at least one index", field="array")
    return specs, ids


def capped_parent(spec: JobSpec) -> str | None:
    """The array whose running cap applies to this job, if any."""
    return spec.array.get("parent") if spec.array.get("max_running") else None


class ArrayCaps:
    """Running members per capped array, for one scheduling step: `allows` before a job is
    placed, `take` once it is."""

    def __init__(self, placed_parents: Iterable[str | None]) -> None:
        self.running: dict[str, int] = {}
        for parent in placed_parents:
            if parent is not None:
                self.running[parent] = self.running.get(parent, 0) + 1

    def allows(self, spec: JobSpec) -> bool:
        parent = capped_parent(spec)
        return parent is None or self.running.get(parent, 0) < spec.array["max_running"]

    def take(self, spec: JobSpec) -> None:
        parent = capped_parent(spec)
        if parent is not None:
            self.running[parent] = self.running.get(parent, 0) + 1
