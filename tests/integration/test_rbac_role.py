"""roles/etcd's access control tasks (tasks/rbac.yml), run by Ansible against a real etcd
with TLS that holds data and has no authentication yet: a cluster provisioned before. The
first run turns authentication on with every role and user, the second changes nothing, and
the result is what tests/integration/test_rbac.py checks role by role."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml
from certs import TestCA
from rbac import etcdctl, roles

from picluster_agent.etcd.localcluster import EtcdCluster, ServerTLS

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"


def run_rbac_tasks(tmp_path: Path, cluster: EtcdCluster, ca: TestCA) -> str:
    # picluster-etcdctl as the role installs it: the member's certificate unless the play
    # passes root's in ETCDCTL_CERT/ETCDCTL_KEY.
    wrapper = tmp_path / "picluster-etcdctl"
    wrapper.write_text(
        "#!/bin/sh\nexport ETCDCTL_API=3\n"
        f"export ETCDCTL_ENDPOINTS={cluster.endpoints_csv} ETCDCTL_CACERT={ca.cacert}\n"
        f'export ETCDCTL_CERT="${{ETCDCTL_CERT:-{ca.dir}/pi1.crt}}"\n'
        f'export ETCDCTL_KEY="${{ETCDCTL_KEY:-{ca.dir}/pi1.key}}"\n'
        'exec etcdctl "$@"\n'
    )
    wrapper.chmod(0o755)
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    inventory = {"all": {
        "vars": {"picluster_users": [{"name": "alice", "role": "submitter"},
                                     {"name": "bob", "role": "reader"}]},
        "children": {"agents": {"hosts": {"pi1": local, "pi2": local}}},
    }}  # fmt: skip
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inventory))
    # Root's operations run on the controller (here too: localhost) with the files of the
    # controller's PKI directory: root.crt, root.key, ca.crt.
    play = [{
        "hosts": "pi1", "gather_facts": False,
        "tasks": [{"ansible.builtin.include_role": {"name": "etcd", "tasks_from": "rbac.yml"},
                   "vars": {"etcd_ctl": str(wrapper), "etcd_controller_pki_dir": str(ca.dir)}}],
    }]  # fmt: skip
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play))
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_ROLES_PATH": str(REPO / "roles")}  # fmt: skip
    run = subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "-i", str(tmp_path / "hosts.yml"), str(tmp_path / "play.yml")],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    return run.stdout


def test_the_role_turns_access_control_on_for_an_existing_cluster_once(tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "pki")
    server = ca.issue("server", server=True)
    for name in ("root", "pi1", "alice", "bob"):
        ca.issue(name)
    root = (str(ca.dir / "root.crt"), str(ca.dir / "root.key"))
    cluster = EtcdCluster(tmp_path / "etcd", 1, tls=ServerTLS(ca.cacert, *server, *root)).start()
    try:

        def ctl(user: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
            return etcdctl(cluster.endpoints_csv, ca.cacert, str(ca.dir / f"{user}.crt"),
                           str(ca.dir / f"{user}.key"), *args, check=check)  # fmt: skip

        ctl("pi1", "put", "/picluster/queue/J0", "{}")  # no authentication yet: anyone writes
        first = run_rbac_tasks(tmp_path, cluster, ca)
        assert re.search(r"changed=[1-9]", first), first
        second = run_rbac_tasks(tmp_path, cluster, ca)
        assert re.search(r"changed=0 ", second), second

        # On now: the member's certificate is refused, the data is still there for root.
        refused = ctl("pi1", "get", "/picluster/queue/J0", check=False)
        assert refused.returncode != 0 and "permission denied" in refused.stderr
        assert "J0" in ctl("root", "get", "--keys-only", "/picluster/queue/J0").stdout
        assert set(ctl("root", "role", "list").stdout.split()) == {"root", *roles()}
        users = set(ctl("root", "user", "list").stdout.split())
        assert users == {"root", "alice", "bob", "picluster-agent-pi1", "picluster-agent-pi2",
                         "picluster-node-pi1", "picluster-node-pi2"}  # fmt: skip
        assert "picluster-reader" in ctl("root", "user", "get", "bob").stdout
        # The agents' HTTPS APIs read each user's role from <prefix>/users/ (agents may).
        published = ctl("root", "get", "--prefix", "/picluster/users/").stdout.split()
        assert dict(zip(published[::2], published[1::2], strict=True)) == {
            "/picluster/users/alice": "picluster-submitter",
            "/picluster/users/bob": "picluster-reader",
            "/picluster/users/picluster-agent-pi1": "picluster-agent",
            "/picluster/users/picluster-agent-pi2": "picluster-agent",
            "/picluster/users/picluster-node-pi1": "picluster-submitter",
            "/picluster/users/picluster-node-pi2": "picluster-submitter",
        }
        # Alice submits, Bob reads and cannot submit.
        ctl("alice", "put", "/picluster/queue/J1", "{}")
        assert "J1" in ctl("bob", "get", "--keys-only", "--prefix", "/picluster/queue/").stdout
        assert ctl("bob", "put", "/picluster/queue/J2", "{}", check=False).returncode != 0
    finally:
        cluster.stop_all()
