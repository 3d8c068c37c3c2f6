"""Type sniffing, metadata without full decodes, file names, and storage settings."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage import Ingestor, StorageConfig, open_storage, parse_storage_url
from storage.config import LocalLocation, S3Location
from storage.errors import ContentRejected, StorageConfigError
from storage.sniff import safe_filename, sniff
from tests.storage.helpers import (
    assert_nothing_stored,
    fixture,
    image_bytes,
    local_config,
    png,
    wav,
)
from tests.storage.media_bytes import adts_aac, flac, id3v2, mp3_frames, ogg_opus, webm

pytestmark = pytest.mark.anyio


@pytest.fixture
async def ingestor(tmp_path: Path) -> AsyncIterator[Ingestor]:
    async with open_storage(local_config(tmp_path / "root")) as opened:
        yield opened


@pytest.mark.parametrize(
    ("fmt", "media_type"),
    [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp"), ("GIF", "image/gif")],
)
async def test_images_report_size_and_format(ingestor: Ingestor, fmt: str, media_type: str) -> None:
    blob = await ingestor.ingest_bytes(image_bytes(fmt, 32, 24), expected_kind="image")
    assert blob.media_type == media_type
    assert (blob.metadata["width"], blob.metadata["height"], blob.metadata["format"]) == (
        32,
        24,
        fmt,
    )


async def test_mp4_video_metadata(ingestor: Ingestor) -> None:
    blob = await ingestor.ingest_bytes(fixture("clip.mp4"), expected_kind="video")
    assert blob.media_type == "video/mp4"
    assert dict(blob.metadata) == {
        "duration_s": 1.0,
        "container": "MPEG-4",
        "has_audio": True,
        "width": 64,
        "height": 48,
        "codec": "h264",
        "fps": 10.0,
        "audio_codec": "aac",
    }


async def test_mp3_audio_metadata_without_tags(ingestor: Ingestor) -> None:
    blob = await ingestor.ingest_bytes(fixture("tone.mp3"), expected_kind="audio")
    assert blob.media_type == "audio/mpeg"
    assert blob.metadata["codec"] == "mp3"
    assert blob.metadata["sample_rate"] == 22050
    assert blob.metadata["channels"] == 1
    assert blob.metadata["duration_s"] == pytest.approx(1.07, abs=0.05)


async def test_wav_and_m4a_audio_metadata(ingestor: Ingestor) -> None:
    wave_blob = await ingestor.ingest_bytes(wav(0.5, 8000), expected_kind="audio")
    m4a_blob = await ingestor.ingest_bytes(fixture("tone.m4a"), expected_kind="audio")
    assert wave_blob.media_type == "audio/wav"
    assert wave_blob.metadata == {
        "duration_s": 0.5,
        "sample_rate": 8000,
        "channels": 1,
        "bitrate": 128000,
        "codec": "pcm",
        "bits_per_sample": 16,
    }
    assert m4a_blob.media_type == "audio/mp4"
    assert m4a_blob.metadata["codec"] == "aac"
    # Mono AAC (ffprobe: channels=1): the mp4a entry's template says 2, mutagen believed it.
    assert m4a_blob.metadata["channels"] == 1
    assert "bits_per_sample" not in m4a_blob.metadata  # the entry's template 16: AAC has none
    assert m4a_blob.metadata["duration_s"] == pytest.approx(1.0, abs=0.1)


async def test_webm_video_metadata(ingestor: Ingestor) -> None:
    blob = await ingestor.ingest_bytes(webm(), expected_kind="video")
    assert blob.media_type == "video/webm"
    assert dict(blob.metadata) == {
        "duration_s": 1.0,
        "container": "WebM",
        "has_audio": False,
        "width": 64,
        "height": 48,
        "codec": "vp8",
    }


@pytest.mark.parametrize(
    ("data", "media_type", "facts"),
    [
        (
            flac(),
            "audio/flac",
            {"codec": "flac", "sample_rate": 44100, "channels": 2, "bits_per_sample": 16},
        ),
        (ogg_opus(), "audio/ogg", {"codec": "opus", "channels": 2}),
    ],
    ids=["flac", "opus"],
)
async def test_flac_and_opus_audio_metadata(
    ingestor: Ingestor, data: bytes, media_type: str, facts: dict[str, object]
) -> None:
    blob = await ingestor.ingest_bytes(data, expected_kind="audio")
    assert blob.media_type == media_type
    assert {name: blob.metadata.get(name) for name in facts} == facts
    assert blob.metadata["duration_s"] == pytest.approx(1.0, abs=0.2)


async def test_raw_adts_aac_is_read_despite_the_extension_less_temp_file(
    ingestor: Ingestor,
) -> None:
    """mutagen recognises ADTS only by a .aac name; the sniffed type must pick the parser."""
    blob = await ingestor.ingest_bytes(adts_aac(), expected_kind="audio")
    assert blob.media_type == "audio/aac"
    assert {k: blob.metadata[k] for k in ("codec", "sample_rate", "channels")} == {
        "codec": "aac",
        "sample_rate": 44100,
        "channels": 2,
    }
    assert blob.metadata["duration_s"] == pytest.approx(1.16, abs=0.05)


@pytest.mark.parametrize(
    ("data", "media_type", "codec"),
    [(id3v2() + adts_aac(), "audio/aac", "aac"), (id3v2() + flac(), "audio/flac", "flac")],
    ids=["aac", "flac"],
)
async def test_an_id3_tag_in_front_does_not_make_audio_mp3(
    ingestor: Ingestor, data: bytes, media_type: str, codec: str
) -> None:
    """filetype calls anything starting with "ID3" MP3; what follows the tag is the type.

    Before: ADTS AAC with a tag (ffmpeg -write_id3v2 1) was read as MP3 and rejected as
    unreadable; tagged FLAC was stored as audio/mpeg with codec mp3.
    """
    blob = await ingestor.ingest_bytes(data, expected_kind="audio")
    assert (blob.media_type, blob.metadata["codec"]) == (media_type, codec)
    assert blob.metadata["duration_s"] == pytest.approx(1.1, abs=0.2)


@pytest.mark.parametrize(
    ("data", "sample_rate", "seconds"),
    [
        # MPEG-1 Layer III with CRC protection (FF FA), 128 kbit/s, 44.1 kHz: 417-byte frames
        (mp3_frames(b"\xff\xfa\x90\xc0", 417), 44100, 2.606),
        # MPEG-2.5 Layer III (FF E3), 16 kbit/s, 8 kHz (low-rate speech): 144-byte frames
        (mp3_frames(b"\xff\xe3\x28\xc0", 144), 8000, 7.2),
    ],
    ids=["mpeg1-crc", "mpeg2.5"],
)
async def test_untagged_mp3_that_filetype_does_not_know_is_still_mp3(
    ingestor: Ingestor, data: bytes, sample_rate: int, seconds: float
) -> None:
    """filetype knows only FF FB/F3/F2 frame starts; before, these (ffprobe: mp3) were
    rejected as "application/octet-stream, not a supported audio type"."""
    blob = await ingestor.ingest_bytes(data, expected_kind="audio")
    assert (blob.media_type, blob.metadata["codec"]) == ("audio/mpeg", "mp3")
    assert blob.metadata["sample_rate"] == sample_rate
    assert blob.metadata["duration_s"] == pytest.approx(seconds, abs=0.01)


def _streamed(data: bytes, data_size: int) -> bytes:
    """``data`` (a WAV from `wav`: fmt at 12, data at 36) with the sizes a streaming writer
    leaves: it cannot seek back, so RIFF and data sizes stay 0xFFFFFFFF (ffmpeg to a pipe) or
    0 (some streaming TTS APIs)."""
    assert data[36:40] == b"data"
    return data[:4] + b"\xff\xff\xff\xff" + data[8:40] + data_size.to_bytes(4, "little") + data[44:]


@pytest.mark.parametrize("data_size", [0xFFFFFFFF, 0], ids=["ffffffff", "zero"])
async def test_a_streamed_wav_reports_the_audio_it_holds(
    ingestor: Ingestor, data_size: int
) -> None:
    """Before: mutagen believed the data size: 0xFFFFFFFF at 8 kHz 16-bit mono made a 0.5 s
    file 268435.456 s long (13.5 h at 44.1 kHz), and 0 made it 0 s."""
    blob = await ingestor.ingest_bytes(_streamed(wav(0.5, 8000), data_size), expected_kind="audio")
    assert blob.media_type == "audio/wav"
    assert blob.metadata["duration_s"] == 0.5


async def test_a_wav_with_chunks_after_its_data_keeps_the_declared_length(
    ingestor: Ingestor,
) -> None:
    data = wav(0.5, 8000) + b"LIST" + (26).to_bytes(4, "little") + b"INFO" + bytes(22)
    blob = await ingestor.ingest_bytes(data, expected_kind="audio")
    assert blob.metadata["duration_s"] == 0.5


async def test_a_streamed_flac_has_no_duration_rather_than_zero(ingestor: Ingestor) -> None:
    """STREAMINFO's total samples 0 means "unknown" (ffmpeg writing FLAC to a pipe); before,
    it was recorded as a duration of 0.0 s."""
    blob = await ingestor.ingest_bytes(flac(seconds=0), expected_kind="audio")
    assert blob.media_type == "audio/flac"
    assert "duration_s" not in blob.metadata
    assert blob.metadata["sample_rate"] == 44100


async def test_audio_only_mp4_is_not_a_video(ingestor: Ingestor) -> None:
    with pytest.raises(ContentRejected, match="audio/mp4, which is audio"):
        await ingestor.ingest_bytes(fixture("tone.m4a"), expected_kind="video")


AUDIO_ONLY_CONTAINERS = [
    pytest.param(
        "tone-aac.mp4",  # ffmpeg -c:a aac out.mp4: brand isom, sniffed video/mp4
        "audio/mp4",
        "m4a",
        {"codec": "aac", "sample_rate": 22050, "channels": 1, "bitrate": 25205},
        id="aac-in-mp4",
    ),
    pytest.param(
        webm(video=False, audio=b"A_OPUS"),
        "audio/webm",
        "webm",
        {"codec": "opus", "sample_rate": 48000, "channels": 1},
        id="opus-in-webm",
    ),
    pytest.param(
        webm(video=False, audio=b"A_FLAC", doctype=b"matroska"),
        "audio/x-matroska",
        "mka",
        {"codec": "flac", "sample_rate": 48000, "channels": 1},
        id="flac-in-matroska",
    ),
]


def _body(data: str | bytes) -> bytes:
    return fixture(data) if isinstance(data, str) else data


@pytest.mark.parametrize("expected_kind", ["audio", None])
@pytest.mark.parametrize(("data", "media_type", "extension", "facts"), AUDIO_ONLY_CONTAINERS)
async def test_a_video_container_without_a_video_track_is_audio(
    ingestor: Ingestor,
    data: str | bytes,
    media_type: str,
    extension: str,
    facts: dict[str, object],
    expected_kind: str | None,
) -> None:
    """Replicate audio models return .mp4/.webm audio: the first bytes say video, the parse
    finds no video track, so it is audio, for an audio job and for a job of any kind."""
    blob = await ingestor.ingest_bytes(_body(data), expected_kind=expected_kind, filename="out")
    assert (blob.media_type, blob.extension, blob.filename) == (
        media_type,
        extension,
        f"out.{extension}",
    )
    assert blob.metadata["duration_s"] == pytest.approx(1.0, abs=0.05)
    assert dict(blob.metadata) == {"duration_s": blob.metadata["duration_s"], **facts}


@pytest.mark.parametrize(("data", "media_type", "extension", "facts"), AUDIO_ONLY_CONTAINERS)
async def test_a_video_job_rejects_a_video_container_without_a_video_track(
    ingestor: Ingestor,
    tmp_path: Path,
    data: str | bytes,
    media_type: str,
    extension: str,
    facts: dict[str, object],
) -> None:
    message = f"expected a video but the file has no video track (audio only, {media_type})"
    with pytest.raises(ContentRejected, match=re.escape(message)):
        await ingestor.ingest_bytes(_body(data), expected_kind="video")
    await assert_nothing_stored(ingestor, tmp_path / "root" / ".tmp")


@pytest.mark.parametrize(
    ("data", "media_type"),
    [("clip.mp4", "video/mp4"), (webm(audio=b"A_OPUS"), "video/webm")],
    ids=["mp4", "webm"],
)
async def test_an_audio_job_still_rejects_a_real_video(
    ingestor: Ingestor, data: str | bytes, media_type: str
) -> None:
    """The check waits for the parse, and a video track still makes it a video."""
    with pytest.raises(
        ContentRejected, match=f"expected audio but the content is {media_type}, which is a video"
    ):
        await ingestor.ingest_bytes(_body(data), expected_kind="audio")


async def test_truncated_media_is_rejected_as_unreadable(ingestor: Ingestor) -> None:
    with pytest.raises(ContentRejected, match="looks like video/mp4 but has no video track"):
        await ingestor.ingest_bytes(fixture("clip.mp4")[:64], expected_kind="video")
    with pytest.raises(ContentRejected, match="looks like video/mp4 but has no audio or video"):
        await ingestor.ingest_bytes(fixture("clip.mp4")[:64], expected_kind="audio")
    with pytest.raises(ContentRejected, match="looks like an image but cannot be read"):
        await ingestor.ingest_bytes(png()[:12] + b"\xff" * 60, expected_kind="image")


async def test_svg_is_never_an_image(ingestor: Ingestor) -> None:
    svg = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"></svg>'
    with pytest.raises(ContentRejected, match="image/svg\\+xml, not a supported image type"):
        await ingestor.ingest_bytes(svg, expected_kind="image")


async def test_any_kind_accepts_unknown_types_without_metadata(ingestor: Ingestor) -> None:
    blob = await ingestor.ingest_bytes(b'{"error": "quota"}', expected_kind=None)
    assert (blob.media_type, dict(blob.metadata)) == ("application/json", {})


@pytest.mark.parametrize(
    ("head", "media_type"),
    [
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 32, "image/png"),
        (b"  <!doctype html><p>", "text/html"),
        (b"\xef\xbb\xbf[1, 2]", "application/json"),
        (b"RIFF\x24\0\0\0WAVEfmt ", "audio/wav"),
        (b"\x00\x01\x02\x03", "application/octet-stream"),
        (id3v2() + b"\xff\xfb\x90\x00" + bytes(64), "audio/mpeg"),
        (id3v2(), "audio/mpeg"),
        (id3v2()[:8], "audio/mpeg"),
        (b"\xff\xf1\x50\x80" + bytes(16), "audio/aac"),  # ADTS: layer bits 00, not MP3
        (b"\xff\xfa\xf0\xc0" + bytes(16), "application/octet-stream"),  # bitrate index 15
        (b"\xff\xfa\x9c\xc0" + bytes(16), "application/octet-stream"),  # rate index 3
        (b"\xff\xea\x90\xc0" + bytes(16), "application/octet-stream"),  # version 01
        (b"", "application/octet-stream"),
    ],
)
def test_sniffing(head: bytes, media_type: str) -> None:
    assert sniff(head).media_type == media_type


@pytest.mark.parametrize(
    ("data", "name", "filename", "extension"),
    [
        ("tone.mp3", "track.mpeg", "track.mp3", "mp3"),
        ("tone.mp3", None, None, "mp3"),
        ("png", "out-0.webp", "out-0.png", "png"),
    ],
)
async def test_the_stored_name_agrees_with_the_sniffed_type(
    ingestor: Ingestor, data: str, name: str | None, filename: str | None, extension: str
) -> None:
    """A provider's name never carries another type's extension into the artifact row, and
    callers making up a name get the type's usual extension (mp3, not the subtype mpeg)."""
    body = png() if data == "png" else fixture(data)
    blob = await ingestor.ingest_bytes(body, expected_kind=None, filename=name)
    assert (blob.filename, blob.extension) == (filename, extension)


