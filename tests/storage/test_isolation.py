"""Metadata parsing in killable worker processes: hangs, crashes and memory bombs of a parser
end in `ContentRejected`, the next parse still works, and no process is left behind.

Everything runs for real: anyio's worker processes, SIGKILL on timeout, a segfaulting
process, ``RLIMIT_AS``. The misbehaving readers live in `tests.storage.parsers`, which the
workers import by name. Parser processes are shared by everything in one event loop, so a
test that times a hang first warms a worker: the timeout then measures the hang, not the
~1 s a fresh process needs to import the project.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest
from structlog.testing import capture_logs

from storage import StorageConfig, open_storage
from storage.errors import ContentRejected, ParserCrashed, ParserTimeout, StorageConfigError
from storage.isolation import MetadataParsers, Reader, _parse_in_worker
from storage.metadata import read_metadata
from storage.sniff import Sniffed, sniff
from tests.storage import parsers
from tests.storage.helpers import Backend, assert_nothing_stored, fixture, local_config, png

pytestmark = pytest.mark.anyio

MiB = 1024 * 1024
PNG_SNIFFED = Sniffed(media_type="image/png", kind="image", extension="png")
CRASHED = (
    "the metadata parser crashed on this file (image/png, twice, each time in a fresh "
    "process); the file was rejected"
)


def make_parsers(**changes: Any) -> MetadataParsers:
    settings: dict[str, Any] = {"processes": 1, "timeout_s": 30.0, "max_memory_bytes": 1024 * MiB}
    return MetadataParsers(**(settings | changes))


@pytest.fixture
def png_file(tmp_path: Path) -> Path:
    path = tmp_path / "upload"
    path.write_bytes(png(64, 48))
    return path


def worker_children() -> list[psutil.Process]:
    """This test process's anyio worker processes (the PostgreSQL or moto servers a session
    may have started are children too, so match the worker's command line)."""
    workers = []
    for child in psutil.Process().children():
        try:
            if "anyio.to_process" in child.cmdline():
                workers.append(child)
        except psutil.NoSuchProcess:
            continue
    return workers


def assert_no_dead_workers() -> None:
    """Killed or crashed workers are reaped (no zombies); the rest are alive and idle."""
    statuses = [child.status() for child in worker_children()]
    assert psutil.STATUS_ZOMBIE not in statuses


async def pid_of_worker(parsers_: MetadataParsers, path: Path) -> int:
    facts = await parsers_.read(path, PNG_SNIFFED, expected_kind=None, reader=parsers.worker_pid)
    pid = facts["pid"]
    assert isinstance(pid, int) and pid != os.getpid()
    return pid


async def test_a_hanging_parse_is_killed_at_the_timeout_and_the_next_parse_works(
    png_file: Path,
) -> None:
    pool = make_parsers()
    hung_worker = await pid_of_worker(pool, png_file)
    quick = make_parsers(timeout_s=0.5)
    started = anyio.current_time()
    with capture_logs() as logs, pytest.raises(ParserTimeout) as info:
        await quick.read(png_file, PNG_SNIFFED, expected_kind="image", reader=parsers.hang)
    elapsed = anyio.current_time() - started
    assert str(info.value) == (
        "reading the image's metadata took longer than 0.5 s; the file (image/png) was "
        "rejected (POLLER_METADATA_TIMEOUT_S)"
    )
    assert 0.5 <= elapsed < 5
    assert [(e["event"], e["timeout_s"]) for e in logs] == [("storage.metadata_timeout", 0.5)]
    assert not psutil.pid_exists(hung_worker)  # SIGKILLed and reaped: no zombie
    facts = await pool.read(png_file, PNG_SNIFFED, expected_kind="image")
    assert (facts["width"], facts["height"], facts["format"]) == (64, 48, "PNG")
    assert await pid_of_worker(pool, png_file) != hung_worker  # anyio started a new one
    assert_no_dead_workers()


@pytest.mark.parametrize(
    "crasher",
    [parsers.segfault, parsers.abort, parsers.exit_at_once],
    ids=["SIGSEGV", "abort", "_exit"],
)
async def test_a_parser_that_kills_its_process_rejects_the_file_and_the_next_parse_works(
    png_file: Path, crasher: Reader
) -> None:
    pool = make_parsers()
    with capture_logs() as logs, pytest.raises(ParserCrashed) as info:
        await pool.read(png_file, PNG_SNIFFED, expected_kind="image", reader=crasher)
    assert str(info.value) == CRASHED
    assert isinstance(info.value, ContentRejected)  # the job fails; metrics tell it apart
    assert [(e["event"], e["attempt"]) for e in logs] == [
        ("storage.metadata_crashed", 1),
        ("storage.metadata_crashed", 2),
    ]
    facts = await pool.read(png_file, PNG_SNIFFED, expected_kind="image")
    assert facts["width"] == 64
    assert_no_dead_workers()


