"""The claim statement and fenced write-backs against a real PostgreSQL."""

from __future__ import annotations

import re
import uuid
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import anyio
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from poller import sql, steps
from poller.model import ArtifactRecord, ClaimedJob, Complete, Finish, Reschedule
from poller.repository import (
    LeaseLost,
    PendingWrite,
    Repository,
    open_pool,
    write_back_params,
)
from tests.poller.fakes import ScriptedProvider
from tests.poller.helpers import execute, fetch, insert_jobs, job_row
from tests.poller.test_steps import context

pytestmark = pytest.mark.anyio


def repo(pool: AsyncConnectionPool, owner: str = "r1", lease_s: float = 30.0) -> Repository:
    return Repository(pool, owner=owner, lease_s=lease_s)


def resched(job: ClaimedJob, delay: float = 60.0) -> PendingWrite:
    return PendingWrite(
        job=job,
        outcome=Reschedule(status="processing", delay_s=delay, polled=True, started=True),
        deadline_at=None,
    )


async def test_concurrent_claimers_never_share_a_job(
    db_url: str, pool: AsyncConnectionPool
) -> None:
    ids = set(insert_jobs(db_url, 300))
    seen: list[uuid.UUID] = []

    async def claimer(owner: str) -> None:
        r = repo(pool, owner)
        while batch := await r.claim(7, excluded=[], per_tenant=4):
            seen.extend(j.id for j in batch)

    async with anyio.create_task_group() as tg:
        for n in range(4):
            tg.start_soon(claimer, f"r{n}")
    assert len(seen) == len(set(seen)) == 300
    assert set(seen) == ids


async def test_claim_bumps_version_sets_owner_and_pushes_lease(
    db_url: str, pool: AsyncConnectionPool
) -> None:
    [job_id] = insert_jobs(db_url, 1)
    [job] = await repo(pool, "owner-a", lease_s=45).claim(10, excluded=[], per_tenant=4)
    row = job_row(db_url, job_id)
    assert job.lease_version == row["lease_version"] == 1
    assert row["lease_owner"] == "owner-a"
    assert row["claim_count"] == 1
    lease = (row["next_poll_at"] - job.db_now).total_seconds()
    assert 44 <= lease <= 46
    assert await repo(pool, "owner-b").claim(10, excluded=[], per_tenant=4) == []


async def test_stale_lease_version_write_changes_nothing(
    db_url: str, pool: AsyncConnectionPool
) -> None:
    [job_id] = insert_jobs(db_url, 1)
    first, second = repo(pool, "a"), repo(pool, "b")
    [stale] = await first.claim(1, excluded=[], per_tenant=4)
    execute(db_url, "UPDATE app.generation_jobs SET next_poll_at = now()")  # lease expires
    [fresh] = await second.claim(1, excluded=[], per_tenant=4)
    assert fresh.lease_version == stale.lease_version + 1
    before = job_row(db_url, job_id)
    fail = Finish(status="failed", error_message="stale")
    applied = await first.write_back([PendingWrite(job=stale, outcome=fail, deadline_at=None)])
    assert applied == set()
    assert job_row(db_url, job_id) == before
    assert await second.write_back([resched(fresh)]) == {job_id}
    assert job_row(db_url, job_id)["status"] == "processing"


async def test_expired_lease_is_claimable_again(db_url: str, pool: AsyncConnectionPool) -> None:
    insert_jobs(db_url, 1)
    crashed = repo(pool, "crashed", lease_s=0.3)
    [job] = await crashed.claim(1, excluded=[], per_tenant=4)
    assert await repo(pool, "other").claim(1, excluded=[], per_tenant=4) == []
    await anyio.sleep(0.4)
    [again] = await repo(pool, "other").claim(1, excluded=[], per_tenant=4)
    assert again.id == job.id
    assert again.claim_count == 2
    assert again.lease_version == job.lease_version + 1


async def test_write_back_counts_polls_and_resets_claim_count(
    db_url: str, pool: AsyncConnectionPool
) -> None:
    [job_id] = insert_jobs(db_url, 1)
    r = repo(pool)
    [job] = await r.claim(1, excluded=[], per_tenant=4)
    await r.write_back([resched(job, delay=120)])
    row = job_row(db_url, job_id)
    assert row["attempts"] == 1
    assert row["claim_count"] == 0
    assert row["lease_owner"] is None
    assert row["started_at"] is not None
    assert (row["next_poll_at"] - row["updated_at"]).total_seconds() > 100


