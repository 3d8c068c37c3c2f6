"""Pieces every fake vendor shares: routes, JSON replies, auth, fault draws, job creation.

A vendor module turns a request into a `Route` (a stats name, the operation kind that fault
scopes refer to, and the coroutine that produces the reply) and knows how to shape its own
errors. `app.py` runs the common pipeline around it: auth → rate limit → random faults →
route → malformed/slow post-processing.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal, Protocol

from simulator.http import Request, Response
from simulator.jobs import Job, Provider
from simulator.media import AUDIO_FORMATS, MediaFormat, MediaSpec
from simulator.scenarios import Scenario
from simulator.state import SimState

Operation = Literal["submit", "poll", "cancel", "list", "cdn", "other"]
_5XX_STATUSES: Final = (500, 502, 503, 504)
_PROXY_PAGE: Final = (
    b"<html><head><title>{status} Bad Gateway</title></head>"
    b"<body><center><h1>{status}</h1></center><hr><center>nginx</center></body></html>"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """A matched vendor endpoint: stats name, fault-scope operation, and the reply."""

    name: str
    op: Operation
    run: Callable[[], Awaitable[Response]]


class Vendor(Protocol):
    """What the pipeline needs from a fake vendor."""

    @property
    def provider(self) -> Provider: ...

    def route(self, request: Request) -> Route: ...

    def error(self, status: int, detail: str | None = None, *, transport: bool = False) -> Response:
        """A vendor-shaped error. `transport=True`: an infrastructure failure, so always a
        real HTTP status even for vendors that report errors in the body (Suno)."""
        ...

    def throttled(self) -> Response: ...

    def status_of(self, job: Job) -> str: ...


def dumps(payload: object) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def json_response(
    status: int, payload: object, *, headers: tuple[tuple[str, str], ...] = ()
) -> Response:
    return Response(status=status, body=dumps(payload), headers=headers)


def load_json(body: bytes) -> Any:
    """Parse a JSON body; ValueError (incl. UnicodeDecodeError) means a client error."""
    return json.loads(body.decode("utf-8"))


def iso(timestamp: float | None) -> str | None:
    """ISO-8601 UTC with microseconds and `Z`, as Replicate writes its timestamps."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def bearer_token(request: Request) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def proxy_error(status: int) -> Response:
    """What a load balancer in front of the vendor sends on 502/504: HTML, not JSON."""
    body = _PROXY_PAGE.replace(b"{status}", str(status).encode())
    return Response(status=status, body=body, content_type="text/html")


