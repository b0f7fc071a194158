"""Bad input is refused: one line on stderr, exit 2, nothing on stdout, nothing changed in etcd.

The walk covers every subcommand and every flag of the real parser (`cli.build_parser()`):
a flag that has no bad values listed in BAD below fails `test_every_flag_has_bad_values`, so
a new flag cannot go unchecked. Every call runs in this process against one real etcd whose
store revision is compared before and after each call (any put or delete moves it). Each
command's base arguments would change etcd, or start real work, if the bad value slipped
through; `test_base_invocations_are_valid` proves they are accepted on their own.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from picluster_agent import config, defaults
from picluster_agent.cli import app as cli
from picluster_agent.cli import argtypes
from picluster_agent.client import Client
from picluster_agent.etcd.adapter import EtcdClient
from picluster_agent.etcd.localcluster import EtcdCluster, free_port

REPO = Path(__file__).resolve().parents[2]
PREFIX = f"/walk-{uuid.uuid4().hex[:6]}"
JOB = "walk-job"
NODE = "walk-node"


class Ran(BaseException):
    """Real work would have started: the bad value was not refused."""


@dataclass(frozen=True)
class Result:
    code: int | str
    stdout: str
    stderr: str


@dataclass(frozen=True)
class With:
    """A bad value that needs other arguments beside it."""

    value: str
    extra: tuple[str, ...] = ()


# ---------------------------------------------------------------- the module's world


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[dict[str, object]]:
    base = tmp_path_factory.mktemp("walk")
    cluster = EtcdCluster(base / "etcd", 1).start()
    client = Client(cluster.endpoints_csv, prefix=PREFIX)
    client.submit(["true"], id=JOB)  # no agent: it stays queued, so cancel would write
    client.drain(NODE, force=True)  # so that undrain would delete

    files = base / "files"
    files.mkdir()
    (files / "a-dir").mkdir()
    (files / "empty").write_text("")
    (files / "not-pem").write_text("hello\n")
    pem = files / "pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    (files / "not-json").write_text("{not json\n")
    (files / "not-objects.jsonl").write_text("[1, 2]\n")
    (files / "bad-spec.jsonl").write_text('{"command": []}\n')
    (files / "inventory.yml").write_text("all: {}\n")
    (files / "not-yaml.yaml").write_text("endpoints: [\n")
    (files / "list.yaml").write_text("- a\n")
    (files / "unknown.yaml").write_text("slot: 3\n")
    (files / "binary.yaml").write_bytes(b"\xff\xfe\x00")
    yield {"cluster": cluster, "files": files, "pem": str(pem)}
    cluster.stop_all()


@pytest.fixture(autouse=True)
def isolated(world, tmp_path, monkeypatch) -> Iterator[None]:
    """No user or node config, no PICLUSTER_* settings, no real agent/demo/playbook run."""
    for name in list(os.environ):
        if name.startswith("PICLUSTER_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(defaults, "CONFIG_FILE", str(tmp_path / "no-agent.yaml"))

    def ran(what: str):
        def run(*_args: object, **_kwargs: object) -> None:
            raise Ran(what)

        return run

    from picluster_agent import joblogs
    from picluster_agent.cli import demo
    from picluster_agent.duties import agent

    monkeypatch.setattr(agent.Agent, "run", ran("agent"))
    monkeypatch.setattr(demo, "run_demo", ran("demo"))
    monkeypatch.setattr(joblogs, "follow", ran("run"))  # run's streaming: after its submit
    import ansible_runner  # the test extra installs the provision extra too

    monkeypatch.setattr(ansible_runner, "run", ran("provision"))
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    root = logging.getLogger()
    root_handlers, root_level = list(root.handlers), root.level
    yield
    for s, h in handlers.items():
        signal.signal(s, h)
    root.handlers[:], root.level = root_handlers, root_level


def etcd_state(world) -> tuple[int, list[tuple[str, bytes, int]]]:
    """The store revision (moved by any write anywhere) and every key under "/"."""
    client = EtcdClient(world["cluster"].endpoints)
    try:
        kvs, revision = client.get_prefix("/")
        return revision, [(kv.key, kv.value, kv.mod_revision) for kv in kvs]
    finally:
        client.close()


def run(argv: list[str]) -> Result:
    """`picluster ARGV` in this process: exit code (or what would have run), stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    code: int | str
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(argv)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except Ran as e:
            code = f"ran {e}"
    return Result(code, out.getvalue(), err.getvalue())


