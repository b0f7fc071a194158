"""An attempt's full output on its node: the output cap (holes punched by the supervisor)
and the reader that walks the file, steps over holes, and follows a running attempt.

Real jobs through the real supervisor (jobshim); waits are on conditions with deadlines.
"""

from __future__ import annotations

import os
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from picluster_agent.errors import ConfigError
from picluster_agent.jobs.spec import build_spec
from picluster_agent.node import jobshim
from picluster_agent.node.outputs import OutputReader, Piece, dropped_note, output_path
from picluster_agent.node.runner import JobProcess, attempt_state

pytestmark = pytest.mark.timeout(60)
MiB = 1024 * 1024


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[..., JobProcess]]:
    started: list[JobProcess] = []

    def make(command: Any, *, job_id: str = "job1", attempt: int = 1, **kw: Any) -> JobProcess:
        kw.setdefault("data_dir", tmp_path)
        proc = JobProcess(build_spec(command), job_id=job_id, attempt=attempt, node="pi7", **kw)
        started.append(proc)
        return proc

    yield make
    for proc in started:
        proc.stop(grace=0)
        proc.wait(5)


def read_all(path: str) -> list[Piece]:
    with OutputReader(path) as reader:
        return list(reader.pieces())


def on_disk(path: Path) -> int:
    return path.stat().st_blocks * 512


def test_output_path_is_the_runners(make: Callable[..., JobProcess], tmp_path: Path) -> None:
    proc = make(["true"], job_id="j-7", attempt=3)
    assert output_path(tmp_path, "j-7", 3, "stdout") == str(proc.stdout_path)
    assert output_path(tmp_path, "j-7", 3, "stderr") == str(proc.stderr_path)


@pytest.mark.parametrize(
    ("job_id", "attempt", "stream"),
    [("../x", 1, "stdout"), ("j", 0, "stdout"), ("j", 1, "stdin"), ("j", 1, "../1.stdout")],
)
def test_output_path_refuses_what_would_leave_the_job_dir(
    tmp_path: Path, job_id: str, attempt: int, stream: str
) -> None:
    with pytest.raises(ConfigError):
        output_path(tmp_path, job_id, attempt, stream)


def test_chatty_job_keeps_head_and_tail_within_the_cap(
    make: Callable[..., JobProcess],
) -> None:
    # 6 MiB of numbered lines against a 1 MiB cap, written over ~1 s so that the supervisor's
    # periodic check (not only the one at exit) punches.
    code = textwrap.dedent(
        """
        import sys, time
        out = sys.stdout.buffer
        for n in range(60):
            out.write(b"".join(b"%08d-%07d\\n" % (n, i) for i in range(6554)))
            out.flush()
            time.sleep(0.015)
        out.write(b"THE END\\n")
        """
    )
    cap = 1 * MiB
    proc = make([sys.executable, "-c", code], output_cap=cap, tail_bytes=1000)
    proc.start()
    largest = 0
    deadline = time.monotonic() + 30
    while proc.wait(0.05) is None:
        largest = max(largest, on_disk(proc.stdout_path))
        assert time.monotonic() < deadline
    outcome = proc.wait(0)
    assert outcome is not None and outcome.exit_code == 0
    size = proc.stdout_path.stat().st_size
    assert size == 60 * 6554 * 17 + 8  # the offsets are the job's own: the file keeps its size
    # On disk: the cap and at most what the job writes between two checks (here ~0.1 MiB
    # per 15 ms: well under 2 MiB per OUTPUT_CHECK).
    assert largest <= cap + 2 * MiB, largest
    assert on_disk(proc.stdout_path) <= cap + 8192
    assert outcome.stdout_tail.endswith("THE END\n")  # the result's tail is untouched
    pieces = read_all(str(proc.stdout_path))
    dropped = [p for p in pieces if p.dropped]
    assert len(dropped) == 1 and dropped[0].dropped > 0
    kept = b"".join(p.data for p in pieces)
    assert kept.startswith(b"00000000-0000000\n")
    assert kept.endswith(b"THE END\n")
    assert cap - 8192 <= len(kept) <= cap + 8192
    assert sum(len(p.data) + p.dropped for p in pieces) == size  # every byte accounted for
    # What is kept is the job's own bytes, in order, around one gap.
    written = b"".join(b"%08d-%07d\n" % (n, i) for n in range(60) for i in range(6554))
    written += b"THE END\n"
    for piece in pieces:
        assert piece.data == written[piece.offset : piece.offset + len(piece.data)]


def test_quiet_job_is_not_touched_by_the_cap(make: Callable[..., JobProcess]) -> None:
    proc = make(["sh", "-c", "head -c 100000 /dev/zero | tr '\\0' x"], output_cap=200_000)
    proc.start()
    assert proc.wait(20) is not None
    pieces = read_all(str(proc.stdout_path))
    assert b"".join(p.data for p in pieces) == b"x" * 100_000
    assert not any(p.dropped for p in pieces)


def test_cap_without_holes_cuts_back_and_the_reader_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "1.stdout"
    path.write_bytes(b"a" * 10_000)
    reader = OutputReader(str(path))
    assert [len(p.data) for p in reader.pieces()] == [10_000]
    os.truncate(path, 4096)  # what cap_output does where fallocate cannot punch
    with open(path, "ab") as f:
        f.write(b"new\n")
    pieces = list(reader.pieces())
    assert pieces[0].dropped == -1 and b"cut" in dropped_note(pieces[0])
    with open(path, "ab") as f:
        f.write(b"more\n")
    assert [p.data for p in reader.pieces()] == [b"more\n"]


def test_cap_output_punches_only_whole_blocks_past_the_head(tmp_path: Path) -> None:
    path = tmp_path / "out"
    data = bytes(range(256)) * (40 * 1024)  # 10 MiB, no zero runs to mistake for holes
    path.write_bytes(data)
    punched = jobshim.cap_output(str(path), 2 * MiB, 0)
    assert punched % 4096 == 0 and punched >= 10 * MiB - MiB - 4096
    assert jobshim.cap_output(str(path), 2 * MiB, punched) == punched  # nothing new: no-op
    pieces = read_all(str(path))
    assert pieces[0].offset == 0 and pieces[0].data == data[: len(pieces[0].data)]
    assert len(b"".join(p.data for p in pieces if p.offset < MiB)) == MiB
    tail = b"".join(p.data for p in pieces if p.offset >= punched)
    assert tail == data[punched:] and len(tail) >= MiB


def test_reader_waits_for_a_file_that_is_not_there_yet(tmp_path: Path) -> None:
    path = tmp_path / "1.stdout"
    reader = OutputReader(str(path), offset=3)
    assert reader.read() is None
    path.write_bytes(b"abcdef")
    assert reader.read() == Piece(3, b"def", 0)
    assert reader.read() is None


def test_attempt_state_follows_the_attempt(make: Callable[..., JobProcess], tmp_path: Path) -> None:
    proc = make(["sh", "-c", "exit 3"], job_id="j-state", attempt=2)
    assert attempt_state(tmp_path, "j-state", 2) == (False, None)
    proc.start()
    outcome = proc.wait(10)
    assert outcome is not None
    running, ended = attempt_state(tmp_path, "j-state", 2)
    assert not running and ended is not None and ended.exit_code == 3
    assert attempt_state(tmp_path, "j-state", 1) == (False, None)
