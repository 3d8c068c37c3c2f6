"""Fake Stability AI REST v2beta API, wire-compatible with `reference/providers.md` §2.

`POST /v2beta/<endpoint>` takes multipart/form-data only. Asynchronous endpoints
(`stable-image/upscale/creative`, `stable-image/edit/replace-background-and-relight`,
`image-to-video`) answer `200 {"id": <64 hex>}`; poll `GET /v2beta/results/{id}` (or
`/v2beta/image-to-video/result/{id}`): `202 {"id","status":"in-progress"}` until done, then
`200` with the raw file (`finish-reason`, `seed` headers) unless `Accept: application/json`,
which gets `{"result"|"video": <base64>, "finish_reason", "seed"}`. Every other known
endpoint is synchronous: the submit reply is the result (`image`/`audio` key in JSON mode).
Results are visible only to the API key that created them (others get 404, like the real
API). Errors are `{"id","name","errors":[…]}`.
"""

from __future__ import annotations

import base64
from typing import Final

from simulator import media, scenarios
from simulator.cdn import file_response
from simulator.common import (
    Route,
    ambiguous_submit,
    bearer_token,
    delayed,
    file_key,
    finish_with_fault,
    json_response,
    media_spec,
    new_job,
    poll_fault,
    submit_fault,
)
from simulator.http import Request, Response
from simulator.jobs import Job, advance, force, observe_terminal
from simulator.media import MediaFormat
from simulator.multipart import Form, MultipartError, parse_form
from simulator.scenarios import Scenario
from simulator.state import SimState

_I2V: Final = "image-to-video"
_ASYNC: Final = frozenset(
    {"stable-image/upscale/creative", "stable-image/edit/replace-background-and-relight", _I2V}
)
_RESULT_PATHS: Final = (
    ("v2beta/results/", "result"),  # JSON key of the base64 payload on this path
    ("v2beta/image-to-video/result/", "video"),
)
_P: Final = ("prompt",)
_IMG: Final = ("image",)
# endpoint → (required text fields, required file parts)
_ENDPOINTS: Final[dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    "stable-image/generate/ultra": (_P, ()),
    "stable-image/generate/core": (_P, ()),
    "stable-image/generate/sd3": (_P, ()),
    "stable-image/upscale/fast": ((), _IMG),
    "stable-image/upscale/conservative": (_P, _IMG),
    "stable-image/upscale/creative": (_P, _IMG),
    "stable-image/edit/erase": ((), _IMG),
    "stable-image/edit/inpaint": (_P, _IMG),
    "stable-image/edit/outpaint": ((), _IMG),
    "stable-image/edit/search-and-replace": (("prompt", "search_prompt"), _IMG),
    "stable-image/edit/search-and-recolor": (("prompt", "select_prompt"), _IMG),
    "stable-image/edit/remove-background": ((), _IMG),
    "stable-image/edit/replace-background-and-relight": ((), ("subject_image",)),
    "stable-image/control/sketch": (_P, _IMG),
    "stable-image/control/structure": (_P, _IMG),
    "stable-image/control/style": (_P, _IMG),
    _I2V: ((), _IMG),
    "audio/stable-audio-2/text-to-audio": (_P, ()),
    "audio/stable-audio-2/audio-to-audio": (_P, ("audio",)),
    "audio/stable-audio-2/inpaint": (_P, ("audio",)),
}
_NAMES: Final = {
    400: "bad_request",
    401: "unauthorized",
    402: "payment_required",
    403: "forbidden",
    404: "not_found",
    413: "payload_too_large",
    422: "invalid_parameters",
    429: "rate_limit_exceeded",
    500: "internal_error",
    503: "service_unavailable",
}
_MESSAGES: Final = {
    401: "authorization: invalid or missing Bearer token",
    402: "You lack sufficient credits to make this request.",
    404: "no generation found for this id",
    429: "You have exceeded the rate limit of 150 requests within a 10 second period.",
    500: "An unexpected server error has occurred, please try again later.",
}
_MODERATION: Final = (
    "Your request was flagged by our content moderation system, as a result your request "
    "was denied and you were not charged."
)
_FINISH: Final = {"filtered": "CONTENT_FILTERED", "fail": "ERROR", "create_failed": "ERROR"}
_MAX_SEED: Final = 4_294_967_294
_MAX_INLINE_JSON: Final = 64 << 20


def _format(endpoint: str, requested: str | None) -> MediaFormat:
    """The result format an endpoint produces given its `output_format` field."""
    if endpoint == _I2V:
        return "mp4"
    allowed: tuple[MediaFormat, ...] = (
        ("mp3", "wav") if endpoint.startswith("audio/") else ("png", "jpeg", "webp")
    )
    if not requested:
        return allowed[0]
    if requested not in allowed:
        raise ValueError(f"output_format: must be one of {', '.join(allowed)}")
    return next(fmt for fmt in allowed if fmt == requested)


def _seed(form: Form) -> int:
    """The requested `seed` field (0 = let the server pick one)."""
    try:
        seed = int(form.fields.get("seed", "0") or "0")
    except ValueError:
        raise ValueError("seed: must be an integer") from None
    if not 0 <= seed <= _MAX_SEED:
        raise ValueError(f"seed: must be within 0..{_MAX_SEED}")
    return seed