def assert_refused(world, argv: list[str], code: int = 2) -> str:
    before = etcd_state(world)
    result = run(argv)
    after = etcd_state(world)
    shown = f"picluster {' '.join(map(repr, argv))} -> {result}"
    assert result.code == code, shown
    assert result.stdout == "", shown
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("picluster: "), shown
    assert "Traceback" not in result.stderr, shown
    assert after == before, f"etcd changed: {shown}"
    return lines[0]


# ---------------------------------------------------------------- what is bad, flag by flag


def bad_values(files: Path, pem: str) -> dict[str, list[str | With]]:
    """Bad values per option (or per `command:option` / `command:positional` where they
    differ between commands)."""
    f = files
    missing = str(f / "missing")
    through_a_file = str(f / "empty" / "x")
    job_ids = ["", " ", "a/b", "../x", ".x", "-x", "x" * 129, "a b", "é"]
    node_names = ["", " ", "a/b", "../x", ".x", "-x", "x" * 64, "a b", "é"]
    labels = ["", "novalue", "=v", "k=", "a/b=c", "k=a/b", "k=" + "x" * 64, "k=\x07"]
    durations = ["", "abc", "-5", "-1m", "5x", "1m1h", "9" * 400]
    table: dict[str, list[str | With]] = {
        # connection, on every command that talks to etcd
        "--config": [
            "",
            missing,
            str(f / "a-dir"),
            through_a_file,
            str(f / "not-yaml.yaml"),
            str(f / "list.yaml"),
            str(f / "unknown.yaml"),
            str(f / "binary.yaml"),
        ],
        "--endpoints": [
            "",
            " ",
            ",",
            "ftp://host:2379",
            "unix:///run/etcd.sock",
            "http://[::1:2379",
            "http://[::1",
            "http://[zz]:2379",
            "http://::1:2379",
            "http://[127.0.0.1]:2379",
            "http://host:99999",
            "http://host:0",
            "http://host:-1",
            "http://host:abc",
            "http://",
            "http://:2379",
            "http://host:2379/v3",
            "http://host:2379?x=1",
            "http://user@host:2379",
            "http://a b:2379",
            "http://127.0.0.1:2379,http://[::1",
        ],
        "--prefix": ["", " ", "noslash", "/", "/a/", "/a/../b", "/a/./b", "/a//b", "/a b", "/é"],
        "--cacert": ["", missing, str(f / "a-dir"), through_a_file, str(f / "not-pem")],
        "--cert": [
            With("", ("--key", pem)),
            With(missing, ("--key", pem)),
            With(str(f / "a-dir"), ("--key", pem)),
            With(str(f / "not-pem"), ("--key", pem)),
            pem,  # without --key
        ],
        "--key": [
            With("", ("--cert", pem)),
            With(missing, ("--cert", pem)),
            With(str(f / "a-dir"), ("--cert", pem)),
            With(str(f / "not-pem"), ("--cert", pem)),
            pem,  # without --cert
        ],
        "--output": ["", "JSON", "table", "YAML", "wide "],
        # agent
        "agent:--name": node_names,
        "--lease-ttl": ["", "abc", "1.5", "-1", "0", "1", "3", str(config.MAX_LEASE_TTL + 1)],
        "--etcd-election-timeout": ["", "abc", "0", "-1", "nan", "61"],
        "agent:--slots": ["", "abc", "1.5", "0", "-1"],
        "agent:--label": labels,
        "--data-dir": ["", " ", "\n", str(f / "empty"), through_a_file],
        "--address": ["", " ", "a b", "a\nb"],
        "--job-user": ["", "no-such-user-here", "Bad!", "x" * 40, "a b"],
        "--prefetch": ["", "abc", "1.5", "-1"],
        "--api-port": ["", "abc", "1.5", "-1", "65536"],
        "--api-listen": ["", " ", "a b", "a\nb"],
        # An API certificate needs its key, the cluster CA, and files that hold PEM data.
        "--api-cert": [
            With("", ("--api-key", pem)),
            With(missing, ("--api-key", pem, "--cacert", pem)),
            With(str(f / "a-dir"), ("--api-key", pem, "--cacert", pem)),
            With(str(f / "not-pem"), ("--api-key", pem, "--cacert", pem)),
            With(pem, ("--api-key", pem)),  # no --cacert
            With(pem, ("--cacert", pem)),  # no --api-key
        ],
        "--api-key": [
            With("", ("--api-cert", pem)),
            With(missing, ("--api-cert", pem, "--cacert", pem)),
            With(str(f / "a-dir"), ("--api-cert", pem, "--cacert", pem)),
            With(pem, ("--cacert", pem)),  # no --api-cert
        ],
        "--log-level": ["", "bogus", "10", "verbose", "info "],
        # demo
        "--agents": ["", "abc", "0", "1", "-1", "17"],
        "--jobs": ["", "abc", "-1", "100001"],
        # submit
        "--id": job_ids,
        "--priority": ["", "abc", "1.5", "1001", "-1001"],
        "--max-attempts": ["", "abc", "0", "-1", "1000000"],
        "submit:--timeout": [*durations, "0"],
        "submit:--slots": ["", "abc", "1.5", "0", "-1"],
        "--memory": ["", "abc", "0", "-1"],
        "submit:--label": labels,
        "--env": [
            *["", "novalue", "PICLUSTER_NOT_SET", "=v", "PICLUSTER_JOB_ID=x", "A=\udcff"],
            "A=\x00",
        ],
        "--cwd": ["", "relative/dir", "./x", "\n"],
        "--at": ["", "25:00", "12:61", "yesterday", "2026-13-01"],
        "--after": durations,
        **{
            f"--after-{cond}": [
                "",
                ",",
                "a,",
                "a/b",
                "x,../y",
                "no-such-job",
                With(JOB, (f"--after-{other}", JOB)),
            ]
            for cond, other in (("ok", "any"), ("any", "fail"), ("fail", "ok"))
        },
        "submit:--name": ["", "\n", "a\x07b", "x" * 10_000],
        "--array": [
            *["", "abc", "0", "-1", "100001", "5-2", "0-9:0", "0-9%0", "1-1000000", "0-2x"],
            With("2", ("--id", "fixed-id")),
        ],
        "--file": [
            "",
            missing,
            str(f / "a-dir"),
            through_a_file,
            str(f / "empty"),
            str(f / "not-json"),
            str(f / "not-objects.jsonl"),
            str(f / "bad-spec.jsonl"),
        ],
        "submit:command": ["", With("x", ("--file", pem))],
        # inspecting and control
        "status:id": job_ids,
        "logs:id": job_ids,
        "--attempt": ["", "abc", "0", "-1", "1.5", "1000000000"],
        "run:command": [""],
        "cancel:id": job_ids,
        "wait:ids": job_ids,
        "wait:--timeout": durations,
        "--state": ["", "bogus", "RUNNING"],
        "jobs:--node": node_names,
        "jobs:--limit": ["", "abc", "0", "-1", "1.5"],
        "doctor:--quota-bytes": ["", "abc", "0", "-1", "1.5", "1e9", str(2**40 + 1)],
        "drain:node": node_names,
        "completion:shell": ["", "tcsh", "BASH", "bash "],
        "cron:cron_command": ["", "bogus", "ADD"],
        "undrain:node": node_names,
        # provision
        "provision:playbook": ["", "missing.yml", "roles"],
        "--inventory": ["", missing],
        "provision:--limit": ["", " "],
        "--extra-vars": ["", "@" + missing, "@" + str(f / "a-dir"), "{bad", "[1]", "novalue", "=v"],
        "--project-dir": ["", missing, str(f / "a-dir")],
    }
    # `run` takes submit's spec flags: the same bad values.
    for key, values in list(table.items()):
        if key.startswith("submit:--"):
            table["run:" + key.removeprefix("submit:")] = values
    return table


