"""Typed SQLAlchemy models of the ``app`` tables the daemon reads or writes.

The migrations under ``migrations/versions`` own the schema (all thirteen seed tables plus the
poller's own); these models describe only the four tables the daemon touches, exactly as the
migrations leave them at head. ``alembic check`` compares the two (see `include_name` /
`include_object`, which keep the comparison to these tables) and a test fails on any drift;
``alembic check`` does not compare CHECK constraints, so a second test creates the models in a
scratch schema and compares their CHECKs with the migrated ones.
The daemon's hot path uses hand-written SQL (``poller.sql``); the models serve typed ad-hoc
access, the CLI and that drift check.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    CHAR,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.schema import ForeignKeyConstraint, SchemaItem

if TYPE_CHECKING:
    from alembic.runtime.environment import NameFilterParentNames, NameFilterType

SCHEMA = "app"


class JobStatus(StrEnum):
    """``generation_jobs.status``, exactly the seed's lifecycle."""

    PENDING = "pending"  # not yet started at the provider (or not yet submitted)
    PROCESSING = "processing"  # the provider reports it running
    COMPLETED = "completed"
    FAILED = "failed"
    TIMED_OUT = "timed_out"


ACTIVE_STATUSES: frozenset[JobStatus] = frozenset({JobStatus.PENDING, JobStatus.PROCESSING})
TERMINAL_STATUSES: frozenset[JobStatus] = frozenset(
    {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.TIMED_OUT}
)
MEDIA_TYPES = ("image", "video", "audio")
RUN_STEP_STATUSES = ("pending", "running", "completed", "skipped", "failed")

_ACTIVE_SQL = "status IN ('pending', 'processing')"
_NOW = text("now()")

NAMING_CONVENTION = {
    "pk": "pk_%(table_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
}


def _in(column: str, values: tuple[str, ...]) -> str:
    """``column IN ('a', 'b')``. Quotes ``str(v)``: the ``repr()`` of a StrEnum member is
    ``<JobStatus.PENDING: 'pending'>``, which is not SQL."""
    quoted = ", ".join("'" + str(v).replace("'", "''") + "'" for v in values)
    return f"{column} IN ({quoted})"


class Base(DeclarativeBase):
    """Declarative base bound to the ``app`` schema and the migrations' naming convention."""

    metadata = MetaData(schema=SCHEMA, naming_convention=NAMING_CONVENTION)


metadata = Base.metadata


class Artifact(Base):
    """A stored output: one row per output per job, per tenant; blobs are shared by hash."""

    __tablename__ = "artifacts"
    __table_args__ = (
        Index("ix_artifacts_tenant_id", "tenant_id"),
        Index("ix_artifacts_content_hash", "content_hash"),
    )

    id: Mapped[uuid.UUID] = mapped_column(
        Uuid, primary_key=True, server_default=text("gen_random_uuid()")
    )
    tenant_id: Mapped[str] = mapped_column(String(255))
    run_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    skill_id: Mapped[str] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(100))
    uri: Mapped[str] = mapped_column(String(2048))
    content_hash: Mapped[str] = mapped_column(CHAR(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    filename: Mapped[str | None] = mapped_column(String(255))
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_NOW)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_NOW)


class RunStep(Base):
    """One skill execution of a workflow run; the daemon reads ``skill_id`` for artifacts.

    The ``run_id → runs`` foreign key (ON DELETE CASCADE) exists in the database; it is left
    out here because ``runs`` is not modelled, and `include_object` skips it in comparisons.
    """

    __tablename__ = "run_steps"
    __table_args__ = (
        CheckConstraint(_in("status", RUN_STEP_STATUSES), name="ck_run_steps_status"),
        UniqueConstraint("run_id", "step_id", name="uq_run_steps_run_id_step_id"),
        Index("ix_run_steps_tenant_id", "tenant_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(
        Uuid, primary_key=True, server_default=text("gen_random_uuid()")
    )
    run_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    tenant_id: Mapped[str] = mapped_column(String(255))
    step_id: Mapped[str] = mapped_column(String(255))
    skill_id: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(20), server_default=text("'pending'"))
    input_hash: Mapped[str | None] = mapped_column(String(64))
    attempt: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    output_artifact_ids: Mapped[list[str] | None] = mapped_column(JSONB)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    cache_hit: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_NOW)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_NOW)


