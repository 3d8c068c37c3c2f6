"""Alembic environment for the ``app`` schema.

The URL comes from ``config.attributes["database_url"]`` (set by `poller.migrate`) or the
``DATABASE_URL`` environment variable (plain ``alembic`` from the repo root); libpq URLs are
converted to SQLAlchemy's psycopg 3 dialect. The version table lives in ``app``.

Every run holds a transaction-scoped advisory lock, so replicas that start ``migrate`` at the
same moment apply each revision exactly once, one after the other.
"""

from __future__ import annotations

import os
from logging.config import fileConfig
from typing import Any

from alembic import context
from sqlalchemy import Connection, text

from poller.migrate import (
    APP_SCHEMA,
    MIGRATION_LOCK_KEY,
    VERSION_TABLE_SCHEMA,
    DatabaseUrlError,
    check_connection,
    make_engine,
    to_sqlalchemy_url,
)
from poller.tables import include_name, include_object, metadata

config = context.config

if config.attributes.get("configure_logging", True) and config.config_file_name:
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _configure(**connection_or_url: Any) -> None:
    """The same comparison settings for upgrades, offline SQL and ``alembic check``."""
    context.configure(
        target_metadata=metadata,
        version_table_schema=VERSION_TABLE_SCHEMA,
        include_schemas=True,
        include_name=include_name,
        include_object=include_object,
        compare_type=True,
        compare_server_default=True,
        **connection_or_url,
    )


def _database_url() -> str:
    url = config.attributes.get("database_url") or os.environ.get("DATABASE_URL")
    if not url:
        raise SystemExit(
            "DATABASE_URL is not set (e.g. postgresql://postgres@127.0.0.1:5432/postgres)"
        )
    return str(url)


def _prepare(run_sql: Connection | None) -> None:
    """Serialise concurrent migrators, then make sure the schema exists for the version table."""
    statements = (
        f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})",
        f"CREATE SCHEMA IF NOT EXISTS {APP_SCHEMA}",
    )
    for statement in statements:
        if run_sql is None:
            context.execute(statement)
        else:
            run_sql.execute(text(statement))


def run_migrations_offline() -> None:
    """``alembic upgrade --sql``: emit the SQL script instead of connecting."""
    _configure(
        url=to_sqlalchemy_url(_database_url()),
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        _prepare(None)
        context.run_migrations()


def _run_with(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        _prepare(connection)
        context.run_migrations()


def run_migrations_online() -> None:
    """Migrate over a given connection (``attributes["connection"]``) or a fresh one."""
    given = config.attributes.get("connection")
    if isinstance(given, Connection):
        _run_with(given)
        return
    url = _database_url()
    if "database_url" not in config.attributes:
        # Plain `alembic` CLI: one clear line instead of a driver traceback. (poller.migrate
        # checks before calling us and lets the exception reach main.py instead.)
        try:
            check_connection(url)
        except DatabaseUrlError as exc:
            raise SystemExit(f"alembic: {exc}") from None
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            _run_with(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