# Arguments each command is valid with; each would change etcd or start real work.
def base_args(world: dict[str, object], tmp: Path) -> dict[str, tuple[list[str], list[str]]]:
    conn = ["--endpoints", world["cluster"].endpoints_csv, "--prefix", PREFIX]
    return {
        "agent": ([*conn, "--name", "walker", "--data-dir", str(tmp / "data")], []),
        "nodes": (conn, []),
        "master": (conn, []),
        "demo": ([], []),
        "submit": (conn, ["true"]),
        "status": (conn, [JOB]),
        "jobs": (conn, []),
        "logs": (conn, [JOB]),
        "run": (conn, ["true"]),
        "wait": ([*conn, "--timeout", "0"], [JOB]),
        "cancel": (conn, [JOB]),
        "drain": ([*conn, "--force"], [NODE]),
        "undrain": (conn, [NODE]),
        "completion": ([], ["bash"]),
        "cron": (["list", *conn], []),
        "doctor": (conn, []),
        "provision": (
            ["--project-dir", str(REPO), "-i", str(world["files"] / "inventory.yml")],
            ["site.yml"],
        ),
    }


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def after_dashes(positionals: list[str]) -> list[str]:
    """Positionals behind "--", so that one starting with "-" stays a positional."""
    return ["--", *positionals] if positionals else []


