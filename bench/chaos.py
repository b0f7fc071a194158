"""Chaos run: random faults from a seed while jobs stream in, then the history checker's table.

Five nodes, each in its own network namespace (3 with an etcd member and an agent, 2 with an
agent only), production timing: the etcd role's heartbeat and election timeout, and the lease
TTL the timing rule gives for them (the agents' default). The seed fixes the faults (kind,
time, node or role, duration) and the jobs (a third longer than the lease TTL, the rest
under a second). Root only.

    sudo .venv/bin/python bench/chaos.py --seed 1 --jobs 1000 --minutes 10

Exit code 0 when the checker found no violation, 1 otherwise (the table says which).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from picluster_agent import timing
from picluster_agent.chaos.cluster import NetCluster, role_tuning
from picluster_agent.chaos.netns import unusable_reason
from picluster_agent.chaos.schedule import chaos_run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument(
        "--ttl", type=int, help="agents' lease TTL, seconds (default: the timing rule's smallest)"
    )
    parser.add_argument("--agent-nodes", type=int, default=2, help="nodes without etcd")
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--every-kind", action="store_true", help="each fault kind once first")
    parser.add_argument("--keep", action="store_true", help="keep the logs and marks")
    parser.add_argument("--json", help="also write the result as JSON to this file")
    args = parser.parse_args()

    reason = unusable_reason()
    if reason:
        print(f"chaos: {reason}", file=sys.stderr)
        return 2
    base = Path(tempfile.mkdtemp(prefix="picluster-chaos-"))
    tuning = role_tuning()
    args.ttl = args.ttl or timing.min_lease_ttl(tuning.election_ms / 1000)
    print(
        f"seed {args.seed}: {args.jobs} jobs over {args.minutes:g} min, lease TTL {args.ttl}s, "
        f"etcd heartbeat {tuning.heartbeat_ms} ms / election {tuning.election_ms} ms, "
        f"3 etcd nodes + {args.agent_nodes} agent-only, {args.slots} slots each; files in {base}",
        flush=True,
    )
    started = time.monotonic()
    with NetCluster(
        base, agent_nodes=args.agent_nodes, lease_ttl=args.ttl, slots=args.slots, tuning=tuning
    ) as cluster:
        result = chaos_run(
            cluster,
            seed=args.seed,
            jobs=args.jobs,
            seconds=args.minutes * 60,
            every_kind=args.every_kind,
            work_dir=base,
            log=lambda line: print(line, flush=True),
        )
    print(f"\n{result.table()}")
    print(f"unfinished at the end of the drain: {result.unfinished}")
    for reason, n in result.verdict.reasons.most_common():
        print(f"  {n} x {reason}")
    print(f"wall time {time.monotonic() - started:.0f}s")
    for v in result.verdict.violations[:40]:
        print(f"  {v.kind}: {v.job or ''} {v.detail}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "seed": args.seed,
                    "faults": [i.fault.describe() + f" on {i.node}" for i in result.faults],
                    "violations": [vars(v) for v in result.verdict.violations],
                    "table": result.table(),
                },
                indent=2,
            )
        )
    if args.keep or not result.verdict.ok:
        print(f"logs, marks and violations.txt (each violating job's story) kept in {base}")
    else:
        shutil.rmtree(base, ignore_errors=True)
    return 0 if result.verdict.ok else 1


if __name__ == "__main__":
    sys.exit(main())
