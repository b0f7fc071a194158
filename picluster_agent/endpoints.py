"""etcd endpoints: what a valid one looks like, and which member an agent talks to first.

Every node's config lists the same members in the same order. Left alone, every agent would
send everything to the first member. So an agent on an etcd node starts with its own member
(no network hop, and the load follows the members), and an agent on any other node starts at
a member chosen by its name, which spreads those nodes evenly. The order after the first
stays the same: it is the order failover walks through.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import re
import socket
from collections.abc import Sequence
from urllib.parse import urlsplit

from .errors import ConfigError

DEFAULT_PORT = 2379
# A DNS name or an IPv4 address; IPv6 addresses come in brackets and are checked apart.
_HOST_NAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]{0,252})")


def parse_endpoint(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of `http(s)://HOST[:PORT]` (`HOST[:PORT]` means http).

    Raises ConfigError naming the endpoint; urlsplit's own ValueErrors (a malformed IPv6
    address, a port out of range) become that one line too.
    """
    rule = "expected http(s)://HOST:PORT, an IPv6 address in brackets"
    if not isinstance(url, str):
        raise ConfigError(f"bad etcd endpoint {url!r}: not a string; {rule}")
    text = url.strip()
    if not text:
        raise ConfigError(f"bad etcd endpoint {url!r}: empty; {rule}")
    full = text if "://" in text else "http://" + text
    try:
        parts = urlsplit(full)
        port = parts.port
        host = parts.hostname or ""
    except ValueError as e:
        raise ConfigError(f"bad etcd endpoint {url!r}: {e}; {rule}") from e
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"bad etcd endpoint {url!r}: {rule}")
    if "[" in parts.netloc:
        try:
            ipaddress.IPv6Address(host)
        except ValueError as e:
            raise ConfigError(f"bad etcd endpoint {url!r}: {e}; {rule}") from e
    elif not _HOST_NAME.fullmatch(host):
        raise ConfigError(f"bad etcd endpoint {url!r}: no valid host name; {rule}")
    if port == 0:
        raise ConfigError(f"bad etcd endpoint {url!r}: port 0; {rule}")
    if parts.username is not None or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(f"bad etcd endpoint {url!r}: only scheme, host and port; {rule}")
    return parts.scheme, host, port or DEFAULT_PORT


def parse_endpoints(value: object) -> tuple[str, ...]:
    """A comma-separated string or a list of endpoints, each checked; at least one."""
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",")]
    elif isinstance(value, list | tuple):
        items = [v.strip() if isinstance(v, str) else v for v in value]
    else:
        raise ConfigError("endpoints must be a comma-separated string or a list")
    items = [i for i in items if i != ""]
    if not items:
        raise ConfigError("no etcd endpoints given")
    for item in items:
        parse_endpoint(item)  # type: ignore[arg-type]
    return tuple(items)  # type: ignore[arg-type]


def is_local_address(host: str) -> bool:
    """True when `host` names an address of this machine (binding to it succeeds)."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    for family, _, _, _, sockaddr in infos:
        with contextlib.suppress(OSError), socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((sockaddr[0], 0))
            return True
    return False


def preferred_order(endpoints: Sequence[str], node_name: str) -> list[str]:
    eps = list(endpoints)
    if len(eps) < 2:
        return eps
    local = [i for i, url in enumerate(eps) if is_local_address(parse_endpoint(url)[1])]
    if len(local) == len(eps):
        return eps  # all on this machine (a local test cluster): keep the given order
    if local:
        start = local[0]
    else:
        start = int(hashlib.sha256(node_name.encode()).hexdigest(), 16) % len(eps)
    return eps[start:] + eps[:start]
