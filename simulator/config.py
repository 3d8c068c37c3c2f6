"""Simulator settings: job timing, random fault rates, rate limits and media defaults.

Values, not behaviour: `SimulatorConfig` is built by the CLI or by a test and handed to
`SimulatorServer`. Fault rates can be swapped at run time (`POST /_sim/faults`), which is
why they live in their own `FaultRates` value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, Literal

FaultScope = Literal["submit", "poll", "cancel", "cdn"]
FAULT_SCOPES: Final[frozenset[FaultScope]] = frozenset({"submit", "poll", "cancel", "cdn"})
PROVIDERS: Final = ("replicate", "stability", "suno")


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultRates:
    """Probabilities of injecting a fault into one request, drawn deterministically.

    Each request in `scope` draws once: `p_429` → throttled (vendor shape, Retry-After),
    `p_5xx` → 500/502/503/504, `p_malformed` → a 200 whose JSON is cut short (CDN: a body
    shorter than its Content-Length). A second draw adds `slow_s` of latency with `p_slow`.
    429/5xx faults happen before the request is processed (a poll is not counted);
    malformed and slow ones after (the job advanced, the client just did not learn it).
    """

    p_5xx: float = 0.0
    p_429: float = 0.0
    p_slow: float = 0.0
    p_malformed: float = 0.0
    slow_s: float = 2.0
    retry_after_s: int = 1
    scope: frozenset[FaultScope] = frozenset({"poll", "cancel"})

    def __post_init__(self) -> None:
        for name in ("p_5xx", "p_429", "p_slow", "p_malformed"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value}")
        if self.p_5xx + self.p_429 + self.p_malformed > 1.0:
            raise ValueError("p_5xx + p_429 + p_malformed must not exceed 1")
        if self.slow_s < 0 or self.retry_after_s < 0:
            raise ValueError("slow_s and retry_after_s must be ≥ 0")
        if not self.scope <= FAULT_SCOPES:
            raise ValueError(f"fault scope must be a subset of {sorted(FAULT_SCOPES)}")


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulatorConfig:
    """How the simulator listens and how its jobs behave unless a scenario says otherwise.

    A job is done after `complete_after_polls` status polls or `complete_after_s` seconds
    from submission, whichever comes first; 0 disables that trigger (both 0: never done).
    `duration_jitter` spreads `complete_after_s` per job by ±that fraction (deterministic).
    `rate_limits` maps a provider name to sustained requests/s (burst = one second's worth).
    `cdn_host`, when set, serves result files from a second loopback address on the same
    port, so tests can tell whether a client sent its provider token to the "CDN".
    """

    host: str = "127.0.0.1"
    port: int = 0
    seed: int | None = None
    complete_after_polls: int = 3
    complete_after_s: float = 0.0
    duration_jitter: float = 0.0
    faults: FaultRates = field(default_factory=FaultRates)
    rate_limits: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    scenario: str = ""
    image_size: tuple[int, int] = (64, 64)
    video_duration_s: float = 2.0
    audio_duration_s: float = 5.0
    cdn_host: str | None = None
    max_body_bytes: int = 64 << 20
    use_uvloop: bool = True

    def __post_init__(self) -> None:
        if self.complete_after_polls < 0 or self.complete_after_s < 0:
            raise ValueError("completion triggers must be ≥ 0")
        if not 0.0 <= self.duration_jitter < 1.0:
            raise ValueError("duration_jitter must be within [0, 1)")
        unknown = set(self.rate_limits) - set(PROVIDERS)
        if unknown:
            raise ValueError(f"rate_limits for unknown providers: {sorted(unknown)}")
        if any(rate <= 0 for rate in self.rate_limits.values()):
            raise ValueError("rate limits must be > 0 requests/s")
