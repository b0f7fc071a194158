"""Telling ext4 without a journal from the rest (pure parsing; sysfs is a temp dir here)."""

from __future__ import annotations

from pathlib import Path

from picluster_agent.node.fsinfo import FsInfo, ext4_journal, filesystem_of, mount_of

MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
25 24 0:23 / /dev/shm rw,relatime - tmpfs tmpfs rw,size=24684092k
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
43 27 7:0 / /mnt/card rw,relatime shared:5 - ext4 /dev/loop0 rw
"""


def test_mount_of_finds_the_device_line_with_or_without_optional_fields() -> None:
    assert mount_of(MOUNTINFO, 254, 0) == ("ext4", "/dev/vda")
    assert mount_of(MOUNTINFO, 7, 0) == ("ext4", "/dev/loop0")  # "shared:5" before "-"
    assert mount_of(MOUNTINFO, 0, 23) == ("tmpfs", "tmpfs")
    assert mount_of(MOUNTINFO, 8, 1) is None


def test_ext4_journal_reads_the_journal_thread(tmp_path: Path) -> None:
    (tmp_path / "vda").mkdir()
    (tmp_path / "vda" / "journal_task").write_text("<none>\n")
    (tmp_path / "mmcblk0p2").mkdir()
    (tmp_path / "mmcblk0p2" / "journal_task").write_text("412\n")
    assert ext4_journal("/dev/vda", tmp_path) is False
    assert ext4_journal("/dev/mmcblk0p2", tmp_path) is True
    assert ext4_journal("/dev/sdz9", tmp_path) is None


def test_only_ext4_without_a_journal_is_flagged() -> None:
    assert FsInfo("ext4", "/dev/vda", False).ext4_without_journal
    assert "WITHOUT a journal" in FsInfo("ext4", "/dev/vda", False).describe()
    assert not FsInfo("ext4", "/dev/mmcblk0p2", True).ext4_without_journal
    assert not FsInfo("ext4", "/dev/x", None).ext4_without_journal
    assert not FsInfo("tmpfs", "tmpfs", None).ext4_without_journal
    assert FsInfo("tmpfs", "tmpfs", None).describe() == "tmpfs (tmpfs)"


def test_filesystem_of_this_machines_proc_is_proc() -> None:
    info = filesystem_of(Path("/proc/self"))
    assert info is not None and info.fstype == "proc"
