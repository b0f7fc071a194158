"""systemd integration: the notify protocol on a real unix datagram socket, the watchdog that
pings only while every loop turns, journald's native protocol and priorities."""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sockets import Listener

from picluster_agent.etcd.localcluster import wait_for
from picluster_agent.liveness import Liveness
from picluster_agent.observe import journal, sdnotify
from picluster_agent.observe.watchdog import Watchdog


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[tuple[Listener, dict[str, str]]]:
    path = str(tmp_path / "notify")
    listener = Listener(path)
    yield listener, {"NOTIFY_SOCKET": path}
    listener.close()


def test_notify_sends_one_datagram_of_lines(systemd: tuple[Listener, dict[str, str]]) -> None:
    listener, env = systemd
    assert sdnotify.notify("READY=1", "STATUS=registered as pi1", environ=env)
    wait_for(lambda: listener.received, 5)
    assert listener.received == [b"READY=1\nSTATUS=registered as pi1"]


def test_notify_reaches_an_abstract_socket() -> None:
    name = f"picluster-test-{os.getpid()}-{time.monotonic_ns()}"
    listener = Listener(b"\0" + name.encode())
    try:
        assert sdnotify.notify("WATCHDOG=1", environ={"NOTIFY_SOCKET": "@" + name})
        wait_for(lambda: listener.count("WATCHDOG=1"), 5)
    finally:
        listener.close()


def test_notify_without_systemd_does_nothing(tmp_path: Path) -> None:
    assert not sdnotify.notify("READY=1", environ={})
    assert not sdnotify.notify("READY=1", environ={"NOTIFY_SOCKET": "relative/path"})
    assert not sdnotify.notify("READY=1", environ={"NOTIFY_SOCKET": str(tmp_path / "gone")})


def test_watchdog_interval_is_for_this_process_only() -> None:
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 30.0
    mine = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    assert sdnotify.watchdog_interval(mine) == 2.0
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}) is None
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "x"}) is None
    assert sdnotify.watchdog_interval({}) is None


def test_a_loop_that_stops_turning_stops_the_pings(
    systemd: tuple[Listener, dict[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    listener, env = systemd
    liveness = Liveness()
    turning = threading.Event()
    turning.set()
    done = threading.Event()

    def loop() -> None:  # beats every 20 ms while `turning`; blocks (stuck) otherwise
        while not done.is_set():
            turning.wait()
            liveness.beat("worker", within=0.3)
            time.sleep(0.02)

    threading.Thread(target=loop, daemon=True).start()
    wait_for(lambda: liveness.loops() == ["worker"], 5)
    dog = Watchdog(liveness, interval=0.2, send=lambda m: sdnotify.notify(m, environ=env)).start()
    try:
        wait_for(lambda: listener.count("WATCHDOG=1") >= 5, 5, what="pings while it turns")
        turning.clear()  # the loop is stuck from here on
        wait_for(lambda: liveness.stuck(), 5, what="the loop seen stuck")
        time.sleep(0.1)  # a ping decided just before may still be on its way
        seen = listener.count("WATCHDOG=1")
        time.sleep(0.5)  # ten ping periods
        assert listener.count("WATCHDOG=1") == seen
        assert "stuck: worker" in caplog.text
        turning.set()  # it turns again: pings again
        wait_for(lambda: listener.count("WATCHDOG=1") > seen, 5, what="pings again")
        done.set()
        liveness.end("worker")  # a loop that ends on purpose does not hold the pings
        time.sleep(0.4)
        assert not liveness.stuck()
        resumed = listener.count("WATCHDOG=1")
        wait_for(lambda: listener.count("WATCHDOG=1") > resumed, 5, what="pings after its end")
    finally:
        done.set()
        turning.set()
        dog.stop()


# ---------------------------------------------------------------- journald


def parse_native(datagram: bytes) -> dict[str, str]:
    """journald's native protocol: NAME=value lines, or NAME\\n<le64 length><value>\\n."""
    fields, at = {}, 0
    while at < len(datagram):
        end = datagram.index(b"\n", at)
        line = datagram[at:end]
        if b"=" in line:
            name, value = line.split(b"=", 1)
            at = end + 1
        else:
            name = line
            (size,) = struct.unpack("<Q", datagram[end + 1 : end + 9])
            value = datagram[end + 9 : end + 9 + size]
            at = end + 9 + size + 1
        fields[name.decode()] = value.decode()
    return fields


@pytest.fixture
def journald(tmp_path: Path) -> Iterator[tuple[Listener, logging.Logger]]:
    path = str(tmp_path / "journal")
    listener = Listener(path)
    logger = logging.getLogger(f"picluster_agent.test_journal_{tmp_path.name}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    handler = journal.JournalHandler("pi3", socket_path=path)
    logger.addHandler(handler)
    yield listener, logger
    logger.removeHandler(handler)
    handler.close()
    listener.close()


def test_journal_lines_carry_priority_and_fields(journald: tuple[Listener, logging.Logger]) -> None:
    listener, log = journald
    log.debug("quiet")
    log.info("job %s attempt %d: %s", "01J0", 2, "failed", extra={"job_id": "01J0"})
    log.warning("keepalive failed")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("worker failed")
    wait_for(lambda: len(listener.received) == 4, 5)
    got = [parse_native(d) for d in listener.received]
    assert [f["PRIORITY"] for f in got] == ["7", "6", "4", "3"]
    assert got[1]["MESSAGE"] == "job 01J0 attempt 2: failed"
    assert got[1]["JOB_ID"] == "01J0" and "JOB_ID" not in got[2]
    assert all(f["NODE"] == "pi3" and f["SYSLOG_IDENTIFIER"] == "picluster" for f in got)
    # A traceback is one multi-line field, not a line per frame; no timestamp of our own.
    assert got[3]["MESSAGE"].startswith("worker failed\nTraceback")
    assert "RuntimeError: boom" in got[3]["MESSAGE"]
    assert got[2]["MESSAGE"] == "keepalive failed"


def test_without_journald_a_line_keeps_its_priority_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    handler = journal.JournalHandler("pi3", socket_path=str(tmp_path / "nobody-listens"))
    record = logging.LogRecord("picluster_agent.x", logging.ERROR, __file__, 1, "bad", (), None)
    handler.emit(record)
    handler.close()
    assert capsys.readouterr().err == "<3>picluster_agent.x: bad\n"


def test_under_journald_only_when_stderr_is_the_journal_stream(tmp_path: Path) -> None:
    with open(tmp_path / "stream", "w") as stream:
        st = os.fstat(stream.fileno())
        assert journal.under_journald(stream, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        assert not journal.under_journald(stream, {"JOURNAL_STREAM": f"{st.st_dev}:1"})
        assert not journal.under_journald(stream, {})
