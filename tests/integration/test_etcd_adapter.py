"""Contract tests for picluster_agent.etcd.adapter on real etcd: what the other modules rely on."""

from __future__ import annotations

import threading

import pytest

from picluster_agent.coord.session import Session, SessionState
from picluster_agent.errors import ConfigError, PiclusterError, Unavailable
from picluster_agent.etcd.adapter import (
    EtcdClient,
    Event,
    Watch,
    WatchCallbackFailed,
    WatchCompacted,
    WatchEnded,
    cmp_absent,
    cmp_created_at,
    op_get,
    op_put,
)
from picluster_agent.etcd.limits import MAX_TXN_OPS
from picluster_agent.etcd.localcluster import free_port, wait_for


class Collector:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.revisions: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, events: list[Event], revision: int) -> None:
        with self.lock:
            self.events.extend(events)
            self.revisions.append(revision)

    def key_list(self) -> list[str]:
        with self.lock:
            return [e.kv.key for e in self.events]


def test_revisions_are_ints_and_txn_results_are_bools(etcd1):
    client = etcd1.client()
    rev = client.put("/c/a", "1")
    assert isinstance(rev, int) and rev > 0
    kv = client.get("/c/a")
    assert kv is not None and kv.mod_revision == rev and kv.value == b"1"

    won = client.txn([cmp_absent("/c/b")], [op_put("/c/b", "x")])
    assert won.succeeded is True and isinstance(won.revision, int)
    lost = client.txn([cmp_absent("/c/b")], [op_put("/c/b", "y")], [op_get("/c/b")])
    assert lost.succeeded is False
    assert lost.ranges[0][0].value == b"x"
    assert client.get("/c/b").value == b"x"  # the failed branch changed nothing

    fenced = client.txn([cmp_created_at("/c/b", won.revision)], [op_put("/c/b", "z")])
    assert fenced.succeeded is True
    kvs, at = client.get_prefix("/c/")
    assert [k.key for k in kvs] == ["/c/a", "/c/b"] and at >= fenced.revision


def test_txn_limit_counts_compares_and_operations_apart(etcd1):
    # The worker packs reports by this rule (limits.txn_chunks): 128 compares and 128
    # operations in one txn are fine, one more of either is refused and changes nothing.
    client = etcd1.client()
    limit = MAX_TXN_OPS
    compares = [cmp_absent(f"/limit/c{i}") for i in range(limit)]
    done = client.txn(compares, [op_put(f"/limit/a{i}", "v") for i in range(limit)])
    assert done.succeeded
    for n_compares, n_ops in ((limit + 1, 1), (1, limit + 1)):
        with pytest.raises(PiclusterError, match="too many operations"):
            client.txn(
                [cmp_absent(f"/limit/c{i}") for i in range(n_compares)],
                [op_put(f"/limit/b{i}", "v") for i in range(n_ops)],
            )
    assert client.count_prefix("/limit/b") == 0


def test_utf8_values_round_trip(etcd1):
    client = etcd1.client()
    client.put("/c/ü", "härte ✓")
    assert client.get("/c/ü").value.decode() == "härte ✓"


def test_request_goes_to_the_next_endpoint_when_one_is_dead(etcd1):
    dead = f"http://127.0.0.1:{free_port()}"
    client = EtcdClient([dead, *etcd1.endpoints])
    client.put("/c/x", "1")
    assert client.current_endpoint == etcd1.endpoints[0]


