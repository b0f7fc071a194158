"""Which error class each etcd refusal becomes: pure classification of status and details."""

from __future__ import annotations

import grpc
import pytest

from picluster_agent.errors import (
    Compacted,
    NoSpace,
    PermissionDenied,
    PiclusterError,
    RequestTooLarge,
    TooManyRequests,
    Unavailable,
)
from picluster_agent.etcd.adapter import _connection_trouble, refusal

Code = grpc.StatusCode


class Failure(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@pytest.mark.parametrize(
    ("code", "details", "kind", "retry_later"),
    [
        (Code.RESOURCE_EXHAUSTED, "etcdserver: mvcc: database space exceeded", NoSpace, True),
        (Code.RESOURCE_EXHAUSTED, "etcdserver: too many requests", TooManyRequests, True),
        (Code.INVALID_ARGUMENT, "etcdserver: request is too large", RequestTooLarge, False),
        (
            Code.RESOURCE_EXHAUSTED,
            "grpc: received message larger than max (2097300 vs. 2097152)",
            RequestTooLarge,
            False,
        ),
        (Code.PERMISSION_DENIED, "etcdserver: permission denied", PermissionDenied, False),
        (Code.INVALID_ARGUMENT, "etcdserver: user name is empty", PermissionDenied, False),
        (Code.UNAUTHENTICATED, "etcdserver: invalid auth token", PermissionDenied, False),
        (
            Code.OUT_OF_RANGE,
            "etcdserver: mvcc: required revision has been compacted",
            Compacted,
            False,
        ),
        (Code.FAILED_PRECONDITION, "something new", PiclusterError, False),
    ],
)
def test_each_refusal_has_its_class(
    code: grpc.StatusCode, details: str, kind: type, retry_later: bool
) -> None:
    error = refusal(Failure(code, details))
    assert type(error) is kind
    # "Try again later" refusals are Unavailable: every retry loop already handles those,
    # and the CLI's exit code 3 says "nothing was accepted".
    assert isinstance(error, Unavailable) is retry_later
    assert details in str(error) or kind is NoSpace


@pytest.mark.parametrize(
    ("code", "details", "trouble"),
    [
        (Code.UNAVAILABLE, "etcdserver: leader changed", True),
        (Code.DEADLINE_EXCEEDED, "Deadline Exceeded", True),
        # etcd's side of the client's own deadline (seen while a leader was elected): the
        # request may have been applied; before, it was taken for a refusal.
        (Code.UNKNOWN, "context deadline exceeded", True),
        (Code.UNKNOWN, "something else", False),
        (Code.INVALID_ARGUMENT, "etcdserver: request is too large", False),
    ],
)
def test_what_is_connection_trouble_and_what_is_a_refusal(
    code: grpc.StatusCode, details: str, trouble: bool
) -> None:
    assert _connection_trouble(Failure(code, details)) is trouble
