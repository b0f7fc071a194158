"""etcd with TLS and client certificates, as `roles/etcd` sets it up: agents and the CLI."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from picluster_agent.etcd.adapter import EtcdClient, TLSFiles
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


class SlowHandshakes:
    """A loopback proxy to `upstream` that holds the server's first answer (its part of the
    TLS handshake) for `delay` seconds: a member on a loaded machine."""

    def __init__(self, upstream: tuple[str, int], delay: float) -> None:
        self.upstream, self.delay = upstream, delay
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"https://127.0.0.1:{self.server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                down, _ = self.server.accept()
            except OSError:
                return  # closed
            up = socket.create_connection(self.upstream)
            threading.Thread(target=self._pipe, args=(down, up, 0.0), daemon=True).start()
            threading.Thread(target=self._pipe, args=(up, down, self.delay), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket, delay: float) -> None:
        time.sleep(delay)  # the slowness itself, not a wait for something
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            dst.close()

    def close(self) -> None:
        self.server.close()


def test_a_tls_handshake_slower_than_a_tenth_of_a_second_is_waited_for(tls_etcd):
    """The client waits for a slow handshake within the request's deadline. It gave up on
    any connection not ready within 0.1 s (a gRPC option read as the least time one attempt
    to connect may take), so each request to a member slowed by load failed at once with
    "handshaker shutdown" or "Endpoint closing" ("cluster unreachable", exit 3)."""
    cluster, pki = tls_etcd
    member = cluster.members[0]
    proxy = SlowHandshakes(("127.0.0.1", member.client_port), delay=0.5)
    try:
        client = EtcdClient([proxy.url], TLSFiles(pki["cacert"], pki["cert"], pki["key"]))
        client.put("/slow", "handshake")
        assert client.get("/slow").value == b"handshake"
    finally:
        proxy.close()
