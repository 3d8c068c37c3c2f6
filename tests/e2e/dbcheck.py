"""What the suites assert about the database and the store after a run.

`Integrity` is the one definition of "no job lost, none finished twice, no duplicate
artifact" every e2e and chaos test shares, so their reports are comparable:

* lost = still ``pending``/``processing`` when the test gave up waiting;
* duplicate artifacts = rows beyond one per output per job: artifact rows no job references,
  extra rows for the same ``(provider, provider_job_id, output_index)``, and artifact ids
  referenced by two jobs;
* completed-but-empty = a ``completed`` job without artifact ids.

`NotifyCollector` LISTENs on ``generation_job_finished`` from a thread, so a test can check
the terminal NOTIFY an orchestrator would wait for (one per job, with its payload).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import psycopg
from psycopg.rows import dict_row

from tests.e2e.harness import HarnessError

TERMINAL = ("completed", "failed", "timed_out")


def rows(db_url: str, query: str, params: Sequence[Any] | None = None) -> list[dict[str, Any]]:
    with psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as conn:
        return list(conn.execute(query, params).fetchall())


def scalar(db_url: str, query: str, params: Sequence[Any] | None = None) -> Any:
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(query, params).fetchone()
    return None if row is None else row[0]


def status_counts(db_url: str) -> dict[str, int]:
    found = rows(db_url, "SELECT status, count(*) AS n FROM app.generation_jobs GROUP BY 1")
    return {r["status"]: int(r["n"]) for r in found}


def active_count(db_url: str) -> int:
    """Jobs not yet terminal; a connection error counts as "unknown" (-1)."""
    try:
        return int(
            scalar(
                db_url,
                "SELECT count(*) FROM app.generation_jobs "
                "WHERE status IN ('pending', 'processing')",
            )
        )
    except psycopg.OperationalError:
        return -1


def wait_all_terminal(db_url: str, *, timeout_s: float) -> float:
    """Block until no job is active; returns the seconds it took (fails on timeout)."""
    start = time.monotonic()
    while True:
        if active_count(db_url) == 0:
            return time.monotonic() - start
        if time.monotonic() - start > timeout_s:
            raise HarnessError(f"jobs still active after {timeout_s:g} s: {status_counts(db_url)}")
        time.sleep(0.2)


@dataclass(frozen=True, slots=True, kw_only=True)
class Integrity:
    """Counts that must be zero after any run, however chaotic."""

    by_status: dict[str, int]
    artifacts: int
    referenced: int
    orphans: int
    extra_per_output: int
    shared_between_jobs: int
    completed_without_artifacts: int

    @property
    def lost(self) -> int:
        return self.by_status.get("pending", 0) + self.by_status.get("processing", 0)

    @property
    def duplicate_artifacts(self) -> int:
        return self.orphans + self.extra_per_output + self.shared_between_jobs

    def summary(self) -> str:
        return (
            f"statuses={self.by_status} artifacts={self.artifacts} lost={self.lost} "
            f"duplicate_artifacts={self.duplicate_artifacts} "
            f"completed_without_artifacts={self.completed_without_artifacts}"
        )


_ORPHANS = """
SELECT count(*) FROM app.artifacts a
 WHERE NOT EXISTS (SELECT 1 FROM app.generation_jobs j WHERE j.artifact_ids ? a.id::text)
"""
_EXTRA_PER_OUTPUT = """
SELECT coalesce(sum(n - 1), 0) FROM (
    SELECT count(*) AS n FROM app.artifacts
     GROUP BY metadata->>'provider', metadata->>'provider_job_id', metadata->>'output_index'
    HAVING count(*) > 1) d
"""
_SHARED = """
SELECT count(*) FROM (
    SELECT e FROM app.generation_jobs j, jsonb_array_elements_text(j.artifact_ids) e
     GROUP BY e HAVING count(*) > 1) d
"""
_REFERENCED = """
SELECT coalesce(sum(jsonb_array_length(artifact_ids)), 0) FROM app.generation_jobs
"""
_EMPTY_COMPLETED = """
SELECT count(*) FROM app.generation_jobs
 WHERE status = 'completed' AND (artifact_id IS NULL OR jsonb_array_length(artifact_ids) = 0)