def garble(response: Response) -> Response:
    """A 200 whose JSON body is cut in half: what a flaky proxy or a torn write looks like."""
    body = response.body if response.stream is None and len(response.body) > 8 else b'{"status":"'
    return Response(status=200, body=body[: max(1, len(body) // 2)], close=True)


def delayed(response: Response, seconds: float) -> Response:
    if seconds <= 0:
        return response
    return dataclasses.replace(response, delay_s=response.delay_s + seconds)


@dataclass(frozen=True, slots=True, kw_only=True)
class Injection:
    """The random fault drawn for one request (see `FaultRates`)."""

    kind: Literal["none", "429", "5xx", "malformed"] = "none"
    status: int = 0
    slow_s: float = 0.0


NO_FAULT: Final = Injection()


def draw_fault(state: SimState, op: Operation, target: str) -> Injection:
    """Draw this request's random fault, keyed by resource and request number."""
    rates = state.faults
    if op not in rates.scope or not (
        rates.p_5xx or rates.p_429 or rates.p_malformed or rates.p_slow
    ):
        return NO_FAULT
    number = state.request_number(target)
    roll = state.dice.draw("fault", target, number)
    slow = rates.slow_s if state.dice.draw("slow", target, number) < rates.p_slow else 0.0
    if roll < rates.p_429:
        return Injection(kind="429", slow_s=slow)
    if roll < rates.p_429 + rates.p_5xx:
        pick = int(state.dice.draw("status", target, number) * len(_5XX_STATUSES))
        return Injection(kind="5xx", status=_5XX_STATUSES[pick], slow_s=slow)
    if roll < rates.p_429 + rates.p_5xx + rates.p_malformed:
        return Injection(kind="malformed", slow_s=slow)
    return Injection(slow_s=slow)


@dataclass(frozen=True, slots=True, kw_only=True)
class JobFault:
    """What a job's own scenario does to this poll: an error instead, garbling, latency."""

    status: int | None = None
    malformed: bool = False
    slow_s: float = 0.0


def poll_fault(job: Job) -> JobFault:
    """Count a status request for `job` and return the scenario fault that applies to it.

    `poll_error:S:K` hits requests 1..K, `poll_malformed:M` the M requests after those;
    `poll_slow:T[:K]` delays requests 1..K (all when K is omitted).
    """
    job.poll_requests += 1
    number = job.poll_requests
    scenario = job.scenario
    error_count = scenario.poll_error.count if scenario.poll_error else 0
    status = scenario.poll_error.status if scenario.poll_error and number <= error_count else None
    malformed = status is None and number <= error_count + scenario.poll_malformed
    slow_count = scenario.poll_slow_count
    slow = scenario.poll_slow_s if slow_count is None or number <= slow_count else 0.0
    return JobFault(status=status, malformed=malformed, slow_s=slow)


def finish_with_fault(fault: JobFault, response: Response) -> Response:
    return delayed(garble(response) if fault.malformed else response, fault.slow_s)


def submit_fault(vendor: Vendor, scenario: Scenario) -> Response | None:
    """The reply a `submit_error` scenario forces *instead of* creating the job (4xx only).

    5xx submit errors are ambiguous on purpose: the job is created, then the error sent, so
    they are applied by the caller after creation (see `ambiguous_submit`).
    """
    status = scenario.submit_error
    if status is None or status >= 500:
        return None
    return vendor.throttled() if status == 429 else vendor.error(status)


def ambiguous_submit(vendor: Vendor, scenario: Scenario, response: Response) -> Response:
    """Post-creation submit faults: 5xx error, garbled body, added latency."""
    if scenario.submit_error is not None and scenario.submit_error >= 500:
        response = vendor.error(
            scenario.submit_error, "simulated failure after the job was created"
        )
    elif scenario.submit_malformed:
        response = garble(response)
    return delayed(response, scenario.submit_slow_s)


def timing(state: SimState, scenario: Scenario, job_key: str) -> tuple[int | None, float | None]:
    """(done_after_polls, done_after_s) for a new job: its scenario's, else the server's."""
    if scenario.sets_duration:
        return scenario.polls, scenario.seconds
    config = state.config
    seconds: float | None = None
    if config.complete_after_s > 0:
        spread = (2 * state.dice.draw("jitter", job_key) - 1) * config.duration_jitter
        seconds = config.complete_after_s * (1 + spread)
    return (config.complete_after_polls or None), seconds


def media_spec(state: SimState, scenario: Scenario, fmt: MediaFormat) -> MediaSpec:
    """The file every output of a job will be, from scenario tokens and server defaults."""
    final = scenario.fmt or fmt
    width, height = scenario.size or state.config.image_size
    default_duration = (
        state.config.audio_duration_s if final in AUDIO_FORMATS else state.config.video_duration_s
    )
    duration = scenario.duration_s if scenario.duration_s is not None else default_duration
    return MediaSpec(fmt=final, width=width, height=height, duration_s=duration)


def new_job(
    state: SimState,
    *,
    provider: Provider,
    scenario: Scenario,
    media: MediaSpec,
    outputs: int,
    run_at: float,
    owner: str,
    details: dict[str, Any],
) -> Job:
    """Create and register a job with its timing resolved."""
    job_id = state.new_id(provider)
    polls, seconds = timing(state, scenario, job_id)
    job = Job(
        id=job_id,
        provider=provider,
        scenario=scenario,
        media=media,
        outputs=outputs,
        created=state.now(),
        run_at=run_at,
        owner=owner,
        done_after_polls=polls,
        done_after_s=seconds,
        details=details,
    )
    return state.register(job)


def file_url(state: SimState, job: Job, index: int) -> str:
    """Absolute URL of output `index` on the simulator's CDN."""
    return f"{state.cdn_base_url}/cdn/{job.id}/{index}.{job.media.fmt}"


def file_key(job: Job, index: int) -> str:
    """What output `index`'s bytes derive from: per job and index, or shared (`static`)."""
    return "static" if job.scenario.static else f"{job.id}/{index}"
