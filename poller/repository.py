"""The daemon's database port: claim, fenced write-backs, leases, budgets.

Each method is one short autocommit statement or one short transaction; none is held across
provider or storage I/O. Frequent write-backs go through `WriteBackBatcher`, which turns many
outcomes into one ``UPDATE … FROM jsonb_to_recordset(…)`` round trip.
"""

from __future__ import annotations

import json
import math
import re
import select
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from psycopg import AsyncConnection, DataError, Error, IntegrityError, OperationalError
from psycopg.errors import UniqueViolation
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool
from psycopg_pool.base import AttemptWithBackoff

from poller import sql
from poller.model import ClaimedJob, Complete, Finish, Reschedule
from poller.retrying import CountedCall, with_db_retry


class LeaseLost(Exception):
    """A fenced write matched no row: another replica owns the job now. Never retried."""


class RecordedThenLost(LeaseLost):
    """Recording the provider's job id committed unseen, and the lease was lost before the
    retry: the id is on the row (the new owner polls that job), so it is not orphaned."""


class DuplicateProviderJob(Exception):
    """The provider returned a job id that another job of the same provider already has."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingWrite:
    """One outcome waiting in the write-back batch."""

    job: ClaimedJob
    outcome: Reschedule | Finish
    deadline_at: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Grant:
    """The answer of the shared token bucket."""

    granted: int
    wait_s: float  # when nothing was granted: how long until a token (or the pause) is due
    paused: bool = False  # the wait is a pause of the provider (429 lockout, credentials)


# A host crash or a failover without RST leaves a half-open TCP connection: a statement sent
# on it waited for the kernel's retransmission timeout (about 15 minutes), and the claim loop,
# the flusher or the heartbeat with it. Keepalives probe an idle connection (dead after about
# 10 + 3 x 5 s); tcp_user_timeout drops one whose sent data stays unacknowledged for 30 s.
# libpq ignores both for Unix-domain sockets. The LISTEN connection uses them too.
TCP_KEEPALIVES: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}


def _configurer(statement_timeout_s: float) -> Callable[[AsyncConnection[Any]], Awaitable[None]]:
    timeout_ms = max(1, round(statement_timeout_s * 1000))

    async def configure(conn: AsyncConnection[Any]) -> None:
        await conn.set_autocommit(True)
        # The claim's best plan depends on how many rows are due; a cached generic plan can
        # be ten times slower, so always plan with the actual parameters. JIT pays off for
        # long analytic queries, never for these: at a 10,000-row backlog the claim's cost
        # estimate crossed jit_above_cost and compiling took 52 of its 65 ms
        # (docs/benchmarks.md).
        await conn.execute("SET plan_cache_mode = force_custom_plan")
        await conn.execute("SET jit = off")
        # Every statement of the daemon takes milliseconds. One stuck behind a lock or a
        # sick server must not hold a pooled connection (and its task) indefinitely; the
        # cancel arrives as QueryCanceled, an OperationalError, so it is retried or the
        # lease expires like any outage.
        await conn.execute(f"SET statement_timeout = {timeout_ms}")

    return configure


# psycopg_pool retries a lost server 1, 2, 4, 8 … s apart, so after a 1-3 s restart the
# replicas sat idle up to 4 s after the server was back (chaos suite: 4.23 s with a 3 s lease
# TTL). Half a second, growing by half per failure, reconnects within about a second of the
# server's return and still backs off during a long outage. The pool has no public setting
# for this; these class attributes are what its reconnect attempts read.
AttemptWithBackoff.INITIAL_DELAY = 0.5
AttemptWithBackoff.DELAY_BACKOFF = 1.5


async def check_if_disturbed(conn: AsyncConnection[Any]) -> None:
    """The pool's check before handing out a connection, without a round trip when idle.

    After a server restart the pool still holds dead connections; checking each one before
    handing it out keeps recovery from costing one failed statement per pooled connection.
    psycopg_pool's own check sends an empty query every time, a second round trip for every
    claim and write-back. An idle connection has nothing to read unless the server wrote to
    it - the FATAL "terminating connection" of a shutdown, or end-of-file after a crash - so
    only a readable socket (or one already closed) gets the full check, which then raises.
    """
    if conn.closed:
        raise OperationalError("the connection is closed")
    # poll(), not select(): select() refuses descriptors above 1023, which a replica with
    # hundreds of provider connections open reaches.
    probe = select.poll()
    probe.register(conn.fileno(), select.POLLIN)
    if probe.poll(0):
        await AsyncConnectionPool.check_connection(conn)


def open_pool(
    database_url: str, *, size: int, name: str = "poller", statement_timeout_s: float = 30.0
) -> AsyncConnectionPool:
    """A small pool: provider I/O concurrency is bounded elsewhere, not by connections."""
    return AsyncConnectionPool(
        database_url,
        min_size=1,
        max_size=size,
        open=False,
        name=name,
        configure=_configurer(statement_timeout_s),
        kwargs={"application_name": "media-poller", "connect_timeout": 10, **TCP_KEEPALIVES},
        timeout=10,  # waiting for a connection longer than this is an outage: back off instead
        check=check_if_disturbed,
        reconnect_timeout=3600,
    )


def _job(row: Sequence[Any]) -> ClaimedJob:
    return ClaimedJob(
        id=row[0],
        tenant_id=row[1],
        run_id=row[2],
        run_step_id=row[3],
        provider_id=row[4],
        provider_job_id=row[5],
        media_type=row[6],
        status=row[7],
        poll_interval_ms=row[8],
        timeout_ms=row[9],
        attempts=row[10],
        input_params=row[11] or {},
        created_at=row[12],
        started_at=row[13],
        deadline_at=row[14],
        submit_started_at=row[15],
        provider_job_id_recorded_at=row[16],
        lease_version=row[17],
        claim_count=row[18],
        error_count=row[19],
        due_at=row[20],
        db_now=row[21],
    )


class Repository:
    """All reads and writes of the claim loop, fenced by ``owner`` and lease version."""

    def __init__(self, pool: AsyncConnectionPool, *, owner: str, lease_s: float) -> None:
        self.pool = pool
        self.owner = owner
        self.lease_s = lease_s

    async def claim(
        self,
        limit: int,
        *,
        excluded: Sequence[str],
        per_tenant: int,
        slots: Mapping[str, int] | None = None,
    ) -> list[ClaimedJob]:
        """Lease up to ``limit`` due jobs, at most ``slots[p]`` of provider ``p``'s."""
        params = {
            "limit": limit,
            "excluded": list(excluded),
            "slots": json.dumps(slots or {}),
            "per_tenant": min(per_tenant, limit),
            "owner": self.owner,
            "lease_s": self.lease_s,
        }
        async with self.pool.connection() as conn:
            cur = await conn.execute(sql.CLAIM, params, prepare=True)
            rows = await cur.fetchall()
        return [_job(r) for r in rows]

    async def _fenced(self, statement: str, job: ClaimedJob, **extra: Any) -> None:
        params = {"id": job.id, "version": job.lease_version, "owner": self.owner, **extra}
        async with self.pool.connection() as conn:
            cur = await conn.execute(statement, params)
            if await cur.fetchone() is None:
                raise LeaseLost(str(job.id))

    # The submit bookkeeping is fenced and idempotent, so a short outage is retried: losing
    # the provider job id to a blip would turn a created job into "submit outcome unknown".

    async def mark_submit_started(self, job: ClaimedJob, deadline: datetime) -> None:
        await with_db_retry(
            "mark_submit",
            lambda: self._fenced(sql.MARK_SUBMIT_STARTED, job, deadline=deadline),
        )

    async def record_submission(self, job: ClaimedJob, provider_job_id: str) -> None:
        attempt = CountedCall(
            lambda: self._fenced(sql.RECORD_SUBMISSION, job, provider_job_id=provider_job_id)
        )
        try:
            await with_db_retry("record_submission", attempt)
        except UniqueViolation:
            raise DuplicateProviderJob(provider_job_id) from None
        except LeaseLost:
            # A retry after an outage that outlasted the lease: the first attempt may have
            # committed unseen, and the replica that claimed the job since polls that id.
            if attempt.retried and await self._holds_provider_job(job, provider_job_id):
                raise RecordedThenLost(str(job.id)) from None
            raise

    async def _holds_provider_job(self, job: ClaimedJob, provider_job_id: str) -> bool:
        try:
            async with self.pool.connection() as conn:
                cur = await conn.execute(HOLDS_PROVIDER_JOB, {"id": job.id})
                row = await cur.fetchone()
        except Error:  # unknown: treated as not recorded, as before
            return False
        return row is not None and row[0] == provider_job_id

    async def clear_submit_mark(self, job: ClaimedJob) -> None:
        # Left in place by a blip, the mark fails the job as "submit outcome unknown" at its
        # next claim, although the provider refused the create call and holds nothing.
        await with_db_retry("clear_submit_mark", lambda: self._fenced(sql.CLEAR_SUBMIT_MARK, job))

    async def write_back(self, writes: Sequence[PendingWrite]) -> set[uuid.UUID]:
        """Apply many outcomes in one statement; returns the ids whose lease still held."""
        if not writes:
            return set()
        params = write_back_params(writes)
        params["owner"] = self.owner
        async with self.pool.connection() as conn:
            cur = await conn.execute(sql.WRITE_BACK, params, prepare=True)
            return {row[0] for row in await cur.fetchall()}

    async def complete(self, job: ClaimedJob, outcome: Complete, deadline: datetime) -> None:
        """Artifacts and completion in one transaction, for the job's tenant; fenced."""
        ids = [a.id for a in outcome.artifacts]
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(sql.SET_TENANT, {"tenant": job.tenant_id})
            await conn.execute(sql.INSERT_ARTIFACTS, _artifact_params(job, outcome))
            cur = await conn.execute(
                sql.COMPLETE,
                {
                    "id": job.id,
                    "version": job.lease_version,
                    "owner": self.owner,
                    "result_uri": _storable(outcome.result_uri),
                    "artifact_id": ids[0] if ids else None,
                    "artifact_ids": Jsonb([str(i) for i in ids]),
                    "cost_usd": _storable_cost(outcome.cost_usd),
                    "polls": 1 if outcome.polled else 0,
                    "deadline": deadline,
                },
            )
            if await cur.fetchone() is None:
                raise _Rollback(str(job.id))

    async def extend_leases(self, jobs: Sequence[ClaimedJob]) -> set[uuid.UUID]:
        if not jobs:
            return set()
        params = {
            "ids": [j.id for j in jobs],
            "versions": [j.lease_version for j in jobs],
            "owner": self.owner,
            "lease_s": self.lease_s,
        }
        async with self.pool.connection() as conn:
            cur = await conn.execute(sql.EXTEND_LEASES, params)
            return {row[0] for row in await cur.fetchall()}

    async def next_due_in(self, excluded: Sequence[str]) -> float | None:
        async with self.pool.connection() as conn:
            cur = await conn.execute(sql.NEXT_DUE, {"excluded": list(excluded)}, prepare=True)
            row = await cur.fetchone()
        return None if row is None or row[0] is None else float(row[0])

    async def any_active(self, excluded: Sequence[str]) -> bool:
        async with self.pool.connection() as conn:
            cur = await conn.execute(sql.ANY_ACTIVE, {"excluded": list(excluded)})
            row = await cur.fetchone()
        return bool(row and row[0])

    async def ensure_budget(self, provider: str, *, capacity: float, refill_per_s: float) -> None:
        params = {"provider": provider, "capacity": capacity, "refill": refill_per_s}
        async with self.pool.connection() as conn:
            await conn.execute(sql.ENSURE_BUDGET, params)

    async def take_tokens(self, provider: str, want: int) -> Grant:
        async with self.pool.connection() as conn:
            cur = await conn.execute(sql.TAKE_TOKENS, {"provider": provider, "want": want})
            row = await cur.fetchone()
        if row is None:  # no budget row: unlimited (a plugin without a budget)
            return Grant(granted=want, wait_s=0.0)
        granted, avail, refill, paused_s = row
        if paused_s is not None and paused_s > 0:
            return Grant(granted=0, wait_s=float(paused_s), paused=True)
        missing = max(0.0, 1.0 - float(avail))
        wait = missing / float(refill) if refill > 0 else 1.0
        return Grant(granted=int(granted), wait_s=wait)

    async def pause_provider(self, provider: str, seconds: float, reason: str) -> None:
        params = {"provider": provider, "seconds": seconds, "reason": reason[:500]}
        async with self.pool.connection() as conn:
            await conn.execute(sql.PAUSE_PROVIDER, params)

    async def released_at_version(self, jobs: Sequence[ClaimedJob]) -> set[uuid.UUID]:
        """Which of ``jobs`` one of our own fenced writes already ended.

        Asked only after a retried write-back or completion: its first attempt may have
        committed although the client saw the connection fail, and the retry then matched
        nothing. Our lease version with no owner can only be our write (every claim and
        every operator action bumps the version), so those rows were not lost."""
        if not jobs:
            return set()
        params = {"ids": [j.id for j in jobs], "versions": [j.lease_version for j in jobs]}
        async with self.pool.connection() as conn:
            cur = await conn.execute(RELEASED_AT_VERSION, params)
            return {row[0] for row in await cur.fetchall()}


