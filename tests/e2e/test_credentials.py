"""Credentials problems through a real daemon: rejected keys and keys pasted with a newline.

* A provider that answers 401 to everything (a tiny loopback fake standing in for Replicate;
  the simulator accepts any token) must be paused for every replica with an error logged,
  its jobs must wait (not fail), and the other providers must carry on (DESIGN.md §10).
* An API key read from a file or a secret usually ends with a newline. It must either be
  used without it or be refused at start-up; what must not happen is jobs failing as
  "submit outcome unknown" because our own request could not be sent.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.e2e import jobs
from tests.e2e.dbcheck import rows
from tests.e2e.harness import TEST_KEYS, fleet, wait_until

pytestmark = pytest.mark.slow

PAUSE_S = 30.0


class _Unauthorized(BaseHTTPRequestHandler):
    requests = 0

    def _reject(self) -> None:
        type(self).requests += 1
        body = json.dumps({"title": "Unauthenticated", "status": 401}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _reject

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def rejecting_vendor() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Unauthorized)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_rejected_credentials_pause_the_provider_and_keep_its_jobs(
    audited_db: str, tmp_path: Path, rejecting_vendor: str
) -> None:
    _Unauthorized.requests = 0
    overrides = {"REPLICATE_BASE_URL": rejecting_vendor, "POLLER_AUTH_PAUSE_S": str(PAUSE_S)}
    with fleet(tmp_path, audited_db) as group:
        replicas = group.start(2, overrides=overrides)
        for rep in replicas:
            rep.wait_for_event("daemon.started")
        jobs.insert(audited_db, [jobs.replicate_image() for _ in range(4)] + [jobs.suno_audio()])
        wait_until(
            lambda: rows(
                audited_db, "SELECT 1 FROM app.generation_jobs WHERE status = 'completed'"
            ),
            timeout_s=30,
            what="the Suno job",
        )
        time.sleep(2.0)  # room for (unwanted) further attempts at the paused provider
        events = group.events("provider.auth_failed")
    found = rows(audited_db, "SELECT provider_id, status, error_message FROM app.generation_jobs")
    replicate = [j for j in found if j["provider_id"] == "replicate"]
    assert {j["status"] for j in replicate} == {"pending"}
    assert all(j["error_message"] is None for j in replicate)
    [budget] = rows(
        audited_db,
        "SELECT paused_until > now() AS paused, pause_reason FROM app.provider_budgets "
        "WHERE provider_id = 'replicate'",
    )
    assert budget["paused"] and budget["pause_reason"].startswith("credentials rejected")
    assert events and events[0]["level"] == "error"
    # Paused for every replica after the first rejections: at most one attempt per job.
    assert _Unauthorized.requests <= 4
    assert [j["status"] for j in found if j["provider_id"] == "suno"] == ["completed"]


def test_api_key_with_a_trailing_newline_never_fails_jobs(audited_db: str, tmp_path: Path) -> None:
    key = TEST_KEYS["REPLICATE_API_TOKEN"] + "\n"
    jobs.insert(audited_db, [jobs.replicate_image()])
    with fleet(tmp_path, audited_db) as group:
        replica = group.start(1, drain=True, overrides={"REPLICATE_API_TOKEN": key})[0]
        code = replica.wait(60)
        stderr = replica.stderr()
    if code == 2:  # refused at start-up, naming the variable: fine
        assert "REPLICATE_API_TOKEN" in stderr
        return
    [job] = rows(audited_db, "SELECT status, error_message FROM app.generation_jobs")
    assert job["status"] == "completed", job["error_message"]
