"""The fake result CDN: the files behind every output URL the fake vendors hand out.

Paths: `/cdn/{job}/{n}.{ext}` (output n), `/cdn/{job}/cover-{n}.jpeg` (Suno cover art),
`/cdn/{job}/stream-{n}.{ext}` (Suno's early stream URL, same bytes), and
`/cdn/large?bytes=N[&format=png|jpeg|webp|mp4|mp3|wav|bin]` (a standalone file of exactly N
bytes, `bin` by default, streamed in constant memory). No auth is required; requests that
carry an `Authorization` header anyway are counted in the stats, so a test can prove the
daemon never leaks provider tokens to result hosts. Jobs with the `expired` outcome have
lost their files (404). Per-file scenario faults (`cdn_error`, `cdn_truncate`, `cdn_slow`,
`cdn_wrong_type`) and the random faults of the `cdn` scope apply here.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from typing import Final

from simulator import media
from simulator.common import delayed, draw_fault, file_key, json_response, proxy_error
from simulator.http import Request, Response
from simulator.jobs import Job
from simulator.media import CONTENT_TYPES, MediaSpec
from simulator.scenarios import ScenarioError, parse_byte_count
from simulator.state import SimState

_FILE: Final = re.compile(r"^(?:(cover|stream)-)?(\d+)\.([a-z0-9]+)$")
_COVER_SIZE: Final = 96


def _truncated(
    source: Callable[[], AsyncIterator[bytes]], limit: int
) -> Callable[[], AsyncIterator[bytes]]:
    """A stream that stops after `limit` bytes (the server then drops the connection)."""

    async def chunks() -> AsyncIterator[bytes]:
        left = limit
        async for chunk in source():
            if left <= 0:
                return
            yield chunk[:left]
            left -= len(chunk)

    return chunks


def _body_stream(data: bytes) -> Callable[[], AsyncIterator[bytes]]:
    async def chunks() -> AsyncIterator[bytes]:
        yield data

    return chunks


def _respond(
    spec: MediaSpec,
    key: str,
    *,
    large: tuple[int, int] | None,
    truncate: bool,
    content_type: str,
    extra_headers: tuple[tuple[str, str], ...] = (),
) -> Response:
    """The file response itself; `large` = (total bytes, filler seed) streams it."""
    if large is not None:
        file = media.large_file(spec, key, large[0], large[1])
        stream, length = file.chunks, file.total
    else:
        body = media.render(spec, key)
        if not truncate:
            return Response(status=200, body=body, content_type=content_type, headers=extra_headers)
        stream, length = _body_stream(body), len(body)
    if truncate:
        stream = _truncated(stream, length // 2)
    return Response(
        status=200, stream=stream, length=length, content_type=content_type, headers=extra_headers
    )


def file_response(
    state: SimState,
    job: Job,
    index: int,
    *,
    extra_headers: tuple[tuple[str, str], ...] = (),
    truncate: bool = False,
    content_type: str | None = None,
) -> Response:
    """Output `index` of `job` (also the body of Stability's finished result polls)."""
    total = job.scenario.large_bytes
    return _respond(
        job.media,
        file_key(job, index),
        large=None if total is None else (total, state.seed),
        truncate=truncate,
        content_type=content_type or CONTENT_TYPES[job.media.fmt],
        extra_headers=extra_headers,
    )


def _wrong_type(fmt: str) -> str:
    return "image/png" if fmt == "jpeg" else "image/jpeg"


def _not_found() -> Response:
    body = b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>NoSuchKey</Code></Error>"
    return Response(status=404, body=body, content_type="application/xml")


class Cdn:
    """Serves result files with their per-file scenario faults."""

    def __init__(self, state: SimState) -> None:
        self._state = state

    async def handle(self, request: Request) -> Response:
        state = self._state
        if request.headers.get("authorization"):
            state.stats.cdn_with_authorization += 1
        if request.method not in ("GET", "HEAD"):
            return json_response(405, {"error": "method not allowed"})
        injected = draw_fault(state, "cdn", request.target)
        if injected.kind != "none":
            state.stats.faults[f"cdn_{injected.kind}"] += 1
        if injected.slow_s:
            state.stats.faults["cdn_slow"] += 1
        if injected.kind == "429":
            reply = Response(
                status=429,
                body=b"slow down",
                content_type="text/plain",
                headers=(("retry-after", str(state.faults.retry_after_s)),),
            )
            return delayed(reply, injected.slow_s)
        if injected.kind == "5xx":
            return delayed(proxy_error(injected.status), injected.slow_s)
        response = self._serve(request, truncate=injected.kind == "malformed")
        if response.status == 200:
            state.stats.cdn_bytes += response.length or len(response.body)
        return delayed(response, injected.slow_s)

    def _serve(self, request: Request, *, truncate: bool) -> Response:
        parts = request.path.strip("/").split("/")
        if parts == ["cdn", "large"]:
            return self._large(request, truncate=truncate)
        if len(parts) != 3:
            return _not_found()
        job = self._state.jobs.get(parts[1])
        match = _FILE.match(parts[2])
        if job is None or match is None or job.outcome == "expired":
            return _not_found()
        kind, index, ext = match[1], int(match[2]), match[3]
        if index >= job.outputs:
            return _not_found()
        if kind == "cover":
            if ext != "jpeg":
                return _not_found()
            spec = MediaSpec(fmt="jpeg", width=_COVER_SIZE, height=_COVER_SIZE)
            return _respond(
                spec,
                f"{file_key(job, index)}/cover",
                large=None,
                truncate=truncate,
                content_type="image/jpeg",
            )
        if ext != job.media.fmt:
            return _not_found()
        return self._job_file(job, parts[2], index, truncate=truncate)

    def _job_file(self, job: Job, name: str, index: int, *, truncate: bool) -> Response:
        """Apply the job's per-file faults (counted per file name) and serve it."""
        scenario = job.scenario
        count = job.file_requests[name] = job.file_requests.get(name, 0) + 1
        errors = scenario.cdn_error.count if scenario.cdn_error else 0
        if scenario.cdn_error is not None and count <= errors:
            self._state.stats.faults["cdn_scenario_error"] += 1
            return delayed(
                json_response(scenario.cdn_error.status, {"error": "simulated"}),
                scenario.cdn_slow_s,
            )
        truncate = truncate or count <= errors + scenario.cdn_truncate
        fmt = job.media.fmt
        content_type = _wrong_type(fmt) if scenario.cdn_wrong_type else CONTENT_TYPES[fmt]
        response = file_response(
            self._state, job, index, truncate=truncate, content_type=content_type
        )
        return delayed(response, scenario.cdn_slow_s)

    def _large(self, request: Request, *, truncate: bool) -> Response:
        fmt = request.query.get("format", "bin")
        try:
            total = parse_byte_count(request.query.get("bytes", ""))
        except ScenarioError as exc:
            return json_response(400, {"error": f"bytes: {exc}"})
        if fmt not in CONTENT_TYPES:
            return json_response(400, {"error": f"format must be one of {sorted(CONTENT_TYPES)}"})
        spec = MediaSpec(fmt=fmt, width=64, height=64)  # type: ignore[arg-type]
        return _respond(
            spec,
            "large",
            large=(total, self._state.seed),
            truncate=truncate,
            content_type=CONTENT_TYPES[fmt],
        )
