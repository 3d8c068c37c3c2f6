"""Chaos: PostgreSQL stopped and started again, repeatedly, under three running replicas.

A dedicated cluster (`devenv.pgcluster`) so the shared test server is never touched. Each
outage is a fast shutdown (every connection of every replica is cut, in-flight write-backs
fail), 1-3 s of downtime, then a start on the same data directory and port; the next outage
comes 1-2 s after the replicas wrote again. The replicas are never restarted. Recovery per
outage = from the server accepting connections again to the first write a replica makes to
a job that existed before (rows the job feed inserts meanwhile do not count).

Bound: lease TTL + 1.5 s, as for the other faults. Recovery here includes fresh connections
(the pool checks each one before use and retries a lost server 0.5 s, 0.75 s, … apart; the
claim loop's reconnect wait is capped at 2 s): 0.00 to 1.07 s over 25 restarts on this 2-core
machine. With psycopg_pool's own 1, 2, 4 s retries it was up to 4.8 s.
"""

from __future__ import annotations

import random
import time
from contextlib import suppress
from pathlib import Path

import psycopg
import pytest

from devenv.pgcluster import (
    create_database,
    scratch_dir,
    start_cluster,
    stop_cluster,
    with_database,
)
from poller.migrate import upgrade_to_head
from tests.chaos.chaos import Feed, assert_survived, build_report, mixed, scale
from tests.e2e.dbcheck import install_lease_audit, scalar, wait_all_terminal
from tests.e2e.harness import fleet

pytestmark = [pytest.mark.slow, pytest.mark.chaos]

LEASE_TTL_S = 3.0
MAX_DOWN_S = 3.0
RECOVERY_BOUND_S = LEASE_TTL_S + 1.5
MAKE = mixed(poll_interval_ms=1000)


def _first_write_after(db_url: str, since: float, *, give_up_s: float = 30.0) -> float:
    """Seconds from ``since`` to the first replica write to an older job (inf: none came).

    Rows inserted after ``since`` (the job feed) do not count: only a replica's write shows
    that it works again.
    """
    deadline = time.monotonic() + give_up_s
    while time.monotonic() < deadline:
        with suppress(psycopg.OperationalError):  # the server may still be starting
            first = scalar(
                db_url,
                "SELECT extract(epoch FROM min(updated_at)) FROM app.generation_jobs "
                "WHERE updated_at > to_timestamp(%s) AND created_at < to_timestamp(%s)",
                (since, since),
            )
            if first is not None:
                return float(first) - since
        time.sleep(0.1)
    return float("inf")


def _outages(data: Path, db_url: str, count: int, rng: random.Random) -> list[float]:
    recoveries = []
    for _ in range(count):
        time.sleep(rng.uniform(1.0, 2.0))
        stop_cluster(data)
        time.sleep(rng.uniform(1.0, MAX_DOWN_S))
        start_cluster(data)
        back = time.time()
        recoveries.append(_first_write_after(db_url, back))
    return recoveries


def test_repeated_postgres_restarts_lose_and_duplicate_nothing(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> None:
    restarts = int(scale(request.config, bounded=3, long=25).fault_s)
    rng = random.Random(777)
    start = time.monotonic()
    with scratch_dir() as base, start_cluster(base / "data") as cluster:
        create_database(cluster.url, "poller")
        db_url = with_database(cluster.url, "poller")
        upgrade_to_head(db_url)
        install_lease_audit(db_url)
        with fleet(tmp_path_factory.mktemp("pgchaos"), db_url) as group:
            replicas = group.start(3, overrides={"POLLER_LEASE_TTL_S": str(LEASE_TTL_S)})
            for rep in replicas:
                rep.wait_for_event("daemon.started")
            feed = Feed(db_url, MAKE, rate=8, life_s=6.0, seed=2).start()
            recoveries = _outages(base / "data", db_url, restarts, rng)
            feed.stop()
            wait_all_terminal(db_url, timeout_s=90)
            codes = group.stop_all()
            tails = group.stderr_tails()
        report = build_report(
            db_url,
            scenario="PostgreSQL restarts",
            faults=restarts,
            recovery_s=max(recoveries),
            recovery_bound_s=RECOVERY_BOUND_S,
            run_s=time.monotonic() - start,
        )
    print(f"  recovery per restart: {', '.join(f'{r:.2f}s' for r in recoveries)}")
    assert codes == {"replica-1": 0, "replica-2": 0, "replica-3": 0}, tails
    assert_survived(report)
