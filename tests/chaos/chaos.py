"""Shared vocabulary of the chaos scenarios: how long they run and what they report.

Every scenario ends with the same `ChaosReport` (printed, and appended as one JSON line to
``$CHAOS_REPORT`` when that is set, which is how docs/reliability.md's figures were
collected) and the same assertions:

* jobs lost: still active after the fault stopped and a bounded wait (goal 0);
* duplicate artifacts: rows beyond one per output per job (goal 0);
* falsely failed: jobs that ended ``failed``/``timed_out`` although the simulator was told
  to let them succeed (goal 0). Some failures are the design's deliberate answer to a crash
  or outage at the wrong moment and are counted apart (``failed_by_design``): "submit
  outcome unknown" when the provider job id could not be recorded after the create call
  (DESIGN.md §10: never resubmit after an ambiguous create), and, in the kill storm,
  "worker crashed repeatedly" when every holder of a job died five times in a row (the
  crash-loop guard cannot tell a storm from a poison job);
* recovery time: from the end of a fault to the system making progress again (scenario
  specific, each says how it measures), bounded by the lease TTL plus a small slack.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import socket
import threading
from collections.abc import Callable
from contextlib import suppress
from dataclasses import asdict, dataclass

import psycopg
import pytest

from tests.e2e.dbcheck import failures, integrity
from tests.e2e.jobs import JobSpec, insert, replicate_image, stability_image, suno_audio

# Failures the design chooses on purpose after a crash or an outage at the wrong moment.
SUBMIT_UNKNOWN = "submit outcome unknown"  # never resubmit after an ambiguous create
CRASH_LOOP = "worker crashed repeatedly"  # a job whose holders keep dying is given up


@dataclass(frozen=True, slots=True, kw_only=True)
class Scale:
    """How long a scenario runs: the bounded form for `make test`, or ``--chaos-long``.

    The long form runs longer at the same load, not at a higher one: on two cores a backlog
    of hundreds of due polls makes every figure measure the queue instead of the fault.
    """

    long: bool
    fault_s: float  # how long faults are injected (or how many, for counted faults)


def long_form(config: pytest.Config) -> bool:
    """``--chaos-long`` (when tests/chaos is named on the command line) or ``CHAOS_LONG=1``."""
    option = bool(config.getoption("--chaos-long", default=False))
    return option or os.environ.get("CHAOS_LONG") == "1"


def scale(config: pytest.Config, *, bounded: float, long: float) -> Scale:
    """Fault seconds (or count) for the bounded and the long form."""
    is_long = long_form(config)
    return Scale(long=is_long, fault_s=long if is_long else bounded)


class Feed:
    """A steady stream of jobs while a fault runs: ``rate`` jobs a second, each done at the
    simulator ``life_s`` seconds (at most, uniformly drawn) after its submit.

    A background thread inserts one batch a second until `stop`; `count` is what it
    inserted. Steady arrivals keep the number of active jobs constant, so a fault always
    meets submits, polls and downloads in progress, however long the scenario runs.
    """

    def __init__(
        self,
        db_url: str,
        make: Callable[[str], JobSpec],
        *,
        rate: int,
        life_s: float,
        seed: int,
    ) -> None:
        self._db_url = db_url
        self._make = make
        self._rate = rate
        self._life_s = life_s
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.count = 0

    def start(self) -> Feed:
        self._thread.start()
        return self

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(30)
        return self.count

    def _run(self) -> None:
        while not self._stop.is_set():
            tokens = [
                f"seconds:{self._rng.uniform(0.5, self._life_s):.1f}" for _ in range(self._rate)
            ]
            # While the database is down (a PostgreSQL restart) a batch is simply skipped.
            with suppress(psycopg.OperationalError):
                self.count += len(insert(self._db_url, [self._make(t) for t in tokens]))
            self._stop.wait(1.0)


def mixed(extra: str = "", *, poll_interval_ms: int) -> Callable[[str], JobSpec]:
    """Jobs for the three providers in turn, with ``extra`` simulator tokens on each."""
    makers = itertools.cycle((replicate_image, stability_image, suno_audio))

    def make(token: str) -> JobSpec:
        scenario = ",".join(t for t in (token, extra) if t)
        return next(makers)(scenario, poll_interval_ms=poll_interval_ms)

    return make


@dataclass(frozen=True, slots=True, kw_only=True)
class ChaosReport:
    scenario: str
    jobs: int
    faults: int  # kills, restarts, outage windows, injected replies…
    lost: int
    duplicate_artifacts: int
    falsely_failed: int
    failed_by_design: int
    recovery_s: float  # worst case over the faults
    recovery_bound_s: float
    run_s: float

    def line(self) -> str:
        return (
            f"chaos {self.scenario}: jobs={self.jobs} faults={self.faults} lost={self.lost} "
            f"duplicate_artifacts={self.duplicate_artifacts} "
            f"falsely_failed={self.falsely_failed} failed_by_design={self.failed_by_design} "
            f"recovery={self.recovery_s:.2f}s (bound {self.recovery_bound_s:.2f}s) "
            f"run={self.run_s:.1f}s"
        )


def build_report(
    db_url: str,
    *,
    scenario: str,
    faults: int,
    recovery_s: float,
    recovery_bound_s: float,
    run_s: float,
    by_design: tuple[str, ...] = (SUBMIT_UNKNOWN,),
) -> ChaosReport:
    """Read the outcome from the database, print it and (optionally) record it.

    ``by_design`` lists the error-message prefixes this scenario may legitimately cause;
    failures with any other message count as false.
    """
    state = integrity(db_url)
    ended_badly = failures(db_url)
    intended = [f for f in ended_badly if (f["error_message"] or "").startswith(by_design)]
    report = ChaosReport(
        scenario=scenario,
        jobs=sum(state.by_status.values()),
        faults=faults,
        lost=state.lost,
        duplicate_artifacts=state.duplicate_artifacts,
        falsely_failed=len(ended_badly) - len(intended),
        failed_by_design=len(intended),
        recovery_s=recovery_s,
        recovery_bound_s=recovery_bound_s,
        run_s=run_s,
    )
    print("\n" + report.line())
    kinds: dict[str, int] = {}
    for row in ended_badly:
        reason = re.sub(r"https?://\S+", "<url>", row["error_message"] or "")
        kind = f"{row['status']}: {reason[:200]}"
        kinds[kind] = kinds.get(kind, 0) + 1
    for kind, count in sorted(kinds.items(), key=lambda item: -item[1]):
        print(f"  {count} x {kind}")
    target = os.environ.get("CHAOS_REPORT")
    if target:
        with open(target, "a") as out:
            out.write(json.dumps(asdict(report)) + "\n")
    return report


def assert_survived(report: ChaosReport) -> None:
    """The four goals every chaos scenario must meet."""
    assert report.lost == 0, report.line()
    assert report.duplicate_artifacts == 0, report.line()
    assert report.falsely_failed == 0, report.line()
    assert report.recovery_s <= report.recovery_bound_s, report.line()


def free_port() -> int:
    """A free port below the ephemeral range, for servers restarted on the same port."""
    while True:
        port = random.randrange(20000, 32000)
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
