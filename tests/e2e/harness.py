"""Process harness for the end-to-end and chaos suites: simulator, replicas, logs, waiting.

Everything runs as real processes started from the repo root, exactly as an operator would
start them: ``python -m simulator`` and ``python main.py run``. The harness only starts,
signals and observes them; it never imports the daemon, so a test sees what production sees
(exit codes, JSON log lines on stdout, rows in PostgreSQL, files in the store).

A replica's stdout goes through a pipe that a reader thread copies into memory and into a
log file. A pipe rather than a file because the storage-fault tests lower the replica's
``RLIMIT_FSIZE``: a log file would hit that limit too and turn a storage fault into a
logging crash.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[2]

# Distinctive keys: the secrets test greps every byte the daemons wrote for them.
TEST_KEYS: Mapping[str, str] = {
    "REPLICATE_API_TOKEN": "r8_e2eSecretTokenQ7f3a9c1d",
    "STABILITY_API_KEY": "sk-e2eSecretKeyW41d2b7e0",
    "SUNO_API_KEY": "suno-e2eSecretKeyZ88e1f45a",
}
PROVIDER_PREFIXES = ("REPLICATE", "STABILITY", "SUNO")
_OWN_PREFIXES = ("POLLER_", "REPLICATE_", "STABILITY_", "SUNO_", "AWS_", "S3_")
_OWN_NAMES = ("DATABASE_URL", "STORAGE_URL")

T = TypeVar("T")


class HarnessError(AssertionError):
    """A process did not start, stop or reach the awaited state in time."""


def wait_until(
    check: Callable[[], T | None], *, timeout_s: float, what: str, every_s: float = 0.1
) -> T:
    """Call ``check`` until it returns something truthy; fail naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise HarnessError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(every_s)


def base_environment() -> dict[str, str]:
    """The test process's environment without anything that configures the daemon."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(_OWN_PREFIXES) and k not in _OWN_NAMES
    }


def fast_timings(lease_ttl_s: float = 3.0) -> dict[str, str]:
    """Short leases, intervals and generous budgets so crash and rescue happen in seconds."""
    env = {
        "POLLER_LOG_FORMAT": "json",
        "POLLER_LEASE_TTL_S": str(lease_ttl_s),
        "POLLER_SHUTDOWN_GRACE_S": "2",
        "POLLER_IDLE_POLL_MAX_S": "0.2",
        "POLLER_ERROR_BACKOFF_MAX_S": "0.5",
        "POLLER_AUTH_PAUSE_S": "1",
        "POLLER_CONCURRENCY": "64",
        "POLLER_ALLOW_PRIVATE_DOWNLOADS": "true",
    }
    for prefix in PROVIDER_PREFIXES:
        for media in ("IMAGE", "VIDEO", "AUDIO"):
            env[f"{prefix}_POLL_INTERVAL_{media}_MS"] = "200"
        env[f"{prefix}_RATE_PER_S"] = "1000"
        env[f"{prefix}_BURST"] = "1000"
        env[f"{prefix}_SUBMIT_RATE_PER_S"] = "1000"  # the create budget too (Replicate: 8/s)
        env[f"{prefix}_SUBMIT_BURST"] = "1000"
        env[f"{prefix}_MAX_IN_FLIGHT"] = "200"
    env["SUNO_RATE_LIMIT_BACKOFF_S"] = "1"
    return env


def daemon_env(
    *, db_url: str, sim_url: str, storage_url: str, overrides: Mapping[str, str] | None = None
) -> dict[str, str]:
    """A replica's complete environment: database, store, simulator, keys and fast timings."""
    env = base_environment()
    env.update(TEST_KEYS)
    env.update(fast_timings())
    env["DATABASE_URL"] = db_url
    env["STORAGE_URL"] = storage_url
    for prefix in PROVIDER_PREFIXES:
        env[f"{prefix}_BASE_URL"] = sim_url
    env["SUNO_CALLBACK_URL"] = "https://example.invalid/suno-callback"
    env.update(overrides or {})
    return env


def _get_json(url: str, *, timeout_s: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout_s) as reply:
        return json.loads(reply.read())


def _post_json(url: str, body: Mapping[str, Any], *, timeout_s: float = 10.0) -> Any:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as reply:
        return json.loads(reply.read())


