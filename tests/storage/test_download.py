"""Downloads against real loopback HTTP(S) servers: policy, limits, timeouts, type checks."""

from __future__ import annotations

import errno
import gzip
import re
import time
from collections.abc import Mapping
from pathlib import Path

import anyio
import pytest

import storage.spool
from storage import DownloadHooks, open_storage
from storage.errors import (
    BlockedURL,
    ContentRejected,
    DiskFull,
    DownloadError,
    DownloadThrottled,
    DownloadTimeout,
    DownloadUnavailable,
    OutputGone,
    TooLarge,
)
from tests.storage.helpers import (
    CertAuthority,
    assert_nothing_stored,
    fixture,
    guarded_hooks,
    local_config,
    png,
    png_header_only,
    sha256,
)
from tests.storage.httpserver import Exchange, LoopbackServer, Route, serve

pytestmark = pytest.mark.anyio

MiB = 1024 * 1024


def body(data: bytes, *, status: int = 200, headers: Mapping[str, str] | None = None) -> Route:
    def route(exchange: Exchange) -> None:
        exchange.head(status, {"Content-Length": str(len(data)), **(headers or {})})
        exchange.write(data)

    return route


def redirect(location: str, status: int = 302) -> Route:
    return body(b"", status=status, headers={"Location": location})


def endless(
    chunk: bytes = b"x" * 65536,
    *,
    delay_s: float = 0.0,
    headers: Mapping[str, str] | None = None,
    prefix: bytes = b"",
) -> Route:
    """A body that never ends (framed by connection close unless headers say otherwise)."""

    def route(exchange: Exchange) -> None:
        exchange.head(200, dict(headers or {}))
        if prefix and not exchange.write(prefix):
            return
        while not exchange.stopping.is_set() and exchange.write(chunk):
            if delay_s:
                time.sleep(delay_s)

    return route


def stall_after(prefix: bytes) -> Route:
    def route(exchange: Exchange) -> None:
        exchange.head(200, {"Content-Length": str(len(prefix) + 100)})
        exchange.write(prefix)
        exchange.stopping.wait(10)

    return route


def root_of(tmp_path: Path) -> Path:
    return tmp_path / "root"


# -- the happy path ------------------------------------------------------------------------------


async def test_download_stores_sniffed_type_metadata_and_filename(
    http_server: LoopbackServer, tmp_path: Path
) -> None:
    data = png(64, 48)
    http_server.routes["/files/out-0.png"] = body(data, headers={"Content-Type": "text/plain"})
    async with open_storage(local_config(root_of(tmp_path))) as ingestor:
        blob = await ingestor.ingest_url(
            http_server.url("/files/out-0.png?token=secret"), expected_kind="image"
        )

    assert blob.media_type == "image/png"  # sniffed, not the declared text/plain
    assert (blob.content_hash, blob.size_bytes, blob.created) == (sha256(data), len(data), True)
    assert blob.filename == "out-0.png"
    assert blob.metadata["width"] == 64 and blob.metadata["height"] == 48
    assert await anyio.Path(blob.uri).read_bytes() == data
    assert blob.uri == str(root_of(tmp_path) / blob.key)
    sent = http_server.requests[0].headers
    assert sent["Accept-Encoding"] == "identity"
    assert "Authorization" not in sent


async def test_identical_content_from_two_urls_is_stored_once(
    http_server: LoopbackServer, tmp_path: Path
) -> None:
    data = png(30, 30, "white")
    http_server.routes["/a/first"] = body(data)
    http_server.routes["/b/second.png"] = body(data)
    async with open_storage(local_config(root_of(tmp_path))) as ingestor:
        first = await ingestor.ingest_url(http_server.url("/a/first"), expected_kind="image")
        second = await ingestor.ingest_url(http_server.url("/b/second.png"), expected_kind=None)

    assert (first.created, second.created) == (True, False)
    assert first.uri == second.uri
    assert (first.filename, second.filename) == ("first.png", "second.png")


