"""``seed_schema`` (what the schema tests compare the database with) matches the seed itself.

``seed_schema`` is a hand transcription; without this check a wrong transcription, or one
copied from a migration, would make the schema tests confirm the migration's mistakes. The
seed's ``data-model.md`` is kept verbatim beside this file (CI does not read the shared docs)
and parsed here: tables, columns, types, nullability, enum values, FKs, unique constraints
and the migration timeline. Departures are those DESIGN.md §2/§10 settle, listed below.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.db import seed_schema as seed

DOCUMENT = (Path(__file__).parent / "seed" / "data-model.md").read_text(encoding="utf-8")

# DESIGN §10: columns a lifecycle fills later are nullable, as are the two poll settings.
DESIGN_NULLABLE = {
    "generation_jobs": {
        "provider_job_id",
        "result_uri",
        "artifact_id",
        "error_message",
        "cost_usd",
        "started_at",
        "completed_at",
        "poll_interval_ms",
        "timeout_ms",
    },
    "runs": {"started_at", "completed_at", "duration_ms", "error", "context"},
    "run_steps": {"input_hash", "started_at", "ended_at", "duration_ms"},
}
# DESIGN §10: the poller's revision widens artifacts.skill_id to 255.
DESIGN_TYPES = {("artifacts", "skill_id"): seed.vc(255)}
# DESIGN §10: runs.base_run_id is a self-FK, ON DELETE SET NULL (the seed names no FK mark).
DESIGN_FOREIGN_KEYS = {("runs", "base_run_id"): ("runs", "SET NULL")}

_TYPES = {
    "UUID": seed.UUID,
    "TEXT": seed.TEXT,
    "JSONB": seed.JSONB,
    "INTEGER": seed.INT,
    "BIGINT": seed.BIGINT,
    "BOOLEAN": seed.BOOL,
    "TIMESTAMP": seed.TS,
    "TIMESTAMP WITH TZ": seed.TSTZ,
}


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _sections() -> dict[str, str]:
    """Entity table name -> its section of the document."""
    sections = {}
    for part in re.split(r"^### ", DOCUMENT, flags=re.M)[1:]:
        if match := re.search(r"^\*\*Table\*\*: `(\w+)`", part, flags=re.M):
            sections[match[1]] = part
    return sections


def _columns(section: str) -> list[tuple[str, str, str]]:
    """(column, type cell, description) rows of a section's column table."""
    rows = re.findall(r"^\| (\w+) \| ([^|]+) \| ([^|]*) \|$", section, flags=re.M)
    return [(_snake(n), t.strip(), d.strip()) for n, t, d in rows if n != "Column"]


def _type(cell: str) -> str:
    base = re.sub(r"\s*\((PK|FK)\)|,\s*(nullable|unique)", "", cell).strip()
    if match := re.fullmatch(r"VARCHAR\((\d+)\)", base):
        return seed.vc(int(match[1]))
    if match := re.fullmatch(r"CHAR\((\d+)\)", base):
        return f"character({match[1]})"
    if match := re.fullmatch(r"DECIMAL\((\d+),(\d+)\)", base):
        return f"numeric({match[1]},{match[2]})"
    if base.startswith("ENUM("):
        return "enum"
    return _TYPES[base]


SECTIONS = _sections()


def test_the_document_names_the_nine_entity_tables_and_four_checkpoint_tables() -> None:
    checkpoint = set(re.findall(r"^\| `(checkpoint\w*)` \|", DOCUMENT, flags=re.M))
    assert len(SECTIONS) == 9 and len(checkpoint) == 4
    assert set(SECTIONS) | checkpoint == seed.SEED_TABLES


@pytest.mark.parametrize("table", sorted(SECTIONS))
def test_columns_types_and_nullability_are_the_seeds(table: str) -> None:
    expected = []
    for column, cell, _ in _columns(SECTIONS[table]):
        type_ = DESIGN_TYPES.get((table, column)) or _type(cell)
        nullable = "nullable" in cell or column in DESIGN_NULLABLE.get(table, set())
        expected.append((column, type_, nullable))
    transcribed = seed.COLUMNS[table][: len(expected)]  # the poller's own columns come last
    for (column, type_, nullable), got in zip(expected, transcribed, strict=True):
        if type_ == "enum":  # an ENUM is a varchar plus a CHECK (seed_schema's docstring)
            assert got[0] == column and got[1].startswith("character varying("), got
            assert got[2] is nullable, got
        else:
            assert got == (column, type_, nullable)


def _backticked(text: str) -> frozenset[str]:
    return frozenset(re.findall(r"`([^`]+)`", text))


@pytest.mark.parametrize(("table", "column"), sorted(seed.ENUMS))
def test_enum_values_are_the_seeds(table: str, column: str) -> None:
    [(cell, description)] = [(t, d) for c, t, d in _columns(SECTIONS[table]) if c == column]
    if cell.startswith("ENUM("):
        values = frozenset(re.findall(r"'([^']+)'", cell))
    else:
        values = _backticked(description)
    assert values == frozenset(seed.ENUMS[(table, column)])


def test_every_status_column_of_the_seed_has_its_check() -> None:
    status_columns = {
        (table, column)
        for table, section in SECTIONS.items()
        for column, cell, _ in _columns(section)
        if column == "status" or cell.startswith("ENUM(")
    }
    assert status_columns <= set(seed.ENUMS)


def _parent(section: str) -> tuple[str, str]:
    """(parent table, ON DELETE) from a child's "**Relationships**: Belongs to one `X` (…)"."""
    relationships = section.split("**Relationships**", 1)[1].split("\n\n", 1)[0]
    [entity] = _backticked(relationships)
    tables = {part.split("\n", 1)[0].strip(): table for table, part in SECTIONS.items()}
    if "SET NULL" in relationships:
        return tables[entity], "SET NULL"
    assert re.search(r"CASCADE|cascade delete", relationships), relationships
    return tables[entity], "CASCADE"


def test_foreign_keys_are_the_seeds_and_no_others() -> None:
    marked = {
        (table, column): _parent(section)
        for table, section in SECTIONS.items()
        for column, cell, _ in _columns(section)
        if "(FK)" in cell
    }
    assert {**marked, **DESIGN_FOREIGN_KEYS} == seed.FOREIGN_KEYS


def test_unique_constraints_are_the_seeds() -> None:
    expected: set[tuple[str, tuple[str, ...]]] = set()
    for table, section in SECTIONS.items():
        for column, cell, _ in _columns(section):
            if "unique" in cell:
                expected.add((table, (column,)))
        for listed in re.findall(r"\*\*Unique Constraint\*\*: `\(([^)]*)\)`", section):
            expected.add((table, tuple(_snake(c.strip()) for c in listed.split(","))))
    assert expected == seed.UNIQUE_CONSTRAINTS


def test_revisions_follow_the_seed_timeline_by_timestamp() -> None:
    timeline = re.findall(r"^\| `(\d{13})-\w+` \|", DOCUMENT, flags=re.M)
    assert len(timeline) == 10
    assert tuple(sorted(timeline, key=int)) == seed.SEED_REVISIONS
