"""`providers.sending`: which requests count as "the create may have reached the provider"."""

from __future__ import annotations

import httpx
import pytest

from providers import _http
from providers.registry import BUILTIN_PROVIDERS, make_client
from providers.replicate import ReplicateProvider
from providers.sending import _WATCH, note_request, reports_sends, watch_sends
from providers.stability import StabilityProvider
from providers.suno import SunoProvider
from tests.providers.conftest import reply, submit_request
from tests.providers.test_conformance import CASES
from tests.providers.test_stability import PNG, UPSCALE, adapter_with_fetch, file_host

pytestmark = pytest.mark.anyio


def _edge() -> _http.Edge:
    client = httpx.AsyncClient(
        transport=httpx.MockTransport(lambda request: httpx.Response(200, json={})),
        base_url="https://vendor.example",
    )
    return _http.Edge(provider="vendor", client=client)


async def test_the_edge_notes_state_changing_requests_only() -> None:
    edge = _edge()
    with watch_sends() as sends:
        await edge.request("GET", "/status")
        await edge.request("HEAD", "/status")
        assert not sends.sent
        await edge.request("POST", "/create")
        assert sends.sent
    await edge.client.aclose()


def test_a_request_outside_a_watch_records_nothing() -> None:
    note_request("POST")  # no watch open: nothing to record, nothing raised
    with watch_sends() as sends:
        pass
    assert not sends.sent


async def test_stability_input_downloads_are_not_sends_but_its_create_is() -> None:
    """The case the signal exists for: Stability fetches input files before its POST."""
    seen_during_fetch: list[bool] = []

    def serve_input(request: httpx.Request) -> httpx.Response:
        watch = _WATCH.get()
        assert watch is not None
        seen_during_fetch.append(watch.sent)
        return httpx.Response(200, content=PNG, headers={"content-type": "image/png"})

    files, fetch = file_host()
    files.get("https://inputs.example/fox.png").mock(side_effect=serve_input)
    api, adapter, client = await adapter_with_fetch(fetch)
    api.post("/v2beta/stable-image/upscale/creative").mock(
        return_value=reply("stability", "submit_accepted.json")
    )
    params = {**UPSCALE, "files": {"image": "https://inputs.example/fox.png"}}
    async with client, fetch:
        with watch_sends() as sends:
            await adapter.submit(submit_request(params))
    assert seen_during_fetch == [False]
    assert sends.sent


@pytest.mark.parametrize("name", sorted(BUILTIN_PROVIDERS))
async def test_every_builtin_adapter_promises_to_report_its_sends(name: str) -> None:
    """And keeps the promise: a create that is not noted reads as "nothing sent" when the
    call is cut, and the daemon would clear the submit mark and create the job again."""
    classes = {
        "replicate": ReplicateProvider,
        "stability": StabilityProvider,
        "suno": SunoProvider,
    }
    case = CASES[name]
    transport = httpx.MockTransport(lambda _: case.recordings["submit_ok"].to_response())
    async with make_client(case.spec, case.settings, transport=transport) as client:
        adapter = case.spec.build(case.settings, client)
        assert isinstance(adapter, classes[name]) and reports_sends(adapter)
        with watch_sends() as sends:
            await adapter.submit(case.request)
    assert sends.sent


def test_an_adapter_without_the_promise_is_not_trusted() -> None:
    class Plugin:
        reports_sends = "yes"  # only the exact True counts

    assert not reports_sends(Plugin())
    assert not reports_sends(object())
