"""Ingest benchmark: download + SHA-256 + store, against ``curl -s URL | sha256sum``.

Measures, in one run, on loopback:

* ``ingest_ratio_vs_curl`` - best ingest throughput / best ``curl | sha256sum`` throughput for
  the same bytes from the same server (goal >= 0.7). Ingest also writes and fsyncs the file
  and publishes it, which the baseline does not; that is the real cost of storing. Debian's
  coreutils ``sha256sum`` does not use the CPU's SHA extensions, so a stricter baseline,
  ``curl | openssl dgst -sha256``, and plain ``curl -o /dev/null`` are reported beside it.
* ``ingest_rss_growth_mb`` - peak RSS growth of this process while ingesting a large result
  (goal <= 64 MB): the pipeline must be constant-memory whatever the file size.

The file server runs in a separate process (so it never competes with the ingest for the
GIL) and streams deterministic bytes from one 1 MiB block: constant memory, no disk. Each run
uses a different seed so nothing is deduplicated, and each blob is deleted after its run.

Usage: ``python bench/bench_ingest.py [--size-mib 1024] [--rss-size-mib 2048] [--runs 3]``.
MB = 10^6 bytes throughout.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import anyio
import structlog

from storage import Ingestor, StorageConfig, open_storage

BLOCK = 1024 * 1024
MB = 1_000_000
WORK_DIR = Path(__file__).resolve().parent / ".work" / "ingest"


# -- the loopback file server (runs in its own process) ---------------------------------------


def _serve_one(conn: socket.socket) -> None:
    with conn:
        request = conn.recv(65536).split(b"\r\n", 1)[0].decode("latin-1")
        path = request.split(" ")[1] if request.count(" ") >= 2 else "/"
        route, _, query = path.partition("?")
        if not route.startswith("/bytes/"):
            conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            return
        size = int(route.removeprefix("/bytes/"))
        seed = int(query.removeprefix("seed=") or 0)
        block = memoryview(random.Random(seed).randbytes(BLOCK))
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n"
        conn.sendall(head.encode("ascii"))
        remaining = size
        while remaining > 0:
            chunk = block[: min(BLOCK, remaining)]
            conn.sendall(chunk)
            remaining -= len(chunk)


def serve() -> None:
    """Print the port, then serve ``GET /bytes/<n>?seed=<k>`` until killed."""
    listener = socket.create_server(("127.0.0.1", 0))
    print(listener.getsockname()[1], flush=True)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=_serve_one, args=(conn,), daemon=True).start()


def start_server() -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--serve"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    return process, int(process.stdout.readline())


# -- measurements ------------------------------------------------------------------------------


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class RssSampler:
    """Highest RSS seen by a 10 ms sampling thread (works where VmHWM cannot be reset)."""

    def __init__(self) -> None:
        self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, rss_bytes())

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


BASELINES = {
    "curl_sha256": "curl -s --noproxy '*' '{url}' | sha256sum",
    "curl_openssl_sha256": "curl -s --noproxy '*' '{url}' | openssl dgst -sha256 -r",
    "curl_only": "curl -s --noproxy '*' '{url}' -o /dev/null && echo -",
}


async def shell_once(command: str, url: str) -> tuple[float, str]:
    """Wall time and first output word (the digest) of a baseline pipeline."""
    started = time.perf_counter()
    result = await anyio.run_process(["bash", "-c", "set -o pipefail; " + command.format(url=url)])
    return time.perf_counter() - started, result.stdout.decode().split()[0]


async def ingest_once(ingestor: Ingestor, url: str) -> tuple[float, str]:
    started = time.perf_counter()
    blob = await ingestor.ingest_url(url, expected_kind=None)
    elapsed = time.perf_counter() - started
    await ingestor.store.delete(blob.key)
    return elapsed, blob.content_hash


def emit(name: str, value: object) -> None:
    print(f"{name}: {value}", flush=True)


def machine() -> None:
    cpu = "unknown"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    emit("machine_cpu", cpu)
    emit("machine_cpus", os.cpu_count())
    emit("machine_kernel", platform.release())
    emit("machine_python", platform.python_version())
    curl = subprocess.run(["curl", "--version"], capture_output=True, text=True, check=True)
    emit("machine_curl", curl.stdout.split()[1])


async def throughput(ingestor: Ingestor, port: int, size: int, runs: int) -> None:
    """Alternate baselines and ingest on fresh bytes per run; the best of each counts."""
    times: dict[str, list[float]] = {name: [] for name in (*BASELINES, "ingest")}
    for run in range(runs):
        url = f"http://127.0.0.1:{port}/bytes/{size}?seed={run + 1}"
        ingest_time, digest = await ingest_once(ingestor, url)
        times["ingest"].append(ingest_time)
        for name, command in BASELINES.items():
            elapsed, output = await shell_once(command, url)
            if name != "curl_only" and output != digest:
                raise SystemExit(f"{name} digest {output} != ingest digest {digest}")
            times[name].append(elapsed)
        rates = ", ".join(f"{name} {size / t[-1] / MB:.0f}" for name, t in times.items())
        print(f"# run {run + 1} MB/s: {rates}", flush=True)
    best = {name: size / min(samples) / MB for name, samples in times.items()}
    emit("ingest_size_mib", size // BLOCK)
    for name in BASELINES:
        emit(f"{name}_mb_per_s", f"{best[name]:.0f}")
    emit("ingest_mb_per_s", f"{best['ingest']:.0f}")
    emit("ingest_digest_matches_curl", "true")
    emit("ingest_ratio_vs_curl_openssl", f"{best['ingest'] / best['curl_openssl_sha256']:.2f}")
    emit("ingest_ratio_vs_curl", f"{best['ingest'] / best['curl_sha256']:.2f}")


async def rss_growth(ingestor: Ingestor, port: int, size: int) -> None:
    url = f"http://127.0.0.1:{port}/bytes/{size}?seed=1000"
    baseline = rss_bytes()
    with RssSampler() as sampler:
        await ingest_once(ingestor, url)
    emit("ingest_rss_size_mib", size // BLOCK)
    emit("ingest_rss_baseline_mb", f"{baseline / MB:.1f}")
    emit("ingest_rss_peak_mb", f"{sampler.peak / MB:.1f}")
    emit("ingest_rss_growth_mb", f"{(sampler.peak - baseline) / MB:.1f}")


async def run(args: argparse.Namespace, port: int) -> None:
    config = StorageConfig(
        storage_url=f"file://{args.work_dir / 'store'}",
        allow_private_downloads=True,
        max_download_bytes=max(args.size_mib, args.rss_size_mib) * BLOCK + 1,
        total_timeout_s=3600,
    )
    async with open_storage(config) as ingestor:
        await ingest_once(ingestor, f"http://127.0.0.1:{port}/bytes/{16 * BLOCK}?seed=0")
        await throughput(ingestor, port, args.size_mib * BLOCK, args.runs)
        await rss_growth(ingestor, port, args.rss_size_mib * BLOCK)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="throughput file size")
    parser.add_argument("--rss-size-mib", type=int, default=2048, help="RSS test file size")
    parser.add_argument("--runs", type=int, default=3, help="alternating runs, best counts")
    parser.add_argument("--work-dir", type=Path, default=WORK_DIR)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    if args.serve:
        serve()
        return 0
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    machine()
    process, port = start_server()
    try:
        anyio.run(run, args, port)
    finally:
        process.kill()
        process.wait()
        shutil.rmtree(args.work_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
