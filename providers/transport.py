"""An httpx transport that puts provider API calls on the wire with aiohttp.

Why: on the 2-vCPU bench machine, polling the simulator's Replicate API with 256 requests in
flight costs 2.1 ms of CPU per poll through httpx's own transport (httpcore) and 0.45 ms
through aiohttp (docs/benchmarks.md, "HTTP client"). At thousands of polls a second that is
the difference between several cores and one. httpx stays the API the adapters and tests
see (auth flows, timeouts, ``MockTransport``); only the wire moves.

The part that matters for correctness is how failures are named. Only failures where the
request certainly never left (DNS, refused or timed-out connect, no pooled connection in
time) become `httpx.ConnectError` / `httpx.ConnectTimeout`, which the poller may retry even
for a submit. Anything after the request may have been sent (disconnects, resets, read
timeouts, broken bodies) becomes `httpx.ReadError` / `httpx.ReadTimeout` /
`httpx.RemoteProtocolError`: ambiguous, so a submit is never repeated after it.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager

import aiohttp
import httpx
import yarl

__all__ = ["AiohttpTransport"]

CHUNK_BYTES = 64 * 1024


@contextmanager
def _as_httpx_errors() -> Iterator[None]:
    """aiohttp's exceptions as the httpx ones that say whether the request may have left."""
    try:
        yield
    except aiohttp.ConnectionTimeoutError as exc:  # connecting, or waiting for the pool
        raise httpx.ConnectTimeout(f"connect timed out: {exc}") from exc
    except aiohttp.ClientConnectorError as exc:  # DNS, refused, TLS handshake
        raise httpx.ConnectError(f"cannot connect: {exc}") from exc
    except aiohttp.ServerTimeoutError as exc:  # read timeout (SocketTimeoutError and kin)
        raise httpx.ReadTimeout(f"read timed out: {exc}") from exc
    except aiohttp.ServerDisconnectedError as exc:
        raise httpx.RemoteProtocolError(f"server disconnected: {exc}") from exc
    except aiohttp.ClientPayloadError as exc:
        raise httpx.RemoteProtocolError(f"broken response body: {exc}") from exc
    except aiohttp.InvalidURL as exc:
        raise httpx.UnsupportedProtocol(f"invalid URL: {exc}") from exc
    except aiohttp.ClientResponseError as exc:  # unparseable status line or headers
        raise httpx.RemoteProtocolError(f"malformed response: {exc.message}") from exc
    except (aiohttp.ClientError, OSError) as exc:  # resets, broken pipes: maybe sent
        raise httpx.ReadError(f"connection failed: {type(exc).__name__}: {exc}") from exc


class _ResponseStream(httpx.AsyncByteStream):
    """The body as httpx reads it; the connection goes back to the pool only when drained."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _as_httpx_errors():
            async for chunk in self._response.content.iter_chunked(CHUNK_BYTES):
                yield chunk

    async def aclose(self) -> None:
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()  # never reuse a connection with unread bytes on it


class AiohttpTransport(httpx.AsyncBaseTransport):
    """One aiohttp session (created on first use, inside the running event loop)."""

    def __init__(self, *, limits: httpx.Limits, ssl_context: ssl.SSLContext | None = None) -> None:
        self._limits = limits
        self._ssl = ssl_context or httpx.create_ssl_context()
        self._session: aiohttp.ClientSession | None = None

    def _open_session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self._limits.max_connections or 0,
            limit_per_host=0,
            keepalive_timeout=self._limits.keepalive_expiry or 0.0,
            ssl=self._ssl,
        )
        return aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),  # httpx keeps the cookies, if any
            auto_decompress=False,  # httpx decodes Content-Encoding itself
            trust_env=False,  # with a proxy in the environment make_client does not use us
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._session is None:
            self._session = self._open_session()
        body = await request.aread()
        with _as_httpx_errors():
            response = await self._session.request(
                request.method,
                yarl.URL(str(request.url), encoded=True),  # as httpx encoded it, not requoted
                headers=_headers(request.headers),
                data=body or None,
                allow_redirects=False,
                timeout=_timeout(request.extensions.get("timeout", {})),
                server_hostname=_sni(request.extensions),
            )
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_ResponseStream(response),
            extensions={
                "http_version": b"HTTP/1.1",
                "reason_phrase": (response.reason or "").encode("latin-1", "replace"),
            },
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _headers(headers: httpx.Headers) -> list[tuple[str, str]]:
    """httpx's headers as sent; the body is passed whole, so aiohttp frames it itself."""
    return [
        (name.decode("latin-1"), value.decode("latin-1"))
        for name, value in headers.raw
        if name.lower() != b"transfer-encoding"
    ]


def _timeout(values: Mapping[str, float | None]) -> aiohttp.ClientTimeout:
    """httpx's connect/read/pool timeouts; ``connect`` covers waiting for the pool too."""
    connect, pool = values.get("connect"), values.get("pool")
    waiting = None if connect is None or pool is None else connect + pool
    return aiohttp.ClientTimeout(
        total=None, connect=waiting, sock_connect=connect, sock_read=values.get("read")
    )


def _sni(extensions: Mapping[str, object]) -> str | None:
    name = extensions.get("sni_hostname")
    return name if isinstance(name, str) else None
