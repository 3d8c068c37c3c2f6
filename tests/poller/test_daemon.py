"""The daemon in-process: real PostgreSQL, real local storage, a scripted provider."""

from __future__ import annotations

import contextvars
import time
import uuid
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

import anyio
import psycopg
import pytest
import structlog
from psycopg_pool import AsyncConnectionPool
from pydantic_settings import SettingsConfigDict
from structlog.testing import capture_logs

from poller import metrics, outputs, scheduling, sql
from poller.daemon import Adapter, Daemon
from poller.repository import Grant, Repository
from poller.settings import PollerSettings
from poller.wakeup import Listener
from poller.writeback import WriteBackBatcher
from providers.errors import ProviderConnectError, ProviderProtocolError, ProviderUnavailable
from providers.settings import ProviderSettings
from providers.types import PollResult, PollState, RemoteOutput
from storage import StorageConfig, open_storage
from tests.poller.fakes import ScriptedProvider, failed, pending, png_bytes, running, succeeded
from tests.poller.helpers import execute, fetch, insert_jobs, job_row
from tests.storage.httpserver import Exchange, LoopbackServer, serve

pytestmark = pytest.mark.anyio


class ScriptedSettings(ProviderSettings):
    model_config = SettingsConfigDict(env_prefix="SCRIPTED_")
    provider_name: ClassVar[str] = "scripted"


def scripted_settings(**values: Any) -> ScriptedSettings:
    base: dict[str, Any] = {
        "base_url": "https://scripted.invalid",
        "api_key": "k-scripted-secret",
        "poll_interval_image_ms": 100,
        "timeout_image_ms": 60_000,
        "max_in_flight": 100,
        "rate_per_s": 10_000,
        "burst": 10_000,
    }
    base.update(values)
    return ScriptedSettings.from_env({}, **base)


def poller_settings(**values: Any) -> PollerSettings:
    base: dict[str, Any] = {
        "concurrency": 16,
        "batch_size": 8,
        "lease_ttl_s": 5,
        "shutdown_grace_s": 2,
        "idle_poll_max_s": 0.2,
        "writeback_flush_s": 0.02,
        "error_backoff_max_s": 0.05,
        "auth_pause_s": 1,
    }
    base.update(values)
    return PollerSettings(**base)


async def run_daemon(
    db_url: str,
    pool: AsyncConnectionPool,
    root: Path,
    provider: ScriptedProvider,
    *,
    settings: PollerSettings | None = None,
    provider_settings: ProviderSettings | None = None,
    stop_after: float | None = None,
) -> Daemon:
    cfg = settings or poller_settings()
    config = StorageConfig(storage_url=f"file://{root}", allow_private_downloads=True)
    async with open_storage(config) as ingestor:
        daemon = Daemon(
            repo=Repository(pool, owner="test-replica", lease_s=cfg.lease_ttl_s),
            settings=cfg,
            adapters={
                "scripted": Adapter(
                    provider=provider, settings=provider_settings or scripted_settings()
                )
            },
            unserved=["unserved"],
            ingestor=ingestor,
            database_url=db_url,
        )
        with anyio.fail_after(30):
            if stop_after is None:
                await daemon.run(drain=True)
            else:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(lambda: daemon.run(drain=False))
                    await anyio.sleep(stop_after)
                    daemon.stop()
    return daemon


