"""etcd with TLS and client certificates, as `roles/etcd` sets it up: agents and the CLI."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from picluster_agent.etcd.localcluster import AgentProcess, EtcdCluster, ServerTLS, wait_for


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _make_pki(d: Path) -> dict[str, str]:
    """A CA, a server certificate for 127.0.0.1, and a client certificate, made by openssl."""
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-keyout",
        str(d / "ca.key"),
        "-out",
        str(d / "ca.crt"),
        "-subj",
        "/CN=test-ca",
    )
    for name, ext in (
        ("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
        ("client", "extendedKeyUsage=clientAuth"),
    ):
        _openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(d / f"{name}.key"),
            "-out",
            str(d / f"{name}.csr"),
            "-subj",
            f"/CN={name}",
        )
        (d / f"{name}.ext").write_text(ext + "\n")
        _openssl(
            "x509",
            "-req",
            "-in",
            str(d / f"{name}.csr"),
            "-CA",
            str(d / "ca.crt"),
            "-CAkey",
            str(d / "ca.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            str(d / f"{name}.crt"),
            "-extfile",
            str(d / f"{name}.ext"),
        )
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-keyout", str(d / "other-ca.key"), "-out", str(d / "other-ca.crt"),
             "-subj", "/CN=another-ca")  # fmt: skip
    return {k: str(d / f) for k, f in {
        "cacert": "ca.crt", "cert": "client.crt", "key": "client.key",
        "server_cert": "server.crt", "server_key": "server.key", "other_ca": "other-ca.crt",
    }.items()}  # fmt: skip


@pytest.fixture
def tls_etcd(tmp_path):
    pki_dir = tmp_path / "pki"
    pki_dir.mkdir()
    pki = _make_pki(pki_dir)
    tls = ServerTLS(pki["cacert"], pki["server_cert"], pki["server_key"], pki["cert"], pki["key"])
    cluster = EtcdCluster(tmp_path / "etcd", 1, tls=tls).start()
    yield cluster, pki
    cluster.stop_all()


def test_agent_and_cli_over_tls_with_client_certificates(tls_etcd, tmp_path, cli):
    cluster, pki = tls_etcd
    tls_flags = ["--cacert", pki["cacert"], "--cert", pki["cert"], "--key", pki["key"]]
    agent = AgentProcess(
        "pi1", cluster.endpoints_csv, "/tls", tmp_path / "pi1", extra_args=tls_flags
    ).start()
    try:
        wait_for(lambda: "MASTER" in agent.log_text(), 20, what="agent elected over TLS")
        base = ["--endpoints", cluster.endpoints_csv, "--prefix", "/tls"]
        out = cli("nodes", "-o", "json", *base, *tls_flags)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)[0]["role"] == "master"
        env = {"PICLUSTER_CACERT": pki["cacert"], "PICLUSTER_CERT": pki["cert"],
               "PICLUSTER_KEY": pki["key"]}  # fmt: skip
        job = cli("submit", *base, "--wait", "--", "echo", "over tls", env=env)
        assert job.returncode == 0, job.stderr

        no_cert = cli("nodes", *base, "--cacert", pki["cacert"])
        assert no_cert.returncode in (2, 3) and len(no_cert.stderr.strip().splitlines()) == 1
        wrong_ca = cli(
            "nodes", *base, "--cacert", pki["other_ca"], "--cert", pki["cert"], "--key", pki["key"]
        )
        assert wrong_ca.returncode == 2, wrong_ca.stderr
        assert "TLS" in wrong_ca.stderr and len(wrong_ca.stderr.strip().splitlines()) == 1
    finally:
        agent.terminate()
