"""Dependencies on real agents: --after-ok/any/fail, unmet ones cancelled, unknown refused.

One etcd member and two agents serve the whole module (a fresh cluster is not the point).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from picluster_agent.client import Client
from picluster_agent.etcd.localcluster import wait_for
from picluster_agent.jobs.records import JobState
from picluster_agent.jobs.spec import SpecError

from conftest import module_cluster

PREFIX = "/deps"


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> Iterator[Client]:
    with module_cluster(tmp_path_factory.mktemp("deps"), PREFIX, ("dep1", "dep2"), slots=2) as c:
        yield c


def _gate(tmp_path) -> tuple[str, object]:
    gate = tmp_path / "gate"
    return f"while [ ! -e {gate} ]; do sleep 0.02; done", gate


def test_after_ok_waits_then_runs_and_status_names_the_dependency(client, tmp_path):
    script, gate = _gate(tmp_path)
    first = client.submit(script, shell=True).id
    second = client.submit(["true"], after={"ok": [first]}).id
    wait_for(lambda: client.status(first).state is JobState.RUNNING, 20, what="first running")
    waiting = client.status(second)
    assert waiting.state is JobState.QUEUED
    assert waiting.waiting == f"waiting for dependency {first} (running)"
    gate.touch()
    done = client.wait([first, second], timeout=30)
    assert done[second].state is JobState.SUCCEEDED
    assert done[second].record.started_at >= done[first].record.finished_at


def test_unmet_dependencies_cancel_with_the_reason_and_cascade(client):
    failing = client.submit(["false"]).id
    ok_chain = client.submit(["true"], after={"ok": [failing]}).id
    behind = client.submit(["true"], after={"ok": [ok_chain]}).id
    on_fail = client.submit(["true"], after={"fail": [failing]}).id
    on_any = client.submit(["true"], after={"any": [failing]}).id
    done = client.wait([failing, ok_chain, behind, on_fail, on_any], timeout=30)
    assert done[ok_chain].state is JobState.CANCELLED
    assert done[ok_chain].record.reason == (
        f"cancelled: dependency {failing} failed, not succeeded (--after-ok)"
    )
    assert done[behind].state is JobState.CANCELLED
    assert f"dependency {ok_chain} cancelled" in done[behind].record.reason
    assert done[on_fail].state is JobState.SUCCEEDED
    assert done[on_any].state is JobState.SUCCEEDED
    succeeded = client.submit(["true"]).id
    client.wait([succeeded], timeout=30)
    not_failed = client.submit(["true"], after={"fail": [succeeded]}).id
    assert client.wait([not_failed], timeout=30)[not_failed].state is JobState.CANCELLED


def test_unknown_dependency_is_refused_at_submit(client):
    with pytest.raises(SpecError, match="job no-such-job not found"):
        client.submit(["true"], after={"ok": ["no-such-job"]})


def test_etcdctl_spec_field_and_younger_or_unknown_dependencies(client):
    # A plain put can name anything: unknown or younger dependencies cancel, so no cycle.
    later = "cycle-b"
    client.etcd.put(
        client.keys.queue("cycle-a"),
        json.dumps({"command": ["true"], "after": {"ok": [later]}}),
    )
    client.etcd.put(
        client.keys.queue(later), json.dumps({"command": ["true"], "after": {"ok": ["cycle-a"]}})
    )
    client.etcd.put(
        client.keys.queue("orphan"), json.dumps({"command": ["true"], "after": {"any": ["gone"]}})
    )
    done = client.wait(["cycle-a", later, "orphan"], timeout=30)
    assert done["cycle-a"].record.reason == (
        f"cancelled: dependency {later} was submitted after this job"
    )
    assert done[later].state is JobState.CANCELLED
    assert done["orphan"].record.reason.startswith("cancelled: dependency gone does not exist")


def test_cancelling_a_waiting_job(client, tmp_path):
    script, gate = _gate(tmp_path)
    first = client.submit(script, shell=True).id
    waiting = client.submit(["true"], after={"ok": [first]}).id
    wait_for(lambda: client.status(waiting).waiting is not None, 10, what="waiting")
    client.cancel(waiting)
    assert client.wait([waiting], timeout=30)[waiting].state is JobState.CANCELLED
    gate.touch()
    assert client.wait([first], timeout=30)[first].state is JobState.SUCCEEDED


def test_cli_flags(client, cli, tmp_path):
    conn = ["--endpoints", ",".join(client.connection.endpoints), "--prefix", PREFIX]
    a, b = client.submit(["true"]).id, client.submit(["true"]).id
    c = client.submit(["false"]).id
    out = cli("submit", *conn, "--after-any", f"{a},{b}", "--after-fail", c, "--wait", "--", "true")
    assert out.returncode == 0, out.stderr
    out = cli("submit", *conn, "--after-ok", "never-was", "--", "true")
    assert out.returncode == 2
    assert out.stderr.strip() == (
        "picluster: invalid job spec: after: job never-was not found: a dependency must be "
        "submitted first (unknown, or removed after its retention period)"
    )
