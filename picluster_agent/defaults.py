"""Every default in one place: read by the agent, the CLI, the role docs and the tests."""

from __future__ import annotations

PREFIX = "/picluster"
CONFIG_FILE = "/etc/picluster/agent.yaml"
USER_CONFIG_FILE = "~/.config/picluster/config.yaml"
DATA_DIR = "/var/lib/picluster"
ENDPOINTS = ("http://127.0.0.1:2379",)

# Lease TTL of an agent's session, seconds: the smallest that rides out an etcd leader
# change with the etcd role's tuning (timing.py states the rule; the agent refuses a TTL
# that breaks it). etcd refuses TTLs below 1.5 x its election timeout and silently raises
# them.
LEASE_TTL = 8
MIN_LEASE_TTL = 2
# etcd's election timeout as the etcd role sets it (--election-timeout, 2000 ms for SD
# cards), seconds: what the timing rule assumes unless the agent's config says otherwise.
ETCD_ELECTION_TIMEOUT = 2.0
# One etcd HTTP request may take at most this long before we try another endpoint.
REQUEST_TIMEOUT = 2.0
# A watch stream that shows no progress notification for this long is considered dead.
# etcd sends progress notifications every 10 minutes by default on an idle watch; we ask
# for them and re-create the stream when it is silent for longer than this.
WATCH_IDLE_TIMEOUT = 15.0
# A loop of the agent (keepalive, worker, scheduler) that has not turned for this long past
# its own period is stuck: the agent stops pinging systemd's watchdog (liveness.py).
LOOP_STALL = 30.0
# Backoff between reconnect attempts when every endpoint is down.
RETRY_BACKOFF_MIN = 0.1
RETRY_BACKOFF_MAX = 5.0

# An agent's settings (agent.yaml, flags; roles/picluster_agent/defaults/main.yml documents
# them for the playbooks). Slots default to the machine's CPU count, else to SLOTS.
SLOTS = 1
MASTER = True
LOG_LEVEL = "INFO"
RESULT_TAIL_BYTES = 64 * 1024  # of each of stdout and stderr, kept in a job's result
# Each of an attempt's stdout and stderr keeps at most this many bytes on the node (its first
# and last halves; node/jobshim.py "The output cap"): a chatty job cannot fill the card.
OUTPUT_CAP_BYTES = 16 * 1024 * 1024
KILL_GRACE = 10.0  # seconds between SIGTERM and SIGKILL when a job is stopped
KEEP_FINISHED = 10_000  # finished jobs kept in etcd (and their directories on the nodes)
KEEP_FINISHED_SECONDS = 7 * 24 * 3600  # ... and for at most this long
PREFETCH = 0  # assignments a node may hold beyond its slots
# Each job attempt runs in a cgroup of its own (node/cgroups.py): at most this many processes
# and threads (a fork bomb stops there; a build with `make -j4` uses a few dozen) ...
JOB_PIDS_MAX = 1024
# ... and this CPU weight for all jobs together, on cgroup v2's scale where the agent has 100
# (v1: cpu.shares, x 10.24): under contention the agent (and etcd, by its unit's weight) come
# first.
JOB_CPU_WEIGHT = 20
# The agent's HTTPS API (picluster_agent/api, docs/API.md): its TCP port (0: no API) and
# the address it listens on. It serves only when given a server certificate (api_cert,
# api_key); the cluster CA (cacert) checks the callers' certificates.
API_PORT = 7443
API_LISTEN = "0.0.0.0"
# `picluster doctor` warns about a certificate this many days before it expires
# (node/certs.py); client certificates last a year, renewed by playbooks/rotate-certs.yml.
CERT_EXPIRY_WARNING_DAYS = 30
