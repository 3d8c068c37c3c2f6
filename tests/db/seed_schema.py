"""The expected ``app`` schema, transcribed from ``seed/data-model.md`` and DESIGN.md §2/§10.

Kept as data in the repo (CI must not depend on the shared docs beside the clone). Types are
PostgreSQL's ``format_type`` spelling. Seed TIMESTAMP columns are ``timestamp without time
zone``, TIMESTAMP WITH TZ ones ``timestamp with time zone``; seed ENUMs are ``varchar`` plus
a CHECK. Columns a lifecycle fills later are nullable (DESIGN §10).
"""

from __future__ import annotations

UUID = "uuid"
TEXT = "text"
JSONB = "jsonb"
INT = "integer"
BIGINT = "bigint"
BOOL = "boolean"
BYTEA = "bytea"
DOUBLE = "double precision"
TS = "timestamp without time zone"
TSTZ = "timestamp with time zone"


def vc(length: int) -> str:
    return f"character varying({length})"


NOT_NULL = False
NULL = True

# table -> [(column, type, nullable)] in the order the seed lists them (poller columns last)
COLUMNS: dict[str, list[tuple[str, str, bool]]] = {
    "chat_sessions": [
        ("id", UUID, NOT_NULL),
        ("tenant_id", vc(255), NOT_NULL),
        ("user_id", vc(255), NOT_NULL),
        ("title", vc(500), NULL),
        ("last_message_at", TS, NOT_NULL),
        ("created_at", TS, NOT_NULL),
        ("updated_at", TS, NOT_NULL),
    ],
    "chat_messages": [
        ("id", UUID, NOT_NULL),
        ("session_id", UUID, NOT_NULL),
        ("role", vc(20), NOT_NULL),
        ("content", TEXT, NOT_NULL),
        ("created_at", TS, NOT_NULL),
    ],
    "runs": [
        ("id", UUID, NOT_NULL),
        ("tenant_id", vc(255), NOT_NULL),
        ("workflow_name", vc(255), NOT_NULL),
        ("workflow_version", vc(50), NOT_NULL),
        ("trigger_type", vc(20), NOT_NULL),
        ("trigger_payload", JSONB, NULL),
        ("status", vc(20), NOT_NULL),
        ("base_run_id", UUID, NULL),
        ("error", JSONB, NULL),
        ("context", JSONB, NULL),
        ("started_at", TSTZ, NULL),
        ("completed_at", TSTZ, NULL),
        ("duration_ms", INT, NULL),
        ("created_at", TSTZ, NOT_NULL),
        ("updated_at", TSTZ, NOT_NULL),
    ],
    "run_steps": [
        ("id", UUID, NOT_NULL),
        ("run_id", UUID, NOT_NULL),
        ("tenant_id", vc(255), NOT_NULL),
        ("step_id", vc(255), NOT_NULL),
        ("skill_id", vc(255), NOT_NULL),
        ("status", vc(20), NOT_NULL),
        ("input_hash", vc(64), NULL),
        ("attempt", INT, NOT_NULL),
        ("output_artifact_ids", JSONB, NULL),
        ("error", JSONB, NULL),
        ("started_at", TSTZ, NULL),
        ("ended_at", TSTZ, NULL),
        ("duration_ms", INT, NULL),
        ("cache_hit", BOOL, NOT_NULL),
        ("created_at", TSTZ, NOT_NULL),
        ("updated_at", TSTZ, NOT_NULL),
    ],
    "step_cache": [
        ("id", UUID, NOT_NULL),
        ("cache_key", vc(512), NOT_NULL),
        ("tenant_id", vc(255), NOT_NULL),
        ("workflow_name", vc(255), NOT_NULL),
        ("step_id", vc(255), NOT_NULL),
        ("input_hash", vc(64), NOT_NULL),
        ("artifact_ids", JSONB, NOT_NULL),
        ("data", JSONB, NULL),
        ("scope", vc(20), NOT_NULL),
        ("created_at", TSTZ, NOT_NULL),
        ("updated_at", TSTZ, NOT_NULL),
    ],
    "artifacts": [
        ("id", UUID, NOT_NULL),
        ("tenant_id", vc(255), NOT_NULL),
        ("run_id", UUID, NOT_NULL),
        ("skill_id", vc(255), NOT_NULL),  # seed: 64; widened by the poller (DESIGN §10)
        ("type", vc(100), NOT_NULL),
        ("uri", vc(2048), NOT_NULL),
        ("content_hash", "character(64)", NOT_NULL),
        ("size_bytes", BIGINT, NOT_NULL),
        ("filename", vc(255), NULL),
        ("metadata", JSONB, NULL),
        ("created_at", TSTZ, NOT_NULL),
        ("updated_at", TSTZ, NOT_NULL),
    ],
    "generation_jobs": [
        ("id", UUID, NOT_NULL),
        ("tenant_id", vc(255), NOT_NULL),
        ("run_id", UUID, NOT_NULL),
        ("run_step_id", UUID, NOT_NULL),
        ("provider_id", vc(100), NOT_NULL),
        ("provider_job_id", vc(255), NULL),
        ("media_type", vc(50), NOT_NULL),
        ("status", vc(20), NOT_NULL),
        ("poll_interval_ms", INT, NULL),
        ("timeout_ms", INT, NULL),
        ("attempts", INT, NOT_NULL),
        ("input_params", JSONB, NOT_NULL),
        ("result_uri", vc(2048), NULL),
        ("artifact_id", UUID, NULL),
        ("error_message", TEXT, NULL),
        ("cost_usd", "numeric(10,4)", NULL),
        ("started_at", TSTZ, NULL),
        ("completed_at", TSTZ, NULL),
        ("created_at", TSTZ, NOT_NULL),
        ("updated_at", TSTZ, NOT_NULL),
        # the poller's revision
        ("next_poll_at", TSTZ, NOT_NULL),
        ("lease_owner", TEXT, NULL),
        ("lease_version", BIGINT, NOT_NULL),
        ("claim_count", INT, NOT_NULL),
        ("error_count", INT, NOT_NULL),
        ("deadline_at", TSTZ, NULL),
        ("submit_started_at", TSTZ, NULL),
        ("last_error", TEXT, NULL),
        ("artifact_ids", JSONB, NOT_NULL),
        ("provider_job_id_recorded_at", TSTZ, NULL),  # poller_0006
    ],
    "campaigns": [
        ("id", UUID, NOT_NULL),
        ("tenant_id", vc(255), NOT_NULL),
        ("user_id", vc(255), NOT_NULL),
        ("name", vc(255), NOT_NULL),
        ("template_id", vc(100), NOT_NULL),
        ("status", vc(20), NOT_NULL),
        ("config", JSONB, NULL),
        ("bundle_url", vc(2048), NULL),
        ("thumbnail_url", vc(2048), NULL),
        ("latest_run_id", UUID, NULL),
        ("version", INT, NOT_NULL),
        ("deleted_at", TS, NULL),
        ("created_at", TS, NOT_NULL),
        ("updated_at", TS, NOT_NULL),
    ],
    "ai_generations": [
        ("id", UUID, NOT_NULL),
        ("tenant_id", vc(255), NOT_NULL),
        ("campaign_id", UUID, NULL),
        ("user_id", vc(255), NOT_NULL),
        ("generation_type", vc(30), NOT_NULL),
        ("status", vc(20), NOT_NULL),
        ("accepted", BOOL, NOT_NULL),
        ("input_params", JSONB, NOT_NULL),
        ("output", JSONB, NULL),
        ("error", JSONB, NULL),
        ("duration_ms", INT, NULL),
        ("llm_model", vc(100), NULL),
        ("attempts", INT, NOT_NULL),
        ("created_at", TS, NOT_NULL),
        ("updated_at", TS, NOT_NULL),
    ],
    # LangGraph's Postgres checkpointer (langgraph-checkpoint-postgres, migrations v0-v9)
    "checkpoint_migrations": [("v", INT, NOT_NULL)],
    "checkpoints": [
        ("thread_id", TEXT, NOT_NULL),
        ("checkpoint_ns", TEXT, NOT_NULL),
        ("checkpoint_id", TEXT, NOT_NULL),
        ("parent_checkpoint_id", TEXT, NULL),
        ("type", TEXT, NULL),
        ("checkpoint", JSONB, NOT_NULL),
        ("metadata", JSONB, NOT_NULL),
    ],
    "checkpoint_blobs": [
        ("thread_id", TEXT, NOT_NULL),
        ("checkpoint_ns", TEXT, NOT_NULL),
        ("channel", TEXT, NOT_NULL),
        ("version", TEXT, NOT_NULL),
        ("type", TEXT, NOT_NULL),
        ("blob", BYTEA, NULL),
    ],
    "checkpoint_writes": [
        ("thread_id", TEXT, NOT_NULL),
        ("checkpoint_ns", TEXT, NOT_NULL),
        ("checkpoint_id", TEXT, NOT_NULL),
        ("task_id", TEXT, NOT_NULL),
        ("idx", INT, NOT_NULL),
        ("channel", TEXT, NOT_NULL),
        ("type", TEXT, NULL),
        ("blob", BYTEA, NOT_NULL),
        ("task_path", TEXT, NOT_NULL),
    ],
    # the poller's own table
    "provider_budgets": [
        ("provider_id", vc(100), NOT_NULL),
        ("tokens", DOUBLE, NOT_NULL),
        ("capacity", DOUBLE, NOT_NULL),
        ("refill_per_s", DOUBLE, NOT_NULL),
        ("refreshed_at", TSTZ, NOT_NULL),
        ("paused_until", TSTZ, NULL),
        ("pause_reason", TEXT, NULL),
        ("updated_at", TSTZ, NOT_NULL),
    ],
}

