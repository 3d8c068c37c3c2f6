"""Poller: keep the ``generation_job_finished`` NOTIFY under PostgreSQL's payload limit.

``pg_notify`` raises "payload string too long" (22023) for a payload of 8000 bytes or more,
inside the transaction that changed the status. The payload carried every artifact id
(about 40 bytes each), so a job with more than about 190 outputs could never complete: its
completion rolled back on every attempt until the crash-loop guard failed it.

The trigger now measures the payload first. Oversized, it is sent with the same keys but
``"artifact_ids": null`` and ``"artifact_ids_truncated": true``; an orchestrator that sees the
flag reads ``artifact_ids`` from the row. Payloads that fit are unchanged (no extra key).

Revision ID: poller_0005
Revises: poller_0004
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "poller_0005"
down_revision: str | Sequence[str] | None = "poller_0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# PostgreSQL's limit (a compile-time constant): payloads must be shorter than this.
MAX_PAYLOAD_BYTES = 8000

BOUNDED = f"""
CREATE OR REPLACE FUNCTION app.notify_generation_job_finished() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    payload text := json_build_object(
        'id', NEW.id, 'tenant_id', NEW.tenant_id, 'run_id', NEW.run_id,
        'run_step_id', NEW.run_step_id, 'status', NEW.status,
        'artifact_ids', NEW.artifact_ids)::text;
BEGIN
    IF octet_length(payload) >= {MAX_PAYLOAD_BYTES} THEN
        payload := json_build_object(
            'id', NEW.id, 'tenant_id', NEW.tenant_id, 'run_id', NEW.run_id,
            'run_step_id', NEW.run_step_id, 'status', NEW.status,
            'artifact_ids', NULL, 'artifact_ids_truncated', true)::text;
    END IF;
    PERFORM pg_notify('generation_job_finished', payload);
    RETURN NULL;
END
$$
"""

# poller_0001's body, restored by the downgrade.
UNBOUNDED = """
CREATE OR REPLACE FUNCTION app.notify_generation_job_finished() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('generation_job_finished', json_build_object(
        'id', NEW.id, 'tenant_id', NEW.tenant_id, 'run_id', NEW.run_id,
        'run_step_id', NEW.run_step_id, 'status', NEW.status,
        'artifact_ids', NEW.artifact_ids)::text);
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    op.execute(BOUNDED)


def downgrade() -> None:
    op.execute(UNBOUNDED)
