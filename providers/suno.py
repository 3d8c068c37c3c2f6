"""Suno via the sunoapi.org schema (also cloned by kie.ai and resellers; base URL configurable).

Submit ``POST /api/v1/generate`` (``callBackUrl`` is mandatory there, so we always send
``SUNO_CALLBACK_URL``); poll ``GET /api/v1/generate/record-info?taskId=…``. Errors usually come
back as HTTP 200 with a body ``code`` (sometimes mirrored in the HTTP status; the body wins):
429 means *out of credits* (not a rate limit), 405/430 mean slow down, 455 (maintenance) means
nothing was accepted, try later, and 500 means try later (for a submit: outcome unknown).

One task yields (usually) two clips; each clip's ``audioUrl`` is an output, cover images and
stream URLs are clip metadata. Field names vary between the record-info reply, the callback
payload and the vendor's own samples (``audioUrl`` / ``audio_url`` / ``sourceAudioUrl`` …), so
the wire models accept every documented spelling. No cancel endpoint exists.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core.core_schema import ValidationInfo
from pydantic_settings import SettingsConfigDict

from providers import _http
from providers.base import Provider
from providers.errors import (
    ProviderAuthError,
    ProviderBusy,
    ProviderError,
    ProviderRateLimited,
    ProviderRejected,
    ProviderUnavailable,
)
from providers.settings import ProviderSettings, expect_settings
from providers.types import (
    JobHandle,
    PollResult,
    PollState,
    ProviderFailure,
    RemoteOutput,
    SubmitRequest,
)

PROVIDER = "suno"


class SunoSettings(ProviderSettings):
    """``SUNO_*`` settings; ``SUNO_CALLBACK_URL`` is required once a key is configured."""

    model_config = SettingsConfigDict(env_prefix="SUNO_")

    base_url: str = "https://api.sunoapi.org"
    poll_interval_image_ms: int = Field(10_000, ge=100)
    poll_interval_video_ms: int = Field(10_000, ge=100)
    poll_interval_audio_ms: int = Field(10_000, ge=100)
    timeout_image_ms: int = Field(600_000, ge=1_000)
    timeout_video_ms: int = Field(600_000, ge=1_000)
    timeout_audio_ms: int = Field(600_000, ge=1_000)
    max_in_flight: int = Field(4, ge=1, le=10_000)
    rate_per_s: float = Field(1.5, gt=0, description="≈75 % of 20 requests / 10 s")
    burst: int = Field(4, ge=1, description="burst + 10 s of refill stays under 20")
    # Often carries an unguessable token (the callback is unsigned), hence secret.
    callback_url: SecretStr | None = Field(None, validate_default=True)
    credits_per_call: Decimal = Field(Decimal(12), ge=0, description="credits per generate")
    usd_per_credit: Decimal | None = Field(None, ge=0, description="plan price; unset = no cost")
    rate_limit_backoff_s: float = Field(20.0, ge=0, description="wait after body code 405/430")

    @field_validator("callback_url")
    @classmethod
    def _callback_url(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        url = value.get_secret_value().strip() if value is not None else ""
        if not url:
            key = info.data.get("api_key")
            if isinstance(key, SecretStr) and key.get_secret_value():
                raise ValueError("required when SUNO_API_KEY is set (the vendor demands it)")
            return None
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an absolute http(s) URL")
        return SecretStr(url)

    def secret_values(self) -> tuple[str, ...]:
        callback = self.callback_url.get_secret_value() if self.callback_url else ""
        return super().secret_values() + ((callback,) if callback else ())


# --- input_params -------------------------------------------------------------------------


class SunoParams(BaseModel):
    """The ``POST /api/v1/generate`` body minus ``callBackUrl``; unknown fields pass through."""

    model_config = ConfigDict(
        extra="allow", frozen=True, alias_generator=to_camel, populate_by_name=True
    )

    custom_mode: bool
    instrumental: bool
    model: str = Field(min_length=1, max_length=40)
    prompt: str | None = Field(None, max_length=5000)
    style: str | None = Field(None, max_length=1000)
    title: str | None = Field(None, max_length=80)
    negative_tags: str | None = None
    vocal_gender: str | None = None
    style_weight: float | None = None
    weirdness_constraint: float | None = None
    audio_weight: float | None = None

    def body(self, callback_url: str) -> dict[str, Any]:
        body = self.model_dump(by_alias=True, exclude_none=True)
        body.pop("callBackUrl", None)  # the daemon's setting always wins
        body["callBackUrl"] = callback_url
        return body


# --- wire models --------------------------------------------------------------------------


def _pick(data: Mapping[str, Any], names: tuple[str, ...]) -> Any:
    """The first non-empty value among a field's documented spellings."""
    for name in names:
        value = data.get(name)
        if value not in (None, ""):
            return value
    return None