SEED_TABLES = frozenset(COLUMNS) - {"provider_budgets"}

TENANT_AWARE = (
    "chat_sessions",
    "runs",
    "run_steps",
    "step_cache",
    "artifacts",
    "generation_jobs",
    "campaigns",
    "ai_generations",
)

PRIMARY_KEYS: dict[str, tuple[str, ...]] = {
    **{table: ("id",) for table in (*TENANT_AWARE, "chat_messages")},
    "checkpoint_migrations": ("v",),
    "checkpoints": ("thread_id", "checkpoint_ns", "checkpoint_id"),
    "checkpoint_blobs": ("thread_id", "checkpoint_ns", "channel", "version"),
    "checkpoint_writes": ("thread_id", "checkpoint_ns", "checkpoint_id", "task_id", "idx"),
    "provider_budgets": ("provider_id",),
}

# (table, column) -> (referenced table, ON DELETE action); every FK the seed names, no others
FOREIGN_KEYS: dict[tuple[str, str], tuple[str, str]] = {
    ("chat_messages", "session_id"): ("chat_sessions", "CASCADE"),
    ("run_steps", "run_id"): ("runs", "CASCADE"),
    ("runs", "base_run_id"): ("runs", "SET NULL"),
    ("generation_jobs", "artifact_id"): ("artifacts", "SET NULL"),
    ("ai_generations", "campaign_id"): ("campaigns", "SET NULL"),
}

