"""The step state machine on its own: a claimed job in, one outcome out, with in-memory fakes
for the provider, the database port, the token bucket and the output store."""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar

import anyio
import psycopg
import pytest
import structlog
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from poller import scheduling, steps
from poller.budgets import CreateQueue, ProviderBudget
from poller.model import ClaimedJob, Complete, Finish, Outcome, Reschedule
from poller.repository import LeaseLost
from providers.errors import (
    ProviderAuthError,
    ProviderBusy,
    ProviderModerated,
    ProviderNotVisibleYet,
    ProviderRateLimited,
    ProviderRejected,
    ProviderUnavailable,
)
from providers.sending import note_request
from providers.types import PollResult, PollState, ProviderFailure, SubmitRequest
from storage.errors import DiskFull
from tests.poller.fakes import (
    FixedBucket,
    MemoryStore,
    ScriptedProvider,
    SubmissionRecorder,
    png_bytes,
    running,
    succeeded,
)
from tests.poller.helpers import claimed_job
from tests.poller.test_daemon import scripted_settings

pytestmark = pytest.mark.anyio


def context(
    provider: ScriptedProvider | None = None,
    *,
    db: SubmissionRecorder | None = None,
    store: MemoryStore | None = None,
    budget: ProviderBudget | None = None,
    **limits: Any,
) -> steps.StepContext:
    knobs: dict[str, Any] = {
        "max_claims": 5,
        "error_budget": 8,
        "error_backoff_max_s": 0.05,
        "auth_pause_s": 300.0,
    }
    knobs.update(limits)
    return steps.StepContext(
        provider=provider or ScriptedProvider(),
        settings=scripted_settings(),
        budget=budget,
        ingestor=store or MemoryStore(),
        db=db or SubmissionRecorder(),
        limits=steps.Limits(**knobs),
        log=structlog.get_logger("test").bind(),
    )


def polling(**overrides: Any) -> ClaimedJob:
    """A job its provider already has (the step polls it)."""
    values: dict[str, Any] = {"provider_job_id": "sub-1", "status": "processing"}
    values.update(overrides)
    return claimed_job(**values)


def due_in(job: ClaimedJob, seconds: float) -> datetime:
    return job.db_now + timedelta(seconds=seconds)


def failing_poll(exc: Exception) -> ScriptedProvider:
    return ScriptedProvider(default=lambda: (_ for _ in ()).throw(exc))


def canceled(code: str, cost: Decimal | None = None) -> PollResult:
    failure = ProviderFailure(code=code, message=f"prediction {code} at the provider")
    return PollResult(state=PollState.CANCELED, failure=failure, cost_usd=cost)


def finish(outcome: Outcome) -> Finish:
    assert isinstance(outcome, Finish), outcome
    return outcome


def reschedule(outcome: Outcome) -> Reschedule:
    assert isinstance(outcome, Reschedule), outcome
    return outcome


async def advance_cancelled_after(
    seconds: float, job: ClaimedJob, ctx: steps.StepContext
) -> Outcome | None:
    """Step ``job`` and cancel the step ``seconds`` in (as shutdown or a lost lease would)."""
    outcome: Outcome | None = None
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_cancel_later, scope, seconds)
            outcome = await steps.advance(job, ctx)
            tg.cancel_scope.cancel()
    return outcome


async def _cancel_later(scope: anyio.CancelScope, seconds: float) -> None:
    await anyio.sleep(seconds)
    scope.cancel()


# -- deadlines ----------------------------------------------------------------------------


async def test_a_budget_wait_never_outlasts_the_deadline() -> None:
    """A paused provider's budget answers "wait a day"; the job must look again by its
    deadline so that it times out on time."""
    job = polling()
    job = polling(deadline_at=due_in(job, 2))
    budget = ProviderBudget(FixedBucket(granted=0, wait_s=86_400), "scripted", chunk=1)
    outcome = reschedule(await steps.advance(job, context(budget=budget)))
    assert 0 < outcome.delay_s <= 2.05
    assert not outcome.polled


async def test_an_auth_pause_never_outlasts_the_deadline() -> None:
    job = polling()
    job = polling(deadline_at=due_in(job, 2))
    provider = failing_poll(ProviderAuthError("scripted: HTTP 401: credentials rejected"))
    outcome = reschedule(await steps.advance(job, context(provider, auth_pause_s=300)))
    assert 0 < outcome.delay_s <= 2.05


