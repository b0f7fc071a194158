"""etcd's access control as roles/etcd sets it up, for tests on a real etcd: the roles come
from the file the Ansible role reads (roles/etcd/files/rbac.yml), the commands are the
etcdctl commands of roles/etcd/tasks/rbac.yml."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable
from pathlib import Path

import yaml

RBAC_FILE = Path(__file__).resolve().parent.parent / "roles" / "etcd" / "files" / "rbac.yml"


def roles() -> dict[str, dict[str, list[str]]]:
    return yaml.safe_load(RBAC_FILE.read_text())["picluster_rbac_roles"]


def etcdctl(endpoints: str, cacert: str, cert: str, key: str, *args: str, check: bool = True):
    out = subprocess.run(
        ["etcdctl", "--endpoints", endpoints, "--cacert", cacert, "--cert", cert, "--key", key,
         *args],
        capture_output=True, text=True, timeout=30,
        env=dict(os.environ, ETCDCTL_API="3"),
    )  # fmt: skip
    if check:
        assert out.returncode == 0, (args, out.stderr)
    return out


def setup_commands(prefix: str, users: Iterable[tuple[str, str]]) -> list[list[str]]:
    """What the role runs on a new cluster, in its order: root, roles, grants, users, enable."""
    cmds = [["user", "add", "root", "--no-password"], ["role", "add", "root"]]
    cmds += [["role", "add", name] for name in roles()]
    for name, grants in roles().items():
        for kind in ("read", "write", "readwrite"):
            for rel in grants.get(kind, []):
                key = f"{prefix}/{rel}"
                cmds.append(
                    ["role", "grant-permission", *(["--prefix"] if key.endswith("/") else []),
                     name, kind, key]
                )  # fmt: skip
    users = list(users)
    cmds += [["user", "add", user, "--no-password"] for user, _ in users]
    cmds += [["user", "grant-role", user, role] for user, role in [*users, ("root", "root")]]
    cmds.append(["auth", "enable"])
    return cmds
