"""The dependency rule (`jobs.dependencies.judge`) and the spec's `after`/`array` fields."""

from __future__ import annotations

import pytest

from picluster_agent.jobs.dependencies import judge
from picluster_agent.jobs.records import JobState
from picluster_agent.jobs.spec import SpecError, parse_spec

S, F, C = JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED
OK, FAIL = "(--after-ok)", "(--after-fail)"


@pytest.mark.parametrize(
    ("after", "outcomes", "ready", "waiting", "impossible"),
    [
        ({"ok": ["a"]}, {}, False, "a", None),
        ({"ok": ["a"]}, {"a": S}, True, None, None),
        ({"ok": ["a"]}, {"a": F}, False, None, "dependency a failed, not succeeded (--after-ok)"),
        (
            {"ok": ["a"]},
            {"a": C},
            False,
            None,
            "dependency a cancelled, not succeeded (--after-ok)",
        ),
        ({"any": ["a"]}, {"a": F}, True, None, None),
        ({"fail": ["a"]}, {"a": C}, True, None, None),
        (
            {"fail": ["a"]},
            {"a": S},
            False,
            None,
            "dependency a succeeded, not failed " + FAIL,
        ),
        ({"ok": ["a", "b"]}, {"b": S}, False, "a", None),
        # impossible wins over waiting: no reason to keep it
        (
            {"ok": ["a", "b"]},
            {"b": F},
            False,
            None,
            "dependency b failed, not succeeded (--after-ok)",
        ),
    ],
)
def test_judge(after, outcomes, ready, waiting, impossible):
    v = judge(after, outcomes.get)
    assert (v.ready, v.waiting_on, v.impossible) == (ready, waiting, impossible)


def test_after_is_normalised_and_stored():
    spec = parse_spec({"command": ["true"], "after": {"ok": ["b", "a", "b"]}}, "j")
    assert spec.after == {"ok": ["a", "b"]}
    assert spec.stored_dict()["after"] == {"ok": ["a", "b"]}
    assert "after" not in parse_spec({"command": ["true"]}, "j").stored_dict()


@pytest.mark.parametrize(
    ("after", "message"),
    [
        ([], "after: must be an object"),
        ({"done": ["a"]}, 'after: a string "done" is not a condition'),
        ({"ok": []}, "after: ok: must be a non-empty list"),
        ({"ok": "a"}, "after: ok: must be a non-empty list"),
        ({"ok": ["../x"]}, "after: ok: invalid job id"),
        ({"ok": ["a"], "any": ["a"]}, "after: a is named under two conditions"),
        ({"ok": [f"j{i}" for i in range(101)]}, "after: at most 100 dependencies"),
    ],
)
def test_bad_after_is_refused(after, message):
    with pytest.raises(SpecError, match=message.replace("(", r"\(")):
        parse_spec({"command": ["true"], "after": after}, "j")


@pytest.mark.parametrize(
    "array",
    [[], {"parent": "p"}, {"parent": "a/b", "index": 0}, {"parent": "p", "index": -1},
     {"parent": "p", "index": 0, "max_running": 0}, {"parent": "p", "index": 0, "x": 1}],
)  # fmt: skip
def test_bad_array_is_refused(array):
    with pytest.raises(SpecError, match="array"):
        parse_spec({"command": ["true"], "array": array}, "j")
