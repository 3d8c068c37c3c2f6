"""The storage contract, run against both backends (local directory and S3 via moto's server)."""

from __future__ import annotations

import os
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

import storage.s3
from storage import Ingestor, key_for, open_storage
from storage.errors import ContentRejected, TooLarge
from tests.storage.helpers import Backend, RecordingGuard, assert_nothing_stored, png, sha256

pytestmark = pytest.mark.anyio


def expected_uri(backend: Backend, key: str) -> str:
    if backend.name == "local":
        root = backend.config.storage_url.removeprefix("file://")
        return f"{root}/{key}"
    return f"{backend.config.storage_url}/{key}"


async def write_file(tmp_path: Path, data: bytes) -> Path:
    path = anyio.Path(tmp_path / f"src-{sha256(data)[:8]}")
    await path.write_bytes(data)
    return Path(path)


async def test_put_file_creates_then_deduplicates(
    backend: Backend, ingestor: Ingestor, tmp_path: Path
) -> None:
    data = b"some immutable bytes"
    key = key_for(sha256(data))
    source = await write_file(tmp_path, data)
    assert not await ingestor.store.exists(key)

    first = await ingestor.store.put_file(
        key, source, media_type="text/plain", content_hash=sha256(data)
    )
    second = await ingestor.store.put_file(
        key, source, media_type="text/plain", content_hash=sha256(data)
    )

    assert first.created and not second.created
    assert first.uri == second.uri == expected_uri(backend, key) == ingestor.store.uri_for(key)
    assert await ingestor.store.exists(key)
    assert backend.read(first.uri) == data
    assert ingestor.store.scheme == ("file" if backend.name == "local" else "s3")


async def test_key_layout_is_sha256_two_hex_shard(ingestor: Ingestor) -> None:
    blob = await ingestor.ingest_bytes(png(), expected_kind="image")
    assert re.fullmatch(r"sha256/[0-9a-f]{2}/[0-9a-f]{64}", blob.key)
    assert blob.key == f"sha256/{blob.content_hash[:2]}/{blob.content_hash}"
    assert blob.uri.endswith(blob.key)


async def test_ingest_bytes_stores_identical_content_once(
    backend: Backend, ingestor: Ingestor
) -> None:
    data = png()
    first = await ingestor.ingest_bytes(data, expected_kind="image", filename="a/../x.png")
    again = await ingestor.ingest_bytes(data, expected_kind="image", filename="other")

    assert first.created and not again.created
    assert first.uri == again.uri
    assert first.content_hash == again.content_hash == sha256(data)
    assert first.size_bytes == len(data)
    assert first.media_type == "image/png"
    assert dict(first.metadata) == {
        "width": 64,
        "height": 48,
        "format": "PNG",
        "mode": "RGB",
        "animated": False,
    }
    assert (first.filename, again.filename) == ("x.png", "other.png")
    assert backend.read(first.uri) == data
    assert [b.key async for b in ingestor.store.iter_blobs()] == [first.key]


async def test_concurrent_identical_writers_store_one_copy(
    backend: Backend, ingestor: Ingestor
) -> None:
    data = png(200, 100, "green")
    results = []

    async def ingest() -> None:
        results.append(await ingestor.ingest_bytes(data, expected_kind="image"))

    async with anyio.create_task_group() as group:
        for _ in range(8):
            group.start_soon(ingest)

    assert sorted(blob.created for blob in results) == [False] * 7 + [True]
    assert len({blob.uri for blob in results}) == 1
    assert [b.content_hash async for b in ingestor.store.iter_blobs()] == [sha256(data)]
    assert backend.read(results[0].uri) == data
    assert [p.name for p in backend.tmp_dir.iterdir()] == []


async def test_iter_blobs_and_delete(backend: Backend, ingestor: Ingestor) -> None:
    before = datetime.now(UTC) - timedelta(seconds=5)
    stored = [await ingestor.ingest_bytes(png(10 + i, 10), expected_kind="image") for i in range(3)]

    listed = {info.key: info async for info in ingestor.store.iter_blobs()}

    assert set(listed) == {blob.key for blob in stored}
    for blob in stored:
        info = listed[blob.key]
        assert (info.uri, info.content_hash, info.size_bytes) == (
            blob.uri,
            blob.content_hash,
            blob.size_bytes,
        )
        assert before <= info.modified_at <= datetime.now(UTC) + timedelta(seconds=5)

    await ingestor.store.delete(stored[0].key)
    await ingestor.store.delete(stored[0].key)  # idempotent

    assert not await ingestor.store.exists(stored[0].key)
    remaining = {info.key async for info in ingestor.store.iter_blobs()}
    assert remaining == {stored[1].key, stored[2].key}


