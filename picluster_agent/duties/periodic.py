"""The master's periodic jobs: one job per due slot of each entry under `cron/`.

Every half second the master reads the entries (few, small) and, for each due slot, commits
one fenced txn: the job's submission `queue/<name>-<slot>` and the entry's `last`, compared
on the entry as read and on the job id being unused in the queue and among the jobs. The id
is the slot's, so a new master that takes over at a slot boundary finds the slot either
made (the entry says so, and the id is taken) or not, and makes it exactly once. A slot
whose job id is taken by someone else is recorded as handled without a job.
"""

from __future__ import annotations

import json
import logging
import time

from .. import defaults
from ..coord.election import Election
from ..errors import NotLeader, PiclusterError, SessionLost
from ..etcd.adapter import KV, cmp_absent, cmp_modified_at, op_put
from ..jobs.periodic import CronEntry, due, slot_id
from ..stopping import StopSignal

log = logging.getLogger(__name__)

INTERVAL = 0.5  # seconds between two looks at the entries


def periodic_duty(election: Election, stop: StopSignal) -> None:
    backoff = defaults.RETRY_BACKOFF_MIN
    while not stop.is_set():
        try:
            for kv in election.client.get_prefix(election.keys.cron_dir)[0]:
                _handle(election, kv, time.time())
            backoff = defaults.RETRY_BACKOFF_MIN
            stop.wait(INTERVAL)
        except (NotLeader, SessionLost):
            raise
        except PiclusterError as e:
            log.warning("periodic jobs: %s; again in %.1fs", e, backoff)
            stop.wait(backoff)
            backoff = min(backoff * 2, defaults.RETRY_BACKOFF_MAX)


def _handle(election: Election, kv: KV, now: float) -> None:
    try:
        entry = CronEntry.from_json(kv.value)
    except ValueError as e:
        log.warning("ignored %r: %s", kv.key, e)
        return
    if kv.key != election.keys.cron(entry.name):
        log.warning("ignored %r: it names entry %r", kv.key, entry.name)
        return
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
