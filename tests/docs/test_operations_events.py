"""docs/operations.md's log event table lists exactly the events the code emits.

Operators build alerts and log queries from that table (DESIGN §6: stable dotted event
names), so a documented event that never happens, or an emitted one that is missing, is a
silent gap. Events are found as the literal first argument of a logger call; the terminal
``job.<status>`` events are built from the status.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from poller.tables import TERMINAL_STATUSES

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("poller", "providers", "storage")
_LOG_CALL = re.compile(
    r'\.(?:debug|info|warning|error|exception|critical)\(\s*"([a-z_]+\.[a-z_.]+)"'
)


def _emitted() -> set[str]:
    events = {f"job.{status}" for status in TERMINAL_STATUSES}  # daemon: f"job.{status}"
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            events |= set(_LOG_CALL.findall(path.read_text(encoding="utf-8")))
    return events


def _documented() -> set[str]:
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    table = text.split("| event | level | meaning |", 1)[1].split("\n\n", 1)[0]
    first_cells = (line.split("|")[1] for line in table.splitlines() if line.startswith("| `"))
    return {name for cell in first_cells for name in re.findall(r"`([a-z_]+\.[a-z_.*]+)`", cell)}


@pytest.fixture(scope="module")
def emitted() -> set[str]:
    events = _emitted()
    assert {"job.claimed", "provider.polled", "artifact.stored", "lease.lost"} <= events
    return events


def test_every_documented_event_is_emitted(emitted: set[str]) -> None:
    phantom = {e for e in _documented() if not e.endswith("*") and e not in emitted}
    assert sorted(phantom) == []


def test_every_emitted_event_is_documented(emitted: set[str]) -> None:
    documented = _documented()
    wildcards = tuple(e[:-1] for e in documented if e.endswith("*"))
    missing = {e for e in emitted if e not in documented and not e.startswith(wildcards)}
    assert sorted(missing) == []


_DB_OPERATION = re.compile(r'(?:DB_ERRORS\.labels|with_db_retry)\(\s*"([a-z_]+)"')


def test_the_db_errors_metric_lists_exactly_the_operations_the_code_counts() -> None:
    """Alerts group `poller_db_errors_total` by ``operation``: the metrics table must name
    every value the code can emit (a direct count or a `with_db_retry` name), and no other."""
    counted = {
        name
        for path in (ROOT / "poller").rglob("*.py")
        for name in _DB_OPERATION.findall(path.read_text(encoding="utf-8"))
    }
    assert {"claim", "write_back", "complete", "heartbeat"} <= counted
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    row = next(line for line in text.splitlines() if line.startswith("| `poller_db_errors_total`"))
    labels_cell = row.split("|")[2]
    assert set(re.findall(r"`([a-z_]+)`", labels_cell)) - {"operation"} == counted
