"""The Python API over HTTPS: talk to any agent's API, with no etcd client at all.

    from picluster_agent.api_client import ApiClient
    api = ApiClient("https://pi1.local:7443", cacert="ca.crt", cert="alice.crt", key="alice.key")
    job = api.submit(["python3", "simulate.py", "--seed", "7"], max_attempts=3)
    print(job.id, api.wait(job.id, timeout=60)["state"])

Each call is one HTTPS request on a kept-alive connection (one client per thread). Errors
are the CLI's: bad input is ConfigError, a refused certificate PermissionDenied, an unknown
job NotFound, an unreachable agent or cluster Unavailable; each carries the agent's one-line
reason. A submit returns once etcd has committed the job; a retry with the same id creates
nothing (`accepted` is then False).
"""

from __future__ import annotations

import http.client
import json
import ssl
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

from .client import SubmitResult
from .errors import (
    ConfigError,
    NotFound,
    PermissionDenied,
    PiclusterError,
    RequestTooLarge,
    Unavailable,
)
from .jobs.ids import new_job_id

DEFAULT_TIMEOUT = 10.0  # seconds per request; a long poll adds its own wait to it


def client_tls(cacert: str | None, cert: str | None, key: str | None) -> ssl.SSLContext:
    """TLS that trusts the cluster CA alone and shows the caller's certificate."""
    context = ssl.create_default_context(cafile=cacert) if cacert else ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if bool(cert) != bool(key):
        raise ConfigError("a client certificate needs both cert and key")
    if cert and key:
        try:
            context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(f"cannot use certificate {cert} with key {key}: {e}") from e
    return context


class ApiClient:
    def __init__(
        self,
        url: str,
        *,
        cacert: str | None = None,
        cert: str | None = None,
        key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme != "https" or not parsed.hostname:
            raise ConfigError(f"API url {url!r}: expected https://HOST:PORT")
        self.url = url
        self._host = parsed.hostname
        self._port = parsed.port or 443
        self._tls = client_tls(cacert, cert, key)
        self._timeout = timeout
        self._conn: http.client.HTTPSConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # ------------------------------------------------------------ jobs

    def submit(
        self, command: Sequence[str] | str, *, id: str | None = None, **fields: Any
    ) -> SubmitResult:
        """Submit one job; `fields` are job spec fields (docs/JOB_SPEC.md): shell, env, ..."""
        spec: dict[str, Any] = {"command": command if isinstance(command, str) else list(command)}
        if isinstance(command, str):
            spec.setdefault("shell", True)
        spec.update(fields)
        return self.submit_spec(spec, id=id)

    def submit_spec(self, spec: Mapping[str, Any], *, id: str | None = None) -> SubmitResult:
        # The id is chosen here, so that a retry after a lost reply creates nothing new.
        body = {**spec, "id": id or spec.get("id") or new_job_id()}
        data = self._call("POST", "/v1/jobs", body)
        return SubmitResult(data["id"], bool(data["accepted"]))

    def submit_array(
        self, command: Sequence[str] | str, indices: str, *, id: str | None = None, **fields: Any
    ) -> dict[str, Any]:
        """One job per index (`"0-99:2%10"`, as `submit --array`); `id` is the parent's, which
        `status`, `wait` and `cancel` take for the whole array. A retry with the same id
        creates nothing new."""
        spec: dict[str, Any] = {"command": command if isinstance(command, str) else list(command)}
        if isinstance(command, str):
            spec.setdefault("shell", True)
        body = {**spec, **fields, "id": id or new_job_id()}
        query = urllib.parse.urlencode({"array": indices})
        return self._call("POST", f"/v1/jobs?{query}", body)  # type: ignore[no-any-return]

    def status(self, job_id: str) -> dict[str, Any]:
        """A job's status, or an array's (by its parent id: counts and members)."""
        return self._call("GET", f"/v1/jobs/{_quoted(job_id)}")  # type: ignore[no-any-return]

    def jobs(
        self,
        state: str | None = None,
        node: str | None = None,
        limit: int | None = None,
        *,
        active: bool = False,
    ) -> list[dict[str, Any]]:
        """Jobs, oldest first (as `Client.jobs`); `active`: only those not finished, as
        `picluster jobs` lists them (queued, waiting for another attempt, running)."""
        given = (("state", state), ("node", node), ("limit", limit), ("active", int(active)))
        query = {k: str(v) for k, v in given if v}
        path = "/v1/jobs" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        return self._call("GET", path)["jobs"]  # type: ignore[no-any-return]

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Ask for a cancel; returns the job's status at the time of asking."""
        # Safe to send twice: a second request for the same job changes nothing.
        path = f"/v1/jobs/{_quoted(job_id)}/cancel"
        return self._call("POST", path, repeatable=True)  # type: ignore[no-any-return]

    def wait(self, job_id: str, timeout: float | None = None) -> dict[str, Any]:
        """The job's status once final, or after `timeout` seconds (check `final`)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = 300.0 if deadline is None else max(0.0, min(300.0, deadline - time.monotonic()))
            status = self._call(
                "GET", f"/v1/jobs/{_quoted(job_id)}/wait?timeout={left:.3f}", extra_time=left
            )
            if status["final"] or (deadline is not None and time.monotonic() >= deadline):
                return status  # type: ignore[no-any-return]

    # ------------------------------------------------------------ transport

    def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        extra_time: float = 0.0,
        repeatable: bool = False,
    ) -> Any:
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        for attempt in (1, 2):
            conn = self._connection(self._timeout + extra_time)
            try:
                conn.request(method, path, body=payload, headers=headers)
                response = conn.getresponse()
                raw = response.read()
                break
            except (ConnectionError, http.client.RemoteDisconnected) as e:
                self.close()
                # A kept-alive connection the server closed meanwhile (it closes idle ones:
                # api/listener.py): one fresh try. A submit is safe to send again: its id
                # makes the retry idempotent.
                if attempt == 2 or not (method == "GET" or repeatable or _has_id(body)):
                    raise Unavailable(f"API {self.url}: {e}") from e
            except (OSError, http.client.HTTPException) as e:
                self.close()
                raise Unavailable(f"API {self.url}: {e}") from e
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            data = {"error": raw[:200].decode("utf-8", "replace")}
        if response.status >= 400:
            raise _error(response.status, str(data.get("error", response.reason)))
        return data

    def _connection(self, timeout: float) -> http.client.HTTPSConnection:
        if self._conn is None:
            self._conn = http.client.HTTPSConnection(
                self._host, self._port, context=self._tls, timeout=timeout
            )
        self._conn.timeout = timeout
        if self._conn.sock is not None:
            self._conn.sock.settimeout(timeout)
        return self._conn


def _quoted(job_id: str) -> str:
    return urllib.parse.quote(job_id, safe="")


def _has_id(body: Any) -> bool:
    return isinstance(body, dict) and isinstance(body.get("id"), str)


def _error(status: int, message: str) -> PiclusterError:
    if status in (401, 403):
        return PermissionDenied(f"permission denied: {message}")
    if status == 404:
        return NotFound(message)
    if status == 413:
        return RequestTooLarge(message)
    if 400 <= status < 500:
        return ConfigError(message)
    if status in (502, 503, 504):
        return Unavailable(message)
    return PiclusterError(message)
