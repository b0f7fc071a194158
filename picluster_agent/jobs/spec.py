"""The job spec: what to run, and the rules it is checked against.

This is a public interface: `etcdctl put <prefix>/queue/<id> '<json>'` is a valid submission,
so the JSON form documented in docs/JOB_SPEC.md is what every client writes. `parse_spec` is
the one gate every spec passes (CLI, Python API, etcdctl): it refuses anything malformed with
a `SpecError` that names the field and the reason, and returns an immutable `JobSpec`.
`build_spec` is the same gate for callers holding Python values.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, time, timedelta
from typing import Any

from ..errors import ConfigError, InvalidName
from ..etcd import limits
from ..etcd.keys import validate_job_id
from .stored import field_defaults, without_defaults

# Of JSON, UTF-8 encoded: what fits twice into one etcd request (see etcd/limits.py).
MAX_SPEC_BYTES = limits.MAX_SPEC_BYTES
MAX_ATTEMPTS_LIMIT = 100
PRIORITY_MIN = -1000
PRIORITY_MAX = 1000
MAX_RETRY_DELAY = 300.0  # seconds: the cap on the exponential retry backoff
MAX_NAME_CHARS = 200
MAX_LABEL_VALUE_CHARS = 63
# A dependency has finished: succeeded (ok), in any way (any), without succeeding (fail).
DEPENDENCY_CONDITIONS = ("ok", "any", "fail")
MAX_DEPENDENCIES = 100
MAX_ARRAY_INDEX = 999_999
# Set by the worker for every attempt; a spec may not set them itself.
RESERVED_ENV = frozenset({"PICLUSTER_JOB_ID", "PICLUSTER_ATTEMPT", "PICLUSTER_NODE"})

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class SpecError(ConfigError):
    """A job spec (or a --at/--after value) that cannot be accepted; nothing was changed.

    `field` names the offending field (JSON name, or the option such as "--after"), `reason`
    says why; str(error) combines both into one line fit for `picluster status`.
    """

    exit_code = 2

    def __init__(self, reason: str, *, field: str | None = None) -> None:
        self.field = field
        self.reason = reason
        super().__init__(
            f"invalid job spec: {field}: {reason}" if field else f"invalid job spec: {reason}"
        )


@dataclass(frozen=True)
class JobSpec:
    """One job, validated. Construct with `parse_spec` or `build_spec` (both check everything).

    `command` is a tuple of argv strings, or one shell string when `shell` is true. Number
    fields in seconds or unix time are floats. `env` and `constraints` are plain dicts: treat
    them as read-only.
    """

    command: tuple[str, ...] | str
    shell: bool = False
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    timeout: float | None = None
    max_attempts: int = 1
    retry_backoff: float = 1.0
    priority: int = 0
    slots: int = 1
    memory_mb: int | None = None
    constraints: dict[str, str] = field(default_factory=dict)
    not_before: float | None = None
    name: str | None = None
    submitted_at: float | None = None
    # Jobs that must finish first: {"ok"|"any"|"fail": [job ids]} (docs/JOB_SPEC.md).
    after: dict[str, list[str]] = field(default_factory=dict)
    # A member of an array: {"parent": id, "index": n, "max_running": cap or absent}.
    array: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, value in _checked(self).items():
            object.__setattr__(self, name, value)
        # The stored form and its canonical JSON are made once: the JSON is checked for size
        # here, and both are what stored_dict and to_json return (a spec travels through the
        # cluster in every record of its job).
        stored = without_defaults(self.to_dict().items(), _DEFAULTS)
        canonical = _encode_canonical(stored)
        size = len(canonical.encode("utf-8"))
        if size > MAX_SPEC_BYTES:
            raise SpecError(_oversize(size))
        object.__setattr__(self, "_stored", stored)
        object.__setattr__(self, "_canonical", canonical)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form: every field, command as a list (argv) or a string."""
        out = {name: getattr(self, name) for name in _FIELD_NAMES}
        if isinstance(self.command, tuple):
            out["command"] = list(self.command)
        out["env"] = dict(self.env)
        out["constraints"] = dict(self.constraints)
        out["after"] = {cond: list(ids) for cond, ids in self.after.items()}
        out["array"] = dict(self.array)
        return out

    def stored_dict(self) -> dict[str, Any]:
        """The form stored in etcd: `to_dict` without the fields at their defaults.

        A no-op job's spec is then a fifth of the size: every job's spec is written to
        etcd three times, and etcd's cost grows with the bytes (docs/BENCHMARKS.md).
        """
        return dict(self._stored)  # type: ignore[attr-defined]

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, compact, UTF-8 text, fields at their defaults left
        out. `parse_spec` reads it back equal."""
        return self._canonical  # type: ignore[attr-defined, no-any-return]

    def argv(self) -> list[str]:
        """The argv to execute: the list itself, or `/bin/sh -c <string>` in shell mode."""
        if isinstance(self.command, str):
            return ["/bin/sh", "-c", self.command]
        return list(self.command)


_FIELD_NAMES = tuple(f.name for f in fields(JobSpec))
_encode_canonical = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
).encode
_DEFAULTS = field_defaults(JobSpec)


def parse_spec(raw: bytes | str | Mapping[str, Any], job_id: str) -> JobSpec:
    """Check a submitted spec (JSON bytes/text or an already decoded object) for job `job_id`.

    Raises SpecError naming the field and the reason for anything that is not a valid spec.
    """
    try:
        validate_job_id(job_id)
    except InvalidName as e:
        raise SpecError(str(e), field="id") from e
    if isinstance(raw, Mapping):
        data: Any = dict(raw)
    elif isinstance(raw, bytes | bytearray | str):
        data = _decode(raw)
    else:
        raise SpecError(f"a job spec must be JSON text or an object, got {_describe(raw)}")
    if not isinstance(data, dict):
        raise SpecError(f"a job spec must be a JSON object, got {_describe(data)}")
    unknown = sorted(k for k in data if k not in _FIELD_NAMES and k != "id")
    if unknown:
        name = unknown[0]
        hint = difflib.get_close_matches(str(name), _FIELD_NAMES, n=1)
        raise SpecError(
            "unknown field" + (f"; did you mean {hint[0]!r}?" if hint else ""), field=str(name)
        )
    if "id" in data:
        given = data.pop("id")
        if given != job_id:
            raise SpecError(
                f"is {_describe(given)} but the key's job id is {job_id!r}: "
                "leave it out or make the two equal",
                field="id",
            )
    if "command" not in data:
        raise SpecError(
            "missing (required: the argv list, or a string with shell: true)", field="command"
        )
    return JobSpec(**data)


def build_spec(
    command: Sequence[str] | str,
    *,
    shell: bool | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    timeout: float | None = None,
    max_attempts: int | None = None,
    retry_backoff: float | None = None,
    priority: int | None = None,
    slots: int | None = None,
    memory_mb: int | None = None,
    constraints: Mapping[str, str] | None = None,
    not_before: float | None = None,
    name: str | None = None,
    submitted_at: float | None = None,
    after: Mapping[str, Sequence[str]] | None = None,
    array: Mapping[str, Any] | None = None,
) -> JobSpec:
    """Build a spec from Python values, checked exactly like `parse_spec`.

    None means "the default" for every argument, so CLI options that were not given can be
    passed straight through.
    """
    given: dict[str, Any] = {
        "shell": shell,
        "env": None if env is None else dict(env),
        "cwd": cwd,
        "timeout": timeout,
        "max_attempts": max_attempts,
        "retry_backoff": retry_backoff,
        "priority": priority,
        "slots": slots,
        "memory_mb": memory_mb,
        "constraints": None if constraints is None else dict(constraints),
        "not_before": not_before,
        "name": name,
        "submitted_at": submitted_at,
        "after": None if after is None else {k: list(v) for k, v in after.items()},
        "array": None if array is None else dict(array),
    }
    cmd: Any = command if isinstance(command, str) else list(command)
    return JobSpec(command=cmd, **{k: v for k, v in given.items() if v is not None})


def retry_delay(spec: JobSpec, next_attempt: int) -> float:
    """Seconds to wait before starting attempt `next_attempt` (1-based) after a failure.

    retry_backoff * 2**(n-2): attempt 2 waits retry_backoff, attempt 3 twice that, and so on,
    capped at MAX_RETRY_DELAY. The first attempt never waits.
    """
    if next_attempt <= 1:
        return 0.0
    exponent = min(next_attempt - 2, 64)  # 2**64 * anything > 0 is past the cap already
    return min(spec.retry_backoff * 2.0**exponent, MAX_RETRY_DELAY)


def matches(constraints: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """Whether a node with `labels` satisfies every constraint (all must be equal)."""
    return all(labels.get(key) == value for key, value in constraints.items())


_LABEL_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


def label_problem(key: Any, value: Any) -> str | None:
    """The label rule, for a node's labels and a spec's constraints alike: what is wrong
    with this one label, or None.

    Keys are 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit; values
    are 1-63 printable characters without '/'.
    """
    if not isinstance(key, str) or not _LABEL_KEY.fullmatch(key):
        return (
            f"label key {_describe(key)} is invalid: use 1-63 letters, digits, '.', '_' "
            "or '-', starting with a letter or digit"
        )
    if not isinstance(value, str):
        return f"{key!r} must be a string, got {_describe(value)}"
    if not 1 <= len(value) <= MAX_LABEL_VALUE_CHARS or "/" in value or not value.isprintable():
        return (
            f"value of {key!r} is {_describe(value)}: use 1-{MAX_LABEL_VALUE_CHARS} "
            "printable characters, no '/'"
        )
    return None


def validate_labels(labels: Any, *, what: str = "labels") -> dict[str, str]:
    """Check a label map (a spec's constraints) by `label_problem`; return a plain dict copy."""
    if not isinstance(labels, Mapping):
        raise SpecError(f"must be an object of label: value, got {_describe(labels)}", field=what)
    out: dict[str, str] = {}
    for key, value in labels.items():
        problem = label_problem(key, value)
        if problem is not None:
            raise SpecError(problem, field=what)
        out[key] = value
    return out


# --- durations and start times (submit --after / --at) ---------------------------------------

_UNIT_SECONDS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?|\.\d+)([dhms])")
_PLAIN_SECONDS = re.compile(r"\d+(?:\.\d+)?|\.\d+")
_CLOCK = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2}))?")


