"""Property tests: whatever a vendor sends, adapters answer with a PollResult or a typed
ProviderError, and credentials never reach a host other than the configured base URL."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from providers import _http
from providers.base import Provider
from providers.errors import ProviderError
from providers.registry import BUILTIN_PROVIDERS, ProviderSpec, make_client
from providers.replicate import ReplicateSettings
from providers.settings import ProviderSettings
from providers.stability import StabilitySettings
from providers.suno import SunoSettings
from providers.types import JobHandle, PollResult, RemoteOutput, SubmitRequest
from tests.providers import example_adapter
from tests.providers.conftest import TOKENS, fixture_json

PROPERTY_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

SETTINGS: dict[str, ProviderSettings] = {
    "replicate": ReplicateSettings.from_env(
        {}, api_key=TOKENS["replicate"], default_hardware="gpu-t4"
    ),
    "stability": StabilitySettings.from_env({}, api_key=TOKENS["stability"]),
    "suno": SunoSettings.from_env(
        {}, api_key=TOKENS["suno"], callback_url="https://hooks.example/cb", usd_per_credit=0.01
    ),
    "acme": example_adapter.AcmeSettings.from_env({}, api_key=TOKENS["acme"]),
}
SPECS: dict[str, ProviderSpec] = {**BUILTIN_PROVIDERS, "acme": example_adapter.SPEC}

# Realistic payloads to mutate: schema drift usually looks like one field gone odd.
SEEDS: dict[str, list[Any]] = {
    "replicate": [
        fixture_json("replicate", name)
        for name in (
            "prediction_processing.json",
            "prediction_succeeded_images.json",
            "prediction_succeeded_object.json",
            "prediction_succeeded_data_url.json",
            "prediction_failed_nsfw.json",
            "prediction_canceled.json",
        )
    ],
    "stability": [
        fixture_json("stability", name)
        for name in (
            "result_success.json",
            "result_filtered.json",
            "result_in_progress.json",
            "video_result_success.json",
            "error_403_moderation.json",
        )
    ],
    "suno": [
        fixture_json("suno", name)
        for name in (
            "record_success.json",
            "record_success_variants.json",
            "record_first_success.json",
            "record_callback_exception_incomplete.json",
            "record_sensitive_word.json",
            "code_430.json",
        )
    ],
    "acme": [fixture_json("example", name) for name in ("job_done.json", "job_error.json")],
}

json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | st.sampled_from(
        [
            "https://replicate.delivery/x/out.png",
            "https://api.replicate.com/v1/files/a",
            "data:image/png;base64,iVBORw0KGgo=",
            "data:,x",
            "data:;base64,@@",
            "SUCCESS",
            "CONTENT_FILTERED",
            "succeeded",
            "CALLBACK_EXCEPTION",
            "",
        ]
    )
)


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(children, max_size=4) | st.dictionaries(
        st.text(max_size=12), children, max_size=4
    )


def _dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


json_values = st.recursive(json_leaves, _containers, max_leaves=20)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*prefix, index))


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    copy: Any = dict(value) if isinstance(value, dict) else list(value)
    copy[head] = _replace(copy[head], rest, new)
    return copy


@st.composite
def mutated(draw: st.DrawFn, vendor: str) -> Any:
    seed = draw(st.sampled_from(SEEDS[vendor]))
    path = draw(st.sampled_from(list(_paths(seed))))
    return _replace(seed, path, draw(json_values))


def bodies(vendor: str) -> st.SearchStrategy[bytes]:
    realistic = st.one_of(st.sampled_from(SEEDS[vendor]), mutated(vendor), mutated(vendor))
    arbitrary = st.one_of(json_values.map(_dumps), st.binary(max_size=64))
    return st.one_of(realistic.map(_dumps), realistic.map(_dumps), arbitrary)


statuses = st.just(200) | st.sampled_from(
    [200, 200, 200, 201, 202, 204, 302, 400, 401, 403, 404, 408, 413, 422, 429, 500, 503]
)
header_sets = st.fixed_dictionaries(
    {},
    optional={
        "content-type": st.sampled_from(
            [
                "application/json",
                "application/json; charset=utf-8",
                "image/png",
                "video/mp4",
                "text/html",
            ]
        ),
        "finish-reason": st.sampled_from(["SUCCESS", "CONTENT_FILTERED", "ERROR", "weird"]),
        "seed": st.sampled_from(["42", "-1", "x"]),
        "retry-after": st.sampled_from(["5", "Wed, 21 Oct 2037 07:28:00 GMT", "soon", "-3"]),
    },
)
job_ids = st.one_of(
    st.sampled_from(["k7d2q9m4xhrm80cq1v3b5t8e6a", "a6dc6c", "7f3c9a1e2b", "acme-7d1f0c"]),
    st.text(min_size=1, max_size=40),
)


def _check_outcome(result: Any, settings_: ProviderSettings) -> None:
    assert isinstance(result, PollResult)
    for output in result.outputs:
        if isinstance(output, RemoteOutput) and output.headers:
            assert _http.same_origin(output.url, settings_.base_url), output.url


async def _run(
    vendor: str,
    respond: Callable[[httpx.Request], httpx.Response],
    call: Callable[[Provider], Any],
) -> list[httpx.Request]:
    """Drive one call; assert it returned a PollResult/None or raised a ProviderError, and
    that nothing with our token left for another host."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return respond(request)

    spec, conf = SPECS[vendor], SETTINGS[vendor]
    async with make_client(spec, conf, transport=httpx.MockTransport(handler)) as client:
        adapter = spec.build(conf, client)
        try:
            result = await call(adapter)
        except ProviderError as exc:
            for secret in conf.secret_values():
                assert secret not in str(exc)
        else:
            if result is not None:
                _check_outcome(result, conf)
    for request in seen:
        assert _http.same_origin(str(request.url), conf.base_url), request.url
    return seen


