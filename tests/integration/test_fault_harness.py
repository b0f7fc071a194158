"""The fault suite's harness itself: each network fault cuts what it claims and nothing else,
a clock step reaches the agent, and a run leaves nothing behind (picluster_agent/chaos)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from picluster_agent.chaos.cluster import CLIENT_PORT, PEER_PORT
from picluster_agent.chaos.netns import NS_PREFIX, RUN_DIR, Namespace
from picluster_agent.etcd.localcluster import wait_for

pytestmark = pytest.mark.faults
CLOSED_PORT = 9  # nothing listens there: a reachable node answers with a reset

_PROBE = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1.0).close()
    print("open")
except ConnectionRefusedError:
    print("refused")
except OSError:
    print("silent")
"""


def probe(source: Namespace | None, address: str, port: int) -> str:
    """Connect from `source` (None: the root namespace): open, refused, or silent (timed out)."""
    prefix = source.exec_prefix if source is not None else []
    argv = [*prefix, sys.executable, "-I", "-S", "-c", _PROBE, address, str(port)]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()


def test_each_network_fault_cuts_what_it_claims_and_heals(net_cluster):
    cluster = net_cluster(etcd_nodes=3, agent_nodes=1)
    n1, n2, n3, n4 = (cluster.nodes[n] for n in ("n1", "n2", "n3", "n4"))
    assert probe(None, n2.ns.ip, CLIENT_PORT) == "open"
    assert probe(n4.ns, n1.ns.ip, CLIENT_PORT) == "open"

    cluster.isolate(n4)  # nothing in or out
    assert probe(n4.ns, n1.ns.ip, CLIENT_PORT) == "silent"
    assert probe(n1.ns, n4.ns.ip, CLOSED_PORT) == "silent"
    cluster.heal_network(n4)
    assert probe(n1.ns, n4.ns.ip, CLOSED_PORT) == "refused"

    cluster.cut_replies(n4)  # etcd's answers are dropped, nothing else
    assert probe(n4.ns, n1.ns.ip, CLIENT_PORT) == "silent"
    assert probe(n4.ns, n1.ns.ip, CLOSED_PORT) == "refused"
    cluster.heal_network(n4)

    cluster.blackhole_member(n2)  # its member vanishes for all; its node still reaches others
    assert probe(None, n2.ns.ip, CLIENT_PORT) == "silent"
    assert probe(n1.ns, n2.ns.ip, PEER_PORT) == "silent"
    assert probe(n2.ns, n1.ns.ip, CLIENT_PORT) == "open"
    cluster.heal_network(n2)
    assert probe(None, n2.ns.ip, CLIENT_PORT) == "open"

    changed = cluster.cut_from_majority(n4)  # agent-only: n1's member goes with it
    assert [n.name for n in changed] == ["n4", "n1"]
    assert probe(n4.ns, n2.ns.ip, CLIENT_PORT) == "silent"
    assert probe(n4.ns, n1.ns.ip, CLIENT_PORT) == "open"
    assert probe(n1.ns, n3.ns.ip, PEER_PORT) == "silent"
    assert probe(n2.ns, n4.ns.ip, CLOSED_PORT) == "refused"  # the workers still reach it
    for node in changed:
        cluster.heal_network(node)
    assert probe(n4.ns, n2.ns.ip, CLIENT_PORT) == "open"


def test_a_clock_step_moves_the_agents_wall_clock_only(net_cluster):
    cluster = net_cluster(etcd_nodes=3, agent_nodes=0)
    master = cluster.wait_master()

    def heartbeat_ahead() -> bool:
        kv = cluster.client.get(cluster.keys.leader)
        return kv is not None and kv.json()["heartbeat"] > time.time() + 3000

    cluster.step_clock(master, 3600)
    wait_for(heartbeat_ahead, 10, what="the master's heartbeat an hour ahead")
    cluster.step_clock(master, 0)
    wait_for(lambda: not heartbeat_ahead(), 10, what="the master's clock back in step")


def test_a_run_leaves_no_namespace_link_rule_or_process_behind(net_cluster):
    cluster = net_cluster(etcd_nodes=1, agent_nodes=1)
    run_id = cluster.net.run_id
    pids = [n.agent.pid for n in cluster.nodes.values() if n.agent is not None]
    cluster.stop()
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"{NS_PREFIX}{run_id}-" not in namespaces
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert [line for line in links.splitlines() if run_id in line] == []
    rules = subprocess.run(["iptables", "-w", "-S", "FORWARD"], capture_output=True, text=True)
    assert run_id not in rules.stdout
    assert not (RUN_DIR / run_id).exists()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # the agents are gone (and reaped)
