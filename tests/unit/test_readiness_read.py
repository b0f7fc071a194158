"""api/health.py's SharedRead: the readiness probes' one etcd read (pure asyncio, no etcd)."""

from __future__ import annotations

import asyncio

from picluster_agent.api.health import SharedRead
from picluster_agent.errors import Unavailable


def test_probes_share_one_read_and_none_waits_past_the_timeout() -> None:
    async def scenario() -> None:
        reads = 0
        answer = asyncio.Event()

        async def read() -> None:
            nonlocal reads
            reads += 1
            await answer.wait()

        shared = SharedRead(read, timeout=0.05)
        loop = asyncio.get_running_loop()
        began = loop.time()
        silent = await asyncio.gather(*(shared.check() for _ in range(50)))
        assert loop.time() - began < 1.0
        assert set(silent) == {"etcd did not answer a read within 0.05 s"}
        assert await shared.check() != "ok" and reads == 1  # still that one read
        answer.set()
        await asyncio.sleep(0.01)  # the read ends
        assert await shared.check() == "ok" and reads == 2  # a new read once it ended

    asyncio.run(scenario())


def test_a_refusal_is_the_reason() -> None:
    async def refused() -> None:
        raise Unavailable("no etcd endpoint reachable")

    assert asyncio.run(SharedRead(refused).check()) == "no etcd endpoint reachable"
