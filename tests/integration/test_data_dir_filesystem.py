"""The agent warns when its data dir is on ext4 without a journal (see picluster_agent.node.fsinfo).

Both kinds of ext4 are real: small images on loop devices (needs root, as the flash tests do).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from picluster_agent.etcd.localcluster import AgentProcess, EtcdCluster, wait_for
from picluster_agent.node.fsinfo import filesystem_of

WARNING = "skips every inode freed in the last minutes"


@pytest.fixture
def ext4(tmp_path: Path) -> Iterator[Callable[[bool], Path]]:
    """Mounts a fresh 32 MiB ext4, with or without a journal; unmounts them all at the end."""
    mounted: list[Path] = []

    def make(journal: bool) -> Path:
        name = "journal" if journal else "nojournal"
        image, mount_point = tmp_path / f"{name}.img", tmp_path / name
        with open(image, "wb") as handle:
            handle.truncate(32 * 1024 * 1024)
        features = "has_journal" if journal else "^has_journal"
        subprocess.run(["mkfs.ext4", "-q", "-F", "-O", features, str(image)], check=True)
        mount_point.mkdir()
        subprocess.run(["mount", "-o", "loop", str(image), str(mount_point)], check=True)
        mounted.append(mount_point)
        return mount_point

    yield make
    for mount_point in mounted:
        # A container started meanwhile (Molecule, on the same machine) copies the mount
        # into its namespace, and a plain umount then says "busy": detach it lazily, the
        # loop device goes with the last namespace that holds it.
        if subprocess.run(["umount", str(mount_point)], check=False).returncode != 0:
            subprocess.run(["umount", "--lazy", str(mount_point)], check=True)


def _started_log(agent: AgentProcess) -> str:
    agent.start()
    try:
        wait_for(lambda: "registered as" in agent.log_text(), 15, what="registration")
        return agent.log_text()
    finally:
        agent.terminate()


def test_warning_on_ext4_without_a_journal(
    etcd1: EtcdCluster, prefix: str, ext4: Callable[[bool], Path]
) -> None:
    mount_point = ext4(False)
    info = filesystem_of(mount_point)
    assert info is not None and info.ext4_without_journal, info
    text = _started_log(AgentProcess("bare", etcd1.endpoints_csv, prefix, mount_point / "data"))
    assert WARNING in text
    assert f"tune2fs -O has_journal {info.source}" in text


def test_no_warning_on_ext4_with_a_journal(
    etcd1: EtcdCluster, prefix: str, ext4: Callable[[bool], Path]
) -> None:
    mount_point = ext4(True)
    info = filesystem_of(mount_point)
    assert info is not None and info.fstype == "ext4" and info.journal is True, info
    text = _started_log(AgentProcess("card", etcd1.endpoints_csv, prefix, mount_point / "data"))
    assert "registered as" in text and WARNING not in text


def test_no_warning_on_tmpfs(etcd1: EtcdCluster, prefix: str) -> None:
    base = Path(tempfile.mkdtemp(dir="/dev/shm"))
    try:
        text = _started_log(AgentProcess("shm", etcd1.endpoints_csv, prefix, base / "data"))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    assert "registered as" in text and WARNING not in text