class SimulatorProcess:
    """``python -m simulator`` on a free loopback port, stopped with SIGTERM."""

    def __init__(self, workdir: Path, *args: str) -> None:
        self._ready = workdir / f"sim-{time.monotonic_ns()}.url"
        self._args = list(args)
        self._proc: subprocess.Popen[bytes] | None = None
        self.base_url = ""

    def start(self) -> str:
        argv = [sys.executable, "-m", "simulator", "--port", "0", "--seed", "7"]
        argv += ["--ready-file", str(self._ready), *self._args]
        self._proc = subprocess.Popen(
            argv, cwd=ROOT, env=base_environment(), stdout=subprocess.DEVNULL
        )
        proc = self._proc

        def ready() -> str | None:
            if proc.poll() is not None:
                raise HarnessError(f"simulator exited with {proc.returncode} at start-up")
            return self._ready.read_text().strip() if self._ready.exists() else None

        self.base_url = wait_until(ready, timeout_s=20, what="the simulator's ready file")
        return self.base_url

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(10)

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = _get_json(f"{self.base_url}/_sim/stats")
        return result

    def jobs(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = _get_json(f"{self.base_url}/_sim/jobs")["jobs"]
        return result

    def set_faults(self, **rates: Any) -> dict[str, Any]:
        """Swap the random fault rates at run time (``POST /_sim/faults``)."""
        result: dict[str, Any] = _post_json(f"{self.base_url}/_sim/faults", rates)
        return result


@dataclass(slots=True)
class Replica:
    """One ``main.py run`` process (restartable) and everything it printed.

    Output of every generation is kept, tagged with the worker id it ran under, so a test
    can attribute a log line to the exact process (and lease owner) that wrote it.
    """

    name: str
    env: dict[str, str]
    log_dir: Path
    drain: bool = False
    proc: subprocess.Popen[bytes] | None = None
    output: list[tuple[str, str]] = field(default_factory=list)  # (worker id, line)
    stderr_path: Path | None = None
    _reader: threading.Thread | None = None
    _generation: int = 0

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.worker_id}.log"

    @property
    def worker_id(self) -> str:
        """The lease owner name: a restarted process gets a new one (``replica-1-r2``)."""
        return self.name if self._generation <= 1 else f"{self.name}-r{self._generation}"

    @property
    def lines(self) -> list[str]:
        return [line for _, line in list(self.output)]

    def start(self) -> Replica:
        """Start (or restart) the process; previous output stays in `lines`."""
        self._generation += 1
        argv = [sys.executable, "main.py", "run", *(["--drain"] if self.drain else [])]
        env = {**self.env, "POLLER_WORKER_ID": self.worker_id}
        self.stderr_path = self.log_dir / f"{self.worker_id}.stderr"
        with self.stderr_path.open("wb") as stderr:
            self.proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
            )
        self._reader = threading.Thread(
            target=self._pump, args=(self.proc, self.worker_id), daemon=True
        )
        self._reader.start()
        return self

    def _pump(self, proc: subprocess.Popen[bytes], owner: str) -> None:
        assert proc.stdout is not None
        with proc.stdout, self.log_path.open("w") as copy:
            for raw in proc.stdout:
                line = raw.decode(errors="replace").rstrip("\n")
                self.output.append((owner, line))
                copy.write(line + "\n")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal(self, signum: int) -> None:
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(signum)

    def kill(self) -> None:
        """``kill -9``: no shutdown code runs, leases are simply abandoned."""
        if self.running:
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(10)
        self._join()

    def wait(self, timeout_s: float) -> int:
        """Wait for exit and the end of its output; returns the exit code."""
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            raise HarnessError(f"{self.name} did not exit within {timeout_s:g} s") from None
        self._join()
        return code

    def _join(self) -> None:
        if self._reader is not None:
            self._reader.join(10)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path else ""

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """Parsed JSON log lines (optionally only one event name), tagged ``replica`` with the
        worker id (lease owner) of the process that wrote them."""
        found = []
        for owner, line in list(self.output):
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and (name is None or event.get("event") == name):
                event["replica"] = owner
                found.append(event)
        return found

    def wait_for_event(self, name: str, *, timeout_s: float = 30) -> dict[str, Any]:
        """The first ``name`` event of the current process (not of an earlier generation)."""
        owner = self.worker_id

        def seen() -> dict[str, Any] | None:
            found = [e for e in self.events(name) if e["replica"] == owner]
            if found:
                return found[0]
            if not self.running:
                raise HarnessError(f"{owner} exited: {self.stderr()[-2000:]}")
            return None

        return wait_until(seen, timeout_s=timeout_s, what=f"{name} from {owner}")

    def set_file_size_limit(self, limit: int | None) -> None:
        """Lower (or lift, with ``None``) the running process's ``RLIMIT_FSIZE``.

        Writes past the limit fail with EFBIG, which is how a full disk looks to the
        storage write path, without mounting anything (DESIGN.md §10).
        """
        import resource

        # Only the soft limit moves: raising a lowered hard limit needs CAP_SYS_RESOURCE.
        _, hard = resource.prlimit(self.pid, resource.RLIMIT_FSIZE)
        soft = hard if limit is None else limit
        if hard != resource.RLIM_INFINITY:
            soft = min(soft, hard)
        resource.prlimit(self.pid, resource.RLIMIT_FSIZE, (soft, hard))


