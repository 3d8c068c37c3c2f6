"""Prometheus metrics: what an operator graphs and alerts on (see docs/operations.md)."""

from __future__ import annotations

from typing import Any, TypeVar, cast

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

M = TypeVar("M", bound=MetricWrapperBase)
_CHILDREN: dict[tuple[int, tuple[str, ...]], Any] = {}


def labelled(metric: M, *values: str) -> M:
    """``metric.labels(*values)``, remembered: the look-up (a lock and a dict) was measurable
    for the metrics touched once per poll. Only for label values from a small fixed set."""
    key = (id(metric), values)
    child = _CHILDREN.get(key)
    if child is None:
        child = _CHILDREN[key] = metric.labels(*values)
    return cast(M, child)


CLAIM_ROUNDS = Counter("poller_claim_rounds_total", "Claim statements executed")
CLAIMED = Counter("poller_claimed_jobs_total", "Jobs claimed (leases taken)", ["provider"])
POLL_SECONDS = Histogram(
    "poller_provider_call_seconds",
    "Latency of provider calls",
    ["provider", "call", "outcome"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)
LATENESS = Histogram(
    "poller_poll_lateness_seconds",
    "How late a due poll was claimed (claim time minus next_poll_at)",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
INFLIGHT = Gauge("poller_inflight_jobs", "Jobs being stepped by this replica")
LEASE_LOST = Counter("poller_lease_lost_total", "Write-backs dropped: the lease had expired")
PROVIDER_ERRORS = Counter(
    "poller_provider_errors_total", "Provider calls that raised", ["provider", "kind"]
)
PROVIDER_PAUSES = Counter(
    "poller_provider_pauses_total", "Provider paused for every replica", ["provider", "reason"]
)
DOWNLOAD_BYTES = Counter("poller_download_bytes_total", "Bytes ingested into storage")
ARTIFACTS = Counter("poller_artifacts_stored_total", "Artifacts stored", ["dedup"])
STORAGE_ERRORS = Counter("poller_storage_errors_total", "Ingest failures", ["kind"])
FINISHED = Counter(
    "poller_jobs_finished_total", "Jobs reaching a terminal status", ["provider", "status"]
)
COST = Counter("poller_cost_usd_total", "Provider cost of finished jobs (USD)", ["provider"])
WRITEBACK_ROWS = Histogram(
    "poller_writeback_batch_rows",
    "Rows per batched write-back statement",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500),
)
DB_ERRORS = Counter("poller_db_errors_total", "Database operations that failed", ["operation"])
LISTENER_UP = Gauge("poller_listener_up", "1 while the LISTEN connection is healthy")
