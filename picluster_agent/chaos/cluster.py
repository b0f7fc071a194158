"""A cluster of nodes, each in its own network namespace: etcd members and agents as
real processes, and the faults a stack of Pis sees.

A node is one namespace holding an agent and, on the first `etcd_nodes` nodes, an etcd
member. Production timing by default: the heartbeat and election timeout read from the etcd
role's defaults, and the lease TTL the timing rule gives for them (the agents' default).
The harness itself stays in the root namespace and reaches every node over the bridge, as a
submitter on the LAN would.

Faults (each undone by `heal_all`):
    agents   kill -9 (and start again), SIGSTOP / SIGCONT
    members  kill -9, SIGSTOP / SIGCONT, restart (stop, start with the same data)
    network  a node cut off from everything; an asymmetric cut (its packets reach etcd,
             the answers are dropped); the master cut off from the etcd majority while it
             still reaches the workers; one member blackholed (DROP, no RST)
    clocks   a step of one agent's wall clock (see wallclock/sitecustomize.py)
"""

from __future__ import annotations

import contextlib
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .. import timing
from ..coord.election import Leader, current_leader
from ..etcd.adapter import EtcdClient
from ..etcd.keys import Keys
from ..etcd.localcluster import AgentProcess, EtcdMember, find_etcd, set_member_args, wait_for
from .netns import Namespace, Network

REPO = Path(__file__).resolve().parents[2]
ETCD_ROLE_DEFAULTS = REPO / "roles" / "etcd" / "defaults" / "main.yml"
CLIENT_PORT = 2379
PEER_PORT = 2380
WALLCLOCK_DIR = Path(__file__).resolve().parent / "wallclock"


@dataclass(frozen=True)
class EtcdTuning:
    heartbeat_ms: int
    election_ms: int

    def args(self) -> list[str]:
        return [
            "--heartbeat-interval", str(self.heartbeat_ms),
            "--election-timeout", str(self.election_ms),
        ]  # fmt: skip


def role_tuning(path: Path = ETCD_ROLE_DEFAULTS) -> EtcdTuning:
    """The production tuning: what roles/etcd sets on the Pis."""
    defaults = yaml.safe_load(path.read_text())
    return EtcdTuning(
        int(defaults["etcd_heartbeat_interval"]), int(defaults["etcd_election_timeout"])
    )


@dataclass
class Node:
    name: str
    ns: Namespace
    data_dir: Path
    member: EtcdMember | None = None
    agent: AgentProcess | None = None
    agent_spec: dict[str, Any] = field(default_factory=dict)
    restarts: int = 0

    @property
    def clock_file(self) -> Path:
        return self.data_dir / "clock-offset"


