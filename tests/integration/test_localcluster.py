"""The local cluster's etcd members: stand-ins for separate nodes sharing one machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from picluster_agent.etcd.localcluster import EtcdCluster, EtcdMember


def _environ(member: EtcdMember) -> list[bytes]:
    assert member.proc is not None
    return Path(f"/proc/{member.proc.pid}/environ").read_bytes().split(b"\0")


def test_each_member_gets_one_go_scheduler_thread(etcd3: EtcdCluster) -> None:
    for member in etcd3.members:
        assert b"GOMAXPROCS=1" in _environ(member), member.name


def test_gomaxprocs_from_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOMAXPROCS", "2")
    cluster = EtcdCluster(tmp_path / "etcd", 1).start()
    try:
        assert b"GOMAXPROCS=2" in _environ(cluster.members[0])
    finally:
        cluster.stop_all()


def test_no_two_members_are_given_the_same_port(tmp_path: Path) -> None:
    """Ports are chosen before any member binds them: one closed at once may be chosen again
    (seen once: the demo's m1 and m2 given one peer port, so etcd refused to start; here,
    with 800 ports chosen, the old way repeats some every time)."""
    cluster = EtcdCluster(tmp_path / "etcd", 400)  # never started
    ports = [p for m in cluster.members for p in (m.client_port, m.peer_port)]
    assert len(set(ports)) == len(ports)
