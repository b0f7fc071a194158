"""Configuration: flags win over environment, environment over a config file, then defaults.

The same file (`/etc/picluster/agent.yaml` on a node) serves the agent and the client
commands, so `picluster submit -- CMD` on a node needs no flags at all.
"""

from __future__ import annotations

import math
import os
import pwd
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from . import defaults, timing
from .endpoints import parse_endpoints
from .errors import ConfigError
from .etcd.keys import validate_node_name, validate_prefix
from .jobs.spec import label_problem

ENV = {
    "endpoints": "PICLUSTER_ENDPOINTS",
    "prefix": "PICLUSTER_PREFIX",
    "cacert": "PICLUSTER_CACERT",
    "cert": "PICLUSTER_CERT",
    "key": "PICLUSTER_KEY",
}


@dataclass(frozen=True)
class Connection:
    endpoints: tuple[str, ...] = defaults.ENDPOINTS
    prefix: str = defaults.PREFIX
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None


@dataclass(frozen=True)
class AgentConfig:
    connection: Connection
    name: str
    lease_ttl: int = defaults.LEASE_TTL
    etcd_election_timeout: float = defaults.ETCD_ELECTION_TIMEOUT
    slots: int = defaults.SLOTS
    labels: Mapping[str, str] = field(default_factory=dict)
    data_dir: str = defaults.DATA_DIR
    master: bool = defaults.MASTER
    address: str = ""
    job_user: str | None = None  # None: jobs run as the agent's own user
    log_level: str = defaults.LOG_LEVEL
    result_tail_bytes: int = defaults.RESULT_TAIL_BYTES
    output_cap_bytes: int = defaults.OUTPUT_CAP_BYTES  # per attempt and stream, on the node
    kill_grace: float = defaults.KILL_GRACE
    keep_finished: int = defaults.KEEP_FINISHED
    keep_finished_seconds: float = defaults.KEEP_FINISHED_SECONDS
    prefetch: int = defaults.PREFETCH
    job_pids_max: int = defaults.JOB_PIDS_MAX  # per attempt's cgroup
    job_cpu_weight: int = defaults.JOB_CPU_WEIGHT  # all jobs together (the agent has 100)
    api_port: int = defaults.API_PORT  # 0: no HTTPS API
    api_listen: str = defaults.API_LISTEN
    api_cert: str | None = None  # the API's server certificate; None: no HTTPS API
    api_key: str | None = None

    @property
    def api_enabled(self) -> bool:
        return self.api_port != 0 and self.api_cert is not None

    @property
    def api_url(self) -> str:
        """Where others reach this agent's API ("" without one): the listen address unless
        it is a wildcard, then the advertised address (the server certificate names both)."""
        if not self.api_enabled:
            return ""
        host = self.api_listen if self.api_listen not in ("0.0.0.0", "::") else self.address
        host = f"[{host}]" if ":" in host else host
        return f"https://{host}:{self.api_port}"


def load_file(path: str | os.PathLike[str] | None, *, required: bool) -> dict[str, Any]:
    """Read a YAML config; a missing optional file is an empty config."""
    if path is None:
        return {}
    if str(path) == "":
        raise ConfigError("config file: empty path")
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        if required:
            raise ConfigError(f"config file {p} not found") from e
        return {}
    except (OSError, UnicodeDecodeError) as e:
        # A directory, a path through a file, no permission, not text: never guess.
        reason = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
        raise ConfigError(f"config file {p} is not readable: {reason}") from e
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or "parse error"
        raise ConfigError(f"config file {p} is not valid YAML{where}: {problem}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping of settings")
    unknown = sorted(str(k) for k in set(data) - set(SETTINGS))
    if unknown:
        raise ConfigError(f"config file {p}: unknown setting(s) {', '.join(unknown)}")
    try:
        return {name: check_setting(name, value) for name, value in data.items()}
    except ConfigError as e:
        raise ConfigError(f"config file {p}: {e}") from e


def default_config_path() -> str | None:
    """The user's own file first (a laptop), else the node's agent file."""
    user = Path(defaults.USER_CONFIG_FILE).expanduser()
    if user.exists():
        return str(user)
    if Path(defaults.CONFIG_FILE).exists():
        return defaults.CONFIG_FILE
    return None


