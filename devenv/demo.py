"""`make demo`: the main job end to end on embedded defaults, then a results table.

Local PostgreSQL under ./.data/pg, migrations, the provider simulator on loopback, sample
image/video/audio jobs for all three providers, the daemon (`main.py run --drain`) with a
progress line until they finish, and a table of jobs → artifacts. Exits 0 only when every
sample job completed.
"""

from __future__ import annotations

import base64
import io
import subprocess
import sys
import time
import uuid
from typing import Any

import psycopg
from PIL import Image
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from devenv.stack import ROOT, daemon_env, database_url, migrate, simulator

SDXL = "39ed52f2a78e934b3ba6e2a89f5b1c712de7dfea535525255b1aa35c5565e08b"
MUSICGEN = "671ac645ce5e552cc63a54a2bbff63fcf798043055d2dac5fc9e36a837eedcfb"


def _png_data_url() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (40, 120, 200)).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def sample_jobs() -> list[tuple[str, str, dict[str, Any]]]:
    image = _png_data_url()
    return [
        (
            "replicate",
            "image",
            {
                "version": f"stability-ai/sdxl:{SDXL}",
                "input": {"prompt": "a lighthouse at dawn, watercolor", "num_outputs": 2},
            },
        ),
        (
            "replicate",
            "video",
            {
                "model": "minimax/video-01",
                "input": {"prompt": "waves rolling onto a beach"},
            },
        ),
        (
            "replicate",
            "audio",
            {
                "version": f"meta/musicgen:{MUSICGEN}",
                "input": {"prompt": "calm lo-fi piano", "duration": 5},
            },
        ),
        (
            "stability",
            "image",
            {
                "endpoint": "stable-image/upscale/creative",
                "params": {"prompt": "a crisp mountain landscape", "output_format": "png"},
                "files": {"image": image},
            },
        ),
        (
            "stability",
            "video",
            {
                "endpoint": "image-to-video",
                "params": {"seed": 0},
                "files": {"image": image},
            },
        ),
        (
            "stability",
            "audio",
            {
                "endpoint": "audio/stable-audio-2/text-to-audio",
                "params": {"prompt": "rain on a tin roof", "output_format": "mp3", "duration": 5},
            },
        ),
        (
            "suno",
            "audio",
            {
                "prompt": "an upbeat synth-pop jingle about coffee",
                "customMode": False,
                "instrumental": False,
                "model": "V4_5",
            },
        ),
    ]


def enqueue(url: str, run_id: uuid.UUID) -> list[uuid.UUID]:
    ids = []
    with psycopg.connect(url, autocommit=True) as conn:
        for provider, media, params in sample_jobs():
            row = conn.execute(
                """INSERT INTO app.generation_jobs (tenant_id, run_id, run_step_id, provider_id,
                       media_type, status, poll_interval_ms, timeout_ms, attempts, input_params)
                   VALUES ('demo', %s, %s, %s, %s, 'pending', 500, 120000, 0, %s) RETURNING id""",
                (run_id, uuid.uuid4(), provider, media, Jsonb(params)),
            ).fetchone()
            assert row is not None
            ids.append(row[0])
    return ids


def _statuses(url: str, ids: list[uuid.UUID]) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT status, count(*) FROM app.generation_jobs WHERE id = ANY(%s) GROUP BY 1",
            (ids,),
        ).fetchall()
    return {status: n for status, n in rows}


def run_daemon(env: dict[str, str], url: str, ids: list[uuid.UUID]) -> int:
    log_path = ROOT / ".data" / "demo-daemon.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "main.py", "run", "--drain"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        start = time.monotonic()
        while proc.poll() is None:
            counts = _statuses(url, ids)
            line = "  ".join(f"{k}={v}" for k, v in sorted(counts.items()))
            print(f"\r  [{time.monotonic() - start:5.1f}s] {line}   ", end="", flush=True)
            if time.monotonic() - start > 180:
                proc.terminate()
            time.sleep(0.3)
        print()
    print(f"  daemon exited {proc.returncode} (log: {log_path.relative_to(ROOT)})")
    return proc.returncode


def report(url: str, ids: list[uuid.UUID]) -> bool:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        jobs = conn.execute(
            """SELECT id, provider_id, media_type, status, artifact_ids, error_message, cost_usd,
                      extract(epoch FROM completed_at - created_at) AS secs
                 FROM app.generation_jobs WHERE id = ANY(%s) ORDER BY provider_id, media_type""",
            (ids,),
        ).fetchall()
        arts = {
            str(a["id"]): a
            for a in conn.execute(
                "SELECT id, type, size_bytes, content_hash, uri, metadata FROM app.artifacts"
            ).fetchall()
        }
    rows = []
    for job in jobs:
        for n, art_id in enumerate(job["artifact_ids"] or [None]):
            art = arts.get(art_id) if art_id else None
            rows.append(_row(job, art, first=n == 0))
    _print_table(rows)
    failed = [j for j in jobs if j["status"] != "completed"]
    for job in failed:
        print(
            f"  ! {job['provider_id']}/{job['media_type']}: {job['status']}: {job['error_message']}"
        )
    return not failed and len(jobs) == len(ids)


def _row(job: dict[str, Any], art: dict[str, Any] | None, *, first: bool) -> list[str]:
    meta = art["metadata"] if art else {}
    facts = [
        f"{k}={meta[k]}"
        for k in ("width", "height", "duration_s", "codec", "sample_rate")
        if k in meta
    ]
    return [
        job["provider_id"] if first else "",
        job["media_type"] if first else "",
        job["status"] if first else "",
        f"{job['secs']:.1f}s" if first and job["secs"] is not None else "",
        art["type"] if art else "-",
        f"{art['size_bytes']:,}" if art else "-",
        art["content_hash"][:12] if art else "-",
        str(art["uri"]).replace(str(ROOT) + "/", "") if art else "-",
        " ".join(str(f) for f in facts)[:60],
    ]


def _print_table(rows: list[list[str]]) -> None:
    head = ["PROVIDER", "MEDIA", "STATUS", "TIME", "TYPE", "BYTES", "SHA256", "PATH", "METADATA"]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    for line in [head, *rows]:
        print("  " + "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())


def main() -> int:
    print("media-poller demo")
    url = database_url()
    print(f"  database: {url}")
    with simulator() as sim_url:
        print(f"  provider simulator: {sim_url}")
        env = daemon_env(url, sim_url, POLLER_LOG_FORMAT="json")
        migrate(env)
        ids = enqueue(url, uuid.uuid4())
        print(f"  enqueued {len(ids)} jobs (Replicate, Stability AI, Suno × image/video/audio)")
        code = run_daemon(env, url, ids)
    ok = report(url, ids) and code == 0
    print("  all sample jobs completed" if ok else "  DEMO FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