async def test_the_timeout_message_names_the_deadline_a_retry_moved() -> None:
    """After `jobs retry` the deadline is the retry time plus the timeout, not created_at plus
    it; the message said "no result within 3600 s of creation" for a 60 s timeout."""
    now = claimed_job().db_now
    job = polling(created_at=now - timedelta(hours=1), deadline_at=now - timedelta(seconds=1))
    outcome = finish(await steps.advance(job, context()))
    assert outcome.status == "timed_out"
    assert job.deadline_at is not None
    assert outcome.error_message == (
        f"timed out: no result by the deadline {job.deadline_at.isoformat()} (timeout 60 s)"
    )


# -- provider failures (steps._finish_failed) -----------------------------------------------


async def test_an_aborted_prediction_times_out_with_its_cost() -> None:
    """Replicate aborts a prediction whose Cancel-After passed before it started."""
    provider = ScriptedProvider(default=canceled("aborted", Decimal(0)))
    outcome = finish(await steps.advance(polling(), context(provider)))
    assert (outcome.status, outcome.cost_usd, outcome.polled) == ("timed_out", Decimal(0), True)
    assert outcome.error_message == "prediction aborted at the provider"


async def test_a_cancel_before_the_deadline_fails_the_job_with_its_cost() -> None:
    provider = ScriptedProvider(default=canceled("canceled", Decimal("0.0123")))
    outcome = finish(await steps.advance(polling(), context(provider)))
    assert (outcome.status, outcome.cost_usd) == ("failed", Decimal("0.0123"))
    assert outcome.error_message == "prediction canceled at the provider"


def test_a_cancel_seen_after_the_deadline_is_a_timeout() -> None:
    """The provider's own cancel at the deadline (Replicate's Cancel-After) is a timeout.

    Called directly: `advance` judges the deadline by the claim time and times such a job
    out before polling it, so no poll reaches this branch of `_finish_failed` today."""
    job = polling()
    outcome = steps._finish_failed(
        job, due_in(job, -1), canceled("canceled", Decimal("0.5")), polled=True
    )
    assert (outcome.status, outcome.cost_usd) == ("timed_out", Decimal("0.5"))
    before = steps._finish_failed(job, due_in(job, 1), canceled("canceled"), polled=True)
    assert before.status == "failed"


# -- pauses that spend no error budget ------------------------------------------------------


async def test_rejected_credentials_pause_the_provider_without_spending_the_budget() -> None:
    db = SubmissionRecorder()
    budget = ProviderBudget(FixedBucket(), "scripted", chunk=10)
    provider = failing_poll(ProviderAuthError("scripted: HTTP 401: credentials rejected"))
    job = polling(error_count=3)
    ctx = context(provider, db=db, budget=budget, error_budget=3, auth_pause_s=20)
    outcome = reschedule(await steps.advance(job, ctx))
    assert (outcome.error_count, outcome.status, outcome.polled) == (3, "processing", True)
    assert outcome.delay_s == 20
    assert outcome.last_error == "scripted: HTTP 401: credentials rejected"
    assert [(p, s) for p, s, _ in db.pauses] == [("scripted", 20)]
    assert db.pauses[0][2].startswith("credentials rejected: ")
    assert budget.blocked  # this replica stops claiming the provider at once


async def test_a_429_pauses_the_provider_without_spending_the_budget() -> None:
    db = SubmissionRecorder()
    budget = ProviderBudget(FixedBucket(), "scripted", chunk=10)
    provider = failing_poll(ProviderRateLimited("scripted: HTTP 429", retry_after_s=7))
    job = polling(error_count=2)
    outcome = reschedule(await steps.advance(job, context(provider, db=db, budget=budget)))
    assert (outcome.error_count, outcome.polled) == (2, True)
    assert 7 <= outcome.delay_s <= 7.7
    assert [(p, s) for p, s, _ in db.pauses] == [("scripted", 7)]
    assert budget.blocked


async def test_a_429_with_retry_after_zero_still_waits() -> None:
    """ "Retry-After: 0" paused nothing and rescheduled with no delay: every job went straight
    back to the provider that had just refused it."""
    db = SubmissionRecorder()
    provider = failing_poll(ProviderRateLimited("scripted: HTTP 429", retry_after_s=0.0))
    outcome = reschedule(await steps.advance(polling(), context(provider, db=db)))
    assert [s for _, s, _ in db.pauses] == [scheduling.MIN_RATE_LIMIT_WAIT_S]
    assert outcome.delay_s >= scheduling.MIN_RATE_LIMIT_WAIT_S


