"""The migrated schema matches the seed's data model, table by table (data in seed_schema)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from devenv.pgcluster import temporary_database
from tests.db import seed_schema as seed
from tests.db.rows import MINIMAL, insert_minimal

_FK_ACTIONS = {
    "a": "NO ACTION",
    "r": "RESTRICT",
    "c": "CASCADE",
    "n": "SET NULL",
    "d": "SET DEFAULT",
}


@pytest.fixture(scope="module")
def conn(pg_admin_url: str, pg_template: str) -> Iterator[psycopg.Connection[Any]]:
    """One clone for the module: these tests only read the catalog or add unrelated rows."""
    with (
        temporary_database(pg_admin_url, template=pg_template) as url,
        psycopg.connect(url, autocommit=True) as connection,
    ):
        yield connection


def _rows(conn: psycopg.Connection[Any], query: str) -> list[tuple[Any, ...]]:
    return conn.execute(query).fetchall()


# PostgreSQL prints ``col IN ('a', 'b')`` on a varchar as ``(col)::text = ANY ((ARRAY['a'::
# character varying, ...])::text[])`` (15 through 18). Unparsed expressions stay as they are.
_ANY = re.compile(r"^\(*(\w+)\)::text = ANY \(\(ARRAY\[(.*)\]\)::text\[\]\)+$")
_SEED_IN = re.compile(r"^(\w+) IN \((.*)\)$")


def _value_set(expression: str) -> tuple[str, frozenset[str]] | str:
    """``(column, admitted values)`` of an IN-list expression, else the expression itself."""
    body = expression.removeprefix("CHECK ").strip()
    for pattern in (_ANY, _SEED_IN):
        if match := pattern.match(body):
            return match[1], frozenset(re.findall(r"'([^']*)'", match[2]))
    return body


def test_app_schema_holds_exactly_the_expected_tables(conn: psycopg.Connection[Any]) -> None:
    tables = {
        name for (name,) in _rows(conn, "SELECT tablename FROM pg_tables WHERE schemaname = 'app'")
    }
    assert tables == set(seed.COLUMNS) | {"alembic_version"}
    assert len(seed.SEED_TABLES) == 13


@pytest.mark.parametrize("table", sorted(seed.COLUMNS))
def test_columns_types_and_nullability(conn: psycopg.Connection[Any], table: str) -> None:
    actual = _rows(
        conn,
        f"""SELECT a.attname, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull
              FROM pg_attribute a
             WHERE a.attrelid = 'app.{table}'::regclass AND a.attnum > 0
               AND NOT a.attisdropped
             ORDER BY a.attnum""",
    )
    assert sorted(actual) == sorted(seed.COLUMNS[table])


@pytest.mark.parametrize("table", sorted(seed.PRIMARY_KEYS))
def test_primary_keys(conn: psycopg.Connection[Any], table: str) -> None:
    (columns,) = conn.execute(
        f"""SELECT array_agg(a.attname ORDER BY k.ord)
              FROM pg_constraint c
              CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord)
              JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum
             WHERE c.conrelid = 'app.{table}'::regclass AND c.contype = 'p'"""
    ).fetchone() or (None,)
    assert tuple(columns or ()) == seed.PRIMARY_KEYS[table]


def test_uuid_primary_keys_default_to_gen_random_uuid(conn: psycopg.Connection[Any]) -> None:
    defaults = dict(
        _rows(
            conn,
            """SELECT c.table_name, c.column_default FROM information_schema.columns c
                WHERE c.table_schema = 'app' AND c.column_name = 'id'""",
        )
    )
    assert defaults == {t: "gen_random_uuid()" for t in (*seed.TENANT_AWARE, "chat_messages")}


def test_foreign_keys_are_exactly_the_seeds(conn: psycopg.Connection[Any]) -> None:
    rows = _rows(
        conn,
        """SELECT c.conrelid::regclass::text, a.attname, c.confrelid::regclass::text,
                  c.confdeltype
             FROM pg_constraint c
             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
            WHERE c.contype = 'f' AND c.connamespace = 'app'::regnamespace""",
    )
    actual = {
        (src.removeprefix("app."), col): (dst.removeprefix("app."), _FK_ACTIONS[action])
        for src, col, dst, action in rows
    }
    assert actual == seed.FOREIGN_KEYS


def test_unique_constraints(conn: psycopg.Connection[Any]) -> None:
    rows = _rows(
        conn,
        """SELECT c.conrelid::regclass::text,
                  (SELECT array_agg(a.attname ORDER BY k.ord)
                     FROM unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord)
                     JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum)
             FROM pg_constraint c
            WHERE c.contype = 'u' AND c.connamespace = 'app'::regnamespace""",
    )
    assert {(t.removeprefix("app."), tuple(cols)) for t, cols in rows} == seed.UNIQUE_CONSTRAINTS


def test_secondary_indexes(conn: psycopg.Connection[Any]) -> None:
    rows = _rows(
        conn,
        """SELECT i.indexrelid::regclass::text, i.indrelid::regclass::text,
                  (SELECT array_agg(a.attname ORDER BY k.ord)
                     FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
                     JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum),
                  pg_get_expr(i.indpred, i.indrelid), i.indisunique
             FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
            WHERE c.relnamespace = 'app'::regnamespace AND NOT i.indisprimary
              AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)""",
    )
    actual = {
        name.removeprefix("app."): (table.removeprefix("app."), tuple(cols), pred, unique)
        for name, table, cols, pred, unique in rows
    }
    assert set(actual) == set(seed.INDEXES)
    for name, (table, columns, predicate, unique) in seed.INDEXES.items():
        got_table, got_columns, got_predicate, got_unique = actual[name]
        assert (got_table, got_columns, got_unique) == (table, columns, unique), name
        if predicate is None:
            assert got_predicate is None, name
        elif isinstance(expected := _value_set(predicate), tuple):
            assert _value_set(got_predicate) == expected, name  # exactly those values
        else:
            assert predicate in got_predicate, name


@pytest.mark.parametrize("table", seed.TENANT_AWARE)
def test_tenant_id_is_indexed_on_every_tenant_aware_table(
    conn: psycopg.Connection[Any], table: str
) -> None:
    assert seed.INDEXES[f"ix_{table}_tenant_id"][:2] == (table, ("tenant_id",))


def test_generation_jobs_storage_parameters(conn: psycopg.Connection[Any]) -> None:
    (options,) = conn.execute(
        "SELECT reloptions FROM pg_class WHERE oid = 'app.generation_jobs'::regclass"
    ).fetchone() or (None,)
    assert set(options or ()) == {
        "fillfactor=80",
        "autovacuum_vacuum_scale_factor=0.01",
        "autovacuum_analyze_scale_factor=0.02",
    }


@pytest.mark.parametrize("table", sorted(MINIMAL))
def test_minimal_insert_fills_every_other_column(conn: psycopg.Connection[Any], table: str) -> None:
    row = insert_minimal(conn, table)
    for (t, column), expected in seed.DEFAULTS.items():
        if t == table:
            assert row[column] == expected, column
    for column in ("created_at", "updated_at", "id"):
        if column in row:
            assert row[column] is not None, column


def test_check_constraints_admit_exactly_the_seed_values(conn: psycopg.Connection[Any]) -> None:
    """Accepting every seed value and rejecting "bogus" cannot see a CHECK that also admits a
    status the seed does not have (say ``cancelled`` on jobs): compare the value sets."""
    rows = _rows(
        conn,
        """SELECT c.conrelid::regclass::text, pg_get_constraintdef(c.oid)
             FROM pg_constraint c
            WHERE c.contype = 'c' AND c.connamespace = 'app'::regnamespace""",
    )
    actual: dict[tuple[str, str], frozenset[str]] = {}
    for table, definition in rows:
        parsed = _value_set(definition)
        assert isinstance(parsed, tuple), (table, definition)
        column, values = parsed
        actual[(table.removeprefix("app."), column)] = values
    assert actual == {key: frozenset(values) for key, values in seed.ENUMS.items()}


@pytest.mark.parametrize(
    ("table", "column", "value"),
    [(t, c, v) for (t, c), values in seed.ENUMS.items() for v in values],
)
def test_enum_column_accepts_every_seed_value(
    conn: psycopg.Connection[Any], table: str, column: str, value: str
) -> None:
    assert insert_minimal(conn, table, **{column: value})[column] == value


@pytest.mark.parametrize(("table", "column"), sorted(seed.ENUMS))
def test_enum_column_rejects_other_values(
    conn: psycopg.Connection[Any], table: str, column: str
) -> None:
    with pytest.raises(psycopg.errors.CheckViolation):
        insert_minimal(conn, table, **{column: "bogus"})


def test_langgraph_checkpointer_finds_its_migrations_applied(
    conn: psycopg.Connection[Any],
) -> None:
    versions = [v for (v,) in _rows(conn, "SELECT v FROM app.checkpoint_migrations ORDER BY v")]
    assert versions == list(range(10))
