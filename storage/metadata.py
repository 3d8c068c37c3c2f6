"""Facts about a stored file, read from headers only: never a full decode of untrusted media.

Runs in a killable worker process with a timeout and a memory cap (`storage.isolation`),
never in the daemon: these parsers include native code (libmediainfo, Pillow's decoders)
fed untrusted bytes, and a hang or a segfault there must cost one file, not the daemon. So
`read_metadata` stays a module-level function of plain, picklable arguments; its failures
are `ContentRejected`. Pillow's ``Image.open`` is lazy (header only) and raises on
decompression bombs from the declared size; mutagen reads audio headers/frames; MediaInfo
(the pymediainfo wheel bundles libmediainfo, so no system package) reads container headers.
A file whose sniffed type is a media kind but that its parser cannot read is rejected: the
sniff is a gate, the parser succeeding is the validation.

A video container (MP4/QuickTime, WebM, Matroska) with audio tracks and no video track is
audio: its facts are audio facts from the same MediaInfo parse, flagged with the key
`AUDIO_ONLY`, which the caller removes and turns into the audio type
(`storage.sniff.as_audio_only`), then checks the job's kind against.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mutagen
from mutagen.aac import AAC
from mutagen.flac import FLAC
from mutagen.mp3 import MP3
from PIL import Image
from pymediainfo import MediaInfo

from storage.errors import ContentRejected
from storage.sniff import Sniffed, may_be_audio_only

__all__ = ["AUDIO_ONLY", "MAX_IMAGE_PIXELS", "read_metadata"]

# In the facts of a video container that holds audio only; never stored (the caller pops it).
AUDIO_ONLY = "_audio_only"

# Pillow warns above this and raises only above twice this; we refuse the whole warning band.
MAX_IMAGE_PIXELS: int = Image.MAX_IMAGE_PIXELS or 89_478_485

_AUDIO_CODECS = {
    "audio/mpeg": "mp3",
    "audio/flac": "flac",
    "audio/wav": "pcm",
    "audio/aiff": "pcm",
    "audio/aac": "aac",
}
_PARSERS: dict[str, Callable[[Path], Any]] = {
    "audio/aac": AAC,
    "audio/flac": FLAC,
    "audio/mpeg": MP3,
}
_OGG_CODECS = {
    "OggVorbis": "vorbis",
    "OggOpus": "opus",
    "OggFLAC": "flac",
    "OggSpeex": "speex",
    "OggTheora": "theora",
}
_VIDEO_CODECS = {
    "AVC": "h264",
    "HEVC": "hevc",
    "VP8": "vp8",
    "VP9": "vp9",
    "AV1": "av1",
    "MPEG-4 Visual": "mpeg4",
    "ProRes": "prores",
}
# MediaInfo's audio format names (lower-cased: it says "Flac" for some Matroska tracks) → the
# codec names `_audio` reports for the same streams.
_MEDIAINFO_AUDIO_CODECS = {
    "mpeg audio": "mp3",
    "ac-3": "ac3",
    "e-ac-3": "eac3",
}
_LOSSLESS = ("flac", "pcm", "alac")  # bit depth is a property of the stream only for these


def read_metadata(path: Path, sniffed: Sniffed, *, expected_kind: str | None) -> dict[str, Any]:
    """Facts for ``StoredBlob.metadata``; `ContentRejected` if the file is unreadable/a bomb."""
    if sniffed.kind == "image":
        return _image(path)
    if sniffed.kind == "audio":
        return _audio(path, sniffed)
    if sniffed.kind == "video":
        return _video(path, sniffed, require_video=expected_kind == "video")
    return {}


def _undecodable(sniffed_type: str, exc: BaseException) -> ContentRejected:
    detail = str(exc) or type(exc).__name__
    return ContentRejected(f"the content looks like {sniffed_type} but cannot be read: {detail}")


def _bomb(width: int, height: int) -> ContentRejected:
    return ContentRejected(
        f"image is {width}×{height} = {width * height / 1e6:.1f} megapixels, over the "
        f"{MAX_IMAGE_PIXELS / 1e6:.1f}-megapixel limit (decompression-bomb guard)"
    )


def _image(path: Path) -> dict[str, Any]:
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise _bomb(width, height)
            return {
                "width": width,
                "height": height,
                "format": image.format,
                "mode": image.mode,
                "animated": bool(getattr(image, "is_animated", False)),
            }
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ContentRejected(f"image rejected as a likely decompression bomb: {exc}") from exc
    except ContentRejected:
        raise
    except Exception as exc:  # any parser failure on untrusted bytes means "not readable"
        raise _undecodable("an image", exc) from exc


def _audio(path: Path, sniffed: Sniffed) -> dict[str, Any]:
    # mutagen.File guesses the format, and recognises raw ADTS AAC only by a file name
    # ending in .aac: the extension-less temp file would read as "no audio stream". It also
    # takes any file starting with an ID3 tag for MP3, which a tagged FLAC can start with, and
    # knows untagged MP3 only by frame starts FF FB/F3/F2.
    parse = _PARSERS.get(sniffed.media_type, mutagen.File)
    try:
        parsed = parse(path)
    except Exception as exc:  # mutagen raises more than MutagenError on malformed input
        raise _undecodable(sniffed.media_type, exc) from exc
    # A FileType without tags is falsy: compare with None, never test truthiness.
    if parsed is None or getattr(parsed, "info", None) is None:
        raise ContentRejected(
            f"the content looks like {sniffed.media_type} but has no audio stream"
        )
    info = parsed.info
    codec = _AUDIO_CODECS.get(sniffed.media_type) or _OGG_CODECS.get(type(parsed).__name__)
    if sniffed.media_type == "audio/mp4":
        codec = "aac" if str(getattr(info, "codec", "")).startswith("mp4a") else info.codec
    facts: dict[str, Any] = {
        "duration_s": round(float(info.length), 3),
        "sample_rate": getattr(info, "sample_rate", None),
        "channels": getattr(info, "channels", None),
        "bitrate": getattr(info, "bitrate", None) or None,
        "codec": codec,
    }
    if getattr(info, "bits_per_sample", None):
        facts["bits_per_sample"] = info.bits_per_sample
    if codec == "aac" and sniffed.media_type == "audio/mp4":
        facts |= _mp4_aac_facts(path)
    if sniffed.media_type == "audio/wav" and (seconds := _streamed_wav_seconds(path)) is not None:
        facts["duration_s"] = seconds
    if sniffed.media_type == "audio/flac" and getattr(info, "total_samples", None) == 0:
        facts["duration_s"] = None  # STREAMINFO's 0 means "unknown" (written to a pipe)
    return {name: value for name, value in facts.items() if value is not None}


def _streamed_wav_seconds(path: Path) -> float | None:
    """The length of a WAV whose header does not state it, from the bytes it holds.

    A writer that cannot seek back (ffmpeg to a pipe, streaming TTS APIs) leaves the data
    chunk's size at 0xFFFFFFFF or 0, and mutagen believes it: 13.5 hours for 1.5 s of
    44.1 kHz mono. None when the header's size fits the file (mutagen's length stands).
    """
    rate = block_align = 0
    with path.open("rb") as wave:
        size = os.fstat(wave.fileno()).st_size
        wave.seek(12)  # RIFF, its size, WAVE
        while len(header := wave.read(8)) == 8:
            chunk, length, start = header[:4], int.from_bytes(header[4:], "little"), wave.tell()
            if chunk == b"fmt ":
                fmt = wave.read(16)
                rate, block_align = (
                    int.from_bytes(fmt[4:8], "little"),
                    int.from_bytes(fmt[12:14], "little"),
                )
            elif chunk == b"data":
                if 0 < length <= size - start or not rate or not block_align:
                    return None
                return round((size - start) // block_align / rate, 3)
            wave.seek(start + length + (length & 1))  # chunks are padded to even sizes
    return None


def _mp4_aac_facts(path: Path) -> dict[str, Any]:
    """Corrections for AAC in MP4: the ``mp4a`` sample entry's channel count and sample size
    are template values (ffmpeg always writes 2 and 16), and mutagen falls back on them when
    the AAC configuration says mono (it cannot rule out parametric stereo), so a mono file
    read as stereo. MediaInfo reads the configuration; AAC has no bit depth at all."""
    try:
        track = _first(list(MediaInfo.parse(path).tracks), "Audio")
    except Exception:  # mutagen's reading stands: these are corrections, not the validation
        track = None
    channels = getattr(track, "channel_s", None)
    return {"bits_per_sample": None, **({"channels": int(channels)} if channels else {})}


def _first(tracks: list[Any], kind: str) -> Any:
    return next((track for track in tracks if track.track_type == kind), None)


def _video(path: Path, sniffed: Sniffed, *, require_video: bool) -> dict[str, Any]:
    try:
        tracks = list(MediaInfo.parse(path).tracks)
    except Exception as exc:  # libmediainfo errors surface as assorted exceptions
        raise _undecodable(sniffed.media_type, exc) from exc
    general, video, audio = (_first(tracks, kind) for kind in ("General", "Video", "Audio"))
    if video is None and audio is not None and may_be_audio_only(sniffed):
        return _audio_only(general, audio)
    duration_ms = getattr(general, "duration", None) or getattr(video, "duration", None)
    if video is None and (require_video or duration_ms is None):
        missing = "video track" if require_video else "audio or video track"
        raise ContentRejected(f"the content looks like {sniffed.media_type} but has no {missing}")
    facts: dict[str, Any] = {
        "duration_s": round(float(duration_ms) / 1000, 3) if duration_ms else None,
        "container": getattr(general, "format", None),
        "has_audio": audio is not None,
    }
    if video is not None:
        facts |= {
            "width": _int(video.width),
            "height": _int(video.height),
            "codec": _VIDEO_CODECS.get(video.format, str(video.format).lower()),
            "fps": round(float(video.frame_rate), 3) if video.frame_rate else None,
        }
    if audio is not None:
        facts["audio_codec"] = str(audio.format).lower() if audio.format else None
    return {name: value for name, value in facts.items() if value is not None}


def _audio_only(general: Any, audio: Any) -> dict[str, Any]:
    """Audio facts (as `_audio` names them) of a video container without a video track."""
    duration_ms = getattr(audio, "duration", None) or getattr(general, "duration", None)
    fmt = str(audio.format or "").lower()
    codec = _MEDIAINFO_AUDIO_CODECS.get(fmt, fmt) or None
    facts: dict[str, Any] = {
        "duration_s": round(float(duration_ms) / 1000, 3) if duration_ms else None,
        "sample_rate": _leading_int(audio.sampling_rate),
        "channels": _leading_int(audio.channel_s),
        "bitrate": _leading_int(audio.bit_rate),
        "codec": codec,
        "bits_per_sample": _leading_int(audio.bit_depth) if codec in _LOSSLESS else None,
        AUDIO_ONLY: True,
    }
    return {name: value for name, value in facts.items() if value is not None}


def _leading_int(value: Any) -> int | None:
    """MediaInfo's number, or the first of several (``"44100 / 22050"`` for HE-AAC, ``"2 / 1"``
    for a stream that changes layout); None when there is none."""
    try:
        return int(float(str(value).split("/")[0])) if value is not None else None
    except ValueError:
        return None


def _int(value: Any) -> int | None:
    return int(value) if value is not None else None
