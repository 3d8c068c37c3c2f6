"""Fixtures shared by the poller tests: a connection pool on the test's database, and moto's
S3 server from the storage tests (GC over S3)."""

from collections.abc import AsyncIterator

import pytest
from psycopg_pool import AsyncConnectionPool

from poller.repository import open_pool
from tests.storage.conftest import aws_env, bucket, s3_admin, s3_client, s3_endpoint

__all__ = ["aws_env", "bucket", "pool", "s3_admin", "s3_client", "s3_endpoint"]


@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[AsyncConnectionPool]:
    """The daemon's own pool (`open_pool`: its connection settings and checks), big enough
    for a claim, a write-back, a listener and a lock held by a test at once."""
    opened = open_pool(db_url, size=6)
    await opened.open(wait=True)
    try:
        yield opened
    finally:
        await opened.close()
