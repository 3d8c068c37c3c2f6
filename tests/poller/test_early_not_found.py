"""The early-404 window against a real PostgreSQL: a 404 on a poll within 30 s of the submit is
the vendor not showing its new job yet (DESIGN §10), and those 30 s start when the provider
returned the job id (``provider_job_id_recorded_at``), not when the create call started.

Jobs are submitted, written back, claimed and polled through the real `Repository` and
`poller.steps`; the provider answers every poll with a 404 the way the built-in adapters do
(`providers._http.early_not_found`). A slow create call is simulated by moving the submit mark
into the past while the call is in progress.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import timedelta

import psycopg
import pytest
from alembic import command
from psycopg_pool import AsyncConnectionPool

from poller import steps
from poller.migrate import alembic_config
from poller.model import ClaimedJob, Finish, Outcome, Reschedule
from poller.repository import PendingWrite, Repository, open_pool
from providers import _http
from providers.types import JobHandle, PollResult, PollState, ProviderFailure, SubmitRequest
from tests.db.rows import generation_job, insert
from tests.poller.fakes import ScriptedProvider
from tests.poller.helpers import execute, insert_jobs, job_row
from tests.poller.test_steps import context

pytestmark = pytest.mark.anyio

WINDOW_S = _http.NOT_FOUND_GRACE_S


@dataclass
class VanishingProvider(ScriptedProvider):
    """Accepts every submit; every poll is a 404, answered as the built-in adapters answer one.
    ``create_takes_s`` moves the job's submit mark that far into the past during the create
    call: the database then sees a create call that took that long."""

    db_url: str = ""
    create_takes_s: float = 0.0

    async def submit(self, request: SubmitRequest) -> PollResult:
        if self.create_takes_s:
            execute(
                self.db_url,
                "UPDATE app.generation_jobs SET submit_started_at = submit_started_at "
                "- make_interval(secs => %s) WHERE id = %s",
                (self.create_takes_s, request.job_id),
            )
        return await super().submit(request)

    async def poll(self, handle: JobHandle) -> PollResult:
        self.polled.append(handle)
        if _http.early_not_found(handle.since_submit_s):
            raise _http.not_found_yet(self.name, handle.since_submit_s or 0.0)
        failure = ProviderFailure(code="not_found", message="job not found at the provider")
        return PollResult(state=PollState.FAILED, failure=failure)


async def step_and_write_back(
    repo: Repository, job: ClaimedJob, provider: ScriptedProvider
) -> Outcome:
    """One poll as the daemon makes it: step the claimed job, write its outcome back (fenced)."""
    # The real repository as the step's database port; any budgeted retry would fail the job.
    ctx = replace(context(provider, error_budget=0), db=repo)
    outcome = await steps.advance(job, ctx)
    assert isinstance(outcome, Reschedule | Finish), outcome
    written = await repo.write_back(
        [PendingWrite(job=job, outcome=outcome, deadline_at=steps.deadline_for(job, ctx))]
    )
    assert written == {job.id}
    return outcome


async def claim_now(url: str, repo: Repository, job_id: uuid.UUID) -> ClaimedJob:
    """Claim ``job_id`` (made due now; any other job waits)."""
    execute(
        url,
        "UPDATE app.generation_jobs SET next_poll_at = CASE WHEN id = %s THEN now() "
        "ELSE now() + interval '1 hour' END",
        (job_id,),
    )
    [job] = await repo.claim(1, excluded=[], per_tenant=4)
    assert job.id == job_id
    return job


async def submit(url: str, repo: Repository, provider: VanishingProvider) -> uuid.UUID:
    """Insert a job and run its submit step: the provider's id is recorded by the repository."""
    [job_id] = insert_jobs(url, 1, timeout_ms=600_000)
    outcome = await step_and_write_back(repo, await claim_now(url, repo, job_id), provider)
    assert isinstance(outcome, Reschedule) and not outcome.polled  # submitted, not polled
    assert job_row(url, job_id)["provider_job_id"] == f"sub-{job_id}"
    return job_id


def not_visible_yet(outcome: Outcome) -> Reschedule:
    """The grace: rescheduled as a poll, no error budget spent, the 404 kept as last_error."""
    assert isinstance(outcome, Reschedule), outcome
    assert (outcome.polled, outcome.error_count) == (True, 0)
    assert outcome.last_error is not None and "not found" in outcome.last_error
    return outcome


