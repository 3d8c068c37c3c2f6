"""Replicate adapter: every row of the reference's status table (§5.2) and error class."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from providers.errors import (
    ProviderAuthError,
    ProviderError,
    ProviderNotVisibleYet,
    ProviderProtocolError,
    ProviderRateLimited,
    ProviderRejected,
    ProviderUnavailable,
)
from providers.registry import BUILTIN_PROVIDERS
from providers.replicate import ReplicateSettings
from providers.types import InlineOutput, PollState, RemoteOutput
from tests.providers.conftest import (
    TOKENS,
    Rig,
    fixture_bytes,
    fixture_json,
    handle,
    open_rig,
    reply,
    submit_request,
)

pytestmark = pytest.mark.anyio

SPEC = BUILTIN_PROVIDERS["replicate"]
PID = "k7d2q9m4xhrm80cq1v3b5t8e6a"
VIDEO_MODEL_SKU = {"owner/some-video-model": "gpu-a100-large"}


def settings(**values: Any) -> ReplicateSettings:
    values.setdefault("model_hardware", VIDEO_MODEL_SKU)
    return ReplicateSettings.from_env({}, api_key=TOKENS["replicate"], **values)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    async with open_rig(SPEC, settings()) as opened:
        yield opened


def body_of(route: Any) -> Any:
    return json.loads(route.calls.last.request.content)


# --- submit ---------------------------------------------------------------------------------


async def test_submit_version_route_sends_cancel_after_and_token(rig: Rig) -> None:
    route = rig.router.post("/v1/predictions").mock(
        return_value=reply("replicate", "prediction_starting.json", 201)
    )
    params = {
        "version": f"owner/some-video-model:{'5c7d5dc6' * 8}",
        "input": {"prompt": "a lighthouse"},
    }
    result = await rig.adapter.submit(submit_request(params, "video", timeout_s=1200))
    assert result.state is PollState.PENDING
    assert result.provider_job_id == PID
    assert body_of(route) == params
    sent = route.calls.last.request.headers
    assert sent["cancel-after"] == "1200s"
    assert sent["authorization"] == f"Bearer {TOKENS['replicate']}"
    assert route.call_count == 1


async def test_submit_official_model_route(rig: Rig) -> None:
    route = rig.router.post("/v1/models/black-forest-labs/flux-schnell/predictions").mock(
        return_value=reply("replicate", "prediction_starting.json", 201)
    )
    params = {"model": "black-forest-labs/flux-schnell", "input": {"prompt": "a red fox"}}
    result = await rig.adapter.submit(submit_request(params, timeout_s=12.2))
    assert result.provider_job_id == PID
    assert body_of(route) == {"input": {"prompt": "a red fox"}}
    assert route.calls.last.request.headers["cancel-after"] == "13s"  # rounded up


async def test_submit_deployment_route_with_webhook(rig: Rig) -> None:
    route = rig.router.post("/v1/deployments/acme/sdxl-prod/predictions").mock(
        return_value=reply("replicate", "prediction_starting.json", 201)
    )
    params = {
        "deployment": "acme/sdxl-prod",
        "input": {"prompt": "x"},
        "webhook": "https://hooks.example/r?job=1",
        "webhook_events_filter": ["completed"],
    }
    await rig.adapter.submit(submit_request(params))
    assert body_of(route) == {
        "input": {"prompt": "x"},
        "webhook": "https://hooks.example/r?job=1",
        "webhook_events_filter": ["completed"],
    }


async def test_cancel_after_can_be_switched_off() -> None:
    async with open_rig(SPEC, settings(send_cancel_after=False)) as rig:
        route = rig.router.post("/v1/predictions").mock(
            return_value=reply("replicate", "prediction_starting.json", 201)
        )
        await rig.adapter.submit(submit_request({"version": "abc", "input": {}}))
        assert "cancel-after" not in route.calls.last.request.headers


@pytest.mark.parametrize(
    "params",
    [
        {"input": {"prompt": "no route"}},
        {"version": "abc", "model": "a/b", "input": {}},
        {"model": "../../v1/account", "input": {}},
        {"deployment": "a/b/c", "input": {}},
        {"version": "abc", "input": {}, "unexpected": 1},
        {"version": "abc", "input": "not an object"},
    ],
)
async def test_submit_rejects_bad_params_before_any_request(
    rig: Rig, params: dict[str, Any]
) -> None:
    with pytest.raises(ProviderRejected, match="invalid input_params"):
        await rig.adapter.submit(submit_request(params))
    assert not rig.router.calls


@pytest.mark.parametrize(
    ("status", "fixture", "error_type"),
    [
        (422, "error_422.json", ProviderRejected),
        (402, "error_402.json", ProviderRejected),
        (404, "error_404.json", ProviderRejected),
        (401, "error_401.json", ProviderAuthError),
        (503, "error_500.json", ProviderUnavailable),
        (429, "error_429.json", ProviderRateLimited),
    ],
)
async def test_submit_errors_are_typed_and_never_retried(
    rig: Rig, status: int, fixture: str, error_type: type[ProviderError]
) -> None:
    route = rig.router.post("/v1/predictions").mock(
        return_value=reply("replicate", fixture, status)
    )
    with pytest.raises(error_type):
        await rig.adapter.submit(submit_request({"version": "abc", "input": {}}))
    assert route.call_count == 1


async def test_submit_422_carries_the_vendor_detail(rig: Rig) -> None:
    rig.router.post("/v1/predictions").mock(return_value=reply("replicate", "error_422.json", 422))
    with pytest.raises(ProviderRejected) as caught:
        await rig.adapter.submit(submit_request({"version": "abc", "input": {}}))
    assert caught.value.snippet is not None
    assert "input.prompt" in caught.value.snippet
    assert not caught.value.retryable


# --- poll: the status table ------------------------------------------------------------------


def mock_poll(rig: Rig, fixture: str, status: int = 200, pid: str = PID, **headers: str) -> Any:
    return rig.router.get(f"/v1/predictions/{pid}").mock(
        return_value=reply("replicate", fixture, status, **headers)
    )


async def test_starting_is_pending(rig: Rig) -> None:
    route = mock_poll(rig, "prediction_starting.json")
    result = await rig.adapter.poll(handle(PID, "video"))
    assert result.state is PollState.PENDING
    assert result.raw_status == "starting"
    assert result.provider_job_id == PID
    assert route.calls.last.request.headers["authorization"] == f"Bearer {TOKENS['replicate']}"


async def test_processing_is_running_with_progress_from_logs(rig: Rig) -> None:
    mock_poll(rig, "prediction_processing.json")
    result = await rig.adapter.poll(handle(PID, "video"))
    assert result.state is PollState.RUNNING
    assert result.progress == pytest.approx(0.4)
    assert not result.outputs


async def test_succeeded_string_output(rig: Rig) -> None:
    mock_poll(rig, "prediction_succeeded_video.json")
    result = await rig.adapter.poll(handle(PID, "video"))
    assert result.state is PollState.SUCCEEDED
    (output,) = result.outputs
    assert isinstance(output, RemoteOutput)
    assert output.url == "https://replicate.delivery/xezq/AbCdEf123/output.mp4"
    assert output.media_type == "video/mp4"
    assert output.filename == "output.mp4"
    assert dict(output.headers) == {}  # never our token on a CDN host
    assert result.cost_usd == Decimal("0.210714")  # 150.51 s x $0.0014/s (A100)


async def test_succeeded_list_output_with_per_output_price(rig: Rig) -> None:
    pid = "q1w2e3r4t5y6u7i8o9p0a1s2d3"
    mock_poll(rig, "prediction_succeeded_images.json", pid=pid)
    result = await rig.adapter.poll(handle(pid))
    assert [o.url for o in result.outputs if isinstance(o, RemoteOutput)] == [
        "https://replicate.delivery/xezq/Fox1/out-0.webp",
        "https://replicate.delivery/xezq/Fox2/out-1.webp",
    ]
    assert all(not o.headers for o in result.outputs if isinstance(o, RemoteOutput))
    assert result.cost_usd == Decimal("0.006")  # 2 images x $0.003 (official model)


async def test_succeeded_object_output_keeps_keys(rig: Rig) -> None:
    pid = "z9x8c7v6b5n4m3l2k1j0h9g8f7"
    mock_poll(rig, "prediction_succeeded_object.json", pid=pid)
    result = await rig.adapter.poll(handle(pid, "video"))
    assert [(o.metadata["key"], o.media_type) for o in result.outputs] == [
        ("video", "video/mp4"),
        ("poster", "image/png"),
    ]
    assert result.cost_usd is None  # model without a hardware SKU or price: unknown, not 0


async def test_succeeded_data_url_output_is_decoded_inline(rig: Rig) -> None:
    pid = "d4t4url0000000000000000000"
    mock_poll(rig, "prediction_succeeded_data_url.json", pid=pid)
    result = await rig.adapter.poll(handle(pid))
    (output,) = result.outputs
    assert isinstance(output, InlineOutput)
    assert output.data == fixture_bytes("stability", "result.png")
    assert output.media_type == "image/png"
    assert result.result_uri is None


async def test_output_on_the_api_host_gets_credentials_cdn_does_not(rig: Rig) -> None:
    payload = fixture_json("replicate", "prediction_succeeded_images.json")
    payload["id"] = PID
    payload["output"] = [
        "https://api.replicate.com/v1/files/abc/download",
        "https://replicate.delivery/x.png",
    ]
    rig.router.get(f"/v1/predictions/{PID}").mock(return_value=httpx.Response(200, json=payload))
    result = await rig.adapter.poll(handle(PID))
    own, cdn = result.outputs
    assert isinstance(own, RemoteOutput) and isinstance(cdn, RemoteOutput)
    assert dict(own.headers) == {"Authorization": f"Bearer {TOKENS['replicate']}"}
    assert dict(cdn.headers) == {}


async def test_data_removed_is_output_expired(rig: Rig) -> None:
    mock_poll(rig, "prediction_data_removed.json")
    result = await rig.adapter.poll(handle(PID, "video"))
    assert result.state is PollState.FAILED
    assert result.failure is not None
    assert result.failure.code == "output_expired"
    assert "expired" in result.failure.message


async def test_succeeded_with_text_only_output_fails_clearly(rig: Rig) -> None:
    payload = fixture_json("replicate", "prediction_succeeded_video.json")
    payload["output"] = ["just", "some", "tokens"]
    rig.router.get(f"/v1/predictions/{PID}").mock(return_value=httpx.Response(200, json=payload))
    result = await rig.adapter.poll(handle(PID))
    assert result.state is PollState.FAILED
    assert result.failure is not None and result.failure.code == "no_output"


async def test_failed_carries_the_error(rig: Rig) -> None:
    pid = "f41l3d000000000000000000aa"
    mock_poll(rig, "prediction_failed.json", pid=pid)
    result = await rig.adapter.poll(handle(pid, "video"))
    assert result.state is PollState.FAILED
    assert result.failure is not None
    assert result.failure.code == "provider_error"
    assert result.failure.message.startswith("E1001: CUDA out of memory")
    assert not result.failure.moderation
    assert result.cost_usd == Decimal("0.011340")  # billed for the 8.1 s it ran


async def test_failed_nsfw_is_moderation(rig: Rig) -> None:
    pid = "p3n8w1z6c5rg80cq2a9k4d7f0b"
    mock_poll(rig, "prediction_failed_nsfw.json", pid=pid)
    result = await rig.adapter.poll(handle(pid))
    assert result.failure is not None
    assert result.failure.moderation
    assert result.failure.message.startswith("moderation: NSFW content detected")


async def test_canceled(rig: Rig) -> None:
    mock_poll(rig, "prediction_canceled.json")
    result = await rig.adapter.poll(handle(PID, "video"))
    assert result.state is PollState.CANCELED
    assert result.failure is not None and result.failure.code == "canceled"
    assert result.cost_usd == Decimal("0.375340")  # time-billed for 268.1 s


async def test_aborted_is_canceled_before_start_and_free(rig: Rig) -> None:
    pid = "m1b4v7c0x3rg80cq5e2h9j6k8l"
    mock_poll(rig, "prediction_aborted.json", pid=pid)
    result = await rig.adapter.poll(handle(pid, "video"))
    assert result.state is PollState.CANCELED
    assert result.failure is not None and result.failure.code == "aborted"
    assert result.cost_usd == Decimal(0)


async def test_unknown_status_is_unknown_not_terminal(rig: Rig) -> None:
    mock_poll(rig, "prediction_unknown_status.json")
    result = await rig.adapter.poll(handle(PID))
    assert result.state is PollState.UNKNOWN
    assert result.raw_status == "paused"
    assert result.failure is None


async def test_not_found_right_after_submit_is_retried(rig: Rig) -> None:
    mock_poll(rig, "error_404.json", 404)
    with pytest.raises(ProviderNotVisibleYet, match="not found"):
        await rig.adapter.poll(handle(PID, since_submit_s=3.0))


@pytest.mark.parametrize("since", [120.0, None])
async def test_not_found_later_fails_the_job(rig: Rig, since: float | None) -> None:
    mock_poll(rig, "error_404.json", 404)
    result = await rig.adapter.poll(handle(PID, since_submit_s=since))
    assert result.state is PollState.FAILED
    assert result.failure is not None and result.failure.code == "not_found"


# --- poll: errors -----------------------------------------------------------------------------


async def test_429_with_retry_after_seconds(rig: Rig) -> None:
    mock_poll(rig, "error_429.json", 429, **{"retry-after": "2"})
    with pytest.raises(ProviderRateLimited) as caught:
        await rig.adapter.poll(handle(PID))
    assert caught.value.retry_after_s == 2.0
    assert caught.value.retryable


async def test_429_with_retry_after_http_date(rig: Rig) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=40), usegmt=True)
    mock_poll(rig, "error_429.json", 429, **{"retry-after": when})
    with pytest.raises(ProviderRateLimited) as caught:
        await rig.adapter.poll(handle(PID))
    assert caught.value.retry_after_s is not None
    assert 35 <= caught.value.retry_after_s <= 41


async def test_429_without_header_reads_the_detail(rig: Rig) -> None:
    mock_poll(rig, "error_429.json", 429)
    with pytest.raises(ProviderRateLimited) as caught:
        await rig.adapter.poll(handle(PID))
    assert caught.value.retry_after_s == 1.0  # "Expected available in 1 second."


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (401, ProviderAuthError),
        (403, ProviderAuthError),
        (500, ProviderUnavailable),
        (502, ProviderUnavailable),
    ],
)
async def test_poll_http_errors(rig: Rig, status: int, error_type: type[ProviderError]) -> None:
    mock_poll(rig, "error_401.json" if status < 500 else "error_500.json", status)
    with pytest.raises(error_type) as caught:
        await rig.adapter.poll(handle(PID))
    assert caught.value.retryable is (status >= 500)


async def test_malformed_json_is_a_protocol_error_with_snippet(rig: Rig) -> None:
    rig.router.get(f"/v1/predictions/{PID}").mock(
        return_value=httpx.Response(200, content=fixture_bytes("replicate", "malformed.txt"))
    )
    with pytest.raises(ProviderProtocolError) as caught:
        await rig.adapter.poll(handle(PID))
    assert caught.value.snippet is not None
    assert caught.value.snippet.startswith('{"id": "k7d2q9m4xhrm80cq1v3b5t8e6a"')
    assert TOKENS["replicate"] not in str(caught.value)


async def test_schema_drift_is_a_protocol_error(rig: Rig) -> None:
    mock_poll(rig, "schema_drift.json")
    with pytest.raises(ProviderProtocolError, match="unexpected reply shape"):
        await rig.adapter.poll(handle(PID))


async def test_bad_data_url_is_a_protocol_error(rig: Rig) -> None:
    payload = fixture_json("replicate", "prediction_succeeded_video.json")
    payload["output"] = "data:image/png;base64,@@@"
    rig.router.get(f"/v1/predictions/{PID}").mock(return_value=httpx.Response(200, json=payload))
    with pytest.raises(ProviderProtocolError, match="base64"):
        await rig.adapter.poll(handle(PID))


async def test_unknown_fields_are_tolerated(rig: Rig) -> None:
    payload = fixture_json("replicate", "prediction_processing.json")
    payload["brand_new_field"] = {"nested": [1, 2, 3]}
    rig.router.get(f"/v1/predictions/{PID}").mock(return_value=httpx.Response(200, json=payload))
    assert (await rig.adapter.poll(handle(PID))).state is PollState.RUNNING


async def test_job_ids_are_escaped_in_paths(rig: Rig) -> None:
    route = rig.router.get("/v1/predictions/a%2Fb%3Fc").mock(
        return_value=reply("replicate", "prediction_starting.json")
    )
    await rig.adapter.poll(handle("a/b?c"))
    assert route.called


async def test_cost_with_a_default_hardware_sku() -> None:
    async with open_rig(SPEC, settings(model_hardware={}, default_hardware="gpu-t4")) as rig:
        mock_poll(rig, "prediction_succeeded_video.json")
        result = await rig.adapter.poll(handle(PID, "video"))
    assert result.cost_usd == Decimal("0.033865")  # 150.51 s x $0.000225/s


async def test_an_absurd_predict_time_leaves_the_cost_unknown_instead_of_crashing() -> None:
    """Decimal.quantize raises InvalidOperation past 28 digits; the output must still count."""
    payload = fixture_json("replicate", "prediction_succeeded_video.json")
    payload["metrics"]["predict_time"] = 1e300
    async with open_rig(SPEC, settings(model_hardware={}, default_hardware="gpu-t4")) as rig:
        rig.router.get(f"/v1/predictions/{PID}").mock(
            return_value=httpx.Response(200, json=payload)
        )
        result = await rig.adapter.poll(handle(PID, "video"))
    assert result.state is PollState.SUCCEEDED
    assert result.cost_usd is None


DEPLOYMENT_PARAMS = {"deployment": "acme/video-prod", "input": {"prompt": "x"}}


async def test_deployment_prediction_cost_is_unknown_not_predict_time(rig: Rig) -> None:
    """A deployment bills its instances' whole online time: no per-prediction price exists."""
    mock_poll(rig, "prediction_succeeded_deployment.json")
    result = await rig.adapter.poll(handle(PID, "video", params=DEPLOYMENT_PARAMS))
    assert result.state is PollState.SUCCEEDED
    # Its model has a SKU (VIDEO_MODEL_SKU): priced as a public model this would be 0.210714.
    assert result.cost_usd is None


