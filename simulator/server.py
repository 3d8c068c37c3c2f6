"""Running the simulator: `serve()` as an anyio task, `SimulatorServer` in a background thread.

`SimulatorServer` is what in-process tests use: it owns an event loop in a worker thread
(an anyio blocking portal), listens on `config.port` (0 = any free port), and exposes
`base_url` plus thread-safe helpers that run on that loop (`stats`, `job`, `complete_job`,
`set_faults`, `reset`). The CLI (`python -m simulator`) runs `serve()` in the main thread.
uvloop is used when installed (it is a transitive dev dependency), plain asyncio otherwise.
"""

from __future__ import annotations

import asyncio
import importlib.util
from concurrent.futures import Future
from contextlib import ExitStack
from types import TracebackType
from typing import Any, Self

import anyio
from anyio.abc import TaskStatus
from anyio.from_thread import BlockingPortal, start_blocking_portal

from simulator.app import SimulatorApp
from simulator.config import FaultRates, SimulatorConfig
from simulator.http import HEAD_LIMIT, HttpServer
from simulator.state import SimState

_BACKLOG = 4096


def backend_options(config: SimulatorConfig) -> dict[str, Any]:
    """anyio asyncio-backend options: uvloop when wanted and importable."""
    use = config.use_uvloop and importlib.util.find_spec("uvloop") is not None
    return {"use_uvloop": use}


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


async def serve(
    app: SimulatorApp, *, task_status: TaskStatus[str] = anyio.TASK_STATUS_IGNORED
) -> None:
    """Listen until cancelled; reports the base URL through `task_status` once listening."""
    state = app.state
    config = state.config
    http = HttpServer(app, max_body_bytes=config.max_body_bytes)
    servers: list[asyncio.Server] = []
    try:
        servers.append(await _listen(http, config.host, config.port))
        port = servers[0].sockets[0].getsockname()[1]
        state.base_url = f"http://{_url_host(config.host)}:{port}"
        cdn_host = config.cdn_host or config.host
        if cdn_host != config.host:
            servers.append(await _listen(http, cdn_host, port))
        state.cdn_base_url = f"http://{_url_host(cdn_host)}:{port}"
        task_status.started(state.base_url)
        await anyio.sleep_forever()
    finally:
        for server in servers:
            server.close()
        http.close_connections()


async def _listen(http: HttpServer, host: str, port: int) -> asyncio.Server:
    return await asyncio.start_server(
        http.serve_connection, host, port, limit=HEAD_LIMIT, backlog=_BACKLOG, reuse_address=True
    )


class SimulatorServer:
    """The simulator in a background thread, for tests and in-process tools.

    Use as a context manager (`with SimulatorServer(config) as sim: sim.base_url`) or call
    `start()` / `stop()`. All state lives on the server's loop; the helper methods hop onto
    it, so they are safe to call from any thread.
    """

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config or SimulatorConfig()
        self._app = SimulatorApp(SimState(self.config))
        self._stack: ExitStack | None = None
        self._portal: BlockingPortal | None = None
        self._task: Future[None] | None = None

    @property
    def base_url(self) -> str:
        """`http://host:port` of the vendor APIs (set REPLICATE/STABILITY/SUNO_BASE_URL to it)."""
        if not self._app.state.base_url:
            raise RuntimeError("the simulator is not running")
        return self._app.state.base_url

    @property
    def cdn_base_url(self) -> str:
        """Base of result-file URLs (differs from `base_url` only when `cdn_host` is set)."""
        self.base_url  # noqa: B018 - raises when not running
        return self._app.state.cdn_base_url

    @property
    def port(self) -> int:
        return int(self.base_url.rsplit(":", 1)[1])

    @property
    def seed(self) -> int:
        return self._app.state.seed

    def start(self) -> Self:
        """Start listening; returns once the port is bound."""
        if self._stack is not None:
            raise RuntimeError("the simulator is already running")
        stack = ExitStack()
        try:
            portal = stack.enter_context(
                start_blocking_portal("asyncio", backend_options(self.config))
            )
            self._task, _ = portal.start_task(serve, self._app)
        except BaseException:
            stack.close()
            raise
        self._stack, self._portal = stack, portal
        return self

    def stop(self) -> None:
        """Stop listening, drop open connections and end the loop thread (idempotent)."""
        if self._stack is None:
            return
        if self._task is not None:
            self._task.cancel()
        self._stack.close()
        self._stack = self._portal = self._task = None
        self._app.state.base_url = ""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _call(self, func: Any, *args: Any) -> Any:
        if self._portal is None:
            return func(*args)
        return self._portal.call(func, *args)

    def stats(self) -> dict[str, Any]:
        """Same document as `GET /_sim/stats`."""
        return dict(self._call(self._app.stats))

    def jobs(self) -> list[dict[str, Any]]:
        """Summaries of every job (see `GET /_sim/jobs`)."""
        return list(
            self._call(lambda: [self._app.summary(j) for j in self._app.state.jobs.values()])
        )

    def job(self, job_id: str) -> dict[str, Any] | None:
        """Summary of one job, or None if the simulator never created it."""

        def find() -> dict[str, Any] | None:
            job = self._app.state.jobs.get(job_id)
            return None if job is None else self._app.summary(job)

        result: dict[str, Any] | None = self._call(find)
        return result

    def complete_job(self, job_id: str, outcome: str = "success") -> bool:
        """Make a running job terminal now; False if unknown or already terminal."""
        return bool(self._call(self._app.complete, job_id, outcome))

    def set_faults(self, faults: FaultRates) -> None:
        """Replace the random fault rates (takes effect for the next request)."""

        def apply() -> None:
            self._app.state.faults = faults

        self._call(apply)

    def reset(self) -> None:
        """Forget every job and counter."""
        self._call(self._app.state.reset)
