"""Seed 1770791355439-AddDurationMsToRuns: runs.duration_ms (total execution time).

Revision ID: 1770791355439
Revises: 1770118781389
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "1770791355439"
down_revision: str | Sequence[str] | None = "1770118781389"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "app"


def upgrade() -> None:
    op.add_column("runs", sa.Column("duration_ms", sa.Integer(), nullable=True), schema=SCHEMA)


def downgrade() -> None:
    op.drop_column("runs", "duration_ms", schema=SCHEMA)