async def test_caller_headers_reach_the_original_origin_only(
    http_server: LoopbackServer, tmp_path: Path
) -> None:
    with serve() as other:
        other.routes["/file.png"] = body(png())
        http_server.routes["/start"] = redirect(other.url("/file.png"))
        async with open_storage(local_config(root_of(tmp_path))) as ingestor:
            await ingestor.ingest_url(
                http_server.url("/start"),
                expected_kind="image",
                headers={"Authorization": "Bearer provider-token", "Accept-Encoding": "gzip"},
            )
        assert http_server.requests[0].headers["Authorization"] == "Bearer provider-token"
        assert http_server.requests[0].headers["Accept-Encoding"] == "identity"
        assert "Authorization" not in other.requests[0].headers


# -- size caps -----------------------------------------------------------------------------------


async def test_content_length_over_the_cap_is_refused_before_reading(
    http_server: LoopbackServer, tmp_path: Path
) -> None:
    http_server.routes["/big"] = body(b"x" * (2 * MiB))
    config = local_config(root_of(tmp_path), max_download_bytes=MiB)
    async with open_storage(config) as ingestor:
        with pytest.raises(TooLarge) as caught:
            await ingestor.ingest_url(http_server.url("/big"), expected_kind=None)
        await assert_nothing_stored(ingestor, root_of(tmp_path) / ".tmp")
    assert str(caught.value) == (
        "result is 2.0 MiB, over the 1.0 MiB limit (POLLER_MAX_DOWNLOAD_BYTES)"
    )


async def test_cap_without_content_length_stops_streaming(
    http_server: LoopbackServer, tmp_path: Path
) -> None:
    http_server.routes["/endless"] = endless()
    config = local_config(root_of(tmp_path), max_download_bytes=MiB)
    async with open_storage(config) as ingestor:
        with pytest.raises(TooLarge, match=r"larger than the 1\.0 MiB limit"):
            await ingestor.ingest_url(http_server.url("/endless"), expected_kind=None)
        await assert_nothing_stored(ingestor, root_of(tmp_path) / ".tmp")


async def test_a_short_content_length_bounds_what_is_read(
    http_server: LoopbackServer, tmp_path: Path
) -> None:
    payload = bytes(range(256)) * 4
    http_server.routes["/liar"] = endless(payload, headers={"Content-Length": "1000"})
    config = local_config(root_of(tmp_path), max_download_bytes=MiB)
    async with open_storage(config) as ingestor:
        blob = await ingestor.ingest_url(http_server.url("/liar"), expected_kind=None)
    assert blob.size_bytes == 1000
    assert await anyio.Path(blob.uri).read_bytes() == payload[:1000]


async def test_a_body_shorter_than_content_length_is_a_retryable_failure(
    http_server: LoopbackServer, tmp_path: Path
) -> None:
    def truncated(exchange: Exchange) -> None:
        exchange.head(200, {"Content-Length": "5000"})
        exchange.write(b"y" * 1000)

    http_server.routes["/short"] = truncated
    async with open_storage(local_config(root_of(tmp_path))) as ingestor:
        with pytest.raises(DownloadUnavailable) as caught:
            await ingestor.ingest_url(http_server.url("/short"), expected_kind=None)
        await assert_nothing_stored(ingestor, root_of(tmp_path) / ".tmp")
    assert caught.value.retryable


# -- encodings and content checks ------------------------------------------------------------------


async def test_gzip_transfer_encoding_is_refused_not_inflated(
    http_server: LoopbackServer, tmp_path: Path
) -> None:
    bomb = gzip.compress(b"\0" * (64 * MiB))
    assert len(bomb) < MiB
    http_server.routes["/bomb.png"] = body(
        bomb, headers={"Content-Encoding": "gzip", "Content-Type": "image/png"}
    )
    async with open_storage(local_config(root_of(tmp_path))) as ingestor:
        with pytest.raises(ContentRejected, match="Content-Encoding 'gzip'"):
            await ingestor.ingest_url(http_server.url("/bomb.png"), expected_kind="image")
        await assert_nothing_stored(ingestor, root_of(tmp_path) / ".tmp")


async def test_gzip_entity_is_stored_as_is(http_server: LoopbackServer, tmp_path: Path) -> None:
    archive = gzip.compress(b"\0" * (8 * MiB))
    http_server.routes["/data.gz"] = body(archive)
    async with open_storage(local_config(root_of(tmp_path))) as ingestor:
        blob = await ingestor.ingest_url(http_server.url("/data.gz"), expected_kind=None)
    assert (blob.media_type, blob.size_bytes) == ("application/gzip", len(archive))
    assert blob.content_hash == sha256(archive)


