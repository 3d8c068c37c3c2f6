"""Simulated jobs and their lifecycle, computed lazily from time and poll count.

Nothing runs in the background: a job's state is a pure function of how long ago it was
submitted, how many status polls it has had, and what happened to it (cancel, deadline,
forced completion). `advance` is called whenever a job is looked at; it records the moments
the job started and finished, using the exact time-based crossing point when that came
between two polls, so detection latency can be measured against `finished`.

Progress runs from 0 to 1: `polls / done_after_polls` or `elapsed / done_after_s`, whichever
is further. Each vendor maps the fraction onto its own status names; `run_at` is the
fraction at which the vendor starts reporting the job as running (Replicate `processing`,
Suno `TEXT_SUCCESS`; Stability has no queued state, so 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal, get_args

from simulator.media import MediaSpec
from simulator.scenarios import Outcome, Scenario

Provider = Literal["replicate", "stability", "suno"]
FinalOutcome = Outcome | Literal["canceled", "aborted"]
FINAL_OUTCOMES: Final[frozenset[str]] = frozenset(get_args(Outcome)) | {"canceled", "aborted"}
_STUCK_CAP = 0.999


@dataclass(slots=True, kw_only=True)
class Job:
    """One generation at the fake vendor. Mutable: it is the simulator's own entity."""

    id: str
    provider: Provider
    scenario: Scenario
    media: MediaSpec
    outputs: int
    created: float
    run_at: float
    owner: str
    done_after_polls: int | None
    done_after_s: float | None
    details: dict[str, Any] = field(default_factory=dict)
    deadline: float | None = None
    polls: int = 0
    poll_requests: int = 0
    started: float | None = None
    finished: float | None = None
    outcome: FinalOutcome | None = None
    seen_done: float | None = None
    file_requests: dict[str, int] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.outcome is not None


def progress(job: Job, now: float) -> float:
    """How far along the job is, 0..1 (1 = finished; `stuck` jobs never get there)."""
    fraction = 0.0
    if job.done_after_polls:
        fraction = job.polls / job.done_after_polls
    if job.done_after_s is not None:
        elapsed = now - job.created
        fraction = max(fraction, 1.0 if job.done_after_s <= 0 else elapsed / job.done_after_s)
    if job.scenario.stuck:
        fraction = min(fraction, _STUCK_CAP)
    return min(fraction, 1.0)


def _crossing(job: Job, fraction: float, now: float) -> float:
    """When the job reached `fraction`: the time-based instant if it is earlier than now."""
    if job.done_after_s is None:
        return now
    return min(now, job.created + fraction * job.done_after_s)


def _hit_deadline(job: Job, deadline: float) -> None:
    """Replicate's Cancel-After: `aborted` if never started by then, else `canceled`."""
    if job.started is not None and job.started <= deadline:
        job.outcome = "canceled"
    else:
        job.started = None
        job.outcome = "aborted"
    job.finished = deadline


def advance(job: Job, now: float, *, poll: bool = False) -> None:
    """Bring the job's recorded state up to `now`; `poll=True` counts a status poll."""
    if job.outcome is not None:
        return
    if poll:
        job.polls += 1
    fraction = progress(job, now)
    if job.started is None and fraction >= job.run_at:
        job.started = _crossing(job, job.run_at, now)
    finish = _crossing(job, 1.0, now) if fraction >= 1.0 else None
    if job.deadline is not None and job.deadline <= (now if finish is None else finish):
        _hit_deadline(job, job.deadline)
    elif finish is not None:
        job.finished = finish
        job.outcome = job.scenario.outcome


def cancel(job: Job, now: float) -> None:
    """Cancel a running job (no effect once it is terminal, like the real APIs)."""
    advance(job, now)
    if job.outcome is None:
        job.outcome = "canceled"
        job.finished = now


def force(job: Job, now: float, outcome: FinalOutcome) -> bool:
    """Make a job terminal now with `outcome` (control endpoint); False if already terminal."""
    advance(job, now)
    if job.outcome is not None:
        return False
    if job.started is None and outcome != "aborted":
        job.started = now
    job.outcome = outcome
    job.finished = now
    return True


def observe_terminal(job: Job, now: float) -> None:
    """Record the first time a client was told the job is terminal (detection latency)."""
    if job.outcome is not None and job.seen_done is None:
        job.seen_done = now
