"""Shared plumbing for adapters: one request, translated into our error tree.

Adapters stay short because everything that is the same for every vendor lives here:
transport-error translation, the HTTP status → error class table, ``Retry-After`` parsing,
JSON/pydantic parsing that fails as `ProviderProtocolError` with a short redacted snippet,
``data:`` URL decoding, and the same-origin rule that keeps tokens away from CDN hosts.
"""

from __future__ import annotations

import base64
import binascii
import json
import mimetypes
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from pathlib import PurePosixPath
from typing import Any, TypeVar
from urllib.parse import unquote_to_bytes, urlsplit

import httpx
from pydantic import BaseModel, ValidationError

from providers.errors import (
    ProviderAuthError,
    ProviderConnectError,
    ProviderError,
    ProviderNotVisibleYet,
    ProviderProtocolError,
    ProviderRateLimited,
    ProviderRejected,
    ProviderUnavailable,
)
from providers.sending import note_request

M = TypeVar("M", bound=BaseModel)

SNIPPET_CHARS = 200
MAX_RETRY_AFTER_S = 86_400.0  # a day: anything longer is a vendor bug, not a plan

# Token shapes worth scrubbing even when we do not know the value (echoed headers, other keys).
_TOKEN_PATTERNS = (
    re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"\b(?:r8_|sk-)[A-Za-z0-9_-]{8,}"),
)
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/=]{80,}")
# A URL's query: signed CDN URLs carry their credential there (X-Amz-Signature=, sig=,
# token=). ``https:\/\/`` is the same URL inside JSON that escapes slashes.
_URL_QUERY = re.compile(r"(?i)(?P<url>https?:(?:\\?/){2}[^\s\"'?<>]*)\?[^\s\"'<>]*")
_WHITESPACE = re.compile(r"\s+")


# --- snippets and redaction -------------------------------------------------------------


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Replace known secret values and token-shaped strings with ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    for pattern in _TOKEN_PATTERNS:
        text = pattern.sub(lambda m: f"{m.group(1)} ***" if m.lastindex else "***", text)
    return text


def snippet(raw: bytes | str, secrets: Iterable[str] = (), limit: int = SNIPPET_CHARS) -> str:
    """A short, single-line, secret-free excerpt of a reply for error messages and logs."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    text = redact(text, secrets)
    if "?" in text:
        text = _URL_QUERY.sub(lambda m: f"{m['url']}?…", text)
    text = _BASE64_RUN.sub("<base64…>", text)
    text = _WHITESPACE.sub(" ", text).strip()
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- Retry-After --------------------------------------------------------------------------


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delta-seconds or an HTTP-date."""
    if not value or not value.strip():
        return None
    value = value.strip()
    seconds: float | None
    try:
        seconds = float(value)
    except ValueError:
        seconds = _seconds_until(value, now)
    if seconds is None or seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def _seconds_until(http_date: str, now: float | None) -> float | None:
    try:
        when = parsedate_to_datetime(http_date)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # asctime dates carry no zone: RFC 9110 dates are all GMT
        when = when.replace(tzinfo=UTC)
    return when.timestamp() - (time.time() if now is None else now)


def retry_after_of(headers: Mapping[str, str]) -> float | None:
    """The server's hint from ``Retry-After`` (or the ``retry-after-ms`` variant)."""
    millis = parse_retry_after(headers.get("retry-after-ms"))
    if millis is not None:
        return millis / 1000.0
    return parse_retry_after(headers.get("retry-after"))


# --- data: URLs, origins, file names ------------------------------------------------------


def is_data_url(value: str) -> bool:
    return value[:5].lower() == "data:"


def decode_data_url(url: str) -> tuple[bytes, str | None]:
    """Decode ``data:[<type>][;base64],<payload>`` into bytes and the declared media type.

    Raises ``ValueError`` on anything that is not a well-formed data URL.
    """
    if not is_data_url(url) or "," not in url:
        raise ValueError("not a data: URL")
    header, _, payload = url[5:].partition(",")
    params = [p.strip() for p in header.split(";")]
    media_type = params[0].lower() or None
    if "base64" in (p.lower() for p in params[1:]):
        try:
            return base64.b64decode(unquote_to_bytes(payload), validate=True), media_type
        except (binascii.Error, ValueError):
            raise ValueError("invalid base64 in data: URL") from None
    return unquote_to_bytes(payload), media_type


