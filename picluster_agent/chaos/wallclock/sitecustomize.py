"""Steps this process's wall clock on demand: a clock-step fault for one node's agent.

Loaded by Python at start-up when this directory is on PYTHONPATH. `time.time()` and
`time.time_ns()` return the real time plus the offset (seconds, a float) written in the file
named by $PICLUSTER_CHAOS_CLOCK_FILE, read again whenever the file changes; the monotonic
clock is left alone, as a real clock step (NTP, an RTC-less Pi booting) leaves it.

Why not libfaketime: with the monotonic clock left unfaked (FAKETIME_DONT_FAKE_MONOTONIC=1),
libfaketime 0.9.10 makes Python's time.sleep fail with EINVAL; faking both clocks steps the
monotonic clock too, which no real node does. A time namespace offsets only the monotonic
and boot clocks. The agent reads the wall clock through `time.time()` only; what this does
not reach (C libraries' own clock reads) is not where the agent decides anything.
"""

from __future__ import annotations

import os
import time

_PATH = os.environ.get("PICLUSTER_CHAOS_CLOCK_FILE")

if _PATH:
    _real_time = time.time
    _real_time_ns = time.time_ns
    _seen: list[object] = [None, 0.0]  # (file's mtime_ns, size), offset

    def _offset() -> float:
        try:
            st = os.stat(_PATH)
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp != _seen[0]:
                with open(_PATH) as f:
                    _seen[1] = float(f.read().strip() or 0)
                _seen[0] = stamp
        except (OSError, ValueError):
            pass  # keep the last offset
        return float(_seen[1])  # type: ignore[arg-type]

    def _time() -> float:
        return _real_time() + _offset()

    def _time_ns() -> int:
        return _real_time_ns() + int(_offset() * 1e9)

    time.time = _time
    time.time_ns = _time_ns
