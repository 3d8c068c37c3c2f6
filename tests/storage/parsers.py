"""Misbehaving metadata readers that run in the real parser processes (`storage.isolation`).

They stand in for a native parser fed a hostile file: the worker process imports this module
by name (anyio hands it the test session's ``sys.path``), so each must stay a module-level
function with `storage.isolation.Reader`'s signature. They hang, crash or allocate for real;
nothing about the isolation mechanism is mocked.
"""

from __future__ import annotations

import os
import resource
import signal
import time
from pathlib import Path
from typing import Any

from storage.sniff import Sniffed

GiB = 1024**3


def worker_pid(path: Path, sniffed: Sniffed, *, expected_kind: str | None) -> dict[str, Any]:
    """Which process parsed: to see a worker reused, or replaced after a kill."""
    return {"pid": os.getpid()}


def hang(path: Path, sniffed: Sniffed, *, expected_kind: str | None) -> dict[str, Any]:
    """A parser stuck for good (an infinite loop in native code, a blocking read)."""
    while True:
        time.sleep(1)


def hang_after_writing_pid(
    path: Path, sniffed: Sniffed, *, expected_kind: str | None
) -> dict[str, Any]:
    """`hang`, after telling the test which process hangs (in ``<path>.pid``)."""
    Path(f"{path}.pid").write_text(str(os.getpid()))
    return hang(path, sniffed, expected_kind=expected_kind)


def segfault(path: Path, sniffed: Sniffed, *, expected_kind: str | None) -> dict[str, Any]:
    os.kill(os.getpid(), signal.SIGSEGV)
    time.sleep(60)  # the signal is delivered before this returns
    return {}


def abort(path: Path, sniffed: Sniffed, *, expected_kind: str | None) -> dict[str, Any]:
    """What an uncaught C++ exception (std::bad_alloc) in libmediainfo ends in."""
    os.abort()


def exit_at_once(path: Path, sniffed: Sniffed, *, expected_kind: str | None) -> dict[str, Any]:
    os._exit(3)


def crash_once(path: Path, sniffed: Sniffed, *, expected_kind: str | None) -> dict[str, Any]:
    """Dies the first time it sees ``path`` (a marker file beside it remembers), then works:
    a worker lost to something other than the file."""
    marker = Path(f"{path}.crashed")
    if not marker.exists():
        marker.touch()
        os._exit(9)
    return {"pid": os.getpid(), "survived": True}


def memory_bomb(path: Path, sniffed: Sniffed, *, expected_kind: str | None) -> dict[str, Any]:
    """Allocates (and zero-fills) far more than any header parse needs, but only under an
    address-space cap: without one it reports the missing cap instead of eating the host."""
    cap, _hard = resource.getrlimit(resource.RLIMIT_AS)
    if cap == resource.RLIM_INFINITY or cap > 2 * GiB:
        return {"uncapped": cap}
    block = bytearray(8 * GiB)
    return {"size": len(block)}


def broken(path: Path, sniffed: Sniffed, *, expected_kind: str | None) -> dict[str, Any]:
    """An exception the storage tree does not know (a reader bug, an escaped parser error)."""
    raise KeyError("moov")