# Off the hot path (after a retry only), so not in `poller.sql`.
RELEASED_AT_VERSION = """
SELECT j.id FROM app.generation_jobs j
  JOIN unnest(%(ids)s::uuid[], %(versions)s::bigint[]) AS r(id, version) ON j.id = r.id
 WHERE j.lease_version = r.version AND j.lease_owner IS NULL
"""

# After a retried RECORD_SUBMISSION that matched nothing (rare), so not in `poller.sql`.
HOLDS_PROVIDER_JOB = "SELECT provider_job_id FROM app.generation_jobs WHERE id = %(id)s"

# Errors about the values of one write, not about the connection or the server: the same on
# every attempt (SQLSTATE classes 22 and 23).
REJECTED = (DataError, IntegrityError)


def rejected_outcome(exc: Error, *, polled: bool) -> Finish:
    """The fenced `failed` written in place of an outcome PostgreSQL refuses to store.

    Such an error repeats on every attempt: leaving the lease to expire only repeats the poll
    until the crash-loop guard fails the job with a misleading reason."""
    diag = exc.diag
    reason = "; ".join(p for p in (diag.message_primary, diag.message_detail) if p) or str(exc)
    message = f"could not store the job's outcome: the database rejected a value ({reason})"
    return Finish(status="failed", error_message=_storable(message[:500]) or "", polled=polled)


