"""Stability adapter: multipart submit, 202/200 polling, both result modes, every error row."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import anyio
import httpx
import pytest
import respx
from anyio.abc import SocketStream

from providers.errors import (
    ProviderAuthError,
    ProviderConnectError,
    ProviderModerated,
    ProviderNotVisibleYet,
    ProviderProtocolError,
    ProviderRateLimited,
    ProviderRejected,
    ProviderUnavailable,
)
from providers.registry import BUILTIN_PROVIDERS, Hosting, make_client
from providers.stability import StabilityProvider, StabilitySettings
from providers.types import InlineOutput, PollResult, PollState
from tests.providers.conftest import (
    TOKENS,
    Rig,
    fixture_bytes,
    handle,
    open_rig,
    reply,
    submit_request,
)
from tests.providers.test_transport import response as wire_response
from tests.providers.test_transport import serve

pytestmark = pytest.mark.anyio

SPEC = BUILTIN_PROVIDERS["stability"]
BASE = "https://api.stability.ai"
SID = "a6dc6c6e20acda010fe14d71f180658f2896ed9b4ec25aa99a6ff06c796987c4"
PNG = fixture_bytes("stability", "result.png")
PNG_DATA_URL = "data:image/png;base64," + base64.b64encode(PNG).decode()
UPSCALE = {
    "endpoint": "stable-image/upscale/creative",
    "params": {"prompt": "a sharper fox", "creativity": 0.3, "output_format": "png"},
    "files": {"image": PNG_DATA_URL},
}
CORE = {"endpoint": "stable-image/generate/core"}
CREDITS = {
    "stable-image/upscale/creative": 60,
    "image-to-video": 20,
    "stable-image/generate/core": 3,
}


def settings(**values: Any) -> StabilitySettings:
    values.setdefault("credits", CREDITS)
    return StabilitySettings.from_env({}, api_key=TOKENS["stability"], **values)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    async with open_rig(SPEC, settings()) as opened:
        yield opened


def upscale_handle(**kwargs: Any) -> Any:
    return handle(SID, "image", params=UPSCALE, **kwargs)


# --- submit ---------------------------------------------------------------------------------


async def test_submit_is_multipart_with_fields_and_decoded_file(rig: Rig) -> None:
    route = rig.router.post("/v2beta/stable-image/upscale/creative").mock(
        return_value=reply("stability", "submit_accepted.json")
    )
    result = await rig.adapter.submit(submit_request(UPSCALE))
    assert result.state is PollState.PENDING
    assert result.provider_job_id == SID
    request = route.calls.last.request
    assert request.headers["content-type"].startswith("multipart/form-data")
    assert request.headers["accept"] == "application/json"
    assert request.headers["authorization"] == f"Bearer {TOKENS['stability']}"
    body = request.content
    assert b'name="prompt"\r\n\r\na sharper fox\r\n' in body
    assert b'name="creativity"\r\n\r\n0.3\r\n' in body
    assert b'name="image"; filename="image.png"\r\nContent-Type: image/png\r\n\r\n' + PNG in body


async def test_submit_without_fields_is_still_multipart(rig: Rig) -> None:
    route = rig.router.post("/v2beta/stable-image/generate/core").mock(
        return_value=reply("stability", "submit_accepted.json")
    )
    await rig.adapter.submit(submit_request({"endpoint": "stable-image/generate/core"}))
    assert route.calls.last.request.headers["content-type"].startswith("multipart/form-data")


async def test_submit_booleans_are_form_words(rig: Rig) -> None:
    route = rig.router.post("/v2beta/stable-image/generate/core").mock(
        return_value=reply("stability", "submit_accepted.json")
    )
    params = {"endpoint": "stable-image/generate/core", "params": {"flag": True, "off": False}}
    await rig.adapter.submit(submit_request(params))
    body = route.calls.last.request.content
    assert b'name="flag"\r\n\r\ntrue\r\n' in body and b'name="off"\r\n\r\nfalse\r\n' in body


async def test_submit_waits_long_for_a_sync_answer_and_polls_do_not(rig: Rig) -> None:
    """Reference §5.3: sync endpoints need a read timeout ≥120 s (audio 240 s); polls stay short."""
    submit = rig.router.post("/v2beta/stable-audio-2/text-to-audio").mock(
        return_value=reply("stability", "submit_accepted.json")
    )
    poll = mock_result(rig, reply("stability", "result_in_progress.json", 202))
    await rig.adapter.submit(submit_request({"endpoint": "stable-audio-2/text-to-audio"}))
    await rig.adapter.poll(upscale_handle())
    sent = submit.calls.last.request.extensions["timeout"]
    polled = poll.calls.last.request.extensions["timeout"]
    assert sent["read"] == 240.0 and sent["connect"] == 10.0
    assert polled["read"] == 30.0 and polled["connect"] == 10.0


async def test_a_sync_answer_slower_than_the_poll_timeout_arrives_over_the_wire() -> None:
    """Through the real aiohttp wire: the submit outlasts the poll read timeout, a poll not."""

    async def slow(stream: SocketStream, request: bytes) -> None:
        await anyio.sleep(0.8)
        await stream.send(wire_response(200, PNG, "Content-Type: image/png"))

    async with serve(slow) as base:
        conf = settings(base_url=base, read_timeout_s=0.2, sync_read_timeout_s=10.0)
        async with make_client(SPEC, conf) as client:
            adapter = SPEC.build(conf, client)
            result = await adapter.submit(
                submit_request({"endpoint": "stable-image/generate/core"})
            )
            assert (
                result.state is PollState.SUCCEEDED and result.outputs[0].media_type == "image/png"
            )
            with pytest.raises(ProviderUnavailable, match="timed out"):
                await adapter.poll(upscale_handle())


def file_host() -> tuple[respx.MockRouter, httpx.AsyncClient]:
    files = respx.MockRouter(assert_all_called=True, assert_all_mocked=True)
    return files, httpx.AsyncClient(transport=httpx.MockTransport(files.async_handler))


async def adapter_with_fetch(
    fetch: httpx.AsyncClient,
) -> tuple[respx.MockRouter, Any, httpx.AsyncClient]:
    api = respx.MockRouter(base_url=BASE, assert_all_mocked=True)
    client = make_client(SPEC, settings(), transport=httpx.MockTransport(api.async_handler))
    return api, StabilityProvider(settings(), client, fetch_client=fetch), client


async def test_https_input_is_fetched_without_the_api_key() -> None:
    files, fetch = file_host()
    files.get("https://inputs.example/fox.png").mock(
        return_value=httpx.Response(200, content=PNG, headers={"content-type": "image/png"})
    )
    api, adapter, client = await adapter_with_fetch(fetch)
    route = api.post("/v2beta/stable-image/upscale/creative").mock(
        return_value=reply("stability", "submit_accepted.json")
    )
    params = {**UPSCALE, "files": {"image": "https://inputs.example/fox.png"}}
    async with client, fetch:
        await adapter.submit(submit_request(params))
    fetched = files.calls.last.request
    assert "authorization" not in fetched.headers
    assert TOKENS["stability"] not in str(fetched.headers) + str(fetched.url)
    assert PNG in route.calls.last.request.content


async def test_input_redirects_are_followed_over_https_only() -> None:
    files, fetch = file_host()
    files.get("https://inputs.example/a").mock(
        return_value=httpx.Response(302, headers={"location": "https://cdn.example/b.png"})
    )
    files.get("https://cdn.example/b.png").mock(
        return_value=httpx.Response(302, headers={"location": "http://insecure.example/c.png"})
    )
    api, adapter, client = await adapter_with_fetch(fetch)
    params = {**UPSCALE, "files": {"image": "https://inputs.example/a"}}
    async with client, fetch:
        with pytest.raises(ProviderRejected, match="only https"):
            await adapter.submit(submit_request(params))
    assert not api.calls  # nothing was sent to Stability


def broken_gzip() -> httpx.Response:
    """Undecodable on reading (streamed, so httpx does not decode it when built)."""
    headers = {"content-encoding": "gzip"}
    return httpx.Response(200, headers=headers, stream=httpx.ByteStream(b"not gzip"))


@pytest.mark.parametrize(
    ("answer", "error_type"),
    [
        (httpx.Response(404), ProviderRejected),
        (httpx.Response(403), ProviderRejected),
        (httpx.Response(503), ProviderConnectError),
        (httpx.ConnectError("refused"), ProviderConnectError),
        (httpx.ReadTimeout("slow"), ProviderConnectError),
        # A broken body (protocol error) from the input host: nothing reached Stability yet,
        # so this must not surface as an ambiguous submit failure.
        (broken_gzip(), ProviderConnectError),
    ],
)
async def test_input_fetch_failures(answer: Any, error_type: type[Exception]) -> None:
    files, fetch = file_host()
    route = files.get("https://inputs.example/fox.png")
    if isinstance(answer, Exception):
        route.mock(side_effect=answer)
    else:
        route.mock(return_value=answer)
    api, adapter, client = await adapter_with_fetch(fetch)
    params = {**UPSCALE, "files": {"image": "https://inputs.example/fox.png"}}
    async with client, fetch:
        with pytest.raises(error_type, match=r"files\.image"):
            await adapter.submit(submit_request(params))
    assert not api.calls


async def test_https_input_without_the_daemons_guarded_client_is_refused(rig: Rig) -> None:
    """No unguarded fallback: only the daemon's client checks addresses (DESIGN §5)."""
    params = {**UPSCALE, "files": {"image": "https://inputs.example/fox.png"}}
    with pytest.raises(ProviderRejected, match=r"files\.image: https inputs are fetched only"):
        await rig.adapter.submit(submit_request(params))
    assert not rig.router.calls


