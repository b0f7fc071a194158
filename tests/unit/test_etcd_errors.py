"""How the etcd client reads gRPC failures: pure classification of status and details."""

from __future__ import annotations

import grpc
import pytest

from picluster_agent.etcd.adapter import _never_sent, _tls_failure


class Failure(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize(
    "details",
    [
        # A node killed mid-handshake (seen in the cluster scenario after `docker kill`).
        "handshaker shutdown",
        "failed to connect to all addresses; last error: UNAVAILABLE: ipv4:10.0.0.1:2379: "
        "Connection refused",
        "Socket closed",
        # An overloaded member dropping the connection mid-handshake (seen at an agent's
        # start under systemd in the picluster_agent scenario: the start job failed).
        "failed to connect to all addresses; last error: UNKNOWN: ipv4:172.17.0.2:2379: "
        "Handshake read failed (Endpoint closing)",
        # A member restarting during playbooks/rotate-certs.yml, and deadlines passing on a
        # loaded machine (the Molecule cluster scenario): `picluster submit` stopped there.
        "Handshake read failed (Shutting down endpoint)",
        "Handshake write failed",
    ],
)
def test_network_failures_are_not_tls_failures(details: str) -> None:
    # Not fatal: the client goes on to the next endpoint.
    assert _tls_failure(Failure(UNAVAILABLE, details)) is None


@pytest.mark.parametrize(
    ("details", "says"),
    [
        (
            "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:2379: "
            "Ssl handshake failed: SSL_ERROR_SSL: error:1000007d:SSL routines:"
            "OPENSSL_internal:CERTIFICATE_VERIFY_FAILED",
            "not signed by the given CA",
        ),
        ("Socket closed: TSI_DATA_CORRUPTED", "client certificate"),
        ("Ssl handshake failed: SSL_ERROR_SSL: WRONG_VERSION_NUMBER", "SSL_ERROR_SSL"),
    ],
)
def test_tls_refusals_are_named(details: str, says: str) -> None:
    reason = _tls_failure(Failure(UNAVAILABLE, details))
    assert reason is not None and says in reason


@pytest.mark.parametrize(
    ("code", "details", "never_sent"),
    [
        (UNAVAILABLE, "failed to connect to all addresses", True),
        (UNAVAILABLE, "Connection refused", True),
        (UNAVAILABLE, "handshaker shutdown", True),  # no request before the handshake ends
        (UNAVAILABLE, "Socket closed", False),  # may have been mid-request
        (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", False),
    ],
)
def test_which_failures_prove_a_write_was_not_applied(
    code: grpc.StatusCode, details: str, never_sent: bool
) -> None:
    assert _never_sent(Failure(code, details)) is never_sent
