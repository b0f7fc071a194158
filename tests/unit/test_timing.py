"""The timing rule (timing.py) and its enforcement at agent start."""

from __future__ import annotations

import pytest

from picluster_agent import defaults, timing
from picluster_agent.config import Connection, build_agent_config, check_setting
from picluster_agent.errors import ConfigError


@pytest.mark.parametrize(
    ("election_timeout", "min_ttl"),
    [
        (2.0, 8),  # the etcd role's tuning for SD cards
        (1.0, 6),  # etcd's own default
        (0.5, 5),  # the loopback members of the tests and the demo
    ],
)
def test_smallest_ttl_for_an_election_timeout(election_timeout: float, min_ttl: int) -> None:
    assert timing.min_lease_ttl(election_timeout) == min_ttl
    assert timing.rides_out_leader_loss(min_ttl, election_timeout)
    assert not timing.rides_out_leader_loss(min_ttl - 1, election_timeout)


def test_the_budget_adds_up() -> None:
    # TTL 8 with a 2 s election timeout: the guard kills at 7 s after the last good keepalive;
    # the next keepalive is due after 1 s, may wait 1 s on a silent member, a new leader takes
    # up to 4 s, and 0.5 s of slack: 6.5 s.
    assert timing.kill_margin(8) == 1.0
    assert timing.keepalive_interval(8) == 1.0
    assert timing.leader_loss_budget(2.0, 8) == 6.5
    # The supervisor's fence lies after the guard and before the earliest server-side expiry,
    # far enough before it for a killed job to exit on a loaded board.
    assert 0.5 < timing.fence_margin(8) < timing.kill_margin(8)


def test_the_defaults_obey_the_rule() -> None:
    assert timing.rides_out_leader_loss(defaults.LEASE_TTL, defaults.ETCD_ELECTION_TIMEOUT)
    assert timing.min_lease_ttl(defaults.ETCD_ELECTION_TIMEOUT) == defaults.LEASE_TTL


def test_keepalives_come_at_least_every_second() -> None:
    assert timing.keepalive_interval(3) == 1.0
    assert timing.keepalive_interval(30) == 1.0
    assert timing.keepalive_interval(2) == pytest.approx(2 / 3)


def test_an_agent_refuses_a_ttl_that_breaks_the_rule() -> None:
    with pytest.raises(ConfigError) as e:
        build_agent_config({"lease_ttl": 3}, Connection(), name="pi1")
    message = str(e.value)
    assert "\n" not in message
    assert "lease_ttl: 3s is too short for etcd's election timeout of 2s" in message
    assert "at least 8s" in message


def test_a_shorter_election_timeout_allows_a_shorter_ttl() -> None:
    cfg = build_agent_config(
        {"lease_ttl": 5, "etcd_election_timeout": 0.5}, Connection(), name="pi1"
    )
    assert (cfg.lease_ttl, cfg.etcd_election_timeout) == (5, 0.5)


@pytest.mark.parametrize("bad", ["abc", 0, -1, None, [1], 61])
def test_a_bad_election_timeout_is_one_clear_error(bad: object) -> None:
    with pytest.raises(ConfigError, match="etcd_election_timeout: must be"):
        check_setting("etcd_election_timeout", bad)
