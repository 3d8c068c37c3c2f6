"""Poller: widen artifacts.skill_id to 255 and index artifacts.content_hash.

``artifacts.skill_id`` is filled from ``run_steps.skill_id`` (varchar 255), which would not
fit the seed's 64. Storage GC asks "is any artifact row still referencing this blob?" by
content hash, hence the index. The downgrade truncates longer skill ids to 64 characters.

Revision ID: poller_0003
Revises: poller_0002
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "poller_0003"
down_revision: str | Sequence[str] | None = "poller_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "app"
TABLE = "artifacts"


def upgrade() -> None:
    op.alter_column(
        TABLE,
        "skill_id",
        type_=sa.String(255),
        existing_type=sa.String(64),
        existing_nullable=False,
        schema=SCHEMA,
    )
    op.create_index("ix_artifacts_content_hash", TABLE, ["content_hash"], schema=SCHEMA)


def downgrade() -> None:
    op.drop_index("ix_artifacts_content_hash", table_name=TABLE, schema=SCHEMA)
    op.alter_column(
        TABLE,
        "skill_id",
        type_=sa.String(64),
        existing_type=sa.String(255),
        existing_nullable=False,
        postgresql_using="left(skill_id, 64)",
        schema=SCHEMA,
    )
