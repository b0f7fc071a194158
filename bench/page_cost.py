"""What an open status page costs: CPU of the agent serving it and of etcd, with no viewer,
one, and ten, each polling /v1/ui/state every second as the page does (over HTTPS with a
reader's certificate; no browser needed: the page's JavaScript asks for nothing else while
no job output is shown).

Three agents on a 1-member etcd on loopback, 200 finished jobs in etcd (the page reads the
500 most recently changed records at most); pi3 serves the page.

    .venv/bin/python bench/page_cost.py [--seconds 60] [--jobs 200]
"""

from __future__ import annotations

import argparse
import http.client
import shutil
import ssl
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from picluster_agent.client import Client
from picluster_agent.etcd.keys import Keys
from picluster_agent.etcd.localcluster import AgentProcess, EtcdCluster, LocalApis, wait_for
from picluster_agent.etcd.localpki import LocalPKI

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import cpu_seconds


def viewers(url: str, tls: ssl.SSLContext, count: int, stop: threading.Event) -> list[int]:
    """`count` pollers of the page's state, each once a second; their request counts."""
    done = [0] * count
    split = urlsplit(url)
    host, port = split.hostname or "", split.port or 443

    def poll(i: int) -> None:
        # One connection kept open, as a browser does: a TLS handshake per request would
        # cost more than the answer.
        conn = http.client.HTTPSConnection(host, port, context=tls, timeout=10)
        while not stop.is_set():
            conn.request("GET", "/v1/ui/state")
            conn.getresponse().read()
            done[i] += 1
            stop.wait(1.0)
        conn.close()

    for i in range(count):
        threading.Thread(target=poll, args=(i,), daemon=True).start()
    return done


def phase(name: str, server: AgentProcess, etcd_pid: int, seconds: float, *, count: int,
          url: str, tls: ssl.SSLContext) -> None:  # fmt: skip
    stop = threading.Event()
    done = viewers(url, tls, count, stop) if count else []
    time.sleep(2)  # the pollers' first requests
    agent0, etcd0 = cpu_seconds(server.pid, descendants=False), cpu_seconds(etcd_pid)
    t0 = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - t0
    agent = cpu_seconds(server.pid, descendants=False) - agent0
    etcd = cpu_seconds(etcd_pid) - etcd0
    stop.set()
    requests = f", {sum(done)} requests" if done else ""
    print(
        f"  {name}: serving agent {100 * agent / elapsed:.2f} % of a core, "
        f"etcd {100 * etcd / elapsed:.2f} %{requests}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--jobs", type=int, default=200)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="picluster-page-"))
    cluster = EtcdCluster(base / "etcd", 1).start()
    keys = Keys("/page")
    etcd = cluster.client()
    apis = LocalApis(LocalPKI(base / "pki"), etcd, keys.prefix)
    reader = apis.user("bench-reader", "picluster-reader")
    agents = [
        AgentProcess(name, cluster.endpoints_csv, keys.prefix, base / name,
                     api=apis.for_agent(name)).start()
        for name in ("pi1", "pi2", "pi3")
    ]  # fmt: skip
    server = agents[2]
    tls = ssl.create_default_context(cafile=apis.pki.cacert)
    tls.load_cert_chain(reader.cert, reader.key)
    try:
        wait_for(lambda: etcd.count_prefix(keys.nodes_dir) == 3, 30, what="agents")
        client = Client(cluster.endpoints_csv, prefix=keys.prefix)
        ids = [client.submit(["true"]).id for _ in range(args.jobs)]
        client.wait(ids, timeout=120)
        time.sleep(5)  # past the last reports
        etcd_pid = cluster.members[0].proc.pid  # type: ignore[union-attr]
        print(f"{args.jobs} finished jobs in etcd, 3 agents; pi3 serves the page "
              f"({args.seconds:.0f} s each):")  # fmt: skip
        for count, name in ((0, "no page open"), (1, "1 page open"), (10, "10 pages open")):
            phase(name, server, etcd_pid, args.seconds, count=count, url=server.api_url, tls=tls)
    finally:
        for a in agents:
            a.terminate()
        cluster.stop_all()
        shutil.rmtree(base, ignore_errors=True)
    print("reproduce: .venv/bin/python bench/page_cost.py " + " ".join(sys.argv[1:]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