async def test_write_back_stores_every_field_of_both_outcome_kinds(
    db_url: str, pool: AsyncConnectionPool
) -> None:
    ids = insert_jobs(db_url, 2)
    r = repo(pool)
    jobs = {j.id: j for j in await r.claim(2, excluded=[], per_tenant=4)}
    deadline = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    retry = Reschedule(
        status="pending", delay_s=90.0, polled=True, error_count=2, last_error="HTTP 503"
    )
    # A NUL character (rejected by PostgreSQL's text and jsonb) must not sink the batch.
    fail = Finish(
        status="failed",
        error_message="bad\x00 output",
        polled=True,
        cost_usd=Decimal("0.0123"),
        started=True,
    )
    applied = await r.write_back(
        [
            PendingWrite(job=jobs[ids[0]], outcome=retry, deadline_at=deadline),
            PendingWrite(job=jobs[ids[1]], outcome=fail, deadline_at=deadline),
        ]
    )
    assert applied == set(ids)
    kept, failed = job_row(db_url, ids[0]), job_row(db_url, ids[1])
    assert (kept["status"], kept["error_count"], kept["last_error"]) == ("pending", 2, "HTTP 503")
    assert kept["started_at"] is None and kept["completed_at"] is None
    assert 85 < (kept["next_poll_at"] - kept["updated_at"]).total_seconds() < 95
    assert kept["deadline_at"] == failed["deadline_at"] == deadline
    assert (failed["status"], failed["error_message"]) == ("failed", "bad output")
    assert failed["cost_usd"] == Decimal("0.0123")
    assert failed["attempts"] == kept["attempts"] == 1
    assert failed["started_at"] is not None and failed["completed_at"] is not None


async def test_a_job_that_never_started_ends_without_a_start_time(
    db_url: str, pool: AsyncConnectionPool
) -> None:
    """A refused submit, an unknown provider or a timeout while still queued: the provider
    never ran the job, so started_at stays NULL (DESIGN §10: first seen processing)."""
    [job_id] = insert_jobs(db_url, 1)
    [job] = await repo(pool).claim(1, excluded=[], per_tenant=4)
    never = Finish(status="timed_out", error_message="timed out")
    await repo(pool).write_back([PendingWrite(job=job, outcome=never, deadline_at=None)])
    row = job_row(db_url, job_id)
    assert row["status"] == "timed_out" and row["completed_at"] is not None
    assert row["started_at"] is None


async def test_release_undoes_the_claim_count_and_makes_the_job_due(
    db_url: str, pool: AsyncConnectionPool
) -> None:
    [job_id] = insert_jobs(db_url, 1)
    r = repo(pool)
    [job] = await r.claim(1, excluded=[], per_tenant=4)
    release = Reschedule(status="pending", delay_s=0, release=True)
    await r.write_back([PendingWrite(job=job, outcome=release, deadline_at=None)])
    row = job_row(db_url, job_id)
    assert row["claim_count"] == 0 and row["attempts"] == 0
    [again] = await repo(pool, "b").claim(1, excluded=[], per_tenant=4)
    assert again.id == job_id


async def test_tenant_flood_does_not_starve_a_small_tenant(
    db_url: str, pool: AsyncConnectionPool
) -> None:
    insert_jobs(db_url, 5000, tenant="A")
    small = set(insert_jobs(db_url, 10, tenant="B"))
    execute(db_url, "ANALYZE app.generation_jobs")
    [first] = [await repo(pool).claim(50, excluded=[], per_tenant=4)]
    counts = Counter(j.tenant_id for j in first)
    assert counts["B"] == 10
    assert small <= {j.id for j in first}


async def test_excluded_and_paused_providers_are_not_claimed(
    db_url: str, pool: AsyncConnectionPool
) -> None:
    insert_jobs(db_url, 2, provider="unconfigured")
    insert_jobs(db_url, 2, provider="paused")
    wanted = set(insert_jobs(db_url, 2, provider="scripted"))
    # A step has recorded their deadlines (a job without one is claimed once to record it).
    execute(db_url, "UPDATE app.generation_jobs SET deadline_at = now() + interval '1 hour'")
    r = repo(pool)
    await r.pause_provider("paused", 60, "rate limited")
    got = await r.claim(50, excluded=["unconfigured"], per_tenant=4)
    assert {j.id for j in got} == wanted
    execute(db_url, "UPDATE app.provider_budgets SET paused_until = now() - interval '1 s'")
    got = await r.claim(50, excluded=["unconfigured"], per_tenant=4)
    assert Counter(j.provider_id for j in got) == {"paused": 2}


