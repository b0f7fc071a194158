"""An idle agent's cost: CPU (share of one core) and resident memory, without and with a
Prometheus scrape of its /metrics every 15 s (over HTTPS with a reader's certificate), then
also with the status page open on pi2 (polling /v1/ui/state every second, as the page does).

Three agents on a 1-member etcd on loopback: pi1 is master (and worker), pi2 a worker, both
with the HTTPS API and metrics, and pi3 a worker with neither (`--api-port 0 --no-metrics`),
for comparison; nothing is submitted. Each phase measures every agent's own CPU (its
threads) and that of its job supervisor over --seconds, and samples resident memory (VmRSS)
every second. `--agent-env MALLOC_ARENA_MAX=2` starts the agents with that environment.

    .venv/bin/python bench/idle.py [--seconds 120] [--scrape-interval 15] [--agent-env K=V]

Goals (issue 18): <= 1 % of one core and <= 40 MB per agent.
"""

from __future__ import annotations

import argparse
import shutil
import ssl
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from picluster_agent.etcd.keys import Keys
from picluster_agent.etcd.localcluster import (
    AgentProcess,
    EtcdCluster,
    LocalApis,
    wait_for,
)
from picluster_agent.etcd.localpki import LocalPKI

sys.path.insert(0, str(Path(__file__).resolve().parent))
from page_cost import viewers
from throughput import cpu_seconds


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def supervisor_of(pid: int) -> int | None:
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            return int(child)
    return None


def measure(agents: list[AgentProcess], seconds: float) -> None:
    cpu0 = {a.name: cpu_seconds(a.pid, descendants=False) for a in agents}
    tree0 = {a.name: cpu_seconds(a.pid) for a in agents}
    peak = {a.name: 0.0 for a in agents}
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        for a in agents:
            peak[a.name] = max(peak[a.name], rss_mb(a.pid))
        time.sleep(1.0)
    elapsed = time.monotonic() - t0
    for a in agents:
        own = cpu_seconds(a.pid, descendants=False) - cpu0[a.name]
        tree = cpu_seconds(a.pid) - tree0[a.name]
        sup = supervisor_of(a.pid)
        sup_rss = f", job supervisor {rss_mb(sup):.1f} MB" if sup else ""
        print(
            f"  {a.name}: CPU {100 * own / elapsed:.2f} % of a core "
            f"({100 * tree / elapsed:.2f} % with its job supervisor); "
            f"RSS peak {peak[a.name]:.1f} MB{sup_rss}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--scrape-interval", type=float, default=15.0)
    parser.add_argument("--agent-env", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    env = dict(kv.split("=", 1) for kv in args.agent_env)
    base = Path(tempfile.mkdtemp(prefix="picluster-idle-"))
    cluster = EtcdCluster(base / "etcd", 1).start()
    keys = Keys("/idle")
    client = cluster.client()
    apis = LocalApis(LocalPKI(base / "pki"), client, keys.prefix)
    reader = apis.user("bench-reader", "picluster-reader")
    agents = [
        AgentProcess(name, cluster.endpoints_csv, keys.prefix, base / name,
                     api=apis.for_agent(name), extra_args=["--no-check-connection"],
                     extra_env=env).start()
        for name in ("pi1", "pi2")
    ]  # fmt: skip
    # The same worker without the HTTPS API and without metrics: what those two add.
    agents.append(
        AgentProcess("pi3", cluster.endpoints_csv, keys.prefix, base / "pi3",
                     extra_args=["--no-metrics", "--no-check-connection"],
                     extra_env=env).start()
    )  # fmt: skip
    tls = ssl.create_default_context(cafile=apis.pki.cacert)
    tls.load_cert_chain(reader.cert, reader.key)
    stop = threading.Event()
    scrapes = {"n": 0, "bytes": 0}

    def scraper() -> None:
        while not stop.wait(args.scrape_interval):
            for a in agents:
                if a.api is None:
                    continue
                with urllib.request.urlopen(a.api_url + "/metrics", context=tls) as r:
                    scrapes["bytes"] = len(r.read())
                    scrapes["n"] += 1

    try:
        try:
            wait_for(lambda: client.count_prefix(keys.nodes_dir) == 3, 60, what="agents")
        except TimeoutError:
            for a in agents:
                print(f"--- {a.name}\n{a.log_text()}")
            raise
        wait_for(lambda: client.get(keys.leader), 30, what="master")
        time.sleep(10)  # past start-up: imports, first reads, the scheduler's load
        print(f"idle, no scrape ({args.seconds:.0f} s):")
        measure(agents, args.seconds)
        thread = threading.Thread(target=scraper, daemon=True)
        thread.start()
        print(f"idle, /metrics scraped every {args.scrape_interval:g} s ({args.seconds:.0f} s):")
        measure(agents, args.seconds)
        print(f"  ({scrapes['n']} scrapes, {scrapes['bytes']} bytes each)")
        page = viewers(agents[1].api_url, tls, 1, stop)
        print(f"idle, scraped, and the status page open on pi2 ({args.seconds:.0f} s):")
        measure(agents, args.seconds)
        stop.set()
        print(f"  ({page[0]} page refreshes)")
    finally:
        stop.set()
        for a in agents:
            a.terminate()
        cluster.stop_all()
        shutil.rmtree(base, ignore_errors=True)
    print("reproduce: .venv/bin/python bench/idle.py " + " ".join(sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