async def test_jobs_flow_end_to_end_into_artifacts(
    db_url: str, pool: AsyncConnectionPool, tmp_path: Path
) -> None:
    ids = insert_jobs(db_url, 12)
    provider = ScriptedProvider(default=succeeded(png_bytes(), png_bytes(9, 9)))
    for job_id in ids:
        provider.script(f"sub-{job_id}", [pending(), running()])
    await run_daemon(db_url, pool, tmp_path, provider)
    rows = fetch(db_url, "SELECT * FROM app.generation_jobs")
    assert {r["status"] for r in rows} == {"completed"}
    for row in rows:
        assert row["attempts"] == 3  # pending, running, succeeded
        assert row["started_at"] is not None and row["completed_at"] >= row["started_at"]
        assert len(row["artifact_ids"]) == 2
        assert str(row["artifact_id"]) == row["artifact_ids"][0]
        assert row["provider_job_id"] == f"sub-{row['id']}"
        assert row["lease_owner"] is None
    artifacts = fetch(db_url, "SELECT * FROM app.artifacts")
    assert len(artifacts) == 24  # one row per output per job, never shared
    assert len({a["uri"] for a in artifacts}) == 2  # but blobs are shared by content
    stored = {Path(a["uri"]) for a in artifacts}
    assert all(await anyio.to_thread.run_sync(lambda: [p.is_file() for p in stored]))
    for art in artifacts:
        assert art["type"] == "image/png"
        assert art["skill_id"] == "scripted"  # no run_steps row: the provider id
        assert art["metadata"]["provider"] == "scripted"
        assert art["metadata"]["width"] in (8, 9)


async def test_unknown_provider_fails_with_its_name(
    db_url: str, pool: AsyncConnectionPool, tmp_path: Path
) -> None:
    [job_id] = insert_jobs(db_url, 1, provider="nobody-knows")
    await run_daemon(db_url, pool, tmp_path, ScriptedProvider())
    row = job_row(db_url, job_id)
    assert row["status"] == "failed"
    assert "unknown provider 'nobody-knows'" in row["error_message"]


async def test_unserved_provider_jobs_are_left_alone(
    db_url: str, pool: AsyncConnectionPool, tmp_path: Path
) -> None:
    [job_id] = insert_jobs(db_url, 1, provider="unserved")
    await run_daemon(db_url, pool, tmp_path, ScriptedProvider())
    assert job_row(db_url, job_id)["status"] == "pending"


async def test_deadline_cancels_at_provider_and_times_out(
    db_url: str, pool: AsyncConnectionPool, tmp_path: Path
) -> None:
    [job_id] = insert_jobs(db_url, 1, timeout_ms=400)
    provider = ScriptedProvider(default=running)
    await run_daemon(db_url, pool, tmp_path, provider)
    row = job_row(db_url, job_id)
    assert row["status"] == "timed_out"
    assert "timed out" in row["error_message"]
    assert [h.provider_job_id for h in provider.canceled] == [f"sub-{job_id}"]
    assert row["completed_at"] is not None


async def test_unknown_vendor_status_never_ends_a_job(
    db_url: str, pool: AsyncConnectionPool, tmp_path: Path
) -> None:
    from providers.types import PollState

    [job_id] = insert_jobs(db_url, 1, timeout_ms=600)
    odd = PollResult(state=PollState.UNKNOWN, raw_status="warming_up")
    provider = ScriptedProvider(default=odd)
    await run_daemon(db_url, pool, tmp_path, provider)
    row = job_row(db_url, job_id)
    assert row["status"] == "timed_out"  # only the deadline ended it
    assert row["attempts"] >= 2


async def test_ambiguous_submit_failure_is_never_resubmitted(
    db_url: str, pool: AsyncConnectionPool, tmp_path: Path
) -> None:
    [job_id] = insert_jobs(db_url, 1)
    provider = ScriptedProvider(submit_step=ProviderUnavailable("HTTP 502 after sending"))
    await run_daemon(db_url, pool, tmp_path, provider)
    row = job_row(db_url, job_id)
    assert row["status"] == "failed"
    assert row["error_message"].startswith("submit outcome unknown")
    assert len(provider.submitted) == 1


async def test_connect_error_on_submit_is_retried(
    db_url: str, pool: AsyncConnectionPool, tmp_path: Path
) -> None:
    [job_id] = insert_jobs(db_url, 1)
    provider = ScriptedProvider(submit_step=ProviderConnectError("connection refused"))

    async def heal() -> None:
        await anyio.sleep(0.3)
        provider.submit_step = None

    async with anyio.create_task_group() as tg:
        tg.start_soon(heal)
        await run_daemon(db_url, pool, tmp_path, provider)
    row = job_row(db_url, job_id)
    assert row["status"] == "completed"
    assert len(provider.submitted) >= 2


