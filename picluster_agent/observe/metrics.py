"""One agent's Prometheus metrics, in a registry of its own.

A registry per agent (not prometheus_client's global one), so that several agents in one
process (the tests, the demo) keep their numbers apart. The agent's parts do not import
prometheus_client: they call the few named methods below at the moments that matter
(a job started, finished; this agent became master) or register a function that reads a
gauge's value at scrape time (slots in use, queue depth), so a scrape costs nothing between
scrapes. The etcd adapter reports every request through one hook, `etcd_request`.

Names follow Prometheus' rules (`promtool check metrics` runs on them in the tests):
`picluster_` prefix, base units (seconds), `_total` counters, and labels of bounded
cardinality (no job ids).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, ProcessCollector
from prometheus_client.exposition import generate_latest

from .. import __version__

# Seconds. From a no-op job's few milliseconds to a queue that waits half an hour.
START_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)
RUN_TIME_BUCKETS = (0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600, 4 * 3600, 24 * 3600)
# etcd on an SD card: a few ms for a read, tens for a write, seconds when a member is gone.
ETCD_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

KEEPALIVE = "LeaseKeepAlive"  # the etcd request kind that renews the session's lease
# The text format every Prometheus 2.x parses (our names need none of 1.0.0's quoting).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Reading = Callable[[], float]
_LABEL_NAME = re.compile(r"[^a-zA-Z0-9_]")


def label_name(key: str) -> str:
    """A node label's key as a Prometheus label name (`model.rev` -> `label_model_rev`)."""
    return "label_" + _LABEL_NAME.sub("_", key)


