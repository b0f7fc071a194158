"""Node-side retention of job directories (pure logic on a temporary directory)."""

from __future__ import annotations

import os

from picluster_agent.node.janitor import JobDirJanitor


def _job_dir(root, job_id, mtime=None):
    d = root / job_id / "1"
    d.mkdir(parents=True)
    (d / "stdout").write_text("out")
    if mtime is not None:
        os.utime(root / job_id, (mtime, mtime))
    return root / job_id


def test_keeps_the_newest_and_removes_the_rest_oldest_first(tmp_path):
    janitor = JobDirJanitor(tmp_path, keep=2, max_age=3600, in_use=lambda _: False)
    for i in range(5):
        _job_dir(tmp_path, f"j{i}")
        janitor.note_finished(f"j{i}", when=1000.0 + i)
    assert janitor.sweep(now=1010.0) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["j3", "j4"]


def test_removes_what_is_too_old_even_under_the_count(tmp_path):
    janitor = JobDirJanitor(tmp_path, keep=100, max_age=60, in_use=lambda _: False)
    for i, when in enumerate((1000.0, 1050.0, 1100.0)):
        _job_dir(tmp_path, f"j{i}")
        janitor.note_finished(f"j{i}", when=when)
    assert janitor.sweep(now=1100.0) == 1  # only j0 is more than 60 s old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["j1", "j2"]


def test_never_removes_a_job_assigned_to_the_node_again(tmp_path):
    janitor = JobDirJanitor(tmp_path, keep=0, max_age=0, in_use=lambda job_id: job_id == "j0")
    for i in range(3):
        _job_dir(tmp_path, f"j{i}")
        janitor.note_finished(f"j{i}", when=1000.0 + i)
    assert janitor.sweep(now=2000.0) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["j0"]
    assert list(janitor.finished) == ["j0"]  # still tracked: removed once it is free


def test_adopts_directories_left_by_an_earlier_run_by_their_age(tmp_path):
    _job_dir(tmp_path, "old", mtime=1000.0)
    _job_dir(tmp_path, "older", mtime=900.0)
    janitor = JobDirJanitor(tmp_path, keep=2, max_age=10**9, in_use=lambda _: False)
    _job_dir(tmp_path, "new")
    janitor.note_finished("new", when=2000.0)
    janitor.adopt_existing()
    assert list(janitor.finished) == ["older", "old", "new"]
    assert janitor.sweep(now=2001.0) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new", "old"]
