"""The doctor's pure parts: clock arithmetic, expiry levels, eMMC wear, exit levels."""

from __future__ import annotations

from pathlib import Path

import pytest

from picluster_agent.doctor.card import emmc_wear
from picluster_agent.doctor.certs import WARN_DAYS, expiry_check
from picluster_agent.doctor.clock import Answer, from_one, from_tick, read_clock
from picluster_agent.doctor.result import Check, Level, worst

DAY = 86400.0


def test_a_tick_bounds_the_offset_by_the_polls():
    # The member's second 1000 began between 99.98 (we sent the last "999") and 100.02
    # (we got the first "1000"): its clock is 900 s ahead of ours, +- 0.02 s.
    reading = from_tick(Answer(99.98, 99.99, 999.0, None), Answer(100.00, 100.02, 1000.0, None))
    assert reading.offset == pytest.approx(900.0)
    assert reading.precision == pytest.approx(0.02)


def test_one_answer_places_the_clock_within_its_second():
    reading = from_one(Answer(100.0, 100.1, 100.0, None))
    # The member read [100, 101) while we were between 100.0 and 100.1.
    assert reading.offset - reading.precision == pytest.approx(-0.1)
    assert reading.offset + reading.precision == pytest.approx(1.0)


def test_read_clock_finds_the_tick_of_a_clock_ahead():
    now = [1000.0]

    def asker(_url: str, _tls: object, _timeout: float) -> Answer:
        now[0] += 0.01
        sent = now[0]
        now[0] += 0.01
        return Answer(sent, now[0], float(int(sent + 3.5)), None)  # 3.5 s ahead

    reading = read_clock("http://x:2379", None, asker=asker, interval=0, budget=5)  # type: ignore[arg-type]
    assert abs(reading.offset - 3.5) <= reading.precision <= 0.03


@pytest.mark.parametrize(
    ("days_left", "level"),
    [(-1, Level.FAIL), (0.5, Level.WARN), (WARN_DAYS, Level.WARN), (WARN_DAYS + 1, Level.OK)],
)
def test_expiry_levels(days_left: float, level: Level):
    check = expiry_check({"a": 1000 * DAY + days_left * DAY, "b": 2000 * DAY}, [], now=1000 * DAY)
    assert check.level is level


def test_emmc_wear_is_read_and_sd_cards_have_none(tmp_path: Path):
    device = tmp_path / "mmcblk0" / "device"
    device.mkdir(parents=True)
    (device / "life_time").write_text("0x02 0x03\n")
    (device / "pre_eol_info").write_text("0x01\n")
    assert emmc_wear("/dev/mmcblk0p2", tmp_path) == {
        "life_time": "0x02 0x03",
        "pre_eol_info": "0x01",
    }
    assert emmc_wear("/dev/mmcblk1p2", tmp_path) == {}


def test_the_worst_check_is_the_exit_code():
    checks = [Check("a", Level.OK, ""), Check("b", Level.WARN, "")]
    assert int(worst(checks)) == 1
    assert int(worst([*checks, Check("c", Level.FAIL, "")])) == 2
    assert int(worst([])) == 0