def _handle(job_id: str, media_type: str, since: float | None) -> JobHandle:
    return JobHandle(
        job_id=uuid.uuid4(),
        provider_job_id=job_id,
        media_type=media_type,
        params={},
        since_submit_s=since,
    )


VENDORS = list(SPECS)
MEDIA = st.sampled_from(["image", "video", "audio"])

# Every test below is synchronous: hypothesis draws everything first, then one event loop
# runs the adapter (drawing inside a running loop trips hypothesis' overrun handling).


@pytest.mark.parametrize("vendor", VENDORS)
@PROPERTY_SETTINGS
@given(
    status=statuses,
    headers=header_sets,
    data=st.data(),
    since=st.one_of(st.none(), st.floats(min_value=0, max_value=1e6)),
    media=MEDIA,
)
def test_poll_never_raises_anything_untyped(
    vendor: str,
    status: int,
    headers: dict[str, str],
    data: st.DataObject,
    since: float | None,
    media: str,
) -> None:
    body = data.draw(bodies(vendor), label="body")
    handle = _handle("job-1", media, since)

    def respond(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, headers=headers, content=body)

    anyio.run(_run, vendor, respond, lambda adapter: adapter.poll(handle))


@pytest.mark.parametrize("vendor", VENDORS)
@PROPERTY_SETTINGS
@given(
    status=statuses,
    data=st.data(),
    media=MEDIA,
    timeout_s=st.floats(min_value=-10, max_value=1e9, allow_nan=False),
)
def test_submit_never_raises_anything_untyped(
    vendor: str, status: int, data: st.DataObject, media: str, timeout_s: float
) -> None:
    params = data.draw(submit_params(vendor), label="params")
    body = data.draw(bodies(vendor), label="body")
    request = SubmitRequest(
        job_id=uuid.uuid4(), media_type=media, params=params, timeout_s=timeout_s
    )

    def respond(request_: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=body, headers={"content-type": "application/json"})

    seen = anyio.run(_run, vendor, respond, lambda adapter: adapter.submit(request))
    assert len(seen) <= 1  # never retried, and no stray fetches for these params


@pytest.mark.parametrize("vendor", VENDORS)
@PROPERTY_SETTINGS
@given(job_id=job_ids)
def test_job_ids_cannot_steer_requests_to_other_hosts(vendor: str, job_id: str) -> None:
    body = json.dumps(SEEDS[vendor][0]).encode()

    def respond(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"content-type": "application/json"})

    handle = _handle(job_id, "image", 600.0)
    anyio.run(_run, vendor, respond, lambda adapter: adapter.poll(handle))
    anyio.run(_run, vendor, respond, lambda adapter: adapter.cancel(handle))


@PROPERTY_SETTINGS
@given(
    urls=st.lists(
        st.builds(
            "{}://{}{}/{}".format,
            st.sampled_from(["https", "http"]),
            st.sampled_from(
                [
                    "api.replicate.com",
                    "replicate.delivery",
                    "API.REPLICATE.COM",
                    "api.replicate.com.evil.example",
                    "pbxt.replicate.delivery",
                ]
            ),
            st.sampled_from(["", ":443", ":8443", ":80"]),
            st.text(alphabet="abc/._-", max_size=12),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_replicate_output_credentials_follow_the_origin(urls: list[str]) -> None:
    payload = {**SEEDS["replicate"][1], "output": urls}

    def respond(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=payload)

    handle = _handle("q1w2e3r4t5y6u7i8o9p0a1s2d3", "image", 600.0)
    anyio.run(_run, "replicate", respond, lambda adapter: adapter.poll(handle))


@st.composite
def submit_params(draw: st.DrawFn, vendor: str) -> dict[str, Any]:
    params = draw(
        st.one_of(mutated(vendor), st.dictionaries(st.text(max_size=10), json_values, max_size=4))
    )
    return params if isinstance(params, dict) else {"value": params}
