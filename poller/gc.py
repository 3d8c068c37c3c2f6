"""Storage garbage collection: blobs that no artifact row references, past a grace period.

The grace period protects blobs written by a job whose completion transaction has not
committed yet (an ingest finishes before its artifact row exists). Dry run by default.
"""

from __future__ import annotations

from datetime import datetime

import psycopg

from poller.migrate import CONNECT_TIMEOUT_S
from storage import BlobStore

BATCH = 500


async def _referenced(conn: psycopg.AsyncConnection[tuple[str]], hashes: list[str]) -> set[str]:
    cur = await conn.execute(
        "SELECT DISTINCT content_hash FROM app.artifacts WHERE content_hash = ANY(%s)", (hashes,)
    )
    return {row[0] for row in await cur.fetchall()}


async def collect_garbage(
    database_url: str, store: BlobStore, *, cutoff: datetime, apply: bool
) -> dict[str, object]:
    scanned = kept_recent = referenced = reclaimable = 0
    unreferenced: list[str] = []
    async with await psycopg.AsyncConnection.connect(
        database_url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
    ) as conn:
        batch: list[tuple[str, str, int]] = []
        async for blob in store.iter_blobs():
            scanned += 1
            if blob.modified_at > cutoff:
                kept_recent += 1
                continue
            batch.append((blob.key, blob.content_hash, blob.size_bytes))
            if len(batch) >= BATCH:
                live, size = await _sweep(conn, store, batch, unreferenced, apply)
                referenced, reclaimable, batch = referenced + live, reclaimable + size, []
        if batch:
            live, size = await _sweep(conn, store, batch, unreferenced, apply)
            referenced, reclaimable = referenced + live, reclaimable + size
    return {
        "applied": apply,
        "scanned": scanned,
        "kept_recent": kept_recent,
        "referenced": referenced,
        "unreferenced": len(unreferenced),
        "deleted": len(unreferenced) if apply else 0,
        "reclaimable_bytes": reclaimable,
        "keys": unreferenced[:100],
    }


async def _sweep(
    conn: psycopg.AsyncConnection[tuple[str]],
    store: BlobStore,
    batch: list[tuple[str, str, int]],
    unreferenced: list[str],
    apply: bool,
) -> tuple[int, int]:
    """Delete (or, dry, list) the unreferenced blobs of one batch: (referenced, bytes)."""
    live = await _referenced(conn, [h for _, h, _ in batch])
    size = 0
    for key, content_hash, blob_size in batch:
        if content_hash in live:
            continue
        unreferenced.append(key)
        size += blob_size
        if apply:
            await store.delete(key)
    return len(batch) - sum(1 for _, h, _ in batch if h not in live), size
