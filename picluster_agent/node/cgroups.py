"""Job cgroups: one per attempt, on cgroup v2 or on the v1 controllers, behind one interface.

    cgroups, why = open_cgroups(os.getpid())   # None and the reason when neither can be used
    group = cgroups.job(Limits(memory=64 << 20, pids=1024, cpu_weight=20))
    group.enter()              # this process steps in: what it spawns now is born inside
    pid = posix_spawn(...)
    cgroups.leave()            # ... and back out (see "Placement at spawn")
    group.adopt(pid)           # v1: the CPU weight's hierarchy, joined after the spawn
    group.signal(SIGTERM)      # every process in it, whatever its session or process group
    group.kill()               # SIGKILL to every process in it (v2: cgroup.kill)
    group.empty()
    group.usage()              # CPU seconds, peak memory, OOM kills, since `job()`
    group.release()            # once empty: removed (v2) or kept for the next job (v1)
    cgroups.close()            # every cgroup of ours, removed

Like `jobshim`, which uses it, this module imports only the standard library.

**Layout.** Everything lives below the cgroup the supervisor was started in (the agent's),
in a subtree of its own, `picluster-jobs.<supervisor pid>`, so that several agents on one
machine (the tests, the demo) never meet. On cgroup v2 the agent's unit delegates its
cgroup (`Delegate=yes`); v2 lets a cgroup that hands controllers to its children hold no
processes itself, so the agent's processes first move into a leaf, `agent`:

    v2: <agent's cgroup>/agent                     the agent and the supervisor
        <agent's cgroup>/picluster-jobs.<pid>/<n>  one per attempt
    v1: <mount of each controller>/<agent's cgroup there>/picluster-jobs.<pid>/<n>

The subtree's CPU weight (`Limits.cpu_weight`, on v1 as cpu.shares) is below the agent's
(100, or 1024 shares): all jobs together yield to the agent, and, through the units' weights
(roles/), to etcd. A subtree left by a supervisor that was killed (SIGKILL, a power cut) is
found by its dead pid at the next start: its processes are killed and it is removed.

**Placement at spawn.** A process cannot be spawned into a cgroup from Python (cgroup v2's
clone3 with CLONE_INTO_CGROUP has no Python binding, and v1 has no such call). Moving the
job in right after the spawn leaves a race that is not small on a loaded board: measured
here, a short `sh -c '...; setsid sleep 1000 &'` had forked, and even ended, before the
supervisor's write landed, so its escaped child was never in the cgroup. So the supervisor
(single-threaded) steps into the job's cgroup itself, spawns, and steps back out: the job
is born inside, with no window at all. The price is twice the writes of a move (one per
hierarchy each way), a few microseconds each. While it is inside, the supervisor counts
towards the job's pids limit (so a limit is at least 2) and what it allocates is charged to
the job (nothing, in a spawn).

One exception, on v1: the `cpu` hierarchy (the weight) is joined right after the spawn
instead (`adopt`). Inside it, the supervisor would wait for the child's exec at the jobs'
low weight: measured here on a loaded machine, 16 ms per spawn instead of 1.3 ms, and job
control stalls meanwhile. A process the job forks before that move keeps the agent's CPU
weight; its limits, its kill and its CPU time (cpuacct, when mounted apart) are unaffected.
On v2 there is one hierarchy; there the supervisor competes for the moment of a spawn as
one more job, as it did before cgroups.

**Cost.** Jobs/s is a headline figure: a v1 job cgroup is made once and reused (its
counters are read as differences, its peak reset); making and removing one in five
hierarchies costs more than a no-op job's spawn. A v2 cgroup is made per attempt (its
memory.peak cannot be reset on older kernels) and removed when empty, later if it is busy.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass

V2_ROOT = "/sys/fs/cgroup"
SUBTREE = "picluster-jobs."
AGENT_LEAF = "agent"
V1_NEEDED = ("pids", "memory")  # tracking and the fork limit; the memory limit
V1_OPTIONAL = ("cpu", "cpuacct")
V2_CONTROLLERS = ("memory", "pids", "cpu")
POOL_MAX = 32  # idle v1 job cgroups kept for reuse (8 open descriptors each)
KILL_ROUNDS = 8  # kill() sweeps when processes keep appearing (forks racing the kill)


@dataclass(frozen=True)
class Limits:
    memory: int | None = None  # bytes; None: no limit (swap is never allowed past it)
    pids: int | None = None  # processes and threads; None: no limit
    cpu_weight: int = 100  # of the jobs' subtree, 1-10000 (v2's scale; the agent's is 100)


@dataclass(frozen=True)
class Usage:
    cpu_seconds: float | None
    peak_bytes: int | None
    oom_kills: int


class CgroupError(Exception):
    """The cgroups cannot be used (no rights, missing controllers); the message says why."""


# --- reading and writing cgroup files ----------------------------------------------------------


def _write(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _read(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 65536)
    finally:
        os.close(fd)


def _field(data: bytes, name: bytes) -> int:
    """The number after `name` in a "key value" per line file (0 when absent)."""
    for line in data.splitlines():
        key, _, value = line.partition(b" ")
        if key == name:
            return int(value)
    return 0


def _pids(procs_file: str) -> list[int]:
    try:
        return [int(p) for p in _read(procs_file).split()]
    except FileNotFoundError:
        return []


def _signal_all(procs_file: str, sig: int) -> int:
    """Signal every process listed; how many there were."""
    pids = _pids(procs_file)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
    return len(pids)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_tree(path: str, procs_name: str = "cgroup.procs") -> None:
    """Kill what is left in a cgroup tree and remove it, leaves first (best effort)."""
    for _ in range(KILL_ROUNDS):
        busy = False
        for top, dirs, _files in os.walk(path, topdown=False):
            for name in dirs:
                sub = os.path.join(top, name)
                busy |= _signal_all(os.path.join(sub, procs_name), signal.SIGKILL) > 0
                with contextlib.suppress(OSError):
                    os.rmdir(sub)
        busy |= _signal_all(os.path.join(path, procs_name), signal.SIGKILL) > 0
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            if not busy:
                return
        time.sleep(0.02)


def _sweep_stale(parent: str) -> None:
    """Remove the subtrees of supervisors that died without removing them."""
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        owner = name[len(SUBTREE) :]
        if name.startswith(SUBTREE) and owner.isdigit() and not _alive(int(owner)):
            _remove_tree(os.path.join(parent, name))


# --- the interface -----------------------------------------------------------------------------


class JobCgroup:
    """One attempt's cgroup."""

    def enter(self) -> None:
        """Move this process in (until `Cgroups.leave`): its children are born inside."""
        raise NotImplementedError

    def adopt(self, pid: int) -> None:
        """After the spawn: move the job where `enter` did not take the supervisor."""

    def signal(self, sig: int) -> None:
        raise NotImplementedError

    def kill(self) -> None:
        raise NotImplementedError

    def empty(self) -> bool:
        raise NotImplementedError

    def usage(self) -> Usage:
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError


