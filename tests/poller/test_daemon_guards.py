"""The daemon's guards: in-flight caps, crashing steps, database errors, reclaimed leases."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from poller import outputs
from poller.repository import Repository
from providers.errors import ProviderRateLimited, ProviderUnavailable
from providers.types import InlineOutput, JobHandle, PollResult, PollState, SubmitRequest
from tests.poller.fakes import ScriptedProvider, failed, png_bytes, running, succeeded
from tests.poller.helpers import execute, fetch, insert_jobs
from tests.poller.test_daemon import poller_settings, run_daemon, scripted_settings

pytestmark = pytest.mark.anyio


class SlowProvider(ScriptedProvider):
    """Each poll takes a while; records the most polls it ever saw at once."""

    def __init__(self, seconds: float) -> None:
        super().__init__(default=succeeded())
        self.seconds = seconds
        self.running = 0
        self.most = 0

    async def poll(self, handle: JobHandle) -> PollResult:
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await anyio.sleep(self.seconds)
            return await super().poll(handle)
        finally:
            self.running -= 1


async def test_a_provider_never_has_more_steps_in_flight_than_its_cap(
    db_url: str, pool: AsyncConnectionPool, tmp_path: Path
) -> None:
    """The cap was only checked before a claim: a provider at 0 of 3 got a whole batch."""
    insert_jobs(db_url, 24)
    provider = SlowProvider(0.05)
    await run_daemon(
        db_url,
        pool,
        tmp_path,
        provider,
        settings=poller_settings(concurrency=16, batch_size=8),
        provider_settings=scripted_settings(max_in_flight=3),
    )
    assert provider.most == 3
    assert {r["status"] for r in fetch(db_url, "SELECT status FROM app.generation_jobs")} == {
        "completed"
    }


async def test_a_step_that_keeps_crashing_fails_the_job_once_its_budget_is_spent(
    db_url: str, pool: AsyncConnectionPool, tmp_path: Path
) -> None:
    """A bug in a step used to reschedule the job forever (until its deadline)."""
    [job_id] = insert_jobs(db_url, 1)
    provider = ScriptedProvider(default=RuntimeError("adapter bug"))
    await run_daemon(
        db_url,
        pool,
        tmp_path,
        provider,
        settings=poller_settings(error_budget=2, error_backoff_max_s=0.05),
    )
    [row] = fetch(db_url, "SELECT * FROM app.generation_jobs WHERE id = %s", (job_id,))
    assert row["status"] == "failed"
    assert row["error_message"].startswith("gave up after 3 consecutive errors: internal error")
    assert "RuntimeError: adapter bug" in row["error_message"]


async def test_a_step_crashing_after_its_poll_still_counts_the_poll_in_attempts(
    db_url: str, pool: AsyncConnectionPool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``attempts`` is the number of polls made; a crash after the poll used to drop it."""
    real_ingest = outputs.ingest_all
    crashes = [RuntimeError("ingest bug")] * 2

    async def crashing_ingest(*args: Any, **kwargs: Any) -> Any:
        if crashes:
            raise crashes.pop()
        return await real_ingest(*args, **kwargs)

    monkeypatch.setattr(outputs, "ingest_all", crashing_ingest)
    [job_id] = insert_jobs(db_url, 1)
    provider = ScriptedProvider(default=succeeded())
    await run_daemon(
        db_url,
        pool,
        tmp_path,
        provider,
        settings=poller_settings(error_budget=3, error_backoff_max_s=0.05),
    )
    [row] = fetch(db_url, "SELECT * FROM app.generation_jobs WHERE id = %s", (job_id,))
    assert row["status"] == "completed"
    assert len(provider.polled) == 3  # two crashed after their poll, the third completed
    assert crashes == []  # both crashes happened
    assert row["attempts"] == 3


