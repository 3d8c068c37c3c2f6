"""Suno (sunoapi.org schema): body-code errors, every record status, lenient clip parsing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from providers.errors import (
    ProviderAuthError,
    ProviderBusy,
    ProviderConnectError,
    ProviderError,
    ProviderNotVisibleYet,
    ProviderProtocolError,
    ProviderRateLimited,
    ProviderRejected,
    ProviderUnavailable,
)
from providers.registry import BUILTIN_PROVIDERS
from providers.suno import SunoSettings
from providers.types import PollState, RemoteOutput
from tests.providers.conftest import (
    TOKENS,
    Rig,
    fixture_json,
    handle,
    open_rig,
    reply,
    submit_request,
)

pytestmark = pytest.mark.anyio

SPEC = BUILTIN_PROVIDERS["suno"]
TID = "7f3c9a1e2b"
CALLBACK = "https://hooks.example/suno?token=cb-secret-123"
PARAMS = {"customMode": False, "instrumental": True, "model": "V4_5", "prompt": "lofi rain"}
RECORD_PATH = "/api/v1/generate/record-info"


def settings(**values: Any) -> SunoSettings:
    values.setdefault("callback_url", CALLBACK)
    return SunoSettings.from_env({}, api_key=TOKENS["suno"], **values)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    async with open_rig(SPEC, settings(usd_per_credit="0.005")) as opened:
        yield opened


# --- submit ---------------------------------------------------------------------------------


async def test_submit_sends_the_body_with_our_callback(rig: Rig) -> None:
    route = rig.router.post("/api/v1/generate").mock(return_value=reply("suno", "generate_ok.json"))
    result = await rig.adapter.submit(submit_request(PARAMS, "audio"))
    assert result.state is PollState.PENDING
    assert result.provider_job_id == TID
    body = json.loads(route.calls.last.request.content)
    assert body == {**PARAMS, "callBackUrl": CALLBACK}
    assert route.calls.last.request.headers["authorization"] == f"Bearer {TOKENS['suno']}"


async def test_submit_overrides_a_callback_in_params_and_passes_unknown_fields(rig: Rig) -> None:
    route = rig.router.post("/api/v1/generate").mock(return_value=reply("suno", "generate_ok.json"))
    params = {**PARAMS, "callBackUrl": "https://evil.example/", "personaId": "p-1", "style": "jazz"}
    await rig.adapter.submit(submit_request(params, "audio"))
    body = json.loads(route.calls.last.request.content)
    assert body["callBackUrl"] == CALLBACK
    assert body["personaId"] == "p-1"
    assert body["style"] == "jazz"


@pytest.mark.parametrize(
    "params",
    [
        {"instrumental": True, "model": "V4_5"},  # customMode missing
        {**PARAMS, "instrumental": "maybe"},
        {**PARAMS, "model": ""},
        {**PARAMS, "title": "x" * 81},
    ],
)
async def test_submit_rejects_bad_params(rig: Rig, params: dict[str, Any]) -> None:
    with pytest.raises(ProviderRejected, match="invalid input_params"):
        await rig.adapter.submit(submit_request(params, "audio"))
    assert not rig.router.calls


async def test_submit_without_callback_setting_is_rejected() -> None:
    unconfigured = SunoSettings.from_env({})
    async with open_rig(SPEC, unconfigured) as rig:
        with pytest.raises(ProviderRejected, match="SUNO_CALLBACK_URL"):
            await rig.adapter.submit(submit_request(PARAMS, "audio"))


@pytest.mark.parametrize(
    ("fixture", "error_type", "retryable"),
    [
        ("code_400.json", ProviderRejected, False),
        ("code_401.json", ProviderAuthError, False),
        ("code_404.json", ProviderRejected, False),
        ("code_405.json", ProviderRateLimited, True),
        ("code_413.json", ProviderRejected, False),
        ("code_429.json", ProviderRejected, False),  # out of credits, not a rate limit
        ("code_430.json", ProviderRateLimited, True),
        ("code_455.json", ProviderBusy, True),  # maintenance: nothing was created
        ("code_500.json", ProviderUnavailable, True),
    ],
)
async def test_body_codes_on_submit(
    rig: Rig, fixture: str, error_type: type[ProviderError], retryable: bool
) -> None:
    route = rig.router.post("/api/v1/generate").mock(return_value=reply("suno", fixture))
    with pytest.raises(error_type) as caught:
        await rig.adapter.submit(submit_request(PARAMS, "audio"))
    assert type(caught.value) is error_type
    assert caught.value.retryable is retryable
    assert route.call_count == 1  # never retried


async def test_out_of_credits_says_so(rig: Rig) -> None:
    rig.router.post("/api/v1/generate").mock(return_value=reply("suno", "code_429.json"))
    with pytest.raises(ProviderRejected, match="out of credits"):
        await rig.adapter.submit(submit_request(PARAMS, "audio"))


async def test_maintenance_says_nothing_was_created_so_a_submit_may_be_retried(rig: Rig) -> None:
    rig.router.post("/api/v1/generate").mock(return_value=reply("suno", "code_455.json"))
    with pytest.raises(ProviderBusy, match="body code 455: maintenance") as caught:
        await rig.adapter.submit(submit_request(PARAMS, "audio"))
    assert caught.value.retryable


async def test_server_error_on_submit_stays_ambiguous(rig: Rig) -> None:
    rig.router.post("/api/v1/generate").mock(return_value=reply("suno", "code_500.json"))
    with pytest.raises(ProviderUnavailable) as caught:
        await rig.adapter.submit(submit_request(PARAMS, "audio"))
    assert not isinstance(caught.value, ProviderBusy | ProviderConnectError)


async def test_rate_limit_code_carries_a_backoff(rig: Rig) -> None:
    rig.router.post("/api/v1/generate").mock(return_value=reply("suno", "code_430.json"))
    with pytest.raises(ProviderRateLimited) as caught:
        await rig.adapter.submit(submit_request(PARAMS, "audio"))
    assert caught.value.retry_after_s == 20.0


async def test_submit_without_task_id_is_a_protocol_error(rig: Rig) -> None:
    rig.router.post("/api/v1/generate").mock(
        return_value=httpx.Response(200, json={"code": 200, "msg": "success", "data": {}})
    )
    with pytest.raises(ProviderProtocolError):
        await rig.adapter.submit(submit_request(PARAMS, "audio"))


# --- poll: statuses -------------------------------------------------------------------------


def mock_record(rig: Rig, fixture: str, status: int = 200) -> Any:
    return rig.router.get(RECORD_PATH, params={"taskId": TID}).mock(
        return_value=reply("suno", fixture, status)
    )


@pytest.mark.parametrize(
    ("fixture", "state", "raw"),
    [
        ("record_pending.json", PollState.PENDING, "PENDING"),
        ("record_text_success.json", PollState.RUNNING, "TEXT_SUCCESS"),
        ("record_first_success.json", PollState.RUNNING, "FIRST_SUCCESS"),
        ("record_unknown_status.json", PollState.UNKNOWN, "QUEUED_FOR_REVIEW"),
    ],
)
async def test_non_terminal_statuses(rig: Rig, fixture: str, state: PollState, raw: str) -> None:
    route = mock_record(rig, fixture)
    result = await rig.adapter.poll(handle(TID, "audio"))
    assert result.state is state
    assert result.raw_status == raw
    assert not result.outputs
    assert route.calls.last.request.headers["authorization"] == f"Bearer {TOKENS['suno']}"


async def test_success_yields_both_clips_with_cover_in_metadata(rig: Rig) -> None:
    mock_record(rig, "record_success.json")
    result = await rig.adapter.poll(handle(TID, "audio"))
    assert result.state is PollState.SUCCEEDED
    first, second = result.outputs
    assert isinstance(first, RemoteOutput) and isinstance(second, RemoteOutput)
    assert first.url == "https://cdn1.suno.ai/c1a2b3c4.mp3"
    assert second.url == "https://cdn1.suno.ai/d3e4f5a6.mp3"
    assert first.media_type == "audio/mpeg"
    assert first.filename == "c1a2b3c4.mp3"
    assert dict(first.headers) == {} and dict(second.headers) == {}  # CDN: no token
    assert first.metadata["image_url"] == "https://cdn2.suno.ai/image_c1a2b3c4.jpeg"
    assert first.metadata["stream_audio_url"].startswith("https://audiopipe.suno.ai/")
    assert first.metadata["title"] == "Rain Study"
    assert first.metadata["duration"] == 142.6
    assert first.metadata["clip_id"] == "c1a2b3c4-0000-4000-8000-000000000001"
    assert result.cost_usd == Decimal("0.060")  # 12 credits x $0.005


async def test_success_with_documented_field_variants(rig: Rig) -> None:
    mock_record(rig, "record_success_variants.json")
    result = await rig.adapter.poll(handle(TID, "audio"))
    urls = [o.url for o in result.outputs if isinstance(o, RemoteOutput)]
    assert urls == ["https://cdn1.suno.ai/c1a2b3c4.mp3", "https://cdn1.suno.ai/d3e4f5a6.mp3"]
    assert result.outputs[0].metadata["image_url"] == "https://cdn2.suno.ai/image_c1a2b3c4.jpeg"


@pytest.mark.parametrize(
    "fixture", ["record_success_one_clip_without_audio.json", "record_success_no_audio.json"]
)
async def test_success_with_a_clip_still_lacking_audio_is_still_running(
    rig: Rig, fixture: str
) -> None:
    """Only a stream URL is not the final MP3: poll again, never complete with fewer clips."""
    mock_record(rig, fixture)
    result = await rig.adapter.poll(handle(TID, "audio"))
    assert result.state is PollState.RUNNING
    assert result.raw_status == "SUCCESS"
    assert not result.outputs
    assert result.cost_usd is None


async def test_success_completes_once_the_last_clip_has_its_audio(rig: Rig) -> None:
    rig.router.get(RECORD_PATH).mock(
        side_effect=[
            reply("suno", "record_success_one_clip_without_audio.json"),
            reply("suno", "record_success.json"),
        ]
    )
    first = await rig.adapter.poll(handle(TID, "audio"))
    second = await rig.adapter.poll(handle(TID, "audio"))
    assert first.state is PollState.RUNNING
    assert second.state is PollState.SUCCEEDED
    assert len(second.outputs) == 2


async def test_success_without_any_clip_is_a_protocol_error(rig: Rig) -> None:
    payload = fixture_json("suno", "record_success.json")
    payload["data"]["response"] = {"taskId": TID, "sunoData": []}
    rig.router.get(RECORD_PATH).mock(return_value=httpx.Response(200, json=payload))
    with pytest.raises(ProviderProtocolError, match="SUCCESS without any clip"):
        await rig.adapter.poll(handle(TID, "audio"))


@pytest.mark.parametrize(
    ("fixture", "message"),
    [
        ("record_create_task_failed.json", "Failed to create the generation task"),
        ("record_generate_audio_failed.json", "Audio generation failed, please try again"),
    ],
)
async def test_failures(rig: Rig, fixture: str, message: str) -> None:
    mock_record(rig, fixture)
    result = await rig.adapter.poll(handle(TID, "audio"))
    assert result.state is PollState.FAILED
    assert result.failure is not None
    assert result.failure.message == message
    assert not result.failure.moderation
    assert result.cost_usd is None


async def test_sensitive_word_error_is_moderation(rig: Rig) -> None:
    mock_record(rig, "record_sensitive_word.json")
    result = await rig.adapter.poll(handle(TID, "audio"))
    assert result.state is PollState.FAILED
    assert result.failure is not None and result.failure.moderation
    assert result.failure.message == "moderation: prompt contains restricted content"


async def test_callback_exception_with_every_clip_is_success(rig: Rig) -> None:
    mock_record(rig, "record_callback_exception_complete.json")
    result = await rig.adapter.poll(handle(TID, "audio"))
    assert result.state is PollState.SUCCEEDED
    assert len(result.outputs) == 2
    assert result.raw_status == "CALLBACK_EXCEPTION"


async def test_callback_exception_with_a_missing_clip_fails(rig: Rig) -> None:
    mock_record(rig, "record_callback_exception_incomplete.json")
    result = await rig.adapter.poll(handle(TID, "audio"))
    assert result.state is PollState.FAILED
    assert result.failure is not None
    assert result.failure.message == "callback delivery failed"


async def test_callback_exception_without_clips_fails(rig: Rig) -> None:
    payload = fixture_json("suno", "record_callback_exception_complete.json")
    payload["data"]["response"] = None
    payload["data"]["errorMessage"] = None
    rig.router.get(RECORD_PATH).mock(return_value=httpx.Response(200, json=payload))
    result = await rig.adapter.poll(handle(TID, "audio"))
    assert result.state is PollState.FAILED
    assert result.failure is not None and "callback" in result.failure.message


async def test_status_words_are_case_insensitive(rig: Rig) -> None:
    payload = fixture_json("suno", "record_pending.json")
    payload["data"]["status"] = "first_success"
    rig.router.get(RECORD_PATH).mock(return_value=httpx.Response(200, json=payload))
    assert (await rig.adapter.poll(handle(TID, "audio"))).state is PollState.RUNNING


async def test_cost_is_unknown_without_a_credit_price() -> None:
    async with open_rig(SPEC, settings()) as rig:
        mock_record(rig, "record_success.json")
        result = await rig.adapter.poll(handle(TID, "audio"))
    assert result.state is PollState.SUCCEEDED
    assert result.cost_usd is None


async def test_output_on_the_api_host_gets_credentials(rig: Rig) -> None:
    payload = fixture_json("suno", "record_success.json")
    payload["data"]["response"]["sunoData"][0]["audioUrl"] = "https://api.sunoapi.org/files/a.mp3"
    rig.router.get(RECORD_PATH).mock(return_value=httpx.Response(200, json=payload))
    result = await rig.adapter.poll(handle(TID, "audio"))
    own, cdn = result.outputs
    assert isinstance(own, RemoteOutput) and isinstance(cdn, RemoteOutput)
    assert dict(own.headers) == {"Authorization": f"Bearer {TOKENS['suno']}"}
    assert dict(cdn.headers) == {}


# --- poll: errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "error_type"),
    [
        ("code_429.json", ProviderRejected),
        ("code_405.json", ProviderRateLimited),
        ("code_430.json", ProviderRateLimited),
        ("code_455.json", ProviderBusy),
        ("code_500.json", ProviderUnavailable),
        ("code_401.json", ProviderAuthError),
        ("code_400.json", ProviderRejected),
    ],
)
async def test_body_codes_on_poll(rig: Rig, fixture: str, error_type: type[ProviderError]) -> None:
    mock_record(rig, fixture)
    with pytest.raises(error_type):
        await rig.adapter.poll(handle(TID, "audio"))


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (401, ProviderAuthError),
        (429, ProviderRateLimited),
        (500, ProviderUnavailable),
        (503, ProviderUnavailable),
        (400, ProviderRejected),
    ],
)
async def test_http_status_decides_when_the_body_is_no_envelope(
    rig: Rig, status: int, error_type: type[ProviderError]
) -> None:
    rig.router.get(RECORD_PATH).mock(
        return_value=httpx.Response(status, text="<html><body>gateway says no</body></html>")
    )
    with pytest.raises(error_type) as caught:
        await rig.adapter.poll(handle(TID, "audio"))
    assert type(caught.value) is error_type
    assert f"HTTP {status}" in str(caught.value)


async def test_http_429_without_an_envelope_is_a_rate_limit_with_its_retry_after(rig: Rig) -> None:
    rig.router.get(RECORD_PATH).mock(
        return_value=httpx.Response(
            429, json={"detail": "Too Many Requests"}, headers={"retry-after": "7"}
        )
    )
    with pytest.raises(ProviderRateLimited) as caught:
        await rig.adapter.poll(handle(TID, "audio"))
    assert caught.value.retry_after_s == 7.0


@pytest.mark.parametrize("call", ["submit", "poll"])
async def test_http_429_with_body_code_429_is_out_of_credits_not_a_rate_limit(
    rig: Rig, call: str
) -> None:
    out_of_credits = reply("suno", "code_429.json", 429, **{"retry-after": "5"})
    if call == "submit":
        rig.router.post("/api/v1/generate").mock(return_value=out_of_credits)
        attempt = rig.adapter.submit(submit_request(PARAMS, "audio"))
    else:
        rig.router.get(RECORD_PATH).mock(return_value=out_of_credits)
        attempt = rig.adapter.poll(handle(TID, "audio"))
    with pytest.raises(ProviderError) as caught:
        await attempt
    assert type(caught.value) is ProviderRejected  # fail fast: no pause, no retry
    assert not caught.value.retryable
    assert "out of credits" in str(caught.value)


@pytest.mark.parametrize(
    ("status", "fixture", "error_type"),
    [
        (500, "code_500.json", ProviderUnavailable),
        (401, "code_401.json", ProviderAuthError),
        (430, "code_430.json", ProviderRateLimited),
        (500, "code_400.json", ProviderRejected),  # the body's own word wins
    ],
)
async def test_body_code_wins_over_a_mirrored_http_status(
    rig: Rig, status: int, fixture: str, error_type: type[ProviderError]
) -> None:
    mock_record(rig, fixture, status)
    with pytest.raises(ProviderError) as caught:
        await rig.adapter.poll(handle(TID, "audio"))
    assert type(caught.value) is error_type
    assert "body code" in str(caught.value)


@pytest.mark.parametrize(
    ("status", "code", "error_type"),
    [(403, 403, ProviderAuthError), (429, 1015, ProviderRateLimited)],
)
async def test_an_undocumented_body_code_defers_to_the_http_status(
    rig: Rig, status: int, code: int, error_type: type[ProviderError]
) -> None:
    """A gateway's own ``code`` must not fail the job where its HTTP status says more."""
    body = {"code": code, "msg": "Forbidden" if status == 403 else "slow down", "data": None}
    rig.router.get(RECORD_PATH).mock(return_value=httpx.Response(status, json=body))
    with pytest.raises(ProviderError) as caught:
        await rig.adapter.poll(handle(TID, "audio"))
    assert type(caught.value) is error_type
    assert f"HTTP {status}" in str(caught.value)


