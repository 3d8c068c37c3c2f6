"""Three daemon processes x 500 jobs against the simulator: each job finishes exactly once.

Evidence is taken from three independent places: the rows (every job terminal, artifact rows
exactly one per output per job, files hashing to their rows), the replicas' JSON logs (one
``job.completed`` per job, across all replicas; ``lease.lost`` only for a lease that really
expired) and the NOTIFY channel (one terminal notification per job). "Really expired" is
the database's own record: a test-only trigger logs every claim that took a lease over from
another owner (`tests.e2e.dbcheck.install_lease_audit`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import jobs
from tests.e2e.dbcheck import (
    Integrity,
    NotifyCollector,
    bad_local_blobs,
    integrity,
    takeovers,
    unexplained_lease_losses,
    wait_all_terminal,
)
from tests.e2e.harness import count_by, fleet

pytestmark = pytest.mark.slow

JOBS = 500
REPLICAS = 3
MAKERS = (jobs.replicate_image, jobs.stability_image, jobs.suno_audio)


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    db_url: str
    store: Path
    ids: list[str]
    seconds: float
    exit_codes: dict[str, int]
    events: list[dict[str, Any]]
    notifications: dict[str, int]
    report: Integrity
    takeovers: list[dict[str, Any]]


@pytest.fixture(scope="module")
def run(module_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    workdir = tmp_path_factory.mktemp("replicas")
    specs = [MAKERS[n % len(MAKERS)]() for n in range(JOBS)]
    ids = jobs.insert(module_db, specs)
    with NotifyCollector(module_db) as notes, fleet(workdir, module_db) as group:
        start = time.monotonic()
        group.start(REPLICAS, overrides={"POLLER_LOG_LEVEL": "debug"})
        wait_all_terminal(module_db, timeout_s=150)
        seconds = time.monotonic() - start
        codes = group.stop_all()
        notes.settle(JOBS)
        events = group.events()
    print(f"\n{REPLICAS} replicas x {JOBS} jobs: all terminal {seconds:.1f} s after start")
    yield Run(
        db_url=module_db,
        store=workdir / "artifacts",
        ids=[str(i) for i in ids],
        seconds=seconds,
        exit_codes=codes,
        events=events,
        notifications=notes.per_job(),
        report=integrity(module_db),
        takeovers=takeovers(module_db),
    )


def test_every_job_completes_and_replicas_exit_cleanly(run: Run) -> None:
    assert run.report.by_status == {"completed": JOBS}, run.report.summary()
    assert run.exit_codes == {f"replica-{n}": 0 for n in range(1, REPLICAS + 1)}


def test_each_job_finishes_exactly_once(run: Run) -> None:
    completed = count_by([e for e in run.events if e["event"] == "job.completed"], "job_id")
    assert completed == dict.fromkeys(run.ids, 1)
    assert run.notifications == dict.fromkeys(run.ids, 1)


def test_the_work_is_shared_by_all_replicas(run: Run) -> None:
    per_replica = count_by([e for e in run.events if e["event"] == "job.completed"], "replica")
    assert set(per_replica) == {f"replica-{n}" for n in range(1, REPLICAS + 1)}


def test_exactly_one_artifact_row_per_output_per_job(run: Run) -> None:
    report = run.report
    assert report.duplicate_artifacts == 0, report.summary()
    assert report.completed_without_artifacts == 0
    assert report.artifacts == report.referenced
    assert bad_local_blobs(run.db_url, run.store) == []


def test_lease_lost_is_logged_only_where_a_lease_really_expired(run: Run) -> None:
    lost = [e for e in run.events if e["event"] == "lease.lost"]
    print(f"\nlease.lost lines: {len(lost)}; leases really taken over: {len(run.takeovers)}")
    unexplained = unexplained_lease_losses(lost, run.takeovers)
    stages = count_by(unexplained, "stage")
    assert unexplained == [], f"{len(unexplained)} of {len(lost)} unexplained, by stage {stages}"


def test_every_claim_is_logged_as_job_claimed(run: Run) -> None:
    """DESIGN.md §6 names ``job.claimed`` among the stable events (debug level here)."""
    claimed = count_by([e for e in run.events if e["event"] == "job.claimed"], "job_id")
    assert set(claimed) == set(run.ids)
