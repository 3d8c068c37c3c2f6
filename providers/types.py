"""Frozen value types every adapter returns and the poller consumes.

Adapters normalise vendor payloads into these at the edge, so the poller never sees a
vendor's JSON. A generation that *fails at the provider* is a `PollResult` with
``state=FAILED``; exceptions (see ``providers.errors``) mean "we could not learn the state".
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

_EMPTY: Mapping[str, Any] = {}


class PollState(enum.StrEnum):
    """Normalised lifecycle of one provider job."""

    PENDING = "pending"  # accepted, not yet running (queued, cold boot)
    RUNNING = "running"  # the provider reports work in progress
    SUCCEEDED = "succeeded"  # outputs are ready to ingest
    FAILED = "failed"  # the generation failed at the provider (see `failure`)
    CANCELED = "canceled"  # canceled (by us or by the provider's own deadline)
    UNKNOWN = "unknown"  # a status string we do not know: logged, rescheduled, never terminal


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoteOutput:
    """An output the provider serves at a URL (usually a CDN, signed and short-lived)."""

    url: str
    media_type: str | None = None  # the vendor's claim; storage sniffs the real type
    filename: str | None = None
    # Only ever the provider's own credentials for its own API host; empty for CDN URLs.
    headers: Mapping[str, str] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)  # e.g. Suno title, cover image

    def __repr__(self) -> str:
        """No credentials in a log line or a test failure: the ``Authorization`` header and
        the signed URL's query string (``X-Amz-Signature=…``, ``token=…``) stay out."""
        base, query, _ = self.url.partition("?")
        shown = (base[:200] + "…" if len(base) > 200 else base) + ("?…" if query else "")
        headers = sorted(self.headers)  # names only
        return (
            f"RemoteOutput(url={shown!r}, media_type={self.media_type!r}, "
            f"filename={self.filename!r}, headers={headers!r})"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class InlineOutput:
    """An output whose bytes arrived in the response body (Stability, ``data:`` URLs)."""

    data: bytes
    media_type: str | None = None
    filename: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:  # never dump megabytes of media into a log line
        return f"InlineOutput(<{len(self.data)} bytes>, media_type={self.media_type!r})"


Output = RemoteOutput | InlineOutput


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderFailure:
    """Why a generation failed at the provider, in words a human understands."""

    code: str  # stable machine code, e.g. "moderation", "output_expired", "invalid_input"
    message: str
    moderation: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class PollResult:
    """One normalised observation of a provider job."""

    state: PollState
    provider_job_id: str | None = None
    outputs: tuple[Output, ...] = ()
    failure: ProviderFailure | None = None
    retry_after_s: float | None = None  # the provider's hint for the next poll
    progress: float | None = None  # 0..1 when the vendor reports it
    cost_usd: Decimal | None = None  # None = unknown (never guess 0)
    # The provider's re-fetchable address of the result when outputs are inline
    # (Stability's results URL); otherwise the first RemoteOutput's URL is used.
    result_uri: str | None = None
    raw_status: str | None = None  # the vendor's own status word, for logs
    details: Mapping[str, Any] = field(default_factory=dict)  # small extras for logs only

    def __post_init__(self) -> None:
        if self.state is PollState.SUCCEEDED and not self.outputs:
            raise ValueError("a SUCCEEDED PollResult needs at least one output")
        if self.state in (PollState.FAILED, PollState.CANCELED) and self.failure is None:
            raise ValueError(f"a {self.state.name} PollResult needs a failure")
        if self.state is not PollState.SUCCEEDED and self.outputs:
            raise ValueError("only a SUCCEEDED PollResult carries outputs")


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmitRequest:
    """What an adapter needs to start one generation."""

    job_id: uuid.UUID
    media_type: str  # "image" | "video" | "audio"
    params: Mapping[str, Any]  # the job's input_params, validated by the adapter
    timeout_s: float  # the job's remaining budget (Replicate sends it as Cancel-After)


@dataclass(frozen=True, slots=True, kw_only=True)
class JobHandle:
    """What an adapter needs to poll or cancel a job it submitted earlier."""

    job_id: uuid.UUID
    provider_job_id: str
    media_type: str
    params: Mapping[str, Any] = field(default_factory=dict)
    # Seconds since the provider returned this job id (when the poller recorded it), by the
    # database clock at the poll's claim; not since the create call started, which may have
    # taken minutes. Adapters pass it to `_http.early_not_found` to tell a job the vendor does
    # not show yet from a missing one. Ids recorded before revision poller_0006 count from
    # the start of the create call. None if unknown (e.g. a job inserted with its id).
    since_submit_s: float | None = None
