"""A provider that costs nothing, so the claim benchmark measures the claim loop alone.

Each job is pre-inserted with a ``provider_job_id`` and its single poll returns a terminal
failure: the job ends through the batched, fenced write-back (`Finish`). So one job is
exactly one share of a claim statement, one (free) poll and one share of a write-back,
the same unit of work as a pgqueuer job (dequeue share, no-op handler, completion share).
A success would go through the artifact transaction instead, which is storage's cost, not
the queue's.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic_settings import SettingsConfigDict

from providers.settings import ProviderSettings
from providers.types import JobHandle, PollResult, PollState, ProviderFailure, SubmitRequest

NAME = "noop"

_DONE = PollResult(
    state=PollState.FAILED,
    failure=ProviderFailure(code="noop", message="no-op benchmark job"),
    raw_status="noop",
)


class NoopSettings(ProviderSettings):
    """Budgets wide open: the benchmark is about the database, not a vendor's limits."""

    model_config = SettingsConfigDict(env_prefix="NOOP_")
    provider_name: ClassVar[str] = NAME


def noop_settings() -> NoopSettings:
    return NoopSettings.from_env(
        {},
        base_url="https://noop.invalid",
        api_key="noop",
        rate_per_s=1_000_000,
        burst=1_000_000,
        max_in_flight=10_000,
    )


class NoopProvider:
    """Implements `providers.base.Provider` without any I/O."""

    @property
    def name(self) -> str:
        return NAME

    async def submit(self, request: SubmitRequest) -> PollResult:
        return PollResult(state=PollState.PENDING, provider_job_id=f"noop-{request.job_id}")

    async def poll(self, handle: JobHandle) -> PollResult:
        return _DONE

    async def cancel(self, handle: JobHandle) -> None:
        return None
