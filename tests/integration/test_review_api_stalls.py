"""Callers that stall mid-request, on a real server over real TLS against a real etcd:
one that stops taking its reply (api/listener.py, write bound) and one whose request body
stops arriving (api/jobs.py). Each request ends within its bound, so that such callers
cannot hold the API's connections, nor the files their replies come from, for ever."""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from apiserver import served_api

from picluster_agent import joblogs
from picluster_agent.api import health, jobs, logs
from picluster_agent.client import Client
from picluster_agent.config import Connection
from picluster_agent.etcd.adapter import EtcdClient
from picluster_agent.etcd.localcluster import EtcdCluster, wait_for
from picluster_agent.etcd.localpki import CertFiles
from picluster_agent.jobs.records import JobState
from picluster_agent.jobs.spec import build_spec
from picluster_agent.jobs.transitions import first_record
from picluster_agent.node.outputs import output_path

LIMIT = 3
WRITE = 1.5  # seconds a reply may wait for its caller
STALL = 1.5  # seconds a request body may stop arriving
JOB = "big-output"
OUTPUT_BYTES = 32 * 1024 * 1024  # far more than the sockets' buffers on both sides hold


@pytest.fixture
def api(etcd1: EtcdCluster, tmp_path: Path) -> Iterator[tuple[int, str, CertFiles, CertFiles, str]]:
    data_dir = tmp_path / "data"
    path = output_path(data_dir, JOB, 1, "stdout")
    os.makedirs(os.path.dirname(path))
    line = b"a line of a chatty job's output\n"
    with open(path, "wb") as f:  # written, not sparse: holes are output dropped by the cap
        f.write(line * (OUTPUT_BYTES // len(line)))
    with served_api(
        etcd1, tmp_path, [health, jobs, logs], data_dir=data_dir, max_connections=LIMIT,
        write_timeout=WRITE,
    ) as served:  # fmt: skip
        reader = served.caller("rita", "picluster-reader")
        sam = served.caller("sam", "picluster-submitter")
        yield served.port, served.cacert, reader, sam, path


def healthz(port: int, cacert: str) -> int:
    conn = http.client.HTTPSConnection(
        "127.0.0.1", port, context=ssl.create_default_context(cafile=cacert), timeout=10
    )
    try:
        conn.request("GET", "/healthz")
        response = conn.getresponse()
        json.loads(response.read())
        return response.status
    finally:
        conn.close()


def stalled_reader(port: int, cacert: str, who: CertFiles) -> ssl.SSLSocket:
    """A caller that asks for the whole output and then reads none of it."""
    context = ssl.create_default_context(cafile=cacert)
    context.load_cert_chain(who.cert, who.key)
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # a small window
    raw.connect(("127.0.0.1", port))
    sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
    sock.sendall(f"GET /v1/jobs/{JOB}/logs HTTP/1.1\r\nHost: pi1\r\n\r\n".encode())
    assert sock.recv(12) == b"HTTP/1.1 200"
    return sock


def open_on(path: str) -> int:
    """Descriptors of this process (the server runs here) open on `path`."""
    fds = os.listdir("/proc/self/fd")
    return sum(1 for fd in fds if os.path.realpath(f"/proc/self/fd/{fd}") == path)


def test_callers_that_stop_reading_are_cut_and_free_their_connections(api) -> None:
    port, cacert, rita, _, path = api
    held = [stalled_reader(port, cacert, rita) for _ in range(LIMIT)]
    try:
        assert healthz(port, cacert) == 503  # every connection held by a stalled reply
        began = time.monotonic()
        wait_for(lambda: healthz(port, cacert) == 200, WRITE + 10, what="connections freed")
        assert time.monotonic() - began < WRITE + 10
        wait_for(lambda: open_on(path) == 0, 5, what="the output file closed")
        for sock in held:  # the reply was cut short: the caller sees the end before all of it
            sock.settimeout(10)
            got = 0
            try:
                while chunk := sock.recv(1 << 20):
                    got += len(chunk)
            except (ConnectionResetError, ssl.SSLError):
                pass  # cut less politely
            assert got < OUTPUT_BYTES
    finally:
        for sock in held:
            sock.close()


def test_a_request_whose_body_stops_arriving_is_answered_408(api, monkeypatch) -> None:
    """A submitter gone mid-upload (its host lost power, a Content-Length larger than what
    it sends): the handler waited for the rest for ever, holding the connection (the idle
    bound counts only between requests). Now it answers 408 once the body has stopped for
    BODY_STALL, and aiohttp closes the connection once its lingering read (10 s) ends."""
    monkeypatch.setattr(jobs, "BODY_STALL", STALL)
    port, cacert, _, sam, _ = api
    context = ssl.create_default_context(cafile=cacert)
    context.load_cert_chain(sam.cert, sam.key)
    held = []
    for _ in range(LIMIT):
        raw = socket.create_connection(("127.0.0.1", port))
        sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
        head = b"POST /v1/jobs HTTP/1.1\r\nHost: pi1\r\nContent-Length: 100\r\n\r\n"
        sock.sendall(head + b'{"command": ')  # and no more
        held.append(sock)
    try:
        began = time.monotonic()
        for sock in held:
            sock.settimeout(STALL + 10)
            reply = sock.recv(4096)  # the old handler never answered
            assert reply.startswith(b"HTTP/1.1 408"), reply
            assert b'{"error": "the request body stopped arriving' in reply
        assert time.monotonic() - began < STALL + 10
    finally:
        for sock in held:
            sock.close()
    # aiohttp's lingering read ends within its 10 s whatever the caller did.
    wait_for(lambda: healthz(port, cacert) == 200, 15, what="connections freed")


def test_a_follower_cut_while_stalled_reads_the_rest_after_the_attempt_ended(
    api, etcd1: EtcdCluster
) -> None:
    """`picluster logs -f JOB | less`, and the reader pauses: the node cuts the stream after
    WRITE, and the job ends meanwhile. The follower went on only while the attempt was
    current, so it gave up with most of the output unread ("may be incomplete"), though the
    node still had all of it: it reads on from its offset."""
    port, cacert, rita, _, path = api
    etcd = EtcdClient(etcd1.endpoints)
    conn = Connection(endpoints=tuple(etcd1.endpoints), cacert=cacert, cert=rita.cert, key=rita.key)
    client = Client.from_connection(conn, etcd)
    keys = client.keys
    etcd.put(keys.node("pi1"), json.dumps({"api": f"https://127.0.0.1:{port}"}))
    record = first_record(JOB, build_spec(["chatty"]), 1, time.time())
    running = record.with_(state=JobState.RUNNING, attempt=1, node="pi1")
    etcd.put(keys.job(JOB), running.to_json())
    got: list[bytes] = []
    notes: list[str] = []

    def on_output(_stream: str, data: bytes) -> None:
        if not got:  # the reader pauses; the job ends meanwhile
            etcd.put(keys.job(JOB), running.with_(state=JobState.SUCCEEDED).to_json())
            time.sleep(WRITE + 3)
        got.append(data)

    try:
        status = joblogs.follow(
            client, JOB, on_output=on_output, on_note=notes.append, streams=["stdout"], attempt=1
        )
        assert status.state is JobState.SUCCEEDED
        assert sum(map(len, got)) == os.path.getsize(path), notes
        assert not [n for n in notes if "incomplete" in n]
    finally:
        etcd.close()
