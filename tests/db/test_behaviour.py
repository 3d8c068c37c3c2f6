"""Row-level behaviour of the schema: triggers, cascades, NOTIFY and SKIP LOCKED claims."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from psycopg import sql

from devenv.pgcluster import temporary_database
from tests.db import seed_schema as seed
from tests.db.rows import generation_job, insert, insert_minimal

Conn = psycopg.Connection[Any]
_LONG_AGO = datetime(2001, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def shared_url(pg_admin_url: str, pg_template: str) -> Iterator[str]:
    """One clone for the module: these tests only look at the rows they insert themselves."""
    with temporary_database(pg_admin_url, template=pg_template) as url:
        yield url


@pytest.fixture(scope="module")
def conn(shared_url: str) -> Iterator[Conn]:
    with psycopg.connect(shared_url, autocommit=True) as connection:
        yield connection


@pytest.fixture
def own_conn(db_url: str) -> Iterator[Conn]:
    """A connection to a database of this test alone (claims see every due row)."""
    with psycopg.connect(db_url, autocommit=True) as connection:
        yield connection


def _count(conn: Conn, query: str, *params: Any) -> int:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return int(row[0])


# --------------------------------------------------------------------------- updated_at


@pytest.mark.parametrize("table", seed.UPDATED_AT_TABLES)
def test_updated_at_is_set_by_trigger_on_update(conn: Conn, table: str) -> None:
    row = insert_minimal(conn, table, updated_at=_LONG_AGO)
    key = "provider_id" if table == "provider_budgets" else "id"
    assert row["updated_at"].year == 2001  # no trigger on INSERT: the given value stands
    touch = sql.SQL("UPDATE app.{t} SET {k} = {k} WHERE {k} = %s RETURNING updated_at = now()")
    stmt = touch.format(t=sql.Identifier(table), k=sql.Identifier(key))
    assert conn.execute(stmt, (row[key],)).fetchone() == (True,)
    # Even an explicit value is overridden: the trigger owns the column.
    force = sql.SQL("UPDATE app.{t} SET updated_at = %s WHERE {k} = %s RETURNING updated_at")
    stmt = force.format(t=sql.Identifier(table), k=sql.Identifier(key))
    result = conn.execute(stmt, (_LONG_AGO, row[key])).fetchone()
    assert result is not None and result[0].year > 2001


# ------------------------------------------------------------------ cascades / set null


def test_deleting_a_chat_session_deletes_its_messages(conn: Conn) -> None:
    message = insert_minimal(conn, "chat_messages")
    other = insert_minimal(conn, "chat_messages")
    conn.execute("DELETE FROM app.chat_sessions WHERE id = %s", (message["session_id"],))
    assert _count(conn, "SELECT count(*) FROM app.chat_messages WHERE id = %s", message["id"]) == 0
    assert _count(conn, "SELECT count(*) FROM app.chat_messages WHERE id = %s", other["id"]) == 1


def test_deleting_a_run_deletes_its_steps(conn: Conn) -> None:
    step = insert_minimal(conn, "run_steps")
    conn.execute("DELETE FROM app.runs WHERE id = %s", (step["run_id"],))
    assert _count(conn, "SELECT count(*) FROM app.run_steps WHERE id = %s", step["id"]) == 0


def test_deleting_a_base_run_nulls_the_reference(conn: Conn) -> None:
    base = insert_minimal(conn, "runs")
    update = insert_minimal(conn, "runs", trigger_type="update", base_run_id=base["id"])
    conn.execute("DELETE FROM app.runs WHERE id = %s", (base["id"],))
    row = conn.execute("SELECT base_run_id FROM app.runs WHERE id = %s", (update["id"],))
    assert row.fetchone() == (None,)


def test_deleting_an_artifact_nulls_generation_jobs_artifact_id(conn: Conn) -> None:
    artifact = insert_minimal(conn, "artifacts")
    job = insert(conn, "generation_jobs", generation_job(artifact_id=artifact["id"]))
    conn.execute("DELETE FROM app.artifacts WHERE id = %s", (artifact["id"],))
    row = conn.execute("SELECT artifact_id FROM app.generation_jobs WHERE id = %s", (job["id"],))
    assert row.fetchone() == (None,)


def test_deleting_a_campaign_nulls_ai_generations_campaign_id(conn: Conn) -> None:
    campaign = insert_minimal(conn, "campaigns")
    generation = insert_minimal(conn, "ai_generations", campaign_id=campaign["id"])
    conn.execute("DELETE FROM app.campaigns WHERE id = %s", (campaign["id"],))
    row = conn.execute(
        "SELECT campaign_id FROM app.ai_generations WHERE id = %s", (generation["id"],)
    )
    assert row.fetchone() == (None,)


def test_columns_without_a_seed_relationship_accept_any_id(conn: Conn) -> None:
    """No FK where the seed names none: ids of rows that do not exist are accepted."""
    insert_minimal(conn, "artifacts", run_id=uuid.uuid4())
    insert_minimal(conn, "campaigns", latest_run_id=uuid.uuid4())
    job = insert(conn, "generation_jobs", generation_job())
    assert _count(conn, "SELECT count(*) FROM app.runs WHERE id = %s", job["run_id"]) == 0


def test_campaign_soft_delete_keeps_the_row(conn: Conn) -> None:
    campaign = insert_minimal(conn, "campaigns")
    conn.execute("UPDATE app.campaigns SET deleted_at = now() WHERE id = %s", (campaign["id"],))
    row = conn.execute(
        "SELECT deleted_at IS NOT NULL FROM app.campaigns WHERE id = %s", (campaign["id"],)
    )
    assert row.fetchone() == (True,)


def test_unique_run_step_per_run(conn: Conn) -> None:
    step = insert_minimal(conn, "run_steps")
    with pytest.raises(psycopg.errors.UniqueViolation):
        insert_minimal(conn, "run_steps", run_id=step["run_id"], step_id=step["step_id"])


def test_unique_step_cache_key(conn: Conn) -> None:
    entry = insert_minimal(conn, "step_cache")
    with pytest.raises(psycopg.errors.UniqueViolation):
        insert_minimal(conn, "step_cache", cache_key=entry["cache_key"])


def test_provider_job_id_is_unique_per_provider_when_set(conn: Conn) -> None:
    for _ in range(2):  # NULL provider_job_id: any number of not-yet-submitted jobs
        insert(conn, "generation_jobs", generation_job())
    insert(conn, "generation_jobs", generation_job(provider_job_id="abc"))
    insert(conn, "generation_jobs", generation_job(provider_id="suno", provider_job_id="abc"))
    with pytest.raises(psycopg.errors.UniqueViolation):
        insert(conn, "generation_jobs", generation_job(provider_job_id="abc"))


# ---------------------------------------------------------------------- generation_jobs


def test_insert_naming_only_seed_columns_gets_poller_defaults(conn: Conn) -> None:
    row = insert(conn, "generation_jobs", generation_job(status="pending", timeout_ms=60_000))
    db_now = conn.execute("SELECT now()").fetchone()
    assert db_now is not None
    assert row["status"] == "pending"
    assert abs((row["next_poll_at"] - db_now[0]).total_seconds()) < 5
    assert (row["lease_owner"], row["lease_version"], row["claim_count"]) == (None, 0, 0)
    assert (row["error_count"], row["artifact_ids"], row["last_error"]) == (0, [], None)
    assert (row["deadline_at"], row["submit_started_at"]) == (None, None)
    assert row["provider_job_id_recorded_at"] is None
    assert (row["poll_interval_ms"], row["attempts"]) == (None, 0)


def _listener(url: str) -> psycopg.Connection[Any]:
    listener = psycopg.connect(url, autocommit=True)
    listener.execute("LISTEN generation_job_created")
    listener.execute("LISTEN generation_job_finished")
    return listener


def _drain(listener: Conn, *, want: int, timeout: float = 5.0) -> list[tuple[str, str]]:
    got = [(n.channel, n.payload) for n in listener.notifies(timeout=timeout, stop_after=want)]
    # Nothing else may follow: anything extra would show up within a short grace period.
    got += [(n.channel, n.payload) for n in listener.notifies(timeout=0.3)]
    return got


def test_insert_notifies_once_per_statement(shared_url: str, conn: Conn) -> None:
    with _listener(shared_url) as listener:
        values = [generation_job() for _ in range(3)]
        with conn.transaction():
            for job in values:
                insert(conn, "generation_jobs", job)
        conn.execute(
            """INSERT INTO app.generation_jobs
                   (tenant_id, run_id, run_step_id, provider_id, media_type, input_params)
               SELECT 't2', gen_random_uuid(), gen_random_uuid(), 'suno', 'audio', '{}'
                 FROM generate_series(1, 5)"""
        )
        assert _drain(listener, want=2) == [("generation_job_created", "")] * 2


def test_terminal_status_change_notifies_with_job_details(shared_url: str, conn: Conn) -> None:
    first = insert(conn, "generation_jobs", generation_job())
    second = insert(conn, "generation_jobs", generation_job(tenant_id="t2"))
    artifact_ids = [str(uuid.uuid4()), str(uuid.uuid4())]
    with _listener(shared_url) as listener:
        update = "UPDATE app.generation_jobs SET status = %s WHERE id = %s"
        conn.execute(update, ("processing", first["id"]))  # not terminal: silent
        conn.execute(
            "UPDATE app.generation_jobs SET status = 'completed', artifact_ids = %s WHERE id = %s",
            (psycopg.types.json.Jsonb(artifact_ids), first["id"]),
        )
        conn.execute(update, ("completed", first["id"]))  # unchanged status: silent
        conn.execute("UPDATE app.generation_jobs SET attempts = 3 WHERE id = %s", (first["id"],))
        conn.execute(update, ("timed_out", second["id"]))
        received = _drain(listener, want=2)
    assert [channel for channel, _ in received] == ["generation_job_finished"] * 2
    payloads = [json.loads(payload) for _, payload in received]
    assert payloads[0] == {
        "id": str(first["id"]),
        "tenant_id": "t1",
        "run_id": str(first["run_id"]),
        "run_step_id": str(first["run_step_id"]),
        "status": "completed",
        "artifact_ids": artifact_ids,
    }
    assert (payloads[1]["id"], payloads[1]["status"]) == (str(second["id"]), "timed_out")
    assert payloads[1]["artifact_ids"] == []


def test_an_oversized_finished_payload_is_sent_without_the_artifact_ids(
    shared_url: str, conn: Conn
) -> None:
    """pg_notify refuses payloads of 8000 bytes or more; 250 artifact ids (~10 kB) made the
    status change itself fail. The trigger sends every key, ids null and a flag instead."""
    job = insert(conn, "generation_jobs", generation_job())
    many = [str(uuid.uuid4()) for _ in range(250)]
    with _listener(shared_url) as listener:
        conn.execute(
            "UPDATE app.generation_jobs SET status = 'completed', artifact_ids = %s WHERE id = %s",
            (psycopg.types.json.Jsonb(many), job["id"]),
        )
        [(channel, payload)] = _drain(listener, want=1)
    assert channel == "generation_job_finished"
    assert json.loads(payload) == {
        "id": str(job["id"]),
        "tenant_id": "t1",
        "run_id": str(job["run_id"]),
        "run_step_id": str(job["run_step_id"]),
        "status": "completed",
        "artifact_ids": None,
        "artifact_ids_truncated": True,
    }
    stored = conn.execute(
        "SELECT artifact_ids FROM app.generation_jobs WHERE id = %s", (job["id"],)
    )
    assert stored.fetchone() == (many,)


# ------------------------------------------------------------------------- SKIP LOCKED

_CLAIM = """
UPDATE app.generation_jobs j
   SET lease_owner = %s, lease_version = j.lease_version + 1,
       next_poll_at = now() + interval '30 seconds'
 WHERE j.id IN (SELECT id FROM app.generation_jobs
                 WHERE status IN ('pending', 'processing') AND next_poll_at <= now()
                 ORDER BY next_poll_at LIMIT %s
                 FOR UPDATE SKIP LOCKED)
