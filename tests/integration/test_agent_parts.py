"""No part of an agent dies alone (issue 13, finding 5).

The worker, in-process against a real etcd: a failed etcd call while it starts its watches
is retried, not the end of it. The agent: a part that cannot go on ends the whole agent with
an error (systemd then restarts it), instead of leaving a registered node that runs nothing.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from pathlib import Path

import pytest

from picluster_agent.config import AgentConfig, Connection
from picluster_agent.coord.session import Session
from picluster_agent.duties.agent import Agent, AgentFailure
from picluster_agent.duties.worker import Worker
from picluster_agent.etcd.keys import Keys
from picluster_agent.etcd.localcluster import EtcdCluster, wait_for
from picluster_agent.jobs.records import JobRecord, JobState
from picluster_agent.stopping import StopSignal


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def warnings_seen():
    handler = Records()
    root = logging.getLogger("picluster_agent")
    root.addHandler(handler)
    yield handler.messages
    root.removeHandler(handler)


def _config(cluster: EtcdCluster, prefix: str, tmp_path: Path, **kwargs: object) -> AgentConfig:
    return AgentConfig(
        connection=Connection(endpoints=tuple(cluster.endpoints), prefix=prefix),
        name="pi1",
        slots=1,
        data_dir=str(tmp_path / "data"),
        **kwargs,  # type: ignore[arg-type]
    )


def test_worker_outlives_a_failed_etcd_call_while_starting_its_watches(
    etcd1: EtcdCluster, prefix: str, tmp_path: Path, warnings_seen: list[str]
) -> None:
    cfg = _config(etcd1, prefix, tmp_path, lease_ttl=10)
    keys = Keys(prefix)
    client = etcd1.client()
    session = Session(client, cfg.lease_ttl)
    stop = threading.Event()
    etcd1.members[0].stop()  # the worker's first read fails
    worker = threading.Thread(target=Worker(cfg, session, stop).run, daemon=True)
    worker.start()
    try:
        wait_for(
            lambda: any("watch" in m for m in warnings_seen) or not worker.is_alive(),
            10,
            what="the worker meeting the outage",
        )
        etcd1.members[0].start()
        etcd1.wait_healthy()
        assert worker.is_alive(), "the worker ended on one failed etcd call"
        # It serves its inbox: an assignment under its lease runs and is reported.
        record = JobRecord(
            id=f"j-{uuid.uuid4().hex[:6]}",
            spec={"command": ["true"]},
            state=JobState.ASSIGNED,
            attempt=1,
            node="pi1",
        )
        client.put(keys.job(record.id), record.to_json())
        client.put(keys.assign("pi1", record.id), record.to_json(), lease=session.lease_id)

        def succeeded() -> bool:
            kv = client.get(keys.job(record.id))
            return kv is not None and JobRecord.from_json(kv.value).state is JobState.SUCCEEDED

        wait_for(succeeded, 20, what="the job reported")
    finally:
        stop.set()
        worker.join(15)
        session.close()


def test_a_part_that_cannot_go_on_ends_the_whole_agent(
    etcd1: EtcdCluster, prefix: str, tmp_path: Path
) -> None:
    def broken_worker(_session: Session, _stop: StopSignal) -> None:
        raise RuntimeError("a bug in the worker")

    agent = Agent(_config(etcd1, prefix, tmp_path), worker_duty=broken_worker)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            agent.run()
        except BaseException as e:
            failure.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(15)
    if thread.is_alive():
        agent.stop()
        thread.join(15)
        pytest.fail("the agent went on without its worker")
    assert failure and isinstance(failure[0], AgentFailure), failure
    assert "a bug in the worker" in str(failure[0])
    # It left cleanly: its registration (and with it any work given to it) is gone.
    client = etcd1.client()
    assert client.get(Keys(prefix).node("pi1")) is None


def test_a_master_duty_that_keeps_failing_is_retried_with_backoff(
    etcd1: EtcdCluster, prefix: str, tmp_path: Path
) -> None:
    """It steps down each time (another agent may do better), but campaigns again only
    after a growing pause: a failure that repeats does not spin the election."""
    starts: list[float] = []

    def broken_duty(_election: object, _stop: StopSignal) -> None:
        starts.append(time.monotonic())
        raise RuntimeError("a bug in a master duty")

    agent = Agent(_config(etcd1, prefix, tmp_path), master_duties=[broken_duty])
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: len(starts) >= 4, 20, what="four terms as master")
    finally:
        agent.stop()
        thread.join(15)
    # Pauses of 0.1, 0.2 and 0.4 s at least between the four (none: milliseconds).
    assert starts[3] - starts[0] >= 0.6, [round(t - starts[0], 3) for t in starts]
