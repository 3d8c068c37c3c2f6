"""Advisory locks keyed by content hash: storage GC against a dedup hit on the same blob.

A dedup hit decides "the blob exists → refresh its modification time → rely on it"; GC
decides "no artifact row references it → it is still older than the cutoff → delete". Run
interleaved, GC can delete a blob just after an ingest found it (its artifact row then points
at nothing). So both decisions run under one PostgreSQL advisory lock per content hash:

* GC takes it exclusively (`try_lock_for_delete`, in a short transaction around its re-check
  and delete) and skips a blob whose lock is taken: an ingest is re-using it right now.
* The daemon's ingest takes the shared form (`DedupLocks`, the `storage.DedupGuard` it gives
  `open_storage`) around a dedup hit's re-check and refresh: shared, so concurrent dedups of
  one blob do not wait for each other. It waits while GC holds the lock and then finds the
  blob either deleted (and writes it anew) or kept.

Both are transaction-level locks in short transactions, released at commit or rollback and
when a connection dies, never held across network I/O other than GC's stat and delete and
the ingest's one refresh (a local ``utime`` or one S3 self-copy). A first write takes no lock:
a new blob is younger than any GC cutoff (`poller.gc.MIN_GRACE`).

Keys use the two-int form, (`BLOB_LOCK_CLASS`, first 32 bits of the hash), apart from other
advisory-lock users (the migration lock uses the one-bigint form). Two hashes sharing 32 bits
only serialise each other, which is harmless.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

__all__ = ["BLOB_LOCK_CLASS", "DedupLocks", "blob_lock_key", "try_lock_for_delete"]

BLOB_LOCK_CLASS = 0x626C_6F62  # "blob": the first key of every content-hash lock

_TRY_EXCLUSIVE = "SELECT pg_try_advisory_xact_lock(%s::int4, %s::int4)"
_SHARED = "SELECT pg_advisory_xact_lock_shared(%s::int4, %s::int4)"


def blob_lock_key(content_hash: str) -> tuple[int, int]:
    """(`BLOB_LOCK_CLASS`, the hash's first 32 bits as a signed int4)."""
    return BLOB_LOCK_CLASS, int.from_bytes(bytes.fromhex(content_hash[:8]), "big", signed=True)


async def try_lock_for_delete(conn: AsyncConnection[Any], content_hash: str) -> bool:
    """GC, inside a transaction: the exclusive lock, or False at once if anyone holds it."""
    cur = await conn.execute(_TRY_EXCLUSIVE, blob_lock_key(content_hash))
    row = await cur.fetchone()
    return bool(row and row[0])


class DedupLocks:
    """The daemon's `storage.DedupGuard`: the shared lock, in a pooled short transaction.

    A database error while taking it propagates like any database error inside a step (the
    daemon retries the step soon, without spending the job's error budget). The pool's
    statement timeout bounds the wait for a GC holding the lock.

    A guard holds its pooled connection for the refresh, an S3 self-copy that may take
    seconds for a large object, so at most ``max_holders`` guards hold one at a time (the
    runner gives half the pool): a burst of dedup hits queues here instead of taking every
    connection from the claims, write-backs and lease heartbeats.
    """

    def __init__(self, pool: AsyncConnectionPool, *, max_holders: int = 1) -> None:
        self._pool = pool
        self._holders = anyio.CapacityLimiter(max_holders)

    @asynccontextmanager
    async def __call__(self, content_hash: str) -> AsyncIterator[None]:
        async with (
            self._holders,
            self._pool.connection() as conn,
            conn.transaction(),
        ):
            await conn.execute(_SHARED, blob_lock_key(content_hash))
            yield
