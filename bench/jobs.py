"""Job rows as an orchestrator would insert them, with the bench's set-up shortcuts.

Rows name the seed's columns plus, where a scenario needs it, ``provider_job_id`` (the job
was submitted before the measurement starts) and ``next_poll_at`` (a backlog whose polls are
already spread over one interval, as in a long-running system, instead of all due at once).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

_INSERT_NOOP = """
INSERT INTO app.generation_jobs
       (tenant_id, run_id, run_step_id, provider_id, provider_job_id, media_type, status,
        poll_interval_ms, attempts, input_params)
SELECT 'bench', gen_random_uuid(), gen_random_uuid(), %(provider)s,
       'noop-' || gen_random_uuid(), 'image', 'pending', 1000, 0, '{}'::jsonb
  FROM generate_series(1, %(count)s)
"""

_INSERT_SUBMITTED = """
INSERT INTO app.generation_jobs
       (tenant_id, run_id, run_step_id, provider_id, provider_job_id, media_type, status,
        poll_interval_ms, attempts, input_params, next_poll_at)
SELECT 'bench', gen_random_uuid(), gen_random_uuid(), %(provider)s, p.id, 'image',
       'pending', %(interval_ms)s, 0, %(params)s,
       now() + make_interval(secs => %(spread_s)s * random())
  FROM unnest(%(ids)s::text[]) AS p(id)
"""


def insert_noop_jobs(url: str, count: int, *, provider: str) -> None:
    """``count`` due jobs of the no-op provider, already submitted (one poll ends each)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(_INSERT_NOOP, {"provider": provider, "count": count})


async def insert_noop_batch(conn: psycopg.AsyncConnection[Any], count: int, provider: str) -> None:
    """The continuous producer's unit: one INSERT of ``count`` due no-op jobs."""
    await conn.execute(_INSERT_NOOP, {"provider": provider, "count": count}, prepare=True)


def insert_submitted_jobs(
    url: str,
    provider_job_ids: Sequence[str],
    *,
    provider: str,
    interval_ms: int,
    spread_s: float,
    params: dict[str, object] | None = None,
) -> None:
    """Jobs already known to the provider, first polls spread over ``spread_s`` seconds."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            _INSERT_SUBMITTED,
            {
                "provider": provider,
                "ids": list(provider_job_ids),
                "interval_ms": interval_ms,
                "spread_s": spread_s,
                "params": Jsonb(params or {}),
            },
        )


def count_by_status(url: str) -> dict[str, int]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT status, count(*) FROM app.generation_jobs GROUP BY status"
        ).fetchall()
    return {str(status): int(n) for status, n in rows}
