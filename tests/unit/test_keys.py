"""The key layout: names that would escape their prefix never become keys."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from picluster_agent.errors import InvalidName
from picluster_agent.etcd.keys import (
    NODE_NAME_PATTERN,
    Keys,
    prefix_end,
    validate_job_id,
    validate_node_name,
)

K = Keys("/picluster")


VALID_NODE_NAMES = ["pi1", "pi-4", "a", "7", "x" * 63, "rack2-pi05"]
INVALID_NODE_NAMES = [
    "", "a/b", "..", ".hidden", "-x", "x-", "x" * 64, "a b", "pi\n1", "pi1\n", "ü", "a\x00",
    "Pi-4", "pi.lab", "node_07",  # the playbooks' rule: a host name, lower case
]  # fmt: skip


@pytest.mark.parametrize("name", VALID_NODE_NAMES)
def test_valid_node_names(name):
    assert validate_node_name(name) == name


@pytest.mark.parametrize("name", INVALID_NODE_NAMES)
def test_invalid_node_names(name):
    with pytest.raises(InvalidName):
        validate_node_name(name)


REPO = Path(__file__).resolve().parents[2]
# Where the playbooks check a node's name (an inventory host name).
PLAYBOOK_CHECKS = {
    "playbooks/validate.yml": "inventory_hostname is match(",
    "roles/flash/tasks/validate.yml": "flash_hostname is match(",
}


@pytest.mark.parametrize("path", sorted(PLAYBOOK_CHECKS))
def test_the_playbooks_check_node_names_by_the_agents_rule(path):
    text = (REPO / path).read_text()
    yaml.safe_load(text)  # still a valid file
    found = re.findall(re.escape(PLAYBOOK_CHECKS[path]) + r"'([^']*)'\)", text)
    assert found, f"no node-name check in {path}"
    for pattern in found:
        assert pattern == NODE_NAME_PATTERN
        # Ansible's `match` test is re.match: the same names pass and fail there.
        assert all(re.match(pattern, n) for n in VALID_NODE_NAMES)
        assert not any(re.match(pattern, n) for n in INVALID_NODE_NAMES)


@pytest.mark.parametrize("job_id", ["01JABCDEF", "build-42", "a.b_c-d", "x" * 128])
def test_valid_job_ids(job_id):
    assert validate_job_id(job_id) == job_id


@pytest.mark.parametrize("job_id", ["", "../x", "a/b", "x" * 129, "id with space", "*"])
def test_invalid_job_ids(job_id):
    with pytest.raises(InvalidName):
        validate_job_id(job_id)


@pytest.mark.parametrize("prefix", ["picluster", "/", "/a/", "//a", "/a/../b", "/a b", "/."])
def test_invalid_prefixes(prefix):
    with pytest.raises(InvalidName):
        Keys(prefix)


def test_layout():
    assert K.election(0x1A2B) == "/picluster/election/1a2b"
    assert K.node("pi1") == "/picluster/nodes/pi1"
    assert K.queue("j1") == "/picluster/queue/j1"
    assert K.job("j1") == "/picluster/jobs/j1"
    assert K.assign("pi1", "j1") == "/picluster/assign/pi1/j1"
    assert K.assign_dir("pi1") == "/picluster/assign/pi1/"
    assert K.result("j1") == "/picluster/results/j1"
    assert K.leader == "/picluster/leader"
    assert Keys.last_segment(K.assign("pi1", "j1")) == "j1"


def test_directories_do_not_match_longer_names():
    # "/nodes/pi1" must not be a prefix match for "/nodes/pi10": directories end in "/".
    assert not K.node("pi10").startswith(K.assign_dir("pi1"))
    assert K.assign_dir("pi1").endswith("/")


@pytest.mark.parametrize(("prefix", "end"), [("/a/", "/a0"), ("/p/queue/", "/p/queue0")])
def test_prefix_end(prefix, end):
    assert prefix_end(prefix) == end
