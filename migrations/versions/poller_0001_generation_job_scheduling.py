"""Poller: scheduling, lease and fencing columns on generation_jobs, claim indexes, NOTIFY.

* Columns (all with defaults, so an INSERT naming only the seed's columns works):
  ``next_poll_at`` (due time; while claimed, the lease expiry), ``lease_owner``,
  ``lease_version`` (fencing token, bumped on every claim), ``claim_count`` (crash-loop
  guard), ``error_count``, ``deadline_at``, ``submit_started_at`` (a create call may have
  happened), ``last_error`` and ``artifact_ids`` (all outputs in order; ``artifact_id`` is the
  first). Existing rows get ``artifact_ids`` from ``artifact_id`` and a deadline from
  ``timeout_ms`` when they are still active. The seed's ``updated_at`` trigger is disabled
  around that backfill: filling in the poller's own columns is not a change to the job, and
  stamping every old row with the migration time would erase its real history.
* Partial indexes over active rows only, so the claim's index stays as small as the backlog;
  a partial unique index on ``(provider_id, provider_job_id)``.
* fillfactor 80 leaves room on each page for the frequent row updates; aggressive
  autovacuum keeps the hot table's dead tuples and statistics in check.
* ``generation_job_created`` once per INSERT statement (a wake-up hint, payload empty) and
  ``generation_job_finished`` with a JSON payload when a job reaches a terminal status.

Revision ID: poller_0001
Revises: 1771218568471
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "poller_0001"
down_revision: str | Sequence[str] | None = "1771218568471"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "app"
TABLE = "generation_jobs"
ACTIVE = sa.text("status IN ('pending', 'processing')")
STORAGE = (
    "fillfactor = 80, autovacuum_vacuum_scale_factor = 0.01, "
    "autovacuum_analyze_scale_factor = 0.02"
)

COLUMNS = (
    ("next_poll_at", sa.DateTime(timezone=True), "now()"),
    ("lease_owner", sa.Text(), None),
    ("lease_version", sa.BigInteger(), "0"),
    ("claim_count", sa.Integer(), "0"),
    ("error_count", sa.Integer(), "0"),
    ("deadline_at", sa.DateTime(timezone=True), None),
    ("submit_started_at", sa.DateTime(timezone=True), None),
    ("last_error", sa.Text(), None),
    ("artifact_ids", postgresql.JSONB(), "'[]'::jsonb"),
)

INDEXES = (
    ("ix_generation_jobs_due", ["next_poll_at"]),
    ("ix_generation_jobs_tenant_due", ["tenant_id", "next_poll_at"]),
    ("ix_generation_jobs_provider_due", ["provider_id", "next_poll_at"]),
)

UPDATED_AT_TRIGGER = "trg_generation_jobs_updated_at"  # the seed's BEFORE UPDATE trigger
BACKFILL = """
UPDATE app.generation_jobs
   SET artifact_ids = CASE WHEN artifact_id IS NULL THEN '[]'::jsonb
                           ELSE jsonb_build_array(artifact_id) END,
       deadline_at = CASE WHEN status IN ('pending', 'processing') AND timeout_ms IS NOT NULL
                          THEN created_at + timeout_ms * interval '1 millisecond' END
 WHERE artifact_id IS NOT NULL
    OR (status IN ('pending', 'processing') AND timeout_ms IS NOT NULL)
"""

NOTIFY_CREATED = """
CREATE FUNCTION app.notify_generation_job_created() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('generation_job_created', '');
    RETURN NULL;
END
$$
"""

NOTIFY_FINISHED = """
CREATE FUNCTION app.notify_generation_job_finished() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('generation_job_finished', json_build_object(
        'id', NEW.id, 'tenant_id', NEW.tenant_id, 'run_id', NEW.run_id,
        'run_step_id', NEW.run_step_id, 'status', NEW.status,
        'artifact_ids', NEW.artifact_ids)::text);
    RETURN NULL;
END
$$
"""

TRIGGERS = (
    "CREATE TRIGGER trg_generation_jobs_notify_created AFTER INSERT ON app.generation_jobs "
    "FOR EACH STATEMENT EXECUTE FUNCTION app.notify_generation_job_created()",
    "CREATE TRIGGER trg_generation_jobs_notify_finished "
    "AFTER UPDATE OF status ON app.generation_jobs FOR EACH ROW "
    "WHEN (NEW.status IN ('completed', 'failed', 'timed_out') "
    "AND OLD.status IS DISTINCT FROM NEW.status) "
    "EXECUTE FUNCTION app.notify_generation_job_finished()",
)


def upgrade() -> None:
    for name, type_, default in COLUMNS:
        server_default = sa.text(default) if default is not None else None
        column = sa.Column(name, type_, server_default=server_default, nullable=default is None)
        op.add_column(TABLE, column, schema=SCHEMA)
    # ALTER TABLE … DISABLE TRIGGER is transactional: the ADD COLUMNs above already hold the
    # table's ACCESS EXCLUSIVE lock, and a failure rolls the trigger state back with the rest.
    op.execute(f"ALTER TABLE app.generation_jobs DISABLE TRIGGER {UPDATED_AT_TRIGGER}")
    op.execute(BACKFILL)
    op.execute(f"ALTER TABLE app.generation_jobs ENABLE TRIGGER {UPDATED_AT_TRIGGER}")
    for index, columns in INDEXES:
        op.create_index(index, TABLE, columns, schema=SCHEMA, postgresql_where=ACTIVE)
    op.create_index(
        "uq_generation_jobs_provider_job",
        TABLE,
        ["provider_id", "provider_job_id"],
        unique=True,
        schema=SCHEMA,
        postgresql_where=sa.text("provider_job_id IS NOT NULL"),
    )
    op.execute(f"ALTER TABLE app.generation_jobs SET ({STORAGE})")
    op.execute(NOTIFY_CREATED)
    op.execute(NOTIFY_FINISHED)
    for trigger in TRIGGERS:
        op.execute(trigger)


def downgrade() -> None:
    for trigger in ("trg_generation_jobs_notify_finished", "trg_generation_jobs_notify_created"):
        op.execute(f"DROP TRIGGER {trigger} ON app.generation_jobs")
    op.execute("DROP FUNCTION app.notify_generation_job_finished()")
    op.execute("DROP FUNCTION app.notify_generation_job_created()")
    op.execute(
        "ALTER TABLE app.generation_jobs RESET (fillfactor, autovacuum_vacuum_scale_factor, "
        "autovacuum_analyze_scale_factor)"
    )
    op.drop_index("uq_generation_jobs_provider_job", table_name=TABLE, schema=SCHEMA)
    for index, _ in reversed(INDEXES):
        op.drop_index(index, table_name=TABLE, schema=SCHEMA)
    for name, _, _ in reversed(COLUMNS):
        op.drop_column(TABLE, name, schema=SCHEMA)
