"""The client that fetches job input files, under the download policy of DESIGN §5.

Stability jobs may name input images by https URL (``files`` in ``input_params``), which the
adapter fetches before it submits. Those URLs come from job rows, so they obey the rule for
result downloads: https only and public addresses only, checked on every connection, each
redirect hop included, unless ``POLLER_ALLOW_PRIVATE_DOWNLOADS``. Without it a row could make
the daemon read an internal host and upload the answer to the vendor.

The guard is storage's `GuardedBackend` (it resolves once, refuses the name if any answer is
not public and connects to the checked IP, so DNS rebinding cannot slip through). Providers
may not import storage; the poller may import both, so it builds the client here and lends it
to adapters through `providers.registry.Hosting`.

It is an httpx client, what adapters speak, over an httpcore pool with that backend (httpx
has no public seam for a network backend). A refused URL or address is `ProviderRejected`:
the job's input is at fault and retrying cannot help. Compressed bodies are refused like
storage refuses them, so nothing is inflated behind the size cap's back.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterator
from contextlib import contextmanager

import httpcore
import httpx

from providers.errors import ProviderRejected
from storage import DownloadHooks
from storage.download import check_url
from storage.errors import BlockedURL
from storage.netguard import GuardedBackend, system_resolver

__all__ = ["GuardedTransport", "open_input_client"]

MAX_CONNECTIONS = 16
USER_AGENT = "media-poller (input fetch)"

# httpcore's failures as the httpx ones adapters translate; most specific first.
_ERRORS: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.ProxyError, httpx.ProxyError),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.ProtocolError, httpx.ProtocolError),
)


@contextmanager
def _as_httpx_errors() -> Iterator[None]:
    """httpcore errors as httpx's; a policy refusal (`BlockedURL`) as `ProviderRejected`."""
    try:
        yield
    except BlockedURL as exc:
        raise ProviderRejected(str(exc)) from exc
    except Exception as exc:
        for core, mapped in _ERRORS:
            if isinstance(exc, core):
                raise mapped(str(exc) or type(exc).__name__) from exc
        raise


class _Body(httpx.AsyncByteStream):
    def __init__(self, stream: AsyncIterable[bytes]) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _as_httpx_errors():
            async for chunk in self._stream:
                yield chunk

    async def aclose(self) -> None:
        close = getattr(self._stream, "aclose", None)
        if close is not None:
            await close()


class GuardedTransport(httpx.AsyncBaseTransport):
    """Every request: URL checked (https, no userinfo, a real host name), then every
    connection checked by `GuardedBackend`; ``allow_private`` lifts both, like for downloads."""

    def __init__(self, *, allow_private: bool, hooks: DownloadHooks | None = None) -> None:
        hooks = hooks or DownloadHooks()
        backend: httpcore.AsyncNetworkBackend = httpcore.AnyIOBackend()
        if not allow_private:
            resolver = hooks.resolver or system_resolver
            backend = GuardedBackend(backend, resolver=resolver, allowed=hooks.allowed_networks)
        self._allow_private = allow_private
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=hooks.ssl_context or httpx.create_ssl_context(),
            max_connections=MAX_CONNECTIONS,
            max_keepalive_connections=MAX_CONNECTIONS,
            keepalive_expiry=30.0,
            http1=True,
            http2=False,
            retries=0,
            network_backend=backend,
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        with _as_httpx_errors():
            check_url(url, allow_private=self._allow_private)
            response = await self._pool.handle_async_request(
                httpcore.Request(
                    method=request.method,
                    url=httpcore.URL(
                        scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path
                    ),
                    headers=request.headers.raw,
                    content=request.stream,
                    extensions=request.extensions,
                )
            )
        headers = httpx.Headers(response.headers)
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            await response.aclose()
            raise ProviderRejected(
                f"{url.host} sent a compressed body (Content-Encoding: {encoding[:40]}); "
                "input files are fetched uncompressed"
            )
        assert isinstance(response.stream, AsyncIterable)
        return httpx.Response(
            status_code=response.status,
            headers=headers,
            stream=_Body(response.stream),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()


def open_input_client(
    *, allow_private: bool, hooks: DownloadHooks | None = None
) -> httpx.AsyncClient:
    """The daemon's one client for input files (the caller closes it).

    No credentials, no redirects (adapters follow them hop by hop, so each hop is checked
    here), no proxies from the environment (they would bypass the guard), identity encoding.
    Adapters set their own timeouts per request.
    """
    return httpx.AsyncClient(
        transport=GuardedTransport(allow_private=allow_private, hooks=hooks),
        headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
        timeout=httpx.Timeout(30.0),
        follow_redirects=False,
        trust_env=False,
    )