RETURNING j.id, j.lease_version
"""


def test_two_concurrent_claims_get_disjoint_rows(db_url: str, own_conn: Conn) -> None:
    ids = {insert(own_conn, "generation_jobs", generation_job())["id"] for _ in range(5)}
    insert(own_conn, "generation_jobs", generation_job(status="completed"))
    with psycopg.connect(db_url) as a, psycopg.connect(db_url) as b:
        claimed_a = a.execute(_CLAIM, ("a", 3)).fetchall()  # transaction left open
        claimed_b = b.execute(_CLAIM, ("b", 3)).fetchall()  # must skip a's locked rows
        a.commit()
        b.commit()
    got_a = {row[0] for row in claimed_a}
    got_b = {row[0] for row in claimed_b}
    assert len(got_a) == 3 and len(got_b) == 2
    assert got_a.isdisjoint(got_b) and got_a | got_b == ids
    assert {row[1] for row in claimed_a + claimed_b} == {1}
    assert own_conn.execute(_CLAIM, ("c", 10)).fetchall() == []  # leased rows are not due


def test_select_skip_locked_in_two_open_transactions(db_url: str, own_conn: Conn) -> None:
    for _ in range(2):
        insert(own_conn, "generation_jobs", generation_job())
    pick = """SELECT id FROM app.generation_jobs WHERE status IN ('pending', 'processing')
               ORDER BY next_poll_at LIMIT 1 FOR UPDATE SKIP LOCKED"""
    with psycopg.connect(db_url) as a, psycopg.connect(db_url) as b, psycopg.connect(db_url) as c:
        row_a, row_b = a.execute(pick).fetchone(), b.execute(pick).fetchone()
        row_c = c.execute(pick).fetchone()
    assert row_a is not None and row_b is not None and row_a != row_b
    assert row_c is None


@pytest.mark.parametrize(
    ("where", "index"),
    [
        ("TRUE", "ix_generation_jobs_due"),
        ("provider_id = 'suno'", "ix_generation_jobs_provider_due"),
        ("tenant_id = 't1'", "ix_generation_jobs_tenant_due"),
    ],
)
def test_due_queries_can_use_the_partial_indexes(conn: Conn, where: str, index: str) -> None:
    with conn.transaction():
        conn.execute("SET LOCAL enable_seqscan = off")
        conn.execute("SET LOCAL enable_bitmapscan = off")
        plan = conn.execute(
            f"""EXPLAIN SELECT id FROM app.generation_jobs
                 WHERE status IN ('pending', 'processing') AND next_poll_at <= now()
                   AND {where}
                 ORDER BY next_poll_at LIMIT 10"""
        ).fetchall()
    assert index in "\n".join(line for (line,) in plan)
