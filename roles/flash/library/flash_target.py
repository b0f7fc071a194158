#!/usr/bin/python
"""Inspect a flash target and say whether writing to it is safe. Writes nothing."""

from __future__ import annotations

import json
import os
import stat
import subprocess

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: flash_target
short_description: Inspect a flash target (block device or image file) and refuse unsafe ones
description:
  - Reads only: C(stat), C(/proc/self/mountinfo), C(/proc/swaps), C(/sys/dev/block) and
    C(sfdisk --json). Never opens the target for writing.
  - Returns C(refusal), one sentence, empty when the target may be written.
  - Refuses the disk (or any partition or holder of the disk) that holds C(/) or C(/boot),
    anything mounted or used as swap, a partition instead of a whole disk, a block device
    without I(confirmed), a block device with no medium, a regular file whose name does not
    end in C(.img), an existing C(.img) file without a partition table, an image file attached
    to a loop device, and anything else that is neither a block device nor an image path.
options:
  path:
    description: The target, a block device (C(/dev/sdb)) or an image file path.
    type: path
    required: true
  confirmed:
    description: The user confirmed that this block device may be overwritten.
    type: bool
    default: false
  source:
    description: The source image, refused as a target.
    type: path
  allow_missing_parent:
    description: An image path whose directory does not exist yet is fine (it will be made).
    type: bool
    default: false
author: picluster
"""

RETURN = r"""
kind:
  description: block, file, missing or other.
  type: str
  returned: always
refusal:
  description: Why the target must not be written; empty when it may be.
  type: str
  returned: always
mountpoints:
  description: Where the target or its partitions are mounted.
  type: list
  returned: always
bytes:
  description: Size in bytes (0 when unknown, missing, or refused).
  type: int
  returned: always
euid:
  description: Effective user id the check ran as (root needs no become for devices).
  type: int
  returned: always
