"""Throughput benchmark: N no-op jobs through a 3-member etcd and 3 agents on loopback.

Prints end-to-end jobs/s (first submission to last completion), submit->start latency
p50/p99 (from the spec's submitted_at to the worker's started_at), and etcd writes per job
(the etcd revision advanced by the run, divided by N: submissions, assignments, reports and
the master's heartbeat all count).

    .venv/bin/python bench/throughput.py [--jobs 2000] [--slots 8] [--mode bulk|stream]
                                         [--prefetch N] [--repeat N]

bulk: jobs go in with `submit_many` (64 per txn). stream: one submission per txn from 8
threads, as many users on many nodes would submit.

Each run also times a fixed pure-Python loop before and after ("machine: calibration"), and
names the filesystem its data is on ("filesystem:"), so runs can be compared with the
machine's state at the time. --repeat N runs N fresh clusters in a row and prints every
run, then the median.

--base-dir DIR puts the run's etcd data and the agents' data dirs under DIR (default: the
system's temp dir). Where matters on the standard VM: its root is ext4 *without a journal*,
and ext4 then skips every inode freed in the last 1-6 minutes at each file creation (to
keep a crash from reviving it), scanning past them one by one. After a big deletion, such
as the previous run's clean-up, each job's files cost the kernel milliseconds, and a run
measures that instead of picluster. A Raspberry Pi's card is ext4 with a journal;
`bench/scratch-fs` makes and mounts one (an image file on a loop device) for the runs:

    bench/scratch-fs && .venv/bin/python bench/throughput.py --base-dir /mnt/picluster-bench
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from picluster_agent.client import Client, summarize
from picluster_agent.etcd.keys import Keys
from picluster_agent.etcd.localcluster import LEASE_TTL, AgentProcess, EtcdCluster, wait_for
from picluster_agent.jobs.spec import build_spec
from picluster_agent.node.fsinfo import filesystem_of


def _own_and_reaped(pid: int) -> tuple[float, float]:
    """(CPU of the process itself, CPU of its reaped children), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks, (int(fields[13]) + int(fields[14])) / ticks


