from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from picluster_agent.errors import ConfigError, PiclusterError
from picluster_agent.jobs.spec import (
    MAX_RETRY_DELAY,
    MAX_SPEC_BYTES,
    JobSpec,
    SpecError,
    build_spec,
    matches,
    parse_duration,
    parse_spec,
    parse_start_time,
    retry_delay,
    validate_labels,
)

JOB = "01ARZ3NDEKTSV4RRFFQ69G5FAV"


def spec_json(**fields: Any) -> str:
    fields.setdefault("command", ["true"])
    return json.dumps(fields)


# --- valid specs --------------------------------------------------------------------------------


def test_minimal_spec_gets_defaults() -> None:
    spec = parse_spec(b'{"command": ["echo", "hi"]}', JOB)
    assert spec == JobSpec(command=("echo", "hi"))
    assert (spec.shell, spec.env, spec.cwd, spec.timeout) == (False, {}, None, None)
    assert (spec.max_attempts, spec.retry_backoff, spec.priority, spec.slots) == (1, 1.0, 0, 1)
    assert (spec.memory_mb, spec.constraints, spec.not_before) == (None, {}, None)
    assert (spec.name, spec.submitted_at) == (None, None)


FULL = {
    "command": "make -j4 && make test",
    "shell": True,
    "env": {"CC": "clang", "_X1": ""},
    "cwd": "/srv/build",
    "timeout": 3600,
    "max_attempts": 3,
    "retry_backoff": 0.5,
    "priority": -20,
    "slots": 4,
    "memory_mb": 2048,
    "constraints": {"arch": "arm64", "model": "pi5"},
    "not_before": 1_900_000_000,
    "name": "nightly build ✓",
    "submitted_at": 1_800_000_000.25,
    "id": JOB,
}


def test_full_spec() -> None:
    spec = parse_spec(json.dumps(FULL), JOB)
    assert spec.command == "make -j4 && make test"
    assert spec.argv() == ["/bin/sh", "-c", "make -j4 && make test"]
    assert spec.timeout == 3600.0 and isinstance(spec.timeout, float)
    assert spec.constraints == {"arch": "arm64", "model": "pi5"}
    assert spec.name == "nightly build ✓"


@pytest.mark.parametrize(
    "raw",
    [
        {"command": ["true"]},
        FULL,
        {"command": ["a", "", "ü"], "env": {"A": "x=y"}, "timeout": 0.001, "priority": 1000},
    ],
)
def test_to_json_round_trips_and_is_canonical(raw: dict[str, Any]) -> None:
    spec = parse_spec(raw, JOB)
    text = spec.to_json()
    assert parse_spec(text, JOB) == spec
    assert parse_spec(text.encode(), JOB).to_json() == text
    decoded = json.loads(text)
    assert list(decoded) == sorted(decoded)
    assert ", " not in text and ": " not in text
    assert "id" not in decoded  # the id is the key, not part of the spec


def test_canonical_json_leaves_out_defaults() -> None:
    spec = parse_spec('{"command": ["true"], "priority": 0, "env": {}, "timeout": 5}', JOB)
    assert spec.to_json() == '{"command":["true"],"timeout":5.0}'
    assert parse_spec(spec.to_json(), JOB) == spec
    assert spec.to_dict()["priority"] == 0 and spec.to_dict()["env"] == {}  # to_dict: all


def test_inputs_bytes_str_and_dict_agree() -> None:
    text = spec_json(command=["ls", "-l"], priority=5)
    assert (
        parse_spec(text, JOB) == parse_spec(text.encode(), JOB) == parse_spec(json.loads(text), JOB)
    )


def test_spec_is_frozen() -> None:
    spec = parse_spec(spec_json(), JOB)
    with pytest.raises(AttributeError):
        spec.priority = 5  # type: ignore[misc]


def test_argv_mode() -> None:
    assert parse_spec(spec_json(command=["ls", "-l"]), JOB).argv() == ["ls", "-l"]


# --- invalid specs: (raw JSON or object, field named in the error, words in the reason) --------

