"""The agents' HTTPS API on real etcd and real agents, over real TLS with client certificates:
who may call what, submissions committed before the answer, idempotent ids, bad input
refused in one line with etcd unchanged, unknown jobs, revocation, etcd down."""

from __future__ import annotations

import http.client
import json
import ssl
import subprocess
import uuid
from dataclasses import dataclass

import pytest

from picluster_agent.api_client import ApiClient
from picluster_agent.errors import NotFound, PermissionDenied
from picluster_agent.etcd.localcluster import EtcdCluster, wait_for
from picluster_agent.etcd.localpki import CertFiles, LocalPKI

from conftest import Agents

ROLES = {
    "rita": "picluster-reader",
    "sam": "picluster-submitter",
    "olga": "picluster-operator",
}


@dataclass
class World:
    group: Agents
    certs: dict[str, CertFiles]
    stranger: CertFiles  # a certificate of another CA

    @property
    def cacert(self) -> str:
        return self.group.apis.pki.cacert

    def url(self, node: str = "pi1") -> str:
        return self.group.by_name(node).api_url

    def api(self, who: str, node: str = "pi1") -> ApiClient:
        c = self.certs[who]
        return ApiClient(self.url(node), cacert=self.cacert, cert=c.cert, key=c.key)

    def call(
        self, method: str, path: str, who: str | None = None, body: object = None, node="pi1"
    ) -> tuple[int, dict, bytes]:
        """One raw request: status, the JSON body, and the bytes as sent."""
        context = ssl.create_default_context(cafile=self.cacert)
        if who is not None:
            c = self.certs[who]
            context.load_cert_chain(c.cert, c.key)
        port = self.group.by_name(node).api.port
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=30)
        try:
            payload = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
            conn.request(method, path, body=payload)
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        return response.status, json.loads(raw), raw

    def job_keys(self) -> set[tuple[str, int]]:
        """Every key a submission could add, with its create revision. (The store revision
        itself moves with the live cluster: heartbeats, the master's moves.)"""
        keys = self.group.keys
        found = set()
        for directory in (keys.queue_dir, keys.jobs_dir, keys.cancel_dir):
            kvs, _ = self.group.client.get_prefix(directory, keys_only=True)
            found |= {(kv.key, kv.create_revision) for kv in kvs}
        return found


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    base = tmp_path_factory.mktemp("api")
    cluster = EtcdCluster(base / "etcd", 1).start()
    group = Agents(cluster, f"/api-{uuid.uuid4().hex[:6]}", base / "agents")
    group.start("pi1", slots=2, with_api=True)
    group.start("pi2", slots=2, with_api=True)
    certs = {name: group.apis.user(name, role) for name, role in ROLES.items()}
    certs["agent"] = group.apis.user("picluster-agent-pi9", "picluster-agent")
    certs["nobody"] = group.apis.pki.issue("nobody")  # of the CA, but no user
    stranger = LocalPKI(base / "other-ca", "another CA").issue("sam")
    w = World(group, certs, stranger)
    group.wait_registered(2)
    group.wait_leader()
    for node in ("pi1", "pi2"):
        wait_for(lambda n=node: w.call("GET", "/healthz", node=n)[0] == 200, 20, what="API up")
    yield w
    group.stop_all()
    cluster.stop_all()


def one_line_error(status: int, data: dict, raw: bytes) -> str:
    assert set(data) == {"error"}, data
    assert b"\n" not in raw.strip() and "\n" not in data["error"], raw
    return data["error"]


# ---------------------------------------------------------------- who may call what

# (method, path, least role); {id} is a job that exists.
ROUTES = [
    ("GET", "/v1/jobs", "reader"),
    ("GET", "/v1/jobs/{id}", "reader"),
    ("GET", "/v1/jobs/{id}/wait?timeout=0", "reader"),
    ("POST", "/v1/jobs", "submitter"),
    ("POST", "/v1/jobs/{id}/cancel", "submitter"),
]
ORDER = ["reader", "submitter", "operator", "agent"]
CALLER_ROLE = {"rita": "reader", "sam": "submitter", "olga": "operator", "agent": "agent"}


def test_each_node_registers_where_its_api_is(world):
    for node in ("pi1", "pi2"):
        info = json.loads(world.group.client.get(world.group.keys.node(node)).value)
        assert info["api"] == world.url(node)


def test_health_needs_no_certificate_and_every_other_route_does(world):
    assert world.call("GET", "/healthz")[0] == 200
    assert world.call("GET", "/v1/openapi.json")[0] == 200
    job = world.api("sam").submit(["true"]).id
    for method, path, _ in ROUTES:
        status, data, raw = world.call(method, path.format(id=job), body={"command": ["true"]})
        assert status == 401, (method, path, data)
        assert "certificate" in one_line_error(status, data, raw)


