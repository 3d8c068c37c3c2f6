"""Per-provider rate budgets shared by every replica.

The bucket lives in one ``app.provider_budgets`` row per provider; each replica takes tokens in
chunks (one round trip per ``chunk`` provider calls) and spends them locally. When the bucket
is empty or the provider is paused (429 lockout, rejected credentials), `acquire` says how
long to wait instead of blocking, so the job is rescheduled rather than holding a slot.
"""

from __future__ import annotations

import time
from typing import Protocol

import anyio

from poller.repository import Grant


class SharedBucket(Protocol):
    """The shared bucket's one operation (`poller.repository.Repository.take_tokens`)."""

    async def take_tokens(self, provider: str, want: int) -> Grant: ...


class ProviderBudget:
    """Local cache of tokens taken from the shared bucket of one provider."""

    def __init__(self, repo: SharedBucket, provider: str, *, chunk: int) -> None:
        self._repo = repo
        self.provider = provider
        self._chunk = chunk
        self._tokens = 0
        self._blocked_until = 0.0
        self._paused_until = 0.0  # the part of the block that is a pause of the provider
        self._lock = anyio.Lock()  # one request to the shared bucket at a time

    @property
    def blocked(self) -> bool:
        """True while the last answer was "wait": the claim skips this provider meanwhile."""
        return self._tokens == 0 and time.monotonic() < self._blocked_until

    @property
    def paused(self) -> bool:
        """Blocked by a pause of the provider (recorded in the shared row for every replica),
        not merely by an empty bucket. The claim itself skips a paused provider's jobs,
        except those whose deadline has passed (or is not recorded yet): excluding the
        provider here as well kept this replica from timing them out until the pause ended."""
        return self.blocked and time.monotonic() < self._paused_until

    def block_for(self, seconds: float) -> None:
        """Stop spending after a pause of the provider (a 429, rejected credentials) until the
        shared row says otherwise."""
        self._tokens = 0
        until = time.monotonic() + seconds
        self._blocked_until = max(self._blocked_until, until)
        self._paused_until = max(self._paused_until, until)

    async def acquire(self) -> float:
        """Take one token: 0.0 when granted, else the seconds to wait before trying again.

        Steps that find no token queue on a lock, so each is woken once: by its turn, it
        either takes a token the previous holder fetched or fetches the next chunk itself.
        (One event waking every waiter per chunk was tried: with 256 steps waiting on
        chunks of 10, each chunk woke all of them for ten tokens.)
        """
        if self._tokens > 0:
            self._tokens -= 1
            return 0.0
        async with self._lock:
            if self._tokens > 0:
                self._tokens -= 1
                return 0.0
            wait = await self._refill(self._chunk)
            if wait == 0.0:
                self._tokens -= 1
            return wait

    async def reserve(self, count: int) -> None:
        """Make ``count`` tokens local before a claimed batch's steps start.

        Without it a batch's steps all find the cache empty at once and pass the lock one
        by one: a wake-up per step, about 5 µs of CPU each, a twentieth of a no-op job. One
        request for the whole batch (at least a chunk) lets every step take the fast path.
        Best effort, like `acquire`: a short grant or a "wait" answer is kept, and the steps
        left without a token then get the wait.
        """
        if self._tokens >= count or self.blocked:
            return
        async with self._lock:
            if self._tokens < count:
                await self._refill(max(self._chunk, count - self._tokens))

    async def _refill(self, want: int) -> float:
        """One request to the shared bucket (lock held): 0.0 when it granted tokens, else
        the wait it asked for, remembered until it expires."""
        now = time.monotonic()
        if now < self._blocked_until:
            return self._blocked_until - now
        grant = await self._repo.take_tokens(self.provider, want)
        if grant.granted > 0:
            self._tokens += grant.granted
            return 0.0
        wait = max(0.05, grant.wait_s)
        self._blocked_until = now + wait
        if grant.paused:
            self._paused_until = now + wait
        return wait


class CreateQueue:
    """Hands jobs waiting for a create budget distinct turns, one per token the bucket refills.

    Told only "wait w", every waiting job came back at the same moment, one took the token and
    the rest were claimed, rescheduled and written back again: a backlog of new jobs behind
    Replicate's 8 creates/s turned over every fraction of a second. Spaced at the refill rate,
    each job returns about when a token is there for it (per replica: others' turns are not
    known, which at worst brings a job back early once more).
    """

    def __init__(self, budget: ProviderBudget, *, rate_per_s: float) -> None:
        self.budget = budget
        self._spacing = 1.0 / rate_per_s
        self._next_turn = 0.0

    async def acquire(self) -> float:
        """0.0 when a create token was granted, else the seconds until this job's turn."""
        wait = await self.budget.acquire()
        if wait == 0.0:
            return 0.0
        now = time.monotonic()
        turn = max(now + wait, self._next_turn)
        self._next_turn = turn + self._spacing
        return turn - now
