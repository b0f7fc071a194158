"""The node's own storage: free space where etcd and the agent write, and wear hints.

Only on the node itself (a laptop has no such directories). SD cards report no wear
at all; eMMC (Compute Modules, some boards) reports life-time estimates in sysfs; ext4
counts the bytes ever written to it, which, set against the card's size, says how hard it
has been used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..node.fsinfo import filesystem_of
from .result import Check, Level

# Where the roles put etcd's data and the agent's job directories (and the root, for logs).
PLACES = ("/var/lib/etcd", "/var/lib/picluster", "/")
WARN_FREE = 0.15
FAIL_FREE = 0.05
# eMMC life_time: 0x01 means 0-10 % of the rated erase cycles used ... 0x0B means exceeded.
EMMC_LIFE_WARN = 0x08  # 70-80 % used
EMMC_PRE_EOL = {1: "normal", 2: "warning (80 % of reserved blocks used)", 3: "urgent"}


@dataclass(frozen=True)
class Space:
    path: str
    free: int
    total: int
    device: str
    written_bytes: int | None  # ext4's lifetime_write_kbytes, when readable

    @property
    def free_ratio(self) -> float:
        return self.free / self.total if self.total else 1.0


def space_of(path: str) -> Space | None:
    if not os.path.isdir(path):
        return None
    st = os.statvfs(path)
    fs = filesystem_of(Path(path))
    device = fs.source if fs else "?"
    written = None
    if fs and fs.fstype == "ext4":
        try:
            name = Path(fs.source).name
            written = int(Path(f"/sys/fs/ext4/{name}/lifetime_write_kbytes").read_text()) * 1024
        except (OSError, ValueError):
            written = None
    return Space(path, st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize, device, written)


def emmc_wear(device: str, sysfs: Path = Path("/sys/class/block")) -> dict[str, str]:
    """life_time and pre_eol_info of an eMMC (empty for SD cards and other disks)."""
    name = Path(device).name
    disk = name.split("p")[0] if name.startswith("mmcblk") else name
    base = sysfs / disk / "device"
    out: dict[str, str] = {}
    for item in ("life_time", "pre_eol_info", "type"):
        try:
            out[item] = (base / item).read_text().strip()
        except OSError:
            continue
    return out


def card_check(places: tuple[str, ...] = PLACES) -> Check:
    spaces: dict[str, Space] = {}
    for p in places:
        s = space_of(p)
        if s is not None and s.device not in {x.device for x in spaces.values()}:
            spaces[p] = s
    if not spaces:
        return Check("card", Level.OK, "not on a node: nothing to check here")
    worst = min(spaces.values(), key=lambda s: s.free_ratio)
    level = Level.OK
    if worst.free_ratio < FAIL_FREE:
        level = Level.FAIL
    elif worst.free_ratio < WARN_FREE:
        level = Level.WARN
    parts = [
        f"{s.path} {s.free_ratio:.0%} free of {s.total / 2**30:.1f} GiB" for s in spaces.values()
    ]
    details: dict[str, object] = {
        "filesystems": {
            s.path: {
                "device": s.device,
                "free_bytes": s.free,
                "total_bytes": s.total,
                "lifetime_written_bytes": s.written_bytes,
            }
            for s in spaces.values()
        }
    }
    wear = emmc_wear(worst.device)
    if wear:
        details["emmc"] = wear
        life = [int(v, 16) for v in wear.get("life_time", "").split() if v.startswith("0x")]
        eol = int(wear.get("pre_eol_info", "0x0"), 16)
        parts.append(
            f"eMMC life used {wear.get('life_time', '?')}, pre-EOL {EMMC_PRE_EOL.get(eol, '?')}"
        )
        if (life and max(life) >= EMMC_LIFE_WARN) or eol >= 2:
            level = max(level, Level.WARN)
    else:
        parts.append("no wear data (SD cards report none)")
    written = [s for s in spaces.values() if s.written_bytes]
    if written:
        parts.append(
            "written so far: "
            + ", ".join(f"{s.path} {s.written_bytes / 2**30:.0f} GiB" for s in written)  # type: ignore[operator]
        )
    return Check("card", level, "; ".join(parts), details)
