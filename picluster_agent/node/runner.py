"""Running one attempt of a job on this node.

    proc = JobProcess(spec, job_id=..., attempt=2, node="pi3", data_dir=Path("/var/lib/picluster"))
    proc.start()                 # never raises for job-level problems
    outcome = proc.wait(1.0)     # None while still running
    proc.stop()                  # SIGTERM to the job (group, cgroup), SIGKILL after the grace

An agent running many short jobs does not park a thread per job: it passes `on_done` (called
once, on the supervisor's reader thread, when the attempt has ended) and starts the attempt
with `start(wait_started=False)`, which returns as soon as the request is on its way.

Jobs are not children of the agent: the agent keeps one small supervisor process
(`jobshim`, started on first use) that forks every job, enforces timeouts, reaps the job's
whole process group, and kills every job if the agent dies, by any means including SIGKILL.
See jobshim's docstring for how it notices. Keeping process control in one single-threaded
process also keeps it cheap: starting a job costs one fork+exec of the job itself, not a
Python interpreter per job.

Files of an attempt, made by the supervisor (the job's directory is root-owned when the
agent is root, so a job cannot swap them for symlinks; the outputs stay root's, 0600, and
only the work dir belongs to the job's user; `jobs/` and the job's directory are 0711, so a
job cannot list other jobs):

    <data_dir>/jobs/<job_id>/<attempt>.stdout
    <data_dir>/jobs/<job_id>/<attempt>.stderr
    <data_dir>/jobs/<job_id>/<attempt>/         the default working directory, fresh per attempt

`data_dir` must be traversable (o+x) by the run_as user.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pwd
import signal
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any

from .. import defaults
from ..etcd.keys import validate_job_id
from ..jobs.spec import JobSpec
from . import jobshim

BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BASE_LANG = "C.UTF-8"

_NO_ENV: Mapping[str, str] = MappingProxyType({})
_encode_request = json.JSONEncoder(separators=(",", ":")).encode

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """How one attempt ended."""

    exit_code: int | None  # None when killed by a signal (or never started)
    signal: int | None
    timed_out: bool
    cancelled: bool  # stopped on request (stop() called while it ran)
    started_at: float
    ended_at: float
    stdout_tail: str  # the last tail_bytes bytes, decoded as UTF-8 with errors="replace"
    stderr_tail: str
    error: str | None  # could not start (bad cwd, command not found, unknown user), or lost
    # Killed (or never started) because the lease it ran under was not renewed in time: the
    # node must not report it; the master runs it again once the lease has expired.
    fenced: bool = False
    # What the attempt used: from its cgroup (everything in it), else from the main process
    # and the children it waited for. None: not known (it never started).
    cpu_seconds: float | None = None
    peak_memory_bytes: int | None = None
    oom_killed: bool = False  # the kernel killed a process of it: over its memory limit

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0 and self.error is None and not self.timed_out


# A change to the job user (uid, groups) reaches new jobs within this many seconds.
IDENTITY_TTL = 30.0
# (uid, gid, groups, user name, home); ids are None for "as the agent".
Identity = tuple[int | None, int | None, list[int] | None, str, str]
_identities: dict[tuple[str | None, int], tuple[float, Identity]] = {}


class JobProcess:
    """One attempt of one job. Thread-safe: start, stop and wait may come from any thread."""

    def __init__(
        self,
        spec: JobSpec,
        *,
        job_id: str,
        attempt: int,
        node: str,
        data_dir: str | os.PathLike[str],
        tail_bytes: int = defaults.RESULT_TAIL_BYTES,
        run_as: str | None = None,
        kill_grace: float = defaults.KILL_GRACE,
        extra_env: Mapping[str, str] = _NO_ENV,
        on_done: Callable[[JobProcess], None] | None = None,
        fence: int | None = None,
        pids_max: int | None = defaults.JOB_PIDS_MAX,
        cpu_weight: int = defaults.JOB_CPU_WEIGHT,
        output_cap: int | None = defaults.OUTPUT_CAP_BYTES,
    ) -> None:
        """`fence`: run only while this fence is open (see `extend_fence`); None: no limit.
        `pids_max` and `cpu_weight`: the job's cgroup limits (cgroups.Limits), with the
        spec's memory_mb as its memory limit. `output_cap`: bytes kept on disk of each of
        stdout and stderr (jobshim: "The output cap"); None: no cap."""
        validate_job_id(job_id)  # it becomes a directory name
        if attempt < 1:
            raise ValueError(f"attempt must be >= 1, got {attempt}")
        self.spec = spec
        self.job_id = job_id
        self.attempt = attempt
        self.node = node
        self.tail_bytes = tail_bytes
        self.run_as = run_as
        self.kill_grace = kill_grace
        self.extra_env = dict(extra_env)
        self.on_done = on_done
        self.fence = fence
        self.pids_max = pids_max
        self.cpu_weight = cpu_weight
        self.output_cap = output_cap
        self._fenced = False
        self._usage: tuple[float | None, int | None, bool] = (None, None, False)
        # Strings: built once per attempt, and pathlib costs more than the job's start.
        # Absolute, because the supervisor works from "/".
        self._data_dir = os.path.abspath(data_dir)
        self.job_dir = f"{self._data_dir}/jobs/{job_id}"
        self._stdout = f"{self.job_dir}/{attempt}.stdout"
        self._stderr = f"{self.job_dir}/{attempt}.stderr"
        self._work_dir = f"{self.job_dir}/{attempt}"

        self._lock = threading.Lock()
        # Set when the supervisor has answered the spawn request; made only for a caller that
        # waits for it (an Event costs as much as the rest of this constructor).
        self._replied: threading.Event | None = None
        self._done = threading.Event()
        self._begun = False
        self._stop_requested = False
        self._stop_grace: float | None = None
        self._token: int | None = None
        self._supervisor: _Supervisor | None = None
        self._pid: int | None = None
        self._started_at = 0.0
        self._ended_at = 0.0
        self._code: int | None = None
        self._timed_out = False
        self._stopped = False
        self._error: str | None = None
        self._tails: tuple[str, str] | None = None  # read by the supervisor at exit
        self._outcome: Outcome | None = None

    @property
    def data_dir(self) -> Path:
        return Path(self._data_dir)

    @property
    def pid(self) -> int | None:
        """The job's main process id (also its process group id), once started."""
        return self._pid

    @property
    def stdout_path(self) -> Path:
        return Path(self._stdout)

    @property
    def stderr_path(self) -> Path:
        return Path(self._stderr)

    @property
    def work_dir(self) -> Path:
        """The default working directory (made only when the spec has no cwd)."""
        return Path(self._work_dir)

    def start(self, wait_started: bool = True) -> None:
        """Start the attempt. Problems of the job itself end up in `wait()`'s outcome.error.

        wait_started=False returns once the request is sent: `pid` may still be None, and a
        stop() before the supervisor has answered is delivered after the spawn, in order.
        """
        with self._lock:
            if self._begun:
                raise RuntimeError(f"job {self.job_id} attempt {self.attempt} already started")
            self._begun = True
            cancelled = self._stop_requested
            _attempts.began(self)
            if wait_started:
                self._replied = threading.Event()
        if cancelled:
            self._finish(error=None)
            return
        try:
            request = self._prepare()
        except _StartError as e:
            self._finish(error=str(e))
            return
        try:
            self._supervisor = _supervisor()
            self._supervisor.spawn(self, request)
        except _SupervisorGone as e:
            self._finish(error=str(e))
            return
        if self._stop_requested:  # stop() came while we were starting: deliver it now
            self.stop(self._stop_grace)
        if self._replied is not None:
            self._replied.wait()

    def stop(self, grace: float | None = None) -> None:
        """Stop the attempt: SIGTERM to its process group and cgroup, SIGKILL after `grace`
        seconds (default: kill_grace). The outcome then has cancelled=True. No-op once
        finished."""
        with self._lock:
            if self._done.is_set():
                return
            self._stop_requested = True
            self._stop_grace = grace
            token = self._token
            supervisor = self._supervisor
        if token is not None and supervisor is not None:
            grace = self.kill_grace if grace is None else grace
            # If the supervisor is gone, its loss handling has killed the group already.
            with contextlib.suppress(_SupervisorGone):
                supervisor.send({"op": "stop", "token": token, "grace": grace})

    def wait(self, timeout: float | None = None) -> Outcome | None:
        """The outcome, waiting up to `timeout` seconds (None: forever); None if still running."""
        if not self._done.wait(timeout):
            return None
        with self._lock:
            if self._outcome is None:
                self._outcome = self._build_outcome()
            return self._outcome

    # --- preparing ------------------------------------------------------------------------------

    def _prepare(self) -> dict[str, Any]:
        uid, gid, groups, user, home = self._identity()
        env = {"PATH": BASE_PATH, "HOME": home, "LANG": BASE_LANG, "USER": user, "LOGNAME": user}
        env.update(self.spec.env)
        env.update(self.extra_env)
        env["PICLUSTER_JOB_ID"] = self.job_id
        env["PICLUSTER_ATTEMPT"] = str(self.attempt)
        env["PICLUSTER_NODE"] = self.node
        # The supervisor makes the directory and files (see jobshim: "Files of an attempt").
        return {
            "argv": self.spec.argv(),
            "env": env,
            "cwd": self.spec.cwd or self._work_dir,
            "job_dir": self.job_dir,
            "work_dir": None if self.spec.cwd else self._work_dir,
            "stdout": self._stdout,
            "stderr": self._stderr,
            "uid": uid,
            "gid": gid,
            "groups": groups,
            "tail": self.tail_bytes,
            "timeout": self.spec.timeout,
            "grace": self.kill_grace,
            "fence": self.fence,
            "memory": self.spec.memory_mb << 20 if self.spec.memory_mb else None,
            "pids_max": self.pids_max,
            "cpu_weight": self.cpu_weight,
            "cap": self.output_cap,
        }

    def _identity(self) -> Identity:
        """The identity to run as.

        Looked up at most every IDENTITY_TTL seconds per user: the lookups (the user
        database, the group list) cost more than the rest of a job's start.
        """
        key = (self.run_as, os.geteuid())
        cached = _identities.get(key)
        now = time.monotonic()
        if cached is not None and now - cached[0] < IDENTITY_TTL:
            return cached[1]
        identity = self._look_up_identity()
        _identities[key] = (now, identity)
        return identity

    def _look_up_identity(self) -> Identity:
        if self.run_as is None:
            try:
                pw = pwd.getpwuid(os.geteuid())
            except KeyError:
                return None, None, None, str(os.geteuid()), "/"
            return None, None, None, pw.pw_name, pw.pw_dir
        try:
            pw = pwd.getpwnam(self.run_as)
        except KeyError:
            raise _StartError(
                f"user {self.run_as!r} (run_as) does not exist on node {self.node}"
            ) from None
        if os.geteuid() != 0:
            if pw.pw_uid != os.geteuid():
                raise _StartError(
                    f"cannot run jobs as {self.run_as!r}: the agent is not running as root"
                )
            return None, None, None, pw.pw_name, pw.pw_dir
        groups = os.getgrouplist(pw.pw_name, pw.pw_gid)
        return pw.pw_uid, pw.pw_gid, groups, pw.pw_name, pw.pw_dir

    # --- supervisor events (called on the supervisor's reader thread) ---------------------------

    def _on_started(self, pid: int, t: float) -> None:
        with self._lock:
            self._pid = pid
            self._started_at = t
            replied = self._replied
        if replied is not None:
            replied.set()

    def _on_exit(self, code: int, t: float, timed_out: bool, stopped: bool,
                 tails: tuple[str, str], fenced: bool,
                 usage: tuple[float | None, int | None, bool]) -> None:  # fmt: skip
        with self._lock:
            if self._done.is_set():
                return
            self._fenced = fenced
            self._usage = usage
            self._tails = tails
            self._code = code
            self._ended_at = t
            self._timed_out = timed_out
            self._stopped = stopped
        self._done.set()
        self._notify_done()

    def _finish(self, error: str | None, fenced: bool = False) -> None:
        """End without a (known) exit: could not start, cancelled before start, or lost."""
        with self._lock:
            if self._done.is_set():
                return
            now = time.time()
            self._fenced = fenced
            self._error = error
            self._started_at = self._started_at or now
            self._ended_at = now
            self._stopped = self._stop_requested
            replied = self._replied
        self._done.set()
        if replied is not None:
            replied.set()
        self._notify_done()

    def _notify_done(self) -> None:
        """Run on_done; it must never take down the thread that reads the supervisor."""
        try:
            _attempts.ended(self)
            if self.on_done is not None:
                self.on_done(self)
        except Exception:
            log.exception("handling the end of job %s attempt %d", self.job_id, self.attempt)

    def _build_outcome(self) -> Outcome:
        code = self._code
        if self._tails is None:  # ended without the supervisor's exit event (lost, error)
            self._tails = (
                jobshim.read_tail(self._stdout, self.tail_bytes),
                jobshim.read_tail(self._stderr, self.tail_bytes),
            )
        return Outcome(
            exit_code=code if code is not None and code >= 0 else None,
            signal=-code if code is not None and code < 0 else None,
            timed_out=self._timed_out,
            cancelled=self._stopped,
            started_at=self._started_at,
            ended_at=self._ended_at,
            stdout_tail=self._tails[0],
            stderr_tail=self._tails[1],
            error=self._error,
            fenced=self._fenced,
            cpu_seconds=self._usage[0],
            peak_memory_bytes=self._usage[1],
            oom_killed=self._usage[2],
        )


