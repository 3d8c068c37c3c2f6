"""Stability AI (REST v2beta): settings, wire models, result handling and adapter.

Submit is a multipart ``POST /v2beta/{endpoint}``; async endpoints answer ``{"id": …}`` and are
polled at ``GET /v2beta/results/{id}`` (``/v2beta/image-to-video/result/{id}`` for video). A
202 means running (Stability has no queued state); a 200 *is the file* — raw bytes with
``finish-reason``/``seed`` headers, or base64 JSON — so outputs are `InlineOutput` and
``result_uri`` is the results URL, the only re-fetchable address (kept 24 h, same key only).
Such a result is held in memory, so the daemon caps it at ``POLLER_MAX_DOWNLOAD_BYTES``
(DESIGN §10); a bigger one is a failed result (made and charged, but not kept).

Input files (`providers.stability_files`): ``data:`` URLs are decoded; https URLs are fetched
only through the daemon's guarded client, never with the API key. Any 429 locks the whole
account out for 60 s, so it asks the poller to pause the provider. There is no cancel
endpoint.

Synchronous endpoints (most image and audio ones) answer the submit with the file itself;
that result comes back as SUCCEEDED with a local job id (``sync-<job uuid>``), because the
poller records an id before ingesting. A moderation refusal at submit is `ProviderModerated`
(message "moderation: …", as DESIGN §10 words the job's error; nothing is charged).
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import SettingsConfigDict

from providers import _http
from providers.base import Provider
from providers.errors import (
    ProviderError,
    ProviderModerated,
    ProviderRateLimited,
)
from providers.settings import PriceTable, ProviderSettings, decode_json_table, expect_settings
from providers.stability_files import InputFiles
from providers.types import (
    InlineOutput,
    JobHandle,
    PollResult,
    PollState,
    ProviderFailure,
    SubmitRequest,
)

PROVIDER = "stability"
MiB = 1024 * 1024
# Local job ids for synchronous endpoints (their reply is the result; Stability keeps no id).
SYNC_ID_PREFIX = "sync-"

# Credits per successful call (reference §2.8; 1 credit = $0.01). Keys are endpoints, or
# "endpoint:model" where the form field `model` changes the price. Missing = cost unknown.
DEFAULT_CREDITS: dict[str, Decimal] = {
    "audio/stable-audio-2/text-to-audio": Decimal(20),
    "image-to-video": Decimal(20),
    "stable-image/generate/core": Decimal(3),
    "stable-image/generate/sd3": Decimal("6.5"),
    "stable-image/generate/sd3:sd3.5-large": Decimal("6.5"),
    "stable-image/generate/sd3:sd3.5-large-turbo": Decimal(4),
    "stable-image/generate/sd3:sd3.5-medium": Decimal("3.5"),
    "stable-image/generate/ultra": Decimal(8),
}


class StabilitySettings(ProviderSettings):
    """``STABILITY_*`` settings."""

    model_config = SettingsConfigDict(env_prefix="STABILITY_")

    base_url: str = "https://api.stability.ai"
    poll_interval_image_ms: int = Field(5_000, ge=100)
    poll_interval_video_ms: int = Field(10_000, ge=100)
    poll_interval_audio_ms: int = Field(5_000, ge=100)
    timeout_image_ms: int = Field(300_000, ge=1_000)
    timeout_video_ms: int = Field(600_000, ge=1_000)
    timeout_audio_ms: int = Field(300_000, ge=1_000)
    max_in_flight: int = Field(16, ge=1, le=10_000)
    rate_per_s: float = Field(12.0, gt=0, description="80 % of 150 requests / 10 s")
    burst: int = Field(20, ge=1, description="burst + 10 s of refill stays under 150")
    max_reply_bytes: int = Field(512 * MiB, ge=1024, description="results arrive inline")
    credits: PriceTable = Field(default_factory=lambda: dict(DEFAULT_CREDITS))
    usd_per_credit: Decimal = Field(Decimal("0.01"), ge=0)
    rate_limit_pause_s: float = Field(60.0, ge=0, description="account lockout after a 429")
    max_input_file_bytes: int = Field(32 * MiB, ge=1024)
    input_fetch_timeout_s: float = Field(30.0, gt=0)
    sync_read_timeout_s: float = Field(
        240.0, gt=0, le=3600, description="read timeout of a submit: sync endpoints answer late"
    )

    _decode_tables = field_validator("credits", mode="before")(decode_json_table)


# --- input_params -------------------------------------------------------------------------

FormValue = str | int | float | bool


class StabilityParams(BaseModel):
    """``{"endpoint": "stable-image/upscale/creative", "params": {…}, "files": {"image": url}}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    endpoint: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*(?:/[a-z0-9][a-z0-9-]*)*$", max_length=200)
    params: dict[str, FormValue] = Field(default_factory=dict)
    files: dict[str, str] = Field(default_factory=dict)

    @field_validator("files")
    @classmethod
    def _file_refs(cls, value: dict[str, str]) -> dict[str, str]:
        for name, ref in value.items():
            if not (_http.is_data_url(ref) or ref.lower().startswith("https://")):
                raise ValueError(f"files.{name} must be an https:// or data: URL")
        return value

    def cost_keys(self) -> tuple[str, ...]:
        model = self.params.get("model")
        return (f"{self.endpoint}:{model}", self.endpoint) if model else (self.endpoint,)


