"""Storage garbage collection: blobs that no artifact row references, past a grace period.

The grace period protects blobs written by a job whose completion transaction has not
committed yet (an ingest finishes before its artifact row exists). Dry run by default.

A dedup hit refreshes a blob's modification time, so an old blob about to be referenced again
restarts its grace period. GC takes its decision from a listing and a batched reference query
that are both stale by the time it deletes, so with ``apply`` each candidate is re-checked
right before its delete: still unreferenced in the database, then still older than the cutoff
in the store (in that order: a dedup refreshes before its artifact row commits). The re-check
and the delete run in one short transaction holding the blob's exclusive advisory lock
(`poller.blob_locks`), and the daemon makes its dedup decision (the blob is there, refresh it,
rely on it) under the shared form: a dedup hit therefore lands either before the re-check
(which then sees the fresh modification time) or after the delete (and the ingest, finding
the blob gone, writes it anew). GC does not wait for a lock an ingest holds: that blob is
being re-used right now, and is counted as ``reused`` and kept.

S3 refreshes only blobs older than `DEDUP_REFRESH_AFTER` (the copy costs a request), so a
grace period below `MIN_GRACE` would let GC delete a blob re-used a moment ago: refused.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg

from poller.admin import AdminError
from poller.blob_locks import try_lock_for_delete
from poller.migrate import CONNECT_TIMEOUT_S
from storage import BlobStore
from storage.base import DEDUP_REFRESH_AFTER

__all__ = ["MIN_GRACE", "check_grace", "collect_garbage"]

BATCH = 500
# The refresh interval plus an hour for a job's remaining outputs to download before its
# completion commits the artifact rows of those already ingested.
MIN_GRACE = DEDUP_REFRESH_AFTER + timedelta(hours=1)

Conn = psycopg.AsyncConnection[tuple[str]]


def check_grace(grace: timedelta) -> None:
    """Refuse a grace period too short to protect re-used blobs (a usage error, exit 2)."""
    if grace >= MIN_GRACE:
        return
    floor_h = MIN_GRACE.total_seconds() / 3600
    refresh_h = DEDUP_REFRESH_AFTER.total_seconds() / 3600
    raise AdminError(
        f"--older-than must be at least {floor_h:g}h (got {_duration(grace)}): a dedup hit "
        f"refreshes an S3 blob's modification time only once it is {refresh_h:g}h old, so a "
        "shorter grace period can delete a blob a new artifact is about to reference"
    )


def _duration(grace: timedelta) -> str:
    seconds = grace.total_seconds()
    if seconds >= 3600:
        return f"{seconds / 3600:.2g}h"
    return f"{seconds / 60:.0f}m" if seconds >= 60 else f"{seconds:.0f}s"


async def _referenced(conn: Conn, hashes: list[str]) -> set[str]:
    cur = await conn.execute(
        "SELECT DISTINCT content_hash FROM app.artifacts WHERE content_hash = ANY(%s)", (hashes,)
    )
    return {row[0] for row in await cur.fetchall()}


async def collect_garbage(
    database_url: str, store: BlobStore, *, cutoff: datetime, apply: bool
) -> dict[str, object]:
    """List, decide per batch, re-check each candidate, delete (``apply``) and report."""
    check_grace(datetime.now(UTC) - cutoff)
    counts = dict.fromkeys(("scanned", "kept_recent", "referenced", "reused", "deleted"), 0)
    reclaimable = 0
    unreferenced: list[str] = []
    async with await psycopg.AsyncConnection.connect(
        database_url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
    ) as conn:
        sweep = _Sweep(conn, store, cutoff=cutoff, apply=apply, counts=counts, keys=unreferenced)
        batch: list[tuple[str, str, int]] = []
        async for blob in store.iter_blobs():
            counts["scanned"] += 1
            if blob.modified_at > cutoff:
                counts["kept_recent"] += 1
                continue
            batch.append((blob.key, blob.content_hash, blob.size_bytes))
            if len(batch) >= BATCH:
                reclaimable += await sweep.run(batch)
                batch = []
        if batch:
            reclaimable += await sweep.run(batch)
    return {
        "applied": apply,
        **{name: counts[name] for name in ("scanned", "kept_recent", "referenced")},
        "unreferenced": len(unreferenced),
        "reused": counts["reused"],
        "deleted": counts["deleted"],
        "reclaimable_bytes": reclaimable,
        "keys": unreferenced[:100],
    }


class _Sweep:
    """Decides one batch of listed candidates and, with ``apply``, deletes the garbage."""

    def __init__(
        self,
        conn: Conn,
        store: BlobStore,
        *,
        cutoff: datetime,
        apply: bool,
        counts: dict[str, int],
        keys: list[str],
    ) -> None:
        self._conn, self._store, self._cutoff, self._apply = conn, store, cutoff, apply
        self._counts, self._keys = counts, keys

    async def run(self, batch: list[tuple[str, str, int]]) -> int:
        """Count the batch's referenced blobs; delete (or, dry, list) the rest: their bytes."""
        live = await _referenced(self._conn, [h for _, h, _ in batch])
        size = 0
        for key, content_hash, blob_size in batch:
            if content_hash in live:
                self._counts["referenced"] += 1
                continue
            self._keys.append(key)
            size += blob_size
            if self._apply:
                await self._delete_if_still_garbage(key, content_hash)
        return size

    async def _delete_if_still_garbage(self, key: str, content_hash: str) -> None:
        """Re-check right before deleting: an ingest may have re-used the blob since listing.

        All under the blob's exclusive advisory lock, so no dedup hit can decide to re-use it
        between the re-check and the delete; a lock already held means one is doing so now.
        """
        async with self._conn.transaction():
            if not await try_lock_for_delete(self._conn, content_hash):
                self._counts["reused"] += 1
                return
            if await _referenced(self._conn, [content_hash]):
                self._counts["reused"] += 1
                return
            now = await self._store.stat(key)
            if now is None:
                return
            if now.modified_at > self._cutoff:
                self._counts["reused"] += 1
                return
            await self._store.delete(key)
            self._counts["deleted"] += 1
