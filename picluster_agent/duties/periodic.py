"""The master's periodic jobs: one job per due slot of each entry under `cron/`.

The master reads the entries (few, small), then sleeps until the earliest next slot of any
of them, or until a watch on `cron/` says an entry changed, and reads them again (at least
every RESCAN seconds: a step of the wall clock moves the slots). For each due slot it
commits one fenced txn: the job's submission `queue/<name>-<slot>` and the entry's `last`,
compared on the entry as read and on the job id being unused in the queue and among the
jobs. The id is the slot's, so a new master that takes over at a slot boundary finds the
slot either made (the entry says so, and the id is taken) or not, and makes it exactly once.
A slot whose job id is taken by someone else is recorded as handled without a job.
"""

from __future__ import annotations

import json
import logging
import time

from .. import defaults
from ..coord.election import Election
from ..errors import NotLeader, PiclusterError, SessionLost
from ..etcd.adapter import KV, Watch, cmp_absent, cmp_modified_at, op_put
from ..jobs.periodic import CronEntry, due, next_slot, slot_id
from ..stopping import AnyEvent, Flag, StopSignal

log = logging.getLogger(__name__)

RESCAN = 30.0  # seconds between two looks at the entries at most


def periodic_duty(election: Election, stop: StopSignal) -> None:
    changed = Flag()  # an entry changed, or the watch lost its place in etcd's history
    lost = Flag()  # ... the latter: watch again from a new read
    wake = AnyEvent(stop, changed)
    watch: Watch | None = None
    warned: set[tuple[str, int]] = set()  # entries said to be ignored, as of their revision

    def on_compacted(_e: Exception) -> None:
        lost.set()
        changed.set()

    backoff = defaults.RETRY_BACKOFF_MIN
    try:
        while not stop.is_set():
            try:
                changed.clear()
                if lost.is_set() and watch is not None:
                    watch.stop()
                    watch = None
                    lost.clear()
                kvs, revision = election.client.get_prefix(election.keys.cron_dir)
                if watch is None:
                    watch = election.client.watch(
                        election.keys.cron_dir,
                        lambda _events, _revision: changed.set(),
                        start_revision=revision + 1,
                        name="cron-watch",
                        on_compacted=on_compacted,
                    )
                now = time.time()
                slots = [_handle(election, kv, now, warned) for kv in kvs]
                backoff = defaults.RETRY_BACKOFF_MIN
                soonest = min((s for s in slots if s is not None), default=now + RESCAN)
                wake.wait(max(0.0, min(RESCAN, soonest - time.time())))
            except (NotLeader, SessionLost):
                raise
            except PiclusterError as e:
                log.warning("periodic jobs: %s; again in %.1fs", e, backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, defaults.RETRY_BACKOFF_MAX)
    finally:
        if watch is not None:
            watch.stop()


def _handle(election: Election, kv: KV, now: float, warned: set[tuple[str, int]]) -> float | None:
    """Make the entry's due slots; return the time of its next slot (None: none to come).
    An entry that is not valid (written by hand, or by a newer CLI) is ignored: it must
    not stop the others, nor fail the duty (a new master would meet it again)."""
    try:
        entry = CronEntry.from_json(kv.value)
        if kv.key != election.keys.cron(entry.name):
            raise ValueError(f"it names entry {entry.name!r}")
        # croniter may still fail on an entry it calls valid (no slot where one is looked
        # for): that entry is ignored like the others, the rest go on.
        _make_due(election, kv, entry, now)
        return next_slot(entry, now)
    except ValueError as e:
        if (kv.key, kv.mod_revision) not in warned:  # once, not at each look
            warned.add((kv.key, kv.mod_revision))
            log.warning("ignored %r: %s", kv.key, e)
        return None


def _make_due(election: Election, kv: KV, entry: CronEntry, now: float) -> None:
    todo = due(entry, now)
    if todo.handled is None:
        return
    revision = kv.mod_revision
    keys = election.keys
    for slot in todo.make:
        job_id = slot_id(entry.name, slot)
        entry = entry.with_(last=slot)
        spec = json.dumps({**entry.spec, "submitted_at": slot}, sort_keys=True)
        # The entry as we read it (no other master, no pause or removal in between) and the
        # slot's id unused: the job of a slot is made once, and never over someone's job.
        res = election.fenced_txn(
            [op_put(keys.queue(job_id), spec), op_put(kv.key, entry.to_json())],
            extra_compare=[
                cmp_modified_at(kv.key, revision),
                cmp_absent(keys.queue(job_id)),
                cmp_absent(keys.job(job_id)),
            ],
        )
        if res.succeeded:
            log.info("periodic %s: job %s", entry.name, job_id)
            revision = res.revision
            continue
        if _taken(election, kv.key, revision, entry):
            log.warning("periodic %s: id %s is taken; slot skipped", entry.name, job_id)
        return  # the entry changed (or `_taken` wrote it): the next look goes on from there
    if todo.handled == entry.last:
        return
    skipped = entry.with_(last=todo.handled)
    res = election.fenced_txn(
        [op_put(kv.key, skipped.to_json())], extra_compare=[cmp_modified_at(kv.key, revision)]
    )
    if res.succeeded:
        log.info("periodic %s: missed slots skipped (up to %s)", entry.name, todo.handled)


def _taken(election: Election, key: str, revision: int, entry: CronEntry) -> bool:
    """After a refused slot: if the entry is as read, its job id is someone else's: record
    the slot as handled (True). False: the entry changed."""
    res = election.fenced_txn(
        [op_put(key, entry.to_json())], extra_compare=[cmp_modified_at(key, revision)]
    )
    return bool(res.succeeded)
