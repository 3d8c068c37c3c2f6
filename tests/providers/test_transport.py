"""The aiohttp wire under `make_client`, against real loopback sockets.

What matters: requests arrive exactly as httpx built them, bodies are decoded once, the pool
limit holds, and failures say whether the request may have left (a submit is retried only
after a `ProviderConnectError`).
"""

from __future__ import annotations

import gzip
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
import httpx
import pytest
from anyio.abc import SocketStream

from providers import _http
from providers.errors import ProviderConnectError, ProviderUnavailable
from providers.registry import BUILTIN_PROVIDERS, make_client
from providers.replicate import ReplicateSettings

pytestmark = pytest.mark.anyio

Handler = Callable[[SocketStream, bytes], Awaitable[None]]


async def read_request(stream: SocketStream) -> bytes:
    """Head and body (by Content-Length) of one request."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += await stream.receive()
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        body += await stream.receive()
    return head + b"\r\n\r\n" + body


def response(status: int, body: bytes, *headers: str) -> bytes:
    lines = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@asynccontextmanager
async def serve(handler: Handler) -> AsyncIterator[str]:
    """A loopback server; ``handler`` gets each request (keep-alive connections loop)."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)

    async def connection(stream: SocketStream) -> None:
        async with stream:
            try:
                while True:
                    await handler(stream, await read_request(stream))
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                return

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, connection)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            tg.cancel_scope.cancel()


def client_for(base_url: str, **settings: object) -> httpx.AsyncClient:
    values: dict[str, object] = {"base_url": base_url, "api_key": "r8_test_key_123"}
    values.update(settings)
    settings_obj = ReplicateSettings.from_env({}, **values)
    return make_client(BUILTIN_PROVIDERS["replicate"], settings_obj)


def recording(seen: list[bytes], reply: bytes) -> Handler:
    """A handler that keeps each request and sends the same reply to all."""

    async def handler(stream: SocketStream, request: bytes) -> None:
        seen.append(request)
        await stream.send(reply)

    return handler


async def test_requests_arrive_as_httpx_built_them() -> None:
    seen: list[bytes] = []
    reply = response(201, b'{"id": "p1"}', "Content-Type: application/json")
    async with serve(recording(seen, reply)) as base, client_for(base) as client:
        created = await client.post("/v1/predictions", json={"input": {"prompt": "héllo"}})
        polled = await client.get("/v1/predictions/a%2Fb%20c")
    assert (created.status_code, created.json()) == (201, {"id": "p1"})
    assert polled.status_code == 201
    post, get = seen
    head, _, body = post.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /v1/predictions HTTP/1.1\r\n")
    assert b"authorization: bearer r8_test_key_123" in head.lower()
    assert json.loads(body) == {"input": {"prompt": "héllo"}}
    assert get.startswith(b"GET /v1/predictions/a%2Fb%20c HTTP/1.1\r\n")  # not requoted


async def test_compressed_bodies_are_decoded_once() -> None:
    payload = json.dumps({"status": "succeeded"}).encode()

    async def handler(stream: SocketStream, request: bytes) -> None:
        await stream.send(response(200, gzip.compress(payload), "Content-Encoding: gzip"))

    async with serve(handler) as base, client_for(base) as client:
        reply = await client.get("/v1/predictions/x")
    assert reply.json() == {"status": "succeeded"}


async def test_the_pool_limit_holds_and_extra_requests_queue() -> None:
    open_now = 0
    most = 0

    async def handler(stream: SocketStream, request: bytes) -> None:
        await anyio.sleep(0.1)
        await stream.send(response(200, b"{}"))

    async def counting(stream: SocketStream, request: bytes) -> None:
        nonlocal open_now, most
        open_now += 1
        most = max(most, open_now)
        try:
            await handler(stream, request)
        finally:
            open_now -= 1

    async with (
        serve(counting) as base,
        client_for(base, max_in_flight=2) as client,
        anyio.create_task_group() as tg,
    ):
        for _ in range(6):
            tg.start_soon(client.get, "/v1/predictions/x")
    assert most == 2


async def test_refused_connection_is_a_connect_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with client_for(f"http://127.0.0.1:{port}") as client:
        edge = _http.Edge(provider="replicate", client=client)
        with pytest.raises(ProviderConnectError, match="could not connect"):
            await edge.request("POST", "/v1/predictions", json={})


async def test_disconnect_after_the_request_left_is_ambiguous() -> None:
    async def handler(stream: SocketStream, request: bytes) -> None:
        await stream.aclose()  # read the submit, then hang up without an answer

    async with serve(handler) as base, client_for(base) as client:
        edge = _http.Edge(provider="replicate", client=client)
        with pytest.raises(ProviderUnavailable) as caught:
            await edge.request("POST", "/v1/predictions", json={})
    assert not isinstance(caught.value, ProviderConnectError)
    assert isinstance(caught.value.__cause__, httpx.RemoteProtocolError)


async def test_silence_is_a_read_timeout() -> None:
    async def handler(stream: SocketStream, request: bytes) -> None:
        await anyio.sleep(5)

    async with serve(handler) as base, client_for(base, read_timeout_s=0.2) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.get("/v1/predictions/x")


async def test_a_body_cut_short_is_a_protocol_error() -> None:
    async def handler(stream: SocketStream, request: bytes) -> None:
        await stream.send(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"id"')
        await stream.aclose()

    async with serve(handler) as base, client_for(base) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get("/v1/predictions/x")


async def test_cookies_are_neither_kept_nor_sent() -> None:
    seen: list[bytes] = []
    reply = response(200, b"{}", "Set-Cookie: AWSALB=sticky; Path=/")
    async with serve(recording(seen, reply)) as base, client_for(base) as client:
        await client.get("/v1/predictions/a")
        await client.get("/v1/predictions/b")
        assert not client.cookies
    assert all(b"cookie:" not in request.lower() for request in seen), seen


async def test_a_proxy_in_the_environment_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """Our transport does not speak to proxies, so with one configured httpx's own does."""
    seen: list[bytes] = []
    async with serve(recording(seen, response(200, b'{"id": "p1"}'))) as proxy_url:
        monkeypatch.setenv("HTTP_PROXY", proxy_url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        async with client_for("http://api.replicate.invalid") as client:
            reply = await client.get("/v1/predictions/p1")
    assert reply.json() == {"id": "p1"}
    assert seen[0].startswith(b"GET http://api.replicate.invalid/v1/predictions/p1 HTTP/1.1")
