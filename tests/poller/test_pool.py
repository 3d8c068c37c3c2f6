"""The daemon's connection pool against a real PostgreSQL: dead connections are replaced
before use, live idle ones are handed out without an extra round trip."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from poller.repository import open_pool
from tests.poller.helpers import execute, fetch

pytestmark = pytest.mark.anyio


@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[AsyncConnectionPool]:
    p = open_pool(db_url, size=1)
    await p.open(wait=True)
    yield p
    await p.close()


@pytest.fixture
def full_checks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the round-trip checks (psycopg_pool's own) the pool's check falls back to."""
    calls: list[int] = []
    original = AsyncConnectionPool.check_connection

    async def counting(conn: AsyncConnection[Any]) -> None:
        calls.append(conn.info.backend_pid)
        await original(conn)

    monkeypatch.setattr(AsyncConnectionPool, "check_connection", counting)
    return calls


def wait_until_gone(db_url: str, pid: int, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while fetch(db_url, "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)):
        assert time.monotonic() < deadline, f"backend {pid} still alive after {timeout_s} s"
        time.sleep(0.02)


async def backend_pid(pool: AsyncConnectionPool) -> int:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT pg_backend_pid()")
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def test_an_idle_healthy_connection_is_reused_without_a_check_query(
    pool: AsyncConnectionPool, full_checks: list[int]
) -> None:
    first = await backend_pid(pool)
    assert [await backend_pid(pool) for _ in range(5)] == [first] * 5
    assert full_checks == []


async def test_a_connection_the_server_closed_is_replaced_before_use(
    db_url: str, pool: AsyncConnectionPool, full_checks: list[int]
) -> None:
    dead = await backend_pid(pool)
    execute(db_url, "SELECT pg_terminate_backend(%s)", (dead,))
    wait_until_gone(db_url, dead)  # terminate only signals the backend
    fresh = await backend_pid(pool)  # no AdminShutdown: the check caught the dead connection
    assert fresh != dead
    assert full_checks == [dead]


async def test_the_check_works_for_descriptors_above_select_s_limit(
    db_url: str, full_checks: list[int]
) -> None:
    """A busy replica holds hundreds of provider sockets: the database connection's
    descriptor can be above 1023, where ``select()`` raises instead of answering."""
    filler = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        pool = open_pool(db_url, size=1)
        await pool.open(wait=True)
        try:
            async with pool.connection() as conn:
                assert conn.fileno() > 1023
            assert await backend_pid(pool) > 0  # checked on checkout, no ValueError
        finally:
            await pool.close()
    finally:
        for fd in filler:
            os.close(fd)
    assert full_checks == []