async def test_a_worker_lost_once_is_replaced_and_the_parse_tried_again(png_file: Path) -> None:
    pool = make_parsers()
    with capture_logs() as logs:
        facts = await pool.read(
            png_file, PNG_SNIFFED, expected_kind=None, reader=parsers.crash_once
        )
    assert facts["survived"] is True
    assert [(e["event"], e["attempt"]) for e in logs] == [("storage.metadata_crashed", 1)]


async def test_a_memory_bomb_fails_the_parse_inside_the_cap_and_the_worker_lives_on(
    png_file: Path,
) -> None:
    capped = make_parsers(max_memory_bytes=512 * MiB)
    worker = await pid_of_worker(capped, png_file)
    with pytest.raises(ContentRejected) as info:
        await capped.read(png_file, PNG_SNIFFED, expected_kind=None, reader=parsers.memory_bomb)
    assert str(info.value) == (
        "reading the metadata of this file (image/png) needed more than 512.0 MiB of memory; "
        "the file was rejected (POLLER_METADATA_MAX_MEMORY_BYTES)"
    )
    assert await pid_of_worker(capped, png_file) == worker  # a MemoryError is survivable
    # The native parsers load and work under the cap (libmediainfo is mapped on first use).
    clip = png_file.with_name("clip")
    clip.write_bytes(fixture("clip.mp4"))
    video = await capped.read(clip, sniff(fixture("clip.mp4")[:8192]), expected_kind="video")
    assert (video["codec"], video["width"]) == ("h264", 64)
    # The cap is set per call (soft limit only): another pool in the loop may lift it.
    uncapped = make_parsers(max_memory_bytes=0)
    lifted = await uncapped.read(
        png_file, PNG_SNIFFED, expected_kind=None, reader=parsers.memory_bomb
    )
    assert lifted == {"uncapped": -1}  # RLIM_INFINITY


async def test_an_unexpected_reader_exception_is_a_rejection_the_daemon_can_unpickle(
    png_file: Path,
) -> None:
    with pytest.raises(ContentRejected) as info:
        await make_parsers().read(png_file, PNG_SNIFFED, expected_kind=None, reader=parsers.broken)
    assert str(info.value) == (
        "the metadata parser failed on this file (image/png): KeyError: 'moov'"
    )


async def test_parses_queue_for_a_free_process_without_spending_their_timeout(
    png_file: Path,
) -> None:
    """One process, one hanging file: a good file queued behind it waits longer than the
    timeout, then gets a fresh process and its own full timeout."""
    pool = make_parsers(processes=1, timeout_s=3.0)
    await pid_of_worker(pool, png_file)
    outcomes: dict[str, Any] = {}

    async def parse(name: str, reader: Reader) -> None:
        try:
            outcomes[name] = await pool.read(
                png_file, PNG_SNIFFED, expected_kind=None, reader=reader
            )
        except ContentRejected as exc:
            outcomes[name] = exc
        outcomes[f"{name}_done"] = anyio.current_time()

    started = anyio.current_time()
    async with anyio.create_task_group() as group:
        group.start_soon(parse, "hostile", parsers.hang)
        await anyio.sleep(0.2)  # the hostile file holds the only process
        group.start_soon(parse, "good", read_metadata)
    assert isinstance(outcomes["hostile"], ContentRejected)
    assert outcomes["good"]["width"] == 64
    assert outcomes["good_done"] - started >= 3.0  # it waited for the hang to be killed


def test_the_worker_function_refuses_to_run_in_the_daemon(png_file: Path) -> None:
    """Its caps (RLIMIT_AS, SIGINT ignored) must never land on the daemon's own process."""
    with pytest.raises(RuntimeError, match="must run in a worker process"):
        _parse_in_worker(
            parsers.worker_pid, str(png_file), PNG_SNIFFED, None, 1024 * MiB, os.getpid()
        )


def test_workers_are_gone_when_the_event_loop_ends(png_file: Path) -> None:
    """A daemon that stops (its loop ends) leaves no parser process, alive or zombie, even
    after a kill and a crash."""
    seen: list[int] = []

    async def scenario() -> None:
        pool = make_parsers(processes=2)
        seen.append(await pid_of_worker(pool, png_file))
        with pytest.raises(ContentRejected):
            await make_parsers(timeout_s=0.5).read(
                png_file, PNG_SNIFFED, expected_kind=None, reader=parsers.hang
            )
        with pytest.raises(ContentRejected):
            await pool.read(png_file, PNG_SNIFFED, expected_kind=None, reader=parsers.segfault)
        seen.append(await pid_of_worker(pool, png_file))

    anyio.run(scenario)
    assert all(not psutil.pid_exists(pid) for pid in seen)
    assert [p.pid for p in worker_children() if p.pid in seen] == []


