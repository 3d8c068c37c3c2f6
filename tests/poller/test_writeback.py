"""The write-back batcher against a real PostgreSQL: stale rows, rejected rows, retries after
an unseen commit, and the shutdown flush."""

from __future__ import annotations

import uuid
from collections.abc import MutableMapping, Sequence
from decimal import Decimal
from typing import Any

import anyio
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool
from structlog.testing import capture_logs

from poller.model import ClaimedJob, Finish, Reschedule
from poller.repository import PendingWrite, Repository
from poller.writeback import WriteBackBatcher
from tests.poller.helpers import execute, insert_jobs, job_row

pytestmark = pytest.mark.anyio


def resched(job: ClaimedJob, **fields: Any) -> PendingWrite:
    outcome = Reschedule(status="processing", delay_s=60.0, polled=True, started=True, **fields)
    return PendingWrite(job=job, outcome=outcome, deadline_at=None)


def finish(job: ClaimedJob, message: str, cost: Decimal | None = None) -> PendingWrite:
    outcome = Finish(status="failed", error_message=message, polled=True, cost_usd=cost)
    return PendingWrite(job=job, outcome=outcome, deadline_at=None)


async def claim_all(repo: Repository, count: int) -> list[ClaimedJob]:
    return await repo.claim(count, excluded=[], per_tenant=count)


def lease_events(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e["event"] == "lease.lost"]


async def test_one_write_back_with_a_stale_and_a_current_row_applies_only_the_current(
    db_url: str, pool: AsyncConnectionPool
) -> None:
    """§3: a lost lease drops only its own row, also inside one statement."""
    stale_id, current_id = insert_jobs(db_url, 2)
    mine, theirs = Repository(pool, owner="a", lease_s=30), Repository(pool, owner="b", lease_s=30)
    jobs = {j.id: j for j in await claim_all(mine, 2)}
    execute(
        db_url, "UPDATE app.generation_jobs SET next_poll_at = now() WHERE id = %s", (stale_id,)
    )
    [taken] = await claim_all(theirs, 1)
    assert taken.id == stale_id
    before = job_row(db_url, stale_id)
    applied = await mine.write_back([finish(jobs[stale_id], "late"), resched(jobs[current_id])])
    assert applied == {current_id}
    assert job_row(db_url, stale_id) == before
    current = job_row(db_url, current_id)
    assert (current["status"], current["lease_owner"], current["attempts"]) == (
        "processing",
        None,
        1,
    )


async def test_lone_surrogates_in_vendor_text_are_stored_as_replacement_characters(
    db_url: str, pool: AsyncConnectionPool
) -> None:
    """json.loads keeps an unpaired \\ud83d escape from a vendor's reply; PostgreSQL's jsonb
    rejects it (22P02), which failed the whole batch on every flush."""
    insert_jobs(db_url, 2)
    repo = Repository(pool, owner="r1", lease_s=30)
    first, second = await claim_all(repo, 2)
    writes = [
        resched(first, error_count=1, last_error="HTTP 502: bad \ud83d gateway"),
        finish(second, "model said \udc00\ud83d\ude00 no"),
    ]
    assert await repo.write_back(writes) == {first.id, second.id}
    assert job_row(db_url, first.id)["last_error"] == "HTTP 502: bad \ufffd gateway"
    assert job_row(db_url, second.id)["error_message"] == "model said \ufffd\U0001f600 no"


