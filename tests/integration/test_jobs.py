"""Jobs end to end on real etcd and real agents: submission, scheduling, execution, control."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from picluster_agent.client import Client, summarize
from picluster_agent.errors import NotFound
from picluster_agent.etcd.localcluster import EtcdCluster, wait_for
from picluster_agent.jobs.records import JobState
from picluster_agent.jobs.spec import build_spec

from conftest import Agents


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One etcd and three agents (pi1 has camera=yes) shared by the non-destructive tests."""
    base = tmp_path_factory.mktemp("jobs")
    cluster = EtcdCluster(base / "etcd", 1).start()
    group = Agents(cluster, f"/jobs-{uuid.uuid4().hex[:6]}", base / "agents")
    group.start("pi1", labels={"camera": "yes"}, slots=2)
    group.start("pi2", slots=2)
    group.start("pi3", slots=2)
    group.wait_registered(3)
    group.wait_leader()
    yield group
    group.stop_all()
    cluster.stop_all()


@pytest.fixture
def client(shared) -> Client:
    return Client(shared.cluster.endpoints_csv, prefix=shared.prefix)


def cli_args(group: Agents) -> list[str]:
    return ["--endpoints", group.cluster.endpoints_csv, "--prefix", group.prefix]


def test_500_jobs_over_three_agents_all_succeed_exactly_once(client):
    results = client.submit_many([build_spec(["true"]) for _ in range(500)])
    assert all(r.accepted for r in results)
    statuses = client.wait([r.id for r in results], timeout=240)
    assert summarize(statuses) == {"succeeded": 500}
    assert {s.record.attempt for s in statuses.values()} == {1}
    assert {s.record.node for s in statuses.values()} == {"pi1", "pi2", "pi3"}


def test_submit_prints_id_only_after_commit_and_job_sees_its_environment(shared, client, cli):
    out = cli(
        "submit",
        *cli_args(shared),
        "--env",
        "GREETING=hi",
        "--",
        "sh",
        "-c",
        'echo "$GREETING $PICLUSTER_JOB_ID $PICLUSTER_ATTEMPT $PICLUSTER_NODE"',
    )
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.strip()
    # Printed means committed: the id is in etcd by the time the CLI returns.
    assert client.status(job_id).state in set(JobState)
    status = client.wait([job_id], timeout=30)[job_id]
    assert status.state is JobState.SUCCEEDED
    greeting, jid, attempt, node = client.logs(job_id).split()
    assert (greeting, jid, attempt) == ("hi", job_id, "1") and node == status.record.node


def test_shell_mode_cwd_and_stderr(shared, client, cli, tmp_path):
    out = cli(
        "submit",
        *cli_args(shared),
        "--shell",
        "--cwd",
        str(tmp_path),
        "--wait",
        "--",
        "pwd; echo oops >&2; exit 0",
    )
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.split()[0]
    assert client.logs(job_id).strip() == str(tmp_path)
    logs = cli("logs", *cli_args(shared), "--stderr", job_id)
    assert logs.stdout.strip() == "oops"


def test_duplicate_id_creates_nothing(shared, client, cli):
    job_id = f"dup-{uuid.uuid4().hex[:6]}"
    first = cli("submit", *cli_args(shared), "--id", job_id, "--", "true")
    second = cli("submit", *cli_args(shared), "--id", job_id, "--", "false")
    assert first.returncode == 0 and first.stdout.strip() == job_id
    assert second.returncode == 5, second.stderr
    assert second.stdout.strip() == job_id and "already accepted" in second.stderr
    status = client.wait([job_id], timeout=30)[job_id]
    assert status.state is JobState.SUCCEEDED  # the first spec ran, not the second
    assert sum(1 for s in client.jobs() if s.id == job_id) == 1
    as_json = cli("submit", *cli_args(shared), "-o", "json", "--id", job_id, "--", "true")
    assert as_json.returncode == 5
    assert json.loads(as_json.stdout) == [{"id": job_id, "accepted": False}]
    # After the job finished, the same id still creates nothing.
    again = client.submit(["false"], id=job_id)
    assert again.accepted is False


