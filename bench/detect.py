"""End-to-end detection latency: provider done → job ``completed`` in the database.

Jobs are created at the simulator's Replicate API with ``seconds:T`` scenarios (done T s
after creation, T spread over a window) and polled every second by ``main.py run --drain``,
which exits once every job is terminal. For each job the simulator reports the exact instant
it became done (``/_sim/jobs`` ``done_at``; a time-based job crosses "done" between polls) and
when a poll first saw it (``seen_done_at``); the database has ``completed_at`` (after the
output was downloaded, hashed, stored and the artifact rows committed). Both clocks are this
machine's wall clock.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
import psycopg

from bench import pg, procs
from bench.e2e import create_predictions, replicate_params
from bench.jobs import insert_submitted_jobs
from bench.report import Recorder, percentile


@dataclass(frozen=True, slots=True, kw_only=True)
class DetectPlan:
    jobs: int = 100
    interval_s: float = 1.0
    first_done_s: float = 5.0  # the daemon is up well before the first job is done
    spread_s: float = 10.0


def _done_after(plan: DetectPlan, index: int) -> float:
    return plan.first_done_s + plan.spread_s * index / max(1, plan.jobs - 1)


def run(cluster_url: str, rec: Recorder, plan: DetectPlan) -> None:
    with pg.scratch_database(cluster_url, "ours_detect") as db:
        _run(db, rec, plan)


def _run(db: pg.BenchDatabase, rec: Recorder, plan: DetectPlan) -> None:
    logs = pg.WORK / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with procs.simulator(logs / "sim-detect.log", "--complete-after-polls", "0") as (url, _):
        ids = create_predictions(
            url, plan.jobs, scenario_of=lambda i: f"seconds:{_done_after(plan, i):.3f}"
        )
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
            REPLICATE_RATE_PER_S="5000",
            REPLICATE_BURST="5000",
            REPLICATE_SUBMIT_RATE_PER_S="5000",
            REPLICATE_SUBMIT_BURST="5000",
        )
        with procs.daemon(env, logs / "daemon-detect.log", "--drain") as proc:
            proc.wait(timeout=plan.first_done_s + plan.spread_s + 120)
        sim_jobs = httpx.get(f"{url}/_sim/jobs", timeout=30).json()["jobs"]
    _report(db, rec, {j["id"]: j for j in sim_jobs})


def _report(db: pg.BenchDatabase, rec: Recorder, sim_jobs: dict[str, dict[str, object]]) -> None:
    with psycopg.connect(db.admin_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT provider_job_id, status, extract(epoch FROM completed_at)::float8"
            "  FROM app.generation_jobs"
        ).fetchall()
    completed = [(pid, done) for pid, status, done in rows if status == "completed"]
    end_to_end, polled = [], []
    for pid, completed_at in completed:
        job = sim_jobs[pid]
        done_at = float(str(job["done_at"]))
        end_to_end.append(float(completed_at) - done_at)
        if job.get("seen_done_at") is not None:
            polled.append(float(str(job["seen_done_at"])) - done_at)
    rec.emit("detect_jobs_completed", f"{len(completed)}/{len(rows)}")
    rec.emit("detect_poll_latency_p50_s", percentile(polled, 0.5))
    rec.emit("detect_poll_latency_p99_s", percentile(polled, 0.99))
    rec.emit("detect_latency_p50_s", percentile(end_to_end, 0.5))
    rec.emit("detect_latency_p99_s", percentile(end_to_end, 0.99))
    rec.emit("detect_latency_max_s", max(end_to_end, default=float("nan")))
