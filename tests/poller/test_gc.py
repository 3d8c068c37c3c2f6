"""Storage GC against a real database and a real local store: what it must never delete."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

from poller.admin import AdminError
from poller.gc import MIN_GRACE, check_grace, collect_garbage
from storage import BlobInfo, BlobStore, Ingestor, StorageConfig, StoredBlob, open_storage
from tests.poller.helpers import execute

pytestmark = pytest.mark.anyio

GRACE = timedelta(hours=3)


class Interposed:
    """The real store, with a hook run after the listing or before one key's delete."""

    def __init__(self, inner: BlobStore) -> None:
        self._inner = inner
        self.after_listing: Callable[[], Awaitable[None]] | None = None
        self.before_delete: dict[str, Callable[[], Awaitable[None]]] = {}
        self.deleted: list[str] = []

    async def iter_blobs(self) -> AsyncIterator[BlobInfo]:
        async for info in self._inner.iter_blobs():
            yield info
        if self.after_listing is not None:
            await self.after_listing()

    async def stat(self, key: str) -> BlobInfo | None:
        return await self._inner.stat(key)

    async def delete(self, key: str) -> None:
        hook = self.before_delete.pop(key, None)
        if hook is not None:
            await hook()
        self.deleted.append(key)
        await self._inner.delete(key)


def age(blob: StoredBlob, by: timedelta) -> None:
    then = time.time() - by.total_seconds()
    os.utime(blob.uri, (then, then))


def reference(db_url: str, blob: StoredBlob) -> None:
    """What a completing job commits: an artifact row with the blob's hash."""
    execute(
        db_url,
        """INSERT INTO app.artifacts (tenant_id, run_id, skill_id, type, uri, content_hash,
                                      size_bytes)
           VALUES ('t', gen_random_uuid(), 's', %s, %s, %s, %s)""",
        (blob.media_type, blob.uri, blob.content_hash, blob.size_bytes),
    )


async def gc(db_url: str, store: Interposed, *, apply: bool = True) -> dict[str, object]:
    cutoff = datetime.now(UTC) - GRACE
    return await collect_garbage(db_url, store, cutoff=cutoff, apply=apply)  # type: ignore[arg-type]


@pytest.fixture
async def ingestor(tmp_path: Path) -> AsyncIterator[Ingestor]:
    async with open_storage(StorageConfig(storage_url=f"file://{tmp_path / 'store'}")) as opened:
        yield opened


async def test_a_blob_re_used_after_the_listing_is_not_deleted(
    db_url: str, ingestor: Ingestor
) -> None:
    """A dedup hit between GC's listing and its delete refreshes the blob: GC re-stats it."""
    reused = await ingestor.ingest_bytes(b"re-used bytes", expected_kind=None)
    orphan = await ingestor.ingest_bytes(b"orphan bytes", expected_kind=None)
    for blob in (reused, orphan):
        age(blob, GRACE * 2)
    store = Interposed(ingestor.store)

    async def concurrent_dedup() -> None:
        again = await ingestor.ingest_bytes(b"re-used bytes", expected_kind=None)
        assert not again.created  # its artifact row is not committed yet

    store.after_listing = concurrent_dedup
    report = await gc(db_url, store)

    assert store.deleted == [orphan.key]
    assert (report["unreferenced"], report["reused"], report["deleted"]) == (2, 1, 1)
    assert await anyio.Path(reused.uri).read_bytes() == b"re-used bytes"


async def test_a_blob_referenced_after_the_batch_query_is_not_deleted(
    db_url: str, ingestor: Ingestor
) -> None:
    """An artifact row committed while GC works through its batch: GC re-queries each hash."""
    first = await ingestor.ingest_bytes(b"first orphan", expected_kind=None)
    second = await ingestor.ingest_bytes(b"second orphan", expected_kind=None)
    for blob in (first, second):
        age(blob, GRACE * 2)
    store = Interposed(ingestor.store)
    blobs = {first.key: first, second.key: second}

    def commit_the_other(key: str) -> Callable[[], Awaitable[None]]:
        async def hook() -> None:
            store.before_delete.clear()
            reference(db_url, next(b for k, b in blobs.items() if k != key))

        return hook

    store.before_delete = {key: commit_the_other(key) for key in blobs}
    report = await gc(db_url, store)

    assert len(store.deleted) == 1 and report["reused"] == 1
    (survivor,) = (b for k, b in blobs.items() if k not in store.deleted)
    assert await anyio.Path(survivor.uri).is_file()


async def test_the_dry_run_deletes_nothing_and_counts_candidates(
    db_url: str, ingestor: Ingestor
) -> None:
    kept = await ingestor.ingest_bytes(b"kept", expected_kind=None)
    orphan = await ingestor.ingest_bytes(b"orphan", expected_kind=None)
    fresh = await ingestor.ingest_bytes(b"fresh", expected_kind=None)
    for blob in (kept, orphan):
        age(blob, GRACE * 2)
    reference(db_url, kept)
    store = Interposed(ingestor.store)
    report = await gc(db_url, store, apply=False)
    assert store.deleted == []
    assert report["keys"] == [orphan.key]
    assert (report["kept_recent"], report["referenced"], report["deleted"]) == (1, 1, 0)
    assert await anyio.Path(fresh.uri).is_file()


@pytest.mark.parametrize("grace", [timedelta(0), timedelta(minutes=30), timedelta(hours=1)])
async def test_a_grace_period_below_the_floor_is_refused(
    ingestor: Ingestor, grace: timedelta
) -> None:
    """S3 refreshes a re-used blob only once it is an hour old: a shorter grace defeats it."""
    orphan = await ingestor.ingest_bytes(b"orphan", expected_kind=None)
    age(orphan, timedelta(days=7))
    with pytest.raises(AdminError, match=r"--older-than must be at least 2h \(got "):
        await collect_garbage(
            "postgresql://unused@127.0.0.1:1/none",
            ingestor.store,
            cutoff=datetime.now(UTC) - grace,
            apply=True,
        )
    assert await anyio.Path(orphan.uri).is_file()


def test_the_floor_covers_the_refresh_interval() -> None:
    assert MIN_GRACE.total_seconds() == 2 * 3600
    check_grace(MIN_GRACE)
    with pytest.raises(AdminError, match=r"\(got 30s\)"):
        check_grace(timedelta(seconds=30))
