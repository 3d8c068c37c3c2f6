"""A succeeded poll's outputs into stored artifacts: the storage half of a step.

Each output is downloaded (or, inline, handed over) to the `OutputStore`; the job completes
only when every one is stored. A download that breaks off is tried again at once, a
retryable storage error waits for a later poll inside the job's error budget, and a result
no poll can fetch again (Stability's synchronous replies) is retried right here instead.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Protocol
from urllib.parse import urlsplit

import anyio
import psycopg
import structlog

from poller import metrics, scheduling
from poller.model import ArtifactRecord, ClaimedJob, Complete, Finish, Outcome, Reschedule
from providers.types import InlineOutput, Output, PollResult, RemoteOutput
from storage import StoredBlob
from storage.errors import DownloadThrottled, DownloadTimeout, DownloadUnavailable, StorageError

log = structlog.get_logger("poller")

# The width of ``generation_jobs.result_uri``: a longer URL (a signed one with a session
# token) made PostgreSQL refuse the completion of a finished, stored result.
RESULT_URI_MAX = 2048
DOWNLOAD_TRIES = 3  # per output and attempt, for dropped connections and CDN 5xx
QUICK_RETRY_S = 0.5  # such blips are usually gone this much later (times the try number)


class OutputStore(Protocol):
    """Where outputs go (implemented by `storage.Ingestor`; a fake in tests)."""

    async def ingest_url(
        self, url: str, *, expected_kind: str | None, headers: Mapping[str, str] | None = None
    ) -> StoredBlob: ...
    async def ingest_bytes(
        self, data: bytes, *, expected_kind: str | None, filename: str | None = None
    ) -> StoredBlob: ...


class ErrorLimits(Protocol):
    """The part of the step's limits that bounds storage retries (`poller.steps.Limits`)."""

    @property
    def error_budget(self) -> int: ...
    @property
    def error_backoff_max_s(self) -> float: ...


async def ingest_all(
    job: ClaimedJob,
    store: OutputStore,
    limits: ErrorLimits,
    deadline: datetime,
    result: PollResult,
    *,
    polled: bool,
) -> Outcome:
    """Store every output of a succeeded poll: `Complete` once all are stored, else a
    reschedule (a later poll tries again) or a failure."""
    records: list[ArtifactRecord] = []
    total = len(result.outputs)
    for index, output in enumerate(result.outputs):
        try:
            if _only_copy(result, output):
                blob = await _store_only_copy(job, store, limits, deadline, output)
            else:
                blob = await _ingest_with_quick_retries(store, output, job.media_type)
        except DownloadThrottled as exc:
            return _download_throttled(job, deadline, exc, index, total, polled=polled)
        except StorageError as exc:
            return _storage_failed(job, limits, deadline, result, exc, index, polled=polled)
        records.append(_record(job, result, index, output, blob))
        metrics.ARTIFACTS.labels("false" if blob.created else "true").inc()
        metrics.DOWNLOAD_BYTES.inc(blob.size_bytes)
        log.info(
            "artifact.stored",
            index=index,
            content_hash=blob.content_hash,
            size_bytes=blob.size_bytes,
            type=blob.media_type,
            dedup=not blob.created,
        )
    return Complete(
        artifacts=records,
        result_uri=_result_uri(result, records),
        cost_usd=result.cost_usd,
        polled=polled,
        refetchable=not any(_only_copy(result, output) for output in result.outputs),
    )


def _only_copy(result: PollResult, output: Output) -> bool:
    """Bytes that exist nowhere else: inline, with no address to fetch them again (Stability's
    synchronous results; a poll of such a job can only say the result is gone)."""
    return isinstance(output, InlineOutput) and result.result_uri is None