async def test_html_error_page_is_not_an_image_and_aborts_early(
    http_server: LoopbackServer, tmp_path: Path
) -> None:
    page = b"<!DOCTYPE html><html><title>403 Forbidden</title>" + b" " * 65536
    http_server.routes["/image.png"] = endless(page, headers={"Content-Type": "image/png"})
    async with open_storage(local_config(root_of(tmp_path))) as ingestor:
        with pytest.raises(ContentRejected) as caught:
            await ingestor.ingest_url(http_server.url("/image.png"), expected_kind="image")
        await assert_nothing_stored(ingestor, root_of(tmp_path) / ".tmp")
    assert str(caught.value) == (
        "expected an image but the content is text/html (starts with "
        "'<!DOCTYPE html><html><title>403 Forbidden</title>…'), probably an error page"
    )
    exchange = http_server.exchanges[0]
    assert await anyio.to_thread.run_sync(exchange.done.wait, 10)
    assert exchange.sent < 32 * MiB  # the endless page was abandoned after its first bytes


async def test_wrong_media_kind_is_rejected(http_server: LoopbackServer, tmp_path: Path) -> None:
    http_server.routes["/song.mp3"] = body(png())
    async with open_storage(local_config(root_of(tmp_path))) as ingestor:
        with pytest.raises(ContentRejected) as caught:
            await ingestor.ingest_url(http_server.url("/song.mp3"), expected_kind="audio")
        await assert_nothing_stored(ingestor, root_of(tmp_path) / ".tmp")
    assert str(caught.value) == "expected audio but the content is image/png, which is an image"
    assert not caught.value.retryable


async def test_audio_in_a_video_container_is_audio_after_the_download(
    http_server: LoopbackServer, tmp_path: Path
) -> None:
    """Replicate audio models return .mp4 audio: the first 8 KiB say video/mp4, so the check
    for an audio job waits for the metadata parse, which finds no video track."""
    http_server.routes["/out.mp4"] = body(fixture("tone-aac.mp4"))
    http_server.routes["/clip.mp4"] = body(fixture("clip.mp4"))
    async with open_storage(local_config(root_of(tmp_path))) as ingestor:
        blob = await ingestor.ingest_url(http_server.url("/out.mp4"), expected_kind="audio")
        assert (blob.media_type, blob.filename, blob.extension) == ("audio/mp4", "out.mp4", "m4a")
        assert blob.metadata["codec"] == "aac" and "width" not in blob.metadata
        with pytest.raises(ContentRejected) as as_video:
            await ingestor.ingest_url(http_server.url("/out.mp4"), expected_kind="video")
        with pytest.raises(ContentRejected) as as_audio:
            await ingestor.ingest_url(http_server.url("/clip.mp4"), expected_kind="audio")
        assert [b.content_hash async for b in ingestor.store.iter_blobs()] == [blob.content_hash]
        assert [entry async for entry in anyio.Path(root_of(tmp_path) / ".tmp").iterdir()] == []
    assert str(as_video.value) == (
        "expected a video but the file has no video track (audio only, audio/mp4)"
    )
    assert str(as_audio.value) == "expected audio but the content is video/mp4, which is a video"


async def test_zero_bytes_are_rejected(http_server: LoopbackServer, tmp_path: Path) -> None:
    http_server.routes["/empty"] = body(b"")
    async with open_storage(local_config(root_of(tmp_path))) as ingestor:
        with pytest.raises(ContentRejected, match=r"^the result is empty \(0 bytes\)$"):
            await ingestor.ingest_url(http_server.url("/empty"), expected_kind="image")
        await assert_nothing_stored(ingestor, root_of(tmp_path) / ".tmp")


@pytest.mark.parametrize(("width", "height"), [(100_000, 100_000), (10_000, 10_000)])
async def test_pillow_decompression_bombs_are_rejected(
    http_server: LoopbackServer, tmp_path: Path, width: int, height: int
) -> None:
    http_server.routes["/bomb.png"] = body(png_header_only(width, height))
    async with open_storage(local_config(root_of(tmp_path))) as ingestor:
        with pytest.raises(ContentRejected, match=r"decompression.bomb"):
            await ingestor.ingest_url(http_server.url("/bomb.png"), expected_kind="image")
        await assert_nothing_stored(ingestor, root_of(tmp_path) / ".tmp")


