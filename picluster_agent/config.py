"""Configuration: flags win over environment, environment over a config file, then defaults.

The same file (`/etc/picluster/agent.yaml` on a node) serves the agent and the client
commands, so `picluster submit -- CMD` on a node needs no flags at all.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import defaults
from .errors import ConfigError
from .etcd.keys import validate_node_name, validate_prefix

# Keys allowed in the YAML file; anything else is a typo we refuse to guess about.
FILE_KEYS = {
    "name",
    "endpoints",
    "prefix",
    "lease_ttl",
    "slots",
    "labels",
    "data_dir",
    "cacert",
    "cert",
    "key",
    "master",
    "address",
    "job_user",
    "log_level",
    "result_tail_bytes",
    "kill_grace",
    "keep_finished",
    "keep_finished_seconds",
    "prefetch",
}

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
    slots: int = 1
    labels: Mapping[str, str] = field(default_factory=dict)
    data_dir: str = defaults.DATA_DIR
    master: bool = True
    address: str = ""
    job_user: str | None = None
    log_level: str = "INFO"
    result_tail_bytes: int = 64 * 1024
    kill_grace: float = 10.0
    keep_finished: int = 10_000
    keep_finished_seconds: float = 7 * 24 * 3600
    prefetch: int = 0


def load_file(path: str | os.PathLike[str] | None, *, required: bool) -> dict[str, Any]:
    """Read a YAML config; a missing optional file is an empty config."""
    if path is None:
        return {}
    p = Path(path).expanduser()
    try:
        text = p.read_text()
    except FileNotFoundError as e:
        if required:
            raise ConfigError(f"config file {p} not found") from e
        return {}
    except PermissionError as e:
        if required:
            raise ConfigError(f"config file {p} is not readable") from e
        return {}
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or "parse error"
        raise ConfigError(f"config file {p} is not valid YAML{where}: {problem}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping of settings")
    unknown = sorted(set(data) - FILE_KEYS)
    if unknown:
        raise ConfigError(f"config file {p}: unknown setting(s) {', '.join(unknown)}")
    return data


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


def _endpoints(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",")]
    elif isinstance(value, list | tuple):
        items = [str(v).strip() for v in value]
    else:
        raise ConfigError("endpoints must be a comma-separated string or a list")
    items = [i for i in items if i]
    if not items:
        raise ConfigError("no etcd endpoints given")
    return tuple(items)


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
        endpoints=_endpoints(eps) if eps is not None else defaults.ENDPOINTS,
        prefix=validate_prefix(_pick(prefix, ENV["prefix"], file.get("prefix")) or defaults.PREFIX),
        cacert=_pick(cacert, ENV["cacert"], file.get("cacert")),
        cert=_pick(cert, ENV["cert"], file.get("cert")),
        key=_pick(key, ENV["key"], file.get("key")),
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
    return file, conn


def parse_labels(items: list[str] | Mapping[str, Any] | None) -> dict[str, str]:
    """`k=v` strings (flags) or a mapping (file) to a validated dict."""
    if not items:
        return {}
    pairs: list[tuple[str, str]] = []
    if isinstance(items, Mapping):
        pairs = [(str(k), str(v)) for k, v in items.items()]
    else:
        for item in items:
            k, sep, v = item.partition("=")
            if not sep:
                raise ConfigError(f"label {item!r}: expected KEY=VALUE")
            pairs.append((k.strip(), v.strip()))
    labels: dict[str, str] = {}
    for k, v in pairs:
        validate_node_name(k) if k else None
        if not k or not v or len(v) > 63 or "/" in v or not v.isprintable():
            raise ConfigError(f"label {k}={v!r}: key and value must be 1-63 printable chars")
        labels[k] = v
    return labels


def _int(name: str, value: Any, minimum: int) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{name} must be an integer, got {value!r}") from e
    if n < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {n}")
    return n


def build_agent_config(
    file: Mapping[str, Any], connection: Connection, **flags: Any
) -> AgentConfig:
    """Merge agent flags (None = not given) over the file's settings."""

    def get(name: str, default: Any) -> Any:
        flag = flags.get(name)
        if flag is not None:
            return flag
        return file.get(name, default)

    ttl = _int("lease TTL", get("lease_ttl", defaults.LEASE_TTL), 1)
    if ttl < defaults.MIN_LEASE_TTL:
        raise ConfigError(
            f"lease TTL {ttl}s is below etcd's minimum of {defaults.MIN_LEASE_TTL}s "
            "(1.5 x the default election timeout)"
        )
    labels = parse_labels(file.get("labels"))
    labels.update(parse_labels(flags.get("labels")))
    master = file.get("master", True) if flags.get("master") is None else flags["master"]
    if not isinstance(master, bool):
        raise ConfigError("master must be true or false")
    return AgentConfig(
        connection=connection,
        name=validate_node_name(str(get("name", socket.gethostname().split(".")[0]))),
        lease_ttl=ttl,
        slots=_int("slots", get("slots", os.cpu_count() or 1), 1),
        labels=labels,
        data_dir=str(get("data_dir", defaults.DATA_DIR)),
        master=master,
        address=str(get("address", "") or socket.getfqdn()),
        job_user=get("job_user", None),
        log_level=str(get("log_level", "INFO")).upper(),
        result_tail_bytes=_int("result_tail_bytes", get("result_tail_bytes", 64 * 1024), 0),
        kill_grace=float(get("kill_grace", 10.0)),
        keep_finished=_int("keep_finished", get("keep_finished", 10_000), 0),
        keep_finished_seconds=float(get("keep_finished_seconds", 7 * 24 * 3600)),
        prefetch=_int("prefetch", get("prefetch", 0), 0),
    )