class StabilityApi:
    """Routes and replies of the fake Stability v2beta API."""

    provider: Final = "stability"

    def __init__(self, state: SimState) -> None:
        self._state = state
        self._errors = 0

    def route(self, request: Request) -> Route:
        path = request.path.strip("/")
        method = request.method
        if method in ("GET", "HEAD"):
            for prefix, key in _RESULT_PATHS:
                job_id = path.removeprefix(prefix)
                if job_id != path and "/" not in job_id:
                    return self._result_route(request, job_id, key)
        endpoint = path.removeprefix("v2beta/")
        if method == "POST" and endpoint in _ENDPOINTS:
            return Route(
                name="stability.submit", op="submit", run=lambda: self._submit(request, endpoint)
            )
        return Route(name="stability.unknown", op="other", run=self._not_found)

    def _result_route(self, request: Request, job_id: str, key: str) -> Route:
        return Route(
            name="stability.result", op="poll", run=lambda: self._result(request, job_id, key)
        )

    def error(
        self,
        status: int,
        detail: str | None = None,
        *,
        transport: bool = False,
        name: str | None = None,
    ) -> Response:
        self._errors += 1
        payload = {
            "id": self._state.dice.digest("error", self._errors, size=16).hex(),
            "name": name or _NAMES.get(status, "error"),
            "errors": [detail or _MESSAGES.get(status, "request failed")],
        }
        return json_response(status, payload)

    def throttled(self) -> Response:
        reply = self.error(429)
        return Response(
            status=429,
            body=reply.body,
            headers=(("retry-after", str(self._state.faults.retry_after_s)),),
        )

    def status_of(self, job: Job) -> str:
        if job.outcome is None:
            return "in-progress"
        return "expired" if job.outcome == "expired" else _FINISH.get(job.outcome, "SUCCESS")

    async def _not_found(self) -> Response:
        return self.error(404, "resource not found")

    def _parse_submit(
        self, request: Request, endpoint: str
    ) -> tuple[Form, Scenario, MediaFormat, int]:
        """Validate a submission; ValueError (incl. MultipartError) → 400 reply."""
        form = parse_form(request.headers.get("content-type", ""), request.body)
        fields, files = _ENDPOINTS[endpoint]
        missing = [f for f in fields if not form.fields.get(f, "").strip()]
        missing += [f for f in files if not form.files.get(f)]
        if missing:
            raise ValueError("; ".join(f"{name}: is required" for name in missing))
        scenario = scenarios.parse(
            form.fields.get("sim_scenario"),
            scenarios.tokens_in_text(form.fields.get("prompt")),
            base=self._state.default_scenario,
        )
        fmt = _format(endpoint, form.fields.get("output_format"))
        return form, scenario, fmt, _seed(form)

    async def _submit(self, request: Request, endpoint: str) -> Response:
        try:
            form, scenario, fmt, seed = self._parse_submit(request, endpoint)
        except (ValueError, MultipartError) as exc:
            return self.error(400, str(exc))
        if scenario.outcome == "moderation":
            refusal = self.error(403, _MODERATION, name="content_moderation")
            return delayed(refusal, scenario.submit_slow_s)
        refused = submit_fault(self, scenario)
        if refused is not None:
            return refused
        job = new_job(
            self._state,
            provider="stability",
            scenario=scenario,
            media=media_spec(self._state, scenario, fmt),
            outputs=1,
            run_at=0.0,
            owner=bearer_token(request) or "",
            details={"endpoint": endpoint, "seed": seed, "fields": form.fields},
        )
        if not seed:
            job.details["seed"] = 1 + int(self._state.dice.draw("seed", job.id) * _MAX_SEED)
        if endpoint in _ASYNC:
            return ambiguous_submit(self, scenario, json_response(200, {"id": job.id}))
        force(job, self._state.now(), scenario.outcome)
        observe_terminal(job, self._state.now())
        key = "audio" if endpoint.startswith("audio/") else "image"
        return ambiguous_submit(self, scenario, self._final(job, request, key))

    async def _result(self, request: Request, job_id: str, key: str) -> Response:
        job = self._state.jobs.get(job_id)
        if job is None or job.provider != "stability" or job.owner != bearer_token(request):
            return self.error(404)
        fault = poll_fault(job)
        if fault.status is not None:
            reply = self.throttled() if fault.status == 429 else self.error(fault.status)
            return finish_with_fault(fault, reply)
        now = self._state.now()
        advance(job, now, poll=True)
        if job.outcome is None:
            status = "queued" if job.scenario.unknown_status else "in-progress"
            return finish_with_fault(fault, json_response(202, {"id": job.id, "status": status}))
        observe_terminal(job, now)
        if job.outcome == "expired":
            return finish_with_fault(fault, self.error(404))
        return finish_with_fault(fault, self._final(job, request, key))

    def _final(self, job: Job, request: Request, key: str) -> Response:
        """The finished result: raw bytes with headers, or base64 JSON on request."""
        finish = _FINISH.get(job.outcome or "", "SUCCESS")
        seed = job.details["seed"]
        if "application/json" in request.headers.get("accept", "").lower():
            data = self._inline_bytes(job)
            if data is None:
                return self.error(400, "result too large for JSON; request it with Accept: */*")
            payload = {key: base64.b64encode(data).decode(), "finish_reason": finish, "seed": seed}
            return json_response(200, payload)
        headers = (("finish-reason", finish), ("seed", str(seed)))
        return file_response(self._state, job, 0, extra_headers=headers)

    def _inline_bytes(self, job: Job) -> bytes | None:
        """The result as one buffer for JSON mode; None when it is too large for that."""
        key = file_key(job, 0)
        total = job.scenario.large_bytes
        if total is None:
            return media.render(job.media, key)
        if total > _MAX_INLINE_JSON:
            return None
        return media.large_file(job.media, key, total, self._state.seed).materialize()
