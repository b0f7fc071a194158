"""Configuration merging: flags > environment > file > defaults, with clear refusals."""

from __future__ import annotations

import pytest

from picluster_agent import defaults
from picluster_agent.config import build_agent_config, build_connection, load_file, parse_labels
from picluster_agent.errors import ConfigError


def test_defaults(monkeypatch):
    for var in ("PICLUSTER_ENDPOINTS", "PICLUSTER_PREFIX"):
        monkeypatch.delenv(var, raising=False)
    conn = build_connection({})
    assert conn.endpoints == defaults.ENDPOINTS
    assert conn.prefix == defaults.PREFIX
    cfg = build_agent_config({}, conn, name="pi1")
    assert cfg.lease_ttl == defaults.LEASE_TTL and cfg.master is True and cfg.slots >= 1


def test_precedence(monkeypatch):
    file = {"endpoints": ["http://file:2379"], "prefix": "/file"}
    assert build_connection(file).endpoints == ("http://file:2379",)
    monkeypatch.setenv("PICLUSTER_ENDPOINTS", "http://env1:2379, http://env2:2379")
    monkeypatch.setenv("PICLUSTER_PREFIX", "/env")
    conn = build_connection(file)
    assert conn.endpoints == ("http://env1:2379", "http://env2:2379")
    assert conn.prefix == "/env"
    conn = build_connection(file, endpoints="http://flag:2379", prefix="/flag")
    assert conn.endpoints == ("http://flag:2379",) and conn.prefix == "/flag"


def test_agent_flags_override_file():
    conn = build_connection({"endpoints": ["http://x:1"]})
    file = {"name": "filename", "slots": 4, "labels": {"arch": "arm64"}, "master": False}
    cfg = build_agent_config(file, conn, name="flagname", slots=8, labels=["model=pi5"])
    assert cfg.name == "flagname" and cfg.slots == 8
    assert cfg.labels == {"arch": "arm64", "model": "pi5"}
    assert cfg.master is False
    assert build_agent_config(file, conn, master=None).master is False


@pytest.mark.parametrize(
    ("file", "flags", "message"),
    [
        ({}, {"lease_ttl": 1}, "below etcd's minimum"),
        ({"lease_ttl": "abc"}, {}, "must be an integer"),
        ({}, {"slots": 0}, "at least 1"),
        ({"master": "yes"}, {}, "true or false"),
        ({}, {"name": "bad/name"}, "invalid node name"),
        ({}, {"labels": ["k"]}, "KEY=VALUE"),
        ({}, {"labels": ["k=a/b"]}, "1-63 printable"),
        ({"kill_grace": "abc"}, {}, "kill_grace: must be a number of seconds"),  # issue 12
        ({"kill_grace": float("nan")}, {}, "kill_grace: must be a number of seconds"),
        ({"keep_finished_seconds": -1}, {}, "at least 0 seconds"),
        ({"slots": 2.5}, {}, "slots: must be an integer"),
        ({"log_level": "bogus"}, {}, "log_level: must be one of DEBUG"),
        ({"result_tail_bytes": 10**9}, {}, "result_tail_bytes: must be at most"),
        ({}, {"name": 5}, "name: must be a node name"),
        ({"address": "a b"}, {}, "without spaces"),
        ({"job_user": "Bad!"}, {}, "job_user: must be a user name"),
        ({"job_user": "no-such-user-here"}, {}, "no user 'no-such-user-here'"),
    ],
)
def test_refusals(file, flags, message):
    conn = build_connection({"endpoints": ["http://x:1"]})
    with pytest.raises(ConfigError, match=message):
        build_agent_config(file, conn, **{"name": "pi1", **flags})


def test_load_file(tmp_path):
    assert load_file(tmp_path / "missing.yaml", required=False) == {}
    with pytest.raises(ConfigError, match="not found"):
        load_file(tmp_path / "missing.yaml", required=True)
    f = tmp_path / "a.yaml"
    f.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_file(f, required=True)
    f.write_text("endpoints: [http://a:1]\nbogus: 1\n")
    with pytest.raises(ConfigError, match="unknown setting"):
        load_file(f, required=True)
    f.write_text("endpoints: [http://a:1]\nkill_grace: abc\n")
    with pytest.raises(ConfigError, match=r"a.yaml: kill_grace: must be a number"):
        load_file(f, required=False)  # an optional file that exists is still checked
    with pytest.raises(ConfigError, match="is not readable: Is a directory"):
        load_file(tmp_path, required=True)


