"""The block-device path, end to end, on a loop device backed by a file in tmp_path.

Same code as for an SD card: safety checks on the device, dd with conv=fsync, then mtools on
/dev/loopN@@OFFSET. No real disk is involved: the loop device's backing file is the test's.
Needs root (losetup), which the test machines and CI have.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from . import images


@pytest.fixture
def loop_device(tmp_path, request):
    """A loop device over a file (64 MiB unless the test asks otherwise) holding old data."""
    backing = tmp_path / "card.img"
    with open(backing, "wb") as handle:
        handle.truncate(getattr(request, "param", images.IMAGE_BYTES))
    subprocess.run(["mkfs.ext4", "-q", "-F", str(backing)], check=True)
    device = subprocess.run(
        ["losetup", "--find", "--show", str(backing)], capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        yield Path(device), backing
    finally:
        subprocess.run(["losetup", "-d", device], check=False)


def test_write_a_card(source_images, flash, tmp_path, ssh_key_file, loop_device):
    device, backing = loop_device
    src = source_images["bookworm.xz"]
    inventory = {"all": {"hosts": {"card1": {"flash_device": str(device)}}}}
    extra = {
        "flash_image": str(src.path),
        "flash_image_sha256": src.sha256,
        "flash_ssh_public_key": str(ssh_key_file),
        "flash_confirm": "yes",
    }
    # While attached, the backing file itself is refused as a target.
    attached = flash({"all": {"hosts": {"card1": {"flash_device": str(backing)}}}}, **extra)
    assert attached.rc != 0
    assert f"{backing} is attached to {device}: detach it first" in attached.output

    run = flash(inventory, **extra)
    assert run.rc == 0, run.output
    assert run.recap["card1"]["changed"] >= 2  # the write and the boot files

    os.sync()
    raw = source_images["bookworm"].path
    assert images.partitions(backing) == images.partitions(raw)
    assert images.root_partition_sha256(backing) == images.root_partition_sha256(raw)
    assert "NEW_HOSTNAME='card1'" in images.read_boot_file(backing, "firstrun.sh")
    assert "systemd.run=/boot/firmware/firstrun.sh" in images.read_boot_file(backing, "cmdline.txt")
    # The same checks pass on the device node itself (mtools at an offset on a block device).
    copy = tmp_path / "readback.img"
    shutil.copyfile(device, copy)
    assert images.read_boot_file(copy, "cmdline.txt") == images.read_boot_file(
        backing, "cmdline.txt"
    )


@pytest.mark.parametrize("loop_device", [16 * 1024 * 1024], indirect=True)
def test_card_too_small(source_images, flash, ssh_key_file, loop_device):
    device, backing = loop_device
    before = images.sha256_file(backing)
    src = source_images["bookworm.xz"]
    run = flash(
        {"all": {"hosts": {"card1": {"flash_device": str(device)}}}},
        flash_image=str(src.path),
        flash_image_sha256=src.sha256,
        flash_ssh_public_key=str(ssh_key_file),
        flash_confirm=True,
    )
    assert run.rc != 0
    assert (
        f"{device} holds {16 * 1024 * 1024} bytes, the image needs {images.IMAGE_BYTES}. "
        "Nothing was written." in run.output
    )
    assert "TASK [flash : Write the image]" not in run.output
    assert images.sha256_file(backing) == before
