"""Result files: real, sniffable media; huge files in constant memory; CDN faults."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import filetype
import httpx
import mutagen
import pytest
from PIL import Image
from pymediainfo import MediaInfo

from simulator.config import FaultRates, SimulatorConfig
from simulator.server import SimulatorServer
from tests.simulator.conftest import AUTH
from tests.simulator.helpers import replicate_create, replicate_poll

_ROOT = Path(__file__).resolve().parents[2]


def _output_url(client: httpx.Client, scenario: str) -> str:
    job_id = replicate_create(client, {"sim_scenario": f"polls:1 shape:list {scenario}"}).json()[
        "id"
    ]
    url: str = replicate_poll(client, job_id)["output"][0]
    return url


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_images_are_sniffable_and_sized(client: httpx.Client, cdn: httpx.Client, fmt: str) -> None:
    response = cdn.get(_output_url(client, f"format:{fmt} size:120x80"))
    assert response.headers["content-type"] == f"image/{fmt}"
    assert filetype.guess_mime(response.content) == f"image/{fmt}"
    image = Image.open(io.BytesIO(response.content))
    image.load()
    assert image.size == (120, 80)


def test_video_is_an_h264_mp4_with_duration(client: httpx.Client, cdn: httpx.Client) -> None:
    response = cdn.get(_output_url(client, "format:mp4 size:100x50 duration:3"))
    assert filetype.guess_mime(response.content) == "video/mp4"
    info = MediaInfo.parse(io.BytesIO(response.content))
    video = next(track for track in info.tracks if track.track_type == "Video")
    assert video.format == "AVC"
    assert (video.width, video.height) == (100, 50)
    assert abs(float(video.duration) - 3000) < 1


@pytest.mark.parametrize(("fmt", "mime"), [("mp3", "audio/mpeg"), ("wav", "audio/x-wav")])
def test_audio_has_a_duration(client: httpx.Client, cdn: httpx.Client, fmt: str, mime: str) -> None:
    response = cdn.get(_output_url(client, f"format:{fmt} duration:2.5"))
    assert filetype.guess_mime(response.content) == mime
    parsed = mutagen.File(io.BytesIO(response.content))
    assert parsed is not None and abs(parsed.info.length - 2.5) < 0.05


def test_outputs_differ_per_job_unless_static(client: httpx.Client, cdn: httpx.Client) -> None:
    first, second = (cdn.get(_output_url(client, "")).content for _ in range(2))
    assert first != second
    shared = [cdn.get(_output_url(client, "static")).content for _ in range(2)]
    assert shared[0] == shared[1]


def test_cdn_scenario_faults(client: httpx.Client, cdn: httpx.Client) -> None:
    url = _output_url(client, "cdn_error:503:1 cdn_truncate:1")
    assert cdn.get(url).status_code == 503
    with pytest.raises(httpx.RemoteProtocolError):
        cdn.get(url)
    whole = cdn.get(url)
    assert whole.status_code == 200 and Image.open(io.BytesIO(whole.content)).format == "PNG"

    lying = cdn.get(_output_url(client, "cdn_wrong_type"))
    assert lying.headers["content-type"] == "image/jpeg"
    assert filetype.guess_mime(lying.content) == "image/png"

    slow = _output_url(client, "cdn_slow:0.2")
    started = time.monotonic()
    cdn.get(slow)
    assert time.monotonic() - started >= 0.2


def test_head_and_unknown_files(client: httpx.Client, cdn: httpx.Client) -> None:
    url = _output_url(client, "")
    head = cdn.head(url)
    assert head.status_code == 200 and int(head.headers["content-length"]) > 0
    assert head.content == b""
    assert cdn.get(url.replace("/0.png", "/5.png")).status_code == 404
    assert cdn.get(url.replace("/0.png", "/0.jpeg")).status_code == 404
    assert cdn.get(f"{client.base_url}/cdn/nope/0.png").status_code == 404


def test_tokens_sent_to_the_cdn_are_counted(
    sim: SimulatorServer, client: httpx.Client, cdn: httpx.Client
) -> None:
    url = _output_url(client, "")
    cdn.get(url)
    assert sim.stats()["cdn"]["with_authorization"] == 0
    cdn.get(url, headers=AUTH)
    assert sim.stats()["cdn"]["with_authorization"] == 1


def test_separate_cdn_host() -> None:
    with (
        SimulatorServer(SimulatorConfig(cdn_host="127.0.0.2")) as sim,
        httpx.Client(base_url=sim.base_url, headers=AUTH, verify=False) as client,
    ):
        url = _output_url(client, "")
        assert url.startswith("http://127.0.0.2:")
        assert httpx.get(url, verify=False).status_code == 200


def test_large_output_is_exact_deterministic_and_headed(
    client: httpx.Client, cdn: httpx.Client
) -> None:
    size = 3 * 1024 * 1024 + 17
    url = _output_url(client, f"large:{size}")
    first, second = cdn.get(url).content, cdn.get(url).content
    assert len(first) == size and first == second
    assert filetype.guess_mime(first) == "image/png"
    assert Image.open(io.BytesIO(first)).size == (64, 64)


def test_large_mp4_stays_a_valid_box_sequence(cdn: httpx.Client, client: httpx.Client) -> None:
    total = 5 * 1024 * 1024
    body = cdn.get(f"{client.base_url}/cdn/large", params={"bytes": "5M", "format": "mp4"}).content
    assert len(body) == total
    offset, kinds = 0, []
    while offset < total:
        size, kind = struct.unpack(">I4s", body[offset : offset + 8])
        kinds.append(kind)
        offset += size
    assert offset == total and kinds == [b"ftyp", b"moov", b"mdat", b"free"]


def test_large_endpoint_validation(cdn: httpx.Client, client: httpx.Client) -> None:
    assert cdn.get(f"{client.base_url}/cdn/large", params={"bytes": "lots"}).status_code == 400
    assert cdn.get(f"{client.base_url}/cdn/large?bytes=1K&format=gif").status_code == 400


@pytest.fixture
def sim_process(tmp_path: Path) -> Iterator[tuple[str, int]]:
    ready = tmp_path / "sim.url"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simulator",
            "--port",
            "0",
            "--seed",
            "3",
            "--ready-file",
            str(ready),
        ],
        cwd=_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while not ready.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "simulator did not start"
            time.sleep(0.05)
        yield ready.read_text().strip(), proc.pid
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 0, stderr
    assert stderr == b"", stderr  # no tracebacks, e.g. from clients hanging up mid-file


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_huge_file_streams_in_constant_memory(sim_process: tuple[str, int]) -> None:
    base_url, pid = sim_process
    with httpx.stream("GET", f"{base_url}/cdn/large?bytes=1G", verify=False) as abandoned:
        next(abandoned.iter_raw(1 << 20))  # hang up mid-file: the server must shrug it off
    before = _peak_rss_kib(pid)
    total = 512 * 1024 * 1024
    received = 0
    with httpx.stream(
        "GET", f"{base_url}/cdn/large?bytes={total}&format=png", verify=False
    ) as reply:
        assert int(reply.headers["content-length"]) == total
        for chunk in reply.iter_raw(1 << 20):
            if received == 0:
                assert chunk.startswith(b"\x89PNG")
            received += len(chunk)
    assert received == total
    growth_mib = (_peak_rss_kib(pid) - before) / 1024
    assert growth_mib < 32, f"server peak RSS grew by {growth_mib:.1f} MiB"


@pytest.mark.parametrize(
    ("rates", "status", "counted"),
    [
        ({"p_429": 1.0}, 429, {"cdn_429": 1}),
        ({"p_5xx": 1.0}, None, {"cdn_5xx": 1}),
        (
            {"p_malformed": 1.0, "p_slow": 1.0, "slow_s": 0.01},
            200,
            {"cdn_malformed": 1, "cdn_slow": 1},
        ),
    ],
)
def test_random_cdn_faults_are_counted_by_kind(
    sim: SimulatorServer,
    client: httpx.Client,
    cdn: httpx.Client,
    rates: dict[str, Any],
    status: int | None,
    counted: dict[str, int],
) -> None:
    url = _output_url(client, "")
    sim.set_faults(FaultRates(scope=frozenset({"cdn"}), **rates))
    try:
        reply = cdn.get(url)
        assert status is None or reply.status_code == status
    except httpx.RemoteProtocolError:  # the cut-off body of a malformed download
        assert "cdn_malformed" in counted
    faults = sim.stats()["faults"]
    if rates.get("p_slow"):
        counted = {**counted, "cdn_slow": 1}
    assert {kind: n for kind, n in faults.items() if kind.startswith("cdn_")} == counted
