"""Seed 1770791500000-AddDataToStepCache: step_cache.data (cached non-artifact output).

Revision ID: 1770791500000
Revises: 1770791400000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "1770791500000"
down_revision: str | Sequence[str] | None = "1770791400000"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "app"


def upgrade() -> None:
    op.add_column(
        "step_cache", sa.Column("data", postgresql.JSONB(), nullable=True), schema=SCHEMA
    )


def downgrade() -> None:
    op.drop_column("step_cache", "data", schema=SCHEMA)
