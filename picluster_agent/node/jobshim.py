"""The job supervisor: a small single-threaded process that starts, times and reaps jobs.

Each agent process runs one of these (started by `runner`, which talks to it over its stdin
and stdout, one JSON object per line). It exists for one guarantee: **jobs never outlive the
agent**, even when the agent is killed with SIGKILL. It notices the agent's death three ways,
and on any of them kills every job's process group (SIGTERM, then SIGKILL after
ORPHAN_KILL_GRACE) and exits:

1. EOF on stdin. The write end lives only in the agent (pipes are close-on-exec, and every
   subprocess is started with close_fds), so the kernel closes it the moment the agent process
   dies, however it dies. This is the primary signal and does not depend on threads.
2. prctl(PR_SET_PDEATHSIG, SIGTERM). Caveat: Linux sends it when the *thread* that forked this
   process exits, not the process; `runner` therefore forks the supervisor from its own
   long-lived reader thread, which ends only with the process.
3. getppid() polling every PARENT_POLL seconds: a fallback that needs neither of the above.

SIGTERM (systemd stopping the unit) is handled like agent death. The supervisor is also a
child subreaper, so a job's orphaned grandchildren are reparented to it and reaped here.

**Lease fences.** A job may run only while its node's etcd lease is certainly alive at the
server, and the agent's own threads cannot promise that when the agent is frozen (SIGSTOP, a
stalled SD card, swap): they stop with it. So the supervisor holds the promise itself. Each
job is started under a fence (the id of the agent's lease) whose deadline, a CLOCK_MONOTONIC
time shared by every process on the machine, the agent extends after each keepalive that
succeeded; the deadline is computed from the keepalive's *send* time, so a message that
arrives late (the agent was paused in between) cannot carry the fence past the lease's
server-side expiry. Deadlines only move forward. When a fence's deadline passes, every job
under it gets SIGKILL at once, and a spawn under a passed (or unknown) fence is refused: the
master may already have given that job to another node.

Every job runs in its own session and process group (the group id is the job's pid) and,
where the machine allows, in a cgroup of its own (`cgroups`: limits, usage, and a kill that
reaches what left the group: setsid, a double fork into a new session); stop, timeout and
clean-up act on both. An attempt is reported finished only when its main process has exited
*and* nothing of it is left: leftovers (`sleep 1000 &`) get SIGTERM, then SIGKILL after the
job's grace. Without cgroups, a process that leaves the group on purpose is beyond a
process-group kill; on a node the systemd unit covers that case (KillMode=mixed: SIGTERM to
the agent alone, then SIGKILL to whatever is left in the unit's cgroup).
As root the supervisor also sets no_new_privs for every job (`confine_jobs`).

This module imports only the standard library: it is run as a script by path with `python -I
-S`, so that nothing from the agent's package or environment is needed or loaded.

The supervisor also makes each attempt's directory and output files and reads the output's
tail when the attempt is over: file system calls in the agent, a multi-threaded Python
process, each hand its interpreter lock to another thread and back, and for short jobs
those handoffs cost more than the job.

Protocol (agent -> supervisor):
  {"op": "spawn", "token": T, "argv": [...], "env": {...}, "cwd": "/abs",
   "job_dir": path, "work_dir": path|null, "stdout": path, "stderr": path,
   "uid": int|null, "gid": int|null, "groups": [int]|null, "tail": bytes,
   "timeout": seconds|null, "grace": seconds, "fence": F|null, "cap": bytes|null}
  {"op": "stop", "token": T, "grace": seconds}
  {"op": "fence", "fence": F, "until": monotonic_time}
Supervisor -> agent:
  {"ev": "started", "token": T, "pid": P, "t": unix_time}
  {"ev": "error", "token": T, "error": "message", "fenced": bool}
  {"ev": "exit", "token": T, "code": C, "t": unix_time, "timed_out": bool, "stopped": bool,
   "fenced": bool, "stdout_tail": str, "stderr_tail": str}
where C is the main process's exit code, or -N when it was killed by signal N, and a tail is
the last `tail` bytes of the output, decoded as UTF-8 (errors replaced).

Files of an attempt: `job_dir` (mode 0711, owned by the agent's user, shared by the job's
attempts, in a `jobs/` dir of mode 0711: a job cannot list the others) holds the attempt's
`stdout` and `stderr` (0600, the agent's: the job writes them through its descriptors) and,
when the job has no cwd of its own, its `work_dir` (0700, `uid`:`gid`'s when given); an
earlier run's leftovers of the same attempt are removed first. One directory per job and one per
attempt, no more (the outputs sit beside the work dir, not in a directory of their own).

**The output cap.** A job writes its outputs itself, through the descriptors it inherits (no
copy through this process), so a chatty job could fill the card. With `cap` set, every
OUTPUT_CHECK seconds the supervisor looks at each running job's output sizes; a stream past
`cap` bytes keeps its first cap/2 bytes and its last cap/2 bytes, and the blocks between are
freed by punching a hole (fallocate PUNCH_HOLE|KEEP_SIZE): offsets stay valid, a reader
finds the hole with SEEK_DATA and reports the bytes dropped there (`outputs.py`). So a stream
holds at most `cap` bytes on disk plus what the job writes in one OUTPUT_CHECK. A file system
that cannot punch holes gets the stream cut back to its first cap/2 bytes instead (the job's
later writes land after them; a reader sees the file shrink).

All paths are absolute: the supervisor works from "/" and borrows the job's cwd only for the
moment of a spawn.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from typing import Any

try:
    from . import cgroups
except ImportError:  # run by path (`python -I -S jobshim.py`): no package, load it beside us
    import importlib.util

    _where = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cgroups.py")
    _loader = importlib.util.spec_from_file_location("picluster_jobshim_cgroups", _where)
    assert _loader is not None and _loader.loader is not None
    cgroups = importlib.util.module_from_spec(_loader)
    sys.modules[_loader.name] = cgroups  # dataclasses look their module up there
    _loader.loader.exec_module(cgroups)

ORPHAN_KILL_GRACE = 0.5  # seconds between SIGTERM and SIGKILL when the agent is gone
PARENT_POLL = 0.5  # seconds between getppid() checks
DRAIN_POLL = 0.02  # seconds between checks that a finished job's group is empty
OUTPUT_CHECK = 0.25  # seconds between checks of running jobs' output sizes against the cap
_FALLOC_FL_KEEP_SIZE = 1
_FALLOC_FL_PUNCH_HOLE = 2
_BLOCK = 4096  # holes are punched in whole blocks of this size
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_PR_SET_NO_NEW_PRIVS = 38
_encode = json.JSONEncoder(separators=(",", ":")).encode
# Signals 1-31 but the two no process can catch; 32 and up are the real-time range.
_CATCHABLE = tuple(s for s in range(1, 32) if s not in (signal.SIGKILL, signal.SIGSTOP))
_PYTHON_IGNORES = (signal.SIGPIPE, signal.SIGXFSZ)  # ignored by Python itself: the writes
# of the supervisor must fail with EPIPE, not kill it


class _Job:
    __slots__ = ("cap", "cgroup", "code", "deadline", "ended", "fence", "fenced", "grace",
                 "kill_at", "killed", "outputs", "pid", "proc", "punched", "rusage", "stopped",
                 "tail", "timed_out", "token")  # fmt: skip

    def __init__(self, token: int, pid: int, proc: subprocess.Popen[bytes] | None,
                 timeout: float | None, grace: float, outputs: tuple[str, str],
                 tail: int, fence: int | None,
                 cgroup: cgroups.JobCgroup | None, cap: int | None = None) -> None:  # fmt: skip
        self.token = token
        self.cap = cap  # bytes kept of each output stream (None: no cap)
        self.punched = [0, 0]  # per stream: where the hole punched so far ends
        self.cgroup = cgroup  # None: cgroups cannot be used here (process group only)
        self.killed = False  # SIGKILL sent: sent again while anything of the job is left
        self.rusage: Any = None  # the main process's (and its reaped children's), from wait4
        self.fence = fence  # the lease this job runs under (None: not lease-bound)
        self.fenced = False  # killed because its fence passed
        self.outputs = outputs  # stdout, stderr paths
        self.tail = tail
        self.proc = proc  # kept only when started through subprocess (a change of user)
        self.pid = pid  # also the process group id: the job leads its own session
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.grace = grace
        self.kill_at: float | None = None
        self.code: int | None = None  # set when the main process has been reaped
        self.ended = 0.0
        self.timed_out = False
        self.stopped = False


class Supervisor:
    def __init__(self, agent_pid: int, in_fd: int = 0, out_fd: int = 1) -> None:
        self.agent_pid = agent_pid
        self.in_fd = in_fd
        self.out_fd = out_fd
        self.jobs: dict[int, _Job] = {}  # by pid
        self.by_token: dict[int, _Job] = {}
        self.fences: dict[int, float] = {}  # fence id -> monotonic deadline
        self.closing = False
        self.out_ok = True
        self.buffer = b""
        # Events wait here and leave in one write per loop turn; the pipe is non-blocking so
        # that a slow reader can never stall job control (the loop waits for it to drain).
        self.pending = bytearray()
        os.set_blocking(out_fd, False)
        self.umask = os.umask(0o022)
        os.umask(self.umask)
        self.private_dirs: set[str] = set()  # jobs/ dirs made unlistable (0711) already
        self.wake_r, wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        # Handlers, not SIG_IGN: ignored signals would be inherited by the jobs across exec,
        # and a handler is reset to the default there. The same for every signal the agent
        # inherited ignored (nohup, a shell's background job and some CI runners ignore
        # SIGHUP, SIGINT, SIGQUIT): a job must start with every disposition at its default,
        # also on the path that changes user (subprocess resets only SIGPIPE and SIGXFSZ).
        for sig in (signal.SIGTERM, signal.SIGCHLD, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, _ignore)
        for sig in _CATCHABLE:
            if sig not in _PYTHON_IGNORES and signal.getsignal(sig) == signal.SIG_IGN:
                signal.signal(sig, _ignore)
        os.chdir("/")  # keep no directory busy; jobs get their cwd at spawn
        self.cgroups, self.cgroups_problem = cgroups.open_cgroups()
        self.next_output_check = 0.0

    # --- main loop ---------------------------------------------------------------------------

    def run(self) -> int:
        _prctl(_PR_SET_CHILD_SUBREAPER, 1)
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        confine_jobs()
        while True:
            if not self.closing and os.getppid() != self.agent_pid:
                self.close()  # the agent died before or despite PDEATHSIG
            if self.closing and not self.jobs:
                self._kill_strays()
                if self.cgroups is not None:
                    self.cgroups.close()
                self._flush(wait=1.0)
                return 0
            fds = [self.wake_r] if self.closing else [self.wake_r, self.in_fd]
            out = [self.out_fd] if self.pending and self.out_ok else []
            try:
                ready, _, _ = select.select(fds, out, [], self._next_wakeup())
            except InterruptedError:  # pragma: no cover - select retries on EINTR (PEP 475)
                ready = []
            if self.wake_r in ready:
                self._signals()
            if self.in_fd in ready:
                self._read_requests()
            self._reap()
            self._tick()
            self._flush()

    def _next_wakeup(self) -> float:
        now = time.monotonic()
        wake = now + PARENT_POLL
        for job in self.jobs.values():
            if job.code is not None:
                wake = min(wake, now + DRAIN_POLL)
            if job.kill_at is not None:
                wake = min(wake, job.kill_at)
            if job.deadline is not None and not job.timed_out and job.code is None:
                wake = min(wake, job.deadline)
            if job.fence is not None and not job.fenced:
                wake = min(wake, self.fences[job.fence])
            if job.cap is not None and job.code is None:
                wake = min(wake, self.next_output_check)
        return max(0.0, wake - now)

    def _signals(self) -> None:
        try:
            data = os.read(self.wake_r, 512)
        except BlockingIOError:
            return
        if signal.SIGTERM in data:
            self.close()

    def _read_requests(self) -> None:
        try:
            data = os.read(self.in_fd, 65536)
        except OSError:
            data = b""
        if not data:
            self.close()  # EOF: the agent is gone
            return
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            if line.strip():
                self._request(json.loads(line))

    def _request(self, msg: dict[str, Any]) -> None:
        if msg["op"] == "spawn":
            fence = msg.get("fence")
            if self.closing:
                self._send({"ev": "error", "token": msg["token"], "error": "agent shutting down"})
            elif fence is not None and not self._fence_open(fence):
                error = "not started: the node's lease was not renewed in time"
                self._send({"ev": "error", "token": msg["token"], "error": error, "fenced": True})
            else:
                self._spawn(msg)
        elif msg["op"] == "fence":
            fence, until = msg["fence"], float(msg["until"])
            if fence not in self.fences:  # a new session: forget the passed, unused fences
                in_use = {job.fence for job in self.jobs.values()}
                now = time.monotonic()
                for old in [f for f, t in self.fences.items() if t <= now and f not in in_use]:
                    del self.fences[old]
            # Only forward: a late message (the agent was paused) carries an older deadline.
            self.fences[fence] = max(until, self.fences.get(fence, until))
        elif msg["op"] == "stop":
            job = self.by_token.get(msg["token"])
            if job is not None and job.code is None:
                job.stopped = True
                self._terminate(job, float(msg["grace"]))

    # --- jobs ----------------------------------------------------------------------------------

    def _spawn(self, msg: dict[str, Any]) -> None:
        token = msg["token"]
        argv = msg["argv"]
        cwd = msg["cwd"]
        try:
            fds = self._prepare(msg)
        except OSError as e:
            where = e.filename or msg["job_dir"]
            self._send({"ev": "error", "token": token,
                        "error": f"cannot prepare {where}: {e.strerror or e}"})  # fmt: skip
            return
        group = None
        if self.cgroups is not None:
            try:
                group = self.cgroups.job(_limits(msg))
                group.enter()  # the job is born inside (cgroups: "Placement at spawn")
            except OSError as e:
                for fd in fds:
                    os.close(fd)
                self._release(group)
                error = f"cannot make the job's cgroup: {e.strerror or e}"
                self._send({"ev": "error", "token": token, "error": error})
                return
        try:
            proc = None
            if msg.get("uid") is None:
                pid = _spawn_here(argv, msg["env"], cwd, fds)
            else:
                # A change of user: posix_spawn cannot, subprocess can (with a plain fork).
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=fds[0],
                    stderr=fds[1],
                    cwd=cwd,
                    env=msg["env"],
                    start_new_session=True,
                    close_fds=True,
                    user=msg["uid"],
                    group=msg["gid"],
                    extra_groups=msg["groups"],
                )
                pid = proc.pid
        except OSError as e:
            self._release(group)
            self._send({"ev": "error", "token": token, "error": _start_error(e, argv, cwd)})
            return
        except (ValueError, TypeError) as e:
            self._release(group)
            self._send({"ev": "error", "token": token, "error": f"cannot start job: {e}"})
            return
        finally:
            for fd in fds:
                os.close(fd)
            if group is not None:
                # Out again before anything else. Should this fail, the supervisor must not
                # go on inside a job's cgroup (a kill of the job would end it): it exits, and
                # the agent fails and kills every job it had (runner: `_lost`).
                assert self.cgroups is not None
                self.cgroups.leave()
        if group is not None:
            group.adopt(pid)
        outputs = (msg["stdout"], msg["stderr"])
        job = _Job(token, pid, proc, msg.get("timeout"), float(msg["grace"]), outputs, msg["tail"],
                   msg.get("fence"), group, msg.get("cap"))  # fmt: skip
        self.jobs[job.pid] = job
        self.by_token[token] = job
        self._send({"ev": "started", "token": token, "pid": job.pid, "t": time.time()})

    def _prepare(self, msg: dict[str, Any]) -> list[int]:
        """Make the attempt's files and work dir; the output files' descriptors, opened."""
        job_dir = msg["job_dir"]
        jobs_dir = os.path.dirname(job_dir)
        if jobs_dir not in self.private_dirs:  # once: also a data dir from an older version
            try:
                os.mkdir(jobs_dir, 0o711)
            except FileExistsError:
                pass
            except FileNotFoundError:  # the first job, or the data dir was removed
                os.makedirs(jobs_dir, 0o711, exist_ok=True)
            if os.path.isdir(jobs_dir):  # else the job's mkdir below says what is wrong
                os.chmod(jobs_dir, 0o711)
                self.private_dirs.add(jobs_dir)
        try:
            os.mkdir(job_dir, 0o711)
        except FileExistsError:
            pass
        else:
            if self.umask & 0o711:  # a stricter umask than systemd's default took bits away
                os.chmod(job_dir, 0o711)
        try:
            return self._make_attempt_files(msg)
        except FileExistsError:  # leftovers of an earlier run of this same attempt
            _remove_attempt_files(msg)
            return self._make_attempt_files(msg)

    @staticmethod
    def _make_attempt_files(msg: dict[str, Any]) -> list[int]:
        uid, gid = msg.get("uid"), msg.get("gid")
        # O_EXCL and no symlinks: the files are new and ours (we may be root, writing where
        # a job user can see). The outputs stay ours, 0600: the job writes them through the
        # descriptors it inherits, and no job (all run as one user) reads another's.
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
        fds: list[int] = []
        try:
            for path in (msg["stdout"], msg["stderr"]):
                fds.append(os.open(path, flags, 0o600))
            if msg.get("work_dir"):
                os.mkdir(msg["work_dir"], 0o700)
                if uid is not None and gid is not None:
                    os.chown(msg["work_dir"], uid, gid)
        except OSError:
            for fd in fds:
                os.close(fd)
            raise
        return fds

    def _terminate(self, job: _Job, grace: float) -> None:
        """SIGTERM to the job's group now, SIGKILL at now + grace (or earlier if already due)."""
        kill_at = time.monotonic() + max(0.0, grace)
        if job.kill_at is not None and job.kill_at <= kill_at:
            return
        job.kill_at = kill_at
        self._signal(job, signal.SIGKILL if grace <= 0 else signal.SIGTERM)

    @staticmethod
    def _signal(job: _Job, sig: int) -> None:
        """Signal the whole job: its process group, and its cgroup (which holds also what
        left the group: setsid, a double fork)."""
        _killpg(job.pid, sig)
        if job.cgroup is not None:
            if sig == signal.SIGKILL:
                job.cgroup.kill()
            else:
                job.cgroup.signal(sig)
        if sig == signal.SIGKILL:
            job.killed = True

    @staticmethod
    def _empty(job: _Job) -> bool:
        """Nothing of the job is left: its process group is empty, and so is its cgroup."""
        return _group_empty(job.pid) and (job.cgroup is None or job.cgroup.empty())

    def _release(self, group: cgroups.JobCgroup | None) -> None:
        if group is not None:
            with contextlib.suppress(OSError):
                group.release()

    def _reap(self) -> None:
        while True:
            try:
                pid, status, rusage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            job = self.jobs.get(pid)
            if job is None:
                continue  # an orphaned grandchild, reparented to us as subreaper
            job.rusage = rusage
            job.code = os.waitstatus_to_exitcode(status)
            job.ended = time.time()
            if job.proc is not None:
                job.proc.returncode = job.code  # so Popen never tries to reap it again
            if not self._empty(job):  # leftovers: stop them like a stopped job
                self._terminate(job, job.grace)

    def _fence_open(self, fence: int) -> bool:
        return time.monotonic() < self.fences.get(fence, 0.0)

    def _tick(self) -> None:
        now = time.monotonic()
        if now >= self.next_output_check:
            self.next_output_check = now + OUTPUT_CHECK
            for job in self.jobs.values():
                if job.cap is not None and job.code is None:
                    for stream in (0, 1):
                        job.punched[stream] = cap_output(
                            job.outputs[stream], job.cap, job.punched[stream]
                        )
        for job in list(self.jobs.values()):
            fence_passed = job.fence is not None and now >= self.fences[job.fence]
            if fence_passed and not job.fenced:
                # The lease may expire at the server any moment now: no grace for anyone.
                job.fenced = job.stopped = True
                self._signal(job, signal.SIGKILL)
            due = job.deadline is not None and now >= job.deadline
            if due and job.code is None and not job.timed_out:
                job.timed_out = True
                self._terminate(job, job.grace)
            if job.kill_at is not None and now >= job.kill_at:
                job.kill_at = None
                self._signal(job, signal.SIGKILL)
            if job.code is None:
                continue
            if self._empty(job):
                del self.jobs[job.pid]
                del self.by_token[job.token]
                self._send(self._exit_event(job))
            elif job.killed:  # a process forked while the last kill went round
                self._signal(job, signal.SIGKILL)

    def _exit_event(self, job: _Job) -> dict[str, Any]:
        cpu: float | None = None
        peak: int | None = None
        oom = False
        if job.cgroup is not None:
            try:
                used = job.cgroup.usage()
                cpu, peak, oom = used.cpu_seconds, used.peak_bytes, used.oom_kills > 0
            except (OSError, ValueError):
                pass
            self._release(job.cgroup)
        if cpu is None and job.rusage is not None:  # no cgroup: the main process and its
            cpu = job.rusage.ru_utime + job.rusage.ru_stime  # waited-for children
        if peak is None and job.rusage is not None:
            peak = job.rusage.ru_maxrss * 1024  # the largest one of them (KiB on Linux)
        return {
            "ev": "exit",
            "token": job.token,
            "code": job.code,
            "t": job.ended,
            "timed_out": job.timed_out,
            "stopped": job.stopped,
            "fenced": job.fenced,
            "stdout_tail": self._final_tail(job, 0),
            "stderr_tail": self._final_tail(job, 1),
            "cpu": None if cpu is None else round(cpu, 6),
            "peak": peak,
            "oom": oom,
        }

    @staticmethod
    def _final_tail(job: _Job, stream: int) -> str:
        """The stream's tail, once it is under the cap (what the job wrote since the last
        check may have passed it). One stat for both: most jobs write nothing."""
        path = job.outputs[stream]
        try:
            size = os.stat(path).st_size
        except OSError:
            return ""
        if job.cap is not None and size > job.cap:
            cap_output(path, job.cap, job.punched[stream])
        return read_tail(path, job.tail, size)

    def close(self) -> None:
        """The agent is gone (or we were told to stop): kill every job, then exit."""
        if self.closing:
            return
        self.closing = True
        for job in self.jobs.values():
            self._terminate(job, min(job.grace, ORPHAN_KILL_GRACE))

    def _kill_strays(self) -> None:
        """Kill and reap processes reparented to us that escaped their job's group."""
        deadline = time.monotonic() + ORPHAN_KILL_GRACE + 1.0
        while time.monotonic() < deadline:
            strays = _children(os.getpid())
            if not strays:
                return
            for pid in strays:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self._reap()
            time.sleep(DRAIN_POLL)

    def _send(self, msg: dict[str, Any]) -> None:
        if self.out_ok:
            self.pending += (_encode(msg) + "\n").encode()

    def _flush(self, wait: float = 0.0) -> None:
        """Write pending events; with `wait`, keep trying that long for the reader to drain."""
        deadline = time.monotonic() + wait
        while self.pending and self.out_ok:
            try:
                del self.pending[: os.write(self.out_fd, self.pending)]
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                select.select([], [self.out_fd], [], left)
            except OSError:  # the agent closed its end: it is gone
                self.out_ok = False
                self.pending.clear()
                self.close()


