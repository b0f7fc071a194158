"""etcd's limits on one request, and the one chunker that packs work under them.

etcd refuses a txn with more than 128 compares or more than 128 operations (`--max-txn-ops`,
the two counted apart) and a request over 1.5 MiB (`--max-request-bytes`), by default.
Every batch picluster writes or reads is sized here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Protocol, TypeVar

MAX_TXN_OPS = 128  # compares, and operations, each
MAX_TXN_BYTES = 1024 * 1024  # what we send in one txn: a margin under the 1.5 MiB limit
# Batches of a fixed shape fill this many of the 128 (a margin for the odd extra compare):
# reads (one operation each), retention (two deletes per job), assignments (three
# operations and two compares per job, plus one compare per node).
TXN_OPS_BUDGET = 120
READS_PER_TXN = TXN_OPS_BUDGET
EXPIRES_PER_TXN = TXN_OPS_BUDGET // 2
ASSIGNS_PER_TXN = TXN_OPS_BUDGET // 3

T = TypeVar("T")


class _Message(Protocol):  # a Compare or an Op (protobuf messages)
    def ByteSize(self) -> int: ...


def txn_bytes(compares: Sequence[_Message], ops: Sequence[_Message]) -> int:
    """The size of a txn's compares and operations as sent (plus a little framing)."""
    return sum(c.ByteSize() for c in compares) + sum(op.ByteSize() for op in ops) + 16


def txn_chunks(items: Iterable[T], cost: Callable[[T], tuple[int, int, int]]) -> Iterator[list[T]]:
    """`items` in order, in groups that each fit one txn.

    `cost(item)` is (compares, operations, bytes) of the item's share of a txn. An item
    too big for a txn of its own still goes out alone (etcd then refuses it, loudly)."""
    chunk: list[T] = []
    compares = ops = size = 0
    for item in items:
        c, o, s = cost(item)
        full = compares + c > MAX_TXN_OPS or ops + o > MAX_TXN_OPS or size + s > MAX_TXN_BYTES
        if chunk and full:
            yield chunk
            chunk, compares, ops, size = [], 0, 0, 0
        chunk.append(item)
        compares += c
        ops += o
        size += s
    if chunk:
        yield chunk
