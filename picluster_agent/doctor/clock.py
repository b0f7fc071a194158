"""A member's clock against ours, from the `Date` header of its HTTP answers.

etcd's gRPC answers carry no time; its HTTP port (the same port, `/version`) answers with a
`Date` header in whole seconds. One answer places the member's clock only within a second;
polling until its second ticks over narrows that to the time between two polls (tens of ms
on a LAN): the tick happened after the last answer still showing the old second was sent
and before the first answer showing the new one came back. The precision is reported
with every offset.
"""

from __future__ import annotations

import http.client
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

from ..etcd.adapter import TLSFiles
from .certs import not_after_of_decoded


@dataclass(frozen=True)
class ClockReading:
    offset: float  # member's clock minus ours, seconds
    precision: float  # the true offset lies within offset +- precision
    cert_not_after: float | None  # the member's server certificate's end, when TLS


@dataclass(frozen=True)
class Answer:
    sent: float  # our clock, before the request
    received: float  # our clock, after the answer
    date: float  # the member's Date header, epoch seconds (whole)
    cert_not_after: float | None


def ssl_context(tls: TLSFiles) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=tls.cacert)
    if tls.cert and tls.key:
        ctx.load_cert_chain(tls.cert, tls.key)
    return ctx


def ask(url: str, tls: TLSFiles, timeout: float) -> Answer:
    """GET <url>/version once; OSError or http.client.HTTPException when it fails."""
    parts = urlsplit(url)
    host, port = parts.hostname or "localhost", parts.port or 2379
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=ssl_context(tls))
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.connect()  # the handshake is not part of the timed request
        not_after = None
        if isinstance(conn.sock, ssl.SSLSocket):
            peer = conn.sock.getpeercert()
            not_after = not_after_of_decoded(peer) if peer else None
        sent = time.time()
        conn.request("GET", "/version")
        response = conn.getresponse()
        received = time.time()
        response.read()
        header = response.getheader("Date")
    finally:
        conn.close()
    if header is None:
        raise http.client.HTTPException(f"{url}: no Date header")
    return Answer(sent, received, parsedate_to_datetime(header).timestamp(), not_after)


def read_clock(
    url: str,
    tls: TLSFiles,
    *,
    timeout: float = 2.0,
    budget: float = 1.5,
    interval: float = 0.02,
    asker: Callable[[str, TLSFiles, float], Answer] = ask,
) -> ClockReading:
    """The member's offset, narrowed by watching its Date header tick (within `budget`
    seconds); without a tick, the one-answer estimate (precision about half a second)."""
    first = asker(url, tls, timeout)
    previous = first
    deadline = time.monotonic() + budget
    while time.monotonic() < deadline:
        time.sleep(interval)
        answer = asker(url, tls, timeout)
        if answer.date > previous.date:
            return from_tick(previous, answer)
        previous = answer
    return from_one(first)


def from_tick(before: Answer, after: Answer) -> ClockReading:
    """The member's clock read `after.date` exactly at some moment of ours between
    `before.sent` and `after.received`."""
    low, high = before.sent, after.received
    return ClockReading(after.date - (low + high) / 2, (high - low) / 2, after.cert_not_after)


def from_one(answer: Answer) -> ClockReading:
    """A Date of D means the member's clock was in [D, D+1) while we waited."""
    low = answer.date - answer.received
    high = answer.date + 1 - answer.sent
    return ClockReading((low + high) / 2, (high - low) / 2, answer.cert_not_after)