class AgentMetrics:
    """Every metric of one agent. Thread-safe: prometheus_client's metrics lock themselves."""

    enabled = True

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)  # process_*: CPU seconds, resident memory, open fds
        # --- jobs, as this node's worker sees them
        self.jobs_finished = Counter(
            "picluster_jobs_finished",
            "Job attempts this node reported as ended, by final state of the attempt",
            ["state"],
            registry=r,
        )
        self.attempts = Counter(
            "picluster_job_attempts", "Job attempts started on this node", registry=r
        )
        self.retries = Counter(
            "picluster_job_retries",
            "Failed attempts on this node that sent their job back to the queue for another try",
            registry=r,
        )
        self.start_latency = Histogram(
            "picluster_job_start_latency_seconds",
            "From a job's submission to the start of its attempt on this node",
            buckets=START_LATENCY_BUCKETS,
            registry=r,
        )
        self.run_time = Histogram(
            "picluster_job_run_seconds",
            "Wall-clock run time of job attempts that ended on this node",
            buckets=RUN_TIME_BUCKETS,
            registry=r,
        )
        self.worker_jobs = Gauge(
            "picluster_worker_jobs",
            "Jobs assigned to this node: waiting for a slot, or running",
            ["state"],
            registry=r,
        )
        self.slots = Gauge(
            "picluster_slots", "This node's job slots, used or free", ["state"], registry=r
        )
        self.supervisors = Gauge(
            "picluster_job_supervisors", "Job supervisor processes of this agent", registry=r
        )
        self.job_processes = Gauge(
            "picluster_job_processes", "Job attempts whose process runs on this node", registry=r
        )
        # --- the master's view (0 on other agents)
        self.queue_depth = Gauge(
            "picluster_queue_depth",
            "Jobs waiting to be assigned (reported by the master; 0 elsewhere)",
            registry=r,
        )
        self.jobs_assigned = Gauge(
            "picluster_jobs_assigned",
            "Jobs assigned to a node, waiting there or running (reported by the master)",
            registry=r,
        )
        self.is_master = Gauge(
            "picluster_master", "1 while this agent is the master, else 0", registry=r
        )
        self.master_epoch = Gauge(
            "picluster_master_epoch",
            "The election epoch (its key's create revision) of this agent's last term as master",
            registry=r,
        )
        self.master_terms = Counter(
            "picluster_master_terms", "Times this agent became master", registry=r
        )
        # --- the session and etcd
        self.session_state = Gauge(
            "picluster_session_state",
            "1 for the state this agent's session is in (connected, suspended, lost)",
            ["state"],
            registry=r,
        )
        self.sessions = Counter(
            "picluster_sessions", "Sessions (leases) this agent started", registry=r
        )
        self.keepalive_seconds = Histogram(
            "picluster_lease_keepalive_seconds",
            "Round trip of a lease renewal that etcd answered",
            buckets=ETCD_BUCKETS,
            registry=r,
        )
        self.keepalive_failures = Counter(
            "picluster_lease_keepalive_failures",
            "Lease renewals that got no answer from any etcd member",
            registry=r,
        )
        self.etcd_requests = Counter(
            "picluster_etcd_requests", "Requests to etcd, by kind (gRPC method)", ["kind"],
            registry=r,
        )  # fmt: skip
        self.etcd_errors = Counter(
            "picluster_etcd_request_errors",
            "Requests to etcd that failed, by kind and by picluster's error class",
            ["kind", "error"],
            registry=r,
        )
        self.etcd_seconds = Histogram(
            "picluster_etcd_request_seconds",
            "Time of a request to etcd, every member tried included",
            ["kind"],
            buckets=ETCD_BUCKETS,
            registry=r,
        )
        self.node_info = Info(
            "picluster_node", "This node: name, version, role and labels", registry=r
        )
        self.node_info.info({"node": "", "version": __version__})
        # Every series exists from the start: a rate over a counter that appears late is wrong.
        for state in ("connected", "suspended", "lost"):
            self.session_state.labels(state)
        self._finished = {
            s: self.jobs_finished.labels(s) for s in ("succeeded", "failed", "cancelled")
        }
        self._lock = threading.Lock()
        self._by_kind: dict[str, tuple[Any, Any]] = {}
        self._readings: dict[str, Reading] = {}
        for gauge, labels, name in (
            (self.worker_jobs, ("waiting",), "waiting"),
            (self.worker_jobs, ("running",), "running"),
            (self.slots, ("used",), "slots_used"),
            (self.slots, ("free",), "slots_free"),
            (self.supervisors, (), "supervisors"),
            (self.job_processes, (), "job_processes"),
            (self.queue_depth, (), "queue_depth"),
            (self.jobs_assigned, (), "jobs_assigned"),
        ):
            child = gauge.labels(*labels) if labels else gauge
            child.set_function(self._reader(name))

    # ------------------------------------------------------------ scrape-time readings

    def _reader(self, name: str) -> Reading:
        def read() -> float:
            with self._lock:
                fn = self._readings.get(name)
            if fn is None:
                return 0.0
            try:
                return float(fn())
            except Exception:  # a part that is winding down: no number rather than no scrape
                return 0.0

        return read

    def read_from(self, readings: Mapping[str, Reading]) -> None:
        """Gauges read at scrape time from the part that owns the number (the worker, the
        scheduler): `waiting`, `running`, `slots_used`, `slots_free`, `supervisors`,
        `job_processes`, `queue_depth`, `jobs_assigned`."""
        unknown = set(readings) - {"waiting", "running", "slots_used", "slots_free",
                                   "supervisors", "job_processes", "queue_depth",
                                   "jobs_assigned"}  # fmt: skip
        if unknown:
            raise ValueError(f"no such reading: {sorted(unknown)}")
        with self._lock:
            self._readings.update(readings)

    def stop_reading(self, names: Mapping[str, Reading] | list[str]) -> None:
        """The part that owned these numbers ended (its gauges read 0 until the next one)."""
        with self._lock:
            for name in names:
                self._readings.pop(name, None)

    # ------------------------------------------------------------ events

    def describe_node(
        self, name: str, slots: int, labels: Mapping[str, str], master_eligible: bool
    ) -> None:
        info = {label_name(k): v for k, v in sorted(labels.items())}
        info.update(
            node=name,
            version=__version__,
            slots=str(slots),
            master_eligible="true" if master_eligible else "false",
        )
        self.node_info.info(info)

    def etcd_request(self, kind: str, seconds: float, error: str | None) -> None:
        """The adapter's hook: one call per request, after every member it tried."""
        children = self._by_kind.get(kind)
        if children is None:  # labels() validates and locks: once per kind, not per request
            children = self._by_kind.setdefault(
                kind, (self.etcd_requests.labels(kind), self.etcd_seconds.labels(kind))
            )
        children[0].inc()
        children[1].observe(seconds)
        if error is not None:
            self.etcd_errors.labels(kind, error).inc()
        if kind == KEEPALIVE:
            if error is None:
                self.keepalive_seconds.observe(seconds)
            else:
                self.keepalive_failures.inc()

    def session_started(self) -> None:
        self.sessions.inc()

    def session_is(self, state: str) -> None:
        for s in ("connected", "suspended", "lost"):
            self.session_state.labels(s).set(1 if s == state else 0)

    def master_began(self, epoch: int) -> None:
        self.master_terms.inc()
        self.master_epoch.set(epoch)
        self.is_master.set(1)

    def master_ended(self) -> None:
        self.is_master.set(0)

    def attempt_started(self, attempt: int, submitted_at: float | None, now: float) -> None:
        self.attempts.inc()
        if attempt <= 1 and submitted_at is not None:
            # First attempts only: a retry's wait includes its backoff, not the queue's.
            self.start_latency.observe(max(0.0, now - submitted_at))

    def attempt_ended(self, state: str, run_seconds: float | None, retried: bool) -> None:
        self._finished[state].inc()
        if retried:
            self.retries.inc()
        if run_seconds is not None:
            self.run_time.observe(max(0.0, run_seconds))

    # ------------------------------------------------------------ exposition

    def exposition(self) -> bytes:
        """The text format a scrape gets (CONTENT_TYPE)."""
        return generate_latest(self.registry)


class NoMetrics(AgentMetrics):
    """Metrics turned off (`picluster agent --no-metrics`): events are dropped and etcd
    requests not timed; a scrape shows the node's info and zeros. Exists to measure what
    metrics cost (bench/metrics_cost.py)."""

    enabled = False

    def etcd_request(self, kind: str, seconds: float, error: str | None) -> None:
        pass

    def attempt_started(self, attempt: int, submitted_at: float | None, now: float) -> None:
        pass

    def attempt_ended(self, state: str, run_seconds: float | None, retried: bool) -> None:
        pass
