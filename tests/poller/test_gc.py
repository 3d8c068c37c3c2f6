"""Storage GC against a real database and a real local store (and, for the races with a
dedup hit, moto's S3 server too): what it must never delete."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest
from moto.s3.models import s3_backends
from psycopg_pool import AsyncConnectionPool

from poller.admin import AdminError
from poller.blob_locks import BLOB_LOCK_CLASS, DedupLocks, try_lock_for_delete
from poller.gc import MIN_GRACE, check_grace, collect_garbage
from storage import (
    BlobInfo,
    BlobStore,
    DedupGuard,
    Ingestor,
    StorageConfig,
    StoredBlob,
    open_storage,
)
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


# -- GC against a concurrent dedup hit: the blob's advisory lock (poller.blob_locks) --------------

DATA = b"bytes an old job stored and a new job produces again"


class Observed:
    """The daemon's dedup guard, reporting when an ingest reaches it and (``pause``) holding
    the ingest inside it: the shared lock taken, the blob not yet re-checked or refreshed."""

    def __init__(self, inner: DedupGuard, *, pause: bool = False) -> None:
        self._inner = inner
        self.entering = anyio.Event()
        self.inside = anyio.Event()
        self.resume = anyio.Event()
        if not pause:
            self.resume.set()

    @asynccontextmanager
    async def __call__(self, content_hash: str) -> AsyncIterator[None]:
        self.entering.set()
        async with self._inner(content_hash):
            self.inside.set()
            await self.resume.wait()
            yield


@dataclass(frozen=True, slots=True)
class Store:
    """One backend for the lock tests: how to open it and how to age a blob in it."""

    config: StorageConfig
    make_old: Callable[[StoredBlob], None]


def _backdate_s3(bucket: str, object_key: str, by: timedelta) -> None:
    """Moto runs in this process: move an object's LastModified back (S3 cannot be told)."""
    partition, account = s3_backends.bucket_accounts[bucket]
    fake = s3_backends[account][partition].buckets[bucket].keys[object_key]
    fake.last_modified = fake.last_modified - by


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "local":
        config = StorageConfig(storage_url=f"file://{tmp_path / 'store'}")
        return Store(config, lambda blob: age(blob, GRACE * 2))
    endpoint: str = request.getfixturevalue("s3_endpoint")
    name: str = request.getfixturevalue("bucket")
    config = StorageConfig(
        storage_url=f"s3://{name}/gc", s3_endpoint_url=endpoint, tmp_dir=tmp_path / "tmp"
    )
    return Store(config, lambda blob: _backdate_s3(name, f"gc/{blob.key}", GRACE * 2))


async def first_of(*events: anyio.Event) -> None:
    async with anyio.create_task_group() as group:
        for event in events:

            async def wait(event: anyio.Event = event) -> None:
                await event.wait()
                group.cancel_scope.cancel()

            group.start_soon(wait)


async def until_queued_behind(conn: psycopg.AsyncConnection[Any]) -> None:
    """Until an ingest waits for a blob lock in this database (PostgreSQL says so).

    Polled: nothing announces a lock wait; the order of the steps does not depend on it."""
    query = """SELECT count(*) FROM pg_locks
                WHERE locktype = 'advisory' AND NOT granted AND classid = %s
                  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"""
    with anyio.fail_after(10):
        while True:
            cur = await conn.execute(query, (BLOB_LOCK_CLASS,))
            row = await cur.fetchone()
            if row is not None and row[0] > 0:
                return
            await anyio.sleep(0.01)


async def modified_at(ingestor: Ingestor, blob: StoredBlob) -> datetime:
    info = await ingestor.store.stat(blob.key)
    assert info is not None, f"{blob.key} is gone"
    return info.modified_at