UNIQUE_CONSTRAINTS = {
    ("run_steps", ("run_id", "step_id")),
    ("step_cache", ("cache_key",)),
}

# Secondary indexes: name -> (table, columns, partial predicate or None, unique). A predicate
# ``column IN (...)`` must admit exactly those values; the claim's indexes cover the active
# (not yet terminal) statuses only (DESIGN §2: "partial index for the claim on active rows").
_ACTIVE = "status IN ('pending', 'processing')"
INDEXES: dict[str, tuple[str, tuple[str, ...], str | None, bool]] = {
    "ix_chat_sessions_tenant_id": ("chat_sessions", ("tenant_id",), None, False),
    "ix_chat_sessions_tenant_id_user_id": ("chat_sessions", ("tenant_id", "user_id"), None, False),
    "ix_chat_sessions_last_message_at": ("chat_sessions", ("last_message_at",), None, False),
    "ix_chat_messages_session_id_created_at": (
        "chat_messages",
        ("session_id", "created_at"),
        None,
        False,
    ),
    "ix_runs_tenant_id": ("runs", ("tenant_id",), None, False),
    "ix_runs_base_run_id": ("runs", ("base_run_id",), None, False),
    "ix_run_steps_tenant_id": ("run_steps", ("tenant_id",), None, False),
    "ix_step_cache_tenant_id": ("step_cache", ("tenant_id",), None, False),
    "ix_step_cache_workflow_name_step_id_input_hash": (
        "step_cache",
        ("workflow_name", "step_id", "input_hash"),
        None,
        False,
    ),
    "ix_artifacts_tenant_id": ("artifacts", ("tenant_id",), None, False),
    "ix_artifacts_content_hash": ("artifacts", ("content_hash",), None, False),
    "ix_generation_jobs_tenant_id": ("generation_jobs", ("tenant_id",), None, False),
    "ix_generation_jobs_artifact_id": ("generation_jobs", ("artifact_id",), None, False),
    "ix_generation_jobs_due": ("generation_jobs", ("next_poll_at",), _ACTIVE, False),
    "ix_generation_jobs_tenant_due": (
        "generation_jobs",
        ("tenant_id", "next_poll_at"),
        _ACTIVE,
        False,
    ),
    "ix_generation_jobs_provider_due": (
        "generation_jobs",
        ("provider_id", "next_poll_at"),
        _ACTIVE,
        False,
    ),
    "uq_generation_jobs_provider_job": (
        "generation_jobs",
        ("provider_id", "provider_job_id"),
        "provider_job_id IS NOT NULL",
        True,
    ),
    "ix_campaigns_tenant_id": ("campaigns", ("tenant_id",), None, False),
    "ix_ai_generations_tenant_id": ("ai_generations", ("tenant_id",), None, False),
    "ix_ai_generations_campaign_id": ("ai_generations", ("campaign_id",), None, False),
    "checkpoints_thread_id_idx": ("checkpoints", ("thread_id",), None, False),
    "checkpoint_blobs_thread_id_idx": ("checkpoint_blobs", ("thread_id",), None, False),
    "checkpoint_writes_thread_id_idx": ("checkpoint_writes", ("thread_id",), None, False),
}

