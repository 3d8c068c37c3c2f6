"""Seed 1737312000000-CreateRunEngineSchema: runs, run_steps, step_cache and their triggers.

``runs.context`` and ``runs.duration_ms`` and ``step_cache.data`` arrive in later seed
revisions. ``runs.base_run_id`` is a self-reference (ON DELETE SET NULL); run_steps belong to
their run (ON DELETE CASCADE); step_cache is standalone.

Revision ID: 1737312000000
Revises: 1737234567890
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "1737312000000"
down_revision: str | Sequence[str] | None = "1737234567890"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "app"
TABLES = ("runs", "run_steps", "step_cache")


def _id() -> sa.Column[object]:
    return sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False)


def _tenant() -> sa.Column[object]:
    return sa.Column("tenant_id", sa.String(255), nullable=False)


def _stamp(name: str) -> sa.Column[object]:
    return sa.Column(
        name, sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
    )


def _tz(name: str) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=True)


def _create_runs() -> None:
    op.create_table(
        "runs",
        _id(),
        _tenant(),
        sa.Column("workflow_name", sa.String(255), nullable=False),
        sa.Column("workflow_version", sa.String(50), nullable=False),
        sa.Column("trigger_type", sa.String(20), server_default="initial", nullable=False),
        sa.Column("trigger_payload", postgresql.JSONB(), nullable=True),
        sa.Column("status", sa.String(20), server_default="queued", nullable=False),
        sa.Column("base_run_id", sa.Uuid(), nullable=True),
        sa.Column("error", postgresql.JSONB(), nullable=True),
        _tz("started_at"),
        _tz("completed_at"),
        _stamp("created_at"),
        _stamp("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
        sa.ForeignKeyConstraint(
            ["base_run_id"], ["app.runs.id"], name="fk_runs_base_run_id_runs", ondelete="SET NULL"
        ),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'completed', 'failed', 'cancelled')",
            name="ck_runs_status",
        ),
        sa.CheckConstraint("trigger_type IN ('initial', 'update')", name="ck_runs_trigger_type"),
        schema=SCHEMA,
    )
    op.create_index("ix_runs_tenant_id", "runs", ["tenant_id"], schema=SCHEMA)
    op.create_index("ix_runs_base_run_id", "runs", ["base_run_id"], schema=SCHEMA)


def _create_run_steps() -> None:
    op.create_table(
        "run_steps",
        _id(),
        sa.Column("run_id", sa.Uuid(), nullable=False),
        _tenant(),
        sa.Column("step_id", sa.String(255), nullable=False),
        sa.Column("skill_id", sa.String(255), nullable=False),
        sa.Column("status", sa.String(20), server_default="pending", nullable=False),
        sa.Column("input_hash", sa.String(64), nullable=True),
        sa.Column("attempt", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("output_artifact_ids", postgresql.JSONB(), nullable=True),
        sa.Column("error", postgresql.JSONB(), nullable=True),
        _tz("started_at"),
        _tz("ended_at"),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        sa.Column("cache_hit", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        _stamp("created_at"),
        _stamp("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_run_steps"),
        sa.ForeignKeyConstraint(
            ["run_id"], ["app.runs.id"], name="fk_run_steps_run_id_runs", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("run_id", "step_id", name="uq_run_steps_run_id_step_id"),
        sa.CheckConstraint(
            "status IN ('pending', 'running', 'completed', 'skipped', 'failed')",
            name="ck_run_steps_status",
        ),
        schema=SCHEMA,
    )
    op.create_index("ix_run_steps_tenant_id", "run_steps", ["tenant_id"], schema=SCHEMA)


def _create_step_cache() -> None:
    op.create_table(
        "step_cache",
        _id(),
        sa.Column("cache_key", sa.String(512), nullable=False),
        _tenant(),
        sa.Column("workflow_name", sa.String(255), nullable=False),
        sa.Column("step_id", sa.String(255), nullable=False),
        sa.Column("input_hash", sa.String(64), nullable=False),
        sa.Column(
            "artifact_ids",
            postgresql.JSONB(),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column("scope", sa.String(20), server_default="global", nullable=False),
        _stamp("created_at"),
        _stamp("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_step_cache"),
        sa.UniqueConstraint("cache_key", name="uq_step_cache_cache_key"),
        sa.CheckConstraint("scope IN ('global', 'run_only')", name="ck_step_cache_scope"),
        schema=SCHEMA,
    )
    op.create_index("ix_step_cache_tenant_id", "step_cache", ["tenant_id"], schema=SCHEMA)
    op.create_index(
        "ix_step_cache_workflow_name_step_id_input_hash",
        "step_cache",
        ["workflow_name", "step_id", "input_hash"],
        schema=SCHEMA,
    )


def upgrade() -> None:
    _create_runs()
    _create_run_steps()
    _create_step_cache()
    for table in TABLES:
        op.execute(
            f"CREATE TRIGGER trg_{table}_updated_at BEFORE UPDATE ON app.{table} "
            "FOR EACH ROW EXECUTE FUNCTION app.set_updated_at()"
        )


def downgrade() -> None:
    for table in reversed(TABLES):
        op.drop_table(table, schema=SCHEMA)
