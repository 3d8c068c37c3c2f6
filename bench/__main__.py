"""`make bench`: every benchmark, one PostgreSQL, ``name: value`` lines, a summary last.

``python -m bench [claim] [inflight] [detect] [http] [ingest] [metadata] [--quick]``: no names =
all of them.
``--quick`` shortens every run (a smoke test of the harness; its figures are not results).
A benchmark that crashes is reported and the others still run; the exit status is then 1.
Missed goals are results, not failures: they are printed as ``miss`` and exit 0.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from importlib.metadata import version

from bench import compare_claim, detect, http_client, inflight, ingest, pg
from bench.report import Recorder, Value

SUMMARY = (
    "claim_ratio_vs_pgqueuer",
    "poll_lateness_p99_s",
    "inflight_peak_rss_mb",
    "db_roundtrips_per_poll",
    "detect_latency_p99_s",
    "ingest_ratio_vs_curl",
    "ingest_rss_growth_mb",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Goal:
    name: str
    limit: float
    at_least: bool  # True: value ≥ limit passes; False: value ≤ limit passes

    def verdict(self, value: Value | None) -> str:
        if not isinstance(value, int | float):
            return "n/a"
        ok = value >= self.limit if self.at_least else value <= self.limit
        return "pass" if ok else "miss"


GOALS = (
    Goal(name="claim_ratio_vs_pgqueuer", limit=2.0, at_least=True),
    Goal(name="poll_lateness_p99_s", limit=1.0, at_least=False),
    Goal(name="inflight_peak_rss_mb", limit=300.0, at_least=False),
    Goal(name="db_roundtrips_per_poll", limit=1.0, at_least=False),
    Goal(name="ingest_ratio_vs_curl", limit=0.7, at_least=True),
    Goal(name="ingest_rss_growth_mb", limit=64.0, at_least=False),
)

BENCHMARKS = ("claim", "inflight", "detect", "http", "ingest", "metadata")


@dataclass(frozen=True, slots=True, kw_only=True)
class Plans:
    claim: compare_claim.ClaimPlan
    inflight: Sequence[inflight.InflightPlan]  # the goal run first, then the knee, then light
    detect: detect.DetectPlan
    http: http_client.HttpPlan


def _plans(quick: bool) -> Plans:
    if not quick:
        return Plans(
            claim=compare_claim.ClaimPlan(),
            inflight=(
                inflight.InflightPlan(),
                inflight.InflightPlan(jobs=6_000, warmup_s=8, window_s=20, label="6k"),
                inflight.InflightPlan(jobs=1_000, warmup_s=5, window_s=20, label="1k"),
            ),
            detect=detect.DetectPlan(),
            http=http_client.HttpPlan(),
        )
    return Plans(
        claim=compare_claim.ClaimPlan(
            seconds=3, drain_jobs=1000, drain_batches=(10, 50), drain_jobs_small={10: 1000}
        ),
        inflight=(inflight.InflightPlan(jobs=1000, warmup_s=3, window_s=5),),
        detect=detect.DetectPlan(jobs=20, first_done_s=3, spread_s=2),
        http=http_client.HttpPlan(polls=500, concurrencies=(256,)),
    )


def _machine(rec: Recorder) -> None:
    cpu = "unknown"
    with open("/proc/cpuinfo") as info:
        cpu = next((ln.split(":", 1)[1].strip() for ln in info if ln.startswith("model name")), cpu)
    with open("/proc/meminfo") as info:
        mem_kb = next(int(ln.split()[1]) for ln in info if ln.startswith("MemTotal:"))
    rec.emit("bench_date", time.strftime("%Y-%m-%d %H:%M:%S %Z"))
    rec.emit("bench_nproc", os.cpu_count() or 0)
    rec.emit("bench_cpu_model", cpu)
    rec.emit("bench_ram_gib", round(mem_kb / 1024**2, 1))
    rec.emit("bench_kernel", platform.release())
    rec.emit("bench_loadavg_at_start", " ".join(f"{x:.2f}" for x in os.getloadavg()))
    rec.emit("bench_python", platform.python_version())
    for package in ("pgqueuer", "psycopg", "asyncpg", "httpx", "aiohttp", "anyio"):
        rec.emit(f"bench_{package}", version(package))


def _guarded(rec: Recorder, name: str, step: Callable[[], None], failures: list[str]) -> None:
    """Run one benchmark; a crash is reported and recorded, never stops the others."""
    rec.note(f"==== {name} ====")
    started = time.perf_counter()
    try:
        step()
    except Exception as exc:
        failures.append(name)
        rec.note(f"{name} FAILED: {type(exc).__name__}: {exc}")
        traceback.print_exc(file=sys.stdout)
    rec.emit(f"{name}_bench_seconds", round(time.perf_counter() - started, 1))


def _verdicts(rec: Recorder) -> None:
    for goal in GOALS:
        sign = "≥" if goal.at_least else "≤"
        verdict = goal.verdict(rec.values.get(goal.name))
        rec.note(f"goal {goal.name} {sign} {goal.limit:g}: {verdict}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("benchmarks", nargs="*", metavar="NAME", help=", ".join(BENCHMARKS))
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    args = parser.parse_args(argv)
    unknown = set(args.benchmarks) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s) {sorted(unknown)}; choose from {BENCHMARKS}")
    selected = args.benchmarks or list(BENCHMARKS)
    plans = _plans(args.quick)
    rec = Recorder()
    failures: list[str] = []
    _machine(rec)
    url = ""
    ingest_args = ["--size-mib", "64", "--rss-size-mib", "256", "--runs", "1"] if args.quick else []
    metadata_args = ["--files", "100", "--rounds", "1", "--startups", "1"] if args.quick else []
    with ExitStack() as stack:
        if set(selected) & {"claim", "inflight", "detect"}:
            url = stack.enter_context(pg.bench_cluster())
            rec.emit("bench_postgresql", pg.server_version(url))
        steps: dict[str, Callable[[], None]] = {
            "claim": lambda: compare_claim.run(url, rec, plans.claim),
            "inflight": lambda: inflight.run_all(url, rec, plans.inflight),
            "detect": lambda: detect.run(url, rec, plans.detect),
            "http": lambda: http_client.run(rec, plans.http),
            "ingest": lambda: ingest.run(rec, *ingest_args),
            "metadata": lambda: ingest.run(rec, *metadata_args, script=ingest.METADATA_SCRIPT),
        }
        for name in BENCHMARKS:
            if name in selected:
                _guarded(rec, name, steps[name], failures)
    rec.save(pg.WORK / "results.json")
    _verdicts(rec)
    rec.summary(SUMMARY)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