def parse_duration(text: str, *, what: str = "duration") -> float:
    """Seconds in "45", "90s", "5m", "2h", "1d", "1h30m" or "1.5h" (units largest first)."""
    rule = "use seconds (45) or a number with units d, h, m, s, largest first (90s, 5m, 1h30m)"
    s = text.strip().lower() if isinstance(text, str) else ""
    if _PLAIN_SECONDS.fullmatch(s):
        return _finite(float(s), text, what)
    total, pos, units = 0.0, 0, ""
    while s and pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if m is None:
            raise SpecError(f"{text!r} is not a duration: {rule}", field=what)
        unit = m.group(2)
        if units and "dhms".index(unit) <= "dhms".index(units[-1]):
            raise SpecError(f"{text!r} is not a duration: {rule}", field=what)
        units += unit
        total += float(m.group(1)) * _UNIT_SECONDS[unit]
        pos = m.end()
    if not units:
        raise SpecError(f"{text!r} is not a duration: {rule}", field=what)
    return _finite(total, text, what)


def _finite(seconds: float, text: str, what: str) -> float:
    # "9" * 400 parses to infinity: a wait that never ends is not what anyone typed.
    if not math.isfinite(seconds):
        raise SpecError(f"{text[:20]!r}... is too long a duration", field=what)
    return seconds


