"""The agent role's HTTPS API settings, evaluated by Ansible from the role's own defaults,
vars and template: the agent.yaml it writes is one the agent accepts (API on, and off with
port 0), and the server certificate names the node as callers reach it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from picluster_agent.config import build_agent_config, build_connection, load_file

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
HOSTS = {
    "pi1": {"picluster_address": "192.0.2.1"},
    "pi2": {"picluster_address": "fd00::2"},
    "pi3": {"picluster_address": "pi3.lan"},  # and picluster_agent_api_port: 0
}


def test_agent_yaml_and_certificate_names_for_the_api(tmp_path: Path) -> None:
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    hosts = {name: {**local, **v} for name, v in HOSTS.items()}
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {"etcd": {"hosts": hosts}}}}))
    out = tmp_path / "out"
    role = REPO / "roles" / "picluster_agent"
    play = [{
        "hosts": "etcd", "gather_facts": False,
        "tasks": [{"ansible.builtin.include_vars": str(role / p)}
                  for p in ("defaults/main.yml", "vars/main.yml")] + [
            # What an inventory's host var does in a real play (include_vars outranks it).
            {"ansible.builtin.set_fact": {"picluster_agent_api_port": 0},
             "when": "inventory_hostname == 'pi3'"},
            {"ansible.builtin.template": {"src": str(role / "templates" / "agent.yaml.j2"),
                                          "dest": f"{out}-{{{{ inventory_hostname }}}}.yaml",
                                          "mode": "0644"}},
            {"ansible.builtin.copy": {"dest": f"{out}-{{{{ inventory_hostname }}}}.json",
                                      "content": "{{ picluster_agent_api_names | to_json }}",
                                      "mode": "0644"}},
        ],
    }]  # fmt: skip
    playbook = tmp_path / "play.yml"
    playbook.write_text(yaml.safe_dump(play))
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    run = subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "-i", str(inventory), str(playbook)],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr

    def config(name: str):
        file = load_file(f"{out}-{name}.yaml", required=True)  # every setting checked
        file.pop("job_user")  # no such user on this machine
        return build_agent_config(file, build_connection(file))

    pi1, pi2, pi3 = (config(n) for n in ("pi1", "pi2", "pi3"))
    assert pi1.api_enabled and pi1.api_port == 7443 and pi1.api_key == "/etc/picluster/pki/api.key"
    assert pi1.api_url == "https://192.0.2.1:7443"
    assert pi2.api_url == "https://[fd00::2]:7443"
    assert not pi3.api_enabled and pi3.api_url == ""
    names = {n: json.loads(Path(f"{out}-{n}.json").read_text()) for n in HOSTS}
    assert "IP:192.0.2.1" in names["pi1"] and "DNS:pi1" in names["pi1"]
    assert "IP:fd00::2" in names["pi2"] and "DNS:pi2.local" in names["pi2"]
    assert "DNS:pi3.lan" in names["pi3"] and "IP:127.0.0.1" in names["pi3"]