def takes_value(action: argparse.Action) -> bool:
    return action.nargs != 0 and not isinstance(
        action, argparse._HelpAction | argparse._VersionAction
    )


# Options that take the place of the positionals (with both, that alone is the refusal).
INSTEAD_OF_POSITIONALS = {("submit", "file")}


def walk(world, tmp: Path) -> Iterator[tuple[str, list[str]]]:
    """(what, argv) for every bad value of every argument of every subcommand."""
    table = bad_values(world["files"], world["pem"])
    bases = base_args(world, tmp)
    for name, sub in subcommands().items():
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            options, positionals = bases[name]
            if (name, action.dest) in INSTEAD_OF_POSITIONALS:
                positionals = []
            if not takes_value(action):
                # A switch given a value: `--force=yes`.
                flag = action.option_strings[-1]
                yield (
                    f"{name} {flag}=yes",
                    [name, *options, f"{flag}=yes", *after_dashes(positionals)],
                )
                continue
            label = action.option_strings[-1] if action.option_strings else action.dest
            for bad in table.get(f"{name}:{label}", table.get(label, [])):
                value, extra = (bad.value, bad.extra) if isinstance(bad, With) else (bad, ())
                if action.option_strings:
                    argv = [name, *options, *extra, f"{label}={value}", *after_dashes(positionals)]
                else:
                    argv = [name, *options, *extra, "--", value]
                yield f"{name} {label}={value!r}", argv


# ---------------------------------------------------------------- the tests


def test_every_flag_has_bad_values(world):
    table = bad_values(world["files"], world["pem"])
    missing = []
    for name, sub in subcommands().items():
        for action in sub._actions:
            if not takes_value(action):
                continue
            label = action.option_strings[-1] if action.option_strings else action.dest
            if f"{name}:{label}" not in table and label not in table:
                missing.append(f"{name} {label}")
    assert not missing, f"add bad values to BAD for: {', '.join(missing)}"


