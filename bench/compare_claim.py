"""Claim → no-op poll → write-back: our daemon against pgqueuer, same server, same run.

pgqueuer runs its own tool in its tuned configuration (2 dequeuers x batch 50, enqueue
batch 50; ``reference/queues.md`` §1.8) with both of its PostgreSQL drivers, in both of its
modes; ours runs the same modes at batch sizes 1, 10, 50 (throughput: 10 and 50). Every
run lasts at least 30 s (DESIGN §10): throughput mode by its timer, drain mode by the depth
of the backlog: 450,000 jobs for pgqueuer and for our batch 50 (pgqueuer's asyncpg driver
drained 300,000 in 25 s on a quiet host), fewer for our smaller batches, which are slower
per job. A 10,000-job drain lasts under two seconds and measures a shallow queue only: both
sides drain a deep one roughly a third more slowly.
Reported: every run, the ratio of the bests per mode, and the ratio of the overall bests
(``claim_ratio_vs_pgqueuer``, goal ≥ 2.0). Runs alternate peer / ours per mode so a drift in
machine load hits both sides alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench import claim, pg, pgqueuer_peer
from bench.costs import JobCost
from bench.report import Recorder

PEER_CONFIGS = (
    pgqueuer_peer.PeerConfig(driver="psy", dequeue=2, batch=50),
    pgqueuer_peer.PeerConfig(driver="apg", dequeue=2, batch=50),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimPlan:
    seconds: float = 30.0  # throughput mode (≥ 30 s)
    drain_jobs: int = 450_000  # pgqueuer's drains and ours at the largest batch
    drain_batches: Sequence[int] = (1, 10, 50)
    # Smaller batches drain fewer jobs, sized to last ≥ 30 s at their rate (a rate per job
    # is comparable): 450,000 single-job claim rounds would take ten minutes.
    drain_jobs_small: Mapping[int, int] = field(default_factory=lambda: {1: 30_000, 10: 150_000})
    throughput_batches: Sequence[int] = (10, 50)
    insert_batch: int = 50  # our producer's INSERT size = pgqueuer's enqueue batch


def run(cluster_url: str, rec: Recorder, plan: ClaimPlan) -> None:
    with (
        pg.scratch_database(cluster_url, "pgq_bench", migrate=False) as peer_db,
        pg.scratch_database(cluster_url, "ours_claim") as ours_db,
    ):
        _compare(peer_db, ours_db, rec, plan)


def _compare(
    peer_db: pg.BenchDatabase, ours_db: pg.BenchDatabase, rec: Recorder, plan: ClaimPlan
) -> None:
    logs = pg.WORK / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    tool = pgqueuer_peer.fetch_tool()
    pgqueuer_peer.install_schema(peer_db.admin_url, logs / "pgqueuer.log")
    rec.note(
        f"pgqueuer {pgqueuer_peer.pgqueuer_version()} tools/benchmark.py: "
        + ", ".join(c.label for c in PEER_CONFIGS)
    )
    best: dict[str, tuple[float, float]] = {}
    with claim.daemon_logs(logs / "claim-daemon.log"):
        for mode in ("throughput", "drain"):
            peer = _peer_mode(tool, peer_db, rec, plan, mode, logs / "pgqueuer.log")
            ours = _ours_mode(ours_db, rec, plan, mode)
            best[mode] = (ours, peer)
            rec.emit(f"claim_ratio_{mode}", ours / peer if peer else float("nan"))
    ours_best = max(o for o, _ in best.values())
    peer_best = max(p for _, p in best.values())
    rec.emit("claim_best_ours_jobs_per_s", ours_best)
    rec.emit("claim_best_pgqueuer_jobs_per_s", peer_best)
    rec.emit("claim_ratio_vs_pgqueuer", ours_best / peer_best if peer_best else float("nan"))


def _peer_mode(
    tool: Path, db: pg.BenchDatabase, rec: Recorder, plan: ClaimPlan, mode: str, log: Path
) -> float:
    rates = []
    for config in PEER_CONFIGS:
        result = pgqueuer_peer.run_tool(
            tool,
            db,
            config,
            mode=mode,
            seconds=plan.seconds,
            jobs=plan.drain_jobs,
            log=log,
        )
        rec.emit(f"pgqueuer_{mode}_{config.label}_tool_jobs_per_s", result.tool_rate)
        rec.emit(f"pgqueuer_{mode}_{config.label}_log_jobs_per_s", result.log_rate)
        rec.emit(f"pgqueuer_{mode}_{config.label}_jobs_per_s", result.rate)
        _emit_cost(rec, f"pgqueuer_{mode}_{config.label}", result.cost)
        rates.append(result.rate)
    return max(rates)


def _ours_mode(db: pg.BenchDatabase, rec: Recorder, plan: ClaimPlan, mode: str) -> float:
    storage = pg.WORK / "artifacts"
    rates = []
    batches = plan.drain_batches if mode == "drain" else plan.throughput_batches
    for batch in batches:
        if mode == "drain":
            jobs = plan.drain_jobs_small.get(batch, plan.drain_jobs)
            result = claim.run_drain(db, jobs=jobs, batch=batch, storage_root=storage)
        else:
            result = claim.run_throughput(
                db,
                seconds=plan.seconds,
                batch=batch,
                insert_batch=plan.insert_batch,
                storage_root=storage,
            )
        rec.emit(f"ours_{mode}_b{batch}_jobs_per_s", result.rate)
        rec.emit(f"ours_{mode}_b{batch}_roundtrips_per_poll", result.roundtrips_per_poll)
        _emit_cost(rec, f"ours_{mode}_b{batch}", result.cost)
        rates.append(result.rate)
    return max(rates)


def _emit_cost(rec: Recorder, prefix: str, cost: JobCost | None) -> None:
    """Client CPU and server time per job: where the difference in rate comes from."""
    if cost is not None:
        rec.emit(f"{prefix}_client_cpu_us_per_job", cost.client_us)
        rec.emit(f"{prefix}_server_us_per_job", cost.server_us)
