"""`picluster logs -f` latency: from a line written by a job to that line on the CLI's stdout.

One etcd member and one agent with its HTTPS API on loopback (real TLS, client
certificates). A job writes LINES lines, one every INTERVAL seconds, each carrying the wall
clock time it was written (flushed at once); `picluster logs -f` runs as a user would (a
separate process, over the node's API) and this script stamps each line as it comes out of
the CLI's stdout. Same machine, same clock: the difference is the latency.

    .venv/bin/python bench/logs_latency.py [--lines 500] [--interval 0.01]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from picluster_agent.client import Client
from picluster_agent.etcd.localcluster import AgentProcess, EtcdCluster, LocalApis, wait_for
from picluster_agent.etcd.localpki import LocalPKI

JOB = """
import sys, time
out = sys.stdout
for n in range({lines}):
    out.write(f"{{n}} {{time.time():.6f}}\\n")
    out.flush()
    time.sleep({interval})
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=500)
    parser.add_argument("--interval", type=float, default=0.01, help="seconds between lines")
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="picluster-bench-logs-"))
    prefix = f"/bench-logs-{uuid.uuid4().hex[:6]}"
    cluster = EtcdCluster(base / "etcd", 1).start()
    agent = None
    try:
        etcd = cluster.client()
        apis = LocalApis(LocalPKI(base / "pki"), etcd, prefix)
        agent = AgentProcess(
            "pi1", cluster.endpoints_csv, prefix, base / "pi1", api=apis.for_agent("pi1")
        ).start()
        reader = apis.user("bench-reader", "picluster-reader")
        submitter = apis.user("bench-submitter", "picluster-submitter")
        conn = dict(prefix=prefix, cacert=apis.pki.cacert)
        client = Client(cluster.endpoints_csv, cert=submitter.cert, key=submitter.key, **conn)
        wait_for(lambda: client.nodes(), 20, what="the agent registered")

        code = JOB.format(lines=args.lines, interval=args.interval)
        job_id = client.submit([sys.executable, "-c", code]).id
        follow = subprocess.Popen(
            [sys.executable, "-m", "picluster_agent", "logs", "-f", job_id,
             "--endpoints", cluster.endpoints_csv, "--prefix", prefix,
             "--cacert", apis.pki.cacert, "--cert", reader.cert, "--key", reader.key],
            stdout=subprocess.PIPE,
        )  # fmt: skip
        assert follow.stdout is not None
        delays: list[tuple[float, float]] = []  # (written, latency ms)
        for line in follow.stdout:
            seen = time.time()
            written = float(line.split()[1])
            delays.append((written, (seen - written) * 1000))
        code = follow.wait(30)
    finally:
        if agent is not None:
            agent.terminate()
        cluster.stop_all()

    # Lines written before the CLI had shown its first one came while it started up (a
    # Python process, its imports, TLS): those measure the start, not the stream.
    connected = delays[0][0] + delays[0][1] / 1000 if delays else 0.0
    steady = sorted(ms for written, ms in delays if written >= connected)

    def pct(p: float) -> float:
        return steady[min(len(steady) - 1, int(p / 100 * len(steady)))]

    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"logs -f latency over {len(steady)} lines (of {len(delays)}; exit {code}): "
        f"p50 {pct(50):.1f} ms, p90 {pct(90):.1f} ms, p99 {pct(99):.1f} ms, "
        f"max {steady[-1]:.1f} ms, mean {statistics.fmean(steady):.1f} ms; "
        f"load average {load} on {os.cpu_count()} CPUs"
    )
    return 0 if len(delays) == args.lines and code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
