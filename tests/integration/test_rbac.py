"""etcd's access control (issue 15) on a real etcd with TLS and client certificates: each
role allowed and refused exactly as docs/SECURITY.md lists it, agents working end to end
under it, and a person's access revoked at once."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from certs import TestCA
from rbac import etcdctl, setup_commands

from picluster_agent.api_client import ApiClient
from picluster_agent.errors import PermissionDenied
from picluster_agent.etcd.adapter import EtcdClient, TLSFiles
from picluster_agent.etcd.localcluster import (
    AgentApi,
    AgentProcess,
    EtcdCluster,
    ServerTLS,
    free_port,
    wait_for,
)

PREFIX = "/picluster"
USERS = [
    ("picluster-agent-pi1", "picluster-agent"),
    ("picluster-agent-pi2", "picluster-agent"),
    ("carol", "picluster-submitter"),
    ("olga", "picluster-operator"),
    ("rita", "picluster-reader"),
    ("alice", "picluster-submitter"),
]


@dataclass
class AuthEtcd:
    cluster: EtcdCluster
    ca: TestCA

    def tls(self, user: str) -> TLSFiles:
        return TLSFiles(self.ca.cacert, str(self.ca.dir / f"{user}.crt"),
                        str(self.ca.dir / f"{user}.key"))  # fmt: skip

    def flags(self, user: str) -> list[str]:
        t = self.tls(user)
        return ["--endpoints", self.cluster.endpoints_csv, "--prefix", PREFIX,
                "--cacert", str(t.cacert), "--cert", str(t.cert), "--key", str(t.key)]  # fmt: skip

    def client(self, user: str) -> EtcdClient:
        return EtcdClient(self.cluster.endpoints, self.tls(user), timeout=5.0)

    def etcdctl(self, user: str, *args: str, check: bool = True):
        t = self.tls(user)
        return etcdctl(self.cluster.endpoints_csv, str(t.cacert), str(t.cert), str(t.key),
                       *args, check=check)  # fmt: skip


@pytest.fixture(scope="module")
def auth_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthEtcd]:
    base = tmp_path_factory.mktemp("auth-etcd")
    ca = TestCA(base / "pki")
    server_cert, server_key = ca.issue("server", server=True)
    for user in ["root", "stranger", *(u for u, _ in USERS)]:
        ca.issue(user)
    root_cert, root_key = str(ca.dir / "root.crt"), str(ca.dir / "root.key")
    tls = ServerTLS(ca.cacert, server_cert, server_key, root_cert, root_key)
    cluster = EtcdCluster(base / "etcd", 1, tls=tls).start()
    env = AuthEtcd(cluster, ca)
    try:
        for cmd in setup_commands(PREFIX, USERS):
            env.etcdctl("root", *cmd)
        yield env
    finally:
        cluster.stop_all()


# What each role may do, written out (not read from rbac.yml): the test of that file.
KEYS = ["election/1", "leader", "nodes/pi9", "drain/pi9", "queue/J1", "jobs/J1", "rerun/J1",
        "assign/pi9/J1", "results/J1", "cancel/J1", "users/alice", "cron/nightly"]  # fmt: skip
ALLOWED = {
    "picluster-agent-pi1": {
        "read": set(KEYS),
        "write": set(KEYS) - {"drain/pi9", "users/alice"},
    },
    "carol": {
        "read": set(KEYS) - {"assign/pi9/J1", "users/alice"},
        "write": {"queue/J1", "cancel/J1", "cron/nightly"},
    },
    "olga": {
        "read": set(KEYS) - {"assign/pi9/J1", "users/alice"},
        "write": {"queue/J1", "cancel/J1", "drain/pi9", "cron/nightly"},
    },
    "rita": {"read": set(KEYS), "write": set()},
    "stranger": {"read": set(), "write": set()},  # a CA certificate with no etcd user
}


def _allowed(action) -> bool:
    try:
        action()
    except PermissionDenied:
        return False
    return True


@pytest.mark.parametrize("user", sorted(ALLOWED))
def test_each_role_is_allowed_and_refused_exactly_as_listed(auth_etcd: AuthEtcd, user: str):
    client = auth_etcd.client(user)
    outside = "/elsewhere/x"
    got_read = {k for k in KEYS if _allowed(lambda k=k: client.get(f"{PREFIX}/{k}"))}
    got_write = set()
    for k in KEYS:
        key = f"{PREFIX}/{k}"
        if _allowed(lambda key=key: client.put(key, "x")):
            assert _allowed(lambda key=key: client.delete(key)), f"{user} put {k} not delete"
            got_write.add(k)
    assert got_read == ALLOWED[user]["read"]
    assert got_write == ALLOWED[user]["write"]
    # Nothing outside the prefix, and no administration.
    assert not _allowed(lambda: client.get(outside))
    assert not _allowed(lambda: client.put(outside, "x"))
    assert auth_etcd.etcdctl(user, "user", "list", check=False).returncode != 0


def test_a_submitters_etcdctl_put_to_the_queue_works_and_to_assign_is_refused(
    auth_etcd: AuthEtcd,
) -> None:
    job = f"01J{uuid.uuid4().hex[:10].upper()}"
    ok = auth_etcd.etcdctl("carol", "put", f"{PREFIX}/queue/{job}", '{"argv": ["true"]}')
    assert "OK" in ok.stdout
    refused = auth_etcd.etcdctl("carol", "put", f"{PREFIX}/assign/pi1/{job}", "{}", check=False)
    assert refused.returncode != 0 and "permission denied" in refused.stderr
    auth_etcd.etcdctl("root", "del", f"{PREFIX}/queue/{job}")


def test_agents_run_jobs_for_submitters_under_access_control(
    auth_etcd: AuthEtcd, tmp_path: Path, cli
) -> None:
    agents = [
        AgentProcess(
            name, auth_etcd.cluster.endpoints_csv, PREFIX, tmp_path / name,
            extra_args=auth_etcd.flags(f"picluster-agent-{name}")[4:],
            etcd_election_timeout=auth_etcd.cluster.election_timeout,
        ).start()
        for name in ("pi1", "pi2")
    ]  # fmt: skip
    try:
        carol, olga, rita = (auth_etcd.flags(u) for u in ("carol", "olga", "rita"))
        wait_for(lambda: cli("nodes", *rita).stdout.count("pi") == 2, 30, what="2 agents")
        assert "master" in cli("nodes", *carol).stdout
        done = cli("submit", *carol, "--wait", "--", "sh", "-c", "echo under rbac")
        assert done.returncode == 0, (done.stdout, done.stderr)
        job = cli("submit", *carol, "--", "sleep", "60").stdout.strip()
        assert cli("status", *rita, job).returncode == 0
        wait_for(lambda: "running" in cli("status", *carol, job).stdout, 20, what="running")
        assert cli("cancel", *carol, job).returncode == 0
        wait_for(lambda: "cancelled" in cli("status", *carol, job).stdout, 20, what="cancelled")
        # Draining is the operator's; readers submit nothing. Each refusal: exit 2, one line.
        for refused in (cli("drain", *carol, "pi2"), cli("submit", *rita, "--", "true")):
            assert refused.returncode == 2, (refused.stdout, refused.stderr)
            assert len(refused.stderr.strip().splitlines()) == 1
        assert cli("drain", *olga, "pi2").returncode == 0
        assert cli("undrain", *olga, "pi2").returncode == 0
    finally:
        for a in agents:
            a.terminate()
    for a in agents:
        assert "Traceback" not in a.log_text(), a.log_text()[-3000:]


def test_deleting_a_persons_user_refuses_their_certificate_at_once(
    auth_etcd: AuthEtcd, cli
) -> None:
    alice = auth_etcd.client("alice")
    alice.get(f"{PREFIX}/leader")  # allowed: no refusal
    # The command playbooks/revoke.yml runs as root.
    auth_etcd.etcdctl("root", "user", "delete", "alice")
    with pytest.raises(PermissionDenied):
        alice.get(f"{PREFIX}/leader")  # the connection opened before: refused too
    refused = cli("submit", *auth_etcd.flags("alice"), "--", "true")
    assert refused.returncode == 2 and refused.stdout == ""
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr


def test_the_https_api_under_access_control_follows_users_and_their_revocation(
    auth_etcd: AuthEtcd, tmp_path: Path
) -> None:
    """An agent with only its agent role reads <prefix>/users/ (what roles/etcd publishes as
    root) and admits callers by it; deleting a person's key (playbooks/revoke.yml) refuses
    their certificate at the API at once."""
    ca = auth_etcd.ca
    cert, key = ca.issue("api-pi1", server=True)
    agent = AgentProcess(
        "pi1", auth_etcd.cluster.endpoints_csv, PREFIX, tmp_path / "pi1",
        extra_args=auth_etcd.flags("picluster-agent-pi1")[4:],
        etcd_election_timeout=auth_etcd.cluster.election_timeout,
        api=AgentApi(free_port(), ca.cacert, cert, key),
    ).start()  # fmt: skip
    for user, role in (("carol", "picluster-submitter"), ("rita", "picluster-reader")):
        auth_etcd.etcdctl("root", "put", f"{PREFIX}/users/{user}", role)

    def api(user: str) -> ApiClient:
        t = auth_etcd.tls(user)
        return ApiClient(agent.api_url, cacert=str(t.cacert), cert=str(t.cert), key=str(t.key))

    try:
        carol, rita = api("carol"), api("rita")
        wait_for(lambda: carol.jobs() is not None, 30, what="the API")
        job = carol.submit(["true"])
        assert job.accepted
        assert rita.wait(job.id, timeout=30)["state"] == "succeeded"
        with pytest.raises(PermissionDenied, match="needs a submitter"):
            rita.submit(["true"])
        auth_etcd.etcdctl("root", "del", f"{PREFIX}/users/carol")
        wait_for(lambda: not _allowed(carol.jobs), 2, what="carol refused")
    finally:
        agent.terminate()
    assert "Traceback" not in agent.log_text(), agent.log_text()[-3000:]


def test_the_status_page_reads_what_it_shows_with_an_agents_rights(
    auth_etcd: AuthEtcd, tmp_path: Path
) -> None:
    # The page is built by the agent serving it, from its own etcd identity: its leases,
    # the leader key's history and every directory it shows must be readable by that role.
    from picluster_agent.etcd.keys import Keys
    from picluster_agent.ui.snapshot import LeaderHistory, read_snapshot
    from picluster_agent.ui.state import build_state

    agent = AgentProcess(
        "pi1", auth_etcd.cluster.endpoints_csv, PREFIX, tmp_path / "pi1",
        extra_args=auth_etcd.flags("picluster-agent-pi1")[4:],
        etcd_election_timeout=auth_etcd.cluster.election_timeout,
    ).start()  # fmt: skip
    client, keys = auth_etcd.client("picluster-agent-pi1"), Keys(PREFIX)
    try:
        history = LeaderHistory(client, keys)

        def page() -> dict | None:
            snap = read_snapshot(client, keys, history)
            assert snap.errors == []
            state = build_state(snap, keys, "pi1")
            return state if (state["master"] or {}).get("name") == "pi1" else None

        state = wait_for(page, 30, what="pi1 master on the page")
        assert [(n["name"], n["lease"]["state"]) for n in state["nodes"]] == [("pi1", "live")]
    finally:
        agent.terminate()
