"""Fixtures of the end-to-end suite (shared with tests/chaos, see `tests.e2e.fixtures`)."""

from __future__ import annotations

from tests.e2e.fixtures import audited_db, module_db

__all__ = ["audited_db", "module_db"]
