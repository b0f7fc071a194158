from __future__ import annotations

import time

import pytest

from picluster_agent.errors import InvalidName
from picluster_agent.jobs.ids import is_ulid, job_id_time, new_job_id, validate_job_id


def test_new_job_id_is_a_valid_ulid_and_job_id() -> None:
    job_id = new_job_id()
    assert len(job_id) == 26
    assert is_ulid(job_id)
    assert validate_job_id(job_id) == job_id


def test_new_job_ids_are_unique_and_time_sortable() -> None:
    ids = [new_job_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    times = [job_id_time(i) for i in ids]
    assert times == sorted(times)  # type: ignore[type-var]


def test_job_id_time_is_the_creation_time() -> None:
    before = time.time()
    t = job_id_time(new_job_id())
    after = time.time()
    assert t is not None
    assert before - 0.002 <= t <= after + 0.002  # ULIDs carry milliseconds


@pytest.mark.parametrize(
    ("job_id", "expected"),
    [
        ("01ARZ3NDEKTSV4RRFFQ69G5FAV", 1469922850.259),  # 01ARZ3NDEK = 1469922850259 ms
        ("00000000000000000000000000", 0.0),
        ("nightly-backup", None),
        ("01arz3ndektsv4rrffq69g5fav", None),  # not canonical: a user-chosen id
        ("01ARZ3NDEKTSV4RRFFQ69G5FA", None),  # 25 characters
        ("81ARZ3NDEKTSV4RRFFQ69G5FAV", None),  # would overflow 128 bits
        ("01ARZ3NDEKTSV4RRFFQ69G5FAU", None),  # U is not Crockford base32
    ],
)
def test_job_id_time(job_id: str, expected: float | None) -> None:
    assert job_id_time(job_id) == expected


@pytest.mark.parametrize("bad", ["", "../etc", "a/b", "-x", "x" * 129])
def test_validate_job_id_is_reexported(bad: str) -> None:
    with pytest.raises(InvalidName):
        validate_job_id(bad)
