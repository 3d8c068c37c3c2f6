"""Seed 1770791400000-CreateCheckpointTables: LangGraph's Postgres checkpointer tables.

The shapes are those ``langgraph-checkpoint-postgres`` reaches after its own ten migrations
(v0-v9: the four tables, nullable ``checkpoint_blobs.blob``, the ``thread_id`` indexes and
``checkpoint_writes.task_path``). Those versions are recorded in ``checkpoint_migrations`` so
the checkpointer's ``setup()`` finds nothing to do (re-running v9's ``ADD COLUMN`` would fail).

Revision ID: 1770791400000
Revises: 1770791355439
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "1770791400000"
down_revision: str | Sequence[str] | None = "1770791355439"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "app"
LANGGRAPH_MIGRATIONS = 10  # versions 0..9 of langgraph.checkpoint.postgres MIGRATIONS


def _text(name: str, *, default: str | None = None, nullable: bool = False) -> sa.Column[object]:
    server_default = sa.text(f"'{default}'") if default is not None else None
    return sa.Column(name, sa.Text(), server_default=server_default, nullable=nullable)


def upgrade() -> None:
    migrations = op.create_table(
        "checkpoint_migrations",
        sa.Column("v", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("v", name="checkpoint_migrations_pkey"),
        schema=SCHEMA,
    )
    op.create_table(
        "checkpoints",
        _text("thread_id"),
        _text("checkpoint_ns", default=""),
        _text("checkpoint_id"),
        _text("parent_checkpoint_id", nullable=True),
        _text("type", nullable=True),
        sa.Column("checkpoint", postgresql.JSONB(), nullable=False),
        sa.Column(
            "metadata", postgresql.JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False
        ),
        sa.PrimaryKeyConstraint(
            "thread_id", "checkpoint_ns", "checkpoint_id", name="checkpoints_pkey"
        ),
        schema=SCHEMA,
    )
    op.create_table(
        "checkpoint_blobs",
        _text("thread_id"),
        _text("checkpoint_ns", default=""),
        _text("channel"),
        _text("version"),
        _text("type"),
        sa.Column("blob", postgresql.BYTEA(), nullable=True),
        sa.PrimaryKeyConstraint(
            "thread_id", "checkpoint_ns", "channel", "version", name="checkpoint_blobs_pkey"
        ),
        schema=SCHEMA,
    )
    op.create_table(
        "checkpoint_writes",
        _text("thread_id"),
        _text("checkpoint_ns", default=""),
        _text("checkpoint_id"),
        _text("task_id"),
        sa.Column("idx", sa.Integer(), nullable=False),
        _text("channel"),
        _text("type", nullable=True),
        sa.Column("blob", postgresql.BYTEA(), nullable=False),
        _text("task_path", default=""),
        sa.PrimaryKeyConstraint(
            "thread_id",
            "checkpoint_ns",
            "checkpoint_id",
            "task_id",
            "idx",
            name="checkpoint_writes_pkey",
        ),
        schema=SCHEMA,
    )
    for table in ("checkpoints", "checkpoint_blobs", "checkpoint_writes"):
        op.create_index(f"{table}_thread_id_idx", table, ["thread_id"], schema=SCHEMA)
    op.bulk_insert(migrations, [{"v": v} for v in range(LANGGRAPH_MIGRATIONS)])


def downgrade() -> None:
    for table in ("checkpoint_writes", "checkpoint_blobs", "checkpoints", "checkpoint_migrations"):
        op.drop_table(table, schema=SCHEMA)