class Cgroups:
    """The supervisor's subtree of job cgroups."""

    version = 0

    def describe(self) -> str:
        raise NotImplementedError

    def job(self, limits: Limits) -> JobCgroup:
        raise NotImplementedError

    def leave(self) -> None:
        """Move this process back to where it was started (after `JobCgroup.enter`)."""
        for place in self.home:
            _write(place, str(os.getpid()))

    def close(self) -> None:
        raise NotImplementedError

    home: list[str]  # the cgroup.procs this process belongs in, one per hierarchy


def open_cgroups(owner_pid: int | None = None) -> tuple[Cgroups | None, str]:
    """This process's job cgroups (v2 if the machine has the unified hierarchy, else v1),
    named after `owner_pid` (default: this process); or None and why they cannot be used."""
    owner = os.getpid() if owner_pid is None else owner_pid
    try:
        own = _own_cgroups()
    except OSError as e:
        return None, f"cannot read /proc/self/cgroup: {e.strerror}"
    try:
        if os.path.exists(f"{V2_ROOT}/cgroup.controllers"):
            return _V2(own.get("", "/"), owner), ""
        return _V1(own, owner), ""
    except CgroupError as e:
        return None, str(e)
    except OSError as e:
        where = f" ({e.filename})" if e.filename else ""
        return None, f"{e.strerror or e}{where}"


def _own_cgroups() -> dict[str, str]:
    """Controller (v2: "") -> this process's cgroup path in its hierarchy."""
    own: dict[str, str] = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for name in controllers.split(",") if controllers else [""]:
                own[name] = path
    return own


# --- cgroup v2 ---------------------------------------------------------------------------------