# -- HTTP statuses and transport failures ----------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error", "retryable"),
    [
        (403, OutputGone, False),
        (404, OutputGone, False),
        (410, OutputGone, False),
        (429, DownloadThrottled, True),
        (500, DownloadUnavailable, True),
        (503, DownloadUnavailable, True),
        (400, DownloadError, False),
    ],
)
async def test_statuses_map_to_errors(
    http_server: LoopbackServer,
    tmp_path: Path,
    status: int,
    error: type[DownloadError],
    retryable: bool,
) -> None:
    http_server.routes["/x"] = body(b"nope", status=status)
    async with open_storage(local_config(root_of(tmp_path))) as ingestor:
        with pytest.raises(error, match=f"HTTP {status}") as caught:
            await ingestor.ingest_url(http_server.url("/x"), expected_kind=None)
        await assert_nothing_stored(ingestor, root_of(tmp_path) / ".tmp")
    assert type(caught.value) is error
    assert caught.value.retryable is retryable


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [
        ("7", 7.0),
        ("0.5", 0.5),
        ("-3", 0.0),
        ("99999999", 3_600.0),
        (None, None),
        ("Wed, 21 Oct 2026 07:28:00 GMT", None),
        ("soon", None),
        ("nan", None),
    ],
)
async def test_a_cdn_429_carries_its_retry_after(
    http_server: LoopbackServer, tmp_path: Path, retry_after: str | None, expected: float | None
) -> None:
    headers = {"Retry-After": retry_after} if retry_after is not None else None
    http_server.routes["/busy"] = body(b"slow down", status=429, headers=headers)
    async with open_storage(local_config(root_of(tmp_path))) as ingestor:
        with pytest.raises(DownloadThrottled, match="HTTP 429") as caught:
            await ingestor.ingest_url(http_server.url("/busy"), expected_kind=None)
    assert caught.value.retry_after_s == expected


async def test_redirect_loops_stop(http_server: LoopbackServer, tmp_path: Path) -> None:
    http_server.routes["/loop"] = redirect("/loop")
    async with open_storage(local_config(root_of(tmp_path), max_redirects=3)) as ingestor:
        with pytest.raises(DownloadError, match="more than 3 redirects"):
            await ingestor.ingest_url(http_server.url("/loop"), expected_kind=None)
    assert http_server.paths() == ["/loop"] * 4


async def test_connection_refused_is_retryable(tmp_path: Path) -> None:
    with serve() as gone:
        url = gone.url("/x")
    async with open_storage(local_config(root_of(tmp_path))) as ingestor:
        with pytest.raises(DownloadUnavailable, match="cannot connect") as caught:
            await ingestor.ingest_url(url, expected_kind=None)
    assert caught.value.retryable


# -- timeouts: stalled, trickling (slow loris) and endless transfers -------------------------------


async def test_trickling_transfer_hits_the_throughput_floor(
    http_server: LoopbackServer, tmp_path: Path
) -> None:
    http_server.routes["/trickle"] = endless(b"z" * 100, delay_s=0.05)  # ~2 KB/s
    config = local_config(
        root_of(tmp_path),
        min_throughput_bytes_per_s=10 * 1024,
        throughput_window_s=0.4,
        throughput_grace_s=0.2,
    )
    started = time.monotonic()
    async with open_storage(config) as ingestor:
        with pytest.raises(
            DownloadTimeout, match=r"transfer too slow, under 10\.0 KiB/s"
        ) as caught:
            await ingestor.ingest_url(http_server.url("/trickle"), expected_kind=None)
        await assert_nothing_stored(ingestor, root_of(tmp_path) / ".tmp")
    assert time.monotonic() - started < 3
    assert caught.value.retryable


