"""The S3 backend's default temp dir sits at a predictable name in the shared temp dir
(``/tmp/media-poller-ingest-<uid>``): it must be this user's alone, or start-up refuses."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import pytest

from storage import open_storage
from storage.errors import BackendMisconfigured
from storage.fs import make_private_dir
from tests.storage.helpers import png
from tests.storage.test_s3 import s3_config

NOBODY = 65534

pytestmark = pytest.mark.anyio


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_a_new_directory_is_created_for_the_owner_only(tmp_path: Path) -> None:
    make_private_dir(tmp_path / "shared" / "private")
    assert _mode(tmp_path / "shared" / "private") == 0o700


def test_an_existing_directory_of_ours_loses_group_and_other_access(tmp_path: Path) -> None:
    directory = tmp_path / "private"
    directory.mkdir()
    directory.chmod(0o777)
    make_private_dir(directory)
    assert _mode(directory) == 0o700


def test_a_symlink_planted_at_the_name_is_refused(tmp_path: Path) -> None:
    (tmp_path / "attacker").mkdir()
    (tmp_path / "private").symlink_to(tmp_path / "attacker")
    with pytest.raises(BackendMisconfigured, match=r"is not a directory \(a symlink\?\)") as caught:
        make_private_dir(tmp_path / "private")
    assert "POLLER_TMP_DIR" in str(caught.value)


def test_a_directory_owned_by_another_user_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "private"
    directory.mkdir()
    directory.chmod(0o755)  # not 0700: a chmod before the owner check must show
    if os.geteuid() == 0:
        os.chown(directory, NOBODY, NOBODY)
        owner = NOBODY
    else:  # only root can chown: the same directory as a process of another uid sees it
        owner = os.geteuid()
        monkeypatch.setattr(os, "geteuid", lambda: owner + 1)
    with pytest.raises(BackendMisconfigured, match=f"owned by uid {owner}, not by this"):
        make_private_dir(directory)
    assert _mode(directory) == 0o755  # left as found: not ours to change


async def test_s3_start_up_uses_a_private_default_temp_dir(
    s3_endpoint: str, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    config = s3_config(s3_endpoint, bucket, tmp_path, tmp_dir=None)
    async with open_storage(config) as ingestor:
        await ingestor.ingest_bytes(png(), expected_kind="image")
    directory = tmp_path / f"media-poller-ingest-{os.geteuid()}"
    assert _mode(directory) == 0o700
    assert os.listdir(directory) == []


async def test_s3_start_up_refuses_a_planted_default_temp_dir(
    s3_endpoint: str, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / f"media-poller-ingest-{os.geteuid()}").symlink_to(tmp_path / "elsewhere")
    config = s3_config(s3_endpoint, bucket, tmp_path, tmp_dir=None)
    with pytest.raises(BackendMisconfigured, match="set POLLER_TMP_DIR to a private directory"):
        async with open_storage(config):
            pytest.fail("storage opened with a temp dir another user could control")