async def test_a_429_waits_at_least_the_jobs_poll_interval() -> None:
    provider = failing_poll(ProviderRateLimited("scripted: HTTP 429", retry_after_s=0.0))
    job = polling(poll_interval_ms=5_000)
    outcome = reschedule(await steps.advance(job, context(provider)))
    assert outcome.delay_s >= 4.5  # the interval, jittered


# -- transient errors -----------------------------------------------------------------------


async def test_a_503s_retry_after_is_the_least_backoff() -> None:
    provider = failing_poll(ProviderUnavailable("scripted: HTTP 503", retry_after_s=30))
    outcome = reschedule(await steps.advance(polling(), context(provider)))
    assert outcome.error_count == 1
    assert outcome.delay_s >= 30  # error_backoff_max_s is 0.05 here


async def test_a_404_just_after_the_submit_spends_no_error_budget() -> None:
    """Within 30 s of the submit a 404 is the vendor not showing the job yet (DESIGN §10);
    with a small budget those retries used to fail the job."""
    job = polling()
    job = polling(submit_started_at=job.db_now - timedelta(seconds=5), status="pending")
    error = ProviderNotVisibleYet("scripted: job not found 5 s after submit (will retry)")
    outcome = reschedule(await steps.advance(job, context(failing_poll(error), error_budget=0)))
    assert (outcome.error_count, outcome.polled) == (0, True)
    assert outcome.last_error == str(error)
    assert outcome.delay_s >= 0.9  # at least a second (jittered), not a busy loop


async def test_the_adapter_counts_the_404_window_from_the_recorded_id() -> None:
    """`JobHandle.since_submit_s` runs from when the provider's id was recorded: a create call
    of 90 s must not spend the window. Ids recorded before poller_0006 (no recording time)
    count from the submit's start; a job inserted with its id has neither."""
    now = claimed_job().db_now
    started, recorded = now - timedelta(seconds=90), now - timedelta(seconds=2)
    cases = [
        (polling(submit_started_at=started, provider_job_id_recorded_at=recorded), 2.0),
        (polling(submit_started_at=started), 90.0),
        (polling(), None),
    ]
    for job, since in cases:
        job = replace(job, db_now=now)
        provider = ScriptedProvider(default=running())
        await steps.advance(job, context(provider))
        assert [h.since_submit_s for h in provider.polled] == [since]


async def test_a_5xx_just_after_the_submit_still_spends_the_budget() -> None:
    """Only the early 404 (`ProviderNotVisibleYet`) is exempt: a provider failing with 500s
    from the first poll on must still exhaust the budget (the e2e bad-input suite caught a
    version that exempted every transient error of the first 30 s)."""
    job = polling()
    job = polling(submit_started_at=job.db_now - timedelta(seconds=5))
    error = ProviderUnavailable("scripted: HTTP 503")
    outcome = finish(await steps.advance(job, context(failing_poll(error), error_budget=0)))
    assert outcome.error_message == "gave up after 1 consecutive errors from scripted: HTTP 503"


async def test_a_permanent_poll_error_names_the_provider_once() -> None:
    provider = failing_poll(ProviderRejected("scripted: HTTP 402: payment required"))
    outcome = finish(await steps.advance(polling(), context(provider)))
    assert outcome.error_message == "scripted: HTTP 402: payment required"


# -- submits --------------------------------------------------------------------------------


async def test_a_moderation_refusal_at_submit_is_stored_as_is_and_costs_nothing() -> None:
    provider = ScriptedProvider(submit_step=ProviderModerated("moderation: nsfw prompt"))
    outcome = finish(await steps.advance(claimed_job(), context(provider)))
    assert (outcome.status, outcome.error_message) == ("failed", "moderation: nsfw prompt")
    assert outcome.cost_usd == Decimal(0)


async def test_a_moderation_refusal_at_poll_is_stored_as_is_and_costs_nothing() -> None:
    provider = failing_poll(ProviderModerated("moderation: nsfw output"))
    outcome = finish(await steps.advance(polling(), context(provider)))
    assert (outcome.error_message, outcome.cost_usd) == ("moderation: nsfw output", Decimal(0))


async def test_a_rejected_submit_names_the_provider_once() -> None:
    provider = ScriptedProvider(submit_step=ProviderRejected("scripted: HTTP 400: bad prompt"))
    outcome = finish(await steps.advance(claimed_job(), context(provider)))
    assert outcome.error_message == "scripted rejected the job: HTTP 400: bad prompt"