async def test_a_refusal_by_the_fetch_client_names_the_input() -> None:
    """The guarded client refuses a private address with ProviderRejected; the job's error
    names the entry, and nothing is sent to Stability."""

    def guard(request: httpx.Request) -> httpx.Response:
        raise ProviderRejected("10.0.0.7 is not a public address (private)")

    fetch = httpx.AsyncClient(transport=httpx.MockTransport(guard))
    api, adapter, client = await adapter_with_fetch(fetch)
    params = {**UPSCALE, "files": {"image": "https://inputs.example/fox.png"}}
    async with client, fetch:
        with pytest.raises(ProviderRejected) as caught:
            await adapter.submit(submit_request(params))
    assert caught.value.message == (
        "stability: files.image: 10.0.0.7 is not a public address (private)"
    )
    assert not api.calls


async def test_input_fetches_use_the_input_fetch_timeout() -> None:
    files, fetch = file_host()
    route = files.get("https://inputs.example/fox.png").mock(
        return_value=httpx.Response(200, content=PNG, headers={"content-type": "image/png"})
    )
    api = respx.MockRouter(base_url=BASE, assert_all_mocked=True)
    api.post("/v2beta/stable-image/upscale/creative").mock(
        return_value=reply("stability", "submit_accepted.json")
    )
    conf = settings(input_fetch_timeout_s=7.0)
    params = {**UPSCALE, "files": {"image": "https://inputs.example/fox.png"}}
    async with (
        make_client(SPEC, conf, transport=httpx.MockTransport(api.async_handler)) as client,
        fetch,
    ):
        await StabilityProvider(conf, client, fetch_client=fetch).submit(submit_request(params))
    assert route.calls.last.request.extensions["timeout"]["read"] == 7.0