async def test_transient_errors_back_off_then_succeed_within_budget(
    db_url: str, pool: AsyncConnectionPool, tmp_path: Path
) -> None:
    [job_id] = insert_jobs(db_url, 1)
    provider = ScriptedProvider()
    provider.script(f"sub-{job_id}", [ProviderUnavailable("HTTP 503")] * 3)
    await run_daemon(db_url, pool, tmp_path, provider)
    row = job_row(db_url, job_id)
    assert row["status"] == "completed"
    assert row["attempts"] == 4  # failed polls count too
    assert row["error_count"] == 0


async def test_malformed_replies_fail_the_job_with_the_snippet(
    db_url: str, pool: AsyncConnectionPool, tmp_path: Path
) -> None:
    [job_id] = insert_jobs(db_url, 1)
    bad = ProviderProtocolError("unparseable reply", snippet="<html>502 Bad Gateway")
    provider = ScriptedProvider(default=lambda: (_ for _ in ()).throw(bad))
    await run_daemon(db_url, pool, tmp_path, provider)
    row = job_row(db_url, job_id)
    assert row["status"] == "failed"
    assert "<html>502 Bad Gateway" in row["error_message"]
    assert "consecutive errors" in row["error_message"]


async def test_moderation_failure_is_marked(
    db_url: str, pool: AsyncConnectionPool, tmp_path: Path
) -> None:
    [job_id] = insert_jobs(db_url, 1)
    provider = ScriptedProvider(default=failed("NSFW content detected", moderation=True))
    await run_daemon(db_url, pool, tmp_path, provider)
    row = job_row(db_url, job_id)
    assert row["status"] == "failed"
    assert row["error_message"] == "moderation: NSFW content detected"
    assert fetch(db_url, "SELECT * FROM app.artifacts") == []


async def test_wrong_type_output_fails_and_stores_nothing(
    db_url: str, pool: AsyncConnectionPool, tmp_path: Path
) -> None:
    [job_id] = insert_jobs(db_url, 1)
    provider = ScriptedProvider(default=succeeded(b"<html><body>502 Bad Gateway</body></html>"))
    await run_daemon(db_url, pool, tmp_path, provider)
    row = job_row(db_url, job_id)
    assert row["status"] == "failed"
    assert row["error_message"].startswith("output 1 of 1:")
    assert fetch(db_url, "SELECT * FROM app.artifacts") == []
    assert not list((tmp_path / "sha256").rglob("*")) if (tmp_path / "sha256").exists() else True


async def test_crash_loop_guard_fails_the_job(
    db_url: str, pool: AsyncConnectionPool, tmp_path: Path
) -> None:
    from tests.poller.helpers import execute

    [job_id] = insert_jobs(db_url, 1)
    execute(db_url, "UPDATE app.generation_jobs SET claim_count = 5 WHERE id = %s", (job_id,))
    await run_daemon(db_url, pool, tmp_path, ScriptedProvider())
    row = job_row(db_url, job_id)
    assert row["status"] == "failed"
    assert row["error_message"].startswith("worker crashed repeatedly")


async def test_drain_exits_once_the_last_write_back_lands(
    db_url: str, pool: AsyncConnectionPool, tmp_path: Path
) -> None:
    ids = insert_jobs(db_url, 20)
    # The last claim round finds nothing while the outcomes still wait in the batcher; their
    # leases (30 s) look like work due later, so only the batcher's wake-up ends the run
    # before the loop's idle sleep (60 s) would.
    cfg = poller_settings(lease_ttl_s=30, idle_poll_max_s=60, writeback_flush_s=0.3)
    with anyio.fail_after(10):
        await run_daemon(db_url, pool, tmp_path, ScriptedProvider(default=failed()), settings=cfg)
    rows = fetch(db_url, "SELECT status FROM app.generation_jobs")
    assert [r["status"] for r in rows] == ["failed"] * len(ids)


