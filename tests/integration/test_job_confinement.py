"""What a job, run as the job user by a root agent, cannot do: read a node's keys,
certificates or the agent's config (laid out with the modes roles/picluster_agent gives
them), read or list other jobs' outputs, or regain root through a setuid binary.

Root only (the agent changes user only as root): skipped with the reason elsewhere, failed
in CI, which runs as root.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from picluster_agent.jobs.spec import build_spec
from picluster_agent.node.runner import JobProcess, Outcome

if os.geteuid() != 0:
    if os.environ.get("CI"):
        pytest.fail("the confinement tests must run in CI (as root)", pytrace=False)
    pytest.skip("jobs change user only when the agent is root", allow_module_level=True)


@pytest.fixture(scope="module")
def job_user() -> Iterator[pwd.struct_passwd]:
    name = f"pcj{uuid.uuid4().hex[:8]}"
    subprocess.run(
        ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
         "--shell", "/usr/sbin/nologin", name],
        check=True,
    )  # fmt: skip
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], check=False)
        subprocess.run(["groupdel", name], check=False)


@pytest.fixture(scope="module")
def node_group() -> Iterator[grp.struct_group]:
    """The role's `picluster` group (the node's users; never the job user)."""
    name = f"pcg{uuid.uuid4().hex[:8]}"
    subprocess.run(["groupadd", "--system", name], check=True)
    try:
        yield grp.getgrnam(name)
    finally:
        subprocess.run(["groupdel", name], check=False)


@pytest.fixture
def node_root(node_group: grp.struct_group) -> Iterator[Path]:
    """A node's files in a directory of their own (on the root file system: setuid works)."""
    root = Path(tempfile.mkdtemp(prefix="picluster-confine-", dir="/var/tmp"))
    root.chmod(0o755)
    etc = root / "etc" / "picluster"
    pki = etc / "pki"
    pki.mkdir(parents=True)
    etc.parent.chmod(0o755)
    # The modes and owners of roles/picluster_agent (tasks/pki.yml, configure.yml).
    for path, mode, group in (
        (etc, 0o755, 0),
        (pki, 0o750, node_group.gr_gid),
        (etc / "agent.yaml", 0o640, node_group.gr_gid),
        (pki / "ca.crt", 0o644, 0),
        (pki / "client.crt", 0o644, 0),
        (pki / "client.key", 0o600, 0),
        (pki / "group.crt", 0o644, 0),
        (pki / "group.key", 0o640, node_group.gr_gid),
    ):
        if not path.exists():
            path.write_text(f"secret of {path.name}\n")
        os.chown(path, 0, group)
        path.chmod(mode)
    data = root / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def run_job(node_root: Path, job_user: pwd.struct_passwd) -> Iterator[Callable[..., Outcome]]:
    started: list[JobProcess] = []

    def run_job(command: Any, job_id: str = "job1") -> Outcome:
        proc = JobProcess(build_spec(command, shell=isinstance(command, str)), job_id=job_id,
                          attempt=1, node="pi7", data_dir=node_root / "data",
                          run_as=job_user.pw_name)  # fmt: skip
        started.append(proc)
        proc.start()
        outcome = proc.wait(20)
        assert outcome is not None and outcome.error is None, outcome
        return outcome

    yield run_job
    for proc in started:
        proc.stop(grace=0)
        proc.wait(5)


def test_a_job_cannot_read_keys_certificates_or_the_agents_config(
    run_job: Callable[..., Outcome], node_root: Path
) -> None:
    etc = node_root / "etc" / "picluster"
    files = ["agent.yaml", *(f"pki/{n}" for n in ("ca.crt", "client.crt", "client.key",
                                                  "group.crt", "group.key"))]  # fmt: skip
    script = "; ".join(f"cat {etc / f} >/dev/null 2>&1 && echo READ {f}" for f in files)
    outcome = run_job(f"{script}; ls {etc / 'pki'} >/dev/null 2>&1 && echo LISTED; true")
    assert outcome.stdout_tail == ""
    # The same files, for root (the agent): all there and readable.
    assert all((etc / f).read_text().startswith("secret") for f in files)


def test_a_job_cannot_read_or_list_other_jobs_outputs(
    run_job: Callable[..., Outcome], node_root: Path
) -> None:
    first = run_job("echo secret-of-the-first-job; echo more >&2", job_id="first")
    assert first.stdout_tail == "secret-of-the-first-job\n"
    jobs = node_root / "data" / "jobs"
    probe = (
        f"ls {jobs} && echo LISTED JOBS; ls {jobs}/first && echo LISTED FIRST; "
        f"cat {jobs}/first/1.stdout && echo READ STDOUT; "
        f"cat {jobs}/first/1.stderr && echo READ STDERR; "
        f"cat {jobs}/second/1.stdout && echo READ OWN; true"
    )
    second = run_job(probe, job_id="second")
    assert "LISTED" not in second.stdout_tail and "READ" not in second.stdout_tail
    assert "secret-of-the-first-job" not in second.stdout_tail
    assert second.stderr_tail.count("Permission denied") == 5, second.stderr_tail


def test_a_job_cannot_regain_root_through_a_setuid_binary(
    run_job: Callable[..., Outcome], node_root: Path, job_user: pwd.struct_passwd
) -> None:
    setuid_id = node_root / "id-setuid"
    shutil.copy("/usr/bin/id", setuid_id)
    os.chown(setuid_id, 0, 0)
    setuid_id.chmod(0o4755)
    # Without no_new_privs the binary does give root to the job user: the test can fail.
    control = subprocess.run([str(setuid_id), "-u"], user=job_user.pw_uid,
                             group=job_user.pw_gid, extra_groups=[],
                             capture_output=True, text=True, check=True)  # fmt: skip
    assert control.stdout.strip() == "0"
    outcome = run_job(f"{setuid_id} -u; grep NoNewPrivs /proc/self/status; su -c true root; true")
    lines = outcome.stdout_tail.splitlines()
    assert lines[0] == str(job_user.pw_uid)  # the effective uid stayed the job user's
    assert lines[1].split() == ["NoNewPrivs:", "1"]
    assert outcome.stderr_tail.strip(), "su must have refused"
    if shutil.which("sudo"):
        refused = run_job("sudo -n true && echo SUDO; true")
        assert "SUDO" not in refused.stdout_tail
