"""Metadata parsing benchmark: worker thread (the old path) vs killable worker process.

`storage.isolation` moved the header parse of every stored output (Pillow, mutagen,
libmediainfo) from a worker thread into an anyio worker process with a timeout. This measures
what the process hop costs, per file, on a small PNG and a small MP3 (where the hop dominates;
real parses of big files take longer and the hop stays the same):

* ``metadata_<kind>_thread_us`` / ``metadata_<kind>_process_us`` - mean wall time of one
  parse, sequential, after warm-up; the best of ``--rounds`` rounds (the machine is shared,
  the best round is the least disturbed one). Rounds alternate thread and process.
* ``metadata_<kind>_overhead_us`` - process minus thread: the price of the isolation.
* ``metadata_<kind>_process_per_s_concurrent`` - parses per second with 8 concurrent callers
  through the default 2 processes (and ``…_thread_per_s_concurrent`` through 16 threads).
* ``metadata_worker_startup_ms`` - the first parse in a fresh event loop (a new worker process
  started, the project imported, the file parsed), median of ``--startups`` loops.
* ``metadata_worker_rss_mb`` - resident size of one warm worker process.

The workers re-run this file as ``__mp_main__`` (anyio does that with the parent's main
module), so at module level it imports only the storage modules a parser needs, like the
daemon's ``main.py``, which imports its CLI under the ``__main__`` guard: a worker here starts
with the same imports as one under ``python main.py run``.

Usage: ``python bench/bench_metadata.py [--files 1000] [--rounds 4] [--startups 5]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import psutil

from storage.isolation import MetadataParsers
from storage.metadata import read_metadata
from storage.sniff import Sniffed, sniff

GiB = 1024**3
Parse = Callable[[Path, Sniffed], Awaitable[dict[str, Any]]]


def _parsers() -> MetadataParsers:
    return MetadataParsers(processes=2, timeout_s=30.0, max_memory_bytes=GiB)


def _samples(directory: Path) -> dict[str, tuple[Path, Sniffed]]:
    from simulator.media import render_mp3, render_png  # here: workers need none of it

    files = {"png": render_png(64, 64, "bench"), "mp3": render_mp3(5.0, "bench")}
    out: dict[str, tuple[Path, Sniffed]] = {}
    for kind, data in files.items():
        path = directory / kind
        path.write_bytes(data)
        out[kind] = (path, sniff(data[:8192]))
    return out


async def _mean_us(parse: Parse, path: Path, sniffed: Sniffed, count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        await parse(path, sniffed)
    return (time.perf_counter() - started) / count * 1e6


async def _per_s(parse: Parse, path: Path, sniffed: Sniffed, count: int, callers: int) -> float:
    async def caller(share: int) -> None:
        for _ in range(share):
            await parse(path, sniffed)

    started = time.perf_counter()
    async with anyio.create_task_group() as group:
        for _ in range(callers):
            group.start_soon(caller, count // callers)
    return count / (time.perf_counter() - started)


def _emit(name: str, value: float | str) -> None:
    shown = f"{value:.1f}" if isinstance(value, float) else value
    print(f"{name}: {shown}", flush=True)


async def _compare(samples: dict[str, tuple[Path, Sniffed]], files: int, rounds: int) -> None:
    limiter = anyio.CapacityLimiter(16)  # the Ingestor's file-io threads

    async def in_thread(path: Path, sniffed: Sniffed) -> dict[str, Any]:
        call = partial(read_metadata, path, sniffed, expected_kind=None)
        return await anyio.to_thread.run_sync(call, limiter=limiter)

    parsers = _parsers()

    async def in_process(path: Path, sniffed: Sniffed) -> dict[str, Any]:
        return await parsers.read(path, sniffed, expected_kind=None)

    for path, sniffed in samples.values():  # warm-up: both workers started, libraries loaded
        await _per_s(in_process, path, sniffed, 50, 4)
        await _mean_us(in_thread, path, sniffed, 50)
    workers = [p for p in psutil.Process().children() if "anyio.to_process" in p.cmdline()]
    _emit("metadata_worker_rss_mb", max(p.memory_info().rss for p in workers) / 1e6)
    for kind, (path, sniffed) in samples.items():
        thread, process = [], []
        for _ in range(rounds):
            thread.append(await _mean_us(in_thread, path, sniffed, files // rounds))
            process.append(await _mean_us(in_process, path, sniffed, files // rounds))
        _emit(f"metadata_{kind}_thread_us", min(thread))
        _emit(f"metadata_{kind}_process_us", min(process))
        _emit(f"metadata_{kind}_overhead_us", min(process) - min(thread))
        for name, parse in (("thread", in_thread), ("process", in_process)):
            rate = await _per_s(parse, path, sniffed, files, 8)
            _emit(f"metadata_{kind}_{name}_per_s_concurrent", rate)


def _startup_s(path: Path, sniffed: Sniffed) -> float:
    async def first_parse() -> float:
        started = time.perf_counter()
        await _parsers().read(path, sniffed, expected_kind=None)
        return time.perf_counter() - started

    return anyio.run(first_parse)  # a new loop: a new pool, its workers killed at the end


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=1000, help="sequential parses per kind")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--startups", type=int, default=5)
    args = parser.parse_args()
    _emit("metadata_python", sys.version.split()[0])
    for package in ("anyio", "pillow", "mutagen", "pymediainfo"):
        _emit(f"metadata_{package}", version(package))
    with tempfile.TemporaryDirectory(prefix="bench-metadata-") as directory:
        samples = _samples(Path(directory))
        png_path, png_sniffed = samples["png"]
        startups = [_startup_s(png_path, png_sniffed) for _ in range(args.startups)]
        _emit("metadata_worker_startup_ms", statistics.median(startups) * 1000)
        _emit("metadata_worker_startup_max_ms", max(startups) * 1000)
        anyio.run(_compare, samples, args.files, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
