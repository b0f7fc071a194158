"""`picluster demo`: a whole cluster on loopback, to see what picluster does in a minute.

Starts a 3-member etcd and N agents as local processes (nothing touches the network beyond
127.0.0.1), then shows the election, a crash failover (kill -9 of the master), the old master
rejoining as a worker, and a clean handover (SIGTERM). Every agent serves its HTTPS API (a
throwaway CA in the working directory); one job goes in through one of them. Everything is
removed at the end.
"""

from __future__ import annotations

import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..api_client import ApiClient
from ..client import Client, summarize
from ..coord.election import Leader, current_leader
from ..coord.registry import list_nodes
from ..etcd.keys import Keys
from ..etcd.localcluster import LEASE_TTL, AgentProcess, EtcdCluster, LocalApis, wait_for
from ..etcd.localpki import LocalPKI
from ..jobs.spec import build_spec

TTL = LEASE_TTL
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


def _jobs_with_a_crash(
    cluster: EtcdCluster,
    keys: Keys,
    procs: list[AgentProcess],
    leader: Leader,
    count: int,
    base: Path,
) -> Leader:
    """Submit a batch, kill -9 the master a third of the way through, wait for all of it."""
    console.rule(f"jobs: {count} submitted at once, the master killed mid-way")
    client = Client(cluster.endpoints_csv, prefix=keys.prefix)
    marks = base / "runs.log"
    specs = [
        build_spec(f"sleep 0.05; echo $PICLUSTER_JOB_ID $PICLUSTER_ATTEMPT >> {marks}", shell=True)
        for _ in range(count)
    ]
    t0 = time.monotonic()
    ids = [r.id for r in client.submit_many(specs)]
    console.print(f"{len(ids)} jobs accepted (committed to etcd) in {time.monotonic() - t0:.2f} s")
    crash_at = count // 3
    crashed: dict[str, float] = {}
    new_leader = leader
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console,
    ) as bar:  # fmt: skip
        task = bar.add_task("running", total=len(ids))

        def watch_failover() -> None:
            new = _wait_leader(cluster, keys, other_than=leader.name)
            took = time.monotonic() - crashed["at"]
            bar.console.print(f"new master [bold green]{new.name}[/] {took:.2f} s after the kill")

        def progress(done: int, _total: int) -> None:
            bar.update(task, completed=done)
            if done >= crash_at and not crashed:
                victim = next(p for p in procs if p.name == leader.name and p.running)
                crashed["at"] = time.monotonic()
                victim.kill()
                threading.Thread(target=watch_failover, daemon=True).start()
                bar.console.print(
                    f"[bold red]kill -9[/] of the master {leader.name} after {done} jobs"
                )

        statuses = client.wait(ids, timeout=600, progress=progress)
    new_leader = _wait_leader(cluster, keys, other_than=leader.name)
    runs = [line.split() for line in marks.read_text().splitlines()] if marks.exists() else []
    table = Table(title="summary")
    table.add_column("what")
    table.add_column("count", justify="right")
    counts = summarize(statuses)
    table.add_row("accepted", str(len(ids)))
    for state, n in sorted(counts.items()):
        table.add_row(state, str(n))
    reruns = [s for s in statuses.values() if s.record and s.record.attempt > 1]
    table.add_row("  re-run elsewhere: their node died with the master", str(len(reruns)))
    ends: dict[str, int] = {}
    for job_id, *_ in runs:
        ends[job_id] = ends.get(job_id, 0) + 1
    twice = sum(n > 1 for n in ends.values())
    # At-least-once: a job that finished on the dead node before its result was recorded
    # runs again; jobs see PICLUSTER_ATTEMPT to make that harmless.
    table.add_row("  of those, finished on the dead node before reporting", str(twice))
    per_node: dict[str, int] = {}
    for s in statuses.values():
        if s.record and s.record.node:
            per_node[s.record.node] = per_node.get(s.record.node, 0) + 1
    for node, n in sorted(per_node.items()):
        table.add_row(f"  finished on {node}", str(n))
    console.print(table)
    lost = len(ids) - counts.get("succeeded", 0)
    verdict = "[bold green]every accepted job completed[/]" if not lost else f"{lost} not done"
    console.print(f"{verdict}: one final result each; stale attempts' reports are refused")
    return new_leader


