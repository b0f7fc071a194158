"""joblogs' pure logic: exit codes as a shell shows them, which node has which attempt, and a
resumed stream that neither repeats nor skips bytes."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from picluster_agent.client import JobStatus
from picluster_agent.joblogs import (
    _Follower,
    _Request,
    exit_code_of,
    node_of_attempt,
    outcome_exit_code,
)
from picluster_agent.jobs.records import JobRecord, JobResult, JobState


def result(**kw: Any) -> JobResult:
    base: dict[str, Any] = dict(
        id="j", attempt=1, node="pi1", state=JobState.FAILED, exit_code=None, signal=None,
        timed_out=False, started_at=1.0, finished_at=2.0, stdout_tail="", stderr_tail="",
    )  # fmt: skip
    return JobResult(**{**base, **kw})


def status(state: JobState, res: JobResult | None = None, **record: Any) -> JobStatus:
    rec = JobRecord(id="j", spec={"command": ["true"]}, state=state, **record)
    return JobStatus("j", state, rec, res)


@pytest.mark.parametrize(
    ("st", "expected"),
    [
        (status(JobState.SUCCEEDED, result(state=JobState.SUCCEEDED, exit_code=0)), 0),
        (status(JobState.FAILED, result(exit_code=3)), 3),
        (status(JobState.FAILED, result(signal=9)), 137),
        (status(JobState.CANCELLED, result(state=JobState.CANCELLED, signal=15)), 143),
        (status(JobState.FAILED, result(error="command not found: 'nope'")), 1),
        (status(JobState.REJECTED), 1),
        (status(JobState.CANCELLED), 1),  # before it ever ran
    ],
)
def test_exit_code_of_a_job(st: JobStatus, expected: int) -> None:
    assert exit_code_of(st) == expected


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        ({"exit_code": 0, "signal": None}, 0),
        ({"exit_code": 5, "signal": None}, 5),
        ({"exit_code": None, "signal": 2}, 130),
        ({"exit_code": None, "signal": None, "error": "could not start"}, 1),
        (None, 1),
        ("not an object", 1),
    ],
)
def test_exit_code_of_an_attempt_as_its_node_saw_it(outcome: Any, expected: int) -> None:
    assert outcome_exit_code(outcome) == expected


def test_node_of_each_attempt_from_the_record_and_its_history() -> None:
    st = status(
        JobState.RUNNING,
        attempt=3,
        node="pi3",
        history=(
            {"event": "assigned", "attempt": 1, "node": "pi1"},
            {"event": "lost", "attempt": 1, "node": "pi1"},
            {"event": "assigned", "attempt": 2, "node": "pi2"},
            {"event": "retry", "attempt": 2, "node": "pi2"},
            {"event": "assigned", "attempt": 3, "node": "pi3"},
        ),
    )
    assert [node_of_attempt(st, n) for n in (1, 2, 3, 4)] == ["pi1", "pi2", "pi3", None]
    # History is bounded: an attempt it no longer names is found through its result.
    old = status(JobState.FAILED, result(attempt=1, node="pi7"), attempt=1)
    assert node_of_attempt(old, 1) == "pi7"


def test_a_resumed_stream_neither_repeats_nor_skips() -> None:
    got: list[bytes] = []
    notes: list[str] = []
    follower = _Follower(
        client=None,  # type: ignore[arg-type]  # _deliver needs none
        job_id="j",
        streams=["stdout"],
        on_output=lambda _stream, data: got.append(data),
        on_note=notes.append,
        stop=threading.Event(),
    )
    req = _Request(None, "j", 1, "pi1", "stdout")  # type: ignore[arg-type]
    follower._deliver(req, {"offset": 0, "text": "hello "})
    # The connection broke; the node is asked again from offset 6, but sends from 3 on.
    follower._deliver(req, {"offset": 3, "text": "lo world"})
    follower._deliver(req, {"offset": 11, "dropped": 100})
    follower._deliver(req, {"offset": 111, "base64": "IQo="})  # "!\n"
    follower._deliver(req, {"offset": 0, "text": "hello "})  # an old piece: nothing new
    assert b"".join(got) == b"hello world!\n"
    assert req.offset == 113
    assert notes == ["100 bytes of stdout dropped on node pi1 (its output cap)"]