async def test_a_busy_provider_at_submit_is_retried_like_a_connect_error() -> None:
    """Suno's 455 (maintenance) says nothing was created: the submit may be tried again."""
    db = SubmissionRecorder()
    provider = ScriptedProvider(submit_step=ProviderBusy("scripted: maintenance"))
    job = claimed_job()
    outcome = reschedule(await steps.advance(job, context(provider, db=db)))
    assert (outcome.status, outcome.error_count) == ("pending", 1)
    assert db.cleared == [job]


# -- started_at -----------------------------------------------------------------------------


async def test_only_a_provider_that_ran_the_job_gives_it_a_start() -> None:
    """started_at was set by every Finish: a refused submit or a job timed out while queued
    looked as if the provider had started it."""
    now = claimed_job().db_now
    cases: list[tuple[ClaimedJob, steps.StepContext]] = [
        (claimed_job(provider_id="nobody"), replace(context(), provider=None, settings=None)),
        (claimed_job(claim_count=6), context()),
        (claimed_job(submit_started_at=now), context()),
        (
            claimed_job(),
            context(ScriptedProvider(submit_step=ProviderRejected("scripted: HTTP 400"))),
        ),
        (polling(status="pending", deadline_at=now - timedelta(seconds=1)), context()),
    ]
    for job, ctx in cases:
        outcome = finish(await steps.advance(job, ctx))
        assert not outcome.started, outcome.error_message
    provider = ScriptedProvider(default=canceled("canceled"))
    assert finish(await steps.advance(polling(status="pending"), context(provider))).started


# -- results that exist only once -----------------------------------------------------------


def sync_result(cost: Decimal | None = Decimal("0.08")) -> PollResult:
    """What Stability's synchronous endpoints answer: the file itself, no result URL."""
    done = succeeded(png_bytes())
    return PollResult(
        state=PollState.SUCCEEDED, outputs=done.outputs, cost_usd=cost, raw_status="succeeded"
    )


async def test_a_sync_result_survives_a_storage_blip() -> None:
    """Rescheduling dropped the bytes; the next poll of the sync id could only say the result
    was lost, and the job failed with that instead of the storage error."""
    store = MemoryStore(failures=[DiskFull("no space left on device")])
    provider = ScriptedProvider(submit_step=sync_result())
    outcome = await steps.advance(claimed_job(), context(provider, store=store))
    assert isinstance(outcome, Complete), outcome
    assert store.calls == 2 and len(outcome.artifacts) == 1
    assert outcome.cost_usd == Decimal("0.08")


async def test_a_sync_result_that_cannot_be_stored_fails_with_the_storage_error() -> None:
    store = MemoryStore(failures=[DiskFull("no space left on device")] * 10)
    provider = ScriptedProvider(submit_step=sync_result())
    ctx = context(provider, store=store, error_budget=2)
    outcome = finish(await steps.advance(claimed_job(), ctx))
    assert store.calls == 3  # the first try and two retries: an error budget of 2
    assert outcome.error_message == (
        "output 1 of 1: no space left on device (the provider's only copy: it cannot be "
        "fetched again)"
    )
    assert (outcome.cost_usd, outcome.started) == (Decimal("0.08"), True)


async def test_a_sync_result_survives_a_lost_connection_in_the_dedup_lock() -> None:
    """A dedup hit takes an advisory lock against GC (`poller.blob_locks`): a database blip
    there would reschedule the step and drop bytes that cannot be fetched again."""
    store = MemoryStore(failures=[psycopg.OperationalError("server closed the connection")])
    provider = ScriptedProvider(submit_step=sync_result())
    outcome = await steps.advance(claimed_job(), context(provider, store=store))
    assert isinstance(outcome, Complete), outcome
    assert store.calls == 2 and len(outcome.artifacts) == 1


async def test_a_database_error_in_a_dedup_lock_is_left_to_the_daemon() -> None:
    """For an output that can be fetched again it is a database error inside a step like any
    other: it reaches the daemon, which retries soon without spending the error budget."""
    store = MemoryStore(failures=[psycopg.OperationalError("server closed the connection")])
    result = PollResult(
        state=PollState.SUCCEEDED,
        outputs=succeeded().outputs,
        result_uri="https://scripted.invalid/results/1",
    )
    ctx = context(ScriptedProvider(default=result), store=store)
    with pytest.raises(steps.DatabaseErrorAfterPoll) as raised:  # the poll counts
        await steps.advance(polling(), ctx)
    assert isinstance(raised.value.__cause__, psycopg.OperationalError)


