"""devenv.pgcluster: start / reuse / stop / restart on every backend this machine has."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from devenv.pgcluster import (
    PORT_RANGE,
    Backend,
    ClusterError,
    available_backends,
    running_url,
    scratch_dir,
    start_cluster,
    stop_cluster,
    with_database,
)
from poller.migrate import REPO_ROOT


@pytest.fixture
def base_dir() -> Iterator[Path]:
    """Outside pytest's tmp root, which concurrent sessions chmod 0700 (see scratch_dir)."""
    with scratch_dir("media-poller-pgtest-") as path:
        yield path


def _scalar(url: str, query: str) -> object:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return row[0]


def test_this_machine_has_a_backend() -> None:
    assert "embedded" in available_backends()  # the wheel is a dev dependency


@pytest.mark.parametrize("backend", available_backends())
def test_lifecycle(base_dir: Path, backend: Backend) -> None:
    data_dir = base_dir / "nested" / "data"
    with start_cluster(data_dir, backend=backend) as cluster:
        assert cluster.backend == backend
        assert _scalar(cluster.url, "SHOW max_connections") == "300"
        assert _scalar(cluster.url, "SHOW fsync") == "off"
        with psycopg.connect(cluster.url, autocommit=True) as conn:
            conn.execute("CREATE TABLE kept AS SELECT 42 AS answer")
        again = start_cluster(data_dir)  # idempotent: the running server is reused
        assert again == cluster
        if backend == "system":
            port = urlsplit(cluster.url).port
            assert port is not None and PORT_RANGE[0] <= port < PORT_RANGE[1]
            assert urlsplit(cluster.url).hostname == "127.0.0.1"
        else:
            assert "?host=" in cluster.url
    assert running_url(data_dir) is None
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(cluster.url, connect_timeout=3)

    restarted = start_cluster(data_dir)  # backend follows the directory's PG_VERSION
    try:
        assert restarted.backend == backend and restarted.url == cluster.url
        assert _scalar(restarted.url, "SELECT answer FROM kept") == 42
    finally:
        restarted.stop()
    stop_cluster(data_dir)  # stopping a stopped cluster is a no-op


def test_cli_start_url_stop(base_dir: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "devenv.pgcluster", *args],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )

    data_dir = str(base_dir / "data")
    started = cli("start", data_dir)
    try:
        assert started.returncode == 0, started.stderr
        url = started.stdout.strip()
        assert url.startswith("postgresql://postgres@") and "\n" not in url
        assert _scalar(url, "SELECT 1") == 1
        assert cli("url", data_dir).stdout.strip() == url
    finally:
        assert cli("stop", data_dir).returncode == 0
    missing = cli("url", data_dir)
    assert missing.returncode == 1 and missing.stdout == ""


def test_invalid_backend_setting_is_rejected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POLLER_TEST_PG", "docker")
    with pytest.raises(ClusterError, match="POLLER_TEST_PG must be one of"):
        start_cluster(tmp_path / "data")


@pytest.mark.parametrize(
    ("backend", "message"),
    [("embedded", "holds a PostgreSQL 9 cluster"), ("system", "no PostgreSQL version 9")],
)
def test_data_dir_of_another_major_version_is_refused(
    tmp_path: Path, backend: Backend, message: str
) -> None:
    (tmp_path / "PG_VERSION").write_text("9\n")
    with pytest.raises(ClusterError, match=message):
        start_cluster(tmp_path, backend=backend)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgresql://postgres@127.0.0.1:25432/postgres",
            "postgresql://postgres@127.0.0.1:25432/t_1",
        ),
        (
            "postgresql://postgres:@/postgres?host=/tmp/pg",
            "postgresql://postgres:@/t_1?host=/tmp/pg",
        ),
        ("postgresql://u@h/postgres?host=/d&port=6000", "postgresql://u@h/t_1?host=/d&port=6000"),
    ],
)
def test_with_database(url: str, expected: str) -> None:
    assert with_database(url, "t_1") == expected