async def test_a_row_the_database_rejects_fails_alone_and_says_why(
    db_url: str, pool: AsyncConnectionPool
) -> None:
    """A value PostgreSQL cannot store (here a cost beyond numeric(10,4)) sank the whole
    cross-tenant batch, and its job re-polled into a new batch until the crash-loop guard.
    Only that row fails now, with a message naming the problem; the rest are written."""
    good = [*insert_jobs(db_url, 3, tenant="A"), *insert_jobs(db_url, 3, tenant="B")]
    [bad_id] = insert_jobs(db_url, 1, tenant="C")
    repo = Repository(pool, owner="r1", lease_s=30)
    jobs = {j.id: j for j in await claim_all(repo, 7)}
    applied: list[PendingWrite] = []
    batcher = WriteBackBatcher(repo, flush_s=60, on_applied=applied.append)
    for job_id in good[:3]:
        batcher.add(resched(jobs[job_id]))
    batcher.add(finish(jobs[bad_id], "too expensive", cost=Decimal("123456789")))
    for job_id in good[3:]:
        batcher.add(resched(jobs[job_id]))
    with capture_logs() as logs:
        await batcher.flush()
    for job_id in good:
        row = job_row(db_url, job_id)
        assert (row["status"], row["lease_owner"], row["attempts"]) == ("processing", None, 1)
    bad = job_row(db_url, bad_id)
    assert (bad["status"], bad["lease_owner"], bad["cost_usd"]) == ("failed", None, None)
    assert bad["error_message"].startswith("could not store the job's outcome")
    assert "numeric field overflow" in bad["error_message"]
    assert bad["attempts"] == 1 and bad["claim_count"] == 0
    assert {w.job.id for w in applied} == {*good, bad_id}
    [rejected] = [w for w in applied if w.job.id == bad_id]
    assert isinstance(rejected.outcome, Finish) and rejected.outcome.status == "failed"
    [rejected_line] = [e for e in logs if e["event"] == "db.write_back_rejected"]
    assert (rejected_line["job_id"], rejected_line["tenant_id"]) == (str(bad_id), "C")
    assert rejected_line["provider"] == jobs[bad_id].provider_id
    assert lease_events(logs) == []


class CommitThenDrop(Repository):
    """The first write-back commits, then the connection 'drops' before the reply."""

    calls = 0

    async def write_back(self, writes: Sequence[PendingWrite]) -> set[uuid.UUID]:
        self.calls += 1
        applied = await super().write_back(writes)
        if self.calls == 1:
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return applied


async def test_a_retried_write_back_whose_first_commit_landed_reports_no_lost_lease(
    db_url: str, pool: AsyncConnectionPool
) -> None:
    """The retry matches nothing (the rows are already released); that is not a lost lease,
    and the finished job's outcome is still reported. A row truly taken over still is."""
    insert_jobs(db_url, 3)
    repo = CommitThenDrop(pool, owner="r1", lease_s=30)
    done, waiting, stolen = await claim_all(repo, 3)
    execute(
        db_url,
        "UPDATE app.generation_jobs SET lease_version = lease_version + 1 WHERE id = %s",
        (stolen.id,),
    )
    applied: list[PendingWrite] = []
    batcher = WriteBackBatcher(repo, flush_s=60, on_applied=applied.append)
    for write in (finish(done, "boom"), resched(waiting), resched(stolen)):
        batcher.add(write)
    with capture_logs() as logs:
        await batcher.flush()
    assert repo.calls == 2
    assert job_row(db_url, done.id)["status"] == "failed"
    assert {w.job.id for w in applied} == {done.id, waiting.id}
    assert [e["job_id"] for e in lease_events(logs)] == [str(stolen.id)]
    # Logged by the write-back task, outside the job's step: the job context is spelled out.
    [lost] = lease_events(logs)
    assert (lost["provider"], lost["tenant_id"]) == (stolen.provider_id, stolen.tenant_id)


class SlowWrite(Repository):
    """A write-back that takes a while (a slow or restarting database)."""

    started: anyio.Event
    delay_s = 0.5

    async def write_back(self, writes: Sequence[PendingWrite]) -> set[uuid.UUID]:
        self.started.set()
        await anyio.sleep(self.delay_s)
        return await super().write_back(writes)


async def test_the_shutdown_flush_waits_for_the_write_the_flusher_is_making(
    db_url: str, pool: AsyncConnectionPool
) -> None:
    """The daemon's shutdown: a shielded `flush`, then cancel the flusher. When the flusher
    had already taken the rows, `flush` found nothing, returned, and the cancel aborted the
    write: the releases were lost until the leases expired."""
    ids = insert_jobs(db_url, 3)
    repo = SlowWrite(pool, owner="r1", lease_s=30)
    repo.started = anyio.Event()
    jobs = await claim_all(repo, 3)
    batcher = WriteBackBatcher(repo, flush_s=0.01)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as services:
            services.start_soon(batcher.run)
            for job in jobs:
                release = Reschedule(status=job.status, delay_s=0.0, release=True)
                batcher.add(PendingWrite(job=job, outcome=release, deadline_at=None))
            await repo.started.wait()  # the flusher is mid-write
            with anyio.CancelScope(shield=True):
                await batcher.flush()
            services.cancel_scope.cancel()
    for job_id in ids:
        row = job_row(db_url, job_id)
        assert (row["lease_owner"], row["claim_count"]) == (None, 0)
    assert batcher.idle
