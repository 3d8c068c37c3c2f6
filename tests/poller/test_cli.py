"""The operator CLI against a real database, run as a process (what operators type)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from poller import migrate
from poller.tables import GenerationJob
from tests.poller.helpers import execute, fetch, insert_jobs, job_row

ROOT = Path(__file__).resolve().parents[2]


def cli(
    db_url: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("POLLER_", "REPLICATE_", "STABILITY_", "SUNO_"))
    }
    full.update({"DATABASE_URL": db_url, **(env or {})})
    return subprocess.run(
        [sys.executable, "main.py", *args], cwd=ROOT, env=full, capture_output=True, text=True
    )


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_submit_inserts_a_pending_job_with_defaults(db_url: str) -> None:
    out = ok(
        cli(
            db_url,
            "submit",
            "--provider",
            "replicate",
            "--media-type",
            "image",
            "--params",
            '{"model": "black-forest-labs/flux-schnell", "input": {}}',
            "--json",
        )
    )
    job_id = uuid.UUID(json.loads(out)["id"])
    row = job_row(db_url, job_id)
    assert row["status"] == "pending"
    assert row["tenant_id"] == "default"
    assert row["run_id"] and row["run_step_id"]
    assert row["input_params"]["model"] == "black-forest-labs/flux-schnell"


def test_submit_rejects_params_that_are_not_a_json_object(db_url: str) -> None:
    done = cli(db_url, "submit", "--provider", "suno", "--media-type", "audio", "--params", "[1]")
    assert done.returncode == 2
    assert "--params must be a JSON object" in done.stderr
    assert fetch(db_url, "SELECT id FROM app.generation_jobs") == []


def test_jobs_ls_filters_and_prints_json(db_url: str) -> None:
    insert_jobs(db_url, 2, tenant="a", provider="replicate")
    insert_jobs(db_url, 1, tenant="b", provider="suno", media_type="audio")
    rows = json.loads(ok(cli(db_url, "jobs", "ls", "--tenant", "a", "--json")))
    assert len(rows) == 2 and {r["provider_id"] for r in rows} == {"replicate"}
    rows = json.loads(ok(cli(db_url, "jobs", "ls", "--provider", "suno", "--json")))
    assert [r["tenant_id"] for r in rows] == ["b"]
    table = ok(cli(db_url, "jobs", "ls", "--limit", "1"))
    assert table.splitlines()[0].startswith("ID")
    assert len(table.splitlines()) == 2


def test_jobs_show_includes_artifacts_in_order(db_url: str) -> None:
    [job_id] = insert_jobs(db_url, 1)
    arts = []
    for n in range(2):
        row = fetch(
            db_url,
            """INSERT INTO app.artifacts (tenant_id, run_id, skill_id, type, uri, content_hash,
                                          size_bytes) VALUES ('t1', gen_random_uuid(), 's',
               'image/png', %s, %s, 1) RETURNING id""",
            (f"/x/{n}", hashlib.sha256(str(n).encode()).hexdigest()),
        )
        arts.append(str(row[0]["id"]))
    execute(
        db_url,
        "UPDATE app.generation_jobs SET artifact_ids = %s::jsonb, status='completed' WHERE id = %s",
        (json.dumps(arts[::-1]), job_id),
    )
    shown = json.loads(ok(cli(db_url, "jobs", "show", str(job_id), "--json")))
    assert shown["id"] == str(job_id)
    assert [a["id"] for a in shown["artifacts"]] == arts[::-1]
    missing = cli(db_url, "jobs", "show", str(uuid.uuid4()))
    assert missing.returncode == 2 and "no job with id" in missing.stderr


def test_jobs_show_prints_every_column_of_the_job(db_url: str) -> None:
    """Operators decide on ``--resubmit`` from ``submit_started_at`` (operations.md): `show`
    must not drop any column the model (and so the migrated table) has."""
    [job_id] = insert_jobs(db_url, 1)
    shown = json.loads(ok(cli(db_url, "jobs", "show", str(job_id), "--json")))
    assert set(GenerationJob.__table__.columns.keys()) <= set(shown)
    assert "submit_started_at" in shown and "provider_job_id_recorded_at" in shown


def _fail(db_url: str, job_id: uuid.UUID, **cols: Any) -> None:
    execute(
        db_url,
        "UPDATE app.generation_jobs SET status='failed', error_message='x', "
        "provider_job_id='p-1', submit_started_at=now(), provider_job_id_recorded_at=now(), "
        "completed_at=now(), attempts=5 "
        "WHERE id = %s",
        (job_id,),
    )


def test_retry_reactivates_the_same_provider_job(db_url: str) -> None:
    [job_id] = insert_jobs(db_url, 1, provider="replicate")
    _fail(db_url, job_id)
    before = job_row(db_url, job_id)
    ok(cli(db_url, "jobs", "retry", str(job_id)))
    row = job_row(db_url, job_id)
    assert row["status"] == "pending"
    assert row["provider_job_id"] == "p-1"
    assert row["provider_job_id_recorded_at"] == before["provider_job_id_recorded_at"]
    assert row["error_message"] is None and row["completed_at"] is None
    assert row["attempts"] == 0
    assert row["lease_version"] == before["lease_version"] + 1
    assert row["deadline_at"] > before["created_at"]


def test_retry_resubmit_forgets_the_provider_job(db_url: str) -> None:
    [job_id] = insert_jobs(db_url, 1, provider="replicate")
    _fail(db_url, job_id)
    ok(cli(db_url, "jobs", "retry", str(job_id), "--resubmit"))
    row = job_row(db_url, job_id)
    assert row["provider_job_id"] is None and row["submit_started_at"] is None
    assert row["provider_job_id_recorded_at"] is None


def refused(done: subprocess.CompletedProcess[str], reason: str) -> None:
    """A well-formed command the job's state does not allow: exit 1, one ``refused:`` line."""
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("refused: ") and reason in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_retry_refuses_active_jobs(db_url: str) -> None:
    [job_id] = insert_jobs(db_url, 1)
    refused(cli(db_url, "jobs", "retry", str(job_id)), "only failed or timed_out jobs retry")