@pytest.mark.parametrize(
    ("status", "cost"),
    [("failed", None), ("canceled", None), ("aborted", Decimal(0))],
)
async def test_deployment_prediction_cost_when_it_ends_without_output(
    rig: Rig, status: str, cost: Decimal | None
) -> None:
    payload = fixture_json("replicate", "prediction_succeeded_deployment.json")
    payload.update(status=status, output=None, error="boom" if status == "failed" else None)
    rig.router.get(f"/v1/predictions/{PID}").mock(return_value=httpx.Response(200, json=payload))
    result = await rig.adapter.poll(handle(PID, "video", params=DEPLOYMENT_PARAMS))
    assert result.state in (PollState.FAILED, PollState.CANCELED)
    assert result.cost_usd == cost  # aborted never ran: $0, as for any prediction


@pytest.mark.parametrize("call", ["submit", "poll"])
async def test_deployment_route_counts_even_when_the_reply_omits_it(rig: Rig, call: str) -> None:
    """A reply without ``deployment`` must not turn a deployment's run into a public-model price."""
    payload = fixture_json("replicate", "prediction_succeeded_deployment.json")
    del payload["deployment"]
    answer = httpx.Response(201 if call == "submit" else 200, json=payload)
    if call == "submit":
        rig.router.post("/v1/deployments/acme/video-prod/predictions").mock(return_value=answer)
        result = await rig.adapter.submit(submit_request(DEPLOYMENT_PARAMS, "video"))
    else:
        rig.router.get(f"/v1/predictions/{PID}").mock(return_value=answer)
        result = await rig.adapter.poll(handle(PID, "video", params=DEPLOYMENT_PARAMS))
    assert result.state is PollState.SUCCEEDED
    assert result.cost_usd is None


# --- cancel ---------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 404, 409, 422])
async def test_cancel_is_best_effort(rig: Rig, status: int) -> None:
    route = rig.router.post(f"/v1/predictions/{PID}/cancel").mock(
        return_value=reply("replicate", "prediction_canceled.json", status)
    )
    await rig.adapter.cancel(handle(PID))
    assert route.call_count == 1
    assert route.calls.last.request.headers["authorization"] == f"Bearer {TOKENS['replicate']}"


@pytest.mark.parametrize(
    ("status", "error_type"), [(401, ProviderAuthError), (503, ProviderUnavailable)]
)
async def test_cancel_reports_real_failures(
    rig: Rig, status: int, error_type: type[ProviderError]
) -> None:
    rig.router.post(f"/v1/predictions/{PID}/cancel").mock(
        return_value=reply("replicate", "error_500.json", status)
    )
    with pytest.raises(error_type):
        await rig.adapter.cancel(handle(PID))


async def test_name_is_stable(rig: Rig) -> None:
    assert rig.adapter.name == "replicate"
