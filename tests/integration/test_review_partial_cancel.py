"""`picluster cancel A B` when etcd refuses a later request after an earlier one went in,
on a real etcd with TLS and access control. The refusal is made certain here by a user who
may write A's cancel request and not B's; in a cluster it is etcd going away mid-command
(exit 3 says "nothing was accepted") or a refusal of any kind."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from certs import TestCA
from rbac import etcdctl

from picluster_agent.client import Client
from picluster_agent.config import Connection
from picluster_agent.etcd.adapter import EtcdClient, TLSFiles
from picluster_agent.etcd.localcluster import EtcdCluster, ServerTLS

from conftest import picluster

PREFIX = "/pc"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EtcdCluster, TestCA]]:
    base = tmp_path_factory.mktemp("partial-cancel")
    ca = TestCA(base / "pki")
    server_cert, server_key = ca.issue("server", server=True)
    for user in ("root", "pat"):
        ca.issue(user)
    root = (str(ca.dir / "root.crt"), str(ca.dir / "root.key"))
    cluster = EtcdCluster(
        base / "etcd", 1, tls=ServerTLS(ca.cacert, server_cert, server_key, *root)
    )
    cluster.start()
    try:
        for cmd in (
            ["user", "add", "root", "--no-password"],
            ["role", "add", "root"],
            ["user", "grant-role", "root", "root"],
            ["role", "add", "pat"],
            ["role", "grant-permission", "--prefix", "pat", "read", f"{PREFIX}/"],
            ["role", "grant-permission", "pat", "readwrite", f"{PREFIX}/cancel/a"],
            ["user", "add", "pat", "--no-password"],
            ["user", "grant-role", "pat", "pat"],
            ["auth", "enable"],
        ):
            etcdctl(cluster.endpoints_csv, ca.cacert, *root, *cmd)
        admin = Client.from_connection(
            _connection(cluster, ca, "root"), EtcdClient(cluster.endpoints, _tls(ca, "root"))
        )
        for job_id in ("a", "b"):
            admin.submit(["true"], id=job_id)  # no agent: they stay queued
        yield cluster, ca
    finally:
        cluster.stop_all()


def _tls(ca: TestCA, user: str) -> TLSFiles:
    return TLSFiles(ca.cacert, str(ca.dir / f"{user}.crt"), str(ca.dir / f"{user}.key"))


def _connection(cluster: EtcdCluster, ca: TestCA, user: str) -> Connection:
    t = _tls(ca, user)
    return Connection(
        endpoints=tuple(cluster.endpoints), prefix=PREFIX, cacert=t.cacert, cert=t.cert, key=t.key
    )


def _flags(cluster: EtcdCluster, ca: TestCA, user: str) -> list[str]:
    t = _tls(ca, user)
    return ["--endpoints", cluster.endpoints_csv, "--prefix", PREFIX,
            "--cacert", str(t.cacert), "--cert", str(t.cert), "--key", str(t.key)]  # fmt: skip


def test_a_cancel_refused_part_way_names_what_was_requested(world) -> None:
    cluster, ca = world
    flags = _flags(cluster, ca, "pat")
    out = picluster("cancel", *flags, "a", "b")
    # a's request went in: the command says so, and does not claim that nothing changed.
    assert out.returncode == 8, (out.returncode, out.stdout, out.stderr)
    assert out.stdout == "job a: cancel requested (was queued)\n"
    assert len(out.stderr.splitlines()) == 1, out.stderr
    assert "1 of 2" in out.stderr and "permission denied" in out.stderr.lower(), out.stderr
    root = EtcdClient(cluster.endpoints, _tls(ca, "root"))
    assert root.get(f"{PREFIX}/cancel/a") is not None and root.get(f"{PREFIX}/cancel/b") is None
    root.close()
    out = picluster("cancel", *flags, "-o", "json", "a", "b")
    assert out.returncode == 8
    assert json.loads(out.stdout) == [{"id": "a", "was": "queued", "requested": True}]


def test_a_cancel_refused_at_once_changed_nothing(world) -> None:
    cluster, ca = world
    flags = _flags(cluster, ca, "pat")
    out = picluster("cancel", *flags, "b", "a")
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)  # refused: as before
    assert out.stdout == "" and len(out.stderr.splitlines()) == 1