async def test_a_hanging_parse_fails_the_ingest_and_leaves_no_blob_and_no_temp_file(
    backend: Backend, png_file: Path
) -> None:
    """Metadata is read before the blob is published: a rejected file never becomes one."""
    await pid_of_worker(make_parsers(), png_file)  # warm: the 1 s below times the hang only
    config = dataclasses.replace(backend.config, metadata_timeout_s=1.0)
    async with open_storage(config, metadata_reader=parsers.hang) as ingestor:
        with pytest.raises(ContentRejected) as info:
            await ingestor.ingest_bytes(png(), expected_kind="image", filename="out.png")
        await assert_nothing_stored(ingestor, backend.tmp_dir)
    assert str(info.value) == (
        "reading the image's metadata took longer than 1 s; the file (image/png) was "
        "rejected (POLLER_METADATA_TIMEOUT_S)"
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"metadata_timeout_s": 0}, "metadata_timeout_s must be greater than 0"),
        ({"metadata_processes": 0}, "metadata_processes must be greater than 0"),
        ({"metadata_max_memory_bytes": -1}, "metadata_max_memory_bytes must not be negative"),
        ({"metadata_max_memory_bytes": 64 * MiB}, "a parser process needs at least 256 MiB"),
    ],
)
def test_bad_metadata_limits_are_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(StorageConfigError, match=message):
        StorageConfig(storage_url="file:///x", **changes)


async def test_types_without_a_parser_skip_the_parser_process(tmp_path: Path) -> None:
    """No media kind, no parser: such outputs never wait for (or start) a worker process."""
    config = local_config(tmp_path / "root", metadata_timeout_s=0.5)
    async with open_storage(config, metadata_reader=parsers.hang) as ingestor:
        blob = await ingestor.ingest_bytes(b"\x00\x01binary" * 100, expected_kind=None)
    assert (blob.media_type, blob.metadata) == ("application/octet-stream", {})


DAEMON = """
import sys
from pathlib import Path

import anyio

from storage.isolation import MetadataParsers
from storage.sniff import Sniffed
from tests.storage import parsers


async def main() -> None:
    pool = MetadataParsers(processes=1, timeout_s=600, max_memory_bytes=0)
    sniffed = Sniffed(media_type="image/png", kind="image", extension="png")
    await pool.read(
        Path(sys.argv[1]), sniffed, expected_kind=None, reader=parsers.hang_after_writing_pid
    )


anyio.run(main)
"""


def test_a_hung_parser_dies_with_a_daemon_that_was_killed(png_file: Path) -> None:
    """SIGKILL (or the OOM killer) gives the daemon no chance to stop its workers; a hung one
    must not live on as an orphan."""
    root = Path(__file__).resolve().parents[2]
    daemon = subprocess.Popen([sys.executable, "-c", DAEMON, str(png_file)], cwd=root)
    pid_file = Path(f"{png_file}.pid")
    try:
        deadline = time.monotonic() + 60
        while not pid_file.exists() or not pid_file.read_text():
            assert daemon.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        worker = psutil.Process(int(pid_file.read_text()))
        assert worker.ppid() == daemon.pid
        daemon.kill()
        daemon.wait()
        with contextlib.suppress(psutil.NoSuchProcess):
            worker.wait(timeout=10)  # no TimeoutExpired: gone with its parent
    finally:
        daemon.kill()
        daemon.wait()
        _kill_leftover(pid_file)


def _kill_leftover(pid_file: Path) -> None:
    """Do not leak the hung worker when the test fails (pid 0 would be our process group)."""
    text = pid_file.read_text() if pid_file.exists() else ""
    if text.isdigit() and int(text) > 1:
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(int(text)).kill()


def test_a_parser_process_started_by_the_daemon_does_not_import_the_daemon() -> None:
    """anyio's worker re-runs the parent's ``__main__`` file as ``__mp_main__``: for
    ``main.py`` that must not import the CLI and with it the whole daemon (twice the start-up
    time and 30 MB more per parser process, measured)."""
    root = Path(__file__).resolve().parents[2]
    probe = (
        "import runpy, sys; runpy.run_path('main.py', run_name='__mp_main__'); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('poller', 'providers')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=root, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"
