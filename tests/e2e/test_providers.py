"""One job per provider and media type, end to end through `main.py run --drain`.

The daemon runs once per module as a process against the loopback simulator, with debug
logging; each test then checks one thing an orchestrator or operator relies on: the row
(status, times, result_uri, artifact ids), the artifact rows (sniffed type, metadata), the
bytes on disk (content-addressed path, sha256), the terminal NOTIFY with its payload, and
the daemon's output (no API key in it).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import jobs
from tests.e2e.dbcheck import NotifyCollector, bad_local_blobs, integrity, rows
from tests.e2e.harness import TEST_KEYS, fleet

pytestmark = pytest.mark.slow

EXPECTED_TYPE = {
    ("replicate", "image"): "image/png",
    ("replicate", "video"): "video/mp4",
    ("stability", "image"): "image/png",
    ("stability", "audio"): "audio/mpeg",
    ("suno", "audio"): "audio/mpeg",
}
# Stability's text-to-audio is synchronous: the create reply is the file (no status poll).
SYNCHRONOUS = ("stability", "audio")


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    """What one drained daemon run left behind."""

    db_url: str
    store: Path
    sim_url: str
    exit_code: int
    jobs: list[dict[str, Any]]
    artifacts: dict[str, dict[str, Any]]
    notifications: list[dict[str, Any]]
    output: str

    def job(self, provider: str, media_type: str) -> dict[str, Any]:
        return next(
            j for j in self.jobs if (j["provider_id"], j["media_type"]) == (provider, media_type)
        )


@pytest.fixture(scope="module")
def run(module_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    workdir = tmp_path_factory.mktemp("providers")
    specs = [
        jobs.replicate_image(),
        jobs.replicate_video(),
        jobs.stability_image(),
        jobs.stability_audio(),
        jobs.suno_audio(),
    ]
    ids = jobs.insert(module_db, specs)
    with NotifyCollector(module_db) as notes, fleet(workdir, module_db) as group:
        replica = group.start(1, drain=True, overrides={"POLLER_LOG_LEVEL": "debug"})[0]
        code = replica.wait(90)
        notes.settle(len(ids))
        sim_url = group.sim.base_url
        output = group.output()
    yield Run(
        db_url=module_db,
        store=workdir / "artifacts",
        sim_url=sim_url,
        exit_code=code,
        jobs=rows(module_db, "SELECT * FROM app.generation_jobs"),
        artifacts={str(a["id"]): a for a in rows(module_db, "SELECT * FROM app.artifacts")},
        notifications=list(notes.payloads),
        output=output,
    )


def test_drain_exits_zero_with_every_job_completed(run: Run) -> None:
    assert run.exit_code == 0, run.output[-3000:]
    assert len(run.jobs) == len(EXPECTED_TYPE)
    for job in run.jobs:
        assert job["status"] == "completed", job["error_message"]
        assert job["error_message"] is None and job["lease_owner"] is None
        assert job["provider_job_id"]
        assert job["created_at"] <= job["started_at"] <= job["completed_at"]
        assert job["artifact_ids"] and str(job["artifact_id"]) == job["artifact_ids"][0]


def test_attempts_count_status_polls_only(run: Run) -> None:
    for job in run.jobs:
        if (job["provider_id"], job["media_type"]) == SYNCHRONOUS:
            assert job["attempts"] == 0  # a submit is not a poll
        else:
            assert job["attempts"] >= 1, job["provider_id"]


def test_result_uri_is_the_providers_url_of_the_first_output(run: Run) -> None:
    for key in (("replicate", "image"), ("replicate", "video"), ("suno", "audio")):
        job = run.job(*key)
        assert job["result_uri"].startswith(f"{run.sim_url}/cdn/{job['provider_job_id']}/")
    stability = run.job("stability", "image")
    assert stability["result_uri"].startswith(run.sim_url)
    assert stability["provider_job_id"] in stability["result_uri"]  # its results URL
    inline = run.job(*SYNCHRONOUS)  # no URL: the stored artifact's uri
    assert inline["result_uri"] == run.artifacts[inline["artifact_ids"][0]]["uri"]


def test_artifact_rows_carry_the_sniffed_type_and_metadata(run: Run) -> None:
    for job in run.jobs:
        expected = EXPECTED_TYPE[(job["provider_id"], job["media_type"])]
        for index, art_id in enumerate(job["artifact_ids"]):
            art = run.artifacts[art_id]
            assert art["type"] == expected
            assert (art["tenant_id"], art["run_id"]) == (job["tenant_id"], job["run_id"])
            assert art["skill_id"] == job["provider_id"]  # no run_steps row: the provider id
            assert art["metadata"]["output_index"] == index
            if job["media_type"] == "image":
                assert art["metadata"]["width"] > 0 and art["metadata"]["height"] > 0
            else:
                assert art["metadata"]["duration_s"] > 0
    assert len(run.job("suno", "audio")["artifact_ids"]) == 2  # two clips; covers = metadata
    assert len(run.artifacts) == sum(len(j["artifact_ids"]) for j in run.jobs)
    assert integrity(run.db_url).duplicate_artifacts == 0


def test_artifact_metadata_names_the_provider_job(run: Run) -> None:
    """Also for a result that arrived with the submit reply (Stability synchronous)."""
    for job in run.jobs:
        for art_id in job["artifact_ids"]:
            meta = run.artifacts[art_id]["metadata"]
            assert meta["provider_job_id"] == job["provider_job_id"], job["provider_id"]


def test_files_on_disk_are_content_addressed_and_hash_to_their_rows(run: Run) -> None:
    assert bad_local_blobs(run.db_url, run.store) == []
    assert len(list((run.store / "sha256").rglob("*/*"))) == len(
        {a["content_hash"] for a in run.artifacts.values()}
    )


def test_one_terminal_notify_per_job_with_the_documented_payload(run: Run) -> None:
    by_id = {str(j["id"]): j for j in run.jobs}
    assert sorted(n["id"] for n in run.notifications) == sorted(by_id)
    for payload in run.notifications:
        job = by_id[payload["id"]]
        assert payload == {
            "id": str(job["id"]),
            "tenant_id": job["tenant_id"],
            "run_id": str(job["run_id"]),
            "run_step_id": str(job["run_step_id"]),
            "status": "completed",
            "artifact_ids": job["artifact_ids"],
        }


def test_api_keys_never_appear_in_the_daemons_output(run: Run) -> None:
    assert "provider.submitted" in run.output  # the capture did see the run (debug level)
    for name, key in TEST_KEYS.items():
        assert key not in run.output, name