def read_tail(path: str, limit: int, size: int | None = None) -> str:
    """The last `limit` bytes of a file as text, not starting in the middle of a character.
    `size`: the file's size if just seen (0: nothing to read, no call at all)."""
    try:
        if size is None:
            size = os.stat(path).st_size
        if limit <= 0 or size == 0:  # most jobs write nothing: one call
            return ""
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return ""
    try:
        size = os.fstat(fd).st_size
        data = os.pread(fd, limit, max(0, size - limit))
    except OSError:
        return ""
    finally:
        os.close(fd)
    if size > limit:
        skip = 0
        while skip < min(3, len(data)) and 0x80 <= data[skip] <= 0xBF:  # continuation bytes
            skip += 1
        data = data[skip:]
    return data.decode("utf-8", errors="replace")


def cap_output(path: str, cap: int, punched: int) -> int:
    """Keep at most `cap` bytes of the output at `path` on disk (see "The output cap"): the
    first cap/2 bytes and the last cap/2; returns where the hole now ends (`punched`: where
    it ended before, so that only the new part is punched)."""
    try:
        size = os.stat(path).st_size
    except OSError:
        return punched
    head = (cap // 2 + _BLOCK - 1) // _BLOCK * _BLOCK
    end = (size - cap // 2) // _BLOCK * _BLOCK  # whole blocks only: the tail keeps >= cap/2
    start = max(head, punched)
    if size <= cap or end <= start:
        return punched
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return punched
    try:
        if _punch_hole(fd, start, end - start):
            return end
        os.ftruncate(fd, head)  # no holes here: keep the head, lose the rest
        return 0
    except OSError:
        return punched
    finally:
        os.close(fd)


def _punch_hole(fd: int, offset: int, length: int) -> bool:
    """Free a range of a file, keeping its size; False where the file system cannot."""
    global _fallocate
    if _fallocate is None:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        _fallocate = libc.fallocate
        _fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
    mode = _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE
    if _fallocate(fd, mode, offset, length) == 0:
        return True
    import ctypes

    err = ctypes.get_errno()
    if err in (errno.EOPNOTSUPP, errno.ENOSYS):
        return False
    raise OSError(err, os.strerror(err))


_fallocate: Any = None


def _limits(msg: dict[str, Any]) -> cgroups.Limits:
    return cgroups.Limits(
        memory=msg.get("memory"), pids=msg.get("pids_max"), cpu_weight=msg.get("cpu_weight", 100)
    )


def _start_error(e: OSError, argv: list[str], cwd: str) -> str:
    reason = e.strerror or str(e)
    if e.filename == cwd and cwd not in argv[:1]:
        return f"cannot use working directory {cwd!r}: {reason}"
    if isinstance(e, FileNotFoundError):
        return f"command not found: {argv[0]!r}"
    if isinstance(e, PermissionError):
        return f"cannot execute {argv[0]!r}: {reason}"
    return f"cannot start {argv[0]!r}: {reason}"


def _remove_attempt_files(msg: dict[str, Any]) -> None:
    for path in (msg["stdout"], msg["stderr"]):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    if msg.get("work_dir"):
        shutil.rmtree(msg["work_dir"], ignore_errors=True)


def _spawn_here(argv: list[str], env: dict[str, str], cwd: str, fds: list[int]) -> int:
    """Start a job as ourselves with posix_spawn (a vfork: in this process a third of what
    subprocess costs), from `cwd`, in a session of its own; returns its pid.

    The supervisor is single-threaded, so it can borrow `cwd` for the moment of the spawn.
    One difference from subprocess: glibc's posix_spawn leaves its two internal signals (32
    and 33) ignored in the job; glibc installs their handlers when a program needs them
    (checked: setuid() in a threaded Python job works).
    """
    os.chdir(cwd)
    try:
        return os.posix_spawn(
            _executable(argv[0], env),
            argv,
            env,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, fds[0], 1),
                (os.POSIX_SPAWN_DUP2, fds[1], 2),
            ],
            setsid=True,
            # Every signal at its default, whatever the agent inherited (Python itself ignores
            # SIGPIPE and SIGXFSZ).
            setsigdef=_CATCHABLE,
        )
    finally:
        os.chdir("/")