def test_all_endpoints_dead_raises_unavailable():
    client = EtcdClient([f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"])
    with pytest.raises(Unavailable):
        client.get("/x")


def test_missing_tls_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read TLS CA file"):
        EtcdClient(["https://127.0.0.1:2379"], tls=_tls(cacert=str(tmp_path / "no.pem")))


def _tls(**kwargs):
    from picluster_agent.etcd.adapter import TLSFiles

    return TLSFiles(**kwargs)


def test_watch_resumes_after_etcd_restart_without_loss_or_duplicates(etcd1):
    client = etcd1.client()
    start = client.put("/w/0", "0")
    got = Collector()
    watch = client.watch("/w/", got, start_revision=start + 1)
    try:
        client.put("/w/1", "1")
        wait_for(lambda: got.key_list() == ["/w/1"], 5, what="first event")
        etcd1.restart(0)
        client.put("/w/2", "2")
        client.put("/w/3", "3")
        wait_for(lambda: len(got.key_list()) >= 3, 30, what="events after restart")
        assert got.key_list() == ["/w/1", "/w/2", "/w/3"]
        assert watch.reconnects >= 1
    finally:
        watch.stop()


def test_watch_detects_a_silent_stream_and_moves_to_another_member(etcd3):
    client = etcd3.client()
    start = client.put("/w/0", "0")
    got = Collector()
    watch = Watch(client, "/w/", got, start_revision=start + 1, idle_timeout=3.0)
    try:
        wait_for(watch.created.is_set, 5, what="watch created")
        # SIGSTOP: the TCP connection stays open and silent, like a cut cable.
        etcd3.members[0].pause()
        # A generous timeout: if member 0 led raft, the others first elect a new leader.
        writer = EtcdClient(etcd3.endpoints[1:], timeout=15)
        # If member 0 led raft, the others refuse writes until they elect a new leader:
        # the put is idempotent, so it is simply asked again.
        wait_for(lambda: writer.put("/w/1", "1"), 20, what="a write through member 1 or 2")
        wait_for(lambda: "/w/1" in got.key_list(), 20, what="event via another member")
        assert set(got.key_list()) == {"/w/1"}
        revisions = [e.revision for e in got.events]
        assert len(revisions) == len(set(revisions))  # no event delivered twice
        assert watch.reconnects >= 1
    finally:
        etcd3.members[0].resume()
        watch.stop()


def test_watch_stop_returns_promptly_while_blocked_reading(etcd1):
    client = etcd1.client()
    watch = client.watch("/idle/", Collector(), start_revision=1)
    wait_for(watch.created.is_set, 5, what="watch created")
    watch.stop()
    watch.join(2)
    assert not watch.alive


def test_watch_reports_compaction(etcd1):
    client = etcd1.client()
    first = client.put("/k/a", "1")
    last = client.put("/k/a", "2")
    client.compact(last)
    seen: list[WatchCompacted] = []
    watch = Watch(client, "/k/", Collector(), start_revision=first, on_compacted=seen.append)
    wait_for(lambda: seen, 5, what="compaction reported")
    assert seen[0].compact_revision >= last
    watch.join(2)
    assert not watch.alive


def test_a_failing_event_handler_ends_the_watch_for_a_re_read_instead_of_replaying(etcd1):
    # Before: the handler's exception looked like a lost stream, so the watch reconnected,
    # got the same event again and failed again, for ever, never reaching later events.
    client = etcd1.client()
    start = client.put("/cb/0", "0")
    calls: list[list[str]] = []
    ended: list[WatchEnded] = []

    def handler(events: list[Event], revision: int) -> None:
        calls.append([e.kv.key for e in events])
        if any(e.kv.key == "/cb/bad" for e in events):
            raise ValueError("cannot handle this record")

    watch = Watch(client, "/cb/", handler, start_revision=start + 1, on_compacted=ended.append)
    try:
        client.put("/cb/bad", "x")
        wait_for(lambda: ended, 5, what="the watch handing back to its owner")
        watch.join(2)
        assert not watch.alive
        assert isinstance(ended[0], WatchCallbackFailed)
        assert isinstance(ended[0].error, ValueError)
        assert [c for c in calls if "/cb/bad" in c] == [["/cb/bad"]]  # delivered once
        assert watch.reconnects == 0
    finally:
        watch.stop()


def test_session_keeps_lease_alive_and_revokes_on_close(etcd1):
    client = etcd1.client()
    session = Session(client, ttl=2)
    client.put("/s/k", "v", lease=session.lease_id)
    # Two TTLs later the key is still there: keepalive works.
    wait_for(lambda: session.safe_until() > 0 and client.time_to_live(session.lease_id) >= 0, 3)
    deadline_a = session.safe_until()
    wait_for(lambda: session.safe_until() > deadline_a + 1.0, 5, what="renewals")
    assert client.get("/s/k") is not None
    session.close()
    assert client.get("/s/k") is None
    assert session.state is SessionState.LOST


def test_session_is_lost_when_etcd_is_paused_past_its_ttl(etcd1):
    client = etcd1.client()
    session = Session(client, ttl=2)
    states: list[SessionState] = []
    session.add_listener(states.append)
    etcd1.members[0].pause()
    try:
        wait_for(session.done.is_set, 10, what="session lost")
    finally:
        etcd1.members[0].resume()
    assert states[-1] is SessionState.LOST


def test_too_small_ttl_is_refused(etcd1):
    from picluster_agent.errors import PiclusterError

    with pytest.raises(PiclusterError, match="below etcd's minimum"):
        Session(etcd1.client(), ttl=1)


def test_watch_can_ask_for_one_kind_of_event(etcd1):
    client = etcd1.client()
    start = client.put("/f/0", "0")
    puts, deletes = Collector(), Collector()
    w1 = client.watch("/f/", puts, start_revision=start + 1, only="PUT")
    w2 = client.watch("/f/", deletes, start_revision=start + 1, only="DELETE")
    try:
        client.put("/f/1", "1")
        client.delete("/f/1")
        client.put("/f/2", "2")
        wait_for(lambda: len(puts.events) == 2 and len(deletes.events) == 1, 5, what="events")
        assert [e.type for e in puts.events] == ["PUT", "PUT"]
        assert [(e.type, e.kv.key) for e in deletes.events] == [("DELETE", "/f/1")]
    finally:
        w1.stop()
        w2.stop()
