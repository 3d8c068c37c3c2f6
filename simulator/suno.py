"""Fake Suno API in the sunoapi.org schema (`reference/providers.md` §3.A).

`POST /api/v1/generate` (JSON; `customMode`, `instrumental`, `model`, `callBackUrl` required)
→ `{"code":200,"msg":"success","data":{"taskId":…}}`. `GET /api/v1/generate/record-info?taskId=`
→ `data.status` PENDING → TEXT_SUCCESS → FIRST_SUCCESS → SUCCESS (or CREATE_TASK_FAILED,
GENERATE_AUDIO_FAILED, SENSITIVE_WORD_ERROR, CALLBACK_EXCEPTION) with `data.response.sunoData[]`
(two clips by default). `GET /api/v1/generate/credit` → remaining credits. Vendor errors
are reported in the body `code` with HTTP 200 (400, 401, 404, 413, 429 = no credits,
430 = call frequency too high, 455, 500); only infrastructure faults use HTTP 5xx.
Callbacks are not delivered.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from simulator import scenarios
from simulator.common import (
    Route,
    ambiguous_submit,
    bearer_token,
    file_url,
    finish_with_fault,
    json_response,
    load_json,
    media_spec,
    new_job,
    poll_fault,
    submit_fault,
)
from simulator.http import Request, Response
from simulator.jobs import Job, advance, observe_terminal, progress
from simulator.media import audio_duration_s
from simulator.scenarios import Scenario
from simulator.state import SimState

# Clips complete so far, per non-terminal status (every clip once it succeeded).
_COMPLETE_CLIPS = {"TEXT_SUCCESS": 0, "FIRST_SUCCESS": 1, "QUEUED_FOR_REVIEW": 0}


@dataclass(frozen=True, slots=True)
class _Model:
    name: str
    prompt_max: int
    style_max: int


_MODELS: Final = {
    "V3_5": _Model("chirp-v3-5", 3000, 200),
    "V4": _Model("chirp-v4", 3000, 200),
    "V4_5": _Model("chirp-v4-5", 5000, 1000),
    "V4_5PLUS": _Model("chirp-v4-5-plus", 5000, 1000),
    "V4_5ALL": _Model("chirp-v4-5-all", 5000, 1000),
    "V5": _Model("chirp-v5", 5000, 1000),
}
_MESSAGES: Final = {
    400: "Invalid parameters",
    401: "Unauthorized: missing or invalid API key",
    404: "Not found",
    405: "Rate limit exceeded",
    413: "Prompt or style too long",
    429: "Insufficient credits",
    430: "Your call frequency is too high. Please try again later.",
    455: "System maintenance in progress",
    500: "Server error",
}
_FAILED: Final = {
    "fail": ("GENERATE_AUDIO_FAILED", 500, "Audio generation failed"),
    "create_failed": ("CREATE_TASK_FAILED", 400, "Failed to create the generation task"),
    "moderation": ("SENSITIVE_WORD_ERROR", 400, "prompt contains restricted content"),
    "filtered": ("SENSITIVE_WORD_ERROR", 400, "prompt contains restricted content"),
}
_NON_CUSTOM_PROMPT_MAX: Final = 500
_TITLE_MAX: Final = 80
_CREDITS: Final = 10_000
_CREDITS_PER_TASK: Final = 12
_RUN_AT: Final = 1 / 3
_CLIPS: Final = 2


class SunoError(ValueError):
    """A request the vendor rejects with body `code` (400 or 413)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _text(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise SunoError(400, f"{key} must be a string")
    return value


def _check_texts(body: dict[str, Any], model: _Model) -> None:
    prompt, style, title = _text(body, "prompt"), _text(body, "style"), _text(body, "title")
    if not body["customMode"]:
        if not prompt.strip():
            raise SunoError(400, "prompt is required")
        if len(prompt) > _NON_CUSTOM_PROMPT_MAX:
            raise SunoError(413, f"prompt exceeds {_NON_CUSTOM_PROMPT_MAX} characters")
        return
    if not style.strip() or not title.strip():
        raise SunoError(400, "style and title are required in custom mode")
    if not body["instrumental"] and not prompt.strip():
        raise SunoError(400, "prompt is required in custom mode unless instrumental")
    if len(prompt) > model.prompt_max or len(style) > model.style_max or len(title) > _TITLE_MAX:
        raise SunoError(413, "prompt, style or title too long for this model")


def _validate(body: object) -> dict[str, Any]:
    """Check a generate body the way sunoapi.org documents it; SunoError when rejected."""
    if not isinstance(body, dict):
        raise SunoError(400, "request body must be a JSON object")
    for flag in ("customMode", "instrumental"):
        if not isinstance(body.get(flag), bool):
            raise SunoError(400, f"{flag} is required and must be a boolean")
    model = _MODELS.get(body.get("model"))  # type: ignore[arg-type]
    if model is None:
        raise SunoError(400, f"model must be one of {', '.join(_MODELS)}")
    callback = body.get("callBackUrl")
    if not isinstance(callback, str) or not callback.strip():
        raise SunoError(400, "callBackUrl is required")
    _check_texts(body, model)
    return body


def _clip_id(state: SimState, job: Job, index: int) -> str:
    raw = state.dice.digest("clip", job.id, index, size=16).hex()
    return f"{raw[:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-{raw[20:]}"


class SunoApi:
    """Routes and replies of the fake sunoapi.org API."""

    provider: Final = "suno"

    def __init__(self, state: SimState) -> None:
        self._state = state

    def route(self, request: Request) -> Route:
        path, method = request.path.rstrip("/"), request.method
        if path == "/api/v1/generate" and method == "POST":
            return Route(name="suno.generate", op="submit", run=lambda: self._generate(request))
        if path == "/api/v1/generate/record-info" and method in ("GET", "HEAD"):
            return Route(name="suno.record_info", op="poll", run=lambda: self._record_info(request))
        if path == "/api/v1/generate/credit" and method in ("GET", "HEAD"):
            return Route(name="suno.credit", op="other", run=self._credit)
        return Route(name="suno.unknown", op="other", run=self._not_found)

    def error(self, status: int, detail: str | None = None, *, transport: bool = False) -> Response:
        payload = {"code": status, "msg": detail or _MESSAGES.get(status, "Error"), "data": None}
        return json_response(status if transport else 200, payload)

    def throttled(self) -> Response:
        return self.error(430)

    def status_of(self, job: Job) -> str:
        if job.outcome is not None:
            if job.outcome == "callback_exception":
                return "CALLBACK_EXCEPTION"
            failed = _FAILED.get(job.outcome)
            return failed[0] if failed else "SUCCESS"
        if job.scenario.unknown_status:  # not GENERATING: the adapter knows that one
            return "QUEUED_FOR_REVIEW"
        if job.started is None:
            return "PENDING"
        return "TEXT_SUCCESS" if progress(job, self._state.now()) < 2 / 3 else "FIRST_SUCCESS"

    async def _not_found(self) -> Response:
        return self.error(404, transport=True)

    async def _credit(self) -> Response:
        used = sum(1 for job in self._state.jobs.values() if job.provider == "suno")
        return json_response(
            200, {"code": 200, "msg": "success", "data": _CREDITS - used * _CREDITS_PER_TASK}
        )

    async def _generate(self, request: Request) -> Response:
        try:
            body = _validate(load_json(request.body))
            scenario = scenarios.parse(
                body.get("sim_scenario"),
                *(scenarios.tokens_in_text(body.get(key)) for key in ("prompt", "style", "title")),
                base=self._state.default_scenario,
            )
        except SunoError as exc:
            return self.error(exc.code, str(exc))
        except ValueError as exc:  # bad JSON or ScenarioError
            return self.error(400, str(exc))
        refused = submit_fault(self, scenario)
        if refused is not None:
            return refused
        job = self._new_job(request, body, scenario)
        reply = json_response(200, {"code": 200, "msg": "success", "data": {"taskId": job.id}})
        return ambiguous_submit(self, scenario, reply)

    def _new_job(self, request: Request, body: dict[str, Any], scenario: Scenario) -> Job:
        return new_job(
            self._state,
            provider="suno",
            scenario=scenario,
            media=media_spec(self._state, scenario, "mp3"),
            outputs=scenario.outputs or _CLIPS,
            run_at=_RUN_AT,
            owner=bearer_token(request) or "",
            details={"body": body, "model": _MODELS[body["model"]].name},
        )

    async def _record_info(self, request: Request) -> Response:
        task_id = request.query.get("taskId", "")
        if not task_id:
            return self.error(400, "taskId is required")
        job = self._state.jobs.get(task_id)
        if job is None or job.provider != "suno":
            return self.error(404, "task not found")
        fault = poll_fault(job)
        if fault.status is not None:
            return finish_with_fault(fault, self.error(fault.status))
        now = self._state.now()
        advance(job, now, poll=True)
        observe_terminal(job, now)
        reply = json_response(200, {"code": 200, "msg": "success", "data": self.record(job)})
        return finish_with_fault(fault, reply)

    def record(self, job: Job) -> dict[str, Any]:
        """`data` of a record-info reply."""
        status = self.status_of(job)
        failed = _FAILED.get(job.outcome or "")
        created = datetime.fromtimestamp(self._state.wall(job.created), UTC)
        return {
            "taskId": job.id,
            "parentMusicId": "",
            "param": json.dumps(job.details["body"], ensure_ascii=False),
            "response": None
            if failed or status == "PENDING"
            else self._response(job, status, created),
            "status": status,
            "type": "GENERATE",
            "operationType": "generate",
            "errorCode": failed[1] if failed else None,
            "errorMessage": failed[2] if failed else None,
        }

    def _response(self, job: Job, status: str, created: datetime) -> dict[str, Any]:
        complete = _COMPLETE_CLIPS.get(status, job.outputs)
        stamp = created.strftime("%Y-%m-%d %H:%M:%S")
        return {
            "taskId": job.id,
            "sunoData": [
                self._clip(job, index, index < complete, stamp) for index in range(job.outputs)
            ],
        }

    def _clip(self, job: Job, index: int, complete: bool, stamp: str) -> dict[str, Any]:
        body = job.details["body"]
        base = f"{self._state.cdn_base_url}/cdn/{job.id}"
        audio = file_url(self._state, job, index) if complete else ""
        image = f"{base}/cover-{index}.jpeg" if complete else ""
        stream = f"{base}/stream-{index}.{job.media.fmt}"
        return {
            "id": _clip_id(self._state, job, index),
            "audioUrl": audio,
            "sourceAudioUrl": audio,
            "streamAudioUrl": stream,
            "sourceStreamAudioUrl": stream,
            "imageUrl": image,
            "sourceImageUrl": image,
            "prompt": body.get("prompt") or "",
            "modelName": job.details["model"],
            "title": body.get("title") or "Simulated Track",
            "tags": body.get("style") or "",
            "createTime": stamp,
            "duration": audio_duration_s(job.media) if complete else None,
        }