def test_retry_refuses_a_job_never_accepted_unless_resubmitted(db_url: str) -> None:
    [job_id] = insert_jobs(db_url, 1, provider="replicate")
    _fail(db_url, job_id)
    execute(
        db_url, "UPDATE app.generation_jobs SET provider_job_id = NULL WHERE id = %s", (job_id,)
    )
    refused(cli(db_url, "jobs", "retry", str(job_id)), "use `jobs retry --resubmit`")
    assert job_row(db_url, job_id)["status"] == "failed"


def test_an_unknown_job_id_is_a_usage_error(db_url: str) -> None:
    for action in ("show", "retry", "cancel"):
        done = cli(db_url, "jobs", action, str(uuid.uuid4()))
        assert done.returncode == 2, (action, done.stderr)
        assert done.stderr.startswith("error: no job with id "), (action, done.stderr)


def test_cancel_marks_failed_and_fences_out_a_lease_holder(db_url: str) -> None:
    [job_id] = insert_jobs(db_url, 1, provider="replicate")
    execute(
        db_url,
        "UPDATE app.generation_jobs SET lease_owner='r1', lease_version=3 WHERE id = %s",
        (job_id,),
    )
    ok(cli(db_url, "jobs", "cancel", str(job_id)))  # provider unconfigured: cancel skipped
    row = job_row(db_url, job_id)
    assert row["status"] == "failed"
    assert row["error_message"] == "canceled by operator"
    assert row["lease_version"] == 4 and row["lease_owner"] is None
    assert row["completed_at"] is not None
    assert row["started_at"] is None  # the provider never ran it: no start time is invented
    refused(cli(db_url, "jobs", "cancel", str(job_id)), "already failed")


