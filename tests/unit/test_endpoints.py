"""Which member an agent talks to first: its own, else one chosen by its name."""

from __future__ import annotations

from picluster_agent.endpoints import is_local_address, preferred_order

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
