"""The guarded client that fetches Stability's input files (DESIGN §5, audit item 5).

Input URLs come from job rows: without the guard a row could make the daemon read an internal
host and upload the answer to the vendor. These tests use the production guard with storage's
test seams (a stub resolver, the test CA, only 127.0.0.1 reachable) and a real TLS server.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import httpx
import pytest
import respx

from poller.inputs import open_input_client
from providers.base import Provider
from providers.errors import ProviderConnectError, ProviderRejected
from providers.registry import BUILTIN_PROVIDERS, Hosting, make_client
from providers.stability import StabilitySettings
from providers.types import PollResult, PollState, SubmitRequest
from storage import DownloadHooks
from tests.storage.conftest import cert_authority as cert_authority
from tests.storage.helpers import CertAuthority, guarded_hooks
from tests.storage.httpserver import Exchange, LoopbackServer, Route, serve

pytestmark = pytest.mark.anyio

SPEC = BUILTIN_PROVIDERS["stability"]
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def answer(status: int, data: bytes = b"", **headers: str) -> Route:
    def route(exchange: Exchange) -> None:
        exchange.head(status, {"Content-Length": str(len(data)), **headers})
        exchange.write(data)

    return route


@pytest.fixture
def cdn(cert_authority: CertAuthority) -> Iterator[LoopbackServer]:
    with serve(tls=cert_authority.server_context) as server:
        yield server


def hooks_for(ca: CertAuthority) -> DownloadHooks:
    """cdn.test is the loopback TLS server (allowed); evil.test resolves to a private address."""
    return guarded_hooks(ca, {"cdn.test": ["127.0.0.1"], "evil.test": ["10.0.0.7"]})


@asynccontextmanager
async def adapter_with(hooks: DownloadHooks) -> AsyncIterator[tuple[Provider, respx.MockRouter]]:
    """Stability as the daemon builds it, with the guarded input client; the API is mocked."""
    conf = StabilitySettings.from_env({}, api_key="sk-test-key-0123456789")
    api = respx.MockRouter(base_url=conf.base_url, assert_all_mocked=True)
    api.post("/v2beta/stable-image/upscale/creative").mock(
        return_value=httpx.Response(200, json={"id": "abc"})
    )
    async with (
        open_input_client(allow_private=False, hooks=hooks) as inputs,
        make_client(SPEC, conf, transport=httpx.MockTransport(api.async_handler)) as client,
    ):
        yield SPEC.create(conf, client, Hosting(fetch_client=inputs)), api


def upscale(url: str) -> SubmitRequest:
    params = {"endpoint": "stable-image/upscale/creative", "files": {"image": url}}
    return SubmitRequest(job_id=uuid.uuid4(), media_type="image", params=params, timeout_s=60)


async def submit(hooks: DownloadHooks, url: str) -> PollResult:
    async with adapter_with(hooks) as (adapter, _):
        return await adapter.submit(upscale(url))


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://127.0.0.1:9/x.png", "127.0.0.1 is not a public address (loopback)"),
        ("https://[::1]:9/x.png", "::1 is not a public address (loopback)"),
        ("https://169.254.169.254/latest", "link-local"),
        (
            "https://evil.test/x.png",
            "evil.test resolves to 10.0.0.7, which is not a public address (private)",
        ),
    ],
)
async def test_private_and_loopback_input_hosts_are_refused(
    cert_authority: CertAuthority,
    url: str,
    reason: str,
) -> None:
    hooks = guarded_hooks(cert_authority, {"evil.test": ["10.0.0.7"]})  # nothing exempt here
    hooks = DownloadHooks(resolver=hooks.resolver, ssl_context=hooks.ssl_context)
    with pytest.raises(ProviderRejected) as caught:
        await submit(hooks, url)
    message = str(caught.value)
    assert message.startswith("stability: files.image: ")
    assert reason in message and "POLLER_ALLOW_PRIVATE_DOWNLOADS" in message


async def test_a_redirect_to_a_private_host_is_refused_at_that_hop(
    cdn: LoopbackServer,
    cert_authority: CertAuthority,
) -> None:
    cdn.routes["/a.png"] = answer(302, Location="https://evil.test/b.png")
    with pytest.raises(ProviderRejected, match=r"files\.image: evil\.test resolves to 10\.0\.0\.7"):
        await submit(hooks_for(cert_authority), cdn.url("/a.png", host="cdn.test"))
    assert cdn.paths() == ["/a.png"]


async def test_a_public_input_is_fetched_and_uploaded(
    cdn: LoopbackServer,
    cert_authority: CertAuthority,
) -> None:
    cdn.routes["/fox.png"] = answer(200, PNG, **{"Content-Type": "image/png"})
    async with adapter_with(hooks_for(cert_authority)) as (adapter, api):
        result = await adapter.submit(upscale(cdn.url("/fox.png", host="cdn.test")))
    assert result.state is PollState.PENDING
    assert PNG in api.calls.last.request.content
    assert "authorization" not in {name.lower() for name in cdn.requests[0].headers}


async def test_an_unreachable_input_host_is_a_connect_error(
    cert_authority: CertAuthority,
) -> None:
    """Nothing reached Stability, so the submit may be retried: not "outcome unknown"."""
    closed = "https://cdn.test:1/x.png"  # allowed address, nothing listening
    with pytest.raises(ProviderConnectError, match=r"files\.image: fetching from cdn\.test"):
        await submit(hooks_for(cert_authority), closed)


async def test_a_compressed_input_body_is_refused(
    cdn: LoopbackServer,
    cert_authority: CertAuthority,
) -> None:
    cdn.routes["/x.png"] = answer(200, b"\x1f\x8b junk", **{"Content-Encoding": "gzip"})
    with pytest.raises(ProviderRejected, match="Content-Encoding: gzip"):
        await submit(hooks_for(cert_authority), cdn.url("/x.png", host="cdn.test"))


async def test_plain_http_is_refused_by_the_client_itself() -> None:
    async with open_input_client(allow_private=False) as client:
        with pytest.raises(ProviderRejected, match="only https URLs"):
            await client.get("http://example.com/x.png")


async def test_allow_private_lifts_the_address_check() -> None:
    with serve() as server:
        server.routes["/x.png"] = answer(200, PNG)
        async with open_input_client(allow_private=True) as client:
            reply = await client.get(server.url("/x.png"))
    assert reply.content == PNG


async def test_an_input_host_with_invalid_punycode_is_refused(
    cert_authority: CertAuthority,
) -> None:
    """httpx parses ``xn--zz.com`` and raised IDNAError on its ``.host``: not an httpx error,
    so it escaped the adapter and the job read as an internal error, then "submit outcome
    unknown" although nothing had been sent."""
    with pytest.raises(ProviderRejected, match=r"files\.image: invalid request URL: the host"):
        await submit(hooks_for(cert_authority), "https://xn--zz.com/x.png")
