"""A job's output from the node that runs it: `GET /v1/jobs/{id}/logs` over real TLS,
`picluster logs` (whole, -f, --stderr, --attempt), `picluster run` (live output, exit codes,
Ctrl-C, a master killed mid-run), on real etcd and real agents with their HTTPS APIs.

One cluster for the module (the master-kill test goes last: it leaves one agent dead)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from picluster_agent import joblogs
from picluster_agent.api import page
from picluster_agent.client import Client
from picluster_agent.etcd.localcluster import EtcdCluster, wait_for
from picluster_agent.etcd.localpki import CertFiles

from conftest import Agents, picluster

pytestmark = pytest.mark.timeout(180)


@dataclass
class World:
    group: Agents
    reader: CertFiles
    submitter: CertFiles

    @property
    def cacert(self) -> str:
        return self.group.apis.pki.cacert

    def conn(self, who: CertFiles | None = None) -> list[str]:
        who = who or self.submitter
        return [
            "--endpoints", self.group.cluster.endpoints_csv, "--prefix", self.group.prefix,
            "--cacert", self.cacert, "--cert", who.cert, "--key", who.key,
        ]  # fmt: skip

    def client(self, who: CertFiles | None = None) -> Client:
        who = who or self.submitter
        return Client(
            self.group.cluster.endpoints_csv,
            prefix=self.group.prefix,
            cacert=self.cacert,
            cert=who.cert,
            key=who.key,
        )

    def get(
        self, node: str, path: str, who: CertFiles | None = None, timeout: float = 30
    ) -> tuple[int, bytes, dict]:
        context = ssl.create_default_context(cafile=self.cacert)
        if who is not None:
            context.load_cert_chain(who.cert, who.key)
        port = self.group.by_name(node).api.port
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=timeout)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read(), dict(response.getheaders())
        finally:
            conn.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("logs")
    cluster = EtcdCluster(base / "etcd", 1).start()
    group = Agents(cluster, f"/logs-{uuid.uuid4().hex[:6]}", base / "agents")
    try:  # a setup that fails part-way leaves no agent or etcd behind either
        group.start("pi1", slots=4, with_api=True)
        group.start("pi2", slots=4, with_api=True)
        w = World(
            group,
            reader=group.apis.user("rita", "picluster-reader"),
            submitter=group.apis.user("sam", "picluster-submitter"),
        )
        # Setup only: agents start slowly on a machine shared by many test runs.
        group.wait_registered(2, timeout=60)
        group.wait_leader(timeout=60)
        for node in ("pi1", "pi2"):
            wait_for(lambda n=node: w.get(n, "/healthz")[0] == 200, 20, what="API up")
        yield w
    finally:
        group.stop_all()
        cluster.stop_all()


def submit_and_wait(world: World, command: list[str], **fields: object) -> str:
    client = world.client()
    job_id = client.submit(command, **fields).id
    status = client.wait([job_id], timeout=60)[job_id]
    assert status.state.final, status
    return job_id


BIG = "import sys\nfor i in range(20000): print(f'line {i:05d}')\nprint('to err', file=sys.stderr)"


def test_logs_prints_the_whole_output_from_the_node(world):
    job_id = submit_and_wait(world, [sys.executable, "-c", BIG])
    expected = "".join(f"line {i:05d}\n" for i in range(20000))  # 220 KB: past etcd's tail
    out = picluster("logs", *world.conn(world.reader), job_id)
    assert (out.returncode, out.stderr) == (0, ""), out.stderr
    assert out.stdout == expected
    err = picluster("logs", *world.conn(world.reader), "--stderr", "--attempt", "1", job_id)
    assert (err.returncode, err.stdout) == (0, "to err\n"), err.stderr
    doc = json.loads(picluster("logs", *world.conn(), "-o", "json", job_id).stdout)
    assert doc["source"] == "node" and doc["output"] == expected
    assert joblogs.read_output(world.client(), job_id) == expected.encode()


def test_the_api_serves_raw_and_json_and_refuses_bad_input(world):
    job_id = submit_and_wait(world, ["sh", "-c", "printf 'a\\nb\\n'; printf 'oops' >&2; exit 4"])
    node = world.client().status(job_id).record.node
    status, body, headers = world.get(node, f"/v1/jobs/{job_id}/logs", world.reader)
    assert (status, body, headers["X-Picluster-Attempt"]) == (200, b"a\nb\n", "1")
    path = f"/v1/jobs/{job_id}/logs?stream=stderr&format=json&offset=1"
    status, body, _ = world.get(node, path, world.reader)
    lines = [json.loads(line) for line in body.splitlines()]
    assert lines[0] == {"offset": 1, "text": "ops"}
    assert lines[-1]["end"] and lines[-1]["outcome"]["exit_code"] == 4
    other = "pi2" if node == "pi1" else "pi1"
    for where, path, who, want in [
        (other, f"/v1/jobs/{job_id}/logs", world.reader, 404),  # it did not run there
        (node, f"/v1/jobs/{job_id}/logs", None, 401),  # no certificate
        (node, f"/v1/jobs/{job_id}/logs?stream=stdin", world.reader, 400),
        (node, f"/v1/jobs/{job_id}/logs?attempt=0", world.reader, 400),
        (node, f"/v1/jobs/{job_id}/logs?offset=-1", world.reader, 400),
        (node, f"/v1/jobs/{job_id}/logs?follow=yes", world.reader, 400),
        (node, f"/v1/jobs/{job_id}/logs?format=xml", world.reader, 400),
        (node, "/v1/jobs/no-such-job/logs", world.reader, 404),
        (node, "/v1/jobs/..%2Fx/logs", world.reader, 400),
    ]:
        status, body, _ = world.get(where, path, who)
        data = json.loads(body)
        assert (status, list(data)) == (want, ["error"]), (path, status, body)
        assert "\n" not in data["error"]


def test_logs_follow_streams_lines_as_they_are_written(world, tmp_path):
    go_on = tmp_path / "go-on"  # the job goes on only once the follower has shown line 1
    script = f"echo tick 1; until [ -e {go_on} ]; do sleep 0.02; done; echo tick 2; exit 3"
    job_id = world.client().submit(["sh", "-c", script]).id
    proc = subprocess.Popen(
        [sys.executable, "-m", "picluster_agent", "logs", "-f", *world.conn(world.reader), job_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"tick 1\n"
    go_on.touch()
    assert proc.stdout.read() == b"tick 2\n"
    assert proc.wait(30) == 3  # the job's exit code


def test_follow_ends_quietly_when_its_reader_goes_away(world):
    job_id = world.client().submit(["sh", "-c", "while :; do echo y; sleep 0.05; done"]).id
    proc = subprocess.Popen(
        [sys.executable, "-m", "picluster_agent", "logs", "-f", *world.conn(world.reader), job_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline() == b"y\n"
    proc.stdout.close()  # `picluster logs -f ID | head -1`
    assert proc.wait(30) == 0
    assert proc.stderr.read() == b""
    world.client().cancel(job_id)


def opening_a_pipe(pid: int) -> bool:
    """Whether a thread of `pid` waits in the open of a named pipe for a writer."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            if (task / "wchan").read_text() == "wait_for_partner":
                return True
        except OSError:
            continue  # the thread ended meanwhile
    return False