"""

SYSTEM_MOUNTS = ("/", "/boot", "/boot/firmware", "/usr", "/var")


def parse_mountinfo(text: str) -> list[dict]:
    """Entries of /proc/self/mountinfo: majmin, mountpoint, source."""
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if not sep or len(fields) < 5:
            continue
        rest = right.split()
        mounts.append(
            {
                "majmin": fields[2],
                "mountpoint": fields[4].replace("\\040", " "),
                "source": rest[1] if len(rest) > 1 else "",
            }
        )
    return mounts


def parse_swaps(text: str) -> list[str]:
    return [line.split()[0] for line in text.splitlines()[1:] if line.strip()]


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError:
        return ""


class BlockTree:
    """The block device graph under a sysfs root (/sys in production, a fake tree in tests)."""

    def __init__(self, sys_root: str = "/sys"):
        self.sys_root = sys_root

    def node(self, majmin: str) -> str:
        """The sysfs directory of device MAJ:MIN, '' when unknown."""
        link = os.path.join(self.sys_root, "dev", "block", majmin)
        return os.path.realpath(link) if os.path.exists(link) else ""

    def by_name(self, name: str) -> str:
        path = os.path.join(self.sys_root, "class", "block", name)
        return os.path.realpath(path) if os.path.exists(path) else ""

    @staticmethod
    def is_partition(node: str) -> bool:
        return os.path.exists(os.path.join(node, "partition"))

    def disk_of(self, node: str) -> str:
        return os.path.dirname(node) if self.is_partition(node) else node

    def underlying_disks(self, node: str, depth: int = 0) -> set[str]:
        """Whole disks below a device, following device-mapper/md slaves."""
        slaves_dir = os.path.join(node, "slaves")
        slaves = os.listdir(slaves_dir) if os.path.isdir(slaves_dir) else []
        if not slaves or depth > 16:
            return {self.disk_of(node)}
        found: set[str] = set()
        for name in slaves:
            child = self.by_name(name)
            if child:
                found |= self.underlying_disks(child, depth + 1)
        return found

    def family(self, disk: str, depth: int = 0) -> set[str]:
        """A device, its partitions and everything stacked on them (holders), as sysfs nodes."""
        nodes = {disk}
        if os.path.isdir(disk):
            for entry in os.listdir(disk):
                child = os.path.join(disk, entry)
                if os.path.exists(os.path.join(child, "partition")):
                    nodes.add(os.path.realpath(child))
        for node in list(nodes):
            holders_dir = os.path.join(node, "holders")
            if depth < 16 and os.path.isdir(holders_dir):
                for name in os.listdir(holders_dir):
                    holder = self.by_name(name)
                    if holder:
                        nodes |= self.family(holder, depth + 1)
        return nodes

    def majmin(self, node: str) -> str:
        return _read(os.path.join(node, "dev"))

    def size(self, node: str) -> int:
        sectors = _read(os.path.join(node, "size"))
        return int(sectors) * 512 if sectors.isdigit() else 0


def assess_block(
    path: str,
    rdev_majmin: str,
    tree: BlockTree,
    mounts: list[dict],
    swaps: list[str],
    confirmed: bool,
    realpath=os.path.realpath,
) -> tuple[str, list[str], int]:
    """(refusal, mountpoints, size) for a block device. Order: worst danger first."""
    node = tree.node(rdev_majmin)
    if not node:
        return f"{path}: block device {rdev_majmin} is not known to the kernel", [], 0
    disk = tree.disk_of(node)
    family = tree.family(disk)
    family_majmin = {tree.majmin(n) for n in family}
    family_names = {"/dev/" + os.path.basename(n) for n in family}

    def on_target(majmin: str, source: str) -> bool:
        if majmin in family_majmin:
            return True
        return source.startswith("/dev/") and realpath(source) in family_names

    for mount in mounts:
        if mount["mountpoint"] in SYSTEM_MOUNTS:
            sys_node = tree.node(mount["majmin"])
            sys_disks = tree.underlying_disks(sys_node) if sys_node else set()
            if disk in sys_disks or on_target(mount["majmin"], mount["source"]):
                return (
                    f"{path} is the system disk (it holds {mount['mountpoint']}): refusing to "
                    "overwrite it",
                    [],
                    0,
                )
    mountpoints = sorted({m["mountpoint"] for m in mounts if on_target(m["majmin"], m["source"])})
    if mountpoints:
        return (
            f"{path} is mounted (at {', '.join(mountpoints)}): unmount it first",
            mountpoints,
            0,
        )
    swapping = [s for s in swaps if realpath(s) in family_names]
    if swapping:
        return f"{path} is in use as swap ({', '.join(swapping)}): swapoff it first", [], 0
    if tree.is_partition(node):
        return (
            f"{path} is a partition: give the whole card (e.g. /dev/{os.path.basename(disk)})",
            [],
            0,
        )
    if not confirmed:
        return (
            f"{path} is a block device: everything on it will be erased. Re-run with "
            "-e flash_confirm=yes to write it",
            [],
            0,
        )
    size = tree.size(node)
    if size == 0:
        return f"{path} has no medium (size 0): insert the card", [], 0
    return "", [], size


def loop_backing(sys_root: str, image: str) -> str:
    """The loop device an image file is attached to, '' if none."""
    base = os.path.join(sys_root, "block")
    if not os.path.isdir(base):
        return ""
    for name in sorted(os.listdir(base)):
        backing = _read(os.path.join(base, name, "loop", "backing_file"))
        if backing and os.path.realpath(backing) == image:
            return "/dev/" + name
    return ""


def has_partition_table(path: str) -> bool:
    try:
        out = subprocess.run(
            ["sfdisk", "--json", path], capture_output=True, text=True, check=False
        )
    except OSError:
        return False
    if out.returncode != 0:
        return False
    try:
        return bool(json.loads(out.stdout)["partitiontable"]["partitions"])
    except (ValueError, KeyError, TypeError):
        return False


def assess(params: dict, sys_root: str = "/sys") -> dict:
    path = params["path"]
    real = os.path.realpath(path)
    # Not "path"/"size": AnsibleModule.exit_json would overwrite them with os.stat() of "path".
    result = {
        "target": path,
        "realpath": real,
        "kind": "other",
        "refusal": "",
        "bytes": 0,
        "mountpoints": [],
    }
    source = params.get("source")
    if source and os.path.realpath(source) == real:
        result["refusal"] = f"{path} is the source image itself"
        return result
    if not os.path.lexists(path):
        result["kind"] = "missing"
        if not path.endswith(".img"):
            result["refusal"] = (
                f"{path} does not exist and is not an image path (NAME.img): for a card, give "
                "its device (e.g. /dev/sdb)"
            )
        elif not params.get("allow_missing_parent") and not os.path.isdir(
            os.path.dirname(real) or "."
        ):
            result["refusal"] = f"{path}: directory {os.path.dirname(real)} does not exist"
        return result
    st = os.stat(real)
    if stat.S_ISBLK(st.st_mode):
        result["kind"] = "block"
        majmin = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
        mounts = parse_mountinfo(_read("/proc/self/mountinfo"))
        swaps = parse_swaps(_read("/proc/swaps"))
        refusal, mountpoints, size = assess_block(
            path, majmin, BlockTree(sys_root), mounts, swaps, bool(params.get("confirmed"))
        )
        result.update(refusal=refusal, mountpoints=mountpoints, bytes=size)
        return result
    if stat.S_ISREG(st.st_mode):
        result["kind"] = "file"
        result["bytes"] = st.st_size
        loop = loop_backing(sys_root, real)
        if loop:
            result["refusal"] = f"{path} is attached to {loop}: detach it first"
        elif not real.endswith(".img"):
            result["refusal"] = (
                f"{path} is a regular file that is not an image path (NAME.img): refusing to "
                "overwrite it"
            )
        elif not has_partition_table(real):
            result["refusal"] = (
                f"{path} exists but holds no partition table, so it is not a disk image: "
                "refusing to overwrite it (delete it first if it is yours)"
            )
        return result
    what = "a directory" if stat.S_ISDIR(st.st_mode) else "not a block device or a regular file"
    result["refusal"] = f"{path} is {what}: give a block device or an image path (NAME.img)"
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "confirmed": {"type": "bool", "default": False},
            "source": {"type": "path"},
            "allow_missing_parent": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    module.exit_json(changed=False, euid=os.geteuid(), **assess(module.params))


if __name__ == "__main__":
    main()
