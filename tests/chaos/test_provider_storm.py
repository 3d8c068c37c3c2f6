"""Chaos: a provider storm, then calm. Nothing may fail that the providers would finish.

The simulator answers status polls, cancels and result downloads with 20 % 5xx (500/503 in
the vendor's shape, 502/504 as an HTML proxy page), 10 % 429 with ``Retry-After: 1``, 5 %
cut-off JSON (a body shorter than its length on the CDN) and 10 % extra latency, across all
three vendors, while three replicas work. Submits are left out of the storm on purpose: a
create call that fails ambiguously is never retried (DESIGN.md §10), so a storm on submits
measures that rule (see test_bad_input.py), not resilience.

Recovery = from the storm's end (fault rates set to zero at run time) until no active job
carries a consecutive-error count any more, i.e. every job that was backing off has had a
clean poll; bounded by the lease TTL plus slack (backoff is capped at 0.5 s here and a 429
pauses a provider for 1 s).
"""

from __future__ import annotations

import time

import pytest

from tests.chaos.chaos import Feed, assert_survived, build_report, mixed, scale
from tests.e2e.dbcheck import scalar, wait_all_terminal
from tests.e2e.harness import TEST_KEYS, fleet, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.chaos]

LEASE_TTL_S = 3.0
SLACK_S = 2.0
STORM = {"p_5xx": 0.2, "p_429": 0.1, "p_malformed": 0.05, "p_slow": 0.1, "slow_s": 1.0}
OVERRIDES = {
    "POLLER_LEASE_TTL_S": str(LEASE_TTL_S),
    # Stability locks an account out for 60 s after a 429 and the adapter honours that; the
    # storm shortens the lockout so that one run fits in seconds (Suno's is already 1 s).
    "STABILITY_RATE_LIMIT_PAUSE_S": "1",
}


def _backing_off(db_url: str) -> int:
    return int(
        scalar(
            db_url,
            "SELECT count(*) FROM app.generation_jobs "
            "WHERE status IN ('pending', 'processing') AND error_count > 0",
        )
    )


def test_provider_storm_fails_nothing_and_recovers(
    module_db: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> None:
    sc = scale(request.config, bounded=6.0, long=150.0)
    sim_args = ["--fault-scope", "poll,cancel,cdn", "--retry-after", "1"]
    start = time.monotonic()
    with fleet(tmp_path_factory.mktemp("storm"), module_db, *sim_args) as group:
        replicas = group.start(3, overrides=OVERRIDES)
        for rep in replicas:
            rep.wait_for_event("daemon.started")
        group.sim.set_faults(**STORM)
        feed = Feed(module_db, mixed(poll_interval_ms=700), rate=12, life_s=8.0, seed=3).start()
        time.sleep(sc.fault_s)
        feed.stop()
        group.sim.set_faults(p_5xx=0, p_429=0, p_malformed=0, p_slow=0)
        calm = time.monotonic()
        wait_until(lambda: _backing_off(module_db) == 0, timeout_s=30, what="backoffs to clear")
        recovery = time.monotonic() - calm
        wait_all_terminal(module_db, timeout_s=60)
        injected = dict(group.sim.stats()["faults"])
        codes = group.stop_all()
        output = group.output()
    report = build_report(
        module_db,
        scenario="provider storm",
        faults=sum(injected.values()),
        recovery_s=recovery,
        recovery_bound_s=LEASE_TTL_S + SLACK_S,
        run_s=time.monotonic() - start,
    )
    print(f"  injected: {injected}")
    assert set(codes.values()) == {0}
    assert injected.get("5xx", 0) and injected.get("429", 0) and injected.get("malformed", 0)
    assert not any(key in output for key in TEST_KEYS.values())
    assert_survived(report)