async def _store_only_copy(
    job: ClaimedJob, store: OutputStore, limits: ErrorLimits, deadline: datetime, output: Output
) -> StoredBlob:
    """Store bytes that cannot be fetched again, retrying a storage outage right here.

    Rescheduling (as for other outputs) would drop the bytes and lose a paid-for result, so
    retryable storage errors are retried in place with the usual backoff, inside the job's
    error budget and deadline (the heartbeat keeps the lease meanwhile). So is a lost database
    connection while a dedup hit takes its lock against GC (`poller.blob_locks`): elsewhere
    that reschedules the step, which here would lose the bytes as well. Each attempt is
    shielded: a shutdown waits for a store under way instead of cutting it.
    """
    count = job.error_count
    began = anyio.current_time()
    while True:
        try:
            with anyio.CancelScope(shield=True):
                return await _ingest(store, output, job.media_type)
        except (StorageError, psycopg.OperationalError) as exc:
            count += 1
            left = scheduling.remaining_s(job, deadline) - (anyio.current_time() - began)
            wait = scheduling.error_backoff(
                count, retry_after_s=None, max_s=limits.error_backoff_max_s, remaining=left
            )
            if not _transient(exc) or count > limits.error_budget or wait >= left:
                raise
            _count_error(exc)
            log.warning("artifact.store_retry", error=str(exc), attempt=count, wait_s=wait)
        await anyio.sleep(wait)


def _transient(exc: StorageError | psycopg.OperationalError) -> bool:
    return isinstance(exc, psycopg.OperationalError) or exc.retryable


def _count_error(exc: StorageError | psycopg.OperationalError) -> None:
    if isinstance(exc, psycopg.OperationalError):
        metrics.DB_ERRORS.labels("dedup_lock").inc()
    else:
        metrics.STORAGE_ERRORS.labels(type(exc).__name__).inc()


async def _ingest_with_quick_retries(
    ingestor: OutputStore, output: Output, media_type: str
) -> StoredBlob:
    """Up to `DOWNLOAD_TRIES` tries for a download that broke off or met a 5xx.

    Without them a job with several outputs succeeds only when every download of one attempt
    does, so a flaky CDN spends the job's error budget although each file arrives eventually.
    Timeouts (already slow) and 429s (the server said when) are not tried again here.
    """
    for attempt in range(1, DOWNLOAD_TRIES):
        try:
            return await _ingest(ingestor, output, media_type)
        except (DownloadTimeout, DownloadThrottled):
            raise
        except DownloadUnavailable as exc:
            log.info("artifact.download_retry", error=str(exc), attempt=attempt)
            metrics.STORAGE_ERRORS.labels(type(exc).__name__).inc()
        await anyio.sleep(scheduling.jittered(QUICK_RETRY_S * attempt))
    return await _ingest(ingestor, output, media_type)


async def _ingest(ingestor: OutputStore, output: Output, media_type: str) -> StoredBlob:
    if isinstance(output, InlineOutput):
        return await ingestor.ingest_bytes(
            output.data, expected_kind=media_type, filename=output.filename
        )
    return await ingestor.ingest_url(
        output.url, expected_kind=media_type, headers=dict(output.headers) or None
    )


def _storage_failed(
    job: ClaimedJob,
    limits: ErrorLimits,
    deadline: datetime,
    result: PollResult,
    exc: StorageError,
    index: int,
    *,
    polled: bool,
) -> Outcome:
    """A later poll tries the output again, unless the error is permanent, the budget is
    spent, or the provider cannot hand the output out again (its retries happened in
    `_store_only_copy`). A failure carries the provider's price: the generation succeeded,
    and was billed, even though its output could not be stored."""
    metrics.STORAGE_ERRORS.labels(type(exc).__name__).inc()
    output, total = result.outputs[index], len(result.outputs)
    where = f"output {index + 1} of {total}"
    count = job.error_count + 1
    only_copy = _only_copy(result, output)
    if not exc.retryable or count > limits.error_budget or only_copy:
        note = " (the provider's only copy: it cannot be fetched again)" if only_copy else ""
        return Finish(
            status="failed",
            error_message=f"{where}: {exc}{note}",
            polled=polled,
            cost_usd=result.cost_usd,
            started=True,
        )
    delay = scheduling.error_backoff(
        count,
        retry_after_s=None,
        max_s=limits.error_backoff_max_s,
        remaining=scheduling.remaining_s(job, deadline),
    )
    log.warning("artifact.retry_scheduled", error=str(exc), attempt=count)
    return _outputs_pending(delay, polled=polled, error_count=count, error=f"{where}: {exc}")


