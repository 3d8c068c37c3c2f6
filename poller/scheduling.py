"""Pure timing rules: deadlines, next poll, error backoff. No I/O, easy to test.

Every input time comes from the database clock (``ClaimedJob.db_now``), so replicas with
skewed wall clocks agree on when a job is due or late.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from poller.model import ClaimedJob

JITTER = 0.1  # ±10 %: spreads polls of jobs inserted together so they do not stampede
DEADLINE_SLACK_S = 0.05  # a delay ends this long past the deadline at most
RETRY_AFTER_DEFAULT_S = 5.0  # a 429 (provider or CDN) without a usable Retry-After
# A 429 (provider or CDN) makes the job wait at least this long: "Retry-After: 0" would
# otherwise send it straight back to the host that just refused it.
MIN_RATE_LIMIT_WAIT_S = 1.0


def deadline_of(job: ClaimedJob, default_timeout_ms: int) -> datetime:
    """``created_at + timeout_ms`` (the provider/media default when the row says NULL)."""
    if job.deadline_at is not None:
        return job.deadline_at
    timeout_ms = job.timeout_ms if job.timeout_ms is not None else default_timeout_ms
    return job.created_at + timedelta(milliseconds=timeout_ms)


def remaining_s(job: ClaimedJob, deadline: datetime) -> float:
    return (deadline - job.db_now).total_seconds()


def capped(delay_s: float, remaining: float) -> float:
    """``delay_s``, but never more than a moment past the deadline: a wait the job cannot use
    (a paused provider, an empty budget) must not hide that its deadline passed."""
    return max(0.0, min(delay_s, remaining + DEADLINE_SLACK_S))


def jittered(seconds: float, rng: random.Random | None = None) -> float:
    r = rng or random
    return max(0.0, seconds * (1.0 + r.uniform(-JITTER, JITTER)))


def next_poll_delay(
    *,
    interval_s: float,
    retry_after_s: float | None,
    remaining: float,
    rng: random.Random | None = None,
) -> float:
    """The job's interval (jittered), never sooner than the provider asked, never past the
    deadline by more than a moment (so a timeout is noticed on time)."""
    delay = jittered(interval_s, rng)
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    return capped(delay, remaining)


def error_backoff(
    error_count: int,
    *,
    retry_after_s: float | None,
    max_s: float,
    remaining: float,
    rng: random.Random | None = None,
) -> float:
    """Exponential backoff for transient errors: 1, 2, 4 … capped, jittered, Retry-After wins."""
    base = min(max_s, 2.0 ** max(0, error_count - 1))
    delay = jittered(base, rng)
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    return capped(delay, remaining)
