"""Refusals: each one stops the play with one clear message, and not one byte is written.

"Not one byte written" is proven on what the test can see: the output image is not created,
an existing target keeps its checksum and its modification time, and the play never reaches
the write task. The system-disk and block-device cases use the machine's real devices, which
are only inspected (stat, sysfs, mountinfo), never opened for writing.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from . import images
from .conftest import run_playbook

WRITE_TASK = "TASK [flash : Write the image]"


def fingerprint(path: Path) -> tuple:
    st = os.stat(path)
    digest = images.sha256_file(path) if path.is_file() else None
    return (st.st_mtime_ns, st.st_size, digest)


def assert_refused(run, message: str) -> None:
    assert run.rc != 0, run.output
    assert message in run.output, run.output
    assert "Nothing was written." in run.output
    assert WRITE_TASK not in run.output


@pytest.fixture
def base(source_images, tmp_path, ssh_key_file) -> dict:
    src = source_images["bookworm"]
    return {
        "flash_image": str(src.path),
        "flash_image_sha256": src.sha256,
        "flash_output_dir": str(tmp_path / "out"),
        "flash_ssh_public_key": str(ssh_key_file),
    }


def one_host(**host_vars) -> dict:
    return {"all": {"hosts": {"pi1": host_vars}}}


def no_output(tmp_path: Path) -> bool:
    out = tmp_path / "out"
    return not out.exists() or not any(out.iterdir())


def test_wrong_checksum(flash, base, tmp_path):
    run = flash(one_host(), **{**base, "flash_image_sha256": "ab" * 32})
    assert_refused(run, f"sha256 mismatch for {base['flash_image']}: expected {'ab' * 32}")
    assert no_output(tmp_path)
    assert not (tmp_path / "flashed.yml").exists()


def test_checksum_file_without_the_image(flash, base, tmp_path):
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(f"{'cd' * 32}  some-other.img.xz\n{'ef' * 32}  another.img.xz\n")
    run = flash(one_host(), **{**base, "flash_image_sha256": str(sums)})
    assert_refused(run, f"holds no sha256 for {Path(base['flash_image']).name}")
    assert no_output(tmp_path)


def test_missing_checksum_file(flash, base, tmp_path):
    run = flash(one_host(), **{**base, "flash_image_sha256": str(tmp_path / "nope.sha256")})
    assert_refused(run, "is neither 64 hex digits, nor a URL, nor an existing")
    assert no_output(tmp_path)


def test_missing_ssh_key(flash, base, tmp_path):
    missing = tmp_path / "nobody.pub"
    run = flash(one_host(), **{**base, "flash_ssh_public_key": str(missing)})
    assert_refused(run, f"SSH public key {missing} not found")
    assert no_output(tmp_path)


def test_not_a_public_key(flash, base, tmp_path):
    private = tmp_path / "id_ed25519"
    private.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nxxxx\n")
    run = flash(one_host(), **{**base, "flash_ssh_public_key": str(private)})
    assert_refused(run, "is not an OpenSSH public key")
    assert no_output(tmp_path)


def test_system_disk(flash, base, tmp_path):
    """flash_device = the device holding / (read from findmnt), even with confirmation."""
    source = subprocess.run(
        ["findmnt", "-n", "-o", "SOURCE", "/"], capture_output=True, text=True, check=True
    ).stdout.strip()
    device = Path(source)
    before = os.stat(device) if device.exists() else None
    run = flash(one_host(flash_device=source), **{**base, "flash_confirm": True})
    if device.is_block_device():
        assert_refused(run, f"{source} is the system disk (it holds /)")
        assert os.stat(device).st_mtime_ns == before.st_mtime_ns
    else:  # / on overlay or tmpfs (a container): not a block device at all
        assert_refused(run, source)


def test_disk_holding_the_root_partition(flash, base):
    """The whole disk under the root partition (or the root disk itself) is refused."""
    source = subprocess.run(
        ["findmnt", "-n", "-o", "SOURCE", "/"], capture_output=True, text=True, check=True
    ).stdout.strip()
    disk = subprocess.run(
        ["lsblk", "-n", "-d", "-o", "PKNAME", source],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    target = f"/dev/{disk}" if disk else source  # / on a whole disk: that disk itself
    run = flash(one_host(flash_device=target), **{**base, "flash_confirm": True})
    assert_refused(run, "is the system disk (it holds /)")


def test_mounted_path(flash, base):
    """A mount point (a directory) is neither a block device nor an image path."""
    run = flash(one_host(flash_device="/proc"), **base)
    assert_refused(run, "/proc is a directory: give a block device or an image path")


def test_regular_file_that_is_not_an_image(flash, base, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("precious\n")
    before = fingerprint(notes)
    run = flash(one_host(flash_device=str(notes)), **base)
    assert_refused(run, "is a regular file that is not an image path")
    assert fingerprint(notes) == before


def test_img_file_without_partition_table(flash, base, tmp_path):
    data = tmp_path / "backup.img"
    data.write_bytes(os.urandom(1 << 16))
    before = fingerprint(data)
    run = flash(one_host(flash_device=str(data)), **base)
    assert_refused(run, "holds no partition table, so it is not a disk image")
    assert fingerprint(data) == before


def test_character_device(flash, base):
    run = flash(one_host(flash_device="/dev/null"), **base)
    assert_refused(run, "/dev/null is not a block device or a regular file")


def _free_loop_device() -> str:
    """An unattached loop device: a real block device with no medium."""
    for name in sorted(os.listdir("/sys/block")):
        if not name.startswith("loop"):
            continue
        size = Path(f"/sys/block/{name}/size").read_text().strip()
        if size == "0" and not Path(f"/sys/block/{name}/loop/backing_file").exists():
            return f"/dev/{name}"
    raise AssertionError("no unattached loop device on this machine (modprobe loop)")


def test_block_device_needs_confirmation(flash, base):
    device = _free_loop_device()
    before = os.stat(device).st_mtime_ns
    run = flash(one_host(flash_device=device), **base)
    assert_refused(
        run,
        f"{device} is a block device: everything on it will be erased. "
        "Re-run with -e flash_confirm=yes",
    )
    confirmed = flash(one_host(flash_device=device), **{**base, "flash_confirm": "yes"})
    assert_refused(confirmed, f"{device} has no medium (size 0)")
    assert os.stat(device).st_mtime_ns == before


def test_two_hosts_one_target(flash, base, tmp_path):
    target = str(tmp_path / "same.img")
    inventory = {
        "all": {"hosts": {"pi1": {"flash_device": target}, "pi2": {"flash_device": target}}}
    }
    run = flash(inventory, **base)
    assert_refused(run, "Two hosts would be written to the same target")
    assert not Path(target).exists()


def test_bad_wifi_settings(flash, base, tmp_path):
    run = flash(
        one_host(flash_wifi_ssid="lab", flash_wifi_passphrase="short", flash_wifi_country="GB"),
        **base,
    )
    assert_refused(run, "flash_wifi_passphrase (8 to 63 characters")
    assert no_output(tmp_path)


def test_bad_static_address(flash, base, tmp_path):
    run = flash(one_host(flash_address="192.168.1.0/24"), **base)
    assert_refused(run, "192.168.1.0/24 is not a usable host address")
    assert no_output(tmp_path)


def test_user_name_with_a_final_newline(flash, base, tmp_path):
    """A regex '$' also matches before a final newline: "pi\\n" would split userconf.txt."""
    run = flash(one_host(flash_user="pi\n"), **base)
    assert_refused(run, "or user pi\\n (a lowercase letter")
    assert no_output(tmp_path)


def test_no_target(flash, base, tmp_path):
    run = flash(one_host(), **{**base, "flash_output_dir": ""})
    assert_refused(run, "pi1: no target")


# --- Values that would reach a root shell or a config file on the card -----------------------
# One play with one bad value per host: every host fails in the same check, so one run shows
# each refusal (any_errors_fatal stops the play there, before any target is looked at).
HEX_PSK = "ab" * 32
UNSAFE_VALUES = {
    # /etc/default/keyboard is sourced by sh at every boot.
    "kb-layout": (
        "flash_keyboard_layout",
        {"flash_keyboard_layout": 'gb"; $(reboot)"'},
        "is not an XKB layout",
    ),
    "kb-model": (
        "flash_keyboard_model",
        {"flash_keyboard_model": "pc105\nXKBOPTIONS=x"},
        "is not an XKB model",
    ),
    "locale": ("flash_locale", {"flash_locale": "en_GB.UTF-8 $(reboot)"}, "is not a UTF-8 locale"),
    "timezone": ("flash_timezone", {"flash_timezone": "../../../etc/shadow"}, "is not a time zone"),
    "interface": (
        "flash_interface",
        {"flash_interface": "eth0\nmethod=manual"},
        "is not an interface name",
    ),
    "groups": (
        "flash_user_groups",
        {"flash_user_groups": ["sudo", "*"]},
        "which is not a group name",
    ),
    # userconf.txt is one line, split on ':'.
    "hash-colon": (
        "flash_password_hash",
        {"flash_password_hash": "$6$salt$abc:def"},
        "is not a crypt(3) hash",
    ),
    "hash-newline": (
        "flash_password_hash",
        {"flash_password_hash": "$6$salt$abc\nroot:x"},
        "is not a crypt(3) hash",
    ),
    # A newline in the SSID would add lines to the NetworkManager keyfile.
    "ssid-newline": (
        "flash_wifi_ssid",
        {
            "flash_wifi_ssid": "lab\n[connection]",
            "flash_wifi_passphrase": "correct horse battery",
            "flash_wifi_country": "GB",
        },
        "holds a control character",
    ),
    # 9 characters but 33 bytes; a given PSK skips the passphrase's own SSID check.
    "ssid-bytes": (
        "flash_wifi_ssid",
        {
            "flash_wifi_ssid": "\U0001f600" * 8 + "x",
            "flash_wifi_passphrase": HEX_PSK,
            "flash_wifi_country": "GB",
        },
        "is 33 bytes in UTF-8; an SSID holds 1 to 32",
    ),
    "country": ("flash_wifi_country", {"flash_wifi_country": "gb"}, "is not two capital letters"),
}


@pytest.fixture(scope="module")
def unsafe_run(source_images, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("unsafe")
    key = workdir / "id_ed25519.pub"
    key.write_text(images.SSH_KEY + "\n")
    src = source_images["bookworm"]
    inventory = {"all": {"hosts": {host: values for host, (_, values, _) in UNSAFE_VALUES.items()}}}
    run = run_playbook(
        workdir,
        inventory,
        flash_image=str(src.path),
        flash_image_sha256=src.sha256,
        flash_output_dir=str(workdir / "out"),
        flash_ssh_public_key=str(key),
    )
    return run, workdir


@pytest.mark.parametrize("host", sorted(UNSAFE_VALUES))
def test_unsafe_value_is_refused(unsafe_run, host):
    run, workdir = unsafe_run
    name, _, message = UNSAFE_VALUES[host]
    lines = [line for line in run.output.splitlines() if f"fatal: [{host}]" in line]
    assert len(lines) == 1, run.output
    assert f'"msg": "{host}: {name} ' in lines[0], lines[0]
    assert message in lines[0] and lines[0].endswith('Nothing was written."}'), lines[0]
    assert run.rc != 0
    assert WRITE_TASK not in run.output
    assert not (workdir / "out").exists()
    assert not (workdir / "flashed.yml").exists()
