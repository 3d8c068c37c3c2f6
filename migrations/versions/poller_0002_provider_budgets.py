"""Poller: app.provider_budgets, the per-provider token bucket shared by all replicas.

One row per provider: ``tokens`` refill at ``refill_per_s`` up to ``capacity`` (computed from
``refreshed_at`` on the database clock); ``paused_until`` / ``pause_reason`` stop every
replica from calling a provider after a 429 lockout or rejected credentials.

Revision ID: poller_0002
Revises: poller_0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "poller_0002"
down_revision: str | Sequence[str] | None = "poller_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "app"
TABLE = "provider_budgets"


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("provider_id", sa.String(100), nullable=False),
        sa.Column("tokens", sa.Double(), nullable=False),
        sa.Column("capacity", sa.Double(), nullable=False),
        sa.Column("refill_per_s", sa.Double(), nullable=False),
        sa.Column(
            "refreshed_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("paused_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("pause_reason", sa.Text(), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("provider_id", name="pk_provider_budgets"),
        schema=SCHEMA,
    )
    op.execute(
        "CREATE TRIGGER trg_provider_budgets_updated_at BEFORE UPDATE ON app.provider_budgets "
        "FOR EACH ROW EXECUTE FUNCTION app.set_updated_at()"
    )


def downgrade() -> None:
    op.drop_table(TABLE, schema=SCHEMA)
