"""Which slots of a periodic job are due (`jobs.periodic.due`): pure, on fixed times."""

from __future__ import annotations

import pytest

from picluster_agent.jobs.periodic import GRACE, CronEntry, check, due, slot_id
from picluster_agent.jobs.spec import SpecError

T0 = 1_800_000_000.0  # a whole minute (divisible by 60)


def entry(**kw) -> CronEntry:
    base = {"name": "n", "expr": "* * * * *", "spec": {"command": ["true"]}, "created_at": T0}
    return CronEntry(**{**base, **kw})


def test_the_slots_since_the_last_are_due_once():
    d = due(entry(expr="* * * * * */20"), T0 + 45)
    assert d.make == [T0 + 20, T0 + 40] and d.handled == T0 + 40
    assert due(entry(expr="* * * * * */20", last=T0 + 40), T0 + 59).make == []


def test_slots_missed_beyond_the_grace_are_skipped_or_the_latest_run_once():
    now = T0 + 600  # 9 slots missed, more than GRACE ago
    skipped = due(entry(), now)
    assert skipped.make == [now] and skipped.handled == now  # only the recent one
    caught = due(entry(catch_up=True), now + 1)
    assert caught.make == [now - GRACE, now]  # and the latest missed one, once


def test_paused_and_seconds_and_time_zones():
    assert due(entry(paused=True), T0 + 600).handled is None
    berlin = due(entry(expr="0 3 * * *", tz="Europe/Berlin", created_at=T0 - 86400), T0)
    assert all(s % 3600 == 0 for s in berlin.make)
    assert slot_id("nightly", T0) == "nightly-20270115T080000Z"


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"expr": "61 * * * *"}, "not a cron expression"), ({"tz": "Mars/Olympus"}, "time zone"),
     ({"name": "a/b"}, "invalid job id"), ({"spec": {"command": []}}, "command")],
)  # fmt: skip
def test_bad_entries_are_refused(changes, message):
    with pytest.raises(SpecError, match=message):
        check(entry(**changes))
