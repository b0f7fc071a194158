"""JobProcess: one attempt of a job, run through the agent's job supervisor (jobshim).

These run real processes. Every wait is on a condition with a deadline, never a bare sleep.
"""

from __future__ import annotations

import ast
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from picluster_agent.jobs.spec import build_spec
from picluster_agent.node import runner
from picluster_agent.node.runner import JobProcess, Outcome, supervisor_pid

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(60)


def wait_for(condition: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()  # state, ppid, pgrp, ...


def group_members(pgid: int) -> list[int]:
    """Every process (zombies included) whose process group is `pgid`."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields is not None and int(fields[2]) == pgid:
                members.append(int(entry))
    return members


def gone(pid: int) -> bool:
    """True once `pid` no longer exists (a zombie still counts as existing)."""
    return _stat(pid) is None


def running(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[..., JobProcess]]:
    started: list[JobProcess] = []

    def make(command: Any, *, job_id: str = "job1", attempt: int = 1, **kw: Any) -> JobProcess:
        spec_kw = {k: kw.pop(k) for k in ("shell", "env", "cwd", "timeout") if k in kw}
        spec = build_spec(command, **spec_kw)
        kw.setdefault("data_dir", tmp_path)
        proc = JobProcess(spec, job_id=job_id, attempt=attempt, node="pi7", **kw)
        started.append(proc)
        return proc

    yield make
    for proc in started:  # never leave a job behind, even when a test fails
        proc.stop(grace=0)
        proc.wait(5)


def run(proc: JobProcess, timeout: float = 10.0) -> Outcome:
    proc.start()
    outcome = proc.wait(timeout)
    assert outcome is not None, "job did not finish in time"
    return outcome


# --- exit status ------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [0, 1, 3, 255])
def test_exit_code(make: Callable[..., JobProcess], code: int) -> None:
    outcome = run(make(["sh", "-c", f"exit {code}"]))
    assert (outcome.exit_code, outcome.signal, outcome.error) == (code, None, None)
    assert not outcome.timed_out and not outcome.cancelled
    assert outcome.succeeded == (code == 0)
    assert outcome.started_at <= outcome.ended_at


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGSEGV])
def test_signal_death(make: Callable[..., JobProcess], sig: int) -> None:
    outcome = run(make(["sh", "-c", f"kill -{int(sig)} $$"]))
    assert (outcome.exit_code, outcome.signal) == (None, sig)
    assert not outcome.succeeded


def test_output_files_and_tails(make: Callable[..., JobProcess], tmp_path: Path) -> None:
    proc = make("echo out; echo err >&2", shell=True, job_id="j-out", attempt=2)
    outcome = run(proc)
    assert proc.stdout_path == tmp_path / "jobs" / "j-out" / "2.stdout"
    assert proc.stderr_path == tmp_path / "jobs" / "j-out" / "2.stderr"
    assert proc.stdout_path.read_text() == "out\n" == outcome.stdout_tail
    assert proc.stderr_path.read_text() == "err\n" == outcome.stderr_tail


def test_shell_mode(make: Callable[..., JobProcess]) -> None:
    outcome = run(make("echo $((40 + 2)) | tr 4 x; exit 5", shell=True))
    assert outcome.stdout_tail == "x2\n"
    assert outcome.exit_code == 5


def test_argv_is_not_shell_interpreted(make: Callable[..., JobProcess]) -> None:
    outcome = run(make(["echo", "$HOME", "a b", "*"]))
    assert outcome.stdout_tail == "$HOME a b *\n"


def test_stdin_is_dev_null(make: Callable[..., JobProcess]) -> None:
    outcome = run(make(["sh", "-c", "cat; readlink /proc/self/fd/0"]), timeout=5)
    assert outcome.stdout_tail == "/dev/null\n"


def test_job_inherits_only_its_three_standard_streams(make: Callable[..., JobProcess]) -> None:
    code = "import os; print(sorted(int(fd) for fd in os.listdir('/proc/self/fd')))"
    # 3 is listdir's own descriptor; nothing of the agent's or the supervisor's leaks in.
    assert run(make([sys.executable, "-c", code])).stdout_tail == "[0, 1, 2, 3]\n"


IGNORING_AGENT = """
import sys
from pathlib import Path
from picluster_agent.node.runner import JobProcess
from picluster_agent.jobs.spec import build_spec

for run_as in sys.argv[2:] or [None]:
    proc = JobProcess(build_spec("grep SigIgn /proc/self/status; yes | head -n1", shell=True),
                      job_id="sigs", attempt=1, node="fake", data_dir=Path(sys.argv[1]),
                      run_as=None if run_as == "-" else run_as)
    proc.start()
    outcome = proc.wait(10)
    print(repr((outcome.stdout_tail, outcome.stderr_tail, outcome.error)), flush=True)
"""


def _ignore_inherited_signals() -> None:
    # What nohup, a shell's background job or a CI runner hand down.
    for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def test_job_starts_with_default_signal_dispositions(tmp_path: Path) -> None:
    # The agent inherits ignored signals on purpose; Python itself ignores SIGPIPE and SIGXFSZ.
    # A job must start with none of them ignored ("yes" would otherwise complain about a
    # broken pipe instead of dying quietly), on both ways of starting it: as the agent's own
    # user (posix_spawn) and, when root, as another user (fork and exec).
    users = ["-"] + (["nobody"] if os.geteuid() == 0 else [])
    tmp_path.chmod(0o755)
    out = subprocess.run(
        [sys.executable, "-c", IGNORING_AGENT, str(tmp_path), *users],
        capture_output=True, text=True, cwd=REPO, timeout=30,
        preexec_fn=_ignore_inherited_signals,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    results = [ast.literal_eval(line) for line in out.stdout.splitlines()]
    assert len(results) == len(users)
    for stdout, stderr, error in results:
        assert error is None and stderr == ""
        ignored, rest = stdout.split("\n", 1)
        assert rest == "y\n"
        # Signals 1-31: none ignored. (glibc's posix_spawn leaves its own two internal
        # signals, 32 and 33, ignored; glibc installs their handlers when a program needs them.)
        assert int(ignored.removeprefix("SigIgn:\t"), 16) & 0x7FFF_FFFF == 0, ignored


# --- environment and working directory ---------------------------------------------------------


def test_environment(make: Callable[..., JobProcess], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_SECRET", "must-not-leak")
    proc = make(
        [sys.executable, "-c", "import json, os; print(json.dumps(dict(os.environ)))"],
        env={"FOO": "bar", "LANG": "en_GB.UTF-8"},
        extra_env={"EXTRA": "1", "PICLUSTER_NODE": "spoofed", "PICLUSTER_ATTEMPT": "99"},
        job_id="env-job",
        attempt=3,
    )
    import json

    env = json.loads(run(proc).stdout_tail)
    assert env["PICLUSTER_JOB_ID"] == "env-job"
    assert env["PICLUSTER_ATTEMPT"] == "3"
    assert env["PICLUSTER_NODE"] == "pi7"
    assert env["FOO"] == "bar" and env["EXTRA"] == "1"
    assert env["LANG"] == "en_GB.UTF-8"  # the spec may override the base
    assert env["PATH"] == runner.BASE_PATH
    me = pwd.getpwuid(os.geteuid())
    assert (env["HOME"], env["USER"], env["LOGNAME"]) == (me.pw_dir, me.pw_name, me.pw_name)
    assert "AGENT_SECRET" not in env


def test_default_cwd_is_a_fresh_work_dir(make: Callable[..., JobProcess]) -> None:
    proc = make(["sh", "-c", "pwd; ls -A; touch made-here"])
    outcome = run(proc)
    assert outcome.stdout_tail == f"{proc.work_dir}\n"
    assert proc.work_dir == proc.stdout_path.parent / "1"
    assert (proc.work_dir / "made-here").exists()


def test_rerun_of_same_attempt_starts_clean(make: Callable[..., JobProcess]) -> None:
    run(make(["sh", "-c", "echo first; touch stale"], job_id="same"))
    proc = make(["sh", "-c", "ls -A"], job_id="same")
    assert run(proc).stdout_tail == ""
    assert proc.stdout_path.read_text() == ""


def test_spec_cwd(make: Callable[..., JobProcess], tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    assert run(make(["pwd"], cwd=str(target))).stdout_tail == f"{target}\n"


def test_command_is_looked_up_on_the_jobs_own_path(
    make: Callable[..., JobProcess], tmp_path: Path
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "hello-xyz").write_text("#!/bin/sh\necho hello from $0\n")
    (bin_dir / "hello-xyz").chmod(0o755)
    (bin_dir / "locked-xyz").write_text("#!/bin/sh\necho no\n")
    outcome = run(make(["hello-xyz"], env={"PATH": f"/nonexistent:{bin_dir}"}))
    assert outcome.stdout_tail == f"hello from {bin_dir}/hello-xyz\n"
    outcome = run(make(["locked-xyz"], env={"PATH": str(bin_dir)}, job_id="locked"))
    assert outcome.error is not None and "cannot execute 'locked-xyz'" in outcome.error


def test_relative_command_and_data_dir(
    make: Callable[..., JobProcess], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "tool").mkdir()
    (tmp_path / "tool" / "run.sh").write_text("#!/bin/sh\necho ran in $(pwd)\n")
    (tmp_path / "tool" / "run.sh").chmod(0o755)
    monkeypatch.chdir(tmp_path)
    # A relative data dir is the agent's, not the supervisor's; "./x" is from the job's cwd.
    proc = make(["./run.sh"], cwd=str(tmp_path / "tool"), data_dir=Path("rel-data"))
    assert run(proc).stdout_tail == f"ran in {tmp_path / 'tool'}\n"
    assert proc.stdout_path == tmp_path / "rel-data" / "jobs" / "job1" / "1.stdout"
    assert proc.stdout_path.read_text() == f"ran in {tmp_path / 'tool'}\n"


def test_bad_cwd_is_an_error(make: Callable[..., JobProcess]) -> None:
    outcome = run(make(["pwd"], cwd="/nonexistent/dir"))
    assert outcome.exit_code is None
    assert outcome.error is not None
    assert "working directory '/nonexistent/dir'" in outcome.error


def test_command_not_found(make: Callable[..., JobProcess]) -> None:
    outcome = run(make(["no-such-command-xyz", "arg"]))
    assert (outcome.exit_code, outcome.signal) == (None, None)
    assert outcome.error == "command not found: 'no-such-command-xyz'"
    assert not outcome.succeeded


def test_not_executable(make: Callable[..., JobProcess], tmp_path: Path) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    outcome = run(make([str(script)]))
    assert outcome.error is not None and "cannot execute" in outcome.error


# --- output size -------------------------------------------------------------------------------


def test_big_output_full_file_bounded_tail(make: Callable[..., JobProcess]) -> None:
    code = textwrap.dedent(
        """
        import sys
        line = b"x" * 99 + b"\\n"
        for _ in range(50_000):          # 5 MB on stdout
            sys.stdout.buffer.write(line)
        sys.stdout.buffer.write(b"THE END\\n")
        sys.stderr.buffer.write(b"e" * 3_000_000)
        """
    )
    proc = make([sys.executable, "-c", code], tail_bytes=1000)
    outcome = run(proc, timeout=20)
    assert proc.stdout_path.stat().st_size == 5_000_008
    assert proc.stderr_path.stat().st_size == 3_000_000
    assert len(outcome.stdout_tail) == 1000
    assert outcome.stdout_tail.endswith("x\nTHE END\n")
    assert outcome.stderr_tail == "e" * 1000


def test_tail_does_not_start_mid_character(make: Callable[..., JobProcess]) -> None:
    # "é" is two bytes: an odd tail size cuts one in half; the half is dropped, not replaced.
    outcome = run(make([sys.executable, "-c", "print('é' * 1000, end='')"], tail_bytes=101))
    assert outcome.stdout_tail == "é" * 50


# --- stop, timeout, orphans ---------------------------------------------------------------------


def _start_with_children(proc: JobProcess) -> list[int]:
    proc.start()
    assert proc.pid is not None
    return wait_for(
        lambda: len(group_members(proc.pid)) >= 2 and group_members(proc.pid),
        what="the job and its background child",
    )


# Time enough for the test to see a job's children before the job's timeout ends them: at
# 0.5 s, a machine at load 50 once took longer to scan /proc, and the test saw no group.
SEEN_BEFORE_TIMEOUT = 2.0


def test_timeout_kills_the_whole_group(make: Callable[..., JobProcess]) -> None:
    timeout = SEEN_BEFORE_TIMEOUT
    proc = make("sleep 1000 & sleep 1000", shell=True, timeout=timeout, kill_grace=0.5)
    t0 = time.monotonic()
    members = _start_with_children(proc)
    outcome = proc.wait(10)
    assert outcome is not None
    assert outcome.timed_out and not outcome.cancelled
    assert outcome.signal == signal.SIGTERM
    assert timeout - 0.1 < time.monotonic() - t0 < timeout + 4.5
    assert all(gone(pid) for pid in members)  # reported only once the group is empty


def test_timeout_escalates_to_sigkill(make: Callable[..., JobProcess]) -> None:
    proc = make(
        "trap '' TERM; sleep 1000 & wait", shell=True, timeout=SEEN_BEFORE_TIMEOUT, kill_grace=0.5
    )
    members = _start_with_children(proc)
    outcome = proc.wait(10)
    assert outcome is not None and outcome.timed_out
    assert outcome.signal == signal.SIGKILL
    assert all(gone(pid) for pid in members)


def test_stop_kills_the_whole_group(make: Callable[..., JobProcess]) -> None:
    proc = make("sleep 1000 & sleep 1000", shell=True)
    members = _start_with_children(proc)
    assert proc.wait(0.05) is None  # still running
    proc.stop(grace=1.0)
    outcome = proc.wait(10)
    assert outcome is not None
    assert outcome.cancelled and not outcome.timed_out
    assert outcome.exit_code is None and outcome.signal == signal.SIGTERM
    assert all(gone(pid) for pid in members)
    proc.stop()  # after the end: a no-op


def test_stop_before_start(make: Callable[..., JobProcess]) -> None:
    proc = make(["sleep", "1000"])
    proc.stop()
    outcome = run(proc)
    assert outcome.cancelled and outcome.error is None and proc.pid is None


def test_requests_in_a_batch_leave_together_and_in_order(make: Callable[..., JobProcess]) -> None:
    run(make(["true"], job_id="warm"))  # the supervisor is running
    current = runner._current
    assert current is not None
    with runner.batched_requests():
        job = make(["sleep", "1000"], job_id="batched")
        job.start(wait_started=False)
        assert current._unsent  # held back: nothing reaches the supervisor yet
        job.stop(grace=0)  # queued behind its spawn, not ahead of it
    # A stop that overtook its spawn would name an unknown job: `sleep` would run on.
    outcome = job.wait(10)
    assert outcome is not None and outcome.cancelled and outcome.signal == signal.SIGKILL
    assert not current._unsent


def test_a_request_from_outside_a_batch_sends_the_batch_first(
    make: Callable[..., JobProcess],
) -> None:
    run(make(["true"], job_id="warm"))
    with runner.batched_requests():
        job = make(["sleep", "1000"], job_id="batched")
        job.start(wait_started=False)
        other = threading.Thread(target=job.stop, kwargs={"grace": 0})
        other.start()
        other.join(5)
        # Sent by the other thread's stop, spawn first: the job ends inside the block.
        outcome = job.wait(10)
    assert outcome is not None and outcome.cancelled and outcome.signal == signal.SIGKILL


def test_start_twice_is_a_programming_error(make: Callable[..., JobProcess]) -> None:
    proc = make(["true"])
    run(proc)
    with pytest.raises(RuntimeError):
        proc.start()


def test_leftover_children_die_when_the_job_exits(make: Callable[..., JobProcess]) -> None:
    proc = make("sleep 1000 & echo $!", shell=True, kill_grace=1.0)
    outcome = run(proc)
    assert outcome.exit_code == 0 and not outcome.cancelled
    assert gone(int(outcome.stdout_tail))


def test_many_jobs_in_parallel(make: Callable[..., JobProcess]) -> None:
    procs = [make(["sh", "-c", f"echo {i}; exit {i % 3}"], job_id=f"par-{i}") for i in range(30)]
    threads = [threading.Thread(target=p.start) for p in procs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, p in enumerate(procs):
        outcome = p.wait(10)
        assert outcome is not None
        assert (outcome.exit_code, outcome.stdout_tail) == (i % 3, f"{i}\n")


def test_many_big_tails_at_once_are_all_delivered(make: Callable[..., JobProcess]) -> None:
    # 12 exit events of ~128 KiB each: far more than a pipe holds, so the supervisor must
    # wait for the agent to read (non-blocking writes) while it goes on reaping jobs.
    code = "import sys; sys.stdout.write(sys.argv[1] * 65536); sys.stderr.write('e' * 65536)"
    procs = [make([sys.executable, "-c", code, "abcdefghijkl"[i]], job_id=f"big-{i}")
             for i in range(12)]  # fmt: skip
    done = threading.Semaphore(0)
    for p in procs:
        p.on_done = lambda _p: done.release()
        p.start(wait_started=False)
    for i, p in enumerate(procs):
        outcome = p.wait(20)
        assert outcome is not None
        assert outcome.stdout_tail == "abcdefghijkl"[i] * 65536
        assert outcome.stderr_tail == "e" * 65536
    for _ in procs:  # on_done ran once per attempt
        assert done.acquire(timeout=5)
    assert not done.acquire(timeout=0.2)


def test_on_done_runs_once_for_an_attempt_that_cannot_start(
    make: Callable[..., JobProcess],
) -> None:
    calls: list[Outcome | None] = []
    proc = make(["no-such-command-xyz"], on_done=lambda p: calls.append(p.wait(0)))
    proc.start(wait_started=False)
    wait_for(lambda: calls, what="on_done")
    assert calls[0] is not None and calls[0].error == "command not found: 'no-such-command-xyz'"
    assert proc.wait(1) is calls[0]
    assert len(calls) == 1


def test_unusable_data_dir_is_a_clear_error(
    make: Callable[..., JobProcess], tmp_path: Path
) -> None:
    (tmp_path / "jobs").write_text("a file where the jobs directory should be")
    outcome = run(make(["true"], data_dir=tmp_path))
    assert outcome.exit_code is None
    assert outcome.error is not None and outcome.error.startswith("cannot prepare ")
    assert "Not a directory" in outcome.error


# --- jobs never outlive the agent -----------------------------------------------------------------

FAKE_AGENT = """
import sys, time
from pathlib import Path
from picluster_agent.node.runner import JobProcess, supervisor_pid
from picluster_agent.jobs.spec import build_spec

proc = JobProcess(build_spec("sleep 1000 & sleep 1000", shell=True), job_id="orphan",
                  attempt=1, node="fake", data_dir=Path(sys.argv[1]), kill_grace=30)
proc.start()
print(proc.pid, supervisor_pid(), flush=True)
time.sleep(1000)
"""


def test_jobs_die_with_the_agent_on_kill_9(tmp_path: Path) -> None:
    agent = subprocess.Popen(
        [sys.executable, "-c", FAKE_AGENT, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert agent.stdout is not None
        job_pid, shim_pid = (int(x) for x in agent.stdout.readline().split())
        members = wait_for(
            lambda: len(group_members(job_pid)) >= 2 and group_members(job_pid),
            what="the job's processes",
        )
        assert running(shim_pid)
        agent.kill()
        agent.wait()
        wait_for(
            lambda: all(gone(pid) for pid in members) and not group_members(job_pid),
            timeout=3.0,
            what="every process of the job to be gone",
        )
        wait_for(lambda: not running(shim_pid), timeout=3.0, what="the supervisor to exit")
    finally:
        agent.kill()
        agent.wait()


def test_supervisor_loss_kills_jobs_and_reports_it(make: Callable[..., JobProcess]) -> None:
    proc = make("sleep 1000 & sleep 1000", shell=True)
    members = _start_with_children(proc)
    shim = supervisor_pid()
    assert shim is not None
    os.kill(shim, signal.SIGKILL)
    outcome = proc.wait(10)
    assert outcome is not None
    assert outcome.error is not None and "supervisor exited unexpectedly" in outcome.error
    wait_for(lambda: all(gone(pid) for pid in members), what="the orphaned job to be killed")
    # The next job gets a fresh supervisor.
    assert run(make(["true"], job_id="after")).exit_code == 0
    assert supervisor_pid() not in (None, shim)


# --- run_as -------------------------------------------------------------------------------------


@pytest.fixture
def job_user() -> Iterator[pwd.struct_passwd]:
    if os.geteuid() != 0:
        pytest.skip("run_as needs root (CI runs as root)")
    name = f"pct{uuid.uuid4().hex[:8]}"
    subprocess.run(
        ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
         "--shell", "/usr/sbin/nologin", name],
        check=True,
    )  # fmt: skip
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], check=False)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A data dir the job user can traverse (pytest's tmp_path is root-only)."""
    path = Path(tempfile.mkdtemp(prefix="picluster-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_run_as_user(
    make: Callable[..., JobProcess], job_user: pwd.struct_passwd, shared_dir: Path
) -> None:
    proc = make(
        ["sh", "-c", "id -u; id -g; echo $USER $LOGNAME $HOME; touch mine"],
        run_as=job_user.pw_name,
        data_dir=shared_dir,
    )
    outcome = run(proc)
    assert outcome.error is None, outcome.error
    uid, gid, names = outcome.stdout_tail.splitlines()
    assert (int(uid), int(gid)) == (job_user.pw_uid, job_user.pw_gid)
    assert names == f"{job_user.pw_name} {job_user.pw_name} /nonexistent"
    for path in (proc.work_dir, proc.work_dir / "mine"):
        assert (path.stat().st_uid, path.stat().st_gid) == (job_user.pw_uid, job_user.pw_gid)
    # The job's dir and its outputs stay the agent's (the job writes through descriptors).
    for path in (proc.stdout_path, proc.stderr_path, proc.stdout_path.parent):
        assert path.stat().st_uid == 0
    assert stat.S_IMODE(proc.stdout_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(proc.stdout_path.parent.parent.stat().st_mode) == 0o711


def test_run_as_user_gets_supplementary_groups(
    make: Callable[..., JobProcess], job_user: pwd.struct_passwd, shared_dir: Path
) -> None:
    group = f"pcg{uuid.uuid4().hex[:8]}"
    subprocess.run(["groupadd", "--system", group], check=True)
    try:
        subprocess.run(["usermod", "-a", "-G", group, job_user.pw_name], check=True)
        outcome = run(make(["id", "-Gn"], run_as=job_user.pw_name, data_dir=shared_dir))
        assert group in outcome.stdout_tail.split()
    finally:
        subprocess.run(["groupdel", group], check=False)


def test_run_as_unknown_user(make: Callable[..., JobProcess]) -> None:
    outcome = run(make(["true"], run_as="no-such-user-xyz"))
    assert outcome.error is not None
    assert "'no-such-user-xyz'" in outcome.error and "does not exist" in outcome.error