class _V2(Cgroups):
    version = 2

    def __init__(self, own_path: str, owner: int, mount: str = V2_ROOT) -> None:
        base = mount + own_path.rstrip("/")
        if own_path.endswith("/" + AGENT_LEAF):  # a supervisor started after the move below
            base = base[: -len(AGENT_LEAF) - 1]
        self.base = base
        # Without a controller, its limit is left out (the log at start says which); the
        # placement, the kill and the CPU time need none.
        available = _read(f"{base}/cgroup.controllers").split()
        self.controllers = [c for c in V2_CONTROLLERS if c.encode() in available]
        self.missing = [c for c in ("memory", "pids") if c not in self.controllers]
        _sweep_stale(base)
        self.home = [f"{base}/cgroup.procs"]
        if own_path != "/":
            # No processes in a cgroup that hands controllers down: the agent's go to a leaf.
            leaf = f"{base}/{AGENT_LEAF}"
            self.home = [f"{leaf}/cgroup.procs"]
            with contextlib.suppress(FileExistsError):
                os.mkdir(leaf)
            for pid in _pids(f"{base}/cgroup.procs"):
                with contextlib.suppress(ProcessLookupError):
                    _write(f"{leaf}/cgroup.procs", str(pid))
        enable = " ".join("+" + c for c in self.controllers)
        if enable:
            _write(f"{base}/cgroup.subtree_control", enable)
        self.root = f"{base}/{SUBTREE}{owner}"
        os.mkdir(self.root)
        try:
            if enable:
                _write(f"{self.root}/cgroup.subtree_control", enable)
        except OSError:
            os.rmdir(self.root)
            raise
        self.weight: int | None = None
        self.count = 0
        self.busy: list[str] = []  # released while not yet removable: removed later

    def describe(self) -> str:
        missing = ""
        if self.missing:
            missing = f"; no {' or '.join(self.missing)} controller there: no such limit"
        controllers = ", ".join(self.controllers) or "no controllers"
        return f"cgroup v2 ({controllers}) under {self.base}{missing}"

    def job(self, limits: Limits) -> JobCgroup:
        if self.weight != limits.cpu_weight and "cpu" in self.controllers:
            _write(f"{self.root}/cpu.weight", str(limits.cpu_weight))
            self.weight = limits.cpu_weight
        self._remove_busy()
        self.count += 1
        path = f"{self.root}/{self.count}"
        os.mkdir(path)
        try:
            if "memory" in self.controllers:
                if limits.memory is not None:
                    _write(f"{path}/memory.max", str(limits.memory))
                    with contextlib.suppress(FileNotFoundError):  # no swap accounting
                        _write(f"{path}/memory.swap.max", "0")
                _write(f"{path}/memory.oom.group", "1")  # an OOM kill ends the whole job
            if limits.pids is not None and "pids" in self.controllers:
                _write(f"{path}/pids.max", str(limits.pids))
        except OSError:
            os.rmdir(path)
            raise
        return _V2Job(self, path)

    def _remove_busy(self) -> None:
        if self.busy:
            for path in list(self.busy):
                with contextlib.suppress(OSError):
                    os.rmdir(path)
                    self.busy.remove(path)

    def close(self) -> None:
        _remove_tree(self.root)


class _V2Job(JobCgroup):
    def __init__(self, owner: _V2, path: str) -> None:
        self.owner = owner
        self.path = path
        self.procs = f"{path}/cgroup.procs"

    def enter(self) -> None:
        _write(self.procs, str(os.getpid()))

    def signal(self, sig: int) -> None:
        _signal_all(self.procs, sig)

    def kill(self) -> None:
        try:
            _write(f"{self.path}/cgroup.kill", "1")  # the kernel's own, fork-proof (5.14+)
        except FileNotFoundError:
            _signal_all(self.procs, signal.SIGKILL)

    def empty(self) -> bool:
        return _field(_read(f"{self.path}/cgroup.events"), b"populated") == 0

    def usage(self) -> Usage:
        cpu = _field(_read(f"{self.path}/cpu.stat"), b"usage_usec") / 1e6
        try:
            peak: int | None = int(_read(f"{self.path}/memory.peak"))
            oom = _field(_read(f"{self.path}/memory.events"), b"oom_kill")
        except FileNotFoundError:  # no memory controller, or memory.peak before Linux 5.19
            peak, oom = None, 0
            with contextlib.suppress(FileNotFoundError):
                oom = _field(_read(f"{self.path}/memory.events"), b"oom_kill")
        return Usage(cpu, peak, oom)

    def release(self) -> None:
        try:
            os.rmdir(self.path)
        except FileNotFoundError:
            pass
        except OSError:  # a zombie not reaped yet keeps it busy for a moment
            self.owner.busy.append(self.path)


