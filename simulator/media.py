"""Real media bytes for simulated results: PNG, JPEG, WebP, MP4, MP3, WAV, and huge files.

The daemon sniffs types from bytes and reads metadata (dimensions, duration, codec), so the
simulator must serve files those tools accept rather than random blobs. Everything is
generated in-process and deterministically from a `key` (the job id and output index, or a
constant for `static` scenarios): same key, same bytes; different jobs, different blobs.

Huge results (the 2 GiB ingest benchmark) are a small valid file followed by deterministic
padding, streamed chunk by chunk so the server's memory stays constant. For MP4 the padding
sits inside a `free` box, so the file stays a valid MP4; for the other formats it trails the
file's end marker, where parsers stop reading.
"""

from __future__ import annotations

import functools
import hashlib
import io
import math
import random
import struct
import wave
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Final, Literal

from simulator.mp4 import free_box_header, render_mp4

MediaFormat = Literal["png", "jpeg", "webp", "mp4", "mp3", "wav", "bin"]

CONTENT_TYPES: Final[dict[str, str]] = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "mp4": "video/mp4",
    "mp3": "audio/mpeg",
    "wav": "audio/wav",
    "bin": "application/octet-stream",
}
IMAGE_FORMATS: Final = frozenset({"png", "jpeg", "webp"})
AUDIO_FORMATS: Final = frozenset({"mp3", "wav"})

_MP3_SAMPLE_RATE = 44_100
_MP3_SAMPLES_PER_FRAME = 1_152
_MP3_BITRATE = 64_000
_MP3_HEADER = bytes([0xFF, 0xFB, 0x50, 0xC0])  # MPEG-1 Layer III, 64 kbit/s, 44.1 kHz, mono
_MP3_SIDE_INFO = 17  # bytes of side information in a mono MPEG-1 frame
_WAV_RATE = 16_000
_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaSpec:
    """What one result file looks like."""

    fmt: MediaFormat
    width: int = 64
    height: int = 64
    duration_s: float = 2.0


