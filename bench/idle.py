"""An idle agent's cost: CPU (share of one core) and resident memory, without and with a
Prometheus scrape of its /metrics every 15 s (over HTTPS with a reader's certificate), then
also with the status page open on pi2 (polling /v1/ui/state every second, as the page does).

Three agents on a 1-member etcd on loopback: pi1 and pi2 with the HTTPS API and metrics,
pi3 with neither (`--api-port 0 --no-metrics`), for comparison; whichever campaigns first is
master (the script says which); nothing is submitted. Each phase measures every agent's own CPU (its
threads) and that of its job supervisor over --seconds, and samples resident memory (VmRSS)
every second. `--agent-env KEY=VALUE` adds to the agents' environment (they start with
MALLOC_ARENA_MAX=2, as the unit sets it: `--agent-env MALLOC_ARENA_MAX=16` for glibc's
default on 2 cores).

    .venv/bin/python bench/idle.py [--seconds 120] [--scrape-interval 15] [--agent-env K=V]
                                   [--jobs N]
    .venv/bin/python bench/idle.py --imports    # where the memory goes, import by import

With `--jobs N`, N no-op jobs run through the agents after the idle phases, and their RSS
is read again once the last has finished: what work leaves behind (malloc's arenas).

Goals (issue 18): <= 1 % of one core and <= 40 MB per agent.
"""

from __future__ import annotations

import argparse
import json
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from picluster_agent.client import Client
from picluster_agent.etcd.keys import Keys
from picluster_agent.etcd.localcluster import (
    AgentProcess,
    EtcdCluster,
    LocalApis,
    wait_for,
)
from picluster_agent.etcd.localpki import LocalPKI
from picluster_agent.jobs.spec import build_spec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from page_cost import viewers
from throughput import cpu_seconds


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """VmRSS, or RssAnon: the private part (RssFile, the rest, is clean pages of the
    interpreter's and grpc's shared libraries, which the kernel may drop and read again)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


# What `picluster agent` imports, in its order, grouped by what costs: the interpreter's
# standard modules, each library, then the agent's own modules (cli/app.py cmd_agent).
IMPORT_STEPS = [
    ("logging, json, argparse", "logging json argparse"),
    ("ssl", "ssl"),
    ("asyncio", "asyncio"),
    ("grpc (grpcio)", "grpc"),
    ("etcd's API messages (pyetcd, protobuf)", "pyetcd.etcdrpc"),
    ("aiohttp.web (the HTTPS API)", "aiohttp.web"),
    ("prometheus_client", "prometheus_client"),
    ("yaml", "yaml"),
    ("picluster_agent: cli, client, config, etcd", "picluster_agent.cli.app"),
    (
        "picluster_agent: duties, observe",
        "picluster_agent.duties.agent picluster_agent.duties.scheduler "
        "picluster_agent.duties.worker picluster_agent.duties.periodic "
        "picluster_agent.observe.journal",
    ),
    ("picluster_agent.api", "picluster_agent.api.server"),
]
PROBE = """
import importlib, sys
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024
print(f"{rss():.1f}")
for modules in sys.argv[1:]:
    for m in modules.split():
        importlib.import_module(m)
    print(f"{rss():.1f}")
"""


def imports_table() -> None:
    """VmRSS after each step in a fresh interpreter: what each library adds when loaded in
    the agent's order (a library's own imports that an earlier step loaded count there)."""
    steps = [modules for _, modules in IMPORT_STEPS]
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *steps], capture_output=True, text=True, check=True
    ).stdout.split()
    values = [float(v) for v in out]
    print(f"  {'the interpreter alone':45s} {values[0]:5.1f} MB")
    for (label, _), before, after in zip(IMPORT_STEPS, values, values[1:], strict=False):
        print(f"  {label:45s} +{after - before:4.1f} MB  (total {after:5.1f} MB)")


def supervisor_of(pid: int) -> int | None:
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            return int(child)
    return None


def measure(agents: list[AgentProcess], seconds: float) -> None:
    cpu0 = {a.name: cpu_seconds(a.pid, descendants=False) for a in agents}
    tree0 = {a.name: cpu_seconds(a.pid) for a in agents}
    peak = {a.name: 0.0 for a in agents}
    anon = {a.name: 0.0 for a in agents}
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        for a in agents:
            peak[a.name] = max(peak[a.name], rss_mb(a.pid))
            anon[a.name] = max(anon[a.name], rss_mb(a.pid, "RssAnon"))
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
            f"RSS peak {peak[a.name]:.1f} MB (anonymous {anon[a.name]:.1f} MB){sup_rss}"
        )


def after_jobs(agents: list[AgentProcess], endpoints: str, prefix: str, n: int) -> None:
    client = Client(endpoints, prefix=prefix)
    for i in range(0, n, 1000):
        ids = [r.id for r in client.submit_many([build_spec(["true"])] * min(1000, n - i))]
        client.wait(ids, timeout=600)
    time.sleep(3)  # past the last reports
    print(f"after {n} no-op jobs:")
    for a in agents:
        anon = rss_mb(a.pid, "RssAnon")
        print(f"  {a.name}: RSS {rss_mb(a.pid):.1f} MB (anonymous {anon:.1f} MB)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--scrape-interval", type=float, default=15.0)
    parser.add_argument("--agent-env", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--imports", action="store_true", help="only the import-by-import RSS")
    parser.add_argument("--jobs", type=int, default=0, help="then run N no-op jobs, RSS after")
    args = parser.parse_args()
    if args.imports:
        imports_table()
        return 0
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
        leader = wait_for(lambda: client.get(keys.leader), 30, what="master")
        print(f"master: {json.loads(leader.value)['name']}")
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
        if args.jobs:
            after_jobs(agents, cluster.endpoints_csv, keys.prefix, args.jobs)
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
