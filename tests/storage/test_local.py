"""Local backend specifics: layout, permissions, dedup side effects, fallbacks, start-up checks."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

import storage.fs
import storage.local
from storage import key_for, open_storage
from storage.errors import BackendMisconfigured, DiskFull, StorageUnavailable
from storage.fs import make_dirs, os_error
from tests.storage.helpers import local_config, png, sha256

pytestmark = pytest.mark.anyio


async def test_blob_is_read_only_under_the_absolute_root(tmp_path: Path) -> None:
    async with open_storage(local_config(tmp_path / "root")) as ingestor:
        blob = await ingestor.ingest_bytes(png(), expected_kind="image")
    path = tmp_path / "root" / "sha256" / blob.content_hash[:2] / blob.content_hash
    assert blob.uri == str(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o444
    assert os.listdir(tmp_path / "root" / ".tmp") == []


async def test_relative_file_url_resolves_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    async with open_storage(local_config(Path("unused"), storage_url="file://./rel/dir")) as ing:
        blob = await ing.ingest_bytes(b"hello", expected_kind=None)
    assert blob.uri == str(tmp_path / "rel" / "dir" / blob.key)
    assert blob.media_type == "text/plain"


async def test_a_root_spelled_with_dot_dot_gives_the_normalised_uri(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Identical content, same uri: however the root is spelled, or whatever the cwd is."""
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    spellings = ("file://../store", f"file://{tmp_path}/x/../store/.", f"file://{tmp_path}/store")
    uris = set()
    for url in spellings:
        async with open_storage(local_config(Path("unused"), storage_url=url)) as ingestor:
            blob = await ingestor.ingest_bytes(b"same bytes", expected_kind=None)
            uris.add(blob.uri)
    assert uris == {str(tmp_path / "store" / blob.key)}


async def test_a_dedup_hit_syncs_the_directory_holding_the_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first writer may be between its link and its directory fsync: the second syncs."""
    data = png(8, 8)
    async with open_storage(local_config(tmp_path / "root")) as ingestor:
        await ingestor.ingest_bytes(data, expected_kind="image")
        synced: list[Path] = []
        monkeypatch.setattr(storage.local, "fsync_dir", synced.append)
        again = await ingestor.ingest_bytes(data, expected_kind="image")
    assert not again.created
    assert synced == [Path(again.uri).parent]


def test_a_writer_losing_the_mkdir_race_syncs_the_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another writer created the shard between our exists() and mkdir(), not yet synced."""
    shard = tmp_path / "sha256" / "ab"
    (tmp_path / "sha256").mkdir()
    real_mkdir = Path.mkdir

    def lose_the_race(self: Path, *args: Any, **kwargs: Any) -> None:
        real_mkdir(self, *args, **kwargs)  # the other writer's mkdir
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(self))

    synced: list[Path] = []
    monkeypatch.setattr(Path, "mkdir", lose_the_race)
    monkeypatch.setattr(storage.fs, "fsync_dir", synced.append)
    make_dirs(shard)
    assert shard.is_dir()
    assert synced == [tmp_path / "sha256"]


