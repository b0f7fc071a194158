"""Lease fences: the job supervisor kills a lease's jobs when its deadline passes, on its own.

Real supervisor, real processes. The point is the frozen agent: its threads cannot act, so
the supervisor must (issue 13, finding 1).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from picluster_agent.jobs.spec import build_spec
from picluster_agent.node.runner import JobProcess, extend_fence, supervisor_pid

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(60)


def wait_for(condition, timeout: float = 5.0, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.002)
    return value


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def new_fence() -> int:
    return random.getrandbits(62)


def job(tmp_path: Path, command: str, fence: int | None) -> JobProcess:
    return JobProcess(
        build_spec(command, shell=True),
        job_id=f"f{random.getrandbits(32):x}",
        attempt=1,
        node="pi7",
        data_dir=tmp_path,
        kill_grace=30,  # a fence gives no grace: the lease may expire any moment
        fence=fence,
    )


FROZEN_AGENT = """
import sys, time
from pathlib import Path
from picluster_agent.node.runner import JobProcess, extend_fence
from picluster_agent.jobs.spec import build_spec

warm_up = JobProcess(build_spec(["true"]), job_id="warm", attempt=1, node="fake",
                     data_dir=Path(sys.argv[1]))
warm_up.start()  # the supervisor is running: the fence below starts counting at a spawn
warm_up.wait(30)
fence, until = 4242, time.monotonic() + 1.5
extend_fence(fence, until)
proc = JobProcess(build_spec("exec sleep 1000", shell=True), job_id="frozen", attempt=1,
                  node="fake", data_dir=Path(sys.argv[1]), kill_grace=30, fence=fence)
proc.start()
print(proc.pid, until, flush=True)
outcome = proc.wait(30)
print(outcome.fenced, outcome.signal, outcome.cancelled, flush=True)
"""


def test_a_frozen_agents_jobs_die_when_its_fence_passes(tmp_path: Path) -> None:
    agent = subprocess.Popen(
        [sys.executable, "-c", FROZEN_AGENT, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert agent.stdout is not None
        pid_text, until_text = agent.stdout.readline().split()
        pid, until = int(pid_text), float(until_text)
        agent.send_signal(signal.SIGSTOP)  # the agent can do nothing from here on
        wait_for(lambda: not alive(pid), timeout=10, what="the job to be killed")
        killed_seen = time.monotonic()  # CLOCK_MONOTONIC: one clock for every process here
        assert killed_seen >= until, "killed before its fence passed"
        # The fence lies fence_margin (0.75 s with any TTL of 3 s or more) before the lease
        # could expire at the server: the kill must land well inside it.
        assert killed_seen < until + 0.5, f"killed {killed_seen - until:.3f}s after the fence"
        agent.send_signal(signal.SIGCONT)
        fenced, sig, cancelled = agent.stdout.readline().split()
        assert (fenced, sig, cancelled) == ("True", str(int(signal.SIGKILL)), "True")
        assert agent.wait(10) == 0
    finally:
        agent.send_signal(signal.SIGCONT)
        agent.kill()
        agent.wait()


@pytest.fixture(autouse=True)
def running_supervisor(tmp_path: Path) -> None:
    """A supervisor already running, so that no test's deadline is spent starting one."""
    warm_up = job(tmp_path, "true", None)
    warm_up.start()
    assert warm_up.wait(30) is not None


def test_extensions_keep_a_job_running_past_its_first_deadline(tmp_path: Path) -> None:
    fence = new_fence()
    # Margins of 2 s: a loaded 2-core machine can hold this thread off for half a second,
    # and a fence that passes between two extensions kills the job (as it should).
    first_deadline = time.monotonic() + 2.0
    extend_fence(fence, first_deadline)
    proc = job(tmp_path, "exec sleep 1000", fence)
    proc.start()
    while time.monotonic() < first_deadline + 1.0:
        extend_fence(fence, time.monotonic() + 2.0)
        time.sleep(0.05)
    assert proc.wait(0) is None and proc.pid is not None and alive(proc.pid)
    outcome = proc.wait(10)  # no more extensions: killed once the last deadline passes
    assert outcome is not None and outcome.fenced and outcome.signal == signal.SIGKILL


def test_a_late_extension_never_moves_a_fence_back(tmp_path: Path) -> None:
    fence = new_fence()
    deadline = time.monotonic() + 1.0
    extend_fence(fence, deadline)
    extend_fence(fence, time.monotonic() - 10)  # computed long ago, delivered now
    proc = job(tmp_path, "exec sleep 1000", fence)
    proc.start()
    wait_for(lambda: proc.pid is not None or proc.wait(0) is not None, what="the job's start")
    assert proc.wait(0) is None, "refused or killed long before the fence's deadline"
    assert time.monotonic() < deadline
    outcome = proc.wait(5)
    assert outcome is not None and outcome.fenced


@pytest.mark.parametrize("extension", [-1.0, None], ids=["passed", "unknown"])
def test_a_spawn_under_a_passed_or_unknown_fence_is_refused(
    tmp_path: Path, extension: float | None
) -> None:
    fence = new_fence()
    if extension is not None:
        extend_fence(fence, time.monotonic() + extension)
    marker = tmp_path / "ran"
    proc = job(tmp_path, f"touch {marker}", fence)
    proc.start()
    outcome = proc.wait(5)
    assert outcome is not None and outcome.fenced
    assert outcome.error is not None and "lease was not renewed in time" in outcome.error
    assert not marker.exists()


def test_a_job_without_a_fence_is_not_limited(tmp_path: Path) -> None:
    outcome = job(tmp_path, "exit 3", None)
    outcome.start()
    result = outcome.wait(5)
    assert result is not None and result.exit_code == 3 and not result.fenced


def test_a_restarted_supervisor_is_told_the_open_fences(tmp_path: Path) -> None:
    fence = new_fence()
    extend_fence(fence, time.monotonic() + 30)
    first = job(tmp_path, "exit 0", fence)
    first.start()
    assert first.wait(5) is not None
    old = supervisor_pid()
    assert old is not None
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: supervisor_pid() != old, what="the runner to notice the supervisor's end")
    second = job(tmp_path, "exit 0", fence)  # starts a new supervisor, which knows the fence
    second.start()
    outcome = second.wait(5)
    assert outcome is not None and outcome.exit_code == 0 and not outcome.fenced
