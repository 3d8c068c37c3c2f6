"""A lean HTTP/1.1 server on asyncio streams: keep-alive, streamed bodies, nothing else.

The benchmark polls ~2,000 times per second against the simulator while the daemon under
test shares the machine, so the server is a straight loop per connection (parse head, read
body, call the handler, write one buffer) with no framework overhead. Responses with a
`stream` are written chunk by chunk with back-pressure (`drain`), which keeps memory flat
for multi-GiB files. A stream that ends before its declared length closes the connection,
which is how truncated downloads are simulated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Final
from urllib.parse import parse_qsl

import anyio

_LOG = logging.getLogger("simulator.http")
HEAD_LIMIT: Final = 64 * 1024
_SERVER_HEADER: Final = "media-poller-simulator"


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """One parsed request; header names are lower-cased, the body is fully read."""

    method: str
    path: str
    query: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    @property
    def target(self) -> str:
        """Path plus query string, the key under which faults are drawn for a resource."""
        if not self.query:
            return self.path
        return self.path + "?" + "&".join(f"{k}={v}" for k, v in sorted(self.query.items()))


@dataclass(frozen=True, slots=True, kw_only=True)
class Response:
    """What to send back; `stream` (with `length`) replaces `body` for large files."""

    status: int
    body: bytes = b""
    content_type: str | None = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    stream: Callable[[], AsyncIterator[bytes]] | None = None
    length: int | None = None
    delay_s: float = 0.0
    close: bool = False


Handler = Callable[[Request], Awaitable[Response]]


class BadRequest(Exception):
    """The peer sent something we will not process; answer `status` and hang up."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(slots=True)
class _Head:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str] = field(default_factory=dict)
    keep_alive: bool = True


def _parse_head(raw: bytes) -> _Head:
    try:
        lines = raw[:-4].decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ", 2)
    except ValueError:
        raise BadRequest("malformed request line") from None
    path, _, query = target.partition("?")
    head = _Head(method.upper(), path, dict(parse_qsl(query, keep_blank_values=True)))
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise BadRequest("malformed header line")
        head.headers[name.strip().lower()] = value.strip()
    connection = head.headers.get("connection", "").lower()
    head.keep_alive = connection != "close" and (
        version == "HTTP/1.1" or connection == "keep-alive"
    )
    return head


async def _read_chunked(reader: asyncio.StreamReader, limit: int) -> bytes:
    body = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise BadRequest("bad chunk size") from None
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass  # trailers are ignored
            return bytes(body)
        if len(body) + size > limit:
            raise BadRequest("body too large", 413)
        body += await reader.readexactly(size)
        await reader.readexactly(2)


async def _read_body(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: _Head, limit: int
) -> bytes:
    if head.headers.get("expect", "").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    if "chunked" in head.headers.get("transfer-encoding", "").lower():
        return await _read_chunked(reader, limit)
    try:
        length = int(head.headers.get("content-length", "0"))
    except ValueError:
        raise BadRequest("bad content-length") from None
    if length < 0 or length > limit:
        raise BadRequest("body too large", 413)
    return await reader.readexactly(length) if length else b""


def _head_bytes(response: Response, length: int, keep_alive: bool) -> bytes:
    lines = [
        f"HTTP/1.1 {response.status} {_reason(response.status)}",
        f"server: {_SERVER_HEADER}",
        f"content-length: {length}",
        "connection: keep-alive" if keep_alive else "connection: close",
    ]
    if response.content_type is not None:
        lines.append(f"content-type: {response.content_type}")
    lines.extend(f"{name}: {value}" for name, value in response.headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _write_stream(writer: asyncio.StreamWriter, response: Response, length: int) -> bool:
    """Write a streamed body; False when it came up short (the connection must close)."""
    assert response.stream is not None
    sent = 0
    async for chunk in response.stream():
        writer.write(chunk)
        sent += len(chunk)
        await writer.drain()
    return sent == length


async def write_response(
    writer: asyncio.StreamWriter, response: Response, *, head_only: bool, keep_alive: bool
) -> bool:
    """Send `response`; return whether the connection may serve another request."""
    if response.delay_s > 0:
        await anyio.sleep(response.delay_s)
    keep = keep_alive and not response.close
    if response.stream is None:
        length = len(response.body)
        body = b"" if head_only else response.body
        writer.write(_head_bytes(response, length, keep) + body)
        await writer.drain()
        return keep
    length = response.length or 0
    writer.write(_head_bytes(response, length, keep))
    if head_only:
        await writer.drain()
        return keep
    complete = await _write_stream(writer, response, length)
    return keep and complete


class HttpServer:
    """Serves one `Handler` over keep-alive connections and tracks them for shutdown."""

    def __init__(self, handler: Handler, *, max_body_bytes: int) -> None:
        self._handler = handler
        self._max_body = max_body_bytes
        self._writers: set[asyncio.StreamWriter] = set()

    def close_connections(self) -> None:
        """Abort every open connection (used when the server stops)."""
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Handle requests on one connection until the peer or a response closes it."""
        self._writers.add(writer)
        try:
            while await self._one_request(reader, writer):
                pass
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        except BadRequest as exc:
            await self._reject(writer, str(exc), exc.status)
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _one_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial.strip():
                raise BadRequest("incomplete request head") from None
            return False
        head = _parse_head(raw)
        body = await _read_body(reader, writer, head, self._max_body)
        request = Request(
            method=head.method, path=head.path, query=head.query, headers=head.headers, body=body
        )
        try:
            response = await self._handler(request)
        except Exception:
            _LOG.exception("simulator handler failed for %s %s", head.method, head.path)
            response = Response(status=500, body=b'{"detail":"simulator bug"}', close=True)
        return await write_response(
            writer, response, head_only=head.method == "HEAD", keep_alive=head.keep_alive
        )

    async def _reject(self, writer: asyncio.StreamWriter, reason: str, status: int) -> None:
        body = ('{"detail":"' + reason + '"}').encode()
        response = Response(status=status, body=body, close=True)
        with contextlib.suppress(ConnectionError):
            await write_response(writer, response, head_only=False, keep_alive=False)
