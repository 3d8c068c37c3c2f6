"""Pure timing rules: deadline, poll cadence, error backoff."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

from poller import scheduling
from poller.model import ClaimedJob

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def job(**overrides: object) -> ClaimedJob:
    values: dict[str, object] = {
        "id": uuid.uuid4(),
        "tenant_id": "t",
        "run_id": uuid.uuid4(),
        "run_step_id": uuid.uuid4(),
        "provider_id": "scripted",
        "provider_job_id": None,
        "media_type": "image",
        "status": "pending",
        "poll_interval_ms": None,
        "timeout_ms": None,
        "attempts": 0,
        "input_params": {},
        "created_at": T0,
        "started_at": None,
        "deadline_at": None,
        "submit_started_at": None,
        "provider_job_id_recorded_at": None,
        "lease_version": 1,
        "claim_count": 1,
        "error_count": 0,
        "due_at": T0,
        "db_now": T0 + timedelta(seconds=10),
    }
    values.update(overrides)
    return ClaimedJob(**values)  # type: ignore[arg-type]


def test_deadline_uses_row_timeout_before_default() -> None:
    assert scheduling.deadline_of(job(timeout_ms=5_000), 60_000) == T0 + timedelta(seconds=5)


def test_deadline_falls_back_to_provider_default_when_row_is_null() -> None:
    assert scheduling.deadline_of(job(), 60_000) == T0 + timedelta(seconds=60)


def test_stored_deadline_wins_over_recomputation() -> None:
    stored = T0 + timedelta(hours=1)
    assert scheduling.deadline_of(job(deadline_at=stored, timeout_ms=1), 1) == stored


def test_lateness_is_claim_time_minus_due_time() -> None:
    assert job().lateness_s == 10.0
    assert job(due_at=T0 + timedelta(seconds=20)).lateness_s == 0.0


def test_next_poll_is_jittered_interval_within_ten_percent() -> None:
    rng = random.Random(7)
    delays = [
        scheduling.next_poll_delay(interval_s=5, retry_after_s=None, remaining=999, rng=rng)
        for _ in range(200)
    ]
    assert all(4.5 <= d <= 5.5 for d in delays)
    assert len({round(d, 3) for d in delays}) > 50  # really jittered


def test_retry_after_is_never_undercut() -> None:
    delay = scheduling.next_poll_delay(interval_s=1, retry_after_s=30, remaining=999)
    assert delay >= 30


def test_poll_is_pulled_in_to_the_deadline() -> None:
    delay = scheduling.next_poll_delay(interval_s=60, retry_after_s=None, remaining=2)
    assert 2 <= delay <= 2.05  # at the deadline: not later, and not at once (a busy loop)


def test_error_backoff_doubles_and_caps() -> None:
    rng = random.Random(1)
    first = scheduling.error_backoff(1, retry_after_s=None, max_s=60, remaining=999, rng=rng)
    fourth = scheduling.error_backoff(4, retry_after_s=None, max_s=60, remaining=999, rng=rng)
    huge = scheduling.error_backoff(30, retry_after_s=None, max_s=60, remaining=999, rng=rng)
    assert 0.9 <= first <= 1.1
    assert 7.2 <= fourth <= 8.8
    assert 54 <= huge <= 66
