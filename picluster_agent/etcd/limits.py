"""etcd's limits on one request, and the one chunker that packs work under them.

etcd refuses a txn with more than 128 compares or more than 128 operations (`--max-txn-ops`,
the two counted apart) and a request over 1.5 MiB (`--max-request-bytes`), by default.
Every batch picluster writes or reads is sized here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Protocol, TypeVar

MAX_TXN_OPS = 128  # compares, and operations, each
MAX_REQUEST_BYTES = 1536 * 1024  # etcd's --max-request-bytes, which roles/etcd keeps
MAX_TXN_BYTES = 1024 * 1024  # what we send in one txn: a margin under the 1.5 MiB limit
# A job's record is its spec plus at most this much: state, times, a bounded reason and a
# history of at most 20 entries.
RECORD_OVERHEAD_BYTES = 16 * 1024
# The assignment txn writes the job's record twice (jobs/<id> and assign/<node>/<id>), so a
# spec must leave room for two records in one request; a larger one could be accepted but
# never assigned. Checked at submission by the CLI and the API, and by the master for a
# spec put with etcdctl (rejected, with this limit in the reason). docs/OPERATIONS.md
MAX_SPEC_BYTES = 512 * 1024
assert 2 * (MAX_SPEC_BYTES + RECORD_OVERHEAD_BYTES) < MAX_REQUEST_BYTES
# Batches of a fixed shape fill this many of the 128 (a margin for the odd extra compare):
# reads (one operation each), retention (three deletes per job). Batches of varied items
# (assignments, reports, submissions) go through `txn_chunks`.
TXN_OPS_BUDGET = 120
READS_PER_TXN = TXN_OPS_BUDGET
EXPIRES_PER_TXN = TXN_OPS_BUDGET // 3

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