# --- cgroup v1 ---------------------------------------------------------------------------------


def _v1_mounts() -> dict[str, tuple[str, str]]:
    """Controller -> (mount point, the hierarchy's root at that mount) of every v1 mount."""
    found: dict[str, tuple[str, str]] = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, tail = left.split(), right.split()
            if len(tail) < 3 or tail[0] != "cgroup":
                continue
            for option in tail[2].split(","):
                found.setdefault(option, (_unescape(fields[4]), fields[3]))
    return found


def _unescape(path: str) -> str:
    return path.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")


class _V1(Cgroups):
    version = 1

    def __init__(self, own: dict[str, str], owner: int) -> None:
        mounts = _v1_mounts()
        missing = [c for c in V1_NEEDED if c not in mounts or c not in own]
        if missing:
            raise CgroupError(f"no cgroup v2, and no cgroup v1 {', '.join(missing)} controller")
        self.controllers = [c for c in (*V1_NEEDED, *V1_OPTIONAL) if c in mounts and c in own]
        self.roots: dict[str, str] = {}  # controller -> our subtree in its hierarchy
        self.home = []
        self.late: str | None = None  # the hierarchy of `cpu`: joined after the spawn
        made: list[str] = []
        try:
            for name in self.controllers:
                mount, mount_root = mounts[name]
                path = own[name]
                if mount_root != "/" and path.startswith(mount_root):
                    path = path[len(mount_root) :]  # a container sees part of the hierarchy
                parent = mount + path.rstrip("/")
                root = f"{parent}/{SUBTREE}{owner}"
                if root not in made:  # co-mounted controllers (cpu,cpuacct) share a directory
                    _sweep_stale(parent)
                    os.mkdir(root)
                    made.append(root)
                    if name == "cpu":
                        self.late = root
                    else:
                        self.home.append(f"{parent}/cgroup.procs")
                self.roots[name] = root
        except OSError:
            for root in made:
                with contextlib.suppress(OSError):
                    os.rmdir(root)
            raise
        self.dirs = made  # each hierarchy once: where a process is placed
        self.home_fds = [os.open(p, os.O_WRONLY | os.O_CLOEXEC) for p in self.home]
        self.weight: int | None = None
        self.count = 0
        self.pool: list[_V1Job] = []

    def describe(self) -> str:
        return f"cgroup v1 ({', '.join(self.controllers)})"

    def job(self, limits: Limits) -> JobCgroup:
        if self.weight != limits.cpu_weight and "cpu" in self.roots:
            shares = max(2, limits.cpu_weight * 1024 // 100)
            _write(f"{self.roots['cpu']}/cpu.shares", str(shares))
            self.weight = limits.cpu_weight
        group = self.pool.pop() if self.pool else None
        if group is None:
            self.count += 1
            group = _V1Job(self, str(self.count))
        try:
            group.prepare(limits)
        except OSError:
            group.remove()
            raise
        return group

    def leave(self) -> None:
        pid = str(os.getpid()).encode()
        for fd in self.home_fds:
            os.write(fd, pid)

    def close(self) -> None:
        for group in self.pool:
            group.remove()
        self.pool.clear()
        for fd in self.home_fds:
            os.close(fd)
        self.home_fds = []
        for root in self.dirs:
            _remove_tree(root)


class _V1Job(JobCgroup):
    """A v1 job cgroup, kept open: its hot files' descriptors are opened once and reused
    across the jobs it serves (a path lookup in the cgroup file system costs more than the
    write). A read goes back to the start first: a cgroup file is rendered anew only then.
    Not cgroup.procs: v1 keeps the list an open file read first until nobody has read it
    for a second (a descriptor read again and again would list the dead forever), so its
    readers open it afresh; `empty` reads pids.current instead.
    """

    def __init__(self, owner: _V1, name: str) -> None:
        self.owner = owner
        self.paths = {c: f"{root}/{name}" for c, root in owner.roots.items()}
        self.dirs = [f"{root}/{name}" for root in owner.dirs]
        self.memory = self.paths["memory"]
        self.fds: list[int] = []
        for path in self.dirs:
            try:
                os.mkdir(path)
            except OSError:
                self.remove()
                raise
        try:
            # pids first: the one that tracks the job's processes (and reads them back).
            self.places = [self._open(f"{d}/cgroup.procs") for d in self.dirs
                           if not d.startswith(f"{owner.late}/")]  # fmt: skip
            self.procs = f"{self.paths['pids']}/cgroup.procs"
            self.count = self._open(f"{self.paths['pids']}/pids.current")
            late = self.paths["cpu"] if owner.late else None
            self.late = self._open(f"{late}/cgroup.procs") if late else None
            cpuacct = self.paths.get("cpuacct")
            self.cpu_usage = self._open(f"{cpuacct}/cpuacct.usage") if cpuacct else None
            self.peak = self._open(f"{self.memory}/memory.max_usage_in_bytes")
            self.oom = self._open(f"{self.memory}/memory.oom_control")
        except OSError:
            self.remove()
            raise
        self.memory_limit: int | None = None
        self.pids_limit: int | None = None
        # Counters are read as differences from what they were when the job began.
        self.cpu_base = 0
        self.oom_base = 0
        self.peak_reset = False

    def _open(self, path: str) -> int:
        self.fds.append(os.open(path, os.O_RDWR | os.O_CLOEXEC))
        return self.fds[-1]

    @staticmethod
    def _read(fd: int) -> bytes:
        os.lseek(fd, 0, os.SEEK_SET)
        return os.read(fd, 65536)

    def prepare(self, limits: Limits) -> None:
        if limits.memory != self.memory_limit:
            self._set_memory(limits.memory)
            self.memory_limit = limits.memory
        if limits.pids != self.pids_limit:
            value = "max" if limits.pids is None else str(limits.pids)
            _write(f"{self.paths['pids']}/pids.max", value)
            self.pids_limit = limits.pids
        if self.peak_reset:  # a reused cgroup: its peak starts again from what it holds now
            os.write(self.peak, b"0")

    def _set_memory(self, limit: int | None) -> None:
        value = "-1" if limit is None else str(limit)
        memsw = f"{self.memory}/memory.memsw.limit_in_bytes"
        has_memsw = os.path.exists(memsw)
        # memory+swap may never be below memory: lift it first, then set both (no swap past
        # the limit, so that a job over it is killed, not swapped out).
        if has_memsw:
            _write(memsw, "-1")
        _write(f"{self.memory}/memory.limit_in_bytes", value)
        if has_memsw and limit is not None:
            _write(memsw, value)

    def enter(self) -> None:
        pid = str(os.getpid()).encode()
        for fd in self.places:
            os.write(fd, pid)

    def adopt(self, pid: int) -> None:
        if self.late is not None:
            # It may have ended already; and should the move fail, the job only keeps the
            # agent's CPU weight: nothing to fail it for.
            with contextlib.suppress(OSError):
                os.write(self.late, str(pid).encode())

    def _pids(self) -> list[int]:
        return _pids(self.procs)

    def signal(self, sig: int) -> None:
        for pid in self._pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    def kill(self) -> None:
        # No cgroup.kill on v1: sweep until nothing is left (a process forked while the
        # list was read is found by the next sweep, and the fork limit bounds them all).
        for _ in range(KILL_ROUNDS):
            pids = self._pids()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)

    def empty(self) -> bool:
        # Processes and threads, the reaped ones no longer: none left of the job.
        return int(self._read(self.count)) == 0

    def usage(self) -> Usage:
        cpu_ns = None if self.cpu_usage is None else int(self._read(self.cpu_usage))
        peak = int(self._read(self.peak))
        oom = _field(self._read(self.oom), b"oom_kill")
        cpu = None if cpu_ns is None else (cpu_ns - self.cpu_base) / 1e9
        used = Usage(cpu, peak, oom - self.oom_base)
        if cpu_ns is not None:
            self.cpu_base = cpu_ns
        self.oom_base = oom
        return used

    def release(self) -> None:
        if len(self.owner.pool) < POOL_MAX:  # empty: the supervisor releases only then
            self.peak_reset = True
            self.owner.pool.append(self)
        else:
            self.remove()

    def remove(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []
        for path in self.dirs:
            with contextlib.suppress(OSError):
                os.rmdir(path)


def probe() -> tuple[bool, str]:
    """Whether jobs get cgroups here, and one line that says how they are confined (the
    agent logs it once at start; the supervisor finds the same, with the same rights)."""
    cgroups, why = open_cgroups(os.getpid())
    if cgroups is None:
        return False, (
            f"jobs run without cgroups ({why}): in process groups only, with no memory or "
            "pids limit, and a process that leaves its job's session is not stopped with it"
        )
    try:
        return True, f"jobs run in cgroups: {cgroups.describe()}"
    finally:
        cgroups.close()


__all__ = ["CgroupError", "Cgroups", "JobCgroup", "Limits", "Usage", "open_cgroups", "probe"]
