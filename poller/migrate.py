"""Schema migrations of the ``app`` schema, callable from the daemon and the tests.

``main.py migrate`` and the test harness call `upgrade_to_head`; operators may also run plain
``alembic`` from the repo root (``alembic.ini`` reads ``DATABASE_URL``). Both paths go through
``migrations/env.py``, which takes a transaction-scoped advisory lock so replicas that migrate
at the same time apply each revision once.

Connection problems (a URL that is not PostgreSQL, an unreachable server, rejected
credentials, a missing database) surface as `DatabaseUrlError` subclasses whose ``str()`` is
one human-readable line without the password: ``main.py`` prints it and exits 2.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

import psycopg
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from psycopg.conninfo import conninfo_to_dict
from sqlalchemy import Engine, create_engine, exc, pool

APP_SCHEMA = "app"
VERSION_TABLE_SCHEMA = APP_SCHEMA
MIGRATION_LOCK_KEY = 0x6D65_6469_6170  # pg_advisory_xact_lock key shared by all replicas
CONNECT_TIMEOUT_S = 10


def project_root(package_file: Path = Path(__file__), cwd: Path | None = None) -> Path:
    """Where ``alembic.ini`` and ``migrations/`` live: next to the ``poller`` package in a
    checkout or an editable install; otherwise the working directory. A regular install
    (the container image) puts the package in site-packages and the two next to
    ``main.py`` in the image's working directory, ``/app``."""
    candidates = (package_file.resolve().parents[1], cwd or Path.cwd())
    for root in candidates:
        if (root / "alembic.ini").is_file() and (root / "migrations" / "env.py").is_file():
            return root
    return candidates[0]


REPO_ROOT = project_root()
ALEMBIC_INI = REPO_ROOT / "alembic.ini"
MIGRATIONS_DIR = REPO_ROOT / "migrations"

# Alembic keeps its running environment in module globals: one command per process at a time.
# (Other processes are serialised by the advisory lock in migrations/env.py.)
_ALEMBIC_LOCK = threading.Lock()
_POSTGRES_SCHEMES = ("postgresql", "postgres")
_AUTH_MARKERS = (
    "password authentication failed",
    "no password supplied",
    "peer authentication failed",
    "ident authentication failed",
    "no pg_hba.conf entry",
    "role ",  # role "x" does not exist
)


class DatabaseUrlError(Exception):
    """The database named by a URL cannot be used; ``str()`` is one line for the operator."""

    retryable: ClassVar[bool] = False


class DatabaseUnreachableError(DatabaseUrlError):
    """Nothing answered (refused, unresolvable host, timeout): may work on a later try."""

    retryable: ClassVar[bool] = True


class DatabaseAuthError(DatabaseUrlError):
    """The server answered but rejected the user or password."""


# -------------------------------------------------------------------------- URL helpers


def _split_scheme(url: str) -> tuple[str, str]:
    scheme, sep, rest = url.strip().partition("://")
    if not sep or not scheme:
        raise DatabaseUrlError(
            "database URL is not a URL; expected postgresql://user@host:port/dbname "
            "(socket directories as ?host=/dir)"
        )
    base = scheme.lower().split("+", 1)[0]
    if base not in _POSTGRES_SCHEMES:
        raise DatabaseUrlError(
            f"database URL must be a PostgreSQL URL (postgresql://user@host:port/dbname), "
            f"not {base}://"
        )
    return base, rest


def to_sqlalchemy_url(url: str) -> str:
    """libpq URL (``postgresql://`` / ``postgres://`` / any ``+driver``) → psycopg 3 dialect."""
    _, rest = _split_scheme(url)
    return f"postgresql+psycopg://{rest}"


def to_libpq_url(url: str) -> str:
    """SQLAlchemy URL (``postgresql+psycopg://``…) or libpq URL → plain libpq URL."""
    _, rest = _split_scheme(url)
    return f"postgresql://{rest}"


def describe_target(url: str) -> str:
    """``user@host:port/dbname`` for messages: never the password, never the query string."""
    libpq_url = to_libpq_url(url)
    try:
        params = conninfo_to_dict(libpq_url)
    except psycopg.ProgrammingError as exc:
        # libpq quotes the whole URI (password included) in its message: cut it off. A
        # badly percent-encoded password (a raw "%" in it) is quoted on its own.
        reason = _first_line(exc).replace(libpq_url, "<url>").split(" in URI", 1)[0]
        password = _raw_password(libpq_url)
        if password:
            reason = reason.replace(password, "***")
        raise DatabaseUrlError(f"database URL cannot be parsed: {reason}") from None
    host = str(params.get("host") or "localhost")
    port = str(params.get("port") or "5432")
    user = str(params.get("user") or os.environ.get("PGUSER") or "(default user)")
    dbname = str(params.get("dbname") or "(default database)")
    return f"{user}@{host}:{port}/{dbname}"


def _raw_password(libpq_url: str) -> str:
    """The password as written in the URL (still percent-encoded), for cutting it out of
    libpq's messages when the URL does not parse."""
    _, _, rest = libpq_url.partition("://")
    netloc = rest.split("/", 1)[0].split("?", 1)[0]
    userinfo = netloc.rpartition("@")[0]
    return userinfo.partition(":")[2]


# -------------------------------------------------------------------- error translation


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return " ".join(text.replace("FATAL:", "").split())


