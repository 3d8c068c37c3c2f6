"""Conformance kit: the normalized behaviour every provider adapter must show.

Give it a `ProviderSpec`, settings with an API key, one submit request, one job handle and a
set of recorded vendor replies (see `load_recordings`), and it checks — against an
``httpx.MockTransport``, through the real `make_client` — that:

* a submit yields a ``provider_job_id``, sends the credentials to the API host, and is never
  retried inside the adapter (one request even on 5xx, 429, timeouts);
* "running" is PENDING/RUNNING, "succeeded" is SUCCEEDED with outputs, "failed" is FAILED with
  a message (a failure is a result, not an exception);
* 429 → `ProviderRateLimited`, 5xx → `ProviderUnavailable`, 401 → `ProviderAuthError`,
  malformed JSON → `ProviderProtocolError` with a short secret-free snippet, connect failures →
  `ProviderConnectError`, read timeouts → a retryable error that is *not* a connect error;
* no token is sent to, or handed out for, any host other than the provider's base URL.

Use it from pytest in a third-party adapter package::

    CASE = ConformanceCase(spec=SPEC, settings=..., request=..., handle=...,
                           recordings=load_recordings(Path(__file__).parent / "conformance.json"))

    @pytest.mark.anyio
    @pytest.mark.parametrize("check", CHECK_NAMES)
    async def test_conformance(check: str) -> None:
        await run_check(CASE, check)

Recording files are JSON: ``{"<scenario>": {"status": 200, "headers": {...}, "json": {...}}}``
where the body is one of ``json`` (inline JSON), ``text``, ``body_base64`` or ``body_file``
(a path relative to the recording file; ``.json`` files are sent as-is). Scenarios:
`SCENARIOS` (all required) plus optional ``cancel_ok``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from providers import _http
from providers.base import Provider
from providers.errors import (
    ProviderAuthError,
    ProviderConnectError,
    ProviderError,
    ProviderProtocolError,
    ProviderRateLimited,
    ProviderUnavailable,
)
from providers.registry import ProviderSpec, make_client
from providers.settings import ProviderSettings
from providers.types import JobHandle, PollResult, PollState, RemoteOutput, SubmitRequest

SCENARIOS = (
    "submit_ok",
    "running",
    "succeeded",
    "failed",
    "rate_limited",
    "server_error",
    "unauthorized",
    "malformed",
)
MAX_SNIPPET_CHARS = 300


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordedResponse:
    """One vendor reply, replayed for every request of a scenario."""

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    def to_response(self) -> httpx.Response:
        return httpx.Response(self.status, headers=dict(self.headers), content=self.body)

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], *, base_dir: Path) -> RecordedResponse:
        """Build from one entry of a recording file (see the module docstring)."""
        headers = {str(k): str(v) for k, v in dict(spec.get("headers", {})).items()}
        if "json" in spec:
            body = json.dumps(spec["json"]).encode()
            headers.setdefault("content-type", "application/json")
        elif "text" in spec:
            body = str(spec["text"]).encode()
        elif "body_base64" in spec:
            body = base64.b64decode(spec["body_base64"])
        elif "body_file" in spec:
            path = base_dir / str(spec["body_file"])
            body = path.read_bytes()
            if path.suffix == ".json":
                headers.setdefault("content-type", "application/json")
        else:
            body = b""
        return cls(status=int(spec.get("status", 200)), headers=headers, body=body)


def load_recordings(path: Path) -> dict[str, RecordedResponse]:
    """Read a recording file: scenario name → reply."""
    raw = json.loads(path.read_text())
    return {
        name: RecordedResponse.from_spec(spec, base_dir=path.parent) for name, spec in raw.items()
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class ConformanceCase:
    """One adapter under test and the material to drive it."""

    spec: ProviderSpec
    settings: ProviderSettings  # must carry an API key, so leaks can be detected
    request: SubmitRequest  # must not need network access besides the provider's API
    handle: JobHandle  # since_submit_s large enough that a 404 would be final
    recordings: Mapping[str, RecordedResponse]

    def __post_init__(self) -> None:
        missing = [name for name in SCENARIOS if name not in self.recordings]
        if missing:
            raise ValueError(f"recordings missing for scenarios: {missing}")
        if not self.settings.configured:
            raise ValueError("the conformance settings need an API key")

    @property
    def secrets(self) -> tuple[str, ...]:
        return self.settings.secret_values()


Responder = Callable[[httpx.Request], httpx.Response]


@dataclass(slots=True)
class Exchange:
    """A mock transport that answers with one responder and records every request."""

    responder: Responder
    requests: list[httpx.Request] = field(default_factory=list)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.responder(request)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)


def replay(recording: RecordedResponse) -> Responder:
    return lambda request: recording.to_response()


def raising(exc_type: type[httpx.TransportError]) -> Responder:
    def respond(request: httpx.Request) -> httpx.Response:
        raise exc_type("simulated by the conformance kit", request=request)

    return respond


async def exercise(
    case: ConformanceCase, responder: Responder, call: Callable[[Provider], Awaitable[Any]]
) -> tuple[Any, Exchange]:
    """Run ``call`` on a fresh adapter over a mocked transport; return its value and traffic.

    Raises whatever the adapter raised, after checking that no request leaked credentials.
    """
    exchange = Exchange(responder)
    async with make_client(case.spec, case.settings, transport=exchange.transport()) as client:
        adapter = case.spec.build(case.settings, client)
        try:
            return await call(adapter), exchange
        finally:
            assert_no_foreign_credentials(case, exchange.requests)


# --- assertions -----------------------------------------------------------------------------


def assert_no_foreign_credentials(case: ConformanceCase, requests: Iterable[httpx.Request]) -> None:
    """No request to another origin carries a secret, in any header or in the URL."""
    for request in requests:
        if _http.same_origin(str(request.url), case.settings.base_url):
            continue
        blob = str(request.url) + " " + " ".join(f"{k}: {v}" for k, v in request.headers.items())
        for secret in case.secrets:
            assert secret not in blob, f"credentials sent to foreign host {request.url.host}"


def assert_credentials_sent(case: ConformanceCase, requests: Iterable[httpx.Request]) -> None:
    """Requests to the API origin carry ``client_headers`` (the adapter used our client)."""
    expected = case.spec.client_headers(case.settings)
    for request in requests:
        if _http.same_origin(str(request.url), case.settings.base_url):
            for name, value in expected.items():
                assert request.headers.get(name) == value, f"{name} missing on {request.url}"


def assert_secret_free(case: ConformanceCase, *texts: object) -> None:
    for text in texts:
        for secret in case.secrets:
            assert secret not in str(text), "a secret leaked into an error or result"


def assert_outputs_scoped(case: ConformanceCase, result: PollResult) -> None:
    """RemoteOutput headers are empty for CDN hosts, credentials only for the API origin."""
    for output in (o for o in result.outputs if isinstance(o, RemoteOutput)):
        if not _http.same_origin(output.url, case.settings.base_url):
            assert not output.headers, f"headers handed out for foreign host {output.url}"


async def _expect_error(
    case: ConformanceCase,
    responder: Responder,
    call: Callable[[Provider], Awaitable[Any]],
    expected: type[ProviderError],
) -> tuple[ProviderError, Exchange]:
    exchange = Exchange(responder)
    try:
        async with make_client(case.spec, case.settings, transport=exchange.transport()) as client:
            await call(case.spec.build(case.settings, client))
    except expected as exc:
        assert_no_foreign_credentials(case, exchange.requests)
        assert_secret_free(case, exc, exc.snippet)
        return exc, exchange
    except ProviderError as exc:
        raise AssertionError(
            f"expected {expected.__name__}, got {type(exc).__name__}: {exc}"
        ) from exc
    except Exception as exc:  # adapters must translate every foreign exception at their edge
        message = f"expected {expected.__name__}, got a foreign {type(exc).__name__}: {exc}"
        raise AssertionError(message) from exc
    raise AssertionError(f"expected {expected.__name__}, but the call succeeded")


def _submit(case: ConformanceCase) -> Callable[[Provider], Awaitable[PollResult]]:
    return lambda adapter: adapter.submit(case.request)


def _poll(case: ConformanceCase) -> Callable[[Provider], Awaitable[PollResult]]:
    return lambda adapter: adapter.poll(case.handle)


def _poll_in(case: ConformanceCase, scenario: str) -> Awaitable[tuple[Any, Exchange]]:
    return exercise(case, replay(case.recordings[scenario]), _poll(case))


# --- checks ---------------------------------------------------------------------------------


async def check_submit_ok(case: ConformanceCase) -> None:
    result, exchange = await exercise(case, replay(case.recordings["submit_ok"]), _submit(case))
    assert isinstance(result, PollResult)
    assert result.provider_job_id, "a submit must return the provider's job id"
    assert result.state in (PollState.PENDING, PollState.RUNNING, PollState.SUCCEEDED)
    assert len(exchange.requests) == 1, "a submit is exactly one request"
    assert_credentials_sent(case, exchange.requests)
    assert_secret_free(case, result)


async def check_submit_not_retried_on_5xx(case: ConformanceCase) -> None:
    server_error = replay(case.recordings["server_error"])
    exc, exchange = await _expect_error(case, server_error, _submit(case), ProviderUnavailable)
    assert exc.retryable
    assert len(exchange.requests) == 1, "submits must never be retried inside the adapter"


async def check_submit_not_retried_on_429(case: ConformanceCase) -> None:
    limited = replay(case.recordings["rate_limited"])
    _, exchange = await _expect_error(case, limited, _submit(case), ProviderRateLimited)
    assert len(exchange.requests) == 1, "submits must never be retried inside the adapter"


async def check_submit_timeout_is_ambiguous(case: ConformanceCase) -> None:
    """A read timeout after sending may have created the job: not a connect error."""
    exc, exchange = await _expect_error(
        case, raising(httpx.ReadTimeout), _submit(case), ProviderUnavailable
    )
    assert not isinstance(exc, ProviderConnectError), "a read timeout is not 'never reached'"
    assert len(exchange.requests) == 1


async def check_running(case: ConformanceCase) -> None:
    result, _ = await _poll_in(case, "running")
    assert result.state in (PollState.PENDING, PollState.RUNNING), result
    assert not result.outputs


async def check_succeeded(case: ConformanceCase) -> None:
    result, _ = await _poll_in(case, "succeeded")
    assert result.state is PollState.SUCCEEDED, result
    assert result.outputs
    assert_outputs_scoped(case, result)
    assert_secret_free(case, result, result.details)


async def check_failed(case: ConformanceCase) -> None:
    result, _ = await _poll_in(case, "failed")
    assert result.state is PollState.FAILED, result
    assert result.failure is not None and result.failure.message.strip()
    assert_secret_free(case, result.failure.message)


async def check_rate_limited(case: ConformanceCase) -> None:
    limited = replay(case.recordings["rate_limited"])
    exc, _ = await _expect_error(case, limited, _poll(case), ProviderRateLimited)
    assert isinstance(exc, ProviderRateLimited) and exc.retryable
    assert exc.retry_after_s is None or exc.retry_after_s >= 0


async def check_server_error(case: ConformanceCase) -> None:
    server_error = replay(case.recordings["server_error"])
    exc, _ = await _expect_error(case, server_error, _poll(case), ProviderUnavailable)
    assert exc.retryable and not isinstance(exc, ProviderRateLimited)


async def check_unauthorized(case: ConformanceCase) -> None:
    denied = replay(case.recordings["unauthorized"])
    exc, _ = await _expect_error(case, denied, _poll(case), ProviderAuthError)
    assert not exc.retryable


async def check_malformed(case: ConformanceCase) -> None:
    malformed = replay(case.recordings["malformed"])
    exc, _ = await _expect_error(case, malformed, _poll(case), ProviderProtocolError)
    assert exc.retryable
    assert exc.snippet is None or len(exc.snippet) <= MAX_SNIPPET_CHARS


async def check_connect_error(case: ConformanceCase) -> None:
    for call in (_submit(case), _poll(case)):
        exc, _ = await _expect_error(case, raising(httpx.ConnectError), call, ProviderConnectError)
        assert exc.retryable


async def check_poll_timeout(case: ConformanceCase) -> None:
    exc, _ = await _expect_error(case, raising(httpx.ReadTimeout), _poll(case), ProviderUnavailable)
    assert exc.retryable


async def check_cancel(case: ConformanceCase) -> None:
    """Cancel is best effort: an ordinary reply (or no endpoint at all) is not an error."""
    recording = case.recordings.get("cancel_ok", case.recordings["running"])
    _, exchange = await exercise(case, replay(recording), lambda a: a.cancel(case.handle))
    assert len(exchange.requests) <= 1, "cancel is at most one request"


async def check_name(case: ConformanceCase) -> None:
    _, exchange = await exercise(case, replay(case.recordings["running"]), _name_of)
    assert not exchange.requests


async def _name_of(adapter: Provider) -> str:
    assert isinstance(adapter, Provider), "the adapter does not implement the Provider protocol"
    return adapter.name


CHECKS: dict[str, Callable[[ConformanceCase], Awaitable[None]]] = {
    "name": check_name,
    "submit_ok": check_submit_ok,
    "submit_not_retried_on_5xx": check_submit_not_retried_on_5xx,
    "submit_not_retried_on_429": check_submit_not_retried_on_429,
    "submit_timeout_is_ambiguous": check_submit_timeout_is_ambiguous,
    "running": check_running,
    "succeeded": check_succeeded,
    "failed": check_failed,
    "rate_limited": check_rate_limited,
    "server_error": check_server_error,
    "unauthorized": check_unauthorized,
    "malformed": check_malformed,
    "connect_error": check_connect_error,
    "poll_timeout": check_poll_timeout,
    "cancel": check_cancel,
}
CHECK_NAMES = tuple(CHECKS)


async def run_check(case: ConformanceCase, name: str) -> None:
    """Run one named check; raises AssertionError naming what is wrong."""
    await CHECKS[name](case)


async def run_conformance(case: ConformanceCase) -> None:
    """Run every check, stopping at the first failure (use `run_check` to see them all)."""
    for name in CHECK_NAMES:
        try:
            await CHECKS[name](case)
        except AssertionError as exc:
            raise AssertionError(
                f"{case.spec.name}: conformance check {name!r} failed: {exc}"
            ) from exc