def _children(pid: int) -> list[int]:
    """Children of every thread (a child forked by a non-main thread is listed under it)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def cpu_seconds(pid: int, *, descendants: bool = True) -> float:
    """CPU of a process, plus (descendants=True) its descendants, live and reaped."""
    try:
        own, reaped = _own_and_reaped(pid)
        if not descendants:
            return own
        children = _children(pid)
    except OSError:
        return 0.0
    return own + reaped + sum(cpu_seconds(c) for c in children)


def txn_breakdown(client: Client, keys: Keys, rev0: int, rev1: int) -> dict[str, int]:
    """Each etcd revision of the run is one write (txn or put): name it by what it touched."""
    kinds: dict[int, set[str]] = {}
    done = threading.Event()

    def on_events(events, revision: int) -> None:  # type: ignore[no-untyped-def]
        for e in events:
            part = e.kv.key[len(keys.prefix) + 1 :].split("/", 1)[0]
            kinds.setdefault(e.revision, set()).add(f"{part} {e.type.lower()}")
        if revision >= rev1:
            done.set()

    watch = client.etcd.watch(keys.prefix + "/", on_events, start_revision=rev0 + 1)
    done.wait(30)
    watch.stop()
    names = {
        "submission": {"queue put"},
        "assignment": {"assign put"},
        "result": {"results put"},
        "cleanup": {"jobs delete"},
    }
    counts: dict[str, int] = {}
    for touched in kinds.values():
        label = next((n for n, marks in names.items() if marks & touched), None)
        label = label or ("running mark" if touched == {"jobs put"} else ", ".join(sorted(touched)))
        counts[label] = counts.get(label, 0) + 1
    return counts


CALIBRATION_LOOPS = 1_000_000


def calibration_ms() -> float:
    """CPU time of a fixed pure-Python loop (this VM: 40-65 ms)."""
    t0 = time.process_time()
    total = 0
    for i in range(CALIBRATION_LOOPS):
        total += i
    return (time.process_time() - t0) * 1000


def cpu_times() -> list[int]:
    """System-wide CPU ticks: user, nice, system, idle, iowait, irq, softirq, steal."""
    return [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]


def filesystem(path: Path) -> str:
    info = filesystem_of(path)
    if info is None:
        return "unknown"
    if info.ext4_without_journal:
        return (
            f"{info.describe()}: file creation is slow for minutes after big deletions "
            "(see --base-dir in this script's help)"
        )
    return info.describe()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--mode", choices=("bulk", "stream"), default="bulk")
    parser.add_argument("--prefetch", type=int, default=0, help="agents' --prefetch")
    parser.add_argument(
        "--rate", type=float, default=0.0, help="stream mode: submit at this many jobs/s"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs, each on a fresh cluster")
    parser.add_argument(
        "--base-dir", type=Path, default=None, help="where the run's data goes (see above)"
    )
    parser.add_argument(
        "--agent-arg", action="append", default=[], help="one more argument for every agent"
    )
    args = parser.parse_args()
    rates = [run_once(args) for _ in range(args.repeat)]
    if len(rates) > 1:
        print(
            f"{len(rates)} runs: {', '.join(f'{r:.0f}' for r in rates)} jobs/s; "
            f"median {statistics.median(rates):.0f}"
        )
    print("reproduce: .venv/bin/python bench/throughput.py " + " ".join(sys.argv[1:]))
    return 0


def run_once(args: argparse.Namespace) -> float:
    """One run on a fresh 3-member etcd and 3 agents; prints its figures, returns jobs/s."""
    calibration_before = calibration_ms()
    base = Path(tempfile.mkdtemp(prefix="picluster-bench-", dir=args.base_dir))
    base_fs = filesystem(base)
    keys = Keys("/bench")
    cluster = EtcdCluster(base / "etcd", 3).start()
    eps = cluster.endpoints
    agents = [
        # Each agent lists "its own" member first, as on a cluster where every etcd node's
        # agent talks to its local member.
        AgentProcess(f"pi{i}", ",".join(eps[i - 1:] + eps[:i - 1]), keys.prefix,
                     base / f"pi{i}", LEASE_TTL, args.slots,
                     extra_args=["--prefetch", str(args.prefetch), *args.agent_arg]).start()
        for i in (1, 2, 3)
    ]  # fmt: skip
    client = Client(cluster.endpoints_csv, prefix=keys.prefix)
    try:
        wait_for(lambda: client.etcd.count_prefix(keys.nodes_dir) == 3, 30, what="agents")
        wait_for(lambda: client.etcd.get(keys.leader), 30, what="master")
        time.sleep(1.0)  # let the master's scheduler load its (empty) state
        _, rev0 = client.etcd.get_prefix(keys.leader)
        specs = [build_spec(["true"], submitted_at=0.0) for _ in range(args.jobs)]

        def cpu_now() -> dict[str, float]:
            agent_own = sum(cpu_seconds(a.pid, descendants=False) for a in agents)
            return {
                "etcd (3 members)": sum(cpu_seconds(m.proc.pid) for m in cluster.members),
                "agents": agent_own,
                "job supervisors and jobs": sum(cpu_seconds(a.pid) for a in agents) - agent_own,
                "benchmark client": sum(os.times()[:2]),
            }

        cpu0 = cpu_now()
        ticks0 = cpu_times()
        t0 = time.time()
        if args.mode == "bulk":
            specs = [build_spec(["true"], submitted_at=time.time()) for _ in range(args.jobs)]
            ids = [r.id for r in client.submit_many(specs)]
        else:
            ids = []
            lock = threading.Lock()

            def submitter(count: int, interval: float) -> None:
                own = Client(cluster.endpoints_csv, prefix=keys.prefix)
                next_at = time.monotonic()
                for _ in range(count):
                    r = own.submit(["true"])
                    with lock:
                        ids.append(r.id)
                    if interval:
                        next_at += interval
                        time.sleep(max(0.0, next_at - time.monotonic()))

            # Paced: one submitter at --rate (latency without a backlog); else 8 flat out.
            senders = 1 if args.rate else 8
            interval = 1.0 / args.rate if args.rate else 0.0
            threads = [
                threading.Thread(target=submitter, args=(args.jobs // senders, interval))
                for _ in range(senders)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        t_submitted = time.time()
        statuses = client.wait(ids, timeout=600)
        t_end = max(s.record.finished_at for s in statuses.values())
        _, rev1 = client.etcd.get_prefix(keys.leader)
        cpu1 = cpu_now()
        ticks = [b - a for a, b in zip(ticks0, cpu_times(), strict=True)]
        writes = txn_breakdown(client, keys, rev0, rev1)
    finally:
        for a in agents:
            a.terminate()
        cluster.stop_all()
        shutil.rmtree(base, ignore_errors=True)

    calibration_after = calibration_ms()
    n = len(ids)
    latencies = [s.record.started_at - s.record.spec["submitted_at"] for s in statuses.values()]
    print(
        f"{n} no-op jobs, 3-member etcd, 3 agents x {args.slots} slots "
        f"(prefetch {args.prefetch}), mode {args.mode}"
        + (f" at {args.rate:g} jobs/s" if args.rate else "")
    )
    print(f"  outcome: {summarize(statuses)}")
    print(f"  submission: {n / (t_submitted - t0):.0f} jobs/s")
    print(f"  end to end: {n / (t_end - t0):.0f} jobs/s ({t_end - t0:.2f} s)")
    print(
        f"  submit->start latency: p50 {statistics.median(latencies) * 1000:.1f} ms, "
        f"p99 {percentile(latencies, 0.99) * 1000:.1f} ms"
    )
    print(f"  etcd writes per job: {(rev1 - rev0) / n:.2f} (revisions {rev1 - rev0})")
    print(
        "  writes by kind (jobs per write): "
        + ", ".join(
            f"{k} {v} ({n / v:.1f})" for k, v in sorted(writes.items(), key=lambda kv: -kv[1])
        )
    )
    print(
        "  CPU per job: "
        + ", ".join(f"{name} {(cpu1[name] - cpu0[name]) / n * 1000:.2f} ms" for name in cpu0)
    )
    total = sum(ticks) or 1
    print(
        f"  machine: both cores {100 * (total - ticks[3] - ticks[4]) / total:.0f} % busy, "
        f"{100 * ticks[7] / total:.0f} % stolen by the host; calibration loop "
        f"{calibration_before:.0f} ms before, {calibration_after:.0f} ms after (lower is faster)"
    )
    print(f"  filesystem: {base_fs}")
    return n / (t_end - t0)


if __name__ == "__main__":
    sys.exit(main())
