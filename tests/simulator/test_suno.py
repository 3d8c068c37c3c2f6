"""The fake Suno (sunoapi.org) API over loopback HTTP: task lifecycle, clips, body codes."""

from __future__ import annotations

import io
import json

import filetype
import httpx
import mutagen
from PIL import Image

from tests.simulator.helpers import suno_body, suno_generate, suno_record


def test_task_runs_through_every_status_to_two_clips(client: httpx.Client) -> None:
    task_id = suno_generate(client, prompt="lofi rain [sim:polls:4]", title="Rain Study")
    records = [suno_record(client, task_id) for _ in range(4)]
    assert all(r["code"] == 200 and r["msg"] == "success" for r in records)
    statuses = [r["data"]["status"] for r in records]
    assert statuses == ["PENDING", "TEXT_SUCCESS", "FIRST_SUCCESS", "SUCCESS"]
    assert records[0]["data"]["response"] is None

    text_clips = records[1]["data"]["response"]["sunoData"]
    assert [c["audioUrl"] for c in text_clips] == ["", ""]
    assert all(c["streamAudioUrl"] for c in text_clips)
    first_clips = records[2]["data"]["response"]["sunoData"]
    assert first_clips[0]["audioUrl"] and not first_clips[1]["audioUrl"]
    assert first_clips[1]["duration"] is None

    final = records[3]["data"]
    assert final["taskId"] == task_id and final["errorCode"] is None
    assert json.loads(final["param"])["prompt"] == "lofi rain [sim:polls:4]"
    clips = final["response"]["sunoData"]
    assert len(clips) == 2 and len({c["id"] for c in clips}) == 2
    for clip in clips:
        assert clip["audioUrl"].endswith(".mp3") and clip["imageUrl"].endswith(".jpeg")
        assert clip["title"] == "Rain Study" and clip["modelName"] == "chirp-v4-5"
        assert clip["duration"] > 0


def test_clip_files_are_real_mp3_and_jpeg(client: httpx.Client, cdn: httpx.Client) -> None:
    task_id = suno_generate(client, sim_scenario="polls:1 duration:4")
    clip = suno_record(client, task_id)["data"]["response"]["sunoData"][0]
    audio = cdn.get(clip["audioUrl"])
    assert audio.headers["content-type"] == "audio/mpeg"
    assert filetype.guess_mime(audio.content) == "audio/mpeg"
    parsed = mutagen.File(io.BytesIO(audio.content))
    assert parsed is not None and abs(parsed.info.length - clip["duration"]) < 0.02
    cover = cdn.get(clip["imageUrl"])
    assert Image.open(io.BytesIO(cover.content)).format == "JPEG"
    assert cdn.get(clip["streamAudioUrl"]).content == audio.content


def test_generate_validation_uses_body_codes(client: httpx.Client) -> None:
    cases = [
        (suno_body(callBackUrl=None), 400),
        (suno_body(model="V9"), 400),
        (suno_body(customMode="yes"), 400),
        (suno_body(prompt="x" * 501), 413),
        (suno_body(customMode=True, style="", title="t"), 400),
        (suno_body(sim_scenario="bogus"), 400),
    ]
    for body, code in cases:
        response = client.post("/api/v1/generate", json=body)
        assert response.status_code == 200
        assert response.json()["code"] == code, body
        assert response.json()["data"] is None


def test_custom_mode_accepts_style_and_title(client: httpx.Client) -> None:
    task_id = suno_generate(
        client, customMode=True, instrumental=False, style="jazz", title="Blue", prompt="la la"
    )
    data = suno_record(client, task_id)["data"]
    assert data["status"] == "TEXT_SUCCESS"  # default 3 polls: the first lands on 1/3
    assert data["response"]["sunoData"][0]["tags"] == "jazz"


def test_failure_statuses(client: httpx.Client) -> None:
    expected = {
        "fail": ("GENERATE_AUDIO_FAILED", 500),
        "create_failed": ("CREATE_TASK_FAILED", 400),
        "moderation": ("SENSITIVE_WORD_ERROR", 400),
    }
    for token, (status, code) in expected.items():
        task_id = suno_generate(client, sim_scenario=f"{token} polls:1")
        data = suno_record(client, task_id)["data"]
        assert (data["status"], data["errorCode"]) == (status, code)
        assert data["errorMessage"] and data["response"] is None


def test_callback_exception_still_has_clips(client: httpx.Client) -> None:
    task_id = suno_generate(client, sim_scenario="callback_exception polls:1")
    data = suno_record(client, task_id)["data"]
    assert data["status"] == "CALLBACK_EXCEPTION"
    assert all(c["audioUrl"] for c in data["response"]["sunoData"])


def test_unknown_status_and_clip_count(client: httpx.Client) -> None:
    task_id = suno_generate(client, sim_scenario="unknown_status multi:3 polls:2")
    assert suno_record(client, task_id)["data"]["status"] == "QUEUED_FOR_REVIEW"
    data = suno_record(client, task_id)["data"]
    assert data["status"] == "SUCCESS" and len(data["response"]["sunoData"]) == 3


def test_auth_and_unknown_task(client: httpx.Client) -> None:
    anonymous = client.post("/api/v1/generate", json=suno_body(), headers={"Authorization": ""})
    assert anonymous.status_code == 200 and anonymous.json()["code"] == 401
    unknown = suno_record(client, "f" * 32)
    assert unknown["code"] == 404 and unknown["data"] is None
    missing = client.get("/api/v1/generate/record-info")
    assert missing.json()["code"] == 400


def test_credit_endpoint_counts_down(client: httpx.Client) -> None:
    before = client.get("/api/v1/generate/credit").json()["data"]
    suno_generate(client)
    after = client.get("/api/v1/generate/credit").json()
    assert after["code"] == 200 and after["data"] < before
