"""Shared HTTP helpers: Retry-After, status mapping, data: URLs, snippets, transport errors."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from pydantic import BaseModel

from providers import _http
from providers.errors import (
    ProviderAuthError,
    ProviderConnectError,
    ProviderProtocolError,
    ProviderRateLimited,
    ProviderRejected,
    ProviderUnavailable,
)

NOW = datetime(2025, 6, 1, 10, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("30", 30.0),
        (" 2.5 ", 2.5),
        ("0", 0.0),
        ("-5", 0.0),
        ("", None),
        (None, None),
        ("soon", None),
        ("nan", None),
        ("999999999", _http.MAX_RETRY_AFTER_S),
    ],
)
def test_retry_after_seconds(value: str | None, expected: float | None) -> None:
    assert _http.parse_retry_after(value, now=NOW.timestamp()) == expected


def test_retry_after_http_date() -> None:
    later = format_datetime(NOW + timedelta(seconds=90), usegmt=True)
    assert _http.parse_retry_after(later, now=NOW.timestamp()) == pytest.approx(90.0)
    earlier = format_datetime(NOW - timedelta(seconds=90), usegmt=True)
    assert _http.parse_retry_after(earlier, now=NOW.timestamp()) == 0.0


@pytest.mark.parametrize(
    "value",
    [
        "Sun, 01 Jun 2025 10:01:30 GMT",  # IMF-fixdate
        "Sunday, 01-Jun-25 10:01:30 GMT",  # obsolete RFC 850 form
        "Sun Jun  1 10:01:30 2025",  # obsolete asctime form: no zone, GMT by definition
    ],
)
def test_retry_after_accepts_all_three_http_date_forms(value: str) -> None:
    """RFC 9110 §5.6.7: a recipient MUST accept all three HTTP-date formats."""
    assert _http.parse_retry_after(value, now=NOW.timestamp()) == pytest.approx(90.0)


def test_retry_after_ms_header_wins() -> None:
    headers = httpx.Headers({"retry-after-ms": "1500", "retry-after": "9"})
    assert _http.retry_after_of(headers) == 1.5
    assert _http.retry_after_of(httpx.Headers({"retry-after": "9"})) == 9.0
    assert _http.retry_after_of(httpx.Headers()) is None


def test_data_url_decoding() -> None:
    payload = b"\x89PNG\r\n\x1a\n"
    url = "data:image/png;base64," + base64.b64encode(payload).decode()
    assert _http.decode_data_url(url) == (payload, "image/png")
    assert _http.decode_data_url("data:,hello%20world") == (b"hello world", None)
    assert _http.decode_data_url("DATA:text/plain;charset=utf-8,hi") == (b"hi", "text/plain")
    with pytest.raises(ValueError, match="base64"):
        _http.decode_data_url("data:image/png;base64,***")
    with pytest.raises(ValueError, match="not a data"):
        _http.decode_data_url("https://example.com/x.png")


@pytest.mark.parametrize(
    ("url", "base", "same"),
    [
        ("https://api.replicate.com/v1/files/x", "https://api.replicate.com", True),
        ("https://API.replicate.com:443/x", "https://api.replicate.com", True),
        ("https://replicate.delivery/pbxt/x.png", "https://api.replicate.com", False),
        ("http://api.replicate.com/x", "https://api.replicate.com", False),
        ("https://api.replicate.com.evil.example/x", "https://api.replicate.com", False),
        ("https://api.replicate.com:8443/x", "https://api.replicate.com", False),
        ("http://127.0.0.1:9000/files/a", "http://127.0.0.1:9000", True),
        ("data:image/png;base64,AAAA", "https://api.replicate.com", False),
        ("https://[::1", "https://api.replicate.com", False),
    ],
)
def test_same_origin(url: str, base: str, same: bool) -> None:
    assert _http.same_origin(url, base) is same
    headers = _http.headers_for(url, base, {"Authorization": "Bearer t"})
    assert bool(headers) is same


def test_snippet_redacts_and_shortens() -> None:
    raw = (
        b'{"detail": "bad token r8_ABCDEFGHijklmnop", "echo": "Bearer sk-secretvalue123",'
        b' "mine": "my-own-secret-key", "blob": "' + b"A" * 500 + b'"}\n\n'
    )
    text = _http.snippet(raw, ("my-own-secret-key",))
    assert "r8_ABCDEFGH" not in text
    assert "sk-secretvalue123" not in text
    assert "my-own-secret-key" not in text
    assert "<base64…>" in text
    assert "\n" not in text
    assert len(text) <= _http.SNIPPET_CHARS


def test_snippet_truncates_long_text() -> None:
    text = _http.snippet("x " * 1000)
    assert len(text) == _http.SNIPPET_CHARS
    assert text.endswith("…")


def _reply(status: int, content: bytes = b"{}", **headers: str) -> _http.Reply:
    return _http.Reply(
        status=status, headers=httpx.Headers(headers), content=content, url="https://x/y"
    )


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (400, ProviderRejected),
        (402, ProviderRejected),
        (404, ProviderRejected),
        (413, ProviderRejected),
        (422, ProviderRejected),
        (401, ProviderAuthError),
        (403, ProviderAuthError),
        (408, ProviderUnavailable),
        (429, ProviderRateLimited),
        (500, ProviderUnavailable),
        (502, ProviderUnavailable),
        (503, ProviderUnavailable),
        (302, ProviderProtocolError),
    ],
)
async def test_status_error_table(status: int, error_type: type[Exception]) -> None:
    async with httpx.AsyncClient() as client:
        edge = _http.Edge("vendor", client, ("tok",))
        error = edge.status_error(
            _reply(status, b'{"detail": "tok leaked"}', **{"retry-after": "7"})
        )
    assert type(error) is error_type
    assert "tok" not in str(error).replace("vendor", "")
    if isinstance(error, ProviderUnavailable):
        assert error.retry_after_s == 7.0
    assert error.retryable is (status in (408, 429, 500, 502, 503, 302))


@pytest.mark.anyio
@pytest.mark.parametrize("status", [408, 500, 503, 504])
async def test_transient_statuses_carry_the_retry_after_hint(status: int) -> None:
    """A 503 with ``Retry-After`` names the provider's own wait; the poller must see it."""
    async with httpx.AsyncClient() as client:
        edge = _http.Edge("vendor", client)
        hinted = edge.status_error(_reply(status, b"{}", **{"retry-after": "12"}))
        millis = edge.status_error(_reply(status, b"{}", **{"retry-after-ms": "1500"}))
        bare = edge.status_error(_reply(status))
    assert isinstance(hinted, ProviderUnavailable) and hinted.retry_after_s == 12.0
    assert isinstance(millis, ProviderUnavailable) and millis.retry_after_s == 1.5
    assert isinstance(bare, ProviderUnavailable) and bare.retry_after_s is None


