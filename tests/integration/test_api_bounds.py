"""The API listener's bounds on callers (api/listener.py), on a real server over real TLS:
connections past the limit are answered 503 and closed, a handshake never begun and a
connection left idle are dropped. The server runs here with small bounds, against a real
etcd; the agent's own are the module's constants."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from apiserver import served_api

from picluster_agent.api_client import ApiClient
from picluster_agent.errors import NotFound
from picluster_agent.etcd.localcluster import EtcdCluster, wait_for
from picluster_agent.etcd.localpki import CertFiles

LIMIT = 3
HANDSHAKE = 1.0
IDLE = 1.5


@pytest.fixture
def api(etcd1: EtcdCluster, tmp_path: Path) -> Iterator[tuple[int, str, CertFiles]]:
    with served_api(
        etcd1, tmp_path, max_connections=LIMIT, handshake_timeout=HANDSHAKE, idle_timeout=IDLE
    ) as served:
        yield served.port, served.cacert, served.caller("sam", "picluster-submitter")


def connect(port: int, cacert: str) -> http.client.HTTPSConnection:
    conn = http.client.HTTPSConnection(
        "127.0.0.1", port, context=ssl.create_default_context(cafile=cacert), timeout=10
    )
    conn.connect()
    return conn


def healthz(conn: http.client.HTTPSConnection) -> tuple[int, dict]:
    conn.request("GET", "/healthz")
    response = conn.getresponse()
    return response.status, json.loads(response.read())


def closed_by_server(sock: socket.socket | ssl.SSLSocket, within: float) -> float:
    """Seconds until the server closed `sock` (waits at most `within`)."""
    began = time.monotonic()
    sock.settimeout(within)
    with contextlib.suppress(ConnectionResetError, ssl.SSLError):  # closed less politely
        assert sock.recv(1) == b"", "the server sent something"
    return time.monotonic() - began


def test_connections_past_the_limit_are_answered_503_and_closed(api) -> None:
    port, cacert, _ = api
    held = [connect(port, cacert) for _ in range(LIMIT)]
    for conn in held:
        assert healthz(conn)[0] == 200  # each a kept-alive connection, counted
    status, body = healthz(connect(port, cacert))
    assert status == 503
    assert body == {"error": f"too many connections to this node's API (at most {LIMIT})"}
    held.pop().close()
    wait_for(lambda: healthz(connect(port, cacert))[0] == 200, 10, what="room again")
    for conn in held:
        conn.close()


def test_a_handshake_never_begun_and_an_idle_connection_are_dropped(api) -> None:
    port, cacert, _ = api
    with socket.create_connection(("127.0.0.1", port)) as raw:  # no ClientHello
        assert closed_by_server(raw, 10) < HANDSHAKE + 3
    conn = connect(port, cacert)
    assert healthz(conn)[0] == 200
    assert conn.sock is not None
    assert closed_by_server(conn.sock, 10) < IDLE + 3  # kept alive, then left idle
    conn.close()


def test_a_cancel_goes_through_after_the_server_closed_the_idle_connection(api) -> None:
    """ApiClient keeps its connection; the server closes it once idle. A cancel, repeatable
    (a second request changes nothing), is sent again on a fresh one."""
    port, cacert, sam = api
    client = ApiClient(f"https://127.0.0.1:{port}", cacert=cacert, cert=sam.cert, key=sam.key)
    wait_for(lambda: client.jobs() == [], 10, what="sam admitted")  # keeps the connection
    conn = client._conn
    assert conn is not None and conn.sock is not None
    closed_by_server(conn.sock, 10)  # idle: closed by the server
    with pytest.raises(NotFound):  # not Unavailable: asked again, and the job is unknown
        client.cancel("never-submitted")
    client.close()


def test_a_long_poll_outlasts_the_idle_timeout(api) -> None:
    """Idle means between requests: a wait that takes longer than IDLE is not cut."""
    port, cacert, sam = api
    client = ApiClient(f"https://127.0.0.1:{port}", cacert=cacert, cert=sam.cert, key=sam.key)
    wait_for(lambda: client.jobs() == [], 10, what="sam admitted")
    job = client.submit(["true"]).id  # no agent here: it stays queued
    client.close()
    context = ssl.create_default_context(cafile=cacert)
    context.load_cert_chain(sam.cert, sam.key)
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=30)
    began = time.monotonic()
    conn.request("GET", f"/v1/jobs/{job}/wait?timeout={2 * IDLE}")
    response = conn.getresponse()
    assert response.status == 200 and json.loads(response.read())["final"] is False
    assert time.monotonic() - began >= 2 * IDLE
    conn.close()


def test_connections_opened_at_once_are_held_to_the_limit(api) -> None:
    """Connections whose handshakes were under way together count too: a client that opens
    many at once (a leaking pool, a burst) gets no more served than one that opens them one
    by one. Here every TCP connection exists before the first handshake begins."""
    port, cacert, _ = api
    context = ssl.create_default_context(cafile=cacert)
    raws = [socket.create_connection(("127.0.0.1", port)) for _ in range(2 * LIMIT)]
    conns = []
    for raw in raws:
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
        conn.sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
        conns.append(conn)
    try:
        served = sum(healthz(conn)[0] == 200 for conn in conns)
        assert served == LIMIT
    finally:
        for conn in conns:
            conn.close()
