"""Small request helpers shared by the simulator tests."""

from __future__ import annotations

from typing import Any

import httpx

PNG_BYTES = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32  # content of uploaded files is not inspected
VERSION = "acme/painter:" + "ab" * 32


def replicate_create(
    client: httpx.Client, job_input: dict[str, Any], *, headers: dict[str, str] | None = None
) -> httpx.Response:
    return client.post(
        "/v1/predictions", json={"version": VERSION, "input": job_input}, headers=headers
    )


def replicate_poll(client: httpx.Client, prediction_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/predictions/{prediction_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def stability_submit(
    client: httpx.Client,
    endpoint: str,
    fields: dict[str, str],
    files: dict[str, bytes] | None = None,
) -> httpx.Response:
    parts = {name: (f"{name}.png", data, "image/png") for name, data in (files or {}).items()}
    if not parts:
        parts = {"none": ("", b"", "application/octet-stream")}  # forces multipart
    return client.post(f"/v2beta/{endpoint}", data=fields, files=parts)


def suno_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "customMode": False,
        "instrumental": True,
        "model": "V4_5",
        "callBackUrl": "https://example.invalid/callback",
        "prompt": "lofi rain study",
    }
    body.update(overrides)
    return body


def suno_generate(client: httpx.Client, **overrides: Any) -> str:
    response = client.post("/api/v1/generate", json=suno_body(**overrides))
    assert response.status_code == 200
    body = response.json()
    assert body["code"] == 200, body
    task_id: str = body["data"]["taskId"]
    return task_id


def suno_record(client: httpx.Client, task_id: str) -> dict[str, Any]:
    response = client.get("/api/v1/generate/record-info", params={"taskId": task_id})
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body
