"""Reading an attempt's output on the node that ran it, whole or as it grows.

The supervisor writes each attempt's stdout and stderr to
`<data_dir>/jobs/<job-id>/<attempt>.stdout|.stderr` (jobshim: "Files of an attempt"), keeps
them under the output cap by punching a hole in their middle (jobshim: "The output cap"),
and the janitor removes them with the job's directory past retention. A reader here walks
a file by byte offset, steps over holes (reported as bytes dropped), and, following, waits
for more while the attempt runs in this process (runner.attempt_state).

    reader = OutputReader(path)
    for piece in reader.pieces():          # what is there now
        ...
    piece.offset, piece.dropped, piece.data
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import ConfigError
from ..etcd.keys import validate_job_id

STREAMS = ("stdout", "stderr")
# How often a follower looks for new bytes: the bound on the delay it adds to a line
# (the benchmark's budget is 100 ms at p99, end to end).
FOLLOW_POLL = 0.02
READ_CHUNK = 64 * 1024


def output_path(data_dir: str | os.PathLike[str], job_id: str, attempt: int, stream: str) -> str:
    """Where an attempt's stream lives on its node (runner.JobProcess makes the same names)."""
    validate_job_id(job_id)
    if stream not in STREAMS:
        raise ConfigError(f"stream must be one of {', '.join(STREAMS)}, got {stream!r}")
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
        raise ConfigError(f"attempt must be a whole number >= 1, got {attempt!r}")
    return f"{os.path.abspath(data_dir)}/jobs/{job_id}/{attempt}.{stream}"


@dataclass(frozen=True)
class Piece:
    """Bytes of the output starting at `offset`; `dropped` bytes before them were dropped
    by the output cap (a hole), or -1 when the file was cut back (see jobshim)."""

    offset: int
    data: bytes
    dropped: int = 0


class OutputReader:
    """One reader of one output file, from a byte offset on. Not thread-safe."""

    def __init__(self, path: str, offset: int = 0) -> None:
        self.path = path
        self.offset = max(0, offset)
        self._fd: int | None = None

    def open(self) -> bool:
        """Open the file; False while it does not exist (the attempt has not started)."""
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except FileNotFoundError:
                return False
        return True

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> OutputReader:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def read(self, limit: int = READ_CHUNK) -> Piece | None:
        """The next piece (at most `limit` bytes), or None when there is nothing new."""
        if not self.open():
            return None
        assert self._fd is not None
        size = os.fstat(self._fd).st_size
        if size < self.offset:  # cut back (a file system without holes): go on from its end
            self.offset = size
            return Piece(size, b"", dropped=-1)
        if size == self.offset:
            return None
        try:
            start = os.lseek(self._fd, self.offset, os.SEEK_DATA)
        except OSError as e:
            if e.errno != errno.ENXIO:
                raise
            start = size  # a hole up to the end (being punched): nothing to read yet
        if start >= size:
            return None
        end = os.lseek(self._fd, start, os.SEEK_HOLE)
        data = os.pread(self._fd, min(limit, end - start), start)
        if not data:
            return None
        dropped = start - self.offset
        self.offset = start + len(data)
        return Piece(start, data, dropped)

    def pieces(self, limit: int = READ_CHUNK) -> Iterator[Piece]:
        """Every piece there is now."""
        while (piece := self.read(limit)) is not None:
            yield piece


def dropped_note(piece: Piece) -> bytes:
    """The line put in place of dropped bytes in plain-text output."""
    if piece.dropped < 0:
        return b"\n[picluster: output cut here: over the node's output cap]\n"
    note = f"\n[picluster: {piece.dropped} bytes dropped here: over the node's output cap]\n"
    return note.encode()