"""


def integrity(db_url: str) -> Integrity:
    return Integrity(
        by_status=status_counts(db_url),
        artifacts=int(scalar(db_url, "SELECT count(*) FROM app.artifacts")),
        referenced=int(scalar(db_url, _REFERENCED)),
        orphans=int(scalar(db_url, _ORPHANS)),
        extra_per_output=int(scalar(db_url, _EXTRA_PER_OUTPUT)),
        shared_between_jobs=int(scalar(db_url, _SHARED)),
        completed_without_artifacts=int(scalar(db_url, _EMPTY_COMPLETED)),
    )


def failures(db_url: str) -> list[dict[str, Any]]:
    """Jobs that ended without a result, with their messages (for reports and asserts)."""
    return rows(
        db_url,
        "SELECT id, provider_id, status, error_message FROM app.generation_jobs "
        "WHERE status IN ('failed', 'timed_out') ORDER BY completed_at",
    )


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def bad_local_blobs(db_url: str, root: Path) -> list[str]:
    """Artifact rows whose file is missing, misplaced or does not hash to its content_hash."""
    problems = []
    for art in rows(db_url, "SELECT uri, content_hash, size_bytes FROM app.artifacts"):
        path = Path(art["uri"])
        expected = root / "sha256" / art["content_hash"][:2] / art["content_hash"]
        if path != expected:
            problems.append(f"{path}: not at {expected}")
        elif not path.is_file():
            problems.append(f"{path}: missing")
        elif path.stat().st_size != art["size_bytes"] or sha256_of(path) != art["content_hash"]:
            problems.append(f"{path}: size or sha256 differs from the row")
    return problems


@dataclass
class NotifyCollector:
    """LISTEN ``generation_job_finished`` in a thread; payloads land in `payloads`.

    Reconnects after a server restart; `gaps` counts how often it had to (notifications
    sent while it was disconnected are lost, as they would be for any listener).
    """

    db_url: str
    payloads: list[dict[str, Any]] = field(default_factory=list)
    gaps: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _ready: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> NotifyCollector:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise HarnessError("the NOTIFY listener did not connect")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._listen()
            except psycopg.OperationalError:
                self.gaps += 1
                time.sleep(0.2)

    def _listen(self) -> None:
        with psycopg.connect(self.db_url, autocommit=True, connect_timeout=3) as conn:
            conn.execute("LISTEN generation_job_finished")
            self._ready.set()
            while not self._stop.is_set():
                for note in conn.notifies(timeout=0.2):
                    self.payloads.append(json.loads(note.payload))
                conn.execute("SELECT 1")

    def per_job(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for payload in list(self.payloads):
            counts[payload["id"]] = counts.get(payload["id"], 0) + 1
        return counts

    def settle(self, expected: int, *, timeout_s: float = 10) -> None:
        """Wait until at least ``expected`` notifications arrived (they trail the commit)."""
        deadline = time.monotonic() + timeout_s
        while len(self.payloads) < expected and time.monotonic() < deadline:
            time.sleep(0.05)


# A test-only audit of lease takeovers: the ground truth for "a lease really expired". A
# claim that replaces another owner can only happen once that owner's lease ran out (the
# claim requires next_poll_at <= now()), so every takeover row is one real expiry.
_AUDIT = """
CREATE SCHEMA e2e_audit;
CREATE TABLE e2e_audit.takeovers (
    job_id uuid NOT NULL, from_owner text NOT NULL, to_owner text NOT NULL,
    from_version bigint NOT NULL, lease_expired_at timestamptz NOT NULL,
    taken_at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE FUNCTION e2e_audit.record_takeover() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO e2e_audit.takeovers (job_id, from_owner, to_owner, from_version,
                                     lease_expired_at)
    VALUES (NEW.id, OLD.lease_owner, NEW.lease_owner, OLD.lease_version, OLD.next_poll_at);
    RETURN NULL;
END $$;
CREATE TRIGGER e2e_takeover AFTER UPDATE OF lease_owner ON app.generation_jobs FOR EACH ROW
    WHEN (OLD.lease_owner IS NOT NULL AND NEW.lease_owner IS NOT NULL
          AND NEW.lease_version > OLD.lease_version)
    EXECUTE FUNCTION e2e_audit.record_takeover();
"""


def install_lease_audit(db_url: str) -> None:
    """Record every lease taken over from another owner in ``e2e_audit.takeovers``."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(_AUDIT)


def takeovers(db_url: str) -> list[dict[str, Any]]:
    """Recorded takeovers, oldest first; times are Unix seconds (database clock)."""
    return rows(
        db_url,
        """SELECT job_id::text AS job_id, from_owner, to_owner, from_version,
                  extract(epoch FROM lease_expired_at)::float8 AS expired_at,
                  extract(epoch FROM taken_at)::float8 AS taken_at
             FROM e2e_audit.takeovers ORDER BY taken_at""",
    )


def unexplained_lease_losses(
    lost_events: Sequence[dict[str, Any]], taken: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """``lease.lost`` log events with no takeover of that job from that replica."""
    real = {(t["job_id"], t["from_owner"]) for t in taken}
    return [e for e in lost_events if (e.get("job_id"), e.get("replica")) not in real]