def origin_of(url: str) -> tuple[str, str, int] | None:
    """``(scheme, host, port)`` with default ports filled in; None when not http(s)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        return None
    return scheme, parts.hostname.lower(), port or _default_port(scheme)


def origin_of_parsed(url: httpx.URL) -> tuple[str, str, int]:
    """`origin_of` for a URL httpx has already parsed (and lower-cased): no re-parsing."""
    return url.scheme, url.host, url.port or _default_port(url.scheme)


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def same_origin(url: str, base_url: str) -> bool:
    """True only when ``url`` is served by the exact scheme/host/port of ``base_url``."""
    origin = origin_of(url)
    return origin is not None and origin == origin_of(base_url)


def headers_for(url: str, base_url: str, auth_headers: Mapping[str, str]) -> dict[str, str]:
    """Credentials for downloading ``url``: ours only on our own API host, never on a CDN."""
    return dict(auth_headers) if same_origin(url, base_url) else {}


def filename_of(url: str) -> str | None:
    """The last path segment of a URL, if it looks like a file name."""
    try:
        name = PurePosixPath(urlsplit(url).path).name
    except ValueError:
        return None
    return name or None


def guess_media_type(url_or_name: str) -> str | None:
    """The media type implied by a file extension (a hint: storage sniffs the bytes)."""
    name = filename_of(url_or_name) if "/" in url_or_name else url_or_name
    return mimetypes.guess_type(name or "", strict=False)[0]


# --- replies and the HTTP edge ------------------------------------------------------------


class ReplyTooLarge(ProviderRejected):
    """A reply went over `Edge.max_reply_bytes` (``status`` is the reply's HTTP status).

    A `ProviderRejected` for adapters that do not care; an adapter whose results arrive
    inline (Stability) turns a 2xx one into a failed result instead, because the vendor did
    make (and charge for) the file: it is just too large to keep.
    """

    def __init__(self, message: str, *, provider: str, status: int) -> None:
        super().__init__(message, provider=provider)
        self.status = status


@dataclass(frozen=True, slots=True, kw_only=True)
class Hosting:
    """What the daemon lends adapters besides their own API client (``ProviderSpec.create``).

    ``max_inline_bytes``: the largest result an adapter may hold in memory, the daemon's
    ``POLLER_MAX_DOWNLOAD_BYTES`` (DESIGN §10); None = the adapter's own reply cap.
    ``fetch_client``: fetches third-party files a job's input names (Stability's ``files``)
    under the daemon's download policy: https only, public addresses only, checked on every
    connection (DESIGN §5). It carries no credentials and follows no redirects (adapters
    follow them hop by hop, so each is checked). It raises `ProviderRejected` for a refused
    URL or address. Adapters cannot build one (the guard lives in storage), so without it
    they refuse such inputs.
    """

    max_inline_bytes: int | None = None
    fetch_client: httpx.AsyncClient | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Reply:
    """A fully read HTTP reply; adapters parse these, never a live stream."""

    status: int
    headers: httpx.Headers
    content: bytes
    url: str

    @property
    def media_type(self) -> str:
        """The ``Content-Type`` without parameters, lower-cased (``""`` when absent)."""
        value: str = self.headers.get("content-type", "")
        return value.split(";")[0].strip().lower()

    @property
    def is_success(self) -> bool:
        return 200 <= self.status < 300


@dataclass(frozen=True, slots=True)
class Edge:
    """One provider's HTTP edge: sends requests and speaks our error tree.

    ``secrets`` are scrubbed from every snippet; ``provider`` names the vendor in messages.
    """

    provider: str
    client: httpx.AsyncClient
    secrets: tuple[str, ...] = ()
    max_reply_bytes: int = 64 * 1024 * 1024

    async def request(self, method: str, url: str, **kwargs: Any) -> Reply:
        """Send one request (never retried here) and read the reply up to the size cap."""
        try:
            request = self.client.build_request(method, url, **kwargs)
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise ProviderRejected(
                f"{self.provider}: invalid request URL", provider=self.provider
            ) from exc
        except UnicodeError as exc:  # httpx parses "xn--zz", then its IDNA decoding raises
            raise ProviderRejected(
                f"{self.provider}: invalid request URL: the host name is not valid "
                "(malformed punycode)",
                provider=self.provider,
            ) from exc
        note_request(method)  # from here the request may reach the provider
        try:
            response = await self.client.send(request, stream=True)
            try:
                content = await self._read(response)
            finally:
                await response.aclose()
        except httpx.HTTPError as exc:
            raise self.transport_error(exc) from exc
        return Reply(
            status=response.status_code,
            headers=response.headers,
            content=content,
            url=str(request.url),
        )

    async def _read(self, response: httpx.Response) -> bytes:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_reply_bytes:
            raise self._oversize(response.status_code)
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > self.max_reply_bytes:
                raise self._oversize(response.status_code)
            chunks.append(chunk)
        return b"".join(chunks)

    def _oversize(self, status: int) -> ReplyTooLarge:
        message = f"{self.provider}: reply larger than the {self.max_reply_bytes}-byte limit"
        return ReplyTooLarge(message, provider=self.provider, status=status)

    def transport_error(self, exc: httpx.HTTPError) -> ProviderError:
        """Translate an httpx failure; only "never reached the server" is a connect error."""
        kind = type(exc).__name__
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
            message = f"{self.provider}: could not connect ({kind})"
            return ProviderConnectError(message, provider=self.provider)
        if isinstance(exc, httpx.UnsupportedProtocol | httpx.ProxyError):
            return ProviderConnectError(f"{self.provider}: {kind}", provider=self.provider)
        if isinstance(exc, httpx.DecodingError):
            return ProviderProtocolError(
                f"{self.provider}: undecodable reply body", provider=self.provider
            )
        if isinstance(exc, httpx.TimeoutException):
            return ProviderUnavailable(
                f"{self.provider}: request timed out ({kind})", provider=self.provider
            )
        return ProviderUnavailable(
            f"{self.provider}: network error ({kind})", provider=self.provider
        )

    def snippet(self, raw: bytes | str) -> str:
        return snippet(raw, self.secrets)

    def protocol_error(self, message: str, raw: bytes | str) -> ProviderProtocolError:
        return ProviderProtocolError(
            f"{self.provider}: {message}", provider=self.provider, snippet=self.snippet(raw)
        )

    def json(self, reply: Reply) -> Any:
        """The reply's JSON body; malformed JSON is a protocol error with a snippet."""
        try:
            return json.loads(reply.content)
        except (ValueError, RecursionError):
            raise self.protocol_error(
                f"malformed JSON (HTTP {reply.status})", reply.content
            ) from None

    def model(self, cls: type[M], data: Any, reply: Reply) -> M:
        """Validate vendor JSON against a wire model; schema drift is a protocol error."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            where = _first_error(exc)
            raise self.protocol_error(f"unexpected reply shape ({where})", reply.content) from None
        except RecursionError:
            raise self.protocol_error("reply nested too deeply", reply.content) from None

    def status_error(self, reply: Reply, *, retry_after_s: float | None = None) -> ProviderError:
        """The generic HTTP status → error table (vendor quirks are handled before this)."""
        code, name, snip = reply.status, self.provider, self.snippet(reply.content)
        message = f"{name}: HTTP {code}"
        wait = retry_after_s if retry_after_s is not None else retry_after_of(reply.headers)
        if code == 429:
            return ProviderRateLimited(message, provider=name, retry_after_s=wait, snippet=snip)
        if code in (401, 403):
            return ProviderAuthError(
                f"{message}: credentials rejected", provider=name, snippet=snip
            )
        if code == 408 or code >= 500:  # a 503 may name its own wait (Replicate's clients obey)
            return ProviderUnavailable(message, provider=name, retry_after_s=wait, snippet=snip)
        if 300 <= code < 400 or code < 200:
            return ProviderProtocolError(
                f"{message}: unexpected status", provider=name, snippet=snip
            )
        return ProviderRejected(message, provider=name, snippet=snip)


def _first_error(exc: ValidationError) -> str:
    err = exc.errors(include_url=False, include_input=False)[0]
    loc = ".".join(str(part) for part in err["loc"]) or "<root>"
    return f"{loc}: {err['msg']}"


# DESIGN §10: a 404 this soon after the provider returned the job id is retried, later it is
# final (`JobHandle.since_submit_s` counts from that moment).
NOT_FOUND_GRACE_S = 30.0


def validate_params(cls: type[M], params: Mapping[str, Any], provider: str) -> M:
    """Validate a job's ``input_params`` before any HTTP call; bad input fails the job."""
    try:
        return cls.model_validate(dict(params))
    except ValidationError as exc:
        message = f"{provider}: invalid input_params ({_first_error(exc)})"
        raise ProviderRejected(message, provider=provider) from None


def early_not_found(since_submit_s: float | None) -> bool:
    """True while a 404 may still be the vendor's eventual consistency, not a missing job
    (``since_submit_s``: `JobHandle.since_submit_s`, seconds since the id was returned)."""
    return since_submit_s is not None and since_submit_s < NOT_FOUND_GRACE_S


def not_found_yet(provider: str, since_submit_s: float) -> ProviderNotVisibleYet:
    return ProviderNotVisibleYet(
        f"{provider}: job not found {since_submit_s:.0f} s after its id was recorded (will retry)",
        provider=provider,
    )
