"""Job dependencies: when a job that names others in its spec's `after` may start.

    "after": {"ok": [A], "any": [B], "fail": [C]}

starts once A has succeeded, B has finished in any way and C has finished without
succeeding. A dependency that can no longer be met (A failed, C succeeded) means the job
never starts: the master cancels it with the reason. The rule is here, pure, so that the
master's decision and `picluster status`'s explanation are the same rule.

Cycles cannot form: a dependency must have been submitted before its dependent (the client
refuses unknown ids; the master cancels a job that names a later or unknown one, for
submissions made with etcdctl).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from .records import JobState

FLAG_OF = {"ok": "--after-ok", "any": "--after-any", "fail": "--after-fail"}
_WANTED = {"ok": "succeeded", "any": "finished", "fail": "failed"}


def satisfied(condition: str, state: JobState) -> bool:
    """Whether a dependency that ended in `state` (a final state) meets `condition`."""
    if condition == "ok":
        return state is JobState.SUCCEEDED
    if condition == "fail":
        return state is not JobState.SUCCEEDED
    return True


@dataclass(frozen=True)
class Verdict:
    ready: bool  # every dependency is met
    waiting_on: str | None = None  # the first dependency not finished yet
    impossible: str | None = None  # why the job can never start

    def describe(self, states: Mapping[str, str]) -> str | None:
        """For `status`: which dependency it waits on, with that job's state."""
        if self.impossible:
            return f"will be cancelled: {self.impossible}"
        if self.waiting_on:
            state = states.get(self.waiting_on, "unknown")
            return f"waiting for dependency {self.waiting_on} ({state})"
        return None


def dependencies(after: Mapping[str, Sequence[str]]) -> Iterator[tuple[str, str]]:
    """(condition, job id) for each dependency, in a stable order."""
    for condition in ("ok", "any", "fail"):
        for job_id in after.get(condition, ()):
            yield condition, job_id


def judge(after: Mapping[str, Sequence[str]], outcome: Callable[[str], JobState | None]) -> Verdict:
    """`outcome(id)`: the final state of a dependency, or None while it has not finished."""
    waiting = None
    for condition, job_id in dependencies(after):
        state = outcome(job_id)
        if state is None:
            waiting = waiting or job_id
        elif not satisfied(condition, state):
            return Verdict(
                False,
                impossible=f"dependency {job_id} {state.value}, not {_WANTED[condition]} "
                f"({FLAG_OF[condition]})",
            )
    return Verdict(waiting is None, waiting_on=waiting)
