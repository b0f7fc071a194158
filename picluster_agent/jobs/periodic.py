"""Periodic jobs: an entry under `<prefix>/cron/<name>` and the slots it makes jobs for.

A cron expression (croniter's: five fields, or six with seconds last, or `@daily` and the
like) in a time zone gives slots; the master makes one job per due slot with the id
`<name>-<slot as YYYYMMDDTHHMMSSZ>`, so that the job of a slot can exist only once, whoever
makes it (a failover at a slot boundary makes exactly one). Slots missed by more than
GRACE seconds (the cluster was down) are skipped, or the latest of them is run once with
`catch_up`. This module is pure: what is due, and the entry's stored form.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..errors import ConfigError, InvalidName
from ..etcd.keys import validate_job_id
from .spec import SpecError, parse_spec

if TYPE_CHECKING:
    from croniter import croniter

GRACE = 60.0  # seconds: a slot later than this is missed (a failover takes far less)
MAX_NAME_CHARS = 100  # leaves room for "-YYYYMMDDTHHMMSSZ" in a job id (128)
MAX_RECENT = 120  # slots made in one go at most (a burst after a failover)


@dataclass(frozen=True)
class CronEntry:
    name: str
    expr: str
    spec: dict[str, Any]  # the jobs' spec (stored form), without submitted_at
    tz: str = "UTC"
    catch_up: bool = False
    paused: bool = False
    created_at: float = 0.0
    last: float | None = None  # the latest slot handled (a job made, or skipped)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: bytes | str) -> CronEntry:
        try:
            data = json.loads(raw)
            entry = cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
            check(entry)
        except (ValueError, TypeError, ConfigError) as e:  # SpecError is a ConfigError
            raise ValueError(f"not a cron entry: {e}") from None
        return entry

    def with_(self, **changes: Any) -> CronEntry:
        return replace(self, **changes)


def _croniter() -> type[croniter]:
    # Imported on first use: croniter brings dateutil and ctypes (~2 MB resident), which an
    # agent without periodic jobs never needs (docs/BENCHMARKS.md, idle agent).
    from croniter import croniter

    return croniter


def check_name(name: str) -> str:
    try:
        validate_job_id(name)
    except InvalidName as e:
        raise SpecError(str(e), field="name") from None
    if len(name) > MAX_NAME_CHARS:
        raise SpecError(f"at most {MAX_NAME_CHARS} characters", field="name")
    return name


def zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise SpecError(f"unknown time zone {tz!r} (e.g. Europe/Berlin)", field="--tz") from None


def check(entry: CronEntry) -> None:
    check_name(entry.name)
    zone(entry.tz)
    if not isinstance(entry.expr, str) or not _croniter().is_valid(entry.expr):
        raise SpecError(
            f"{entry.expr!r} is not a cron expression (5 fields: minute hour day month "
            "weekday; a 6th for seconds; or @hourly, @daily, ...)",
            field="cron",
        )
    try:  # croniter finds no next slot of a valid expression such as February 30th
        next_slot(entry.with_(paused=False), time.time())
    except ValueError:
        raise SpecError(
            f"{entry.expr!r} never comes: it has no slot in the years ahead", field="cron"
        ) from None
    parse_spec(entry.spec, check_name(entry.name))


def slot_id(name: str, slot: float) -> str:
    return f"{name}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(slot))}"


@dataclass(frozen=True)
class Due:
    make: list[float]  # slots to make a job for, oldest first
    handled: float | None  # the entry's new `last` (None: nothing to do)


def next_slot(entry: CronEntry, now: float) -> float | None:
    """The entry's first slot after `now` (None while it is paused)."""
    if entry.paused:
        return None
    return float(
        _croniter()(entry.expr, datetime.fromtimestamp(now, zone(entry.tz))).get_next(float)
    )


def due(entry: CronEntry, now: float) -> Due:
    """What to do for `entry` at `now`: the recent slots since `last`, each made once; the
    older ones skipped, or the latest of them made once with `catch_up`."""
    if entry.paused:
        return Due([], None)
    since = max(entry.last or 0.0, entry.created_at)
    tz = zone(entry.tz)
    recent_from = max(since, now - GRACE)
    it = _croniter()(entry.expr, datetime.fromtimestamp(recent_from, tz))
    make: list[float] = []
    while len(make) < MAX_RECENT:
        slot = it.get_next(float)
        if slot > now:
            break
        make.append(slot)
    if since < now - GRACE:
        older = _slot_before(entry.expr, datetime.fromtimestamp(now - GRACE, tz))
        if older is not None and older > since:
            if entry.catch_up:
                make.insert(0, older)
            handled = older
            return Due(make, make[-1] if make else handled)
    return Due(make, make[-1] if make else None)


def _slot_before(expr: str, when: datetime) -> float | None:
    """The latest slot before `when`; None when there is none (croniter raises: a year
    field's first year, e.g. `0 0 1 1 * 0 2030`, leaves no slot before it)."""
    try:
        return float(_croniter()(expr, when).get_prev(float))
    except ValueError:  # CroniterBadDateError
        return None
