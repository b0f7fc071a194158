"""The fault suite's history checker, on hand-made histories: each violation is caught, and
a clean history passes."""

from __future__ import annotations

import pytest

from picluster_agent.chaos.history import KeyEvent, Mark, Submission, check, job_story


def put(rev: int, key: str, create: int | None = None, **value: object) -> KeyEvent:
    return KeyEvent(rev, "PUT", key, dict(value), create if create is not None else rev)


def delete(rev: int, key: str) -> KeyEvent:
    return KeyEvent(rev, "DELETE", key)


def index(rev: int, job: str) -> KeyEvent:
    """`rerun/<job>` put (its value, a word, is not JSON)."""
    return KeyEvent.from_raw(rev, "PUT", f"rerun/{job}", b"lost", rev)


def run(job: str, attempt: int, node: str, pid: int, start: float, end: float, ended=True):
    """Marks of one run: start, beats every 0.5 s, and `end` if it was not killed."""
    marks = [Mark("start", start, job, attempt, node, pid)]
    t = start + 0.5
    while t < end:
        marks.append(Mark("beat", t, job, attempt, node, pid))
        t += 0.5
    if ended:
        marks.append(Mark("end", end, job, attempt, node, pid))
    else:
        marks.append(Mark("beat", end, job, attempt, node, pid))
    return marks


# A master (epoch 2) is elected; job A is queued, assigned to n1, runs, and its result and
# final record are written by the worker in one txn that also deletes the assignment.
ELECTED = [put(2, "election/a1")]
CLEAN_A = [
    put(3, "queue/A"),
    delete(4, "queue/A"),
    put(4, "jobs/A", id="A", state="assigned", attempt=1, node="n1", epoch=2),
    put(4, "assign/n1/A", id="A", state="assigned", attempt=1, node="n1", epoch=2),
    put(5, "jobs/A", id="A", state="succeeded", attempt=1, node="n1"),
    put(5, "results/A", id="A", attempt=1, node="n1", state="succeeded"),
    delete(5, "assign/n1/A"),
]
# Job A lost with n1 (its assignment vanishes with the lease), re-queued and assigned to n2.
RERUN_A = [
    put(3, "queue/A"),
    delete(4, "queue/A"),
    put(4, "jobs/A", id="A", state="assigned", attempt=1, node="n1", epoch=2),
    put(4, "assign/n1/A", id="A", state="assigned", attempt=1, node="n1", epoch=2),
    delete(6, "assign/n1/A"),
    put(7, "jobs/A", id="A", state="queued", attempt=1, epoch=2),
    index(7, "A"),
    delete(8, "rerun/A"),
    put(8, "jobs/A", id="A", state="assigned", attempt=2, node="n2", epoch=2),
    put(8, "assign/n2/A", id="A", state="assigned", attempt=2, node="n2", epoch=2),
    put(9, "jobs/A", id="A", state="succeeded", attempt=2, node="n2"),
    put(9, "results/A", id="A", attempt=2, node="n2", state="succeeded"),
    delete(9, "assign/n2/A"),
]
ACKED_A = [Submission("A", acked=True)]

