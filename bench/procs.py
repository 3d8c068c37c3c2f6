"""Child processes of the end-to-end benchmarks: the simulator and ``main.py run``.

The daemon runs as its own process so that its CPU time and peak RSS are its own (not the
harness's, not the simulator's); its figures come from ``/proc`` (``VmHWM`` is the kernel's
exact high-water mark, no sampling gaps) and from its own ``/metrics``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
SIM_TOKEN = "r8_bench_token"

# Inherited variables that would change what the daemon does: dropped from its environment.
_DAEMON_PREFIXES = ("POLLER_", "REPLICATE_", "STABILITY_", "SUNO_", "STORAGE_", "S3_", "AWS_")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def simulator(log: Path, *options: str) -> Iterator[tuple[str, psutil.Process]]:
    """``python -m simulator`` on a free loopback port; yields its base URL and process."""
    ready = log.with_suffix(".url")
    ready.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "simulator", "--port", "0", "--seed", "1"]
    argv += ["--ready-file", str(ready), *options]
    with log.open("a") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_for(lambda: ready.is_file() and bool(ready.read_text().strip()), proc, "simulator")
        yield ready.read_text().strip(), psutil.Process(proc.pid)
    finally:
        _stop(proc)


def daemon_env(database_url: str, sim_url: str, **settings: str) -> dict[str, str]:
    """A clean daemon environment: the database, Replicate pointed at the simulator, and
    ``settings`` (``POLLER_*``, ``REPLICATE_*`` …); other providers stay unconfigured."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_DAEMON_PREFIXES)}
    env.pop("DATABASE_URL", None)
    env.update(
        DATABASE_URL=database_url,
        REPLICATE_API_TOKEN=SIM_TOKEN,
        REPLICATE_BASE_URL=sim_url,
        POLLER_ALLOW_PRIVATE_DOWNLOADS="true",
        POLLER_HTTP_HOST="127.0.0.1",
        POLLER_LOG_FORMAT="json",
    )
    env.update(settings)
    return env


@contextmanager
def daemon(env: Mapping[str, str], log: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """``main.py run`` with ``env``; SIGTERM (graceful drain) on the way out."""
    with log.open("a") as out:
        proc = subprocess.Popen(
            [sys.executable, "main.py", "run", *args],
            cwd=ROOT,
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc
    finally:
        _stop(proc)


def wait_ready(metrics_port: int, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    """Until ``/readyz`` answers 200 (database reachable, schema at head, claiming)."""

    def ready() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{metrics_port}/readyz", timeout=2).is_success
        except httpx.HTTPError:
            return False

    _wait_for(ready, proc, "daemon", timeout_s=timeout_s, step_s=0.2)


def _wait_for(
    check: Callable[[], bool],
    proc: subprocess.Popen[bytes],
    what: str,
    timeout_s: float = 30,
    step_s: float = 0.05,
) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before it was ready")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready within {timeout_s:.0f} s")
        time.sleep(step_s)


def _stop(proc: subprocess.Popen[bytes], grace_s: float = 30) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# ---------------------------------------------------------------------------- measurements


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """One scrape of ``/metrics``: counters/histogram samples keyed by name and labels."""

    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]

    def total(self, name: str, **labels: str) -> float:
        """Sum of every sample ``name`` whose labels include ``labels``."""
        wanted = set(labels.items())
        return sum(v for (n, lab), v in self.samples.items() if n == name and wanted <= lab)

    def buckets(self, name: str) -> dict[float, float]:
        """Cumulative histogram buckets ``{upper_bound: count}`` summed over label sets."""
        out: dict[float, float] = {}
        for (n, lab), value in self.samples.items():
            if n == f"{name}_bucket":
                bound = float(dict(lab)["le"])
                out[bound] = out.get(bound, 0.0) + value
        return out


def scrape(port: int) -> Snapshot:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = float(sample.value)
    return Snapshot(samples=samples)


def bucket_delta(
    before: dict[float, float], after: dict[float, float]
) -> list[tuple[float, float]]:
    return sorted((bound, count - before.get(bound, 0.0)) for bound, count in after.items())


def peak_rss_mb(pid: int) -> float:
    """The process's resident high-water mark (``VmHWM``), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


def cpu_seconds(proc: psutil.Process, *, children: bool = False) -> float:
    """User + system CPU of ``proc`` (and, with ``children``, of its current children)."""
    procs = [proc, *(proc.children(recursive=True) if children else [])]
    total = 0.0
    for p in procs:
        try:
            times = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def postmaster(data_dir: Path) -> psutil.Process:
    pid = int((data_dir / "postmaster.pid").read_text().splitlines()[0])
    return psutil.Process(pid)