async def test_terminal_write_back_notifies_the_orchestrator(
    db_url: str, pool: AsyncConnectionPool
) -> None:
    import json

    import psycopg

    [job_id] = insert_jobs(db_url, 1)
    r = repo(pool)
    [job] = await r.claim(1, excluded=[], per_tenant=4)
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as listener:
        await listener.execute("LISTEN generation_job_finished")
        fail = Finish(status="failed", error_message="boom")
        await r.write_back([PendingWrite(job=job, outcome=fail, deadline_at=None)])
        notes = [n async for n in listener.notifies(timeout=2, stop_after=1)]
    payload = json.loads(notes[0].payload)
    assert payload["id"] == str(job_id)
    assert payload["status"] == "failed"
    assert payload["artifact_ids"] == []
    assert set(payload) == {"id", "tenant_id", "run_id", "run_step_id", "status", "artifact_ids"}
    row = job_row(db_url, job_id)
    assert row["error_message"] == "boom" and row["completed_at"] is not None


async def test_shared_budget_grants_at_most_capacity(
    db_url: str, pool: AsyncConnectionPool
) -> None:
    a, b = repo(pool, "a"), repo(pool, "b")
    await a.ensure_budget("scripted", capacity=10, refill_per_s=0.001)
    first = await a.take_tokens("scripted", 6)
    second = await b.take_tokens("scripted", 6)
    third = await b.take_tokens("scripted", 6)
    assert (first.granted, second.granted, third.granted) == (6, 4, 0)
    assert third.wait_s > 100  # 1 token at 0.001/s
    rows = fetch(db_url, "SELECT tokens FROM app.provider_budgets")
    assert rows[0]["tokens"] < 1


async def test_daemon_sessions_plan_per_call_and_never_jit(pool: AsyncConnectionPool) -> None:
    """Both settings keep the claim fast at large backlogs (docs/benchmarks.md)."""
    async with pool.connection() as conn:
        jit = await (await conn.execute("SHOW jit")).fetchone()
        mode = await (await conn.execute("SHOW plan_cache_mode")).fetchone()
    assert (jit, mode) == (("off",), ("force_custom_plan",))


async def test_daemon_sessions_time_out_statements_and_probe_dead_peers(
    pool: AsyncConnectionPool,
) -> None:
    """Without these, a statement on a half-open TCP connection (host crash, failover
    without RST) or stuck behind a lock held the claim loop for ~15 minutes."""
    async with pool.connection() as conn:
        timeout = await (await conn.execute("SHOW statement_timeout")).fetchone()
        params = conn.info.get_parameters()
    assert timeout == ("30s",)
    assert {k: params.get(k) for k in ("keepalives_idle", "keepalives_interval")} == {
        "keepalives_idle": "10",
        "keepalives_interval": "5",
    }
    assert (params.get("keepalives_count"), params.get("tcp_user_timeout")) == ("3", "30000")


async def test_a_statement_longer_than_the_timeout_is_cancelled_as_an_outage(
    db_url: str,
) -> None:
    """The cancel is an OperationalError: retried by with_db_retry like a lost connection."""
    short = open_pool(db_url, size=1, statement_timeout_s=0.2)
    await short.open()
    try:
        async with short.connection() as conn:
            with anyio.fail_after(5), pytest.raises(psycopg.errors.QueryCanceled):
                await conn.execute("SELECT pg_sleep(3)")
    finally:
        await short.close()


async def claim_plan(pool: AsyncConnectionPool) -> str:
    """EXPLAIN of a claim of 50 rows, as the daemon sends it."""
    params = {
        "limit": 50,
        "excluded": [],
        "per_tenant": 4,
        "owner": "r1",
        "lease_s": 30.0,
        "slots": "{}",
    }
    async with pool.connection() as conn:
        cur = await conn.execute("EXPLAIN " + sql.CLAIM, params)
        return "\n".join(row[0] for row in await cur.fetchall())


