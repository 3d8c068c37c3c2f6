"""The benchmark harness's own arithmetic and parsing: wrong here means wrong figures."""

from __future__ import annotations

import math
import time

import pytest

from bench.__main__ import Goal
from bench.costs import cpu_time, per_job
from bench.inflight import InflightPlan
from bench.ingest import parse_value
from bench.noop import NoopProvider
from bench.pg import as_role
from bench.pgqueuer_peer import PeerConfig, PeerRun, libpq_env
from bench.report import Recorder, format_value, histogram_quantile, percentile, share_at_most
from providers.types import JobHandle, PollState

BUCKETS = [(0.1, 50.0), (0.5, 90.0), (1.0, 99.0), (2.0, 100.0), (math.inf, 100.0)]


def test_histogram_quantile_interpolates_inside_the_bucket_like_prometheus() -> None:
    assert histogram_quantile(0.5, BUCKETS) == pytest.approx(0.1)
    assert histogram_quantile(0.7, BUCKETS) == pytest.approx(0.3)  # halfway 0.1 → 0.5
    assert histogram_quantile(0.99, BUCKETS) == pytest.approx(1.0)
    assert histogram_quantile(0.995, BUCKETS) == pytest.approx(1.5)


def test_histogram_quantile_in_the_inf_bucket_returns_the_last_finite_bound() -> None:
    late = [(1.0, 10.0), (30.0, 20.0), (math.inf, 100.0)]
    assert histogram_quantile(0.99, late) == 30.0


def test_histogram_quantile_of_an_empty_histogram_is_nan() -> None:
    assert math.isnan(histogram_quantile(0.5, [(1.0, 0.0), (math.inf, 0.0)]))
    assert math.isnan(histogram_quantile(0.5, []))


def test_share_at_most_reads_the_bucket_exactly() -> None:
    assert share_at_most(1.0, BUCKETS) == pytest.approx(0.99)
    assert share_at_most(0.05, BUCKETS) == 0.0


def test_percentile_is_nearest_rank() -> None:
    samples = [float(i) for i in range(1, 101)]
    assert percentile(samples, 0.5) == 50.0
    assert percentile(samples, 0.99) == 99.0
    assert percentile([3.0], 0.99) == 3.0
    assert math.isnan(percentile([], 0.5))


def test_recorder_prints_name_value_lines_and_the_summary_last(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rec = Recorder()
    rec.emit("a_ratio", 2.123456)
    rec.emit("b_count", 7)
    rec.summary(["b_count", "missing"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "a_ratio: 2.123"
    assert lines[-2:] == ["b_count: 7", "missing: n/a"]
    assert format_value(float("nan")) == "nan"


def test_goal_verdicts() -> None:
    at_least = Goal(name="ratio", limit=2.0, at_least=True)
    at_most = Goal(name="p99", limit=1.0, at_least=False)
    assert at_least.verdict(2.0) == "pass"
    assert at_least.verdict(1.9) == "miss"
    assert at_most.verdict(0.4) == "pass"
    assert at_most.verdict(1.2) == "miss"
    assert at_most.verdict(None) == "n/a"
    assert at_most.verdict("n/a") == "n/a"


def test_ingest_lines_keep_numbers_numeric() -> None:
    assert parse_value("0.85") == 0.85
    assert parse_value("12") == 12
    assert parse_value("true") == "true"


def test_second_inflight_run_is_prefixed_and_the_goal_run_is_not() -> None:
    goal, second = InflightPlan(), InflightPlan(jobs=1000, label="1k")
    assert goal.name("poll_lateness_p99_s") == "poll_lateness_p99_s"
    assert second.name("poll_lateness_p99_s") == "inflight_1k_poll_lateness_p99_s"
    assert second.name("inflight_peak_rss_mb") == "inflight_1k_peak_rss_mb"


def test_pgqueuer_rate_falls_back_to_its_log_and_libpq_variables_are_built() -> None:
    config = PeerConfig(driver="psy", dequeue=2, batch=50)
    assert config.label == "psy_2x50"
    reported = PeerRun(
        config=config, mode="drain", tool_rate=900.0, log_rate=950.0, jobs=10, cost=None
    )
    lost = PeerRun(
        config=config, mode="throughput", tool_rate=0.0, log_rate=950.0, jobs=10, cost=None
    )
    assert (reported.rate, lost.rate) == (900.0, 950.0)  # the log only when the tool lost it
    env = libpq_env("postgresql://postgres@127.0.0.1:25000/pgq_bench")
    assert (env["PGHOST"], env["PGPORT"], env["PGUSER"], env["PGDATABASE"]) == (
        "127.0.0.1",
        "25000",
        "postgres",
        "pgq_bench",
    )
    assert as_role("postgresql://postgres@127.0.0.1:1/db", "bench_daemon") == (
        "postgresql://bench_daemon@127.0.0.1:1/db"
    )


@pytest.mark.anyio
async def test_noop_provider_ends_every_job_with_a_terminal_failure() -> None:
    import uuid

    handle = JobHandle(job_id=uuid.uuid4(), provider_job_id="noop-1", media_type="image", params={})
    result = await NoopProvider().poll(handle)
    assert result.state is PollState.FAILED
    assert result.failure is not None and result.failure.code == "noop"


def test_job_costs_divide_cpu_and_server_time_by_the_jobs() -> None:
    with cpu_time() as cpu:
        deadline = time.process_time() + 0.05
        while time.process_time() < deadline:  # burn 50 ms of CPU in this process
            pass
    assert 0.04 <= cpu.seconds <= 1.0
    cost = per_job(client_s=0.5, server_ms=250.0, jobs=5_000)
    assert cost is not None
    assert (cost.client_us, cost.server_us) == (100.0, 50.0)
    assert per_job(client_s=1.0, server_ms=1.0, jobs=0) is None