INVALID: list[tuple[Any, str | None, str]] = [
    # not JSON, not an object
    (b"{", None, "not valid JSON"),
    (b'{"command": ["x"]} trailing', None, "not valid JSON"),
    (b"\xff\xfe", None, "not valid UTF-8"),
    ("[]", None, "must be a JSON object, got a list"),
    ('"hello"', None, "must be a JSON object"),
    ("null", None, "must be a JSON object, got null"),
    ('{"command": ["x"], "timeout": NaN}', None, "NaN"),
    ('{"command": ["x"], "timeout": Infinity}', None, "Infinity"),
    ('{"command": ["x"], "timeout": 1e400}', "timeout", "a number > 0"),
    ("[" * 100_000 + "]" * 100_000, None, "nested too deeply"),
    ('{"command": ["x"], "priority": ' + "9" * 5000 + "}", None, "not valid JSON"),
    ('{"command": ["a"], "command": ["b"]}', "command", "appears twice"),
    # unknown and missing fields
    (spec_json(comand=["x"]), "comand", "did you mean 'command'"),
    (spec_json(retries=3), "retries", "unknown field"),
    ({"shell": False}, "command", "missing"),
    # command
    (spec_json(command=[]), "command", "empty"),
    (spec_json(command=["", "x"]), "command", "item 0 (the program)"),
    (spec_json(command=["ls", 3]), "command", "item 1 must be a string, got an integer"),
    (spec_json(command="ls -l"), "command", "pass the command as a list"),
    (spec_json(command="   ", shell=True), "command", "empty"),
    (spec_json(command=["ls"], shell=True), "command", "one string"),
    (spec_json(command={"a": 1}), "command", "got an object"),
    (spec_json(command=None), "command", "got null"),
    (spec_json(command=["ls", "a\x00b"]), "command[1]", "NUL"),
    (spec_json(command="echo \x00", shell=True), "command", "NUL"),
    (spec_json(command=["ls", "\ud800"]), "command[1]", "lone surrogate"),
    # shell
    (spec_json(shell="yes"), "shell", "true or false"),
    (spec_json(shell=1), "shell", "true or false"),
    # env
    (spec_json(env=[]), "env", "must be an object"),
    (spec_json(env={"A=B": "x"}), "env", "contains '='"),
    (spec_json(env={"1ABC": "x"}), "env", "not a valid variable name"),
    (spec_json(env={"A-B": "x"}), "env", "not a valid variable name"),
    (spec_json(env={"": "x"}), "env", "not a valid variable name"),
    (spec_json(env={"A": 1}), "env", "value of A must be a string, got an integer"),
    (spec_json(env={"A": None}), "env", "got null"),
    (spec_json(env={"A": "x\x00y"}), "env.A", "NUL"),
    (spec_json(env={"A\x00": "x"}), "env", "NUL"),
    (spec_json(env={"PICLUSTER_JOB_ID": "x"}), "env", "set by picluster"),
    (spec_json(env={"PICLUSTER_NODE": "x"}), "env", "set by picluster"),
    # cwd
    (spec_json(cwd="relative/dir"), "cwd", "not an absolute path"),
    (spec_json(cwd=""), "cwd", "not an absolute path"),
    (spec_json(cwd=5), "cwd", "absolute path or null"),
    (spec_json(cwd="/a\x00"), "cwd", "NUL"),
    # numbers
    (spec_json(timeout=0), "timeout", "> 0"),
    (spec_json(timeout=-1), "timeout", "> 0"),
    (spec_json(timeout="60"), "timeout", 'got a string "60"'),
    (spec_json(timeout=True), "timeout", "got true"),
    (spec_json(max_attempts=0), "max_attempts", "from 1 to 100"),
    (spec_json(max_attempts=101), "max_attempts", "from 1 to 100"),
    (spec_json(max_attempts=2.0), "max_attempts", "integer"),
    (spec_json(max_attempts=None), "max_attempts", "got null"),
    (spec_json(retry_backoff=-0.1), "retry_backoff", ">= 0"),
    (spec_json(priority=1001), "priority", "from -1000 to 1000"),
    (spec_json(priority=-1001), "priority", "from -1000 to 1000"),
    (spec_json(priority=1.5), "priority", "integer"),
    (spec_json(slots=0), "slots", ">= 1"),
    (spec_json(slots=False), "slots", "got false"),
    (spec_json(memory_mb=0), "memory_mb", ">= 1 or null"),
    (spec_json(not_before=-5), "not_before", ">= 0"),
    (spec_json(not_before="tomorrow"), "not_before", "number"),
    (spec_json(submitted_at=[1]), "submitted_at", "got a list"),
    # constraints
    (spec_json(constraints=["arch=arm64"]), "constraints", "must be an object"),
    (spec_json(constraints={"bad key": "x"}), "constraints", "label key"),
    (spec_json(constraints={"-x": "y"}), "constraints", "label key"),
    (spec_json(constraints={"a/b": "y"}), "constraints", "label key"),
    (spec_json(constraints={"k" * 64: "y"}), "constraints", "label key"),
    (spec_json(constraints={"arch": ""}), "constraints", "1-63 printable"),
    (spec_json(constraints={"arch": "a/b"}), "constraints", "no '/'"),
    (spec_json(constraints={"arch": "v" * 64}), "constraints", "1-63"),
    (spec_json(constraints={"arch": "a\nb"}), "constraints", "printable"),
    (spec_json(constraints={"arch": 64}), "constraints", "must be a string"),
    # name
    (spec_json(name=""), "name", "1-200"),
    (spec_json(name="n" * 201), "name", "1-200"),
    (spec_json(name="two\nlines"), "name", "printable"),
    (spec_json(name=7), "name", "string or null"),
    # id
    (spec_json(id="other"), "id", "the key's job id is"),
    (spec_json(id=7), "id", "the key's job id is"),
]


