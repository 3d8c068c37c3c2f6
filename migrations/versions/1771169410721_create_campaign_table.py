"""Seed 1771169410721-CreateCampaignTable: app.campaigns (soft-deleted via deleted_at).

``latest_run_id`` has no FK (the seed names none). Timestamps are the seed's plain TIMESTAMP.

Revision ID: 1771169410721
Revises: 1770900000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "1771169410721"
down_revision: str | Sequence[str] | None = "1770900000000"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "app"
TABLE = "campaigns"


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.String(255), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("template_id", sa.String(100), nullable=False),
        sa.Column("status", sa.String(20), server_default="draft", nullable=False),
        sa.Column("config", postgresql.JSONB(), nullable=True),
        sa.Column("bundle_url", sa.String(2048), nullable=True),
        sa.Column("thumbnail_url", sa.String(2048), nullable=True),
        sa.Column("latest_run_id", sa.Uuid(), nullable=True),
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("deleted_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_campaigns"),
        sa.CheckConstraint(
            "status IN ('draft', 'generating', 'live', 'failed', 'archived')",
            name="ck_campaigns_status",
        ),
        schema=SCHEMA,
    )
    op.create_index("ix_campaigns_tenant_id", TABLE, ["tenant_id"], schema=SCHEMA)
    op.execute(
        "CREATE TRIGGER trg_campaigns_updated_at BEFORE UPDATE ON app.campaigns "
        "FOR EACH ROW EXECUTE FUNCTION app.set_updated_at()"
    )


def downgrade() -> None:
    op.drop_table(TABLE, schema=SCHEMA)
