"""`run_to_completion`: a shutdown waits for the listener's short statements (real PostgreSQL).

A daemon that started and drained within milliseconds cancelled its listener's ``LISTEN``
mid-statement; psycopg then logged "query cancellation interrupted … closing connection" as
a warning on a clean exit.
"""

from __future__ import annotations

import logging
import time

import anyio
import psycopg
import pytest

from poller.wakeup import run_to_completion

pytestmark = pytest.mark.anyio


async def test_a_cancellation_waits_for_the_statement_and_keeps_the_connection(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="psycopg")
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        finished: list[float] = []
        with anyio.CancelScope() as scope:
            started = time.monotonic()
            async with anyio.create_task_group() as tg:
                tg.start_soon(_cancel_after, scope, 0.05)
                await run_to_completion(conn, "SELECT pg_sleep(0.3)")
                finished.append(time.monotonic() - started)
                await anyio.sleep(10)  # the cancellation lands at the next checkpoint
        assert scope.cancelled_caught
        assert finished and finished[0] >= 0.3  # the statement ran to its end
        assert not conn.closed
        assert await (await conn.execute("SELECT 1")).fetchone() == (1,)
    assert [r.getMessage() for r in caplog.records if r.name.startswith("psycopg")] == []


async def test_a_statement_past_the_bound_is_a_database_error(db_url: str) -> None:
    """Shielded, but not forever: a server that stops answering must not hold a shutdown."""
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        with pytest.raises(psycopg.OperationalError, match=r"got no answer within 0\.1 s"):
            await run_to_completion(conn, "SELECT pg_sleep(2)", bound_s=0.1)


async def _cancel_after(scope: anyio.CancelScope, seconds: float) -> None:
    await anyio.sleep(seconds)
    scope.cancel()