def parse_start_time(text: str, now: float, *, what: str = "--at") -> float:
    """Unix time for `submit --at`: ISO 8601 (naive means local time) or HH:MM[:SS].

    HH:MM means the next time the local clock shows it: today if that is still ahead of
    `now`, else tomorrow. A time in the past is allowed (the job is simply due now).
    """
    rule = (
        "use ISO 8601 (2026-05-09T14:30, 2026-05-09 14:30:00+02:00; without a zone it is "
        "local time) or HH:MM for the next time the clock shows it"
    )
    s = text.strip() if isinstance(text, str) else ""
    clock = _CLOCK.fullmatch(s)
    if clock:
        hour, minute, second = (int(g) if g else 0 for g in clock.groups())
        if hour > 23 or minute > 59 or second > 59:
            raise SpecError(f"{text!r} is not a time of day: {rule}", field=what)
        wall = time(hour, minute, second)
        today = datetime.fromtimestamp(now).date()
        when = datetime.combine(today, wall).timestamp()
        if when <= now:
            when = datetime.combine(today + timedelta(days=1), wall).timestamp()
        return when
    try:
        parsed = datetime.fromisoformat(s)
    except ValueError:
        raise SpecError(f"{text!r} is not a start time: {rule}", field=what) from None
    return parsed.timestamp()  # naive datetimes are taken as local time


# --- field checks ---------------------------------------------------------------------------


