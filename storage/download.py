"""The download client for provider output URLs (CDNs), separate from provider API clients.

It never carries provider credentials: it has no auth of its own, and headers a caller passes
explicitly are sent to the original origin only, never across a redirect to another host.

Built on httpcore directly rather than an ``httpx.AsyncClient``: httpcore's connection pool
takes a network backend as a public argument (httpx only exposes it through a private
attribute), and it never decodes ``Content-Encoding``, so a gzip bomb cannot be inflated by
accident. ``httpx.URL`` is still used to parse, normalise (IDNA) and join URLs.

Policy, in order: URL (https only, no user:password@), connect time (`GuardedBackend`: every
resolved address public, socket opened to the validated IP), redirects followed by hand with
both checks per hop, response gate (status, ``Content-Encoding`` identity only,
``Content-Length`` under the cap), then streaming under a read timeout, a minimum-throughput
floor and a total deadline. ``allow_private`` lifts the first two (http, loopback, private).
"""

from __future__ import annotations

import math
import re
import ssl
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import httpcore
import httpx

from storage.config import StorageConfig
from storage.errors import (
    BlockedURL,
    ContentRejected,
    DownloadError,
    DownloadThrottled,
    DownloadTimeout,
    DownloadUnavailable,
    OutputGone,
)
from storage.netguard import (
    ALLOW_PRIVATE_HINT,
    GuardedBackend,
    Network,
    Resolver,
    is_ip_literal,
    system_resolver,
)
from storage.spool import describe_size, too_large

__all__ = ["DownloadHooks", "Downloader", "check_url", "parse_url", "redact"]

Sink = Callable[[bytes], Awaitable[None]]

USER_AGENT = b"media-poller/0.1 (artifact download)"
REDIRECTS = frozenset({301, 302, 303, 307, 308})
GONE = frozenset({403, 404, 410})
TRANSIENT = frozenset({408, 425})
THROTTLED = 429
MAX_RETRY_AFTER_S = 3_600.0  # a CDN asking for more than an hour is broken, not busy
# Caller headers may not override framing, routing or the identity encoding we insist on.
_RESERVED = frozenset(
    {"host", "accept-encoding", "content-length", "transfer-encoding", "connection"}
)
FLOOR_HINT = "POLLER_DOWNLOAD_MIN_BYTES_PER_S"
TOTAL_HINT = "POLLER_DOWNLOAD_TOTAL_TIMEOUT_S"
_LABEL = r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?"
_HOSTNAME = re.compile(rf"{_LABEL}(\.{_LABEL})*\.?")


@dataclass(frozen=True, slots=True, kw_only=True)
class DownloadHooks:
    """Seams for tests and unusual deployments, deliberately not settings.

    ``resolver`` replaces DNS (tests map names to loopback without a DNS server);
    ``ssl_context`` trusts a test CA; ``allowed_networks`` exempts networks from the
    public-address rule while https-only still applies.
    """

    resolver: Resolver | None = None
    ssl_context: ssl.SSLContext | None = None
    allowed_networks: tuple[Network, ...] = ()


def redact(url: httpx.URL) -> str:
    """The URL for messages and logs: no query (signed URLs carry tokens there), no userinfo."""
    shown = f"{url.scheme}://{url.netloc.decode('ascii')}{url.path}"
    if len(shown) > 200:
        shown = shown[:199] + "…"
    return shown + ("?…" if url.query else "")


def parse_url(text: str) -> httpx.URL:
    try:
        url = httpx.URL(text)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise BlockedURL(f"not a valid URL: {exc}") from exc
    _host(url)
    return url


def _host(url: httpx.URL) -> str:
    """``url.host``, which decodes punycode: httpx accepts an invalid A-label (``xn--zz``)
    and only this raises ``IDNAError``, which no caller of storage expects."""
    try:
        return url.host
    except UnicodeError:
        raw = url.raw_host.decode("ascii", "replace")
        raise BlockedURL(f"{redact(url)}: {raw!r} is not a valid host name") from None


def check_url(url: httpx.URL, *, allow_private: bool) -> None:
    """The URL layer of the policy; the address layer runs at connect time."""
    shown = redact(url)
    host = _host(url)
    if url.scheme == "data":
        raise BlockedURL("data: URLs are not downloaded: decode them and use ingest_bytes")
    if allow_private and url.scheme not in ("http", "https"):
        raise BlockedURL(f"{shown}: only http and https URLs are downloaded")
    if not allow_private and url.scheme != "https":
        raise BlockedURL(f"{shown}: only https URLs are downloaded ({ALLOW_PRIVATE_HINT})")
    if url.userinfo:
        raise BlockedURL(f"{shown}: URLs with user:password@ are refused")
    if not host:
        raise BlockedURL(f"{shown}: the URL has no host")
    if not is_ip_literal(host) and not _HOSTNAME.fullmatch(url.raw_host.decode("ascii")):
        raise BlockedURL(f"{shown}: {host!r} is not a valid host name")


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port


def _header(response: httpcore.Response, name: bytes) -> str | None:
    for key, value in response.headers:
        if key.lower() == name:
            return value.decode("latin-1").strip()
    return None


