"""Fake Replicate HTTP API (predictions), wire-compatible with `reference/providers.md` §1.

Endpoints: `POST /v1/predictions` (body `version`), `POST /v1/models/{owner}/{name}/predictions`,
`POST /v1/deployments/{owner}/{name}/predictions`, `GET /v1/predictions[?created_after=…]`,
`GET /v1/predictions/{id}`, `POST /v1/predictions/{id}/cancel`. Statuses starting →
processing → succeeded | failed | canceled | aborted; errors are RFC 7807 problem objects.
Honoured headers: `Cancel-After` (Go-style duration; deadline before start → `aborted`,
after → `canceled`) and `Prefer: wait[=N]` (held only while the job can finish in time).
`webhook` is accepted and ignored (no deliveries).
"""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime
from typing import Any, Final

import anyio

from simulator import media, scenarios
from simulator.common import (
    Route,
    ambiguous_submit,
    bearer_token,
    file_key,
    file_url,
    finish_with_fault,
    iso,
    json_response,
    load_json,
    media_spec,
    new_job,
    poll_fault,
    submit_fault,
)
from simulator.http import Request, Response
from simulator.jobs import Job, advance, cancel, observe_terminal, progress
from simulator.media import IMAGE_FORMATS, MediaFormat
from simulator.scenarios import Scenario
from simulator.state import SimState

