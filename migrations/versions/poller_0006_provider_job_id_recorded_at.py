"""Poller: ``generation_jobs.provider_job_id_recorded_at``, when the provider's id was recorded.

A 404 on a poll shortly after the submit is the vendor not showing its new job yet (DESIGN
§10: within 30 s it is retried, later it is final). That window was measured from
``submit_started_at``, the moment the daemon *began* the create call, so a slow create (a
Stability synchronous endpoint taking minutes, an input file download, a slow Replicate
create) used up the window before the vendor had even answered: the first poll after a 60 s
create treated a 404 as a missing job and failed it. The window must start when the provider
returned the id, which is when the fenced write recording ``provider_job_id`` runs; this
column keeps that moment (database clock), set by that same write.

Nullable without a default: a job gets the time only when its id is recorded, and adding
such a column rewrites no row (only a short ACCESS EXCLUSIVE lock for the catalog change).
Existing rows are not backfilled: nobody knows when their ids came back, and the daemon falls
back to ``submit_started_at`` for a row with a ``provider_job_id`` but no recording time (what
it did before this revision). A daemon older than this revision leaves the column NULL, with
the same fallback. The downgrade drops the column; nothing else refers to it.

Revision ID: poller_0006
Revises: poller_0005
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "poller_0006"
down_revision: str | Sequence[str] | None = "poller_0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "app"
TABLE = "generation_jobs"
COLUMN = "provider_job_id_recorded_at"


def upgrade() -> None:
    op.add_column(
        TABLE, sa.Column(COLUMN, sa.DateTime(timezone=True), nullable=True), schema=SCHEMA
    )


def downgrade() -> None:
    op.drop_column(TABLE, COLUMN, schema=SCHEMA)
