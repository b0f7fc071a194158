"""Fixtures for the flash tests: synthetic images, an SSH key, and a playbook runner."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from . import images

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PLAYBOOK = REPO / "playbooks" / "flash.yml"
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
REQUIRED_TOOLS = (
    "sfdisk",
    "mkfs.vfat",
    "mkfs.ext4",
    "mcopy",
    "mtype",
    "mdir",
    "mlabel",
    "xz",
    "dd",
    "shellcheck",
    "cloud-init",
)
RECAP = re.compile(
    r"^(?P<host>\S+)\s+: ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+"
    r"unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)",
    re.MULTILINE,
)


@dataclass
class Run:
    rc: int
    output: str

    @property
    def recap(self) -> dict[str, dict[str, int]]:
        return {
            m["host"]: {k: int(m[k]) for k in ("ok", "changed", "unreachable", "failed")}
            for m in RECAP.finditer(self.output)
        }

    def changed(self) -> int:
        return sum(host["changed"] for host in self.recap.values())


@pytest.fixture(scope="session", autouse=True)
def tools() -> None:
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    assert not missing, (
        f"missing tools {missing}: install the packages in scripts/apt-packages.txt "
        "(mtools dosfstools fdisk e2fsprogs xz-utils shellcheck cloud-init)"
    )
    assert ANSIBLE_PLAYBOOK.exists(), f"{ANSIBLE_PLAYBOOK} missing: pip install -e '.[provision]'"


@pytest.fixture(scope="session")
def source_images(tmp_path_factory) -> dict[str, images.Image]:
    """bookworm.img.xz, trixie.img and ubuntu.img, with their raw forms for comparison."""
    base = tmp_path_factory.mktemp("source")
    built = {}
    for fmt in images.FORMATS:
        raw = images.build_image(base / f"{fmt}.img", fmt)
        built[fmt] = images.Image(raw, fmt, images.sha256_file(raw))
    xz = images.compress_xz(built["bookworm"].path)
    built["bookworm.xz"] = images.Image(xz, "bookworm", images.sha256_file(xz))
    return built


@pytest.fixture
def ssh_key_file(tmp_path) -> Path:
    path = tmp_path / "id_ed25519.pub"
    path.write_text(images.SSH_KEY + "\n")
    return path


def run_playbook(workdir: Path, inventory: dict, **extra) -> Run:
    """Run playbooks/flash.yml on an inventory (a dict) with extra vars, in `workdir`."""
    inv = workdir / "inventory.yml"
    inv.write_text(yaml.safe_dump(inventory))
    extra_file = workdir / "extra.yml"
    extra.setdefault("flash_cache_dir", str(workdir / "cache"))
    extra.setdefault("flash_inventory_path", str(workdir / "flashed.yml"))
    extra.setdefault("flash_poll_interval", 1)
    extra_file.write_text(yaml.safe_dump(extra))
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(HERE / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_LOCAL_TEMP=str(workdir / "ansible-tmp"),
        PATH=f"{ANSIBLE_PLAYBOOK.parent}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    proc = subprocess.run(
        [str(ANSIBLE_PLAYBOOK), str(PLAYBOOK), "-i", str(inv), "-e", f"@{extra_file}"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=600,
        check=False,
    )
    return Run(proc.returncode, proc.stdout + proc.stderr)


@pytest.fixture
def flash(tmp_path):
    """Run playbooks/flash.yml on an inventory (a dict) with extra vars; returns a Run."""

    def run(inventory: dict, **extra) -> Run:
        return run_playbook(tmp_path, inventory, **extra)

    return run
