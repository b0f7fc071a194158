"""Jobs in cgroups, with real processes: limits, kill by cgroup, usage in the result.

Needs rights to make cgroups (root on these machines, which have the v1 controllers; a Pi's
agent has a delegated v2 subtree). Without them the tests are skipped with the reason, and
fail in CI (root), where they must run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from picluster_agent.client import Client
from picluster_agent.etcd.localcluster import EtcdCluster, wait_for
from picluster_agent.jobs.records import JobState
from picluster_agent.jobs.spec import build_spec
from picluster_agent.node import cgroups
from picluster_agent.node.runner import JobProcess, Outcome, supervisor_pid

from conftest import Agents, picluster

CONFINED, WHY = cgroups.probe()
if not CONFINED:
    if os.environ.get("CI"):
        pytest.fail(f"cgroup tests must run in CI: {WHY}", pytrace=False)
    pytest.skip(WHY, allow_module_level=True)

# Allocates MiB of memory and touches every page (a Python on every machine that runs this).
HOG = [sys.executable, "-c", "import sys; b = bytearray(int(sys.argv[1]) << 20); print('done')"]


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[..., JobProcess]]:
    started: list[JobProcess] = []

    def make(command: Any, *, job_id: str = "job1", **kw: Any) -> JobProcess:
        spec_kw = {k: kw.pop(k) for k in ("shell", "memory_mb") if k in kw}
        kw.setdefault("kill_grace", 1.0)
        proc = JobProcess(build_spec(command, **spec_kw), job_id=job_id, attempt=1, node="pi7",
                          data_dir=tmp_path, **kw)  # fmt: skip
        started.append(proc)
        return proc

    yield make
    for proc in started:
        proc.stop(grace=0)
        proc.wait(5)


def finish(proc: JobProcess, timeout: float = 20.0) -> Outcome:
    outcome = proc.wait(timeout)
    assert outcome is not None, "job did not finish in time"
    return outcome


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_process_that_left_the_jobs_session_dies_when_the_job_is_stopped(
    make: Callable[..., JobProcess], tmp_path: Path
) -> None:
    pid_file = tmp_path / "escaped.pid"
    # setsid (not a group leader: it does not fork) leaves the job's session and group.
    proc = make(f"setsid sleep 1000 & echo $! > {pid_file}; sleep 1000", shell=True)
    proc.start()
    escaped = wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), 10)
    escaped_pid = int(escaped)
    wait_for(lambda: os.getsid(escaped_pid) == escaped_pid, 5, what="setsid")
    assert os.getsid(escaped_pid) != proc.pid
    proc.stop(grace=0.5)
    outcome = finish(proc)
    assert outcome.cancelled
    assert not alive(escaped_pid)


def test_a_job_over_its_memory_limit_is_killed_and_nothing_else(
    make: Callable[..., JobProcess],
) -> None:
    neighbour = make(["sleep", "1"], job_id="neighbour")
    neighbour.start()
    shim = supervisor_pid()
    hog = make([*HOG, "200"], job_id="hog", memory_mb=32)
    hog.start()
    outcome = finish(hog)
    assert outcome.oom_killed
    assert outcome.signal == 9 and "done" not in outcome.stdout_tail
    assert outcome.peak_memory_bytes is not None and outcome.peak_memory_bytes <= 32 << 20
    # The node's other parts are untouched: the supervisor, the agent (us), the other job.
    assert supervisor_pid() == shim and shim is not None and alive(shim)
    other = finish(neighbour)
    assert other.succeeded and not other.oom_killed
    # Under its limit, the same program runs to the end.
    fits = finish_started(make([*HOG, "8"], job_id="fits", memory_mb=64))
    assert fits.succeeded and not fits.oom_killed and "done" in fits.stdout_tail


def finish_started(proc: JobProcess) -> Outcome:
    proc.start()
    return finish(proc)


def test_a_fork_bomb_stops_at_the_pids_limit(make: Callable[..., JobProcess]) -> None:
    # Bounded and safe: a shell loop that wants 200 sleeping children, allowed 20 processes.
    bomb = "i=0; while [ $i -lt 200 ]; do sleep 30 & i=$((i+1)); done; wait"
    proc = make(bomb, shell=True, pids_max=20)
    outcome = finish_started(proc)
    assert not outcome.succeeded
    assert "fork" in outcome.stderr_tail.lower(), outcome.stderr_tail


def test_cpu_time_and_peak_memory_are_measured(make: Callable[..., JobProcess]) -> None:
    burn = (
        "import time; b = bytearray(48 << 20); t = time.process_time()\n"
        "while time.process_time() - t < 0.3: pass"
    )
    # In a child of a shell: the cgroup counts every process of the job, not only the main one.
    outcome = finish_started(make(f"{sys.executable} -c '{burn}'; true", shell=True))
    assert outcome.succeeded
    assert outcome.cpu_seconds is not None and outcome.cpu_seconds >= 0.3
    assert outcome.peak_memory_bytes is not None and outcome.peak_memory_bytes >= 48 << 20


# --- through an agent ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agents]:
    base = tmp_path_factory.mktemp("cgroups")
    cluster = EtcdCluster(base / "etcd", 1).start()
    group = Agents(cluster, f"/cg-{uuid.uuid4().hex[:6]}", base / "agents")
    config = base / "agent.yaml"
    config.write_text("job_pids_max: 64\n")
    group.start("pi1", slots=2, extra_args=["--config", str(config)])
    group.wait_registered(1)
    group.wait_leader()
    yield group
    group.stop_all()
    cluster.stop_all()


def test_out_of_memory_is_the_reason_and_status_shows_the_usage(node: Agents) -> None:
    client = Client(node.cluster.endpoints_csv, prefix=node.prefix)
    hog = client.submit([*HOG, "200"], memory_mb=32).id
    fits = client.submit([*HOG, "8"], memory_mb=64).id
    for job_id in (hog, fits):
        wait_for(lambda j=job_id: client.status(j).state.final, 30, what=f"job {job_id}")
    failed = client.status(hog)
    assert failed.state is JobState.FAILED
    assert failed.record is not None and failed.record.reason == "out of memory"
    done = client.status(fits)
    assert done.state is JobState.SUCCEEDED
    assert done.result is not None and done.result.peak_memory_bytes is not None
    assert done.result.peak_memory_bytes >= 8 << 20 and done.result.cpu_seconds is not None
    out = picluster("status", "--endpoints", node.cluster.endpoints_csv, "--prefix", node.prefix,
                    fits)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "cpu time: " in out.stdout and "peak memory: " in out.stdout
    assert "jobs run in cgroups" in node.started[0].log_text()


# --- cgroup v2 ----------------------------------------------------------------------------------


def v2_hierarchy() -> tuple[str, str]:
    """(mount, this process's path there): the machine's v2 hierarchy, also the unified one
    that a v1 machine mounts beside its controllers (no controllers there: no limits, but
    placement, kill and CPU time work as on a Pi)."""
    with open("/proc/self/cgroup") as f:
        own = next(line.rstrip("\n").split(":", 2)[2] for line in f if line.startswith("0::"))
    for mount in (cgroups.V2_ROOT, f"{cgroups.V2_ROOT}/unified"):
        if os.path.exists(f"{mount}/cgroup.controllers"):
            return mount, own
    pytest.fail("no cgroup v2 hierarchy on this machine")


def test_cgroup_v2_places_tracks_kills_and_counts() -> None:
    mount, own = v2_hierarchy()
    if own != "/" and mount == f"{cgroups.V2_ROOT}/unified":
        pytest.fail(f"expected the unified hierarchy's root, got {own}")
    group_of = cgroups._V2(own, os.getpid(), mount)
    try:
        group = group_of.job(cgroups.Limits(pids=64))
        group.enter()
        try:
            pid = os.posix_spawn(
                "/bin/sh", ["sh", "-c", "setsid sleep 1000 & x=0; while [ $x -lt 20000 ]; "
                            "do x=$((x+1)); done; sleep 1000"], {"PATH": "/usr/bin:/bin"}
            )  # fmt: skip
        finally:
            group_of.leave()
        group.adopt(pid)
        members = wait_for(
            lambda: len(cgroups._pids(group.procs)) == 3 and cgroups._pids(group.procs), 10
        )
        assert pid in members and os.getpid() not in members
        escaped = [p for p in members if p != pid and os.getsid(p) == p]
        assert escaped, "the setsid child is in the job's cgroup"
        assert not group.empty()
        group.kill()
        os.waitpid(pid, 0)
        wait_for(group.empty, 10, what="the cgroup to empty")
        assert not any(alive(p) for p in members)
        used = group.usage()
        assert used.cpu_seconds is not None and used.cpu_seconds > 0
        group.release()
    finally:
        group_of.close()
    assert not os.path.exists(group_of.root)


# --- without rights -----------------------------------------------------------------------------

FALLBACK = """
import sys
from picluster_agent.jobs.spec import build_spec
from picluster_agent.node import cgroups
from picluster_agent.node.runner import JobProcess

confined, line = cgroups.probe()
print(confined)
print(line)
proc = JobProcess(build_spec(["sh", "-c", "echo hi"]), job_id="j1", attempt=1, node="pi7",
                  data_dir=sys.argv[1], pids_max=20)
proc.start()
outcome = proc.wait(20)
print(outcome.exit_code, outcome.stdout_tail.strip(), outcome.cpu_seconds is not None,
      outcome.peak_memory_bytes is not None)
"""


def test_without_rights_to_cgroups_jobs_run_in_process_groups_and_the_agent_says_why(
    tmp_path: Path,
) -> None:
    # A mount namespace of this test's own where every cgroup hierarchy is read-only: the
    # agent has no rights to them, as an agent run by hand by a user has none.
    remount = (
        "for d in $(awk '{for (i = 7; $i != \"-\"; i++); if ($(i + 1) ~ /^cgroup/) print $5}' "
        "/proc/self/mountinfo); do "
        'mount -o remount,bind,ro "$d" || exit 1; done'
    )
    script = tmp_path / "fallback.py"
    script.write_text(FALLBACK)
    out = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         f'{remount} && exec "$0" "$1" "$2"', sys.executable, str(script), str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    confined, line, result = out.stdout.splitlines()
    assert confined == "False"
    assert line.startswith("jobs run without cgroups (Read-only file system")
    assert "process groups only" in line
    assert result == "0 hi True True"  # the job ran; its usage from getrusage
