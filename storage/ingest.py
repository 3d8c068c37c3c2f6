"""The Ingestor, the one component that knows about hashing, and `open_storage`.

Pipeline for every output, URL or inline bytes: temp file on the storage filesystem → stream
with size cap, early type check on the first 8 KiB, SHA-256 in a worker thread → fsync →
zero-byte check → metadata from headers → type check on what the parse found (a video
container with no video track is audio: ``audio/mp4``, ``audio/webm``, ``audio/x-matroska``;
the early check lets such containers through for an audio job) → ``BlobStore.put_file``
under ``sha256/<2 hex>/<hex>``.
The temp file is removed in a shielded ``finally``, so nothing half-written survives any
failure or cancellation.

Metadata is read in a killable worker process with a timeout (`storage.isolation`), not a
thread: the parsers include native code fed untrusted bytes. It is read *before* the blob is
published, so a file rejected for any reason (unreadable, a hang, a parser crash) leaves no
blob and, through the ``finally``, no temp file.

A dedup hit relies on a blob stored earlier, which garbage collection may be deleting at that
very moment. The ``dedup_guard`` given to `open_storage` (the daemon's PostgreSQL advisory
lock, `storage.base.DedupGuard`) is handed to every ``put_file``, which holds it while it
decides to re-use such a blob; without one (tests, tools) nothing is held, as before.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import structlog

from storage.base import BlobStore, DedupGuard, StoredBlob, key_for
from storage.config import LocalLocation, StorageConfig
from storage.download import Downloader, DownloadHooks, parse_url, redact
from storage.errors import ContentRejected, StorageError
from storage.fs import (
    TempFile,
    create_temp_file,
    make_dirs,
    make_private_dir,
    os_error,
    sweep_stale,
)
from storage.isolation import MetadataParsers, Reader
from storage.local import LocalBlobStore
from storage.metadata import AUDIO_ONLY, read_metadata
from storage.s3 import S3BlobStore
from storage.sniff import (
    SNIFF_BYTES,
    Sniffed,
    as_audio_only,
    check_expected_kind,
    check_kind,
    safe_filename,
    sniff,
)
from storage.spool import Spool, SpoolResult, too_large

__all__ = ["Ingestor", "open_storage"]

log = structlog.get_logger(__name__)

EMPTY = "the result is empty (0 bytes)"


class Ingestor:
    """Turns an output (URL or bytes) into a stored, deduplicated, described blob."""

    def __init__(
        self,
        *,
        store: BlobStore,
        downloader: Downloader,
        config: StorageConfig,
        tmp_dir: Path,
        file_limiter: anyio.CapacityLimiter,
        parsers: MetadataParsers,
        dedup_guard: DedupGuard | None = None,
    ) -> None:
        self.store = store
        self._downloader = downloader
        self._config = config
        self._tmp_dir = tmp_dir
        self._limiter = file_limiter
        self._parsers = parsers
        self._dedup_guard = dedup_guard

    async def ingest_url(
        self,
        url: str,
        *,
        expected_kind: str | None,
        headers: Mapping[str, str] | None = None,
    ) -> StoredBlob:
        """Download ``url`` (streamed, constant memory) and store it.

        ``headers`` go to the URL's own origin only (never across a redirect to another
        host); ``expected_kind`` is ``"image"``, ``"video"``, ``"audio"`` or None (any type).
        """
        kind = check_expected_kind(expected_kind)
        target = parse_url(url)
        started = time.monotonic()
        async with self._temp_file() as temp:
            spooled = await self._download(url, headers, temp, kind)
            blob = await self._publish(temp, spooled, kind, target.path)
        log.debug(
            "storage.ingested",
            source=redact(target),
            content_hash=blob.content_hash,
            size_bytes=blob.size_bytes,
            media_type=blob.media_type,
            created=blob.created,
            duration_ms=round((time.monotonic() - started) * 1000),
        )
        return blob

    async def ingest_bytes(
        self, data: bytes, *, expected_kind: str | None, filename: str | None = None
    ) -> StoredBlob:
        """Store an inline output through the same cap, sniff, hash and metadata checks."""
        kind = check_expected_kind(expected_kind)
        if len(data) > self._config.max_download_bytes:
            raise too_large(self._config.max_download_bytes, size=len(data))
        if not data:
            raise ContentRejected(EMPTY)
        _check_head(data[:SNIFF_BYTES], kind)
        async with self._temp_file() as temp:
            spool = self._spool(temp, kind)
            spooled = await spool.write_bytes(data)
            return await self._publish(temp, spooled, kind, filename)

    @asynccontextmanager
    async def _temp_file(self) -> AsyncIterator[TempFile]:
        try:
            temp = await anyio.to_thread.run_sync(
                create_temp_file, self._tmp_dir, limiter=self._limiter
            )
        except OSError as exc:
            raise os_error(exc, f"creating a temp file in {self._tmp_dir}") from exc
        try:
            yield temp
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(temp.discard, limiter=self._limiter)

    def _spool(self, temp: TempFile, kind: str | None) -> Spool:
        return Spool(
            temp,
            limiter=self._limiter,
            max_bytes=self._config.max_download_bytes,
            on_head=partial(_check_head, kind=kind),
        )

    async def _download(
        self, url: str, headers: Mapping[str, str] | None, temp: TempFile, kind: str | None
    ) -> SpoolResult:
        """Stream into the spool while its writer task hashes and writes in a thread."""
        spool = self._spool(temp, kind)
        failure: StorageError | None = None
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(spool.writer)
                try:
                    await self._downloader.fetch(url, headers=headers, sink=spool.feed)
                    await spool.end()
                except StorageError as exc:  # kept out of the task group: no ExceptionGroup
                    failure = exc
                finally:
                    spool.close_input()
        finally:
            spool.close()
        if failure is not None:
            raise failure
        return await spool.result()

    async def _publish(
        self, temp: TempFile, spooled: SpoolResult, kind: str | None, name: str | None
    ) -> StoredBlob:
        if spooled.size_bytes == 0:
            raise ContentRejected(EMPTY)
        sniffed = sniff(spooled.head)
        # Before put_file: a rejected file must never become a blob. Types of no media kind
        # have no parser (read_metadata returns {}): they skip the process hop.
        metadata: dict[str, Any] = {}
        if sniffed.kind is not None:
            metadata = await self._parsers.read(temp.path, sniffed, expected_kind=kind)
        # A video container may hold audio only: the parse decides, then the job's kind is
        # checked against what the file is (the head check let it pass for an audio job).
        if metadata.pop(AUDIO_ONLY, False):
            sniffed = as_audio_only(sniffed)
        check_kind(sniffed, kind, spooled.head, parsed=True)
        key = key_for(spooled.content_hash)
        stored = await self.store.put_file(
            key,
            temp.path,
            media_type=sniffed.media_type,
            content_hash=spooled.content_hash,
            dedup_guard=self._dedup_guard,
        )
        return StoredBlob(
            content_hash=spooled.content_hash,
            size_bytes=spooled.size_bytes,
            media_type=sniffed.media_type,
            uri=stored.uri,
            key=key,
            metadata=metadata,
            created=stored.created,
            filename=safe_filename(name, sniffed.extension),
            extension=sniffed.extension,
        )


def _check_head(head: bytes, kind: str | None) -> Sniffed:
    sniffed = sniff(head)
    check_kind(sniffed, kind, head)
    return sniffed


async def _prepare_tmp_dir(config: StorageConfig, store: BlobStore) -> Path:
    """Create the temp dir (local: inside the root, same filesystem; S3: a private dir under
    the system temp dir) and sweep crash leftovers; in a thread, like all file I/O."""

    def prepare() -> tuple[Path, int]:
        if config.tmp_dir is not None:
            directory = config.tmp_dir.absolute()
            make_dirs(directory)
        elif isinstance(store, LocalBlobStore):
            directory = store.tmp_dir
            make_dirs(directory)
        else:
            directory = Path(tempfile.gettempdir()) / f"media-poller-ingest-{os.geteuid()}"
            make_private_dir(directory)
        removed = sweep_stale(directory, older_than_s=config.stale_tmp_age_s)
        if isinstance(store, LocalBlobStore) and store.tmp_dir != directory:
            # The copy fallback (temp dir on another filesystem) stages in <root>/.tmp: a
            # crash mid-copy leaves its stage-* file there, whatever POLLER_TMP_DIR says.
            removed += sweep_stale(store.tmp_dir, older_than_s=config.stale_tmp_age_s)
        return directory, removed

    try:
        directory, removed = await anyio.to_thread.run_sync(prepare)
    except OSError as exc:
        raise os_error(exc, "preparing the temp directory") from exc
    if removed:
        log.info("storage.stale_temp_removed", directory=str(directory), files=removed)
    return directory


@asynccontextmanager
async def open_storage(
    config: StorageConfig,
    *,
    hooks: DownloadHooks | None = None,
    dedup_guard: DedupGuard | None = None,
    metadata_reader: Reader = read_metadata,
) -> AsyncIterator[Ingestor]:
    """Build and validate the backend (bucket exists / root writable), sweep stale temp
    files, and yield an `Ingestor`; everything is closed on exit.

    ``hooks`` (resolver, TLS trust, allowed networks) and ``metadata_reader`` (a module-level
    function the parser processes run instead of `read_metadata`) are test seams, never
    settings. ``dedup_guard`` is held around every dedup hit's re-use of an existing blob
    (see `storage.base.DedupGuard`); the daemon passes one, tools that never ingest need none.
    """
    limiter = anyio.CapacityLimiter(config.file_io_threads)
    location = config.location
    async with AsyncExitStack() as stack:
        store: LocalBlobStore | S3BlobStore
        if isinstance(location, LocalLocation):
            store = await LocalBlobStore.open(location.root, limiter=limiter)
        else:
            store = await S3BlobStore.open(config, location)
        stack.push_async_callback(store.aclose)
        tmp_dir = await _prepare_tmp_dir(config, store)
        downloader = Downloader(config, hooks)
        stack.push_async_callback(downloader.aclose)
        yield Ingestor(
            store=store,
            downloader=downloader,
            config=config,
            tmp_dir=tmp_dir,
            file_limiter=limiter,
            parsers=MetadataParsers(
                processes=config.metadata_processes,
                timeout_s=config.metadata_timeout_s,
                max_memory_bytes=config.metadata_max_memory_bytes,
                reader=metadata_reader,
            ),
            dedup_guard=dedup_guard,
        )