class _Floor:
    """Minimum throughput as a moving deadline: each window must bring ``rate * window``.

    No extra task: the deadline of the cancel scope around the read loop is pushed forward
    whenever a window's quota has arrived; if it passes, the scope cancels the stalled read.
    """

    def __init__(self, *, rate: int, window_s: float, grace_s: float) -> None:
        now = anyio.current_time()
        self._quota = rate * window_s
        self._window_s = window_s
        self._earliest = now + grace_s
        self._mark = 0
        self.deadline = now + grace_s + window_s if rate > 0 else math.inf

    def update(self, received: int) -> float:
        if self.deadline != math.inf and received - self._mark >= self._quota:
            self._mark = received
            self.deadline = max(anyio.current_time(), self._earliest) + self._window_s
        return self.deadline


READ_BYTES = 256 * 1024


class _WideReadStream(httpcore.AsyncNetworkStream):
    """Socket reads of up to `READ_BYTES` where httpcore asks for 64 KiB.

    Reading more than asked is safe for HTTP/1.1 (h11 buffers any excess), and four times
    fewer chunks means far less per-chunk Python work and fewer GIL hand-offs with the hashing
    thread: on a 2-vCPU machine that is the difference in ingest throughput. Only public
    httpcore interfaces are used.
    """

    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        return await self._inner.read(max(max_bytes, READ_BYTES), timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore stream API)
    ) -> httpcore.AsyncNetworkStream:
        return _WideReadStream(await self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _WideReadBackend(httpcore.AsyncNetworkBackend):
    """Wraps every stream a backend opens in `_WideReadStream`."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend) -> None:
        self._inner = inner

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore backend API)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return _WideReadStream(stream)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore backend API)
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return _WideReadStream(await self._inner.connect_unix_socket(path, timeout, socket_options))

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class Downloader:
    """Streams an output URL into a sink; one connection pool for the daemon's lifetime."""

    def __init__(self, config: StorageConfig, hooks: DownloadHooks | None = None) -> None:
        hooks = hooks or DownloadHooks()
        self._config = config
        backend: httpcore.AsyncNetworkBackend = httpcore.AnyIOBackend()
        if not config.allow_private_downloads:
            backend = GuardedBackend(
                backend,
                resolver=hooks.resolver or system_resolver,
                allowed=hooks.allowed_networks,
            )
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=hooks.ssl_context,
            max_connections=100,
            max_keepalive_connections=20,
            keepalive_expiry=30.0,
            http1=True,
            http2=False,
            retries=0,
            network_backend=_WideReadBackend(backend),
        )
        self._timeouts = {
            "connect": config.connect_timeout_s,
            "read": config.read_timeout_s,
            "write": config.read_timeout_s,
            "pool": config.connect_timeout_s,
        }

    async def aclose(self) -> None:
        await self._pool.aclose()

    async def fetch(self, url: str, *, headers: Mapping[str, str] | None, sink: Sink) -> None:
        """GET ``url`` (following redirects) and hand the body's bytes to ``sink`` in order.

        ``sink`` may raise (size cap, wrong type); that aborts the transfer at once.
        """
        target = parse_url(url)
        limit = self._config.total_timeout_s
        received = 0

        async def counting(chunk: bytes) -> None:
            nonlocal received
            received += len(chunk)
            await sink(chunk)

        with anyio.move_on_after(limit):
            await self._follow(target, dict(headers or {}), counting)
            return
        # The figures tell an operator whether the CDN is slow or the deadline too short for
        # the size cap (a file at POLLER_MAX_DOWNLOAD_BYTES must average cap / deadline).
        raise DownloadTimeout(
            f"{redact(target)}: download did not finish within {limit:g} s (total deadline, "
            f"{TOTAL_HINT}): {describe_size(received)} received, "
            f"{describe_size(int(received / limit))}/s on average"
        )

    async def _follow(self, url: httpx.URL, headers: dict[str, str], sink: Sink) -> None:
        origin = _origin(url)
        for _ in range(self._config.max_redirects + 1):
            check_url(url, allow_private=self._config.allow_private_downloads)
            same_origin = _origin(url) == origin
            next_url = await self._request(url, headers if same_origin else {}, sink)
            if next_url is None:
                return
            url = next_url
        raise DownloadError(f"{redact(url)}: more than {self._config.max_redirects} redirects")

    def _request_headers(
        self, url: httpx.URL, extra: Mapping[str, str]
    ) -> list[tuple[bytes, bytes]]:
        headers = [
            (b"Host", url.netloc),
            (b"Accept", b"*/*"),
            (b"Accept-Encoding", b"identity"),
            (b"User-Agent", USER_AGENT),
        ]
        try:
            headers += [
                (name.encode("latin-1"), value.encode("latin-1"))
                for name, value in extra.items()
                if name.lower() not in _RESERVED
            ]
        except UnicodeEncodeError as exc:
            raise DownloadError(f"a request header is not Latin-1 encodable: {exc}") from exc
        return headers

    async def _request(
        self, url: httpx.URL, headers: Mapping[str, str], sink: Sink
    ) -> httpx.URL | None:
        """One hop: the redirect target, or None once the body went to ``sink``."""
        shown = redact(url)
        core_url = httpcore.URL(
            scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path
        )
        with self._translate(shown):
            async with self._pool.stream(
                "GET",
                core_url,
                headers=self._request_headers(url, headers),
                extensions={"timeout": self._timeouts},
            ) as response:
                if response.status in REDIRECTS:
                    return _redirect_target(url, response)
                declared = self._check_response(shown, response)
                await self._receive(shown, response, sink, declared)
                return None

    def _check_response(self, shown: str, response: httpcore.Response) -> int | None:
        """Status and header gate before any body byte is read; returns Content-Length."""
        _check_status(shown, response)
        encoding = (_header(response, b"content-encoding") or "identity").lower()
        if encoding != "identity":
            raise ContentRejected(
                f"{shown}: the server sent Content-Encoding {encoding!r} although identity was "
                "requested; compressed transfers are refused (decompression-bomb guard)"
            )
        length = _header(response, b"content-length")
        declared = int(length) if length and length.isdigit() else None
        if declared is not None and declared > self._config.max_download_bytes:
            raise too_large(self._config.max_download_bytes, size=declared)
        return declared

    async def _receive(
        self, shown: str, response: httpcore.Response, sink: Sink, declared: int | None
    ) -> None:
        config = self._config
        floor = _Floor(
            rate=config.min_throughput_bytes_per_s,
            window_s=config.throughput_window_s,
            grace_s=config.throughput_grace_s,
        )
        received = 0
        with anyio.CancelScope(deadline=floor.deadline) as scope:
            async for chunk in response.aiter_stream():
                received += len(chunk)
                await sink(chunk)
                if floor.update(received) != scope.deadline:
                    scope.deadline = floor.deadline
        if scope.cancelled_caught:
            floor_rate = describe_size(config.min_throughput_bytes_per_s)
            raise DownloadTimeout(
                f"{shown}: transfer too slow, under {floor_rate}/s over "
                f"{config.throughput_window_s:g} s after {describe_size(received)} ({FLOOR_HINT})"
            )
        if declared is not None and received != declared:
            raise DownloadUnavailable(
                f"{shown}: got {received} bytes but Content-Length announced {declared}"
            )

    @contextmanager
    def _translate(self, shown: str) -> Iterator[None]:
        """httpcore's exceptions to ours, with the timeouts that were in force."""
        config = self._config
        try:
            yield
        except httpcore.ConnectTimeout as exc:
            raise DownloadTimeout(
                f"{shown}: connecting timed out after {config.connect_timeout_s:g} s"
            ) from exc
        except httpcore.ReadTimeout as exc:
            raise DownloadTimeout(
                f"{shown}: no data received for {config.read_timeout_s:g} s (read timeout)"
            ) from exc
        except httpcore.TimeoutException as exc:
            raise DownloadTimeout(f"{shown}: timed out: {exc}") from exc
        except httpcore.UnsupportedProtocol as exc:
            raise BlockedURL(f"{shown}: unsupported URL: {exc}") from exc
        except httpcore.LocalProtocolError as exc:
            raise DownloadError(f"{shown}: invalid request: {exc}") from exc
        except (httpcore.NetworkError, httpcore.RemoteProtocolError) as exc:
            raise DownloadUnavailable(f"{shown}: {_network_detail(exc)}") from exc


