"""Job records: what readers may rely on without parsing a record."""

from __future__ import annotations

import pytest

from picluster_agent.jobs.records import FINAL_STATE_MARKS, JobRecord, JobState


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


def test_a_master_write_names_its_epoch_and_a_worker_write_leaves_it_out():
    by_master = JobRecord(id="j1", spec={}, state=JobState.ASSIGNED, attempt=1, epoch=42)
    assert '"epoch":42' in by_master.to_json()
    assert JobRecord.from_json(by_master.to_json()).epoch == 42
    assert "epoch" not in by_master.with_(epoch=0).to_json()
