"""Alembic revisions: the seed's timeline, round trips, every downgrade, the CLI, errors."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from alembic import command
from alembic.script import ScriptDirectory

from devenv.pgcluster import with_database
from poller import migrate
from poller.migrate import (
    DatabaseAuthError,
    DatabaseUnreachableError,
    DatabaseUrlError,
    alembic_config,
    current_revision,
    head_revision,
    is_at_head,
    project_root,
    to_libpq_url,
    to_sqlalchemy_url,
    upgrade_to_head,
)
from tests.db import seed_schema as seed
from tests.db.rows import generation_job, insert, insert_minimal

ALL_REVISIONS = (*seed.SEED_REVISIONS, *seed.POLLER_REVISIONS)


def _snapshot(url: str) -> list[tuple[Any, ...]]:
    """Everything a migration can create in ``app`` (tables, columns, constraints, ...)."""
    with psycopg.connect(url) as conn:
        return conn.execute(
            """SELECT 'column', table_name || '.' || column_name,
                      data_type || coalesce(character_maximum_length::text, '')
                      || is_nullable || coalesce(column_default, '')
                 FROM information_schema.columns WHERE table_schema = 'app'
               UNION ALL
               SELECT 'constraint', conname, pg_get_constraintdef(oid) FROM pg_constraint
                WHERE connamespace = 'app'::regnamespace
               UNION ALL
               SELECT 'index', indexname, indexdef FROM pg_indexes WHERE schemaname = 'app'
               UNION ALL
               SELECT 'trigger', tgname, pg_get_triggerdef(t.oid) FROM pg_trigger t
                 JOIN pg_class c ON c.oid = t.tgrelid
                WHERE c.relnamespace = 'app'::regnamespace AND NOT t.tgisinternal
               UNION ALL
               SELECT 'function', proname, pg_get_functiondef(oid) FROM pg_proc
                WHERE pronamespace = 'app'::regnamespace
               UNION ALL
               SELECT 'relation', relname, relkind::text FROM pg_class
                WHERE relnamespace = 'app'::regnamespace
               ORDER BY 1, 2, 3"""
        ).fetchall()


def _app_objects(url: str) -> set[str]:
    return {name for kind, name, _ in _snapshot(url) if kind in ("relation", "function")}


def test_revisions_mirror_the_seed_timeline_then_the_poller() -> None:
    script = ScriptDirectory.from_config(alembic_config())
    chain = [rev.revision for rev in reversed(list(script.walk_revisions()))]
    assert tuple(chain) == ALL_REVISIONS
    assert list(seed.SEED_REVISIONS) == sorted(seed.SEED_REVISIONS, key=int)
    assert head_revision() == "poller_0006"


def test_upgrade_downgrade_upgrade_round_trip(empty_db_url: str) -> None:
    assert current_revision(empty_db_url) is None
    upgrade_to_head(empty_db_url)
    assert is_at_head(empty_db_url)
    at_head = _snapshot(empty_db_url)

    migrate.downgrade(empty_db_url, "base")
    assert current_revision(empty_db_url) is None
    assert _app_objects(empty_db_url) == {"alembic_version", "alembic_version_pkc"}

    upgrade_to_head(empty_db_url)
    assert _snapshot(empty_db_url) == at_head


def test_every_revision_downgrades_and_upgrades_one_step_at_a_time(empty_db_url: str) -> None:
    config = alembic_config(empty_db_url)
    command.upgrade(config, "head")
    for expected in reversed((None, *ALL_REVISIONS[:-1])):
        command.downgrade(config, "-1")
        assert current_revision(empty_db_url) == expected
    for expected_up in ALL_REVISIONS:
        command.upgrade(config, "+1")
        assert current_revision(empty_db_url) == expected_up


def test_poller_revision_backfills_existing_jobs(empty_db_url: str) -> None:
    config = alembic_config(empty_db_url)
    command.upgrade(config, seed.SEED_REVISIONS[-1])
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        artifact = insert_minimal(conn, "artifacts")
        done = insert(
            conn, "generation_jobs", generation_job(status="completed", artifact_id=artifact["id"])
        )
        waiting = insert(conn, "generation_jobs", generation_job(timeout_ms=90_000))
    command.upgrade(config, "head")
    with psycopg.connect(empty_db_url) as conn:
        rows = dict(
            (r[0], r[1:])
            for r in conn.execute(
                """SELECT id, artifact_ids, deadline_at - created_at
                     FROM app.generation_jobs"""
            ).fetchall()
        )
    assert rows[done["id"]][0] == [str(artifact["id"])]
    assert rows[done["id"]][1] is None
    assert rows[waiting["id"]][0] == []
    assert rows[waiting["id"]][1].total_seconds() == 90


def test_poller_revision_backfill_keeps_updated_at(empty_db_url: str) -> None:
    """The backfill fills the poller's own columns; the seed's BEFORE UPDATE trigger must not
    stamp every existing job with the migration time (that would erase real history)."""
    config = alembic_config(empty_db_url)
    command.upgrade(config, seed.SEED_REVISIONS[-1])
    old = datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC)
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        artifact = insert_minimal(conn, "artifacts")
        done = generation_job(status="completed", artifact_id=artifact["id"], updated_at=old)
        waiting = generation_job(timeout_ms=90_000, updated_at=old)
        ids = [insert(conn, "generation_jobs", row)["id"] for row in (done, waiting)]
    command.upgrade(config, "poller_0001")
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT updated_at, artifact_ids, deadline_at FROM app.generation_jobs "
            "WHERE id = ANY(%s) ORDER BY id = %s DESC",
            (ids, ids[0]),
        ).fetchall()
        assert [r[0] for r in rows] == [old, old]
        assert rows[0][1] == [str(artifact["id"])] and rows[1][2] is not None  # backfilled
        conn.execute("UPDATE app.generation_jobs SET attempts = 1 WHERE id = %s", (ids[0],))
        [(touched,)] = conn.execute(
            "SELECT updated_at FROM app.generation_jobs WHERE id = %s", (ids[0],)
        ).fetchall()
    assert touched > old  # the trigger is enabled again afterwards


def test_downgrade_of_skill_id_widening_truncates(empty_db_url: str) -> None:
    upgrade_to_head(empty_db_url)
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        artifact = insert_minimal(conn, "artifacts", skill_id="s" * 200)
    migrate.downgrade(empty_db_url, "poller_0002")
    with psycopg.connect(empty_db_url) as conn:
        row = conn.execute("SELECT skill_id FROM app.artifacts WHERE id = %s", (artifact["id"],))
        assert row.fetchone() == ("s" * 64,)


def _finish_with_artifacts(url: str, count: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        job = insert(conn, "generation_jobs", generation_job())
        ids = psycopg.types.json.Jsonb([str(uuid.uuid4()) for _ in range(count)])
        conn.execute(
            "UPDATE app.generation_jobs SET status = 'completed', artifact_ids = %s WHERE id = %s",
            (ids, job["id"]),
        )


def test_bounded_finished_notify_downgrades_to_the_unbounded_trigger(empty_db_url: str) -> None:
    """poller_0005 is what lets a job with hundreds of outputs finish; its downgrade restores
    poller_0001's trigger, which refuses the same status change."""
    upgrade_to_head(empty_db_url)
    _finish_with_artifacts(empty_db_url, 250)
    migrate.downgrade(empty_db_url, "poller_0004")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="payload string too long"):
        _finish_with_artifacts(empty_db_url, 250)
    _finish_with_artifacts(empty_db_url, 3)


