"""Seed 1770118781389-AddContextColumnToRuns: runs.context (accumulated campaign context).

Revision ID: 1770118781389
Revises: 1767170393521
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "1770118781389"
down_revision: str | Sequence[str] | None = "1767170393521"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "app"


def upgrade() -> None:
    op.add_column("runs", sa.Column("context", postgresql.JSONB(), nullable=True), schema=SCHEMA)


def downgrade() -> None:
    op.drop_column("runs", "context", schema=SCHEMA)
