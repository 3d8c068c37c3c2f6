"""``kill -9`` of a replica mid-poll and mid-download: another replica finishes its jobs.

The victim starts alone and takes every job. "Poll" jobs answer their first status request
only after `POLL_SLOW_S` (simulator ``poll_slow``, first request only); "download" jobs
succeed at the first poll but every download of their files waits `DOWNLOAD_SLOW_S`
(``cdn_slow``). Once every slow poll has reached the simulator and every download has
started, a second replica is started, and as soon as it runs the victim is killed with
SIGKILL: no shutdown code runs, its leases are simply abandoned. The survivor (idle, so with
free capacity) must take each of them over once the lease expires (recorded by the
database's takeover audit) and finish them, with exactly one artifact row per output and
one ``job.completed`` per job. The slow phases are long because the survivor needs a few
seconds to start on a loaded machine and the victim must still be mid-work when it dies.
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
    bad_local_blobs,
    integrity,
    rows,
    takeovers,
    wait_all_terminal,
)
from tests.e2e.harness import Fleet, SimulatorProcess, count_by, fleet, wait_until

pytestmark = pytest.mark.slow

LEASE_TTL_S = 2.0
POLL_SLOW_S = 25.0
DOWNLOAD_SLOW_S = 10.0
PER_KIND = 6
SLACK_S = 1.5  # claim-loop wake-up (≤ 0.2 s idle sleep) + a loaded 2-core machine


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    db_url: str
    store: Path
    killed_at: float  # Unix time
    victim: str
    poll_jobs: set[str]
    download_jobs: set[str]
    victim_jobs: set[str]  # jobs the victim held when it died
    report: Integrity
    takeovers: list[dict[str, Any]]
    events: list[dict[str, Any]]


def _in_slow_poll(sim: SimulatorProcess, provider_ids: set[str]) -> bool:
    polled = {j["id"] for j in sim.jobs() if j["poll_requests"] >= 1}
    return provider_ids <= polled


def _wait_mid_work(group: Fleet, kinds: dict[str, str]) -> None:
    """Wait until every job is inside its slow poll or its slow download."""

    def submitted() -> dict[str, str] | None:
        found = {e["job_id"]: e["provider_job_id"] for e in group.events("provider.submitted")}
        return found if set(found) >= set(kinds) else None

    provider_job = wait_until(submitted, timeout_s=60, what="all jobs submitted")
    slow_polls = {provider_job[j] for j, kind in kinds.items() if kind == "poll"}
    wait_until(
        lambda: _in_slow_poll(group.sim, slow_polls), timeout_s=30, what="slow polls in flight"
    )

    def downloading() -> bool:
        polled = group.events("provider.polled")
        done = {e["job_id"] for e in polled if e.get("state") == "succeeded"}
        return {j for j, kind in kinds.items() if kind == "download"} <= done

    wait_until(downloading, timeout_s=30, what="every download to start")


def _held_by(db_url: str, owner: str) -> set[str]:
    found = rows(
        db_url,
        "SELECT id::text AS id FROM app.generation_jobs "
        "WHERE lease_owner = %s AND status IN ('pending', 'processing')",
        (owner,),
    )
    return {r["id"] for r in found}


@pytest.fixture(scope="module")
def run(module_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    workdir = tmp_path_factory.mktemp("crash")
    specs = [jobs.replicate_image(f"poll_slow:{POLL_SLOW_S:g}:1") for _ in range(PER_KIND)]
    specs += [
        jobs.replicate_image(f"polls:1,cdn_slow:{DOWNLOAD_SLOW_S:g}") for _ in range(PER_KIND)
    ]
    overrides = {"POLLER_LOG_LEVEL": "debug", "POLLER_LEASE_TTL_S": str(LEASE_TTL_S)}
    with fleet(workdir, module_db) as group:
        [victim] = group.start(1, overrides=overrides)
        victim.wait_for_event("daemon.started")
        ids = jobs.insert(module_db, specs)
        kinds = {str(i): "poll" if n < PER_KIND else "download" for n, i in enumerate(ids)}
        _wait_mid_work(group, kinds)
        [survivor] = group.start(1, overrides=overrides)
        survivor.wait_for_event("daemon.started")
        held = _held_by(module_db, victim.worker_id)  # nobody can take them for a lease TTL
        victim.kill()
        killed_at = time.time()
        wait_all_terminal(module_db, timeout_s=60)
        assert group.stop_all()[survivor.name] == 0
        events = group.events()
    yield Run(
        db_url=module_db,
        store=workdir / "artifacts",
        killed_at=killed_at,
        victim=victim.name,
        poll_jobs={j for j, k in kinds.items() if k == "poll"},
        download_jobs={j for j, k in kinds.items() if k == "download"},
        victim_jobs=held,
        report=integrity(module_db),
        takeovers=takeovers(module_db),
        events=events,
    )


def test_the_victim_died_holding_every_job_mid_poll_or_mid_download(run: Run) -> None:
    assert run.victim_jobs == run.poll_jobs | run.download_jobs
    victim_done = [
        e for e in run.events if e["replica"] == run.victim and e["event"] == "job.completed"
    ]
    assert victim_done == []


def test_every_job_the_victim_held_is_taken_over_within_the_lease_ttl(run: Run) -> None:
    taken = {t["job_id"]: t for t in run.takeovers if t["from_owner"] == run.victim}
    assert set(taken) == run.victim_jobs
    delays = [t["taken_at"] - run.killed_at for t in taken.values()]
    print(f"\nrecovery after kill -9: max {max(delays):.2f} s (lease TTL {LEASE_TTL_S} s)")
    assert max(delays) <= LEASE_TTL_S + SLACK_S


def test_all_jobs_complete_exactly_once_without_duplicate_artifacts(run: Run) -> None:
    assert run.report.by_status == {"completed": 2 * PER_KIND}, run.report.summary()
    completed = count_by([e for e in run.events if e["event"] == "job.completed"], "job_id")
    assert completed == dict.fromkeys(run.poll_jobs | run.download_jobs, 1)
    assert run.report.duplicate_artifacts == 0
    assert run.report.artifacts == run.report.referenced
    assert bad_local_blobs(run.db_url, run.store) == []