@dataclass(frozen=True)
class AttemptEnd:
    """How an attempt ended, in brief (no output tails: many are remembered)."""

    exit_code: int | None
    signal: int | None
    timed_out: bool
    cancelled: bool
    error: str | None

    @classmethod
    def of(cls, outcome: Outcome) -> AttemptEnd:
        error = outcome.error[:500] if outcome.error else None
        return cls(outcome.exit_code, outcome.signal, outcome.timed_out, outcome.cancelled, error)


class _Attempts:
    """The attempts of this process: those running, and how the last few ended, by
    (data dir, job id, attempt). A reader that follows an attempt's output (outputs.py)
    asks here whether more can come, and how it ended."""

    def __init__(self, remember: int) -> None:
        self._lock = threading.Lock()
        self._running: dict[tuple[str, str, int], JobProcess] = {}
        self._ended: OrderedDict[tuple[str, str, int], AttemptEnd] = OrderedDict()
        self._remember = remember

    def began(self, job: JobProcess) -> None:
        with self._lock:
            self._running[(job._data_dir, job.job_id, job.attempt)] = job

    def ended(self, job: JobProcess) -> None:
        key = (job._data_dir, job.job_id, job.attempt)
        outcome = job.wait(0)  # built once: the worker's wait() gets the same one
        end = AttemptEnd.of(outcome) if outcome is not None else None
        with self._lock:
            if self._running.get(key) is job:
                del self._running[key]
            if end is None:
                return
            self._ended[key] = end
            self._ended.move_to_end(key)
            while len(self._ended) > self._remember:
                self._ended.popitem(last=False)

    def find(self, data_dir: str, job_id: str, attempt: int) -> tuple[bool, AttemptEnd | None]:
        """(running here now, how it ended if it ended here lately)."""
        key = (os.path.abspath(data_dir), job_id, attempt)
        with self._lock:
            running = key in self._running
            ended = None if running else self._ended.get(key)
        return running, ended


