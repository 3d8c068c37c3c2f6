"""The local stack behind `make demo` and `make run`: PostgreSQL, simulator, environment.

`main.py` never starts a database itself (DESIGN.md §10); these dev entry points do, under
``./.data``, and pass its URL on through ``DATABASE_URL``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import psycopg

from devenv.pgcluster import create_database, start_cluster, with_database

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / ".data"
DB_NAME = "media_poller"

SIM_KEYS = {
    "REPLICATE_API_TOKEN": "r8_demo_token",
    "STABILITY_API_KEY": "sk-demo-key",
    "SUNO_API_KEY": "suno-demo-key",
}
# Every name a built-in provider reads its key from: a key under any of them means the
# user wants the real API (README: `REPLICATE_API_KEY` is accepted as well).
KEY_VARIABLES = (*SIM_KEYS, "REPLICATE_API_KEY")


def provider_keys_set(environ: Mapping[str, str]) -> bool:
    """True when ``environ`` holds an API key for any built-in provider."""
    return any(environ.get(name, "").strip() for name in KEY_VARIABLES)


def database_url() -> str:
    """``DATABASE_URL`` when set; else start (or reuse) the cluster under .data/pg."""
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    cluster = start_cluster(DATA / "pg")
    url = with_database(cluster.url, DB_NAME)
    try:
        psycopg.connect(url, connect_timeout=5).close()
    except psycopg.OperationalError:
        create_database(cluster.url, DB_NAME)
    return url


@contextmanager
def simulator(*extra: str) -> Iterator[str]:
    """The loopback provider simulator as a child process; yields its base URL.

    No ``--seed``: the simulator then draws one, so its job ids differ from run to run. With
    a fixed seed a second ``make demo`` against the same ``./.data`` database got the ids of
    the first run again, and every job failed on the unique (provider_id, provider_job_id).
    """
    with tempfile.TemporaryDirectory() as tmp:
        ready = Path(tmp) / "sim.url"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "simulator",
                "--port",
                "0",
                "--ready-file",
                str(ready),
                *extra,
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 20
            while not ready.exists() or not ready.read_text().strip():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the provider simulator did not start")
                time.sleep(0.05)
            yield ready.read_text().strip()
        finally:
            proc.terminate()
            proc.wait(10)


def daemon_env(db_url: str, sim_url: str | None, **overrides: str) -> dict[str, str]:
    """The daemon's environment: inherited, plus the local database and (maybe) simulator."""
    env = dict(os.environ)
    env["DATABASE_URL"] = db_url
    env.setdefault("STORAGE_URL", f"file://{DATA / 'artifacts'}")
    if sim_url is not None:
        for name, key in SIM_KEYS.items():
            env[name] = key
        for prefix in ("REPLICATE", "STABILITY", "SUNO"):
            env[f"{prefix}_BASE_URL"] = sim_url
        env.setdefault("SUNO_CALLBACK_URL", "https://example.invalid/suno-callback")
        env["POLLER_ALLOW_PRIVATE_DOWNLOADS"] = "true"
    env.update(overrides)
    return env


def migrate(env: dict[str, str]) -> None:
    """``main.py migrate``; its output is shown only when it fails."""
    done = subprocess.run(
        [sys.executable, "main.py", "migrate"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(done.returncode)
