"""The agent's metrics: one registry per agent, names Prometheus accepts, the right numbers."""

from __future__ import annotations

import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families
from promtool import promtool

from picluster_agent.errors import Unavailable
from picluster_agent.etcd.adapter import EtcdClient
from picluster_agent.observe.metrics import AgentMetrics, NoMetrics, label_name


def samples(metrics: AgentMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.exposition().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def busy_metrics() -> AgentMetrics:
    """Every metric with at least one sample: what promtool must accept."""
    m = AgentMetrics()
    m.describe_node("pi1", 4, {"model.rev": "pi5", "camera": "yes"}, True)
    m.etcd_request("Txn", 0.004, None)
    m.etcd_request("Range", 2.1, "Unavailable")
    m.etcd_request("LeaseKeepAlive", 0.002, None)
    m.etcd_request("LeaseKeepAlive", 2.0, "Unavailable")
    m.session_started()
    m.session_is("connected")
    m.master_began(42)
    m.attempt_started(1, submitted_at=100.0, now=100.25)
    m.attempt_ended("failed", 3.0, retried=True)
    m.attempt_ended("succeeded", 0.5, retried=False)
    m.read_from({"slots_used": lambda: 3, "slots_free": lambda: 1, "queue_depth": lambda: 7})
    return m


def test_promtool_accepts_every_name_and_label() -> None:
    text = busy_metrics().exposition()
    run = subprocess.run(
        [promtool(), "check", "metrics"], input=text, capture_output=True, timeout=30
    )
    # promtool prints lint problems and exits non-zero on any of them.
    assert run.returncode == 0, (run.stdout + run.stderr).decode()
    assert not (run.stdout + run.stderr).strip(), (run.stdout + run.stderr).decode()


def test_each_agent_has_its_own_registry() -> None:
    a, b = AgentMetrics(), AgentMetrics()
    a.attempt_started(1, submitted_at=None, now=0.0)
    a.attempt_started(2, submitted_at=None, now=0.0)
    assert samples(a)[("picluster_job_attempts_total", ())] == 2
    assert samples(b)[("picluster_job_attempts_total", ())] == 0


def test_events_and_readings_show_in_a_scrape() -> None:
    s = samples(busy_metrics())
    assert s[("picluster_etcd_requests_total", (("kind", "Range"),))] == 1
    errors = ("picluster_etcd_request_errors_total", (("error", "Unavailable"), ("kind", "Range")))
    assert s[errors] == 1
    assert s[("picluster_lease_keepalive_seconds_count", ())] == 1
    assert s[("picluster_lease_keepalive_failures_total", ())] == 1
    assert s[("picluster_master", ())] == 1
    assert s[("picluster_master_epoch", ())] == 42
    assert s[("picluster_session_state", (("state", "connected"),))] == 1
    assert s[("picluster_session_state", (("state", "lost"),))] == 0
    assert s[("picluster_job_start_latency_seconds_sum", ())] == 0.25
    assert s[("picluster_job_retries_total", ())] == 1
    assert s[("picluster_jobs_finished_total", (("state", "failed"),))] == 1
    assert s[("picluster_job_run_seconds_count", ())] == 2
    assert s[("picluster_slots", (("state", "used"),))] == 3
    assert s[("picluster_queue_depth", ())] == 7
    info = {k: v for (name, labels), _ in s.items() if name == "picluster_node_info"
            for k, v in labels}  # fmt: skip
    assert info["node"] == "pi1" and info["label_model_rev"] == "pi5"
    assert info["label_camera"] == "yes" and info["master_eligible"] == "true"


def test_a_reading_that_fails_or_ended_reads_zero() -> None:
    m = AgentMetrics()
    readings = {"running": lambda: 1 / 0, "waiting": lambda: 5}
    m.read_from(readings)
    assert samples(m)[("picluster_worker_jobs", (("state", "running"),))] == 0
    assert samples(m)[("picluster_worker_jobs", (("state", "waiting"),))] == 5
    m.stop_reading(readings)
    assert samples(m)[("picluster_worker_jobs", (("state", "waiting"),))] == 0
    with pytest.raises(ValueError, match="no such reading"):
        m.read_from({"slot": lambda: 1})


def test_label_names_are_valid_for_any_node_label_key() -> None:
    assert label_name("model.rev-2") == "label_model_rev_2"


def test_the_adapter_reports_each_request_once_with_its_outcome() -> None:
    seen: list[tuple[str, str | None]] = []
    # Nothing listens on port 1: each request fails at connect, on both endpoints.
    client = EtcdClient(["http://127.0.0.1:1", "http://127.0.0.1:1"], timeout=0.5)
    client.observer = lambda kind, seconds, error: seen.append((kind, error))
    with pytest.raises(Unavailable):
        client.get("/x")
    with pytest.raises(Unavailable):
        client.keepalive(1)
    client.close()
    assert seen == [("Range", "Unavailable"), ("LeaseKeepAlive", "Unavailable")]


def test_metrics_turned_off_count_nothing() -> None:
    m = NoMetrics()
    m.etcd_request("Txn", 0.1, None)
    m.attempt_started(1, submitted_at=0.0, now=1.0)
    m.attempt_ended("failed", 1.0, retried=True)
    s = samples(m)
    assert not m.enabled
    assert s[("picluster_job_attempts_total", ())] == 0
    assert s[("picluster_job_retries_total", ())] == 0
    assert ("picluster_etcd_requests_total", (("kind", "Txn"),)) not in s
