"""Minimal valid rows per table: only the columns that have no default (plus FK parents)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

Row = dict[str, Any]


def insert(conn: psycopg.Connection[Any], table: str, values: Mapping[str, Any]) -> Row:
    """INSERT one row into ``app.<table>`` and return it whole (``RETURNING *``)."""
    columns = list(values)
    query = sql.SQL("INSERT INTO app.{} ({}) VALUES ({}) RETURNING *").format(
        sql.Identifier(table),
        sql.SQL(", ").join(map(sql.Identifier, columns)),
        sql.SQL(", ").join(sql.Placeholder() * len(columns)),
    )
    params = [Jsonb(v) if isinstance(v, dict | list) else v for v in values.values()]
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        cur.execute(query, params)
        row = cur.fetchone()
    assert row is not None
    return row


def _session(conn: psycopg.Connection[Any]) -> Row:
    return {"tenant_id": "t1", "user_id": "u1"}


def _message(conn: psycopg.Connection[Any]) -> Row:
    session = insert(conn, "chat_sessions", _session(conn))
    return {"session_id": session["id"], "role": "user", "content": "hi"}


def _run(conn: psycopg.Connection[Any]) -> Row:
    return {"tenant_id": "t1", "workflow_name": "campaign.build", "workflow_version": "1.0.0"}


def _run_step(conn: psycopg.Connection[Any]) -> Row:
    run = insert(conn, "runs", _run(conn))
    return {
        "run_id": run["id"],
        "tenant_id": "t1",
        "step_id": f"step_{uuid.uuid4().hex[:6]}",
        "skill_id": "generate_intro_image",
    }


def _step_cache(conn: psycopg.Connection[Any]) -> Row:
    return {
        "cache_key": uuid.uuid4().hex,
        "tenant_id": "t1",
        "workflow_name": "campaign.build",
        "step_id": "intro_image",
        "input_hash": "a" * 64,
    }


def _artifact(conn: psycopg.Connection[Any]) -> Row:
    return {
        "tenant_id": "t1",
        "run_id": uuid.uuid4(),
        "skill_id": "generate_intro_image",
        "type": "image/png",
        "uri": "/data/sha256/ab/ab" + "0" * 62,
        "content_hash": "ab" + "0" * 62,
        "size_bytes": 123,
    }


def generation_job(conn: psycopg.Connection[Any] | None = None, **overrides: Any) -> Row:
    """The seed's columns only, exactly what an orchestrator that predates the poller sends."""
    return {
        "tenant_id": "t1",
        "run_id": uuid.uuid4(),
        "run_step_id": uuid.uuid4(),
        "provider_id": "replicate",
        "media_type": "image",
        "input_params": {"model": "owner/name", "input": {"prompt": "a cat"}},
        **overrides,
    }


def _campaign(conn: psycopg.Connection[Any]) -> Row:
    return {"tenant_id": "t1", "user_id": "u1", "name": "Spring", "template_id": "spin_wheel"}


def _ai_generation(conn: psycopg.Connection[Any]) -> Row:
    return {"tenant_id": "t1", "user_id": "u1", "generation_type": "plan", "input_params": {}}


def _budget(conn: psycopg.Connection[Any]) -> Row:
    return {
        "provider_id": f"p{uuid.uuid4().hex[:8]}",
        "tokens": 1,
        "capacity": 5,
        "refill_per_s": 1,
    }


def _checkpoint(conn: psycopg.Connection[Any]) -> Row:
    return {"thread_id": uuid.uuid4().hex, "checkpoint_id": "c1", "checkpoint": {"v": 1}}


MINIMAL: dict[str, Callable[[psycopg.Connection[Any]], Row]] = {
    "chat_sessions": _session,
    "chat_messages": _message,
    "runs": _run,
    "run_steps": _run_step,
    "step_cache": _step_cache,
    "artifacts": _artifact,
    "generation_jobs": generation_job,
    "campaigns": _campaign,
    "ai_generations": _ai_generation,
    "provider_budgets": _budget,
    "checkpoints": _checkpoint,
}


def insert_minimal(conn: psycopg.Connection[Any], table: str, **overrides: Any) -> Row:
    """Insert the smallest valid row of ``table`` (with ``overrides``) and return it."""
    return insert(conn, table, {**MINIMAL[table](conn), **overrides})
