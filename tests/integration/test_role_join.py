"""roles/etcd's member add (tasks/member_add.yml, the first step of a join), run by Ansible
against a real 3-member etcd with TLS. etcd refuses an add ("unhealthy cluster") until the
member asked has been connected to every voting member for 5 s: while one is down or just
back. The lifecycle scenario's grow step failed so once (a peer connection had dropped
under load); the role now asks again until its deadline. A retry after an add whose answer
was lost hears "Peer URLs already exists": the member is there, and that is success."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import yaml
from certs import TestCA
from rbac import etcdctl

from picluster_agent.etcd.localcluster import EtcdCluster, ServerTLS, free_port, wait_for

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"


def start_member_add(
    tmp_path: Path, ca: TestCA, members_json: str, peer_url: str
) -> subprocess.Popen[str]:
    """ansible-playbook running the role's member add for learner `new`, given the member
    list `members_json` (what join.yml read just before), as root from the controller."""
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump({"all": {"hosts": {"new": local}}}))
    play = [{
        "hosts": "new", "gather_facts": False,
        "tasks": [{"ansible.builtin.include_role": {"name": "etcd", "tasks_from": "member_add.yml"},
                   "vars": {"etcd_controller_pki_dir": str(ca.dir), "etcd_peer_url": peer_url,
                            "etcd_join_list": {"stdout": members_json},
                            "etcd_health_timeout": 60}}],
    }]  # fmt: skip
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play))
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_ROLES_PATH": str(REPO / "roles")}  # fmt: skip
    return subprocess.Popen(
        [str(ANSIBLE_PLAYBOOK), "-i", str(tmp_path / "hosts.yml"), str(tmp_path / "play.yml")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO, env=env,
    )  # fmt: skip


def test_member_add_waits_out_an_unhealthy_cluster_and_survives_a_lost_answer(
    tmp_path: Path,
) -> None:
    ca = TestCA(tmp_path / "pki")
    server = ca.issue("server", server=True)
    root = ca.issue("root")
    # The bundle root's etcdctl checks the members against (tasks/root.yml).
    shutil.copy(ca.cacert, ca.dir / "trust.crt")
    cluster = EtcdCluster(tmp_path / "etcd", 3, tls=ServerTLS(ca.cacert, *server, *root)).start()
    try:

        def members() -> str:
            return etcdctl(
                cluster.endpoints_csv, ca.cacert, *root, "member", "list", "-w", "json"
            ).stdout

        before = members()
        new_peer = f"https://127.0.0.1:{free_port()}"
        # m2 down: every member's link to a voting member is broken, so etcd refuses the add
        # until m2 is back and connected for 5 s. The role must keep asking meanwhile.
        cluster.members[2].stop()
        play = start_member_add(tmp_path, ca, before, new_peer)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(play.stdout or ()), daemon=True)
        reader.start()
        try:
            refused = "FAILED - RETRYING"
            wait_for(
                lambda: any(refused in line for line in lines) or play.poll() is not None,
                120,
                what="the role's first refused add",
            )
            cluster.members[2].start()
            play.wait(timeout=180)
            reader.join(10)
        finally:
            if play.poll() is None:
                play.kill()
                play.wait()
        out = "".join(lines)
        assert play.returncode == 0, out[-4000:]
        assert "FAILED - RETRYING" in out, out[-4000:]
        added = [m for m in json.loads(members())["members"] if new_peer in m.get("peerURLs", [])]
        assert len(added) == 1 and added[0].get("isLearner"), added

        # As if the answer to that add had been lost: the role, given the list from before,
        # adds again; etcd says the peer URL exists, which is what the role wanted.
        again = start_member_add(tmp_path, ca, before, new_peer)
        out, _ = again.communicate(timeout=120)
        assert again.returncode == 0, out[-4000:]
        now = json.loads(members())["members"]
        assert [m["ID"] for m in now if new_peer in m.get("peerURLs", [])] == [added[0]["ID"]]
    finally:
        cluster.stop_all()
