"""S3-only behaviour against moto's server: start-up checks, multipart, metadata, errors."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import botocore.exceptions
import pytest
from botocore.awsrequest import AWSPreparedRequest, AWSResponse, HTTPHeaders
from structlog.testing import capture_logs

import storage.s3
from storage import StorageConfig, key_for, open_storage
from storage.errors import BackendMisconfigured, StorageError, StorageUnavailable
from storage.s3 import S3BlobStore
from tests.storage.helpers import RecordingGuard, png, sha256

if TYPE_CHECKING:
    from types_boto3_s3.client import S3Client

pytestmark = pytest.mark.anyio

MiB = 1024 * 1024


def s3_config(endpoint: str, bucket: str, tmp_path: Path, **changes: Any) -> StorageConfig:
    settings: dict[str, Any] = {
        "storage_url": f"s3://{bucket}/media",
        "s3_endpoint_url": endpoint,
        "tmp_dir": tmp_path / "tmp",
    }
    return StorageConfig(**(settings | changes))


def multipart_config(endpoint: str, bucket: str, tmp_path: Path, **changes: Any) -> StorageConfig:
    """S3 storage that goes multipart above 5 MiB in 5 MiB parts (S3's smallest part)."""
    return s3_config(
        endpoint,
        bucket,
        tmp_path,
        s3_multipart_threshold_bytes=5 * MiB,
        s3_multipart_part_bytes=5 * MiB,
        **changes,
    )


async def test_missing_bucket_is_a_clear_start_up_error(
    s3_endpoint: str, aws_env: None, tmp_path: Path
) -> None:
    config = s3_config(s3_endpoint, "no-such-bucket", tmp_path)
    with pytest.raises(BackendMisconfigured) as caught:
        async with open_storage(config):
            pytest.fail("storage opened without a bucket")
    assert str(caught.value) == (
        f"S3 bucket 'no-such-bucket' does not exist at endpoint {s3_endpoint}: "
        "create it or fix STORAGE_URL"
    )


async def test_bucket_deleted_after_start_up_fails_puts_clearly(
    s3_endpoint: str, s3_client: S3Client, bucket: str, tmp_path: Path
) -> None:
    async with open_storage(s3_config(s3_endpoint, bucket, tmp_path)) as ingestor:
        s3_client.delete_bucket(Bucket=bucket)
        with pytest.raises(BackendMisconfigured, match=f"S3 bucket '{bucket}' does not exist"):
            await ingestor.ingest_bytes(png(), expected_kind="image")
        assert os.listdir(tmp_path / "tmp") == []


async def test_missing_credentials_are_named(
    s3_endpoint: str, aws_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(BackendMisconfigured, match="no AWS credentials found"):
        async with open_storage(s3_config(s3_endpoint, "any", tmp_path)):
            pytest.fail("storage opened without credentials")


async def test_unreachable_endpoint_is_retryable(aws_env: None, tmp_path: Path) -> None:
    config = s3_config("http://127.0.0.1:9", "bucket", tmp_path, connect_timeout_s=0.5)
    with pytest.raises(StorageUnavailable, match="cannot reach S3") as caught:
        async with open_storage(config):
            pytest.fail("storage opened without a server")
    assert caught.value.retryable


async def test_single_put_carries_type_hash_and_cache_headers(
    s3_endpoint: str, s3_client: S3Client, bucket: str, tmp_path: Path
) -> None:
    data = png(12, 12)
    async with open_storage(s3_config(s3_endpoint, bucket, tmp_path)) as ingestor:
        blob = await ingestor.ingest_bytes(data, expected_kind="image")
    assert blob.uri == f"s3://{bucket}/media/{blob.key}"
    head = s3_client.head_object(Bucket=bucket, Key=f"media/{blob.key}")
    assert head["ContentType"] == "image/png"
    assert head["Metadata"] == {"sha256": sha256(data)}
    assert head["CacheControl"] == "public, max-age=31536000, immutable"
    assert head["ContentLength"] == len(data)


async def test_large_files_use_multipart_with_the_hash_in_metadata(
    s3_endpoint: str, s3_client: S3Client, bucket: str, tmp_path: Path
) -> None:
    data = os.urandom(12 * MiB)
    config = multipart_config(s3_endpoint, bucket, tmp_path)
    async with open_storage(config) as ingestor:
        first = await ingestor.ingest_bytes(data, expected_kind=None)
        again = await ingestor.ingest_bytes(data, expected_kind=None)
    assert (first.created, again.created) == (True, False)
    key = f"media/{first.key}"
    head = s3_client.head_object(Bucket=bucket, Key=key)
    assert head["Metadata"] == {"sha256": hashlib.sha256(data).hexdigest()}
    assert head["ETag"].strip('"').endswith("-3")  # three parts: 5 + 5 + 2 MiB
    assert s3_client.get_object(Bucket=bucket, Key=key)["Body"].read() == data
    assert s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


async def test_concurrent_multipart_writers_end_with_one_object_and_no_open_uploads(
    s3_endpoint: str, s3_client: S3Client, bucket: str, tmp_path: Path
) -> None:
    data = os.urandom(11 * MiB)
    source = tmp_path / "source"
    source.write_bytes(data)
    digest = sha256(data)
    config = multipart_config(s3_endpoint, bucket, tmp_path)
    created: list[bool] = []
    async with open_storage(config) as ingestor:

        async def put() -> None:
            stored = await ingestor.store.put_file(
                key_for(digest), source, media_type=None, content_hash=digest
            )
            created.append(stored.created)

        async with anyio.create_task_group() as group:
            for _ in range(3):
                group.start_soon(put)
    assert sorted(created) == [False, False, True]
    assert s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert (
        s3_client.get_object(Bucket=bucket, Key=f"media/{key_for(digest)}")["Body"].read() == data
    )


@pytest.mark.parametrize("size", [1000, 6 * MiB])
async def test_a_replica_winning_between_head_and_put_means_dedup(
    s3_endpoint: str,
    s3_client: S3Client,
    bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    size: int,
) -> None:
    """HEAD saw nothing, then another replica stored the key: If-None-Match answers 412."""
    data = os.urandom(size)
    source = tmp_path / "source"
    source.write_bytes(data)
    digest = sha256(data)
    object_key = f"media/{key_for(digest)}"
    s3_client.put_object(Bucket=bucket, Key=object_key, Body=data, Metadata={"who": "replica"})
    config = multipart_config(s3_endpoint, bucket, tmp_path)
    async with open_storage(config) as ingestor:
        store = ingestor.store
        assert isinstance(store, S3BlobStore)

        async def missed(object_key: str) -> None:
            return None

        monkeypatch.setattr(store, "_head", missed)
        stored = await store.put_file(key_for(digest), source, media_type=None, content_hash=digest)
    assert not stored.created
    assert s3_client.head_object(Bucket=bucket, Key=object_key)["Metadata"] == {"who": "replica"}
    assert s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def refused_copy(object_key: str, head: Any) -> bool:
    raise client_error(503, "SlowDown")


async def old_blob(ingestor: Any, data: bytes, monkeypatch: pytest.MonkeyPatch) -> str:
    """Store ``data`` and make every blob count as old enough to need a refresh."""
    blob = await ingestor.ingest_bytes(data, expected_kind="image")
    monkeypatch.setattr(storage.s3, "REFRESH_AFTER", timedelta(0))
    await anyio.sleep(1.1)  # LastModified has one-second resolution
    return f"media/{blob.key}"


async def test_dedup_refreshes_an_old_objects_last_modified(
    s3_endpoint: str,
    s3_client: S3Client,
    bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = png(5, 5)
    async with open_storage(s3_config(s3_endpoint, bucket, tmp_path)) as ingestor:
        key = await old_blob(ingestor, data, monkeypatch)
        written = s3_client.head_object(Bucket=bucket, Key=key)["LastModified"]
        again = await ingestor.ingest_bytes(data, expected_kind="image")
    head = s3_client.head_object(Bucket=bucket, Key=key)
    assert not again.created
    assert head["LastModified"] > written
    assert head["Metadata"] == {"sha256": sha256(data)}
    assert head["ContentType"] == "image/png"


async def test_a_dedup_hit_on_a_young_object_takes_no_guard(
    s3_endpoint: str, bucket: str, tmp_path: Path
) -> None:
    """Nothing to refresh, and no GC cutoff reaches an object younger than REFRESH_AFTER:
    no database round trip for the common dedup of a fresh result."""
    guard = RecordingGuard()
    config = s3_config(s3_endpoint, bucket, tmp_path)
    async with open_storage(config, dedup_guard=guard) as ingestor:
        await ingestor.ingest_bytes(png(7, 7), expected_kind="image")
        again = await ingestor.ingest_bytes(png(7, 7), expected_kind="image")
    assert not again.created
    assert guard.entered == []


async def test_a_blob_deleted_between_head_and_refresh_is_uploaded_again(
    s3_endpoint: str,
    s3_client: S3Client,
    bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """GC deleted the object after our HEAD found it: the refresh copy gets 404, and a dedup
    answer would leave the new artifact row pointing at nothing."""
    data = png(6, 6)
    async with open_storage(s3_config(s3_endpoint, bucket, tmp_path)) as ingestor:
        blob = await ingestor.ingest_bytes(data, expected_kind="image")
        key = f"media/{blob.key}"
        store = ingestor.store
        assert isinstance(store, S3BlobStore)
        real_head = store._head

        async def head_then_gc(object_key: str) -> Any:
            found = await real_head(object_key)
            s3_client.delete_object(Bucket=bucket, Key=object_key)
            return found

        monkeypatch.setattr(storage.s3, "REFRESH_AFTER", timedelta(0))
        monkeypatch.setattr(store, "_head", head_then_gc)
        again = await ingestor.ingest_bytes(data, expected_kind="image")
    assert again.created
    assert s3_client.get_object(Bucket=bucket, Key=key)["Body"].read() == data


async def test_a_failed_refresh_copy_uploads_the_file_over_the_old_object(
    s3_endpoint: str,
    s3_client: S3Client,
    bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A throttled self-copy must not leave the re-used object with its old LastModified:
    GC could delete it before the new artifact row commits."""
    data = png(8, 8)
    async with open_storage(s3_config(s3_endpoint, bucket, tmp_path)) as ingestor:
        key = await old_blob(ingestor, data, monkeypatch)
        written = s3_client.head_object(Bucket=bucket, Key=key)["LastModified"]
        monkeypatch.setattr(ingestor.store, "_copy_onto_itself", refused_copy)
        with capture_logs() as logs:
            again = await ingestor.ingest_bytes(data, expected_kind="image")
    head = s3_client.head_object(Bucket=bucket, Key=key)
    assert not again.created
    assert head["LastModified"] > written
    assert head["Metadata"] == {"sha256": sha256(data)}
    assert s3_client.get_object(Bucket=bucket, Key=key)["Body"].read() == data
    assert [e["event"] for e in logs] == ["storage.s3_refresh_copy_failed"]
    assert "SlowDown" in logs[0]["error"]


async def test_a_refresh_that_cannot_copy_or_upload_fails_the_ingest_retryably(
    s3_endpoint: str,
    bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Relying on the unrefreshed object is what the refresh exists to avoid: the job
    retries later instead."""
    data = png(9, 9)
    async with open_storage(s3_config(s3_endpoint, bucket, tmp_path)) as ingestor:
        await old_blob(ingestor, data, monkeypatch)
        store = ingestor.store
        monkeypatch.setattr(store, "_copy_onto_itself", refused_copy)

        def refused_put(*args: Any) -> None:
            raise client_error(503, "SlowDown")

        monkeypatch.setattr(store, "_put_object", refused_put)
        with pytest.raises(StorageUnavailable) as caught:
            await ingestor.ingest_bytes(data, expected_kind="image")
    assert caught.value.retryable
    assert "uploading" in str(caught.value)
    assert os.listdir(tmp_path / "tmp") == []


async def test_an_object_too_large_to_copy_is_refreshed_by_a_multipart_upload(
    s3_endpoint: str,
    s3_client: S3Client,
    bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CopyObject takes sources up to 5 GiB; a larger object is refreshed by uploading the
    file again (multipart, without If-None-Match, which would answer 412)."""
    data = png(4, 4) + os.urandom(6 * MiB)
    config = multipart_config(s3_endpoint, bucket, tmp_path)
    async with open_storage(config) as ingestor:
        key = await old_blob(ingestor, data, monkeypatch)
        written = s3_client.head_object(Bucket=bucket, Key=key)["LastModified"]
        monkeypatch.setattr(storage.s3, "MAX_COPY_BYTES", 5 * MiB)
        copies: list[str] = []
        monkeypatch.setattr(ingestor.store, "_copy_onto_itself", lambda k, h: copies.append(k))
        again = await ingestor.ingest_bytes(data, expected_kind="image")
    head = s3_client.head_object(Bucket=bucket, Key=key)
    assert not again.created
    assert copies == []
    assert head["LastModified"] > written
    assert head["ContentLength"] == len(data)
    assert s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


async def test_iter_blobs_ignores_foreign_objects(
    s3_endpoint: str, s3_client: S3Client, bucket: str, tmp_path: Path
) -> None:
    digest = "a" * 64
    s3_client.put_object(Bucket=bucket, Key="media/sha256/aa/not-a-hash", Body=b"x")
    s3_client.put_object(Bucket=bucket, Key=f"media/sha256/bb/{digest}", Body=b"x")
    s3_client.put_object(Bucket=bucket, Key=f"elsewhere/sha256/aa/{digest}", Body=b"x")
    s3_client.put_object(Bucket=bucket, Key=f"media/sha256/aa/{digest}", Body=b"xyz")
    async with open_storage(s3_config(s3_endpoint, bucket, tmp_path)) as ingestor:
        listed = [info async for info in ingestor.store.iter_blobs()]
    assert [(i.key, i.size_bytes, i.uri) for i in listed] == [
        (f"sha256/aa/{digest}", 3, f"s3://{bucket}/media/sha256/aa/{digest}")
    ]


class _Body:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._data


def reject_checksums(store: S3BlobStore, status: int, code: str, seen: list[str]) -> None:
    """Act like an S3-compatible server without x-amz-checksum-sha256 support: answer every
    request that carries the header (or asks for the algorithm) with ``status``/``code``."""

    def handler(request: AWSPreparedRequest, **_: Any) -> AWSResponse | None:
        headers = {k.lower() for k in request.headers}
        if not headers & {"x-amz-checksum-sha256", "x-amz-checksum-algorithm"}:
            return None
        seen.append(f"{request.method} {request.url}")
        body = f"<Error><Code>{code}</Code><Message>unsupported header</Message></Error>"
        return AWSResponse(request.url, status, HTTPHeaders(), _Body(body.encode()))

    events: Any = store._client.meta.events  # typed for handlers returning None only
    events.register("before-send.s3", handler)


@pytest.mark.parametrize(("status", "code"), [(400, "InvalidArgument"), (501, "NotImplemented")])
@pytest.mark.parametrize("size", [1000, 6 * MiB])
async def test_a_server_rejecting_the_checksum_header_is_a_retryable_misconfiguration(
    s3_endpoint: str,
    s3_client: S3Client,
    bucket: str,
    tmp_path: Path,
    status: int,
    code: str,
    size: int,
) -> None:
    """Failing the job would throw away a finished, paid generation: retry, name the fix."""
    data = os.urandom(size)
    config = multipart_config(s3_endpoint, bucket, tmp_path)
    seen: list[str] = []
    async with open_storage(config) as ingestor:
        assert isinstance(ingestor.store, S3BlobStore)
        reject_checksums(ingestor.store, status, code, seen)
        with pytest.raises(BackendMisconfigured) as caught:
            await ingestor.ingest_bytes(data, expected_kind=None)
    assert seen
    assert caught.value.retryable
    assert "set POLLER_S3_SEND_CHECKSUM=false" in str(caught.value)
    assert ingestor.store._conditional  # a 501 to the checksum is not "no conditional writes"
    assert s3_client.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    assert s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


@pytest.mark.parametrize("size", [1000, 6 * MiB])
async def test_checksums_switched_off_reach_a_server_that_rejects_them(
    s3_endpoint: str, s3_client: S3Client, bucket: str, tmp_path: Path, size: int
) -> None:
    data = os.urandom(size)
    config = multipart_config(s3_endpoint, bucket, tmp_path, s3_send_checksum=False)
    seen: list[str] = []
    async with open_storage(config) as ingestor:
        assert isinstance(ingestor.store, S3BlobStore)
        reject_checksums(ingestor.store, 400, "InvalidArgument", seen)
        blob = await ingestor.ingest_bytes(data, expected_kind=None)
    assert seen == []
    assert blob.created
    assert s3_client.get_object(Bucket=bucket, Key=f"media/{blob.key}")["Body"].read() == data


def reject_conditional_writes(store: S3BlobStore, seen: list[str]) -> None:
    """Act like a server without conditional writes: 501 to any If-None-Match request."""

    def handler(request: AWSPreparedRequest, **_: Any) -> AWSResponse | None:
        if "If-None-Match" not in request.headers:
            return None
        seen.append(request.method)
        body = b"<Error><Code>NotImplemented</Code><Message>no conditions</Message></Error>"
        return AWSResponse(request.url, 501, HTTPHeaders(), _Body(body))

    events: Any = store._client.meta.events
    events.register("before-send.s3", handler)


@pytest.mark.parametrize("size", [1000, 6 * MiB])
async def test_without_conditional_writes_the_head_check_alone_is_used(
    s3_endpoint: str, s3_client: S3Client, bucket: str, tmp_path: Path, size: int
) -> None:
    """A 501 to If-None-Match is detected once; the write is repeated without it."""
    first, second = os.urandom(size), os.urandom(size)
    config = multipart_config(s3_endpoint, bucket, tmp_path)
    seen: list[str] = []
    async with open_storage(config) as ingestor:
        assert isinstance(ingestor.store, S3BlobStore)
        reject_conditional_writes(ingestor.store, seen)
        stored = [await ingestor.ingest_bytes(d, expected_kind=None) for d in (first, second)]
        again = await ingestor.ingest_bytes(first, expected_kind=None)
    assert len(seen) == 1  # detected once, never asked again
    assert [blob.created for blob in (*stored, again)] == [True, True, False]
    for blob, data in zip(stored, (first, second), strict=True):
        assert s3_client.get_object(Bucket=bucket, Key=f"media/{blob.key}")["Body"].read() == data
    assert s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


async def test_a_failed_part_aborts_the_multipart_upload(
    s3_endpoint: str,
    s3_client: S3Client,
    bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Open uploads are billed storage: a part answered 503 must not leave one behind."""
    async with open_storage(multipart_config(s3_endpoint, bucket, tmp_path)) as ingestor:
        store = ingestor.store
        assert isinstance(store, S3BlobStore)
        real_part = store._upload_part

        def part(key: str, upload: str, path: Path, number: int, offset: int, size: int) -> Any:
            if number == 2:
                raise client_error(503, "SlowDown")
            return real_part(key, upload, path, number, offset, size)

        monkeypatch.setattr(store, "_upload_part", part)
        with pytest.raises(StorageUnavailable, match="uploading part 2"):
            await ingestor.ingest_bytes(os.urandom(12 * MiB), expected_kind=None)
    assert s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert s3_client.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    assert os.listdir(tmp_path / "tmp") == []


async def test_cancellation_mid_parts_aborts_the_multipart_upload(
    s3_endpoint: str,
    s3_client: S3Client,
    bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A shutdown cancelling the job mid-upload: the abort still runs (shielded)."""
    parts: list[int] = []
    async with open_storage(multipart_config(s3_endpoint, bucket, tmp_path)) as ingestor:
        store = ingestor.store
        assert isinstance(store, S3BlobStore)
        real_part = store._upload_part
        with anyio.CancelScope() as scope:

            def part(key: str, upload: str, path: Path, number: int, offset: int, size: int) -> Any:
                parts.append(number)
                if number == 2:
                    anyio.from_thread.run_sync(scope.cancel)
                return real_part(key, upload, path, number, offset, size)

            monkeypatch.setattr(store, "_upload_part", part)
            await ingestor.ingest_bytes(os.urandom(16 * MiB), expected_kind=None)
    assert scope.cancelled_caught
    assert 2 in parts
    assert s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert s3_client.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    assert os.listdir(tmp_path / "tmp") == []


def client_error(status: int, code: str) -> botocore.exceptions.ClientError:
    metadata: Any = {
        "HTTPStatusCode": status,
        "HTTPHeaders": {},
        "HostId": "",
        "RequestId": "",
        "RetryAttempts": 0,
    }
    return botocore.exceptions.ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": metadata}, "PutObject"
    )


@pytest.mark.parametrize(
    ("status", "code", "error", "retryable"),
    [
        (503, "SlowDown", StorageUnavailable, True),
        (500, "InternalError", StorageUnavailable, True),
        (409, "ConditionalRequestConflict", StorageUnavailable, True),
        (400, "BadDigest", StorageUnavailable, True),
        (403, "AccessDenied", BackendMisconfigured, True),
        (404, "NoSuchBucket", BackendMisconfigured, True),
        (400, "InvalidArgument", StorageUnavailable, True),
        (416, "InvalidRange", StorageUnavailable, True),
    ],
)
async def test_s3_errors_are_translated(
    s3_endpoint: str,
    bucket: str,
    tmp_path: Path,
    status: int,
    code: str,
    error: type[StorageError],
    retryable: bool,
) -> None:
    async with open_storage(s3_config(s3_endpoint, bucket, tmp_path)) as ingestor:
        store = ingestor.store
        assert isinstance(store, S3BlobStore)

        def fail() -> None:
            raise client_error(status, code)

        with pytest.raises(error) as caught:
            await store._run("uploading", fail)
    assert type(caught.value) is error
    assert caught.value.retryable is retryable


@pytest.mark.parametrize(
    "exc_type",
    [
        botocore.exceptions.EndpointConnectionError,
        botocore.exceptions.ConnectTimeoutError,
        botocore.exceptions.ReadTimeoutError,
        botocore.exceptions.ConnectionClosedError,
    ],
)
async def test_transport_errors_lose_the_query_string(
    s3_endpoint: str,
    bucket: str,
    tmp_path: Path,
    exc_type: type[botocore.exceptions.BotoCoreError],
) -> None:
    """botocore quotes the request URL, query included (``?uploadId=…&partNumber=1``);
    storage messages reach last_error and logs and never carry query strings."""
    url = f"{s3_endpoint}/{bucket}/media/sha256/ab/abc?uploadId=UPLOAD-ID-42&partNumber=1"
    async with open_storage(s3_config(s3_endpoint, bucket, tmp_path)) as ingestor:
        store = ingestor.store
        assert isinstance(store, S3BlobStore)

        def fail() -> None:
            raise exc_type(endpoint_url=url, error="connection refused")

        with pytest.raises(StorageUnavailable) as caught:
            await store._run("uploading", fail)
    message = str(caught.value)
    assert "cannot reach S3" in message
    assert f"{bucket}/media/sha256/ab/abc?…" in message
    assert "UPLOAD-ID-42" not in message and "partNumber" not in message