async def test_a_backlog_of_one_provider_is_claimed_through_the_due_index(
    db_url: str, pool: AsyncConnectionPool
) -> None:
    """One provider owning every job made the planner think the provider filter keeps no
    row, so it sorted the whole backlog on every claim; the plan must walk an index."""
    insert_jobs(db_url, 3_000, provider="scripted")
    execute(db_url, "ANALYZE app.generation_jobs")
    await repo(pool).pause_provider("other", 60, "rate limited")
    plan = await claim_plan(pool)
    assert "Seq Scan on generation_jobs" not in plan, plan
    assert re.search(r"Sort Key: j(_\d+)?\.next_poll_at", plan) is None, plan


async def test_the_tenant_scan_skips_finished_jobs_even_when_statistics_are_stale(
    db_url: str, pool: AsyncConnectionPool
) -> None:
    """Statistics taken while a backlog was due, then most of it finished: ordered by
    tenant_id alone, the loose scan walked the full tenant_id index and filtered out every
    finished job of the tenant on each claim. It must use the index over active rows."""
    execute(db_url, "ALTER TABLE app.generation_jobs SET (autovacuum_enabled = false)")
    ids = insert_jobs(db_url, 3_000)
    execute(db_url, "ANALYZE app.generation_jobs")
    execute(
        db_url,
        "UPDATE app.generation_jobs SET status = 'failed', completed_at = now() WHERE id = ANY(%s)",
        (ids[:2_900],),
    )
    plan = await claim_plan(pool)
    assert "ix_generation_jobs_tenant_id " not in plan, plan
    assert "ix_generation_jobs_tenant_due" in plan, plan
    assert len(await repo(pool).claim(50, excluded=[], per_tenant=4)) == 50


async def test_write_back_probes_the_primary_key_instead_of_scanning_the_table(
    db_url: str, pool: AsyncConnectionPool
) -> None:
    """The planner takes the JSON rows for 100 and ``lease_owner = …`` for one row, and
    scanned every job for each write-back until the ids were also given as an array."""
    insert_jobs(db_url, 3_000)
    r = repo(pool)
    claimed = await r.claim(12, excluded=[], per_tenant=12)
    execute(db_url, "ANALYZE app.generation_jobs")
    params = write_back_params([resched(job) for job in claimed]) | {"owner": r.owner}
    async with pool.connection() as conn:
        cur = await conn.execute("EXPLAIN " + sql.WRITE_BACK, params)
        plan = "\n".join(row[0] for row in await cur.fetchall())
    assert "Seq Scan on generation_jobs" not in plan, plan
    assert "pk_generation_jobs" in plan, plan


async def test_completion_stores_vendor_metadata_and_filenames_without_nul_characters(
    db_url: str, pool: AsyncConnectionPool
) -> None:
    """jsonb and text reject NUL; a provider's title carrying one must not fail the job's
    completion on every retry. A literal backslash-u0000 in the text is kept as text."""
    [job_id] = insert_jobs(db_url, 1)
    r = repo(pool)
    [job] = await r.claim(1, excluded=[], per_tenant=4)
    artifact = ArtifactRecord(
        id=uuid.uuid4(),
        type="audio/mpeg",
        uri="file:///data/sha256/ab/abc",
        content_hash="abc",
        size_bytes=3,
        filename="song\x00.mp3",
        metadata={"provider_metadata": {"title": "a\x00b", "note": "x\\u0000y", "t\x00": 1}},
    )
    outcome = Complete(artifacts=[artifact], result_uri="https://cdn.example/1", cost_usd=None)
    await r.complete(job, outcome, datetime(2031, 1, 1, tzinfo=UTC))
    assert job_row(db_url, job_id)["status"] == "completed"
    [stored] = fetch(db_url, "SELECT filename, metadata FROM app.artifacts")
    assert stored["filename"] == "song.mp3"
    assert stored["metadata"]["provider_metadata"] == {"title": "ab", "note": "x\\u0000y", "t": 1}


def artifact(n: int = 0) -> ArtifactRecord:
    return ArtifactRecord(
        id=uuid.uuid4(),
        type="image/png",
        uri=f"file:///data/sha256/{n:064x}",
        content_hash=f"{n:064x}",
        size_bytes=3,
        filename=f"out-{n}.png",
    )


def completion(count: int) -> Complete:
    return Complete(
        artifacts=[artifact(n) for n in range(count)], result_uri="https://cdn/0", cost_usd=None
    )


