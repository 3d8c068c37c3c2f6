"""Row helpers for poller tests: insert jobs the way an orchestrator would (seed columns)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from poller.model import ClaimedJob


def insert_jobs(
    url: str,
    count: int,
    *,
    tenant: str = "t1",
    provider: str = "scripted",
    media_type: str = "image",
    params: dict[str, Any] | None = None,
    timeout_ms: int | None = None,
    poll_interval_ms: int | None = 50,
) -> list[uuid.UUID]:
    """Insert ``count`` pending jobs naming only the seed's columns; returns their ids."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            """INSERT INTO app.generation_jobs
                   (tenant_id, run_id, run_step_id, provider_id, media_type, status,
                    poll_interval_ms, timeout_ms, attempts, input_params)
               SELECT %s, gen_random_uuid(), gen_random_uuid(), %s, %s, 'pending', %s, %s, 0, %s
                 FROM generate_series(1, %s)
               RETURNING id""",
            (
                tenant,
                provider,
                media_type,
                poll_interval_ms,
                timeout_ms,
                Jsonb(params or {}),
                count,
            ),
        ).fetchall()
    return [r[0] for r in rows]


def job_row(url: str, job_id: uuid.UUID) -> dict[str, Any]:
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        row = conn.execute("SELECT * FROM app.generation_jobs WHERE id = %s", (job_id,)).fetchone()
    assert row is not None
    return row


def fetch(url: str, query: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        return list(conn.execute(query, params).fetchall())


def execute(url: str, query: str, params: tuple[Any, ...] = ()) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(query, params)


def claimed_job(**overrides: Any) -> ClaimedJob:
    """A job as the claim returns it, created 10 s before the claim and due at it; a step
    test sets only what it is about (``deadline_at``, ``provider_job_id``, counters)."""
    now = datetime.now(UTC)
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "tenant_id": "t1",
        "run_id": uuid.uuid4(),
        "run_step_id": uuid.uuid4(),
        "provider_id": "scripted",
        "provider_job_id": None,
        "media_type": "image",
        "status": "pending",
        "poll_interval_ms": 100,
        "timeout_ms": 60_000,
        "attempts": 0,
        "input_params": {},
        "created_at": now - timedelta(seconds=10),
        "started_at": None,
        "deadline_at": None,
        "submit_started_at": None,
        "provider_job_id_recorded_at": None,
        "lease_version": 1,
        "claim_count": 1,
        "error_count": 0,
        "due_at": now,
        "db_now": now,
    }
    values.update(overrides)
    return ClaimedJob(**values)
