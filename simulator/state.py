"""The simulator's shared state: clock, seeded randomness, job table, counters, rate limits.

Everything here is touched only from the server's event loop, so no locks are needed.
Randomness is never drawn from a shared stream: each decision hashes the seed with what it
is about (job id, request number, fault kind), so a seeded run makes the same decisions
for the same jobs however concurrent requests interleave.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from simulator import scenarios
from simulator.config import FaultRates, SimulatorConfig
from simulator.jobs import Job, Provider
from simulator.scenarios import Scenario


class Dice:
    """Deterministic uniform draws in [0, 1) keyed by the seed and a tuple of labels."""

    __slots__ = ("_prefix",)

    def __init__(self, seed: int) -> None:
        self._prefix = f"{seed}|".encode()

    def draw(self, *labels: object) -> float:
        text = "|".join(map(str, labels)).encode()
        digest = hashlib.blake2b(self._prefix + text, digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64

    def digest(self, *labels: object, size: int = 32) -> bytes:
        text = "|".join(map(str, labels)).encode()
        return hashlib.blake2b(self._prefix + text, digest_size=size).digest()


@dataclass(slots=True)
class TokenBucket:
    """Sustained `rate` requests/s with a one-second burst."""

    rate: float
    tokens: float
    updated: float

    def take(self, now: float) -> bool:
        self.tokens = min(self.rate, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass(slots=True)
class Stats:
    """Request and fault counters served by `GET /_sim/stats`."""

    requests: defaultdict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    faults: Counter[str] = field(default_factory=Counter)
    cdn_bytes: int = 0
    cdn_with_authorization: int = 0

    def count(self, route: str, status: int) -> None:
        self.requests[route][status] += 1


_ID_LENGTH = {"replicate": 26, "stability": 64, "suno": 32}


class SimState:
    """What every handler needs; one instance per running server."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.seed = config.seed if config.seed is not None else int.from_bytes(os.urandom(4))
        self.dice = Dice(self.seed)
        self.default_scenario: Scenario = scenarios.parse(config.scenario)
        self.faults: FaultRates = config.faults
        self.jobs: dict[str, Job] = {}
        self.stats = Stats()
        self.base_url = ""
        self.cdn_base_url = ""
        self._counters: Counter[str] = Counter()
        self._target_requests: Counter[str] = Counter()
        self._buckets: dict[str, TokenBucket] = {}
        self._mono0 = time.monotonic()
        self._wall0 = time.time()

    def now(self) -> float:
        """Monotonic seconds: all job arithmetic uses this clock."""
        return time.monotonic()

    def wall(self, mono: float) -> float:
        """Convert a monotonic instant to Unix time (for timestamps clients see)."""
        return self._wall0 + (mono - self._mono0)

    def uptime(self) -> float:
        return time.monotonic() - self._mono0

    def new_id(self, provider: Provider) -> str:
        """A vendor-shaped id: Replicate 26 base32 chars, Stability 64 hex, Suno 32 hex."""
        self._counters[provider] += 1
        digest = self.dice.digest("id", provider, self._counters[provider])
        if provider == "replicate":
            return base64.b32encode(digest[:17]).decode().lower()[:26]
        return digest.hex()[: _ID_LENGTH[provider]]

    def request_number(self, target: str) -> int:
        """How many times this resource has been requested (the key of its fault draws)."""
        self._target_requests[target] += 1
        return self._target_requests[target]

    def admit(self, provider: Provider, now: float) -> bool:
        """Apply the configured rate limit of `provider`; False = throttle this request."""
        rate = self.config.rate_limits.get(provider)
        if rate is None:
            return True
        bucket = self._buckets.get(provider)
        if bucket is None:
            bucket = self._buckets[provider] = TokenBucket(rate, rate, now)
        return bucket.take(now)

    def register(self, job: Job) -> Job:
        self.jobs[job.id] = job
        return job

    def reset(self) -> None:
        """Forget all jobs and counters (ids keep counting up so they stay unique)."""
        self.jobs.clear()
        self.stats = Stats()
        self._target_requests.clear()
        self._buckets.clear()
