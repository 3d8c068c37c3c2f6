"""LISTEN for new jobs so an idle daemon reacts at once.

An optimisation only: the claim loop also sleeps until the earliest due job, so a dead
listener costs latency, never correctness. The listener checks its connection every
``check_s`` and reconnects with backoff when it has died; TCP keepalives make a half-open
connection (a host crash without RST) fail within about a minute instead of hanging.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import psycopg
import structlog

from poller import metrics
from poller.repository import TCP_KEEPALIVES

log = structlog.get_logger("poller")

CHANNEL = "generation_job_created"
STATEMENT_BOUND_S = 5.0


async def run_to_completion(
    conn: psycopg.AsyncConnection[Any], sql: str, *, bound_s: float = STATEMENT_BOUND_S
) -> psycopg.AsyncCursor[Any]:
    """Run a short statement that a cancellation (shutdown) waits for, up to ``bound_s``.

    psycopg answers a cancellation that lands mid-statement by cancelling the query on the
    server and awaiting that; under anyio the pending cancellation interrupts the await at
    once, so psycopg logs "query cancellation interrupted … closing connection" as a warning.
    A daemon that started and drained within a few milliseconds logged it on a clean exit.
    """
    with anyio.move_on_after(bound_s, shield=True) as scope:
        return await conn.execute(sql)
    assert scope.cancelled_caught
    raise psycopg.OperationalError(f"{sql!r} got no answer within {bound_s:g} s")


class Listener:
    """Calls ``on_notify`` for every NOTIFY on `CHANNEL`; survives database restarts."""

    def __init__(
        self, database_url: str, on_notify: Callable[[], None], *, check_s: float = 10.0
    ) -> None:
        self._url = database_url
        self._on_notify = on_notify
        self._check_s = check_s
        self.connected = False

    async def run(self) -> None:
        backoff = 0.5
        while True:
            try:
                await self._listen()
            except (psycopg.Error, OSError) as exc:
                if self.connected:  # it was up: a new outage starts from the shortest wait
                    backoff = 0.5
                self._set_connected(False)
                log.warning("listener.disconnected", error=str(exc), retry_in_s=backoff)
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)

    async def _listen(self) -> None:
        async with await psycopg.AsyncConnection.connect(
            self._url, autocommit=True, connect_timeout=10, **TCP_KEEPALIVES
        ) as conn:
            await run_to_completion(conn, f"LISTEN {CHANNEL}")
            self._set_connected(True)
            log.info("listener.connected")
            self._on_notify()  # anything inserted while we were away is due now
            while True:
                async for _ in conn.notifies(timeout=self._check_s):
                    self._on_notify()
                await run_to_completion(conn, "SELECT 1")  # liveness: raises if it went away

    def _set_connected(self, up: bool) -> None:
        self.connected = up
        metrics.LISTENER_UP.set(1 if up else 0)
