"""The benchmark's own PostgreSQL: a throwaway cluster with ``pg_stat_statements``.

One cluster serves every benchmark (and the peers), so all figures share a server and its
configuration. The daemon connects as its own role, ``bench_daemon``: the statements that
role runs, counted by ``pg_stat_statements``, are the daemon's database round trips,
whatever process (in-process daemon, ``main.py run``) ran them and whatever the harness did
on the side as the superuser.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from devenv.pgcluster import (
    create_database,
    drop_database,
    start_cluster,
    stop_cluster,
    with_database,
)
from poller.migrate import upgrade_to_head

WORK = Path(__file__).resolve().parent / ".work"
DAEMON_ROLE = "bench_daemon"
_PRELOAD = "pg_stat_statements"
# The body of app.paused_providers(): pg_stat_statements lists it as a statement of its own
# each time the claim evaluates the function, but it runs inside the claim, not as a round
# trip, so the counts below leave it out.
NESTED = "SELECT coalesce(array_agg(provider_id::text), $1) FROM app.provider_budgets%"


@dataclass(frozen=True, slots=True, kw_only=True)
class BenchDatabase:
    """One migrated database: the superuser's URL and the daemon role's URL to it."""

    name: str
    admin_url: str
    daemon_url: str


def as_role(url: str, role: str) -> str:
    """The same libpq URL with another user (trust auth: no password)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{role}@{host}"))


def server_version(admin_url: str) -> str:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "unknown"


@contextmanager
def bench_cluster() -> Iterator[str]:
    """Start a fresh cluster under ``bench/.work/pg``; yields its superuser URL.

    ``pg_stat_statements`` needs ``shared_preload_libraries``, which only a restart applies,
    so the first start sets it with ``ALTER SYSTEM`` and restarts. The data directory is
    removed afterwards (also a leftover of an interrupted run, before starting).
    """
    data = WORK / "pg"
    stop_cluster(data)
    shutil.rmtree(data, ignore_errors=True)
    url = start_cluster(data).url
    try:
        if _enable_preload(url):
            stop_cluster(data)
            url = start_cluster(data).url
        _create_daemon_role(url)
        yield url
    finally:
        stop_cluster(data)
        shutil.rmtree(data, ignore_errors=True)


def _enable_preload(url: str) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SHOW shared_preload_libraries").fetchone()
        if row and _PRELOAD in str(row[0]):
            return False
        conn.execute(sql.SQL("ALTER SYSTEM SET shared_preload_libraries = {}").format(_PRELOAD))
    return True


def _create_daemon_role(url: str) -> None:
    """A login role for the daemon; superuser so it needs no grants on the ``app`` schema."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN SUPERUSER").format(sql.Identifier(DAEMON_ROLE)))


def fresh_database(cluster_url: str, name: str, *, migrate: bool = True) -> BenchDatabase:
    """Create ``name`` (migrated to head unless told otherwise) with the statistics view."""
    create_database(cluster_url, name)
    admin = with_database(cluster_url, name)
    if migrate:
        upgrade_to_head(admin)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    return BenchDatabase(name=name, admin_url=admin, daemon_url=as_role(admin, DAEMON_ROLE))


@contextmanager
def scratch_database(
    cluster_url: str, name: str, *, migrate: bool = True
) -> Iterator[BenchDatabase]:
    """`fresh_database`, dropped again when the benchmark is done with it: its tens of
    thousands of dead row versions would otherwise keep autovacuum busy under the next
    benchmark on the same cluster (a 6,000-job in-flight pass after the 10,000-job one got
    835 polls/s with the old databases in place, 1,174 with them dropped)."""
    db = fresh_database(cluster_url, name, migrate=migrate)
    try:
        yield db
    finally:
        drop_database(cluster_url, db.name)


# The daemon role's statements in one database, less the body of app.paused_providers().
_DAEMON_STATEMENTS = """
          FROM pg_stat_statements s
          JOIN pg_roles r ON r.oid = s.userid
          JOIN pg_database d ON d.oid = s.dbid
         WHERE r.rolname = %(role)s AND d.datname = %(db)s
           AND btrim(regexp_replace(s.query, '\\s+', ' ', 'g')) NOT LIKE %(nested)s
"""


def _daemon_params(db: BenchDatabase) -> dict[str, str]:
    return {"role": DAEMON_ROLE, "db": db.name, "nested": NESTED}


def reset_statements(db: BenchDatabase) -> None:
    with psycopg.connect(db.admin_url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_statements_reset()")


@dataclass(frozen=True, slots=True, kw_only=True)
class DaemonTotals:
    """The daemon role's statements in one database since the last reset."""

    statements: int  # database round trips
    server_ms: float  # their execution time in the server


def daemon_totals(db: BenchDatabase) -> DaemonTotals:
    query = (
        "SELECT coalesce(sum(s.calls), 0)::bigint,"
        f" coalesce(sum(s.total_exec_time), 0)::float8 {_DAEMON_STATEMENTS}"
    )
    with psycopg.connect(db.admin_url, autocommit=True) as conn:
        row = conn.execute(query, _daemon_params(db)).fetchone()
    if row is None:
        return DaemonTotals(statements=0, server_ms=0.0)
    return DaemonTotals(statements=int(row[0]), server_ms=float(row[1]))


def server_ms(db: BenchDatabase, *, excluding: str) -> float:
    """Server time (ms) of every statement in ``db`` since the last reset, less those whose
    text is LIKE ``excluding`` (a peer's enqueue, which is not part of claiming a job)."""
    query = """
        SELECT coalesce(sum(s.total_exec_time), 0)::float8
          FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
         WHERE d.datname = %(db)s AND s.query NOT LIKE %(excluding)s
           AND s.query NOT LIKE 'SELECT pg_stat_statements_reset%%'
    """
    with psycopg.connect(db.admin_url, autocommit=True) as conn:
        row = conn.execute(query, {"db": db.name, "excluding": excluding}).fetchone()
    return float(row[0]) if row else 0.0


@dataclass(frozen=True, slots=True)
class StatementCost:
    """One of the daemon's statements: how often it ran and the server time it took."""

    calls: int
    total_ms: float
    text: str

    def line(self) -> str:
        mean = self.total_ms / self.calls if self.calls else 0.0
        return f"{self.calls:>7} x {mean:7.3f} ms = {self.total_ms / 1000:7.2f} s  {self.text}"


def statement_breakdown(db: BenchDatabase, limit: int = 8) -> list[StatementCost]:
    """The daemon's statements by server time (calls, mean, total, first words): what the
    round trips are and which of them keep PostgreSQL busy."""
    query = f"""
        SELECT s.calls, s.total_exec_time, regexp_replace(left(s.query, 200), '\\s+', ' ', 'g')
        {_DAEMON_STATEMENTS}
         ORDER BY s.total_exec_time DESC LIMIT %(limit)s
    """
    with psycopg.connect(db.admin_url, autocommit=True) as conn:
        rows = conn.execute(query, {**_daemon_params(db), "limit": limit}).fetchall()
    return [StatementCost(int(calls), float(ms), str(text)[:80]) for calls, ms, text in rows]