def test_check_is_healthy_only_at_head(db_url: str, empty_db_url: str) -> None:
    healthy = cli(db_url, "check")
    assert ok(healthy).strip() == "ok"
    assert healthy.stderr == ""  # the image's HEALTHCHECK output: nothing but the verdict
    done = cli(empty_db_url, "check")
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()  # README: each failure is one line on stderr
    assert line.startswith("unhealthy: ") and "not at head" in line


def test_migrate_creates_every_table_and_seed_insert_works(empty_db_url: str) -> None:
    ok(cli(empty_db_url, "migrate"))
    tables = {
        r["table_name"]
        for r in fetch(
            empty_db_url,
            "SELECT table_name FROM information_schema.tables WHERE table_schema='app'",
        )
    }
    assert {
        "chat_sessions",
        "chat_messages",
        "runs",
        "run_steps",
        "step_cache",
        "artifacts",
        "generation_jobs",
        "campaigns",
        "ai_generations",
        "checkpoint_migrations",
        "checkpoints",
        "checkpoint_blobs",
        "checkpoint_writes",
    } <= tables
    insert_jobs(empty_db_url, 1)


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("mysql://u@127.0.0.1/db", "PostgreSQL"),
        ("postgresql://postgres@127.0.0.1:1/db", "127.0.0.1:1"),
    ],
)
def test_migrate_bad_urls_give_one_clear_line(url: str, fragment: str) -> None:
    done = cli(url, "migrate")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], done.stderr


def test_storage_gc_is_a_dry_run_unless_applied(db_url: str, tmp_path: Path) -> None:
    root = tmp_path / "store"
    keep, drop = b"kept-bytes", b"orphan-bytes"
    for data in (keep, drop):
        digest = hashlib.sha256(data).hexdigest()
        path = root / "sha256" / digest[:2] / digest
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        three_hours_ago = time.time() - 3 * 3600
        os.utime(path, (three_hours_ago, three_hours_ago))
    kept_hash = hashlib.sha256(keep).hexdigest()
    execute(
        db_url,
        """INSERT INTO app.artifacts (tenant_id, run_id, skill_id, type, uri, content_hash,
                                      size_bytes)
           VALUES ('t', gen_random_uuid(), 's', 'x/y', 'u', %s, 1)""",
        (kept_hash,),
    )
    env = {"STORAGE_URL": f"file://{root}"}
    dry = json.loads(ok(cli(db_url, "storage", "gc", "--older-than", "2h", "--json", env=env)))
    assert dry["unreferenced"] == 1 and dry["deleted"] == 0 and dry["referenced"] == 1
    assert len(list(root.glob("sha256/*/*"))) == 2
    done = json.loads(
        ok(cli(db_url, "storage", "gc", "--older-than", "2h", "--apply", "--json", env=env))
    )
    assert done["deleted"] == 1
    assert [p.name for p in root.glob("sha256/*/*")] == [kept_hash]
    recent = json.loads(ok(cli(db_url, "storage", "gc", "--json", env=env)))
    assert recent["kept_recent"] == 1


def test_storage_gc_refuses_a_grace_period_shorter_than_the_dedup_refresh(
    db_url: str, tmp_path: Path
) -> None:
    """A re-used S3 blob younger than an hour is not refreshed: --older-than 30m could reap it."""
    env = {"STORAGE_URL": f"file://{tmp_path / 'store'}"}
    done = cli(db_url, "storage", "gc", "--older-than", "30m", "--apply", env=env)
    assert done.returncode == 2
    assert done.stderr.startswith("error: --older-than must be at least 2h (got 30m)"), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_storage_gc_of_a_local_store_that_does_not_exist_is_refused(
    db_url: str, tmp_path: Path
) -> None:
    """Run from the wrong directory, the default relative STORAGE_URL found no store: GC
    created one and reported ``scanned 0``, as if all were well."""
    root = tmp_path / "nowhere" / "artifacts"
    done = cli(db_url, "storage", "gc", env={"STORAGE_URL": f"file://{root}"})
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"error: STORAGE_URL 'file://{root}': {root} does not exist"), line
    assert not root.exists()


