"""Chaos: the artifact store fails under running replicas, then comes back.

* Disk full (local store): the replicas' ``RLIMIT_FSIZE`` is lowered at run time below the
  size of every result, so each write fails with EFBIG exactly where a full disk would fail
  it (the temp file the download streams into), then it is lifted again. No filesystem is
  mounted (DESIGN.md §10 asks for faults at the storage write layer); the replicas' stdout
  is a pipe, which the limit does not affect.
* S3 server down: moto's S3 server (``ThreadedMotoServer``, in this test process, state
  kept across restarts) is stopped and started again on the same port while replicas
  upload with ``STORAGE_URL=s3://…``.

The bounded form has one 3 s outage, the long form twelve (2 s apart). Storage errors are
retryable (they say nothing about the job) within the job's error budget, so nothing may
fail, and no partial blob may be left behind. Recovery = from the store working again until
no active job carries a consecutive-error count (every job that was backing off has stored
its outputs or moved on), bounded by the lease TTL plus slack.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import boto3
import pytest
from moto.server import ThreadedMotoServer

from tests.chaos.chaos import Feed, assert_survived, build_report, free_port, mixed, scale
from tests.e2e.dbcheck import bad_local_blobs, rows, scalar, wait_all_terminal
from tests.e2e.harness import Fleet, fleet, wait_until

if TYPE_CHECKING:
    from types_boto3_s3.client import S3Client

pytestmark = [pytest.mark.slow, pytest.mark.chaos]

LEASE_TTL_S = 3.0
SLACK_S = 2.0
RESULT_BYTES = 300_000
RATE = 6  # jobs inserted per second while the scenario lasts
DOWN_S = 3.0  # one outage; the long form repeats outages rather than lengthening one: a
UP_S = 2.0  # single minute-long outage would (rightly) spend every job's error budget
FSIZE_LIMIT = 64 * 1024
BUCKET = "chaos-bucket"
OVERRIDES = {
    "POLLER_LEASE_TTL_S": str(LEASE_TTL_S),
    # 8 consecutive storage errors with ≤ 1 s backoff outlast the bounded outage.
    "POLLER_ERROR_BACKOFF_MAX_S": "1",
}


MAKE = mixed(f"large:{RESULT_BYTES}", poll_interval_ms=500)


def _backing_off(db_url: str) -> int:
    return int(
        scalar(
            db_url,
            "SELECT count(*) FROM app.generation_jobs "
            "WHERE status IN ('pending', 'processing') AND error_count > 0",
        )
    )


def _recover(db_url: str) -> float:
    healed = time.monotonic()
    wait_until(lambda: _backing_off(db_url) == 0, timeout_s=30, what="backoffs to clear")
    return time.monotonic() - healed


def _cycles(
    db_url: str, count: int, *, fail: Callable[[], None], heal: Callable[[], None]
) -> float:
    """``count`` times: healthy for `UP_S`, failing for `DOWN_S`; returns the worst recovery."""
    worst = 0.0
    for _ in range(count):
        time.sleep(UP_S)
        fail()
        time.sleep(DOWN_S)
        heal()
        worst = max(worst, _recover(db_url))
    return worst


def _start(group: Fleet, count: int, overrides: dict[str, str]) -> None:
    for rep in group.start(count, overrides=overrides):
        rep.wait_for_event("daemon.started")


def test_disk_full_window_fails_nothing_and_leaves_no_partial_files(
    audited_db: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> None:
    cycles = int(scale(request.config, bounded=1, long=12).fault_s)
    workdir = tmp_path_factory.mktemp("diskfull")
    start = time.monotonic()
    with fleet(workdir, audited_db) as group:
        _start(group, 2, OVERRIDES)
        feed = Feed(audited_db, MAKE, rate=RATE, life_s=4.0, seed=5).start()

        def limit(size: int | None) -> None:
            for rep in group.replicas:
                rep.set_file_size_limit(size)

        recovery = _cycles(
            audited_db, cycles, fail=lambda: limit(FSIZE_LIMIT), heal=lambda: limit(None)
        )
        feed.stop()
        wait_all_terminal(audited_db, timeout_s=60)
        failed_writes = len(group.events("artifact.retry_scheduled"))
        codes = group.stop_all()
    report = build_report(
        audited_db,
        scenario=f"disk full x{cycles}",
        faults=failed_writes,
        recovery_s=recovery,
        recovery_bound_s=LEASE_TTL_S + SLACK_S,
        run_s=time.monotonic() - start,
    )
    store = workdir / "artifacts"
    assert failed_writes > 0, "no write hit the limit: the fault tested nothing"
    assert set(codes.values()) == {0}
    assert bad_local_blobs(audited_db, store) == []
    assert [p for p in (store / ".tmp").iterdir()] == []  # failed writes cleaned up
    assert_survived(report)


class S3Server:
    """moto's S3 server on a fixed port that can be stopped and started again.

    In-process moto keeps its buckets and objects in module state, so a restarted server
    still has everything stored before the outage, like a real S3 endpoint coming back.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server: ThreadedMotoServer | None = None

    def start(self) -> None:
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


@pytest.fixture
def s3_server() -> Iterator[S3Server]:
    server = S3Server()
    server.start()
    _s3(server.endpoint).create_bucket(Bucket=BUCKET)
    try:
        yield server
    finally:
        server.stop()


def _s3(endpoint: str) -> S3Client:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    )


def _bad_objects(db_url: str, endpoint: str) -> list[str]:
    client = _s3(endpoint)
    problems = []
    for art in rows(db_url, "SELECT uri, content_hash FROM app.artifacts"):
        key = art["uri"].removeprefix(f"s3://{BUCKET}/")
        body = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        if hashlib.sha256(body).hexdigest() != art["content_hash"]:
            problems.append(art["uri"])
    return problems


def test_s3_server_restart_fails_nothing(
    audited_db: str,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
    s3_server: S3Server,
) -> None:
    cycles = int(scale(request.config, bounded=1, long=12).fault_s)
    endpoint = s3_server.endpoint
    overrides = {
        **OVERRIDES,
        "S3_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": "us-east-1",
    }
    start = time.monotonic()
    store = f"s3://{BUCKET}/artifacts"
    with fleet(tmp_path_factory.mktemp("s3"), audited_db, storage_url=store) as group:
        _start(group, 2, overrides)
        feed = Feed(audited_db, MAKE, rate=RATE, life_s=4.0, seed=6).start()
        recovery = _cycles(audited_db, cycles, fail=s3_server.stop, heal=s3_server.start)
        inserted = feed.stop()
        wait_all_terminal(audited_db, timeout_s=60)
        failed_writes = len(group.events("artifact.retry_scheduled"))
        codes = group.stop_all()
    report = build_report(
        audited_db,
        scenario=f"S3 server restart x{cycles}",
        faults=failed_writes,
        recovery_s=recovery,
        recovery_bound_s=LEASE_TTL_S + SLACK_S,
        run_s=time.monotonic() - start,
    )
    assert failed_writes > 0, "no upload hit the outage: the fault tested nothing"
    assert set(codes.values()) == {0}
    assert int(scalar(audited_db, "SELECT count(*) FROM app.artifacts")) >= inserted
    assert _bad_objects(audited_db, endpoint) == []
    assert_survived(report)