async def test_an_undocumented_body_code_with_http_200_is_a_refusal(rig: Rig) -> None:
    body = {"code": 403, "msg": "Forbidden", "data": None}
    rig.router.get(RECORD_PATH).mock(return_value=httpx.Response(200, json=body))
    with pytest.raises(ProviderRejected, match="body code 403"):
        await rig.adapter.poll(handle(TID, "audio"))


async def test_http_error_with_a_body_code_200_trusts_the_http_status(rig: Rig) -> None:
    mock_record(rig, "record_pending.json", 503)
    with pytest.raises(ProviderUnavailable, match="HTTP 503"):
        await rig.adapter.poll(handle(TID, "audio"))


NOT_FOUND_REPLIES = {
    "body_code": lambda: reply("suno", "code_404.json"),
    "http_status": lambda: httpx.Response(404, text="Not Found"),
}


@pytest.mark.parametrize("kind", sorted(NOT_FOUND_REPLIES))
async def test_not_found_right_after_submit_is_retried(rig: Rig, kind: str) -> None:
    rig.router.get(RECORD_PATH).mock(return_value=NOT_FOUND_REPLIES[kind]())
    with pytest.raises(ProviderError) as caught:
        await rig.adapter.poll(handle(TID, "audio", since_submit_s=5.0))
    assert type(caught.value) is ProviderNotVisibleYet  # retried, spends no error budget
    assert str(caught.value) == "suno: job not found 5 s after its id was recorded (will retry)"