def _recorded_at_column(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            """SELECT data_type, is_nullable, column_default FROM information_schema.columns
                WHERE table_schema = 'app' AND table_name = 'generation_jobs'
                  AND column_name = 'provider_job_id_recorded_at'"""
        ).fetchall()


def test_provider_job_id_recorded_at_round_trip_keeps_the_jobs(empty_db_url: str) -> None:
    """poller_0006 adds the time the provider's id was recorded (the early-404 window starts
    there); its downgrade drops only that column, and upgrading again backfills nothing: a
    row from before the revision has no recording time (the daemon falls back to
    ``submit_started_at``)."""
    upgrade_to_head(empty_db_url)
    assert _recorded_at_column(empty_db_url) == [("timestamp with time zone", "YES", None)]
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        job = insert(conn, "generation_jobs", generation_job(provider_job_id="p-1"))
        conn.execute(
            "UPDATE app.generation_jobs SET submit_started_at = now() - interval '1 minute', "
            "provider_job_id_recorded_at = now() WHERE id = %s",
            (job["id"],),
        )
    migrate.downgrade(empty_db_url, "poller_0005")
    assert current_revision(empty_db_url) == "poller_0005"
    assert _recorded_at_column(empty_db_url) == []
    upgrade_to_head(empty_db_url)
    assert _recorded_at_column(empty_db_url) == [("timestamp with time zone", "YES", None)]
    with psycopg.connect(empty_db_url) as conn:
        row = conn.execute(
            "SELECT provider_job_id, submit_started_at IS NOT NULL, provider_job_id_recorded_at "
            "FROM app.generation_jobs WHERE id = %s",
            (job["id"],),
        ).fetchone()
    assert row == ("p-1", True, None)