def test_a_read_that_blocks_stalls_its_request_alone(world):
    """Output files are read in threads of their own: a read that does not return (a slow
    card; here a named pipe in place of an output file, whose open waits for a writer)
    leaves the node's other requests answered (it used to stop the event loop, and with it
    every request of the node, until the read returned)."""
    job_id = f"fifo-{uuid.uuid4().hex[:8]}"
    job_dir = world.group.by_name("pi1").data_dir / "jobs" / job_id
    job_dir.mkdir(parents=True)
    fifo = job_dir / "1.stdout"
    os.mkfifo(fifo)
    stuck: list[tuple[int, bytes, dict]] = []
    request = threading.Thread(
        target=lambda: stuck.append(world.get("pi1", f"/v1/jobs/{job_id}/logs", world.reader)),
        daemon=True,
    )
    request.start()
    try:
        wait_for(lambda: opening_a_pipe(world.group.by_name("pi1").pid), 15, what="open waits")
        assert request.is_alive()
        for path in ("/healthz", f"/v1/jobs/{job_id}/logs?attempt=2"):
            status, _, _ = world.get("pi1", path, world.reader, timeout=5)
            assert status in (200, 404), (path, status)
    finally:
        os.close(os.open(fifo, os.O_RDWR | os.O_NONBLOCK))  # a writer: the open returns
    request.join(30)
    assert stuck and stuck[0][0] == 200 and stuck[0][1] == b"", stuck
    fifo.unlink()
    job_dir.rmdir()


