"""Unit tests of the pure parts: scenario parsing, job lifecycle arithmetic, multipart, media."""

from __future__ import annotations

import io

import anyio
import mutagen
import pytest

from simulator import scenarios
from simulator.jobs import Job, advance, cancel, force, progress
from simulator.media import MediaSpec, audio_duration_s, large_file, render
from simulator.multipart import MultipartError, parse_form
from simulator.replicate import cancel_after_seconds, prefer_wait_seconds
from simulator.scenarios import FaultPlan, Scenario, ScenarioError


def test_scenario_tokens_fold_left_to_right() -> None:
    parsed = scenarios.parse(
        "fail, multi:3 poll_error:503:2", "success large:2G", base=Scenario(polls=9)
    )
    assert parsed.outcome == "success"
    assert parsed.outputs == 3
    assert parsed.poll_error == FaultPlan(status=503, count=2)
    assert parsed.large_bytes == 2 << 30
    assert parsed.polls == 9


def test_prompt_tags_are_extracted() -> None:
    text = scenarios.tokens_in_text("a cat [sim:fail] on a mat [sim:polls:2]")
    assert scenarios.parse(text) == Scenario(outcome="fail", polls=2)
    assert scenarios.tokens_in_text("no tags") == ""
    assert scenarios.tokens_in_text(None) == ""


@pytest.mark.parametrize(
    "source",
    [
        "nope",
        "polls:0",
        "polls:x",
        "poll_error:200",
        "size:9x",
        "large:lots",
        "format:gif",
        "seconds:-1",
        3,
    ],
)
def test_bad_scenarios_are_rejected(source: object) -> None:
    with pytest.raises(ScenarioError):
        scenarios.parse(source)


def _job(**overrides: object) -> Job:
    values: dict[str, object] = {
        "id": "j",
        "provider": "replicate",
        "scenario": Scenario(),
        "media": MediaSpec(fmt="png"),
        "outputs": 1,
        "created": 100.0,
        "run_at": 0.5,
        "owner": "t",
        "done_after_polls": None,
        "done_after_s": 10.0,
    }
    values.update(overrides)
    return Job(**values)  # type: ignore[arg-type]


def test_time_based_transitions_record_exact_crossings() -> None:
    job = _job()
    advance(job, 103.0)
    assert (job.started, job.outcome) == (None, None)  # a tuple: keeps mypy from narrowing
    assert progress(job, 103.0) == pytest.approx(0.3)
    advance(job, 200.0, poll=True)
    assert (job.started, job.finished, job.outcome) == (105.0, 110.0, "success")


def test_poll_based_completion_happens_at_the_poll() -> None:
    job = _job(done_after_polls=2, done_after_s=None)
    advance(job, 101.0, poll=True)
    assert job.started == 101.0 and job.outcome is None
    advance(job, 102.0, poll=True)
    assert job.finished == 102.0 and job.outcome == "success"


def test_deadline_aborts_before_start_and_cancels_after() -> None:
    queued = _job(deadline=103.0)
    advance(queued, 104.0)
    assert (queued.outcome, queued.finished, queued.started) == ("aborted", 103.0, None)
    running = _job(deadline=107.0)
    advance(running, 108.0)
    assert (running.outcome, running.started) == ("canceled", 105.0)
    finished_first = _job(deadline=120.0)
    advance(finished_first, 125.0)
    assert finished_first.outcome == "success"


def test_stuck_cancel_and_force() -> None:
    stuck = _job(scenario=Scenario(stuck=True))
    advance(stuck, 10_000.0)
    assert stuck.outcome is None and stuck.started is not None
    cancel(stuck, 10_001.0)
    assert stuck.outcome == "canceled"
    assert not force(stuck, 10_002.0, "success")
    fresh = _job()
    assert force(fresh, 101.0, "fail") and fresh.finished == 101.0


def test_header_parsers() -> None:
    assert cancel_after_seconds("1h30m45s") == 5445
    assert cancel_after_seconds("500ms") == 0.5
    assert cancel_after_seconds("90") == 90
    assert cancel_after_seconds(None) is None
    with pytest.raises(ValueError):
        cancel_after_seconds("5 minutes")
    assert prefer_wait_seconds("wait") == 60
    assert prefer_wait_seconds("respond-async, wait=5") == 5
    assert prefer_wait_seconds("wait=600") == 60
    assert prefer_wait_seconds(None) == 0


def test_multipart_parsing() -> None:
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nhi there\r\n'
        b'--XyZ\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
        b"Content-Type: image/png\r\n\r\n\x89PNG\r\n--XyZ--\r\n"
    )
    form = parse_form("multipart/form-data; boundary=XyZ", body)
    assert form.fields == {"prompt": "hi there"}
    assert form.files == {"image": b"\x89PNG"}
    with pytest.raises(MultipartError):
        parse_form("application/json", body)
    with pytest.raises(MultipartError):
        parse_form("multipart/form-data; boundary=XyZ", body[:-9])


def test_mp3_duration_matches_what_vendors_report() -> None:
    spec = MediaSpec(fmt="mp3", duration_s=142.6)
    parsed = mutagen.File(io.BytesIO(render(spec, "k")))
    assert parsed is not None
    assert abs(parsed.info.length - audio_duration_s(spec)) < 0.01


def test_large_file_materializes_to_the_streamed_bytes() -> None:
    file = large_file(MediaSpec(fmt="png"), "k", (1 << 20) * 2 + 5, seed=1)

    async def collect() -> bytes:
        return b"".join([chunk async for chunk in file.chunks()])

    streamed = anyio.run(collect)
    assert streamed == file.materialize()
    assert len(streamed) == file.total
    assert streamed.startswith(render(MediaSpec(fmt="png"), "k"))
