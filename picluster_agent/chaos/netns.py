"""Network namespaces for the fault suite: one per node, each joined to one bridge by a veth.

Everything a run makes is named after its run id (namespaces `pc<id>-<node>`, bridge
`pcb<id>`, host ends of the veths `pcv<id><n>`), so that runs in parallel do not collide,
and the run is listed in RUN_DIR with its owner's pid: the next run removes what a dead
one left behind (a run killed with SIGKILL cannot clean up after itself).

Faults are iptables rules inside a node's namespace. DROP, never REJECT: a cut link is
silent, as a pulled cable or a dead switch port is, and costs the peers their timeouts.
(`tc netem` is not available on these machines: no delay or loss, only cuts.)

Root only: `unusable_reason()` says why not, for a skip message.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import secrets
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

RUN_DIR = Path("/run/picluster-chaos")
BRIDGE_PREFIX = "pcb"
NS_PREFIX = "pc"
VETH_PREFIX = "pcv"
DEVICE = "eth0"  # a node's end of its veth, inside its namespace


def unusable_reason() -> str | None:
    """Why namespaces cannot be used here (None: they can)."""
    if os.geteuid() != 0:
        return "network namespaces and iptables need root (CI runs as root)"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (Debian: iproute2, iptables)"
    return None


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {res.stderr.strip() or res.returncode}")
    return res


@dataclass
class Namespace:
    """One node's network namespace: address `ip` on its `eth0`, loopback up."""

    name: str
    ip: str

    @property
    def exec_prefix(self) -> list[str]:
        """Prefix a command with this to run it inside (`ip netns exec` execs in place)."""
        return ["ip", "netns", "exec", self.name]

    def iptables(self, *args: str) -> None:
        _run(*self.exec_prefix, "iptables", "-w", *args)

    # ------------------------------------------------------------ cuts

    def cut_all(self) -> None:
        """Nothing in or out on the node's link (loopback, inside the node, still works)."""
        self.iptables("-I", "INPUT", "-i", DEVICE, "-j", "DROP")
        self.iptables("-I", "OUTPUT", "-o", DEVICE, "-j", "DROP")

    def cut_from(self, addresses: list[str], ports: list[int] | None = None) -> None:
        """Nothing to or from these addresses, both directions; with `ports`, only TCP to or
        from those ports (their etcd members, say, not the rest of those nodes)."""
        match = (
            ["-p", "tcp", "-m", "multiport", "--ports", ",".join(map(str, ports))] if ports else []
        )
        for address in addresses:
            self.iptables("-I", "INPUT", "-s", address, *match, "-j", "DROP")
            self.iptables("-I", "OUTPUT", "-d", address, *match, "-j", "DROP")

    def drop_replies_from_port(self, port: int) -> None:
        """Asymmetric: what this node sends to `port` elsewhere arrives, the answers don't."""
        self.iptables("-I", "INPUT", "-i", DEVICE, "-p", "tcp", "--sport", str(port), "-j", "DROP")

    def blackhole_ports(self, ports: list[int]) -> None:
        """Servers on these ports here vanish silently for everyone else: what comes in to
        them and what they answer is dropped."""
        for port in ports:
            p = str(port)
            self.iptables("-I", "INPUT", "-i", DEVICE, "-p", "tcp", "--dport", p, "-j", "DROP")
            self.iptables("-I", "OUTPUT", "-o", DEVICE, "-p", "tcp", "--sport", p, "-j", "DROP")

    def drop_outgoing_to_port(self, port: int) -> None:
        """Nothing from here reaches `port` elsewhere (an etcd member's own peer links)."""
        self.iptables("-I", "OUTPUT", "-o", DEVICE, "-p", "tcp", "--dport", str(port), "-j", "DROP")

    def heal(self) -> None:
        self.iptables("-F", "INPUT")
        self.iptables("-F", "OUTPUT")

    def pids(self) -> list[int]:
        res = _run("ip", "netns", "pids", self.name, check=False)
        return [int(p) for p in res.stdout.split()]