async def test_bytes_are_synced_before_the_link_and_the_name_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A published name must survive a crash with its bytes: fsync(temp) → link → fsync(dir)."""
    events: list[tuple[str, str]] = []
    real_fsync, real_link, real_sync_dir = os.fsync, os.link, storage.fs.fsync_dir

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def link(source: str | Path, target: str | Path) -> None:
        events.append(("link", str(target)))
        real_link(source, target)

    def sync_dir(directory: Path) -> None:
        events.append(("fsync_dir", str(directory)))
        real_sync_dir(directory)

    async with open_storage(local_config(tmp_path / "root")) as ingestor:
        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "link", link)
        monkeypatch.setattr(storage.local, "fsync_dir", sync_dir)
        blob = await ingestor.ingest_bytes(png(15, 15), expected_kind="image")
    temp_synced = [
        i for i, (what, path) in enumerate(events) if what == "fsync" and "/.tmp/ingest-" in path
    ]
    linked = events.index(("link", blob.uri))
    shard_synced = events.index(("fsync_dir", str(Path(blob.uri).parent)))
    assert temp_synced and temp_synced[0] < linked < shard_synced


async def test_dedup_refreshes_mtime_for_the_gc_grace_period(tmp_path: Path) -> None:
    data = png(7, 7)
    async with open_storage(local_config(tmp_path / "root")) as ingestor:
        blob = await ingestor.ingest_bytes(data, expected_kind="image")
        week_ago = time.time() - 7 * 86400
        os.utime(blob.uri, (week_ago, week_ago))
        again = await ingestor.ingest_bytes(data, expected_kind="image")
    assert not again.created
    assert (await anyio.Path(blob.uri).stat()).st_mtime > time.time() - 60


async def test_a_blob_with_the_wrong_size_is_repaired(tmp_path: Path) -> None:
    data = png(9, 9)
    path = tmp_path / "root" / key_for(sha256(data))
    path.parent.mkdir(parents=True)
    path.write_bytes(data[:10])  # e.g. a crash on a filesystem without ordered writes
    async with open_storage(local_config(tmp_path / "root")) as ingestor:
        blob = await ingestor.ingest_bytes(data, expected_kind="image")
    assert not blob.created
    assert path.read_bytes() == data


@pytest.mark.parametrize("link_errno", [errno.EXDEV, errno.EPERM])
async def test_publish_falls_back_when_hard_links_fail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, link_errno: int
) -> None:
    """EXDEV: temp dir on another filesystem; EPERM: a filesystem without hard links."""
    real_link = os.link
    failures: list[str] = []

    def link(source: str | Path, target: str | Path) -> None:
        if link_errno == errno.EPERM or "/tmpdir/" in str(source):
            failures.append(str(source))
            raise OSError(link_errno, os.strerror(link_errno))
        real_link(source, target)

    monkeypatch.setattr(os, "link", link)
    data = png(11, 11)
    config = local_config(tmp_path / "root", tmp_dir=tmp_path / "tmpdir")
    async with open_storage(config) as ingestor:
        first = await ingestor.ingest_bytes(data, expected_kind="image")
        second = await ingestor.ingest_bytes(data, expected_kind="image")
    assert failures
    assert (first.created, second.created) == (True, False)
    assert await anyio.Path(first.uri).read_bytes() == data
    assert os.listdir(tmp_path / "tmpdir") == []
    assert os.listdir(tmp_path / "root" / ".tmp") == []


def refuse_cross_device_links(monkeypatch: pytest.MonkeyPatch) -> None:
    """Links out of ``tmpdir`` fail with EXDEV, as when POLLER_TMP_DIR is another filesystem."""
    real_link = os.link

    def link(source: str | Path, target: str | Path) -> None:
        if "/tmpdir/" in str(source):
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))
        real_link(source, target)

    monkeypatch.setattr(os, "link", link)


@pytest.mark.parametrize(
    ("failure", "error"), [(errno.ENOSPC, DiskFull), (errno.EIO, StorageUnavailable)]
)
async def test_a_copy_fallback_failing_midway_leaves_no_staged_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: int, error: type[Exception]
) -> None:
    """The disk fills up halfway through the copy: the half-written stage-* file goes too."""
    refuse_cross_device_links(monkeypatch)

    def copy_half_then_fail(source: Path, target: Path) -> None:
        data = Path(source).read_bytes()
        Path(target).write_bytes(data[: len(data) // 2])
        raise OSError(failure, os.strerror(failure), str(target))

    monkeypatch.setattr(shutil, "copyfile", copy_half_then_fail)
    config = local_config(tmp_path / "root", tmp_dir=tmp_path / "tmpdir")
    async with open_storage(config) as ingestor:
        with pytest.raises(error):
            await ingestor.ingest_bytes(png(13, 13), expected_kind="image")
        assert [blob async for blob in ingestor.store.iter_blobs()] == []
    assert os.listdir(tmp_path / "root" / ".tmp") == []
    assert os.listdir(tmp_path / "tmpdir") == []


async def test_stale_staged_copies_are_swept_even_with_a_separate_tmp_dir(
    tmp_path: Path,
) -> None:
    """A crash mid-copy leaves stage-* in <root>/.tmp, which POLLER_TMP_DIR does not cover."""
    staging = tmp_path / "root" / ".tmp"
    staging.mkdir(parents=True)
    stale, fresh = staging / "stage-old", staging / "stage-new"
    for path in (stale, fresh):
        path.write_bytes(b"half a copy")
    long_ago = time.time() - 7 * 3600
    os.utime(stale, (long_ago, long_ago))
    async with open_storage(local_config(tmp_path / "root", tmp_dir=tmp_path / "tmpdir")):
        pass
    assert os.listdir(staging) == ["stage-new"]


async def test_unusable_root_fails_at_start_up(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_bytes(b"")
    with pytest.raises(BackendMisconfigured, match="preparing the storage directory"):
        async with open_storage(local_config(tmp_path / "a-file" / "root")):
            pytest.fail("storage opened under a regular file")


async def test_iter_blobs_skips_foreign_files(tmp_path: Path) -> None:
    async with open_storage(local_config(tmp_path / "root")) as ingestor:
        blob = await ingestor.ingest_bytes(b"data", expected_kind=None)
        shard = tmp_path / "root" / "sha256" / blob.content_hash[:2]
        (shard / "notes.txt").write_bytes(b"x")
        (shard / ("f" * 64)).write_bytes(b"wrong shard")
        (tmp_path / "root" / "sha256" / "zz").mkdir()
        listed = [info.key async for info in ingestor.store.iter_blobs()]
    assert listed == [blob.key]


def test_os_errors_map_to_the_storage_tree() -> None:
    full = os_error(OSError(errno.ENOSPC, "No space left", "/data/x"), "writing")
    denied = os_error(OSError(errno.EROFS, "Read-only file system", "/data"), "writing")
    flaky = os_error(OSError(errno.EIO, "I/O error"), "writing")
    assert isinstance(full, DiskFull) and full.retryable
    too_big = os_error(OSError(errno.EFBIG, "File too large"), "writing")
    assert str(full) == "writing: no space left on the storage device (No space left) (/data/x)"
    assert isinstance(too_big, DiskFull)
    assert isinstance(denied, BackendMisconfigured) and denied.retryable
    assert type(flaky) is StorageUnavailable and flaky.retryable


async def test_temp_files_live_on_the_storage_filesystem(tmp_path: Path) -> None:
    async with open_storage(local_config(tmp_path / "root")):
        pass
    root_dev = (tmp_path / "root").stat().st_dev
    assert await anyio.Path(tmp_path / "root" / ".tmp").is_dir()
    assert (tmp_path / "root" / ".tmp").stat().st_dev == root_dev