def test_labels_mapping_and_list():
    assert parse_labels({"camera": "yes"}) == {"camera": "yes"}
    assert parse_labels(["arch=arm64", "model = pi4"]) == {"arch": "arm64", "model": "pi4"}
    assert parse_labels(None) == {}


def _cli_args(config, **given):
    from types import SimpleNamespace

    base = dict(endpoints=None, prefix=None, cacert=None, cert=None, key=None)
    return SimpleNamespace(config=str(config), **{**base, **given})


def test_a_node_user_who_cannot_read_the_agents_key_speaks_as_the_group(tmp_path, monkeypatch):
    """The CLI on a node (issue 15): the agent's key is root's; a member of the `picluster`
    group reads the group's key instead. Unreadable here is a path that does not exist:
    root reads every file whatever its mode."""
    from picluster_agent.config import from_flags

    for name in ("PICLUSTER_CERT", "PICLUSTER_KEY"):
        monkeypatch.delenv(name, raising=False)
    group_key = tmp_path / "group.key"
    group_key.write_text("k")
    config = tmp_path / "agent.yaml"

    def write(agent_key):
        config.write_text(
            f"cert: /x/agent.crt\nkey: {agent_key}\n"
            f"group_cert: {tmp_path}/group.crt\ngroup_key: {group_key}\n"
        )

    write("/nonexistent/agent.key")
    _, conn = from_flags(_cli_args(config))
    assert (conn.cert, conn.key) == (f"{tmp_path}/group.crt", str(group_key))
    # A certificate chosen by flag or environment is never replaced.
    _, conn = from_flags(_cli_args(config, cert="/mine.crt", key="/mine.key"))
    assert conn.key == "/mine.key"
    monkeypatch.setenv("PICLUSTER_KEY", "/env.key")
    assert from_flags(_cli_args(config))[1].key == "/env.key"
    monkeypatch.delenv("PICLUSTER_KEY")
    # Whoever reads the agent's key (root) stays the agent.
    agent_key = tmp_path / "agent.key"
    agent_key.write_text("k")
    write(agent_key)
    assert from_flags(_cli_args(config))[1].key == str(agent_key)


@pytest.mark.parametrize(
    ("file", "flags", "enabled", "url"),
    [
        ({}, {}, False, ""),  # a hand-run agent without a server certificate: no API
        ({"api_cert": "a.crt", "api_key": "a.key", "cacert": "ca.crt"}, {}, True,
         "https://pi1.lan:7443"),
        ({"api_cert": "a.crt", "api_key": "a.key", "cacert": "ca.crt"}, {"api_port": 0}, False, ""),
        ({"api_cert": "a.crt", "api_key": "a.key", "cacert": "ca.crt", "api_listen": "127.0.0.1"},
         {"api_port": 8443}, True, "https://127.0.0.1:8443"),
        ({"api_cert": "a.crt", "api_key": "a.key", "cacert": "ca.crt", "address": "fd00::1"}, {},
         True, "https://[fd00::1]:7443"),
    ],
)  # fmt: skip
def test_the_https_api_settings(file, flags, enabled, url):
    file = {"address": "pi1.lan", **file}
    cfg = build_agent_config(file, build_connection(file), name="pi1", **flags)
    assert (cfg.api_enabled, cfg.api_url) == (enabled, url)


@pytest.mark.parametrize(
    ("file", "message"),
    [
        ({"api_cert": "a.crt", "cacert": "ca.crt"}, "needs both"),
        ({"api_key": "a.key", "cacert": "ca.crt"}, "needs both"),
        ({"api_cert": "a.crt", "api_key": "a.key"}, "set cacert"),
    ],
)
def test_the_https_api_refuses_half_a_configuration(file, message):
    with pytest.raises(ConfigError, match=message):
        build_agent_config(file, build_connection(file), name="pi1")