class _Rollback(LeaseLost):
    """Raised inside the completion transaction so that it rolls back, then seen as LeaseLost."""


def _write_back_row(w: PendingWrite) -> dict[str, Any]:
    """One element of the write-back's JSON array, keyed by the columns of ``AS r(…)``."""
    o = w.outcome
    row: dict[str, Any] = {
        "id": str(w.job.id),
        "version": w.job.lease_version,
        "status": o.status,
        "polls": int(o.polled),
        "deadline_at": w.deadline_at.isoformat() if w.deadline_at else None,
    }
    if isinstance(o, Reschedule):
        row.update(
            delay_s=o.delay_s,
            started=o.started,
            error_count=o.error_count,
            last_error=_storable(o.last_error),
            release=o.release,
        )
    else:
        row.update(
            delay_s=0.0,
            started=o.started,
            error_count=0,
            error_message=_storable(o.error_message),
            cost_usd=None if (cost := _storable_cost(o.cost_usd)) is None else str(cost),
            release=False,
        )
    return row


def _storable_cost(cost: Decimal | None) -> Decimal | None:
    """A cost PostgreSQL sums: a NaN or an infinity (a plugin adapter's arithmetic gone wrong)
    is stored as unknown, NULL. ``numeric`` accepts 'NaN', and one NaN row makes every
    ``SUM(cost_usd)`` of a tenant's spend NaN."""
    return cost if cost is not None and cost.is_finite() else None


