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


class NoSpace(Unavailable):
    """etcd raised its NOSPACE alarm: it refuses every write that adds data (reads and
    deletes still work) until an operator frees space and disarms the alarm
    (docs/OPERATIONS.md). Nothing was written; retry later."""

    def __init__(self, details: str = "") -> None:
        super().__init__(
            "etcd is out of space (NOSPACE alarm): writes are refused until an operator "
            "compacts, defragments and disarms the alarm (docs/OPERATIONS.md)"
            + (f"; etcd said: {details}" if details else "")
        )


class TooManyRequests(Unavailable):
    """etcd is overloaded (its applied index lags too far behind): nothing was written;
    retry later."""


class RequestTooLarge(PiclusterError):
    """The request exceeds etcd's size limit (--max-request-bytes, 1.5 MiB by default): it
    can never be taken as it is; split it or make it smaller."""

    exit_code = 2


class PermissionDenied(ConfigError):
    """etcd's access control refused the request: the certificate's user lacks the role."""


class Compacted(PiclusterError):
    """A read at a revision that etcd has compacted away: read again at the current one."""


class NotLeader(PiclusterError):
    """The master's election key no longer compares: it was deposed and must step down."""


class SessionLost(PiclusterError):
    """The agent's lease expired or was revoked: every lease-bound assumption is void."""


class AgentFailure(PiclusterError):
    """A part of the agent failed in a way no retry cures: the whole agent stops with a
    non-zero exit (systemd starts it again), rather than live on with a part missing."""


class NotFound(PiclusterError):
    """No such job or node."""

    exit_code = 4
