"""The URLs the roles build from node addresses: IPv4, IPv6 (in brackets) and names.

Evaluated by Ansible itself from the roles' own defaults and vars, on a local connection.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
ADDRESSES = {"pi1": "192.0.2.1", "pi2": "fd00::2", "pi3": "pi3.local"}


def test_endpoints_and_member_urls_put_ipv6_in_brackets(tmp_path: Path) -> None:
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    hosts = {name: {**local, "picluster_address": a} for name, a in ADDRESSES.items()}
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {"etcd": {"hosts": hosts}}}}))
    out = tmp_path / "urls"
    playbook = tmp_path / "urls.yml"
    playbook.write_text(
        yaml.safe_dump(
            [
                {
                    "hosts": "etcd",
                    "gather_facts": False,
                    "tasks": [
                        {"ansible.builtin.include_vars": str(REPO / f"roles/{path}")}
                        for path in (
                            "etcd/defaults/main.yml",
                            "etcd/vars/main.yml",
                            "picluster_agent/defaults/main.yml",
                        )
                    ]
                    + [
                        {
                            "ansible.builtin.copy": {
                                "dest": f"{out}-{{{{ inventory_hostname }}}}.json",
                                "content": "{{ {'client': etcd_client_url, 'peer': etcd_peer_url,"
                                " 'agent': picluster_agent_endpoints} | to_json }}",
                                "mode": "0644",
                            },
                        }
                    ],
                }
            ]
        )
    )
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    run = subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "-i", str(inventory), str(playbook)],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    urls = {name: json.loads(Path(f"{out}-{name}.json").read_text()) for name in ADDRESSES}
    assert urls["pi2"]["client"] == "https://[fd00::2]:2379"
    assert urls["pi2"]["peer"] == "https://[fd00::2]:2380"
    assert urls["pi1"]["peer"] == "https://192.0.2.1:2380"
    assert urls["pi3"]["client"] == "https://pi3.local:2379"
    assert urls["pi1"]["agent"] == [
        "https://192.0.2.1:2379",
        "https://[fd00::2]:2379",
        "https://pi3.local:2379",
    ]