async def test_input_fetch_is_size_capped() -> None:
    files, fetch = file_host()
    files.get("https://inputs.example/huge.png").mock(
        return_value=httpx.Response(200, content=b"x" * 4096)
    )
    api = respx.MockRouter(base_url=BASE, assert_all_mocked=True)
    capped = settings(max_input_file_bytes=1024)
    async with (
        make_client(SPEC, capped, transport=httpx.MockTransport(api.async_handler)) as client,
        fetch,
    ):
        adapter = StabilityProvider(capped, client, fetch_client=fetch)
        params = {**UPSCALE, "files": {"image": "https://inputs.example/huge.png"}}
        with pytest.raises(ProviderRejected, match="larger than STABILITY_MAX_INPUT_FILE_BYTES"):
            await adapter.submit(submit_request(params))


@pytest.mark.parametrize(
    "params",
    [
        {"endpoint": "../v1/user/balance"},
        {"endpoint": "/stable-image/generate/core"},
        {
            "endpoint": "stable-image/generate/core",
            "files": {"image": "http://insecure.example/a.png"},
        },
        {"endpoint": "stable-image/generate/core", "files": {"image": "file:///etc/passwd"}},
        {"endpoint": "stable-image/generate/core", "params": {"nested": {"a": 1}}},
        {"endpoint": "stable-image/generate/core", "files": {"image": "data:image/png;base64,@@"}},
        {"params": {"prompt": "no endpoint"}},
    ],
)
async def test_submit_rejects_bad_params(rig: Rig, params: dict[str, Any]) -> None:
    with pytest.raises(ProviderRejected):
        await rig.adapter.submit(submit_request(params))
    assert not rig.router.calls


