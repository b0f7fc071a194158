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
