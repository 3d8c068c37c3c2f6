"""The step worker pool: every item handled once, at most ``capacity`` at a time, idle
workers reused, and on cancellation the unstarted items handed back."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import anyio.lowlevel
import pytest

from poller.workers import Workers

pytestmark = pytest.mark.anyio


async def test_every_item_is_handled_once_with_workers_reused() -> None:
    handled: list[int] = []
    async with Workers(_record(handled), capacity=8) as workers:
        for round_ in range(10):
            for n in range(5):
                workers.hand_over(round_ * 5 + n)
            await anyio.wait_all_tasks_blocked()
        workers.cancel()
    assert sorted(handled) == list(range(50))
    assert workers.started == 5  # five at a time: the same five workers every round
    assert workers.unstarted == []


async def test_never_more_than_capacity_at_once_and_queued_items_start_when_one_frees() -> None:
    running = 0
    peak = 0
    release = anyio.Event()
    done: list[int] = []

    async def handle(item: int) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await release.wait()
        running -= 1
        done.append(item)

    async with Workers(handle, capacity=3) as workers:
        for n in range(7):  # more than capacity: the daemon never does this, the pool copes
            workers.hand_over(n)
        await anyio.wait_all_tasks_blocked()
        assert (running, workers.started) == (3, 3)
        release.set()
        await anyio.wait_all_tasks_blocked()  # every item done, the workers idle again
        workers.cancel()
    assert peak == 3
    assert sorted(done) == list(range(7))


async def test_cancel_interrupts_running_items_and_returns_the_unstarted() -> None:
    cancelled: list[int] = []

    async def handle(item: int) -> None:
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            cancelled.append(item)
            raise

    async with Workers(handle, capacity=2) as workers:
        for n in range(5):
            workers.hand_over(n)
        await anyio.wait_all_tasks_blocked()
        workers.cancel()
    assert sorted(cancelled) == [0, 1]
    assert workers.unstarted == [2, 3, 4]


def _record(handled: list[int]) -> Callable[[int], Awaitable[None]]:
    async def handle(item: int) -> None:
        await anyio.lowlevel.checkpoint()
        handled.append(item)

    return handle
