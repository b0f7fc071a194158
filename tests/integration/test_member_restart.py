"""A member that restarts while agents use it (a rolling upgrade, a certificate rotation).

While etcd restarts, its client port may accept a connection and then end the TLS handshake
("Handshake read failed (Socket closed)", "... (Endpoint closing)"). That is the member
going away, not a TLS misconfiguration: the client must move on to the next endpoint. Seen
in the lifecycle scenario's upgrade: agents whose first endpoint was the member being
upgraded took such an ending for a TLS fault, which no other endpoint can cure, kept asking
that member alone, and lost their leases (a job ran a third time).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from certs import TestCA

from picluster_agent.coord.session import Session, SessionState
from picluster_agent.etcd.adapter import EtcdClient, TLSFiles
from picluster_agent.etcd.localcluster import LEASE_TTL, EtcdCluster, ServerTLS, wait_for


class RestartingMember:
    """A TCP front for a real member: passes bytes through, or, while `restarting`, drops
    every connection and ends each new one right after the client's first TLS bytes."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.restarting = threading.Event()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = f"https://127.0.0.1:{self._server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def restart(self) -> None:
        self.restarting.set()
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            _end(c)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            if self.restarting.is_set():
                conn.recv(4096)  # the ClientHello; then the member is gone
                _end(conn)
                continue
            up = socket.create_connection(self.upstream)
            with self._lock:
                self._conns += [conn, up]
            for a, b in ((conn, up), (up, conn)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            _end(s)

    def close(self) -> None:
        self._server.close()
        self.restart()


def _end(s: socket.socket) -> None:
    """Close now, with a FIN the peer sees at once (close alone waits for a blocked recv)."""
    with contextlib.suppress(OSError):
        s.shutdown(socket.SHUT_RDWR)
    s.close()


@pytest.fixture
def tls_member(tmp_path: Path) -> Iterator[tuple[EtcdCluster, TLSFiles]]:
    ca = TestCA(tmp_path / "pki")
    server_cert, server_key = ca.issue("member", server=True)
    client_cert, client_key = ca.issue("agent")
    cluster = EtcdCluster(
        tmp_path / "etcd",
        1,
        tls=ServerTLS(ca.cacert, server_cert, server_key, client_cert, client_key),
    ).start()
    yield cluster, TLSFiles(ca.cacert, client_cert, client_key)
    cluster.stop_all()


def test_a_session_outlives_a_member_that_ends_tls_handshakes_while_it_restarts(tls_member):
    cluster, tls = tls_member
    host, port = cluster.endpoints[0].removeprefix("https://").rsplit(":", 1)
    member = RestartingMember((host, int(port)))
    # Every agent lists the members in the same order: the restarting one comes first.
    client = EtcdClient([member.url, cluster.endpoints[0]], tls)
    session = Session(client, ttl=LEASE_TTL)
    try:
        assert client.current_endpoint == member.url
        # Right after a renewal, so that no call is under way: the next one must connect.
        renewed = session.safe_until()
        wait_for(lambda: session.safe_until() > renewed, LEASE_TTL, what="a renewal")
        member.restart()
        restarted_at = time.monotonic()
        # Longer than the lease could live without a renewal through the other endpoint.
        wait_for(
            lambda: (
                time.monotonic() > restarted_at + LEASE_TTL + 1
                or session.state is SessionState.LOST
            ),
            LEASE_TTL + 5,
            what="a TTL with the first member restarting",
        )
        assert session.state is not SessionState.LOST
        assert client.time_to_live(session.lease_id) > 0
        assert client.current_endpoint == cluster.endpoints[0]
    finally:
        session.close()
        member.close()
        client.close()
