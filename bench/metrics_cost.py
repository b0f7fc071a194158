"""What the agent's metrics cost on the throughput benchmark: runs with metrics (the default)
and with `picluster agent --no-metrics`, alternated in one invocation (on/off, then off/on,
...), so that the machine's drift (the VM's host, other users) falls on both sides alike.

    .venv/bin/python bench/metrics_cost.py [--pairs 3] [--jobs 2000] [--prefetch 48]
                                           [--base-dir DIR]

Each run is `bench/throughput.py`'s (a fresh 3-member etcd and 3 agents, bulk mode) and
prints its full figures; the summary gives each side's median jobs/s. Goal (issue 18):
metrics cost <= 5 %. A scrape's own cost is what bench/idle.py measures.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from picluster_agent.observe.metrics import AgentMetrics

sys.path.insert(0, str(Path(__file__).resolve().parent))
import throughput


def per_call() -> str:
    """The instrumentation's own CPU cost, in-process: what the runs above cannot resolve on a
    busy machine (their spread is larger than the whole cost)."""
    m, n = AgentMetrics(), 100_000
    t = time.process_time()
    for _ in range(n):
        m.etcd_request("Txn", 0.003, None)
    hook = (time.process_time() - t) / n
    t = time.process_time()
    for _ in range(n):
        m.attempt_started(1, 1.0, 2.0)
        m.attempt_ended("succeeded", 0.01, False)
    job = (time.process_time() - t) / n
    t = time.process_time()
    for _ in range(100):
        body = m.exposition()
    scrape = (time.process_time() - t) / 100
    return (
        f"per call: etcd request hook {hook * 1e6:.1f} us, a job's start and end events "
        f"{job * 1e6:.1f} us, one scrape {scrape * 1e3:.2f} ms ({len(body)} bytes)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--prefetch", type=int, default=0)
    parser.add_argument("--base-dir", type=Path, default=None)
    args = parser.parse_args()
    rates: dict[str, list[float]] = {"metrics on": [], "metrics off": []}
    for pair in range(args.pairs):
        sides = ["metrics on", "metrics off"]
        if pair % 2:
            sides.reverse()
        for side in sides:
            run = argparse.Namespace(
                jobs=args.jobs, slots=args.slots, mode="bulk", prefetch=args.prefetch,
                rate=0.0, base_dir=args.base_dir,
                agent_arg=[] if side == "metrics on" else ["--no-metrics"],
            )  # fmt: skip
            print(f"--- pair {pair + 1}, {side}")
            rates[side].append(throughput.run_once(run))
    on, off = (statistics.median(rates[s]) for s in ("metrics on", "metrics off"))
    for side, values in rates.items():
        runs = ", ".join(f"{r:.0f}" for r in values)
        print(f"{side}: {runs} jobs/s; median {statistics.median(values):.0f}")
    print(f"metrics cost: {100 * (off - on) / off:+.1f} % of the median throughput")
    print(per_call())
    print("reproduce: .venv/bin/python bench/metrics_cost.py " + " ".join(sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
