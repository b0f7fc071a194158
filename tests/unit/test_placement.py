"""The fit rule, the choice of node, and the explanation of a wait (pure: no etcd)."""

from __future__ import annotations

import itertools

import pytest

from picluster_agent.jobs.placement import NodeSlots, pick, why_waiting
from picluster_agent.jobs.spec import build_spec


def node(name: str = "pi1", slots: int = 4, labels: dict | None = None, **kw) -> NodeSlots:  # type: ignore[no-untyped-def]
    return NodeSlots(name, lease=1, create_revision=1, slots=slots, labels=labels or {}, **kw)


def test_fits_counts_slots_prefetch_and_memory() -> None:
    n = node(slots=2, prefetch=1, memory_mb=1000)
    assert n.fits(build_spec(["true"], slots=2))
    assert not n.fits(build_spec(["true"], slots=3))  # never more than the node's own slots
    n.take(build_spec(["true"], slots=2))
    assert n.fits(build_spec(["true"]))  # the prefetch allowance
    assert not n.fits(build_spec(["true"], memory_mb=1001))
    n.give_back(build_spec(["true"], slots=2))
    assert n.used_slots == 0 and n.used_memory == 0


def test_drained_and_unmatched_nodes_do_not_fit() -> None:
    assert not node(drained=True).fits(build_spec(["true"]))
    n = node(labels={"arch": "arm64"})
    assert n.fits(build_spec(["true"], constraints={"arch": "arm64"}))
    assert not n.fits(build_spec(["true"], constraints={"arch": "amd64"}))


def test_pick_prefers_most_free_slots() -> None:
    a, b = node("a", slots=4), node("b", slots=4)
    a.take(build_spec(["true"], slots=3))
    assert pick(build_spec(["true"]), [a, b]) is b
    assert pick(build_spec(["true"], slots=5), [a, b]) is None


@pytest.mark.parametrize(
    ("spec", "nodes", "drained", "expected"),
    [
        (build_spec(["true"]), [], set(), "no node is registered"),
        (
            build_spec(["true"], constraints={"camera": "yes"}),
            [node()],
            set(),
            "no registered node has the labels camera=yes",
        ),
        (
            build_spec(["true"], slots=8),
            [node(slots=4)],
            set(),
            "needs 8 slots; the largest matching node has 4",
        ),
        (
            build_spec(["true"], memory_mb=4096),
            [node(memory_mb=2048)],
            set(),
            "needs 4096 MiB of memory; no matching node has that much",
        ),
        (build_spec(["true"]), [node()], {"pi1"}, "every node that could run it is drained"),
        (build_spec(["true"]), [node()], set(), "waiting for a free slot"),
    ],
)
def test_why_waiting(spec, nodes, drained, expected) -> None:  # type: ignore[no-untyped-def]
    assert why_waiting(spec, not_before=None, reason=None, nodes=nodes, drained=drained) == expected


def test_why_waiting_names_a_start_time_and_a_reason() -> None:
    spec = build_spec(["true"])
    later = why_waiting(spec, not_before=2e9, reason=None, nodes=[], drained=set(), now=1e9)
    assert later.startswith("not before ")
    why = why_waiting(spec, not_before=None, reason="node pi2 lost", nodes=[node()], drained=set())
    assert why == "node pi2 lost"


def test_status_explains_by_the_schedulers_rule() -> None:
    """A job 'waits for a slot' exactly when some empty, undrained node fits it."""
    specs = [
        build_spec(["true"], slots=s, memory_mb=m, constraints=c)
        for s, m, c in itertools.product((1, 4), (None, 2048), ({}, {"arch": "arm64"}))
    ]
    shapes = [
        [node("a", slots=s, memory_mb=m, labels=lab, drained=d)]
        for s, m, lab, d in itertools.product(
            (2, 4), (None, 1024, 4096), ({}, {"arch": "arm64"}), (False, True)
        )
    ]
    for spec, nodes in itertools.product(specs, shapes):
        drained = {n.name for n in nodes if n.drained}
        explained = why_waiting(spec, not_before=None, reason=None, nodes=nodes, drained=drained)
        assert (explained == "waiting for a free slot") == any(n.fits(spec) for n in nodes)