def _checked(spec: JobSpec) -> dict[str, Any]:
    """Every field of `spec` checked and normalised (argv to a tuple, seconds to float)."""
    shell = spec.shell
    if not isinstance(shell, bool):
        raise SpecError(f"must be true or false, got {_describe(shell)}", field="shell")
    return {
        "command": _command(spec.command, shell),
        "env": _env(spec.env),
        "cwd": _cwd(spec.cwd),
        "timeout": _number(spec.timeout, "timeout", minimum=0.0, exclusive=True, nullable=True),
        "max_attempts": _integer(spec.max_attempts, "max_attempts", 1, MAX_ATTEMPTS_LIMIT),
        "retry_backoff": _number(spec.retry_backoff, "retry_backoff", minimum=0.0),
        "priority": _integer(spec.priority, "priority", PRIORITY_MIN, PRIORITY_MAX),
        "slots": _integer(spec.slots, "slots", 1, None),
        "memory_mb": _integer(spec.memory_mb, "memory_mb", 1, None, nullable=True),
        "constraints": validate_labels(spec.constraints, what="constraints"),
        "not_before": _number(spec.not_before, "not_before", minimum=0.0, nullable=True),
        "name": _name(spec.name),
        "submitted_at": _number(spec.submitted_at, "submitted_at", minimum=0.0, nullable=True),
        "after": _after(spec.after),
        "array": _array(spec.array),
    }


def _command(command: Any, shell: bool) -> tuple[str, ...] | str:
    if isinstance(command, str):
        if not shell:
            raise SpecError(
                "is a string but shell is false: pass the command as a list of arguments "
                '(["prog", "arg1"]) or set "shell": true to run it with /bin/sh -c',
                field="command",
            )
        _text(command, "command")
        if not command.strip():
            raise SpecError("is empty: give the shell command line to run", field="command")
        return command
    if not isinstance(command, list | tuple):
        raise SpecError(
            f"must be a list of strings (argv), or a string with shell: true; got "
            f"{_describe(command)}",
            field="command",
        )
    if shell:
        raise SpecError(
            'with "shell": true the command must be one string (a shell command line), not a list',
            field="command",
        )
    if not command:
        raise SpecError("is empty: give at least the program to run", field="command")
    for i, arg in enumerate(command):
        if not isinstance(arg, str):
            raise SpecError(f"item {i} must be a string, got {_describe(arg)}", field="command")
        _text(arg, f"command[{i}]")
    if not command[0]:
        raise SpecError("item 0 (the program) is an empty string", field="command")
    return tuple(command)


def _env(env: Any) -> dict[str, str]:
    if not isinstance(env, Mapping):
        raise SpecError(f"must be an object of NAME: value, got {_describe(env)}", field="env")
    out: dict[str, str] = {}
    for key, value in env.items():
        if not isinstance(key, str):
            raise SpecError(f"key {_describe(key)} must be a string", field="env")
        _text(key, "env")
        if "=" in key:
            raise SpecError(f"key {key!r} contains '='", field="env")
        if not _ENV_NAME.fullmatch(key):
            raise SpecError(
                f"key {key!r} is not a valid variable name: use letters, digits and '_', "
                "not starting with a digit",
                field="env",
            )
        if key in RESERVED_ENV:
            raise SpecError(f"{key} is set by picluster for every attempt", field="env")
        if not isinstance(value, str):
            raise SpecError(f"value of {key} must be a string, got {_describe(value)}", field="env")
        _text(value, f"env.{key}")
        out[key] = value
    return out


def _cwd(cwd: Any) -> str | None:
    if cwd is None:
        return None
    if not isinstance(cwd, str):
        raise SpecError(f"must be an absolute path or null, got {_describe(cwd)}", field="cwd")
    _text(cwd, "cwd")
    if not cwd.startswith("/"):
        raise SpecError(f"{cwd!r} is not an absolute path (it must start with '/')", field="cwd")
    return cwd


def _name(name: Any) -> str | None:
    if name is None:
        return None
    if not isinstance(name, str):
        raise SpecError(f"must be a string or null, got {_describe(name)}", field="name")
    _text(name, "name")
    if not 1 <= len(name) <= MAX_NAME_CHARS or not name.isprintable():
        raise SpecError(
            f"must be 1-{MAX_NAME_CHARS} printable characters (no newlines or control characters)",
            field="name",
        )
    return name