def test_base_invocations_are_valid(world, tmp_path):
    """Each base invocation alone is accepted (so each refusal below is the bad value's).
    Run on a throwaway prefix: these do write."""
    bases = base_args(world, tmp_path)
    ok = {0, 4, 7, "ran agent", "ran demo", "ran provision", "ran run"}
    for name in subcommands():
        options, positionals = bases[name]
        options = [o if o != PREFIX else f"{PREFIX}-base" for o in options]
        result = run([name, *options, *after_dashes(positionals)])
        if name == "doctor":
            # No agent runs here: its master and nodes lines fail (2), as lines on stdout.
            assert result.code == 2 and "fail  master" in result.stdout, result
            continue
        assert result.code in ok, (name, result)
        assert "Traceback" not in result.stderr


def test_unusual_good_values_are_accepted(world):
    """The checks refuse what is wrong, not what is merely unusual."""
    prefix = f"{PREFIX}-good"
    eps = world["cluster"].endpoints_csv
    argv = ["submit", "--endpoints", f" {eps} ,", "--prefix", prefix, "--id", "good.job_1"]
    argv += ["--env", "CERT=line 1\nline 2\ttabbed", "--env", "EMPTY=", "--cwd", "/srv/a b"]
    argv += ["--name", "nightly build (é)", "--label", "model=pi5", "--timeout", "1h30m"]
    argv += ["--after", "90", "--priority", "-1000", "--", "sh", "-c", "echo 'ü'"]
    result = run(argv)
    assert (result.code, result.stdout, result.stderr) == (0, "good.job_1\n", ""), result
    spec = Client(eps, prefix=prefix).status("good.job_1").record.spec
    assert spec["env"] == {"CERT": "line 1\nline 2\ttabbed", "EMPTY": ""}
    assert spec["cwd"] == "/srv/a b" and spec["timeout"] == 5400 and spec["priority"] == -1000
    assert spec["name"] == "nightly build (é)" and spec["constraints"] == {"model": "pi5"}
    for endpoints in ("127.0.0.1:2379", "https://[::1]:2379", "http://etcd-1.lan:2379/"):
        assert cli.build_parser().parse_args(["nodes", "--endpoints", endpoints]).endpoints


def test_every_bad_value_of_every_flag_is_refused(world, tmp_path):
    failures = []
    count = 0
    for what, argv in walk(world, tmp_path):
        count += 1
        try:
            assert_refused(world, argv)
        except AssertionError as e:
            failures.append(f"{what}: {e}")
    assert count > 300
    assert not failures, f"{len(failures)} of {count} not refused cleanly:\n" + "\n".join(failures)


def test_bad_combinations_are_refused(world, tmp_path):
    conn = ["--endpoints", world["cluster"].endpoints_csv, "--prefix", PREFIX]
    for argv, needle in [
        (["submit", *conn, "--at", "12:00", "--after", "5m", "--", "true"], "not both"),
        (["submit", *conn, "--id", "x1", "--array", "2", "--", "true"], "--id"),
        (["submit", *conn, "--file", world["pem"], "--", "true"], "not both"),
        (["submit", *conn], "no command"),
        (["nodes", *conn, "--cert", world["pem"]], "--cert and --key"),
        (["nosuchcommand"], "invalid choice"),
        ([], "required"),
        (["nodes", *conn, "--bogus"], "unrecognized arguments"),
        (["status", *conn], "required"),
    ]:
        assert needle in assert_refused(world, argv)


