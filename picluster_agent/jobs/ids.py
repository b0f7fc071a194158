"""Job ids: ULIDs chosen by the client, so that a retried submission carries the same id.

A ULID is 26 characters of Crockford base32: 48 bits of milliseconds since the epoch, then
80 random bits. Sorting ULIDs as strings sorts them by creation time, which is what
`picluster jobs` and FIFO-within-priority scheduling rely on. Users may also choose their own
ids (`submit --id`); those are validated by `keys.validate_job_id` and carry no time.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ..etcd.keys import validate_job_id

# Canonical (upper-case) ULID text. The first character is at most 7: 26 base32 digits hold
# 130 bits, and a ULID has 128.
_ULID_TEXT = re.compile(r"[0-7][0-9A-HJKMNP-TV-Z]{25}")

if TYPE_CHECKING:
    from ulid import ULID


def _ulid() -> type[ULID]:
    # Imported on first use: python-ulid reads its own version through importlib.metadata
    # (~1 MB resident), and an idle agent makes no ids.
    from ulid import ULID

    return ULID


def new_job_id() -> str:
    """A fresh, time-sortable job id (a ULID, 26 characters)."""
    return str(_ulid()())


def is_ulid(job_id: str) -> bool:
    """Whether `job_id` is a canonical ULID (as made by `new_job_id`)."""
    return isinstance(job_id, str) and _ULID_TEXT.fullmatch(job_id) is not None


def job_id_time(job_id: str) -> float | None:
    """The creation time (unix seconds) encoded in a ULID job id; None for user-chosen ids."""
    if not is_ulid(job_id):
        return None
    return _ulid().from_str(job_id).timestamp


__all__ = ["is_ulid", "job_id_time", "new_job_id", "validate_job_id"]