CASES = {
    "clean: one run, one result": (ACKED_A, run("A", 1, "n1", 10, 0, 5), ELECTED + CLEAN_A, {}),
    "clean: lost node, re-run after the first run died": (
        ACKED_A,
        run("A", 1, "n1", 10, 0, 3, ended=False) + run("A", 2, "n2", 11, 4, 9),
        ELECTED + RERUN_A,
        {},
    ),
    "overlap: the re-run starts while the first run still beats": (
        ACKED_A,
        run("A", 1, "n1", 10, 0, 8, ended=False) + run("A", 2, "n2", 11, 4, 9),
        ELECTED + RERUN_A,
        {"overlap": 1},
    ),
    "lost: acknowledged, never final": (
        ACKED_A,
        run("A", 1, "n1", 10, 0, 3, ended=False),
        ELECTED + CLEAN_A[:4],
        {"lost": 1},
    ),
    "stale result: attempt 1 reports after its assignment was gone": (
        ACKED_A,
        run("A", 1, "n1", 10, 0, 3) + run("A", 2, "n2", 11, 4, 9),
        ELECTED
        + RERUN_A[:8]
        + [put(8, "results/A", id="A", attempt=1, node="n1", state="succeeded")]
        + RERUN_A[8:],
        {"stale_result": 1},
    ),
    "stale master write: a deposed master (epoch 2) writes after epoch 7 took over": (
        ACKED_A,
        run("A", 1, "n1", 10, 0, 5),
        ELECTED
        + CLEAN_A
        + [delete(6, "election/a1"), put(7, "election/b2")]
        + [put(8, "leader", name="n1", epoch=2)]
        + [put(9, "leader", name="n2", epoch=7)],
        {"stale_master_write": 1},
    ),
    "duplicate final: a second final record after the first": (
        ACKED_A,
        run("A", 1, "n1", 10, 0, 5),
        ELECTED
        + CLEAN_A
        + [put(6, "jobs/A", id="A", state="queued", attempt=1, epoch=2), index(6, "A")]
        + [put(7, "jobs/A", id="A", state="failed", attempt=1, epoch=2), delete(7, "rerun/A")],
        {"duplicate_final": 1},
    ),
    "rerun index: re-queued without it, then assigned while it is left behind": (
        ACKED_A,
        run("A", 1, "n1", 10, 0, 3, ended=False) + run("A", 2, "n2", 11, 4, 9),
        ELECTED + [e for e in RERUN_A if e.key != "rerun/A"] + [index(9, "A")],
        {"rerun_index": 2},
    ),
    "unacknowledged, never committed, never ran: fine": (
        [Submission("B", acked=False)],
        [],
        ELECTED,
        {},
    ),
    "unacknowledged but committed: completes once, fine": (
        [Submission("A", acked=False)],
        run("A", 1, "n1", 10, 0, 5),
        ELECTED + CLEAN_A,
        {},
    ),
    "unacknowledged, ran, never final": (
        [Submission("A", acked=False)],
        run("A", 1, "n1", 10, 0, 3, ended=False),
        ELECTED + CLEAN_A[:4],
        {"unacked_half_done": 1},
    ),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_the_checker_finds_exactly_the_violations_of_a_history(case):
    submissions, marks, events, expected = CASES[case]
    verdict = check(submissions, marks, events)
    found = {v.kind: verdict.count(v.kind) for v in verdict.violations}
    assert found == expected, verdict.violations


def test_the_verdict_counts_runs_reruns_epochs_and_final_states():
    verdict = check(
        ACKED_A,
        run("A", 1, "n1", 10, 0, 3, ended=False) + run("A", 2, "n2", 11, 4, 9),
        ELECTED + RERUN_A,
    )
    assert (verdict.acked, verdict.runs, verdict.reruns, verdict.epochs) == (1, 2, 1, 1)
    assert verdict.final_states == {"succeeded": 1} and verdict.ok


def test_stale_writes_of_one_deposed_master_count_as_one_duplicate_epoch():
    events = [
        put(2, "election/a1"),
        delete(3, "election/a1"),
        put(4, "election/b2"),
        put(5, "leader", epoch=2),
        put(6, "leader", epoch=2),
    ]
    verdict = check([], [], events)
    assert verdict.count("stale_master_write") == 2 and verdict.duplicate_epochs == 1
    assert verdict.writes_by_epoch == {2: 2}


def test_a_mark_line_cut_short_by_a_kill_is_skipped():
    mark = Mark("beat", 12.5, "A", 2, "n3", 77)
    assert Mark.parse(mark.line()) == mark
    assert Mark.parse("beat 12.5 A 2") is None


def test_a_jobs_story_lists_its_key_changes_then_its_runs():
    story = job_story("A", ELECTED + CLEAN_A, run("A", 1, "n1", 10, 0, 1))
    assert story[0] == "rev 3 PUT queue/A"
    assert "rev 4 PUT assign/n1/A state=assigned attempt=1 node=n1 epoch=2" in story
    assert story[-1] == "run attempt 1 on n1 pid 10: start 0.000, ended 1.000"
