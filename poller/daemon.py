"""The long-running claim loop: claim due polls, step them concurrently, write back, repeat.

Structured concurrency throughout: one task group for the services (write-back flusher,
lease heartbeat, LISTEN), one for the step workers. SIGTERM stops claiming, gives in-flight
steps ``shutdown_grace_s`` to finish, then cancels the rest and hands their jobs back with a
fenced release (not counted as a failure). Anything not released is rescued by lease expiry.
Claimed jobs go to a pool of long-lived step workers (`poller.workers`), not to a new task
each: spawning tasks was the largest single cost of a poll that does no I/O.
"""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

import anyio
import psycopg
import structlog

from poller import metrics, scheduling, steps
from poller.budgets import CreateQueue, ProviderBudget
from poller.model import ClaimedJob, Complete, Finish, Outcome, Reschedule
from poller.repository import REJECTED, LeaseLost, PendingWrite, Repository, rejected_outcome
from poller.retrying import CountedCall, with_db_retry
from poller.settings import PollerSettings
from poller.wakeup import Listener
from poller.workers import Workers
from poller.writeback import WriteBackBatcher
from providers.base import Provider
from providers.settings import ProviderSettings
from storage import Ingestor

log = structlog.get_logger("poller")
_JOB_CONTEXT = ("job_id", "provider", "tenant_id")  # bound for the duration of a step
_DB_ERROR_DELAY_S = 1.0  # a step that hit a database error runs again this soon


@dataclass(slots=True)
class _InFlight:
    job: ClaimedJob
    claimed_at: float
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    lease_lost: bool = False
    writing: bool = False  # the outcome is being written: the lease ends with that write


def submit_bucket(provider: str) -> str:
    """Name of the ``app.provider_budgets`` row of a provider's create calls."""
    return f"{provider}:submit"


@dataclass(slots=True)
class _OutageHold:
    """How long a completion holding the only copy of an output waits out an outage: until
    the deadline, with backoff up to 10 s between attempts."""

    job: ClaimedJob
    deadline: datetime
    started: float = field(default_factory=time.monotonic)
    attempts: int = 0

    def next_wait(self) -> float | None:
        left = scheduling.remaining_s(self.job, self.deadline) - (time.monotonic() - self.started)
        if left <= 0:
            return None
        self.attempts += 1
        return min(left, 10.0, 0.5 * 2.0**self.attempts)


@dataclass(frozen=True, slots=True, kw_only=True)
class Adapter:
    """A configured provider: the adapter plus its settings."""

    provider: Provider
    settings: ProviderSettings