class Fleet:
    """A simulator, a set of replicas and their logs; everything is stopped on exit."""

    def __init__(self, *, workdir: Path, db_url: str, storage_url: str, sim: SimulatorProcess):
        self.workdir = workdir
        self.db_url = db_url
        self.storage_url = storage_url
        self.sim = sim
        self.replicas: list[Replica] = []
        self.log_dir = workdir / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)

    def env(self, overrides: Mapping[str, str] | None = None) -> dict[str, str]:
        return daemon_env(
            db_url=self.db_url,
            sim_url=self.sim.base_url,
            storage_url=self.storage_url,
            overrides=overrides,
        )

    def replica(
        self, name: str, *, drain: bool = False, overrides: Mapping[str, str] | None = None
    ) -> Replica:
        """Create (not start) a replica with the fleet's environment plus ``overrides``."""
        rep = Replica(name=name, env=self.env(overrides), log_dir=self.log_dir, drain=drain)
        self.replicas.append(rep)
        return rep

    def start(
        self, count: int, *, drain: bool = False, overrides: Mapping[str, str] | None = None
    ) -> list[Replica]:
        first = len(self.replicas)
        return [
            self.replica(f"replica-{first + n + 1}", drain=drain, overrides=overrides).start()
            for n in range(count)
        ]

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """Every replica's parsed log lines, in timestamp order."""
        found = [e for rep in self.replicas for e in rep.events(name)]
        return sorted(found, key=lambda e: str(e.get("timestamp", "")))

    def output(self) -> str:
        """All bytes the replicas wrote to stdout and stderr (for the secrets check)."""
        parts = ["\n".join(rep.lines) for rep in self.replicas]
        for path in self.log_dir.glob("*.stderr"):
            parts.append(path.read_text(errors="replace"))
        return "\n".join(parts)

    def stderr_tails(self, chars: int = 3000) -> dict[str, str]:
        """The end of each replica's latest stderr, for assertion messages."""
        return {rep.worker_id: rep.stderr()[-chars:] for rep in self.replicas}

    def stop_all(self, *, timeout_s: float = 20) -> dict[str, int]:
        """SIGTERM every running replica and wait; returns exit codes by name."""
        for rep in self.replicas:
            rep.signal(signal.SIGTERM)
        codes = {}
        for rep in self.replicas:
            if rep.proc is not None:
                codes[rep.name] = rep.wait(timeout_s)
        return codes

    def kill_all(self) -> None:
        for rep in self.replicas:
            with suppress(Exception):
                rep.kill()


@contextmanager
def fleet(
    workdir: Path, db_url: str, *sim_args: str, storage_url: str | None = None
) -> Iterator[Fleet]:
    """A started simulator and an empty fleet; every process is gone after the block."""
    sim = SimulatorProcess(workdir, *sim_args)
    sim.start()
    store = storage_url or f"file://{workdir / 'artifacts'}"
    group = Fleet(workdir=workdir, db_url=db_url, storage_url=store, sim=sim)
    try:
        yield group
    finally:
        group.kill_all()
        sim.stop()


def run_cli(
    *args: str, env: Mapping[str, str], timeout_s: float = 60
) -> subprocess.CompletedProcess[str]:
    """``main.py ARGS`` as a process with exactly ``env``; output captured."""
    return subprocess.run(
        [sys.executable, "main.py", *args],
        cwd=ROOT,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def count_by(events: Sequence[Mapping[str, Any]], key: str) -> dict[str, int]:
    """How many events carry each value of ``key`` (e.g. completions per job id)."""
    counts: dict[str, int] = {}
    for event in events:
        value = str(event.get(key))
        counts[value] = counts.get(value, 0) + 1
    return counts