_CLIP_FIELDS: dict[str, tuple[str, ...]] = {
    "id": ("id", "clipId", "clip_id"),
    "audio_url": ("audioUrl", "audio_url", "sourceAudioUrl", "source_audio_url"),
    "stream_audio_url": (
        "streamAudioUrl",
        "stream_audio_url",
        "sourceStreamAudioUrl",
        "source_stream_audio_url",
    ),
    "image_url": ("imageUrl", "image_url", "sourceImageUrl", "source_image_url"),
    "title": ("title",),
    "tags": ("tags",),
    "model_name": ("modelName", "model_name"),
    "duration": ("duration",),
    "create_time": ("createTime", "create_time"),
}


class _Clip(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str | None = None
    audio_url: str | None = None
    stream_audio_url: str | None = None
    image_url: str | None = None
    title: str | None = None
    tags: str | None = None
    model_name: str | None = None
    duration: float | None = None
    create_time: str | int | None = None

    @model_validator(mode="before")
    @classmethod
    def _spellings(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        return {field: _pick(data, names) for field, names in _CLIP_FIELDS.items()}

    def metadata(self) -> dict[str, Any]:
        """Clip facts worth keeping beside the artifact (cover image URL included)."""
        fields = ("id", "title", "tags", "duration", "model_name", "image_url", "stream_audio_url")
        meta = {name: getattr(self, name) for name in fields}
        return {("clip_id" if k == "id" else k): v for k, v in meta.items() if v is not None}


class _Response(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    clips: list[_Clip] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _clip_list(cls, data: Any) -> Any:
        if isinstance(data, list):
            return {"clips": data}
        if isinstance(data, Mapping):
            return {"clips": _pick(data, ("sunoData", "suno_data", "data")) or []}
        return data


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    status: str = Field(min_length=1, max_length=100)
    response: _Response | None = None
    error_message: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _spellings(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        return {
            "status": data.get("status"),
            "response": data.get("response"),
            "error_message": _pick(data, ("errorMessage", "error_message")),
        }

    def clips(self) -> list[_Clip]:
        return self.response.clips if self.response else []


class _Accepted(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    task_id: str = Field(min_length=1, max_length=255)

    @model_validator(mode="before")
    @classmethod
    def _spellings(cls, data: Any) -> Any:
        return (
            {"task_id": _pick(data, ("taskId", "task_id"))} if isinstance(data, Mapping) else data
        )


class _Envelope(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    code: int
    msg: str | None = None
    data: Any = None


# The body codes the vendor documents (§3.A). Another code (a gateway's own, e.g. Cloudflare's
# 1015) means nothing known, so an HTTP error status sent with it decides instead.
_DOCUMENTED_CODES = frozenset({400, 401, 404, 405, 413, 429, 430, 455, 500})

STATUS_MAP: dict[str, PollState] = {
    "PENDING": PollState.PENDING,
    "TEXT_SUCCESS": PollState.RUNNING,  # lyrics ready
    "FIRST_SUCCESS": PollState.RUNNING,  # first clip ready; finish only on SUCCESS
    "GENERATING": PollState.RUNNING,  # the vendor's own quick-start sample uses this word
    "SUCCESS": PollState.SUCCEEDED,
    "CALLBACK_EXCEPTION": PollState.SUCCEEDED,  # about callback delivery: checked per clip
    "CREATE_TASK_FAILED": PollState.FAILED,
    "GENERATE_AUDIO_FAILED": PollState.FAILED,
    "SENSITIVE_WORD_ERROR": PollState.FAILED,  # content policy
}


class SunoProvider:
    """Adapter for the sunoapi.org-style hosted Suno API."""

    reports_sends = True  # every submit request goes through _http.Edge (providers.sending)

    def __init__(self, settings: SunoSettings, client: httpx.AsyncClient) -> None:
        self._settings = settings
        self._edge = _http.Edge(
            PROVIDER, client, settings.secret_values(), settings.max_reply_bytes
        )

    @property
    def name(self) -> str:
        return PROVIDER

    async def submit(self, request: SubmitRequest) -> PollResult:
        """One generate call; never retried here."""
        params = _http.validate_params(SunoParams, request.params, PROVIDER)
        if self._settings.callback_url is None:
            raise ProviderRejected(f"{PROVIDER}: SUNO_CALLBACK_URL is not set", provider=PROVIDER)
        body = params.body(self._settings.callback_url.get_secret_value())
        reply = await self._edge.request("POST", "/api/v1/generate", json=body)
        envelope = self._envelope(reply)
        accepted = self._edge.model(_Accepted, envelope.data, reply)
        return PollResult(state=PollState.PENDING, provider_job_id=accepted.task_id)

    async def poll(self, handle: JobHandle) -> PollResult:
        query = {"taskId": handle.provider_job_id}
        reply = await self._edge.request("GET", "/api/v1/generate/record-info", params=query)
        if _says_not_found(reply):
            return self._not_found(handle, reply)
        record = self._edge.model(_Record, self._envelope(reply).data, reply)
        return self._interpret(record, handle.provider_job_id, reply)

    async def cancel(self, handle: JobHandle) -> None:
        """The hosted API has no cancel endpoint: nothing to do."""

    # --- helpers ---------------------------------------------------------------------

    def _envelope(self, reply: _http.Reply) -> _Envelope:
        """The body ``code`` first, whatever the HTTP status; the status only without one.

        The vendor reports errors in the body, usually with HTTP 200 but sometimes with the
        code mirrored in the status: HTTP 429 + body ``code`` 429 is *out of credits*, which
        must fail fast, not pause the provider as a rate limit again and again. A reply that
        is no envelope at all (a proxy's HTML page, an empty body), or one whose code the
        vendor does not document, is judged by its HTTP status.
        """
        envelope = _envelope_of(reply.content)
        if envelope is not None:
            error = self._code_error(envelope, reply)
            if error is not None:
                raise error
        if not reply.is_success:
            raise self._edge.status_error(reply)
        if envelope is None:  # a 2xx that is no envelope: fails with the precise reason
            return self._edge.model(_Envelope, self._edge.json(reply), reply)
        return envelope

    def _not_found(self, handle: JobHandle, reply: _http.Reply) -> PollResult:
        """DESIGN §10: a 404 this soon after submit is retried (the task may not be visible
        yet); later the task is gone for good and the job fails with that reason."""
        if _http.early_not_found(handle.since_submit_s):
            raise _http.not_found_yet(PROVIDER, handle.since_submit_s or 0.0)
        failure = ProviderFailure(
            code="not_found",
            message="task not found at Suno: unknown taskId, or created with another API key "
            f"({self._edge.snippet(reply.content)})",
        )
        return PollResult(
            state=PollState.FAILED, provider_job_id=handle.provider_job_id, failure=failure
        )

    def _code_error(self, envelope: _Envelope, reply: _http.Reply) -> ProviderError | None:
        code, snip = envelope.code, self._edge.snippet(reply.content)
        message = f"{PROVIDER}: body code {code}"
        if code == 200:
            return None
        if code not in _DOCUMENTED_CODES and not reply.is_success:
            return self._edge.status_error(reply)  # a code of no known meaning: trust the status
        if code == 429:
            return ProviderRejected(f"{message}: out of credits", provider=PROVIDER, snippet=snip)
        if code in (405, 430):
            wait = self._settings.rate_limit_backoff_s
            return ProviderRateLimited(message, provider=PROVIDER, retry_after_s=wait, snippet=snip)
        if code == 401:
            return ProviderAuthError(message, provider=PROVIDER, snippet=snip)
        if code == 455:  # maintenance: a clear refusal, so a submit may be sent again later
            return ProviderBusy(f"{message}: maintenance", provider=PROVIDER, snippet=snip)
        if code >= 500:  # may have been half-done: ambiguous for a submit
            return ProviderUnavailable(message, provider=PROVIDER, snippet=snip)
        return ProviderRejected(message, provider=PROVIDER, snippet=snip)

    def _interpret(self, record: _Record, job_id: str, reply: _http.Reply) -> PollResult:
        status = record.status.strip().upper()
        state = STATUS_MAP.get(status, PollState.UNKNOWN)
        if status == "CALLBACK_EXCEPTION":
            return self._callback_exception(record, job_id)
        if state is PollState.SUCCEEDED:
            return self._success(record, job_id, reply)
        if state is PollState.FAILED:
            failure = self._failure(status, record.error_message)
            return PollResult(
                state=state, provider_job_id=job_id, failure=failure, raw_status=status
            )
        return PollResult(state=state, provider_job_id=job_id, raw_status=status)

    def _success(self, record: _Record, job_id: str, reply: _http.Reply) -> PollResult:
        """``SUCCESS`` completes only with every clip's final file; until then it is running.

        A clip without ``audioUrl`` has at most its ``streamAudioUrl``, which is not the final
        MP3: that is the ``FIRST_SUCCESS`` picture, so poll again rather than complete with
        fewer clips (the job's deadline ends it if the file never comes).
        """
        if not record.clips():
            raise self._edge.protocol_error("SUCCESS without any clip", reply.content)
        complete = self._complete(record, job_id, "SUCCESS")
        if complete is not None:
            return complete
        return PollResult(state=PollState.RUNNING, provider_job_id=job_id, raw_status="SUCCESS")

    def _callback_exception(self, record: _Record, job_id: str) -> PollResult:
        """Generation may have worked although the callback failed: trust complete clips."""
        complete = self._complete(record, job_id, "CALLBACK_EXCEPTION")
        if complete is not None:
            return complete
        reason = record.error_message or "callback failed and not every clip has audio"
        failure = self._failure("CALLBACK_EXCEPTION", reason)
        return PollResult(
            state=PollState.FAILED,
            provider_job_id=job_id,
            failure=failure,
            raw_status="CALLBACK_EXCEPTION",
        )

    def _complete(self, record: _Record, job_id: str, status: str) -> PollResult | None:
        """Every clip as an output when *every* clip has its ``audioUrl``, else None.

        The one completeness rule for ``SUCCESS`` and ``CALLBACK_EXCEPTION`` (§5.2: download
        every ``audioUrl``): a task never completes with fewer artifacts than clips.
        """
        clips = record.clips()
        if not clips or not all(clip.audio_url for clip in clips):
            return None
        return PollResult(
            state=PollState.SUCCEEDED,
            provider_job_id=job_id,
            outputs=tuple(self._output(clip) for clip in clips),
            cost_usd=self._cost(),
            raw_status=status,
            progress=1.0,
        )

    def _output(self, clip: _Clip) -> RemoteOutput:
        url = clip.audio_url or ""
        headers = _http.headers_for(url, self._settings.base_url, self._settings.auth_headers())
        return RemoteOutput(
            url=url,
            media_type=_http.guess_media_type(url) or "audio/mpeg",  # the vendor serves MP3
            filename=_http.filename_of(url),
            headers=headers,
            metadata=clip.metadata(),
        )

    def _failure(self, status: str, error_message: str | None) -> ProviderFailure:
        reason = _http.redact((error_message or "").strip(), self._edge.secrets)[:1000]
        if status == "SENSITIVE_WORD_ERROR":
            text = reason or "the prompt contains restricted words"
            return ProviderFailure(
                code="moderation", message=f"moderation: {text}", moderation=True
            )
        return ProviderFailure(code="provider_error", message=reason or status)

    def _cost(self) -> Decimal | None:
        rate = self._settings.usd_per_credit
        return None if rate is None else self._settings.credits_per_call * rate


def _envelope_of(content: bytes) -> _Envelope | None:
    """The reply as the vendor's ``{code, msg, data}`` envelope, or None if it is not one."""
    try:
        return _Envelope.model_validate(json.loads(content))
    except (ValueError, RecursionError):  # bad JSON, bad UTF-8 or no int ``code``
        return None


def _says_not_found(reply: _http.Reply) -> bool:
    """A 404 in the body ``code`` (as the vendor reports errors) or, without one, the status."""
    envelope = _envelope_of(reply.content)
    return envelope.code == 404 if envelope is not None else reply.status == 404


def build(settings: ProviderSettings, client: httpx.AsyncClient) -> Provider:
    """Registry factory: the adapter over a ready client."""
    return SunoProvider(expect_settings(settings, SunoSettings), client)
