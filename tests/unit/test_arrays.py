"""Job arrays' pure parts: the members' specs and what an array may weigh."""

from __future__ import annotations

import pytest

from picluster_agent.jobs.arrays import member_specs, parse_array
from picluster_agent.jobs.spec import MAX_SPEC_BYTES, SpecError, build_spec


def test_an_array_too_heavy_for_etcd_is_refused_before_its_members_are_built() -> None:
    # 100 000 members of a spec near its own limit would be ~50 GB: the agent serving the
    # API (or the CLI) would run out of memory, and etcd out of its quota long before.
    # Here 300 members of 256 KiB: 75 MiB.
    big = build_spec(["echo"], env={"DATA": "x" * (MAX_SPEC_BYTES // 2)})
    array = parse_array("300")
    with pytest.raises(SpecError, match="at most"):
        member_specs(big, "heavy", array.indices, None)


def test_an_array_of_ordinary_specs_is_built() -> None:
    spec = build_spec(["python3", "train.py", "--lr", "0.01"], env={"SEED": "7" * 300})
    array = parse_array("0-99999%10")
    specs, ids = member_specs(spec, "sweep", range(0, 100_000, 5000), array.max_running)
    assert ids[:2] == ["sweep.0", "sweep.5000"]
    assert specs[1].env["PICLUSTER_ARRAY_INDEX"] == "5000"
