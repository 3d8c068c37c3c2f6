"""Start-up and command-line errors of `main.py`, as processes: exit 2 and one clear line.

Each case is one process started with exactly the given environment (nothing inherited
that could configure the daemon). They run a few at a time, since each is mostly
interpreter start-up. This is a representative set: tests/poller/test_settings.py checks
every variable in-process (faster), these check what an operator actually sees.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor

import pytest

from devenv.pgcluster import temporary_database
from tests.e2e.harness import TEST_KEYS, base_environment, run_cli

pytestmark = pytest.mark.slow

Case = tuple[tuple[str, ...], dict[str, str], str]  # argv, environment changes, expected text

CLOSED_PORT_DB = "postgresql://postgres@127.0.0.1:1/nothing"
PASSWORD = "s3cretpw"  # must never reach the terminal
CLOSED_PORT_DB_WITH_PASSWORD = f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/nothing"
MALFORMED_DB_WITH_PASSWORD = f"postgresql://u:{PASSWORD}@[host/db"
SUBMIT = ("submit", "--provider", "replicate", "--media-type", "image", "--params", "{}")
CASES: dict[str, Case] = {
    "no_database_url": (("run",), {"DATABASE_URL": ""}, "DATABASE_URL is not set"),
    "lease_ttl_not_a_number": (("run",), {"POLLER_LEASE_TTL_S": "abc"}, "POLLER_LEASE_TTL_S"),
    "unknown_poller_variable": (("run",), {"POLLER_LEASE_TTL": "3"}, "POLLER_LEASE_TTL:"),
    "storage_url_scheme": (("run",), {"STORAGE_URL": "ftp://host/dir"}, "STORAGE_URL"),
    "provider_base_url": (("run",), {"REPLICATE_BASE_URL": "not-a-url"}, "REPLICATE_BASE_URL"),
    "price_table_not_json": (
        ("run",),
        {"REPLICATE_HARDWARE_PRICES": "{bad"},
        "REPLICATE_HARDWARE_PRICES",
    ),
    "suno_key_without_callback": (("run",), {"SUNO_CALLBACK_URL": ""}, "SUNO_CALLBACK_URL"),
    "database_unreachable": (("run",), {}, "cannot reach PostgreSQL"),
    "database_url_unparseable": (
        ("run",),
        {"DATABASE_URL": "postgresql://[::1"},
        "cannot be parsed",
    ),
    "flush_window_not_below_lease": (
        ("run",),
        {"POLLER_LEASE_TTL_S": "1", "POLLER_WRITEBACK_FLUSH_S": "2"},
        "POLLER_WRITEBACK_FLUSH_S must be below POLLER_LEASE_TTL_S",
    ),
    "check_without_database_url": (("check",), {"DATABASE_URL": ""}, "DATABASE_URL is not set"),
    "jobs_ls_database_unreachable": (("jobs", "ls"), {}, "cannot reach PostgreSQL"),
    "jobs_show_database_unreachable": (
        ("jobs", "show", "00000000-0000-0000-0000-000000000001"),
        {"DATABASE_URL": CLOSED_PORT_DB_WITH_PASSWORD},
        "cannot reach PostgreSQL at postgres@127.0.0.1:1/nothing",
    ),
    "submit_database_unreachable": (
        SUBMIT,
        {"DATABASE_URL": CLOSED_PORT_DB_WITH_PASSWORD},
        "cannot reach PostgreSQL at postgres@127.0.0.1:1/nothing",
    ),
    "gc_database_unreachable": (
        ("storage", "gc"),
        {"DATABASE_URL": CLOSED_PORT_DB_WITH_PASSWORD},
        "cannot reach PostgreSQL at postgres@127.0.0.1:1/nothing",
    ),
    "jobs_ls_database_url_malformed": (
        ("jobs", "ls"),
        {"DATABASE_URL": MALFORMED_DB_WITH_PASSWORD},
        "database URL cannot be parsed",
    ),
    "submit_database_url_malformed": (
        SUBMIT,
        {"DATABASE_URL": MALFORMED_DB_WITH_PASSWORD},
        "database URL cannot be parsed",
    ),
    "gc_database_url_malformed": (
        ("storage", "gc", "--json"),
        {"DATABASE_URL": MALFORMED_DB_WITH_PASSWORD},
        "database URL cannot be parsed",
    ),
    "gc_duration_unparseable": (
        ("storage", "gc", "--older-than", "soon"),
        {},
        "--older-than 'soon'",
    ),
    "submit_params_not_json": (
        ("submit", "--provider", "replicate", "--media-type", "image", "--params", "{bad"),
        {},
        "--params is not valid JSON",
    ),
    "submit_params_not_object": (
        ("submit", "--provider", "suno", "--media-type", "audio", "--params", "[1]"),
        {},
        "--params must be a JSON object",
    ),
}
# Checked only once the database is known good (a migrated database), when the store opens.
STORAGE_CASES: dict[str, Case] = {
    "storage_root_unusable": (
        ("run",),
        {"STORAGE_URL": "file:///dev/null/artifacts"},
        "STORAGE_URL",
    ),
    "s3_credentials_missing": (
        ("run",),
        {
            "STORAGE_URL": "s3://no-such-bucket/p",
            "S3_ENDPOINT_URL": "http://127.0.0.1:1",
            "AWS_REGION": "us-east-1",
        },
        "AWS_ACCESS_KEY_ID",
    ),
}
USAGE_CASES: dict[str, tuple[str, ...]] = {
    "unknown_flag": ("run", "--bogus"),
    "no_command": (),
}


def _env(changes: Mapping[str, str]) -> dict[str, str]:
    env = {
        **base_environment(),
        **TEST_KEYS,
        "DATABASE_URL": CLOSED_PORT_DB,
        "SUNO_CALLBACK_URL": "https://example.invalid/cb",
    }
    env.update(changes)
    return {k: v for k, v in env.items() if v != ""}


@pytest.fixture(scope="module")
def results(
    pg_admin_url: str, pg_template: str
) -> Iterator[dict[str, subprocess.CompletedProcess[str]]]:
    with (
        temporary_database(pg_admin_url, prefix="e") as empty,  # no schema: not at head
        temporary_database(pg_admin_url, template=pg_template) as good,
        socket.socket() as taken,  # a port already in use for POLLER_HTTP_PORT
    ):
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = {"DATABASE_URL": good, "POLLER_HTTP_HOST": "127.0.0.1"}
        busy["POLLER_HTTP_PORT"] = str(taken.getsockname()[1])
        runs = {name: (argv, _env(env)) for name, (argv, env, _) in CASES.items()}
        runs |= {
            name: (argv, _env({"DATABASE_URL": good, **env}))
            for name, (argv, env, _) in STORAGE_CASES.items()
        }
        runs |= {name: (argv, _env({})) for name, argv in USAGE_CASES.items()}
        runs["schema_not_at_head"] = (("run",), _env({"DATABASE_URL": empty}))
        runs["jobs_ls_without_schema"] = (("jobs", "ls"), _env({"DATABASE_URL": empty}))
        runs["http_port_in_use"] = (("run",), _env(busy))
        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = {
                name: pool.submit(run_cli, *argv, env=env) for name, (argv, env) in runs.items()
            }
            done = {name: future.result() for name, future in futures.items()}
    yield done


@pytest.mark.parametrize("case", sorted(CASES | STORAGE_CASES))
def test_bad_configuration_exits_2_with_one_line_naming_it(
    results: dict[str, subprocess.CompletedProcess[str]], case: str
) -> None:
    done = results[case]
    expected = (CASES | STORAGE_CASES)[case][2]
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert expected in lines[0]
    assert not any(key in done.stderr for key in TEST_KEYS.values())
    assert PASSWORD not in done.stderr + done.stdout


@pytest.mark.parametrize("case", sorted(USAGE_CASES))
def test_bad_arguments_exit_2_with_usage(
    results: dict[str, subprocess.CompletedProcess[str]], case: str
) -> None:
    done = results[case]
    assert done.returncode == 2
    assert done.stderr.startswith("usage: main.py")


def test_schema_not_at_head_refuses_to_run(
    results: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    done = results["schema_not_at_head"]
    assert done.returncode == 2
    assert done.stderr.strip() == "error: database schema is not at head: run `main.py migrate`"


def test_a_database_error_after_connecting_is_one_line_not_a_traceback(
    results: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    done = results["jobs_ls_without_schema"]
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: database error at "), done.stderr
    assert 'relation "app.generation_jobs" does not exist' in lines[0]


def test_a_health_port_in_use_stops_run_with_one_line(
    results: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    done = results["http_port_in_use"]
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: POLLER_HTTP_PORT: cannot serve on")
