"""Shared helpers for the provider tests: fixture files, settings and a respx-backed client.

Every adapter is exercised through the real `make_client` with a respx router as its
transport, so the tests see the same base URL, timeouts and origin-scoped credentials as
production; nothing is patched globally.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import respx

from providers.base import Provider
from providers.registry import ProviderSpec, make_client
from providers.settings import ProviderSettings
from providers.types import JobHandle, SubmitRequest

FIXTURES = Path(__file__).parent / "fixtures"

# Test credentials: distinctive strings so a leak is easy to detect anywhere.
TOKENS = {
    "replicate": "r8_TestToken0123456789abcdefXYZ",
    "stability": "sk-TestKey0123456789abcdefXYZ",
    "suno": "suno-test-key-0123456789XYZ",
    "acme": "acme-test-key-0123456789XYZ",
}


def fixture_bytes(vendor: str, name: str) -> bytes:
    return (FIXTURES / vendor / name).read_bytes()


def fixture_json(vendor: str, name: str) -> Any:
    return json.loads(fixture_bytes(vendor, name))


def reply(vendor: str, name: str, status: int = 200, **headers: str) -> httpx.Response:
    """A vendor reply whose JSON body is a fixture file."""
    content = fixture_bytes(vendor, name)
    all_headers = {"content-type": "application/json", **headers}
    return httpx.Response(status, content=content, headers=all_headers)


def handle(
    provider_job_id: str,
    media_type: str = "image",
    *,
    params: dict[str, Any] | None = None,
    since_submit_s: float | None = 600.0,
) -> JobHandle:
    return JobHandle(
        job_id=uuid.uuid4(),
        provider_job_id=provider_job_id,
        media_type=media_type,
        params=params or {},
        since_submit_s=since_submit_s,
    )


def submit_request(
    params: dict[str, Any], media_type: str = "image", timeout_s: float = 600.0
) -> SubmitRequest:
    return SubmitRequest(
        job_id=uuid.uuid4(), media_type=media_type, params=params, timeout_s=timeout_s
    )


@dataclass(frozen=True, slots=True)
class Rig:
    """An adapter wired to a respx router, plus what the test needs to inspect."""

    adapter: Provider
    router: respx.MockRouter
    settings: ProviderSettings

    @property
    def token(self) -> str:
        return self.settings.api_key_value() or ""


@asynccontextmanager
async def open_rig(spec: ProviderSpec, settings: ProviderSettings) -> AsyncIterator[Rig]:
    """Adapter + router; every mocked route must be called, unmocked requests fail loudly."""
    router = respx.MockRouter(
        base_url=settings.base_url, assert_all_called=True, assert_all_mocked=True
    )
    transport = httpx.MockTransport(router.async_handler)
    async with make_client(spec, settings, transport=transport) as client:
        yield Rig(adapter=spec.build(settings, client), router=router, settings=settings)
    router.assert_all_called()
