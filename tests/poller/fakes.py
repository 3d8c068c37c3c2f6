"""A scripted in-memory provider: fakes, not mocks, for stepping real jobs."""

from __future__ import annotations

import io
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from PIL import Image

from providers.types import (
    InlineOutput,
    JobHandle,
    PollResult,
    PollState,
    ProviderFailure,
    SubmitRequest,
)

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
    scripts: dict[str, deque[Step]] = field(default_factory=lambda: defaultdict(deque))
    submitted: list[SubmitRequest] = field(default_factory=list)
    polled: list[JobHandle] = field(default_factory=list)
    canceled: list[JobHandle] = field(default_factory=list)

    def script(self, provider_job_id: str, steps: Iterable[Step]) -> None:
        self.scripts[provider_job_id].extend(steps)

    async def submit(self, request: SubmitRequest) -> PollResult:
        self.submitted.append(request)
        if self.submit_step is not None:
            result = _resolve(self.submit_step)
        else:
            result = PollResult(state=PollState.PENDING, raw_status="starting")
        pid = f"sub-{request.job_id}"
        return PollResult(
            state=result.state,
            provider_job_id=result.provider_job_id or pid,
            outputs=result.outputs,
            failure=result.failure,
            raw_status=result.raw_status,
        )

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