class GenerationJob(Base):
    """An asynchronous provider job: the seed's columns plus the poller's scheduling state."""

    __tablename__ = "generation_jobs"
    __table_args__ = (
        CheckConstraint(_in("status", tuple(JobStatus)), name="ck_generation_jobs_status"),
        CheckConstraint(_in("media_type", MEDIA_TYPES), name="ck_generation_jobs_media_type"),
        Index("ix_generation_jobs_tenant_id", "tenant_id"),
        Index("ix_generation_jobs_artifact_id", "artifact_id"),
        Index("ix_generation_jobs_due", "next_poll_at", postgresql_where=text(_ACTIVE_SQL)),
        Index(
            "ix_generation_jobs_tenant_due",
            "tenant_id",
            "next_poll_at",
            postgresql_where=text(_ACTIVE_SQL),
        ),
        Index(
            "ix_generation_jobs_provider_due",
            "provider_id",
            "next_poll_at",
            postgresql_where=text(_ACTIVE_SQL),
        ),
        Index(
            "uq_generation_jobs_provider_job",
            "provider_id",
            "provider_job_id",
            unique=True,
            postgresql_where=text("provider_job_id IS NOT NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(
        Uuid, primary_key=True, server_default=text("gen_random_uuid()")
    )
    tenant_id: Mapped[str] = mapped_column(String(255))
    run_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    run_step_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    provider_id: Mapped[str] = mapped_column(String(100))
    provider_job_id: Mapped[str | None] = mapped_column(String(255))
    media_type: Mapped[str] = mapped_column(String(50))
    status: Mapped[str] = mapped_column(String(20), server_default=text("'pending'"))
    poll_interval_ms: Mapped[int | None] = mapped_column(Integer)
    timeout_ms: Mapped[int | None] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    input_params: Mapped[dict[str, Any]] = mapped_column(JSONB)
    result_uri: Mapped[str | None] = mapped_column(String(2048))
    artifact_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey(Artifact.id, ondelete="SET NULL")
    )
    error_message: Mapped[str | None] = mapped_column(Text)
    cost_usd: Mapped[Decimal | None] = mapped_column(Numeric(10, 4))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_NOW)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_NOW)
    # The poller's columns (revision poller_0001): every one has a default.
    next_poll_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_NOW)
    lease_owner: Mapped[str | None] = mapped_column(Text)
    lease_version: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    claim_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    error_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    deadline_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    submit_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    artifact_ids: Mapped[list[str]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    # Revision poller_0006: when the fenced write recorded provider_job_id (database clock).
    provider_job_id_recorded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ProviderBudget(Base):
    """Token bucket and pause state of one provider, shared by every replica."""

    __tablename__ = "provider_budgets"

    provider_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    tokens: Mapped[float] = mapped_column(Double)
    capacity: Mapped[float] = mapped_column(Double)
    refill_per_s: Mapped[float] = mapped_column(Double)
    refreshed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_NOW)
    paused_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    pause_reason: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_NOW)


MODELLED_TABLES = frozenset(metadata.tables)  # {"app.artifacts", "app.generation_jobs", ...}


def include_name(
    name: str | None, type_: NameFilterType, parent_names: NameFilterParentNames
) -> bool:
    """Alembic reflection filter: schema ``app`` only, and only the modelled tables in it."""
    if type_ == "schema":
        return name == SCHEMA
    if type_ == "table":
        return f"{parent_names.get('schema_name') or SCHEMA}.{name}" in MODELLED_TABLES
    return True


def include_object(
    obj: SchemaItem,
    name: str | None,
    type_: NameFilterType,
    reflected: bool,
    compare_to: SchemaItem | None,
) -> bool:
    """Alembic comparison filter: ignore reflected FKs that point at unmodelled tables."""
    if type_ == "table":
        return f"{getattr(obj, 'schema', None) or SCHEMA}.{name}" in MODELLED_TABLES
    if isinstance(obj, ForeignKeyConstraint) and reflected:
        targets = {element.target_fullname.rsplit(".", 1)[0] for element in obj.elements}
        return targets <= MODELLED_TABLES
    return True
