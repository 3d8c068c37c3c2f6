"""Blocking filesystem helpers, all meant to run in worker threads.

Kept synchronous on purpose: callers batch several system calls into one
``anyio.to_thread.run_sync`` hop (a hop costs ~0.1 ms, a 64 KiB write far less).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from storage.errors import BackendMisconfigured, DiskFull, StorageError, StorageUnavailable

__all__ = [
    "TEMP_PREFIXES",
    "TempFile",
    "create_temp_file",
    "fsync_dir",
    "make_dirs",
    "make_private_dir",
    "os_error",
    "sweep_stale",
    "write_all",
]

# Only files with these prefixes are ours to sweep: a shared temp dir may hold other files.
TEMP_PREFIXES = ("ingest-", "stage-")

# EFBIG (RLIMIT_FSIZE or a filesystem's size limit) is as final as a full disk for this file.
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
# Not transient: the configured place is unusable until an operator acts.
_MISCONFIGURED = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR}


def os_error(exc: OSError, doing: str) -> StorageError:
    """Translate an OS error into the storage tree, naming what was being done and where."""
    where = f" ({exc.filename})" if exc.filename else ""
    if exc.errno in _NO_SPACE:
        return DiskFull(f"{doing}: no space left on the storage device ({exc.strerror}){where}")
    if exc.errno in _MISCONFIGURED:
        return BackendMisconfigured(
            f"{doing}: {exc.strerror or 'not usable'}{where}: "
            "check STORAGE_URL / POLLER_TMP_DIR ownership and mount options"
        )
    return StorageUnavailable(f"{doing}: {exc.strerror or exc}{where}")


@dataclass(slots=True, kw_only=True)
class TempFile:
    """An open, private temp file; `discard` is safe to call whatever state it is in."""

    path: Path
    fd: int | None

    def close(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)

    def seal(self) -> None:
        """fsync and close: the bytes survive a crash once the name is published."""
        if self.fd is not None:
            os.fsync(self.fd)
        self.close()

    def discard(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


def create_temp_file(directory: Path) -> TempFile:
    fd, name = tempfile.mkstemp(prefix=TEMP_PREFIXES[0], dir=directory)
    return TempFile(path=Path(name), fd=fd)


def write_all(fd: int, chunks: Iterable[bytes | memoryview]) -> None:
    """Write every chunk completely (``os.write`` may write less than asked)."""
    for chunk in chunks:
        view = memoryview(chunk)
        while view:
            written = os.write(fd, view)
            view = view[written:]


def fsync_dir(directory: Path) -> None:
    """Make a new directory entry durable: a renamed/linked name is lost on crash otherwise."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(directory: Path) -> None:
    """``mkdir -p`` that fsyncs each parent whose entries changed.

    A writer that loses a ``mkdir`` race fsyncs the parent too: the winner may not have
    done so yet, and the loser is about to publish a name inside that directory.
    """
    missing: list[Path] = []
    current = directory
    while not current.exists():
        missing.append(current)
        current = current.parent
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):
            path.mkdir()
        fsync_dir(path.parent)


def make_private_dir(directory: Path) -> None:
    """Create ``directory`` with mode 0700, or check that an existing one is ours alone.

    For a directory at a predictable name in a shared temp dir (``/tmp/media-poller-ingest-
    <uid>``): another local user could create it first, as a symlink or a directory they
    own, and then swap a temp file between its hashing and its upload, storing other bytes
    under the hash. So it must be a real directory owned by this user; group/other
    permissions on it are removed. Anything else is a configuration error that names the
    way out (``POLLER_TMP_DIR``).
    """
    make_dirs(directory.parent)
    with contextlib.suppress(FileExistsError):
        directory.mkdir(mode=0o700)
        fsync_dir(directory.parent)
    found = os.lstat(directory)
    hint = "remove it or set POLLER_TMP_DIR to a private directory"
    if not stat.S_ISDIR(found.st_mode):
        raise BackendMisconfigured(
            f"temp directory {directory} exists but is not a directory (a symlink?): {hint}"
        )
    if found.st_uid != os.geteuid():
        raise BackendMisconfigured(
            f"temp directory {directory} is owned by uid {found.st_uid}, not by this "
            f"process (uid {os.geteuid()}): {hint}"
        )
    if stat.S_IMODE(found.st_mode) & 0o077:
        os.chmod(directory, 0o700, follow_symlinks=False)


def sweep_stale(directory: Path, *, older_than_s: float) -> int:
    """Delete our own temp files not touched for ``older_than_s`` (crash leftovers).

    In-flight downloads keep their file's mtime fresh, and the age is far above the total
    download deadline, so replicas sharing the directory never lose a live file.
    """
    cutoff = time.time() - older_than_s
    removed = 0
    with os.scandir(directory) as entries:
        for entry in entries:
            if not entry.name.startswith(TEMP_PREFIXES) or not entry.is_file(follow_symlinks=False):
                continue
            try:
                if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                continue
    return removed
