"""`picluster jobs` (active jobs, without reading finished records) on real etcd and agents:
a job between two attempts is listed, through a master failover, until it ends; the
re-run index (`rerun/<id>`) and the job's record agree at every revision of etcd's history."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from picluster_agent.api_client import ApiClient
from picluster_agent.client import Client
from picluster_agent.etcd.localcluster import wait_for
from picluster_agent.jobs.records import JobRecord, JobState

from conftest import Agents

BACKOFF = 8.0  # seconds between the two attempts: time to list the job and fail over


def listed(cli: Callable, group: Agents) -> set[str]:
    """The ids `picluster jobs` shows (its default: the active jobs)."""
    out = cli("jobs", "--endpoints", group.cluster.endpoints_csv, "--prefix", group.prefix,
              "-o", "json")  # fmt: skip
    assert out.returncode == 0, out.stderr
    return {j["id"] for j in json.loads(out.stdout)}


def assert_index_agrees_with_records(group: Agents, job_id: str, since: int) -> None:
    """At every revision from `since` on, `rerun/<id>` exists exactly while the job's record
    says it waits for another attempt (queued, after one)."""
    keys, etcd = group.keys, group.client
    now = etcd.status()["header"]["revision"]
    for rev in range(since, int(now) + 1):
        kv = etcd.get(keys.job(job_id), revision=rev)
        record = JobRecord.from_json(kv.value) if kv is not None else None
        waiting = record is not None and record.state is JobState.QUEUED
        indexed = etcd.get(keys.rerun(job_id), revision=rev) is not None
        assert indexed == waiting, (rev, record and record.state, indexed)


def test_a_job_waiting_to_retry_is_listed_through_a_failover_until_it_ends(
    agents: Agents, cli, tmp_path: Path
) -> None:
    agents.start("pi1", with_api=True)
    agents.start("pi2")
    agents.wait_registered(2)
    first_master = agents.wait_leader().name
    client = Client(agents.cluster.endpoints_csv, prefix=agents.prefix)
    since = int(agents.client.status()["header"]["revision"])
    counter = tmp_path / "count"
    fails_once = f"n=$(cat {counter} 2>/dev/null || echo 0); echo $((n+1)) >{counter}; [ $n = 1 ]"
    job = client.submit(fails_once, shell=True, max_attempts=2, retry_backoff=BACKOFF).id

    def between_attempts() -> bool:
        record = client.status(job).record
        return record is not None and record.state is JobState.QUEUED and record.attempt == 1

    wait_for(between_attempts, 30, interval=0.05, what="the job waiting to retry")
    # Listed by the CLI, the Python API and the HTTPS API, none of which reads finished records.
    assert job in listed(cli, agents)
    assert job in {s.id for s in client.jobs(active=True)}
    assert job in {s.id for s in client.jobs(state="queued")}
    rita = agents.apis.user("rita", "picluster-reader")
    api = ApiClient(agents.by_name("pi1").api_url, cacert=agents.apis.pki.cacert, cert=rita.cert,
                    key=rita.key)  # fmt: skip
    assert job in {j["id"] for j in api.jobs(active=True)}
    assert agents.client.get(agents.keys.rerun(job)).value == b"retry"

    # The master dies while the job waits: the next one assigns it, and the index goes.
    agents.by_name(first_master).kill()
    agents.wait_leader(timeout=30, other_than=first_master)
    final = client.wait([job], timeout=60)[job]
    assert final.state is JobState.SUCCEEDED and final.record.attempt == 2
    assert job not in listed(cli, agents)
    assert agents.client.get(agents.keys.rerun(job)) is None
    assert_index_agrees_with_records(agents, job, since)


def test_a_job_requeued_after_its_node_was_lost_is_listed_until_cancelled(
    agents: Agents, cli
) -> None:
    agents.start("pi1")
    worker = agents.start("pi2", labels={"disk": "ssd"}, master=False)
    agents.wait_registered(2)
    agents.wait_leader()
    client = Client(agents.cluster.endpoints_csv, prefix=agents.prefix)
    since = int(agents.client.status()["header"]["revision"])
    job = client.submit(["sleep", "120"], constraints={"disk": "ssd"}).id
    wait_for(lambda: client.status(job).state is JobState.RUNNING, 30, what="running on pi2")
    worker.kill()  # its lease expires: the master re-queues the job; no other node fits it
    wait_for(lambda: client.status(job).record.losses == 1, 30, interval=0.1, what="job re-queued")
    assert client.status(job).state is JobState.QUEUED
    assert agents.client.get(agents.keys.rerun(job)).value == b"lost"
    assert job in listed(cli, agents)

    client.cancel(job)
    assert client.wait([job], timeout=30)[job].state is JobState.CANCELLED
    assert job not in listed(cli, agents)
    assert agents.client.get(agents.keys.rerun(job)) is None
    assert_index_agrees_with_records(agents, job, since)


def test_a_new_master_repairs_an_index_that_an_older_agent_left_out(agents: Agents, cli) -> None:
    """A rolling upgrade: a job re-queued by an agent that did not write `rerun/<id>` (made
    here by deleting it) is indexed again by the next master when it loads."""
    agents.start("pi1")
    agents.wait_registered(1)
    first = agents.wait_leader()
    client = Client(agents.cluster.endpoints_csv, prefix=agents.prefix)
    job = client.submit(["false"], max_attempts=2, retry_backoff=120.0).id
    wait_for(lambda: client.status(job).record.failures == 1, 30, what="waiting to retry")
    agents.client.delete(agents.keys.rerun(job))
    stale = "stale-01"  # an index key whose job does not exist
    agents.client.put(agents.keys.rerun(stale), "retry")
    agents.by_name("pi1").terminate()  # hands over at once (revokes its lease)
    agents.start("pi1")
    wait_for(
        lambda: (leader := agents.leader()) is not None and leader.lease != first.lease,
        30,
        what="a new master",
    )
    wait_for(
        lambda: agents.client.get(agents.keys.rerun(job)) is not None,
        15,
        what="the index repaired",
    )
    assert agents.client.get(agents.keys.rerun(job)).value == b"retry"
    wait_for(lambda: agents.client.get(agents.keys.rerun(stale)) is None, 15, what="stale gone")
    assert listed(cli, agents) == {job}
