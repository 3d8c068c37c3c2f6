"""``--chaos-long``: run the chaos scenarios for minutes instead of seconds.

`make test` runs the bounded form (about a minute for the whole directory). The long form
injects faults for longer with more jobs, for a soak before a release::

    .venv/bin/pytest tests/chaos --chaos-long -s     # or: CHAOS_LONG=1 .venv/bin/pytest …

The option lives here, so pytest knows it only when this directory is named on the command
line; ``CHAOS_LONG=1`` works from anywhere.
"""

from __future__ import annotations

import pytest

from tests.chaos.chaos import long_form
from tests.e2e.fixtures import audited_db, module_db

__all__ = ["audited_db", "module_db"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--chaos-long",
        action="store_true",
        default=False,
        help="run the chaos scenarios in their long form (minutes, more jobs)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The long form outlasts the suite's 120 s per-test timeout: give chaos tests 20 min."""
    if not long_form(config):
        return
    for item in items:
        if item.get_closest_marker("chaos") is not None:
            item.add_marker(pytest.mark.timeout(1200))