def etcdctl(group: Agents, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ETCDCTL_API="3")
    return subprocess.run(
        ["etcdctl", "--endpoints", group.cluster.endpoints_csv, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )


def test_plain_etcdctl_put_is_a_submission(shared, client):
    job_id = f"ctl-{uuid.uuid4().hex[:6]}"
    spec = {"command": ["sh", "-c", "echo from etcdctl"], "priority": 5}
    put = etcdctl(shared, "put", f"{shared.prefix}/queue/{job_id}", json.dumps(spec))
    assert put.returncode == 0, put.stderr
    status = client.wait([job_id], timeout=30)[job_id]
    assert status.state is JobState.SUCCEEDED
    assert client.logs(job_id) == "from etcdctl\n"
    # The same id put again with etcdctl creates nothing: the master drops the queue key.
    before = shared.client.get(shared.keys.job(job_id))
    etcdctl(shared, "put", f"{shared.prefix}/queue/{job_id}", json.dumps(spec))
    wait_for(
        lambda: shared.client.get(shared.keys.queue(job_id)) is None, 15, what="duplicate dropped"
    )
    after = shared.client.get(shared.keys.job(job_id))
    assert after.mod_revision == before.mod_revision  # the job was not touched, nor re-run


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("{not json", "JSON"),
        ('{"command": "echo hi"}', "shell"),
        ('{"command": ["x"], "bogus": 1}', "bogus"),
        ('{"command": []}', "command"),
        ('{"command": ["x"], "slots": "two"}', "slots"),
    ],
)
def test_invalid_etcdctl_submission_is_rejected_with_reason(shared, client, cli, value, reason):
    job_id = f"bad-{uuid.uuid4().hex[:6]}"
    assert etcdctl(shared, "put", f"{shared.prefix}/queue/{job_id}", value).returncode == 0
    status = client.wait([job_id], timeout=30)[job_id]
    assert status.state is JobState.REJECTED
    assert reason in status.record.reason
    shown = cli("status", *cli_args(shared), job_id)
    assert "rejected" in shown.stdout and reason in shown.stdout
    # Nothing else changed: the queue key is gone and no assignment was made.
    assert shared.client.get(shared.keys.queue(job_id)) is None
    assert not any(job_id in kv.key for kv in shared.client.get_prefix(shared.keys.assign_root)[0])


def test_oversize_spec_is_refused_by_the_cli_and_nothing_is_written(shared, cli, tmp_path):
    before = shared.client.count_prefix(shared.keys.queue_dir)
    spec = tmp_path / "big.json"
    # One argument may not exceed 128 KiB on Linux: a big spec comes from a file.
    spec.write_text(
        json.dumps({"id": "too-big", "command": ["true"], "env": {"BIG": "x" * (1024 * 1024 + 10)}})
    )
    out = cli("submit", *cli_args(shared), "--file", str(spec))
    assert out.returncode == 2
    assert "512 KiB" in out.stderr
    assert out.stdout == ""
    assert shared.client.get(shared.keys.queue("too-big")) is None
    assert shared.client.count_prefix(shared.keys.queue_dir) == before


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (
            [
                "--",
            ],
            "no command",
        ),
        (["--slots", "0", "--", "true"], "slots"),
        (["--max-attempts", "0", "--", "true"], "max_attempts"),
        (["--timeout", "soon", "--", "true"], "timeout"),
        (["--id", "../x", "--", "true"], "invalid job id"),
        (["--env", "NOEQUALS", "--", "true"], "not set here"),
        (["--at", "yesterday-ish", "--", "true"], "--at"),
    ],
)
def test_bad_submissions_are_refused(shared, cli, args, needle):
    before = shared.client.count_prefix(shared.keys.queue_dir)
    out = cli("submit", *cli_args(shared), *args)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert needle in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert shared.client.count_prefix(shared.keys.queue_dir) == before


