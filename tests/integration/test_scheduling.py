"""Scheduling policy on real agents: priority and FIFO, slots, start times, drain, retention."""

from __future__ import annotations

from picluster_agent.client import Client
from picluster_agent.etcd.adapter import Event
from picluster_agent.etcd.keys import Keys
from picluster_agent.etcd.localcluster import wait_for
from picluster_agent.jobs.records import JobRecord, JobState


def _client(agents) -> Client:
    return Client(agents.cluster.endpoints_csv, prefix=agents.prefix)


def _gate(tmp_path) -> tuple[str, object]:
    gate = tmp_path / "gate"
    return f"while [ ! -e {gate} ]; do sleep 0.02; done", gate


def test_higher_priority_first_then_fifo(agents, tmp_path):
    agents.start("pi1", slots=1)
    agents.wait_registered(1)
    client = _client(agents)
    wait_script, gate = _gate(tmp_path)
    blocker = client.submit(wait_script, shell=True)
    wait_for(lambda: client.status(blocker.id).state is JobState.RUNNING, 20, what="blocker")
    order = [
        ("low-a", 0), ("low-b", 0), ("high-c", 10), ("low-d", 0), ("mid-e", 5),
    ]  # fmt: skip
    ids = {name: client.submit(["true"], priority=prio, name=name).id for name, prio in order}
    gate.touch()
    statuses = client.wait([blocker.id, *ids.values()], timeout=60)
    started = sorted(ids, key=lambda name: statuses[ids[name]].record.started_at)
    assert started == ["high-c", "mid-e", "low-a", "low-b", "low-d"]


def test_slots_bound_concurrency_per_node(agents, tmp_path):
    agents.start("pi1", slots=2)
    agents.wait_registered(1)
    client = _client(agents)
    jobs = [client.submit(["sleep", "0.4"]).id for _ in range(6)]
    statuses = client.wait(jobs, timeout=60)
    spans = sorted((s.record.started_at, s.record.finished_at) for s in statuses.values())
    for start, _ in spans:
        overlapping = sum(1 for s, e in spans if s <= start < e)
        assert overlapping <= 2
    wide = client.submit(["true"], slots=2)
    assert client.wait([wide.id], timeout=30)[wide.id].state is JobState.SUCCEEDED


def test_start_time_is_honoured(agents):
    agents.start("pi1")
    agents.wait_registered(1)
    client = _client(agents)
    import time

    not_before = time.time() + 2.0
    job = client.submit(["true"], not_before=not_before)
    status = client.wait([job.id], timeout=30)[job.id]
    assert status.state is JobState.SUCCEEDED
    assert status.record.started_at >= not_before


def test_drain_sends_no_new_jobs_and_lets_running_ones_finish(agents, tmp_path, cli):
    agents.start("pi1", slots=2)
    agents.start("pi2", slots=2)
    agents.wait_registered(2)
    client = _client(agents)
    wait_script, gate = _gate(tmp_path)
    running = client.submit(wait_script, shell=True, constraints={})
    wait_for(lambda: client.status(running.id).state is JobState.RUNNING, 20, what="running")
    busy = client.status(running.id).record.node
    out = cli("drain", "--endpoints", agents.cluster.endpoints_csv, "--prefix", agents.prefix, busy)
    assert out.returncode == 0, out.stderr
    wait_for(lambda: agents.client.get(agents.keys.drain(busy)) is not None, 5)
    later = [client.submit(["true"]).id for _ in range(8)]
    statuses = client.wait(later, timeout=60)
    assert busy not in {s.record.node for s in statuses.values()}
    gate.touch()
    assert client.wait([running.id], timeout=30)[running.id].state is JobState.SUCCEEDED

    pinned = client.submit(["true"], constraints={})
    client.wait([pinned.id], timeout=30)
    out = cli(
        "undrain", "--endpoints", agents.cluster.endpoints_csv, "--prefix", agents.prefix, busy
    )
    assert out.returncode == 0 and "undrained" in out.stdout
    unknown = cli(
        "drain",
        "--endpoints",
        agents.cluster.endpoints_csv,
        "--prefix",
        agents.prefix,
        "nosuchnode",
    )
    assert unknown.returncode == 4