async def test_submit_moderation_refusal_is_moderated_with_reason(rig: Rig) -> None:
    """DESIGN §10: the job's error is "moderation: …" as is; `ProviderModerated` says so."""
    rig.router.post("/v2beta/stable-image/upscale/creative").mock(
        return_value=reply("stability", "error_403_moderation.json", 403)
    )
    with pytest.raises(ProviderModerated) as caught:
        await rig.adapter.submit(submit_request(UPSCALE))
    assert isinstance(caught.value, ProviderRejected)  # still permanent: nothing was created
    assert caught.value.message == "moderation: request flagged by content moderation"
    assert str(caught.value).startswith("moderation: ")


@pytest.mark.parametrize(
    ("status", "fixture", "error_type"),
    [
        (400, "error_400.json", ProviderRejected),
        (402, "error_402.json", ProviderRejected),
        (413, "error_413.json", ProviderRejected),
        (401, "error_401.json", ProviderAuthError),
        (403, "error_403_forbidden.json", ProviderAuthError),
        (500, "error_500.json", ProviderUnavailable),
        (429, "error_429.json", ProviderRateLimited),
    ],
)
async def test_submit_errors_are_typed_and_never_retried(
    rig: Rig, status: int, fixture: str, error_type: type[Exception]
) -> None:
    route = rig.router.post("/v2beta/stable-image/upscale/creative").mock(
        return_value=reply("stability", fixture, status)
    )
    with pytest.raises(error_type):
        await rig.adapter.submit(submit_request(UPSCALE))
    assert route.call_count == 1


async def test_sync_endpoint_json_reply_is_the_result(rig: Rig) -> None:
    rig.router.post("/v2beta/stable-image/generate/core").mock(
        return_value=reply("stability", "sync_success.json")
    )
    request = submit_request({"endpoint": "stable-image/generate/core", "params": {"prompt": "x"}})
    result = await rig.adapter.submit(request)
    assert result.state is PollState.SUCCEEDED
    assert result.provider_job_id == f"sync-{request.job_id}"
    (output,) = result.outputs
    assert isinstance(output, InlineOutput) and output.data == PNG
    assert output.metadata == {"finish_reason": "SUCCESS", "seed": 99}
    assert result.cost_usd == Decimal("0.03")
    assert result.result_uri is None


async def test_sync_endpoint_bytes_reply_is_the_result(rig: Rig) -> None:
    rig.router.post("/v2beta/stable-image/generate/core").mock(
        return_value=httpx.Response(
            200, content=PNG, headers={"content-type": "image/png", "finish-reason": "SUCCESS"}
        )
    )
    result = await rig.adapter.submit(submit_request({"endpoint": "stable-image/generate/core"}))
    assert result.state is PollState.SUCCEEDED
    assert result.outputs[0].media_type == "image/png"


