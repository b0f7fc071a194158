"""The key layout: names that would escape their prefix never become keys."""

from __future__ import annotations

import pytest

from picluster_agent.errors import InvalidName
from picluster_agent.etcd.keys import Keys, prefix_end, validate_job_id, validate_node_name

K = Keys("/picluster")


@pytest.mark.parametrize("name", ["pi1", "Pi-4.lab", "node_07", "a", "x" * 63])
def test_valid_node_names(name):
    assert validate_node_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "a/b", "..", ".hidden", "-x", "x" * 64, "a b", "pi\n1", "ü", "a\x00"]
)
def test_invalid_node_names(name):
    with pytest.raises(InvalidName):
        validate_node_name(name)


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
