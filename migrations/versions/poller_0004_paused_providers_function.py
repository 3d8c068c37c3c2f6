"""Poller: ``app.paused_providers()``, the providers every replica must skip right now.

The claim used to read paused providers through an uncorrelated ``ARRAY(SELECT …)``. The
planner cannot see that array's value, so it estimated that ``provider_id <> ALL(…)`` keeps
almost no row (none at all when one provider owns every job) and sorted every due row on
each claim instead of walking ``ix_generation_jobs_tenant_due``: 8 ms per claim at a
10,000-row backlog. A STABLE function is evaluated once while planning a custom plan, so
the estimate sees the real (usually empty) list: 1.5 ms on the same data
(docs/benchmarks.md).

Revision ID: poller_0004
Revises: poller_0003
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "poller_0004"
down_revision: str | Sequence[str] | None = "poller_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION app.paused_providers() RETURNS text[]
        LANGUAGE sql STABLE PARALLEL SAFE AS $$
            SELECT coalesce(array_agg(provider_id::text), '{}')
              FROM app.provider_budgets WHERE paused_until > now()
        $$
        """
    )
    op.execute(
        "COMMENT ON FUNCTION app.paused_providers() IS "
        "'Providers under a 429 or credentials pause; the claim skips their jobs.'"
    )


def downgrade() -> None:
    op.execute("DROP FUNCTION app.paused_providers()")