@pytest.mark.parametrize("who", sorted(CALLER_ROLE))
def test_each_role_is_allowed_and_refused_exactly_as_declared(world, who):
    job = world.api("sam").submit(["sleep", "60"]).id
    for method, path, least in ROUTES:
        body = {"command": ["true"]} if method == "POST" and path == "/v1/jobs" else None
        status, data, raw = world.call(method, path.format(id=job), who, body)
        allowed = ORDER.index(CALLER_ROLE[who]) >= ORDER.index(least)
        if allowed:
            assert status in (200, 201, 202), (who, method, path, data)
        else:
            assert status == 403, (who, method, path, data)
            assert f"needs a {least}" in one_line_error(status, data, raw)
    world.api("sam").cancel(job)


def test_a_certificate_without_a_user_is_refused_and_revocation_holds_at_once(world):
    status, data, raw = world.call("GET", "/v1/jobs", "nobody")
    assert status == 403 and "not a user" in one_line_error(status, data, raw)
    world.group.apis.allow("nobody", "picluster-reader")
    wait_for(lambda: world.call("GET", "/v1/jobs", "nobody")[0] == 200, 5, what="admitted")
    world.group.apis.revoke("nobody")
    # The agents watch <prefix>/users/: the next request after the delete is refused.
    wait_for(lambda: world.call("GET", "/v1/jobs", "nobody")[0] == 403, 2, what="revoked")
    with pytest.raises(PermissionDenied):
        world.api("nobody", "pi2").jobs()


def test_a_certificate_of_another_ca_fails_the_handshake(world):
    context = ssl.create_default_context(cafile=world.cacert)
    context.load_cert_chain(world.stranger.cert, world.stranger.key)
    conn = http.client.HTTPSConnection("127.0.0.1", world.group.by_name("pi1").api.port,
                                       context=context, timeout=10)  # fmt: skip
    with pytest.raises((ssl.SSLError, ConnectionError)):
        conn.request("GET", "/healthz")
        conn.getresponse().read()
    conn.close()


# ---------------------------------------------------------------- submit


def test_submit_answers_after_commit_and_a_retry_creates_nothing(world):
    job_id = f"api-{uuid.uuid4().hex[:8]}"
    # A job no node can run stays put, so that the retry's effect (none) can be seen.
    spec = {"id": job_id, "command": ["true"], "constraints": {"camera": "yes"}}
    status, data, _ = world.call("POST", "/v1/jobs", "sam", spec)
    assert (status, data) == (201, {"id": job_id, "accepted": True})
    # Committed before the answer: the key is there on the very next read.
    keys = world.group.keys
    found = world.group.client.get_many([keys.queue(job_id), keys.job(job_id)])
    assert found, "the answer came before etcd had the job"
    before = world.job_keys()
    status, data, _ = world.call("POST", "/v1/jobs", "sam", spec, node="pi2")
    assert (status, data) == (200, {"id": job_id, "accepted": False})
    assert world.job_keys() == before  # nothing written
    assert world.api("sam").cancel(job_id)["cancel_requested"] is True


def test_submit_through_either_node_runs_the_job(world):
    api = world.api("sam", "pi2")
    job = api.submit("echo $((6 * 7))", env={"X": "1"}, max_attempts=2)
    assert job.accepted
    status = world.api("rita", "pi1").wait(job.id, timeout=30)
    assert status["state"] == "succeeded" and status["final"] is True
    assert status["spec"]["command"] == "echo $((6 * 7))"
    assert status["submitted_at"] is not None


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        ({"command": []}, "command"),
        ({"command": ["true"], "colour": "red"}, "colour"),
        ({"command": "echo hi"}, "shell"),
        ({"command": ["true"], "id": "../escape"}, "job id"),
        ({"command": ["true"], "id": 7}, "id"),
        ({"command": ["true"], "env": {"PICLUSTER_JOB_ID": "x"}}, "PICLUSTER_JOB_ID"),
        ({"command": ["true"], "priority": 5000}, "priority"),
        ({"command": ["true"], "env": {"X": "x" * 600_000}}, "the limit is"),
        ({"command": ["true"], "env": {"X": "x" * 2_000_000}}, "body size"),
    ],
)
def test_bad_input_is_one_line_400_and_etcd_is_unchanged(world, body, needle):
    before = world.job_keys()
    status, data, raw = world.call("POST", "/v1/jobs", "sam", body)
    assert status in (400, 413), data
    assert needle in one_line_error(status, data, raw), data
    assert world.job_keys() == before


