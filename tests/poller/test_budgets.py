"""The local side of the shared token bucket: one request to the database at a time, its
answer shared by every waiting step, "wait" answers cached until they expire."""

from __future__ import annotations

import itertools

import anyio
import pytest

from poller.budgets import CreateQueue, ProviderBudget
from poller.repository import Grant

pytestmark = pytest.mark.anyio


class FakeBucket:
    """Stands in for `Repository.take_tokens`: a bucket with ``tokens`` left, no refill."""

    def __init__(self, tokens: int, *, wait_s: float = 2.0, fail: bool = False) -> None:
        self.tokens = tokens
        self.wait_s = wait_s
        self.fail = fail
        self.requests = 0
        self.in_flight = 0
        self.peak_in_flight = 0

    async def take_tokens(self, provider: str, want: int) -> Grant:
        self.requests += 1
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            await anyio.sleep(0.01)  # a round trip: other steps pile up meanwhile
            if self.fail:
                raise ConnectionError("database gone")
            granted = min(want, self.tokens)
            self.tokens -= granted
            return Grant(granted=granted, wait_s=0.0 if granted else self.wait_s)
        finally:
            self.in_flight -= 1


def budget(bucket: FakeBucket, chunk: int) -> ProviderBudget:
    return ProviderBudget(bucket, "p", chunk=chunk)


async def gather_acquires(b: ProviderBudget, count: int) -> list[float]:
    waits: list[float] = []

    async def one() -> None:
        waits.append(await b.acquire())

    async with anyio.create_task_group() as tg:
        for _ in range(count):
            tg.start_soon(one)
    return waits


async def test_concurrent_steps_share_chunks_and_never_overspend() -> None:
    bucket = FakeBucket(tokens=6)
    waits = await gather_acquires(budget(bucket, chunk=4), 10)
    assert sorted(waits)[:6] == [0.0] * 6  # exactly the six tokens the bucket had
    assert all(w == pytest.approx(2.0, abs=0.1) for w in sorted(waits)[6:])
    assert bucket.peak_in_flight == 1  # one request at a time, whatever the crowd
    assert bucket.requests == 3  # 4 + 2 granted, then one "empty, wait 2 s"


async def test_a_wait_answer_is_remembered_until_it_expires() -> None:
    bucket = FakeBucket(tokens=0, wait_s=0.2)
    b = budget(bucket, chunk=4)
    assert await b.acquire() == pytest.approx(0.2, abs=0.05)
    assert b.blocked and not b.paused  # an empty bucket, not a pause of the provider
    assert 0 < await b.acquire() <= 0.2
    assert bucket.requests == 1
    await anyio.sleep(0.25)
    bucket.tokens = 1
    assert await b.acquire() == 0.0
    assert bucket.requests == 2


async def test_a_failed_request_wakes_the_waiters_who_then_ask_again() -> None:
    bucket = FakeBucket(tokens=5, fail=True)
    b = budget(bucket, chunk=5)
    errors = 0

    async def one() -> None:
        nonlocal errors
        try:
            await b.acquire()
        except ConnectionError:
            errors += 1

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(one)
    assert errors == 3  # each waiter retried the request itself and saw the outage
    assert bucket.requests == 3 and bucket.peak_in_flight == 1
    bucket.fail = False
    assert await b.acquire() == 0.0


async def test_a_reserved_batch_takes_its_tokens_in_one_request() -> None:
    bucket = FakeBucket(tokens=20)
    b = budget(bucket, chunk=4)
    await b.reserve(10)
    assert bucket.requests == 1 and bucket.tokens == 10  # the batch's ten, not a chunk of 4
    waits = await gather_acquires(b, 10)
    assert waits == [0.0] * 10
    assert bucket.requests == 1  # every step took the fast path
    await b.reserve(3)  # the cache is empty again: at least a chunk
    assert bucket.requests == 2 and bucket.tokens == 6


async def test_a_short_reservation_leaves_the_rest_of_the_batch_to_wait() -> None:
    bucket = FakeBucket(tokens=3, wait_s=0.5)
    b = budget(bucket, chunk=4)
    await b.reserve(5)
    waits = await gather_acquires(b, 5)
    assert sorted(waits)[:3] == [0.0] * 3
    assert all(w == pytest.approx(0.5, abs=0.1) for w in sorted(waits)[3:])
    assert bucket.requests == 2  # the reservation, then one "empty, wait" for both others


async def test_reserving_what_is_already_local_or_while_told_to_wait_asks_nobody() -> None:
    bucket = FakeBucket(tokens=0, wait_s=5.0)
    b = budget(bucket, chunk=4)
    assert await b.acquire() == pytest.approx(5.0, abs=0.1)
    await b.reserve(4)  # blocked: the last answer was "wait 5 s"
    assert bucket.requests == 1
    bucket.tokens = 8
    b2 = budget(bucket, chunk=4)
    await b2.reserve(2)
    await b2.reserve(4)  # the chunk of 4 already covers it
    assert bucket.requests == 2 and bucket.tokens == 4


async def test_jobs_waiting_for_create_tokens_get_turns_one_refill_apart() -> None:
    """Told only "wait 2 s", four waiting submits would all come back together and three of
    them would be claimed and rescheduled again for nothing; at 4 creates/s they return 2.0,
    2.25, 2.5 and 2.75 s from now, and the one token left goes to the first caller."""
    queue = CreateQueue(budget(FakeBucket(1, wait_s=2.0), chunk=1), rate_per_s=4.0)
    waits = [await queue.acquire() for _ in range(5)]
    assert waits[0] == 0.0
    assert waits[1] == pytest.approx(2.0, abs=0.05)
    assert all(b - a == pytest.approx(0.25, abs=0.02) for a, b in itertools.pairwise(waits[1:]))


class PausedBucket:
    async def take_tokens(self, provider: str, want: int) -> Grant:
        return Grant(granted=0, wait_s=3600.0, paused=True)


async def test_a_pause_is_told_apart_from_an_empty_bucket() -> None:
    """The daemon excludes a blocked provider from its claims, but not a paused one: the
    claim skips a paused provider's jobs itself, except those it must time out."""
    b = ProviderBudget(PausedBucket(), "p", chunk=4)
    assert await b.acquire() == pytest.approx(3600.0, abs=1)
    assert b.blocked and b.paused
    local = budget(FakeBucket(tokens=5), chunk=4)
    local.block_for(60)  # this replica's own 429
    assert local.blocked and local.paused
