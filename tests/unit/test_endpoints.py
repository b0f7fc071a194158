"""Endpoints: which are valid (one line for each refusal), and which member an agent talks to
first: its own, else one chosen by its name."""

from __future__ import annotations

import pytest

from picluster_agent.endpoints import (
    is_local_address,
    parse_endpoint,
    parse_endpoints,
    preferred_order,
)
from picluster_agent.errors import ConfigError

# 198.51.100.0/24 is TEST-NET-2 (documentation only; checked not local below). Nothing is
# sent to it: only bind() is tried.
REMOTE = ["https://198.51.100.1:2379", "https://198.51.100.2:2379", "https://198.51.100.3:2379"]


def test_local_addresses():
    assert is_local_address("127.0.0.1")
    assert not any(is_local_address(u.split("//")[1].split(":")[0]) for u in REMOTE)
    assert not is_local_address("no-such-host.invalid")


def test_own_member_first_then_the_given_order():
    eps = [REMOTE[0], "https://127.0.0.1:2379", REMOTE[2]]
    assert preferred_order(eps, "pi2") == ["https://127.0.0.1:2379", REMOTE[2], REMOTE[0]]


def test_clients_only_nodes_spread_by_name_and_keep_every_member():
    firsts = {preferred_order(REMOTE, f"pi{i}")[0] for i in range(30)}
    assert firsts == set(REMOTE)
    for i in range(5):
        order = preferred_order(REMOTE, f"pi{i}")
        assert sorted(order) == sorted(REMOTE)
        assert preferred_order(REMOTE, f"pi{i}") == order  # stable for a name


def test_all_local_keeps_the_order():
    eps = ["http://127.0.0.1:1", "http://127.0.0.1:2"]
    assert preferred_order(eps, "pi1") == eps
    assert preferred_order(["http://127.0.0.1:1"], "pi1") == ["http://127.0.0.1:1"]


@pytest.mark.parametrize(
    ("url", "parsed"),
    [
        ("http://10.0.0.11:2379", ("http", "10.0.0.11", 2379)),
        ("https://pi1.lan", ("https", "pi1.lan", 2379)),
        ("pi1:2380", ("http", "pi1", 2380)),
        ("http://[::1]:2379", ("http", "::1", 2379)),
        ("https://[fd00::11]", ("https", "fd00::11", 2379)),
        (" http://pi1:2379/ ", ("http", "pi1", 2379)),
    ],
)
def test_endpoints_that_parse(url, parsed):
    assert parse_endpoint(url) == parsed


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("", "empty"),
        ("http://[::1:2379", "Invalid IPv6 URL"),  # a traceback before issue 12
        ("http://[zz]:2379", "IPv4 or IPv6"),
        ("http://[10.0.0.1]:2379", "IPv4 address cannot be in brackets"),
        ("http://::1:2379", "Port could not be cast"),
        ("http://pi1:65536", "out of range"),
        ("http://pi1:0", "port 0"),
        ("ftp://pi1:2379", "expected http(s)"),
        ("http://pi1:2379/v3/kv", "only scheme, host and port"),
        ("http://me@pi1:2379", "only scheme, host and port"),
        ("http://pi 1:2379", "no valid host name"),
        (2379, "not a string"),
    ],
)
def test_endpoints_refused_with_one_reason(url, reason):
    with pytest.raises(ConfigError, match="bad etcd endpoint") as refused:
        parse_endpoint(url)
    assert reason in str(refused.value)


def test_endpoint_lists():
    assert parse_endpoints("http://a:1, http://b:2,") == ("http://a:1", "http://b:2")
    assert parse_endpoints(["http://a:1"]) == ("http://a:1",)
    for empty in ("", " , ", []):
        with pytest.raises(ConfigError, match="no etcd endpoints"):
            parse_endpoints(empty)
    with pytest.raises(ConfigError, match="comma-separated string or a list"):
        parse_endpoints({"a": 1})
