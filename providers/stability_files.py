"""Stability's input files: the ``files`` of ``input_params`` turned into multipart parts.

A ``data:`` URL is decoded. An https URL comes from a job row, so it is fetched only through
the client the daemon lends (`_http.Hosting.fetch_client`), which enforces the download policy
of DESIGN §5 on every connection: https only, public addresses only. Without that client such
inputs are refused rather than fetched unguarded. Redirects are followed here, hop by hop, so
each hop is an https URL and goes through the guard again. The client never carries the API
key.

Everything here happens before anything is sent to Stability, so nothing can have been
created: a transient failure (network, timeout, 5xx, a broken body) is `ProviderConnectError`,
which the poller may retry like any submit that never left; a bad input (refused address or
URL, 4xx, too large, too many redirects) is `ProviderRejected` naming the ``files`` entry.
"""

from __future__ import annotations

import mimetypes
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from providers import _http
from providers.errors import ProviderConnectError, ProviderError, ProviderRejected

PROVIDER = "stability"
_REDIRECTS = (301, 302, 303, 307, 308)
_MAX_REDIRECTS = 3


class InputFiles:
    """Loads a job's input files; https ones only through ``fetch_client`` (see module doc)."""

    def __init__(
        self, *, fetch_client: httpx.AsyncClient | None, max_bytes: int, timeout_s: float
    ) -> None:
        self._fetch_client = fetch_client
        self._max_bytes = max_bytes
        self._timeout = httpx.Timeout(timeout_s)

    async def parts(self, files: dict[str, str]) -> list[tuple[str, Any]]:
        """One multipart file part per entry, named after its key."""
        parts: list[tuple[str, Any]] = []
        for name, ref in files.items():
            data, media_type = await self._load(name, ref)
            ext = mimetypes.guess_extension(media_type or "") or ""
            parts.append((name, (f"{name}{ext}", data, media_type or "application/octet-stream")))
        return parts

    async def _load(self, name: str, ref: str) -> tuple[bytes, str | None]:
        if _http.is_data_url(ref):
            try:
                return _http.decode_data_url(ref)
            except ValueError as exc:
                raise _rejected(name, str(exc)) from None
        if self._fetch_client is None:
            raise _rejected(
                name,
                "https inputs are fetched only by the daemon's guarded client; use a data: URL",
            )
        return await self._download(self._fetch_client, name, ref)

    async def _download(
        self, client: httpx.AsyncClient, name: str, url: str
    ) -> tuple[bytes, str | None]:
        """GET an input file over https only (redirects checked hop by hop), no credentials."""
        edge = _http.Edge(PROVIDER, client, (), self._max_bytes)
        for _ in range(_MAX_REDIRECTS + 1):
            reply = await self._fetch_once(edge, name, url)
            location = reply.headers.get("location")
            if reply.status not in _REDIRECTS or not location:
                return _input_file(reply, name, url)
            url = urljoin(url, location)
        raise _rejected(name, "too many redirects")

    async def _fetch_once(self, edge: _http.Edge, name: str, url: str) -> _http.Reply:
        """One hop; every failure says which input and which host it was about."""
        host = urlsplit(url).hostname
        if urlsplit(url).scheme.lower() != "https":
            raise _rejected(name, "only https URLs are fetched")
        try:
            reply = await edge.request("GET", url, timeout=self._timeout)
        except _http.ReplyTooLarge:
            limit = f"STABILITY_MAX_INPUT_FILE_BYTES ({self._max_bytes} bytes)"
            raise _rejected(name, f"{host} sent a file larger than {limit}") from None
        except ProviderRejected as exc:  # the guard refused the address, or the URL is unusable
            raise _rejected(name, _unprefixed(exc.message)) from exc
        except ProviderError as exc:  # network, timeout, broken body: retrying may help
            message = f"{PROVIDER}: files.{name}: fetching from {host} failed ({exc.message})"
            raise ProviderConnectError(message, provider=PROVIDER) from exc
        if reply.status >= 500 or reply.status in (408, 429):
            message = f"{PROVIDER}: files.{name}: {host} answered HTTP {reply.status}"
            raise ProviderConnectError(message, provider=PROVIDER)
        return reply


def _input_file(reply: _http.Reply, name: str, url: str) -> tuple[bytes, str | None]:
    if not reply.is_success:
        raise _rejected(name, f"{urlsplit(url).hostname} answered HTTP {reply.status}")
    return reply.content, reply.media_type or _http.guess_media_type(url)


def _rejected(name: str, why: str) -> ProviderRejected:
    return ProviderRejected(f"{PROVIDER}: files.{name}: {why}", provider=PROVIDER)


def _unprefixed(message: str) -> str:
    prefix = f"{PROVIDER}: "
    return message[len(prefix) :] if message.startswith(prefix) else message
