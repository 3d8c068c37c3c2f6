"""SIGTERM mid-run, and the HTTP probes (`/healthz`, `/readyz`, `/metrics`) of a replica.

Replica 1 starts alone and takes every job; each job's first status poll hangs (simulator
``poll_slow``), so replica 1 is mid-poll when it gets SIGTERM. It must report not-ready at
once, give the polls its grace period, release the jobs (fenced, not a failure) and exit 0
within that grace (plus process teardown). Replica 2, already running, must pick the released
jobs up at once (not after a lease TTL) and finish them.
"""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.e2e import jobs
from tests.e2e.dbcheck import integrity, rows, wait_all_terminal
from tests.e2e.harness import Replica, count_by, fleet, wait_until

pytestmark = pytest.mark.slow

JOBS = 6
GRACE_S = 3.0
LEASE_TTL_S = 10.0  # long on purpose: released jobs must not wait for an expiry
EXIT_SLACK_S = 2.0  # interpreter and connection-pool teardown after the grace


@dataclass(frozen=True, slots=True, kw_only=True)
class Probe:
    status: int
    body: bytes
    content_type: str


def _get(port: int, path: str) -> Probe:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return Probe(
                status=reply.status, body=reply.read(), content_type=reply.headers["Content-Type"]
            )
    except urllib.error.HTTPError as exc:
        return Probe(status=exc.code, body=exc.read(), content_type=exc.headers["Content-Type"])


def _not_ready(port: int) -> Probe | None:
    probe = _get(port, "/readyz")
    return probe if probe.status == 503 else None


def _port(replica: Replica) -> int:
    return int(replica.wait_for_event("http.listening")["port"])


@dataclass(frozen=True, slots=True, kw_only=True)
class Shutdown:
    running: dict[str, Probe]
    draining_ready: Probe
    exit_code: int
    exit_after_s: float
    ids: list[str]
    events: list[dict[str, Any]]
    released_to_done_s: float
    jobs: list[dict[str, Any]]
    duplicates: int


def _released_to_done(events: list[dict[str, Any]], sigterm_at: float) -> float:
    done = [e for e in events if e["event"] == "job.completed" and e["replica"] == "replica-2"]
    stamps = [_unix(e["timestamp"]) for e in done]
    return max(stamps) - sigterm_at if stamps else float("inf")


def _unix(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


@pytest.fixture(scope="module")
def shutdown(module_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shutdown]:
    overrides = {
        "POLLER_HTTP_PORT": "0",
        "POLLER_HTTP_HOST": "127.0.0.1",
        "POLLER_SHUTDOWN_GRACE_S": str(GRACE_S),
        "POLLER_LEASE_TTL_S": str(LEASE_TTL_S),
    }
    with fleet(tmp_path_factory.mktemp("shutdown"), module_db) as group:
        first = group.start(1, overrides=overrides)[0]
        port = _port(first)
        wait_until(lambda: _get(port, "/readyz").status == 200, timeout_s=20, what="ready")
        running = {path: _get(port, path) for path in ("/healthz", "/readyz", "/metrics")}
        ids = jobs.insert(module_db, [jobs.replicate_image("poll_slow:25:1")] * JOBS)
        wait_until(
            lambda: all(j["poll_requests"] for j in group.sim.jobs()) and len(group.sim.jobs()),
            timeout_s=30,
            what="replica 1 inside every slow poll",
        )
        second = group.start(1, overrides=overrides)[0]
        second.wait_for_event("daemon.started")
        sigterm_at = time.time()
        first.signal(signal.SIGTERM)
        draining = wait_until(
            lambda: _not_ready(port), timeout_s=GRACE_S, what="/readyz 503 while draining"
        )
        code = first.wait(GRACE_S + 10)
        exit_after = time.time() - sigterm_at
        wait_all_terminal(module_db, timeout_s=30)
        group.stop_all()
        events = group.events()
    yield Shutdown(
        running=running,
        draining_ready=draining,
        exit_code=code,
        exit_after_s=exit_after,
        ids=[str(i) for i in ids],
        events=events,
        released_to_done_s=_released_to_done(events, sigterm_at),
        jobs=rows(module_db, "SELECT * FROM app.generation_jobs"),
        duplicates=integrity(module_db).duplicate_artifacts,
    )


def test_healthz_and_readyz_answer_200_while_running(shutdown: Shutdown) -> None:
    assert shutdown.running["/healthz"].status == 200
    ready = shutdown.running["/readyz"]
    assert ready.status == 200
    assert json.loads(ready.body)["ready"] is True


def test_metrics_are_served_in_prometheus_text_format(shutdown: Shutdown) -> None:
    metrics = shutdown.running["/metrics"]
    assert metrics.status == 200
    assert metrics.content_type.startswith("text/plain")
    text = metrics.body.decode()
    assert "# HELP " in text and "# TYPE " in text


def test_readyz_is_503_while_draining(shutdown: Shutdown) -> None:
    assert shutdown.draining_ready.status == 503
    body = json.loads(shutdown.draining_ready.body)
    assert body["ready"] is False and body["draining"] is True


def test_sigterm_exits_zero_within_the_grace_period(shutdown: Shutdown) -> None:
    print(f"\nSIGTERM → exit 0 after {shutdown.exit_after_s:.2f} s (grace {GRACE_S} s)")
    assert shutdown.exit_code == 0
    assert shutdown.exit_after_s <= GRACE_S + EXIT_SLACK_S


def test_in_flight_jobs_are_released_not_failed(shutdown: Shutdown) -> None:
    released = count_by([e for e in shutdown.events if e["event"] == "job.released"], "replica")
    assert released == {"replica-1": JOBS}


def test_released_jobs_are_finished_by_the_other_replica_without_a_lease_wait(
    shutdown: Shutdown,
) -> None:
    completed = [e for e in shutdown.events if e["event"] == "job.completed"]
    assert count_by(completed, "job_id") == dict.fromkeys(shutdown.ids, 1)
    assert count_by(completed, "replica") == {"replica-2": JOBS}
    assert all(j["status"] == "completed" for j in shutdown.jobs)
    assert shutdown.duplicates == 0
    # Released at the end of the grace and due at once, so they are done before a lease taken
    # before the SIGTERM could even have expired.
    print(f"\nreleased jobs done {shutdown.released_to_done_s:.2f} s after SIGTERM")
    assert shutdown.released_to_done_s < LEASE_TTL_S