_HEX64: Final = re.compile(r"^[0-9a-f]{64}$")
_DURATION_PART: Final = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_RUN_AT: Final = 0.5
_PAGE: Final = 100
_TITLES: Final = {
    400: "Bad Request",
    401: "Unauthenticated",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not found",
    422: "Input validation failed",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
_DETAILS: Final = {
    401: "You did not pass a valid authentication token",
    402: "You have insufficient credit to run this model.",
    404: "The requested resource could not be found.",
    500: "Internal server error",
    503: "Service temporarily unavailable",
}
_STATUS: Final = {
    "success": "succeeded",
    "expired": "succeeded",
    "callback_exception": "succeeded",
    "fail": "failed",
    "create_failed": "failed",
    "moderation": "failed",
    "filtered": "failed",
    "canceled": "canceled",
    "aborted": "aborted",
}
_NSFW: Final = "NSFW content detected. Try running it again, or try a different prompt."
_FAILURE: Final = "E1000: Prediction failed for an unknown reason (simulated model error)."
_VIDEO_WORDS: Final = ("video", "svd", "wan-", "kling", "veo", "ltx")
_AUDIO_WORDS: Final = ("audio", "music", "speech", "tts", "voice", "sound")


def cancel_after_seconds(value: str | None) -> float | None:
    """Parse a `Cancel-After` duration ("30s", "5m", "1h30m45s", "500ms" or bare seconds)."""
    if value is None:
        return None
    text = value.strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise ValueError(f"Cancel-After: invalid duration {value!r}")
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def _instant(text: str | None, default: datetime) -> datetime:
    """An ISO-8601 query timestamp as an aware UTC datetime (naive input is taken as UTC)."""
    if not text:
        return default.replace(tzinfo=UTC)
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def prefer_wait_seconds(value: str | None) -> float:
    """Seconds requested by `Prefer: wait` / `wait=N` (1..60), 0 when absent."""
    for item in (value or "").split(","):
        name, _, arg = item.strip().partition("=")
        if name.lower() == "wait":
            try:
                return float(min(60, max(1, int(arg)))) if arg else 60.0
            except ValueError:
                return 60.0
    return 0.0


def _default_format(model: str, job_input: dict[str, Any]) -> MediaFormat:
    requested = str(job_input.get("output_format", "")).lower()
    if requested in ("jpg", "jpeg"):
        return "jpeg"
    if requested in ("png", "webp", "mp4", "mp3", "wav"):
        return requested  # type: ignore[return-value]
    lowered = model.lower()
    if any(word in lowered for word in _VIDEO_WORDS):
        return "mp4"
    if any(word in lowered for word in _AUDIO_WORDS):
        return "mp3"
    return "png"


def _output_count(scenario: Scenario, job_input: dict[str, Any]) -> int:
    if scenario.outputs is not None:
        return scenario.outputs
    requested = job_input.get("num_outputs")
    if isinstance(requested, int) and not isinstance(requested, bool) and 1 <= requested <= 16:
        return requested
    return 1


def _logs(job: Job, fraction: float) -> str:
    if job.started is None:
        return ""
    pct = (
        100 if job.outcome in ("success", "expired", "callback_exception") else int(fraction * 100)
    )
    bar = ("█" * (pct // 10)).ljust(10)
    return f"Running predict()...\n{pct:3d}%|{bar}| {pct // 2}/50 [00:01<00:01, 25.00it/s]\n"


class ReplicateApi:
    """Routes and replies of the fake Replicate API."""

    provider: Final = "replicate"

    def __init__(self, state: SimState) -> None:
        self._state = state

    def route(self, request: Request) -> Route:
        parts = request.path.strip("/").split("/")
        method = request.method
        match parts:
            case ["v1", "predictions"] if method == "POST":
                return Route(
                    name="replicate.create",
                    op="submit",
                    run=lambda: self._create(request, "version", ""),
                )
            case ["v1", "models" | "deployments" as kind, owner, name, "predictions"] if (
                method == "POST"
            ):
                target = f"{owner}/{name}"
                return Route(
                    name=f"replicate.create_{kind[:-1]}",
                    op="submit",
                    run=lambda: self._create(request, kind, target),
                )
            case ["v1", "predictions"] if method in ("GET", "HEAD"):
                return Route(name="replicate.list", op="list", run=lambda: self._list(request))
            case ["v1", "predictions", job_id] if method in ("GET", "HEAD"):
                return Route(name="replicate.get", op="poll", run=lambda: self._get(job_id))
            case ["v1", "predictions", job_id, "cancel"] if method == "POST":
                return Route(name="replicate.cancel", op="cancel", run=lambda: self._cancel(job_id))
        return Route(name="replicate.unknown", op="other", run=self._not_found)

    def error(self, status: int, detail: str | None = None, *, transport: bool = False) -> Response:
        payload = {
            "title": _TITLES.get(status, "Error"),
            "detail": detail or _DETAILS.get(status, "Request failed"),
            "status": status,
        }
        return json_response(status, payload)

    def throttled(self) -> Response:
        seconds = self._state.faults.retry_after_s
        payload = {
            "title": "Too Many Requests",
            "detail": f"Request was throttled. Expected available in {seconds} second.",
            "status": 429,
        }
        return json_response(429, payload, headers=(("retry-after", str(seconds)),))

    def status_of(self, job: Job) -> str:
        if job.outcome is not None:
            return _STATUS[job.outcome]
        if job.scenario.unknown_status:
            return "queued"
        return "processing" if job.started is not None else "starting"

    async def _not_found(self) -> Response:
        return self.error(404)

    def _resolve_target(self, body: dict[str, Any], kind: str, target: str) -> dict[str, Any]:
        """model / version / deployment fields for the prediction, or ValueError."""
        if kind == "models":
            return {"model": target, "version": "hidden"}
        if kind == "deployments":
            return {"model": target, "version": "hidden", "deployment": target}
        version = body.get("version")
        if not isinstance(version, str) or not version:
            raise ValueError("- version: version is required")
        owner_name, _, digest = version.rpartition(":")
        if _HEX64.match(version):
            return {"model": f"sim/model-{version[:8]}", "version": version}
        if owner_name and _HEX64.match(digest) and owner_name.count("/") == 1:
            return {"model": owner_name, "version": digest}
        if ":" not in version and version.count("/") == 1:
            return {"model": version, "version": "hidden"}
        raise ValueError(f"- version: Invalid version or not permitted: {version!r}")

    def _parse_create(
        self, request: Request, kind: str, target: str
    ) -> tuple[dict[str, Any], Scenario]:
        """Validate a create body into (details, scenario); ValueError → 422 reply."""
        body = load_json(request.body)
        if not isinstance(body, dict):
            raise ValueError("- (root): Invalid type. Expected: object")
        details = self._resolve_target(body, kind, target)
        job_input = body.get("input")
        if not isinstance(job_input, dict):
            raise ValueError("- input: Invalid type. Expected: object")
        scenario = scenarios.parse(
            job_input.get("sim_scenario"),
            scenarios.tokens_in_text(job_input.get("prompt")),
            base=self._state.default_scenario,
        )
        details["input"] = job_input
        return details, scenario

    async def _create(self, request: Request, kind: str, target: str) -> Response:
        try:
            details, scenario = self._parse_create(request, kind, target)
            deadline_s = cancel_after_seconds(request.headers.get("cancel-after"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return self.error(400, "Request body is not valid JSON")
        except ValueError as exc:  # includes ScenarioError
            return self.error(422, str(exc))
        refused = submit_fault(self, scenario)
        if refused is not None:
            return refused
        job = self._new_job(request, details, scenario)
        if deadline_s is not None:
            job.deadline = job.created + deadline_s
        await self._hold(job, prefer_wait_seconds(request.headers.get("prefer")))
        return ambiguous_submit(self, scenario, json_response(201, self.prediction(job)))

    def _new_job(self, request: Request, details: dict[str, Any], scenario: Scenario) -> Job:
        fmt = _default_format(details["model"], details["input"])
        return new_job(
            self._state,
            provider="replicate",
            scenario=scenario,
            media=media_spec(self._state, scenario, fmt),
            outputs=_output_count(scenario, details["input"]),
            run_at=_RUN_AT,
            owner=bearer_token(request) or "",
            details=details,
        )

    async def _hold(self, job: Job, wait_s: float) -> None:
        """`Prefer: wait`: hold the reply while the job will finish within the window."""
        if wait_s <= 0 or job.done_after_s is None:
            return
        remaining = job.created + job.done_after_s - self._state.now()
        if remaining <= wait_s:
            await anyio.sleep(max(0.0, remaining))
            advance(job, self._state.now())
            observe_terminal(job, self._state.now())

    async def _get(self, job_id: str) -> Response:
        job = self._state.jobs.get(job_id)
        if job is None or job.provider != "replicate":
            return self.error(404)
        fault = poll_fault(job)
        if fault.status is not None:
            reply = self.throttled() if fault.status == 429 else self.error(fault.status)
            return finish_with_fault(fault, reply)
        now = self._state.now()
        advance(job, now, poll=True)
        observe_terminal(job, now)
        return finish_with_fault(fault, json_response(200, self.prediction(job)))

    async def _cancel(self, job_id: str) -> Response:
        job = self._state.jobs.get(job_id)
        if job is None or job.provider != "replicate":
            return self.error(404)
        cancel(job, self._state.now())
        return json_response(200, self.prediction(job))

    async def _list(self, request: Request) -> Response:
        """`GET /v1/predictions`: newest first, 100 per page, `created_after/_before` filters."""
        try:
            after = _instant(request.query.get("created_after"), datetime.min)
            before = _instant(request.query.get("created_before"), datetime.max)
            offset = int(request.query.get("cursor", "0"))
        except ValueError as exc:
            return self.error(400, str(exc))
        state = self._state
        jobs = [
            job
            for job in state.jobs.values()
            if job.provider == "replicate"
            and after < datetime.fromtimestamp(state.wall(job.created), UTC) < before
        ]
        jobs.sort(key=lambda job: job.created, reverse=True)
        base = f"{state.base_url}/v1/predictions?cursor="
        payload = {
            "previous": f"{base}{max(0, offset - _PAGE)}" if offset else None,
            "next": f"{base}{offset + _PAGE}" if offset + _PAGE < len(jobs) else None,
            "results": [self.prediction(job) for job in jobs[offset : offset + _PAGE]],
        }
        return json_response(200, payload)

    def prediction(self, job: Job) -> dict[str, Any]:
        """The prediction object exactly as `GET /v1/predictions/{id}` returns it."""
        state = self._state
        url = f"{state.base_url}/v1/predictions/{job.id}"
        status = self.status_of(job)
        details = job.details
        payload: dict[str, Any] = {
            "id": job.id,
            "model": details["model"],
            "version": details["version"],
            "input": details["input"],
            "logs": _logs(job, progress(job, state.now())),
            "output": self._output(job) if status == "succeeded" else None,
            "data_removed": job.outcome == "expired",
            "error": self._error(job),
            "status": status,
            "source": "api",
            "created_at": iso(state.wall(job.created)),
            "started_at": iso(None if job.started is None else state.wall(job.started)),
            "completed_at": iso(None if job.finished is None else state.wall(job.finished)),
            "urls": {
                "cancel": f"{url}/cancel",
                "get": url,
                "web": f"https://replicate.com/p/{job.id}",
            },
            "metrics": self._metrics(job),
        }
        if "deployment" in details:
            payload["deployment"] = details["deployment"]
        if job.deadline is not None:
            payload["deadline"] = iso(state.wall(job.deadline))
        return payload

    @staticmethod
    def _error(job: Job) -> str | None:
        if job.outcome in ("moderation", "filtered"):
            return _NSFW
        if job.outcome in ("fail", "create_failed"):
            return _FAILURE
        return None

    def _metrics(self, job: Job) -> dict[str, float]:
        if job.finished is None or job.started is None:
            return {}
        total = round(job.finished - job.created, 3)
        if job.outcome == "canceled":
            return {"predict_time": round(job.finished - job.started, 3), "total_time": total}
        predict = job.scenario.predict_time
        if predict is None:
            predict = round(0.5 + 9.5 * self._state.dice.draw("predict_time", job.id), 3)
        return {"predict_time": predict, "total_time": max(total, predict)}

    def _output(self, job: Job) -> Any:
        if job.outcome == "expired":
            return None
        shape = job.scenario.shape
        if shape == "data":
            urls = [self._data_url(job, index) for index in range(job.outputs)]
            return urls[0] if job.outputs == 1 else urls
        urls = [file_url(self._state, job, index) for index in range(job.outputs)]
        if shape == "object":
            return {("media" if i == 0 else f"media_{i}"): url for i, url in enumerate(urls)}
        as_list = shape == "list" or (
            shape is None
            and (
                job.outputs > 1
                or "num_outputs" in job.details["input"]
                or job.media.fmt in IMAGE_FORMATS
            )
        )
        return urls if as_list else urls[0]

    def _data_url(self, job: Job, index: int) -> str:
        data = base64.b64encode(media.render(job.media, file_key(job, index))).decode()
        return f"data:{media.CONTENT_TYPES[job.media.fmt]};base64,{data}"