_attempts = _Attempts(remember=1024)


def attempt_state(
    data_dir: str | os.PathLike[str], job_id: str, attempt: int
) -> tuple[bool, AttemptEnd | None]:
    """Whether this process runs that attempt now, and how it ended if it ended here lately."""
    return _attempts.find(os.fspath(data_dir), job_id, attempt)


class _StartError(Exception):
    """A job-level reason the attempt cannot start; becomes Outcome.error."""


class _SupervisorGone(Exception):
    """The job supervisor process could not be started or has exited."""


# --- the supervisor handle --------------------------------------------------------------------


class _Supervisor:
    """The agent's side of its jobshim process: a pipe to write requests, a thread to read events.

    The process is forked from the reader thread, which lives as long as the supervisor does,
    so that PR_SET_PDEATHSIG (tied to the forking thread) fires only when the agent dies.

    Requests made by a thread inside `batch()` (the reader thread handling one read's
    events starts the next jobs as the last ones end; a watch delivers several assignments)
    leave in one write at its end: one wakeup of the supervisor for all of them. A request
    from outside a batch sends everything before it, so requests keep their order (a stop
    never overtakes its spawn).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[int, JobProcess] = {}
        self._next_token = 1
        self._proc: subprocess.Popen[bytes] | None = None
        self._stdin: IO[bytes] | None = None
        self._unsent = bytearray()
        self._batching: set[int] = set()  # threads whose requests wait for their batch's end
        self.error: str | None = None
        self.alive = False
        ready = threading.Event()
        thread = threading.Thread(
            target=self._run, args=(ready,), name="picluster-jobshim", daemon=True
        )
        thread.start()
        ready.wait()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def spawn(self, job: JobProcess, request: dict[str, Any]) -> None:
        with self._lock:
            token = self._next_token
            self._next_token += 1
            self._jobs[token] = job
            with job._lock:
                job._token = token
            try:
                self._write({"op": "spawn", "token": token, **request})
            except _SupervisorGone:
                del self._jobs[token]
                raise

    def send(self, msg: dict[str, Any]) -> None:
        with self._lock:
            self._write(msg)

    def _write(self, msg: dict[str, Any]) -> None:
        """Send one request, or queue it if this thread is inside `batch()`; under `_lock`."""
        if not self.alive or self._stdin is None:
            raise _SupervisorGone(self.error or "job supervisor is not running")
        self._unsent += _encode_request(msg).encode()
        self._unsent += b"\n"
        if threading.get_ident() not in self._batching:
            self._send_unsent()

    def _send_unsent(self) -> None:
        if not self._unsent or self._stdin is None:
            return
        data, self._unsent = bytes(self._unsent), bytearray()
        try:
            self._stdin.write(data)
            self._stdin.flush()
        except (OSError, ValueError) as e:
            # The reader sees the supervisor's end and fails every job it had (`_lost`).
            raise _SupervisorGone(f"job supervisor is not running: {e}") from e

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """This thread's requests inside the block leave together at its end (nestable)."""
        me = threading.get_ident()
        with self._lock:
            nested = me in self._batching
            self._batching.add(me)
        try:
            yield
        finally:
            if not nested:
                with self._lock:
                    self._batching.discard(me)
                    # If this fails, the reader sees the supervisor gone and fails the jobs.
                    with contextlib.suppress(_SupervisorGone):
                        self._send_unsent()

    def _run(self, ready: threading.Event) -> None:
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-S", jobshim.__file__, str(os.getpid())],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                start_new_session=True,  # a Ctrl-C meant for the agent does not reach it
                close_fds=True,
            )
        except OSError as e:
            self.error = f"cannot start the job supervisor ({sys.executable}): {e}"
            ready.set()
            return
        self._stdin = self._proc.stdin
        self.alive = True
        with _fences_lock:  # a new supervisor knows no fence yet: tell it every open one
            for fence, until in _fences.items():
                msg = {"op": "fence", "fence": fence, "until": until}
                self._unsent += _encode_request(msg).encode()
                self._unsent += b"\n"
        ready.set()
        assert self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        rest = b""
        while chunk := _read(fd):
            *lines, rest = (rest + chunk).split(b"\n")
            with self.batch():
                for line in lines:
                    self._event(json.loads(line))
        self._lost()

    def _event(self, msg: dict[str, Any]) -> None:
        kind = msg["ev"]
        with self._lock:
            token = msg["token"]
            job = self._jobs.get(token) if kind == "started" else self._jobs.pop(token, None)
        if job is None:
            return
        if kind == "started":
            job._on_started(msg["pid"], msg["t"])
        elif kind == "error":
            job._finish(error=msg["error"], fenced=msg.get("fenced", False))
        else:
            tails = (msg["stdout_tail"], msg["stderr_tail"])
            usage = (msg["cpu"], msg["peak"], msg["oom"])
            job._on_exit(msg["code"], msg["t"], msg["timed_out"], msg["stopped"], tails,
                         msg["fenced"], usage)  # fmt: skip

    def _lost(self) -> None:
        """The supervisor exited: kill what it was watching ourselves, and fail those attempts."""
        with self._lock:
            self.alive = False
            code = self._proc.wait() if self._proc is not None else None
            self.error = f"the job supervisor exited unexpectedly (status {code})"
            jobs, self._jobs = list(self._jobs.values()), {}
        for job in jobs:
            pid = job.pid
            if pid is not None:
                _killpg(pid, signal.SIGTERM)
                timer = threading.Timer(jobshim.ORPHAN_KILL_GRACE, _killpg, (pid, signal.SIGKILL))
                timer.daemon = True
                timer.start()
            job._finish(error=f"{self.error}; the job was killed")


