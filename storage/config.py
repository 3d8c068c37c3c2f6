"""Storage settings as one immutable value, validated when it is built.

The poller maps its environment settings onto `StorageConfig`; the storage package never reads
the environment itself (boto3 still reads the standard ``AWS_*`` credentials on its own).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from urllib.parse import unquote, urlsplit

from storage.errors import StorageConfigError

__all__ = ["LocalLocation", "S3Location", "StorageConfig", "parse_storage_url"]

MiB = 1024 * 1024
# A worker process mapped ~130 MiB before reading a byte (the interpreter, its imports,
# libmediainfo; measured while workers still imported the whole daemon, so an upper bound):
# below this every parse would fail, rejecting good files.
MIN_METADATA_MEMORY_BYTES = 256 * MiB


@dataclass(frozen=True, slots=True, kw_only=True)
class StorageConfig:
    """Everything the storage layer needs; defaults suit production.

    ``tmp_dir=None`` puts in-flight downloads in ``<root>/.tmp`` for the local backend (the same
    filesystem, so publishing is a hard link) and in a private directory under the system temp
    dir for S3. The throughput floor is checked per ``throughput_window_s`` once
    ``throughput_grace_s`` has passed (slow starts on a cold CDN are normal).

    Media metadata is read in at most ``metadata_processes`` worker processes
    (`storage.isolation`): a parse running longer than ``metadata_timeout_s`` is killed and the
    file rejected, and each worker's address space is capped at ``metadata_max_memory_bytes``
    (0: no cap) so a memory bomb fails that parse instead of the container.
    """

    storage_url: str
    tmp_dir: Path | None = None
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_max_threads: int = 8
    s3_multipart_threshold_bytes: int = 64 * MiB
    s3_multipart_part_bytes: int = 16 * MiB
    s3_send_checksum: bool = True
    max_download_bytes: int = 2 * 1024**3
    allow_private_downloads: bool = False
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 30.0
    total_timeout_s: float = 900.0
    min_throughput_bytes_per_s: int = 16 * 1024
    throughput_window_s: float = 10.0
    throughput_grace_s: float = 10.0
    max_redirects: int = 5
    stale_tmp_age_s: float = 6 * 3600.0
    file_io_threads: int = 16
    metadata_timeout_s: float = 30.0
    metadata_processes: int = 2
    metadata_max_memory_bytes: int = 1024 * MiB

    def __post_init__(self) -> None:
        parse_storage_url(self.storage_url)
        _check_positive(self)
        if self.s3_multipart_part_bytes < 5 * MiB:
            raise StorageConfigError(
                f"s3_multipart_part_bytes is {self.s3_multipart_part_bytes}: S3 needs parts of "
                "at least 5 MiB"
            )
        if 0 < self.metadata_max_memory_bytes < MIN_METADATA_MEMORY_BYTES:
            raise StorageConfigError(
                f"metadata_max_memory_bytes is {self.metadata_max_memory_bytes}: a parser "
                f"process needs at least {MIN_METADATA_MEMORY_BYTES // MiB} MiB (0 = no cap)"
            )

    @property
    def location(self) -> LocalLocation | S3Location:
        """The parsed ``storage_url``."""
        return parse_storage_url(self.storage_url)


_POSITIVE = (
    "s3_max_threads",
    "s3_multipart_threshold_bytes",
    "max_download_bytes",
    "connect_timeout_s",
    "read_timeout_s",
    "total_timeout_s",
    "throughput_window_s",
    "stale_tmp_age_s",
    "file_io_threads",
    "metadata_timeout_s",
    "metadata_processes",
)
_NON_NEGATIVE = (
    "min_throughput_bytes_per_s",
    "throughput_grace_s",
    "max_redirects",
    "metadata_max_memory_bytes",
)


def _check_positive(config: StorageConfig) -> None:
    values = {f.name: getattr(config, f.name) for f in fields(config)}
    for name in _POSITIVE:
        if not values[name] > 0:
            raise StorageConfigError(f"{name} must be greater than 0, got {values[name]!r}")
    for name in _NON_NEGATIVE:
        if values[name] < 0:
            raise StorageConfigError(f"{name} must not be negative, got {values[name]!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalLocation:
    """``file://`` storage: ``root`` may still be relative (resolved when storage opens)."""

    root: Path


@dataclass(frozen=True, slots=True, kw_only=True)
class S3Location:
    """``s3://bucket/prefix``; ``prefix`` has no leading or trailing slash (may be empty)."""

    bucket: str
    prefix: str


_URL_HELP = "use file:///abs/dir, file://./relative/dir or s3://bucket/prefix"


def parse_storage_url(url: str) -> LocalLocation | S3Location:
    """Parse ``STORAGE_URL``; every mistake gets a message that shows the accepted forms."""
    parts = urlsplit(url.strip())
    if parts.query or parts.fragment:
        raise StorageConfigError(
            f"STORAGE_URL {url!r} must not have a query or fragment: {_URL_HELP}"
        )
    if parts.scheme == "file":
        return _parse_file(url, parts.netloc, unquote(parts.path))
    if parts.scheme == "s3":
        bucket, prefix = parts.netloc, parts.path.strip("/")
        if not bucket:
            raise StorageConfigError(f"STORAGE_URL {url!r} names no bucket: {_URL_HELP}")
        return S3Location(bucket=bucket, prefix=prefix)
    raise StorageConfigError(f"STORAGE_URL {url!r} has an unsupported scheme: {_URL_HELP}")


def _parse_file(url: str, netloc: str, path: str) -> LocalLocation:
    if netloc in ("", "localhost"):
        if not path.startswith("/"):
            raise StorageConfigError(f"STORAGE_URL {url!r} has no directory: {_URL_HELP}")
        return LocalLocation(root=Path(path))
    if netloc in (".", ".."):
        return LocalLocation(root=Path(netloc + path))
    raise StorageConfigError(
        f"STORAGE_URL {url!r}: {netloc!r} is read as a host name, not a directory: {_URL_HELP}"
    )
