"""One object owns the agent's lease: grant, keepalive, state, and the two ways out.

States (kazoo's naming):
  CONNECTED  the last keepalive succeeded;
  SUSPENDED  a keepalive failed but the lease may still be alive at the server: the master
             stops deciding, workers keep running until `safe_until()` nears;
  LOST       the lease expired, was revoked, or may have expired (deadline passed): every
             lease-bound assumption is void.

The deadline is computed from the *send* time of the last successful keepalive: the server
resets the lease's TTL when it receives the request, which is after we sent it, so
`sent + ttl` is a lower bound of the server-side expiry. A worker that stops its jobs before
`safe_until()` has therefore stopped them before the lease can have expired.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable

from .. import defaults, timing
from ..errors import PiclusterError, SessionLost
from ..etcd.adapter import EtcdClient
from ..liveness import Liveness
from ..stopping import Flag

log = logging.getLogger(__name__)


class SessionState(enum.StrEnum):
    CONNECTED = "connected"
    SUSPENDED = "suspended"
    LOST = "lost"


Listener = Callable[[SessionState], None]


class Session:
    """A lease kept alive by a background thread."""

    def __init__(
        self, client: EtcdClient, ttl: int = defaults.LEASE_TTL, liveness: Liveness | None = None
    ) -> None:
        if ttl < defaults.MIN_LEASE_TTL:
            raise PiclusterError(
                f"lease TTL {ttl}s is below etcd's minimum of {defaults.MIN_LEASE_TTL}s"
            )
        self.client = client
        self.ttl = ttl
        # The agent's loops beat here (the keepalive, and the duties run with this session).
        self.liveness = liveness if liveness is not None else Liveness()
        sent = time.monotonic()
        self.lease_id, granted = client.grant(ttl)
        if granted < ttl:
            raise PiclusterError(f"etcd granted a {granted}s lease, asked for {ttl}s")
        if granted > ttl:
            # etcd raises TTLs below its minimum silently: refuse rather than mis-time.
            client.revoke(self.lease_id)
            raise PiclusterError(
                f"etcd raised the lease TTL from {ttl}s to {granted}s: "
                f"choose a TTL of at least {granted}s"
            )
        self._last_ok_sent = sent
        self._state = SessionState.CONNECTED
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()
        self._done = Flag()  # AnyEvents that hold it wake when it is set
        self._closing = threading.Event()
        self._renewed = threading.Condition()  # notified at each renewal and at the end
        self._renewals = 0
        self._thread = threading.Thread(target=self._keepalive_loop, name="keepalive", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ observers

    @property
    def state(self) -> SessionState:
        return self._state

    @property
    def done(self) -> Flag:
        """Set once the session is LOST or closed."""
        return self._done

    def safe_until(self) -> float:
        """Monotonic time before which the lease is certainly still alive at the server."""
        return self._last_ok_sent + self.ttl

    def wait_renewal(self, seen: int, timeout: float) -> int:
        """Wait until the lease has been renewed more than `seen` times, the session has
        ended, or `timeout` has passed; return the number of renewals so far."""
        with self._renewed:
            self._renewed.wait_for(lambda: self._renewals > seen or self._done.is_set(), timeout)
            return self._renewals

    def add_listener(self, listener: Listener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def check(self) -> None:
        if self._state is SessionState.LOST:
            raise SessionLost(f"lease {self.lease_id:x} lost")

    # ------------------------------------------------------------ ways out

    def close(self) -> None:
        """Revoke the lease now: every key under it vanishes (a clean handover)."""
        self._closing.set()
        try:
            self.client.revoke(self.lease_id)
        except PiclusterError as e:
            log.warning("could not revoke lease %x: %s (it will expire)", self.lease_id, e)
        self._set_state(SessionState.LOST)
        self._thread.join(timeout=defaults.REQUEST_TIMEOUT * 2)

    def expire_locally(self) -> None:
        """Treat the lease as lost now (the worker's lease guard fired): stop renewing.

        The agent then starts a new session and revokes this lease best-effort, so the
        master sees the assignments under it vanish and re-queues them.
        """
        self._closing.set()
        self._set_state(SessionState.LOST)

    def orphan(self) -> None:
        """Stop renewing and let the lease expire on its own."""
        self._closing.set()
        self._thread.join(timeout=defaults.REQUEST_TIMEOUT * 2)

    # ------------------------------------------------------------ internals

    def _set_state(self, new: SessionState) -> None:
        with self._lock:
            old = self._state
            if old is new or old is SessionState.LOST:
                return  # LOST is final: a late keepalive reply cannot revive the session
            self._state = new
            listeners = list(self._listeners)
        log.log(
            logging.INFO if new is SessionState.CONNECTED else logging.WARNING,
            "session %x: %s -> %s",
            self.lease_id,
            old,
            new,
        )
        if new is SessionState.LOST:
            self._done.set()
            with self._renewed:
                self._renewed.notify_all()
        for listener in listeners:
            try:
                listener(new)
            except Exception:
                log.exception("session listener failed")

    def _keepalive_loop(self) -> None:
        name = f"keepalive (lease {self.lease_id:x})"
        try:
            self._keep_alive(name)
        finally:
            self.liveness.end(name)

    def _keep_alive(self, name: str) -> None:
        interval = timing.keepalive_interval(self.ttl)
        next_beat = self._last_ok_sent + interval
        # One turn: a wait of at most `interval`, then a renewal that may try every member.
        turn = interval + timing.KEEPALIVE_TIMEOUT * len(self.client.endpoints)
        self.liveness.beat(name, turn + defaults.LOOP_STALL)
        while not self._closing.wait(max(0.0, next_beat - time.monotonic())):
            self.liveness.beat(name, turn + defaults.LOOP_STALL)
            if self._state is SessionState.LOST:
                return
            sent = time.monotonic()
            if sent > self.safe_until():
                # Paused (SIGSTOP) or starved past the deadline: the lease may be gone.
                self._set_state(SessionState.LOST)
                return
            late = sent - next_beat
            if late > interval:
                log.warning("keepalive %.1fs late", late)
            try:
                remaining = self.client.keepalive(self.lease_id, timing.KEEPALIVE_TIMEOUT)
            except PiclusterError as e:
                if time.monotonic() >= self.safe_until():
                    self._set_state(SessionState.LOST)
                    return
                log.warning("keepalive failed: %s", e)
                self._set_state(SessionState.SUSPENDED)
                next_beat = time.monotonic() + min(0.2, interval)
                continue
            if self._closing.is_set():
                return
            if remaining <= 0:
                self._set_state(SessionState.LOST)
                return
            self._last_ok_sent = sent
            with self._renewed:
                self._renewals += 1
                self._renewed.notify_all()
            self._set_state(SessionState.CONNECTED)
            next_beat = sent + interval
