"""One node's agent: session, registration, election, master duties, worker.

The agent survives etcd outages: when its session is lost it drops every lease-bound
assumption (mastership, assignments), then makes a new session with backoff and joins
again, as a worker behind whoever is master by then.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from .. import defaults
from ..config import AgentConfig
from ..coord.election import Election, retry_transient
from ..coord.registry import NodeInfo, RegistrationKeeper, register
from ..coord.session import Session, SessionState
from ..endpoints import preferred_order
from ..errors import (
    AgentFailure,
    ConfigError,
    NotLeader,
    PiclusterError,
    SessionLost,
    Unavailable,
)
from ..etcd.adapter import EtcdClient, TLSFiles, op_put
from ..etcd.keys import Keys
from ..liveness import Liveness
from ..node.fsinfo import filesystem_of
from ..observe import sdnotify
from ..observe.metrics import AgentMetrics
from ..observe.watchdog import Watchdog
from ..stopping import AnyEvent, Flag, StopSignal

log = logging.getLogger(__name__)

# Called with (election, stop) while this agent is master; returns when it must step down.
MasterDuty = Callable[[Election, StopSignal], None]
# Called with (session, stop) for each session; runs the worker side until the session ends.
WorkerDuty = Callable[[Session, StopSignal], None]


class Service(Protocol):
    """Something that lives as long as the agent process (its HTTPS API): started before
    the first session, stopped after the last."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


def make_client(cfg: AgentConfig) -> EtcdClient:
    c = cfg.connection
    endpoints = preferred_order(c.endpoints, cfg.name)
    return EtcdClient(endpoints, TLSFiles(c.cacert, c.cert, c.key))


