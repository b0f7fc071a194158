"""Which filesystem holds a directory, and whether it is ext4 without a journal.

Why the journal matters to a job node: ext4 without one does not reuse an inode freed in the
last minute (six, while the freed inode is not yet written back), and at each file creation
it checks the free inodes one by one, skipping the recent ones. A node that keeps removing
old job directories (the janitor) and creating new ones (every attempt) then pays for each
creation in proportion to what it removed in the last minutes. Measured on the development
VM, whose root is such a filesystem: 2-3 times the CPU per no-op job after a big clean-up
(docs/BENCHMARKS.md). Raspberry Pi OS formats its root with a journal; guides that turn it
off to spare the card bring this back.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class FsInfo:
    fstype: str
    source: str  # the device, e.g. /dev/mmcblk0p2
    journal: bool | None  # ext4 only: whether it journals; None when not ext4 or unknown

    @property
    def ext4_without_journal(self) -> bool:
        return self.fstype == "ext4" and self.journal is False

    def describe(self) -> str:
        if self.fstype != "ext4" or self.journal is None:
            return f"{self.fstype} ({self.source})"
        return f"ext4 ({self.source}) {'with' if self.journal else 'WITHOUT'} a journal"


def mount_of(mountinfo: str, major: int, minor: int) -> tuple[str, str] | None:
    """(fstype, source) of the mount of device major:minor in /proc/self/mountinfo's text."""
    wanted = f"{major}:{minor}"
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) < 3 or fields[2] != wanted or "-" not in fields:
            continue
        after = fields[fields.index("-") + 1 :]
        if len(after) >= 2:
            return after[0], after[1]
    return None


def ext4_journal(source: str, sysfs: Path = Path("/sys/fs/ext4")) -> bool | None:
    """Whether the ext4 filesystem on `source` journals (its journal thread), None if unknown."""
    task = sysfs / Path(source).name / "journal_task"
    try:
        return task.read_text().strip() != "<none>"
    except OSError:
        return None


def filesystem_of(path: Path) -> FsInfo | None:
    """The filesystem holding `path` (which must exist); None when it cannot be told."""
    try:
        dev = os.stat(path).st_dev
        mount = mount_of(Path("/proc/self/mountinfo").read_text(), os.major(dev), os.minor(dev))
    except OSError:
        return None
    if mount is None:
        return None
    fstype, source = mount
    return FsInfo(fstype, source, ext4_journal(source) if fstype == "ext4" else None)
