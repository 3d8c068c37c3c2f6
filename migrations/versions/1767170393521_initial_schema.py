"""Seed 1767170393521-InitialSchema: chat_sessions and chat_messages.

Messages belong to their session (ON DELETE CASCADE) and carry no tenant of their own. The
seed's ``role`` ENUM becomes ``varchar`` plus a CHECK, like every other enum column here.
These tables use the seed's plain TIMESTAMP (without time zone).

Revision ID: 1767170393521
Revises: 1737312000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "1767170393521"
down_revision: str | Sequence[str] | None = "1737312000000"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "app"


def _stamp(name: str) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(), server_default=sa.text("now()"), nullable=False)


def upgrade() -> None:
    op.create_table(
        "chat_sessions",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.String(255), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("title", sa.String(500), nullable=True),
        _stamp("last_message_at"),
        _stamp("created_at"),
        _stamp("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_chat_sessions"),
        schema=SCHEMA,
    )
    op.create_index("ix_chat_sessions_tenant_id", "chat_sessions", ["tenant_id"], schema=SCHEMA)
    op.create_index(
        "ix_chat_sessions_tenant_id_user_id",
        "chat_sessions",
        ["tenant_id", "user_id"],
        schema=SCHEMA,
    )
    op.create_index(
        "ix_chat_sessions_last_message_at", "chat_sessions", ["last_message_at"], schema=SCHEMA
    )
    op.execute(
        "CREATE TRIGGER trg_chat_sessions_updated_at BEFORE UPDATE ON app.chat_sessions "
        "FOR EACH ROW EXECUTE FUNCTION app.set_updated_at()"
    )
    op.create_table(
        "chat_messages",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("session_id", sa.Uuid(), nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        _stamp("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_chat_messages"),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["app.chat_sessions.id"],
            name="fk_chat_messages_session_id_chat_sessions",
            ondelete="CASCADE",
        ),
        sa.CheckConstraint("role IN ('user', 'assistant')", name="ck_chat_messages_role"),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_chat_messages_session_id_created_at",
        "chat_messages",
        ["session_id", "created_at"],
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("chat_messages", schema=SCHEMA)
    op.drop_table("chat_sessions", schema=SCHEMA)
