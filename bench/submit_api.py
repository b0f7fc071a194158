"""Submissions per second: through an agent's HTTPS API, next to the CLI's and the Python API's.

Each path submits N no-op jobs, one job per request, each answered only once etcd has
committed it (the same guarantee everywhere):

  cli          `picluster submit -- true`, one process per job (what a shell loop does)
  python       Client.submit in this process, over etcd (the CLI's own code, no start-up)
  api          ApiClient.submit over HTTPS to one agent, one kept-alive connection
  api-threads  the same from --threads threads, each with its own connection

One etcd member and one agent that never campaigns (`--no-master`), so jobs stay queued and
nothing but the submissions loads the machine; the agent serves the API with a certificate of
a throwaway CA, as `picluster demo` does.

    .venv/bin/python bench/submit_api.py [--jobs 500] [--cli-jobs 50] [--threads 8]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from picluster_agent.api_client import ApiClient
from picluster_agent.client import Client
from picluster_agent.etcd.localcluster import AgentProcess, EtcdCluster, LocalApis, wait_for
from picluster_agent.etcd.localpki import LocalPKI

PREFIX = "/bench-api"


def rate(label: str, n: int, run: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    run()
    elapsed = time.perf_counter() - t0
    per_second = n / elapsed
    print(f"{label:<13} {n:>6} jobs  {elapsed:7.2f} s  {per_second:8.1f} submissions/s", flush=True)
    return per_second


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--jobs", type=int, default=500, help="jobs per in-process path")
    p.add_argument("--cli-jobs", type=int, default=50, help="jobs for the CLI (a process each)")
    p.add_argument("--threads", type=int, default=8)
    args = p.parse_args()

    base = Path(tempfile.mkdtemp(prefix="picluster-bench-api-"))
    cluster = EtcdCluster(base / "etcd", 1).start()
    apis = LocalApis(LocalPKI(base / "pki"), cluster.client(), PREFIX)
    agent = AgentProcess(
        "pi1", cluster.endpoints_csv, PREFIX, base / "pi1", master=False, api=apis.for_agent("pi1")
    ).start()
    me = apis.user("bench")
    try:

        def api_client() -> ApiClient:
            return ApiClient(agent.api_url, cacert=apis.pki.cacert, cert=me.cert, key=me.key)

        wait_for(lambda: api_client().jobs(limit=1) is not None, 30, what="the API")
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"machine: {os.cpu_count()} cores, load average {load}; API {agent.api_url}")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PICLUSTER_")}
        cli = [sys.executable, "-m", "picluster_agent", "submit",
               "--endpoints", cluster.endpoints_csv, "--prefix", PREFIX, "--", "true"]  # fmt: skip

        def run_cli() -> None:
            for _ in range(args.cli_jobs):
                subprocess.run(cli, check=True, capture_output=True, env=env)

        def run_python() -> None:
            client = Client(cluster.endpoints_csv, prefix=PREFIX)
            for _ in range(args.jobs):
                client.submit(["true"])

        def run_api() -> None:
            api = api_client()
            for _ in range(args.jobs):
                api.submit(["true"])

        def run_api_threads() -> None:
            per = args.jobs // args.threads

            def one() -> None:
                api = api_client()
                for _ in range(per):
                    api.submit(["true"])

            threads = [threading.Thread(target=one) for _ in range(args.threads)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

        rate("cli", args.cli_jobs, run_cli)
        rate("python", args.jobs, run_python)
        rate("api", args.jobs, run_api)
        per = args.jobs // args.threads
        rate(f"api-threads={args.threads}", per * args.threads, run_api_threads)
        queued = cluster.client().count_prefix(f"{PREFIX}/queue/")
        expected = args.cli_jobs + 2 * args.jobs + per * args.threads
        print(f"queued in etcd: {queued} (expected {expected})")
        return 0 if queued == expected else 1
    finally:
        agent.terminate()
        cluster.stop_all()


if __name__ == "__main__":
    sys.exit(main())
