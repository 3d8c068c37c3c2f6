"""The per-job state machine: one claimed poll in, exactly one `Outcome` out.

``pending`` without a ``provider_job_id`` → submit (the id is persisted with a fenced write
before anything else); otherwise → poll. A normalised `PollResult` maps to reschedule,
complete (after every output is stored, by `poller.outputs`) or finish. Provider exceptions
mean "state unknown": transient ones back off inside the job's error budget, permanent ones
fail the job with a message a human understands. The only SQL here goes through the
`Repository` callbacks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from time import perf_counter
from typing import Protocol, TypeVar

import anyio
import psycopg
import structlog
from structlog.typing import FilteringBoundLogger

from poller import metrics, outputs, scheduling
from poller.budgets import CreateQueue, ProviderBudget
from poller.model import ClaimedJob, Finish, Outcome, Reschedule
from poller.repository import DuplicateProviderJob, LeaseLost, RecordedThenLost
from providers.base import Provider
from providers.errors import (
    ProviderAuthError,
    ProviderBusy,
    ProviderConnectError,
    ProviderError,
    ProviderModerated,
    ProviderNotVisibleYet,
    ProviderRateLimited,
    ProviderRejected,
    ProviderUnavailable,
)
from providers.sending import reports_sends, watch_sends
from providers.settings import ProviderSettings
from providers.types import JobHandle, PollResult, PollState, SubmitRequest

log = structlog.get_logger("poller")
T = TypeVar("T")

CANCEL_TIMEOUT_S = 10.0  # a best-effort provider cancel of an orphaned job waits this long
# Submit errors that mean nothing was created: the mark is cleared and the submit tried again.
_SAFE_TO_RESUBMIT = (ProviderConnectError, ProviderBusy, ProviderRateLimited, ProviderAuthError)


# Set once the step's status poll has been answered (or failed): a step cancelled after it
# (a shutdown during the downloads) is released with the poll counted in ``attempts``. The
# daemon resets it before each step; the step runs in the daemon's task, so it sees the value.
POLL_MADE: ContextVar[bool] = ContextVar("poll_made", default=False)


class CrashedAfterPoll(Exception):
    """A step crashed (a bug, not a provider error) after its status poll was made.

    The daemon turns any crash into a spent unit of the error budget; this one also carries
    the fact that the provider was polled, so ``attempts`` (polls made) stays exact.
    """


class DatabaseErrorAfterPoll(Exception):
    """A database error (pausing the provider, a dedup lock) after the status poll was made.

    The daemon reschedules it soon without spending the error budget, like any database
    error inside a step, but counts the poll in ``attempts``; its ``__cause__`` is the
    psycopg error."""


class SubmissionLog(Protocol):
    """The fenced writes a submit needs (implemented by `Repository`)."""

    async def mark_submit_started(self, job: ClaimedJob, deadline: datetime) -> None: ...
    async def record_submission(self, job: ClaimedJob, provider_job_id: str) -> None: ...
    async def clear_submit_mark(self, job: ClaimedJob) -> None: ...
    async def pause_provider(self, provider: str, seconds: float, reason: str) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """The knobs of the state machine (from `PollerSettings`)."""

    max_claims: int
    error_budget: int
    error_backoff_max_s: float
    auth_pause_s: float
    # How long a create call already under way may still finish once its step is cancelled
    # (shutdown, lost lease), so that its answer is recorded rather than left ambiguous.
    submit_cancel_grace_s: float = 5.0


@dataclass(frozen=True, slots=True, kw_only=True)
class StepContext:
    """Everything one step may touch: the adapter, its settings, storage and the DB port."""

    provider: Provider | None
    settings: ProviderSettings | None
    budget: ProviderBudget | None
    ingestor: outputs.OutputStore
    db: SubmissionLog
    limits: Limits
    log: FilteringBoundLogger  # bound once, for the per-poll line (see Daemon._job_log)
    submit_budget: CreateQueue | None = None  # create calls only (settings.submit_rate_per_s)


def deadline_for(job: ClaimedJob, ctx: StepContext) -> datetime:
    default = ctx.settings.timeout_ms(job.media_type) if ctx.settings else 600_000
    return scheduling.deadline_of(job, default)


async def advance(job: ClaimedJob, ctx: StepContext) -> Outcome:
    """Step one claimed job: guard rails first, then submit or poll."""
    if ctx.provider is None or ctx.settings is None:
        return Finish(
            status="failed",
            error_message=f"unknown provider {job.provider_id!r}: no adapter is registered "
            "under that name (check provider_id or install the provider's plugin)",
        )
    if job.claim_count > ctx.limits.max_claims:
        return Finish(
            status="failed",
            error_message=f"worker crashed repeatedly: claimed {job.claim_count - 1} times "
            "without a write-back",
        )
    deadline = deadline_for(job, ctx)
    remaining = scheduling.remaining_s(job, deadline)
    if remaining <= 0:
        return await _time_out(job, ctx, deadline)
    wait = await ctx.budget.acquire() if ctx.budget else 0.0
    if wait > 0:  # the budget's wait (a pause may last a day) must not outlast the deadline
        delay = scheduling.capped(wait, remaining)
        return Reschedule(status=job.status, delay_s=delay, error_count=job.error_count)
    if job.provider_job_id is None:
        return await _submit(job, ctx, deadline)
    return await _poll(job, ctx, deadline)


async def _time_out(job: ClaimedJob, ctx: StepContext, deadline: datetime) -> Finish:
    assert ctx.provider is not None and ctx.settings is not None
    if job.provider_job_id is not None:
        try:
            await ctx.provider.cancel(_handle(job))
        except ProviderError as exc:  # best effort: the deadline stands either way
            log.warning("provider.cancel_failed", error=str(exc))
    # Named by the deadline itself: `jobs retry` moves it, so "N s after creation" was wrong.
    timeout_ms = job.timeout_ms
    if timeout_ms is None:
        timeout_ms = ctx.settings.timeout_ms(job.media_type)
    return Finish(
        status="timed_out",
        error_message=f"timed out: no result by the deadline {deadline.isoformat()} "
        f"(timeout {timeout_ms / 1000:g} s)",
    )


async def _submit(job: ClaimedJob, ctx: StepContext, deadline: datetime) -> Outcome:
    assert ctx.provider is not None
    if job.submit_started_at is not None:
        return Finish(
            status="failed",
            error_message="submit outcome unknown: an earlier submit started but its job id "
            "was never recorded; the provider may have created a job. Resubmit deliberately "
            "with `main.py jobs retry --resubmit`",
        )
    if not isinstance(job.input_params, Mapping):
        kind = type(job.input_params).__name__
        return Finish(
            status="failed",
            error_message=f"invalid input_params: expected a JSON object, got {kind}",
        )
    wait = await ctx.submit_budget.acquire() if ctx.submit_budget else 0.0
    if wait > 0:  # nothing was sent: the job waits for the create budget, like any budget
        delay = scheduling.capped(wait, scheduling.remaining_s(job, deadline))
        return Reschedule(status=job.status, delay_s=delay, error_count=job.error_count)
    await _mark_submit_started(job, ctx, deadline)
    request = SubmitRequest(
        job_id=job.id,
        media_type=job.media_type,
        params=job.input_params,
        timeout_s=max(1.0, scheduling.remaining_s(job, deadline)),
    )
    try:
        result = await _create(job, ctx, request)
    except ProviderError as exc:
        return await _submit_failed(job, ctx, deadline, exc)
    if not result.provider_job_id:
        return Finish(
            status="failed",
            error_message="submit outcome unknown: the provider accepted the request but "
            "returned no job id",
        )
    try:
        await _record_submission(job, ctx, result.provider_job_id)
    except DuplicateProviderJob:
        return Finish(
            status="failed",
            error_message=f"submit outcome unknown: the provider returned job id "
            f"{result.provider_job_id!r}, which another job already has",
        )
    log.info("provider.submitted", provider_job_id=result.provider_job_id)
    return await _apply(job, ctx, deadline, result, polled=False)


async def _mark_submit_started(job: ClaimedJob, ctx: StepContext, deadline: datetime) -> None:
    """The fenced mark, shielded: a cancel (shutdown after its grace) that cut its round trip
    could leave it committed unseen, and the released job then failed as "submit outcome
    unknown" without any create call. A cancel that arrives meanwhile clears it again and
    takes effect before the call is made."""
    with anyio.CancelScope(shield=True):
        await ctx.db.mark_submit_started(job, deadline)
    try:
        await anyio.lowlevel.checkpoint()
    except anyio.get_cancelled_exc_class():
        with anyio.CancelScope(shield=True):  # nothing was sent: the next claim submits
            await ctx.db.clear_submit_mark(job)
        raise


async def _create(job: ClaimedJob, ctx: StepContext, request: SubmitRequest) -> PollResult:
    """The create call, allowed to finish within a grace when its step is cancelled.

    A cancel (shutdown after its grace, a lost lease) that cut the call would leave the submit
    mark without an id, and the job would end as "submit outcome unknown" although the call
    may not even have been sent yet (Stability first downloads the input files). Given a few
    seconds more, the call usually answers: its id is recorded, or its refusal clears the mark.
    A call still running after the grace is cut. It stays ambiguous unless the adapter
    reports its sends (`providers.sending`) and its create request had not left yet: then
    the mark is cleared and the next claim submits again. The cancel then takes effect at
    the step's next unshielded wait. The watcher task costs about 60 µs per submit, next
    to two database writes and the create call itself; polls do not pay it.
    """
    assert ctx.provider is not None
    call = anyio.CancelScope(shield=True)
    answer: PollResult | Exception | None = None

    async def cut_after_grace() -> None:
        try:
            await anyio.sleep_forever()
        finally:  # the step is cancelled, or the call is over and this watcher is not needed
            call.deadline = anyio.current_time() + ctx.limits.submit_cancel_grace_s

    async with anyio.create_task_group() as watch:
        watch.start_soon(cut_after_grace)
        with call, watch_sends() as sends:
            try:
                answer = await _timed(ctx, "submit", ctx.provider.submit(request))
            except Exception as exc:  # re-raised below, not as an exception group
                answer = exc
        watch.cancel_scope.cancel()
    if isinstance(answer, Exception):
        raise answer
    if answer is None:  # cut after the grace: the step's cancellation is pending
        if reports_sends(ctx.provider) and not sends.sent:
            log.info("provider.submit_cut_before_sending")
            with anyio.CancelScope(shield=True):  # nothing reached the provider
                await ctx.db.clear_submit_mark(job)
        await anyio.lowlevel.checkpoint()
        raise ProviderUnavailable(f"{ctx.provider.name}: the create call was cut off")
    return answer


async def _record_submission(job: ClaimedJob, ctx: StepContext, provider_job_id: str) -> None:
    """Persist the provider's id: shielded, as it is short and fenced and a cancel here would
    lose an id already in hand. If it cannot be recorded (the lease went to an operator's
    cancel or another replica, the database stayed down), the provider job is orphaned: it
    runs and bills with nothing pointing at it. Say so loudly and try to cancel it."""
    assert ctx.provider is not None
    try:
        with anyio.CancelScope(shield=True):
            await ctx.db.record_submission(job, provider_job_id)
    except (DuplicateProviderJob, RecordedThenLost):  # the latter: the new owner polls it
        raise
    except Exception as exc:
        log.error("provider.orphaned", provider_job_id=provider_job_id, error=repr(exc))
        with anyio.move_on_after(CANCEL_TIMEOUT_S, shield=True):
            try:
                await ctx.provider.cancel(_handle(job, provider_job_id))
            except ProviderError as cancel_exc:
                log.warning("provider.cancel_failed", error=str(cancel_exc))
        raise


async def _submit_failed(
    job: ClaimedJob, ctx: StepContext, deadline: datetime, exc: ProviderError
) -> Outcome:
    """A refused submit created nothing and may be retried; an ambiguous one must not be."""
    if isinstance(exc, ProviderModerated):  # DESIGN §10 "moderation: …"; refusals cost nothing
        return Finish(status="failed", error_message=str(exc), cost_usd=Decimal(0))
    if isinstance(exc, ProviderRejected):
        message = f"{job.provider_id} rejected the job: {_reason(job, exc)}"
        return Finish(status="failed", error_message=message)
    if isinstance(exc, _SAFE_TO_RESUBMIT):
        with anyio.CancelScope(shield=True):  # the answer is in: record it even when cancelled
            await ctx.db.clear_submit_mark(job)
        return await _transient(job, ctx, deadline, exc, polled=False)
    return Finish(
        status="failed",
        error_message=f"submit outcome unknown: {exc}. The provider may have created a job; "
        "resubmit deliberately with `main.py jobs retry --resubmit`",
    )


def _reason(job: ClaimedJob, exc: ProviderError) -> str:
    """The error's text without the provider's name, with which adapters begin it: the job's
    message names the provider once ("replicate: replicate: HTTP 402" read like a bug)."""
    text = str(exc)
    prefix = f"{job.provider_id}: "
    return text.removeprefix(prefix)


def _handle(job: ClaimedJob, provider_job_id: str | None = None) -> JobHandle:
    """The job as the adapter knows it (``provider_job_id``: one not recorded on the row)."""
    pid = provider_job_id or job.provider_job_id
    assert pid is not None
    # Only a submit checks that input_params is an object; a row inserted with its provider
    # job id skips that, and adapters read params as a mapping (a poll only refines routing
    # and cost with them): anything else would crash every poll of a job the vendor has.
    params = job.input_params if isinstance(job.input_params, Mapping) else {}
    return JobHandle(
        job_id=job.id,
        provider_job_id=pid,
        media_type=job.media_type,
        params=params,
        since_submit_s=_since_id_recorded_s(job),
    )


def _since_id_recorded_s(job: ClaimedJob) -> float | None:
    """Seconds from recording the provider's job id to this claim, by the database clock: how
    long the vendor has had to show the job (the early-404 window starts there, not at the
    start of a create call that may have taken minutes). A row whose id was recorded before
    revision poller_0006 has no recording time; the submit's start stands in for it, which
    only makes its window end sooner. None when neither is known."""
    since = job.provider_job_id_recorded_at
    if since is None and job.provider_job_id is not None:
        since = job.submit_started_at
    if since is None:
        return None
    return (job.db_now - since).total_seconds()


async def _poll(job: ClaimedJob, ctx: StepContext, deadline: datetime) -> Outcome:
    assert ctx.provider is not None
    try:
        result = await _timed(ctx, "poll", ctx.provider.poll(_handle(job)))
    except ProviderError as exc:
        POLL_MADE.set(True)
        try:
            return await _transient(job, ctx, deadline, exc, polled=True)
        except psycopg.Error as db_exc:  # pausing the provider failed: the poll still counts
            raise DatabaseErrorAfterPoll(str(db_exc)) from db_exc
    POLL_MADE.set(True)
    ctx.log.debug("provider.polled", state=result.state.value, raw_status=result.raw_status)
    try:
        return await _apply(job, ctx, deadline, result, polled=True)
    except LeaseLost:
        raise
    except psycopg.Error as exc:
        raise DatabaseErrorAfterPoll(str(exc)) from exc
    except Exception as exc:  # a bug after the poll: the daemon still counts the poll
        raise CrashedAfterPoll(f"{type(exc).__name__}: {exc}") from exc


async def _timed(ctx: StepContext, call: str, awaitable: Awaitable[T]) -> T:
    assert ctx.provider is not None
    name = ctx.provider.name
    start = perf_counter()
    outcome = "ok"
    try:
        return await awaitable
    except ProviderError as exc:
        outcome = type(exc).__name__
        metrics.PROVIDER_ERRORS.labels(name, outcome).inc()
        raise
    except anyio.get_cancelled_exc_class():
        outcome = "cancelled"  # shutdown, lost lease, deadline: the call did not finish
        raise
    except Exception as exc:  # an adapter bug: a crashed call is not an "ok" one
        outcome = type(exc).__name__
        raise
    finally:
        elapsed = perf_counter() - start
        metrics.labelled(metrics.POLL_SECONDS, name, call, outcome).observe(elapsed)


async def _apply(
    job: ClaimedJob, ctx: StepContext, deadline: datetime, result: PollResult, *, polled: bool
) -> Outcome:
    state = result.state
    if state is PollState.SUCCEEDED:
        return await outputs.ingest_all(
            job, ctx.ingestor, ctx.limits, deadline, result, polled=polled
        )
    if state in (PollState.FAILED, PollState.CANCELED):
        return _finish_failed(job, deadline, result, polled=polled)
    if state is PollState.UNKNOWN:
        log.warning("provider.unknown_status", raw_status=result.raw_status)
    running = state is PollState.RUNNING or job.status == "processing"
    delay = scheduling.next_poll_delay(
        interval_s=_interval_s(job, ctx),
        retry_after_s=result.retry_after_s,
        remaining=scheduling.remaining_s(job, deadline),
    )
    return Reschedule(
        status="processing" if running else "pending",
        delay_s=delay,
        polled=polled,
        started=running,
    )


def _interval_s(job: ClaimedJob, ctx: StepContext) -> float:
    """The job's poll interval: its own, else the provider's default for its media type."""
    assert ctx.settings is not None
    interval_ms = job.poll_interval_ms or 0
    if interval_ms <= 0:  # NULL means the provider default; zero or negative rows are bogus
        interval_ms = ctx.settings.poll_interval_ms(job.media_type)
    return interval_ms / 1000


def _finish_failed(
    job: ClaimedJob, deadline: datetime, result: PollResult, *, polled: bool
) -> Finish:
    failure = result.failure
    assert failure is not None
    message = failure.message or failure.code
    if failure.moderation and not message.lower().startswith("moderation"):
        message = f"moderation: {message}"
    past_deadline = scheduling.remaining_s(job, deadline) <= 0
    status = "failed"
    if result.state is PollState.CANCELED and (failure.code == "aborted" or past_deadline):
        status = "timed_out"
    return Finish(
        status=status,
        error_message=message,
        polled=polled,
        cost_usd=result.cost_usd,
        started=True,  # first seen finished: DESIGN §10 counts that moment as the start
    )


async def _transient(
    job: ClaimedJob, ctx: StepContext, deadline: datetime, exc: ProviderError, *, polled: bool
) -> Outcome:
    """Back off inside the error budget; fail once it (or a permanent error) says so."""
    remaining = scheduling.remaining_s(job, deadline)
    if isinstance(exc, ProviderAuthError):
        return await _auth_failed(job, ctx, exc, remaining, polled=polled)
    if isinstance(exc, ProviderRateLimited):
        return await _rate_limited(job, ctx, exc, remaining, polled=polled)
    if isinstance(exc, ProviderModerated):
        return Finish(status="failed", error_message=str(exc), polled=polled, cost_usd=Decimal(0))
    if not exc.retryable:
        message = f"{job.provider_id}: {_reason(job, exc)}"
        return Finish(status="failed", error_message=message, polled=polled)
    retry_after = exc.retry_after_s if isinstance(exc, ProviderUnavailable) else None
    if polled and isinstance(exc, ProviderNotVisibleYet):
        return _not_visible_yet(job, ctx, exc, retry_after, remaining)
    count = job.error_count + 1
    if count > ctx.limits.error_budget:
        return Finish(
            status="failed",
            error_message=f"gave up after {count} consecutive errors from {job.provider_id}: "
            f"{_reason(job, exc)}",
            polled=polled,
        )
    delay = scheduling.error_backoff(
        count,
        retry_after_s=retry_after,
        max_s=ctx.limits.error_backoff_max_s,
        remaining=remaining,
    )
    log.info("provider.retry_scheduled", error=str(exc), attempt=count, wait_s=round(delay, 3))
    return Reschedule(
        status=job.status, delay_s=delay, polled=polled, error_count=count, last_error=str(exc)
    )


def _not_visible_yet(
    job: ClaimedJob,
    ctx: StepContext,
    exc: ProviderUnavailable,
    retry_after_s: float | None,
    remaining: float,
) -> Reschedule:
    """The early 404 of a job the vendor does not show yet (DESIGN §10: retried; the adapter
    decides the 30 s window and says so with `ProviderNotVisibleYet`). The window bounds these
    retries, so they do not spend the error budget; a small budget would otherwise fail a
    job the vendor is about to show. They come at the poll interval (at least a second)."""
    delay = scheduling.next_poll_delay(
        interval_s=max(scheduling.MIN_RATE_LIMIT_WAIT_S, _interval_s(job, ctx)),
        retry_after_s=retry_after_s,
        remaining=remaining,
    )
    log.info("provider.retry_scheduled", error=str(exc), attempt=0, wait_s=round(delay, 3))
    return Reschedule(
        status=job.status,
        delay_s=delay,
        polled=True,
        error_count=job.error_count,
        last_error=str(exc),
    )


async def _auth_failed(
    job: ClaimedJob, ctx: StepContext, exc: ProviderAuthError, remaining: float, *, polled: bool
) -> Reschedule:
    """Bad credentials are a configuration problem: pause the provider, keep the job (until
    its deadline: the job looks again by then, whatever the pause)."""
    pause = ctx.limits.auth_pause_s
    log.error("provider.auth_failed", error=str(exc), paused_s=pause)
    metrics.PROVIDER_PAUSES.labels(job.provider_id, "auth").inc()
    await ctx.db.pause_provider(job.provider_id, pause, f"credentials rejected: {exc}")
    if ctx.budget:
        ctx.budget.block_for(pause)
    return Reschedule(
        status=job.status,
        delay_s=scheduling.capped(pause, remaining),
        polled=polled,
        error_count=job.error_count,
        last_error=str(exc),
    )


async def _rate_limited(
    job: ClaimedJob,
    ctx: StepContext,
    exc: ProviderRateLimited,
    remaining: float,
    *,
    polled: bool,
) -> Reschedule:
    """A 429 pauses the provider for every replica for its Retry-After (or lockout), at least
    `scheduling.MIN_RATE_LIMIT_WAIT_S`; the job waits that long and at least its poll interval.

    It does not spend the job's error budget: the provider is alive and said when to return.
    """
    wait = exc.retry_after_s if exc.retry_after_s is not None else scheduling.RETRY_AFTER_DEFAULT_S
    wait = max(wait, scheduling.MIN_RATE_LIMIT_WAIT_S)
    metrics.PROVIDER_PAUSES.labels(job.provider_id, "rate_limit").inc()
    await ctx.db.pause_provider(job.provider_id, wait, f"rate limited: {exc}")
    if ctx.budget:
        ctx.budget.block_for(wait)
    delay = scheduling.next_poll_delay(
        interval_s=max(wait, _interval_s(job, ctx)), retry_after_s=wait, remaining=remaining
    )
    log.info("provider.rate_limited", retry_after_s=wait)
    return Reschedule(
        status=job.status,
        delay_s=delay,
        polled=polled,
        error_count=job.error_count,
        last_error=str(exc),
    )