_current: _Supervisor | None = None
_current_lock = threading.Lock()
# The latest deadline of every fence, replayed to a supervisor that (re)starts.
_fences: dict[int, float] = {}
_fences_lock = threading.Lock()


def _supervisor() -> _Supervisor:
    global _current
    with _current_lock:
        if _current is None or not _current.alive:
            _current = _Supervisor()
            if not _current.alive:
                error = _current.error
                _current = None
                raise _SupervisorGone(error or "cannot start the job supervisor")
        return _current


def extend_fence(fence: int, until: float) -> None:
    """Let jobs started under `fence` run until the monotonic time `until` (never earlier
    than already allowed); the supervisor kills them the moment it passes, even if this
    process is frozen. Pass `until` computed from what is known at the server (the send time
    of the last successful keepalive + TTL, less a margin): a late call then cannot stretch
    a fence past the lease's expiry."""
    with _fences_lock:
        until = max(until, _fences.get(fence, until))
        # Old sessions' fences: only the newest few can still have jobs.
        while len(_fences) >= 8 and fence not in _fences:
            del _fences[next(iter(_fences))]
        _fences[fence] = until
    with contextlib.suppress(_SupervisorGone):  # a new one is told on start
        _supervisor().send({"op": "fence", "fence": fence, "until": until})


def batched_requests() -> contextlib.AbstractContextManager[None]:
    """Jobs this thread starts or stops inside the block reach the supervisor in one write,
    at the end of the block."""
    with _current_lock:
        current = _current if _current is not None and _current.alive else None
    return current.batch() if current is not None else contextlib.nullcontext()


def supervisor_pid() -> int | None:
    """The pid of this process's job supervisor, if one is running (for diagnostics/tests)."""
    with _current_lock:
        return _current.pid if _current is not None and _current.alive else None


def _read(fd: int) -> bytes:
    """What the pipe has (b"" at EOF, or on an error: the supervisor is gone either way)."""
    try:
        return os.read(fd, 65536)
    except OSError:
        return b""


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
