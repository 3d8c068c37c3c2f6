"""Replicate: settings, wire models, status map and adapter (``reference/providers.md`` §1).

Routes: ``POST /v1/predictions`` (``version``), ``POST /v1/models/{owner}/{name}/predictions``
(official models) and ``POST /v1/deployments/{owner}/{name}/predictions``; every submit carries
``Cancel-After`` so a crashed daemon cannot leave a prediction billing until the platform's
30-minute cap. Polls read ``GET /v1/predictions/{id}``; cancel is
``POST /v1/predictions/{id}/cancel``.

Outputs are URLs on ``replicate.delivery`` (deleted after one hour, hence ``data_removed`` →
"output expired") or ``data:`` URLs from the 2024 sync-mode episode, decoded in place. Our
token is never attached to a CDN URL (DESIGN §10 overrides the reference here).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from decimal import Decimal, InvalidOperation
from typing import Any, Self
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_core.core_schema import ValidationInfo
from pydantic_settings import SettingsConfigDict

from providers import _http
from providers.base import Provider
from providers.errors import ProviderError
from providers.settings import (
    NameTable,
    PriceTable,
    ProviderSettings,
    decode_json_table,
    expect_settings,
)
from providers.types import (
    InlineOutput,
    JobHandle,
    Output,
    PollResult,
    PollState,
    ProviderFailure,
    RemoteOutput,
    SubmitRequest,
)

PROVIDER = "replicate"

# Prices at the time the reference was written (§1.8); $/second of active predict time.
DEFAULT_HARDWARE_PRICES: dict[str, Decimal] = {
    "cpu": Decimal("0.000100"),
    "gpu-t4": Decimal("0.000225"),
    "gpu-a40-small": Decimal("0.000575"),
    "gpu-a40-large": Decimal("0.000725"),
    "gpu-l40s": Decimal("0.000975"),
    "gpu-a100-large": Decimal("0.001400"),
    "gpu-a100-large-2x": Decimal("0.002800"),
    "gpu-h100": Decimal("0.001525"),
}
# Official models are billed per output, not per second (§1.8; $ per output file).
DEFAULT_MODEL_PRICES: dict[str, Decimal] = {"black-forest-labs/flux-schnell": Decimal("0.003")}


class ReplicateSettings(ProviderSettings):
    """``REPLICATE_*``; the token keeps the official clients' name ``REPLICATE_API_TOKEN``."""

    model_config = SettingsConfigDict(env_prefix="REPLICATE_")

    base_url: str = "https://api.replicate.com"
    api_key: SecretStr | None = Field(None, validation_alias="REPLICATE_API_TOKEN")
    poll_interval_image_ms: int = Field(1_000, ge=100)
    poll_interval_video_ms: int = Field(5_000, ge=100)
    poll_interval_audio_ms: int = Field(2_000, ge=100)
    timeout_image_ms: int = Field(600_000, ge=1_000)
    timeout_video_ms: int = Field(1_200_000, ge=1_000)
    timeout_audio_ms: int = Field(600_000, ge=1_000)
    max_in_flight: int = Field(64, ge=1, le=10_000)
    rate_per_s: float = Field(40.0, gt=0, description="≈80 % of 3000 requests/min")
    burst: int = Field(80, ge=1)
    submit_rate_per_s: float | None = Field(8.0, gt=0, description="≈80 % of 600 creates/min")
    submit_burst: int = Field(10, ge=1)
    hardware_prices: PriceTable = Field(default_factory=lambda: dict(DEFAULT_HARDWARE_PRICES))
    model_hardware: NameTable = Field(default_factory=dict, description="model → hardware SKU")
    default_hardware: str | None = Field(None, description="SKU for models not in the map")
    model_prices: PriceTable = Field(default_factory=lambda: dict(DEFAULT_MODEL_PRICES))
    send_cancel_after: bool = Field(True, description="send Cancel-After on every submit")

    _decode_tables = field_validator(
        "hardware_prices", "model_hardware", "model_prices", mode="before"
    )(decode_json_table)

    @field_validator("model_hardware")
    @classmethod
    def _known_skus(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        prices = info.data.get("hardware_prices")
        unknown = sorted(set(value.values()) - set(prices or {}))
        if prices is not None and unknown:
            raise ValueError(f"hardware SKU(s) without a price in hardware_prices: {unknown}")
        return value

    @field_validator("default_hardware")
    @classmethod
    def _known_default(cls, value: str | None, info: ValidationInfo) -> str | None:
        prices = info.data.get("hardware_prices")
        if value is not None and prices is not None and value not in prices:
            raise ValueError(f"{value!r} has no price in hardware_prices")
        return value


# --- input_params -------------------------------------------------------------------------

_SLUG = r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$"


class ReplicateParams(BaseModel):
    """``input_params``: exactly one of ``version``, ``model`` or ``deployment`` plus ``input``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str | None = Field(None, min_length=1, max_length=300)
    model: str | None = Field(None, pattern=_SLUG, max_length=200)
    deployment: str | None = Field(None, pattern=_SLUG, max_length=200)
    input: dict[str, Any] = Field(default_factory=dict)
    webhook: str | None = None
    webhook_events_filter: list[str] | None = None

    @model_validator(mode="after")
    def _one_route(self) -> Self:
        chosen = [self.version, self.model, self.deployment]
        if sum(value is not None for value in chosen) != 1:
            raise ValueError("give exactly one of 'version', 'model' or 'deployment'")
        return self

    def route(self) -> tuple[str, dict[str, Any]]:
        """The create endpoint and JSON body for this route."""
        body: dict[str, Any] = {"input": self.input}
        if self.webhook is not None:
            body["webhook"] = self.webhook
        if self.webhook_events_filter is not None:
            body["webhook_events_filter"] = self.webhook_events_filter
        if self.version is not None:
            return "/v1/predictions", {"version": self.version, **body}
        if self.model is not None:
            return f"/v1/models/{self.model}/predictions", body
        return f"/v1/deployments/{self.deployment}/predictions", body


# --- wire models and status map -----------------------------------------------------------


class _Metrics(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    predict_time: float | None = None


class _Prediction(BaseModel):
    """The prediction object; unknown fields are ignored, only what we use is typed."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str = Field(min_length=1, max_length=255)
    status: str = Field(max_length=100)
    model: str | None = None
    deployment: str | None = None
    output: Any = None
    error: Any = None
    logs: str | None = None
    data_removed: bool | None = None
    metrics: _Metrics | None = None


STATUS_MAP: dict[str, PollState] = {
    "starting": PollState.PENDING,  # queued or cold-booting
    "processing": PollState.RUNNING,
    "succeeded": PollState.SUCCEEDED,
    "failed": PollState.FAILED,
    "canceled": PollState.CANCELED,  # by us, or Cancel-After hit while running
    "aborted": PollState.CANCELED,  # Cancel-After hit before it started (not billed)
}

_MODERATION = re.compile(r"nsfw|safety|sensitive|flagged|moderat", re.IGNORECASE)
_PROGRESS = re.compile(r"(\d{1,3})%\|")
_THROTTLE_HINT = re.compile(r"(\d+(?:\.\d+)?)\s*(?:s\b|sec)", re.IGNORECASE)
_MAX_OUTPUT_DEPTH = 4
_USD = Decimal("0.000001")


class ReplicateProvider:
    """Adapter for Replicate's predictions API."""

    reports_sends = True  # every submit request goes through _http.Edge (providers.sending)

    def __init__(self, settings: ReplicateSettings, client: httpx.AsyncClient) -> None:
        self._settings = settings
        self._edge = _http.Edge(
            PROVIDER, client, settings.secret_values(), settings.max_reply_bytes
        )

    @property
    def name(self) -> str:
        return PROVIDER

    async def submit(self, request: SubmitRequest) -> PollResult:
        """Create one prediction; never retried here (creates are not idempotent)."""
        params = _http.validate_params(ReplicateParams, request.params, PROVIDER)
        path, body = params.route()
        reply = await self._edge.request(
            "POST", path, json=body, headers=self._submit_headers(request)
        )
        if not reply.is_success:
            raise self._error(reply)
        return self._interpret(reply, deployment=params.deployment)

    async def poll(self, handle: JobHandle) -> PollResult:
        reply = await self._edge.request("GET", _prediction_path(handle.provider_job_id))
        if reply.status == 404:
            return self._not_found(handle)
        if not reply.is_success:
            raise self._error(reply)
        deployment = handle.params.get("deployment")
        return self._interpret(
            reply, deployment=deployment if isinstance(deployment, str) else None
        )

    async def cancel(self, handle: JobHandle) -> None:
        """Best effort; a prediction that already finished or vanished is nothing to cancel."""
        path = _prediction_path(handle.provider_job_id) + "/cancel"
        reply = await self._edge.request("POST", path)
        if reply.is_success or reply.status in (400, 404, 409, 422):
            return
        raise self._error(reply)

    # --- helpers ---------------------------------------------------------------------

    def _submit_headers(self, request: SubmitRequest) -> dict[str, str]:
        if not self._settings.send_cancel_after or not math.isfinite(request.timeout_s):
            return {}
        return {"Cancel-After": f"{max(1, math.ceil(request.timeout_s))}s"}

    def _error(self, reply: _http.Reply) -> ProviderError:
        hint = _http.retry_after_of(reply.headers)
        if hint is None and reply.status == 429:
            hint = _throttle_hint(reply.content)
        return self._edge.status_error(reply, retry_after_s=hint)

    def _not_found(self, handle: JobHandle) -> PollResult:
        if _http.early_not_found(handle.since_submit_s):
            raise _http.not_found_yet(PROVIDER, handle.since_submit_s or 0.0)
        failure = ProviderFailure(code="not_found", message="prediction not found at Replicate")
        return PollResult(
            state=PollState.FAILED, provider_job_id=handle.provider_job_id, failure=failure
        )

    def _interpret(self, reply: _http.Reply, *, deployment: str | None) -> PollResult:
        """Map one prediction object; ``deployment`` is the route the job was submitted on.

        The route counts even when the reply leaves ``deployment`` out: a deployment's
        prediction must never be priced as ``predict_time`` of its model (see `_cost`).
        """
        pred = self._edge.model(_Prediction, self._edge.json(reply), reply)
        if deployment and not pred.deployment:
            pred = pred.model_copy(update={"deployment": deployment})
        state = STATUS_MAP.get(pred.status, PollState.UNKNOWN)
        if state is PollState.SUCCEEDED:
            return self._succeeded(pred, reply)
        terminal = state in (PollState.FAILED, PollState.CANCELED)
        return PollResult(
            state=state,
            provider_job_id=pred.id,
            raw_status=pred.status,
            failure=self._failure(pred) if terminal else None,
            progress=_progress(pred.logs) if state is PollState.RUNNING else None,
            cost_usd=self._cost(pred, outputs=0) if terminal else None,
        )

    def _succeeded(self, pred: _Prediction, reply: _http.Reply) -> PollResult:
        outputs = () if pred.data_removed else self._outputs(pred.output, reply)
        if not outputs:
            failure = _no_output_failure(pred)
            cost = self._cost(pred, outputs=None)
            return PollResult(
                state=PollState.FAILED,
                provider_job_id=pred.id,
                raw_status=pred.status,
                failure=failure,
                cost_usd=cost,
            )
        return PollResult(
            state=PollState.SUCCEEDED,
            provider_job_id=pred.id,
            raw_status=pred.status,
            outputs=outputs,
            cost_usd=self._cost(pred, outputs=len(outputs)),
            progress=1.0,
        )

    def _outputs(self, value: Any, reply: _http.Reply) -> tuple[Output, ...]:
        return tuple(self._output(url, key, reply) for url, key in _file_urls(value))

    def _output(self, url: str, key: str | None, reply: _http.Reply) -> Output:
        metadata = {"key": key} if key else {}
        if _http.is_data_url(url):
            try:
                data, media_type = _http.decode_data_url(url)
            except ValueError as exc:
                raise self._edge.protocol_error(str(exc), url[:80]) from None
            return InlineOutput(data=data, media_type=media_type, metadata=metadata)
        headers = _http.headers_for(url, self._settings.base_url, self._settings.auth_headers())
        return RemoteOutput(
            url=url,
            media_type=_http.guess_media_type(url),
            filename=_http.filename_of(url),
            headers=headers,
            metadata=metadata,
        )

    def _failure(self, pred: _Prediction) -> ProviderFailure:
        if pred.status == "aborted":
            return ProviderFailure(
                code="aborted", message="deadline passed before the prediction started"
            )
        if pred.status == "canceled":
            return ProviderFailure(code="canceled", message="prediction canceled at Replicate")
        text = _error_text(pred.error, self._edge.secrets)
        if _MODERATION.search(text):
            return ProviderFailure(
                code="moderation", message=f"moderation: {text}", moderation=True
            )
        return ProviderFailure(code="provider_error", message=text)

    def _cost(self, pred: _Prediction, *, outputs: int | None) -> Decimal | None:
        """Official models: price per output; others: predict_time * $/s; None = unknown.

        ``aborted`` never ran: $0 (§1.8). A deployment runs on its own instances, billed like a
        private model for all their online time, setup and idle included (§1.8 "don't use
        predict_time there"; Replicate's billing page). No prediction carries that share, so
        its cost is unknown (NULL), never a ``predict_time`` guess.
        """
        if pred.status == "aborted":
            return Decimal(0)
        if pred.deployment:
            return None
        per_output = self._settings.model_prices.get(pred.model or "")
        if per_output is not None:
            return None if outputs is None else (per_output * outputs).quantize(_USD)
        return self._time_cost(pred)

    def _time_cost(self, pred: _Prediction) -> Decimal | None:
        s = self._settings
        sku = s.model_hardware.get(pred.model or "", s.default_hardware)
        price = s.hardware_prices.get(sku) if sku else None
        seconds = pred.metrics.predict_time if pred.metrics else None
        if price is None or seconds is None or not math.isfinite(seconds) or seconds < 0:
            return None
        try:
            return (Decimal(repr(seconds)) * price).quantize(_USD)
        except InvalidOperation:  # an absurd predict_time (1e300 s): unknown, not a crash
            return None


def _prediction_path(prediction_id: str) -> str:
    return f"/v1/predictions/{quote(prediction_id, safe='')}"


def _file_urls(
    value: Any, key: str | None = None, depth: int = 0
) -> Iterator[tuple[str, str | None]]:
    """Flatten ``output`` (string | list | object, nested a little) into its file URLs."""
    if depth > _MAX_OUTPUT_DEPTH:
        return
    if isinstance(value, str):
        if value.startswith(("https://", "http://")) or _http.is_data_url(value):
            yield value, key
    elif isinstance(value, list):
        for item in value:
            yield from _file_urls(item, key, depth + 1)
    elif isinstance(value, dict):
        for name, item in value.items():
            yield from _file_urls(item, key or str(name), depth + 1)


def _no_output_failure(pred: _Prediction) -> ProviderFailure:
    if pred.data_removed or pred.output is None:
        return ProviderFailure(
            code="output_expired",
            message="output expired (Replicate deletes API outputs after 1 h)",
        )
    return ProviderFailure(code="no_output", message="prediction succeeded without a file output")


def _error_text(error: Any, secrets: tuple[str, ...]) -> str:
    text = error if isinstance(error, str) else "" if error is None else json.dumps(error)
    text = _http.redact(text.strip(), secrets)[:1000]
    return text or "prediction failed without an error message"


def _progress(logs: str | None) -> float | None:
    """The last tqdm percentage in the logs (what replicate-python shows as progress)."""
    found = _PROGRESS.findall(logs or "")
    return min(int(found[-1]), 100) / 100.0 if found else None


def _throttle_hint(content: bytes) -> float | None:
    """Seconds from a 429 ``detail`` ("Expected available in 1 second", "resets in ~30s")."""
    match = _THROTTLE_HINT.search(content[:500].decode("utf-8", "replace"))
    return float(match.group(1)) if match else None


def build(settings: ProviderSettings, client: httpx.AsyncClient) -> Provider:
    """Registry factory: the adapter over a ready client."""
    return ReplicateProvider(expect_settings(settings, ReplicateSettings), client)