@pytest.mark.parametrize(
    "path",
    ["/v1/jobs?state=bogus", "/v1/jobs?limit=0", "/v1/jobs?limit=x", "/v1/jobs?node=a%2Fb",
     "/v1/jobs/a%20b", "/v1/jobs?active=yes", "/v1/jobs/x/wait?timeout=-1",
     "/v1/jobs/x/wait?timeout=nan", "/v1/jobs/x/wait?timeout=301"],
)  # fmt: skip
def test_bad_queries_are_one_line_400(world, path):
    status, data, raw = world.call("GET", path, "rita")
    assert status == 400, data
    one_line_error(status, data, raw)


# ---------------------------------------------------------------- status, list, cancel, wait


def test_unknown_job_is_404_everywhere(world):
    for method, path in [("GET", "/v1/jobs/nope-1"), ("GET", "/v1/jobs/nope-1/wait?timeout=0"),
                         ("POST", "/v1/jobs/nope-1/cancel")]:  # fmt: skip
        status, data, raw = world.call(method, path, "sam")
        assert status == 404, (path, data)
        assert "not found" in one_line_error(status, data, raw)
    with pytest.raises(NotFound):
        world.api("rita").status("nope-1")
    status, data, raw = world.call("GET", "/v1/no-such-route", "sam")
    assert status == 404
    one_line_error(status, data, raw)


def test_cancel_a_running_job_and_wait_for_it(world):
    api = world.api("sam")
    job = api.submit(["sleep", "60"]).id
    wait_for(lambda: api.status(job)["state"] == "running", 20, what="running")
    early = api.wait(job, timeout=0.3)
    assert early["final"] is False and early["state"] == "running"
    answer = api.cancel(job)
    assert answer["cancel_requested"] is True
    done = api.wait(job, timeout=30)
    assert done["state"] == "cancelled"
    assert api.cancel(job)["cancel_requested"] is False  # final: nothing more to do


def test_list_filters_by_state_and_limit(world):
    api = world.api("sam")
    ids = [api.submit(["true"]).id for _ in range(3)]
    for i in ids:
        api.wait(i, timeout=30)
    done = {j["id"] for j in world.api("rita").jobs(state="succeeded")}
    assert set(ids) <= done
    assert len(world.api("rita").jobs(limit=2)) == 2
    status, data, _ = world.call("GET", "/v1/jobs?active=1", "rita")
    assert status == 200 and not {j["id"] for j in data["jobs"]} & set(ids)


def test_arrays_by_their_parent_id(world):
    api = world.api("sam", "pi2")
    parent = f"arr-{uuid.uuid4().hex[:6]}"
    made = api.submit_array(["true"], "0-4:2%2", id=parent)
    assert made == {"id": parent, "array": True, "size": 3, "accepted": 3,
                    "members": [f"{parent}.0", f"{parent}.2", f"{parent}.4"]}  # fmt: skip
    assert api.submit_array(["true"], "0-4:2%2", id=parent)["accepted"] == 0  # a retry
    done = world.api("rita").wait(parent, timeout=60)
    assert done["final"] is True and done["counts"] == {"succeeded": 3}
    sleepers = api.submit_array(["sleep", "60"], "3")["id"]
    answer = api.cancel(sleepers)
    assert answer["requested"] == 3 and answer["cancel_requested"] is True
    assert api.wait(sleepers, timeout=60)["counts"] == {"cancelled": 3}
    status, data, raw = world.call("POST", "/v1/jobs?array=0-9:0", "sam", {"command": ["true"]})
    assert status == 400 and "step" in one_line_error(status, data, raw)


def test_wait_wakes_when_the_job_ends(world):
    api = world.api("sam")
    job = api.submit(["sleep", "0.5"]).id
    status = world.api("rita", "pi2").wait(job, timeout=30)
    assert status["state"] == "succeeded"


def test_curl_as_the_docs_show_it(world):
    c = world.certs["sam"]
    out = subprocess.run(
        ["curl", "-sS", "--fail-with-body", "--cacert", world.cacert, "--cert", c.cert,
         "--key", c.key, "-H", "Content-Type: application/json",
         "-d", '{"command": ["hostname"]}', f"{world.url()}/v1/jobs"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["accepted"] is True


# ---------------------------------------------------------------- etcd down (last: it stops etcd)


def test_zz_etcd_down_is_503_in_one_line_and_health_still_answers(world):
    cluster: EtcdCluster = world.group.cluster
    cluster.members[0].stop()
    try:
        for method, path, body in [("GET", "/v1/jobs/x1", None),
                                   ("POST", "/v1/jobs", {"command": ["true"]})]:  # fmt: skip
            status, data, raw = world.call(method, path, "sam", body)
            assert status == 503, data
            one_line_error(status, data, raw)
        assert world.call("GET", "/healthz")[0] == 200
    finally:
        cluster.members[0].start()
        cluster.wait_healthy()