@pytest.mark.parametrize(("raw", "field", "reason"), INVALID)
def test_invalid_specs(raw: Any, field: str | None, reason: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(raw, JOB)
    error = info.value
    assert error.field == field
    assert reason in error.reason
    assert str(error).startswith("invalid job spec: ")
    if field:
        assert f": {field}: " in str(error)
    assert error.exit_code == 2
    assert isinstance(error, ConfigError) and isinstance(error, PiclusterError)


@pytest.mark.parametrize("bad_id", ["", "../x", "a/b", "x" * 200])
def test_invalid_key_id(bad_id: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(spec_json(), bad_id)
    assert info.value.field == "id"


def test_matching_id_is_accepted_and_dropped() -> None:
    assert parse_spec(spec_json(id=JOB), JOB) == parse_spec(spec_json(), JOB)


@pytest.mark.parametrize("as_type", [bytes, str, dict])
def test_oversize_spec(as_type: type) -> None:
    text = spec_json(env={"BIG": "x" * MAX_SPEC_BYTES})
    raw: Any = {bytes: text.encode(), str: text, dict: json.loads(text)}[as_type]
    with pytest.raises(SpecError, match=r"the limit is 524288 bytes \(512 KiB"):
        parse_spec(raw, JOB)


def test_just_under_the_size_limit_is_accepted() -> None:
    base = len(JobSpec(command=("true",), env={"BIG": ""}).to_json())
    canonical = JobSpec(command=("true",), env={"BIG": "x" * (MAX_SPEC_BYTES - base)}).to_json()
    assert len(canonical.encode()) == MAX_SPEC_BYTES
    spec = parse_spec(canonical, JOB)  # exactly the limit, as text and as canonical JSON
    assert spec.to_json() == canonical
    with pytest.raises(SpecError):
        build_spec(["true"], env={"BIG": "x" * (MAX_SPEC_BYTES - base + 1)})


# --- build_spec ---------------------------------------------------------------------------------


def test_build_spec_none_means_default() -> None:
    spec = build_spec(["ls"], shell=None, max_attempts=None, priority=None, env=None)
    assert spec == JobSpec(command=("ls",))


def test_build_spec_equals_parse_spec() -> None:
    built = build_spec(
        ("sh", "-c", "exit 0"),
        env={"A": "1"},
        timeout=90,
        max_attempts=3,
        priority=7,
        constraints={"arch": "arm64"},
        submitted_at=1_800_000_000,
    )
    assert parse_spec(built.to_json(), JOB) == built
    assert built.command == ("sh", "-c", "exit 0") and built.timeout == 90.0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"command": "ls"}, "command"),
        ({"command": []}, "command"),
        ({"command": ["ls"], "timeout": 0}, "timeout"),
        ({"command": ["ls"], "env": {"A=B": "1"}}, "env"),
        ({"command": ["ls"], "constraints": {"k": "a/b"}}, "constraints"),
        ({"command": ["ls"], "slots": 0}, "slots"),
    ],
)
def test_build_spec_validates(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as info:
        build_spec(**kwargs)
    assert info.value.field == field


# --- retries, constraints -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("backoff", "attempt", "delay"),
    [
        (1.0, 1, 0.0),
        (1.0, 2, 1.0),
        (1.0, 3, 2.0),
        (1.0, 4, 4.0),
        (0.5, 5, 4.0),
        (1.0, 10, 256.0),
        (1.0, 11, MAX_RETRY_DELAY),
        (1.0, 100, MAX_RETRY_DELAY),
        (1000.0, 2, MAX_RETRY_DELAY),
        (0.0, 50, 0.0),
        (1.0, 10_000, MAX_RETRY_DELAY),
    ],
)
def test_retry_delay(backoff: float, attempt: int, delay: float) -> None:
    spec = build_spec(["true"], retry_backoff=backoff)
    assert retry_delay(spec, attempt) == delay