@pytest.mark.parametrize(
    ("name", "extension", "expected"),
    [
        ("out-0.png", "png", "out-0.png"),
        ("output", "png", "output.png"),
        ("../../etc/passwd", None, "passwd"),
        ("C:\\temp\\évian clip.mp4", "mp4", "evian_clip.mp4"),
        ("...", "png", None),
        ("", "png", None),
        (None, "png", None),
        ("a" * 300 + ".webp", "webp", "a" * 115 + ".webp"),
        ("out-0.webp", "png", "out-0.png"),
        ("x.html", "png", "x.png"),
        ("x.html", None, "x.bin"),
        ("track.mpeg", "mp3", "track.mp3"),
        ("clip.quicktime", "mov", "clip.mov"),
        ("photo.JPEG", "jpg", "photo.JPEG"),
        ("scan.tiff", "tif", "scan.tiff"),
        ("clip.mp4", "m4v", "clip.mp4"),
        ("song.mp4", "m4a", "song.mp4"),  # audio-only MP4: the provider's .mp4 stands
        ("song.mkv", "mka", "song.mkv"),
        ("v1.2_final", "png", "v1.2_final.png"),
        ("blob.bin", None, "blob.bin"),
    ],
)
def test_safe_filenames(name: str | None, extension: str | None, expected: str | None) -> None:
    assert safe_filename(name, extension) == expected