async def test_a_dedup_hit_waits_for_gc_and_stores_the_deleted_blob_again(
    db_url: str, pool: AsyncConnectionPool, backend: Store
) -> None:
    """GC holds the blob's lock (re-checked, about to delete) when an ingest finds the blob:
    the ingest waits, and once GC has deleted and committed it writes the blob anew."""
    guard = Observed(DedupLocks(pool))
    async with open_storage(backend.config, dedup_guard=guard) as ingestor:
        old = await ingestor.ingest_bytes(DATA, expected_kind=None)
        backend.make_old(old)
        ingested = anyio.Event()
        results: list[StoredBlob] = []

        async def dedup() -> None:
            results.append(await ingestor.ingest_bytes(DATA, expected_kind=None))
            ingested.set()

        # GC's transaction, from its re-check to its delete; it commits before the task
        # group waits for the ingest.
        connecting = psycopg.AsyncConnection.connect(db_url, autocommit=True)
        async with (
            await connecting as gc_conn,
            anyio.create_task_group() as group,
            gc_conn.transaction(),
        ):
            assert await try_lock_for_delete(gc_conn, old.content_hash)
            group.start_soon(dedup)
            await first_of(guard.entering, ingested)
            assert not ingested.is_set(), "the dedup hit did not wait for GC"
            await until_queued_behind(gc_conn)
            await ingestor.store.delete(old.key)
            assert not ingested.is_set()
        (again,) = results
        assert again.created, "relied on the blob GC deleted"
        assert again.uri == old.uri
        assert await ingestor.store.exists(again.key)
        assert await modified_at(ingestor, again) > datetime.now(UTC) - GRACE


async def test_gc_skips_a_blob_a_dedup_hit_is_re_using(
    db_url: str, pool: AsyncConnectionPool, backend: Store
) -> None:
    """An ingest holds the blob's shared lock and has not refreshed it yet when GC re-checks
    it: GC leaves it alone (counted as re-used), and the ingest refreshes and relies on it."""
    guard = Observed(DedupLocks(pool), pause=True)
    async with open_storage(backend.config, dedup_guard=guard) as ingestor:
        old = await ingestor.ingest_bytes(DATA, expected_kind=None)
        backend.make_old(old)
        store = Interposed(ingestor.store)
        results: list[StoredBlob] = []

        async def dedup() -> None:
            results.append(await ingestor.ingest_bytes(DATA, expected_kind=None))

        with anyio.fail_after(10):
            async with anyio.create_task_group() as group:
                group.start_soon(dedup)
                await guard.inside.wait()
                report = await gc(db_url, store)
                guard.resume.set()
        assert store.deleted == []
        assert (report["unreferenced"], report["reused"], report["deleted"]) == (1, 1, 0)
        (again,) = results
        assert not again.created
        assert await modified_at(ingestor, again) > datetime.now(UTC) - GRACE


async def test_gc_deletes_an_old_unreferenced_blob_once_its_dedup_is_over(
    db_url: str, pool: AsyncConnectionPool, backend: Store
) -> None:
    """The locks end with their transactions: a blob re-used through the guard and never
    referenced is still garbage once old, and nobody waits for anybody."""
    async with open_storage(backend.config, dedup_guard=DedupLocks(pool)) as ingestor:
        first = await ingestor.ingest_bytes(DATA, expected_kind=None)
        backend.make_old(first)
        again = await ingestor.ingest_bytes(DATA, expected_kind=None)
        assert not again.created
        backend.make_old(again)
        store = Interposed(ingestor.store)
        report = await gc(db_url, store)
        assert store.deleted == [first.key]
        assert (report["unreferenced"], report["reused"], report["deleted"]) == (1, 0, 1)
        assert not await ingestor.store.exists(first.key)


async def test_dedup_guards_hold_at_most_their_share_of_the_pool(pool: AsyncConnectionPool) -> None:
    """A guard keeps its connection through the refresh (an S3 self-copy may take seconds):
    a burst of them must queue, not take every connection from claims and heartbeats."""
    locks = DedupLocks(pool, max_holders=2)
    inside = 0
    most = 0
    release, two_inside = anyio.Event(), anyio.Event()

    async def hold(content_hash: str) -> None:
        nonlocal inside, most
        async with locks(content_hash):
            inside += 1
            most = max(most, inside)
            if inside == 2:
                two_inside.set()
            await release.wait()
            inside -= 1

    async with anyio.create_task_group() as tg:
        for n in range(5):
            tg.start_soon(hold, f"{n:064x}")
        with anyio.fail_after(10):
            await two_inside.wait()
        await anyio.sleep(0.2)  # time for a third guard to get in, if it could
        assert inside == 2
        with anyio.fail_after(2):  # the rest of the pool is free for everyone else
            async with pool.connection() as conn:
                await conn.execute("SELECT 1")
        release.set()
    assert most == 2 and inside == 0