def _executable(name: str, env: dict[str, str]) -> str:
    """Where execvpe would find `name` on the job's PATH (relative entries: from the cwd)."""
    if "/" in name:
        return name
    denied = None
    for directory in os.get_exec_path(env):
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate):
            if os.access(candidate, os.X_OK):
                return candidate
            denied = denied or candidate
    if denied is not None:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), denied)
    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), name)


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_empty(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _children(parent: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # Fields after the parenthesised command name: state, ppid, ...
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 1 and int(fields[1]) == parent:
            found.append(int(entry))
    return found


def confine_jobs() -> None:
    """What every job inherits from the supervisor, set once here (no cost per job).

    - No new privileges (as root, where jobs change user): no job can regain root through a
      setuid or file-capability binary (sudo, su, ...), whatever the unit says. Changing
      user with setuid() is not affected: it is not an exec that gains anything.
    - The OOM killer's default score: the agent's unit protects it (OOMScoreAdjust below 0),
      and its children inherit that; jobs must not, so that a machine-wide OOM kill hits a
      job before the agent or etcd. The supervisor itself is small and never the choice.
    """
    if os.geteuid() == 0:
        _prctl(_PR_SET_NO_NEW_PRIVS, 1)
    try:
        with open("/proc/self/oom_score_adj", "r+") as f:
            if int(f.read()) < 0:
                f.seek(0)
                f.write("0")  # raising it needs no privilege
    except (OSError, ValueError):
        pass


def _prctl(option: int, value: int) -> None:
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: rely on EOF and getppid() polling
        pass


def _ignore(signum: int, frame: object) -> None:
    """Signals only wake the loop (through the wakeup fd); the loop reads which ones."""


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not args[0].isdigit():
        print("usage: jobshim AGENT_PID  (started by the picluster agent)", file=sys.stderr)
        return 2
    return Supervisor(int(args[0])).run()


if __name__ == "__main__":
    sys.exit(main())