def translate_connect_error(url: str, exc: psycopg.OperationalError) -> DatabaseUrlError:
    """Map a failed connect to one clear line: unreachable, auth, or unusable database."""
    detail = _first_line(exc).removeprefix("connection failed: ")
    lowered = detail.lower()
    target = describe_target(url)
    if any(marker in lowered for marker in _AUTH_MARKERS):
        return DatabaseAuthError(f"PostgreSQL rejected the credentials for {target}: {detail}")
    if "does not exist" in lowered:
        return DatabaseUrlError(f"PostgreSQL at {target}: {detail}")
    return DatabaseUnreachableError(f"cannot reach PostgreSQL at {target}: {detail}")


def database_error(url: str | None, exc: BaseException) -> str:
    """One line for a database error that escaped a command, without the password.

    A connect failure is described like `check_connection` does; anything else names the
    target and the server's first line, with the URL and the password cut out (libpq quotes
    unparsable URIs whole)."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    if not url:
        return f"database error: {line}"
    try:
        if isinstance(exc, psycopg.OperationalError):
            return str(translate_connect_error(url, exc))
        target = describe_target(url)
        password = str(conninfo_to_dict(to_libpq_url(url)).get("password") or "")
    except DatabaseUrlError as bad:
        return str(bad)
    line = line.replace(url, "<url>")
    return f"database error at {target}: {line.replace(password, '***') if password else line}"


@contextmanager
def _one_line_errors(url: str) -> Iterator[None]:
    """SQLAlchemy wraps driver errors in a message of several lines quoting the SQL; a
    command that fails after connecting (no privilege on schema ``app``, a migration that
    cannot apply) gets one line naming the target instead of a traceback."""
    try:
        yield
    except exc.DBAPIError as wrapped:
        cause = wrapped.orig if isinstance(wrapped.orig, psycopg.Error) else wrapped
        if isinstance(cause, psycopg.OperationalError):  # the server went away mid-way
            raise translate_connect_error(url, cause) from None
        raise DatabaseUrlError(database_error(url, cause)) from None


def check_connection(url: str) -> None:
    """Connect once (bounded wait) so configuration mistakes fail fast with a clear line."""
    libpq_url = to_libpq_url(url)
    describe_target(libpq_url)  # rejects unparsable URLs before libpq sees them
    try:
        with psycopg.connect(libpq_url, connect_timeout=_connect_timeout(libpq_url)):
            pass
    except psycopg.OperationalError as exc:
        raise translate_connect_error(libpq_url, exc) from None


def _connect_timeout(libpq_url: str) -> int:
    value = conninfo_to_dict(libpq_url).get("connect_timeout")
    return int(value) if value else CONNECT_TIMEOUT_S


def make_engine(url: str) -> Engine:
    """A pool-less sync engine for migrations: nothing lingers to block template cloning."""
    connect_args = {"connect_timeout": _connect_timeout(to_libpq_url(url))}
    return create_engine(to_sqlalchemy_url(url), poolclass=pool.NullPool, connect_args=connect_args)


# ------------------------------------------------------------------------- alembic API


def alembic_config(database_url: str | None = None) -> Config:
    """The repo's ``alembic.ini`` with the URL passed in-process (never via the ini file).

    Passing the URL as an attribute avoids configparser ``%`` interpolation of encoded
    passwords; ``configure_logging=False`` keeps the daemon's logging untouched.
    """
    config = Config(str(ALEMBIC_INI))
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    config.attributes["configure_logging"] = False
    if database_url is not None:
        config.attributes["database_url"] = database_url
    return config


def head_revision() -> str:
    """The newest revision shipped with this code."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError(f"no alembic revisions under {MIGRATIONS_DIR}")
    return head


def current_revision(database_url: str) -> str | None:
    """The revision the database is at; ``None`` when it was never migrated."""
    check_connection(database_url)
    engine = make_engine(database_url)
    try:
        with _one_line_errors(database_url), engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"version_table_schema": VERSION_TABLE_SCHEMA}
            )
            return context.get_current_revision()
    finally:
        engine.dispose()


def is_at_head(database_url: str) -> bool:
    """True when the schema is exactly what this code expects."""
    return current_revision(database_url) == head_revision()


def schema_problem(database_url: str) -> str | None:
    """None when the schema is at this code's head, else one line saying what to do.

    A database migrated by a newer release is at a revision this code does not have:
    `main.py migrate` cannot help there, so the line says so instead of suggesting it."""
    current, head = current_revision(database_url), head_revision()
    if current == head:
        return None
    if current is not None and not _is_known_revision(current):
        return _ahead_message(current, head)
    return "database schema is not at head: run `main.py migrate`"


def _is_known_revision(revision: str) -> bool:
    try:
        return ScriptDirectory.from_config(alembic_config()).get_revision(revision) is not None
    except CommandError:
        return False


def _ahead_message(current: str, head: str) -> str:
    return (
        f"database schema is not at head: it is at revision {current}, which this release "
        f"does not have (its head is {head}); a newer release migrated it: run that one"
    )


def upgrade_to_head(database_url: str) -> None:
    """``alembic upgrade head`` on ``database_url`` (libpq or SQLAlchemy form)."""
    current = current_revision(database_url)  # connects first: clear connection errors
    if current is not None and not _is_known_revision(current):
        raise DatabaseUrlError(_ahead_message(current, head_revision()))
    with _ALEMBIC_LOCK, _one_line_errors(database_url):
        command.upgrade(alembic_config(database_url), "head")


def downgrade(database_url: str, revision: str) -> None:
    """``alembic downgrade <revision>`` (``base`` empties the schema); used by tests and ops."""
    check_connection(database_url)
    with _ALEMBIC_LOCK, _one_line_errors(database_url):
        command.downgrade(alembic_config(database_url), revision)