_SURROGATE = re.compile("[\ud800-\udfff]")


def _storable(text: str | None) -> str | None:
    """Vendor text as PostgreSQL stores it. Text and jsonb both reject NUL characters, and
    both reject lone UTF-16 surrogates (``json.loads`` keeps an unpaired ``\\ud83d`` escape
    from a vendor's reply; PostgreSQL answers 22P02). Either in a provider's error message
    failed the write every time, so NULs are dropped and lone surrogates become U+FFFD (a
    surrogate pair becomes the character it encodes)."""
    if not text:
        return text
    text = text.replace("\x00", "")
    if _SURROGATE.search(text) is None:  # the usual case: no re-encoding
        return text
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _storable_value(value: Any) -> Any:
    """`_storable` applied to every string (keys too) of a JSON-like value; a NaN or an
    infinity (``json.loads`` and pydantic accept ``NaN``, ``"nan"`` and ``1e999`` in a
    vendor's reply, e.g. a clip's duration) becomes null: ``json.dumps`` writes them as
    ``NaN``/``Infinity``, which jsonb refuses."""
    if isinstance(value, str):
        return _storable(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {_storable_value(k): _storable_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_storable_value(v) for v in value]
    return value


def _storable_json(value: Any) -> str:
    """JSON for a jsonb column: jsonb rejects ``\\u0000`` and lone surrogates, which a
    provider's metadata (a title, a tag) could carry and which would fail the completion on
    every retry. Objects JSON cannot represent are stored as their (cleaned) text."""
    return json.dumps(_storable_value(value), default=lambda o: _storable(str(o)))


def write_back_params(writes: Sequence[PendingWrite]) -> dict[str, Any]:
    """All rows as one JSON array: psycopg dumps twelve Python lists element by element,
    ``json.dumps`` does the same rows in C (client CPU per row 17 → 10 µs, server time no
    worse; docs/benchmarks.md)."""
    return {"rows": json.dumps([_write_back_row(w) for w in writes])}


def _artifact_params(job: ClaimedJob, outcome: Complete) -> dict[str, Any]:
    arts = outcome.artifacts
    return {
        "tenant": job.tenant_id,
        "run_id": job.run_id,
        "run_step_id": job.run_step_id,
        "provider_id": job.provider_id,
        "ids": [a.id for a in arts],
        "types": [a.type for a in arts],
        "uris": [a.uri for a in arts],
        "hashes": [a.content_hash for a in arts],
        "sizes": [a.size_bytes for a in arts],
        "filenames": [_storable(a.filename) for a in arts],
        "metadatas": [_storable_json(dict(a.metadata)) for a in arts],
    }


__all__ = [
    "REJECTED",
    "TCP_KEEPALIVES",
    "Grant",
    "LeaseLost",
    "PendingWrite",
    "RecordedThenLost",
    "Repository",
    "open_pool",
    "rejected_outcome",
    "write_back_params",
]
