"""Local filesystem backend: ``<root>/sha256/<2 hex>/<hex>``, published by hard link.

``os.link(temp, final)`` is atomic and fails with ``FileExistsError`` when the blob exists, so
concurrent writers of identical content end with one copy, exactly one ``created=True``, and
never a half-written name (``os.replace`` would also be atomic but hides the dedup signal).
The temp file is fsynced before the link and the shard directory after it, so a published
name survives a crash with its bytes. Blobs are made read-only: content-addressed files must
never change. On a dedup hit the existing blob's mtime is refreshed, which restarts the
garbage collector's grace period for a blob about to be referenced again.

``FileExistsError`` only says the blob exists: the refresh runs afterwards, inside the
`DedupGuard` when there is one (the daemon passes one), where it first finds out whether the
blob is still there (garbage collection deletes under the exclusive side of the same lock, so
it cannot delete between that check and the ``utime``). A blob found gone is published anew,
outside the guard.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TypeVar
from uuid import uuid4

import anyio
import structlog

from storage.base import (
    BlobInfo,
    DedupGuard,
    StoredObject,
    checked_key,
    content_hash_of,
    guarded,
)
from storage.fs import TEMP_PREFIXES, fsync_dir, make_dirs, os_error

__all__ = ["LocalBlobStore"]

log = structlog.get_logger(__name__)
T = TypeVar("T")

# link() unsupported here (another filesystem, or no hard links at all): copy, then publish.
_LINK_UNAVAILABLE = frozenset(
    {errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK}
)
BLOB_MODE = 0o444
TMP_DIR_NAME = ".tmp"


class LocalBlobStore:
    """Content-addressed blobs under one directory; all blocking calls run in worker threads."""

    scheme = "file"

    def __init__(self, root: Path, *, limiter: anyio.CapacityLimiter) -> None:
        self.root = root
        self.tmp_dir = root / TMP_DIR_NAME
        self._limiter = limiter

    @classmethod
    async def open(cls, root: Path, *, limiter: anyio.CapacityLimiter) -> LocalBlobStore:
        """Create the tree if needed and prove it is writable (fails loudly at start-up)."""
        # Lexically normalised, not just absolute: ``file://../store`` and ``file:///a/./b``
        # must not put ``..`` or ``.`` into artifacts.uri (identical content, same uri).
        absolute = await anyio.to_thread.run_sync(os.path.abspath, root)
        store = cls(Path(absolute), limiter=limiter)
        try:
            await anyio.to_thread.run_sync(store._prepare, limiter=limiter)
        except OSError as exc:
            raise os_error(exc, f"preparing the storage directory {store.root}") from exc
        return store

    def _prepare(self) -> None:
        make_dirs(self.root / "sha256")
        make_dirs(self.tmp_dir)
        probe = self.tmp_dir / f"{TEMP_PREFIXES[1]}probe-{uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()

    def path_for(self, key: str) -> Path:
        return self.root / checked_key(key)

    def uri_for(self, key: str) -> str:
        return str(self.path_for(key))

    async def exists(self, key: str) -> bool:
        path = self.path_for(key)
        return await anyio.to_thread.run_sync(path.is_file, limiter=self._limiter)

    async def put_file(
        self,
        key: str,
        path: Path,
        *,
        media_type: str | None,
        content_hash: str,
        dedup_guard: DedupGuard | None = None,
    ) -> StoredObject:
        """Publish ``path`` (left in place for the caller to remove) under ``key``.

        The link attempt only learns that the blob exists; `_reuse_or_publish` then decides,
        inside the guard if there is one.
        """
        final = self.path_for(key)
        created = await self._in_thread(partial(self._publish, final, path), f"storing blob {key}")
        if not created:
            guard = guarded(dedup_guard, content_hash)
            created = await self._reuse_or_publish(final, path, key, guard)
        return StoredObject(key=key, uri=str(final), created=created)

    async def _reuse_or_publish(
        self, final: Path, source: Path, key: str, guard: AbstractAsyncContextManager[None]
    ) -> bool:
        """A dedup hit: inside the guard (GC cannot delete the blob meanwhile) check that the
        blob is still there and refresh it; if GC deleted it first, publish it anew, outside
        the guard: the new blob is younger than any GC cutoff, and so is one a concurrent
        writer publishes first (re-used as it is)."""
        async with guard:
            reused = await self._in_thread(
                partial(self._reuse, final, source), f"re-using blob {key}"
            )
        if reused:
            return False
        return await self._in_thread(partial(self._publish, final, source), f"storing blob {key}")

    async def _in_thread(self, call: Callable[[], T], doing: str) -> T:
        try:
            return await anyio.to_thread.run_sync(call, limiter=self._limiter)
        except OSError as exc:
            raise os_error(exc, doing) from exc

    def _publish(self, final: Path, source: Path) -> bool:
        """True: published. False: the blob exists already (the caller re-uses it)."""
        make_dirs(final.parent)
        try:
            os.link(source, final)
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in _LINK_UNAVAILABLE:
                raise
            return self._publish_copy(final, source)
        os.chmod(final, BLOB_MODE)
        fsync_dir(final.parent)
        return True

    def _publish_copy(self, final: Path, source: Path) -> bool:
        """Publish a synced private copy made on the blob filesystem."""
        staged = self._stage_copy(source)
        try:
            try:
                os.link(staged, final)
            except FileExistsError:
                return False
            except OSError as exc:
                if exc.errno not in _LINK_UNAVAILABLE:
                    raise
                if final.exists():  # no hard links at all: rename, racing writers are harmless
                    return False
                os.replace(staged, final)
            fsync_dir(final.parent)
            return True
        finally:
            staged.unlink(missing_ok=True)

    def _reuse(self, final: Path, source: Path) -> bool:
        """A dedup hit (inside the guard, if any): refresh the blob and rely on it, or False
        if it is gone."""
        try:
            self._refresh(final, source)
        except FileNotFoundError:
            return False
        _sync_existing(final)
        return True

    def _stage_copy(self, source: Path) -> Path:
        """A synced copy of ``source`` in the store's own temp dir, or nothing at all.

        A copy that fails midway (ENOSPC, EIO, EDQUOT) is removed here: the callers only
        take ownership of a complete copy, and a partial one would hold space exactly when
        the disk is full.
        """
        staged = self.tmp_dir / f"{TEMP_PREFIXES[1]}{uuid4().hex}"
        try:
            shutil.copyfile(source, staged)
            os.chmod(staged, BLOB_MODE)
            with staged.open("rb") as copy:
                os.fsync(copy.fileno())
        except BaseException:
            staged.unlink(missing_ok=True)
            raise
        return staged

    def _refresh(self, final: Path, source: Path) -> None:
        """Dedup hit: restart GC's grace period; repair a blob whose size is wrong."""
        if final.stat().st_size == source.stat().st_size:
            os.utime(final)
            return
        log.warning("storage.blob_repaired", path=str(final))
        staged = self._stage_copy(source)
        try:
            os.replace(staged, final)
            fsync_dir(final.parent)
        finally:
            staged.unlink(missing_ok=True)

    async def iter_blobs(self) -> AsyncIterator[BlobInfo]:
        """Every blob with its size and mtime, one shard directory per thread hop."""
        base = self.root / "sha256"
        shards = await anyio.to_thread.run_sync(_list_dirs, base, limiter=self._limiter)
        for shard in shards:
            infos = await anyio.to_thread.run_sync(self._scan, shard, limiter=self._limiter)
            for info in infos:
                yield info

    def _scan(self, shard: Path) -> list[BlobInfo]:
        infos: list[BlobInfo] = []
        with os.scandir(shard) as entries:
            for entry in entries:
                key = f"sha256/{shard.name}/{entry.name}"
                if content_hash_of(key) is None or not entry.is_file(follow_symlinks=False):
                    continue
                infos.append(_info(key, entry.path, entry.stat(follow_symlinks=False)))
        return infos

    async def stat(self, key: str) -> BlobInfo | None:
        """The blob's size and mtime now (a dedup hit may have refreshed it), or None."""
        path = self.path_for(key)
        try:
            found = await anyio.to_thread.run_sync(path.lstat, limiter=self._limiter)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise os_error(exc, f"checking blob {key}") from exc
        return _info(key, str(path), found)

    async def delete(self, key: str) -> None:
        """Remove one blob (garbage collection only); a missing blob is not an error."""
        path = self.path_for(key)
        try:
            await anyio.to_thread.run_sync(
                lambda: path.unlink(missing_ok=True), limiter=self._limiter
            )
        except OSError as exc:
            raise os_error(exc, f"deleting blob {key}") from exc

    async def aclose(self) -> None:
        """Nothing to release; present so both backends close the same way."""


def _info(key: str, path: str, found: os.stat_result) -> BlobInfo:
    return BlobInfo(
        key=key,
        uri=path,
        content_hash=checked_key(key).rsplit("/", 1)[-1],
        size_bytes=found.st_size,
        modified_at=datetime.fromtimestamp(found.st_mtime, UTC),
    )


def _sync_existing(final: Path) -> None:
    """A dedup hit relies on a name another writer may not have made durable yet (it can be
    between its link and its own directory fsync): sync it before our artifact row points at
    it."""
    fsync_dir(final.parent)


def _list_dirs(base: Path) -> list[Path]:
    if not base.is_dir():
        return []
    return sorted(entry for entry in base.iterdir() if entry.is_dir() and len(entry.name) == 2)
