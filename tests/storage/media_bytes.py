"""Tiny media files built byte by byte: headers a parser reads, no real audio or video.

No encoder is needed (none is installed): each container's header states the facts the
metadata reader reports, which is exactly what the tests check.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from mutagen.ogg import OggPage

_new_page: Callable[[], Any] = OggPage  # mutagen is untyped

__all__ = ["adts_aac", "flac", "id3v2", "mp3_frames", "ogg_opus", "webm"]


def flac(*, rate: int = 44100, channels: int = 2, bits: int = 16, seconds: int = 1) -> bytes:
    """``fLaC`` and a STREAMINFO block (the last metadata block), no frames."""
    packed = (rate << 44) | ((channels - 1) << 41) | ((bits - 1) << 36) | (rate * seconds)
    info = struct.pack(">HH", 4096, 4096) + bytes(6) + packed.to_bytes(8, "big") + bytes(16)
    return b"fLaC" + bytes([0x80]) + len(info).to_bytes(3, "big") + info


def id3v2(title: bytes = b"generated") -> bytes:
    """An ID3v2.4 tag with one TIT2 frame, as ffmpeg's ``-write_id3v2 1`` (ADTS muxer) puts
    in front of AAC, and some taggers in front of FLAC: sizes are 7-bit "synchsafe"."""

    def synchsafe(size: int) -> bytes:
        return bytes((size >> shift) & 0x7F for shift in (21, 14, 7, 0))

    text = b"\x03" + title
    frame = b"TIT2" + synchsafe(len(text)) + b"\x00\x00" + text
    return b"ID3\x04\x00\x00" + synchsafe(len(frame)) + frame


def mp3_frames(header: bytes, frame_bytes: int, *, frames: int = 100) -> bytes:
    """Untagged MP3: ``frames`` frames of ``frame_bytes`` behind the 4-byte ``header``."""
    return (header + bytes(frame_bytes - 4)) * frames


def adts_aac(*, frames: int = 50) -> bytes:
    """AAC-LC ADTS frames at 44.1 kHz stereo (index 4, channel configuration 2)."""
    payload = b"\x21\x00" + bytes(20)
    size = 7 + len(payload)
    profile, rate_index, channels = 1, 4, 2
    header = bytes(
        [
            0xFF,
            0xF1,
            (profile << 6) | (rate_index << 2) | (channels >> 2),
            ((channels & 3) << 6) | ((size >> 11) & 3),
            (size >> 3) & 0xFF,
            ((size & 7) << 5) | 0x1F,
            0xFC,
        ]
    )
    return (header + payload) * frames


def ogg_opus(*, channels: int = 2, pre_skip: int = 312) -> bytes:
    """OpusHead, OpusTags and one page whose granule position makes one second."""
    head = b"OpusHead" + bytes([1, channels]) + struct.pack("<HIhB", pre_skip, 48000, 0, 0)
    tags = b"OpusTags" + struct.pack("<I", 6) + b"tester" + struct.pack("<I", 0)
    pages = []
    for sequence, (packets, position) in enumerate(
        [([head], 0), ([tags], 0), ([b"\xfc\xff\xfe"] * 50, 48000 + pre_skip)]
    ):
        page = _new_page()
        page.packets, page.serial, page.sequence, page.position = packets, 7, sequence, position
        pages.append(page)
    pages[0].first, pages[-1].last = True, True
    return b"".join(bytes(page.write()) for page in pages)


def _element(element_id: int, data: bytes) -> bytes:
    size = bytes([0x80 | len(data)]) if len(data) < 127 else (0x10000000 | len(data)).to_bytes(4)
    return element_id.to_bytes((element_id.bit_length() + 7) // 8) + size + data


def _uint(element_id: int, value: int) -> bytes:
    return _element(element_id, value.to_bytes(max(1, (value.bit_length() + 7) // 8)))


def webm(
    *,
    width: int = 64,
    height: int = 48,
    duration_ms: float = 1000.0,
    video: bool = True,
    audio: bytes | None = None,
    doctype: bytes = b"webm",
) -> bytes:
    """EBML header (DocType ``doctype``), Info with a duration, one VP8 track (``video``), one
    mono 48 kHz track of codec ``audio`` (e.g. ``b"A_OPUS"``) if given, one tiny cluster."""
    header = _element(
        0x1A45DFA3,
        _uint(0x4286, 1)
        + _uint(0x42F7, 1)
        + _uint(0x42F2, 4)
        + _uint(0x42F3, 8)
        + _element(0x4282, doctype)
        + _uint(0x4287, 2)
        + _uint(0x4285, 2),
    )
    info = _element(
        0x1549A966,
        _uint(0x2AD7B1, 1_000_000)
        + _element(0x4489, struct.pack(">d", duration_ms))
        + _element(0x4D80, b"test")
        + _element(0x5741, b"test"),
    )
    tracks = b""
    if video:
        picture = _element(0xE0, _uint(0xB0, width) + _uint(0xBA, height))
        tracks += _element(
            0xAE,
            _uint(0xD7, 1) + _uint(0x73C5, 1) + _uint(0x83, 1) + _element(0x86, b"V_VP8") + picture,
        )
    if audio is not None:
        sound = _element(0xE1, _element(0xB5, struct.pack(">d", 48000.0)) + _uint(0x9F, 1))
        number = 2 if video else 1
        tracks += _element(
            0xAE,
            _uint(0xD7, number)
            + _uint(0x73C5, number)
            + _uint(0x83, 2)
            + _element(0x86, audio)
            + sound,
        )
    cluster = _element(0x1F43B675, _uint(0xE7, 0) + _element(0xA3, b"\x81\x00\x00\x80" + bytes(32)))
    return header + _element(0x18538067, info + _element(0x1654AE6B, tracks) + cluster)
