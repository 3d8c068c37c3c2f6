"""The `/_sim/*` control endpoints and the `python -m simulator` command line."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from devenv import stack
from simulator.server import SimulatorServer
from tests.simulator.conftest import AUTH
from tests.simulator.helpers import replicate_create, suno_generate

_ROOT = Path(__file__).resolve().parents[2]


def test_stats_count_routes_statuses_and_jobs(client: httpx.Client) -> None:
    job_id = replicate_create(client, {"sim_scenario": "polls:2"}).json()["id"]
    client.get(f"/v1/predictions/{job_id}")
    client.get("/v1/predictions/missing")
    suno_generate(client)
    stats = client.get("/_sim/stats").json()
    assert stats["seed"] == 1234
    assert stats["requests"]["replicate.create"] == {"201": 1}
    assert stats["requests"]["replicate.get"] == {"200": 1, "404": 1}
    assert stats["requests"]["suno.generate"] == {"200": 1}
    assert stats["jobs"]["replicate"] == {"processing": 1}
    assert stats["jobs"]["suno"] == {"PENDING": 1}
    assert stats["jobs_total"] == 2 and stats["requests_total"] == 4


def test_job_summary_records_detection_latency(client: httpx.Client) -> None:
    job_id = replicate_create(client, {"sim_scenario": "seconds:0.2"}).json()["id"]
    time.sleep(0.35)
    client.get(f"/v1/predictions/{job_id}")
    summary = client.get(f"/_sim/jobs/{job_id}").json()
    assert summary["status"] == "succeeded" and summary["polls"] == 1
    assert summary["done_at"] == pytest.approx(summary["created_at"] + 0.2, abs=1e-3)
    assert summary["seen_done_at"] > summary["done_at"]
    assert summary["detection_latency_s"] >= 0.1
    listing = client.get("/_sim/jobs").json()["jobs"]
    assert [job["id"] for job in listing] == [job_id]


def test_complete_and_reset_over_http(sim: SimulatorServer, client: httpx.Client) -> None:
    job_id = replicate_create(client, {"sim_scenario": "stuck"}).json()["id"]
    forced = client.post(f"/_sim/jobs/{job_id}/complete", json={"outcome": "moderation"})
    assert forced.status_code == 200 and forced.json()["status"] == "failed"
    assert client.post(f"/_sim/jobs/{job_id}/complete").status_code == 409
    assert client.post("/_sim/jobs/nope/complete").status_code == 404
    other = replicate_create(client, {}).json()["id"]
    assert client.post(f"/_sim/jobs/{other}/complete", json={"outcome": "??"}).status_code == 400
    assert client.post("/_sim/reset").json() == {"ok": True}
    assert sim.stats()["jobs_total"] == 0 and sim.jobs() == []
    assert client.get("/_sim/health").json() == {"ok": True}


def _start(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[bytes], Path]:
    ready = tmp_path / "url"
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulator", "--ready-file", str(ready), *args],
        cwd=_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 20
    while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return proc, ready


def test_cli_announces_url_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    proc, ready = _start(tmp_path, "--port", "0", "--seed", "8", "--fault-429", "1.0")
    try:
        base_url = ready.read_text().strip()
        assert base_url.startswith("http://127.0.0.1:")
        with httpx.Client(base_url=base_url, headers=AUTH, verify=False) as client:
            assert client.get("/_sim/stats").json()["seed"] == 8
            job_id = replicate_create(client, {}).json()["id"]
            assert client.get(f"/v1/predictions/{job_id}").status_code == 429
    finally:
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 0, stderr
    assert stdout.decode().strip() == base_url


@pytest.mark.parametrize(
    "args",
    [
        ("--fault-5xx", "0.8", "--fault-429", "0.5"),
        ("--scenario", "nonsense"),
        ("--rate-limit", "openai=3"),
        ("--fault-scope", "poll,everything"),
    ],
)
def test_cli_rejects_bad_options(tmp_path: Path, args: tuple[str, ...]) -> None:
    proc, ready = _start(tmp_path, *args)
    _, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 2 and not ready.exists()
    assert stderr.strip()


def test_the_dev_stacks_simulator_hands_out_new_job_ids_on_every_start() -> None:
    """`make demo` and `make run` keep their database in ./.data between runs; a simulator
    started with the same seed each time gave a second run the first run's job ids, and every
    job failed on the unique (provider_id, provider_job_id)."""
    ids = []
    for _ in range(2):
        with stack.simulator() as url, httpx.Client(base_url=url, headers=AUTH) as client:
            ids.append(replicate_create(client, {"prompt": "x"}).json()["id"])
    assert ids[0] != ids[1]