class Daemon:
    """One replica of the poller."""

    def __init__(
        self,
        *,
        repo: Repository,
        settings: PollerSettings,
        adapters: Mapping[str, Adapter],
        unserved: list[str],
        ingestor: Ingestor,
        database_url: str,
    ) -> None:
        self._repo = repo
        self._cfg = settings
        self._adapters = adapters
        self._unserved = unserved  # known providers without credentials: never claimed
        self._ingestor = ingestor
        self._budgets = {
            name: ProviderBudget(repo, name, chunk=settings.budget_chunk) for name in adapters
        }
        # Create calls of vendors with a create limit: one token per request, since a submit
        # is already a slow HTTP call and a local stock would keep tokens from other replicas.
        self._submit_budgets = {
            name: CreateQueue(ProviderBudget(repo, submit_bucket(name), chunk=1), rate_per_s=rate)
            for name, adapter in adapters.items()
            if (rate := adapter.settings.submit_rate_per_s) is not None
        }
        self._limits = steps.Limits(
            max_claims=settings.max_claims_without_writeback,
            error_budget=settings.error_budget,
            error_backoff_max_s=settings.error_backoff_max_s,
            auth_pause_s=settings.auth_pause_s,
        )
        self._batcher = WriteBackBatcher(
            repo,
            flush_s=settings.writeback_flush_s,
            on_applied=self._applied,
            on_idle=self._written_back,
        )
        self._listener = Listener(database_url, self.wake)
        self._contexts: dict[str, steps.StepContext] = {}
        # For the lines of every job (claimed, polled, finished): a logger bound now (logging
        # is configured before any daemon is built). The module's lazy proxy binds a new
        # logger on every call, 1.7 µs even for a debug line that level info then drops.
        self._job_log = log.bind()
        self._inflight: dict[uuid.UUID, _InFlight] = {}
        self._per_provider: Counter[str] = Counter()  # in-flight steps by provider
        self._wake = anyio.Event()
        self._stopping = anyio.Event()
        self._drain_when_done = False  # run(drain=True): exit once nothing is left
        self.draining = False
        self.ready = False

    # -- public control -------------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        """Begin a graceful shutdown (SIGTERM/SIGINT)."""
        if not self._stopping.is_set():
            log.info("daemon.stopping", inflight=len(self._inflight))
        self.draining = True
        self._stopping.set()
        self._wake.set()

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    async def run(self, *, drain: bool = False) -> None:
        """Run until `stop` (or, with ``drain``, until no serviceable job is active)."""
        self._drain_when_done = drain
        await self._prepare_budgets()
        async with anyio.create_task_group() as services:
            services.start_soon(self._batcher.run)
            services.start_soon(self._heartbeat)
            services.start_soon(self._listener.run)
            async with Workers(self._step, capacity=self._cfg.concurrency) as workers:
                self.ready = True
                await self._claim_loop(workers)
                self.ready = False
                await self._wind_down(workers)
            for entry in workers.unstarted:  # cancelled before any worker picked them up
                self._forget(entry)
                self._release(entry)
            # Shielded, but bounded: with the database gone the flush would retry for longer
            # than an orchestrator waits after SIGTERM; unwritten releases expire as leases.
            with anyio.move_on_after(max(5.0, self._cfg.shutdown_grace_s), shield=True):
                await self._batcher.flush()
            services.cancel_scope.cancel()
        log.info("daemon.stopped")

    # -- claim loop -----------------------------------------------------------------------

    async def _prepare_budgets(self) -> None:
        """Create or retune each provider's shared bucket, retried until the database answers
        (or `stop`): a PostgreSQL restart while a replica starts must not end the process."""
        backoff = 0.5
        while not self._stopping.is_set():
            try:
                for name, adapter in self._adapters.items():
                    s = adapter.settings
                    await self._repo.ensure_budget(
                        name, capacity=s.burst, refill_per_s=s.rate_per_s
                    )
                    if s.submit_rate_per_s is not None:
                        await self._repo.ensure_budget(
                            submit_bucket(name),
                            capacity=s.submit_burst,
                            refill_per_s=s.submit_rate_per_s,
                        )
                return
            except psycopg.OperationalError as exc:
                metrics.DB_ERRORS.labels("start").inc()
                log.warning("db.unavailable", error=str(exc), retry_in_s=backoff)
                with anyio.move_on_after(backoff):
                    await self._stopping.wait()
                backoff = min(backoff * 2, 5.0)

    async def _claim_loop(self, workers: Workers[_InFlight]) -> None:
        db_backoff = 0.5
        while not self._stopping.is_set():
            try:
                claimed, asked = await self._claim_round(workers)
                if self._drain_when_done and not claimed and await self._drained():
                    log.info("daemon.drained")
                    return
                wait = await self._next_wait(claimed, asked)
            except psycopg.Error as exc:
                metrics.DB_ERRORS.labels("claim").inc()
                log.warning("db.unavailable", error=str(exc), retry_in_s=db_backoff)
                wait, db_backoff = db_backoff, min(db_backoff * 2, 2.0)
            else:
                db_backoff = 0.5
            await self._sleep(wait)

    async def _claim_round(self, workers: Workers[_InFlight]) -> tuple[int, int]:
        free = self._cfg.concurrency - len(self._inflight)
        if free <= 0:
            return 0, 0
        asked = min(free, self._cfg.batch_size)
        claimed = await self._repo.claim(
            asked,
            excluded=self._excluded(),
            per_tenant=self._cfg.tenant_claim_share,
            slots=self._slots(asked),
        )
        metrics.CLAIM_ROUNDS.inc()
        now = time.monotonic()
        entries = [_InFlight(job=job, claimed_at=now) for job in claimed]
        for entry in entries:
            job = entry.job
            metrics.labelled(metrics.CLAIMED, job.provider_id).inc()
            metrics.LATENESS.observe(job.lateness_s)
            self._supersede(job)
            self._inflight[job.id] = entry
            self._per_provider[job.provider_id] += 1
            metrics.INFLIGHT.inc()
        try:
            await self._reserve_tokens(claimed)
        finally:  # claimed jobs always reach a worker, which finishes or releases them
            for entry in entries:
                workers.hand_over(entry)
        return len(claimed), asked

    async def _reserve_tokens(self, claimed: list[ClaimedJob]) -> None:
        """Take each provider's tokens for the whole batch before its steps start
        (`ProviderBudget.reserve`): they then never queue for tokens one by one."""
        for name, count in Counter(job.provider_id for job in claimed).items():
            budget = self._budgets.get(name)
            if budget is not None:
                await budget.reserve(count)

    def _slots(self, asked: int) -> dict[str, int]:
        """Steps each provider may still start, for those a full batch could push past their
        in-flight cap (`_excluded` already leaves out providers at it)."""
        counts = self._per_provider
        slots = {}
        for name, adapter in self._adapters.items():
            left = adapter.settings.max_in_flight - counts[name]
            if 0 < left < asked:
                slots[name] = left
        return slots

    def _supersede(self, job: ClaimedJob) -> None:
        """This replica claimed a job it still has a step for: that step's lease expired
        (a database outage stopped the heartbeat), so its result must be dropped."""
        stale = self._inflight.get(job.id)
        if stale is not None and not (stale.lease_lost or stale.writing):
            stale.lease_lost = True
            metrics.LEASE_LOST.inc()
            log.warning("lease.lost", **job.log_fields(), stage="reclaimed")
            stale.scope.cancel()

    def _excluded(self) -> list[str]:
        """Providers this replica must not claim for right now. A paused one is not among
        them: the claim skips its jobs by the shared pause, except those it must time out."""
        excluded = list(self._unserved)
        counts = self._per_provider
        for name, adapter in self._adapters.items():
            at_cap = counts[name] >= adapter.settings.max_in_flight
            budget = self._budgets[name]
            if at_cap or (budget.blocked and not budget.paused):
                excluded.append(name)
        return excluded

    def _written_back(self) -> None:
        """The last outcomes are written: a draining run may be done. Without this wake-up
        the loop slept until ``idle_poll_max_s`` (the written jobs' leases had looked like
        work due later), up to 2 s added to every ``run --drain``."""
        if self._drain_when_done and not self._inflight:
            self._wake.set()

    async def _drained(self) -> bool:
        if self._inflight or not self._batcher.idle:
            return False
        return not await self._repo.any_active(self._unserved)

    async def _next_wait(self, claimed: int, asked: int) -> float:
        if asked and claimed == asked:
            return 0.0  # a full batch: more is probably due right now
        cap = self._cfg.idle_poll_max_s
        if len(self._inflight) >= self._cfg.concurrency:
            return cap  # woken early when a slot frees up
        due_in = await self._repo.next_due_in(self._excluded())
        wait = cap if due_in is None else min(cap, max(0.0, due_in))
        return max(self._cfg.min_claim_gap_s, wait * random.uniform(0.95, 1.0))

    async def _sleep(self, seconds: float) -> None:
        """Until ``seconds`` pass or something wakes the loop, but not less than the minimum
        gap between claim rounds: every finishing step wakes the loop, and without the floor
        a replica keeping up with its polls ran one claim (and one look-up of the next due
        time) per poll, 1.3 database round trips per poll instead of 0.6."""
        if seconds > 0:
            floor = min(seconds, self._cfg.min_claim_gap_s)
            await anyio.sleep(floor)
            with anyio.move_on_after(seconds - floor):
                await self._wake.wait()
        self._wake = anyio.Event()

    def _forget(self, entry: _InFlight) -> None:
        """The job's slot is free again (its outcome, if any, is with the batcher). A step
        superseded by a newer claim of the same job leaves the newer entry in place."""
        if self._inflight.get(entry.job.id) is entry:
            del self._inflight[entry.job.id]
        self._per_provider[entry.job.provider_id] -= 1
        metrics.INFLIGHT.dec()

    # -- one job --------------------------------------------------------------------------

    async def _step(self, entry: _InFlight) -> None:
        job = entry.job
        ctx = self._context(job)
        # Every log line of the step names the job. The worker's task has a context of its
        # own, so binding and unbinding is enough: structlog's bound_contextvars also saves
        # and restores earlier values, copying the whole context for each job.
        structlog.contextvars.bind_contextvars(
            job_id=str(job.id), provider=job.provider_id, tenant_id=job.tenant_id
        )
        try:
            self._job_log.debug(
                "job.claimed",
                lease_version=job.lease_version,
                lateness_s=round(job.lateness_s, 3),
                status=job.status,
            )
            await self._advance_and_write(entry, ctx)
        finally:
            structlog.contextvars.unbind_contextvars(*_JOB_CONTEXT)
            self._forget(entry)
            self._wake.set()

    async def _advance_and_write(self, entry: _InFlight, ctx: steps.StepContext) -> None:
        job = entry.job
        outcome: Outcome | None = None
        steps.POLL_MADE.set(False)
        try:
            with entry.scope:
                outcome = await self._guarded_advance(job, ctx)
        except LeaseLost:
            # A fenced write inside the step (submit mark, provider job id) matched nothing:
            # an operator or another replica owns the job now. Drop this step's result.
            metrics.LEASE_LOST.inc()
            log.warning("lease.lost", stage="step")
            return
        except anyio.get_cancelled_exc_class():
            self._release(entry, polled=steps.POLL_MADE.get())
            raise
        if outcome is None:  # the heartbeat found the lease lost and cancelled the step
            return
        entry.writing = True
        deadline = steps.deadline_for(job, ctx)
        if isinstance(outcome, Complete):
            with anyio.CancelScope(shield=True):  # a cancelled completion would redo ingest
                await self._complete(job, outcome, deadline)
        else:  # handed to the batcher at once: nothing here can be cancelled half-way
            self._batcher.add(PendingWrite(job=job, outcome=outcome, deadline_at=deadline))

    async def _guarded_advance(self, job: ClaimedJob, ctx: steps.StepContext) -> Outcome:
        """Run the state machine; a bug in it must not take the daemon down.

        A database error inside a step (taking tokens, pausing a provider) is not the job's
        fault: it is retried soon without spending the job's error budget. Any other
        exception is a bug: it spends the budget like a provider error, so a job that
        crashes the step every time ends `failed` instead of looping until its deadline.
        """
        try:
            return await steps.advance(job, ctx)
        except LeaseLost:
            raise
        except (psycopg.Error, steps.DatabaseErrorAfterPoll) as exc:
            metrics.DB_ERRORS.labels("step").inc()
            log.warning("db.step_failed", error=str(exc))
            return Reschedule(
                status=job.status,
                delay_s=_DB_ERROR_DELAY_S,
                polled=isinstance(exc, steps.DatabaseErrorAfterPoll),  # `attempts` counts it
                error_count=job.error_count,
                last_error=f"database error: {exc}",
            )
        except Exception as exc:
            log.exception("job.step_crashed")
            polled = isinstance(exc, steps.CrashedAfterPoll)  # its text names the cause
            error = str(exc) if polled else f"{type(exc).__name__}: {exc}"
            return self._crashed(job, ctx, f"internal error: {error}", polled=polled)

    def _crashed(
        self, job: ClaimedJob, ctx: steps.StepContext, error: str, *, polled: bool
    ) -> Outcome:
        count = job.error_count + 1
        if count > self._limits.error_budget:
            return Finish(
                status="failed",
                error_message=f"gave up after {count} consecutive errors: {error}",
                polled=polled,
            )
        delay = scheduling.error_backoff(
            count,
            retry_after_s=None,
            max_s=self._limits.error_backoff_max_s,
            remaining=scheduling.remaining_s(job, steps.deadline_for(job, ctx)),
        )
        return Reschedule(
            status=job.status, delay_s=delay, error_count=count, last_error=error, polled=polled
        )

    def _release(self, entry: _InFlight, *, polled: bool = False) -> None:
        """Shutdown hand-back: due at once for another replica, not a failure (a status poll
        the step made before its cancel still counts in ``attempts``)."""
        if entry.lease_lost:
            return
        job = entry.job
        log.info("job.released")
        self._batcher.add(
            PendingWrite(
                job=job,
                outcome=Reschedule(
                    status=job.status,
                    delay_s=0.0,
                    polled=polled,
                    error_count=job.error_count,
                    release=True,
                ),
                deadline_at=None,
            )
        )

    def _context(self, job: ClaimedJob) -> steps.StepContext:
        """The same for every job of a provider: built once per provider name."""
        ctx = self._contexts.get(job.provider_id)
        if ctx is None:
            adapter = self._adapters.get(job.provider_id)
            ctx = steps.StepContext(
                provider=adapter.provider if adapter else None,
                settings=adapter.settings if adapter else None,
                budget=self._budgets.get(job.provider_id),
                submit_budget=self._submit_budgets.get(job.provider_id),
                ingestor=self._ingestor,
                db=self._repo,
                limits=self._limits,
                log=self._job_log,
            )
            if adapter is not None:  # unknown names come from rows: do not grow without bound
                self._contexts[job.provider_id] = ctx
        return ctx

    async def _complete(self, job: ClaimedJob, outcome: Complete, deadline: datetime) -> None:
        hold = _OutageHold(job, deadline) if not outcome.refetchable else None
        attempt = CountedCall(lambda: self._repo.complete(job, outcome, deadline))
        while True:
            try:
                await with_db_retry("complete", attempt)
            except (LeaseLost, psycopg.Error) as exc:
                outage = isinstance(exc, psycopg.OperationalError)
                if outage and hold is not None and await self._hold_lease(hold):
                    continue
                if not await self._completion_failed(job, outcome, deadline, exc, attempt.retried):
                    return
            self._finished(job, "completed", outcome.cost_usd, artifacts=len(outcome.artifacts))
            return

    async def _hold_lease(self, hold: _OutageHold) -> bool:
        """The database is unreachable and this completion holds the only copy of an output:
        wait, keep the lease, and try again until the deadline (or shutdown). A later poll
        could only report the result lost. False: give up (the caller logs why)."""
        wait = hold.next_wait()
        if wait is None or self._stopping.is_set():
            return False
        log.warning("db.retry_scheduled", operation="complete_only_copy", wait_s=round(wait, 3))
        await anyio.sleep(wait)
        try:
            kept = await self._repo.extend_leases([hold.job])
        except psycopg.Error:
            return True  # still down: the fenced completion tells whether the lease held
        return hold.job.id in kept

    async def _completion_failed(
        self,
        job: ClaimedJob,
        outcome: Complete,
        deadline: datetime,
        exc: LeaseLost | psycopg.Error,
        retried: bool,
    ) -> bool:
        """Handle a completion that raised; True when it had committed after all.

        * A retry of a completion whose first commit the client never saw hits its own
          artifact rows (IntegrityError) or its own released lease (LeaseLost): re-read the
          row before reporting a lost lease or a failure.
        * A value the database rejects (DataError/IntegrityError) is rejected on every
          attempt: fail the job (fenced, through the batcher) saying so, instead of letting
          the lease expire and re-downloading every output until the crash-loop guard.
        * Anything else is an outage: the lease expires and another round redoes the poll.
        """
        ambiguous = isinstance(exc, (LeaseLost, *REJECTED))  # what a landed first commit causes
        if ambiguous and retried and await self._committed_unseen(job):
            return True
        if isinstance(exc, LeaseLost):
            metrics.LEASE_LOST.inc()
            log.warning("lease.lost", stage="complete")
        elif isinstance(exc, REJECTED):
            metrics.DB_ERRORS.labels("complete").inc()
            log.error("db.complete_rejected", error=str(exc))
            failed = rejected_outcome(exc, polled=outcome.polled)
            self._batcher.add(PendingWrite(job=job, outcome=failed, deadline_at=deadline))
        else:
            metrics.DB_ERRORS.labels("complete").inc()
            log.error("db.complete_abandoned", error=str(exc))
        return False

    async def _committed_unseen(self, job: ClaimedJob) -> bool:
        try:
            return job.id in await self._repo.released_at_version([job])
        except psycopg.Error:
            return False

    def _applied(self, write: PendingWrite) -> None:
        """Runs in the write-back task, outside the job's step: name the job explicitly
        (cheaper than binding context variables for one line)."""
        outcome = write.outcome
        if isinstance(outcome, Finish):
            job = write.job
            self._finished(
                job,
                outcome.status,
                outcome.cost_usd,
                **job.log_fields(),  # outside the step: its bound context is absent
                error=outcome.error_message,
            )

    def _finished(
        self, job: ClaimedJob, status: str, cost: Decimal | None, **fields: object
    ) -> None:
        metrics.labelled(metrics.FINISHED, job.provider_id, status).inc()
        # A counter raises on a negative amount (a plugin reporting a credit), here in a
        # worker or the write-back task, which took the daemon down; NaN would stick for good.
        if cost is not None and cost.is_finite() and cost > 0:
            metrics.COST.labels(job.provider_id).inc(float(cost))
        event = "job.completed" if status == "completed" else f"job.{status}"
        self._job_log.info(event, status=status, **fields)

    # -- leases -----------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        """Extend leases of long steps (slow provider, big download); cancel lost ones."""
        period = self._cfg.lease_ttl_s / 3
        while True:
            await anyio.sleep(period)
            cutoff = time.monotonic() - period
            old = [e for e in self._inflight.values() if e.claimed_at <= cutoff and not e.writing]
            if not old:
                continue
            try:
                kept = await self._repo.extend_leases([e.job for e in old])
            except psycopg.Error as exc:
                metrics.DB_ERRORS.labels("heartbeat").inc()
                log.warning("db.heartbeat_failed", error=str(exc))
                continue
            for entry in old:
                # A step that began writing meanwhile released the lease itself.
                if entry.job.id not in kept and not entry.writing:
                    entry.lease_lost = True
                    metrics.LEASE_LOST.inc()
                    log.warning("lease.lost", **entry.job.log_fields(), stage="heartbeat")
                    entry.scope.cancel()

    async def _wind_down(self, workers: Workers[_InFlight]) -> None:
        grace = self._cfg.shutdown_grace_s
        log.info("daemon.draining", inflight=len(self._inflight), grace_s=grace)
        with anyio.move_on_after(grace):
            while self._inflight:
                await self._sleep(0.05)
        if self._inflight:
            log.info("daemon.releasing", jobs=len(self._inflight))
        workers.cancel()
