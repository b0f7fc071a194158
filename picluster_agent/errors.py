"""One error root; every failure the CLI or the API can report is a named subclass."""

from __future__ import annotations


class PiclusterError(Exception):
    """Root of every picluster error."""

    exit_code = 1


class ConfigError(PiclusterError):
    """Bad configuration or bad input given by a person: nothing was changed."""

    exit_code = 2


class InvalidName(ConfigError):
    """A node name, job id or label that would leave its key prefix or is malformed."""

    def __init__(self, kind: str, value: str, rule: str) -> None:
        super().__init__(f"invalid {kind} {value!r}: {rule}")
        self.kind = kind
        self.value = value


class Unavailable(PiclusterError):
    """No etcd endpoint answered (or none in time): the cluster cannot be reached."""

    exit_code = 3


class Indeterminate(Unavailable):
    """A write was sent but its outcome is unknown (the connection broke mid-request).

    The caller must re-read to learn whether it committed; picluster's writes are
    designed so that such a re-read gives a definite answer.
    """


class NotLeader(PiclusterError):
    """The master's election key no longer compares: it was deposed and must step down."""


class SessionLost(PiclusterError):
    """The agent's lease expired or was revoked: every lease-bound assumption is void."""


class NotFound(PiclusterError):
    """No such job or node."""

    exit_code = 4
