"""A pool of long-lived workers fed from a queue, instead of a task per job.

Spawning an anyio task (its handle, cancel scope and done-callback) was the largest single
cost of a poll that does no I/O: 15 % of the claim loop's CPU in the claim benchmark's
profile. anyio's memory object stream was no cheaper (it builds a task-info record for every
receive). Here a hand-over is a deque append plus, when a worker is idle, one event. The pool
grows on demand to the peak number of items in progress at once; idle workers cost only
memory.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Generic, TypeVar

import anyio

T = TypeVar("T")


class Workers(Generic[T]):
    """Runs ``handle(item)`` for every item handed over, at most ``capacity`` at once.

    Used as ``async with Workers(handle, capacity=n) as workers``. A worker that finishes an
    item takes the next queued one before it goes idle, so with at most ``capacity`` items
    handed over and unfinished, every item starts at once. `cancel` stops the workers (those
    inside ``handle`` see a cancellation); on exit, `unstarted` holds what none picked up.
    """

    def __init__(self, handle: Callable[[T], Awaitable[None]], *, capacity: int) -> None:
        self._handle = handle
        self._capacity = capacity
        self._group = anyio.create_task_group()
        self._queued: deque[T] = deque()
        self._idle: list[anyio.Event] = []  # one per idle worker; set = "look at the queue"
        self._started = 0
        self.unstarted: list[T] = []

    async def __aenter__(self) -> Workers[T]:
        await self._group.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        try:
            return await self._group.__aexit__(exc_type, exc, tb)
        finally:
            self.unstarted = list(self._queued)
            self._queued.clear()

    def hand_over(self, item: T) -> None:
        """Queue ``item`` and wake an idle worker, or start one while under ``capacity``."""
        self._queued.append(item)
        if self._idle:
            self._idle.pop().set()
        elif self._started < self._capacity:
            self._started += 1
            self._group.start_soon(self._work, name="worker")

    @property
    def started(self) -> int:
        """Workers started so far (the pool's size: workers never exit before `cancel`)."""
        return self._started

    def cancel(self) -> None:
        self._group.cancel_scope.cancel()

    async def _work(self) -> None:
        while True:
            while self._queued:
                await self._handle(self._queued.popleft())
            woken = anyio.Event()
            self._idle.append(woken)
            await woken.wait()