def test_a_stopped_follow_ends_while_the_job_is_quiet(world, tmp_path):
    # The status page stops its follow when the browser leaves: a job that writes nothing
    # more (its node sends heartbeats only) must not keep the follower, and the thread of
    # the API's pool it runs in, until the job writes again or ends.
    go_on = tmp_path / "go-on"
    quiet = f"echo hi; until [ -e {go_on} ]; do sleep 0.05; done"
    job_id = world.client().submit(["sh", "-c", quiet]).id
    stop, got, ended = threading.Event(), threading.Event(), threading.Event()

    def follow() -> None:
        try:
            joblogs.follow(
                world.client(world.reader), job_id, on_output=lambda *_: got.set(), stop=stop
            )
        finally:
            ended.set()

    threading.Thread(target=follow, daemon=True).start()
    try:
        assert got.wait(30)
        stop.set()
        assert ended.wait(10), "the follow went on after stop (until the job writes or ends)"
    finally:
        go_on.touch()


def open_on(pid: int, path: Path) -> bool:
    """Whether process `pid` holds `path` open."""
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd) == str(path):
                return True
        except OSError:
            continue  # closed meanwhile
    return False


def test_a_raw_follow_ends_once_its_caller_left_a_quiet_job(world, tmp_path):
    # `curl ...?follow=1&format=raw` then Ctrl-C: raw output has no heartbeat to fail on,
    # so the node must look whether its caller is still there, or it reads the file every
    # FOLLOW_POLL, its descriptor open, for as long as the job runs without writing.
    go_on = tmp_path / "go-on"
    quiet = f"echo hi; until [ -e {go_on} ]; do sleep 0.05; done"
    job_id = world.client().submit(["sh", "-c", quiet]).id
    try:
        wait_for(lambda: world.client().status(job_id).record.node, 30, what="job assigned")
        agent = world.group.by_name(world.client().status(job_id).record.node)
        context = ssl.create_default_context(cafile=world.cacert)
        context.load_cert_chain(world.reader.cert, world.reader.key)
        conn = http.client.HTTPSConnection("127.0.0.1", agent.api.port, context=context)
        conn.request("GET", f"/v1/jobs/{job_id}/logs?follow=1&format=raw")
        response = conn.getresponse()
        assert (response.status, response.read(3)) == (200, b"hi\n")
        output = agent.data_dir.resolve() / "jobs" / job_id / "1.stdout"
        assert open_on(agent.pid, output)
        conn.close()
        wait_for(lambda: not open_on(agent.pid, output), 10, what="the follow ended")
    finally:
        go_on.touch()


def test_a_live_tail_frees_its_slot_once_the_browser_left(world, tmp_path):
    # The status page's /v1/ui/jobs/{id}/live: at most LIVE_TAILS followers at once, each
    # in a thread of the API's pool. A browser that leaves a quiet job's output must free
    # its slot (once its follower has ended, within a heartbeat), not hold it until the job
    # writes again: eight visits would refuse live output to everyone for as long.
    go_on = tmp_path / "go-on"
    quiet = f"echo hi; until [ -e {go_on} ]; do sleep 0.05; done"
    job_id = world.client().submit(["sh", "-c", quiet]).id
    context = ssl.create_default_context(cafile=world.cacert)
    context.load_cert_chain(world.reader.cert, world.reader.key)
    port = world.group.by_name("pi1").api.port

    def live() -> tuple[http.client.HTTPSConnection, int]:
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=30)
        conn.request("GET", f"/v1/ui/jobs/{job_id}/live")
        response = conn.getresponse()
        if response.status == 200:
            assert response.read(3) == b"hi\n"
        return conn, response.status

    def accepted() -> bool:
        conn, status = live()
        conn.close()
        return status == 200

    tails = []
    try:
        for _ in range(page.LIVE_TAILS):
            conn, status = live()
            tails.append(conn)
            assert status == 200
        tails.pop().close()  # one browser leaves: its follower still waits on the node
        conn, status = live()
        conn.close()
        assert status == 429
        for conn in tails:
            conn.close()
        wait_for(accepted, 20, what="a live tail accepted once the browsers left")
    finally:
        for conn in tails:
            conn.close()
        go_on.touch()