@dataclass
class Network:
    """A bridge with an address in the root namespace (so the harness reaches every node),
    and one namespace per node. Use as a context manager: removed on exit, failure or not."""

    run_id: str = field(default_factory=lambda: secrets.token_hex(3))
    namespaces: dict[str, Namespace] = field(default_factory=dict)
    subnet: ipaddress.IPv4Network | None = None

    @property
    def bridge(self) -> str:
        return f"{BRIDGE_PREFIX}{self.run_id}"

    @property
    def gateway(self) -> str:
        assert self.subnet is not None
        return str(self.subnet.network_address + 1)

    def __enter__(self) -> Network:
        self.create()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.destroy()

    def create(self) -> None:
        reason = unusable_reason()
        if reason:
            raise RuntimeError(reason)
        sweep_stale()
        self.subnet = _free_subnet()
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        (RUN_DIR / self.run_id).write_text(f"{os.getpid()}\n")
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        _run("ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")
        # With br_netfilter loaded (Docker loads it), bridged packets cross the root
        # namespace's FORWARD chain, whose policy Docker sets to DROP: let ours through.
        _run(*_forward_rule("-I", self.run_id))

    def add(self, node: str) -> Namespace:
        assert self.subnet is not None
        index = len(self.namespaces)
        ns = Namespace(
            f"{NS_PREFIX}{self.run_id}-{node}", str(self.subnet.network_address + 10 + index)
        )
        veth = f"{VETH_PREFIX}{self.run_id}{index}"
        _run("ip", "netns", "add", ns.name)
        self.namespaces[node] = ns
        _run("ip", "link", "add", veth, "type", "veth", "peer", "name", DEVICE, "netns", ns.name)
        _run("ip", "link", "set", veth, "master", self.bridge, "up")
        _run("ip", "-n", ns.name, "addr", "add", f"{ns.ip}/24", "dev", DEVICE)
        _run("ip", "-n", ns.name, "link", "set", DEVICE, "up")
        _run("ip", "-n", ns.name, "link", "set", "lo", "up")
        return ns

    def destroy(self) -> None:
        remove_run(self.run_id)


def _forward_rule(action: str, run_id: str) -> list[str]:
    bridge = f"{BRIDGE_PREFIX}{run_id}"
    return ["iptables", "-w", action, "FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT"]


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 in 10.200-254.x.0 that no interface here uses."""
    used = _run("ip", "-4", "-o", "addr", "show").stdout + _run("ip", "-4", "route").stdout
    for _ in range(200):
        net = ipaddress.IPv4Network(f"10.{random.randint(200, 254)}.{random.randint(0, 255)}.0/24")
        if f"10.{net.network_address.packed[1]}.{net.network_address.packed[2]}." not in used:
            return net
    raise RuntimeError("no free 10.x.y.0/24 subnet found for the fault suite's bridge")


def remove_run(run_id: str) -> None:
    """Remove everything of one run: its processes, namespaces, veths, bridge, rule."""
    names = _run("ip", "netns", "list", check=False).stdout.split("\n")
    ours = [n.split()[0] for n in names if n.startswith(f"{NS_PREFIX}{run_id}-")]
    for name in ours:
        # Whatever still runs in a node's namespace was started by this run: end it, or
        # the namespace outlives its name.
        for pid in Namespace(name, "").pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _run("ip", "netns", "del", name, check=False)
    # The kernel frees a namespace (and the veths in it) only once its last process is
    # gone, asynchronously: delete the host ends now (each takes its peer with it).
    links = _run("ip", "-o", "link", "show", check=False).stdout.splitlines()
    veth = f"{VETH_PREFIX}{run_id}"
    for line in links:
        name = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
        if name.startswith(veth):
            _run("ip", "link", "del", name, check=False)
    _run("ip", "link", "del", f"{BRIDGE_PREFIX}{run_id}", check=False)
    while _run(*_forward_rule("-D", run_id), check=False).returncode == 0:
        pass
    with contextlib.suppress(FileNotFoundError):
        (RUN_DIR / run_id).unlink()


def sweep_stale() -> list[str]:
    """Remove the runs whose owner process is gone; returns their ids."""
    removed = []
    for entry in RUN_DIR.glob("*") if RUN_DIR.is_dir() else []:
        try:
            os.kill(int(entry.read_text().split()[0]), 0)
            continue  # its owner still runs: not ours to touch
        except PermissionError:
            continue
        except (ProcessLookupError, ValueError, IndexError):
            pass  # owner gone, or an unreadable entry
        remove_run(entry.name)
        removed.append(entry.name)
    return removed
