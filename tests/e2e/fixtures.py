"""Fixtures of the process-level suites, imported by the e2e and chaos conftests.

A run of several daemon processes costs seconds, so most test modules run their scenario
once in a module-scoped fixture and assert on its outcome in several small tests; those
need a database that lives as long as the module (`module_db`).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devenv.pgcluster import temporary_database
from tests.e2e.dbcheck import install_lease_audit


@pytest.fixture(scope="module")
def module_db(pg_admin_url: str, pg_template: str) -> Iterator[str]:
    """A fresh database at head for one module, with the lease-takeover audit installed."""
    with temporary_database(pg_admin_url, template=pg_template) as url:
        install_lease_audit(url)
        yield url


@pytest.fixture
def audited_db(db_url: str) -> str:
    """`db_url` (a fresh database per test) with the lease-takeover audit installed."""
    install_lease_audit(db_url)
    return db_url