async def test_polling_a_sync_id_reports_the_lost_result(rig: Rig) -> None:
    result = await rig.adapter.poll(handle(f"sync-{uuid.uuid4()}"))
    assert result.state is PollState.FAILED
    assert result.failure is not None and result.failure.code == "result_lost"
    assert not rig.router.calls


# --- poll -------------------------------------------------------------------------------------


def mock_result(rig: Rig, response: httpx.Response, path: str = f"/v2beta/results/{SID}") -> Any:
    return rig.router.get(path).mock(return_value=response)


async def test_202_is_running(rig: Rig) -> None:
    route = mock_result(rig, reply("stability", "result_in_progress.json", 202))
    result = await rig.adapter.poll(upscale_handle())
    assert result.state is PollState.RUNNING
    assert result.raw_status == "in-progress"
    assert route.calls.last.request.headers["accept"] == "*/*"


async def test_202_with_an_odd_body_is_still_running(rig: Rig) -> None:
    mock_result(rig, httpx.Response(202, content=b"<html>busy</html>"))
    assert (await rig.adapter.poll(upscale_handle())).state is PollState.RUNNING


async def test_200_bytes_is_the_file(rig: Rig) -> None:
    headers = {"content-type": "image/png", "finish-reason": "SUCCESS", "seed": "1827364519"}
    mock_result(rig, httpx.Response(200, content=PNG, headers=headers))
    result = await rig.adapter.poll(upscale_handle())
    assert result.state is PollState.SUCCEEDED
    (output,) = result.outputs
    assert isinstance(output, InlineOutput)
    assert output.data == PNG
    assert output.media_type == "image/png"
    assert output.metadata == {"finish_reason": "SUCCESS", "seed": 1827364519}
    assert result.result_uri == f"{BASE}/v2beta/results/{SID}"
    assert result.cost_usd == Decimal("0.60")  # 60 credits x $0.01


@pytest.mark.parametrize(("seed", "kept"), [("9" * 5000, "9" * 32), ("²", "²")])
async def test_an_absurd_seed_header_is_kept_as_text_not_a_crash(
    rig: Rig, seed: str, kept: str
) -> None:
    """int() raises on 5000 digits or a superscript digit: the paid-for file must survive."""
    headers = [
        (b"content-type", b"image/png"),
        (b"finish-reason", b"SUCCESS"),
        (b"seed", seed.encode("latin-1")),  # httpx reads header bytes as latin-1
    ]
    mock_result(rig, httpx.Response(200, content=PNG, headers=headers))
    result = await rig.adapter.poll(upscale_handle())
    assert result.state is PollState.SUCCEEDED
    assert result.outputs[0].metadata["seed"] == kept


async def test_200_json_base64_is_the_file(rig: Rig) -> None:
    mock_result(rig, reply("stability", "result_success.json"))
    result = await rig.adapter.poll(upscale_handle())
    (output,) = result.outputs
    assert isinstance(output, InlineOutput) and output.data == PNG
    assert output.metadata["seed"] == 1827364519
    assert result.result_uri == f"{BASE}/v2beta/results/{SID}"


async def test_video_uses_the_image_to_video_result_path(rig: Rig) -> None:
    path = f"/v2beta/image-to-video/result/{SID}"
    route = mock_result(rig, reply("stability", "video_result_success.json"), path)
    params = {"endpoint": "image-to-video", "files": {"image": PNG_DATA_URL}}
    result = await rig.adapter.poll(handle(SID, "video", params=params))
    assert route.calls.last.request.headers["accept"] == "video/*"
    (output,) = result.outputs
    assert isinstance(output, InlineOutput)
    assert output.data == fixture_bytes("stability", "result.mp4")
    assert output.media_type == "video/mp4"
    assert result.result_uri == f"{BASE}{path}"
    assert result.cost_usd == Decimal("0.20")