def _after(after: Any) -> dict[str, list[str]]:
    if not isinstance(after, Mapping):
        raise SpecError(
            f'must be an object like {{"ok": ["JOB-ID"]}}, got {_describe(after)}', field="after"
        )
    out: dict[str, list[str]] = {}
    total = 0
    for cond, ids in after.items():
        if cond not in DEPENDENCY_CONDITIONS:
            raise SpecError(
                f"{_describe(cond)} is not a condition: use {', '.join(DEPENDENCY_CONDITIONS)}",
                field="after",
            )
        if not isinstance(ids, list | tuple) or not ids:
            raise SpecError(f"{cond}: must be a non-empty list of job ids", field="after")
        for job_id in ids:
            try:
                validate_job_id(job_id)
            except InvalidName as e:
                raise SpecError(f"{cond}: {e}", field="after") from None
        out[cond] = sorted(set(ids))
        total += len(out[cond])
    if total > MAX_DEPENDENCIES:
        raise SpecError(f"at most {MAX_DEPENDENCIES} dependencies, got {total}", field="after")
    seen: set[str] = set()
    for ids in out.values():
        if seen & set(ids):
            twice = sorted(seen & set(ids))[0]
            raise SpecError(f"{twice} is named under two conditions", field="after")
        seen.update(ids)
    return out


def _array(array: Any) -> dict[str, Any]:
    if not isinstance(array, Mapping):
        raise SpecError(f"must be an object, got {_describe(array)}", field="array")
    if not array:
        return {}
    unknown = sorted(k for k in array if k not in ("parent", "index", "max_running"))
    if unknown or "parent" not in array or "index" not in array:
        raise SpecError(
            'must be {"parent": ID, "index": N} with an optional "max_running": N', field="array"
        )
    try:
        validate_job_id(array["parent"])
    except InvalidName as e:
        raise SpecError(f"parent: {e}", field="array") from None
    out = {
        "parent": array["parent"],
        "index": _integer(array["index"], "array.index", 0, MAX_ARRAY_INDEX),
    }
    if array.get("max_running") is not None:
        out["max_running"] = _integer(array["max_running"], "array.max_running", 1, None)
    return out


def _number(
    value: Any,
    name: str,
    *,
    minimum: float,
    exclusive: bool = False,
    nullable: bool = False,
) -> float | None:
    if value is None and nullable:
        return None
    bound = f"> {minimum:g}" if exclusive else f">= {minimum:g}"
    expected = f"a number {bound}" + (" or null" if nullable else "")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SpecError(f"must be {expected}, got {_describe(value)}", field=name)
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number) or number < minimum or (exclusive and number == minimum):
        raise SpecError(f"must be {expected}, got {_describe(value)}", field=name)
    return number


def _integer(
    value: Any, name: str, low: int, high: int | None, *, nullable: bool = False
) -> int | None:
    if value is None and nullable:
        return None
    expected = f"an integer from {low} to {high}" if high is not None else f"an integer >= {low}"
    if nullable:
        expected += " or null"
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"must be {expected}, got {_describe(value)}", field=name)
    if value < low or (high is not None and value > high):
        raise SpecError(f"must be {expected}, got {_describe(value)}", field=name)
    return value


def _text(value: str, where: str) -> None:
    """Refuse what no command line, file name or etcd value can carry."""
    if "\x00" in value:
        raise SpecError("contains a NUL byte", field=where)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise SpecError("is not valid Unicode (a lone surrogate)", field=where) from None


def _decode(raw: bytes | bytearray | str) -> Any:
    """JSON text to an object: at most MAX_SPEC_BYTES, no duplicate keys, no NaN/Infinity."""
    size = len(raw.encode("utf-8", "surrogatepass")) if isinstance(raw, str) else len(raw)
    if size > MAX_SPEC_BYTES:
        raise SpecError(_oversize(size))
    try:
        text = raw if isinstance(raw, str) else bytes(raw).decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError(f"not valid UTF-8 (byte {e.start})") from None
    try:
        return _DECODER.decode(text)
    except SpecError:
        raise
    except json.JSONDecodeError as e:
        raise SpecError(f"not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise SpecError("not valid JSON: nested too deeply") from None
    except ValueError as e:  # e.g. an integer with thousands of digits
        raise SpecError(f"not valid JSON: {e}") from None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise SpecError("appears twice in one JSON object", field=key)
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise SpecError(f"not valid JSON: {name} is not a number JSON allows")


def _oversize(size: int) -> str:
    return (
        f"spec is {size} bytes of JSON; the limit is {MAX_SPEC_BYTES} bytes "
        f"({MAX_SPEC_BYTES // 1024} KiB: a job's record is written twice in one etcd request): "
        "keep large inputs in files and pass their paths"
    )


def _describe(value: Any) -> str:
    kinds = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        tuple: "a list",
        dict: "an object",
    }
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    kind = kinds.get(type(value), type(value).__name__)
    if not isinstance(value, int | float | str):
        return kind
    text = json.dumps(value, ensure_ascii=False) if isinstance(value, str) else repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{kind} {text}"


# One decoder for every spec: json.loads with hooks would build a new one per call.
_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