class NetCluster:
    """`etcd_nodes` nodes with an etcd member and an agent, `agent_nodes` with an agent only.

    Use as a context manager: every process, namespace and rule is removed on exit.
    """

    def __init__(
        self,
        base_dir: Path,
        *,
        etcd_nodes: int = 3,
        agent_nodes: int = 1,
        lease_ttl: int | None = None,
        slots: int = 2,
        tuning: EtcdTuning | None = None,
        prefix: str | None = None,
        agent_args: list[str] | None = None,
    ) -> None:
        self.base_dir = Path(base_dir)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.etcd_nodes = etcd_nodes
        self.agent_nodes = agent_nodes
        self.slots = slots
        self.tuning = tuning or role_tuning()
        # Default: the smallest TTL the timing rule allows with this tuning (8 s for the role's).
        self.lease_ttl = lease_ttl or timing.min_lease_ttl(self.tuning.election_ms / 1000)
        self.prefix = prefix or f"/chaos-{uuid.uuid4().hex[:6]}"
        self.keys = Keys(self.prefix)
        self.agent_args = agent_args or []
        self.net = Network()
        self.nodes: dict[str, Node] = {}
        self._client: EtcdClient | None = None

    # ------------------------------------------------------------ lifecycle

    def __enter__(self) -> NetCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.net.create()
        names = [f"n{i + 1}" for i in range(self.etcd_nodes + self.agent_nodes)]
        for name in names:
            node = Node(name, self.net.add(name), self.base_dir / name)
            node.data_dir.mkdir(parents=True, exist_ok=True)
            node.clock_file.write_text("0\n")
            self.nodes[name] = node
        members = []
        for node in list(self.nodes.values())[: self.etcd_nodes]:
            node.member = EtcdMember(
                f"m-{node.name}",
                node.data_dir / "etcd",
                CLIENT_PORT,
                PEER_PORT,
                host=node.ns.ip,
                wrapper=node.ns.exec_prefix,
            )
            members.append(node.member)
        token = f"chaos-{self.net.run_id}"
        set_member_args(find_etcd(), members, token, extra_args=self.tuning.args())
        for m in members:
            m.start()
        self.wait_etcd_healthy()
        for node in self.nodes.values():
            self.start_agent(node)
        self.wait_registered(len(self.nodes))

    def stop(self) -> None:
        for node in self.nodes.values():
            if node.agent is not None:
                node.agent.resume()
                node.agent.terminate(timeout=10)
        for node in self.nodes.values():
            if node.member is not None:
                node.member.stop()
        if self._client is not None:
            self._client.close()
            self._client = None
        self.net.destroy()

    # ------------------------------------------------------------ access

    @property
    def endpoints(self) -> list[str]:
        return [n.member.client_url for n in self.nodes.values() if n.member is not None]

    @property
    def client(self) -> EtcdClient:
        if self._client is None:
            self._client = EtcdClient(self.endpoints)
        return self._client

    def members(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.member is not None]

    def wait_etcd_healthy(self, timeout: float = 30.0) -> None:
        def healthy() -> bool:
            for node in self.members():
                assert node.member is not None
                status = EtcdClient([node.member.client_url], timeout=1.0).status()
                if not status.get("leader"):
                    return False
            return True

        wait_for(healthy, timeout, what="etcd members healthy")

    def etcd_leader(self) -> Node:
        """The node whose member is the raft leader now (asked of the members that answer)."""

        def find() -> Node | None:
            for node in self.members():
                assert node.member is not None
                with contextlib.suppress(Exception):
                    status = EtcdClient([node.member.client_url], timeout=1.0).status()
                    if status["leader"] and status["leader"] == status["header"]["member_id"]:
                        return node
            return None

        return wait_for(find, 15, interval=0.1, what="an etcd leader")

    def master(self) -> Leader | None:
        return current_leader(self.client, self.keys)

    def wait_master(self, timeout: float = 30.0) -> Node:
        leader = wait_for(self.master, timeout, interval=0.05, what="a master")
        return self.nodes[leader.name]

    def wait_registered(self, count: int, timeout: float = 30.0) -> None:
        wait_for(
            lambda: self.client.count_prefix(self.keys.nodes_dir) >= count,
            timeout,
            what=f"{count} registered nodes",
        )

    # ------------------------------------------------------------ agents

    def start_agent(self, node: Node) -> AgentProcess:
        env = {
            # The clock-step fault: see wallclock/sitecustomize.py.
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(WALLCLOCK_DIR), os.environ.get("PYTHONPATH", "")) if p
            ),
            "PICLUSTER_CHAOS_CLOCK_FILE": str(node.clock_file),
        }
        node.agent = AgentProcess(
            node.name,
            ",".join(self.endpoints),
            self.prefix,
            node.data_dir / "agent",
            extra_args=list(self.agent_args),
            wrapper=node.ns.exec_prefix,
            extra_env=env,
            **{
                "lease_ttl": self.lease_ttl,
                "slots": self.slots,
                "etcd_election_timeout": self.tuning.election_ms / 1000,
                **node.agent_spec,
            },
        ).start()
        return node.agent

    def kill_agent(self, node: Node) -> None:
        assert node.agent is not None
        node.agent.kill()

    def restart_agent(self, node: Node) -> None:
        """Start a killed (or stopped) agent again, same name and data dir."""
        if node.agent is not None and node.agent.running:
            node.agent.resume()
            node.agent.kill()
        node.restarts += 1
        self.start_agent(node)

    def pause_agent(self, node: Node) -> None:
        assert node.agent is not None
        node.agent.pause()

    def resume_agent(self, node: Node) -> None:
        assert node.agent is not None
        node.agent.resume()

    # ------------------------------------------------------------ etcd members

    def kill_member(self, node: Node) -> None:
        assert node.member is not None
        node.member.kill()

    def start_member(self, node: Node) -> None:
        assert node.member is not None
        if not node.member.running:
            node.member.start()

    def restart_member(self, node: Node) -> None:
        assert node.member is not None
        node.member.stop()
        node.member.start()

    def pause_member(self, node: Node) -> None:
        assert node.member is not None
        node.member.pause()

    def resume_member(self, node: Node) -> None:
        assert node.member is not None
        node.member.resume()

    # ------------------------------------------------------------ network

    def isolate(self, node: Node) -> None:
        """The node is cut off from everything (its own processes still talk over lo)."""
        node.ns.cut_all()

    def cut_replies(self, node: Node) -> None:
        """Asymmetric: the node's requests reach etcd, etcd's answers never come back."""
        node.ns.drop_replies_from_port(CLIENT_PORT)

    def cut_from_majority(self, node: Node) -> list[Node]:
        """`node` (the master, say) reaches at most a minority of the members, while the
        other nodes (its workers) still reach it and the majority: only the majority's etcd
        ports are cut, the rest of their nodes stays in reach. If `node` hosts a member,
        that member is cut from the others too; if not, one member goes with it into the
        minority. Returns the nodes whose rules changed."""
        members = self.members()
        minority = node if node.member is not None else members[0]
        majority = [m.ns.ip for m in members if m is not minority]
        node.ns.cut_from(majority, [CLIENT_PORT, PEER_PORT])
        changed = [node]
        if minority is not node:
            minority.ns.cut_from(majority, [CLIENT_PORT, PEER_PORT])
            changed.append(minority)
        return changed

    def blackhole_member(self, node: Node) -> None:
        """The node's etcd member vanishes silently for everyone (its agent stays)."""
        node.ns.blackhole_ports([CLIENT_PORT, PEER_PORT])
        node.ns.drop_outgoing_to_port(PEER_PORT)

    def heal_network(self, node: Node) -> None:
        node.ns.heal()

    # ------------------------------------------------------------ clocks

    def step_clock(self, node: Node, offset: float) -> None:
        """The node's agent now reads `offset` seconds more (or less) from its wall clock."""
        node.clock_file.write_text(f"{offset}\n")

    # ------------------------------------------------------------ healing

    def heal_all(self) -> None:
        """Undo every fault: rules flushed, processes resumed, the dead started again,
        clocks back in step."""
        for node in self.nodes.values():
            node.ns.heal()
            self.step_clock(node, 0.0)
            if node.member is not None:
                node.member.resume()
                if not node.member.running:
                    node.member.start()
        for node in self.nodes.values():
            if node.agent is not None:
                node.agent.resume()
                if not node.agent.running:
                    self.restart_agent(node)