def failed_as_missing(outcome: Outcome) -> None:
    assert isinstance(outcome, Finish), outcome
    assert (outcome.status, outcome.error_message) == ("failed", "job not found at the provider")


async def test_a_create_slower_than_the_window_still_gets_the_grace_on_its_first_poll(
    db_url: str, pool: AsyncConnectionPool
) -> None:
    """A create call of 90 s (a Stability synchronous endpoint, an input download) used to
    spend the whole window: the first poll's 404 failed a job the vendor was about to show."""
    repo = Repository(pool, owner="r1", lease_s=30)
    provider = VanishingProvider(db_url=db_url, create_takes_s=3 * WINDOW_S)
    job_id = await submit(db_url, repo, provider)
    row = job_row(db_url, job_id)
    assert row["provider_job_id_recorded_at"] - row["submit_started_at"] >= timedelta(
        seconds=3 * WINDOW_S
    )

    not_visible_yet(
        await step_and_write_back(repo, await claim_now(db_url, repo, job_id), provider)
    )
    since = provider.polled[-1].since_submit_s
    assert since is not None and 0 <= since < 5  # from the recorded id, not the create's start
    row = job_row(db_url, job_id)
    assert (row["status"], row["error_count"], row["attempts"]) == ("pending", 0, 1)


async def test_a_404_once_the_id_was_recorded_longer_ago_than_the_window_fails_the_job(
    db_url: str, pool: AsyncConnectionPool
) -> None:
    repo = Repository(pool, owner="r1", lease_s=30)
    provider = VanishingProvider(db_url=db_url)
    job_id = await submit(db_url, repo, provider)
    execute(
        db_url,
        "UPDATE app.generation_jobs "
        "SET provider_job_id_recorded_at = provider_job_id_recorded_at - make_interval(secs => %s),"
        "    submit_started_at = submit_started_at - make_interval(secs => %s) WHERE id = %s",
        (WINDOW_S + 15, WINDOW_S + 16, job_id),
    )

    failed_as_missing(
        await step_and_write_back(repo, await claim_now(db_url, repo, job_id), provider)
    )
    since = provider.polled[-1].since_submit_s
    assert since is not None and since >= WINDOW_S + 15
    row = job_row(db_url, job_id)
    assert (row["status"], row["error_message"]) == ("failed", "job not found at the provider")


async def test_ids_recorded_before_the_revision_count_from_the_submits_start(
    empty_db_url: str,
) -> None:
    """Rows whose id a daemon recorded before poller_0006 have no recording time: the window
    is measured from ``submit_started_at`` as before (neither a 404 failing at once nor one
    retried for ever)."""
    config = alembic_config(empty_db_url)
    command.upgrade(config, "poller_0005")
    jobs: dict[str, uuid.UUID] = {}
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        for name, started_ago_s in (("recent", 5), ("old", WINDOW_S + 30)):
            row = insert(
                conn,
                "generation_jobs",
                generation_job(provider_id="scripted", provider_job_id=f"p-{name}"),
            )
            conn.execute(
                "UPDATE app.generation_jobs SET timeout_ms = 600000, "
                "submit_started_at = now() - make_interval(secs => %s) WHERE id = %s",
                (started_ago_s, row["id"]),
            )
            jobs[name] = row["id"]
    command.upgrade(config, "head")
    for job_id in jobs.values():
        assert job_row(empty_db_url, job_id)["provider_job_id_recorded_at"] is None

    pool = open_pool(empty_db_url, size=2)
    await pool.open()
    try:
        repo = Repository(pool, owner="r1", lease_s=30)
        provider = VanishingProvider(db_url=empty_db_url)
        recent = await claim_now(empty_db_url, repo, jobs["recent"])
        not_visible_yet(await step_and_write_back(repo, recent, provider))
        old = await claim_now(empty_db_url, repo, jobs["old"])
        failed_as_missing(await step_and_write_back(repo, old, provider))
    finally:
        await pool.close()
    recent_since, old_since = (h.since_submit_s for h in provider.polled)
    assert recent_since is not None and 5 <= recent_since < 10
    assert old_since is not None and old_since >= WINDOW_S + 30