def _shade(key: str) -> int:
    return hashlib.blake2b(key.encode(), digest_size=1).digest()[0]


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def render_png(width: int, height: int, key: str) -> bytes:
    """An RGB gradient PNG tinted by `key`, written with zlib only (no Pillow on the hot path)."""
    row = bytearray(width * 3)
    row[0::3] = bytes(x * 255 // max(1, width - 1) for x in range(width))
    row[2::3] = bytes([_shade(key)]) * width
    rows = bytearray()
    for y in range(height):
        row[1::3] = bytes([y * 255 // max(1, height - 1)]) * width
        rows += b"\x00" + row  # filter type: none
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    text = b"Comment\x00" + key.encode()
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _png_chunk(b"IHDR", header),
            _png_chunk(b"tEXt", text),
            _png_chunk(b"IDAT", zlib.compress(bytes(rows), 6)),
            _png_chunk(b"IEND", b""),
        )
    )


def _render_pillow(fmt: Literal["jpeg", "webp"], width: int, height: int, key: str) -> bytes:
    from PIL import Image  # imported lazily: only JPEG/WebP results need it

    shade = _shade(key)
    image = Image.new("RGB", (width, height), (shade, 255 - shade, (shade * 7) % 256))
    out = io.BytesIO()
    image.save(out, format=fmt.upper(), quality=85)
    return out.getvalue()


def _id3_title(title: str) -> bytes:
    """A minimal ID3v2.3 tag with a TIT2 frame (what real MP3 results usually start with)."""
    text = b"\x00" + title.encode("ascii", "replace")
    frame = b"TIT2" + struct.pack(">I", len(text)) + b"\x00\x00" + text
    size = len(frame)
    syncsafe = bytes((size >> 21 & 0x7F, size >> 14 & 0x7F, size >> 7 & 0x7F, size & 0x7F))
    return b"ID3\x03\x00\x00" + syncsafe + frame


def _mp3_frame_sizes(frames: int) -> list[int]:
    """Frame sizes with the padding pattern a CBR encoder uses to hit the exact bitrate."""
    exact = 144 * _MP3_BITRATE / _MP3_SAMPLE_RATE
    sizes: list[int] = []
    written = 0.0
    for n in range(1, frames + 1):
        size = math.floor(exact * n) - math.floor(written)
        written += size
        sizes.append(size)
    return sizes


def render_mp3(duration_s: float, key: str) -> bytes:
    """Silent CBR MP3 (decodable) with an ID3 title and a Xing "Info" frame for exact length."""
    frames = max(1, round(duration_s * _MP3_SAMPLE_RATE / _MP3_SAMPLES_PER_FRAME))
    sizes = _mp3_frame_sizes(frames + 1)
    info = b"Info" + struct.pack(">II", 1, frames)  # flags: frame count present
    out = bytearray(_id3_title(f"simulator {key}"))
    unpadded = 144 * _MP3_BITRATE // _MP3_SAMPLE_RATE
    for index, size in enumerate(sizes):
        header = bytearray(_MP3_HEADER)
        if size > unpadded:
            header[2] |= 0x02  # padding bit
        body = bytearray(size - 4)
        if index == 0:
            body[_MP3_SIDE_INFO : _MP3_SIDE_INFO + len(info)] = info
        out += header + body
    return bytes(out)


def render_wav(duration_s: float, key: str) -> bytes:
    """16-bit mono PCM WAV holding a quiet sine tone whose pitch depends on `key`."""
    frames = max(1, round(duration_s * _WAV_RATE))
    freq = 220 + _shade(key) * 2
    step = 2 * math.pi * freq / _WAV_RATE
    samples = struct.pack(f"<{frames}h", *(int(3000 * math.sin(step * n)) for n in range(frames)))
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(_WAV_RATE)
        wav.writeframes(samples)
    return out.getvalue()


@functools.lru_cache(maxsize=256)
def render(spec: MediaSpec, key: str) -> bytes:
    """The bytes of one result file (cached: pollers and tests fetch the same file repeatedly)."""
    if spec.fmt == "png":
        return render_png(spec.width, spec.height, key)
    if spec.fmt in ("jpeg", "webp"):
        return _render_pillow(spec.fmt, spec.width, spec.height, key)
    if spec.fmt == "mp4":
        return render_mp4(
            width=spec.width, height=spec.height, duration_s=spec.duration_s, shade=_shade(key)
        )
    if spec.fmt == "mp3":
        return render_mp3(spec.duration_s, key)
    if spec.fmt == "wav":
        return render_wav(spec.duration_s, key)
    return hashlib.sha256(key.encode()).digest() * 32


def audio_duration_s(spec: MediaSpec) -> float:
    """The exact duration the rendered audio has (what a vendor reports as `duration`)."""
    if spec.fmt == "mp3":
        frames = max(1, round(spec.duration_s * _MP3_SAMPLE_RATE / _MP3_SAMPLES_PER_FRAME))
        return round(frames * _MP3_SAMPLES_PER_FRAME / _MP3_SAMPLE_RATE, 2)
    return round(max(1, round(spec.duration_s * _WAV_RATE)) / _WAV_RATE, 2)


@functools.lru_cache(maxsize=8)
def _filler_block(seed: int) -> bytes:
    return random.Random(seed).randbytes(_CHUNK)


@dataclass(frozen=True, slots=True, kw_only=True)
class LargeFile:
    """A file of exactly `total` bytes: a valid small `head` then deterministic padding."""

    head: bytes
    total: int
    seed: int

    async def chunks(self) -> AsyncIterator[bytes]:
        """Yield the file in ≤1 MiB chunks; memory use does not depend on `total`."""
        head = self.head[: self.total]
        if head:
            yield head
        remaining = self.total - len(head)
        block = memoryview(_filler_block(self.seed))
        while remaining > 0:
            size = min(remaining, len(block))
            yield bytes(block[:size])
            remaining -= size

    def materialize(self) -> bytes:
        """The whole file in memory (only for results small enough to inline as base64)."""
        head = self.head[: self.total]
        block = _filler_block(self.seed)
        filler_size = self.total - len(head)
        repeats = -(-filler_size // len(block)) if filler_size > 0 else 0
        return head + (block * repeats)[:filler_size]


def large_file(spec: MediaSpec, key: str, total: int, seed: int) -> LargeFile:
    """A `total`-byte result whose first bytes are a real `spec.fmt` file (see module doc)."""
    if spec.fmt == "bin":
        return LargeFile(head=b"", total=total, seed=seed)
    base = render(spec, key)
    if spec.fmt == "mp4" and total > len(base) + 16:
        padding = total - len(base) - 8
        header = free_box_header(padding)
        if len(header) == 16:
            header = free_box_header(padding - 8)
        return LargeFile(head=base + header, total=total, seed=seed)
    return LargeFile(head=base, total=total, seed=seed)
