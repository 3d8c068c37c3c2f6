"""10,000 active jobs, each polled every 5 s, through the simulator's Replicate API.

The daemon (``main.py run``, its own process) polls 2,000 jobs/s on average if it keeps up.
After a warm-up, one window is measured: poll lateness (the daemon's own
``poller_poll_lateness_seconds`` histogram: claim time minus due time, database clock),
polls/s, the daemon's CPU and peak RSS, and the daemon role's statements per poll. The jobs
never finish during the run (simulator ``--complete-after-polls 0``), so the active set
stays at 10,000; their first polls are spread over one interval, as in a system that has
been running for a while.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import psutil

from bench import pg, procs
from bench.e2e import create_predictions, replicate_params
from bench.jobs import insert_submitted_jobs
from bench.report import Recorder, histogram_quantile, share_at_most

LATENESS = "poller_poll_lateness_seconds"
POLL_CALLS = "poller_provider_call_seconds_count"


@dataclass(frozen=True, slots=True, kw_only=True)
class InflightPlan:
    jobs: int = 10_000
    interval_s: float = 5.0
    warmup_s: float = 10.0
    window_s: float = 40.0
    concurrency: int = 256  # jobs stepped at once (= concurrent provider requests)
    batch: int = 50
    label: str = ""  # "" = the goal run (summary names); else a prefix for a second run

    def name(self, base: str) -> str:
        """Figure names: the goal run keeps the summary's names, another run is prefixed."""
        if not self.label:
            return base
        return f"inflight_{self.label}_{base.removeprefix('inflight_')}"


def daemon_settings(plan: InflightPlan) -> dict[str, str]:
    """Replicate's budgets opened up for the simulator (DESIGN.md §10: set explicitly)."""
    return {
        "REPLICATE_RATE_PER_S": "5000",
        "REPLICATE_BURST": "5000",
        "REPLICATE_SUBMIT_RATE_PER_S": "5000",
        "REPLICATE_SUBMIT_BURST": "5000",
        "REPLICATE_MAX_IN_FLIGHT": str(plan.concurrency),
        "POLLER_CONCURRENCY": str(plan.concurrency),
        "POLLER_BATCH_SIZE": str(plan.batch),
        "POLLER_DB_POOL_SIZE": "4",
        "POLLER_LOG_LEVEL": "info",
    }


def run_all(cluster_url: str, rec: Recorder, plans: Sequence[InflightPlan]) -> None:
    for plan in plans:
        run(cluster_url, rec, plan)


def run(cluster_url: str, rec: Recorder, plan: InflightPlan) -> None:
    with pg.scratch_database(cluster_url, f"ours_inflight{plan.label}") as db:
        _run(db, rec, plan)


def _run(db: pg.BenchDatabase, rec: Recorder, plan: InflightPlan) -> None:
    logs = pg.WORK / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    port = procs.free_port()
    with procs.simulator(logs / "sim-inflight.log", "--complete-after-polls", "0") as (url, sim):
        ids = create_predictions(url, plan.jobs)
        insert_submitted_jobs(
            db.admin_url,
            ids,
            provider="replicate",
            interval_ms=int(plan.interval_s * 1000),
            spread_s=plan.interval_s,
            params=replicate_params(0, None),
        )
        env = procs.daemon_env(
            db.daemon_url,
            url,
            STORAGE_URL=f"file://{pg.WORK / 'artifacts'}",
            POLLER_HTTP_PORT=str(port),
            **daemon_settings(plan),
        )
        with procs.daemon(env, logs / "daemon-inflight.log") as proc:
            procs.wait_ready(port, proc)
            time.sleep(plan.warmup_s)
            _measure(db, rec, plan, port=port, daemon_pid=proc.pid, sim=sim)


def _measure(
    db: pg.BenchDatabase,
    rec: Recorder,
    plan: InflightPlan,
    *,
    port: int,
    daemon_pid: int,
    sim: psutil.Process,
) -> None:
    daemon = psutil.Process(daemon_pid)
    server = procs.postmaster(pg.WORK / "pg")
    pg.reset_statements(db)
    before = procs.scrape(port)
    cpu = (procs.cpu_seconds(daemon), procs.cpu_seconds(sim), _db_cpu(server))
    start = time.perf_counter()
    time.sleep(plan.window_s)
    after = procs.scrape(port)
    elapsed = time.perf_counter() - start
    cpu_after = (procs.cpu_seconds(daemon), procs.cpu_seconds(sim), _db_cpu(server))
    statements = pg.daemon_totals(db).statements
    polls = after.total(POLL_CALLS, call="poll") - before.total(POLL_CALLS, call="poll")
    lateness = procs.bucket_delta(before.buckets(LATENESS), after.buckets(LATENESS))
    figures: dict[str, float] = {
        "inflight_jobs": plan.jobs,
        "inflight_target_polls_per_s": plan.jobs / plan.interval_s,
        "inflight_polls_per_s": polls / elapsed,
        "poll_lateness_p50_s": histogram_quantile(0.5, lateness),
        "poll_lateness_p99_s": histogram_quantile(0.99, lateness),
        "poll_lateness_share_within_1s": share_at_most(1.0, lateness),
        "inflight_daemon_cpu_pct": 100 * (cpu_after[0] - cpu[0]) / elapsed,
        "inflight_simulator_cpu_pct": 100 * (cpu_after[1] - cpu[1]) / elapsed,
        "inflight_postgres_cpu_pct": 100 * (cpu_after[2] - cpu[2]) / elapsed,
        "inflight_peak_rss_mb": procs.peak_rss_mb(daemon_pid),
        "inflight_db_statements": statements,
        "db_roundtrips_per_poll": statements / polls if polls else float("nan"),
    }
    for base, value in figures.items():
        rec.emit(plan.name(base), value)
    top = max((bound for bound, _ in lateness if bound != float("inf")), default=0.0)
    if share_at_most(top, lateness) < 0.99:
        rec.note(f"poll lateness p99 is past the histogram's top bound: at least {top:g} s")
    for cost in pg.statement_breakdown(db, limit=6):
        rec.note(f"inflight{plan.label} statements: {cost.line()}")


def _db_cpu(server: psutil.Process) -> float:
    return procs.cpu_seconds(server, children=True)
