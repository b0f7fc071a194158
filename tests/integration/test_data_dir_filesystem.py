"""The agent warns when its data dir is on ext4 without a journal (see picluster_agent.fsinfo)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from picluster_agent.fsinfo import filesystem_of
from picluster_agent.localcluster import AgentProcess, EtcdCluster, wait_for

WARNING = "skips every inode freed in the last minutes"


def _started_log(agent: AgentProcess) -> str:
    agent.start()
    try:
        wait_for(lambda: "registered as" in agent.log_text(), 15, what="registration")
        return agent.log_text()
    finally:
        agent.terminate()


def test_warning_follows_the_data_dirs_filesystem(
    etcd1: EtcdCluster, prefix: str, tmp_path: Path
) -> None:
    # tmp_path is on this machine's disk: the standard VM's root is ext4 without a journal.
    info = filesystem_of(tmp_path)
    assert info is not None
    text = _started_log(AgentProcess("disk", etcd1.endpoints_csv, prefix, tmp_path / "disk"))
    assert (WARNING in text) == info.ext4_without_journal, info.describe()
    if info.ext4_without_journal:
        assert f"tune2fs -O has_journal {info.source}" in text


def test_no_warning_on_tmpfs(etcd1: EtcdCluster, prefix: str) -> None:
    base = Path(tempfile.mkdtemp(dir="/dev/shm"))
    try:
        text = _started_log(AgentProcess("shm", etcd1.endpoints_csv, prefix, base / "data"))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    assert WARNING not in text
