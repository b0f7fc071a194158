"""`picluster doctor` on real etcd: 3 members with an agent (all ok, then a member down),
one member out of space (NOSPACE), and TLS certificates close to their end."""

from __future__ import annotations

import contextlib
import io
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from certs import TestCA

from picluster_agent.cli import app
from picluster_agent.cli import doctor as doctor_cli
from picluster_agent.doctor.result import Check, Level
from picluster_agent.errors import NoSpace
from picluster_agent.etcd.adapter import EtcdClient
from picluster_agent.etcd.localcluster import EtcdCluster, ServerTLS, wait_for

from conftest import Agents


@pytest.fixture(autouse=True)
def not_on_a_node(monkeypatch) -> None:
    """The card check reads this machine's disks, which a test does not choose."""
    monkeypatch.setattr(doctor_cli, "card_check", lambda: Check("card", Level.OK, "skipped"))


def doctor(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = app.main(["doctor", *argv])
    return code, out.getvalue(), err.getvalue()


def lines(text: str) -> dict[str, tuple[str, str]]:
    """{check: (status, summary)} from the text output."""
    found = {}
    for line in text.splitlines():
        status, name, summary = line.split(None, 2)
        found[name] = (status, summary)
    return found


def as_json(*argv: str) -> tuple[int, dict[str, Any]]:
    code, out, err = doctor(*argv, "-o", "json")
    assert out.strip() and not err, (code, out, err)
    return code, json.loads(out)


def test_three_members_all_ok_then_one_down(agents3: Agents):
    agents3.start("d1")
    agents3.wait_registered(1)
    agents3.wait_leader()
    conn = ["--endpoints", agents3.cluster.endpoints_csv, "--prefix", agents3.prefix]

    code, out, err = doctor(*conn)
    found = lines(out)
    assert code == 0 and not err, out
    assert list(found) == [
        "etcd-health", "etcd-alarms", "etcd-members", "etcd-db-size", "clock",
        "certificates", "master", "nodes", "card",
    ]  # fmt: skip
    assert {status for status, _ in found.values()} == {"ok"}, out
    assert found["etcd-health"][1] == "3/3 members answer"
    assert found["master"][1].startswith("d1, master since")
    assert found["nodes"][1] == "1 registered"
    code, doc = as_json(*conn)
    assert code == 0 and doc["status"] == "ok"
    clock = next(c for c in doc["checks"] if c["name"] == "clock")["details"]
    # Same machine, same clock: each offset within its reading's precision (plus rounding).
    assert set(clock["offsets_s"]) == {"m0", "m1", "m2"}
    assert all(
        abs(clock["offsets_s"][m]) <= clock["precision_s"][m] + 0.002 for m in ["m0", "m1", "m2"]
    )

    agents3.cluster.members[2].kill()
    code, out, _ = doctor(*conn)
    found = lines(out)
    assert code == 2, out
    assert found["etcd-health"][0] == "fail" and "m2" in found["etcd-health"][1], out
    assert found["etcd-health"][1].startswith("2/3 members answer"), out
    # The rest still answers through the two members left.
    assert found["etcd-alarms"][0] == "ok" and found["master"][0] == "ok", out


def test_nospace_alarm_and_full_database_are_fail_lines(tmp_path: Path):
    quota = 512 * 1024
    cluster = EtcdCluster(tmp_path / "etcd", 1, extra_args=["--quota-backend-bytes", str(quota)])
    cluster.start()
    try:
        client = EtcdClient(cluster.endpoints)
        value = b"x" * 100_000

        def filled() -> bool:
            try:
                client.put(f"/fill/{uuid.uuid4().hex}", value)
            except NoSpace:
                return True
            return False

        wait_for(filled, 60, interval=0, what="NOSPACE")
        conn = ["--endpoints", cluster.endpoints_csv, "--quota-bytes", str(quota)]
        code, out, _ = doctor(*conn)
        found = lines(out)
        assert code == 2, out
        assert found["etcd-alarms"][0] == "fail" and "NOSPACE" in found["etcd-alarms"][1], out
        assert found["etcd-db-size"][0] == "fail", out
        code, doc = as_json(*conn)
        alarms = next(c for c in doc["checks"] if c["name"] == "etcd-alarms")
        assert (code, doc["status"], alarms["details"]["alarms"]) == (2, "fail", ["NOSPACE"])
    finally:
        cluster.stop_all()


def test_certificates_ending_within_30_days_warn(tmp_path: Path):
    ca = TestCA(tmp_path / "pki")  # its certificates last 2 days
    server, client = ca.issue("server", server=True), ca.issue("doctor")
    cluster = EtcdCluster(tmp_path / "etcd", 1, tls=ServerTLS(ca.cacert, *server, *client))
    cluster.start()
    try:
        conn = ["--endpoints", cluster.endpoints_csv, "--cacert", ca.cacert]
        conn += ["--cert", client[0], "--key", client[1]]
        _, doc = as_json(*conn)
        certificates = next(c for c in doc["checks"] if c["name"] == "certificates")
        assert certificates["status"] == "warn", certificates
        days = certificates["details"]["days_left"]
        # The member's server certificate (from the TLS handshake) and the CLI's own files.
        assert {"etcd m0", f"client certificate {client[0]}", f"CA {ca.cacert}"} <= set(days)
        assert all(1 < d <= 2 for d in days.values()), days
        clock = next(c for c in doc["checks"] if c["name"] == "clock")
        assert clock["status"] == "ok", clock  # over HTTPS with the client certificate
    finally:
        cluster.stop_all()