async def test_video_bytes_mode(rig: Rig) -> None:
    mp4 = fixture_bytes("stability", "result.mp4")
    headers = {"content-type": "video/mp4", "finish-reason": "SUCCESS", "seed": "7"}
    mock_result(
        rig,
        httpx.Response(200, content=mp4, headers=headers),
        f"/v2beta/image-to-video/result/{SID}",
    )
    result = await rig.adapter.poll(handle(SID, "video"))
    assert result.outputs[0].media_type == "video/mp4"
    assert result.cost_usd is None  # no params on the handle: endpoint unknown, cost unknown


async def test_content_filtered_header_is_moderation_failure(rig: Rig) -> None:
    headers = {"content-type": "image/png", "finish-reason": "CONTENT_FILTERED"}
    mock_result(rig, httpx.Response(200, content=PNG, headers=headers))
    result = await rig.adapter.poll(upscale_handle())
    assert result.state is PollState.FAILED
    assert result.failure is not None and result.failure.moderation
    assert result.failure.message.startswith("moderation: ")
    assert not result.outputs  # the blurred bytes are not an artifact
    assert result.cost_usd == Decimal("0.60")  # assumed charged (reference §5.5)


async def test_content_filtered_json_is_moderation_failure(rig: Rig) -> None:
    mock_result(rig, reply("stability", "result_filtered.json"))
    result = await rig.adapter.poll(upscale_handle())
    assert result.state is PollState.FAILED
    assert result.failure is not None and result.failure.code == "moderation"


async def test_finish_reason_error_is_a_failure(rig: Rig) -> None:
    headers = {"content-type": "image/png", "finish-reason": "ERROR"}
    mock_result(rig, httpx.Response(200, content=b"", headers=headers))
    result = await rig.adapter.poll(upscale_handle())
    assert result.state is PollState.FAILED
    assert result.failure is not None and result.failure.code == "provider_error"
    assert result.cost_usd is None


async def test_unknown_finish_reason_is_unknown(rig: Rig) -> None:
    headers = {"content-type": "image/png", "finish-reason": "PARTIAL"}
    mock_result(rig, httpx.Response(200, content=PNG, headers=headers))
    result = await rig.adapter.poll(upscale_handle())
    assert result.state is PollState.UNKNOWN
    assert result.raw_status == "PARTIAL"


async def test_200_json_with_an_unknown_status_is_unknown_not_an_error(rig: Rig) -> None:
    """DESIGN §10: an unknown status is logged and polled again; only the deadline ends it."""
    mock_result(rig, httpx.Response(200, json={"id": SID, "status": "queued-for-review"}))
    result = await rig.adapter.poll(upscale_handle())
    assert result.state is PollState.UNKNOWN
    assert result.raw_status == "queued-for-review"
    assert result.provider_job_id == SID


async def test_200_json_in_progress_is_running(rig: Rig) -> None:
    mock_result(rig, httpx.Response(200, json={"id": SID, "status": "in-progress"}))
    result = await rig.adapter.poll(upscale_handle())
    assert result.state is PollState.RUNNING
    assert result.raw_status == "in-progress"


async def test_submit_reply_with_a_status_but_no_id_is_a_protocol_error(rig: Rig) -> None:
    """Without an id there is nothing to poll: never record a local id for a mere status."""
    rig.router.post("/v2beta/stable-image/upscale/creative").mock(
        return_value=httpx.Response(200, json={"status": "in-progress"})
    )
    with pytest.raises(ProviderProtocolError, match="without an id"):
        await rig.adapter.submit(submit_request(UPSCALE))


async def test_403_moderation_on_poll_fails_uncharged(rig: Rig) -> None:
    mock_result(rig, reply("stability", "error_403_moderation.json", 403))
    result = await rig.adapter.poll(upscale_handle())
    assert result.state is PollState.FAILED
    assert result.failure is not None
    assert result.failure.message == "moderation: request flagged by content moderation"
    assert result.cost_usd == Decimal(0)


