"""Media type from the bytes, the job's expected kind, and safe file names.

The type is sniffed from the first bytes (``filetype``, pure Python, ~10 µs) and never taken
from ``Content-Type`` or the URL: a CDN error page served as ``image/png`` with status 200 is
still HTML. The sniff is a gate only; the metadata parser succeeding is the real validation.
Each kind accepts an explicit list of raster/audio/video types: SVG and HTML are never images.

MP4/QuickTime, WebM and Matroska sniff as video, but hold audio only just as often
(``ffmpeg -c:a aac out.mp4``, Opus in WebM): the first bytes cannot tell. For those the
audio-versus-video decision waits for the metadata parse, which reports whether a video
track exists (`may_be_audio_only`, `as_audio_only`, ``check_kind(…, parsed=True)``).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any

import filetype

from storage.errors import ContentRejected

__all__ = [
    "KINDS",
    "SNIFF_BYTES",
    "Sniffed",
    "as_audio_only",
    "check_expected_kind",
    "check_kind",
    "may_be_audio_only",
    "safe_filename",
    "sniff",
]

KINDS = ("image", "video", "audio")
SNIFF_BYTES = 8192  # filetype never looks further than this

_CANONICAL = {
    "audio/x-wav": "audio/wav",
    "audio/x-flac": "audio/flac",
    "audio/x-aiff": "audio/aiff",
}
_KIND_OF: dict[str, str] = {
    **dict.fromkeys(
        (
            "image/png",
            "image/apng",
            "image/jpeg",
            "image/webp",
            "image/gif",
            "image/avif",
            "image/tiff",
            "image/bmp",
        ),
        "image",
    ),
    **dict.fromkeys(
        (
            "audio/mpeg",
            "audio/wav",
            "audio/flac",
            "audio/ogg",
            "audio/mp4",
            "audio/aac",
            "audio/aiff",
            "audio/webm",
            "audio/x-matroska",
        ),
        "audio",
    ),
    **dict.fromkeys(
        ("video/mp4", "video/quicktime", "video/webm", "video/x-matroska", "video/x-m4v"),
        "video",
    ),
}


# Containers sniffed as video that may hold audio only → their type and extension when the
# parse finds no video track (the usual names: .m4a for MP4/QuickTime audio, .mka Matroska).
_AUDIO_ONLY: dict[str, tuple[str, str]] = {
    "video/mp4": ("audio/mp4", "m4a"),
    "video/x-m4v": ("audio/mp4", "m4a"),
    "video/quicktime": ("audio/mp4", "m4a"),
    "video/webm": ("audio/webm", "webm"),
    "video/x-matroska": ("audio/x-matroska", "mka"),
}
_AUDIO_ONLY_TYPES = frozenset(media_type for media_type, _ in _AUDIO_ONLY.values())


@dataclass(frozen=True, slots=True, kw_only=True)
class Sniffed:
    """What the first bytes say: IANA type, media kind (None: not a media type we parse)."""

    media_type: str
    kind: str | None
    extension: str | None


def sniff(head: bytes) -> Sniffed:
    """Identify ``head`` (the first `SNIFF_BYTES` or the whole content)."""
    guess = filetype.guess(head) if head else None
    if guess is not None and guess.mime == "audio/mpeg":
        guess = _behind_id3(head) or guess
    if guess is not None:
        mime = _CANONICAL.get(guess.mime, guess.mime)
        return Sniffed(media_type=mime, kind=_KIND_OF.get(mime), extension=guess.extension)
    if _mp3_frame(head):
        return Sniffed(media_type="audio/mpeg", kind="audio", extension="mp3")
    text = _text_type(head)
    if text is not None:
        return Sniffed(media_type=text[0], kind=None, extension=text[1])
    return Sniffed(media_type="application/octet-stream", kind=None, extension=None)


def may_be_audio_only(sniffed: Sniffed) -> bool:
    """A video container that may hold no video track: its kind is known after the parse."""
    return sniffed.media_type in _AUDIO_ONLY


def as_audio_only(sniffed: Sniffed) -> Sniffed:
    """What ``sniffed`` (`may_be_audio_only`) is once the parse found audio and no video."""
    media_type, extension = _AUDIO_ONLY[sniffed.media_type]
    return Sniffed(media_type=media_type, kind="audio", extension=extension)


def _mp3_frame(head: bytes) -> bool:
    """An untagged MP3 frame header of a kind filetype misses (it knows FF FB/F3/F2 only):
    MPEG-1 with CRC protection (FF FA) and MPEG-2.5 (FF E2/E3: 8 to 12 kHz speech). Layer III
    with valid bitrate and sample-rate indices; mutagen then validates the frames."""
    if len(head) < 4 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return False
    version, layer = (head[1] >> 3) & 3, (head[1] >> 1) & 3
    bitrate, rate = head[2] >> 4, (head[2] >> 2) & 3
    return version != 1 and layer == 1 and bitrate not in (0, 15) and rate != 3


def _behind_id3(head: bytes) -> Any:
    """The audio type after a leading ID3v2 tag, or None (then it is MP3, or unknown).

    filetype calls every file that starts with ``ID3`` MP3, but the tag also precedes ADTS
    AAC (ffmpeg's ``-write_id3v2``, HLS audio) and, from some taggers, FLAC. A tag longer
    than the head (large cover art) leaves nothing to look at: MP3 stays the answer.
    """
    if len(head) < 10 or any(byte & 0x80 for byte in head[6:10]):
        return None
    size = 0
    for byte in head[6:10]:
        size = (size << 7) | byte
    end = 10 + size + (10 if head[5] & 0x10 else 0)  # flag 0x10: a footer follows
    inner = filetype.guess(head[end:]) if len(head) > end else None
    if inner is None or _KIND_OF.get(_CANONICAL.get(inner.mime, inner.mime)) != "audio":
        return None
    return inner


def _text_type(head: bytes) -> tuple[str, str] | None:
    """Name the usual non-media answers (error pages, JSON errors) so messages can say so."""
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n")[:64].lower()
    if start.startswith((b"<!doctype html", b"<html", b"<head", b"<body", b"<title")):
        return "text/html", "html"
    if start.startswith((b"<?xml", b"<svg")):
        svg = b"<svg" in head[:1024].lower()
        return ("image/svg+xml", "svg") if svg else ("application/xml", "xml")
    if start.startswith((b"{", b"[")):
        return "application/json", "json"
    if start and all(32 <= b < 127 or b in b"\t\r\n" for b in start):
        return "text/plain", "txt"
    return None


_ERROR_PAGE_TYPES = ("text/html", "text/plain", "application/json", "application/xml")


def check_expected_kind(expected_kind: str | None) -> str | None:
    """Validate the job's kind before any I/O (it comes from a database row)."""
    if expected_kind is None or expected_kind in KINDS:
        return expected_kind
    raise ContentRejected(
        f"the job expects media kind {expected_kind!r}, which is not one of {', '.join(KINDS)}"
    )


def check_kind(
    sniffed: Sniffed, expected_kind: str | None, head: bytes, *, parsed: bool = False
) -> None:
    """Raise `ContentRejected` unless the sniffed type is acceptable for ``expected_kind``.

    Before the parse (``parsed=False``) a video container passes for an audio job: it may
    hold audio only. After the parse, ``sniffed`` is what the parse made of it (`as_audio_only`
    for a container without a video track), and this check runs again with ``parsed=True``.
    """
    if expected_kind is None or sniffed.kind == expected_kind:
        return
    if not parsed and expected_kind == "audio" and may_be_audio_only(sniffed):
        return
    if parsed and expected_kind == "video" and sniffed.media_type in _AUDIO_ONLY_TYPES:
        raise ContentRejected(
            f"expected a video but the file has no video track (audio only, {sniffed.media_type})"
        )
    if sniffed.kind is not None:
        found = f"{sniffed.media_type}, which is {_with_article(sniffed.kind)}"
    elif sniffed.media_type in _ERROR_PAGE_TYPES:
        found = f"{sniffed.media_type} (starts with {_snippet(head)}), probably an error page"
    else:
        found = f"{sniffed.media_type}, not a supported {expected_kind} type"
    raise ContentRejected(f"expected {_with_article(expected_kind)} but the content is {found}")


_NOUN = {"image": "an image", "video": "a video", "audio": "audio"}


def _with_article(kind: str) -> str:
    return _NOUN.get(kind, kind)


def _snippet(head: bytes, limit: int = 60) -> str:
    text = head[:limit].decode("utf-8", "replace")
    text = " ".join(text.split())
    return repr(text + ("…" if len(head) > limit else ""))


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_EXTENSION_LIKE = re.compile(r"[A-Za-z0-9]{1,10}")
MAX_FILENAME = 120
UNKNOWN_EXTENSION = "bin"
# Other spellings that name the same type as the sniffed extension (filetype's choice first).
_SAME_TYPE = {
    "jpg": ("jpeg", "jpe", "jfif"),
    "tif": ("tiff",),
    "apng": ("png",),
    "heic": ("heif",),
    "mp4": ("m4v",),
    "m4v": ("mp4",),
    "m4a": ("mp4",),
    "mka": ("mkv",),
    "mov": ("qt",),
    "mpg": ("mpeg",),
    "aiff": ("aif",),
    "ogg": ("oga", "opus"),
    "midi": ("mid",),
    "html": ("htm",),
}


def safe_filename(name: str | None, extension: str | None) -> str | None:
    """A file name safe on any filesystem and in ``Content-Disposition``, or None.

    Keeps ASCII letters, digits, ``._-``; drops any directory part and leading dots. The
    extension agrees with the sniffed one: appended when the name has none (``output`` →
    ``output.png``), replaced when it names another type (``out.webp`` holding PNG bytes →
    ``out.png``; ``x.html`` holding unidentified bytes → ``x.bin``), so nothing downstream
    trusts a provider's name for the type (polyglots).
    """
    if not name:
        return None
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = unicodedata.normalize("NFKD", base).encode("ascii", "ignore").decode("ascii")
    base = _UNSAFE.sub("_", base).strip("._-")
    if not base:
        return None
    stem, dot, ext = base.rpartition(".")
    if not dot or not _EXTENSION_LIKE.fullmatch(ext):
        stem, ext = base, extension or ""
    elif not _agrees(ext, extension):
        ext = extension or UNKNOWN_EXTENSION
    stem = stem[: MAX_FILENAME - len(ext) - 1] or "file"
    return f"{stem}.{ext}" if ext else stem


def _agrees(named: str, sniffed: str | None) -> bool:
    if sniffed is None:
        return named.lower() == UNKNOWN_EXTENSION
    return named.lower() in (sniffed, *_SAME_TYPE.get(sniffed, ()))
