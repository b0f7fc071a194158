"""Faults while jobs run: a worker killed, the master killed mid-stream, a worker cut off."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from picluster_agent.client import Client, summarize
from picluster_agent.etcd.adapter import EtcdClient
from picluster_agent.etcd.localcluster import LEASE_TTL, wait_for
from picluster_agent.jobs.records import JobState

TTL = LEASE_TTL  # the smallest the timing rule allows with the loopback etcd


def _pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):  # gone before or while being read
        return False
    return stat.split(")")[-1].split()[0] != "Z"


def test_worker_killed_mid_job_reruns_elsewhere_never_concurrently(agents, tmp_path):
    agents.start("pi1", slots=1, lease_ttl=TTL)
    agents.start("pi2", slots=1, lease_ttl=TTL)
    agents.wait_registered(2)
    client = Client(agents.cluster.endpoints_csv, prefix=agents.prefix)
    log = tmp_path / "log"
    script = f"""
echo "start $PICLUSTER_ATTEMPT $PICLUSTER_NODE $$" >> {log}
if [ "$PICLUSTER_ATTEMPT" = 1 ]; then sleep 600; fi
first=$(head -1 {log} | cut -d' ' -f4)
if [ "$first" != "$$" ] && kill -0 "$first" 2>/dev/null; then echo overlap >> {log}; fi
echo "out of attempt $PICLUSTER_ATTEMPT"
echo "end $PICLUSTER_ATTEMPT" >> {log}
"""
    job = client.submit(script, shell=True)
    wait_for(lambda: log.exists() and log.read_text().startswith("start 1"), 30, what="attempt 1")
    _, _, victim, pid = log.read_text().split()[:4]
    agents.by_name(victim).kill()
    # The job dies with its agent, long before the lease expires.
    wait_for(lambda: not _pid_alive(int(pid)), 2.0, what="attempt 1 killed with its agent")

    status = client.wait([job.id], timeout=TTL + 30)[job.id]
    assert status.state is JobState.SUCCEEDED
    assert status.record.attempt == 2 and status.record.losses == 1
    assert status.record.node != victim
    assert status.result.attempt == 2 and status.result.node != victim
    assert status.result.stdout_tail == "out of attempt 2\n"
    lines = log.read_text().splitlines()
    assert "overlap" not in lines and "end 1" not in lines and "end 2" in lines


def test_master_killed_while_submissions_stream_in_loses_nothing(agents3, tmp_path):
    for name in ("pi1", "pi2", "pi3"):
        agents3.start(name, slots=2, lease_ttl=TTL)
    agents3.wait_registered(3)
    master = agents3.wait_leader()
    client = Client(agents3.cluster.endpoints_csv, prefix=agents3.prefix)
    accepted: list[str] = []
    halfway = threading.Event()
    marks = tmp_path / "marks"

    def submit_stream() -> None:
        for i in range(200):
            result = client.submit(f"echo $PICLUSTER_JOB_ID >> {marks}", shell=True)
            if result.accepted:
                accepted.append(result.id)
            if i == 60:
                halfway.set()
            time.sleep(0.01)  # a steady stream, not a burst: the kill lands mid-way

    submitter = threading.Thread(target=submit_stream)
    submitter.start()
    assert halfway.wait(60)
    agents3.by_name(master.name).kill()
    submitter.join(120)
    assert len(accepted) == 200

    statuses = client.wait(accepted, timeout=120)
    assert summarize(statuses) == {"succeeded": 200}
    done = marks.read_text().split()
    assert set(done) == set(accepted)
    new_master = agents3.wait_leader()
    assert new_master.name != master.name


# Waits for a process's exit on its pidfd (readable from the moment of the exit) and prints
# the clock then; a process of its own, so that no thread of the test's delays its waking.
_WAIT_FOR_EXIT = """
import os, select, sys, time
fd = os.pidfd_open(int(sys.argv[1]))
print("watching", flush=True)
select.select([fd], [], [])
print(time.monotonic(), flush=True)
"""


class _ExitWatch:
    """When process `pid` exits: an upper bound, late only by a process's wake-up. The exit,
    not the kill: a killed process holds its files and sockets until then. Made before the
    fault, so that a slow start of the watcher is never taken for a late death."""

    def __init__(self, pid: int) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _WAIT_FOR_EXIT, str(pid)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdout is not None
        assert self._proc.stdout.readline() == "watching\n", f"process {pid} gone before the fault"

    def wait(self, timeout: float) -> float | None:
        try:
            out, _ = self._proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
            return None
        return float(out)


def _assert_dead_before_the_lease_expires(
    exit_watch: _ExitWatch, lease: int, observer: EtcdClient
) -> float:
    """Watch `lease` until etcd has dropped it: the job `exit_watch` watches must have exited
    before the earliest instant its lease could expire at the server. Returns that exit's
    time (monotonic, an upper bound)."""
    # `expires_after`: the lease cannot expire at the server before this instant. etcd
    # answers the whole seconds left (truncated) at a moment after the question was sent, and
    # renewals only move the expiry later: so it is no sooner than send time + that answer.
    # Asked every few ms, the answer just before one drops pins the expiry to a round trip.
    # An answer of 0 ("under a second") bounds nothing. etcd itself drops the lease up to
    # half a second after its expiry: comparing with that would let a late kill pass.
    expires_after = 0.0
    dropped_seen = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        sent = time.monotonic()
        left = observer.time_to_live(lease)
        if left < 0:
            dropped_seen = time.monotonic()
            break
        if left >= 1:
            expires_after = max(expires_after, sent + left)
        time.sleep(0.005)
    died = exit_watch.wait(5)  # a job alive when its lease was dropped dies soon or never
    assert dropped_seen is not None, "the lease did not expire"
    assert expires_after > 0, "etcd never answered that the lease had a second left"
    assert died is not None, "the job was not stopped"
    assert died < expires_after, (
        f"the job exited {died - expires_after:.3f}s after its lease could expire"
        f" (and {dropped_seen - died:.3f}s before etcd was seen to drop the lease)"
    )
    print(f"job dead {expires_after - died:.3f}s before its lease could expire")
    return died


def _a_follower(cluster) -> int:
    """Index of a member that is not the raft leader: pausing it keeps etcd fully available."""
    for i, member in enumerate(cluster.members):
        status = EtcdClient([member.client_url]).status()
        if status["header"]["member_id"] != status["leader"]:
            return i
    raise AssertionError("no follower found")


def test_cut_off_worker_kills_its_jobs_before_its_lease_can_expire(agents3, tmp_path):
    cluster = agents3.cluster
    cut = _a_follower(cluster)
    others = [m.client_url for i, m in enumerate(cluster.members) if i != cut]
    # pi1 talks only to one member; pausing that member cuts it off from etcd.
    agents3.start(
        "pi1",
        slots=1,
        lease_ttl=TTL,
        master=False,
        endpoints=cluster.members[cut].client_url,
        labels={"only": "pi1"},
    )
    agents3.start("pi2", slots=1, lease_ttl=TTL, endpoints=",".join(others))
    agents3.wait_registered(2)
    client = Client(",".join(others), prefix=agents3.prefix)
    pidfile = tmp_path / "pid"
    job = client.submit(
        f"echo $$ >> {pidfile}; exec sleep 600", shell=True, constraints={"only": "pi1"}
    )
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 30, what="job started")
    pid = int(pidfile.read_text().split()[0])
    lease = agents3.client.get(agents3.keys.node("pi1")).lease
    observer = EtcdClient(others, timeout=5)

    exit_watch = _ExitWatch(pid)
    cluster.members[cut].pause()
    try:
        _assert_dead_before_the_lease_expires(exit_watch, lease, observer)
    finally:
        cluster.members[cut].resume()
    worker_log = agents3.by_name("pi1").log_text()
    assert "killed 1 job(s) before it could expire" in worker_log
    # Back in touch, pi1 rejoins and the job runs again (attempt 2) under its new lease.
    wait_for(lambda: len(pidfile.read_text().split()) >= 2, 60, what="attempt 2")
    status = client.status(job.id)
    assert status.record.attempt == 2 and status.record.losses == 1
    client.cancel(job.id)
    assert client.wait([job.id], timeout=60)[job.id].state is JobState.CANCELLED


def test_sigterm_of_a_worker_hands_its_jobs_over_instead_of_cancelling(agents, tmp_path):
    agents.start("pi1", slots=1, lease_ttl=TTL)
    agents.start("pi2", slots=1, lease_ttl=TTL)
    agents.wait_registered(2)
    client = Client(agents.cluster.endpoints_csv, prefix=agents.prefix)
    started = tmp_path / "started"
    script = f'echo "$PICLUSTER_NODE" >> {started}; [ "$PICLUSTER_ATTEMPT" = 1 ] && exec sleep 600'
    job = client.submit(script + "; true", shell=True)
    wait_for(lambda: started.exists() and started.read_text().strip(), 30, what="attempt 1")
    node = started.read_text().split()[0]
    stopping = agents.by_name(node)
    stopping.signal(signal.SIGTERM)
    assert stopping.proc.wait(30) == 0
    status = client.wait([job.id], timeout=30)[job.id]
    assert status.state is JobState.SUCCEEDED
    assert status.record.attempt == 2 and status.record.node != node


def test_a_frozen_worker_s_jobs_die_before_its_lease_can_expire(agents, tmp_path):
    # Issue 13, finding 1: SIGSTOP stops every thread of the agent, its lease guard included;
    # the job supervisor (a process of its own) must kill the jobs by itself, in time.
    client = Client(agents.cluster.endpoints_csv, prefix=agents.prefix)
    client.drain("pi2", force=True)  # the master: it takes the job only once pi1 is lost
    agents.start("pi2", slots=1, lease_ttl=TTL)
    agents.start("pi1", slots=1, lease_ttl=TTL, master=False)
    agents.wait_registered(2)
    starts = tmp_path / "starts"
    stamp = "import os, time; print(os.environ['PICLUSTER_ATTEMPT'], time.monotonic())"
    job = client.submit(
        f'{sys.executable} -c "{stamp}" >> {starts}; echo $$ > {tmp_path}/pid.$PICLUSTER_ATTEMPT;'
        f" [ $PICLUSTER_ATTEMPT = 1 ] && exec sleep 600; true",
        shell=True,
        max_attempts=1,
    )
    pid = int(wait_for(lambda: _read(tmp_path / "pid.1"), 30, what="attempt 1"))
    lease = agents.client.get(agents.keys.node("pi1")).lease
    client.undrain("pi2")  # free slots elsewhere: the job's next home
    frozen = agents.by_name("pi1")
    exit_watch = _ExitWatch(pid)
    frozen.pause()
    try:
        killed_at = _assert_dead_before_the_lease_expires(exit_watch, lease, agents.client)
        # The job runs again on pi2, and only after attempt 1 was dead.
        status = client.wait([job.id], timeout=30)[job.id]
        assert status.state is JobState.SUCCEEDED and status.record.node == "pi2"
        second_start = float(starts.read_text().splitlines()[-1].split()[1])
        assert second_start > killed_at
    finally:
        frozen.resume()
    # Thawed, pi1 finds its session lost and does not report the killed attempt.
    wait_for(lambda: "lost or not renewed in time" in frozen.log_text(), 30, what="pi1's guard")
    assert client.status(job.id).record.attempt == 2


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None