def _pick(flag: Any, env_name: str | None, file_value: Any) -> Any:
    if flag is not None:
        return flag
    if env_name and os.environ.get(env_name):
        return os.environ[env_name]
    return file_value


def build_connection(
    file: Mapping[str, Any],
    *,
    endpoints: str | None = None,
    prefix: str | None = None,
    cacert: str | None = None,
    cert: str | None = None,
    key: str | None = None,
) -> Connection:
    eps = _pick(endpoints, ENV["endpoints"], file.get("endpoints"))
    return Connection(
        endpoints=parse_endpoints(eps) if eps is not None else defaults.ENDPOINTS,
        prefix=validate_prefix(_pick(prefix, ENV["prefix"], file.get("prefix")) or defaults.PREFIX),
        cacert=_path_or_none("cacert", _pick(cacert, ENV["cacert"], file.get("cacert"))),
        cert=_path_or_none("cert", _pick(cert, ENV["cert"], file.get("cert"))),
        key=_path_or_none("key", _pick(key, ENV["key"], file.get("key"))),
    )


def from_flags(args: Any) -> tuple[dict[str, Any], Connection]:
    """The config file's settings and the connection, from the CLI's shared options."""
    file = load_file(args.config or default_config_path(), required=bool(args.config))
    conn = build_connection(
        file,
        endpoints=args.endpoints,
        prefix=args.prefix,
        cacert=args.cacert,
        cert=args.cert,
        key=args.key,
    )
    return file, _group_identity_if_needed(file, conn, given=(args.cert, args.key))


def _group_identity_if_needed(
    file: Mapping[str, Any], conn: Connection, *, given: tuple[str | None, str | None]
) -> Connection:
    """On a node, a member of the `picluster` group cannot read the agent's key: the CLI
    then speaks as the node's group identity (a submitter), when the file names one and no
    certificate was chosen by flag or environment."""
    chosen = any(given) or any(os.environ.get(ENV[n]) for n in ("cert", "key"))
    group_cert, group_key = file.get("group_cert"), file.get("group_key")
    if chosen or not (group_cert and group_key) or conn.key is None:
        return conn
    if os.access(conn.key, os.R_OK) or not os.access(group_key, os.R_OK):
        return conn
    return replace(conn, cert=group_cert, key=group_key)


def parse_labels(items: list[str] | Mapping[str, Any] | None) -> dict[str, str]:
    """`k=v` strings (flags) or a mapping (file) to a validated dict."""
    if not items:
        return {}
    pairs: list[tuple[str, str]] = []
    if isinstance(items, Mapping):
        for k, v in items.items():
            if not isinstance(v, str | int | float) or isinstance(v, bool):
                raise ConfigError(f"label {k}: the value must be a string, got {v!r}")
            pairs.append((str(k), str(v)))
    elif isinstance(items, list | tuple):
        for item in items:
            if not isinstance(item, str):
                raise ConfigError(f"label {item!r}: expected KEY=VALUE")
            k, sep, v = item.partition("=")
            if not sep:
                raise ConfigError(f"label {item!r}: expected KEY=VALUE")
            pairs.append((k.strip(), v.strip()))
    else:
        raise ConfigError(f"labels must be a mapping of key: value, got {items!r}")
    labels: dict[str, str] = {}
    for k, v in pairs:
        problem = label_problem(k, v)
        if problem is not None:
            raise ConfigError(f"label {k}={v!r}: {problem}")
        labels[k] = v
    return labels


# ---------------------------------------------------------------- one check per setting
#
# Each check takes a setting's typed value (YAML's own type, or a flag's after argparse
# converted it) and returns it normalised, or raises ConfigError. The config file, the
# agent's flags (cli.py) and build_agent_config all use the same checks.

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# etcd's own ceiling on a lease TTL (MaxLeaseTTL, seconds).
MAX_LEASE_TTL = 9_000_000_000
# Both output tails of one result must fit in etcd's 1.5 MiB request limit.
MAX_RESULT_TAIL_BYTES = 512 * 1024
# The output cap keeps a stream's last half: at least the largest tail a result may carry.
MIN_OUTPUT_CAP_BYTES = 2 * MAX_RESULT_TAIL_BYTES
# What useradd accepts on Debian (NAME_REGEX), without the trailing '$' of machine accounts.
_USER_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")


