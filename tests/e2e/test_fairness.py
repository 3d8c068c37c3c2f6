"""Tenant fairness at process level: a 5,000-job flood does not starve a 10-job tenant.

The flood is inserted first, so it is older and due earlier: a plain FIFO claim would serve
all 5,000 before the small tenant's first job. With the round-robin claim (DESIGN.md §3) the
small tenant's jobs must be claimed in the first claim round and finish while almost all of
the flood is still waiting. Order is read from the database clock: ``submit_started_at`` is
the first write after a claim, ``completed_at`` the last.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.e2e import jobs
from tests.e2e.dbcheck import rows, scalar
from tests.e2e.harness import fleet, wait_until

pytestmark = pytest.mark.slow

FLOOD, SMALL = 5000, 10
BATCH = 50  # POLLER_BATCH_SIZE: the size of one claim round


@dataclass(frozen=True, slots=True, kw_only=True)
class Order:
    small_submit_ranks: list[int]  # 0-based rank among all submits, by database time
    flood_completed_before_small_done: int
    flood_left: int  # flood jobs not yet submitted when the small tenant was done


def _small_done(db_url: str) -> bool:
    done = scalar(
        db_url,
        "SELECT count(*) FROM app.generation_jobs WHERE tenant_id = 'z-small' "
        "AND status = 'completed'",
    )
    return int(done) == SMALL


def _order(db_url: str) -> Order:
    ranked = rows(
        db_url,
        """SELECT tenant_id, rank() OVER (ORDER BY submit_started_at) - 1 AS rank
             FROM app.generation_jobs WHERE submit_started_at IS NOT NULL""",
    )
    before = scalar(
        db_url,
        """SELECT count(*) FROM app.generation_jobs
            WHERE tenant_id = 'a-flood' AND status = 'completed'
              AND completed_at < (SELECT max(completed_at) FROM app.generation_jobs
                                   WHERE tenant_id = 'z-small')""",
    )
    # Read on the database clock, not when the replica stopped: how many flood jobs had been
    # submitted by the time the small tenant's last job completed.
    started = scalar(
        db_url,
        """SELECT count(*) FROM app.generation_jobs
            WHERE tenant_id = 'a-flood'
              AND submit_started_at < (SELECT max(completed_at) FROM app.generation_jobs
                                        WHERE tenant_id = 'z-small')""",
    )
    return Order(
        small_submit_ranks=sorted(int(r["rank"]) for r in ranked if r["tenant_id"] == "z-small"),
        flood_completed_before_small_done=int(before),
        flood_left=FLOOD - int(started),
    )


@pytest.fixture(scope="module")
def order(module_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Order]:
    jobs.insert(module_db, [jobs.replicate_image(tenant="a-flood") for _ in range(FLOOD)])
    jobs.insert(module_db, [jobs.replicate_image(tenant="z-small") for _ in range(SMALL)])
    overrides = {"POLLER_BATCH_SIZE": str(BATCH)}
    with fleet(tmp_path_factory.mktemp("fairness"), module_db) as group:
        replica = group.start(1, overrides=overrides)[0]
        wait_until(lambda: _small_done(module_db), timeout_s=60, what="the small tenant")
        assert group.stop_all() == {replica.name: 0}
    found = _order(module_db)
    print(
        f"\nfairness: small tenant submit ranks {found.small_submit_ranks}; "
        f"{found.flood_completed_before_small_done} flood jobs completed and "
        f"{FLOOD - found.flood_left} submitted before its last job"
    )
    yield found


def test_the_small_tenant_is_claimed_in_the_first_round(order: Order) -> None:
    assert len(order.small_submit_ranks) == SMALL
    assert max(order.small_submit_ranks) < BATCH


def test_the_small_tenant_finishes_while_the_flood_still_waits(order: Order) -> None:
    assert order.flood_completed_before_small_done < 2 * BATCH
    # A FIFO claim would submit all 5,000 first; here most of the flood has not even been
    # submitted (about 400 were, on this machine, while the small jobs polled to completion).
    assert order.flood_left > FLOOD // 2
