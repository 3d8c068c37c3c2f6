"""The fake Stability v2beta API over loopback HTTP: async results, sync calls, errors."""

from __future__ import annotations

import base64
import io
import re

import filetype
import httpx
import mutagen
from PIL import Image

from tests.simulator.helpers import PNG_BYTES, stability_submit

_UPSCALE = "stable-image/upscale/creative"


def _submit_upscale(client: httpx.Client, **fields: str) -> str:
    response = stability_submit(
        client, _UPSCALE, {"prompt": "sharper", **fields}, {"image": PNG_BYTES}
    )
    assert response.status_code == 200, response.text
    job_id: str = response.json()["id"]
    return job_id


def test_async_result_in_progress_then_raw_bytes(client: httpx.Client) -> None:
    job_id = _submit_upscale(client, seed="42")
    assert re.fullmatch(r"[0-9a-f]{64}", job_id)
    for _ in range(2):
        pending = client.get(f"/v2beta/results/{job_id}", headers={"Accept": "image/*"})
        assert pending.status_code == 202
        assert pending.json() == {"id": job_id, "status": "in-progress"}
    done = client.get(f"/v2beta/results/{job_id}", headers={"Accept": "image/*"})
    assert done.status_code == 200
    assert done.headers["content-type"] == "image/png"
    assert done.headers["finish-reason"] == "SUCCESS"
    assert done.headers["seed"] == "42"
    assert filetype.guess_mime(done.content) == "image/png"
    assert Image.open(io.BytesIO(done.content)).size == (64, 64)


def test_json_accept_returns_base64_result(client: httpx.Client) -> None:
    job_id = _submit_upscale(client, sim_scenario="polls:1 format:webp", output_format="webp")
    done = client.get(f"/v2beta/results/{job_id}", headers={"Accept": "application/json"})
    body = done.json()
    assert done.status_code == 200 and body["finish_reason"] == "SUCCESS"
    assert isinstance(body["seed"], int)
    assert Image.open(io.BytesIO(base64.b64decode(body["result"]))).format == "WEBP"


def test_image_to_video_uses_its_own_result_path(client: httpx.Client) -> None:
    submitted = stability_submit(
        client, "image-to-video", {"sim_scenario": "polls:1"}, {"image": PNG_BYTES}
    )
    job_id = submitted.json()["id"]
    as_json = client.get(
        f"/v2beta/image-to-video/result/{job_id}", headers={"Accept": "application/json"}
    ).json()
    assert filetype.guess_mime(base64.b64decode(as_json["video"])) == "video/mp4"
    raw = client.get(f"/v2beta/image-to-video/result/{job_id}", headers={"Accept": "video/*"})
    assert raw.headers["content-type"] == "video/mp4"
    assert filetype.guess_mime(raw.content) == "video/mp4"


def test_submit_validation(client: httpx.Client) -> None:
    not_multipart = client.post(f"/v2beta/{_UPSCALE}", json={"prompt": "x"})
    assert not_multipart.status_code == 400
    assert not_multipart.json()["name"] == "bad_request"
    missing = stability_submit(client, _UPSCALE, {"prompt": "x"})
    assert missing.status_code == 400 and "image" in missing.json()["errors"][0]
    bad_format = stability_submit(
        client, "stable-image/generate/core", {"prompt": "x", "output_format": "gif"}
    )
    assert bad_format.status_code == 400
    unknown = stability_submit(client, "stable-image/generate/nonsense", {"prompt": "x"})
    assert unknown.status_code == 404 and unknown.json()["name"] == "not_found"


def test_moderation_refusal_and_filtered_result(client: httpx.Client) -> None:
    refused = stability_submit(
        client, _UPSCALE, {"prompt": "x [sim:moderation]"}, {"image": PNG_BYTES}
    )
    assert refused.status_code == 403
    body = refused.json()
    assert set(body) == {"id", "name", "errors"}
    assert body["name"] == "content_moderation"  # reference §2.7 / §2.9, not a plain "forbidden"
    assert "moderation" in body["errors"][0]

    job_id = _submit_upscale(client, sim_scenario="filtered polls:1")
    done = client.get(f"/v2beta/results/{job_id}")
    assert done.status_code == 200 and done.headers["finish-reason"] == "CONTENT_FILTERED"


def test_unknown_id_and_other_key_get_404(client: httpx.Client) -> None:
    missing = client.get(f"/v2beta/results/{'0' * 64}")
    assert missing.status_code == 404 and missing.json()["name"] == "not_found"
    job_id = _submit_upscale(client)
    stranger = client.get(f"/v2beta/results/{job_id}", headers={"Authorization": "Bearer other"})
    assert stranger.status_code == 404
    anonymous = client.get(f"/v2beta/results/{job_id}", headers={"Authorization": ""})
    assert anonymous.status_code == 401 and anonymous.json()["name"] == "unauthorized"


def test_expired_result_is_gone(client: httpx.Client) -> None:
    job_id = _submit_upscale(client, sim_scenario="expired polls:1")
    assert client.get(f"/v2beta/results/{job_id}").status_code == 404


def test_failed_generation_reports_error_finish_reason(client: httpx.Client) -> None:
    job_id = _submit_upscale(client, sim_scenario="fail polls:1")
    done = client.get(f"/v2beta/results/{job_id}", headers={"Accept": "application/json"})
    assert done.json()["finish_reason"] == "ERROR"


def test_sync_endpoints_return_the_file(client: httpx.Client) -> None:
    image = stability_submit(
        client, "stable-image/generate/core", {"prompt": "a fox", "output_format": "jpeg"}
    )
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/jpeg"
    assert filetype.guess_mime(image.content) == "image/jpeg"

    audio = stability_submit(
        client,
        "audio/stable-audio-2/text-to-audio",
        {"prompt": "rain", "sim_scenario": "duration:3"},
    )
    assert audio.headers["content-type"] == "audio/mpeg"
    parsed = mutagen.File(io.BytesIO(audio.content))
    assert parsed is not None and abs(parsed.info.length - 3.0) < 0.05

    as_json = client.post(
        "/v2beta/stable-image/generate/ultra",
        data={"prompt": "owl"},
        files={"none": ("", b"")},
        headers={"Accept": "application/json"},
    )
    assert as_json.json()["finish_reason"] == "SUCCESS"
    assert base64.b64decode(as_json.json()["image"]).startswith(b"\x89PNG")