def _download_throttled(
    job: ClaimedJob,
    deadline: datetime,
    exc: DownloadThrottled,
    index: int,
    total: int,
    *,
    polled: bool,
) -> Reschedule:
    """A CDN's 429 means "later", not "broken": like a provider 429 it spends no error budget
    (the deadline still bounds the job)."""
    metrics.STORAGE_ERRORS.labels(type(exc).__name__).inc()
    wait = exc.retry_after_s if exc.retry_after_s is not None else scheduling.RETRY_AFTER_DEFAULT_S
    wait = max(wait, scheduling.MIN_RATE_LIMIT_WAIT_S)
    remaining = scheduling.remaining_s(job, deadline)
    delay = scheduling.next_poll_delay(interval_s=wait, retry_after_s=wait, remaining=remaining)
    log.info("artifact.throttled", error=str(exc), retry_after_s=wait)
    where = f"output {index + 1} of {total}"
    return _outputs_pending(
        delay, polled=polled, error_count=job.error_count, error=f"{where}: {exc}"
    )


def _outputs_pending(delay_s: float, *, polled: bool, error_count: int, error: str) -> Reschedule:
    """The provider is done but an output is not stored yet: the job stays processing."""
    return Reschedule(
        status="processing",
        delay_s=delay_s,
        polled=polled,
        started=True,
        error_count=error_count,
        last_error=error,
    )


def _record(
    job: ClaimedJob, result: PollResult, index: int, output: Output, blob: StoredBlob
) -> ArtifactRecord:
    metadata: dict[str, object] = {
        **dict(blob.metadata),
        "provider": job.provider_id,
        # A job that finishes within its submit has no id on the claimed row yet.
        "provider_job_id": result.provider_job_id or job.provider_job_id,
        "output_index": index,
        "media_type": blob.media_type,
    }
    if isinstance(output, RemoteOutput):
        metadata["source_host"] = urlsplit(output.url).hostname
    if output.media_type:
        metadata["provider_media_type"] = output.media_type
    if output.metadata:
        metadata["provider_metadata"] = dict(output.metadata)
    filename = blob.filename or output.filename or _generated_name(job, index, blob)
    return ArtifactRecord(
        id=uuid.uuid4(),
        type=blob.media_type,
        uri=blob.uri,
        content_hash=blob.content_hash,
        size_bytes=blob.size_bytes,
        filename=filename[:255],
        metadata=metadata,
    )


def _generated_name(job: ClaimedJob, index: int, blob: StoredBlob) -> str:
    """``<job id>-<index>.<ext>`` with the sniffed type's usual extension (``mp3``, ``mov``;
    the MIME subtype gave ``.mpeg`` and ``.quicktime``)."""
    return f"{job.id}-{index}.{blob.extension or 'bin'}"


def _result_uri(result: PollResult, records: list[ArtifactRecord]) -> str | None:
    """The provider's address of the result; the stored copy's uri for inline and ``data:``
    outputs, and for an address too long for the column (`RESULT_URI_MAX`)."""
    stored = records[0].uri if records else None
    if result.result_uri:
        return result.result_uri if len(result.result_uri) <= RESULT_URI_MAX else stored
    first = result.outputs[0]
    if isinstance(first, RemoteOutput) and not first.url.startswith("data:"):
        return first.url if len(first.url) <= RESULT_URI_MAX else stored
    return stored