def _edge_raising(exc: Exception) -> _http.Edge:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="https://x")
    return _http.Edge("vendor", client)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("exc", "error_type"),
    [
        (httpx.ConnectError("refused"), ProviderConnectError),
        (httpx.ConnectTimeout("slow"), ProviderConnectError),
        (httpx.PoolTimeout("busy"), ProviderConnectError),
        (httpx.ReadTimeout("slow"), ProviderUnavailable),
        (httpx.WriteTimeout("slow"), ProviderUnavailable),
        (httpx.ReadError("reset"), ProviderUnavailable),
        (httpx.RemoteProtocolError("bad"), ProviderUnavailable),
        (httpx.DecodingError("gzip"), ProviderProtocolError),
    ],
)
async def test_transport_errors_are_translated(exc: Exception, error_type: type[Exception]) -> None:
    edge = _edge_raising(exc)
    with pytest.raises(error_type) as caught:
        await edge.request("GET", "/status")
    assert type(caught.value) is error_type
    assert caught.value.__cause__ is exc
    await edge.client.aclose()


@pytest.mark.anyio
async def test_read_timeout_is_not_a_connect_error() -> None:
    edge = _edge_raising(httpx.ReadTimeout("slow"))
    with pytest.raises(ProviderUnavailable) as caught:
        await edge.request("POST", "/create")
    assert not isinstance(caught.value, ProviderConnectError)
    await edge.client.aclose()


@pytest.mark.anyio
async def test_reply_size_cap_by_header_and_by_stream() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(3):
            yield b"x" * 1024

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/declared":
            return httpx.Response(200, content=b"x" * 2048)
        return httpx.Response(200, content=chunks())  # no content-length

    async with httpx.AsyncClient(
        transport=httpx.MockTransport(handler), base_url="https://x"
    ) as client:
        edge = _http.Edge("vendor", client, max_reply_bytes=1500)
        for path in ("/declared", "/streamed"):
            with pytest.raises(ProviderRejected, match="larger than"):
                await edge.request("GET", path)


class _Model(BaseModel):
    id: str


@pytest.mark.anyio
async def test_json_and_model_errors_are_protocol_errors_with_snippets() -> None:
    async with httpx.AsyncClient() as client:
        edge = _http.Edge("vendor", client, ("s3cret-token",))
        with pytest.raises(ProviderProtocolError) as caught:
            edge.json(_reply(200, b"<html>s3cret-token oops</html>"))
        assert caught.value.snippet == "<html>*** oops</html>"
        assert caught.value.retryable
        with pytest.raises(ProviderProtocolError, match="id"):
            edge.model(_Model, {"name": "x"}, _reply(200))
        with pytest.raises(ProviderProtocolError, match="malformed JSON"):
            edge.json(_reply(200, b"[" * 100_000 + b"]" * 100_000))


def test_validate_params_rejects_bad_input() -> None:
    with pytest.raises(ProviderRejected, match="invalid input_params"):
        _http.validate_params(_Model, {"id": 5}, "vendor")
    assert _http.validate_params(_Model, {"id": "a"}, "vendor").id == "a"


def test_early_not_found_window() -> None:
    assert _http.early_not_found(5.0)
    assert not _http.early_not_found(30.0)
    assert not _http.early_not_found(None)


def test_file_name_and_media_type_guess() -> None:
    url = "https://replicate.delivery/xezq/AbC/output.mp4?sig=1"
    assert _http.filename_of(url) == "output.mp4"
    assert _http.guess_media_type(url) == "video/mp4"
    assert _http.guess_media_type("https://cdn.example/s/stream") is None
    assert _http.filename_of("https://cdn.example/") is None


def test_snippet_drops_the_query_of_signed_urls() -> None:
    """A reply of unexpected shape is quoted in last_error and logs; an output URL in it
    carries its signature in the query string."""
    raw = (
        b'{"output": "https://bucket.s3.amazonaws.com/o.png?X-Amz-Credential=AKIAEX'
        b'&X-Amz-Signature=f00dfeed", "alt": "https:\\/\\/cdn.example\\/a.mp3?sig=deadbeef",'
        b' "status": 7}'
    )
    text = _http.snippet(raw)
    assert "f00dfeed" not in text and "AKIAEX" not in text and "deadbeef" not in text
    assert "https://bucket.s3.amazonaws.com/o.png?…" in text
    assert "cdn.example\\/a.mp3?…" in text
    assert '"status": 7' in text
