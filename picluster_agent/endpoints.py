"""Which etcd member an agent talks to first.

Every node's config lists the same members in the same order. Left alone, every agent would
send everything to the first member. So an agent on an etcd node starts with its own member
(no network hop, and the load follows the members), and an agent on any other node starts at
a member chosen by its name, which spreads those nodes evenly. The order after the first
stays the same: it is the order failover walks through.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
from collections.abc import Sequence
from urllib.parse import urlsplit


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
    local = [i for i, url in enumerate(eps) if is_local_address(urlsplit(url).hostname or "")]
    if len(local) == len(eps):
        return eps  # all on this machine (a local test cluster): keep the given order
    if local:
        start = local[0]
    else:
        start = int(hashlib.sha256(node_name.encode()).hexdigest(), 16) % len(eps)
    return eps[start:] + eps[:start]
