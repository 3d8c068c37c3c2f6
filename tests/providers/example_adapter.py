"""A worked example adapter for a fictional vendor, "Acme Media" (docs/adding-a-provider.md).

Acme's API, as far as this adapter cares:

* ``POST /v1/jobs`` with ``{"prompt": …, "kind": "image"}`` → ``202 {"job": {"id", "state"}}``
* ``GET /v1/jobs/{id}`` → ``{"job": {"id", "state", "files": [{"url", "mime"}], "error"}}``,
  ``state`` one of ``queued`` / ``working`` / ``done`` / ``error``
* ``DELETE /v1/jobs/{id}`` cancels; authentication is an ``X-Api-Key`` header.

It is deliberately small: a settings class, wire models, a status map, an adapter whose
methods are one request each, and a `ProviderSpec` that a plugin package would expose
through the ``media_poller.providers`` entry point.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import SettingsConfigDict

from providers import _http
from providers.base import Provider
from providers.registry import ProviderSpec
from providers.settings import ProviderSettings, expect_settings
from providers.types import (
    JobHandle,
    PollResult,
    PollState,
    ProviderFailure,
    RemoteOutput,
    SubmitRequest,
)

PROVIDER = "acme"


class AcmeSettings(ProviderSettings):
    """``ACME_*``: only what differs from the shared defaults."""

    model_config = SettingsConfigDict(env_prefix="ACME_")

    base_url: str = "https://api.acme.example"
    rate_per_s: float = Field(4.0, gt=0, description="80 % of Acme's 5 requests/s")
    burst: int = Field(5, ge=1)


class AcmeParams(BaseModel):
    """The job's ``input_params``, validated before any request is sent."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str = Field(min_length=1, max_length=2000)
    kind: Literal["image", "video", "audio"] = "image"


class _File(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    url: str
    mime: str | None = None


class _Job(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str = Field(min_length=1, max_length=255)
    state: str = Field(max_length=100)
    files: list[_File] = Field(default_factory=list)
    error: str | None = None


class _Envelope(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    job: _Job


STATUS_MAP: dict[str, PollState] = {
    "queued": PollState.PENDING,
    "working": PollState.RUNNING,
    "done": PollState.SUCCEEDED,
    "error": PollState.FAILED,
}


def api_key_header(settings: ProviderSettings) -> dict[str, str]:
    """Acme wants ``X-Api-Key`` rather than a Bearer token."""
    key = settings.api_key_value()
    return {"X-Api-Key": key} if key else {}


class AcmeProvider:
    """Adapter for Acme Media."""

    def __init__(self, settings: AcmeSettings, client: httpx.AsyncClient) -> None:
        self._settings = settings
        self._edge = _http.Edge(PROVIDER, client, settings.secret_values())

    @property
    def name(self) -> str:
        return PROVIDER

    async def submit(self, request: SubmitRequest) -> PollResult:
        params = _http.validate_params(AcmeParams, request.params, PROVIDER)
        reply = await self._edge.request("POST", "/v1/jobs", json=params.model_dump())
        return self._result(reply)

    async def poll(self, handle: JobHandle) -> PollResult:
        reply = await self._edge.request(
            "GET", f"/v1/jobs/{quote(handle.provider_job_id, safe='')}"
        )
        return self._result(reply)

    async def cancel(self, handle: JobHandle) -> None:
        reply = await self._edge.request(
            "DELETE", f"/v1/jobs/{quote(handle.provider_job_id, safe='')}"
        )
        if not reply.is_success and reply.status != 404:
            raise self._edge.status_error(reply)

    def _result(self, reply: _http.Reply) -> PollResult:
        if not reply.is_success:
            raise self._edge.status_error(reply)
        job = self._edge.model(_Envelope, self._edge.json(reply), reply).job
        state = STATUS_MAP.get(job.state, PollState.UNKNOWN)
        if state is PollState.SUCCEEDED:
            if not job.files:
                raise self._edge.protocol_error("done without files", reply.content)
            outputs = tuple(self._output(f) for f in job.files)
            return PollResult(
                state=state, provider_job_id=job.id, outputs=outputs, raw_status=job.state
            )
        if state is PollState.FAILED:
            failure = ProviderFailure(code="provider_error", message=job.error or "Acme job failed")
            return PollResult(
                state=state, provider_job_id=job.id, failure=failure, raw_status=job.state
            )
        return PollResult(state=state, provider_job_id=job.id, raw_status=job.state)

    def _output(self, file: _File) -> RemoteOutput:
        headers = _http.headers_for(
            file.url, self._settings.base_url, api_key_header(self._settings)
        )
        return RemoteOutput(url=file.url, media_type=file.mime, headers=headers)


def build(settings: ProviderSettings, client: httpx.AsyncClient) -> Provider:
    return AcmeProvider(expect_settings(settings, AcmeSettings), client)


# What a plugin package exposes: `acme = "acme_media.provider:SPEC"` in its entry points.
SPEC = ProviderSpec(
    name=PROVIDER, settings_cls=AcmeSettings, build=build, client_headers=api_key_header
)
