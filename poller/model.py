"""Values that flow through one poll: the claimed job and the outcome of stepping it.

A poll is the unit of work: the claim returns a `ClaimedJob` (everything the step needs, no
follow-up SELECT), the step turns it into exactly one `Outcome`, and the repository writes the
outcome back fenced on ``(id, lease_version)``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimedJob:
    """One leased row, as returned by the claim statement."""

    id: uuid.UUID
    tenant_id: str
    run_id: uuid.UUID
    run_step_id: uuid.UUID
    provider_id: str
    provider_job_id: str | None
    media_type: str
    status: str
    poll_interval_ms: int | None
    timeout_ms: int | None
    attempts: int
    input_params: Any  # the JSONB as stored: an object when well-formed; checked by the step
    created_at: datetime
    started_at: datetime | None
    deadline_at: datetime | None
    submit_started_at: datetime | None
    # When provider_job_id was recorded (the create call had returned it); NULL on rows
    # recorded before revision poller_0006 and on rows inserted with a provider job id.
    provider_job_id_recorded_at: datetime | None
    lease_version: int
    claim_count: int
    error_count: int
    due_at: datetime  # next_poll_at before the claim pushed it to the lease expiry
    db_now: datetime  # the database clock at claim time: all time arithmetic uses it

    @property
    def lateness_s(self) -> float:
        return max(0.0, (self.db_now - self.due_at).total_seconds())

    def log_fields(self) -> dict[str, str]:
        """The job context a step binds, for lines logged outside one (write-back, heartbeat)."""
        return {"job_id": str(self.id), "provider": self.provider_id, "tenant_id": self.tenant_id}


@dataclass(frozen=True, slots=True, kw_only=True)
class Reschedule:
    """Keep the job active and poll it again after ``delay_s``."""

    status: str  # "pending" | "processing"
    delay_s: float
    polled: bool = False  # a status poll was made (counts in `attempts`)
    started: bool = False  # the provider reported the job running (sets started_at once)
    error_count: int = 0  # consecutive transient errors after this poll
    last_error: str | None = None
    release: bool = False  # shutdown hand-back: not a failure, claim_count is undone


@dataclass(frozen=True, slots=True, kw_only=True)
class Finish:
    """End the job without artifacts: ``failed`` or ``timed_out``."""

    status: str  # "failed" | "timed_out"
    error_message: str
    polled: bool = False
    cost_usd: Decimal | None = None
    # The provider reported the job running or finished (sets started_at once). A job that
    # never got that far (refused, unknown provider, timed out while queued) has no start.
    started: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ArtifactRecord:
    """One stored output, ready to become an `app.artifacts` row."""

    id: uuid.UUID
    type: str
    uri: str
    content_hash: str
    size_bytes: int
    filename: str | None
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Complete:
    """All outputs are stored; write artifacts and the completion in one transaction."""

    artifacts: Sequence[ArtifactRecord]
    result_uri: str | None
    cost_usd: Decimal | None
    polled: bool = True
    # False when an output exists nowhere but in this completion (Stability's synchronous
    # results): a database outage must then be waited out, not left to a later poll.
    refetchable: bool = True


Outcome = Reschedule | Finish | Complete
