"""Our claim loop's throughput: claim → no-op poll → fenced write-back, in-process.

Two modes, the same as pgqueuer's tool (`bench.pgqueuer_peer`):

* drain - 10,000 due jobs are inserted, then a `Daemon` with ``run(drain=True)`` is timed
  until it exits (nothing active left);
* throughput - one producer task inserts batches of jobs as fast as it can on its own
  connection while the daemon claims and finishes them, for a fixed time; the rate is jobs
  finished (write-back applied) per second.

The daemon is the real one (`poller.daemon.Daemon`, real pool, real SQL, real write-back
batcher, LISTEN wake-ups) with `bench.noop.NoopProvider`; only its process is shared with
the producer, exactly as pgqueuer's tool shares one event loop between its producer and
consumers. Round trips are the daemon role's statements in ``pg_stat_statements``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import psycopg
import structlog
from prometheus_client import REGISTRY

from bench import pg
from bench.costs import JobCost, cpu_time, per_job
from bench.jobs import count_by_status, insert_noop_batch, insert_noop_jobs
from bench.noop import NAME, NoopProvider, noop_settings
from poller.daemon import Adapter, Daemon
from poller.logs import configure_logging
from poller.repository import Repository, open_pool
from poller.settings import PollerSettings
from storage import StorageConfig, open_storage


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimRun:
    """One measured run of our daemon."""

    mode: str  # "drain" | "throughput"
    batch: int
    jobs: int
    seconds: float
    statements: int
    cost: JobCost | None  # the harness process's CPU (daemon + producer) and the daemon's SQL

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds if self.seconds > 0 else 0.0

    @property
    def roundtrips_per_poll(self) -> float:
        return self.statements / self.jobs if self.jobs else float("nan")


def daemon_settings(batch: int) -> PollerSettings:
    """Production defaults except the batch size under test and room for a full batch.

    ``concurrency`` is several batches so a claim never waits for slots while the previous
    batch's write-back is in flight; ``budget_chunk`` (tokens per budget round trip) is the
    batch size, as an operator of a high-rate provider would set it.
    """
    return PollerSettings(
        batch_size=batch,
        concurrency=max(64, 4 * batch),
        budget_chunk=max(10, batch),
        lease_ttl_s=60,
        shutdown_grace_s=5,
        worker_id=f"bench-claim-b{batch}",
    )


def finished_count() -> float:
    value = REGISTRY.get_sample_value(
        "poller_jobs_finished_total", {"provider": NAME, "status": "failed"}
    )
    return value or 0.0


@contextmanager
def daemon_logs(path: Path, level: str = "info") -> Iterator[None]:
    """The daemon logs as in production (JSON, level info), into a file instead of stdout."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as stream:
        configure_logging(level=level, fmt="json", stream=stream)
        try:
            yield
        finally:  # nothing may log into the closed file afterwards (alembic, psycopg …)
            logging.getLogger().handlers.clear()
            structlog.reset_defaults()


def truncate_jobs(db: pg.BenchDatabase) -> None:
    with psycopg.connect(db.admin_url, autocommit=True) as conn:
        conn.execute("TRUNCATE app.generation_jobs")
        conn.execute("VACUUM ANALYZE app.generation_jobs")


class _Harness:
    """A daemon wired to the no-op provider and local storage, for one batch size."""

    def __init__(self, db: pg.BenchDatabase, batch: int, storage_root: Path) -> None:
        self.db = db
        self.cfg = daemon_settings(batch)
        self.storage_root = storage_root

    async def run(self, *, drain: bool, stop_after: float | None = None) -> Daemon:
        pool = open_pool(self.db.daemon_url, size=self.cfg.db_pool_size)
        await pool.open()
        config = StorageConfig(storage_url=f"file://{self.storage_root}")
        try:
            async with open_storage(config) as ingestor:
                daemon = Daemon(
                    repo=Repository(pool, owner=self.cfg.effective_worker_id(), lease_s=60),
                    settings=self.cfg,
                    adapters={NAME: Adapter(provider=NoopProvider(), settings=noop_settings())},
                    unserved=[],
                    ingestor=ingestor,
                    database_url=self.db.daemon_url,
                )
                await self._run(daemon, drain=drain, stop_after=stop_after)
        finally:
            await pool.close()
        return daemon

    @staticmethod
    async def _run(daemon: Daemon, *, drain: bool, stop_after: float | None) -> None:
        if stop_after is None:
            await daemon.run(drain=drain)
            return
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: daemon.run(drain=False))
            await anyio.sleep(stop_after)
            daemon.stop()


def run_drain(db: pg.BenchDatabase, *, jobs: int, batch: int, storage_root: Path) -> ClaimRun:
    """Insert ``jobs`` due no-op jobs, then time a draining daemon until it exits."""
    truncate_jobs(db)
    insert_noop_jobs(db.admin_url, jobs, provider=NAME)
    pg.reset_statements(db)
    harness = _Harness(db, batch, storage_root)
    with cpu_time() as cpu:
        start = time.perf_counter()
        anyio.run(lambda: harness.run(drain=True), backend="asyncio")
        elapsed = time.perf_counter() - start
    done = count_by_status(db.admin_url).get("failed", 0)
    if done != jobs:
        raise RuntimeError(f"drain finished {done} of {jobs} jobs")
    totals = pg.daemon_totals(db)
    return ClaimRun(
        mode="drain",
        batch=batch,
        jobs=jobs,
        seconds=elapsed,
        statements=totals.statements,
        cost=per_job(client_s=cpu.seconds, server_ms=totals.server_ms, jobs=jobs),
    )


async def _produce(url: str, batch: int, stop: anyio.Event) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        while not stop.is_set():
            await insert_noop_batch(conn, batch, NAME)


async def _throughput(
    harness: _Harness, *, seconds: float, insert_batch: int
) -> tuple[float, float]:
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_produce, harness.db.admin_url, insert_batch, stop)
        before = finished_count()
        start = time.perf_counter()
        await harness.run(drain=False, stop_after=seconds)
        elapsed = time.perf_counter() - start
        stop.set()
    return finished_count() - before, elapsed


def run_throughput(
    db: pg.BenchDatabase, *, seconds: float, batch: int, insert_batch: int, storage_root: Path
) -> ClaimRun:
    """Producer and daemon together for ``seconds``; counts jobs whose write-back applied."""
    truncate_jobs(db)
    pg.reset_statements(db)
    harness = _Harness(db, batch, storage_root)
    with cpu_time() as cpu:
        done, elapsed = anyio.run(
            lambda: _throughput(harness, seconds=seconds, insert_batch=insert_batch),
            backend="asyncio",
        )
    totals = pg.daemon_totals(db)
    return ClaimRun(
        mode="throughput",
        batch=batch,
        jobs=int(done),
        seconds=elapsed,
        statements=totals.statements,
        cost=per_job(client_s=cpu.seconds, server_ms=totals.server_ms, jobs=int(done)),
    )
