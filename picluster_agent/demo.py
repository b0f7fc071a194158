"""`picluster demo`: a whole cluster on loopback, to see what picluster does in a minute.

Starts a 3-member etcd and N agents as local processes (nothing touches the network beyond
127.0.0.1), then shows the election, a crash failover (kill -9 of the master), the old master
rejoining as a worker, and a clean handover (SIGTERM). Everything is removed at the end.
"""

from __future__ import annotations

import signal
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .election import Leader, current_leader
from .keys import Keys
from .localcluster import AgentProcess, EtcdCluster, wait_for
from .registry import list_nodes

TTL = 3
console = Console()


def _nodes_table(cluster: EtcdCluster, keys: Keys) -> Table:
    table = Table(title="picluster nodes")
    for col in ("name", "role", "slots", "labels", "address"):
        table.add_column(col)
    for v in sorted(list_nodes(cluster.client(), keys), key=lambda v: v.info.name):
        labels = ",".join(f"{k}={x}" for k, x in sorted(v.info.labels.items()))
        role = f"[bold green]{v.role}[/]" if v.role == "master" else v.role
        table.add_row(v.info.name, role, str(v.info.slots), labels or "-", v.info.address)
    return table


def _wait_leader(cluster: EtcdCluster, keys: Keys, other_than: str | None = None) -> Leader:
    client = cluster.client()

    def check() -> Leader | None:
        leader = current_leader(client, keys)
        return leader if leader is not None and leader.name != other_than else None

    return wait_for(check, 30, interval=0.02, what="a master")


def run_demo(agents: int = 3, jobs: int = 0) -> int:
    base = Path(tempfile.mkdtemp(prefix="picluster-demo-"))
    keys = Keys("/picluster")
    console.rule("[bold]picluster demo: a cluster on loopback")
    console.print(f"working directory: {base}")
    cluster = EtcdCluster(base / "etcd", 3)
    procs: list[AgentProcess] = []
    try:
        with console.status("starting a 3-member etcd cluster"):
            cluster.start()
        console.print(f"etcd endpoints: {cluster.endpoints_csv}")

        def start(name: str, **labels: str) -> AgentProcess:
            p = AgentProcess(name, cluster.endpoints_csv, keys.prefix, base / name, TTL, 2, labels)
            procs.append(p.start())
            return p

        with console.status(f"starting {agents} agents"):
            for i in range(1, agents + 1):
                start(f"pi{i}", model="pi5" if i % 2 else "pi4")
            wait_for(lambda: len(list_nodes(cluster.client(), keys)) == agents, 30, what="agents")
            leader = _wait_leader(cluster, keys)
        console.print(_nodes_table(cluster, keys))
        console.print(f"master: [bold green]{leader.name}[/] (lowest election key)")

        console.rule("crash: kill -9 the master")
        victim = next(p for p in procs if p.name == leader.name and p.running)
        t0 = time.monotonic()
        victim.kill()
        with console.status("waiting for a new master (lease TTL 3 s)"):
            new = _wait_leader(cluster, keys, other_than=leader.name)
        console.print(
            f"new master [bold green]{new.name}[/] after {time.monotonic() - t0:.2f} s "
            f"(goal: TTL + 1 s = {TTL + 1} s)"
        )

        console.rule("the old master comes back")
        start(leader.name, model="pi5")
        wait_for(lambda: len(list_nodes(cluster.client(), keys)) == agents, 30, what="rejoin")
        console.print(_nodes_table(cluster, keys))
        still = current_leader(cluster.client(), keys)
        console.print(f"master is still {still.name if still else '?'}: {leader.name} is a worker")

        console.rule("clean stop: SIGTERM the master")
        current = next(p for p in procs if p.name == new.name and p.running)
        t0 = time.monotonic()
        current.signal(signal.SIGTERM)
        handed = _wait_leader(cluster, keys, other_than=new.name)
        console.print(
            f"[bold green]{handed.name}[/] took over after "
            f"{(time.monotonic() - t0) * 1000:.0f} ms (lease revoked, goal < 1 s)"
        )
        console.rule("[bold]done")
        return 0
    finally:
        with console.status("stopping agents and etcd"):
            for p in procs:
                p.terminate()
            cluster.stop_all()