async def test_stalled_transfer_hits_the_read_timeout(
    http_server: LoopbackServer, tmp_path: Path
) -> None:
    http_server.routes["/stall"] = stall_after(b"x" * 10)
    config = local_config(root_of(tmp_path), read_timeout_s=0.3, min_throughput_bytes_per_s=0)
    async with open_storage(config) as ingestor:
        with pytest.raises(DownloadTimeout, match=r"no data received for 0\.3 s"):
            await ingestor.ingest_url(http_server.url("/stall"), expected_kind=None)
        await assert_nothing_stored(ingestor, root_of(tmp_path) / ".tmp")


async def test_endless_transfer_hits_the_total_deadline(
    http_server: LoopbackServer, tmp_path: Path
) -> None:
    http_server.routes["/slow"] = endless(b"s" * 4096, delay_s=0.01)
    config = local_config(root_of(tmp_path), total_timeout_s=0.5, min_throughput_bytes_per_s=0)
    started = time.monotonic()
    async with open_storage(config) as ingestor:
        with pytest.raises(DownloadTimeout) as caught:
            await ingestor.ingest_url(http_server.url("/slow"), expected_kind=None)
        await assert_nothing_stored(ingestor, root_of(tmp_path) / ".tmp")
    assert time.monotonic() - started < 3
    # What was received and the average rate: is the CDN slow or the deadline too short?
    shown = re.fullmatch(
        r"http://127\.0\.0\.1:\d+/slow: download did not finish within 0\.5 s \(total "
        r"deadline, POLLER_DOWNLOAD_TOTAL_TIMEOUT_S\): ([\d.]+) KiB received, "
        r"([\d.]+) KiB/s on average",
        str(caught.value),
    )
    assert shown is not None, str(caught.value)
    received_kib, rate_kib = (float(group) for group in shown.groups())
    assert received_kib >= 4  # at least one 4 KiB chunk arrived
    assert rate_kib == pytest.approx(received_kib / 0.5, abs=0.2)


async def test_cancellation_mid_transfer_leaves_nothing(
    http_server: LoopbackServer, tmp_path: Path
) -> None:
    http_server.routes["/slow"] = endless(b"c" * 65536, delay_s=0.005)
    async with open_storage(local_config(root_of(tmp_path))) as ingestor:
        with anyio.move_on_after(0.5) as scope:
            await ingestor.ingest_url(http_server.url("/slow"), expected_kind=None)
        assert scope.cancelled_caught
        await assert_nothing_stored(ingestor, root_of(tmp_path) / ".tmp")


# -- the address and scheme policy ---------------------------------------------------------------


async def test_plain_http_is_blocked_without_allow_private(
    http_server: LoopbackServer, tmp_path: Path
) -> None:
    http_server.routes["/x.png"] = body(png())
    config = local_config(root_of(tmp_path), allow_private_downloads=False)
    async with open_storage(config) as ingestor:
        with pytest.raises(BlockedURL, match="only https URLs") as caught:
            await ingestor.ingest_url(http_server.url("/x.png"), expected_kind="image")
    assert http_server.requests == []
    assert "POLLER_ALLOW_PRIVATE_DOWNLOADS" in str(caught.value)
    assert not caught.value.retryable


