"""Download, content-addressed storage and media metadata for generated artifacts.

The poller uses `open_storage` to get an `Ingestor` and calls ``ingest_url`` /
``ingest_bytes``; both return a `StoredBlob` with everything an artifact row needs. Errors are
`storage.errors.StorageError` subclasses carrying a ``retryable`` flag. This package never
imports the poller or the providers.
"""

from storage.base import BlobInfo, BlobStore, DedupGuard, StoredBlob, StoredObject, key_for
from storage.config import StorageConfig, parse_storage_url
from storage.download import DownloadHooks
from storage.errors import StorageError
from storage.ingest import Ingestor, open_storage

__all__ = [
    "BlobInfo",
    "BlobStore",
    "DedupGuard",
    "DownloadHooks",
    "Ingestor",
    "StorageConfig",
    "StorageError",
    "StoredBlob",
    "StoredObject",
    "key_for",
    "open_storage",
    "parse_storage_url",
]
