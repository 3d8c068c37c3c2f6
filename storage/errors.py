"""The storage package's exception tree; nothing else escapes ``storage``.

Foreign exceptions (``OSError``, botocore, httpcore, Pillow, mutagen) are translated where they
are caught, with ``raise … from exc``, so the poller decides with one ``except StorageError``
and the ``retryable`` flag, without importing any of those libraries::

    StorageError                      retryable = False
    ├── StorageConfigError            permanent: STORAGE_URL / storage settings invalid
    ├── StorageUnavailable            retryable: the store cannot take the blob right now
    │   ├── DiskFull                  retryable: ENOSPC / EDQUOT / EFBIG (root or temp dir)
    │   └── BackendMisconfigured      retryable: bucket missing, access denied, root unwritable
    └── DownloadError                 permanent: any other failure to obtain the bytes
        ├── DownloadUnavailable       retryable: network error, 5xx from the CDN
        │   ├── DownloadThrottled     retryable: 429 from the CDN (carries its Retry-After)
        │   └── DownloadTimeout       retryable: connect/read timeout, total deadline, too slow
        ├── OutputGone                permanent: 403/404/410 (expired or deleted output link)
        ├── BlockedURL                permanent: not https, private/loopback address, bad URL
        ├── TooLarge                  permanent: over ``max_download_bytes``
        └── ContentRejected           permanent: empty, wrong type, bomb, undecodable
            ├── ParserTimeout         permanent: reading its metadata outlasted the timeout
            └── ParserCrashed         permanent: the metadata parser process died on it

Why storage-side failures are all retryable, even ``DiskFull`` and a missing bucket: they are
not the job's fault, the provider's output is still valid, and an operator can fix the store
while the poller retries within its per-job error budget. Failing the job at once would throw
away a finished (and paid for) generation. At start-up ``open_storage`` raises the same
exceptions and the daemon refuses to start, so a misconfiguration is still loud.

``code`` is a stable machine name for logs, metrics and ``jobs.error``; messages are written for
a human operator and never contain credentials or URL query strings.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "BackendMisconfigured",
    "BlockedURL",
    "ContentRejected",
    "DiskFull",
    "DownloadError",
    "DownloadThrottled",
    "DownloadTimeout",
    "DownloadUnavailable",
    "OutputGone",
    "ParserCrashed",
    "ParserTimeout",
    "StorageConfigError",
    "StorageError",
    "StorageUnavailable",
    "TooLarge",
]


class StorageError(Exception):
    """Base of every error raised by the storage package."""

    retryable: ClassVar[bool] = False
    code: ClassVar[str] = "storage_error"


class StorageConfigError(StorageError):
    """The storage settings themselves are wrong (bad ``STORAGE_URL``, negative limits)."""

    code = "storage_config"


class StorageUnavailable(StorageError):
    """The blob store could not take the blob now: S3 5xx/throttling/network, transient I/O."""

    retryable = True
    code = "storage_unavailable"


class DiskFull(StorageUnavailable):
    """No space (or quota) left where temp files or blobs are written."""

    code = "disk_full"


class BackendMisconfigured(StorageUnavailable):
    """The store exists in configuration but not in reality: no bucket, no access, read-only."""

    code = "storage_misconfigured"


class DownloadError(StorageError):
    """The output's bytes could not be obtained or were not acceptable."""

    code = "download_failed"


class DownloadUnavailable(DownloadError):
    """A transient failure fetching the output: worth trying again later."""

    retryable = True
    code = "download_unavailable"


class DownloadThrottled(DownloadUnavailable):
    """The output's server answered 429: busy, not broken; ``retry_after_s`` is its hint.

    Kept apart from other transient failures because the right reaction differs: wait as
    long as the server asked, without counting it against the job's error budget.
    """

    code = "download_throttled"

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DownloadTimeout(DownloadUnavailable):
    """The transfer stalled, was too slow, or overran the total download deadline."""

    code = "download_timeout"


class OutputGone(DownloadError):
    """The output URL answered 403/404/410: the link expired or the file was deleted."""

    code = "output_gone"


class BlockedURL(DownloadError):
    """The URL (or a redirect hop, or its DNS answer) is outside the download policy."""

    code = "blocked_url"


class TooLarge(DownloadError):
    """The output is bigger than the configured per-file cap."""

    code = "too_large"


class ContentRejected(DownloadError):
    """The bytes are not an acceptable result: empty, wrong type, a bomb, undecodable."""

    code = "content_rejected"


class ParserTimeout(ContentRejected):
    """Reading the file's metadata outlasted ``POLLER_METADATA_TIMEOUT_S`` (its parser
    process was killed). Its own class so that metrics tell a hostile or pathological file
    from an ordinary unreadable one."""

    code = "metadata_timeout"


class ParserCrashed(ContentRejected):
    """The metadata parser process died on the file, twice, each time in a fresh process."""

    code = "metadata_crashed"
