"""pgqueuer, measured by its own ``tools/benchmark.py`` on our PostgreSQL.

The tool ships in pgqueuer's sdist, not in the wheel, so the sdist of the *installed*
version is fetched once with pip (``pip download --no-binary :all:``) into
``bench/.work/peer/`` and reused. Its schema is installed with ``pgq install`` into a database
of its own on the same cluster; the tool reads libpq's ``PG*`` variables and writes its result
with ``--output-json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from urllib.parse import urlsplit

import psycopg

from bench.costs import JobCost, cpu_time, per_job
from bench.pg import WORK, BenchDatabase, reset_statements, server_ms

PEER_DIR = WORK / "peer"


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerConfig:
    """One invocation of pgqueuer's tool (driver: ``psy`` psycopg 3, ``apg`` asyncpg)."""

    driver: str
    dequeue: int
    batch: int

    @property
    def label(self) -> str:
        return f"{self.driver}_{self.dequeue}x{self.batch}"


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerRun:
    """The tool's own figures and the same run read back from ``pgqueuer_log``.

    The tool reports 0 jobs/s when its dequeuers do not stop within its grace period after
    the timer (their totals are only read once they return); ``log_rate`` is then the figure:
    jobs logged ``successful`` by this run over the time between its first and last.
    """

    config: PeerConfig
    mode: str  # "drain" | "throughput"
    tool_rate: float
    log_rate: float
    jobs: int
    cost: JobCost | None  # the tool's CPU (enqueue included) and its SQL less the enqueue

    @property
    def rate(self) -> float:
        return self.tool_rate if self.tool_rate > 0 else self.log_rate


def pgqueuer_version() -> str:
    return version("pgqueuer")


def fetch_tool() -> Path:
    """The sdist's ``tools/benchmark.py`` for the installed pgqueuer (downloaded once)."""
    ver = pgqueuer_version()
    root = PEER_DIR / f"pgqueuer-{ver}"
    tool = root / "tools" / "benchmark.py"
    if tool.is_file():
        return tool
    PEER_DIR.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"),
            *("--no-binary", ":all:", f"pgqueuer=={ver}", "-d", str(PEER_DIR)),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    with tarfile.open(PEER_DIR / f"pgqueuer-{ver}.tar.gz") as archive:
        archive.extractall(PEER_DIR, filter="data")
    if not tool.is_file():
        raise RuntimeError(f"pgqueuer {ver}'s sdist has no tools/benchmark.py")
    return tool


def libpq_env(database_url: str) -> dict[str, str]:
    """``PGHOST``/``PGPORT``/``PGUSER``/``PGDATABASE`` for a ``postgresql://user@host:port/db``."""
    parts = urlsplit(database_url)
    env = dict(os.environ)
    env.update(
        PGHOST=parts.hostname or "127.0.0.1",
        PGPORT=str(parts.port or 5432),
        PGUSER=parts.username or "postgres",
        PGDATABASE=parts.path.lstrip("/"),
        PGQUEUER_TABLEFMT="simple",
    )
    return env


def install_schema(database_url: str, log: Path) -> None:
    with log.open("a") as out:
        subprocess.run(
            [sys.executable, "-m", "pgqueuer", "install"],
            env=libpq_env(database_url),
            check=True,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


# pgqueuer's enqueue statement (``build_enqueue_query``): producing jobs, not claiming them.
ENQUEUE = "%WITH input AS MATERIALIZED%"


def run_tool(
    tool: Path,
    db: BenchDatabase,
    config: PeerConfig,
    *,
    mode: str,
    seconds: float,
    jobs: int,
    log: Path,
) -> PeerRun:
    """One run of pgqueuer's tool; the enqueue batch equals the dequeue batch (its tuning)."""
    result = log.parent / f"pgq-{mode}-{config.label}.json"
    args = ["-d", config.driver, "-s", mode, "--dequeue", str(config.dequeue)]
    args += ["--dequeue-batch-size", str(config.batch), "--output-json", str(result)]
    if mode == "drain":
        args += ["--jobs", str(jobs)]
    else:
        args += ["-t", str(seconds), "--enqueue", "1", "--enqueue-batch-size", str(config.batch)]
    mark = _log_mark(db.admin_url)
    reset_statements(db)
    with log.open("a") as out, cpu_time(children=True) as cpu:
        subprocess.run(
            [sys.executable, str(tool), *args],
            cwd=tool.parent.parent,
            env=libpq_env(db.admin_url),
            check=True,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=(jobs / 500 if mode == "drain" else seconds * 3) + 120,
        )
    server = server_ms(db, excluding=ENQUEUE)
    data = json.loads(result.read_text())
    jobs, span = _log_since(db.admin_url, mark)
    return PeerRun(
        config=config,
        mode=mode,
        tool_rate=float(data["rate"]),
        log_rate=jobs / span if span > 0 else 0.0,
        jobs=jobs,
        cost=per_job(client_s=cpu.seconds, server_ms=server, jobs=jobs),
    )


def _log_mark(database_url: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("SELECT coalesce(max(id), 0) FROM pgqueuer_log").fetchone()
    return int(row[0]) if row else 0


def _log_since(database_url: str, mark: int) -> tuple[int, float]:
    """Jobs completed after ``mark`` and the seconds between the first and the last."""
    query = """
        SELECT count(*), coalesce(extract(epoch FROM max(created) - min(created)), 0)::float8
          FROM pgqueuer_log WHERE id > %s AND status = 'successful'
    """
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(query, (mark,)).fetchone()
    return (int(row[0]), float(row[1])) if row else (0, 0.0)
