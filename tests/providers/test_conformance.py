"""The conformance kit, run for the three built-ins and the worked example adapter."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import httpx
import pytest

from providers.base import Provider
from providers.errors import ProviderConnectError
from providers.registry import BUILTIN_PROVIDERS, ProviderSpec
from providers.replicate import ReplicateSettings
from providers.settings import ProviderSettings
from providers.stability import StabilitySettings
from providers.suno import SunoSettings
from providers.testing import (
    CHECK_NAMES,
    CHECKS,
    SCENARIOS,
    ConformanceCase,
    RecordedResponse,
    load_recordings,
    run_check,
    run_conformance,
)
from providers.types import JobHandle, PollResult, RemoteOutput, SubmitRequest
from tests.providers import example_adapter
from tests.providers.conftest import FIXTURES, TOKENS, fixture_bytes

PNG_DATA_URL = (
    "data:image/png;base64," + base64.b64encode(fixture_bytes("stability", "result.png")).decode()
)


def _request(params: dict[str, object], media_type: str) -> SubmitRequest:
    return SubmitRequest(job_id=uuid.uuid4(), media_type=media_type, params=params, timeout_s=600)


def _handle(job_id: str, media_type: str, params: dict[str, object]) -> JobHandle:
    return JobHandle(
        job_id=uuid.uuid4(),
        provider_job_id=job_id,
        media_type=media_type,
        params=params,
        since_submit_s=600.0,
    )


REPLICATE_PARAMS: dict[str, object] = {"model": "owner/some-video-model", "input": {"prompt": "x"}}
STABILITY_PARAMS: dict[str, object] = {
    "endpoint": "stable-image/upscale/creative",
    "params": {"prompt": "x"},
    "files": {"image": PNG_DATA_URL},
}
SUNO_PARAMS: dict[str, object] = {"customMode": False, "instrumental": True, "model": "V4_5"}
ACME_PARAMS: dict[str, object] = {"prompt": "a red fox", "kind": "image"}

CASES = {
    "replicate": ConformanceCase(
        spec=BUILTIN_PROVIDERS["replicate"],
        settings=ReplicateSettings.from_env({}, api_key=TOKENS["replicate"]),
        request=_request(REPLICATE_PARAMS, "video"),
        handle=_handle("k7d2q9m4xhrm80cq1v3b5t8e6a", "video", REPLICATE_PARAMS),
        recordings=load_recordings(FIXTURES / "replicate" / "conformance.json"),
    ),
    "stability": ConformanceCase(
        spec=BUILTIN_PROVIDERS["stability"],
        settings=StabilitySettings.from_env({}, api_key=TOKENS["stability"]),
        request=_request(STABILITY_PARAMS, "image"),
        handle=_handle("a6dc6c6e20acda010fe1", "image", STABILITY_PARAMS),
        recordings=load_recordings(FIXTURES / "stability" / "conformance.json"),
    ),
    "suno": ConformanceCase(
        spec=BUILTIN_PROVIDERS["suno"],
        settings=SunoSettings.from_env(
            {}, api_key=TOKENS["suno"], callback_url="https://hooks.example/suno"
        ),
        request=_request(SUNO_PARAMS, "audio"),
        handle=_handle("7f3c9a1e2b", "audio", SUNO_PARAMS),
        recordings=load_recordings(FIXTURES / "suno" / "conformance.json"),
    ),
    "acme": ConformanceCase(
        spec=example_adapter.SPEC,
        settings=example_adapter.AcmeSettings.from_env({}, api_key=TOKENS["acme"]),
        request=_request(ACME_PARAMS, "image"),
        handle=_handle("acme-7d1f0c", "image", ACME_PARAMS),
        recordings=load_recordings(FIXTURES / "example" / "conformance.json"),
    ),
}


@pytest.mark.anyio
@pytest.mark.parametrize("check", CHECK_NAMES)
@pytest.mark.parametrize("provider", list(CASES))
async def test_conformance(provider: str, check: str) -> None:
    await run_check(CASES[provider], check)


@pytest.mark.anyio
async def test_run_conformance_runs_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[str] = []
    for name, check in CHECKS.items():

        async def recorded(case: ConformanceCase, name: str = name, check: Any = check) -> None:
            ran.append(name)
            await check(case)

        monkeypatch.setitem(CHECKS, name, recorded)
    await run_conformance(CASES["acme"])
    assert ran == list(CHECK_NAMES) == list(CHECKS)  # every check, once, in order


@pytest.mark.anyio
async def test_run_conformance_names_the_failed_check() -> None:
    with pytest.raises(AssertionError, match="acme: conformance check 'connect_error' failed"):
        await run_conformance(_case_with(_SwallowingAcme))


def test_every_builtin_has_a_case() -> None:
    assert set(BUILTIN_PROVIDERS) <= set(CASES)


def test_case_needs_every_scenario() -> None:
    partial = {name: RecordedResponse() for name in SCENARIOS[:-1]}
    with pytest.raises(ValueError, match="malformed"):
        ConformanceCase(
            spec=example_adapter.SPEC,
            settings=example_adapter.AcmeSettings.from_env({}, api_key="k"),
            request=_request(ACME_PARAMS, "image"),
            handle=_handle("x", "image", ACME_PARAMS),
            recordings=partial,
        )


def test_case_needs_credentials() -> None:
    with pytest.raises(ValueError, match="API key"):
        ConformanceCase(
            spec=example_adapter.SPEC,
            settings=example_adapter.AcmeSettings.from_env({}),
            request=_request(ACME_PARAMS, "image"),
            handle=_handle("x", "image", ACME_PARAMS),
            recordings=CASES["acme"].recordings,
        )


def test_recording_bodies() -> None:
    recordings = CASES["acme"].recordings
    assert recordings["server_error"].body == b"<html>bad gateway</html>"
    assert recordings["submit_ok"].headers["content-type"] == "application/json"
    assert recordings["cancel_ok"].status == 204
    inline = RecordedResponse.from_spec({"json": {"a": 1}, "status": 201}, base_dir=FIXTURES)
    assert inline.to_response().json() == {"a": 1}
    encoded = RecordedResponse.from_spec({"body_base64": "AAE="}, base_dir=FIXTURES)
    assert encoded.body == b"\x00\x01"


# --- the kit must catch misbehaving adapters, or it proves nothing ---------------------------


class _LeakyAcme(example_adapter.AcmeProvider):
    """Hands its token out for CDN downloads."""

    def _output(self, file: example_adapter._File) -> RemoteOutput:
        output = super()._output(file)
        return RemoteOutput(url=output.url, headers={"X-Api-Key": TOKENS["acme"]})


class _RetryingAcme(example_adapter.AcmeProvider):
    """Retries its submit on errors: creates are not idempotent, so this is wrong."""

    async def submit(self, request: SubmitRequest) -> PollResult:
        try:
            return await super().submit(request)
        except Exception:
            return await super().submit(request)


class _SwallowingAcme(example_adapter.AcmeProvider):
    """Turns every connect error into a generic one."""

    async def poll(self, handle: JobHandle) -> PollResult:
        try:
            return await super().poll(handle)
        except ProviderConnectError as exc:
            raise RuntimeError("oops") from exc


def _case_with(adapter_cls: type[example_adapter.AcmeProvider]) -> ConformanceCase:
    def build(settings: ProviderSettings, client: httpx.AsyncClient) -> Provider:
        assert isinstance(settings, example_adapter.AcmeSettings)
        return adapter_cls(settings, client)

    spec = ProviderSpec(
        name="acme",
        settings_cls=example_adapter.AcmeSettings,
        build=build,
        client_headers=example_adapter.api_key_header,
    )
    base = CASES["acme"]
    return ConformanceCase(
        spec=spec,
        settings=base.settings,
        request=base.request,
        handle=base.handle,
        recordings=base.recordings,
    )


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("adapter_cls", "check", "complaint"),
    [
        (_LeakyAcme, "succeeded", "headers handed out for foreign host"),
        (_RetryingAcme, "submit_not_retried_on_5xx", "never be retried"),
        (_SwallowingAcme, "connect_error", "got a foreign RuntimeError"),
    ],
)
async def test_the_kit_catches_broken_adapters(
    adapter_cls: type[example_adapter.AcmeProvider], check: str, complaint: str
) -> None:
    with pytest.raises(AssertionError, match=complaint):
        await run_check(_case_with(adapter_cls), check)
