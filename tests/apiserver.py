"""An agent's HTTPS API served in the test process over real TLS against a real etcd, for
tests of the server itself (its bounds, its admission): no agent duties, so nothing runs
the jobs submitted to it."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from picluster_agent.api import health, jobs
from picluster_agent.api.auth import UserDirectory
from picluster_agent.api.context import ApiContext
from picluster_agent.api.server import ApiServer, server_tls
from picluster_agent.api_client import ApiClient
from picluster_agent.client import Client
from picluster_agent.config import AgentConfig, Connection
from picluster_agent.etcd.adapter import EtcdClient
from picluster_agent.etcd.keys import Keys
from picluster_agent.etcd.localcluster import EtcdCluster, free_port
from picluster_agent.etcd.localpki import CertFiles, LocalPKI


@dataclass
class ServedApi:
    port: int
    pki: LocalPKI
    etcd: EtcdClient
    users: UserDirectory

    @property
    def cacert(self) -> str:
        return self.pki.cacert

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def caller(self, name: str, role: str) -> CertFiles:
        """A certificate of the cluster CA for `name`, admitted as etcd role `role`."""
        files = self.pki.issue(name)
        self.etcd.put(Keys().user(name), role)
        return files

    def client(self, who: CertFiles) -> ApiClient:
        return ApiClient(self.url, cacert=self.cacert, cert=who.cert, key=who.key)


@contextmanager
def served_api(
    etcd1: EtcdCluster,
    tmp_path: Path,
    modules: Sequence[ModuleType] = (health, jobs),
    *,
    data_dir: Path | None = None,
    **bounds: Any,
) -> Iterator[ServedApi]:
    """The API of node `pi1` on a free port, its users read before it is yielded; `bounds`:
    ApiServer's (max_connections, handshake_timeout, ...)."""
    pki = LocalPKI(tmp_path / "pki")
    files = pki.issue("api-pi1", server=True)
    etcd = EtcdClient(etcd1.endpoints)
    conn = Connection(endpoints=tuple(etcd1.endpoints))
    client = Client.from_connection(conn, etcd)
    users = UserDirectory(etcd, client.keys)
    extra = {} if data_dir is None else {"data_dir": str(data_dir)}
    ctx = ApiContext(AgentConfig(connection=conn, name="pi1", **extra), etcd, client, users)
    port = free_port()
    tls = server_tls(pki.cacert, files.cert, files.key)
    server = ApiServer(ctx, host="127.0.0.1", port=port, tls=tls, modules=modules, **bounds)
    server.start()
    try:
        assert users.wait_loaded(10)  # else callers are told 503 (users not read yet)
        yield ServedApi(port, pki, etcd, users)
    finally:
        server.stop()
        etcd.close()
