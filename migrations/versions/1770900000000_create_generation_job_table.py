"""Seed 1770900000000-CreateGenerationJobTable: app.generation_jobs.

Columns a lifecycle fills later are nullable (provider_job_id, result_uri, artifact_id,
error_message, cost_usd, started_at, completed_at), and so are poll_interval_ms / timeout_ms:
NULL means "the configured default for this provider and media type". ``artifact_id`` points
at the stored artifact (ON DELETE SET NULL); run_id / run_step_id have no FK, as in the seed.

Revision ID: 1770900000000
Revises: 1770791500000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "1770900000000"
down_revision: str | Sequence[str] | None = "1770791500000"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "app"
TABLE = "generation_jobs"
STATUSES = "('pending', 'processing', 'completed', 'failed', 'timed_out')"


def _tz(name: str, *, now: bool = False) -> sa.Column[object]:
    default = sa.text("now()") if now else None
    return sa.Column(name, sa.DateTime(timezone=True), server_default=default, nullable=not now)


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.String(255), nullable=False),
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("run_step_id", sa.Uuid(), nullable=False),
        sa.Column("provider_id", sa.String(100), nullable=False),
        sa.Column("provider_job_id", sa.String(255), nullable=True),
        sa.Column("media_type", sa.String(50), nullable=False),
        sa.Column("status", sa.String(20), server_default="pending", nullable=False),
        sa.Column("poll_interval_ms", sa.Integer(), nullable=True),
        sa.Column("timeout_ms", sa.Integer(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("input_params", postgresql.JSONB(), nullable=False),
        sa.Column("result_uri", sa.String(2048), nullable=True),
        sa.Column("artifact_id", sa.Uuid(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("cost_usd", sa.Numeric(10, 4), nullable=True),
        _tz("started_at"),
        _tz("completed_at"),
        _tz("created_at", now=True),
        _tz("updated_at", now=True),
        sa.PrimaryKeyConstraint("id", name="pk_generation_jobs"),
        sa.ForeignKeyConstraint(
            ["artifact_id"],
            ["app.artifacts.id"],
            name="fk_generation_jobs_artifact_id_artifacts",
            ondelete="SET NULL",
        ),
        sa.CheckConstraint(f"status IN {STATUSES}", name="ck_generation_jobs_status"),
        sa.CheckConstraint(
            "media_type IN ('image', 'video', 'audio')", name="ck_generation_jobs_media_type"
        ),
        schema=SCHEMA,
    )
    op.create_index("ix_generation_jobs_tenant_id", TABLE, ["tenant_id"], schema=SCHEMA)
    # Deleting an artifact nulls the jobs pointing at it: index the FK so that is no scan.
    op.create_index("ix_generation_jobs_artifact_id", TABLE, ["artifact_id"], schema=SCHEMA)
    op.execute(
        "CREATE TRIGGER trg_generation_jobs_updated_at BEFORE UPDATE ON app.generation_jobs "
        "FOR EACH ROW EXECUTE FUNCTION app.set_updated_at()"
    )


def downgrade() -> None:
    op.drop_table(TABLE, schema=SCHEMA)