async def test_stat_reports_a_blob_as_listed_and_none_once_deleted(ingestor: Ingestor) -> None:
    """GC re-checks each candidate with stat right before deleting it."""
    blob = await ingestor.ingest_bytes(png(21, 21), expected_kind="image")
    (listed,) = [info async for info in ingestor.store.iter_blobs()]
    assert await ingestor.store.stat(blob.key) == listed
    await ingestor.store.delete(blob.key)
    assert await ingestor.store.stat(blob.key) is None


async def test_keys_that_are_not_content_addresses_are_refused(ingestor: Ingestor) -> None:
    for bad in ("../../etc/passwd", "sha256/ab/" + "c" * 64, "sha256/AB/" + "a" * 64):
        with pytest.raises(ValueError, match="not a storage key"):
            ingestor.store.uri_for(bad)
        with pytest.raises(ValueError, match="not a storage key"):
            await ingestor.store.delete(bad)


async def test_failures_leave_nothing_behind(backend: Backend, ingestor: Ingestor) -> None:
    with pytest.raises(ContentRejected, match="empty"):
        await ingestor.ingest_bytes(b"", expected_kind=None)
    with pytest.raises(ContentRejected, match="empty"):
        await ingestor.ingest_bytes(b"", expected_kind="video")
    with pytest.raises(ContentRejected, match="expected an image"):
        await ingestor.ingest_bytes(b"<!doctype html><p>error</p>", expected_kind="image")
    with pytest.raises(ContentRejected, match="cannot be read"):
        await ingestor.ingest_bytes(png()[:40] + b"garbage" * 10, expected_kind="image")
    await assert_nothing_stored(ingestor, backend.tmp_dir)


async def test_inline_over_the_cap_is_rejected_with_sizes(backend: Backend) -> None:
    limited = replace(backend.config, max_download_bytes=1024 * 1024)
    async with open_storage(limited) as ingestor:
        with pytest.raises(TooLarge) as caught:
            await ingestor.ingest_bytes(b"x" * (12 * 1024 * 1024), expected_kind=None)
        await assert_nothing_stored(ingestor, backend.tmp_dir)
    assert str(caught.value) == (
        "result is 12.0 MiB, over the 1.0 MiB limit (POLLER_MAX_DOWNLOAD_BYTES)"
    )
    assert not caught.value.retryable


async def test_stale_temp_files_are_swept_at_start_up(backend: Backend) -> None:
    backend.tmp_dir.mkdir(parents=True, exist_ok=True)
    stale, fresh, foreign = (backend.tmp_dir / n for n in ("ingest-old", "ingest-new", "keep.me"))
    for path in (stale, fresh, foreign):
        path.write_bytes(b"partial")
    long_ago = datetime.now(UTC).timestamp() - 7 * 3600
    os.utime(stale, (long_ago, long_ago))
    os.utime(foreign, (long_ago, long_ago))

    async with open_storage(backend.config):
        pass

    assert sorted(p.name for p in backend.tmp_dir.iterdir()) == ["ingest-new", "keep.me"]


# -- the dedup guard (the daemon's lock against GC; poller/blob_locks.py) ------------------------


@pytest.fixture
def every_blob_old(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    """S3 refreshes (and so guards) only objects older than REFRESH_AFTER: make that all."""
    if backend.name == "s3":
        monkeypatch.setattr(storage.s3, "REFRESH_AFTER", timedelta(0))


@pytest.mark.usefixtures("every_blob_old")
async def test_a_dedup_hit_re_uses_the_blob_inside_the_guard(backend: Backend) -> None:
    guard = RecordingGuard()
    async with open_storage(backend.config, dedup_guard=guard) as ingestor:
        first = await ingestor.ingest_bytes(b"guarded bytes", expected_kind=None)
        assert guard.entered == []  # a first write takes no lock
        again = await ingestor.ingest_bytes(b"guarded bytes", expected_kind=None)
    assert first.created and not again.created
    assert guard.entered == [first.content_hash] and not guard.held
    assert backend.read(again.uri) == b"guarded bytes"


@pytest.mark.usefixtures("every_blob_old")
async def test_a_blob_gone_once_inside_the_guard_is_stored_anew(backend: Backend) -> None:
    """GC won the lock and deleted the blob the dedup hit had found: write it again."""
    guard = RecordingGuard()
    async with open_storage(backend.config, dedup_guard=guard) as ingestor:
        first = await ingestor.ingest_bytes(b"collected bytes", expected_kind=None)

        async def collected() -> None:
            await ingestor.store.delete(first.key)

        guard.on_enter = collected
        again = await ingestor.ingest_bytes(b"collected bytes", expected_kind=None)
    assert again.created and again.uri == first.uri
    assert guard.entered == [first.content_hash]
    assert backend.read(again.uri) == b"collected bytes"
