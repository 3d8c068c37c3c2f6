"""Media metadata parsing in killable worker processes, bounded in time and memory.

Why a process: `storage.metadata` runs Pillow, mutagen and libmediainfo (native C++, bundled
by pymediainfo) on untrusted downloads. A crafted file can make native code loop, hang,
allocate without bound or segfault. In a worker thread a hang pins the thread for good
(threads cannot be killed) and a segfault kills the daemon with every job in flight. Here a
parse runs in one of at most ``processes`` reusable worker processes (`anyio.to_process`,
``cancellable=True``):

- a parse that overruns ``timeout_s`` is cancelled, and anyio SIGKILLs and reaps its worker;
- a worker that dies (segfault, abort, OOM kill) surfaces as ``BrokenWorkerProcess``; it is
  tried once more on a fresh worker (a worker can die for reasons that are not the file's),
  and a file that breaks two workers is rejected;
- each worker caps its own address space (``RLIMIT_AS``, ``max_memory_bytes``, set on its
  first call) so a memory bomb ends in ``MemoryError`` (or a native abort: a crash) in the
  worker, not in the kernel's OOM killer picking the daemon or the container;
- each worker asks the kernel to SIGKILL it when the daemon dies (Linux
  ``PR_SET_PDEATHSIG``): an idle worker would exit on its closed pipe anyway, but a hung one
  would outlive a daemon that was SIGKILLed or OOM-killed, forever.

Every outcome is a `ContentRejected` naming the cause, so the job fails with a message an
operator understands, and the daemon keeps running. The caller (`storage.ingest`) reads
metadata before the blob is published and removes the temp file in a shielded ``finally``,
so a rejected file leaves nothing behind.

How anyio runs the function: it starts ``python -u -m anyio.to_process``, sends it the
parent's ``sys.path``, re-runs the parent's ``__main__`` file as ``__mp_main__`` (entry points
keep their ``if __name__ == "__main__"`` guard; ``main.py`` does), then unpickles the function
by module and qualified name. A reader must therefore be a module-level function of an
importable module; arguments are plain values (the path as ``str``, `Sniffed` is a frozen
dataclass). Workers are shared by the event loop, reused, stopped after 5 idle minutes (at the
next call), and killed when the loop ends. Starting one costs about 0.4 s of CPU (Python,
the storage package and the parsers: ``main.py`` imports its CLI under the ``__main__``
guard, so a worker does not import the daemon), counted in the timeout of the parse that
needed it.

Waiting for a free worker is not counted in the timeout: while hostile files hold every
worker, other files queue instead of being rejected for someone else's hang.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
import sys
from pathlib import Path
from typing import Any, Protocol

import anyio
import anyio.to_process
import structlog

from storage.errors import (
    ContentRejected,
    ParserCrashed,
    ParserTimeout,
    StorageError,
    StorageUnavailable,
)
from storage.metadata import read_metadata
from storage.sniff import Sniffed
from storage.spool import describe_size

__all__ = ["TIMEOUT_HINT", "MetadataParsers", "Reader"]

log = structlog.get_logger(__name__)

TIMEOUT_HINT = "POLLER_METADATA_TIMEOUT_S"
MEMORY_HINT = "POLLER_METADATA_MAX_MEMORY_BYTES"
_NOUN = {"image": "the image's", "audio": "the audio's", "video": "the video's"}


class Reader(Protocol):
    """What runs in the worker: `storage.metadata.read_metadata` or a test double."""

    def __call__(
        self, path: Path, sniffed: Sniffed, *, expected_kind: str | None
    ) -> dict[str, Any]: ...


class MetadataParsers:
    """Reads media metadata in at most ``processes`` worker processes, each parse bounded by
    ``timeout_s`` and (0: unbounded) ``max_memory_bytes`` of address space."""

    def __init__(
        self,
        *,
        processes: int,
        timeout_s: float,
        max_memory_bytes: int,
        reader: Reader = read_metadata,
    ) -> None:
        self._reader = reader
        self._timeout_s = timeout_s
        self._max_memory_bytes = max_memory_bytes
        # Taken before the timeout starts, so queueing is not charged to the file.
        self._slots = anyio.CapacityLimiter(processes)
        # anyio's own limiter for the same calls: never waits (the slots admit as many), but
        # keeps this pool off anyio's default limiter shared with any other to_process user.
        self._workers = anyio.CapacityLimiter(processes)

    async def read(
        self,
        path: Path,
        sniffed: Sniffed,
        *,
        expected_kind: str | None,
        reader: Reader | None = None,
    ) -> dict[str, Any]:
        """``reader(path, sniffed, expected_kind=…)`` in a worker (default: the one given at
        construction, `read_metadata` in production): its facts, or `ContentRejected` for an
        unreadable file, a timeout, a crash or a memory bomb."""
        reader = reader or self._reader
        async with self._slots:
            try:
                return await self._attempt(reader, path, sniffed, expected_kind)
            except anyio.BrokenWorkerProcess:
                _log_crash(sniffed, attempt=1)
            try:  # once more on a fresh worker: workers also die of causes not in the file
                return await self._attempt(reader, path, sniffed, expected_kind)
            except anyio.BrokenWorkerProcess as exc:
                _log_crash(sniffed, attempt=2)
                raise ParserCrashed(
                    f"the metadata parser crashed on this file ({sniffed.media_type}, twice, "
                    "each time in a fresh process); the file was rejected"
                ) from exc

    async def _attempt(
        self, reader: Reader, path: Path, sniffed: Sniffed, expected_kind: str | None
    ) -> dict[str, Any]:
        started = anyio.current_time()
        try:
            with anyio.fail_after(self._timeout_s):
                return await anyio.to_process.run_sync(
                    _parse_in_worker,
                    reader,
                    str(path),
                    sniffed,
                    expected_kind,
                    self._max_memory_bytes,
                    os.getpid(),
                    cancellable=True,
                    limiter=self._workers,
                )
        except TimeoutError:
            log.warning(
                "storage.metadata_timeout",
                media_type=sniffed.media_type,
                timeout_s=self._timeout_s,
                elapsed_s=round(anyio.current_time() - started, 3),
            )
            raise ParserTimeout(self._timeout_message(sniffed)) from None
        except OSError as exc:  # fork/exec failed: the host's problem, not the file's
            raise StorageUnavailable(f"could not start a metadata parser process: {exc}") from exc

    def _timeout_message(self, sniffed: Sniffed) -> str:
        whose = _NOUN.get(sniffed.kind or "", "the file's")
        return (
            f"reading {whose} metadata took longer than {self._timeout_s:g} s; the file "
            f"({sniffed.media_type}) was rejected ({TIMEOUT_HINT})"
        )


def _log_crash(sniffed: Sniffed, *, attempt: int) -> None:
    log.warning("storage.metadata_crashed", media_type=sniffed.media_type, attempt=attempt)


# -- the worker side: runs in the anyio worker process, never in the daemon -------------------

_applied_memory_cap: int | None = None


def _parse_in_worker(
    reader: Reader,
    path: str,
    sniffed: Sniffed,
    expected_kind: str | None,
    max_memory_bytes: int,
    parent_pid: int,
) -> dict[str, Any]:
    """Prepare this worker (once), run ``reader``, and return only picklable outcomes: any
    exception other than the storage tree's becomes `ContentRejected` here, so the parent
    never has to unpickle a third-party exception."""
    if os.getpid() == parent_pid:  # the caps below would land on the daemon itself
        raise RuntimeError("_parse_in_worker must run in a worker process")
    _prepare_worker(max_memory_bytes, parent_pid)
    try:
        return reader(Path(path), sniffed, expected_kind=expected_kind)
    except StorageError:
        raise
    except MemoryError:
        raise ContentRejected(
            f"reading the metadata of this file ({sniffed.media_type}) needed more than "
            f"{describe_size(max_memory_bytes)} of memory; the file was rejected ({MEMORY_HINT})"
        ) from None
    except Exception as exc:  # a reader bug or an escaped parser error: still "unreadable"
        raise ContentRejected(
            f"the metadata parser failed on this file ({sniffed.media_type}): "
            f"{type(exc).__name__}: {exc}"
        ) from None


def _prepare_worker(max_memory_bytes: int, parent_pid: int) -> None:
    """Die with the daemon, ignore SIGINT (Ctrl-C reaches the whole process group; the daemon
    decides when its workers stop, and a stray KeyboardInterrupt would desynchronise anyio's
    pipe protocol) and apply the address-space cap. Only the soft limit is set, so a later
    call with another cap (another `MetadataParsers` in the same event loop) can change it."""
    global _applied_memory_cap
    if _applied_memory_cap == max_memory_bytes:
        return
    if _applied_memory_cap is None:
        _die_with_parent(parent_pid)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    soft = max_memory_bytes or resource.RLIM_INFINITY
    if hard != resource.RLIM_INFINITY:
        soft = hard if soft == resource.RLIM_INFINITY else min(soft, hard)
    # Best effort where the platform refuses (Linux accepts any soft limit up to the hard
    # one): the timeout and the process boundary still hold.
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    _applied_memory_cap = max_memory_bytes


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with_parent(parent_pid: int) -> None:
    """SIGKILL this worker when the daemon dies (Linux; elsewhere the closed pipe still ends
    an idle worker). If the daemon is already gone, exit now."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # orphaned before the request took effect
        os._exit(1)
