"""The spool's memory bound: a slow disk holds back the download instead of filling RAM."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import anyio
import pytest

from storage.fs import create_temp_file
from storage.spool import BATCH_BYTES, QUEUE_DEPTH, Spool

pytestmark = pytest.mark.anyio

CHUNK = b"x" * 65536
CHUNKS = 200  # 12.5 MiB, several times the bound


async def test_a_stalled_writer_holds_the_feeder_to_a_few_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Held in memory at most: the batch being written, QUEUE_DEPTH queued, one pending."""
    gate = threading.Event()
    real_write = Spool._write

    def stalled_write(self: Spool, batch: list[bytes] | list[memoryview]) -> None:
        gate.wait(timeout=10)
        real_write(self, batch)

    monkeypatch.setattr(Spool, "_write", stalled_write)
    temp = create_temp_file(tmp_path)
    spool = Spool(
        temp, limiter=anyio.CapacityLimiter(2), max_bytes=1 << 40, on_head=lambda head: None
    )
    fed = 0

    async def feed_everything() -> None:
        nonlocal fed
        for _ in range(CHUNKS):
            await spool.feed(CHUNK)
            fed += len(CHUNK)
        await spool.end()

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(spool.writer)
            group.start_soon(feed_everything)
            await anyio.sleep(0.3)
            held = fed
            gate.set()
    finally:
        gate.set()
        spool.close()
    result = await spool.result()
    temp.discard()

    assert QUEUE_DEPTH * BATCH_BYTES <= held <= (QUEUE_DEPTH + 2) * BATCH_BYTES <= 4 * 1024**2
    assert result.size_bytes == CHUNKS * len(CHUNK)
    assert result.content_hash == hashlib.sha256(CHUNK * CHUNKS).hexdigest()