@pytest.mark.parametrize(
    ("status", "fixture"), [(403, "error_403_forbidden.json"), (401, "error_401.json")]
)
async def test_other_401_403_are_auth_errors(rig: Rig, status: int, fixture: str) -> None:
    mock_result(rig, reply("stability", fixture, status))
    with pytest.raises(ProviderAuthError) as caught:
        await rig.adapter.poll(upscale_handle())
    assert not caught.value.retryable


async def test_404_within_30_s_is_retried(rig: Rig) -> None:
    mock_result(rig, reply("stability", "error_404.json", 404))
    with pytest.raises(ProviderNotVisibleYet) as caught:
        await rig.adapter.poll(upscale_handle(since_submit_s=12.0))
    assert caught.value.retryable


async def test_404_later_fails_as_expired_or_wrong_key(rig: Rig) -> None:
    mock_result(rig, reply("stability", "error_404.json", 404))
    result = await rig.adapter.poll(upscale_handle(since_submit_s=45.0))
    assert result.state is PollState.FAILED
    assert result.failure is not None
    assert "expired" in result.failure.message and "different API key" in result.failure.message


async def test_404_with_an_unknown_submit_time_fails(rig: Rig) -> None:
    """No submit time (a row from before it was recorded): the grace cannot apply, so fail."""
    mock_result(rig, reply("stability", "error_404.json", 404))
    result = await rig.adapter.poll(upscale_handle(since_submit_s=None))
    assert result.state is PollState.FAILED
    assert result.failure is not None and result.failure.code == "not_found"
    assert result.provider_job_id == SID


async def test_429_pauses_the_provider_for_60_s(rig: Rig) -> None:
    mock_result(rig, reply("stability", "error_429.json", 429))
    with pytest.raises(ProviderRateLimited) as caught:
        await rig.adapter.poll(upscale_handle())
    assert caught.value.retry_after_s == 60.0


async def test_429_longer_retry_after_wins(rig: Rig) -> None:
    mock_result(rig, reply("stability", "error_429.json", 429, **{"retry-after": "90"}))
    with pytest.raises(ProviderRateLimited) as caught:
        await rig.adapter.poll(upscale_handle())
    assert caught.value.retry_after_s == 90.0


@pytest.mark.parametrize(
    ("status", "fixture", "error_type"),
    [(500, "error_500.json", ProviderUnavailable), (400, "error_400.json", ProviderRejected)],
)
async def test_poll_other_errors(
    rig: Rig, status: int, fixture: str, error_type: type[Exception]
) -> None:
    mock_result(rig, reply("stability", fixture, status))
    with pytest.raises(error_type):
        await rig.adapter.poll(upscale_handle())


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(
            200,
            content=fixture_bytes("stability", "malformed.txt"),
            headers={"content-type": "application/json"},
        ),
        httpx.Response(200, json={"seed": 1}),
        httpx.Response(200, json={"result": "%%%not base64", "finish_reason": "SUCCESS"}),
        httpx.Response(200, json={"result": 12, "finish_reason": "SUCCESS"}),
        httpx.Response(200, content=b"", headers={"content-type": "image/png"}),
    ],
)
async def test_unreadable_results_are_protocol_errors(rig: Rig, response: httpx.Response) -> None:
    mock_result(rig, response)
    with pytest.raises(ProviderProtocolError) as caught:
        await rig.adapter.poll(upscale_handle())
    assert caught.value.retryable
    assert TOKENS["stability"] not in str(caught.value)


async def test_oversized_result_without_a_daemon_cap_fails_naming_the_reply_cap() -> None:
    async with open_rig(SPEC, settings(max_reply_bytes=1024)) as rig:
        mock_result(
            rig, httpx.Response(200, content=b"x" * 4096, headers={"content-type": "image/png"})
        )
        result = await rig.adapter.poll(upscale_handle())
    assert result.state is PollState.FAILED and result.failure is not None
    assert result.failure.message == (
        "result is larger than STABILITY_MAX_REPLY_BYTES (1024 bytes); nothing stored"
    )


