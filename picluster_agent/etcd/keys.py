"""The whole etcd key layout, in one place. It is a public interface (see README).

    <prefix>/election/<lease-hex>     candidates; lowest create revision is the master
    <prefix>/leader                   the master's own record (JSON), written fenced
    <prefix>/nodes/<node>             registration (JSON), under the node's lease
    <prefix>/drain/<node>             present while the node is drained
    <prefix>/queue/<job-id>           submitted job spec (JSON), not yet taken by the master
    <prefix>/jobs/<job-id>            job record (JSON): spec + state
    <prefix>/rerun/<job-id>           present while a job waits for its next attempt (a
                                      retry's backoff, or re-queued after a lost node): the
                                      index that lists active jobs without finished records
    <prefix>/assign/<node>/<job-id>   a worker's inbox, under the worker's lease
    <prefix>/results/<job-id>         result of the last finished attempt (JSON)
    <prefix>/cancel/<job-id>          a cancellation request
    <prefix>/cron/<name>              a periodic job (JSON): expression, spec, last slot
    <prefix>/users/<name>             who may use the agents' HTTPS API: value = etcd role
                                      (written by the playbooks as etcd root)

Names are validated before they become part of a key, so that no node name or job id
can reach outside its prefix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import InvalidName

# A node's name is its host name: an RFC 1123 label in lower case. The playbooks check
# inventory names by this very pattern (playbooks/validate.yml, roles/flash/tasks/
# validate.yml); tests/unit/test_keys.py fails when they differ.
NODE_NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\Z"  # \Z: no newline after it
_NODE_NAME = re.compile(NODE_NAME_PATTERN)
_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
# An etcd user name as the playbooks make them: a person (`alice`), an agent
# (`picluster-agent-<node>`) or a node's group identity (`picluster-node-<node>`).
_USER_NAME = re.compile(r"[a-z][a-z0-9_.-]{0,127}")
_PREFIX = re.compile(r"(/[A-Za-z0-9_.-]+)+")


def validate_node_name(name: str) -> str:
    if not isinstance(name, str) or not _NODE_NAME.fullmatch(name):
        raise InvalidName(
            "node name",
            str(name),
            "use 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit",
        )
    return name


def validate_job_id(job_id: str) -> str:
    if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):
        raise InvalidName(
            "job id",
            str(job_id),
            "use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    return job_id


def validate_user_name(name: str) -> str:
    if not isinstance(name, str) or not _USER_NAME.fullmatch(name):
        raise InvalidName(
            "user name",
            str(name),
            "use 1-128 lowercase letters, digits, '.', '_' or '-', starting with a letter",
        )
    return name


def validate_prefix(prefix: str) -> str:
    if (
        not isinstance(prefix, str)
        or not _PREFIX.fullmatch(prefix)
        or any(part in (".", "..") for part in prefix.split("/"))
    ):
        raise InvalidName(
            "key prefix",
            str(prefix),
            "must look like /name or /a/b (letters, digits, '.', '_', '-'), no trailing '/'",
        )
    return prefix


def prefix_end(prefix: str) -> str:
    """The range end that covers every key starting with `prefix` (etcd's prefix rule)."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


@dataclass(frozen=True)
class Keys:
    """Key builder for one cluster prefix."""

    prefix: str = "/picluster"

    def __post_init__(self) -> None:
        validate_prefix(self.prefix)

    # Directories: always end in "/" so that "/nodes/pi1" never matches "/nodes/pi10".
    @property
    def election_dir(self) -> str:
        return f"{self.prefix}/election/"

    @property
    def nodes_dir(self) -> str:
        return f"{self.prefix}/nodes/"

    @property
    def drain_dir(self) -> str:
        return f"{self.prefix}/drain/"

    @property
    def queue_dir(self) -> str:
        return f"{self.prefix}/queue/"

    @property
    def jobs_dir(self) -> str:
        return f"{self.prefix}/jobs/"

    @property
    def rerun_dir(self) -> str:
        return f"{self.prefix}/rerun/"

    @property
    def assign_root(self) -> str:
        return f"{self.prefix}/assign/"

    @property
    def results_dir(self) -> str:
        return f"{self.prefix}/results/"

    @property
    def cancel_dir(self) -> str:
        return f"{self.prefix}/cancel/"

    @property
    def users_dir(self) -> str:
        return f"{self.prefix}/users/"

    @property
    def leader(self) -> str:
        return f"{self.prefix}/leader"

    def election(self, lease_id: int) -> str:
        return f"{self.election_dir}{lease_id:x}"

    def node(self, name: str) -> str:
        return self.nodes_dir + validate_node_name(name)

    def drain(self, name: str) -> str:
        return self.drain_dir + validate_node_name(name)

    def queue(self, job_id: str) -> str:
        return self.queue_dir + validate_job_id(job_id)

    def job(self, job_id: str) -> str:
        return self.jobs_dir + validate_job_id(job_id)

    def rerun(self, job_id: str) -> str:
        return self.rerun_dir + validate_job_id(job_id)

    def assign_dir(self, node: str) -> str:
        return f"{self.assign_root}{validate_node_name(node)}/"

    def assign(self, node: str, job_id: str) -> str:
        return self.assign_dir(node) + validate_job_id(job_id)

    def result(self, job_id: str) -> str:
        return self.results_dir + validate_job_id(job_id)

    def cancel(self, job_id: str) -> str:
        return self.cancel_dir + validate_job_id(job_id)

    @property
    def cron_dir(self) -> str:
        return f"{self.prefix}/cron/"

    def cron(self, name: str) -> str:
        return self.cron_dir + validate_job_id(name)

    def user(self, name: str) -> str:
        return self.users_dir + validate_user_name(name)

    @staticmethod
    def last_segment(key: str) -> str:
        return key.rsplit("/", 1)[-1]

    # Reading keys back. Anyone with write access can put any key under the prefix; these
    # return None for a key that no picluster writer makes (nested, empty, or a name that
    # breaks its rule), so that the reader can ignore it instead of acting on a part of it.

    @staticmethod
    def _name_under(directory: str, key: str, rule: re.Pattern[str]) -> str | None:
        if not key.startswith(directory):
            return None
        name = key[len(directory) :]
        return name if rule.fullmatch(name) else None

    def job_id_of(self, directory: str, key: str) -> str | None:
        """The job id of `<directory><id>` (queue/, jobs/, rerun/, results/, cancel/), if valid."""
        return self._name_under(directory, key, _JOB_ID)

    def user_of(self, key: str) -> str | None:
        """The user name of `users/<name>`, if valid."""
        return self._name_under(self.users_dir, key, _USER_NAME)

    def node_of(self, directory: str, key: str) -> str | None:
        """The node name of `<directory><node>` (nodes/, drain/), if valid."""
        return self._name_under(directory, key, _NODE_NAME)

    def assignment_of(self, key: str) -> tuple[str, str] | None:
        """(node, job id) of `assign/<node>/<id>`, if both are valid."""
        node, sep, job_id = key[len(self.assign_root) :].partition("/")
        if not key.startswith(self.assign_root) or not sep:
            return None
        if _NODE_NAME.fullmatch(node) and _JOB_ID.fullmatch(job_id):
            return node, job_id
        return None
