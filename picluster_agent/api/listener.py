"""The API's TLS listener, with bounds on what callers may hold.

aiohttp's own TCPSite serves any number of connections and lets a caller take 60 s for its
TLS handshake; its request handler keeps an idle connection for an hour. Inside an agent
whose file descriptors also carry its etcd session and its jobs' outputs, a leaking client or
a stuck one must not use them up, so:

- at most `max_connections` connections at once, counting those whose TLS handshake is
  under way; one more is answered `503` in one line of JSON and closed (the caller may try
  again; nothing was done);
- a TLS handshake not finished within `handshake_timeout` is dropped;
- an idle connection (no request, or an unfinished one) is closed after the server's
  `keepalive_timeout` (server.py sets it).
"""

from __future__ import annotations

import asyncio
import json
import ssl
from typing import Any

from aiohttp import web

MAX_CONNECTIONS = 256
HANDSHAKE_TIMEOUT = 10.0
IDLE_TIMEOUT = 60.0


def busy_reply(limit: int) -> bytes:
    body = json.dumps({"error": f"too many connections to this node's API (at most {limit})"})
    return (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Retry-After: 1\r\n"
        "Connection: close\r\n\r\n" + body
    ).encode()


class _Busy(asyncio.Protocol):
    """A connection over the limit: one answer, then closed."""

    def __init__(self, reply: bytes) -> None:
        self._reply = reply

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(self._reply)
        transport.close()


class _Handshaking(asyncio.Protocol):
    """A served connection whose TLS handshake is under way: counted against the limit
    until the handshake is done, or can no longer be (a failed or timed-out handshake never
    tells the protocol, so the count forgets it at its deadline). Then the server's own
    protocol takes over."""

    def __init__(self, inner: asyncio.Protocol, pending: dict[_Handshaking, float]) -> None:
        self._inner = inner
        self._pending = pending

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._pending.pop(self, None)  # from now on aiohttp counts it (`connections`)
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class BoundedTLSSite(web.BaseSite):
    """A TCPSite over TLS with the bounds above (aiohttp's sites are meant to be extended
    this way: each makes its own server with `loop.create_server`)."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext,
        max_connections: int = MAX_CONNECTIONS,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context)
        self._host = host
        self._port = port
        self._max_connections = max_connections
        self._handshake_timeout = handshake_timeout

    @property
    def name(self) -> str:
        return f"https://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        busy = busy_reply(self._max_connections)
        loop = asyncio.get_running_loop()
        # Accepted, handshake not done yet, by the time it must be done by. Counted too:
        # aiohttp counts a connection only once its handshake is done, and the limit is
        # checked at accept, so connections opened at once were all served.
        handshaking: dict[_Handshaking, float] = {}

        def protocol() -> Any:
            now = loop.time()
            for gone in [p for p, deadline in handshaking.items() if deadline < now]:
                del handshaking[gone]
            if len(server.connections) + len(handshaking) >= self._max_connections:
                return _Busy(busy)
            counted = _Handshaking(server(), handshaking)
            handshaking[counted] = now + self._handshake_timeout + 1.0  # 1 s: the timer's lag
            return counted

        self._server = await loop.create_server(
            protocol,
            self._host,
            self._port,
            ssl=self._ssl_context,
            ssl_handshake_timeout=self._handshake_timeout,
        )