def _integer(minimum: int, maximum: int | None = None) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"must be an integer, got {value!r}")
        if value < minimum:
            raise ConfigError(f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise ConfigError(f"must be at most {maximum}, got {value}")
        return value

    return check


def _seconds(value: Any) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise ConfigError(f"must be a number of seconds, got {value!r}")
    if value < 0:
        raise ConfigError(f"must be at least 0 seconds, got {value}")
    return float(value)


def _text(value: Any) -> str:
    """A non-empty single-line string (a path, an address)."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"must be a non-empty string, got {value!r}")
    if not value.isprintable():
        raise ConfigError(f"must be printable text on one line, got {value!r}")
    return value


def _address(value: Any) -> str:
    if any(c.isspace() for c in _text(value)):
        raise ConfigError(f"must be a host name or address without spaces, got {value!r}")
    return value  # type: ignore[no-any-return]


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"must be true or false, got {value!r}")
    return value


def _log_level(value: Any) -> str:
    if not isinstance(value, str) or value.upper() not in LOG_LEVELS:
        raise ConfigError(f"must be one of {', '.join(LOG_LEVELS)}, got {value!r}")
    return value.upper()


def _job_user(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _USER_NAME.fullmatch(value):
        raise ConfigError(f"must be a user name (like picluster-jobs), got {value!r}")
    return value


def _node_name(value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"must be a node name (a string), got {value!r}")
    return validate_node_name(value)


def _prefix(value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"must be a key prefix (a string), got {value!r}")
    return validate_prefix(value)


def _labels(value: Any) -> dict[str, str]:
    # A list of "k=v" is the flags' form; in the file, labels are a mapping.
    if not isinstance(value, Mapping):
        raise ConfigError(f"must be a mapping of key: value, got {value!r}")
    return parse_labels(value)


def _lease_ttl(value: Any) -> int:
    ttl = _integer(1, MAX_LEASE_TTL)(value)
    if ttl < defaults.MIN_LEASE_TTL:
        raise ConfigError(
            f"{ttl}s is below etcd's minimum of {defaults.MIN_LEASE_TTL}s "
            "(1.5 x the default election timeout)"
        )
    return ttl


def _election_timeout(value: Any) -> float:
    seconds = _seconds(value)
    if not 0 < seconds <= 60:
        raise ConfigError(f"must be etcd's --election-timeout in seconds (0-60], got {value!r}")
    return seconds


SETTINGS: dict[str, Callable[[Any], Any]] = {
    "name": _node_name,
    "endpoints": parse_endpoints,
    "prefix": _prefix,
    "cacert": _text,
    "cert": _text,
    "key": _text,
    # The node's `picluster` group identity (etcd role picluster-submitter, key readable by
    # the group): the CLI's, for a user who cannot read `key` (the agent's). The agent
    # never uses it.
    "group_cert": _text,
    "group_key": _text,
    "lease_ttl": _lease_ttl,
    "etcd_election_timeout": _election_timeout,
    "slots": _integer(1),
    "labels": _labels,
    "data_dir": _text,
    "master": _boolean,
    "address": _address,
    "job_user": _job_user,
    "log_level": _log_level,
    "result_tail_bytes": _integer(0, MAX_RESULT_TAIL_BYTES),
    "output_cap_bytes": _integer(MIN_OUTPUT_CAP_BYTES),
    "kill_grace": _seconds,
    "keep_finished": _integer(0),
    "keep_finished_seconds": _seconds,
    "prefetch": _integer(0),
    "job_pids_max": _integer(2, 4_194_304),  # the supervisor is in it for a spawn
    "job_cpu_weight": _integer(1, 10_000),
    "api_port": _integer(0, 65535),
    "api_listen": _address,
    "api_cert": _text,
    "api_key": _text,
}


def check_setting(name: str, value: Any) -> Any:
    """`value` normalised, or ConfigError "<name>: <why>"."""
    try:
        return SETTINGS[name](value)
    except ConfigError as e:
        raise ConfigError(f"{name}: {e}") from e


def _path_or_none(name: str, value: Any) -> str | None:
    # "~/.config/picluster/ca.crt" in a person's bundle (playbooks/users.yml) is theirs.
    return None if value is None else os.path.expanduser(check_setting(name, value))


def build_agent_config(
    file: Mapping[str, Any], connection: Connection, **flags: Any
) -> AgentConfig:
    """Merge agent flags (None = not given) over the file's settings, each value checked."""

    def get(name: str, default: Any) -> Any:
        flag = flags.get(name)
        value = flag if flag is not None else file.get(name, default)
        return value if value is None else check_setting(name, value)

    labels = parse_labels(file.get("labels"))
    labels.update(parse_labels(flags.get("labels")))
    job_user = get("job_user", None)
    if job_user is not None:
        _require_user(job_user)
    ttl = get("lease_ttl", defaults.LEASE_TTL)
    election = get("etcd_election_timeout", defaults.ETCD_ELECTION_TIMEOUT)
    if not timing.rides_out_leader_loss(ttl, election):
        raise ConfigError(
            f"lease_ttl: {ttl}s is too short for etcd's election timeout of {election:g}s: "
            f"an etcd leader change would kill and re-run this node's jobs; use at least "
            f"{timing.min_lease_ttl(election)}s (README: the timing rule)"
        )
    return AgentConfig(
        connection=connection,
        name=get("name", socket.gethostname().split(".")[0]),
        lease_ttl=ttl,
        etcd_election_timeout=election,
        slots=get("slots", os.cpu_count() or defaults.SLOTS),
        labels=labels,
        data_dir=get("data_dir", defaults.DATA_DIR),
        master=get("master", defaults.MASTER),
        address=get("address", None) or socket.getfqdn(),
        job_user=job_user,
        log_level=get("log_level", defaults.LOG_LEVEL),
        result_tail_bytes=get("result_tail_bytes", defaults.RESULT_TAIL_BYTES),
        output_cap_bytes=get("output_cap_bytes", defaults.OUTPUT_CAP_BYTES),
        kill_grace=get("kill_grace", defaults.KILL_GRACE),
        keep_finished=get("keep_finished", defaults.KEEP_FINISHED),
        keep_finished_seconds=get("keep_finished_seconds", defaults.KEEP_FINISHED_SECONDS),
        prefetch=get("prefetch", defaults.PREFETCH),
        job_pids_max=get("job_pids_max", defaults.JOB_PIDS_MAX),
        job_cpu_weight=get("job_cpu_weight", defaults.JOB_CPU_WEIGHT),
        **_api_settings(get, connection),
    )


def _api_settings(get: Callable[[str, Any], Any], connection: Connection) -> dict[str, Any]:
    port = get("api_port", defaults.API_PORT)
    cert, key = get("api_cert", None), get("api_key", None)
    if bool(cert) != bool(key):
        raise ConfigError("api_cert and api_key: the HTTPS API needs both (or neither)")
    if cert and port and connection.cacert is None:
        raise ConfigError(
            "api_cert: the HTTPS API checks callers against the cluster CA: set cacert too"
        )
    return {
        "api_port": port,
        "api_listen": get("api_listen", defaults.API_LISTEN),
        "api_cert": os.path.expanduser(cert) if cert else None,
        "api_key": os.path.expanduser(key) if key else None,
    }


def _require_user(name: str) -> None:
    # Every job would fail on this node otherwise; say so once, at the start.
    try:
        pwd.getpwnam(name)
    except KeyError:
        raise ConfigError(f"job_user: no user {name!r} on this machine") from None


def ensure_data_dir(path: str) -> None:
    """Make the agent's data dir if needed; refuse one it cannot write (every job would fail)."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"data_dir: {path} is not a directory")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"data_dir: cannot create {path}: {e.strerror}") from e
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"data_dir: {path} is not writable by this user")