# --- wire models --------------------------------------------------------------------------


class _Accepted(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str = Field(min_length=1, max_length=255)


class _JsonResult(BaseModel):
    """JSON-mode completion; the payload key depends on the endpoint."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    result: str | None = None
    image: str | None = None
    video: str | None = None
    audio: str | None = None
    finish_reason: str | None = None
    seed: int | str | None = None
    status: str | None = None

    def payload(self) -> tuple[str | None, str | None]:
        """The base64 payload and the media type its key implies."""
        for value, media_type in (
            (self.result, None),
            (self.image, None),
            (self.video, "video/mp4"),
            (self.audio, None),
        ):
            if value:
                return value, media_type
        return None, None


_MODERATION = re.compile(r"moderat|flagged", re.IGNORECASE)
_SEED_DIGITS = 20  # int() of a longer digit string may raise (Python's 4300-digit cap)
_ENVELOPE_SLACK_BYTES = 64 * 1024  # JSON keys, finish_reason and seed around a base64 result


class StabilityProvider:
    """Adapter for Stability's v2beta REST API (async endpoints; sync replies handled too)."""

    reports_sends = True  # every submit request goes through _http.Edge (providers.sending)

    def __init__(
        self,
        settings: StabilitySettings,
        client: httpx.AsyncClient,
        *,
        fetch_client: httpx.AsyncClient | None = None,
        max_result_bytes: int | None = None,
    ) -> None:
        """``fetch_client`` fetches https input files (the daemon's guarded client, see
        `_http.Hosting`); without one such inputs are refused. ``max_result_bytes`` is the
        largest result held in memory (the daemon's ``POLLER_MAX_DOWNLOAD_BYTES``); without
        it, ``STABILITY_MAX_REPLY_BYTES``."""
        self._settings = settings
        self._result_cap = _ResultCap.of(settings, max_result_bytes)
        self._edge = _http.Edge(
            PROVIDER, client, settings.secret_values(), self._result_cap.reply_bytes
        )
        self._files = InputFiles(
            fetch_client=fetch_client,
            max_bytes=settings.max_input_file_bytes,
            timeout_s=settings.input_fetch_timeout_s,
        )

    @property
    def name(self) -> str:
        return PROVIDER

    async def submit(self, request: SubmitRequest) -> PollResult:
        """One multipart create call; never retried here."""
        params = _http.validate_params(StabilityParams, request.params, PROVIDER)
        parts = _form_parts(params.params) + await self._files.parts(params.files)
        job_id = f"{SYNC_ID_PREFIX}{request.job_id}"  # used if the answer is the file itself
        try:
            reply = await self._edge.request(
                "POST",
                f"/v2beta/{params.endpoint}",
                files=parts or [("none", (None, b""))],  # multipart even with no fields at all
                headers={"Accept": "application/json"},
                timeout=self._submit_timeout(),
            )
        except _http.ReplyTooLarge as exc:
            return self._too_large(exc, params, job_id=job_id)
        return self._submitted(reply, params, job_id)

    def _submit_timeout(self) -> httpx.Timeout:
        """The poll timeouts, but a read timeout long enough for a synchronous endpoint.

        A sync endpoint sends nothing until the file is ready (reference §2.10, §5.3: allow
        ≥120 s for images, 240 s for audio). Cut off earlier, the call ends as "submit outcome
        unknown" although Stability generates, and bills, the result anyway. Every submit
        gets it, as an endpoint's mode is only known from its answer.
        """
        conf = self._settings
        return httpx.Timeout(
            conf.read_timeout_s, connect=conf.connect_timeout_s, read=conf.sync_read_timeout_s
        )

    async def poll(self, handle: JobHandle) -> PollResult:
        if handle.provider_job_id.startswith(SYNC_ID_PREFIX):
            return _sync_result_lost(handle)
        params = _lenient_params(handle)
        path, accept = _result_route(handle, params)
        try:
            reply = await self._edge.request("GET", path, headers={"Accept": accept})
        except _http.ReplyTooLarge as exc:
            return self._too_large(exc, params, job_id=handle.provider_job_id)
        if reply.status == 202:
            return PollResult(
                state=PollState.RUNNING,
                provider_job_id=handle.provider_job_id,
                raw_status=_in_progress_word(reply),
            )
        if reply.status == 404:
            return self._not_found(handle)
        self._raise_unless_done(reply)
        return self._completion(reply, params, job_id=handle.provider_job_id, result_uri=reply.url)

    async def cancel(self, handle: JobHandle) -> None:
        """Stability has no cancel endpoint: nothing to do."""

    # --- submit helpers --------------------------------------------------------------

    def _submitted(self, reply: _http.Reply, params: StabilityParams, job_id: str) -> PollResult:
        self._raise_unless_done(reply)
        if reply.status == 403:  # a moderation refusal: nothing was created, the job fails
            raise ProviderModerated(_moderation_message(self._edge, reply), provider=PROVIDER)
        if reply.media_type == "application/json":
            data = self._edge.json(reply)
            if isinstance(data, dict) and not _has_payload(data):
                if "id" not in data:  # nothing to poll and no result: the outcome is unknown
                    raise self._edge.protocol_error("submit reply without an id", reply.content)
                accepted = self._edge.model(_Accepted, data, reply)
                return PollResult(state=PollState.PENDING, provider_job_id=accepted.id)
        # A synchronous endpoint answered with the file itself. The poller needs an id to
        # record before ingesting, so the job gets a local one that polls recognise.
        return self._completion(reply, params, job_id=job_id, result_uri=None)

    # --- poll helpers ----------------------------------------------------------------

    def _raise_unless_done(self, reply: _http.Reply) -> None:
        """Raise for every non-2xx except a moderation 403 (that one is a failed result)."""
        if reply.is_success or (reply.status == 403 and _is_moderation(reply)):
            return
        if reply.status == 429:
            raise self._rate_limited(reply)
        raise self._edge.status_error(reply)

    def _rate_limited(self, reply: _http.Reply) -> ProviderError:
        hint = _http.retry_after_of(reply.headers) or 0.0
        pause = self._settings.rate_limit_pause_s
        return ProviderRateLimited(
            f"{PROVIDER}: HTTP 429 (the account is locked out for {pause:g} s)",
            provider=PROVIDER,
            retry_after_s=max(hint, pause),
            snippet=self._edge.snippet(reply.content),
        )

    def _not_found(self, handle: JobHandle) -> PollResult:
        if _http.early_not_found(handle.since_submit_s):
            raise _http.not_found_yet(PROVIDER, handle.since_submit_s or 0.0)
        failure = ProviderFailure(
            code="not_found",
            message="result not found: expired (kept 24 h) or created with a different API key",
        )
        return PollResult(
            state=PollState.FAILED, provider_job_id=handle.provider_job_id, failure=failure
        )

    def _moderation_refusal(self, reply: _http.Reply, *, job_id: str | None) -> PollResult:
        message = _moderation_message(self._edge, reply)
        failure = ProviderFailure(code="moderation", message=message, moderation=True)
        return PollResult(
            state=PollState.FAILED,
            provider_job_id=job_id,
            failure=failure,
            cost_usd=Decimal(0),  # refusals are documented as not charged
            raw_status="403",
        )

    def _completion(
        self,
        reply: _http.Reply,
        params: StabilityParams | None,
        *,
        job_id: str | None,
        result_uri: str | None,
    ) -> PollResult:
        """A finished call: the body is the file (bytes mode) or base64 JSON."""
        if reply.status == 403:
            return self._moderation_refusal(reply, job_id=job_id)
        if reply.media_type == "application/json":
            return self._json_completion(reply, params, job_id=job_id, result_uri=result_uri)
        finish = reply.headers.get("finish-reason") or "SUCCESS"
        done = _Done(
            data=reply.content,
            media_type=reply.media_type or None,
            finish=finish,
            seed=reply.headers.get("seed"),
        )
        return self._finished(done, params, job_id=job_id, result_uri=result_uri)

    def _json_completion(
        self,
        reply: _http.Reply,
        params: StabilityParams | None,
        *,
        job_id: str | None,
        result_uri: str | None,
    ) -> PollResult:
        body = self._edge.model(_JsonResult, self._edge.json(reply), reply)
        payload, media_type = body.payload()
        if payload is None and body.finish_reason is None:
            return self._status_only(body.status, reply, job_id=job_id)
        try:
            data = base64.b64decode(payload or "", validate=True)
        except (binascii.Error, ValueError):
            raise self._edge.protocol_error("invalid base64 payload", reply.content) from None
        done = _Done(
            data=data,
            media_type=media_type,
            finish=body.finish_reason or "SUCCESS",
            seed=None if body.seed is None else str(body.seed),
        )
        return self._finished(done, params, job_id=job_id, result_uri=result_uri)

    def _status_only(
        self, status: str | None, reply: _http.Reply, *, job_id: str | None
    ) -> PollResult:
        """A 200 JSON with a status word but no file: still running, or a word we do not know.

        An unknown word is UNKNOWN, not an error (DESIGN §10: logged and polled again, only the
        deadline ends the job); a reply with neither a file nor a status is unreadable.
        """
        if not status:
            raise self._edge.protocol_error("finished reply without a payload", reply.content)
        word = status.strip()[:64]
        state = PollState.RUNNING if word.lower() == "in-progress" else PollState.UNKNOWN
        return PollResult(state=state, provider_job_id=job_id, raw_status=word)

    def _finished(
        self,
        done: _Done,
        params: StabilityParams | None,
        *,
        job_id: str | None,
        result_uri: str | None,
    ) -> PollResult:
        finish = done.finish.strip().upper()[:64]
        if finish == "SUCCESS":
            if not done.data:
                raise self._edge.protocol_error("finished reply with an empty body", b"")
            if len(done.data) > self._result_cap.result_bytes:
                return self._too_large(None, params, job_id=job_id)
            output = InlineOutput(
                data=done.data, media_type=done.media_type, metadata=done.metadata()
            )
            return PollResult(
                state=PollState.SUCCEEDED,
                provider_job_id=job_id,
                outputs=(output,),
                result_uri=result_uri,
                cost_usd=self._cost(params),
                raw_status=finish,
                progress=1.0,
            )
        if finish in ("CONTENT_FILTERED", "ERROR"):
            return PollResult(
                state=PollState.FAILED,
                provider_job_id=job_id,
                failure=_finish_failure(finish),
                cost_usd=self._cost(params) if finish == "CONTENT_FILTERED" else None,
                raw_status=finish,
            )
        return PollResult(state=PollState.UNKNOWN, provider_job_id=job_id, raw_status=finish)

    def _too_large(
        self,
        exc: _http.ReplyTooLarge | None,
        params: StabilityParams | None,
        *,
        job_id: str | None,
    ) -> PollResult:
        """A finished result over the in-memory cap fails the job (DESIGN §1: a bigger result
        stores nothing). Stability made, and charged for, the file, so the cost is kept. An
        oversized *error* reply is no result: it stays an error."""
        if exc is not None and not 200 <= exc.status < 300:
            raise exc
        failure = ProviderFailure(code="too_large", message=self._result_cap.message())
        return PollResult(
            state=PollState.FAILED,
            provider_job_id=job_id,
            failure=failure,
            cost_usd=self._cost(params),
            raw_status="too_large",
        )

    def _cost(self, params: StabilityParams | None) -> Decimal | None:
        """Credits of the endpoint (or endpoint:model) * $/credit; None when not in the table."""
        for key in params.cost_keys() if params else ():
            credits = self._settings.credits.get(key)
            if credits is not None:
                return credits * self._settings.usd_per_credit
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class _ResultCap:
    """How large an inline result may be, and how much of a reply that allows reading.

    In JSON mode the file arrives base64-encoded, 4/3 of its size, inside a small envelope
    (``finish_reason``, ``seed``), so the reply cap is 4/3 of the result cap plus slack; the
    decoded (or raw) file is then held to the result cap itself.
    """

    result_bytes: int
    reply_bytes: int
    setting: str  # the setting an operator raises to accept bigger results

    @classmethod
    def of(cls, settings: StabilitySettings, max_result_bytes: int | None) -> _ResultCap:
        if max_result_bytes is None:
            limit = settings.max_reply_bytes
            return cls(result_bytes=limit, reply_bytes=limit, setting="STABILITY_MAX_REPLY_BYTES")
        reply = math.ceil(max_result_bytes * 4 / 3) + _ENVELOPE_SLACK_BYTES
        return cls(
            result_bytes=max_result_bytes, reply_bytes=reply, setting="POLLER_MAX_DOWNLOAD_BYTES"
        )

    def message(self) -> str:
        """Worded like storage's own size refusal, naming the setting to raise."""
        return f"result is larger than {self.setting} ({self.result_bytes} bytes); nothing stored"


@dataclass(frozen=True, slots=True, kw_only=True)
class _Done:
    """A finished reply's file and headers, whichever mode it came in."""

    data: bytes
    media_type: str | None
    finish: str
    seed: str | None

    def metadata(self) -> dict[str, Any]:
        seed = self.seed.strip() if self.seed else ""
        meta: dict[str, Any] = {"finish_reason": self.finish.strip().upper()[:64]}
        if seed:  # Stability's seeds are 0..4294967294; anything else is kept as text
            numeric = seed.isascii() and seed.isdigit() and len(seed) <= _SEED_DIGITS
            meta["seed"] = int(seed) if numeric else seed[:32]
        return meta


def _finish_failure(finish: str) -> ProviderFailure:
    if finish == "CONTENT_FILTERED":
        return ProviderFailure(
            code="moderation",
            message="moderation: output filtered by content moderation (CONTENT_FILTERED)",
            moderation=True,
        )
    return ProviderFailure(code="provider_error", message="generation failed (finish_reason ERROR)")


def _form_parts(fields: dict[str, FormValue]) -> list[tuple[str, Any]]:
    """Form fields as multipart parts without a file name (Stability only takes multipart)."""
    parts: list[tuple[str, Any]] = []
    for name, value in fields.items():
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        parts.append((name, (None, text.encode())))
    return parts


def _sync_result_lost(handle: JobHandle) -> PollResult:
    """A sync result lives only in the submit reply; if a poll comes, it was never stored."""
    failure = ProviderFailure(
        code="result_lost",
        message="the synchronous result was not stored before the worker stopped; resubmit",
    )
    return PollResult(
        state=PollState.FAILED, provider_job_id=handle.provider_job_id, failure=failure
    )


def _lenient_params(handle: JobHandle) -> StabilityParams | None:
    """The job's params for routing and cost; a poll never fails over them."""
    try:
        return StabilityParams.model_validate(dict(handle.params))
    except ValidationError:
        return None


def _result_route(handle: JobHandle, params: StabilityParams | None) -> tuple[str, str]:
    job = quote(handle.provider_job_id, safe="")
    if handle.media_type == "video" or (params and params.endpoint == "image-to-video"):
        return f"/v2beta/image-to-video/result/{job}", "video/*"
    return f"/v2beta/results/{job}", "*/*"


def _has_payload(data: dict[str, Any]) -> bool:
    return any(data.get(key) for key in ("result", "image", "video", "audio", "finish_reason"))


def _in_progress_word(reply: _http.Reply) -> str:
    if reply.media_type == "application/json" and len(reply.content) < 4096:
        match = re.search(rb'"status"\s*:\s*"([A-Za-z_ -]{1,32})"', reply.content)
        if match:
            return match.group(1).decode()
    return "in-progress"


def _is_moderation(reply: _http.Reply) -> bool:
    return bool(_MODERATION.search(reply.content[:4096].decode("utf-8", "replace")))


def _moderation_message(edge: _http.Edge, reply: _http.Reply) -> str:
    """``moderation: <the vendor's reason>``: the job's error, at submit and on a poll alike."""
    reason = _first_error(edge, reply) or "request refused by content moderation"
    return f"moderation: {reason}"


def _first_error(edge: _http.Edge, reply: _http.Reply) -> str | None:
    """The first entry of an error body's ``errors`` list (or its ``name``), redacted."""
    try:
        data = edge.json(reply)
    except ProviderError:
        return None
    if not isinstance(data, dict):
        return None
    errors = data.get("errors")
    first = errors[0] if isinstance(errors, list) and errors else data.get("name")
    return _http.snippet(str(first), edge.secrets) if first else None


def build(settings: ProviderSettings, client: httpx.AsyncClient) -> Provider:
    """Registry factory: the adapter over a ready client."""
    return StabilityProvider(expect_settings(settings, StabilitySettings), client)


def build_hosted(
    settings: ProviderSettings, client: httpx.AsyncClient, hosting: _http.Hosting
) -> Provider:
    """Registry factory for the daemon: its download cap and its guarded input client."""
    return StabilityProvider(
        expect_settings(settings, StabilitySettings),
        client,
        fetch_client=hosting.fetch_client,
        max_result_bytes=hosting.max_inline_bytes,
    )