def _network_detail(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, httpcore.ConnectError):
        return f"cannot connect: {text}"
    if isinstance(exc, httpcore.RemoteProtocolError):
        return f"the server broke off the response: {text}"
    return f"connection failed: {text}"


def _check_status(shown: str, response: httpcore.Response) -> None:
    status = response.status
    if status == 200:
        return
    if status == THROTTLED:
        raise DownloadThrottled(
            f"{shown}: HTTP 429 from the server (busy), will retry",
            retry_after_s=_retry_after_s(_header(response, b"retry-after")),
        )
    if status in GONE:
        raise OutputGone(f"{shown}: HTTP {status}, the output link has expired or was deleted")
    if status in TRANSIENT or status >= 500:
        raise DownloadUnavailable(f"{shown}: HTTP {status} from the server, will retry")
    raise DownloadError(f"{shown}: unexpected HTTP {status}")


def _retry_after_s(value: str | None) -> float | None:
    """Delta-seconds only; an HTTP-date (rare on CDNs) leaves the caller's default wait."""
    try:
        seconds = float(value) if value else math.nan
    except ValueError:
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S) if math.isfinite(seconds) else None


def _redirect_target(url: httpx.URL, response: httpcore.Response) -> httpx.URL:
    location = _header(response, b"location")
    if not location:
        raise DownloadError(f"{redact(url)}: HTTP {response.status} without a Location header")
    try:
        return url.join(location)
    except (httpx.InvalidURL, ValueError) as exc:
        raise BlockedURL(f"{redact(url)}: redirect to an invalid URL: {exc}") from exc
