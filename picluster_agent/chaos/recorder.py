"""What feeds the history checker: the jobs' own marks, etcd's history, submit outcomes."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from ..client import Client, JobStatus
from ..errors import Indeterminate, PiclusterError, Unavailable
from ..etcd.adapter import EtcdClient, Event
from ..jobs.ids import new_job_id
from .history import KeyEvent, Mark, Submission

BEAT = 0.1  # seconds between a job's signs of life
T = TypeVar("T")

# The job: marks its start, a beat every BEAT s and its end in one file on the host, each
# line one O_APPEND write (atomic: far below PIPE_BUF), timed by the host's wall clock (the
# one clock every node shares here; a job's environment never carries the agents' clock
# step). `-I -S`: no site, no user paths, the cheapest start.
_JOB = """
import os, sys, time
f = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
e = os.environ
tag = " ".join((e["PICLUSTER_JOB_ID"], e["PICLUSTER_ATTEMPT"], e["PICLUSTER_NODE"],
                str(os.getpid())))
mark = lambda kind: os.write(f, f"{kind} {time.time():.6f} {tag}\\n".encode())
mark("start")
end = time.monotonic() + float(sys.argv[2])
while (left := end - time.monotonic()) > 0:
    time.sleep(min(float(sys.argv[3]), left))
    mark("beat")
mark("end")
"""


def job_command(marks_file: Path, seconds: float, beat: float = BEAT) -> list[str]:
    return [sys.executable, "-I", "-S", "-c", _JOB, str(marks_file), str(seconds), str(beat)]


def read_marks(marks_file: Path) -> list[Mark]:
    if not marks_file.exists():
        return []
    marks = (Mark.parse(line) for line in marks_file.read_text().splitlines())
    return [m for m in marks if m is not None]


def read_history(client: EtcdClient, prefix: str, timeout: float = 60.0) -> list[KeyEvent]:
    """Every change under `prefix` since revision 1, in order (needs an uncompacted etcd).

    A sentinel key written first marks the end: once the watch delivers it, everything
    before it has been delivered too."""
    sentinel = f"{prefix}/~history-end"
    end = ride_out(lambda: client.put(sentinel, ""))
    events: list[KeyEvent] = []
    done = threading.Event()
    strip = len(prefix) + 1

    def on_events(batch: list[Event], _revision: int) -> None:
        for e in batch:
            if e.kv.mod_revision >= end:
                done.set()
                return
            events.append(
                KeyEvent.from_raw(
                    e.kv.mod_revision, e.type, e.kv.key[strip:], e.kv.value, e.kv.create_revision
                )
            )

    watch = client.watch(prefix + "/", on_events, start_revision=1, name="history")
    try:
        if not done.wait(timeout):
            raise TimeoutError(f"etcd's history not read within {timeout:.0f}s")
    finally:
        watch.stop()
    return events


class Submitter:
    """Submits jobs from a thread, recording each outcome: acknowledged (the client
    returned: etcd committed it) or not (an error: refused, or unknown)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.submissions: list[Submission] = []
        self._lock = threading.Lock()

    def submit(self, command: list[str], **fields: object) -> Submission:
        job_id = new_job_id()
        try:
            self.client.submit(command, id=job_id, **fields)
            sub = Submission(job_id, True, time.time())
        except PiclusterError:
            sub = Submission(job_id, False, time.time())
        with self._lock:
            self.submissions.append(sub)
        return sub

    def acked(self) -> list[str]:
        with self._lock:
            return [s.job for s in self.submissions if s.acked]

    def stream(
        self,
        commands: Callable[[int], list[str]],
        count: int,
        interval: Callable[[int], float],
        stop: threading.Event,
    ) -> threading.Thread:
        """Submit `count` jobs (`commands(i)`), waiting `interval(i)` s between them."""

        def loop() -> None:
            for i in range(count):
                if stop.is_set():
                    return
                self.submit(commands(i))
                stop.wait(interval(i))

        thread = threading.Thread(target=loop, name="submitter", daemon=True)
        thread.start()
        return thread


def ride_out(call: Callable[[], T], timeout: float = 60.0) -> T:
    """`call()`, again after etcd was unavailable or its answer lost (a fault may still be
    settling), until `timeout`. Only for calls that are safe to repeat."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except (Unavailable, Indeterminate):
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.5)


def wait_final(client: Client, ids: list[str], timeout: float) -> dict[str, JobStatus]:
    """`Client.wait` riding over etcd's bad moments: the statuses of the jobs that became
    final within `timeout`."""
    deadline = time.monotonic() + timeout
    return ride_out(lambda: client.wait(ids, timeout=max(0.0, deadline - time.monotonic())))
