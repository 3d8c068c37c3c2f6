"""Operator commands on jobs: list, show, retry, cancel, submit.

Short synchronous statements (a CLI has no event loop to share). Every state change an
operator makes bumps ``lease_version``, so a daemon holding a lease on that job has its later
write-back fenced out instead of overwriting the operator's decision. Each write of one
tenant's job runs in a transaction that first sets ``app.current_tenant_id`` (DESIGN §2), so
row-level security, tenant-aware triggers and audits see whose row it is.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

JOB_COLUMNS = """id, tenant_id, run_id, run_step_id, provider_id, provider_job_id, media_type,
status, poll_interval_ms, timeout_ms, attempts, input_params, result_uri, artifact_id,
artifact_ids, error_message, last_error, cost_usd, started_at, completed_at, created_at,
updated_at, next_poll_at, deadline_at, submit_started_at, provider_job_id_recorded_at,
lease_owner, lease_version, claim_count, error_count"""


class AdminError(Exception):
    """An operator command cannot be carried out as given (bad argument, no such job);
    ``str()`` says why in one line. ``main.py`` exits 2."""


class CommandRefused(Exception):
    """The command is well formed but the job's state does not allow it (retry of an active
    job, cancel of a finished one, a race lost to the daemon). ``main.py`` exits 1, like an
    unhealthy ``check``: nothing is wrong with the invocation, so a script may retry later."""


@dataclass(frozen=True, slots=True, kw_only=True)
class JobFilter:
    status: str | None = None
    provider: str | None = None
    tenant: str | None = None
    limit: int = 50


def _connect(url: str) -> psycopg.Connection[dict[str, Any]]:
    return psycopg.connect(url, row_factory=dict_row, autocommit=True, connect_timeout=10)


def _as_tenant(conn: psycopg.Connection[dict[str, Any]], tenant: str) -> None:
    """Inside a transaction: this transaction writes ``tenant``'s rows (SET LOCAL)."""
    conn.execute("SELECT set_config('app.current_tenant_id', %s, true)", (tenant,))


def list_jobs(url: str, flt: JobFilter) -> list[dict[str, Any]]:
    where: list[str] = ["TRUE"]
    params: dict[str, object] = {"limit": flt.limit}
    for column, value in (
        ("status", flt.status),
        ("provider_id", flt.provider),
        ("tenant_id", flt.tenant),
    ):
        if value is not None:
            where.append(f"{column} = %({column})s")
            params[column] = value
    query = (
        "SELECT id, tenant_id, provider_id, media_type, status, attempts, provider_job_id, "
        "created_at, completed_at, error_message FROM app.generation_jobs "
        f"WHERE {' AND '.join(where)} ORDER BY created_at DESC LIMIT %(limit)s"
    )
    with _connect(url) as conn:
        return list(conn.execute(query, params).fetchall())


def show_job(url: str, job_id: uuid.UUID) -> dict[str, Any]:
    with _connect(url) as conn:
        job = conn.execute(
            f"SELECT {JOB_COLUMNS} FROM app.generation_jobs WHERE id = %s",
            (job_id,),
        ).fetchone()
        if job is None:
            raise AdminError(f"no job with id {job_id}")
        ids = [uuid.UUID(i) for i in job["artifact_ids"] or []]
        artifacts = conn.execute(
            "SELECT id, type, uri, content_hash, size_bytes, filename, metadata, created_at "
            "FROM app.artifacts WHERE id = ANY(%s)",
            (ids,),
        ).fetchall()
    order = {a: n for n, a in enumerate(ids)}
    job["artifacts"] = sorted(artifacts, key=lambda a: order.get(a["id"], 0))
    return job


