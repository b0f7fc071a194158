"""A real agent process under a stand-in for systemd: READY once registered, watchdog pings
while it runs, STOPPING when asked to stop."""

from __future__ import annotations

import signal
from pathlib import Path

from sockets import Listener

from picluster_agent.etcd.localcluster import free_port, wait_for

from conftest import Agents


def test_agent_tells_systemd_ready_alive_and_stopping(agents: Agents, tmp_path: Path) -> None:
    listener = Listener(str(tmp_path / "notify"))
    try:
        env = {"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "1000000"}
        agent = agents.start("pi1", extra_env=env)
        wait_for(lambda: listener.count("READY=1"), 20, what="READY=1")
        # Ready means registered: the node can be given work when `systemctl start` returns.
        assert agents.client.get(agents.keys.node("pi1")) is not None
        assert listener.count("STATUS=registered as pi1")
        wait_for(lambda: any(d.startswith(b"STATUS=master") for d in listener.received), 20)
        # WatchdogSec=1: a ping every quarter of it.
        pings = listener.count("WATCHDOG=1")
        wait_for(lambda: listener.count("WATCHDOG=1") >= pings + 4, 5, what="watchdog pings")
        agent.signal(signal.SIGTERM)
        wait_for(lambda: listener.count("STOPPING=1"), 10, what="STOPPING=1")
        assert agent.proc is not None and agent.proc.wait(15) == 0
        assert listener.count("READY=1") == 1
    finally:
        listener.close()


def test_an_agent_that_cannot_reach_etcd_at_start_is_started_and_says_it_waits(
    agents: Agents, tmp_path: Path
) -> None:
    # As the unit runs it (--no-check-connection), with no etcd at its endpoint: a start
    # job waiting for registration would fail at TimeoutStartSec and be restarted forever.
    listener = Listener(str(tmp_path / "notify"))
    try:
        env = {"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "1000000"}
        nowhere = f"http://127.0.0.1:{free_port()}"
        agent = agents.start(
            "pi9", endpoints=nowhere, extra_env=env, extra_args=["--no-check-connection"]
        )
        wait_for(lambda: listener.count("READY=1"), 20, what="READY=1 without etcd")
        waiting = f"STATUS=waiting for etcd at {nowhere}: ".encode()
        assert any(d.split(b"\n")[-1].startswith(waiting) for d in listener.received)
        # Alive and watched: still trying, and pinging the watchdog meanwhile.
        pings = listener.count("WATCHDOG=1")
        wait_for(lambda: listener.count("WATCHDOG=1") >= pings + 4, 5, what="watchdog pings")
        assert agent.running
        agent.signal(signal.SIGTERM)
        assert agent.proc is not None and agent.proc.wait(15) == 0
        assert listener.count("READY=1") == 1
    finally:
        listener.close()
