"""A caller that stops taking its reply (api/listener.py, write bound), on a real server
over real TLS against a real etcd: the connection is cut once the reply has waited for it
longer than the bound, so that callers who never read cannot hold the API's connections,
nor the files their replies come from, for ever."""

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

from picluster_agent.api import health, logs
from picluster_agent.api.auth import UserDirectory
from picluster_agent.api.context import ApiContext
from picluster_agent.api.server import ApiServer, server_tls
from picluster_agent.client import Client
from picluster_agent.config import AgentConfig, Connection
from picluster_agent.etcd.adapter import EtcdClient
from picluster_agent.etcd.keys import Keys
from picluster_agent.etcd.localcluster import EtcdCluster, free_port, wait_for
from picluster_agent.etcd.localpki import CertFiles, LocalPKI
from picluster_agent.node.outputs import output_path

LIMIT = 3
WRITE = 1.5  # seconds a reply may wait for its caller
JOB = "big-output"
OUTPUT_BYTES = 32 * 1024 * 1024  # far more than the sockets' buffers on both sides hold


@pytest.fixture
def api(etcd1: EtcdCluster, tmp_path: Path) -> Iterator[tuple[int, str, CertFiles, str]]:
    pki = LocalPKI(tmp_path / "pki")
    files = pki.issue("api-pi1", server=True)
    etcd = EtcdClient(etcd1.endpoints)
    reader = pki.issue("rita")
    etcd.put(Keys().user("rita"), "picluster-reader")
    data_dir = tmp_path / "data"
    path = output_path(data_dir, JOB, 1, "stdout")
    os.makedirs(os.path.dirname(path))
    line = b"a line of a chatty job's output\n"
    with open(path, "wb") as f:  # written, not sparse: holes are output dropped by the cap
        f.write(line * (OUTPUT_BYTES // len(line)))
    conn = Connection(endpoints=tuple(etcd1.endpoints))
    client = Client.from_connection(conn, etcd)
    users = UserDirectory(etcd, client.keys)
    cfg = AgentConfig(connection=conn, name="pi1", data_dir=str(data_dir))
    ctx = ApiContext(cfg, etcd, client, users)
    port = free_port()
    server = ApiServer(
        ctx, host="127.0.0.1", port=port, tls=server_tls(pki.cacert, files.cert, files.key),
        modules=[health, logs], max_connections=LIMIT, write_timeout=WRITE,
    )  # fmt: skip
    server.start()
    try:
        yield port, pki.cacert, reader, path
    finally:
        server.stop()
        etcd.close()


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
    port, cacert, rita, path = api
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
