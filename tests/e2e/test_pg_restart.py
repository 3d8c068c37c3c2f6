"""PostgreSQL restarted under running replicas: they reconnect and finish every job.

The test gets its own cluster (`devenv.pgcluster`, in a scratch directory) because the shared
one serves every other test. Jobs finish at the simulator at staggered times, so some are
in flight and some are still to come when the server goes down for longer than a lease TTL
(fast shutdown, then a start on the same data directory and port). The replicas must keep
running, notice (``db.unavailable`` and friends), come back without a restart, and finish everything
exactly once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from devenv.pgcluster import (
    create_database,
    scratch_dir,
    start_cluster,
    stop_cluster,
    with_database,
)
from poller.migrate import upgrade_to_head
from tests.e2e import jobs
from tests.e2e.dbcheck import (
    Integrity,
    install_lease_audit,
    integrity,
    scalar,
    wait_all_terminal,
)
from tests.e2e.harness import count_by, fleet, wait_until

pytestmark = pytest.mark.slow

DOWN_S = 4.0
LEASE_TTL_S = 3.0
SLACK_S = 1.5  # the claim loop's reconnect backoff (≤ 2 s) ends within the TTL plus this
# What a replica logs when the database goes away under it (claim loop, retried writes,
# heartbeat, LISTEN connection): each replica must have noticed through at least one.
OUTAGE_EVENTS = {
    "db.unavailable",
    "db.retry_scheduled",
    "db.heartbeat_failed",
    "db.write_back_abandoned",
    "listener.disconnected",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Outage:
    db_url: str
    ids: list[str]
    finished_before: int  # jobs terminal when PostgreSQL went down
    first_write_after_s: float
    same_url: bool
    exit_codes: dict[str, int]
    events: list[dict[str, Any]]
    report: Integrity


def _first_write_after(db_url: str, since: float) -> float | None:
    first = scalar(
        db_url,
        "SELECT extract(epoch FROM min(updated_at)) FROM app.generation_jobs "
        "WHERE updated_at > to_timestamp(%s)",
        (since,),
    )
    return None if first is None else float(first) - since


@pytest.fixture(scope="module")
def outage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outage]:
    workdir = tmp_path_factory.mktemp("pgrestart")
    with scratch_dir() as base, start_cluster(base / "data") as cluster:
        create_database(cluster.url, "poller")
        db_url = with_database(cluster.url, "poller")
        upgrade_to_head(db_url)
        install_lease_audit(db_url)
        specs = [jobs.replicate_image("seconds:1") for _ in range(20)]
        specs += [jobs.stability_image("seconds:7") for _ in range(20)]
        specs += [jobs.suno_audio("seconds:9") for _ in range(20)]
        overrides = {"POLLER_LEASE_TTL_S": str(LEASE_TTL_S)}
        with fleet(workdir, db_url) as group:
            group.start(2, overrides=overrides)
            ids = jobs.insert(db_url, specs)
            wait_until(
                lambda: (
                    int(
                        scalar(
                            db_url,
                            "SELECT count(*) FROM app.generation_jobs WHERE status = 'completed'",
                        )
                    )
                    >= 10
                ),
                timeout_s=60,
                what="the first completions",
            )
            # Terminal, not merely started: by the tenth completion every job may have been
            # submitted (the first output of each replica also starts its metadata parsers).
            finished_before = int(
                scalar(
                    db_url,
                    "SELECT count(*) FROM app.generation_jobs "
                    "WHERE status IN ('completed', 'failed', 'timed_out')",
                )
            )
            stop_cluster(base / "data")
            time.sleep(DOWN_S)
            restarted = start_cluster(base / "data")
            back_at = time.time()
            wait_all_terminal(db_url, timeout_s=90)
            first = _first_write_after(db_url, back_at)
            codes = group.stop_all()
            events = group.events()
        print(f"\nPostgreSQL down {DOWN_S:g} s: first job write {first:.2f} s after it was back")
        yield Outage(
            db_url=db_url,
            ids=[str(i) for i in ids],
            finished_before=finished_before,
            first_write_after_s=first if first is not None else float("inf"),
            same_url=restarted.url == cluster.url,
            exit_codes=codes,
            events=events,
            report=integrity(db_url),
        )


def test_the_outage_hit_a_run_in_progress(outage: Outage) -> None:
    assert outage.same_url  # the daemons' DATABASE_URL stayed valid
    assert 10 <= outage.finished_before < len(outage.ids)
    noticed = {e["replica"] for e in outage.events if e["event"] in OUTAGE_EVENTS}
    assert noticed == {"replica-1", "replica-2"}


def test_replicas_reconnect_and_finish_every_job_exactly_once(outage: Outage) -> None:
    assert outage.report.by_status == {"completed": len(outage.ids)}, outage.report.summary()
    completed = count_by([e for e in outage.events if e["event"] == "job.completed"], "job_id")
    assert completed == dict.fromkeys(outage.ids, 1)
    assert outage.report.duplicate_artifacts == 0
    assert outage.report.artifacts == outage.report.referenced
    assert outage.exit_codes == {"replica-1": 0, "replica-2": 0}  # never restarted


def test_work_resumes_within_a_lease_ttl_of_the_server_coming_back(outage: Outage) -> None:
    assert outage.first_write_after_s <= LEASE_TTL_S + SLACK_S