def pause_fails_twice(monkeypatch: pytest.MonkeyPatch) -> list[Exception]:
    """The next two pauses of a provider fail at the database; the list empties as they do."""
    failures: list[Exception] = [psycopg.OperationalError("server closed the connection")] * 2

    async def flaky_pause(self: Repository, provider: str, seconds: float, reason: str) -> None:
        if failures:
            raise failures.pop()

    monkeypatch.setattr(Repository, "pause_provider", flaky_pause)
    return failures


async def test_a_database_error_inside_a_step_does_not_spend_the_jobs_error_budget(
    db_url: str, pool: AsyncConnectionPool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pausing a rate-limited provider fails twice at the database; the job's budget of one
    provider error must still be whole for the 5xx that follows."""
    failures = pause_fails_twice(monkeypatch)
    [job_id] = insert_jobs(db_url, 1)
    provider = ScriptedProvider(default=succeeded())
    limited = ProviderRateLimited("429", provider="scripted", retry_after_s=0.01)
    provider.script(f"sub-{job_id}", [limited, limited, ProviderUnavailable("HTTP 502"), running()])
    await run_daemon(db_url, pool, tmp_path, provider, settings=poller_settings(error_budget=1))
    [row] = fetch(db_url, "SELECT status, error_message FROM app.generation_jobs")
    assert (row["status"], row["error_message"]) == ("completed", None)
    assert not failures


async def test_a_poll_followed_by_a_database_error_still_counts_in_attempts(
    db_url: str, pool: AsyncConnectionPool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``attempts`` counts every status poll made (DESIGN §10). A database error after the
    poll (pausing the provider after a 429, a dedup lock) rescheduled the step as if no poll
    had been made, like a crash after a poll did before `CrashedAfterPoll`."""
    failures = pause_fails_twice(monkeypatch)
    [job_id] = insert_jobs(db_url, 1)
    provider = ScriptedProvider(default=succeeded())
    limited = ProviderRateLimited("429", provider="scripted", retry_after_s=0.01)
    provider.script(f"sub-{job_id}", [limited, limited])
    await run_daemon(db_url, pool, tmp_path, provider)
    [row] = fetch(db_url, "SELECT status, attempts FROM app.generation_jobs")
    assert not failures
    assert len(provider.polled) == 3
    assert (row["status"], row["attempts"]) == ("completed", 3)


async def test_a_database_outage_at_start_up_is_waited_out(
    db_url: str, pool: AsyncConnectionPool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Creating the providers' budgets is the daemon's first write; a restart of PostgreSQL
    just then ended the process with a traceback."""
    calls: list[str] = []
    original = Repository.ensure_budget

    async def flaky_ensure(
        self: Repository, provider: str, *, capacity: float, refill_per_s: float
    ) -> None:
        calls.append(provider)
        if len(calls) <= 2:
            raise psycopg.OperationalError("the database system is starting up")
        await original(self, provider, capacity=capacity, refill_per_s=refill_per_s)

    monkeypatch.setattr(Repository, "ensure_budget", flaky_ensure)
    insert_jobs(db_url, 2)
    await run_daemon(db_url, pool, tmp_path, ScriptedProvider(default=succeeded()))
    assert len(calls) == 3
    statuses = {r["status"] for r in fetch(db_url, "SELECT status FROM app.generation_jobs")}
    assert statuses == {"completed"}


class StuckOnceProvider(ScriptedProvider):
    """The first poll hangs (until cancelled); later polls succeed with a 9x9 image."""

    def __init__(self) -> None:
        super().__init__(default=succeeded(png_bytes(9, 9)))
        self.first_poll_cancelled_at: float | None = None
        self.polls = 0

    async def poll(self, handle: JobHandle) -> PollResult:
        self.polls += 1
        if self.polls == 1:
            try:
                await anyio.sleep(20)
            except anyio.get_cancelled_exc_class():
                self.first_poll_cancelled_at = time.monotonic()
                raise
        return await super().poll(handle)


async def test_reclaiming_a_job_whose_step_is_still_running_drops_that_step(
    db_url: str, pool: AsyncConnectionPool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the heartbeat failing (database trouble) the lease runs out under a slow step and
    this same replica claims the job again: the old step must be cancelled, not left running
    without a lease, and the job completes once, from the new step."""

    async def no_extension(self: Repository, jobs: object) -> set[object]:
        raise psycopg.OperationalError("heartbeat cannot reach the database")

    monkeypatch.setattr(Repository, "extend_leases", no_extension)
    insert_jobs(db_url, 1)
    provider = StuckOnceProvider()
    started = time.monotonic()
    await run_daemon(
        db_url, pool, tmp_path, provider, settings=poller_settings(lease_ttl_s=1), stop_after=6
    )
    cancelled_at = provider.first_poll_cancelled_at
    # The lease expires after 1 s; without the guard the old step hung on until shutdown (6 s).
    assert cancelled_at is not None and cancelled_at - started < 4
    [row] = fetch(db_url, "SELECT status FROM app.generation_jobs")
    assert row["status"] == "completed"
    [artifact] = fetch(db_url, "SELECT metadata FROM app.artifacts")
    assert artifact["metadata"]["width"] == 9


async def test_the_heartbeat_keeps_the_lease_of_a_step_longer_than_the_lease(
    db_url: str, pool: AsyncConnectionPool, tmp_path: Path
) -> None:
    """A poll of 2.5 s under a 1 s lease: extended every third of the TTL, the job is polled
    once and never claimed again (a second claim would poll it a second time)."""
    insert_jobs(db_url, 1)
    provider = SlowProvider(2.5)
    await run_daemon(db_url, pool, tmp_path, provider, settings=poller_settings(lease_ttl_s=1))
    assert len(provider.polled) == 1
    [row] = fetch(db_url, "SELECT status, claim_count FROM app.generation_jobs")
    assert row["status"] == "completed"


async def test_a_step_whose_lease_was_taken_is_cancelled_by_the_heartbeat(
    db_url: str, pool: AsyncConnectionPool, tmp_path: Path
) -> None:
    """Another owner bumped the fencing token mid-step (an operator's cancel does): the
    heartbeat's extension matches nothing and the step is cancelled within a period."""
    [job_id] = insert_jobs(db_url, 1)
    provider = StuckOnceProvider()
    started = time.monotonic()

    async def take_the_lease() -> None:
        await anyio.sleep(1.0)
        execute(
            db_url,
            "UPDATE app.generation_jobs SET lease_version = lease_version + 1, "
            "lease_owner = 'someone-else', next_poll_at = now() + interval '1 hour' "
            "WHERE id = %s",
            (job_id,),
        )

    async with anyio.create_task_group() as tg:
        tg.start_soon(take_the_lease)
        await run_daemon(
            db_url,
            pool,
            tmp_path,
            provider,
            settings=poller_settings(lease_ttl_s=1.5),
            stop_after=6,
        )
    cancelled_at = provider.first_poll_cancelled_at
    assert cancelled_at is not None and cancelled_at - started < 4
    [row] = fetch(db_url, "SELECT status, lease_owner FROM app.generation_jobs")
    assert (row["status"], row["lease_owner"]) == ("pending", "someone-else")


async def test_a_completion_holding_the_only_copy_waits_out_a_database_outage(
    db_url: str, pool: AsyncConnectionPool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An inline result without a URL (Stability's synchronous answers) exists nowhere else:
    the completion keeps its lease and retries past with_db_retry's four attempts, instead
    of leaving the job to a poll that can only say the result is lost."""
    original = Repository.complete
    calls: list[int] = []

    async def outage_then_back(self: Repository, *args: Any, **kwargs: Any) -> None:
        calls.append(1)
        if len(calls) <= 5:
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        await original(self, *args, **kwargs)

    monkeypatch.setattr(Repository, "complete", outage_then_back)
    [job_id] = insert_jobs(db_url, 1)
    provider = ScriptedProvider(default=failed("the synchronous result was not stored"))
    provider.script(f"sub-{job_id}", [succeeded(png_bytes(9, 9))])
    await run_daemon(db_url, pool, tmp_path, provider)
    [row] = fetch(db_url, "SELECT status, error_message FROM app.generation_jobs")
    assert (row["status"], row["error_message"]) == ("completed", None)
    assert len(calls) == 6


async def test_a_generated_file_name_takes_the_usual_extension_of_the_sniffed_type(
    db_url: str, pool: AsyncConnectionPool, tmp_path: Path
) -> None:
    """An output without a name is called ``<job>-<index>.<ext>``: ``.mp3`` for audio/mpeg
    (the MIME subtype gave ``.mpeg``)."""
    mp3 = (Path(__file__).parents[1] / "storage" / "fixtures" / "tone.mp3").read_bytes()
    [job_id] = insert_jobs(db_url, 1, media_type="audio")
    inline = InlineOutput(data=mp3, media_type="audio/mpeg")
    done = PollResult(state=PollState.SUCCEEDED, outputs=(inline,), raw_status="succeeded")
    await run_daemon(db_url, pool, tmp_path, ScriptedProvider(default=done))
    [artifact] = fetch(db_url, "SELECT type, filename FROM app.artifacts")
    assert (artifact["type"], artifact["filename"]) == ("audio/mpeg", f"{job_id}-0.mp3")


async def test_an_audio_job_returning_audio_in_an_mp4_completes_as_audio(
    db_url: str, pool: AsyncConnectionPool, tmp_path: Path
) -> None:
    """Replicate audio models return ``.mp4`` audio (AAC, brand ``isom``) that sniffs as
    video/mp4: the job completes with an ``audio/mp4`` artifact named ``.m4a``."""
    mp4 = (Path(__file__).parents[1] / "storage" / "fixtures" / "tone-aac.mp4").read_bytes()
    [job_id] = insert_jobs(db_url, 1, media_type="audio")
    inline = InlineOutput(data=mp4, media_type="video/mp4")
    done = PollResult(state=PollState.SUCCEEDED, outputs=(inline,), raw_status="succeeded")
    await run_daemon(db_url, pool, tmp_path, ScriptedProvider(default=done))
    [row] = fetch(db_url, "SELECT status, error_message FROM app.generation_jobs")
    assert (row["status"], row["error_message"]) == ("completed", None)
    [artifact] = fetch(db_url, "SELECT type, filename, metadata FROM app.artifacts")
    assert (artifact["type"], artifact["filename"]) == ("audio/mp4", f"{job_id}-0.m4a")
    assert artifact["metadata"]["codec"] == "aac" and artifact["metadata"]["channels"] == 1
    assert not {"width", "has_audio", "_audio_only"} & set(artifact["metadata"])


class TimedSubmits(ScriptedProvider):
    """Records when each create call arrives."""

    def __init__(self) -> None:
        super().__init__(default=succeeded())
        self.submit_times: list[float] = []

    async def submit(self, request: SubmitRequest) -> PollResult:
        self.submit_times.append(time.monotonic())
        return await super().submit(request)


async def test_submits_draw_on_their_own_shared_create_budget(
    db_url: str, pool: AsyncConnectionPool, tmp_path: Path
) -> None:
    """A create budget of one a second (burst one) spaces three new jobs' submits at least a
    second apart, however generous the request budget; the bucket is a shared row."""
    insert_jobs(db_url, 3)
    provider = TimedSubmits()
    await run_daemon(
        db_url,
        pool,
        tmp_path,
        provider,
        provider_settings=scripted_settings(submit_rate_per_s=1.0, submit_burst=1),
    )
    times = provider.submit_times
    assert len(times) == 3
    assert times[-1] - times[0] >= 1.8  # two refills of one token each, less the jitter
    [bucket] = fetch(
        db_url,
        "SELECT capacity, refill_per_s FROM app.provider_budgets "
        "WHERE provider_id = 'scripted:submit'",
    )
    assert (bucket["capacity"], bucket["refill_per_s"]) == (1, 1)
    statuses = {r["status"] for r in fetch(db_url, "SELECT status FROM app.generation_jobs")}
    assert statuses == {"completed"}
