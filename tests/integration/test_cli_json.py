"""`-o json`: every command prints exactly one JSON document on stdout.

On success, and on the outcomes that have their own exit code (5 duplicate, 6 a job failed,
7 timed out), stdout is one document as a whole (`json.loads(stdout)`), so that
`picluster ... -o json | jq` always works; messages go to stderr. A refusal or an error
prints nothing on stdout (test_cli_errors.py). Every subcommand that has `-o` must appear in
COVERED: a new one fails `test_every_json_command_is_covered`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from picluster_agent.cli import app
from picluster_agent.etcd.localcluster import EtcdCluster

from conftest import Agents

NODE = "json1"
COVERED = {
    "submit",
    "status",
    "jobs",
    "logs",
    "wait",
    "cancel",
    "drain",
    "undrain",
    "nodes",
    "master",
    "doctor",
}


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Iterator[Agents]:
    base = tmp_path_factory.mktemp("json")
    cluster = EtcdCluster(base / "etcd", 1).start()
    group = Agents(cluster, f"/json-{uuid.uuid4().hex[:6]}", base / "agents")
    group.start(NODE, slots=4)
    group.wait_registered(1)
    group.wait_leader()
    yield group
    group.stop_all()
    cluster.stop_all()


def connection(group: Agents) -> list[str]:
    return ["--endpoints", group.cluster.endpoints_csv, "--prefix", group.prefix]


def run_json(group: Agents, *argv: str, code: int = 0) -> tuple[Any, str]:
    """`picluster ARGV -o json` in this process: its one JSON document, and its stderr."""
    command, *rest = argv
    full = [command, *connection(group), "-o", "json", *rest]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        result = app.main(full)
    shown = f"picluster {' '.join(full)} -> {result}\n{out.getvalue()}\n{err.getvalue()}"
    assert result == code, shown
    assert out.getvalue().strip(), shown
    try:
        return json.loads(out.getvalue()), err.getvalue()
    except ValueError as e:
        raise AssertionError(f"not one JSON document: {e}\n{shown}") from e


def test_every_json_command_is_covered():
    parser = app.build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    with_output = {
        name
        for name, sub in subs.choices.items()
        if any("--output" in a.option_strings for a in sub._actions)
    }
    assert with_output == COVERED


def test_submit_and_wait(shared, tmp_path):
    jobs, err = run_json(shared, "submit", "--", "echo", "hello")
    assert [set(j) for j in jobs] == [{"id", "accepted"}] and jobs[0]["accepted"] and not err
    job_id = jobs[0]["id"]

    done, _ = run_json(shared, "wait", job_id, "--timeout", "60s")
    assert done["counts"] == {"succeeded": 1} and done["jobs"][0]["id"] == job_id

    status, _ = run_json(shared, "status", job_id)
    assert status["id"] == job_id and status["state"] == "succeeded"

    logs, _ = run_json(shared, "logs", job_id)
    # These agents serve no HTTPS API: the output comes from the tail kept in etcd.
    assert logs == {"id": job_id, "stream": "stdout", "source": "etcd", "output": "hello\n"}

    listed, _ = run_json(shared, "jobs", "--state", "succeeded")
    assert job_id in {j["id"] for j in listed}

    # Not found: nothing on stdout, one line on stderr.
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = app.main(["status", *connection(shared), "-o", "json", "never-submitted"])
    assert (code, out.getvalue(), err.getvalue().count("\n")) == (4, "", 1)

    # Cancelling a finished job changes nothing and says so, still as one document.
    cancelled, _ = run_json(shared, "cancel", job_id)
    assert cancelled == {"id": job_id, "was": "succeeded", "requested": False}


def test_submit_wait_prints_one_document(shared):
    doc, err = run_json(shared, "submit", "--wait", "--", "true")
    assert doc["counts"] == {"succeeded": 1} and not err
    assert doc["submitted"] == [{"id": doc["jobs"][0]["id"], "accepted": True}]
    failed, _ = run_json(shared, "submit", "--wait", "--", "false", code=6)
    assert failed["counts"] == {"failed": 1}
    many, _ = run_json(shared, "submit", "--wait", "--array", "3", "--", "true")
    assert many["counts"] == {"succeeded": 3} and len(many["submitted"]) == 3
    parent = many["submitted"][0]["array"]
    array, _ = run_json(shared, "status", parent)
    assert array["counts"] == {"succeeded": 3} and array["array"] is True
    waited, _ = run_json(shared, "wait", parent)
    assert waited["counts"] == {"succeeded": 3}
    cancelled, _ = run_json(shared, "cancel", parent)
    assert cancelled == {"id": parent, "array": True, "requested": 0}
    first = many["submitted"][0]["id"]
    after, _ = run_json(shared, "submit", "--wait", "--after-ok", first, "--", "true")
    assert after["counts"] == {"succeeded": 1}
    status, _ = run_json(shared, "status", after["submitted"][0]["id"])
    assert status["spec"]["after"] == {"ok": [first]}


def test_duplicates_and_timeouts_keep_stdout_one_document(shared, tmp_path):
    job_id = f"json-dup-{uuid.uuid4().hex[:6]}"
    run_json(shared, "submit", "--id", job_id, "--", "true")
    again, err = run_json(shared, "submit", "--id", job_id, "--", "true", code=5)
    assert again == [{"id": job_id, "accepted": False}]
    assert err.count("\n") == 1 and "already accepted" in err

    specs = tmp_path / "jobs.jsonl"
    specs.write_text('{"command": ["true"]}\n{"command": ["true"]}\n')
    from_file, _ = run_json(shared, "submit", "--file", str(specs))
    assert len(from_file) == 2 and all(j["accepted"] for j in from_file)

    slow, _ = run_json(shared, "submit", "--", "sleep", "30")
    timed_out, _ = run_json(shared, "wait", slow[0]["id"], "--timeout", "0", code=7)
    assert len(timed_out["jobs"]) == 1
    cancel, _ = run_json(shared, "cancel", slow[0]["id"])
    assert cancel["requested"] is True


def test_cancel_takes_several_ids_and_an_unknown_one_cancels_none(shared):
    slow = [run_json(shared, "submit", "--", "sleep", "300")[0][0]["id"] for _ in range(2)]
    done = run_json(shared, "submit", "--wait", "--", "true")[0]["jobs"][0]["id"]

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = app.main(["cancel", *connection(shared), *slow, "never-submitted", done])
    assert (code, out.getvalue(), err.getvalue().count("\n")) == (4, "", 1), err.getvalue()
    assert "never-submitted" in err.getvalue() and "nothing cancelled" in err.getvalue()
    cancels = shared.client.get_prefix(shared.keys.cancel_dir)[0]
    assert not [kv for kv in cancels if kv.key.rsplit("/", 1)[-1] in slow]
    for job_id in slow:
        status, _ = run_json(shared, "status", job_id)
        assert status["state"] != "cancelled"

    cancelled, _ = run_json(shared, "cancel", *slow, done, slow[0])  # a repeat counts once
    assert [c["id"] for c in cancelled] == [*slow, done]
    assert [c["requested"] for c in cancelled] == [True, True, False]
    waited, _ = run_json(shared, "wait", slow[0], code=6)
    assert waited["counts"] == {"cancelled": 1}
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        assert app.main(["cancel", *connection(shared), *slow]) == 0
    lines = text.getvalue().splitlines()  # one line per id, in the order given
    assert lines[0] == f"job {slow[0]} already cancelled; nothing to cancel"
    assert len(lines) == 2 and lines[1].startswith(f"job {slow[1]}"), lines


def test_nodes_master_drain_undrain(shared):
    nodes, _ = run_json(shared, "nodes")
    assert [n["name"] for n in nodes] == [NODE] and nodes[0]["role"] == "master"
    master, _ = run_json(shared, "master")
    assert master["name"] == NODE

    drained, err = run_json(shared, "drain", NODE)
    assert drained == {"node": NODE, "drained": True} and not err
    undrained, _ = run_json(shared, "undrain", NODE)
    assert undrained == {"node": NODE, "drained": False, "was_drained": True}
    again, _ = run_json(shared, "undrain", NODE)
    assert again["was_drained"] is False


def test_doctor(shared, monkeypatch):
    from picluster_agent.cli import doctor
    from picluster_agent.doctor.result import Check, Level

    # This machine's disks are not the test's to judge.
    monkeypatch.setattr(doctor, "card_check", lambda: Check("card", Level.OK, "skipped"))
    report, err = run_json(shared, "doctor")
    assert report["status"] == "ok" and not err, report
    assert [c["status"] for c in report["checks"]] == ["ok"] * len(report["checks"])
    assert {"name", "status", "summary", "details"} == set(report["checks"][0])


def test_env_name_alone_passes_the_submitters_value(shared, monkeypatch):
    monkeypatch.setenv("HJ_TOKEN", "from the shell")
    jobs, _ = run_json(shared, "submit", "--env", "HJ_TOKEN", "--env", "B=2", "--", "true")
    status, _ = run_json(shared, "status", jobs[0]["id"])
    assert status["spec"]["env"] == {"HJ_TOKEN": "from the shell", "B": "2"}


def run_text(group: Agents, *argv: str) -> str:
    command, *rest = argv
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert app.main([command, *connection(group), *rest]) == 0
    return out.getvalue()


def test_jobs_lists_active_ones_unless_all_and_yaml_is_the_same_document(shared):
    import yaml

    done, _ = run_json(shared, "submit", "--wait", "--", "true")
    finished = done["jobs"][0]["id"]
    slow, _ = run_json(shared, "submit", "--", "sleep", "30")
    later, _ = run_json(shared, "submit", "--after", "1h", "--", "true")
    active, _ = run_json(shared, "jobs")
    ids = [j["id"] for j in active]
    assert slow[0]["id"] in ids and later[0]["id"] in ids and finished not in ids
    everything, _ = run_json(shared, "jobs", "--all")
    assert finished in [j["id"] for j in everything]
    newest, _ = run_json(shared, "jobs", "--all", "--limit", "2")
    assert [j["id"] for j in newest] == [slow[0]["id"], later[0]["id"]]
    finished_only, _ = run_json(shared, "jobs", "--state", "succeeded")  # records that stay
    assert yaml.safe_load(run_text(shared, "jobs", "--state", "succeeded", "-o", "yaml")) == (
        finished_only
    )
    wide = run_text(shared, "jobs", "-o", "wide").splitlines()
    assert wide[0].split() == [
        *("ID", "STATE", "ATTEMPT", "NODE", "EXIT", "PRIORITY", "SUBMITTED", "STARTED"),
        *("FINISHED", "NAME", "COMMAND"),
    ]
    run_json(shared, "cancel", slow[0]["id"])
    run_json(shared, "cancel", later[0]["id"])


def test_watch_prints_a_document_per_change_and_status_watch_ends_with_the_job(shared):
    import queue
    import signal
    import subprocess
    import sys
    import threading
    import time

    base = [sys.executable, "-m", "picluster_agent"]
    # PYTHONFAULTHANDLER: if the watcher hangs, SIGABRT makes it print every thread's stack.
    watcher = subprocess.Popen(
        [*base, "jobs", *connection(shared), "--watch", "-o", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONFAULTHANDLER": "1"},
    )
    # Lines are read in a thread so that every wait has a deadline (a bare readline
    # blocked until pytest's timeout when no view came).
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in watcher.stdout], daemon=True).start()
    deadline = time.monotonic() + 30

    def next_view() -> list[dict[str, Any]]:
        try:
            return json.loads(lines.get(timeout=max(0.1, deadline - time.monotonic())))
        except queue.Empty:
            raise AssertionError("no view from jobs --watch within 30 s") from None

    try:
        first = next_view()  # JSON Lines: one view per line
        assert isinstance(first, list)
        # A job that stays active until cancelled: the views are gathered for half a
        # second, and a short job could end before one showed it (seen under load).
        job, _ = run_json(shared, "submit", "--", "sleep", "300")
        seen: list[str] = []
        while job[0]["id"] not in seen:
            seen = [j["id"] for j in next_view()]
    finally:
        watcher.send_signal(signal.SIGINT)
        try:
            code = watcher.wait(10)
        except subprocess.TimeoutExpired:
            watcher.send_signal(signal.SIGABRT)
            watcher.wait(10)
            raise AssertionError(
                "jobs --watch still running 10 s after SIGINT; its threads:\n"
                + watcher.stderr.read()
            ) from None
        assert code == 0, watcher.stderr.read()
    run_json(shared, "cancel", job[0]["id"])
    status = subprocess.run(
        [*base, "status", *connection(shared), "--watch", "-o", "json", job[0]["id"]],
        capture_output=True,
        text=True,
        timeout=60,
    )
    views = [json.loads(line) for line in status.stdout.splitlines()]
    assert status.returncode == 0 and views[-1]["state"] == "cancelled", status.stderr


def run_cron(group: Agents, action: str, *rest: str) -> Any:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert app.main(["cron", action, *connection(group), "-o", "json", *rest]) == 0
    return json.loads(out.getvalue())


def test_cron_commands_print_one_document(shared):
    added = run_cron(shared, "add", "nightly", "0 3 * * *", "--tz", "Europe/Berlin", "--", "ls")
    assert added["name"] == "nightly" and added["tz"] == "Europe/Berlin"
    listed = run_cron(shared, "list")
    assert [e["name"] for e in listed] == ["nightly"] and listed[0]["last_job"] is None
    assert run_cron(shared, "pause", "nightly")["paused"] is True
    assert run_cron(shared, "resume", "nightly")["paused"] is False
    assert run_cron(shared, "remove", "nightly") == {"name": "nightly", "removed": True}
