"""Stability's input files: the ``files`` of ``input_params`` turned into multipart parts.

A ``data:`` URL is decoded; an https URL is fetched with a separate client that never carries
the API key, following redirects by hand so that every hop is an https URL. Everything here
happens before anything is sent to Stability, so a transient failure is a connect error (the
submit may safely be tried again) and a bad input is `ProviderRejected`.
"""

from __future__ import annotations

import mimetypes
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from providers import _http
from providers.errors import ProviderConnectError, ProviderRejected, ProviderUnavailable

PROVIDER = "stability"
_REDIRECTS = (301, 302, 303, 307, 308)
_MAX_REDIRECTS = 3


class InputFiles:
    """Loads a job's input files; ``fetch_client`` downloads https ones (default: one per call)."""

    def __init__(
        self, *, fetch_client: httpx.AsyncClient | None, max_bytes: int, timeout_s: float
    ) -> None:
        self._fetch_client = fetch_client
        self._max_bytes = max_bytes
        self._timeout_s = timeout_s

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
                raise ProviderRejected(
                    f"{PROVIDER}: files.{name}: {exc}", provider=PROVIDER
                ) from None
        if self._fetch_client is not None:
            return await self._download(self._fetch_client, name, ref)
        timeout = httpx.Timeout(self._timeout_s)
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
            return await self._download(client, name, ref)

    async def _download(
        self, client: httpx.AsyncClient, name: str, url: str
    ) -> tuple[bytes, str | None]:
        """GET an input file over https only (redirects checked hop by hop), no credentials."""
        edge = _http.Edge(PROVIDER, client, (), self._max_bytes)
        for _ in range(_MAX_REDIRECTS + 1):
            reply = await _fetch_once(edge, name, url)
            location = reply.headers.get("location")
            if reply.status not in _REDIRECTS or not location:
                return _input_file(reply, name, url)
            url = urljoin(url, location)
        raise ProviderRejected(f"{PROVIDER}: files.{name}: too many redirects", provider=PROVIDER)


async def _fetch_once(edge: _http.Edge, name: str, url: str) -> _http.Reply:
    """One hop of an input download; transient failures are "connect" errors because nothing
    has been sent to Stability yet, so submitting again later is safe."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "https":
        raise ProviderRejected(
            f"{PROVIDER}: files.{name}: only https URLs are fetched", provider=PROVIDER
        )
    try:
        reply = await edge.request("GET", url)
    except ProviderUnavailable as exc:
        message = f"{PROVIDER}: files.{name}: fetching from {parts.hostname} failed ({exc.message})"
        raise ProviderConnectError(message, provider=PROVIDER) from exc
    if reply.status >= 500 or reply.status in (408, 429):
        message = f"{PROVIDER}: files.{name}: {parts.hostname} answered HTTP {reply.status}"
        raise ProviderConnectError(message, provider=PROVIDER)
    return reply


def _input_file(reply: _http.Reply, name: str, url: str) -> tuple[bytes, str | None]:
    if not reply.is_success:
        host = urlsplit(url).hostname
        message = f"{PROVIDER}: files.{name}: {host} answered HTTP {reply.status}"
        raise ProviderRejected(message, provider=PROVIDER)
    return reply.content, reply.media_type or _http.guess_media_type(url)
