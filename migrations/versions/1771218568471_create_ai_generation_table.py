"""Seed 1771218568471-CreateAiGenerationTable: app.ai_generations.

``campaign_id`` optionally links a campaign (ON DELETE SET NULL). Timestamps are the seed's
plain TIMESTAMP.

Revision ID: 1771218568471
Revises: 1771169410721
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "1771218568471"
down_revision: str | Sequence[str] | None = "1771169410721"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "app"
TABLE = "ai_generations"


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.String(255), nullable=False),
        sa.Column("campaign_id", sa.Uuid(), nullable=True),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("generation_type", sa.String(30), nullable=False),
        sa.Column("status", sa.String(20), server_default="pending", nullable=False),
        sa.Column("accepted", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("input_params", postgresql.JSONB(), nullable=False),
        sa.Column("output", postgresql.JSONB(), nullable=True),
        sa.Column("error", postgresql.JSONB(), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        sa.Column("llm_model", sa.String(100), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("created_at", sa.DateTime(), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ai_generations"),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["app.campaigns.id"],
            name="fk_ai_generations_campaign_id_campaigns",
            ondelete="SET NULL",
        ),
        sa.CheckConstraint(
            "generation_type IN ('plan', 'copy', 'theme_brief', 'theme_image')",
            name="ck_ai_generations_generation_type",
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'completed', 'failed')", name="ck_ai_generations_status"
        ),
        schema=SCHEMA,
    )
    op.create_index("ix_ai_generations_tenant_id", TABLE, ["tenant_id"], schema=SCHEMA)
    op.create_index("ix_ai_generations_campaign_id", TABLE, ["campaign_id"], schema=SCHEMA)
    op.execute(
        "CREATE TRIGGER trg_ai_generations_updated_at BEFORE UPDATE ON app.ai_generations "
        "FOR EACH ROW EXECUTE FUNCTION app.set_updated_at()"
    )


def downgrade() -> None:
    op.drop_table(TABLE, schema=SCHEMA)
