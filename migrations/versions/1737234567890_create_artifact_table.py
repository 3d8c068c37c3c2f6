"""Seed 1737234567890-CreateArtifactTable: app.artifacts and the shared updated_at trigger.

The seed's timeline starts here (its timestamps, not its table order, decide the order). The
``app.set_updated_at()`` trigger function is created with the first table that needs it and
reused by every later ``updated_at`` column.

Revision ID: 1737234567890
Revises:
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "1737234567890"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "app"
TABLE = "artifacts"

SET_UPDATED_AT = """
CREATE OR REPLACE FUNCTION app.set_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$
"""


def upgrade() -> None:
    op.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    op.execute(SET_UPDATED_AT)
    op.create_table(
        TABLE,
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.String(255), nullable=False),
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("skill_id", sa.String(64), nullable=False),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("uri", sa.String(2048), nullable=False),
        sa.Column("content_hash", sa.CHAR(64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("filename", sa.String(255), nullable=True),
        sa.Column("metadata", postgresql.JSONB(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name="pk_artifacts"),
        schema=SCHEMA,
    )
    op.create_index("ix_artifacts_tenant_id", TABLE, ["tenant_id"], schema=SCHEMA)
    op.execute(
        "CREATE TRIGGER trg_artifacts_updated_at BEFORE UPDATE ON app.artifacts "
        "FOR EACH ROW EXECUTE FUNCTION app.set_updated_at()"
    )


def downgrade() -> None:
    op.drop_table(TABLE, schema=SCHEMA)
    op.execute("DROP FUNCTION app.set_updated_at()")