class Agent:
    def __init__(
        self,
        cfg: AgentConfig,
        *,
        master_duties: list[MasterDuty] | None = None,
        worker_duty: WorkerDuty | None = None,
        metrics: AgentMetrics | None = None,
        services: Sequence[Service] = (),
    ) -> None:
        self.cfg = cfg
        self.services = list(services)
        self.keys = Keys(cfg.connection.prefix)
        self.client = make_client(cfg)
        self.metrics = metrics if metrics is not None else AgentMetrics()
        self.metrics.describe_node(cfg.name, cfg.slots, cfg.labels, cfg.master)
        if self.metrics.enabled:
            self.client.observer = self.metrics.etcd_request
        self.session: Session | None = None  # the current one, for /readyz
        self.liveness = Liveness()  # the loops systemd's watchdog waits on
        self._ready_said = False
        self.stop_event = Flag()
        self.master_duties = master_duties if master_duties is not None else [leader_heartbeat]
        self.worker_duty = worker_duty
        self._broken = Flag()  # set when a part of this agent failed for good

    def stop(self) -> None:
        self.stop_event.set()
        sdnotify.notify("STOPPING=1")

    # ------------------------------------------------------------ lifecycle

    def run(self) -> None:
        """Serve until stop(); each lost session is replaced by a new one."""
        log.info(
            "agent %s starting (endpoints %s, prefix %s, ttl %ss, %s)",
            self.cfg.name,
            ",".join(self.cfg.connection.endpoints),
            self.keys.prefix,
            self.cfg.lease_ttl,
            "master-eligible" if self.cfg.master else "worker only",
        )
        warn_if_slow_filesystem(Path(self.cfg.data_dir))
        interval = sdnotify.watchdog_interval()
        watchdog = Watchdog(self.liveness, interval).start() if interval else None
        started: list[Service] = []
        try:
            for service in self.services:
                service.start()
                started.append(service)
            self._run_sessions()
        finally:
            for service in reversed(started):
                service.stop()
            if watchdog is not None:
                watchdog.stop()
        log.info("agent %s stopped", self.cfg.name)

    def _run_sessions(self) -> None:
        previous_lease = 0
        while not self.stop_event.is_set():
            session = self._new_session()
            if session is None:
                break
            if previous_lease:
                # Our old lease may still live at the server (we declared it lost by the
                # clock): revoke it so our old keys vanish and the name is free again.
                self._best_effort_revoke(previous_lease)
            try:
                self._serve(session)
            except (SessionLost, NotLeader) as e:
                log.warning("session ended: %s", e)
            except AgentFailure as e:
                # Revoke now: our keys vanish and the master re-runs our jobs elsewhere; the
                # non-zero exit lets systemd start a fresh agent.
                log.error("%s; stopping the agent", e)
                session.close()
                raise
            except ConfigError:
                session.close()
                raise
            except PiclusterError as e:
                log.warning("etcd trouble: %s; starting a new session", e)
            previous_lease = session.lease_id
            if self.stop_event.is_set():
                log.info("stopping: revoking lease %x (clean handover)", session.lease_id)
                session.close()
                previous_lease = 0
            else:
                session.orphan()

    def _ready_line(self) -> list[str]:
        """READY=1 the first time only."""
        if self._ready_said:
            return []
        self._ready_said = True
        return ["READY=1"]

    def _tell_systemd_waiting(self, error: PiclusterError) -> None:
        # systemd cannot tell a slow etcd from a down one: a start job that waited for
        # registration failed at TimeoutStartSec and Restart= began it again, every ~93 s
        # while etcd was away (a whole rack booting at once). The unit is started as soon
        # as etcd is found unreachable; STATUS= (systemctl status) says what it waits for.
        endpoints = ",".join(self.cfg.connection.endpoints)
        reason = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        sdnotify.notify(*self._ready_line(), f"STATUS=waiting for etcd at {endpoints}: {reason}")

    def _best_effort_revoke(self, lease_id: int) -> None:
        try:
            self.client.revoke(lease_id)
        except PiclusterError as e:
            log.info("old lease %x not revoked (%s); it expires on its own", lease_id, e)

    def _new_session(self) -> Session | None:
        backoff = defaults.RETRY_BACKOFF_MIN
        while not self.stop_event.is_set():
            try:
                session = Session(self.client, self.cfg.lease_ttl, self.liveness)
            except ConfigError:
                raise
            except PiclusterError as e:
                log.warning("cannot reach etcd (%s); retrying in %.1fs", e, backoff)
                self._tell_systemd_waiting(e)
                self.stop_event.wait(backoff * (0.5 + random.random() / 2))
                backoff = min(backoff * 2, defaults.RETRY_BACKOFF_MAX)
                continue
            self.metrics.session_started()
            self.metrics.session_is(session.state.value)
            session.add_listener(lambda state: self.metrics.session_is(state.value))
            self.session = session
            return session
        return None

    def _serve(self, session: Session) -> None:
        info = NodeInfo(
            name=self.cfg.name,
            slots=self.cfg.slots,
            labels=dict(self.cfg.labels),
            address=self.cfg.address,
            master_eligible=self.cfg.master,
            started_at=time.time(),
            memory_mb=_total_memory_mb(),
            prefetch=self.cfg.prefetch,
            lease=f"{session.lease_id:x}",
            api=self.cfg.api_url,
        )
        revision = self._register_with_retry(session, info)
        log.info("registered as %s (lease %x)", info.name, session.lease_id)
        # systemd (Type=notify): started means registered when etcd answers at start, so
        # `systemctl start` returns once the node can be given work.
        sdnotify.notify(*self._ready_line(), f"STATUS=registered as {info.name}")
        keeper = RegistrationKeeper(session, self.keys, info, revision)

        session_stop = Flag()
        self._broken = Flag()
        failures: list[BaseException] = []
        worker_thread = None
        if self.worker_duty is not None:
            worker_duty = self.worker_duty

            def worker() -> None:
                try:
                    worker_duty(session, session_stop)
                except BaseException as e:  # whatever it was, the node cannot run jobs now
                    log.exception("worker failed")
                    failures.append(e)
                    self._broken.set()

            worker_thread = threading.Thread(target=worker, name="worker", daemon=True)
            worker_thread.start()
        try:
            if self.cfg.master:
                self._campaign_loop(session)
            else:
                AnyEvent(self.stop_event, session.done, self._broken).wait()
        finally:
            keeper.stop()  # before the lease goes: its deletion of the key is final
            session_stop.set()
            if worker_thread is not None:
                worker_thread.join()
        if failures:
            # The worker retries what can be retried; what reaches here cannot be. A node
            # that stays registered without its worker would be given jobs that never run.
            raise AgentFailure(f"the worker failed: {failures[0]!r}") from failures[0]
        session.check()

    def _register_with_retry(self, session: Session, info: NodeInfo) -> int:
        deadline = time.monotonic() + self.cfg.lease_ttl + 2
        while True:
            try:
                return retry_transient(
                    lambda: register(session, self.keys, info), session, self.stop_event
                )
            except ConfigError:
                # A previous incarnation of this agent (killed -9) may still hold the name
                # until its lease expires: wait that long before giving up.
                if time.monotonic() > deadline:
                    raise
                if self.stop_event.wait(0.25):
                    raise SessionLost("stopping") from None

    def _campaign_loop(self, session: Session) -> None:
        stop = AnyEvent(self.stop_event, session.done, self._broken)
        backoff = defaults.RETRY_BACKOFF_MIN
        while not stop.is_set():
            election = Election(session, self.keys, self.cfg.name)
            if not election.campaign(stop):
                self._leave(election, session)
                return
            elected = time.monotonic()
            try:
                self._be_master(election, stop)
            except _DutyFailed as e:
                # Another agent takes over meanwhile; a failure that repeats does not spin.
                if time.monotonic() - elected > defaults.RETRY_BACKOFF_MAX:
                    backoff = defaults.RETRY_BACKOFF_MIN  # it served a while: a new failure
                log.warning("stepping down: %s; campaigning again in %.1fs", e, backoff)
                self._leave(election, session)
                stop.wait(backoff)
                backoff = min(backoff * 2, defaults.RETRY_BACKOFF_MAX)
                continue
            except NotLeader as e:
                log.warning("stepping down: %s", e)
            except SessionLost:
                log.warning("stepping down: session lost")
                return
            # Stopping: hand the election over now, before the worker winds down its jobs
            # (the lease, and with it every assignment here, is revoked only after that).
            # Still running: the key was removed under us; campaign again with a fresh one.
            self._leave(election, session)

    def _leave(self, election: Election, session: Session) -> None:
        if not session.done.is_set():
            election.resign()

    def _be_master(self, election: Election, stop: AnyEvent) -> None:
        log.info("MASTER: %s is master", self.cfg.name)
        self.metrics.master_began(election.create_revision)
        sdnotify.notify(f"STATUS=master (epoch {election.create_revision})")
        try:
            self._run_master_duties(election, stop)
        finally:
            self.metrics.master_ended()
            sdnotify.notify("STATUS=worker")

    def _run_master_duties(self, election: Election, stop: AnyEvent) -> None:
        threads = []
        step_down = Flag()
        errors: list[BaseException] = []

        def run(duty: MasterDuty) -> None:
            try:
                duty(election, AnyEvent(stop, step_down))
            except BaseException as e:
                errors.append(e)
            finally:
                step_down.set()

        for duty in self.master_duties:
            t = threading.Thread(target=run, args=(duty,), name=duty.__name__, daemon=True)
            t.start()
            threads.append(t)
        AnyEvent(step_down, stop).wait()
        if self.stop_event.is_set() and not election.session.done.is_set():
            # Hand over first: the duties wind down afterwards, and any write they still
            # attempt is refused by the guard.
            election.resign()
        step_down.set()
        for t in threads:
            t.join()
        for e in errors:
            if isinstance(e, NotLeader | SessionLost):
                raise e
        for e in errors:
            log.error("master duty failed: %r", e)
        if errors and not stop.is_set():
            # A bug in a duty must not pin the mastership here: let another agent take over.
            election.resign()
            raise _DutyFailed(f"a master duty failed: {errors[0]!r}")


