"""Fill a temp file from a byte stream in constant memory, hashing SHA-256 on the way.

The event loop only collects chunks. Every ~1 MiB the batch goes to a writer task, which makes
one worker-thread hop to update the hash and write the batch (``hashlib`` and ``os.write``
release the GIL, so hashing runs in parallel with receiving the next batch). One hop per
64 KiB chunk would halve throughput (a hop costs ~0.1 ms); hashing inline would stall the
loop. Memory is bounded by the batch size times the writer's queue depth (a few MiB) whatever
the file size.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from storage.errors import StorageError, TooLarge
from storage.fs import TempFile, os_error, write_all
from storage.sniff import SNIFF_BYTES

__all__ = ["BATCH_BYTES", "LIMIT_HINT", "Spool", "SpoolResult", "describe_size", "too_large"]

BATCH_BYTES = 1024 * 1024
QUEUE_DEPTH = 2
LIMIT_HINT = "POLLER_MAX_DOWNLOAD_BYTES"


def describe_size(size: int) -> str:
    """``12.0 MiB`` style for messages; exact bytes below 1 KiB."""
    if size < 1024:
        return f"{size} bytes"
    value, unit = size / 1024, "KiB"
    for bigger in ("MiB", "GiB", "TiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{value:.1f} {unit}"


def too_large(limit: int, *, size: int | None = None) -> TooLarge:
    """The over-the-cap error, with the exact size when it is known (Content-Length, inline)."""
    if size is not None:
        return TooLarge(
            f"result is {describe_size(size)}, over the {describe_size(limit)} limit ({LIMIT_HINT})"
        )
    return TooLarge(
        f"result is larger than the {describe_size(limit)} limit ({LIMIT_HINT}); "
        "stopped reading at the limit"
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class SpoolResult:
    """A complete, fsynced temp file: its digest, size and first bytes (for sniffing)."""

    content_hash: str
    size_bytes: int
    head: bytes


class Spool:
    """One temp file being filled; run `writer` in a task group while feeding chunks.

    ``on_head`` is called once with the first `SNIFF_BYTES` (or everything, if shorter), so a
    wrong type aborts the transfer early instead of after a 2 GiB HTML page.
    """

    def __init__(
        self,
        temp: TempFile,
        *,
        limiter: anyio.CapacityLimiter,
        max_bytes: int,
        on_head: Callable[[bytes], object],
    ) -> None:
        self._temp = temp
        self._limiter = limiter
        self._max_bytes = max_bytes
        self._on_head = on_head
        self._hasher = hashlib.sha256()
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._size = 0
        self._head = bytearray()
        self._head_checked = False
        self._failure: StorageError | None = None
        self._send: MemoryObjectSendStream[list[bytes]]
        self._receive: MemoryObjectReceiveStream[list[bytes]]
        self._send, self._receive = anyio.create_memory_object_stream[list[bytes]](QUEUE_DEPTH)

    async def feed(self, chunk: bytes) -> None:
        """Accept the next chunk; raises `TooLarge`, the head check's error or a write error."""
        if self._failure is not None:
            raise self._failure
        self._size += len(chunk)
        if self._size > self._max_bytes:
            raise too_large(self._max_bytes)
        if not self._head_checked:
            self._head += chunk[: SNIFF_BYTES - len(self._head)]
            if len(self._head) >= SNIFF_BYTES:
                self._check_head()
        self._pending.append(chunk)
        self._pending_bytes += len(chunk)
        if self._pending_bytes >= BATCH_BYTES:
            await self._flush()

    async def end(self) -> None:
        """All chunks fed: run the head check on short content and flush the last batch.

        Empty content skips the type check: "empty" is the clearer rejection, made later.
        """
        if not self._head_checked and self._head:
            self._check_head()
        await self._flush()
        self.close_input()

    def close_input(self) -> None:
        """Let the writer finish; safe to call twice (also used on failure paths)."""
        self._send.close()

    def close(self) -> None:
        """Release both queue ends, whether or not the writer ever ran."""
        self._send.close()
        self._receive.close()

    async def writer(self) -> None:
        """Task body: hash and write batches in worker threads until input closes.

        Never raises: a write error is kept and re-raised to the feeding side, and later
        batches are drained unwritten so the feeder never blocks on a full queue.
        """
        async with self._receive:
            async for batch in self._receive:
                if self._failure is not None:
                    continue
                try:
                    await anyio.to_thread.run_sync(self._write, batch, limiter=self._limiter)
                except OSError as exc:
                    self._failure = os_error(exc, "writing the download's temp file")

    async def result(self) -> SpoolResult:
        """After the writer finished: fsync the file and return digest and size."""
        if self._failure is not None:
            raise self._failure
        try:
            await anyio.to_thread.run_sync(self._temp.seal, limiter=self._limiter)
        except OSError as exc:
            raise os_error(exc, "syncing the download's temp file") from exc
        return SpoolResult(
            content_hash=self._hasher.hexdigest(), size_bytes=self._size, head=bytes(self._head)
        )

    async def write_bytes(self, data: bytes) -> SpoolResult:
        """Whole in-memory content (inline outputs): one thread hop, same hashing and fsync."""
        self.close()  # no writer task: the bytes are already in memory
        self._size = len(data)
        self._head = bytearray(data[:SNIFF_BYTES])
        view = memoryview(data)
        batches = [
            view[offset : offset + BATCH_BYTES] for offset in range(0, len(data), BATCH_BYTES)
        ]
        try:
            await anyio.to_thread.run_sync(self._write_each, batches, limiter=self._limiter)
        except OSError as exc:
            raise os_error(exc, "writing the inline result's temp file") from exc
        return await self.result()

    def _check_head(self) -> None:
        self._head_checked = True
        self._on_head(bytes(self._head))

    async def _flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending, self._pending_bytes = self._pending, [], 0
        await self._send.send(batch)

    def _write_each(self, batches: list[memoryview]) -> None:
        for batch in batches:
            self._write([batch])

    def _write(self, batch: list[bytes] | list[memoryview]) -> None:
        """Hash and write one batch as a single buffer.

        One ``update`` and one ``write`` per batch, not per 64 KiB chunk: each call releases
        and re-takes the GIL, and re-taking it can wait for the event loop's switch interval,
        so per-chunk calls convoy behind the loop thread.
        """
        fd = self._temp.fd
        assert fd is not None, "temp file already closed"
        data = batch[0] if len(batch) == 1 else b"".join(batch)
        self._hasher.update(data)
        write_all(fd, [data])
