"""The one interface every provider adapter implements."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from providers.types import JobHandle, PollResult, SubmitRequest


@runtime_checkable
class Provider(Protocol):
    """A vendor adapter: three calls, each one (ideally) one HTTP request.

    Adapters receive a ready ``httpx.AsyncClient`` (base URL, auth, timeouts) and never create
    or close clients themselves. They must not retry *submits*: create calls are not idempotent.
    """

    @property
    def name(self) -> str:
        """Stable identifier stored in ``generation_jobs.provider_id``; never rename it."""
        ...

    async def submit(self, request: SubmitRequest) -> PollResult:
        """Start one generation; the result carries ``provider_job_id``."""
        ...

    async def poll(self, handle: JobHandle) -> PollResult:
        """One status check of a submitted job."""
        ...

    async def cancel(self, handle: JobHandle) -> None:
        """Best-effort cancel; a no-op for vendors without a cancel endpoint."""
        ...