@pytest.mark.parametrize("option", ["--timeout-ms", "--poll-interval-ms"])
@pytest.mark.parametrize("value", ["-5", "0", "soon"])
def test_submit_refuses_timings_that_are_not_positive(db_url: str, option: str, value: str) -> None:
    params = '{"model": "chirp-v4", "prompt": "x"}'
    done = cli(
        db_url,
        "submit",
        "--provider",
        "suno",
        "--media-type",
        "audio",
        "--params",
        params,
        option,
        value,
    )
    assert done.returncode == 2
    assert f"argument {option}:" in done.stderr
    assert fetch(db_url, "SELECT id FROM app.generation_jobs") == []


REQUIRE_TENANT = (
    """
CREATE FUNCTION app.test_require_tenant() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('app.current_tenant_id', true) IS DISTINCT FROM NEW.tenant_id THEN
        RAISE EXCEPTION 'tenant % written without app.current_tenant_id = %',
            NEW.tenant_id, current_setting('app.current_tenant_id', true);
    END IF;
    RETURN NEW;
END $$""",
    """CREATE TRIGGER test_require_tenant BEFORE INSERT OR UPDATE ON app.generation_jobs
    FOR EACH ROW EXECUTE FUNCTION app.test_require_tenant()""",
)


def test_operator_writes_set_the_tenant_in_their_transaction(db_url: str) -> None:
    """DESIGN §2: every write of a tenant's rows runs in a transaction that first sets
    ``app.current_tenant_id``. The trigger sees the setting only if it was set with
    ``set_config(…, true)`` in the writing statement's own transaction."""
    [failed] = insert_jobs(db_url, 1, tenant="t-retry", provider="replicate")
    _fail(db_url, failed)
    [active] = insert_jobs(db_url, 1, tenant="t-cancel", provider="replicate")
    with psycopg.connect(db_url, autocommit=True) as conn:
        for statement in REQUIRE_TENANT:
            conn.execute(statement)
    params = '{"model": "black-forest-labs/flux-schnell", "input": {}}'
    submit = ("submit", "--provider", "replicate", "--media-type", "image", "--params", params)
    out = ok(cli(db_url, *submit, "--tenant", "t-submit"))
    assert job_row(db_url, uuid.UUID(out.strip()))["tenant_id"] == "t-submit"
    ok(cli(db_url, "jobs", "retry", str(failed)))
    ok(cli(db_url, "jobs", "cancel", str(active)))
    assert job_row(db_url, failed)["status"] == "pending"
    assert job_row(db_url, active)["status"] == "failed"


def test_storage_gc_without_database_url_does_not_create_the_store(tmp_path: Path) -> None:
    root = tmp_path / "store"
    done = cli("", "storage", "gc", env={"STORAGE_URL": f"file://{root}"})
    assert done.returncode == 2 and "DATABASE_URL is not set" in done.stderr
    assert not root.exists()


@pytest.mark.parametrize(
    ("url", "error", "expected"),
    [
        (
            "postgresql://u:s3cretpw@db.example:5433/media",
            psycopg.errors.UndefinedTable("relation x (s3cretpw) postgresql://u:s3cretpw@h/d"),
            "database error at u@db.example:5433/media: relation x (***)",
        ),
        (
            "postgresql://u:s3cretpw@db.example:5433/media",
            psycopg.OperationalError("connection failed: Connection refused"),
            "cannot reach PostgreSQL at u@db.example:5433/media: Connection refused",
        ),
        (
            "postgresql://u:s3cretpw@[db/media",
            psycopg.ProgrammingError('invalid URI "postgresql://u:s3cretpw@[db/media"'),
            "database URL cannot be parsed",
        ),
        (  # a raw "%" in the password: libpq quotes the undecodable token, i.e. the password
            "postgresql://u:s3cretpw%zz@db.example:5433/media",
            psycopg.errors.UndefinedTable("relation x"),
            'database URL cannot be parsed: invalid percent-encoded token: "***"',
        ),
        (
            "postgresql://u:s3cretpw%00@db.example:5433/media",
            psycopg.errors.UndefinedTable("relation x"),
            "database URL cannot be parsed: forbidden value %00 in percent-encoded value: ",
        ),
    ],
)
def test_database_errors_are_one_line_without_the_password(
    url: str, error: psycopg.Error, expected: str
) -> None:
    message = migrate.database_error(url, error)
    assert message.startswith(expected) and "\n" not in message
    assert "s3cretpw" not in message