def test_a_caller_the_node_refuses_gets_one_line(world, tmp_path):
    nobody = world.group.apis.pki.issue("nobody")  # of the cluster CA, but no user
    done = submit_and_wait(world, ["echo", "secret"])
    go_on = tmp_path / "go-on"
    running = world.client().submit(["sh", "-c", f"until [ -e {go_on} ]; do sleep 0.05; done"])
    try:
        for argv in (["logs", done], ["logs", "-f", running.id]):
            out = picluster(*argv[:-1], *world.conn(nobody), argv[-1])
            assert (out.returncode, out.stdout) == (1, ""), out
            lines = out.stderr.strip().splitlines()
            assert len(lines) == 1 and "refused" in lines[0] and "nobody" in lines[0], lines
    finally:
        go_on.touch()


def test_follow_of_a_finished_job_prints_it_and_exits_with_its_code(world):
    job_id = submit_and_wait(world, ["sh", "-c", "echo done; kill -TERM $$"])
    out = picluster("logs", "-f", *world.conn(world.reader), job_id)
    assert (out.returncode, out.stdout) == (128 + signal.SIGTERM, "done\n"), out.stderr


def test_run_streams_both_streams_and_exits_with_the_jobs_code(world):
    script = "echo out; echo err >&2; exit 7"
    out = picluster("run", *world.conn(), "--", "sh", "-c", script)
    assert (out.returncode, out.stdout) == (7, "out\n"), out.stderr
    assert "err\n" in out.stderr
    killed = picluster("run", *world.conn(), "--shell", "--", "kill -KILL $$")
    assert killed.returncode == 128 + signal.SIGKILL, killed.stderr
    assert picluster("run", *world.conn(), "--", "true").returncode == 0
    # The same id again (a retry after a lost connection): that job, not a second one.
    job_id = f"run-{uuid.uuid4().hex[:6]}"
    first = picluster("run", *world.conn(), "--id", job_id, "--", "sh", "-c", "echo once; exit 4")
    again = picluster("run", *world.conn(), "--id", job_id, "--", "sh", "-c", "echo once; exit 4")
    assert (first.returncode, first.stdout) == (again.returncode, again.stdout) == (4, "once\n")
    assert "accepted before; following it" in again.stderr


def test_run_in_python(world):
    chunks: list[tuple[str, bytes]] = []
    result = joblogs.run(
        world.client(),
        ["sh", "-c", "echo hi; echo there >&2; exit 2"],
        on_output=lambda stream, data: chunks.append((stream, data)),
    )
    assert result.exit_code == 2 and result.status.state.value == "failed"
    assert b"".join(d for s, d in chunks if s == "stdout") == b"hi\n"
    assert b"".join(d for s, d in chunks if s == "stderr") == b"there\n"