async def test_a_job_with_250_outputs_completes_and_notifies_without_the_ids(
    db_url: str, pool: AsyncConnectionPool
) -> None:
    """250 artifact ids do not fit pg_notify's 8000 bytes: the completion used to roll back
    on every attempt. It completes, and the orchestrator is told to read the row."""
    import json

    import psycopg

    [job_id] = insert_jobs(db_url, 1)
    r = repo(pool)
    [job] = await r.claim(1, excluded=[], per_tenant=4)
    outcome = completion(250)
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as listener:
        await listener.execute("LISTEN generation_job_finished")
        await r.complete(job, outcome, datetime(2031, 1, 1, tzinfo=UTC))
        notes = [n async for n in listener.notifies(timeout=2, stop_after=1)]
    row = job_row(db_url, job_id)
    assert row["status"] == "completed"
    assert row["artifact_ids"] == [str(a.id) for a in outcome.artifacts]
    payload = json.loads(notes[0].payload)
    assert (payload["id"], payload["status"]) == (str(job_id), "completed")
    assert payload["artifact_ids"] is None and payload["artifact_ids_truncated"] is True


async def test_completion_stores_metadata_and_filenames_with_lone_surrogates_replaced(
    db_url: str, pool: AsyncConnectionPool
) -> None:
    """A vendor title with an unpaired \\ud83d escape made jsonb refuse the completion on
    every attempt; a proper pair is kept as the character it encodes."""
    [job_id] = insert_jobs(db_url, 1)
    r = repo(pool)
    [job] = await r.claim(1, excluded=[], per_tenant=4)
    meta = {"provider_metadata": {"title": "a\ud83db", "tags": ["\udc00", "\ud83d\ude00"]}}
    stored_artifact = replace(artifact(), filename="clip\udc00.mp3", metadata=meta)
    outcome = Complete(artifacts=[stored_artifact], result_uri="https://cdn/1", cost_usd=None)
    await r.complete(job, outcome, datetime(2031, 1, 1, tzinfo=UTC))
    assert job_row(db_url, job_id)["status"] == "completed"
    [stored] = fetch(db_url, "SELECT filename, metadata FROM app.artifacts")
    assert stored["filename"] == "clip\ufffd.mp3"
    assert stored["metadata"]["provider_metadata"] == {
        "title": "a\ufffdb",
        "tags": ["\ufffd", "\U0001f600"],
    }


async def test_a_completion_whose_lease_was_lost_rolls_back_its_artifact_rows(
    db_url: str, pool: AsyncConnectionPool
) -> None:
    """Artifacts and completion are one transaction: when the fenced UPDATE matches nothing
    (another replica owns the job now), no artifact row of this attempt may remain."""
    [job_id] = insert_jobs(db_url, 1)
    mine, theirs = repo(pool, "a"), repo(pool, "b")
    [stale] = await mine.claim(1, excluded=[], per_tenant=4)
    execute(db_url, "UPDATE app.generation_jobs SET next_poll_at = now()")  # lease expires
    [fresh] = await theirs.claim(1, excluded=[], per_tenant=4)
    with pytest.raises(LeaseLost):
        await mine.complete(stale, completion(2), datetime(2031, 1, 1, tzinfo=UTC))
    assert fetch(db_url, "SELECT id FROM app.artifacts") == []
    row = job_row(db_url, job_id)
    assert (row["status"], row["lease_owner"]) == ("pending", "b")
    assert row["lease_version"] == fresh.lease_version


async def test_the_completion_transaction_runs_as_the_jobs_tenant(
    db_url: str, pool: AsyncConnectionPool
) -> None:
    """§2: a write of a tenant's rows first sets app.current_tenant_id. Triggers record the
    setting each artifact insert and the completion saw."""
    execute(
        db_url,
        """CREATE TABLE public.seen (what text, tenant text);
           CREATE FUNCTION public.record_tenant() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN
               INSERT INTO public.seen
               VALUES (TG_TABLE_NAME, current_setting('app.current_tenant_id', true));
               RETURN NULL;
           END $$;
           CREATE TRIGGER seen_artifacts AFTER INSERT ON app.artifacts
               FOR EACH ROW EXECUTE FUNCTION public.record_tenant();
           CREATE TRIGGER seen_jobs AFTER UPDATE OF status ON app.generation_jobs
               FOR EACH ROW EXECUTE FUNCTION public.record_tenant();""",
    )
    insert_jobs(db_url, 1, tenant="tenant-7")
    r = repo(pool)
    [job] = await r.claim(1, excluded=[], per_tenant=4)
    await r.complete(job, completion(2), datetime(2031, 1, 1, tzinfo=UTC))
    seen = fetch(db_url, "SELECT what, tenant FROM public.seen ORDER BY what")
    assert [(s["what"], s["tenant"]) for s in seen] == [
        ("artifacts", "tenant-7"),
        ("artifacts", "tenant-7"),
        ("generation_jobs", "tenant-7"),
    ]


