"""Retry policy for short database writes after a lost connection (tenacity).

Only connection-level psycopg errors are retried, a few times with jittered exponential
backoff; a write that still fails is abandoned and the lease expiry re-runs the poll. Fenced
writes are safe to repeat: a retry after an unseen commit simply matches nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import psycopg
import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from poller import metrics

log = structlog.get_logger("poller")
T = TypeVar("T")


def _logger(operation: str) -> Callable[[RetryCallState], None]:
    def before_sleep(state: RetryCallState) -> None:
        metrics.DB_ERRORS.labels(operation).inc()
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning(
            "db.retry_scheduled",
            operation=operation,
            attempt=state.attempt_number,
            wait_s=round(wait, 3),
            caused_by=str(exc),
        )

    return before_sleep


class CountedCall(Generic[T]):
    """A call for `with_db_retry` that counts its attempts.

    After a retry a write's outcome is ambiguous: its first attempt may have committed although
    the client saw the connection fail, so the retry matched nothing. Callers re-read the rows
    then, instead of reporting a lost lease or a failure."""

    def __init__(self, call: Callable[[], Awaitable[T]]) -> None:
        self._call = call
        self.attempts = 0

    async def __call__(self) -> T:
        self.attempts += 1
        return await self._call()

    @property
    def retried(self) -> bool:
        return self.attempts > 1


async def with_db_retry(
    operation: str, call: Callable[[], Awaitable[T]], *, attempts: int = 4, max_wait_s: float = 4.0
) -> T:
    """Run ``call`` and retry it on `psycopg.OperationalError` (connection lost, server gone)."""
    retrying = AsyncRetrying(
        retry=retry_if_exception_type(psycopg.OperationalError),
        stop=stop_after_attempt(attempts),
        wait=wait_random_exponential(multiplier=0.2, max=max_wait_s),
        before_sleep=_logger(operation),
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            return await call()
    raise AssertionError("unreachable: tenacity either returns or reraises")