def test_labels_constrain_placement_and_unsatisfiable_jobs_wait_with_a_reason(shared, client):
    camera = [client.submit(["true"], constraints={"camera": "yes"}).id for _ in range(6)]
    statuses = client.wait(camera, timeout=60)
    assert {s.record.node for s in statuses.values()} == {"pi1"}

    stuck = client.submit(["true"], constraints={"gpu": "yes"}).id
    wait_for(
        lambda: client.status(stuck).waiting and "gpu=yes" in client.status(stuck).waiting,
        15,
        what="a reason",
    )
    assert client.status(stuck).state is JobState.QUEUED
    too_big = client.submit(["true"], slots=64).id
    wait_for(lambda: "64 slots" in (client.status(too_big).waiting or ""), 15, what="slots reason")
    greedy = client.submit(["true"], memory_mb=10_000_000).id
    wait_for(lambda: "MiB" in (client.status(greedy).waiting or ""), 15, what="memory reason")
    for job_id in (stuck, too_big, greedy):
        client.cancel(job_id)
        assert client.wait([job_id], timeout=30)[job_id].state is JobState.CANCELLED


def test_timeout_stops_the_job(shared, client):
    job = client.submit(["sleep", "60"], timeout=1.0)
    status = client.wait([job.id], timeout=40)[job.id]
    assert status.state is JobState.FAILED
    assert status.result.timed_out is True
    assert "timed out" in status.record.reason


def test_retries_until_success(shared, client, tmp_path):
    counter = tmp_path / "count"
    script = (
        f"n=$(cat {counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {counter}; [ $n -ge 3 ]"
    )
    ok = client.submit(script, shell=True, max_attempts=3, retry_backoff=0.1)
    status = client.wait([ok.id], timeout=60)[ok.id]
    assert status.state is JobState.SUCCEEDED
    assert status.record.attempt == 3 and status.record.failures == 2
    assert status.result.attempt == 3

    counter.unlink()
    fails = client.submit(script, shell=True, max_attempts=2, retry_backoff=0.1)
    status = client.wait([fails.id], timeout=60)[fails.id]
    assert status.state is JobState.FAILED
    assert status.record.attempt == 2 and status.result.exit_code == 1


def test_cancel_queued_and_running_jobs(shared, client, cli, tmp_path):
    later = client.submit(["true"], not_before=9_999_999_999.0)
    wait_for(lambda: "not before" in (client.status(later.id).waiting or ""), 15, what="delay")
    out = cli("cancel", *cli_args(shared), later.id)
    assert out.returncode == 0 and "cancel requested" in out.stdout
    assert client.wait([later.id], timeout=30)[later.id].state is JobState.CANCELLED

    pidfile = tmp_path / "pid"
    running = client.submit(f"echo $$ > {pidfile}; exec sleep 60", shell=True)
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 30, what="job started")
    pid = int(pidfile.read_text())
    client.cancel(running.id)
    status = client.wait([running.id], timeout=30)[running.id]
    assert status.state is JobState.CANCELLED
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), 10, what="job process gone")
    assert shared.client.get(shared.keys.cancel(running.id)) is None

    again = cli("cancel", *cli_args(shared), running.id)
    assert again.returncode == 0 and "already cancelled" in again.stdout


def test_status_of_unknown_job_is_definite(shared, client, cli):
    with pytest.raises(NotFound):
        client.status("never-submitted")
    out = cli("status", *cli_args(shared), "never-submitted")
    assert out.returncode == 4 and "not found" in out.stderr
    assert cli("wait", *cli_args(shared), "never-submitted").returncode == 4


def test_jobs_listing_and_json_output(shared, client, cli):
    job = client.submit(["true"], name="listed")
    client.wait([job.id], timeout=30)
    out = cli("jobs", *cli_args(shared), "--state", "succeeded", "-o", "json")
    assert out.returncode == 0
    listed = {j["id"]: j for j in json.loads(out.stdout)}
    assert listed[job.id]["state"] == "succeeded"
    text = cli("jobs", *cli_args(shared), "--limit", "3")
    assert text.returncode == 0 and text.stdout.startswith("ID")


def test_wait_exit_codes(shared, client, cli):
    good = client.submit(["true"]).id
    bad = client.submit(["false"]).id
    slow = client.submit(["sleep", "30"]).id
    assert cli("wait", *cli_args(shared), good).returncode == 0
    assert cli("wait", *cli_args(shared), good, bad).returncode == 6
    assert cli("wait", *cli_args(shared), slow, "--timeout", "1s").returncode == 7
    client.cancel(slow)