async def test_a_cancel_does_not_cut_the_store_of_an_only_copy() -> None:
    """A shutdown after its grace cancels the step; the store of bytes nothing can fetch
    again is finished first (and the completion then written), not thrown away."""
    store = MemoryStore(delay_s=0.2)
    provider = ScriptedProvider(submit_step=sync_result())
    outcome = await advance_cancelled_after(0.05, claimed_job(), context(provider, store=store))
    assert isinstance(outcome, Complete), outcome
    assert len(store.blobs) == 1


async def test_an_output_that_can_be_fetched_again_waits_for_a_later_poll() -> None:
    store = MemoryStore(failures=[DiskFull("no space left on device")])
    result = PollResult(
        state=PollState.SUCCEEDED,
        outputs=succeeded().outputs,
        result_uri="https://scripted.invalid/results/1",
    )
    outcome = await steps.advance(polling(), context(ScriptedProvider(default=result), store=store))
    assert reschedule(outcome).error_count == 1
    assert store.calls == 1


# -- a created job whose id cannot be recorded -----------------------------------------------


@pytest.mark.parametrize(
    "error",
    [LeaseLost("an operator's cancel"), psycopg.OperationalError("server closed the connection")],
    ids=["lease-lost", "database-down"],
)
async def test_a_provider_job_whose_id_cannot_be_recorded_is_logged_and_canceled(
    error: Exception,
) -> None:
    """It ran and billed with nothing pointing at it: only `lease.lost` or
    `job.step_crashed` was logged, without the provider's id, and nobody cancelled it."""
    db = SubmissionRecorder(record_error=error)
    provider = ScriptedProvider()
    job = claimed_job()
    with capture_logs() as logs, pytest.raises(type(error)):
        await steps.advance(job, context(provider, db=db))
    orphaned = [e for e in logs if e["event"] == "provider.orphaned"]
    assert orphaned and orphaned[0]["log_level"] == "error"
    assert orphaned[0]["provider_job_id"] == f"sub-{job.id}"
    assert [h.provider_job_id for h in provider.canceled] == [f"sub-{job.id}"]


# -- cancellation during a submit -----------------------------------------------------------


async def test_a_cancel_while_recording_the_id_still_records_it() -> None:
    db = SubmissionRecorder(record_delay_s=0.2)
    job = claimed_job()
    await advance_cancelled_after(0.05, job, context(db=db))
    assert db.recorded == [f"sub-{job.id}"]


async def test_a_cancel_during_a_create_call_lets_it_answer_within_the_grace() -> None:
    """Cut at once, the call left the mark and no id: "submit outcome unknown", even when
    the call had not been sent yet (Stability downloads the input files first)."""
    db = SubmissionRecorder()
    provider = ScriptedProvider(default=running(), submit_delay_s=0.2)
    job = claimed_job()
    await advance_cancelled_after(0.05, job, context(provider, db=db, submit_cancel_grace_s=2))
    assert db.recorded == [f"sub-{job.id}"]


async def test_a_refusal_during_the_grace_clears_the_submit_mark() -> None:
    db = SubmissionRecorder()
    provider = ScriptedProvider(
        submit_step=ProviderBusy("scripted: maintenance"), submit_delay_s=0.2
    )
    job = claimed_job()
    await advance_cancelled_after(0.05, job, context(provider, db=db, submit_cancel_grace_s=2))
    assert db.cleared == [job]


async def test_a_create_call_still_running_after_the_grace_is_cut() -> None:
    db = SubmissionRecorder()
    provider = ScriptedProvider(submit_delay_s=30)
    with anyio.fail_after(2):
        outcome = await advance_cancelled_after(
            0.05, claimed_job(), context(provider, db=db, submit_cancel_grace_s=0.1)
        )
    assert outcome is None
    assert db.recorded == [] and db.cleared == []  # ambiguous: the mark stays


@dataclasses.dataclass
class SendReportingProvider(ScriptedProvider):
    """An adapter that reports its sends (`providers.sending`): it prepares for
    ``prepare_s`` (Stability fetching input files), notes its create request, then waits
    ``answer_s`` for the answer."""

    reports_sends: ClassVar[bool] = True
    prepare_s: float = 0.0
    answer_s: float = 0.0

    async def submit(self, request: SubmitRequest) -> PollResult:
        await anyio.sleep(self.prepare_s)
        note_request("POST")
        await anyio.sleep(self.answer_s)
        return await super().submit(request)


