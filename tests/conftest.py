"""Fixtures: real etcd clusters on loopback, agents as processes, and fault helpers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from picluster_agent.chaos.cluster import NetCluster
from picluster_agent.chaos.netns import unusable_reason
from picluster_agent.client import Client
from picluster_agent.coord.election import Leader, current_leader
from picluster_agent.etcd.adapter import EtcdClient
from picluster_agent.etcd.keys import Keys
from picluster_agent.etcd.localcluster import AgentProcess, EtcdCluster, LocalApis, wait_for
from picluster_agent.etcd.localpki import LocalPKI

REPO = Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    # scripts/test runs pytest in the background of a non-interactive shell, which starts it
    # with SIGINT ignored. An ignored signal stays ignored across exec, so every CLI a test
    # starts ignored Ctrl-C too (`jobs --watch` then ran on after SIGINT). A handled signal
    # is reset to its default at exec, so the children get a real Ctrl-C again.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def etcd1(tmp_path: Path) -> Iterator[EtcdCluster]:
    cluster = EtcdCluster(tmp_path / "etcd", 1).start()
    yield cluster
    cluster.stop_all()


@pytest.fixture
def etcd3(tmp_path: Path) -> Iterator[EtcdCluster]:
    cluster = EtcdCluster(tmp_path / "etcd", 3).start()
    yield cluster
    cluster.stop_all()


@pytest.fixture
def prefix() -> str:
    return f"/t-{uuid.uuid4().hex[:8]}"


class Agents:
    """Starts agents against one cluster and prefix; stops them all at teardown."""

    def __init__(self, cluster: EtcdCluster, prefix: str, base: Path) -> None:
        self.cluster = cluster
        self.prefix = prefix
        self.keys = Keys(prefix)
        self.base = base
        self.started: list[AgentProcess] = []
        self.client = EtcdClient(cluster.endpoints)
        self._apis: LocalApis | None = None

    @property
    def apis(self) -> LocalApis:
        """Certificates for the agents' HTTPS APIs and their callers (made on first use)."""
        if self._apis is None:
            self._apis = LocalApis(LocalPKI(self.base / "pki"), self.client, self.prefix)
        return self._apis

    def start(
        self, name: str, *, endpoints: str | None = None, with_api: bool = False, **kwargs: object
    ) -> AgentProcess:
        """`with_api`: the agent serves its HTTPS API on a free port (`agent.api_url`)."""
        kwargs.setdefault("etcd_election_timeout", self.cluster.election_timeout)
        if with_api:
            kwargs.setdefault("api", self.apis.for_agent(name))
        agent = AgentProcess(
            name,
            endpoints or self.cluster.endpoints_csv,
            self.prefix,
            self.base / f"{name}-{len(self.started)}",
            **kwargs,  # type: ignore[arg-type]
        ).start()
        self.started.append(agent)
        return agent

    def by_name(self, name: str) -> AgentProcess:
        return next(a for a in reversed(self.started) if a.name == name and a.running)

    def leader(self) -> Leader | None:
        return current_leader(self.client, self.keys)

    def wait_leader(self, timeout: float = 15.0, other_than: str | None = None) -> Leader:
        def check() -> Leader | None:
            leader = self.leader()
            if leader is None or leader.name == other_than:
                return None
            return leader

        return wait_for(check, timeout, interval=0.02, what="a master")

    def wait_registered(self, count: int, timeout: float = 60.0) -> None:
        # Agents starting: setup, not a claim about speed. Three agents took longer than
        # 15 s to register on a machine under heavy load (test_election's setup, twice).
        wait_for(
            lambda: self.client.count_prefix(self.keys.nodes_dir) == count,
            timeout,
            what=f"{count} registered nodes",
        )

    def stop_all(self) -> None:
        for a in self.started:
            a.terminate()


@pytest.fixture
def agents(etcd1: EtcdCluster, prefix: str, tmp_path: Path) -> Iterator[Agents]:
    group = Agents(etcd1, prefix, tmp_path / "agents")
    yield group
    group.stop_all()
    _dump_logs_on_failure(group)


@pytest.fixture
def agents3(etcd3: EtcdCluster, prefix: str, tmp_path: Path) -> Iterator[Agents]:
    group = Agents(etcd3, prefix, tmp_path / "agents")
    yield group
    group.stop_all()
    _dump_logs_on_failure(group)


def _dump_logs_on_failure(group: Agents) -> None:
    # pytest shows captured output only for failing tests: this is the agents' story.
    for a in group.started:
        sys.stdout.write(f"----- {a.name} ({a.log_path})\n{a.log_text()[-4000:]}\n")


def picluster(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a user would, in a fresh process."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PICLUSTER_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "picluster_agent", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    return picluster


@pytest.fixture
def net_cluster(tmp_path: Path) -> Iterator[Callable[..., NetCluster]]:
    """Starts NetClusters (nodes in network namespaces, see picluster_agent/chaos); every
    one is removed at teardown. Root only: skipped with the reason elsewhere, failed in CI."""
    made: list[NetCluster] = []

    def make(**kwargs: object) -> NetCluster:
        reason = unusable_reason()
        if reason:
            if os.environ.get("CI"):
                pytest.fail(f"the fault suite must run in CI: {reason}")
            pytest.skip(reason)
        cluster = NetCluster(tmp_path / f"net{len(made)}", **kwargs)  # type: ignore[arg-type]
        made.append(cluster)
        cluster.start()
        return cluster

    yield make
    for cluster in made:
        cluster.stop()
        for node in cluster.nodes.values():
            if node.agent is not None:
                sys.stdout.write(f"----- {node.name} ({node.agent.log_path})\n")
                sys.stdout.write(node.agent.log_text()[-3000:] + "\n")


@contextmanager
def module_cluster(base: Path, prefix: str, names: Sequence[str], slots: int) -> Iterator[Client]:
    """One etcd member and an agent per name, for a module's tests to share; a Client."""
    cluster = EtcdCluster(base / "etcd", 1).start()
    agents: list[AgentProcess] = []
    client = Client(cluster.endpoints_csv, prefix=prefix)
    try:
        for name in names:
            agents.append(
                AgentProcess(
                    name, cluster.endpoints_csv, prefix, base / name, slots=slots,
                    etcd_election_timeout=cluster.election_timeout,
                ).start()
            )  # fmt: skip
        wait_for(lambda: len(client.nodes()) == len(names), 15, what=f"{len(names)} agents")
        yield client
    finally:
        client.close()
        for a in agents:
            a.terminate()
        cluster.stop_all()