@pytest.mark.parametrize(
    ("constraints", "labels", "ok"),
    [
        ({}, {}, True),
        ({}, {"arch": "arm64"}, True),
        ({"arch": "arm64"}, {"arch": "arm64", "model": "pi5"}, True),
        ({"arch": "arm64", "model": "pi5"}, {"arch": "arm64", "model": "pi5"}, True),
        ({"arch": "arm64"}, {}, False),
        ({"arch": "arm64"}, {"arch": "amd64"}, False),
        ({"arch": "arm64", "camera": "yes"}, {"arch": "arm64"}, False),
        ({"model": "pi5"}, {"model": "PI5"}, False),
    ],
)
def test_matches(constraints: dict[str, str], labels: dict[str, str], ok: bool) -> None:
    assert matches(constraints, labels) is ok


def test_validate_labels_for_node_config() -> None:
    assert validate_labels({"camera": "yes", "zone.rack_1": "A 1"}) == {
        "camera": "yes",
        "zone.rack_1": "A 1",
    }
    with pytest.raises(SpecError) as info:
        validate_labels({"camera": "a/b"})
    assert info.value.field == "labels"


# --- durations and start times ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("45", 45.0),
        ("0", 0.0),
        ("2.5", 2.5),
        ("90s", 90.0),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("1h30m", 5400.0),
        ("1d2h3m4s", 93784.0),
        ("1.5h", 5400.0),
        (" 10M ", 600.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "   ", "m", "5x", "-5m", "5 m", "30m1h", "1h1h", "1h30", "h1", "1e3", "inf"]
)
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_duration(text, what="--after")
    assert info.value.field == "--after"
    assert "is not a duration" in info.value.reason and "1h30m" in info.value.reason


def _local(*args: int) -> float:
    return datetime(*args).timestamp()  # naive: local time, like the CLI's user


@pytest.mark.parametrize(
    ("text", "now", "expected"),
    [
        ("2030-01-02T03:04:05", 0.0, _local(2030, 1, 2, 3, 4, 5)),
        ("2030-01-02 03:04", 0.0, _local(2030, 1, 2, 3, 4)),
        ("2030-01-02", 0.0, _local(2030, 1, 2)),
        (
            "2030-01-02T03:04:05Z",
            0.0,
            datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp(),
        ),
        (
            "2030-01-02T03:04:05+02:00",
            0.0,
            datetime(2030, 1, 2, 1, 4, 5, tzinfo=UTC).timestamp(),
        ),
        # HH:MM: the next time the local clock shows it
        ("14:30", _local(2030, 1, 2, 9, 0), _local(2030, 1, 2, 14, 30)),
        ("14:30", _local(2030, 1, 2, 14, 30), _local(2030, 1, 3, 14, 30)),
        ("14:30", _local(2030, 1, 2, 20, 0), _local(2030, 1, 3, 14, 30)),
        ("00:00:30", _local(2030, 12, 31, 23, 0), _local(2031, 1, 1, 0, 0, 30)),
        ("7:05", _local(2030, 1, 2, 7, 4, 59), _local(2030, 1, 2, 7, 5)),
        # a time in the past is allowed: the job is simply due
        ("2001-01-01T00:00:00Z", 2e9, datetime(2001, 1, 1, tzinfo=UTC).timestamp()),
    ],
)
def test_parse_start_time(text: str, now: float, expected: float) -> None:
    assert parse_start_time(text, now) == expected


@pytest.mark.parametrize(
    "text", ["", "tomorrow", "25:00", "12:60", "12:00:61", "2030-13-01", "12h", "1:2", "12:00pm"]
)
def test_parse_start_time_refuses(text: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_start_time(text, 0.0)
    assert info.value.field == "--at"
    assert "ISO 8601" in info.value.reason and "HH:MM" in info.value.reason


def test_start_time_and_duration_compose_like_the_cli() -> None:
    now = datetime(2030, 1, 2, 12, 0, tzinfo=UTC).timestamp()
    after = now + parse_duration("1h30m")
    assert after == parse_start_time("2030-01-02T13:30:00+00:00", now)
    assert after - now == timedelta(hours=1, minutes=30).total_seconds()
