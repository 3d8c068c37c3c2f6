"""Chaos: three replicas, one of them ``kill -9``-ed every few seconds and restarted at once.

Jobs arrive steadily during the storm and finish at the simulator within seconds, and every
status reply and download takes half a second, so each replica always holds leases and kills
land mid-submit, mid-poll, mid-download and mid-write-back. A restarted process gets a new
lease-owner name (``replica-2-r3``), so the database's takeover audit attributes every
rescued lease to the process that died holding it.

Recovery time per kill = from the SIGKILL to the last takeover of a lease the dead process
held; bounded by the lease TTL (the lease may have been renewed just before the kill) plus
the survivors' wake-up and a loaded machine's slack.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

import pytest

from tests.chaos.chaos import (
    CRASH_LOOP,
    SUBMIT_UNKNOWN,
    Feed,
    assert_survived,
    build_report,
    mixed,
    scale,
)
from tests.e2e.dbcheck import takeovers, wait_all_terminal
from tests.e2e.harness import Replica, fleet

pytestmark = [pytest.mark.slow, pytest.mark.chaos]

LEASE_TTL_S = 2.0
SLACK_S = 2.0
# Polls are spread so that the survivors are not saturated: on 2 cores a rescued lease would
# otherwise queue behind hundreds of late polls and "recovery" would measure the backlog.
POLL_MS = 1500
RATE = 6  # jobs inserted per second while the storm lasts
LIFE_S = 8.0  # each is done at the simulator within this many seconds of its submit


@dataclass(frozen=True, slots=True, kw_only=True)
class Kill:
    owner: str
    at: float  # Unix time of the SIGKILL


def _started(rep: Replica) -> bool:
    return any(e["replica"] == rep.worker_id for e in rep.events("daemon.started"))


def _storm(replicas: list[Replica], seconds: float, rng: random.Random) -> list[Kill]:
    """Every 1.5-3.5 s SIGKILL one started replica and restart it, keeping one alive.

    Only started replicas are chosen, so each kill can hit work in progress (a process
    killed while importing holds nothing) and a survivor exists to measure the rescue.
    """
    kills = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(rng.uniform(1.5, 3.5))
        started = [rep for rep in replicas if _started(rep)]
        if len(started) < 2:
            continue
        victim = rng.choice(started)
        owner = victim.worker_id
        victim.kill()
        kills.append(Kill(owner=owner, at=time.time()))
        victim.start()
    return kills


def _recovery(kills: list[Kill], taken: list[dict[str, float | str]]) -> float:
    worst = 0.0
    for kill in kills:
        delays = [float(t["taken_at"]) - kill.at for t in taken if t["from_owner"] == kill.owner]
        worst = max([worst, *delays])
    return worst


def test_random_kill_9_storm_loses_and_duplicates_nothing(
    module_db: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> None:
    sc = scale(request.config, bounded=8.0, long=180.0)
    rng = random.Random(20240601)
    make = mixed("poll_slow:0.5,cdn_slow:0.5", poll_interval_ms=POLL_MS)
    overrides = {"POLLER_LEASE_TTL_S": str(LEASE_TTL_S)}
    start = time.monotonic()
    with fleet(tmp_path_factory.mktemp("killstorm"), module_db) as group:
        replicas = group.start(3, overrides=overrides)
        for rep in replicas:
            rep.wait_for_event("daemon.started")
        feed = Feed(module_db, make, rate=RATE, life_s=LIFE_S, seed=1).start()
        kills = _storm(replicas, sc.fault_s, rng)
        feed.stop()
        wait_all_terminal(module_db, timeout_s=60)
        for rep in replicas:  # a SIGTERM before the signal handlers exist is a plain kill
            rep.wait_for_event("daemon.started")
        codes = group.stop_all()
    taken = takeovers(module_db)
    report = build_report(
        module_db,
        scenario="kill -9 storm",
        faults=len(kills),
        recovery_s=_recovery(kills, taken),
        recovery_bound_s=LEASE_TTL_S + SLACK_S,
        run_s=time.monotonic() - start,
        by_design=(SUBMIT_UNKNOWN, CRASH_LOOP),
    )
    _print_rescues(kills, taken)
    assert set(codes.values()) == {0}  # the restarted processes still stop cleanly
    assert taken, "no kill hit a replica holding a lease: the storm tested nothing"
    assert_survived(report)


def _print_rescues(kills: list[Kill], taken: list[dict[str, Any]]) -> None:
    print(f"  leases rescued from killed processes: {len(taken)}")
    for kill in kills:
        mine = [t for t in taken if t["from_owner"] == kill.owner]
        if mine:
            expiry = max(float(t["expired_at"]) for t in mine) - kill.at
            claim = max(float(t["taken_at"]) - float(t["expired_at"]) for t in mine)
            print(
                f"  {kill.owner}: {len(mine)} leases, expiry {expiry:.2f}s after the kill, "
                f"taken over {claim:.2f}s after expiry"
            )
