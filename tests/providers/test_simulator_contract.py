"""The adapters against the loopback simulator: real HTTP, the vendors' shapes as the
simulator's author read them from the same reference. A disagreement here means one of the
two misread the contract, which is cheaper to learn now than in the end-to-end suite.

The simulator serves result files from a second loopback address (``cdn_host``), so these
tests also show that no adapter hands its token out for the "CDN".
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from providers.errors import (
    ProviderProtocolError,
    ProviderRateLimited,
    ProviderRejected,
    ProviderUnavailable,
)
from providers.registry import BUILTIN_PROVIDERS, make_client
from providers.settings import ProviderSettings
from providers.types import InlineOutput, JobHandle, PollResult, PollState, RemoteOutput
from simulator.config import SimulatorConfig
from simulator.server import SimulatorServer
from tests.providers.conftest import TOKENS, fixture_bytes, submit_request

pytestmark = pytest.mark.anyio

TERMINAL = (PollState.SUCCEEDED, PollState.FAILED, PollState.CANCELED)
PNG_DATA_URL = (
    "data:image/png;base64," + base64.b64encode(fixture_bytes("stability", "result.png")).decode()
)


@pytest.fixture(scope="module")
def simulator() -> Iterator[SimulatorServer]:
    config = SimulatorConfig(seed=11, complete_after_polls=2, cdn_host="127.0.0.2")
    with SimulatorServer(config) as server:
        yield server


def _settings(name: str, base_url: str) -> ProviderSettings:
    extra: dict[str, Any] = {"callback_url": "https://hooks.example/suno"} if name == "suno" else {}
    cls = BUILTIN_PROVIDERS[name].settings_cls
    return cls.from_env({}, api_key=TOKENS[name], base_url=base_url, **extra)


async def _drive(
    simulator: SimulatorServer, name: str, params: dict[str, Any], media: str, polls: int = 8
) -> list[PollResult]:
    """Submit, then poll until terminal; every observation, in order."""
    spec, settings = BUILTIN_PROVIDERS[name], _settings(name, simulator.base_url)
    async with make_client(spec, settings) as client:
        adapter = spec.build(settings, client)
        seen = [await adapter.submit(submit_request(params, media))]
        job_id = seen[0].provider_job_id
        assert job_id
        while seen[-1].state not in TERMINAL and len(seen) <= polls:
            handle = JobHandle(
                job_id=uuid.uuid4(),
                provider_job_id=job_id,
                media_type=media,
                params=params,
                since_submit_s=600.0,
            )
            seen.append(await adapter.poll(handle))
    return seen


def _replicate(scenario: str = "", **input_: Any) -> dict[str, Any]:
    return {
        "model": "acme/image-model",
        "input": {"prompt": "a fox", "sim_scenario": scenario, **input_},
    }


def _stability(
    scenario: str = "", endpoint: str = "stable-image/upscale/creative"
) -> dict[str, Any]:
    return {
        "endpoint": endpoint,
        "params": {"prompt": "a fox", "sim_scenario": scenario},
        "files": {"image": PNG_DATA_URL},
    }


def _suno(scenario: str = "") -> dict[str, Any]:
    return {
        "customMode": False,
        "instrumental": True,
        "model": "V4_5",
        "prompt": "lofi rain",
        "sim_scenario": scenario,
    }


def _cdn_outputs_carry_no_token(result: PollResult) -> None:
    for output in result.outputs:
        if isinstance(output, RemoteOutput):
            assert "127.0.0.2" in output.url
            assert not output.headers


async def test_replicate_happy_path(simulator: SimulatorServer) -> None:
    seen = await _drive(simulator, "replicate", _replicate("success"), "image")
    assert seen[0].state is PollState.PENDING
    final = seen[-1]
    assert final.state is PollState.SUCCEEDED, final
    assert final.outputs
    _cdn_outputs_carry_no_token(final)


@pytest.mark.parametrize("shape", ["string", "list", "object", "data"])
async def test_replicate_output_shapes(simulator: SimulatorServer, shape: str) -> None:
    final = (await _drive(simulator, "replicate", _replicate(f"shape:{shape}"), "image"))[-1]
    assert final.state is PollState.SUCCEEDED
    kinds = {type(o) for o in final.outputs}
    assert kinds == ({InlineOutput} if shape == "data" else {RemoteOutput})
    _cdn_outputs_carry_no_token(final)


@pytest.mark.parametrize(
    ("scenario", "state", "code"),
    [
        ("fail", PollState.FAILED, "provider_error"),
        ("moderation", PollState.FAILED, "moderation"),
        ("expired", PollState.FAILED, "output_expired"),
    ],
)
async def test_replicate_outcomes(
    simulator: SimulatorServer, scenario: str, state: PollState, code: str
) -> None:
    final = (await _drive(simulator, "replicate", _replicate(scenario), "image"))[-1]
    assert final.state is state
    assert final.failure is not None and final.failure.code == code


async def test_replicate_cancel(simulator: SimulatorServer) -> None:
    spec, settings = BUILTIN_PROVIDERS["replicate"], _settings("replicate", simulator.base_url)
    async with make_client(spec, settings) as client:
        adapter = spec.build(settings, client)
        submitted = await adapter.submit(submit_request(_replicate("stuck"), "image"))
        assert submitted.provider_job_id
        handle = JobHandle(
            job_id=uuid.uuid4(), provider_job_id=submitted.provider_job_id, media_type="image"
        )
        await adapter.cancel(handle)
        result = await adapter.poll(handle)
    assert result.state is PollState.CANCELED


async def test_stability_happy_path(simulator: SimulatorServer) -> None:
    seen = await _drive(simulator, "stability", _stability(), "image")
    assert seen[0].state is PollState.PENDING
    assert PollState.RUNNING in [r.state for r in seen]
    final = seen[-1]
    assert final.state is PollState.SUCCEEDED
    (output,) = final.outputs
    assert isinstance(output, InlineOutput) and output.data
    assert final.result_uri is not None
    assert final.result_uri.startswith(f"{simulator.base_url}/v2beta/results/")


async def test_stability_video(simulator: SimulatorServer) -> None:
    params = _stability(endpoint="image-to-video")
    final = (await _drive(simulator, "stability", params, "video"))[-1]
    assert final.state is PollState.SUCCEEDED
    assert final.result_uri is not None and "/image-to-video/result/" in final.result_uri


async def test_stability_sync_endpoint(simulator: SimulatorServer) -> None:
    params = {"endpoint": "stable-image/generate/core", "params": {"prompt": "a fox"}}
    seen = await _drive(simulator, "stability", params, "image")
    assert seen[0].state is PollState.SUCCEEDED
    assert seen[0].provider_job_id is not None and seen[0].provider_job_id.startswith("sync-")


@pytest.mark.parametrize(
    ("scenario", "code"), [("filtered", "moderation"), ("fail", "provider_error")]
)
async def test_stability_failures(simulator: SimulatorServer, scenario: str, code: str) -> None:
    final = (await _drive(simulator, "stability", _stability(scenario), "image"))[-1]
    assert final.state is PollState.FAILED
    assert final.failure is not None and final.failure.code == code


async def test_stability_moderation_at_submit(simulator: SimulatorServer) -> None:
    with pytest.raises(ProviderRejected, match=r"^moderation: "):
        await _drive(simulator, "stability", _stability("moderation"), "image")


async def test_suno_happy_path(simulator: SimulatorServer) -> None:
    seen = await _drive(simulator, "suno", _suno(), "audio")
    final = seen[-1]
    assert final.state is PollState.SUCCEEDED
    assert len(final.outputs) == 2
    _cdn_outputs_carry_no_token(final)
    assert all("image_url" in o.metadata for o in final.outputs)


@pytest.mark.parametrize(
    ("scenario", "state", "moderation"),
    [
        ("fail", PollState.FAILED, False),
        ("create_failed", PollState.FAILED, False),
        ("moderation", PollState.FAILED, True),
        ("callback_exception", PollState.SUCCEEDED, False),
    ],
)
async def test_suno_outcomes(
    simulator: SimulatorServer, scenario: str, state: PollState, moderation: bool
) -> None:
    final = (await _drive(simulator, "suno", _suno(scenario), "audio"))[-1]
    assert final.state is state
    if state is PollState.FAILED:
        assert final.failure is not None and final.failure.moderation is moderation


async def test_suno_out_of_credits_is_not_retryable(simulator: SimulatorServer) -> None:
    with pytest.raises(ProviderRejected, match="out of credits") as caught:
        await _drive(simulator, "suno", _suno("poll_error:429"), "audio")
    assert not caught.value.retryable


@pytest.mark.parametrize("name", list(BUILTIN_PROVIDERS))
async def test_unknown_statuses_never_end_a_job(simulator: SimulatorServer, name: str) -> None:
    params = {"replicate": _replicate, "stability": _stability, "suno": _suno}[name](
        "unknown_status polls:50"
    )
    seen = await _drive(simulator, name, params, "image", polls=3)
    polled = [r.state for r in seen[1:]]  # seen[0] is the submit's answer
    # Stability's 202 means "not done" whatever its body's status says: running, not unknown.
    expected = PollState.RUNNING if name == "stability" else PollState.UNKNOWN
    assert polled == [expected] * 3


@pytest.mark.parametrize(
    ("scenario", "error_type"),
    [
        ("poll_error:429", ProviderRateLimited),
        ("poll_error:503", ProviderUnavailable),
        ("poll_malformed", ProviderProtocolError),
    ],
)
@pytest.mark.parametrize("name", list(BUILTIN_PROVIDERS))
async def test_poll_faults_are_typed(
    simulator: SimulatorServer, name: str, scenario: str, error_type: type[Exception]
) -> None:
    if name == "suno":  # Suno's rate-limit code is 430 (its 429 means "out of credits")
        scenario = scenario.replace("poll_error:429", "poll_error:430")
    params = {"replicate": _replicate, "stability": _stability, "suno": _suno}[name](scenario)
    with pytest.raises(error_type):
        await _drive(simulator, name, params, "image")