@pytest.mark.parametrize(
    ("url", "location"),
    [
        ("file:///var/lib/media", LocalLocation(root=Path("/var/lib/media"))),
        ("file://./.data/artifacts", LocalLocation(root=Path("./.data/artifacts"))),
        ("file://localhost/srv/x", LocalLocation(root=Path("/srv/x"))),
        ("s3://bucket/some/prefix/", S3Location(bucket="bucket", prefix="some/prefix")),
        ("s3://bucket", S3Location(bucket="bucket", prefix="")),
    ],
)
def test_storage_urls(url: str, location: LocalLocation | S3Location) -> None:
    assert parse_storage_url(url) == location


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("/var/lib/media", "unsupported scheme"),
        ("gs://bucket/x", "unsupported scheme"),
        ("s3:///prefix", "names no bucket"),
        ("file://data/dir", "read as a host name"),
        ("s3://b/p?x=1", "query or fragment"),
    ],
)
def test_bad_storage_urls_are_explained(url: str, message: str) -> None:
    with pytest.raises(StorageConfigError, match=message) as caught:
        StorageConfig(storage_url=url)
    assert "file:///abs/dir" in str(caught.value)


def test_bad_limits_are_refused() -> None:
    with pytest.raises(StorageConfigError, match="max_download_bytes must be greater than 0"):
        StorageConfig(storage_url="file:///x", max_download_bytes=0)
    with pytest.raises(StorageConfigError, match="at least 5 MiB"):
        StorageConfig(storage_url="s3://b", s3_multipart_part_bytes=1024)
