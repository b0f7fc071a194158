"""Stop signals: an AnyEvent of Flags sleeps until a part is set, without polling."""

from __future__ import annotations

import threading
import time

import pytest

from picluster_agent.stopping import AnyEvent, Flag


@pytest.fixture
def no_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(_self: AnyEvent, _deadline: float | None) -> bool:
        raise AssertionError("AnyEvent polled")

    monkeypatch.setattr(AnyEvent, "_poll", refuse)


def set_later(flag: threading.Event, delay: float) -> threading.Thread:
    t = threading.Thread(target=lambda: (time.sleep(delay), flag.set()))
    t.start()
    return t


def test_a_wait_on_flags_ends_when_one_is_set_and_never_polls(no_polling: None) -> None:
    stop, lost = Flag(), Flag()
    nested = AnyEvent(AnyEvent(stop), lost)
    t = set_later(lost, 0.05)
    t0 = time.monotonic()
    assert nested.wait(10)
    assert time.monotonic() - t0 < 5
    t.join()
    assert not stop._wakers and not lost._wakers  # the waiter unsubscribed


def test_a_wait_times_out_false_and_an_empty_anyevent_just_sleeps(no_polling: None) -> None:
    t0 = time.monotonic()
    assert not AnyEvent(Flag()).wait(0.05)
    assert not AnyEvent().wait(0.05)
    assert time.monotonic() - t0 >= 0.1


@pytest.mark.parametrize("timeout", [None, 10.0])
def test_a_flag_set_before_the_wait_returns_at_once(
    no_polling: None, timeout: float | None
) -> None:
    flag = Flag()
    flag.set()
    assert AnyEvent(Flag(), flag).wait(timeout)


def test_a_flag_set_then_cleared_does_not_end_the_wait(no_polling: None) -> None:
    resync, stop = Flag(), Flag()

    # The setter clears it again at once (as the worker does with its resync flag): the
    # waiter must go on waiting for a part that stays set.
    def blink() -> None:
        resync.set()
        resync.clear()
        time.sleep(0.05)
        stop.set()

    t = threading.Thread(target=blink)
    t.start()
    assert AnyEvent(resync, stop).wait(10)
    assert stop.is_set()
    t.join()


def test_a_plain_event_part_falls_back_to_polling() -> None:
    plain = threading.Event()
    t = set_later(plain, 0.05)
    assert AnyEvent(Flag(), plain).wait(10)
    t.join()
    assert AnyEvent(plain).subscribe(lambda: None) is False


def test_wakers_are_called_on_set_and_at_subscription_when_already_set() -> None:
    calls: list[str] = []
    flag = Flag()
    flag.subscribe(lambda: calls.append("a"))
    flag.set()
    flag.subscribe(lambda: calls.append("b"))
    assert calls == ["a", "b"]
