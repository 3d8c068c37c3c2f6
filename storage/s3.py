"""S3 (and S3-compatible) backend: ``<prefix>/sha256/<2 hex>/<hex>``, create-if-absent.

One boto3 client, created at start-up from an explicit session (clients are thread-safe once
built, sessions are not), used from worker threads bounded by a `CapacityLimiter` (plain boto3
rather than aiobotocore: a handful of uploads a minute does not need a second HTTP stack).

Writes: HEAD first (the cheap dedup), then ``PutObject`` with ``If-None-Match: *`` (412 = a
concurrent writer won: dedup). A HEAD that finds an object at least `REFRESH_AFTER` old copies
it onto itself, resetting LastModified so garbage collection's grace period restarts; with a
`DedupGuard` that copy runs inside the guard (GC deletes under the exclusive side of the same
lock) and doubles as the check that the object is still there: NoSuchKey means GC deleted it
first, and it is uploaded anew outside the guard. Younger objects need neither. Where the
copy cannot serve (over CopyObject's 5 GiB, or failed) the file is uploaded over the object
unconditionally instead, still inside the guard.

Above the multipart threshold the parts are uploaded by hand, because s3transfer refuses
``IfNoneMatch``, and the condition goes on ``CompleteMultipartUpload``. The content SHA-256
is in the object metadata (``sha256``) since a multipart SHA-256 checksum is a checksum of
part checksums, not of the file. Checksums are only sent when asked
(``request_checksum_calculation="when_required"``): botocore's default CRC32 headers break
many S3-compatible servers. The SHA-256 checksum the uploads do send can
be switched off (``StorageConfig.s3_send_checksum``, ``POLLER_S3_SEND_CHECKSUM``) for servers
that reject it. A server without conditional writes (501) is detected once and the HEAD check
alone is relied on; for content-addressed keys an overwrite rewrites identical bytes. Any
other 400/501 to an upload is `BackendMisconfigured` (retryable, naming the setting): the
server lacks a feature, and the job's output is still good.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import boto3
import botocore.exceptions
import structlog
from botocore.config import Config

from storage.base import (
    DEDUP_REFRESH_AFTER,
    BlobInfo,
    DedupGuard,
    StoredObject,
    checked_key,
    content_hash_of,
    guarded,
)
from storage.config import S3Location, StorageConfig
from storage.errors import (
    BackendMisconfigured,
    StorageConfigError,
    StorageError,
    StorageUnavailable,
)
from storage.fs import os_error

if TYPE_CHECKING:
    from types_boto3_s3.client import S3Client
    from types_boto3_s3.type_defs import CompletedPartTypeDef, HeadObjectOutputTypeDef

__all__ = ["S3BlobStore"]

log = structlog.get_logger(__name__)
T = TypeVar("T")

BUCKET_CHECK = "checking the bucket"
CACHE_CONTROL = "public, max-age=31536000, immutable"
MAX_PARTS = 10_000
MAX_COPY_BYTES = 5 * 1024**3  # the largest source one CopyObject accepts
PART_CONCURRENCY = 4  # memory bound: each in-flight part is held in memory once
# A dedup hit on an older object rewrites its LastModified so GC's grace period restarts.
REFRESH_AFTER = DEDUP_REFRESH_AFTER
_RETRYABLE_STATUS = frozenset({408, 409, 429})
_RETRYABLE_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestTimeout",
        "BadDigest",
        "InternalError",
    }
)
# On an upload, the answers of S3-compatible servers to a feature they lack.
_UNSUPPORTED_STATUS = frozenset({400, 501})
_DENIED_CODES = frozenset({"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"})
# botocore's transport errors quote the request URL ("Could not connect to the endpoint URL:
# \"https://…/key?uploadId=…&partNumber=1\""); storage messages carry no query strings.
_URL_QUERY = re.compile(r"(?P<url>[a-z][a-z0-9+.-]*://[^\s\"'?#]*)\?[^\s\"'#]*", re.I)
_NO_CREDENTIALS = (
    botocore.exceptions.NoCredentialsError,
    botocore.exceptions.PartialCredentialsError,
)


def _status(exc: botocore.exceptions.ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def _code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def make_client(config: StorageConfig) -> S3Client:
    """The shared client: checksums only when required, path-style on custom endpoints."""
    botocore_config = Config(
        max_pool_connections=max(10, config.s3_max_threads),
        retries={"mode": "standard", "max_attempts": 4},
        connect_timeout=config.connect_timeout_s,
        read_timeout=max(60.0, config.read_timeout_s),
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        s3={"addressing_style": "path"} if config.s3_endpoint_url else None,
    )
    try:
        session = boto3.session.Session()
        return session.client(
            "s3",
            endpoint_url=config.s3_endpoint_url,
            region_name=config.s3_region,
            config=botocore_config,
        )
    except (ValueError, botocore.exceptions.BotoCoreError) as exc:
        raise StorageConfigError(f"cannot create the S3 client: {exc}") from exc


@dataclass(frozen=True)
class _Upload:
    """One file headed for one object key."""

    object_key: str
    path: Path
    media_type: str | None
    content_hash: str


class _KeyLocks:
    """One lock per key being written, dropped when nobody holds or waits for it.

    Two jobs of this process storing identical bytes then upload once: the second waits and
    finds the object with HEAD. Across processes ``If-None-Match`` still decides.
    """

    def __init__(self) -> None:
        self._locks: dict[str, tuple[anyio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (anyio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class S3BlobStore:
    """Content-addressed blobs in one bucket under an optional prefix."""

    scheme = "s3"

    def __init__(
        self,
        *,
        client: S3Client,
        location: S3Location,
        config: StorageConfig,
        limiter: anyio.CapacityLimiter,
    ) -> None:
        self._client = client
        self.bucket = location.bucket
        self._base = f"{location.prefix}/" if location.prefix else ""
        self._endpoint = config.s3_endpoint_url or "AWS"
        self._limiter = limiter
        self._threshold = config.s3_multipart_threshold_bytes
        self._part_bytes = config.s3_multipart_part_bytes
        self._send_checksum = config.s3_send_checksum
        self._conditional = True
        self._writing = _KeyLocks()

    @classmethod
    async def open(cls, config: StorageConfig, location: S3Location) -> S3BlobStore:
        """Build the client and check the bucket exists and is reachable with these creds."""
        limiter = anyio.CapacityLimiter(config.s3_max_threads)
        client = await anyio.to_thread.run_sync(make_client, config, limiter=limiter)
        store = cls(client=client, location=location, config=config, limiter=limiter)
        try:
            await store._run(BUCKET_CHECK, partial(client.head_bucket, Bucket=store.bucket))
        except BaseException:
            client.close()
            raise
        return store

    def object_key(self, key: str) -> str:
        return self._base + checked_key(key)

    def uri_for(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.object_key(key)}"

    async def exists(self, key: str) -> bool:
        return await self._head(self.object_key(key)) is not None

    async def put_file(
        self,
        key: str,
        path: Path,
        *,
        media_type: str | None,
        content_hash: str,
        dedup_guard: DedupGuard | None = None,
    ) -> StoredObject:
        """Upload ``path`` unless the key exists; the file is left for the caller to remove."""
        object_key = self.object_key(key)
        async with self._writing.hold(object_key):
            upload = _Upload(object_key, path, media_type, content_hash)
            head = await self._head(object_key)
            if head is not None and await self._reuse(upload, head, dedup_guard):
                return StoredObject(key=key, uri=self.uri_for(key), created=False)
            created = await self._upload(upload)
        return StoredObject(key=key, uri=self.uri_for(key), created=created)

    async def _reuse(
        self, upload: _Upload, head: HeadObjectOutputTypeDef, guard: DedupGuard | None
    ) -> bool:
        """A dedup hit: True to rely on the object, False when it is gone (upload it again).

        An object younger than `REFRESH_AFTER` is neither refreshed nor guarded: garbage
        collection refuses grace periods shorter than that plus an hour, so no GC cutoff
        reaches it before its artifact row commits. An older one is refreshed inside the
        guard, and the self-copy that refreshes it is also the check that it is still there.
        """
        if datetime.now(UTC) - head["LastModified"] < REFRESH_AFTER:
            return True
        async with guarded(guard, upload.content_hash):
            return await self._refresh(upload, head)

    async def _upload(self, upload: _Upload, *, overwrite: bool = False) -> bool:
        """Upload the file: False when the key already exists, unless ``overwrite``, which
        rewrites the object whatever is there (the same bytes, under a content address)."""
        try:
            size = await anyio.to_thread.run_sync(lambda: upload.path.stat().st_size)
        except OSError as exc:
            raise os_error(exc, f"reading {upload.path}") from exc
        headers: dict[str, Any] = {
            "ContentType": upload.media_type or "application/octet-stream",
            "Metadata": {"sha256": upload.content_hash},
            "CacheControl": CACHE_CONTROL,
        }
        if size >= self._threshold:
            return await self._put_multipart(upload, size, headers, overwrite=overwrite)
        if self._send_checksum:
            headers["ChecksumSHA256"] = _b64(bytes.fromhex(upload.content_hash))
        put = partial(self._put_object, upload.object_key, upload.path, headers)
        return await self._run(
            f"uploading {upload.object_key}",
            partial(self._write, put, overwrite=overwrite),
            writes=True,
        )

    # -- blocking bodies, run in worker threads ------------------------------------------------

    def _put_object(
        self, object_key: str, path: Path, headers: Mapping[str, Any], condition: dict[str, Any]
    ) -> None:
        with path.open("rb") as body:
            self._client.put_object(
                Bucket=self.bucket, Key=object_key, Body=body, **headers, **condition
            )

    def _write(self, write: Callable[[dict[str, Any]], object], *, overwrite: bool) -> bool:
        if not overwrite:
            return self._create_if_absent(write)
        write({})
        return True

    def _create_if_absent(self, write: Callable[[dict[str, Any]], object]) -> bool:
        """Run a write under ``If-None-Match: *``; False when the key already exists (412)."""
        condition: dict[str, Any] = {"IfNoneMatch": "*"} if self._conditional else {}
        try:
            write(condition)
        except botocore.exceptions.ClientError as exc:
            if _status(exc) == 412:
                return False
            if _status(exc) != 501 or not condition:
                raise
            write({})  # still failing: the condition was not (only) what the server lacks
            log.warning("storage.s3_conditional_writes_unsupported", endpoint=self._endpoint)
            self._conditional = False
        return True

    def _head_sync(self, object_key: str) -> HeadObjectOutputTypeDef | None:
        try:
            return self._client.head_object(Bucket=self.bucket, Key=object_key)
        except botocore.exceptions.ClientError as exc:
            if _status(exc) == 404:
                return None
            raise

    def _upload_part(
        self, object_key: str, upload_id: str, path: Path, number: int, offset: int, length: int
    ) -> CompletedPartTypeDef:
        with path.open("rb") as source:
            source.seek(offset)
            data = source.read(length)
        extra: dict[str, Any] = {}
        if self._send_checksum:
            extra["ChecksumSHA256"] = _b64(hashlib.sha256(data).digest())
        response = self._client.upload_part(
            Bucket=self.bucket,
            Key=object_key,
            UploadId=upload_id,
            PartNumber=number,
            Body=data,
            **extra,
        )
        part: CompletedPartTypeDef = {"PartNumber": number, "ETag": response["ETag"]}
        if self._send_checksum:
            part["ChecksumSHA256"] = extra["ChecksumSHA256"]
        return part

    # -- async plumbing ------------------------------------------------------------------------

    async def _run(self, doing: str, call: Callable[[], T], *, writes: bool = False) -> T:
        """Run one boto3 call in a worker thread, translating its errors in that thread.

        ``writes`` marks the upload calls, whose 400/501 answers mean a feature the server
        lacks rather than a bad blob (see `_unsupported`).
        """

        def guarded() -> T:
            try:
                return call()
            except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
                raise self._translate(exc, doing, writes=writes) from exc
            except OSError as exc:
                raise os_error(exc, doing) from exc

        return await anyio.to_thread.run_sync(guarded, limiter=self._limiter)

    def _translate(self, exc: Exception, doing: str, *, writes: bool = False) -> StorageError:
        where = f"{doing} (s3://{self.bucket}, endpoint {self._endpoint})"
        if isinstance(exc, _NO_CREDENTIALS):
            return BackendMisconfigured(
                f"{where}: no AWS credentials found; set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
            )
        if not isinstance(exc, botocore.exceptions.ClientError):
            detail = _URL_QUERY.sub(lambda m: f"{m['url']}?…", str(exc))
            return StorageUnavailable(f"{where}: cannot reach S3: {detail}")
        status, code = _status(exc), _code(exc)
        if code == "NoSuchBucket" or (status == 404 and doing == BUCKET_CHECK):
            return BackendMisconfigured(
                f"S3 bucket {self.bucket!r} does not exist at endpoint {self._endpoint}: "
                "create it or fix STORAGE_URL"
            )
        if status == 403 or code in _DENIED_CODES:
            return BackendMisconfigured(
                f"{where}: access denied ({code or status}); check the AWS credentials and the "
                "bucket policy"
            )
        if code in _RETRYABLE_CODES or status in _RETRYABLE_STATUS:
            return StorageUnavailable(f"{where}: S3 answered {code or status} (HTTP {status})")
        if writes and status in _UNSUPPORTED_STATUS:
            return self._unsupported(where, code, status)
        # Any other answer is still the store's, not the file's: retryable, like every
        # storage-side failure (storage.errors), so an operator can fix the store while the
        # job waits; one that persists spends the job's error budget and then fails it.
        return StorageUnavailable(f"{where}: S3 answered {code or status} (HTTP {status}): {exc}")

    def _unsupported(self, where: str, code: str, status: int) -> BackendMisconfigured:
        """An S3-compatible server refusing an upload feature (the SHA-256 checksum header,
        conditional writes): an operator fixes the store or the setting, the job waits.

        Failing the job instead would throw away a finished, paid generation.
        """
        hint = (
            "set POLLER_S3_SEND_CHECKSUM=false if this server does not support the "
            "x-amz-checksum-sha256 header"
            if self._send_checksum
            else "this server may not support conditional writes (If-None-Match)"
        )
        return BackendMisconfigured(
            f"{where}: S3 answered {code or status} (HTTP {status}) to an upload: {hint}"
        )

    async def _head(self, object_key: str) -> HeadObjectOutputTypeDef | None:
        return await self._run(
            "checking for an existing blob", partial(self._head_sync, object_key)
        )

    async def _refresh(self, upload: _Upload, head: HeadObjectOutputTypeDef) -> bool:
        """Reset the re-used object's LastModified, so GC's grace period restarts; False
        when the object vanished since the HEAD (GC deleted it first: upload it again).

        A self-copy is cheapest, since no bytes travel. Where it cannot serve (an object
        larger than one CopyObject may copy, or a copy that failed: throttled, refused by
        an S3-compatible server) the file in hand is uploaded over the object: the same
        bytes, a new LastModified. If that fails too the error goes to the job, which
        retries; relying on the old object would let GC delete it before the artifact row
        that references it commits.
        """
        if head.get("ContentLength", 0) <= MAX_COPY_BYTES:
            copy = partial(self._copy_onto_itself, upload.object_key, head)
            try:
                return await self._run("refreshing a re-used blob", copy)
            except StorageError as exc:
                log.warning("storage.s3_refresh_copy_failed", key=upload.object_key, error=str(exc))
        await self._upload(upload, overwrite=True)
        return True

    def _copy_onto_itself(self, object_key: str, head: HeadObjectOutputTypeDef) -> bool:
        try:
            self._client.copy_object(
                Bucket=self.bucket,
                Key=object_key,
                CopySource={"Bucket": self.bucket, "Key": object_key},
                MetadataDirective="REPLACE",
                Metadata=head.get("Metadata", {}),
                ContentType=head.get("ContentType", "application/octet-stream"),
                CacheControl=CACHE_CONTROL,
            )
        except botocore.exceptions.ClientError as exc:
            if _code(exc) == "NoSuchKey" or (_status(exc) == 404 and _code(exc) != "NoSuchBucket"):
                return False
            raise
        return True

    async def _put_multipart(
        self, upload: _Upload, size: int, headers: Mapping[str, Any], *, overwrite: bool
    ) -> bool:
        object_key = upload.object_key
        extra: dict[str, Any] = {"ChecksumAlgorithm": "SHA256"} if self._send_checksum else {}
        start = partial(
            self._client.create_multipart_upload,
            Bucket=self.bucket,
            Key=object_key,
            **headers,
            **extra,
        )
        started = await self._run("starting a multipart upload", start, writes=True)
        upload_id = started["UploadId"]
        try:
            parts = await self._upload_parts(object_key, upload_id, upload.path, size)
            complete = partial(self._complete, object_key, upload_id, parts)
            created = await self._run(
                "completing a multipart upload",
                partial(self._write, complete, overwrite=overwrite),
                writes=True,
            )
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._abort(object_key, upload_id)
            raise
        if not created:
            await self._abort(object_key, upload_id)
        return created

    def _complete(
        self,
        object_key: str,
        upload_id: str,
        parts: list[CompletedPartTypeDef],
        condition: dict[str, Any],
    ) -> None:
        self._client.complete_multipart_upload(
            Bucket=self.bucket,
            Key=object_key,
            UploadId=upload_id,
            MultipartUpload={"Parts": parts},
            **condition,
        )

    async def _upload_parts(
        self, object_key: str, upload_id: str, path: Path, size: int
    ) -> list[CompletedPartTypeDef]:
        """Upload parts a few at a time; the first failure stops scheduling more."""
        part_bytes = max(self._part_bytes, -(-size // MAX_PARTS))
        done: dict[int, CompletedPartTypeDef] = {}
        failures: list[StorageError] = []
        slots = anyio.Semaphore(PART_CONCURRENCY)

        async def upload(number: int, offset: int) -> None:
            length = min(part_bytes, size - offset)
            call = partial(self._upload_part, object_key, upload_id, path, number, offset, length)
            try:
                done[number] = await self._run(f"uploading part {number}", call, writes=True)
            except StorageError as exc:
                failures.append(exc)
            finally:
                slots.release()

        async with anyio.create_task_group() as group:
            for number, offset in enumerate(range(0, size, part_bytes), start=1):
                await slots.acquire()
                if failures:
                    slots.release()
                    break
                group.start_soon(upload, number, offset)
        if failures:
            raise failures[0]
        return [done[number] for number in sorted(done)]

    async def _abort(self, object_key: str, upload_id: str) -> None:
        abort = partial(
            self._client.abort_multipart_upload,
            Bucket=self.bucket,
            Key=object_key,
            UploadId=upload_id,
        )
        try:
            await self._run("aborting a multipart upload", abort)
        except StorageError as exc:  # a lifecycle rule reaps what we could not abort
            log.warning("storage.s3_abort_failed", key=object_key, error=str(exc))

    async def iter_blobs(self) -> AsyncIterator[BlobInfo]:
        """Every blob under the prefix, one listing page (≤1000 keys) per thread hop."""
        token: str | None = None
        while True:
            page = await self._run("listing blobs", partial(self._list_page, token))
            for item in page.get("Contents", []):
                info = self._blob_info(item.get("Key", ""), item)
                if info is not None:
                    yield info
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return

    def _list_page(self, token: str | None) -> Any:
        prefix = f"{self._base}sha256/"
        if token is None:
            return self._client.list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return self._client.list_objects_v2(
            Bucket=self.bucket, Prefix=prefix, ContinuationToken=token
        )

    def _blob_info(self, object_key: str, item: Mapping[str, Any]) -> BlobInfo | None:
        key = object_key[len(self._base) :]
        digest = content_hash_of(key)
        if digest is None:
            return None
        return BlobInfo(
            key=key,
            uri=f"s3://{self.bucket}/{object_key}",
            content_hash=digest,
            size_bytes=int(item.get("Size", 0)),
            modified_at=item["LastModified"],
        )

    async def stat(self, key: str) -> BlobInfo | None:
        """The object's size and LastModified now (a dedup hit may have refreshed it)."""
        object_key = self.object_key(key)
        head = await self._head(object_key)
        if head is None:
            return None
        return self._blob_info(
            object_key, {"Size": head["ContentLength"], "LastModified": head["LastModified"]}
        )

    async def delete(self, key: str) -> None:
        """Delete one blob (garbage collection only); S3 deletes are idempotent."""
        call = partial(self._client.delete_object, Bucket=self.bucket, Key=self.object_key(key))
        await self._run(f"deleting {key}", call)

    async def aclose(self) -> None:
        await anyio.to_thread.run_sync(self._client.close)
