"""Bad input is refused with one line on stderr and a documented exit code (guarantee 7)."""

from __future__ import annotations

import pytest

from picluster_agent.etcd.localcluster import free_port


def _one_line_error(result, code: int, *needles: str) -> None:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("picluster: ")
    for needle in needles:
        assert needle in lines[0]


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["--name", "a/b"], 2, "invalid node name"),
        (["--name", "../etc"], 2, "invalid node name"),
        (["--name", "x" * 64], 2, "invalid node name"),
        (["--lease-ttl", "1"], 2, "below etcd's minimum"),
        (["--slots", "0"], 2, "slots must be at least 1"),
        (["--prefix", "picluster"], 2, "invalid key prefix"),
        (["--prefix", "/a/../b"], 2, "invalid key prefix"),
        (["--label", "novalue"], 2, "expected KEY=VALUE"),
        (["--cacert", "/nonexistent/ca.pem"], 2, "cannot read TLS CA file"),
        (["--cert", "/etc/hostname"], 2, "needs both --cert and --key"),
    ],
)
def test_agent_refuses_bad_input(cli, etcd1, args, code, needle):
    result = cli("agent", "--endpoints", etcd1.endpoints_csv, "--name", "ok", *args)
    _one_line_error(result, code, needle)


def test_unreachable_cluster_is_exit_3(cli):
    dead = f"http://127.0.0.1:{free_port()}"
    for command in (["agent", "--name", "pi1"], ["nodes"], ["master"]):
        result = cli(*command, "--endpoints", dead)
        _one_line_error(result, 3, "cluster unreachable")


def test_bad_endpoint_url_is_exit_2(cli):
    _one_line_error(cli("nodes", "--endpoints", "ftp://host:1"), 2, "bad etcd endpoint")


def test_config_file_errors(cli, tmp_path, etcd1):
    bad = tmp_path / "agent.yaml"
    bad.write_text("endpoints: [x]\nslot: 3\n")
    _one_line_error(cli("nodes", "--config", str(bad)), 2, "unknown setting(s) slot")
    bad.write_text("endpoints: [\n")
    _one_line_error(cli("nodes", "--config", str(bad)), 2, "not valid YAML")
    _one_line_error(cli("nodes", "--config", str(tmp_path / "missing.yaml")), 2, "not found")


def test_config_precedence_flags_over_env_over_file(cli, tmp_path, etcd1):
    dead = f"http://127.0.0.1:{free_port()}"
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"endpoints: [{dead}]\nprefix: /from-file\n")
    # File alone: points at a dead endpoint.
    assert cli("nodes", "--config", str(cfg)).returncode == 3
    # Environment beats the file.
    env = {"PICLUSTER_ENDPOINTS": etcd1.endpoints_csv}
    assert cli("nodes", "--config", str(cfg), env=env).returncode == 0
    # A flag beats the environment.
    flagged = cli("nodes", "--config", str(cfg), "--endpoints", dead, env=env)
    assert flagged.returncode == 3


def test_no_master_elected_is_exit_4(cli, etcd1):
    result = cli("master", "--endpoints", etcd1.endpoints_csv, "--prefix", "/empty")
    _one_line_error(result, 4, "no master")


def test_proxy_variables_never_carry_cluster_traffic(cli, etcd1):
    # A Pi behind an HTTP proxy has these set for apt; etcd must still be reached directly.
    # (198.51.100.1 is TEST-NET-2: a connection there would fail.)
    proxy = "http://198.51.100.1:3128"
    env = {name: proxy for name in ("http_proxy", "https_proxy", "grpc_proxy", "HTTPS_PROXY")}
    result = cli("nodes", "--endpoints", etcd1.endpoints_csv, "--prefix", "/proxied", env=env)
    assert result.returncode == 0, result.stderr
