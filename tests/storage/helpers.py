"""Helpers shared by the storage tests (fixtures live in conftest.py)."""

from __future__ import annotations

import hashlib
import io
import ipaddress
import ssl
import struct
import wave
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from PIL import Image

from storage import DownloadHooks, Ingestor, StorageConfig

FIXTURES = Path(__file__).parent / "fixtures"

Resolver = Callable[[str, int], Awaitable[Sequence[str]]]


@dataclass(frozen=True, slots=True)
class Backend:
    """How a test reaches a backend: its config, a raw reader for stored bytes, its temp dir."""

    name: str
    config: StorageConfig
    read: Callable[[str], bytes]
    tmp_dir: Path


@dataclass(frozen=True, slots=True)
class CertAuthority:
    server_context: ssl.SSLContext
    client_context: ssl.SSLContext


async def assert_nothing_stored(ingestor: Ingestor, tmp_dir: Path) -> None:
    """After a failure: no blob was published and no temp file was left behind."""
    blobs = [blob async for blob in ingestor.store.iter_blobs()]
    assert blobs == []
    assert [entry.name async for entry in anyio.Path(tmp_dir).iterdir()] == []


def stub_resolver(table: Mapping[str, Sequence[str]], calls: list[str] | None = None) -> Resolver:
    """Resolve from ``table`` (no DNS); unknown names fail like NXDOMAIN."""

    async def resolve(host: str, port: int) -> Sequence[str]:
        if calls is not None:
            calls.append(host)
        if host not in table:
            raise OSError(f"unknown test host {host}")
        return table[host]

    return resolve


def guarded_hooks(ca: CertAuthority, table: Mapping[str, Sequence[str]]) -> DownloadHooks:
    """The production guard, but 127.0.0.1 (only) is reachable and the test CA trusted."""
    return DownloadHooks(
        resolver=stub_resolver(table),
        ssl_context=ca.client_context,
        allowed_networks=(ipaddress.ip_network("127.0.0.1/32"),),
    )


def local_config(root: Path, **changes: Any) -> StorageConfig:
    """Local storage that may download from the loopback test server over http."""
    settings: dict[str, Any] = {"storage_url": f"file://{root}", "allow_private_downloads": True}
    return StorageConfig(**(settings | changes))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def png(width: int = 64, height: int = 48, color: str = "red") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, "PNG")
    return out.getvalue()


def image_bytes(fmt: str, width: int = 32, height: int = 24) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), "blue").save(out, fmt)
    return out.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG signature and IHDR claiming ``width`` x ``height`` (no pixel data at all)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr
    chunk += struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk


def wav(seconds: float = 0.5, rate: int = 8000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(b"\x00\x00" * int(seconds * rate))
    return out.getvalue()


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


class RecordingGuard:
    """A `storage.DedupGuard` that records what it guards and runs ``on_enter`` inside."""

    def __init__(self, on_enter: Callable[[], Awaitable[None]] | None = None) -> None:
        self.on_enter = on_enter
        self.entered: list[str] = []
        self.held = False

    @asynccontextmanager
    async def __call__(self, content_hash: str) -> AsyncIterator[None]:
        self.entered.append(content_hash)
        if self.on_enter is not None:
            await self.on_enter()
        self.held = True
        try:
            yield
        finally:
            self.held = False