@pytest.mark.parametrize("cost", ["NaN", "Infinity", "-Infinity"])
async def test_a_non_finite_cost_is_stored_as_unknown(
    db_url: str, pool: AsyncConnectionPool, cost: str
) -> None:
    """numeric takes 'NaN', and one NaN row makes every SUM(cost_usd) of a tenant's spend
    NaN; a plugin adapter's broken arithmetic must not poison the accounts."""
    ids = insert_jobs(db_url, 2)
    r = repo(pool)
    jobs = {j.id: j for j in await r.claim(2, excluded=[], per_tenant=4)}
    failed = Finish(status="failed", error_message="x", cost_usd=Decimal(cost))
    await r.write_back([PendingWrite(job=jobs[ids[0]], outcome=failed, deadline_at=None)])
    done = Complete(artifacts=[artifact()], result_uri="https://cdn/1", cost_usd=Decimal(cost))
    await r.complete(jobs[ids[1]], done, datetime(2031, 1, 1, tzinfo=UTC))
    rows = [job_row(db_url, i) for i in ids]
    assert [(row["status"], row["cost_usd"]) for row in rows] == [
        ("failed", None),
        ("completed", None),
    ]


async def test_completion_stores_non_finite_numbers_in_metadata_as_null(
    db_url: str, pool: AsyncConnectionPool
) -> None:
    """A vendor reply's ``"duration": NaN`` (or ``"nan"``, ``1e999``) reaches the metadata as
    a float NaN or infinity; json.dumps wrote it as ``NaN``, which jsonb refuses, so a
    finished, stored result failed as "the database rejected a value"."""
    [job_id] = insert_jobs(db_url, 1)
    r = repo(pool)
    [job] = await r.claim(1, excluded=[], per_tenant=4)
    meta = {"provider_metadata": {"duration": float("nan"), "sizes": [float("inf"), 1.5]}}
    stored_artifact = replace(artifact(), metadata=meta)
    outcome = Complete(artifacts=[stored_artifact], result_uri="https://cdn/1", cost_usd=None)
    await r.complete(job, outcome, datetime(2031, 1, 1, tzinfo=UTC))
    assert job_row(db_url, job_id)["status"] == "completed"
    [stored] = fetch(db_url, "SELECT metadata FROM app.artifacts")
    assert stored["metadata"]["provider_metadata"] == {"duration": None, "sizes": [None, 1.5]}


async def test_an_id_recorded_unseen_before_a_takeover_is_not_canceled_as_an_orphan(
    db_url: str, pool: AsyncConnectionPool
) -> None:
    """Recording the provider's id commits, but the reply is lost; by the retry, the lease
    has expired (the outage outlasted it) and another replica has claimed the job, id and
    all. The retry's LeaseLost read as "the id could not be recorded": the step logged the
    job as orphaned and canceled it at the provider, under the replica now polling it."""
    insert_jobs(db_url, 1)
    takeover: list[ClaimedJob] = []

    class RecordThenDrop(Repository):
        async def _fenced(self, statement: str, job: ClaimedJob, **extra: object) -> None:
            await super()._fenced(statement, job, **extra)
            if statement == sql.RECORD_SUBMISSION and not takeover:
                execute(db_url, "UPDATE app.generation_jobs SET next_poll_at = now()")
                takeover.extend(await repo(pool, owner="r2").claim(1, excluded=[], per_tenant=1))
                raise psycopg.OperationalError("server closed the connection unexpectedly")

    r1 = RecordThenDrop(pool, owner="r1", lease_s=30)
    [job] = await r1.claim(1, excluded=[], per_tenant=1)
    provider = ScriptedProvider()
    with pytest.raises(LeaseLost):
        await steps.advance(job, context(provider, db=r1))  # type: ignore[arg-type]
    assert [j.id for j in takeover] == [job.id]
    assert provider.canceled == []
    row = job_row(db_url, job.id)
    assert (row["provider_job_id"], row["lease_owner"]) == (f"sub-{job.id}", "r2")
