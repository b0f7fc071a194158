"""playbooks/validate.yml (the start of site.yml) refuses what cannot work, before any change.

Runs the real playbook against this machine over a local connection: it only reads.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"


def run_validate(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    inventory = tmp_path / "hosts.yml"
    host = {
        "localhost": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    }
    inventory.write_text(
        yaml.safe_dump({"all": {"children": {"etcd": {"hosts": host}, "agents": {"hosts": host}}}})
    )
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    return subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "-i", str(inventory), str(REPO / "playbooks" / "validate.yml"),
         *extra],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=300,
    )  # fmt: skip


def test_a_64_bit_node_passes(tmp_path: Path) -> None:
    run = run_validate(tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "failed=0" in run.stdout and "changed=0" in run.stdout


def test_a_32_bit_node_is_refused_before_anything_changes(tmp_path: Path) -> None:
    run = run_validate(tmp_path, "-e", "ansible_architecture=armv7l")
    assert run.returncode != 0
    assert "localhost is armv7l" in run.stdout
    assert "Install a 64-bit OS on this node" in run.stdout