BAD_SETTINGS: dict[str, list[object]] = {
    "name": ["a/b", "", 5, None, ["pi1"]],
    "endpoints": ["", [], "ftp://h:1", "http://[::1:2379", ["http://[zz]:1"], 2379, None],
    "prefix": ["", "noslash", "/a/../b", 5, None],
    "cacert": ["", 5, None, ["a"]],
    "cert": ["", 5, None],
    "key": ["", 5, None],
    "group_cert": ["", 5, None],
    "group_key": ["", 5, None],
    "lease_ttl": ["abc", "3", 1, 0, -1, 1.5, True, None],
    "etcd_election_timeout": ["abc", "2", 0, -1, 61, float("nan"), True, None],
    "slots": ["abc", "4", 0, -1, 2.5, True, None],
    "labels": ["k=v", ["k=v"], {"k": ""}, {"k": "a/b"}, {"a/b": "v"}, {"k": [1]}, None],
    "data_dir": ["", 5, None, ["/x"]],
    "master": ["yes", "true", 1, None],
    "address": ["", "a b", 5, None],
    "job_user": ["", "Bad!", "no-such-user-here", 5],
    "log_level": ["bogus", "", 10, None],
    "result_tail_bytes": ["abc", -1, 1.5, config.MAX_RESULT_TAIL_BYTES + 1, None],
    "output_cap_bytes": ["abc", "1048576", -1, config.MIN_OUTPUT_CAP_BYTES - 1, 1.5, True, None],
    "kill_grace": ["abc", "10", -1, float("nan"), float("inf"), True, None],
    "keep_finished": ["abc", -1, 1.5, None],
    "keep_finished_seconds": ["abc", -1, float("inf"), None],
    "prefetch": ["abc", -1, 1.5, None],
    "job_pids_max": ["abc", "64", 0, 1, -1, 1.5, 4_194_305, True, None],
    "job_cpu_weight": ["abc", "20", 0, -1, 10_001, 2.5, True, None],
    "api_port": ["abc", "7443", -1, 65536, 1.5, True, None],
    "api_listen": ["", "a b", 5, None],
    "api_cert": ["", 5, None],
    "api_key": ["", 5, None],
}


# Checked when an agent starts, not by every command that reads the file.
AGENT_ONLY = [("job_user", "no-such-user-here")]


def test_every_config_setting_has_bad_values():
    assert set(BAD_SETTINGS) == set(config.SETTINGS)


@pytest.mark.parametrize("command", ["agent", "nodes"])
def test_every_bad_config_value_is_refused(world, tmp_path, command):
    import yaml

    conn = ["--endpoints", world["cluster"].endpoints_csv, "--prefix", PREFIX]
    extra = ["--name", "walker", "--data-dir", str(tmp_path / "data")] if command == "agent" else []
    failures = []
    for key, values in BAD_SETTINGS.items():
        for value in values:
            if command != "agent" and (key, value) in AGENT_ONLY:
                continue
            path = tmp_path / "agent.yaml"
            path.write_text(yaml.safe_dump({key: value}))
            try:
                line = assert_refused(world, [command, "--config", str(path), *conn, *extra])
                assert key in line, line
            except AssertionError as e:
                failures.append(f"{key}: {value!r}: {e}")
    assert not failures, "\n".join(failures)


# ---------------------------------------------------------------- as a user runs it


def _one_line_error(result, code: int, *needles: str) -> None:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("picluster: ")
    for needle in needles:
        assert needle in lines[0]


def test_seen_tracebacks_are_one_line_now(cli, world, tmp_path):
    """The three reports of issue 12, through the real entry point in a fresh process."""
    eps = world["cluster"].endpoints_csv
    _one_line_error(cli("agent", "--endpoints", eps, "--log-level", "bogus"), 2, "--log-level")
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"endpoints: [{eps}]\nkill_grace: abc\n")
    _one_line_error(cli("agent", "--config", str(cfg), "--name", "pi1"), 2, "kill_grace")
    _one_line_error(cli("nodes", "--endpoints", "http://[::1:2379"), 2, "Invalid IPv6 URL")


def test_unreachable_cluster_is_exit_3(cli):
    dead = f"http://127.0.0.1:{free_port()}"
    for command in (["agent", "--name", "pi1"], ["nodes"], ["master"]):
        result = cli(*command, "--endpoints", dead)
        _one_line_error(result, 3, "cluster unreachable")


