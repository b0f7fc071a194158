"""Job records: what readers may rely on without parsing a record."""

from __future__ import annotations

import pytest

from picluster_agent.jobs import FINAL_STATE_MARKS, JobRecord, JobState


@pytest.mark.parametrize("state", list(JobState))
def test_a_stored_record_shows_whether_it_is_final_without_parsing(state):
    # A label named "state" must not make a running job look final, nor hide a final one.
    record = JobRecord(
        id="j1", spec={"command": ["true"], "labels": {"state": "x"}}, state=state, seq=1
    )
    stored = record.to_json().encode()
    assert any(mark in stored for mark in FINAL_STATE_MARKS) == state.final
    assert JobRecord.from_json(stored).state is state


def test_stored_records_leave_out_defaults_and_read_back_equal():
    fresh = JobRecord(id="j1", spec={"command": ["true"]}, state=JobState.QUEUED, seq=7)
    assert fresh.to_json() == '{"id":"j1","seq":7,"spec":{"command":["true"]},"state":"queued"}'
    assert JobRecord.from_json(fresh.to_json()) == fresh
    done = fresh.with_(
        state=JobState.FAILED, attempt=2, node="pi2", exit_code=0, reason="x", history=({"a": 1},)
    )
    assert JobRecord.from_json(done.to_json()) == done
    assert '"exit_code":0' in done.to_json()  # a zero that is not the default (None) stays
