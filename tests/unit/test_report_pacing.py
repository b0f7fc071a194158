"""How often a worker sends its results: pure logic, no etcd."""

from __future__ import annotations

import pytest

from picluster_agent.duties.reporter import MIN_REPORT_INTERVAL, report_interval


@pytest.mark.parametrize(
    ("slots", "prefetch", "factor"),
    [
        (8, 0, 1.0),
        (8, 4, 1.5),
        (8, 8, 2.0),
        (8, 16, 2.0),
        (8, 32, 3.0),
        (8, 48, 4.0),
        (8, 200, 4.0),
        (1, 1, 2.0),
        (0, 0, 1.0),
    ],
)
def test_prefetch_lets_a_node_report_less_often(slots: int, prefetch: int, factor: float) -> None:
    # Without prefetch every result frees a slot the master is waiting to fill: no slower
    # than the base; with a local queue at least as deep as the slots, half as often; a
    # deeper queue lasts longer still, up to four times the base.
    assert report_interval(slots, prefetch) == pytest.approx(MIN_REPORT_INTERVAL * factor)