def test_concurrent_migrators_serialise(empty_db_url: str) -> None:
    """Replicas running ``migrate`` at once: each revision is applied exactly once."""
    code = "import sys; from poller.migrate import upgrade_to_head; upgrade_to_head(sys.argv[1])"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, empty_db_url],
            cwd=migrate.REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    results = [(proc.wait(timeout=120), proc.communicate()[1]) for proc in procs]
    assert [code for code, _ in results] == [0, 0, 0], results
    assert is_at_head(empty_db_url)


def test_in_process_callers_are_serialised(empty_db_url: str) -> None:
    """Alembic is not thread-safe; concurrent calls in one process must still succeed."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            upgrade_to_head(empty_db_url)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert is_at_head(empty_db_url)


def test_plain_alembic_cli_from_repo_root(empty_db_url: str) -> None:
    env = {**os.environ, "DATABASE_URL": empty_db_url}
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=migrate.REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert is_at_head(empty_db_url)


def test_plain_alembic_cli_reports_a_bad_url_in_one_line() -> None:
    env = {**os.environ, "DATABASE_URL": f"postgresql://u:hunter2@127.0.0.1:{_closed_port()}/x"}
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "current"],
        cwd=migrate.REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("alembic: cannot reach PostgreSQL at u@127.0.0.1:")
    assert "hunter2" not in result.stderr


def test_unix_socket_url(pg_admin_url: str, empty_db_url: str) -> None:
    with psycopg.connect(pg_admin_url) as conn:
        row = conn.execute(
            "SELECT current_setting('unix_socket_directories'), current_setting('port')"
        ).fetchone()
    assert row is not None
    socket_dir = row[0].split(",")[0].strip()
    dbname = urlsplit(empty_db_url).path.lstrip("/")
    url = f"postgresql://postgres@/{dbname}?host={socket_dir}&port={row[1]}"
    if not Path(socket_dir, f".s.PGSQL.{row[1]}").exists():
        if os.environ.get("TEST_DATABASE_URL"):
            pytest.skip("TEST_DATABASE_URL names a server whose socket is not on this host")
        pytest.fail(f"the test cluster has no unix socket in {socket_dir}")
    upgrade_to_head(url)
    assert is_at_head(url) and is_at_head(empty_db_url)


# ------------------------------------------------------------------------ URL helpers


@pytest.mark.parametrize(
    ("given", "sqlalchemy", "libpq"),
    [
        (
            "postgresql://u:p@h:5432/db",
            "postgresql+psycopg://u:p@h:5432/db",
            "postgresql://u:p@h:5432/db",
        ),
        ("postgres://u@h/db", "postgresql+psycopg://u@h/db", "postgresql://u@h/db"),
        (
            "postgresql+psycopg://u@/db?host=/run/pg",
            "postgresql+psycopg://u@/db?host=/run/pg",
            "postgresql://u@/db?host=/run/pg",
        ),
        ("postgresql+psycopg2://u@h/db", "postgresql+psycopg://u@h/db", "postgresql://u@h/db"),
    ],
)
def test_url_conversions(given: str, sqlalchemy: str, libpq: str) -> None:
    assert to_sqlalchemy_url(given) == sqlalchemy
    assert to_libpq_url(given) == libpq


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(
    ("url", "error", "fragment"),
    [
        ("mysql://root:pw@localhost/db", DatabaseUrlError, "must be a PostgreSQL URL"),
        ("sqlite:///tmp/x.db", DatabaseUrlError, "must be a PostgreSQL URL"),
        ("localhost:5432", DatabaseUrlError, "is not a URL"),
        ("postgresql://u:pw@[::1/db", DatabaseUrlError, "cannot be parsed"),
    ],
)
def test_unusable_urls_fail_with_one_clear_line(
    url: str, error: type[DatabaseUrlError], fragment: str
) -> None:
    with pytest.raises(error) as caught:
        upgrade_to_head(url)
    message = str(caught.value)
    assert fragment in message and "\n" not in message and "pw" not in message
    assert caught.value.retryable is False


def test_unreachable_server_is_retryable_and_hides_the_password() -> None:
    url = f"postgresql://alice:s3cret@127.0.0.1:{_closed_port()}/jobs"
    with pytest.raises(DatabaseUnreachableError) as caught:
        upgrade_to_head(url)
    message = str(caught.value)
    assert message.startswith("cannot reach PostgreSQL at alice@127.0.0.1:")
    assert "/jobs" in message and "refused" in message.lower()
    assert "s3cret" not in message and "\n" not in message
    assert caught.value.retryable is True


def test_unresolvable_host_is_unreachable() -> None:
    with pytest.raises(DatabaseUnreachableError) as caught:
        current_revision("postgresql://u@no-such-host.invalid/db")
    assert "no-such-host.invalid" in str(caught.value)


def test_unknown_role_is_an_auth_error(pg_admin_url: str) -> None:
    parts = urlsplit(to_libpq_url(pg_admin_url))
    host = parts.netloc.rsplit("@", 1)[-1]
    url = urlunsplit(parts._replace(netloc=f"nobody_here:pw@{host}"))
    with pytest.raises(DatabaseAuthError) as caught:
        is_at_head(url)
    message = str(caught.value)
    assert "rejected the credentials" in message and "nobody_here" in message
    assert "\n" not in message and ":pw" not in message


def test_missing_database_is_named(pg_admin_url: str) -> None:
    with pytest.raises(DatabaseUrlError) as caught:
        upgrade_to_head(with_database(pg_admin_url, "no_such_db"))
    assert 'database "no_such_db" does not exist' in str(caught.value)


def test_an_installed_package_finds_the_migrations_in_the_working_directory(
    tmp_path: Path,
) -> None:
    """The image installs `poller` into site-packages and keeps alembic.ini and migrations/
    next to main.py in its working directory (the first built image could not migrate)."""
    package_file = tmp_path / "site-packages" / "poller" / "migrate.py"
    package_file.parent.mkdir(parents=True)
    package_file.touch()
    app = tmp_path / "app"
    (app / "migrations").mkdir(parents=True)
    (app / "alembic.ini").touch()
    (app / "migrations" / "env.py").touch()
    assert project_root(package_file, cwd=app) == app
    assert project_root(package_file, cwd=tmp_path) == tmp_path / "site-packages"
    assert project_root() == Path(__file__).resolve().parents[2]  # this checkout


def _catalog(url: str) -> list[tuple[Any, ...]]:
    """``_snapshot`` plus what it cannot see: storage parameters, trigger enabled state,
    comments, column attributes by position, and the schema's own existence."""
    with psycopg.connect(url) as conn:
        extra = conn.execute(
            """SELECT 'reloptions', relname, coalesce(array_to_string(reloptions, ','), '')
                 FROM pg_class WHERE relnamespace = 'app'::regnamespace
               UNION ALL
               SELECT 'tgenabled', tgname, tgenabled::text FROM pg_trigger t
                 JOIN pg_class c ON c.oid = t.tgrelid
                WHERE c.relnamespace = 'app'::regnamespace AND NOT t.tgisinternal
               UNION ALL
               SELECT 'comment', objoid::regclass::text || '/' || objsubid, description
                 FROM pg_description d JOIN pg_class c ON c.oid = d.objoid
                WHERE c.relnamespace = 'app'::regnamespace
               UNION ALL
               SELECT 'fcomment', p.proname, d.description FROM pg_description d
                 JOIN pg_proc p ON p.oid = d.objoid
                WHERE p.pronamespace = 'app'::regnamespace
               UNION ALL
               SELECT 'attribute', c.relname || '.' || a.attname,
                      format_type(a.atttypid, a.atttypmod) || ' ' || a.attnotnull::text
                      || ' ' || coalesce(pg_get_expr(d.adbin, d.adrelid), '')
                 FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
                 LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                WHERE c.relnamespace = 'app'::regnamespace AND a.attnum > 0
                  AND NOT a.attisdropped AND c.relkind = 'r'
               UNION ALL
               SELECT 'schema', nspname, '' FROM pg_namespace WHERE nspname = 'app'
               ORDER BY 1, 2, 3"""
        ).fetchall()
    return sorted(_snapshot(url) + extra)


@pytest.mark.parametrize("revision", ALL_REVISIONS)
def test_each_downgrade_restores_the_previous_revision_exactly(
    empty_db_url: str, revision: str
) -> None:
    """DESIGN §2: downgrade works for every revision; "works" means the catalog is the one the
    previous revision left, not merely that the command succeeds."""
    config = alembic_config(empty_db_url)
    previous = (
        ALL_REVISIONS[ALL_REVISIONS.index(revision) - 1] if revision != ALL_REVISIONS[0] else "base"
    )
    command.upgrade(config, previous)
    before = _catalog(empty_db_url)
    command.upgrade(config, revision)
    after = _catalog(empty_db_url)
    command.downgrade(config, previous)
    assert current_revision(empty_db_url) == (None if previous == "base" else previous)
    restored = _catalog(empty_db_url)
    assert [r for r in restored if r not in before] == []
    assert [r for r in before if r not in restored] == []
    command.upgrade(config, revision)
    assert _catalog(empty_db_url) == after