@pytest.mark.parametrize("since", [45.0, None])
@pytest.mark.parametrize("kind", sorted(NOT_FOUND_REPLIES))
async def test_not_found_later_fails_the_job(rig: Rig, kind: str, since: float | None) -> None:
    rig.router.get(RECORD_PATH).mock(return_value=NOT_FOUND_REPLIES[kind]())
    result = await rig.adapter.poll(handle(TID, "audio", since_submit_s=since))
    assert result.state is PollState.FAILED
    assert result.failure is not None and result.failure.code == "not_found"
    assert result.failure.message.startswith("task not found at Suno")


async def test_html_reply_is_a_protocol_error_with_snippet(rig: Rig) -> None:
    rig.router.get(RECORD_PATH).mock(
        return_value=httpx.Response(200, text="<html><body>502 Bad Gateway</body></html>")
    )
    with pytest.raises(ProviderProtocolError) as caught:
        await rig.adapter.poll(handle(TID, "audio"))
    assert caught.value.snippet == "<html><body>502 Bad Gateway</body></html>"


@pytest.mark.parametrize(
    "payload",
    [
        {"code": 200, "msg": "success", "data": None},
        {"code": 200, "msg": "success", "data": {"taskId": TID}},
        {"msg": "no code"},
        [1, 2, 3],
        {"code": 200, "data": {"status": "SUCCESS", "response": {"sunoData": [{"audioUrl": 5}]}}},
    ],
)
async def test_schema_drift_is_a_protocol_error(rig: Rig, payload: Any) -> None:
    rig.router.get(RECORD_PATH).mock(return_value=httpx.Response(200, json=payload))
    with pytest.raises(ProviderProtocolError):
        await rig.adapter.poll(handle(TID, "audio"))


async def test_secrets_never_appear_in_errors(rig: Rig) -> None:
    echo = {
        "code": 400,
        "msg": f"bad callBackUrl {CALLBACK} for key {TOKENS['suno']}",
        "data": None,
    }
    rig.router.get(RECORD_PATH).mock(return_value=httpx.Response(200, json=echo))
    with pytest.raises(ProviderRejected) as caught:
        await rig.adapter.poll(handle(TID, "audio"))
    assert TOKENS["suno"] not in str(caught.value)
    assert "cb-secret-123" not in str(caught.value)


async def test_cancel_is_a_no_op(rig: Rig) -> None:
    await rig.adapter.cancel(handle(TID, "audio"))
    assert not rig.router.calls
