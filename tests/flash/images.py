"""Tiny synthetic Raspberry Pi OS / Ubuntu images, built without root or loop devices.

Layout like the real images: an MBR (DOS) table, a FAT32 boot partition starting at 4 MiB
with the files the real boot partition has, and an ext4 root partition. 64 MiB, sparse.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

SECTOR = 512
BOOT_START = 8192  # sectors: 4 MiB, as on Raspberry Pi OS
BOOT_SECTORS = 81920  # 40 MiB: the smallest comfortable FAT32 with 512-byte clusters
ROOT_START = BOOT_START + BOOT_SECTORS
IMAGE_BYTES = 64 * 1024 * 1024
DISK_ID = "0x5e1f10a7"
# A syntactically valid key; nothing ever logs in with it.
SSH_KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ7rV9pD0Q1m0FwC5p2o8e3n3vL9m0Kq8a1b2c3d4e5f admin@laptop"
)
MTOOLS_ENV = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}

COMMENTED_CLOUD_INIT = {
    "user-data": "#cloud-config\n# This is the user-data configuration file for cloud-init.\n"
    "# hostname: raspberrypi\n",
    "network-config": "# This file contains a netplan-compatible configuration.\n"
    "#network:\n#  version: 2\n",
    "meta-data": "# This is the meta-data configuration file for cloud-init.\n"
    "#instance-id: rpi-image\n",
}

FORMATS = {
    "bookworm": {
        "label": "bootfs",
        "cmdline": "console=serial0,115200 console=tty1 root=PARTUUID=5e1f10a7-02 "
        "rootfstype=ext4 fsck.repair=yes rootwait quiet "
        "init=/usr/lib/raspberrypi-sys-mods/firstboot",
        "files": {"issue.txt": "Raspberry Pi reference 2024-11-19\n"},
    },
    "trixie": {
        "label": "bootfs",
        "cmdline": "console=serial0,115200 console=tty1 root=PARTUUID=5e1f10a7-02 "
        "rootfstype=ext4 fsck.repair=yes rootwait resize",
        "files": {"issue.txt": "Raspberry Pi reference 2025-11-24\n", **COMMENTED_CLOUD_INIT},
    },
    "ubuntu": {
        "label": "system-boot",
        "cmdline": "console=serial0,115200 multipath=off dwc_otg.lpm_enable=0 console=tty1 "
        "root=LABEL=writable rootfstype=ext4 rootwait fixrtc",
        "files": {"README": "Ubuntu Server for Raspberry Pi\n", **COMMENTED_CLOUD_INIT},
    },
}


@dataclass
class Image:
    path: Path
    fmt: str
    sha256: str

    @property
    def boot_offset(self) -> int:
        return BOOT_START * SECTOR


def run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=True, capture_output=True, env=MTOOLS_ENV, **kwargs)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_image(path: Path, fmt: str) -> Path:
    """A raw image of format `fmt` at `path`."""
    spec = FORMATS[fmt]
    with open(path, "wb") as handle:
        handle.truncate(IMAGE_BYTES)
    table = (
        f"label: dos\nlabel-id: {DISK_ID}\n"
        f"start={BOOT_START}, size={BOOT_SECTORS}, type=c\n"
        f"start={ROOT_START}, type=83\n"
    )
    run(["sfdisk", "--quiet", str(path)], input=table.encode())
    run(
        [
            "mkfs.vfat",
            "-F",
            "32",
            "-s",
            "1",
            "-n",
            spec["label"].upper()[:11],
            "--offset",
            str(BOOT_START),
            str(path),
            str(BOOT_SECTORS // 2),
        ]
    )
    root_kib = (IMAGE_BYTES // SECTOR - ROOT_START) // 2
    run(
        [
            "mkfs.ext4",
            "-q",
            "-F",
            "-L",
            "rootfs",
            "-E",
            f"offset={ROOT_START * SECTOR}",
            str(path),
            f"{root_kib}k",
        ]
    )
    files = {
        "cmdline.txt": spec["cmdline"] + "\n",
        "config.txt": "# For more options see https://rpf.io/configtxt\n"
        "dtparam=audio=on\narm_64bit=1\n[all]\n",
        "kernel8.img": "not a kernel\n",
        "bcm2711-rpi-4-b.dtb": "not a device tree\n",
        **spec["files"],
    }
    target = f"{path}@@{BOOT_START * SECTOR}"
    for name, content in files.items():
        src = path.parent / f".{path.name}.{name}"
        src.write_text(content)
        run(["mcopy", "-i", target, str(src), f"::/{name}"])
        src.unlink()
    if fmt == "ubuntu":
        # Ubuntu's boot partition is labelled in lower case.
        run(["mlabel", "-i", target, "::system-boot"])
    return path


def compress_xz(path: Path) -> Path:
    out = path.with_name(path.name + ".xz")
    with open(path, "rb") as src, lzma.open(out, "wb", preset=0) as dst:
        for block in iter(lambda: src.read(1 << 20), b""):
            dst.write(block)
    return out


def read_boot_file(image: Path, name: str) -> str | None:
    proc = subprocess.run(
        ["mtype", "-i", f"{image}@@{BOOT_START * SECTOR}", f"::/{name}"],
        capture_output=True,
        env=MTOOLS_ENV,
        check=False,
    )
    return proc.stdout.decode() if proc.returncode == 0 else None


def boot_files(image: Path) -> list[str]:
    out = run(["mdir", "-b", "-i", f"{image}@@{BOOT_START * SECTOR}", "::/"]).stdout.decode()
    return sorted(line.strip().removeprefix("::/") for line in out.splitlines() if line.strip())


def boot_label(image: Path) -> str:
    out = run(["mlabel", "-s", "-i", f"{image}@@{BOOT_START * SECTOR}", "::"]).stdout.decode()
    return out.strip().removeprefix("Volume label is").strip()


def partitions(image: Path) -> list[tuple[int, int, str]]:
    """(start, size, type) of each partition in the table."""
    table = json.loads(run(["sfdisk", "--json", str(image)]).stdout)["partitiontable"]
    return [(p["start"], p["size"], p["type"]) for p in table["partitions"]]


def region_sha256(image: Path, start: int, length: int | None = None) -> str:
    digest = hashlib.sha256()
    with open(image, "rb") as handle:
        handle.seek(start)
        remaining = length
        while remaining is None or remaining > 0:
            block = handle.read(1 << 20 if remaining is None else min(1 << 20, remaining))
            if not block:
                break
            digest.update(block)
            if remaining is not None:
                remaining -= len(block)
    return digest.hexdigest()


def root_partition_sha256(image: Path) -> str:
    return region_sha256(image, ROOT_START * SECTOR)
