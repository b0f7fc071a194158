"""A stream of jobs from the controller while a lifecycle step runs.

    python jobstream.py DIR --endpoints URLS --cacert CA --cert CERT --key KEY

Submits LONG long jobs (sleep LONG_SECONDS) first, then a short one every PERIOD seconds
until DIR/stop exists, from one process (one Python start, not one per job: the stream
must not load the machine it measures). Each job's id is chosen here, so a submission
that etcd could not take (a member restarting) is sent again under the same id until it
is accepted, as a user's retry would be; it can never make a second job. Accepted ids go
to DIR/ids, one a line; a job never accepted within ACCEPT_WITHIN seconds goes to
DIR/failures; every refused try to DIR/errors. DIR/finished marks the end.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from picluster_agent.client import Client
from picluster_agent.errors import PiclusterError
from picluster_agent.jobs.ids import new_job_id

LONG = 3
LONG_SECONDS = 15
PERIOD = 1.0
SHORT_COMMAND = "sleep 0.5; echo ok"
ACCEPT_WITHIN = 60.0


def submit(client: Client, out: Path, command: str, name: str) -> None:
    job_id = new_job_id()
    deadline = time.monotonic() + ACCEPT_WITHIN
    while True:
        try:
            result = client.submit(command, id=job_id, shell=True, name=name)
        except PiclusterError as e:
            with open(out / "errors", "a") as f:
                f.write(f"{time.time():.1f} {name} {job_id}: {e}\n")
            if time.monotonic() > deadline:
                with open(out / "failures", "a") as f:
                    f.write(f"{name} {job_id}: never accepted\n")
                return
            time.sleep(0.5)
            continue
        # Not accepted: the id existed already and was not ours (a random ULID: never).
        with open(out / ("ids" if result.accepted else "failures"), "a") as f:
            f.write(f"{job_id}\n" if result.accepted else f"{name} {job_id}: refused\n")
        return


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dir", type=Path)
    for flag in ("--endpoints", "--cacert", "--cert", "--key"):
        parser.add_argument(flag, required=True)
    args = parser.parse_args()
    client = Client(args.endpoints, cacert=args.cacert, cert=args.cert, key=args.key)
    for i in range(1, LONG + 1):
        submit(client, args.dir, f"sleep {LONG_SECONDS}", f"long-{i}")
    n = 0
    while not (args.dir / "stop").exists():
        n += 1
        began = time.monotonic()
        submit(client, args.dir, SHORT_COMMAND, f"short-{n}")
        time.sleep(max(0.0, PERIOD - (time.monotonic() - began)))
    (args.dir / "finished").touch()


if __name__ == "__main__":
    main()
