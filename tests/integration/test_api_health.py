"""/healthz, /readyz and /metrics on a real agent over real TLS: who may read what, the
numbers a scrape shows, and readiness that follows etcd."""

from __future__ import annotations

import http.client
import json
import ssl
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

from prometheus_client.parser import text_string_to_metric_families
from promtool import promtool

from picluster_agent.etcd.localcluster import EtcdCluster, wait_for

from conftest import Agents


def get(agents: Agents, path: str, who: str | None = None) -> tuple[int, str, bytes]:
    context = ssl.create_default_context(cafile=agents.apis.pki.cacert)
    if who is not None:
        files = agents.apis.user(who, "picluster-reader")
        context.load_cert_chain(files.cert, files.key)
    port = agents.by_name("pi1").api.port
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read()
    finally:
        conn.close()


def test_health_ready_and_metrics(agents: Agents, etcd1: EtcdCluster) -> None:
    agents.start("pi1", with_api=True)
    agents.wait_leader()
    wait_for(lambda: get(agents, "/readyz")[0] == 200, 20, what="ready")
    status, _, body = get(agents, "/healthz")
    assert status == 200 and json.loads(body) == {"alive": True, "node": "pi1", "stuck": []}
    ready = json.loads(get(agents, "/readyz")[2])
    assert ready == {"ready": True, "node": "pi1", "session": "connected", "etcd": "ok"}

    # /metrics: a reader's certificate, not none.
    assert get(agents, "/metrics")[0] == 401
    wait_for(lambda: get(agents, "/metrics", "rita")[0] == 200, 10, what="the reader admitted")
    status, content_type, text = get(agents, "/metrics", "rita")
    assert content_type.startswith("text/plain; version=0.0.4")
    run = subprocess.run([promtool(), "check", "metrics"], input=text, capture_output=True)
    assert run.returncode == 0 and not (run.stdout + run.stderr).strip(), run.stdout + run.stderr
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }
    assert samples[("picluster_master", ())] == 1
    assert samples[("picluster_session_state", (("state", "connected"),))] == 1
    assert samples[("picluster_etcd_requests_total", (("kind", "LeaseGrant"),))] >= 1
    assert samples[("process_resident_memory_bytes", ())] > 0
    assert any(name == "picluster_node_info" and ("node", "pi1") in labels
               for name, labels in samples)  # fmt: skip

    # etcd gone: not ready (and why), still alive.
    etcd1.stop_all()
    wait_for(lambda: get(agents, "/readyz")[0] == 503, 20, what="not ready")
    ready = json.loads(get(agents, "/readyz")[2])
    assert ready["ready"] is False and ready["etcd"] != "ok", ready
    assert get(agents, "/healthz")[0] == 200


def test_readiness_answers_in_time_and_holds_one_thread_while_etcd_is_silent(
    agents: Agents, etcd1: EtcdCluster
) -> None:
    """etcd stopped (SIGSTOP: no answer, no refusal): 40 probes at once are all answered
    503 within about READ_TIMEOUT, because they share one read that asks etcd for at most
    that long (each probe used to hold one of the API's 32 threads for the client's whole
    request timeout, so the last 8 waited for a thread: 4 s and more)."""
    agents.start("pi1", with_api=True)
    agents.wait_leader()
    wait_for(lambda: get(agents, "/readyz")[0] == 200, 20, what="ready")
    etcd1.members[0].pause()
    try:
        began = time.monotonic()
        with ThreadPoolExecutor(40) as pool:
            answers = list(pool.map(lambda _: get(agents, "/readyz"), range(40)))
        took = time.monotonic() - began
    finally:
        etcd1.members[0].resume()
    assert took < 3.0, f"40 probes took {took:.1f} s"
    assert {status for status, _, _ in answers} == {503}
    # The probe's wait or the read's own deadline, whichever ends first.
    for _, _, body in answers:
        reason = json.loads(body)["etcd"]
        assert reason == "etcd did not answer a read within 1 s" or "DEADLINE" in reason, reason
    wait_for(lambda: get(agents, "/readyz")[0] == 200, 30, what="ready again")