def test_ctrl_c_cancels_the_job(world):
    proc = subprocess.Popen(
        [sys.executable, "-m", "picluster_agent", "run", *world.conn(), "--",
         "sh", "-c", "echo started; sleep 60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline() == b"started\n"  # the job runs
    proc.send_signal(signal.SIGINT)
    code = proc.wait(30)
    err = proc.stderr.read().decode()
    assert code == 130, err
    job_id = err.split("job ", 1)[1].split()[0]
    assert world.client().status(job_id).state.value == "cancelled"


def test_each_attempt_keeps_its_own_output_and_exit_code(world):
    script = 'echo "attempt $PICLUSTER_ATTEMPT"; [ "$PICLUSTER_ATTEMPT" = 2 ] || exit 3'
    job_id = submit_and_wait(world, ["sh", "-c", script], max_attempts=2, retry_backoff=0.1)
    first = picluster("logs", "-f", *world.conn(world.reader), "--attempt", "1", job_id)
    assert (first.returncode, first.stdout) == (3, "attempt 1\n"), first.stderr
    latest = picluster("logs", "-f", *world.conn(world.reader), job_id)
    assert (latest.returncode, latest.stdout) == (0, "attempt 2\n"), latest.stderr
    gone = picluster("logs", *world.conn(world.reader), "--attempt", "3", job_id)
    assert gone.returncode == 4 and "attempt 3" in gone.stderr


def test_follow_of_an_attempt_ended_before_its_node_restarted_exits_with_its_code(world, tmp_path):
    # The node's end line has no outcome once its agent restarted (it did not see the
    # attempt end): the attempt's code comes from etcd then, not a blanket 1.
    go_on = tmp_path / "go-on"
    script = 'echo "attempt $PICLUSTER_ATTEMPT"; [ "$PICLUSTER_ATTEMPT" = 1 ] && exit 3; '
    script += f"until [ -e {go_on} ]; do sleep 0.05; done"
    client = world.client()
    job_id = client.submit(["sh", "-c", script], max_attempts=5, retry_backoff=0.1).id
    try:
        wait_for(lambda: client.status(job_id).record.attempt >= 2, 30, what="attempt 2")
        node = joblogs.node_of_attempt(client.status(job_id), 1)
        agent = world.group.by_name(node)
        agent.terminate()
        agent.start()
        # A restart on a loaded machine: setup, as the module's own.
        world.group.wait_registered(2, timeout=120)
        wait_for(lambda: world.get(node, "/healthz")[0] == 200, 60, what="API up again")
        assert not client.status(job_id).state.final
        out = picluster("logs", "-f", *world.conn(world.reader), "--attempt", "1", job_id)
        assert (out.returncode, out.stdout) == (3, "attempt 1\n"), out.stderr
    finally:
        go_on.touch()


def test_run_goes_on_when_the_master_dies_elsewhere(world, tmp_path):
    """kill -9 of the master while the job runs on the other node: the same attempt goes on,
    its stream is not cut, and the result reaches etcd with the new master."""
    client = world.client()
    master = world.group.wait_leader().name
    worker = "pi2" if master == "pi1" else "pi1"
    go_on = tmp_path / "go-on"
    client.drain(master)
    script = f"echo start $PICLUSTER_NODE; until [ -e {go_on} ]; do sleep 0.05; done; echo done"
    proc = subprocess.Popen(
        [sys.executable, "-m", "picluster_agent", "run", *world.conn(), "--", "sh", "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        assert proc.stdout.readline() == f"start {worker}\n".encode()
        os.kill(world.group.by_name(master).pid, signal.SIGKILL)
        world.group.wait_leader(other_than=master)
        go_on.touch()
        assert proc.wait(60) == 0
        assert proc.stdout.read() == b"done\n"
        assert "attempt 2" not in proc.stderr.read().decode()
    finally:
        client.undrain(master)
        world.group.start(master, slots=4, with_api=True)  # for the tests below
        world.group.wait_registered(2)


def test_run_rides_out_a_master_killed_mid_run(world):
    """kill -9 of the master while its job runs: the job is run again on the other node,
    and `run` streams the new attempt and exits with its code."""
    client = world.client()
    master = world.group.wait_leader().name
    other = "pi2" if master == "pi1" else "pi1"
    client.drain(other)  # the job goes to the master, the node about to die
    proc = subprocess.Popen(
        [sys.executable, "-m", "picluster_agent", "run", *world.conn(), "--",
         "sh", "-c", "echo start $PICLUSTER_NODE; sleep 2; echo done; exit 5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline() == f"start {master}\n".encode()
    client.undrain(other)
    os.kill(world.group.by_name(master).pid, signal.SIGKILL)
    code = proc.wait(120)
    out, err = proc.stdout.read().decode(), proc.stderr.read().decode()
    assert code == 5, err
    assert out == f"start {other}\ndone\n", (out, err)
    assert f"attempt 2 on node {other}" in err


def test_node_gone_falls_back_to_the_tail_in_etcd(world):
    """Last: it kills the agent left by the test above."""
    job_id = submit_and_wait(world, ["echo", "kept in etcd"])
    node = world.client().status(job_id).record.node
    os.kill(world.group.by_name(node).pid, signal.SIGKILL)
    out = picluster("logs", *world.conn(), job_id)
    assert (out.returncode, out.stdout) == (0, "kept in etcd\n"), out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and f"node {node} is not reachable" in lines[0], out.stderr
    assert "kept in etcd" in lines[0]