async def test_a_create_cut_before_its_request_left_clears_the_submit_mark() -> None:
    """Nothing reached the provider, so the next claim may submit again instead of failing
    the job as "submit outcome unknown"."""
    db = SubmissionRecorder()
    provider = SendReportingProvider(prepare_s=30)
    job = claimed_job()
    with anyio.fail_after(2), capture_logs() as logs:
        outcome = await advance_cancelled_after(
            0.05, job, context(provider, db=db, submit_cancel_grace_s=0.1)
        )
    assert outcome is None
    assert db.cleared == [job] and db.recorded == []
    assert "provider.submit_cut_before_sending" in [e["event"] for e in logs]


async def test_a_create_cut_after_its_request_left_keeps_the_submit_mark() -> None:
    db = SubmissionRecorder()
    provider = SendReportingProvider(answer_s=30)
    with anyio.fail_after(2):
        await advance_cancelled_after(
            0.05, claimed_job(), context(provider, db=db, submit_cancel_grace_s=0.1)
        )
    assert db.cleared == [] and db.recorded == []  # ambiguous: it may have been created


async def test_a_submit_waits_for_the_create_budget_before_marking_anything() -> None:
    """Replicate allows 600 creates a minute against 3000 other requests: a submit also draws
    on its own bucket, and an empty one reschedules the job with nothing sent or marked."""
    provider = ScriptedProvider()
    db = SubmissionRecorder()
    ctx = context(provider, db=db)
    ctx = dataclasses.replace(
        ctx,
        submit_budget=CreateQueue(
            ProviderBudget(FixedBucket(granted=0, wait_s=2.0), "x", chunk=1), rate_per_s=8.0
        ),
    )
    outcome = reschedule(await steps.advance(claimed_job(), ctx))
    assert 1.9 <= outcome.delay_s <= 2.1
    assert provider.submitted == []
    assert db.marked == []


async def test_a_poll_of_a_job_whose_input_params_are_not_an_object_still_runs() -> None:
    """A row inserted with its provider job id and ``input_params`` that are no JSON object
    (a list): the submit's check never ran, and the poll handed the list to the adapter as
    its params, where Replicate's ``params.get("deployment")`` raised AttributeError; after
    the error budget the job failed as an internal error although the provider had it.
    Adapters get empty params instead: a poll only refines routing and cost with them."""
    from tests.providers.conftest import open_rig
    from tests.providers.test_replicate import PID, SPEC, mock_poll
    from tests.providers.test_replicate import settings as replicate_settings

    async with open_rig(SPEC, replicate_settings()) as rig:
        mock_poll(rig, "prediction_processing.json")
        ctx = dataclasses.replace(context(), provider=rig.adapter)
        job = polling(provider_job_id=PID, media_type="video", input_params=["not", "an object"])
        outcome = await steps.advance(job, ctx)
    assert isinstance(outcome, Reschedule)
    assert (outcome.status, outcome.error_count, outcome.polled) == ("processing", 0, True)


# -- metrics --------------------------------------------------------------------------------


def _call_count(call: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "poller_provider_call_seconds_count",
        {"provider": "scripted", "call": call, "outcome": outcome},
    )
    return value or 0.0


async def test_a_crashing_poll_is_not_counted_as_an_ok_call() -> None:
    """`poller_provider_call_seconds{outcome}` is ``ok`` or the error class: an adapter that
    raised something other than a ProviderError was recorded as ``ok``, hiding the crash
    from the error-ratio alert."""
    ok_before, crashed_before = _call_count("poll", "ok"), _call_count("poll", "KeyError")
    provider = ScriptedProvider(default=KeyError("status"))
    with pytest.raises(KeyError):
        await steps.advance(polling(), context(provider))
    assert _call_count("poll", "KeyError") == crashed_before + 1
    assert _call_count("poll", "ok") == ok_before


async def test_a_cancelled_poll_is_not_counted_as_an_ok_call() -> None:
    ok_before, cancelled_before = _call_count("poll", "ok"), _call_count("poll", "cancelled")

    class Hanging(ScriptedProvider):
        async def poll(self, handle: Any) -> PollResult:
            await anyio.sleep_forever()
            raise AssertionError("unreachable")

    with anyio.move_on_after(0.05):
        await steps.advance(polling(), context(Hanging()))
    assert _call_count("poll", "cancelled") == cancelled_before + 1
    assert _call_count("poll", "ok") == ok_before