def retry_job(
    url: str, job_id: uuid.UUID, *, tenant: str, resubmit: bool, default_timeout_ms: int
) -> None:
    """failed/timed_out → pending with a fresh deadline; optionally forget the provider job."""
    # A resubmit forgets everything about the old provider job: its id, the submit mark and
    # when the id was recorded (a time left behind would describe no id, or the wrong one if
    # an operator then fills in an id by hand). A plain retry keeps them: same provider job.
    resubmit_sql = (
        ", provider_job_id = NULL, submit_started_at = NULL, "
        "provider_job_id_recorded_at = NULL, started_at = NULL"
        if resubmit
        else ""
    )
    query = f"""
        UPDATE app.generation_jobs
           SET status = 'pending', error_message = NULL, last_error = NULL,
               completed_at = NULL, result_uri = NULL, artifact_id = NULL,
               artifact_ids = '[]'::jsonb, lease_owner = NULL,
               lease_version = lease_version + 1, claim_count = 0, error_count = 0,
               attempts = 0, next_poll_at = now(),
               deadline_at = now() + make_interval(
                   secs => coalesce(timeout_ms, %(default_ms)s) / 1000.0)
               {resubmit_sql}
         WHERE id = %(id)s AND status IN ('failed', 'timed_out')
           AND (%(resubmit)s OR provider_job_id IS NOT NULL)
        RETURNING id"""
    with _connect(url) as conn:
        params = {"id": job_id, "default_ms": default_timeout_ms, "resubmit": resubmit}
        with conn.transaction():
            _as_tenant(conn, tenant)
            updated = conn.execute(query, params).fetchone()
        if updated:
            return
        row = conn.execute(
            "SELECT status, provider_job_id FROM app.generation_jobs WHERE id = %s", (job_id,)
        ).fetchone()
    if row is None:
        raise AdminError(f"no job with id {job_id}")
    if row["status"] in ("failed", "timed_out"):
        raise CommandRefused(
            f"job {job_id} was never accepted by its provider (no provider job id): "
            "use `jobs retry --resubmit` to submit it again"
        )
    raise CommandRefused(f"job {job_id} is {row['status']}; only failed or timed_out jobs retry")


def job_for_cancel(url: str, job_id: uuid.UUID) -> dict[str, Any]:
    with _connect(url) as conn:
        row = conn.execute(
            "SELECT id, tenant_id, provider_id, provider_job_id, media_type, input_params, status "
            "FROM app.generation_jobs WHERE id = %s",
            (job_id,),
        ).fetchone()
    if row is None:
        raise AdminError(f"no job with id {job_id}")
    if row["status"] not in ("pending", "processing"):
        raise CommandRefused(f"job {job_id} is already {row['status']}")
    return row


def mark_canceled(url: str, job_id: uuid.UUID, *, tenant: str) -> bool:
    """``failed`` with "canceled by operator"; fences out any daemon holding the lease."""
    with _connect(url) as conn, conn.transaction():
        _as_tenant(conn, tenant)
        row = conn.execute(
            """UPDATE app.generation_jobs
                  SET status = 'failed', error_message = 'canceled by operator',
                      completed_at = now(),
                      lease_owner = NULL, lease_version = lease_version + 1
                WHERE id = %s AND status IN ('pending', 'processing') RETURNING id""",
            (job_id,),
        ).fetchone()
    return row is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class NewJob:
    provider: str
    media_type: str
    params: Mapping[str, Any]
    tenant: str = "default"
    run_id: uuid.UUID | None = None
    run_step_id: uuid.UUID | None = None
    poll_interval_ms: int | None = None
    timeout_ms: int | None = None


def submit_job(url: str, job: NewJob) -> uuid.UUID:
    """Insert a pending job for the daemon to submit (the insert trigger wakes it)."""
    with _connect(url) as conn, conn.transaction():
        _as_tenant(conn, job.tenant)
        row = conn.execute(
            """INSERT INTO app.generation_jobs
                   (tenant_id, run_id, run_step_id, provider_id, media_type, status,
                    poll_interval_ms, timeout_ms, attempts, input_params)
               VALUES (%s, %s, %s, %s, %s, 'pending', %s, %s, 0, %s) RETURNING id""",
            (
                job.tenant,
                job.run_id or uuid.uuid4(),
                job.run_step_id or uuid.uuid4(),
                job.provider,
                job.media_type,
                job.poll_interval_ms,
                job.timeout_ms,
                Jsonb(dict(job.params)),
            ),
        ).fetchone()
    assert row is not None
    return uuid.UUID(str(row["id"]))


def parse_params(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AdminError(f"--params is not valid JSON: {exc.msg} at position {exc.pos}") from None
    if not isinstance(value, dict):
        raise AdminError('--params must be a JSON object, e.g. \'{"input": {"prompt": "…"}}\'')
    return value