CAP = 30_000  # the daemon's POLLER_MAX_DOWNLOAD_BYTES in these tests


@asynccontextmanager
async def capped_rig(**values: Any) -> AsyncIterator[Rig]:
    """The adapter as the daemon builds it (`ProviderSpec.create`), with a small download cap."""
    conf = settings(**values)
    router = respx.MockRouter(base_url=BASE, assert_all_mocked=True)
    transport = httpx.MockTransport(router.async_handler)
    async with make_client(SPEC, conf, transport=transport) as client:
        adapter = SPEC.create(conf, client, Hosting(max_inline_bytes=CAP))
        yield Rig(adapter=adapter, router=router, settings=conf)


def png_reply(size: int) -> httpx.Response:
    return httpx.Response(200, content=b"x" * size, headers={"content-type": "image/png"})


def json_reply(size: int) -> httpx.Response:
    payload = base64.b64encode(b"x" * size).decode()
    return httpx.Response(200, json={"image": payload, "finish_reason": "SUCCESS", "seed": 7})


def assert_too_large(result: PollResult, job_id: str) -> None:
    """Failed (not "rejected"), worded like storage's refusal, the vendor's charge kept."""
    assert result.state is PollState.FAILED and result.failure is not None
    assert result.failure.code == "too_large"
    assert result.failure.message == (
        f"result is larger than POLLER_MAX_DOWNLOAD_BYTES ({CAP} bytes); nothing stored"
    )
    assert result.provider_job_id == job_id
    assert result.cost_usd == Decimal("0.60")


async def test_inline_results_are_held_to_the_daemons_download_cap_not_the_reply_cap() -> None:
    """DESIGN §10: up to POLLER_MAX_DOWNLOAD_BYTES in memory, whatever STABILITY_MAX_REPLY_BYTES."""
    async with capped_rig(max_reply_bytes=1024) as rig:
        route = mock_result(rig, png_reply(CAP))
        result = await rig.adapter.poll(upscale_handle())
        assert result.state is PollState.SUCCEEDED
        route.mock(return_value=png_reply(CAP + 1))
        assert_too_large(await rig.adapter.poll(upscale_handle()), SID)


async def test_a_base64_result_up_to_the_cap_fits_its_larger_json_reply() -> None:
    async with capped_rig() as rig:
        route = mock_result(rig, json_reply(CAP))  # the reply is ~4/3 of the cap
        result = await rig.adapter.poll(upscale_handle())
        (output,) = result.outputs
        assert isinstance(output, InlineOutput) and len(output.data) == CAP
        route.mock(return_value=json_reply(CAP + 1))
        assert_too_large(await rig.adapter.poll(upscale_handle()), SID)
        route.mock(return_value=json_reply(2 * CAP))  # over the reply cap: reading stops
        assert_too_large(await rig.adapter.poll(upscale_handle()), SID)


async def test_an_oversized_sync_result_fails_the_job_instead_of_rejecting_it() -> None:
    """Stability made and billed the file: "too large", not "stability rejected the job"."""
    async with capped_rig(credits={"stable-image/generate/core": 60}) as rig:
        rig.router.post("/v2beta/stable-image/generate/core").mock(return_value=png_reply(10 * CAP))
        request = submit_request(CORE)
        assert_too_large(await rig.adapter.submit(request), f"sync-{request.job_id}")


async def test_an_oversized_error_reply_stays_an_error() -> None:
    async with capped_rig() as rig:
        mock_result(rig, httpx.Response(500, content=b"x" * (10 * CAP)))
        with pytest.raises(ProviderRejected, match="larger than"):
            await rig.adapter.poll(upscale_handle())


async def test_cancel_is_a_no_op(rig: Rig) -> None:
    await rig.adapter.cancel(upscale_handle())
    assert not rig.router.calls