def test_drained_only_match_waits_with_reason(agents):
    agents.start("pi1", labels={"camera": "yes"})
    agents.wait_registered(1)
    client = _client(agents)
    client.drain("pi1")
    job = client.submit(["true"], constraints={"camera": "yes"})
    wait_for(lambda: "drained" in (client.status(job.id).waiting or ""), 15, what="reason")
    client.undrain("pi1")
    assert client.wait([job.id], timeout=30)[job.id].state is JobState.SUCCEEDED


def test_finished_jobs_are_removed_after_retention(agents, tmp_path):
    config = tmp_path / "agent.yaml"
    config.write_text("keep_finished: 5\n")
    agent = agents.start("pi1", slots=4, extra_args=["--config", str(config)])
    agents.wait_registered(1)
    client = _client(agents)
    # The revision at which each job's record became final: the master keeps the ones it saw
    # finish last, and it sees them in that order (not in submission order: with 4 slots an
    # early job can finish late on a loaded machine).
    final_at: dict[str, int] = {}

    def on_events(events: list[Event], _revision: int) -> None:
        for e in events:
            if e.type == "PUT" and JobRecord.from_json(e.kv.value).state.final:
                final_at.setdefault(Keys.last_segment(e.kv.key), e.kv.mod_revision)

    since = int(agents.client.status()["header"]["revision"])
    watch = agents.client.watch(agents.keys.jobs_dir, on_events, start_revision=since + 1)
    jobs = [r.id for r in client.submit_many([_spec() for _ in range(30)])]
    client.wait(jobs, timeout=60)
    wait_for(
        lambda: agents.client.count_prefix(agents.keys.jobs_dir) <= 5, 30, what="old jobs removed"
    )
    assert agents.client.count_prefix(agents.keys.results_dir) <= 5
    wait_for(lambda: set(final_at) >= set(jobs), 10, what="every final record watched")
    watch.stop()
    # The ones that finished last are the ones kept. Jobs reported in one transaction share
    # its revision, and the master meets them in the transaction's order: so no job removed
    # may have become final after one kept, ties allowed.
    kept = {kv.key.rsplit("/", 1)[1] for kv in agents.client.get_prefix(agents.keys.jobs_dir)[0]}
    assert len(kept) == 5
    removed = set(jobs) - kept
    assert max(final_at[j] for j in removed) <= min(final_at[j] for j in kept), final_at
    # The node applies the same limit to the jobs' output directories.
    job_dirs = agent.data_dir / "jobs"
    wait_for(lambda: len(list(job_dirs.iterdir())) <= 5, 30, what="old job directories removed")
    assert {d.name for d in job_dirs.iterdir()} <= set(jobs[-10:])


def _spec():
    from picluster_agent.jobs.spec import build_spec

    return build_spec(["true"])


def test_prefetched_jobs_wait_on_the_node_for_a_free_slot(agents, tmp_path):
    agents.start("pi1", slots=1, extra_args=["--prefetch", "2"])
    agents.wait_registered(1)
    client = _client(agents)
    wait_script, gate = _gate(tmp_path)
    first = client.submit(wait_script, shell=True)
    second = client.submit(["true"])
    third = client.submit(["true"])
    # All three are assigned to pi1 at once, but only one runs while the slot is taken.
    wait_for(
        lambda: all(
            client.status(j.id).state in (JobState.ASSIGNED, JobState.RUNNING)
            for j in (first, second, third)
        ),
        20,
        what="prefetched",
    )
    assert client.status(second.id).record.node == "pi1"
    assert client.status(second.id).state is JobState.ASSIGNED
    client.cancel(third.id)
    assert client.wait([third.id], timeout=20)[third.id].state is JobState.CANCELLED
    gate.touch()
    statuses = client.wait([first.id, second.id], timeout=30)
    assert statuses[second.id].record.started_at >= statuses[first.id].record.finished_at
    assert statuses[second.id].state is JobState.SUCCEEDED
