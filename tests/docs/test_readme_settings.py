"""README.md is the operator's reference: every setting the code reads must be in its table.

The settings table is the contract of DESIGN.md §1 ("all documented in one README table").
These tests derive the names from the settings classes themselves, so a new field that is not
documented fails the build instead of becoming an undiscoverable knob.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import AliasChoices
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

from poller.settings import CoreSettings, PollerSettings, known_poller_variables
from providers.registry import BUILTIN_PROVIDERS, MAX_CONNECTIONS

README = Path(__file__).resolve().parents[2] / "README.md"


def _section(text: str, heading: str) -> str:
    """The body of the ``## <heading>`` section (up to the next level-2 heading)."""
    match = re.search(rf"^## {re.escape(heading)}\b.*?$(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match is not None, f"README.md has no '## {heading}' section"
    return match.group(1)


def _table_names(section: str) -> set[str]:
    """Every back-quoted UPPER_CASE name inside the section's table rows."""
    rows = [line for line in section.splitlines() if line.lstrip().startswith("|")]
    return {name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", row)}


def _env_names(field_name: str, info: FieldInfo, prefix: str) -> set[str]:
    """The environment names pydantic-settings reads a field from (alias wins over prefix)."""
    alias = info.validation_alias
    if isinstance(alias, str):
        return {alias.upper()}
    if isinstance(alias, AliasChoices):
        return {c.upper() for c in alias.choices if isinstance(c, str)}
    return {f"{prefix}{field_name}".upper()}


def _settings_env_names(cls: type[BaseSettings]) -> set[str]:
    prefix = str(cls.model_config.get("env_prefix") or "")
    names: set[str] = set()
    for field_name, info in cls.model_fields.items():
        names |= _env_names(field_name, info, prefix)
    return names


@pytest.fixture(scope="module")
def readme() -> str:
    return README.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def settings_table(readme: str) -> set[str]:
    return _table_names(_section(readme, "Settings"))


def test_every_poller_setting_is_in_the_settings_table(settings_table: set[str]) -> None:
    expected = {f"POLLER_{name.upper()}" for name in PollerSettings.model_fields}
    assert expected == known_poller_variables()  # the names start-up accepts
    assert sorted(expected - settings_table) == []


def test_every_core_setting_is_in_the_settings_table(settings_table: set[str]) -> None:
    expected = _settings_env_names(CoreSettings) | {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert "DATABASE_URL" in expected and "AWS_REGION" in expected
    assert sorted(expected - settings_table) == []


@pytest.mark.parametrize("provider", sorted(BUILTIN_PROVIDERS))
def test_every_provider_setting_is_in_the_settings_table(
    provider: str, settings_table: set[str]
) -> None:
    expected = _settings_env_names(BUILTIN_PROVIDERS[provider].settings_cls)
    assert f"{provider.upper()}_BASE_URL" in expected
    assert sorted(expected - settings_table) == []


def test_design_contract_names_are_in_the_settings_table(settings_table: set[str]) -> None:
    fixed = {
        "REPLICATE_API_TOKEN",
        "STABILITY_API_KEY",
        "SUNO_API_KEY",
        "SUNO_CALLBACK_URL",
        "POLLER_CONCURRENCY",
        "POLLER_BATCH_SIZE",
        "POLLER_LEASE_TTL_S",
        "POLLER_SHUTDOWN_GRACE_S",
        "POLLER_LOG_LEVEL",
        "POLLER_TMP_DIR",
        "POLLER_ALLOW_PRIVATE_DOWNLOADS",
        "POLLER_MAX_DOWNLOAD_BYTES",
        "POLLER_HTTP_PORT",
        "S3_ENDPOINT_URL",
        "STORAGE_URL",
    }
    assert sorted(fixed - settings_table) == []


def _accepted_provider_names(cls: type[BaseSettings]) -> set[str]:
    """Alias names plus prefix + field name (``populate_by_name`` accepts both)."""
    prefix = str(cls.model_config.get("env_prefix") or "")
    return _settings_env_names(cls) | {f"{prefix}{f}".upper() for f in cls.model_fields}


def test_table_names_no_setting_that_does_not_exist(settings_table: set[str]) -> None:
    """A renamed field must not leave a stale row behind (operators would set a dead name)."""
    real = known_poller_variables() | _settings_env_names(CoreSettings)
    prefixes = ["POLLER_"]
    for name, spec in BUILTIN_PROVIDERS.items():
        real |= _accepted_provider_names(spec.settings_cls)
        prefixes.append(f"{name.upper()}_")
    documented = {n for n in settings_table if n.startswith(tuple(prefixes))}
    assert sorted(documented - real) == []


def test_quick_start_is_make_demo_then_make_test(readme: str) -> None:
    quick = _section(readme, "Quick start")
    demo, test = quick.find("make demo"), quick.find("make test")
    assert demo != -1 and test != -1
    assert demo < test


def test_settings_are_one_table_with_one_row_per_provider_variable(readme: str) -> None:
    """DESIGN §1: "all documented in one README table": no per-topic tables and no provider
    matrix, so an operator grepping for a variable lands on its own row."""
    section = _section(readme, "Settings")
    lines = section.splitlines()
    assert sum(1 for line in lines if line.startswith("|---")) == 1
    rows = [line for line in lines if line.startswith("| `")]
    prefixes = tuple(f"{name.upper()}_" for name in BUILTIN_PROVIDERS)
    for row in rows:
        first_cell = row.split("|")[1]
        names = re.findall(r"`([A-Z][A-Z0-9_]+)`", first_cell)
        if any(n.startswith(prefixes) for n in names):
            assert len(names) == 1, row


def test_max_in_flight_rows_state_the_connection_pool_cap(readme: str) -> None:
    """make_client sizes the pool min(MAX_IN_FLIGHT, MAX_CONNECTIONS): the docs must not call
    MAX_IN_FLIGHT the pool size (Replicate's default 64 gets 32 connections)."""
    rows = [r for r in _section(readme, "Settings").splitlines() if "_MAX_IN_FLIGHT`" in r]
    assert len(rows) == len(BUILTIN_PROVIDERS)
    assert all(f"capped at {MAX_CONNECTIONS}" in row for row in rows), rows
    operations = (README.parent / "docs" / "operations.md").read_text(encoding="utf-8")
    assert f"connection pool, capped at {MAX_CONNECTIONS}" in operations
    guide = (README.parent / "docs" / "adding-a-provider.md").read_text(encoding="utf-8")
    [row] = [r for r in guide.splitlines() if r.startswith("| `<P>_MAX_IN_FLIGHT`")]
    assert f"capped at {MAX_CONNECTIONS}" in row and "jobs in flight" in row, row


def _default_cells(section: str) -> dict[str, str]:
    """Variable → its row's "default" cell (the second column)."""
    cells: dict[str, str] = {}
    for line in section.splitlines():
        if line.startswith("| `"):
            first, default = (c.strip() for c in line.split("|")[1:3])
            for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", first):
                cells[name] = default
    return cells


def _documented(cell: str) -> object:
    """The value a default cell states: ``unset``/``—`` → None, a back-quoted or leading
    token otherwise (``2147483648 (2 GiB)`` → 2147483648, `` `true` `` → True)."""
    if cell.startswith(("unset", "—")):
        return None
    quoted = re.match(r"`([^`]*)`", cell)
    text = quoted.group(1) if quoted else cell.split()[0]
    if text in ("true", "false"):
        return text == "true"
    if text.startswith("{"):
        return json.loads(text)
    try:
        return float(text)
    except ValueError:
        return text


def _code_defaults() -> dict[str, object]:
    classes: list[type[BaseSettings]] = [PollerSettings, CoreSettings]
    classes += [spec.settings_cls for spec in BUILTIN_PROVIDERS.values()]
    defaults: dict[str, object] = {}
    for cls in classes:
        prefix = str(cls.model_config.get("env_prefix") or "")
        for field_name, info in cls.model_fields.items():
            for env in _env_names(field_name, info, prefix):
                defaults[env] = info.get_default(call_default_factory=True)
    return defaults


# Defaults the table describes rather than states.
_DESCRIBED = {
    "POLLER_WORKER_ID": "`host:pid:random`",  # None in code: computed at start-up
    "REPLICATE_HARDWARE_PRICES": "built-in table",
    "STABILITY_CREDITS": "built-in table",
}


def test_the_settings_table_states_the_defaults_the_code_has(readme: str) -> None:
    """A default that drifts from the table misleads exactly the operator who did not set
    the variable (e.g. a poll interval or a rate budget)."""
    cells = _default_cells(_section(readme, "Settings"))
    wrong = []
    for name, default in sorted(_code_defaults().items()):
        cell = cells[name]
        if name in _DESCRIBED:
            assert cell.startswith(_DESCRIBED[name]), (name, cell)
            continue
        stated = _documented(cell)
        if isinstance(default, dict):
            default = {k: float(v) if isinstance(v, Decimal) else v for k, v in default.items()}
        elif isinstance(default, int | float | Decimal) and not isinstance(default, bool):
            default = float(default)
        elif isinstance(default, Path):
            default = str(default)
        if stated != default:
            wrong.append((name, cell, default))
    assert wrong == []