class _DutyFailed(NotLeader):
    """A master duty ended with an error: step down (another agent may do better) and
    campaign again after a backoff."""


def _total_memory_mb() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)
    except (ValueError, OSError):
        return None


def leader_heartbeat(election: Election, stop: StopSignal) -> None:
    """Keep `<prefix>/leader` current with fenced writes.

    It tells people (and tests) who is master and since when; because each write carries
    the election guard, a deposed master that wakes up cannot overwrite it: its first
    write is refused and it steps down.
    """
    keys = election.keys
    since = time.time()
    interval = max(1.0, election.session.ttl / 3)
    while True:
        if election.session.state is SessionState.CONNECTED:
            record = {
                "name": election.name,
                "lease": f"{election.session.lease_id:x}",
                "since": since,
                "heartbeat": time.time(),
                "pid": os.getpid(),
                "epoch": election.create_revision,
            }
            try:
                election.fenced_txn([op_put(keys.leader, json.dumps(record, sort_keys=True))])
            except Unavailable as e:
                # Transient: the next beat retries (the write is idempotent). A deposed
                # master learns it from NotLeader or from its session, not from this.
                log.warning("leader record not written: %s", e)
        if stop.wait(interval):
            return


def warn_if_slow_filesystem(data_dir: Path) -> None:
    """Say so when job directories will live on ext4 without a journal (see fsinfo)."""
    existing = next((p for p in (data_dir, *data_dir.parents) if p.exists()), None)
    info = filesystem_of(existing) if existing is not None else None
    if info is not None and info.ext4_without_journal:
        log.warning(
            "data dir %s is on %s: such a filesystem skips every inode freed in the last "
            "minutes at each file creation, so starting jobs gets slower while old job "
            "directories are removed; give it a journal (tune2fs -O has_journal %s, "
            "unmounted) or put the data dir elsewhere",
            data_dir,
            info.describe(),
            info.source,
        )