# (table, column) -> every value the seed allows (enforced by CHECK constraints)
ENUMS: dict[tuple[str, str], tuple[str, ...]] = {
    ("chat_messages", "role"): ("user", "assistant"),
    ("runs", "status"): ("queued", "running", "completed", "failed", "cancelled"),
    ("runs", "trigger_type"): ("initial", "update"),
    ("run_steps", "status"): ("pending", "running", "completed", "skipped", "failed"),
    ("step_cache", "scope"): ("global", "run_only"),
    ("generation_jobs", "status"): ("pending", "processing", "completed", "failed", "timed_out"),
    ("generation_jobs", "media_type"): ("image", "video", "audio"),
    ("campaigns", "status"): ("draft", "generating", "live", "failed", "archived"),
    ("ai_generations", "generation_type"): ("plan", "copy", "theme_brief", "theme_image"),
    ("ai_generations", "status"): ("pending", "completed", "failed"),
}

# (table, column) -> default a row gets when the INSERT does not name the column
DEFAULTS: dict[tuple[str, str], object] = {
    ("runs", "status"): "queued",
    ("runs", "trigger_type"): "initial",
    ("run_steps", "status"): "pending",
    ("run_steps", "attempt"): 1,
    ("run_steps", "cache_hit"): False,
    ("step_cache", "scope"): "global",
    ("step_cache", "artifact_ids"): [],
    ("generation_jobs", "status"): "pending",
    ("generation_jobs", "attempts"): 0,
    ("generation_jobs", "lease_version"): 0,
    ("generation_jobs", "claim_count"): 0,
    ("generation_jobs", "error_count"): 0,
    ("generation_jobs", "artifact_ids"): [],
    ("generation_jobs", "lease_owner"): None,
    ("generation_jobs", "deadline_at"): None,
    ("generation_jobs", "submit_started_at"): None,
    ("generation_jobs", "provider_job_id_recorded_at"): None,
    ("generation_jobs", "last_error"): None,
    ("campaigns", "status"): "draft",
    ("campaigns", "version"): 1,
    ("campaigns", "deleted_at"): None,
    ("ai_generations", "status"): "pending",
    ("ai_generations", "accepted"): False,
    ("ai_generations", "attempts"): 0,
    ("checkpoints", "checkpoint_ns"): "",
    ("checkpoints", "metadata"): {},
    ("checkpoint_writes", "task_path"): "",
}

UPDATED_AT_TABLES = tuple(
    table for table, cols in COLUMNS.items() if any(c[0] == "updated_at" for c in cols)
)

# The seed's migration timeline, in the order its timestamp prefixes give, then the poller's.
SEED_REVISIONS = (
    "1737234567890",  # CreateArtifactTable
    "1737312000000",  # CreateRunEngineSchema
    "1767170393521",  # InitialSchema
    "1770118781389",  # AddContextColumnToRuns
    "1770791355439",  # AddDurationMsToRuns
    "1770791400000",  # CreateCheckpointTables
    "1770791500000",  # AddDataToStepCache
    "1770900000000",  # CreateGenerationJobTable
    "1771169410721",  # CreateCampaignTable
    "1771218568471",  # CreateAiGenerationTable
)
POLLER_REVISIONS = (
    "poller_0001",
    "poller_0002",
    "poller_0003",
    "poller_0004",
    "poller_0005",
    "poller_0006",
)
