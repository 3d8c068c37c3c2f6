"""A scripted in-memory provider: fakes, not mocks, for stepping real jobs."""

from __future__ import annotations

import hashlib
import io
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

import anyio
from PIL import Image

from poller.model import ClaimedJob
from poller.repository import Grant
from providers.types import (
    InlineOutput,
    JobHandle,
    PollResult,
    PollState,
    ProviderFailure,
    SubmitRequest,
)
from storage import StoredBlob

Step = PollResult | Exception | Callable[[], PollResult]


def png_bytes(
    width: int = 8, height: int = 6, color: tuple[int, int, int] = (200, 30, 30)
) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, "PNG")
    return buf.getvalue()


def running() -> PollResult:
    return PollResult(state=PollState.RUNNING, raw_status="processing")


def pending() -> PollResult:
    return PollResult(state=PollState.PENDING, raw_status="starting")


def succeeded(*payloads: bytes) -> PollResult:
    outputs = tuple(
        InlineOutput(data=p, media_type="image/png") for p in payloads or (png_bytes(),)
    )
    return PollResult(state=PollState.SUCCEEDED, outputs=outputs, raw_status="succeeded")


def failed(message: str = "boom", *, moderation: bool = False) -> PollResult:
    return PollResult(
        state=PollState.FAILED,
        failure=ProviderFailure(code="error", message=message, moderation=moderation),
        raw_status="failed",
    )


@dataclass
class ScriptedProvider:
    """Submits return ``sub-<n>`` ids; each poll pops the next scripted step for that job.

    When a job's script runs out, the ``default`` step repeats.
    """

    name: str = "scripted"
    default: Step = field(default_factory=lambda: succeeded)
    submit_step: Step | None = None
    submit_delay_s: float = 0.0  # a slow create call (or input download before it)
    scripts: dict[str, deque[Step]] = field(default_factory=lambda: defaultdict(deque))
    submitted: list[SubmitRequest] = field(default_factory=list)
    polled: list[JobHandle] = field(default_factory=list)
    canceled: list[JobHandle] = field(default_factory=list)

    def script(self, provider_job_id: str, steps: Iterable[Step]) -> None:
        self.scripts[provider_job_id].extend(steps)

    async def submit(self, request: SubmitRequest) -> PollResult:
        self.submitted.append(request)
        if self.submit_delay_s:
            await anyio.sleep(self.submit_delay_s)
        if self.submit_step is not None:
            result = _resolve(self.submit_step)
        else:
            result = PollResult(state=PollState.PENDING, raw_status="starting")
        pid = f"sub-{request.job_id}"
        return replace(result, provider_job_id=result.provider_job_id or pid)

    async def poll(self, handle: JobHandle) -> PollResult:
        self.polled.append(handle)
        queue = self.scripts.get(handle.provider_job_id)
        step = queue.popleft() if queue else self.default
        return _resolve(step)

    async def cancel(self, handle: JobHandle) -> None:
        self.canceled.append(handle)


def _resolve(step: Step) -> PollResult:
    if isinstance(step, Exception):
        raise step
    if isinstance(step, PollResult):
        return step
    return step()


@dataclass
class SubmissionRecorder:
    """The step's database port (`poller.steps.SubmissionLog`) in memory: records each write;
    ``record_error`` makes recording the provider's id fail as the database would."""

    marked: list[ClaimedJob] = field(default_factory=list)
    recorded: list[str] = field(default_factory=list)
    cleared: list[ClaimedJob] = field(default_factory=list)
    pauses: list[tuple[str, float, str]] = field(default_factory=list)
    record_error: Exception | None = None
    record_delay_s: float = 0.0

    async def mark_submit_started(self, job: ClaimedJob, deadline: datetime) -> None:
        self.marked.append(job)

    async def record_submission(self, job: ClaimedJob, provider_job_id: str) -> None:
        if self.record_delay_s:
            await anyio.sleep(self.record_delay_s)
        if self.record_error is not None:
            raise self.record_error
        self.recorded.append(provider_job_id)

    async def clear_submit_mark(self, job: ClaimedJob) -> None:
        await anyio.lowlevel.checkpoint()  # a real write waits: a cancel could land here
        self.cleared.append(job)

    async def pause_provider(self, provider: str, seconds: float, reason: str) -> None:
        self.pauses.append((provider, seconds, reason))


@dataclass
class MemoryStore:
    """An output store (`poller.outputs.OutputStore`) that keeps blobs in a dict; each entry of
    ``failures`` is raised by one store call, in order, before any call succeeds."""

    failures: list[Exception] = field(default_factory=list)
    blobs: dict[str, bytes] = field(default_factory=dict)
    calls: int = 0
    delay_s: float = 0.0  # a slow store (a big upload)

    async def ingest_url(
        self, url: str, *, expected_kind: str | None, headers: Mapping[str, str] | None = None
    ) -> StoredBlob:
        return await self._put(url.encode(), None)

    async def ingest_bytes(
        self, data: bytes, *, expected_kind: str | None, filename: str | None = None
    ) -> StoredBlob:
        return await self._put(data, filename)

    async def _put(self, data: bytes, filename: str | None) -> StoredBlob:
        self.calls += 1
        await anyio.sleep(self.delay_s)
        if self.failures:
            raise self.failures.pop(0)
        digest = hashlib.sha256(data).hexdigest()
        created = digest not in self.blobs
        self.blobs[digest] = data
        return StoredBlob(
            content_hash=digest,
            size_bytes=len(data),
            media_type="image/png",
            uri=f"/blobs/{digest}",
            key=digest,
            metadata={},
            created=created,
            filename=filename,
        )


@dataclass
class FixedBucket:
    """A shared token bucket (`poller.budgets.SharedBucket`) that always gives one answer."""

    granted: int = 1_000
    wait_s: float = 0.0

    async def take_tokens(self, provider: str, want: int) -> Grant:
        return Grant(granted=min(want, self.granted), wait_s=self.wait_s)