def _crash(cluster: EtcdCluster, keys: Keys, procs: list[AgentProcess], leader: Leader) -> Leader:
    console.rule("crash: kill -9 the master")
    victim = next(p for p in procs if p.name == leader.name and p.running)
    t0 = time.monotonic()
    victim.kill()
    with console.status(f"waiting for a new master (lease TTL {TTL} s)"):
        new = _wait_leader(cluster, keys, other_than=leader.name)
    console.print(
        f"new master [bold green]{new.name}[/] after {time.monotonic() - t0:.2f} s "
        f"(goal: TTL + 1 s = {TTL + 1} s)"
    )
    return new


def _through_the_api(apis: LocalApis, agent: AgentProcess) -> None:
    console.rule(f"submit through {agent.name}'s HTTPS API")
    me = apis.user("demo", "picluster-submitter")
    api = ApiClient(agent.api_url, cacert=apis.pki.cacert, cert=me.cert, key=me.key)
    wait_for(lambda: api.jobs(limit=1) is not None, 15, what="the API")
    job = api.submit(["uname", "-n"])
    done = api.wait(job.id, timeout=30)
    console.print(
        f"job {job.id} sent to {agent.api_url}: {done['state']} on {done.get('node')} "
        "(docs/API.md: the same with curl)"
    )


def run_demo(agents: int = 3, jobs: int = 0, keep: bool = False) -> int:
    base = Path(tempfile.mkdtemp(prefix="picluster-demo-"))
    succeeded = False
    keys = Keys("/picluster")
    console.rule("[bold]picluster demo: a cluster on loopback")
    console.print(f"working directory: {base}")
    cluster = EtcdCluster(base / "etcd", 3)
    procs: list[AgentProcess] = []
    try:
        with console.status("starting a 3-member etcd cluster"):
            cluster.start()
        console.print(f"etcd endpoints: {cluster.endpoints_csv}")
        apis = LocalApis(LocalPKI(base / "pki", "picluster demo CA"), cluster.client(), keys.prefix)

        def start(name: str, **labels: str) -> AgentProcess:
            p = AgentProcess(name, cluster.endpoints_csv, keys.prefix, base / name, TTL, 2, labels)
            p.api = apis.for_agent(name)
            procs.append(p.start())
            return p

        with console.status(f"starting {agents} agents"):
            for i in range(1, agents + 1):
                start(f"pi{i}", model="pi5" if i % 2 else "pi4")
            wait_for(lambda: len(list_nodes(cluster.client(), keys)) == agents, 30, what="agents")
            leader = _wait_leader(cluster, keys)
        console.print(_nodes_table(cluster, keys))
        console.print(f"master: [bold green]{leader.name}[/] (lowest election key)")
        _through_the_api(apis, procs[-1])

        if jobs:
            current = _jobs_with_a_crash(cluster, keys, procs, leader, jobs, base)
        else:
            current = _crash(cluster, keys, procs, leader)

        console.rule("the old master comes back")
        start(leader.name, model="pi5")
        wait_for(lambda: len(list_nodes(cluster.client(), keys)) == agents, 30, what="rejoin")
        console.print(_nodes_table(cluster, keys))
        still = current_leader(cluster.client(), keys)
        console.print(f"master is still {still.name if still else '?'}: {leader.name} is a worker")

        console.rule("clean stop: SIGTERM the master")
        master_proc = next(p for p in procs if p.name == current.name and p.running)
        t0 = time.monotonic()
        master_proc.signal(signal.SIGTERM)
        handed = _wait_leader(cluster, keys, other_than=current.name)
        console.print(
            f"[bold green]{handed.name}[/] took over after "
            f"{(time.monotonic() - t0) * 1000:.0f} ms (lease revoked, goal < 1 s)"
        )
        console.rule("[bold]done")
        succeeded = True
        return 0
    finally:
        with console.status("stopping agents and etcd"):
            for p in procs:
                p.terminate()
            cluster.stop_all()
        # The etcd members' preallocated WAL alone is ~190 MB: a demo run again and again
        # must not fill /tmp. A failed run keeps its logs for whoever looks into it.
        if succeeded and not keep:
            shutil.rmtree(base, ignore_errors=True)
        else:
            console.print(f"kept: {base} (etcd data, each agent's log in <name>/agent.log)")
