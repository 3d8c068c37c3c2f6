"""Value types, the content-addressed key scheme, and the narrow `BlobStore` protocol.

Backends only move finished files under a key; hashing, type checks and downloads live above
them in `storage.ingest`, so a new backend is a handful of verbs (obstore's, not fsspec's).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "DEDUP_REFRESH_AFTER",
    "BlobInfo",
    "BlobStore",
    "DedupGuard",
    "StoredBlob",
    "StoredObject",
    "content_hash_of",
    "guarded",
    "key_for",
]

# A dedup hit on a blob at least this old refreshes its modification time (S3 pays a copy for
# it, so younger blobs are left alone); a GC grace period must be well above it.
DEDUP_REFRESH_AFTER = timedelta(hours=1)

_KEY = re.compile(r"sha256/([0-9a-f]{2})/([0-9a-f]{64})")
_HEX = re.compile(r"[0-9a-f]{64}")


def key_for(content_hash: str) -> str:
    """``sha256/<first two hex>/<hex>``: one shard level, like git, Docker and restic."""
    if not _HEX.fullmatch(content_hash):
        raise ValueError(f"not a lowercase sha256 hex digest: {content_hash!r}")
    return f"sha256/{content_hash[:2]}/{content_hash}"


def content_hash_of(key: str) -> str | None:
    """The digest a well-formed key names, or None (so foreign files are never touched)."""
    match = _KEY.fullmatch(key)
    if match is None or not match[2].startswith(match[1]):
        return None
    return match[2]


def checked_key(key: str) -> str:
    """Refuse anything but a well-formed key: keys become paths and object names."""
    if content_hash_of(key) is None:
        raise ValueError(f"not a storage key (sha256/<2 hex>/<64 hex>): {key!r}")
    return key


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredObject:
    """What a backend reports after `BlobStore.put_file`."""

    key: str
    uri: str
    created: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class BlobInfo:
    """One stored blob as listed for garbage collection."""

    key: str
    uri: str
    content_hash: str
    size_bytes: int
    modified_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredBlob:
    """Everything the poller needs to write an artifact row for one ingested output.

    ``created`` is False when identical bytes were already stored (dedup); ``metadata`` holds
    only facts read from the bytes (width, height, format, duration_s, sample_rate, channels,
    codec…); ``filename`` is a sanitised name from the URL path or the caller, if any, with
    an extension that agrees with the sniffed type; ``extension`` is the sniffed type's usual
    extension (``mp3`` for ``audio/mpeg``, ``mov`` for ``video/quicktime``), None when the
    bytes are of no known type, for callers that make up a name of their own.
    """

    content_hash: str
    size_bytes: int
    media_type: str
    uri: str
    key: str
    metadata: Mapping[str, Any]
    created: bool
    filename: str | None
    extension: str | None = None


class DedupGuard(Protocol):
    """Held around a dedup hit's decision, so garbage collection cannot delete the blob
    between "it exists" and "its modification time is refreshed".

    Called with the content hash; the context manager may wait (GC is deleting that blob
    right now). The poller supplies one backed by a PostgreSQL advisory lock that the garbage
    collector takes exclusively around its own re-check and delete; storage never talks to
    the database itself. Whatever it raises propagates out of ``put_file`` unchanged.
    """

    def __call__(self, content_hash: str) -> AbstractAsyncContextManager[None]: ...


def guarded(guard: DedupGuard | None, content_hash: str) -> AbstractAsyncContextManager[None]:
    """``guard``'s context for ``content_hash``, or one that holds nothing (tests, tools)."""
    return guard(content_hash) if guard is not None else nullcontext()


class BlobStore(Protocol):
    """A place for immutable, content-addressed blobs.

    ``put_file`` is create-if-absent: an existing key counts as success (``created=False``)
    because under content addressing the bytes are identical, and a blob at least
    `DEDUP_REFRESH_AFTER` old gets a fresh modification time. With a ``dedup_guard``, that
    whole decision (the blob is still there, refresh it, rely on it) runs inside the guard,
    and a blob found gone once inside is written anew; a first write needs no guard (a new
    blob is younger than any GC cutoff). ``delete`` exists for the garbage collector only;
    the daemon never deletes.
    """

    scheme: str

    async def put_file(
        self,
        key: str,
        path: Path,
        *,
        media_type: str | None,
        content_hash: str,
        dedup_guard: DedupGuard | None = None,
    ) -> StoredObject: ...

    async def exists(self, key: str) -> bool: ...

    def uri_for(self, key: str) -> str: ...

    def iter_blobs(self) -> AsyncIterator[BlobInfo]: ...

    async def stat(self, key: str) -> BlobInfo | None:
        """The blob as listed now, or None when it is gone (GC re-checks before deleting)."""
        ...

    async def delete(self, key: str) -> None: ...