def test_config_precedence_flags_over_env_over_file(cli, tmp_path, world):
    eps = world["cluster"].endpoints_csv
    dead = f"http://127.0.0.1:{free_port()}"
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"endpoints: [{dead}]\nprefix: /from-file\n")
    # File alone: points at a dead endpoint.
    assert cli("nodes", "--config", str(cfg)).returncode == 3
    # Environment beats the file.
    env = {"PICLUSTER_ENDPOINTS": eps}
    assert cli("nodes", "--config", str(cfg), env=env).returncode == 0
    # A flag beats the environment.
    flagged = cli("nodes", "--config", str(cfg), "--endpoints", dead, env=env)
    assert flagged.returncode == 3


def test_bad_environment_is_refused(cli):
    result = cli("nodes", env={"PICLUSTER_ENDPOINTS": "http://[::1:2379"})
    _one_line_error(result, 2, "Invalid IPv6 URL")
    _one_line_error(cli("nodes", env={"PICLUSTER_PREFIX": "nope"}), 2, "invalid key prefix")


def test_no_master_elected_is_exit_4(cli, world):
    eps = world["cluster"].endpoints_csv
    result = cli("master", "--endpoints", eps, "--prefix", "/empty")
    _one_line_error(result, 4, "no master")


def test_proxy_variables_never_carry_cluster_traffic(cli, world):
    # A Pi behind an HTTP proxy has these set for apt; etcd must still be reached directly.
    # (198.51.100.1 is TEST-NET-2: a connection there would fail.)
    proxy = "http://198.51.100.1:3128"
    env = {name: proxy for name in ("http_proxy", "https_proxy", "grpc_proxy", "HTTPS_PROXY")}
    eps = world["cluster"].endpoints_csv
    result = cli("nodes", "--endpoints", eps, "--prefix", "/proxied", env=env)
    assert result.returncode == 0, result.stderr


def test_a_bug_is_one_line_and_exit_1(monkeypatch):
    """Not bad input, but still no traceback unless asked for (PICLUSTER_DEBUG=1)."""

    def broken(_args: argparse.Namespace) -> int:
        raise KeyError("boom")

    parsed = argparse.Namespace(func=broken)
    monkeypatch.setattr(argtypes.Parser, "parse_args", lambda _self, _argv=None: parsed)
    result = run(["nodes"])
    assert result.code == 1 and result.stderr.count("\n") == 1, result
    assert "internal error: KeyError" in result.stderr and not result.stdout
    monkeypatch.setenv("PICLUSTER_DEBUG", "1")
    with pytest.raises(KeyError):
        cli.main(["nodes"])


def test_cron_add_bad_values_are_refused(world):
    """`cron add` sits one level down, where the walk does not go: its own flags here, the
    submit flags it shares are walked under submit."""
    conn = ["--endpoints", world["cluster"].endpoints_csv, "--prefix", PREFIX]
    base = ["cron", "add", *conn]
    for argv in [
        [*base, "bad name", "* * * * *", "--", "true"],
        [*base, "n" * 101, "* * * * *", "--", "true"],
        [*base, "nightly", "61 * * * *", "--", "true"],
        [*base, "nightly", "", "--", "true"],
        [*base, "nightly", "* * * * *", "--tz", "Mars/Olympus", "--", "true"],
        [*base, "nightly", "* * * * *", "--tz", "", "--", "true"],
        [*base, "nightly", "* * * * *", "--catch-up=yes", "--", "true"],
        [*base, "nightly", "* * * * *", "--priority", "5000", "--", "true"],
        [*base, "nightly", "* * * * *", "--bogus", "--", "true"],
        [*base, "nightly", "* * * * *", "--"],
        ["cron", "pause", *conn, "../x"],
        ["cron", "resume", *conn, "no-such-entry"],
        ["cron", "remove", *conn, "no-such-entry"],
    ]:
        code = 4 if argv[-1] == "no-such-entry" else 2
        assert_refused(world, argv, code)
