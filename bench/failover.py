"""Failover benchmark: crash (kill -9) and clean (SIGTERM) master handover times.

A 3-member etcd and 3 agents on loopback, with the etcd role's raft timing (heartbeat 200 ms,
election timeout 2000 ms) and the smallest lease TTL the timing rule allows with it (8 s,
the default). Each trial stops the current master, measures the time until another agent
holds the election (polled every 5 ms), then restarts the stopped agent so that every trial
starts from 3 live agents.

    .venv/bin/python bench/failover.py [--trials 10] [--election-timeout-ms 2000] [--ttl N]
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from picluster_agent import timing
from picluster_agent.coord.election import current_leader
from picluster_agent.etcd.keys import Keys
from picluster_agent.etcd.localcluster import AgentProcess, EtcdCluster, wait_for


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--heartbeat-ms", type=int, default=200, help="etcd's (the role's)")
    parser.add_argument("--election-timeout-ms", type=int, default=2000, help="the role's")
    parser.add_argument("--ttl", type=int, help="lease TTL (default: the rule's smallest)")
    args = parser.parse_args()
    election = args.election_timeout_ms / 1000
    args.ttl = args.ttl or timing.min_lease_ttl(election)

    base = Path(tempfile.mkdtemp(prefix="picluster-bench-"))
    keys = Keys("/bench")
    cluster = EtcdCluster(
        base / "etcd",
        3,
        heartbeat_ms=args.heartbeat_ms,
        election_timeout_ms=args.election_timeout_ms,
    ).start()
    client = cluster.client()
    agents: dict[str, AgentProcess] = {}

    def start(name: str) -> None:
        agents[name] = AgentProcess(
            name,
            cluster.endpoints_csv,
            keys.prefix,
            base / name,
            args.ttl,
            etcd_election_timeout=election,
        ).start()

    def registered() -> bool:
        return client.count_prefix(keys.nodes_dir) == 3

    results: dict[str, list[float]] = {"crash (kill -9)": [], "clean (SIGTERM)": []}
    try:
        for name in ("pi1", "pi2", "pi3"):
            start(name)
        wait_for(registered, 30, what="3 agents")
        for kind, sig in (("crash (kill -9)", signal.SIGKILL), ("clean (SIGTERM)", signal.SIGTERM)):
            for _ in range(args.trials):
                old = wait_for(lambda: current_leader(client, keys), 30, what="master")
                victim = agents[old.name]
                t0 = time.monotonic()
                victim.signal(sig)
                wait_for(
                    lambda old=old: (
                        (lead := current_leader(client, keys)) is not None and lead.key != old.key
                    ),
                    args.ttl + 10,
                    interval=0.005,
                    what="new master",
                )
                results[kind].append(time.monotonic() - t0)
                victim.proc.wait(15)
                start(old.name)
                wait_for(registered, args.ttl + 15, what="agent rejoined")
    finally:
        for a in agents.values():
            a.terminate()
        cluster.stop_all()

    print(
        f"failover on a 3-member etcd (heartbeat {args.heartbeat_ms} ms, election timeout "
        f"{args.election_timeout_ms} ms), 3 agents, lease TTL {args.ttl}s, {args.trials} trials"
    )
    for kind, values in results.items():
        print(
            f"  {kind:16s} median {statistics.median(values):.3f}s  max {max(values):.3f}s  "
            f"min {min(values):.3f}s"
        )
    print("reproduce: .venv/bin/python bench/failover.py " + " ".join(sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