async def test_https_download_through_the_guard_pins_the_validated_address(
    https_server: LoopbackServer, cert_authority: CertAuthority, tmp_path: Path
) -> None:
    data = png(16, 16)
    https_server.routes["/out.png"] = body(data)
    config = local_config(root_of(tmp_path), allow_private_downloads=False)
    hooks = guarded_hooks(cert_authority, {"cdn.test": ["127.0.0.1"]})
    async with open_storage(config, hooks=hooks) as ingestor:
        blob = await ingestor.ingest_url(
            https_server.url("/out.png", host="cdn.test"), expected_kind="image"
        )
    assert blob.content_hash == sha256(data)
    assert https_server.requests[0].headers["Host"] == f"cdn.test:{https_server.port}"


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        (
            "https://evil.test:{port}/x",
            "evil.test resolves to 10.0.0.1, which is not a public address (private)",
        ),
        ("https://rebind.test:{port}/x", "rebind.test resolves to 10.0.0.1"),
        (
            "https://169.254.169.254/latest/meta-data/",
            "169.254.169.254 is not a public address (link-local)",
        ),
        ("https://127.0.0.2:{port}/x", "127.0.0.2 is not a public address (loopback)"),
        ("https://[::ffff:127.0.0.2]:{port}/x", "(loopback (embedded in ::ffff:7f00:2))"),
        ("https://[::1]:{port}/x", "::1 is not a public address (loopback)"),
        ("https://[64:ff9b::a00:1]:{port}/x", "(private (embedded in 64:ff9b::a00:1))"),
        ("http://cdn.test:{port}/x", "only https URLs"),
        ("https://user:pw@cdn.test:{port}/x", "user:password@"),
        ("file:///etc/passwd", "only https URLs"),
        # An invalid punycode label: httpx parses it and raised IDNAError on `.host`.
        ("https://xn--zz.test:{port}/x", "'xn--zz.test' is not a valid host name"),
    ],
)
async def test_redirects_to_forbidden_targets_are_blocked(
    https_server: LoopbackServer,
    cert_authority: CertAuthority,
    tmp_path: Path,
    location: str,
    reason: str,
) -> None:
    https_server.routes["/start"] = redirect(location.format(port=https_server.port))
    table = {
        "cdn.test": ["127.0.0.1"],
        "evil.test": ["10.0.0.1"],
        "rebind.test": ["127.0.0.1", "10.0.0.1"],
    }
    config = local_config(root_of(tmp_path), allow_private_downloads=False)
    async with open_storage(config, hooks=guarded_hooks(cert_authority, table)) as ingestor:
        with pytest.raises(BlockedURL, match=re.escape(reason)):
            await ingestor.ingest_url(
                https_server.url("/start", host="cdn.test"), expected_kind=None
            )
        await assert_nothing_stored(ingestor, root_of(tmp_path) / ".tmp")
    assert https_server.paths() == ["/start"]


async def test_loopback_is_blocked_with_the_real_resolver(
    https_server: LoopbackServer, cert_authority: CertAuthority, tmp_path: Path
) -> None:
    https_server.routes["/x.png"] = body(png())
    config = local_config(root_of(tmp_path), allow_private_downloads=False)
    hooks = DownloadHooks(ssl_context=cert_authority.client_context)
    async with open_storage(config, hooks=hooks) as ingestor:
        with pytest.raises(BlockedURL, match=r"localhost resolves to .*\(loopback\)"):
            await ingestor.ingest_url(
                https_server.url("/x.png", host="localhost"), expected_kind="image"
            )
    assert https_server.requests == []


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("data:image/png;base64,AAAA", "data: URLs are not downloaded"),
        ("https://", "no host"),
        ("not a url at all", "only https URLs"),
        ("https://exa mple.com/", "not a valid host name"),
        ("https://[::1/", "not a valid URL"),
        # Invalid punycode (A-labels): httpx parses them, then `.host` raised IDNAError,
        # which no caller expects from storage (the job failed as an internal error).
        ("https://xn--zz.com/a.png", "'xn--zz.com' is not a valid host name"),
        ("https://xn--/a.png", "'xn--' is not a valid host name"),
    ],
)
async def test_unusable_urls_are_blocked(tmp_path: Path, url: str, message: str) -> None:
    config = local_config(root_of(tmp_path), allow_private_downloads=False)
    async with open_storage(config) as ingestor:
        with pytest.raises(BlockedURL, match=message):
            await ingestor.ingest_url(url, expected_kind=None)


async def test_unknown_expected_kind_is_rejected_before_any_request(
    http_server: LoopbackServer, tmp_path: Path
) -> None:
    async with open_storage(local_config(root_of(tmp_path))) as ingestor:
        with pytest.raises(ContentRejected, match="media kind 'text'"):
            await ingestor.ingest_url(http_server.url("/x"), expected_kind="text")
    assert http_server.requests == []


async def test_a_write_error_in_the_hashing_thread_stops_the_download(
    http_server: LoopbackServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(fd: int, chunks: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(storage.spool, "write_all", disk_full)
    http_server.routes["/endless"] = endless()
    async with open_storage(local_config(root_of(tmp_path))) as ingestor:
        with pytest.raises(DiskFull, match="no space left") as caught:
            await ingestor.ingest_url(http_server.url("/endless"), expected_kind=None)
        await assert_nothing_stored(ingestor, root_of(tmp_path) / ".tmp")
    assert caught.value.retryable
