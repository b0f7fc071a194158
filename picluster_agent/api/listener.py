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
  `keepalive_timeout` (server.py sets it);
- a reply its caller stops taking is cut (the connection closed) once it has waited
  `write_timeout` for the caller: aiohttp's writes wait for ever, so a caller that asked
  for a long output (or a follow) and read no more held its connection, the handler and the
  file it read from for as long as it kept the socket open.
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
# Seconds a reply may wait for its caller to take some of it. TLS over TCP buffers the
# reply in steps: the writer stays paused until the caller has taken ~48 KiB, so this cuts
# a caller slower than ~1 KiB/s (a stalled one), not a slow link.
WRITE_TIMEOUT = 60.0


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


class _Served(asyncio.Protocol):
    """A served connection, around the server's own protocol. While its TLS handshake is
    under way it is counted against the limit, until the handshake is done or can no longer
    be (a failed or timed-out handshake never tells the protocol, so the count forgets it at
    its deadline). Then, each time its writes are paused (the caller takes nothing), the
    connection is aborted unless they resume within `write_timeout`."""

    def __init__(
        self, inner: asyncio.Protocol, pending: dict[_Served, float], write_timeout: float
    ) -> None:
        self._inner = inner
        self._pending = pending
        self._write_timeout = write_timeout
        self._transport: asyncio.BaseTransport | None = None
        self._stalled: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._pending.pop(self, None)  # from now on aiohttp counts it (`connections`)
        self._transport = transport
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._unwatch()
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()
        if self._transport is not None and self._stalled is None:
            # Aborted, not closed: a close would wait for the caller to take the rest.
            # The handler's pending write then fails (ConnectionResetError) and it ends.
            self._stalled = asyncio.get_running_loop().call_later(
                self._write_timeout, self._transport.abort
            )

    def resume_writing(self) -> None:
        self._unwatch()
        self._inner.resume_writing()

    def _unwatch(self) -> None:
        if self._stalled is not None:
            self._stalled.cancel()
            self._stalled = None


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
        write_timeout: float = WRITE_TIMEOUT,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context)
        self._host = host
        self._port = port
        self._max_connections = max_connections
        self._handshake_timeout = handshake_timeout
        self._write_timeout = write_timeout

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
        handshaking: dict[_Served, float] = {}

        def protocol() -> Any:
            now = loop.time()
            for gone in [p for p, deadline in handshaking.items() if deadline < now]:
                del handshaking[gone]
            if len(server.connections) + len(handshaking) >= self._max_connections:
                return _Busy(busy)
            counted = _Served(server(), handshaking, self._write_timeout)
            handshaking[counted] = now + self._handshake_timeout + 1.0  # 1 s: the timer's lag
            return counted

        self._server = await loop.create_server(
            protocol,
            self._host,
            self._port,
            ssl=self._ssl_context,
            ssl_handshake_timeout=self._handshake_timeout,
        )