@pytest.fixture
def unprivileged_url(db_url: str, pg_admin_url: str) -> Iterator[str]:
    """``db_url`` as a role that may log in but has no privilege on schema ``app``: the
    deployment mistake operations.md warns about (the daemon's role needs DML there)."""
    role = f"no_grants_{uuid.uuid4().hex[:8]}"
    try:
        execute(pg_admin_url, f"CREATE ROLE {role} LOGIN PASSWORD 'role-pw-123'")
    except psycopg.errors.InsufficientPrivilege:
        pytest.skip("the test database role cannot create roles")
    parts = urlsplit(db_url)
    host = parts.netloc.rsplit("@", 1)[-1]
    try:
        yield urlunsplit(parts._replace(netloc=f"{role}:role-pw-123@{host}"))
    finally:
        execute(pg_admin_url, f"DROP ROLE {role}")


def test_a_role_without_privileges_gets_one_line_not_a_traceback(unprivileged_url: str) -> None:
    """The revision read and the migration run through SQLAlchemy, whose errors are several
    lines quoting the SQL: README promises one line (exit 2; `check`: unhealthy, exit 1)."""
    for command, code, prefix in (
        ("check", 1, "unhealthy: "),
        ("run", 2, "error: "),
        ("migrate", 2, "error: "),
    ):
        done = cli(unprivileged_url, command)
        assert done.returncode == code, (command, done.stderr)
        [line] = done.stderr.strip().splitlines()
        assert line.startswith(f"{prefix}database error at no_grants_"), (command, line)
        assert "permission denied for schema app" in line
        assert "role-pw-123" not in done.stderr + done.stdout


def test_a_schema_migrated_by_a_newer_release_is_named_not_migrated(db_url: str) -> None:
    """Rolled back code meets a database at a revision it does not have: `run` must not send
    the operator to `main.py migrate`, which cannot go there (it failed with a traceback)."""
    execute(db_url, "UPDATE app.alembic_version SET version_num = 'poller_9999'")
    for command, code, prefix in (
        ("check", 1, "unhealthy: "),
        ("run", 2, "error: "),
        ("migrate", 2, "error: "),
    ):
        done = cli(db_url, command)
        assert done.returncode == code, (command, done.stderr)
        [line] = done.stderr.strip().splitlines()
        assert line.startswith(f"{prefix}database schema is not at head: "), (command, line)
        assert "poller_9999" in line and "newer release" in line and "migrate`" not in line
    assert fetch(db_url, "SELECT version_num FROM app.alembic_version") == [
        {"version_num": "poller_9999"}
    ]


def test_run_warns_about_a_misspelt_provider_key_by_name(db_url: str, tmp_path: Path) -> None:
    """The daemon itself, not only the settings: a replica given REPLICATE_TOKEN says so at
    start-up (and drains an empty queue at once)."""
    env = {
        "REPLICATE_TOKEN": "r8_secret_value",
        "REPLICATE_API_TOKEN": "r8_real_key",
        "STORAGE_URL": f"file://{tmp_path / 'store'}",
        "POLLER_LOG_FORMAT": "json",
    }
    out = ok(cli(db_url, "run", "--drain", env=env))
    [warning] = [
        json.loads(line) for line in out.splitlines() if "settings.unknown_variable" in line
    ]
    assert (warning["name"], warning["did_you_mean"]) == ("REPLICATE_TOKEN", "REPLICATE_API_TOKEN")
    assert "r8_secret_value" not in out
