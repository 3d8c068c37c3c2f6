"""What the claim and the write-back leave out or cap: provider slots, pauses, deadlines."""

from __future__ import annotations

from collections import Counter

import pytest
from psycopg_pool import AsyncConnectionPool

from poller.model import Reschedule
from poller.repository import PendingWrite
from tests.poller.helpers import execute, fetch, insert_jobs
from tests.poller.test_claim import repo

pytestmark = pytest.mark.anyio


async def test_a_claim_takes_no_more_of_a_providers_jobs_than_its_free_slots(
    db_url: str, pool: AsyncConnectionPool
) -> None:
    """A provider a few steps short of its in-flight cap must not receive a whole batch; its
    other due rows wait for a later round."""
    insert_jobs(db_url, 10, provider="slow", tenant="a")
    insert_jobs(db_url, 10, provider="fast", tenant="b")
    got = await repo(pool).claim(20, excluded=[], per_tenant=1, slots={"slow": 3})
    assert Counter(j.provider_id for j in got) == {"slow": 3, "fast": 10}


async def test_a_paused_providers_jobs_past_their_deadline_are_still_claimed(
    db_url: str, pool: AsyncConnectionPool
) -> None:
    """A pause can last a day (a long Retry-After); the deadline must still end the job."""
    overdue = insert_jobs(db_url, 2, provider="paused")
    insert_jobs(db_url, 3, provider="paused")
    execute(db_url, "UPDATE app.generation_jobs SET deadline_at = now() + interval '1 hour'")
    execute(
        db_url,
        "UPDATE app.generation_jobs SET deadline_at = now() - interval '1 s' WHERE id = ANY(%s)",
        (overdue,),
    )
    r = repo(pool)
    await r.pause_provider("paused", 3600, "rate limited")
    got = await r.claim(10, excluded=[], per_tenant=10)
    assert sorted(j.id for j in got) == sorted(overdue)


async def test_the_next_due_time_ignores_jobs_the_claim_would_skip(
    db_url: str, pool: AsyncConnectionPool
) -> None:
    """Due rows of a paused or excluded provider made the idle loop see work overdue and
    claim every 20 ms for the whole pause."""
    insert_jobs(db_url, 3, provider="paused")
    insert_jobs(db_url, 3, provider="at-cap")
    [later] = insert_jobs(db_url, 1, provider="fine")
    execute(
        db_url,
        "UPDATE app.generation_jobs SET next_poll_at = now() + interval '30 s' WHERE id = %s",
        (later,),
    )
    r = repo(pool)
    await r.pause_provider("paused", 3600, "rate limited")
    due_in = await r.next_due_in(["at-cap"])
    assert due_in is not None and 25 < due_in <= 30


async def test_a_long_delay_written_back_never_passes_the_deadline(
    db_url: str, pool: AsyncConnectionPool
) -> None:
    """The step measures its delay against the deadline at claim time; a slow step must not
    push the next look at the job past the deadline."""
    insert_jobs(db_url, 1)
    r = repo(pool)
    [job] = await r.claim(1, excluded=[], per_tenant=1)
    execute(db_url, "UPDATE app.generation_jobs SET deadline_at = now() + interval '2 s'")
    outcome = Reschedule(status="processing", delay_s=3600.0, error_count=0)
    await r.write_back([PendingWrite(job=job, outcome=outcome, deadline_at=None)])
    [row] = fetch(
        db_url,
        "SELECT extract(epoch FROM next_poll_at - deadline_at) AS past FROM app.generation_jobs",
    )
    assert 0 <= row["past"] <= 0.05  # at the deadline: neither past it nor due at once
