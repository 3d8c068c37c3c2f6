"""Batched, fenced write-backs: many outcomes, one ``UPDATE … FROM jsonb_to_recordset(…)``
round trip.

Job tasks hand their outcome over and move on; a single flusher writes whatever accumulated
every ``flush_s`` (or at once when ``max_rows`` are waiting). Rows the database does not
return lost their lease to another replica: they are counted and logged, never retried (after
a retried statement, whose first attempt may have committed unseen, they are re-read first). A
batch the database rejects for a value in it (DataError, IntegrityError) is bisected, so the
offending row alone is written as a fenced ``failed`` and the rest as usual.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace

import anyio
import structlog
from psycopg import Error as PsycopgError

from poller import metrics
from poller.repository import REJECTED, PendingWrite, Repository, rejected_outcome
from poller.retrying import CountedCall, with_db_retry

log = structlog.get_logger("poller")

OnApplied = Callable[[PendingWrite], None]
OnIdle = Callable[[], None]


class WriteBackBatcher:
    """Collects `PendingWrite`s and flushes them together."""

    def __init__(
        self,
        repo: Repository,
        *,
        flush_s: float,
        max_rows: int = 500,
        on_applied: OnApplied | None = None,
        on_idle: OnIdle | None = None,
    ) -> None:
        self._repo = repo
        self._flush_s = flush_s
        self._max_rows = max_rows
        self._pending: list[PendingWrite] = []
        self._wake = anyio.Event()
        self._on_applied = on_applied
        self._on_idle = on_idle
        self._flushing = 0
        self._lock = anyio.Lock()

    @property
    def idle(self) -> bool:
        """Nothing waiting and nothing being written (used by drain and shutdown)."""
        return not self._pending and self._flushing == 0

    def add(self, write: PendingWrite) -> None:
        self._pending.append(write)
        if len(self._pending) >= self._max_rows:
            self._wake.set()

    async def run(self) -> None:
        """Flush forever; cancelled by the daemon after a final `flush`."""
        while True:
            with anyio.move_on_after(self._flush_s):
                await self._wake.wait()
            self._wake = anyio.Event()
            await self.flush()

    async def flush(self) -> None:
        """Write everything pending; returns only once no write is in progress.

        The daemon's shutdown flush is followed by cancelling `run`. If `run`'s own flush had
        already taken the pending rows, a shutdown flush that found nothing to do returned at
        once, and the cancel then aborted that write: its releases and outcomes were lost
        until their leases expired. One flush at a time, so a second caller waits for the
        write in progress (bounded: `with_db_retry` gives up after a few attempts)."""
        async with self._lock:
            await self._flush_pending()

    async def _flush_pending(self) -> None:
        wrote = False
        while self._pending:
            batch, self._pending = self._pending[: self._max_rows], self._pending[self._max_rows :]
            self._flushing += 1
            try:
                await self._write(batch)
            finally:
                self._flushing -= 1
            wrote = True
        if wrote and self.idle and self._on_idle is not None:
            self._on_idle()

    async def _write(self, batch: list[PendingWrite]) -> None:
        try:
            applied = await self._apply(batch)
        except REJECTED as exc:
            # A value PostgreSQL refuses (a lone surrogate in vendor text, a numeric overflow)
            # fails the same way every time: find the row(s) and fail only those.
            await self._isolate(batch, exc)
            return
        except PsycopgError as exc:
            # Still failing: the leases expire and another round re-claims these jobs. Nothing
            # is lost, a poll is merely repeated.
            metrics.DB_ERRORS.labels("write_back").inc()
            log.error("db.write_back_abandoned", rows=len(batch), error=str(exc))
            return
        self._settle(batch, applied)

    async def _apply(self, batch: list[PendingWrite]) -> set[uuid.UUID]:
        """The fenced write-back with retries; after a retry, rows it did not match are
        re-checked, since the first attempt may have committed them unseen."""
        attempt = CountedCall(lambda: self._repo.write_back(batch))
        applied = await with_db_retry("write_back", attempt)
        if attempt.retried and len(applied) < len(batch):
            applied |= await self._recheck([w for w in batch if w.job.id not in applied])
        return applied

    async def _recheck(self, unmatched: list[PendingWrite]) -> set[uuid.UUID]:
        try:
            return await with_db_retry(
                "write_back_recheck",
                lambda: self._repo.released_at_version([w.job for w in unmatched]),
            )
        except PsycopgError as exc:  # then they are reported as lost, as before
            log.warning("db.write_back_recheck_failed", rows=len(unmatched), error=str(exc))
            return set()

    async def _isolate(self, batch: list[PendingWrite], exc: PsycopgError) -> None:
        """Bisect a rejected batch: the good halves are written as usual; a single rejected
        row is written as a fenced `failed` that says what the database refused."""
        if len(batch) > 1:
            middle = len(batch) // 2
            await self._write(batch[:middle])
            await self._write(batch[middle:])
            return
        [write] = batch
        metrics.DB_ERRORS.labels("write_back").inc()
        log.error("db.write_back_rejected", **write.job.log_fields(), error=str(exc))
        failed = [replace(write, outcome=rejected_outcome(exc, polled=write.outcome.polled))]
        try:
            applied = await self._apply(failed)
        except PsycopgError as again:  # not even that: the lease expires, as for an outage
            metrics.DB_ERRORS.labels("write_back").inc()
            log.error("db.write_back_abandoned", rows=1, error=str(again))
            return
        self._settle(failed, applied)

    def _settle(self, batch: list[PendingWrite], applied: set[uuid.UUID]) -> None:
        metrics.WRITEBACK_ROWS.observe(len(batch))
        for write in batch:
            if write.job.id not in applied:
                metrics.LEASE_LOST.inc()
                log.warning("lease.lost", **write.job.log_fields(), stage="write_back")
            elif self._on_applied is not None:
                self._on_applied(write)
