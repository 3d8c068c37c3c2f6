"""Job rows the way an orchestrator writes them: the seed's columns only, per provider.

``input_params`` follow DESIGN.md §10 "Providers". Simulator scenario tokens ride in the
prompt as ``[sim:TOKENS]`` (see the `simulator` docstring), so one helper covers all three
vendors.
"""

from __future__ import annotations

import base64
import io
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from PIL import Image
from psycopg.types.json import Jsonb

SDXL = "stability-ai/sdxl:39ed52f2a78e934b3ba6e2a89f5b1c712de7dfea535525255b1aa35c5565e08b"


@dataclass(frozen=True, slots=True, kw_only=True)
class JobSpec:
    """One row to insert; ``None`` timings mean "the provider's configured default"."""

    provider: str
    media_type: str
    params: Any  # a JSON value; normally an object, anything else in bad-input tests
    tenant: str = "e2e"
    poll_interval_ms: int | None = None
    timeout_ms: int | None = 120_000
    run_id: uuid.UUID = field(default_factory=uuid.uuid4)


def _prompt(text: str, scenario: str) -> str:
    return f"{text} [sim:{scenario}]" if scenario else text


def png_data_url(size: tuple[int, int] = (32, 32)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, (40, 120, 200)).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def replicate_image(scenario: str = "", **extra: Any) -> JobSpec:
    params = {"version": SDXL, "input": {"prompt": _prompt("a lighthouse at dawn", scenario)}}
    return JobSpec(provider="replicate", media_type="image", params=params, **extra)


def replicate_video(scenario: str = "", **extra: Any) -> JobSpec:
    params = {"model": "minimax/video-01", "input": {"prompt": _prompt("waves", scenario)}}
    return JobSpec(provider="replicate", media_type="video", params=params, **extra)


def stability_image(scenario: str = "", **extra: Any) -> JobSpec:
    params = {
        "endpoint": "stable-image/upscale/creative",
        "params": {"prompt": _prompt("a crisp mountain landscape", scenario)},
        "files": {"image": png_data_url()},
    }
    return JobSpec(provider="stability", media_type="image", params=params, **extra)


def stability_audio(scenario: str = "", **extra: Any) -> JobSpec:
    params = {
        "endpoint": "audio/stable-audio-2/text-to-audio",
        "params": {"prompt": _prompt("rain on a tin roof", scenario), "output_format": "mp3"},
    }
    return JobSpec(provider="stability", media_type="audio", params=params, **extra)


def suno_audio(scenario: str = "", **extra: Any) -> JobSpec:
    params = {
        "prompt": _prompt("an upbeat synth-pop jingle about coffee", scenario),
        "customMode": False,
        "instrumental": False,
        "model": "V4_5",
    }
    return JobSpec(provider="suno", media_type="audio", params=params, **extra)


def insert(db_url: str, specs: Sequence[JobSpec]) -> list[uuid.UUID]:
    """Insert the rows in one statement (fast for thousands); returns ids in spec order."""
    ids = [uuid.uuid4() for _ in specs]
    columns = [
        ids,
        [s.tenant for s in specs],
        [s.run_id for s in specs],
        [uuid.uuid4() for _ in specs],
        [s.provider for s in specs],
        [s.media_type for s in specs],
        [s.poll_interval_ms for s in specs],
        [s.timeout_ms for s in specs],
        [Jsonb(s.params) for s in specs],
    ]
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            """INSERT INTO app.generation_jobs
                      (id, tenant_id, run_id, run_step_id, provider_id, media_type, status,
                       poll_interval_ms, timeout_ms, attempts, input_params)
               SELECT id, tenant, run_id, step_id, provider, media, 'pending', poll, timeout,
                      0, params
                 FROM unnest(%s::uuid[], %s::text[], %s::uuid[], %s::uuid[], %s::text[],
                             %s::text[], %s::int[], %s::int[], %s::jsonb[])
                      AS r(id, tenant, run_id, step_id, provider, media, poll, timeout, params)""",
            columns,
        )
    return ids
