"""Bad input through a real daemon process: odd rows, hostile provider replies, bad files.

One drained run serves every row of this module (see `CASES`); each test asserts what the
daemon did with one kind of bad input. These tests back the process-level rows of the
bad-input catalogue in docs/reliability.md; the catalogue's other rows point at unit tests
in tests/providers, tests/storage, tests/poller and tests/db.

Timings are the suite's fast ones (`tests.e2e.harness.fast_timings`): error backoff capped
at 0.5 s, so a job's error budget (8 consecutive errors) is spent in seconds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.e2e import jobs
from tests.e2e.dbcheck import rows
from tests.e2e.harness import TEST_KEYS, fleet
from tests.e2e.jobs import JobSpec

pytestmark = pytest.mark.slow

MAX_DOWNLOAD = 2_000_000
DEADLINE_MS = 3000


def _spec(provider: str, media_type: str, params: Any, **extra: Any) -> JobSpec:
    return JobSpec(provider=provider, media_type=media_type, params=params, **extra)


CASES: dict[str, JobSpec] = {
    # rows inserted with odd values
    "unknown_provider": _spec("midjourney", "image", {"prompt": "x"}),
    "provider_wrong_case": _spec("Replicate", "image", {"version": jobs.SDXL, "input": {}}),
    "replicate_no_version": _spec("replicate", "image", {"input": {"prompt": "x"}}),
    "replicate_version_and_model": _spec(
        "replicate", "image", {"version": jobs.SDXL, "model": "a/b", "input": {}}
    ),
    "params_json_array": _spec("replicate", "image", [1, 2]),
    "params_json_string": _spec("suno", "audio", "make a song"),
    "stability_no_endpoint": _spec("stability", "image", {"params": {"prompt": "x"}}),
    "stability_endpoint_traversal": _spec(
        "stability", "image", {"endpoint": "../../v1/user/account", "params": {}}
    ),
    "stability_file_ftp": _spec(
        "stability",
        "image",
        {"endpoint": "stable-image/upscale/creative", "files": {"image": "ftp://h/x.png"}},
    ),
    "suno_no_model": _spec(
        "suno", "audio", {"prompt": "x", "customMode": False, "instrumental": False}
    ),
    "media_type_mismatch": dataclasses.replace(jobs.replicate_image(), media_type="audio"),
    "negative_timeout": jobs.replicate_image(timeout_ms=-5000),
    "zero_timeout": jobs.replicate_image(timeout_ms=0),
    # provider replies
    "replicate_moderation": jobs.replicate_image("moderation"),
    "stability_moderation_403": jobs.stability_image("moderation"),
    "stability_content_filtered": jobs.stability_image("filtered"),
    "suno_generation_failed": jobs.suno_audio("fail"),
    "suno_create_task_failed": jobs.suno_audio("create_failed"),
    "suno_callback_exception": jobs.suno_audio("callback_exception"),
    "replicate_output_expired": jobs.replicate_image("expired"),
    "malformed_json": jobs.replicate_image("poll_malformed:20"),
    "persistent_500": jobs.replicate_image("poll_error:500:30"),
    "four_500s_then_one_malformed": jobs.suno_audio("poll_error:500:4,poll_malformed:1"),
    "submit_500_after_create": jobs.replicate_image("submit_error:500"),
    "submit_422": jobs.replicate_image("submit_error:422"),
    "submit_malformed": jobs.replicate_image("submit_malformed"),
    "unknown_scenario_token": jobs.replicate_image("no_such_token"),
    # result URLs and files
    "cdn_404": jobs.replicate_image("cdn_error:404:10"),
    "cdn_lies_about_type": jobs.replicate_image("cdn_wrong_type"),
    "cdn_truncated_once": jobs.replicate_image("cdn_truncate:1"),
    "too_large": jobs.replicate_image(f"large:{MAX_DOWNLOAD + 1_000_000}"),
    "not_media_bytes": jobs.replicate_image("format:bin"),
    "data_url_output": jobs.replicate_image("shape:data"),
}
# Inserted once the daemon runs: their short deadline must not pass while it starts up.
DEADLINE_CASES: dict[str, JobSpec] = {
    "negative_poll_interval": jobs.replicate_image(
        "stuck", timeout_ms=DEADLINE_MS, poll_interval_ms=-1000
    ),
    "unknown_status": jobs.replicate_image("unknown_status,stuck", timeout_ms=DEADLINE_MS),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    exit_code: int
    jobs: dict[str, dict[str, Any]]  # case name → row
    sim_jobs: dict[str, dict[str, Any]]  # provider job id → simulator summary
    artifacts: dict[str, list[dict[str, Any]]]  # case name → artifact rows
    output: str

    def sim(self, case: str) -> dict[str, Any] | None:
        return self.sim_jobs.get(self.jobs[case]["provider_job_id"] or "")


@pytest.fixture(scope="module")
def outcome(module_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outcome]:
    ids = jobs.insert(module_db, list(CASES.values()))
    overrides = {"POLLER_MAX_DOWNLOAD_BYTES": str(MAX_DOWNLOAD), "POLLER_LOG_LEVEL": "debug"}
    with fleet(tmp_path_factory.mktemp("badinput"), module_db) as group:
        replica = group.start(1, drain=True, overrides=overrides)[0]
        replica.wait_for_event("daemon.started")  # the jobs above keep it from draining yet
        ids += jobs.insert(module_db, list(DEADLINE_CASES.values()))
        code = replica.wait(120)
        sim_jobs = {j["id"]: j for j in group.sim.jobs()}
        output = group.output()
    names = dict(zip((str(i) for i in ids), [*CASES, *DEADLINE_CASES], strict=True))
    found = {names[str(r["id"])]: r for r in rows(module_db, "SELECT * FROM app.generation_jobs")}
    arts: dict[str, list[dict[str, Any]]] = {name: [] for name in names.values()}
    for art in rows(module_db, "SELECT * FROM app.artifacts"):
        owner = next(n for n, j in found.items() if str(art["id"]) in j["artifact_ids"])
        arts[owner].append(art)
    yield Outcome(exit_code=code, jobs=found, sim_jobs=sim_jobs, artifacts=arts, output=output)


def _failed(outcome: Outcome, case: str, *fragments: str) -> dict[str, Any]:
    job = outcome.jobs[case]
    assert job["status"] == "failed", (case, job["status"], job["error_message"])
    for fragment in fragments:
        assert fragment in job["error_message"], (case, job["error_message"])
    assert outcome.artifacts[case] == []
    return job


def test_the_daemon_survives_every_bad_row_and_drains(outcome: Outcome) -> None:
    assert outcome.exit_code == 0, outcome.output[-3000:]
    active = [n for n, j in outcome.jobs.items() if j["status"] in ("pending", "processing")]
    assert active == []


def test_unknown_provider_fails_naming_it(outcome: Outcome) -> None:
    _failed(outcome, "unknown_provider", "unknown provider 'midjourney'")
    _failed(outcome, "provider_wrong_case", "unknown provider 'Replicate'")


def test_invalid_input_params_fail_before_any_request(outcome: Outcome) -> None:
    cases = {
        "replicate_no_version": "give exactly one of 'version', 'model' or 'deployment'",
        "replicate_version_and_model": "give exactly one of 'version', 'model' or 'deployment'",
        "stability_no_endpoint": "endpoint: Field required",
        "stability_endpoint_traversal": "endpoint: String should match pattern",
        "stability_file_ftp": "files.image must be an https:// or data: URL",
        "suno_no_model": "model: Field required",
    }
    for case, message in cases.items():
        job = _failed(outcome, case, "invalid input_params", message)
        assert job["provider_job_id"] is None and outcome.sim(case) is None


def test_input_params_that_are_not_an_object_fail_as_invalid_input(outcome: Outcome) -> None:
    """Nothing was sent to the provider, so "submit outcome unknown" would be wrong."""
    for case in ("params_json_array", "params_json_string"):
        job = _failed(outcome, case, "invalid input_params")
        assert "submit outcome unknown" not in job["error_message"]


def test_output_of_another_media_type_fails_and_stores_nothing(outcome: Outcome) -> None:
    _failed(outcome, "media_type_mismatch", "output 1 of 1", "expected audio", "image/png")


def test_non_positive_timeout_times_out_without_submitting(outcome: Outcome) -> None:
    for case in ("negative_timeout", "zero_timeout"):
        job = outcome.jobs[case]
        assert job["status"] == "timed_out" and job["error_message"].startswith("timed out")
        assert job["provider_job_id"] is None and job["attempts"] == 0


def test_negative_poll_interval_still_ends_at_the_deadline(outcome: Outcome) -> None:
    job = outcome.jobs["negative_poll_interval"]
    assert job["status"] == "timed_out"
    sim = outcome.sim("negative_poll_interval")
    assert sim is not None and sim["poll_requests"] == job["attempts"] >= 2
    print(f"\nnegative poll_interval_ms: {job['attempts']} polls in {DEADLINE_MS} ms")


def test_provider_reported_failures_fail_with_the_providers_reason(outcome: Outcome) -> None:
    _failed(outcome, "replicate_moderation", "moderation: NSFW content detected")
    _failed(outcome, "stability_moderation_403", "moderation:")
    _failed(outcome, "stability_content_filtered", "moderation:", "CONTENT_FILTERED")
    _failed(outcome, "suno_generation_failed", "Audio generation failed")
    _failed(outcome, "suno_create_task_failed", "Failed to create the generation task")
    _failed(outcome, "replicate_output_expired", "output expired")


def test_callback_exception_with_complete_clips_still_completes(outcome: Outcome) -> None:
    assert outcome.jobs["suno_callback_exception"]["status"] == "completed"
    assert len(outcome.artifacts["suno_callback_exception"]) == 2


def test_unknown_provider_status_never_ends_a_job_only_the_deadline(outcome: Outcome) -> None:
    job = outcome.jobs["unknown_status"]
    assert job["status"] == "timed_out" and job["attempts"] >= 2
    assert "provider.unknown_status" in outcome.output


def test_unparseable_and_failing_replies_exhaust_the_error_budget(outcome: Outcome) -> None:
    job = _failed(outcome, "malformed_json", "consecutive errors", "malformed JSON")
    assert '{"id":' in job["error_message"]  # a snippet of the reply
    job = _failed(outcome, "persistent_500", "consecutive errors", "HTTP 500")
    assert job["attempts"] >= 2


def test_one_unparseable_reply_after_transient_errors_does_not_fail_the_job(
    outcome: Outcome,
) -> None:
    """Four 5xx then one cut-off JSON reply: one unparseable reply, well inside the budget.

    The budget for unparseable replies (4) is about *consecutive unparseable* replies; a
    provider storm mixing 5xx and garbage must not fail jobs on the first piece of garbage.
    """
    job = outcome.jobs["four_500s_then_one_malformed"]
    assert job["status"] == "completed", job["error_message"]


def test_ambiguous_submit_failures_are_never_resubmitted(outcome: Outcome) -> None:
    for case in ("submit_500_after_create", "submit_malformed"):
        _failed(outcome, case, "submit outcome unknown")
    # The simulator created one job for each whose id never reached the row; a resubmit
    # would have created another. Every other replicate job has its id recorded.
    recorded = {j["provider_job_id"] for j in outcome.jobs.values()}
    orphans = [
        sim_id
        for sim_id, sim in outcome.sim_jobs.items()
        if sim["provider"] == "replicate" and sim_id not in recorded
    ]
    assert len(orphans) == 2, orphans


def test_submit_rejections_fail_with_the_providers_message(outcome: Outcome) -> None:
    _failed(outcome, "submit_422", "replicate rejected the job", "HTTP 422")
    _failed(outcome, "unknown_scenario_token", "unknown sim scenario token")


def test_deleted_result_file_fails_as_expired(outcome: Outcome) -> None:
    _failed(outcome, "cdn_404", "HTTP 404", "expired or was deleted")


def test_type_is_sniffed_from_bytes_not_the_cdn_header(outcome: Outcome) -> None:
    assert outcome.jobs["cdn_lies_about_type"]["status"] == "completed"
    [art] = outcome.artifacts["cdn_lies_about_type"]
    assert art["type"] == "image/png"


def test_truncated_download_is_retried_and_stored_whole(outcome: Outcome) -> None:
    job = outcome.jobs["cdn_truncated_once"]
    assert job["status"] == "completed"
    [art] = outcome.artifacts["cdn_truncated_once"]
    assert art["size_bytes"] > 0 and art["type"] == "image/png"


def test_oversized_result_fails_and_stores_nothing(outcome: Outcome) -> None:
    _failed(outcome, "too_large", "POLLER_MAX_DOWNLOAD_BYTES")


def test_bytes_that_are_no_media_fail(outcome: Outcome) -> None:
    _failed(outcome, "not_media_bytes", "not a supported image type")


def test_data_url_output_is_decoded_and_stored(outcome: Outcome) -> None:
    job = outcome.jobs["data_url_output"]
    assert job["status"] == "completed"
    [art] = outcome.artifacts["data_url_output"]
    assert job["result_uri"] == art["uri"]  # no provider URL: the stored artifact's uri


def test_error_paths_never_log_an_api_key(outcome: Outcome) -> None:
    assert "job.failed" in outcome.output
    for name, key in TEST_KEYS.items():
        assert key not in outcome.output, name
