"""What a route module needs from the agent it runs in."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..client import Client
from ..config import AgentConfig
from ..etcd.adapter import EtcdClient
from ..etcd.keys import Keys
from .auth import UserDirectory

T = TypeVar("T")

# Threads for blocking etcd calls made by the routes (the etcd client is synchronous): a
# long poll holds one for its whole wait, so there are more than cores.
BLOCKING_THREADS = 32


@dataclass
class ApiContext:
    cfg: AgentConfig
    etcd: EtcdClient  # the agent's own etcd client (its identity, its preferred endpoints)
    client: Client  # the Python API over that client: what the CLI uses
    users: UserDirectory
    # The running duties.agent.Agent, for routes that report its state (typed loosely: this
    # room may not import duties, which start the API).
    agent: Any = None
    executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(BLOCKING_THREADS, thread_name_prefix="api")
    )

    @property
    def node(self) -> str:
        return self.cfg.name

    @property
    def keys(self) -> Keys:
        return self.client.keys

    async def blocking(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking call (etcd) off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, lambda: fn(*args, **kwargs))
