"""Where a claimed job's time goes: client CPU and database server time, per job.

Both sides of the claim comparison are measured the same way: the CPU time of the process
that claims and finishes the jobs (``getrusage``: ours in-process, pgqueuer's tool as a
child) and the server time of its statements (``pg_stat_statements``), each divided by the
jobs finished. The ratio of rates says who is faster; these say why.
"""

from __future__ import annotations

import resource
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class JobCost:
    """Microseconds per job: the claiming process's CPU and the database server's time."""

    client_us: float
    server_us: float


@dataclass(slots=True)
class CpuClock:
    """CPU seconds (user + system) measured by `cpu_time`."""

    seconds: float = 0.0


@contextmanager
def cpu_time(*, children: bool = False) -> Iterator[CpuClock]:
    """CPU seconds spent in this process (or, with ``children``, in waited-for children)."""
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    clock = CpuClock()
    before = resource.getrusage(who)
    try:
        yield clock
    finally:
        after = resource.getrusage(who)
        clock.seconds = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def per_job(*, client_s: float, server_ms: float, jobs: int) -> JobCost | None:
    if jobs <= 0:
        return None
    return JobCost(client_us=client_s / jobs * 1e6, server_us=server_ms / jobs * 1e3)
