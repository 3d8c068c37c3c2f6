"""How `runner` wires adapters: what the daemon lends them reaches the adapter.

Through the real provider client and wire (a loopback server stands in for the vendor), so
the test fails if the wiring is lost, not only if an adapter forgets a setting.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
from anyio.abc import SocketStream

from poller.daemon import Adapter
from poller.runner import open_adapters
from poller.settings import CoreSettings, PollerSettings, Settings
from providers.errors import ProviderRejected
from providers.registry import BUILTIN_PROVIDERS
from providers.stability import StabilitySettings
from providers.types import JobHandle, PollState, SubmitRequest
from tests.providers.test_transport import response, serve

pytestmark = pytest.mark.anyio

CAP = 20_000  # POLLER_MAX_DOWNLOAD_BYTES


def settings_for(base_url: str) -> Settings:
    stability = StabilitySettings.from_env({}, api_key="sk-test-key-0123456789", base_url=base_url)
    return Settings(
        core=CoreSettings(),
        poller=PollerSettings(max_download_bytes=CAP),
        providers={"stability": stability},
        specs={"stability": BUILTIN_PROVIDERS["stability"]},
    )


@asynccontextmanager
async def stability_adapter(result_bytes: int) -> AsyncIterator[Adapter]:
    """The daemon's Stability adapter against a vendor answering every poll with a file."""

    async def finished(stream: SocketStream, request: bytes) -> None:
        await stream.send(response(200, b"x" * result_bytes, "Content-Type: image/png"))

    async with serve(finished) as base, AsyncExitStack() as stack:
        adapters = await open_adapters(settings_for(base), stack)
        yield adapters["stability"]


def a_handle() -> JobHandle:
    return JobHandle(job_id=uuid.uuid4(), provider_job_id="abc", media_type="image")


async def test_stability_inline_results_are_held_to_poller_max_download_bytes() -> None:
    """DESIGN §10: the same cap as downloads, not STABILITY_MAX_REPLY_BYTES (512 MiB)."""
    async with stability_adapter(CAP) as adapter:
        assert (await adapter.provider.poll(a_handle())).state is PollState.SUCCEEDED
    async with stability_adapter(CAP + 1) as adapter:
        result = await adapter.provider.poll(a_handle())
    assert result.state is PollState.FAILED and result.failure is not None
    assert "POLLER_MAX_DOWNLOAD_BYTES (20000 bytes)" in result.failure.message


async def test_stability_input_files_go_through_the_guarded_client() -> None:
    """DESIGN §5 for inputs too: a loopback input host is refused, nothing reaches the API."""
    seen: list[bytes] = []

    async def vendor(stream: SocketStream, request: bytes) -> None:
        seen.append(request)
        await stream.send(response(200, b'{"id": "abc"}', "Content-Type: application/json"))

    params = {
        "endpoint": "stable-image/upscale/creative",
        "files": {"image": "https://127.0.0.1:9/fox.png"},
    }
    request = SubmitRequest(job_id=uuid.uuid4(), media_type="image", params=params, timeout_s=60)
    async with serve(vendor) as base, AsyncExitStack() as stack:
        adapters = await open_adapters(settings_for(base), stack)
        with pytest.raises(ProviderRejected) as caught:
            await adapters["stability"].provider.submit(request)
    assert "files.image: 127.0.0.1 is not a public address (loopback)" in str(caught.value)
    assert seen == []