def insert_submitted_jobs(db_url: str, count: int) -> None:
    """Jobs the provider already has: each step is one poll (one budget token)."""
    insert_jobs(db_url, count)
    execute(db_url, "UPDATE app.generation_jobs SET provider_job_id = 'sub-' || id")


def record_token_requests(monkeypatch: pytest.MonkeyPatch, *, failing: int = 0) -> list[int]:
    """The size of every request to the shared token bucket, in order; the first
    ``failing`` ones fail as a lost database connection would."""
    asked: list[int] = []
    take_tokens = Repository.take_tokens

    async def recording(self: Repository, provider: str, want: int) -> Grant:
        asked.append(want)
        if len(asked) <= failing:
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return await take_tokens(self, provider, want)

    monkeypatch.setattr(Repository, "take_tokens", recording)
    return asked


async def test_a_claimed_batch_takes_its_provider_tokens_in_one_request(
    db_url: str, pool: AsyncConnectionPool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks of 2 tokens, two batches of 12: each batch's steps would fetch six chunks
    between them, one step at a time; each claim round asks once for its batch."""
    insert_submitted_jobs(db_url, 24)
    asked = record_token_requests(monkeypatch)
    cfg = poller_settings(batch_size=12, concurrency=24, budget_chunk=2)
    await run_daemon(db_url, pool, tmp_path, ScriptedProvider(default=failed()), settings=cfg)
    assert [r["status"] for r in fetch(db_url, "SELECT status FROM app.generation_jobs")] == [
        "failed"
    ] * 24
    assert len(asked) == 2 and sum(asked) == 24, asked


async def test_a_failed_batch_reservation_still_starts_the_batch(
    db_url: str, pool: AsyncConnectionPool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reservation runs after the claim: if the database fails it there, the claimed
    jobs must still reach the workers (whose steps then ask for tokens themselves), not
    wait in limbo for their leases to expire."""
    insert_submitted_jobs(db_url, 8)
    asked = record_token_requests(monkeypatch, failing=1)
    cfg = poller_settings(batch_size=8, concurrency=8, budget_chunk=8, lease_ttl_s=60)
    with anyio.fail_after(10):  # far inside the 60 s lease
        await run_daemon(db_url, pool, tmp_path, ScriptedProvider(default=failed()), settings=cfg)
    rows = fetch(db_url, "SELECT status, attempts FROM app.generation_jobs")
    assert [(r["status"], r["attempts"]) for r in rows] == [("failed", 1)] * 8
    assert asked[0] == 8 and len(asked) == 2, asked  # the batch's, then one step's chunk


async def test_stop_releases_in_flight_jobs_without_failing_them(
    db_url: str, pool: AsyncConnectionPool, tmp_path: Path
) -> None:
    ids = insert_jobs(db_url, 3)

    class Slow(ScriptedProvider):
        async def poll(self, handle: Any) -> PollResult:
            await anyio.sleep(60)
            raise AssertionError("unreachable")

    cfg = poller_settings(shutdown_grace_s=0.2)
    daemon = await run_daemon(db_url, pool, tmp_path, Slow(), settings=cfg, stop_after=1.0)
    assert daemon.inflight == 0
    for job_id in ids:
        row = job_row(db_url, job_id)
        assert row["status"] in ("pending", "processing")
        assert row["lease_owner"] is None
        assert row["claim_count"] == 0
        assert row["error_message"] is None


def flaky_cdn(server: LoopbackServer, path: str, data: bytes, failures: list[int]) -> None:
    """``path`` answers each status in ``failures`` once (429s with ``Retry-After: 0``),
    then serves ``data``."""
    pending_failures = list(failures)

    def route(exchange: Exchange) -> None:
        if pending_failures:
            status = pending_failures.pop(0)
            headers = {"Content-Length": "4", "Retry-After": "0"}
            exchange.head(status, headers if status == 429 else {"Content-Length": "4"})
            exchange.write(b"busy")
            return
        exchange.head(200, {"Content-Length": str(len(data)), "Content-Type": "image/png"})
        exchange.write(data)

    server.routes[path] = route


def remote_outputs(server: LoopbackServer, *paths: str) -> PollResult:
    outputs = tuple(RemoteOutput(url=server.url(path)) for path in paths)
    return PollResult(state=PollState.SUCCEEDED, outputs=outputs, raw_status="succeeded")


async def test_download_blips_are_tried_again_within_the_same_poll(
    db_url: str, pool: AsyncConnectionPool, tmp_path: Path
) -> None:
    [job_id] = insert_jobs(db_url, 1)
    with serve() as cdn:
        flaky_cdn(cdn, "/a.png", png_bytes(color=(1, 2, 3)), [503])
        flaky_cdn(cdn, "/b.png", png_bytes(color=(4, 5, 6)), [502, 500])
        provider = ScriptedProvider(default=remote_outputs(cdn, "/a.png", "/b.png"))
        await run_daemon(db_url, pool, tmp_path / "store", provider)
        requests = cdn.paths()
    row = job_row(db_url, job_id)
    assert row["status"] == "completed"
    assert (row["attempts"], row["error_count"]) == (1, 0)
    assert requests == ["/a.png"] * 2 + ["/b.png"] * 3
    assert len(fetch(db_url, "SELECT id FROM app.artifacts")) == 2


async def test_quick_retries_are_bounded_then_the_error_budget_counts(
    db_url: str, pool: AsyncConnectionPool, tmp_path: Path
) -> None:
    [job_id] = insert_jobs(db_url, 1)
    with serve() as cdn:
        flaky_cdn(cdn, "/a.png", png_bytes(), [500, 503, 502])
        provider = ScriptedProvider(default=remote_outputs(cdn, "/a.png"))
        await run_daemon(db_url, pool, tmp_path / "store", provider)
        requests = cdn.paths()
    row = job_row(db_url, job_id)
    assert row["status"] == "completed"
    assert row["attempts"] == 2  # the first poll's attempt failed twice and was rescheduled
    assert requests == ["/a.png"] * 4


async def test_a_result_url_too_long_for_result_uri_still_completes_the_job(
    db_url: str, pool: AsyncConnectionPool, tmp_path: Path
) -> None:
    """A signed URL over the 2048 characters of ``result_uri`` (an S3 URL with a session
    token): its output was downloaded and stored, then PostgreSQL refused the completion and
    the job failed with "value too long for type character varying(2048)". The stored copy's
    uri stands in for it, as for inline outputs."""
    [job_id] = insert_jobs(db_url, 1)
    with serve() as cdn:
        flaky_cdn(cdn, "/a.png", png_bytes(), [])
        signed = cdn.url("/a.png") + "?X-Amz-Security-Token=" + "t" * 3000
        result = PollResult(state=PollState.SUCCEEDED, outputs=(RemoteOutput(url=signed),))
        await run_daemon(db_url, pool, tmp_path / "store", ScriptedProvider(default=result))
    row = job_row(db_url, job_id)
    assert (row["status"], row["error_message"]) == ("completed", None)
    [artifact] = fetch(db_url, "SELECT uri FROM app.artifacts")
    assert row["result_uri"] == artifact["uri"]


async def test_cdn_429s_wait_as_told_without_spending_the_error_budget(
    db_url: str, pool: AsyncConnectionPool, tmp_path: Path
) -> None:
    """Three 429s against an error budget of two; each says "Retry-After: 0", which must
    still mean at least a second (scheduling.MIN_RATE_LIMIT_WAIT_S), not a tight loop."""
    [job_id] = insert_jobs(db_url, 1)
    with serve() as cdn:
        flaky_cdn(cdn, "/a.png", png_bytes(), [429] * 3)
        provider = ScriptedProvider(default=remote_outputs(cdn, "/a.png"))
        settings = poller_settings(error_budget=2)
        started = time.monotonic()
        await run_daemon(db_url, pool, tmp_path / "store", provider, settings=settings)
        elapsed = time.monotonic() - started
        requests = cdn.paths()
    row = job_row(db_url, job_id)
    assert row["status"] == "completed"
    assert (row["attempts"], row["error_count"]) == (4, 0)
    assert requests == ["/a.png"] * 4  # no quick retry after a 429
    assert elapsed >= 3 * 0.9 * scheduling.MIN_RATE_LIMIT_WAIT_S  # the floor, less jitter


async def test_a_completion_the_database_rejects_fails_the_job_at_once_saying_why(
    db_url: str, pool: AsyncConnectionPool, tmp_path: Path
) -> None:
    """A cost beyond numeric(10,4) is refused on every attempt. The completion used to be
    abandoned to lease expiry: every output downloaded again, five times, then "worker
    crashed repeatedly". It fails on the first claim, with the reason, and stores no rows."""
    [job_id] = insert_jobs(db_url, 1)
    provider = ScriptedProvider(default=replace(succeeded(), cost_usd=Decimal("123456789")))
    with anyio.fail_after(4):  # far less than one 5 s lease
        await run_daemon(db_url, pool, tmp_path, provider)
    row = job_row(db_url, job_id)
    assert (row["status"], row["claim_count"], row["lease_owner"]) == ("failed", 0, None)
    assert row["error_message"].startswith("could not store the job's outcome")
    assert "numeric field overflow" in row["error_message"]
    assert len(provider.polled) == 1
    assert fetch(db_url, "SELECT id FROM app.artifacts") == []


async def test_a_negative_or_nan_cost_from_a_plugin_does_not_stop_the_daemon(
    db_url: str, pool: AsyncConnectionPool, tmp_path: Path
) -> None:
    """Prometheus counters refuse negative increments: a plugin adapter reporting a credit
    (negative cost) raised ValueError while the daemon logged the finished job, in a worker
    (a completion) or in the write-back task (a failure), and took the whole daemon down. A
    NaN made the cost counter NaN for good. Both jobs finish; the counter is left alone."""
    completed, failed_job = insert_jobs(db_url, 2)
    provider = ScriptedProvider()
    provider.script(f"sub-{completed}", [replace(succeeded(), cost_usd=Decimal("-0.5"))])
    provider.script(f"sub-{failed_job}", [replace(failed(), cost_usd=Decimal("NaN"))])
    before = metrics.COST.labels("scripted")._value.get()
    await run_daemon(db_url, pool, tmp_path, provider)
    assert job_row(db_url, completed)["status"] == "completed"
    assert job_row(db_url, failed_job)["status"] == "failed"
    assert metrics.COST.labels("scripted")._value.get() == before


async def test_a_retried_completion_whose_first_commit_landed_is_reported_completed(
    db_url: str, pool: AsyncConnectionPool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The retry hits its own artifact rows (unique violation); that used to be logged as
    db.complete_abandoned (and would now look like a rejected value): the row says
    completed, so the daemon reports job.completed."""
    [job_id] = insert_jobs(db_url, 1)
    complete = Repository.complete
    calls: list[int] = []

    async def commit_then_drop(self: Repository, *args: Any) -> None:
        calls.append(1)
        await complete(self, *args)
        if len(calls) == 1:
            raise psycopg.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(Repository, "complete", commit_then_drop)
    with capture_logs() as logs:
        await run_daemon(db_url, pool, tmp_path, ScriptedProvider())
    events = [e["event"] for e in logs]
    assert len(calls) == 2
    assert job_row(db_url, job_id)["status"] == "completed"
    assert "job.completed" in events
    assert not {"db.complete_abandoned", "db.complete_rejected", "lease.lost"} & set(events)
    assert "job.failed" not in events


async def test_stop_while_the_flusher_is_mid_write_still_releases_the_jobs(
    db_url: str, pool: AsyncConnectionPool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The flusher takes the releases and starts a slow write; the shutdown flush must wait
    for it rather than return at once and let the services' cancel abort it."""
    ids = insert_jobs(db_url, 3)
    write_back = Repository.write_back
    flusher = contextvars.ContextVar("flusher", default=False)
    run, flush = WriteBackBatcher.run, WriteBackBatcher.flush

    async def slow_write_back(self: Repository, writes: Any) -> set[uuid.UUID]:
        await anyio.sleep(0.5)
        return await write_back(self, writes)

    async def flagged_run(self: WriteBackBatcher) -> None:
        flusher.set(True)
        await run(self)

    async def late_shutdown_flush(self: WriteBackBatcher) -> None:
        if not flusher.get():  # the daemon's own call: the flusher took the rows already
            await anyio.sleep(0.2)
        await flush(self)

    monkeypatch.setattr(Repository, "write_back", slow_write_back)
    monkeypatch.setattr(WriteBackBatcher, "run", flagged_run)
    monkeypatch.setattr(WriteBackBatcher, "flush", late_shutdown_flush)

    class Slow(ScriptedProvider):
        async def poll(self, handle: Any) -> PollResult:
            await anyio.sleep(60)
            raise AssertionError("unreachable")

    cfg = poller_settings(shutdown_grace_s=0.1, writeback_flush_s=0.01)
    await run_daemon(db_url, pool, tmp_path, Slow(), settings=cfg, stop_after=1.0)
    for job_id in ids:
        row = job_row(db_url, job_id)
        assert (row["lease_owner"], row["claim_count"]) == (None, 0)


async def test_the_listener_backoff_starts_over_after_a_successful_reconnect(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three failed connects wait 0.5, 1 and 2 s; once connected, the next outage starts at
    0.5 s again. The wait used to keep growing to 30 s across restarts, so after a few
    PostgreSQL restarts LISTEN recovery took up to 30 s."""
    delays: list[float] = []
    real_sleep = anyio.sleep
    listener = Listener("postgresql://127.0.0.1:1/unreachable", lambda: None, check_s=0.05)

    async def recorded_sleep(seconds: float) -> None:
        delays.append(seconds)
        if len(delays) == 3:  # the server is back
            listener._url = db_url
        await real_sleep(0)

    monkeypatch.setattr(anyio, "sleep", recorded_sleep)  # the listener's backoff sleeps
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.run)
            while not listener.connected:
                await real_sleep(0.01)
            execute(
                db_url,
                """SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                    WHERE datname = current_database() AND pid <> pg_backend_pid()
                      AND backend_type = 'client backend'""",
            )
            while len(delays) < 4:
                await real_sleep(0.01)
            tg.cancel_scope.cancel()
    assert delays[:4] == [0.5, 1.0, 2.0, 0.5]


async def test_a_job_inserted_while_its_provider_is_paused_still_times_out_on_time(
    db_url: str, pool: AsyncConnectionPool, tmp_path: Path
) -> None:
    """The claim takes a paused provider's jobs once their ``deadline_at`` passes, but a job
    inserted during the pause has none yet (only a step records it): it was never claimed,
    so it stayed pending past created_at + timeout_ms for the whole pause (a Retry-After
    may last a day)."""
    [job_id] = insert_jobs(db_url, 1, timeout_ms=1000)
    await Repository(pool, owner="operator", lease_s=5).pause_provider(
        "scripted", 3600, "rate limited"
    )
    provider = ScriptedProvider(default=running)
    await run_daemon(db_url, pool, tmp_path, provider, stop_after=3.0)
    row = job_row(db_url, job_id)
    assert row["status"] == "timed_out", row
    assert provider.submitted == []  # nothing was sent to the paused provider
    assert row["completed_at"] - row["created_at"] < timedelta(seconds=2)


async def test_a_database_blip_while_clearing_the_submit_mark_does_not_fail_the_job(
    db_url: str, pool: AsyncConnectionPool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A create call refused before anything was created clears the submit mark so the job
    is submitted again. A lost connection on that one write left the mark, and the next
    claim failed the job as "submit outcome unknown" although the provider had nothing."""
    [job_id] = insert_jobs(db_url, 1)
    fenced = Repository._fenced
    blips: list[str] = []

    async def blip_on_first_clear(self: Repository, statement: str, *a: Any, **kw: Any) -> None:
        if statement == sql.CLEAR_SUBMIT_MARK and not blips:
            blips.append(statement)
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        await fenced(self, statement, *a, **kw)

    class RefusesOnce(ScriptedProvider):
        async def submit(self, request: Any) -> PollResult:
            if not self.submitted:
                self.submitted.append(request)
                raise ProviderConnectError("scripted: connection refused")
            return await super().submit(request)

    monkeypatch.setattr(Repository, "_fenced", blip_on_first_clear)
    provider = RefusesOnce()
    await run_daemon(db_url, pool, tmp_path, provider)
    row = job_row(db_url, job_id)
    assert blips
    assert (row["status"], row["error_message"]) == ("completed", None)
    assert len(provider.submitted) == 2


async def test_a_shutdown_while_marking_the_submit_leaves_no_mark_without_a_call(
    db_url: str, pool: AsyncConnectionPool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shutdown's cancel reached the step while the submit mark's reply was on its way:
    the mark had committed, no create call was made, and the released job was failed as
    "submit outcome unknown" at its next claim."""
    [job_id] = insert_jobs(db_url, 1)
    mark = Repository.mark_submit_started

    async def slow_reply(self: Repository, job: Any, deadline: Any) -> None:
        await mark(self, job, deadline)  # committed on the server ...
        await anyio.sleep(0.5)  # ... and the reply still in flight when the cancel lands

    monkeypatch.setattr(Repository, "mark_submit_started", slow_reply)
    provider = ScriptedProvider()
    cfg = poller_settings(shutdown_grace_s=0.1)
    await run_daemon(db_url, pool, tmp_path, provider, settings=cfg, stop_after=0.2)
    row = job_row(db_url, job_id)
    assert provider.submitted == []
    assert (row["status"], row["submit_started_at"], row["lease_owner"]) == ("pending", None, None)


async def test_a_poll_made_before_a_shutdown_release_still_counts_in_attempts(
    db_url: str, pool: AsyncConnectionPool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The poll said succeeded and the outputs were downloading when the shutdown's grace
    ran out: the job was released with polls = 0, and ``attempts`` missed that poll."""
    [job_id] = insert_jobs(db_url, 1)
    execute(db_url, "UPDATE app.generation_jobs SET provider_job_id = 'sub-' || id")

    async def endless_download(*args: Any, **kwargs: Any) -> Any:
        await anyio.sleep(60)
        raise AssertionError("unreachable")

    monkeypatch.setattr(outputs, "ingest_all", endless_download)
    provider = ScriptedProvider(default=succeeded(png_bytes()))
    cfg = poller_settings(shutdown_grace_s=0.1)
    await run_daemon(db_url, pool, tmp_path, provider, settings=cfg, stop_after=0.5)
    row = job_row(db_url, job_id)
    assert len(provider.polled) == 1
    assert (row["status"], row["lease_owner"], row["claim_count"]) == ("pending", None, 0)
    assert row["attempts"] == 1


async def test_terminal_events_carry_the_whole_job_context(
    db_url: str, pool: AsyncConnectionPool, tmp_path: Path
) -> None:
    """`job.completed` is logged inside the step (context bound); `job.failed` from the
    write-back task named the job and provider but not the tenant, so per-tenant views of
    the logs missed every failure."""
    ok, bad = insert_jobs(db_url, 2, tenant="tenant-7")
    provider = ScriptedProvider()
    provider.script(f"sub-{bad}", [failed("nope")])
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        await run_daemon(db_url, pool, tmp_path, provider)
    terminal = {e["event"]: e for e in logs if e["event"] in ("job.completed", "job.failed")}
    assert set(terminal) == {"job.completed", "job.failed"}
    for event in terminal.values():
        assert event["tenant_id"] == "tenant-7"
        assert event["provider"] == "scripted"
    assert terminal["job.completed"]["job_id"] == str(ok)
    assert terminal["job.failed"]["job_id"] == str(bad)
