"""``/metrics``, ``/healthz`` and ``/readyz`` on ``POLLER_HTTP_PORT``.

Served from a small threaded stdlib HTTP server so that a busy or stuck event loop cannot
hide the metrics that would explain it; readiness is a snapshot the event loop publishes.
"""

from __future__ import annotations

import errno
import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from poller.settings import SettingsError

ReadinessProbe = Callable[[], tuple[bool, dict[str, object]]]


def _handler(probe: ReadinessProbe) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                self._json(200, {"status": "ok"})
            elif path == "/readyz":
                ready, detail = probe()
                self._json(200 if ready else 503, {"ready": ready, **detail})
            else:
                self._json(404, {"error": "not found"})

        def _json(self, code: int, body: dict[str, object]) -> None:
            self._send(code, json.dumps(body).encode(), "application/json")

        def _send(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return  # probes every few seconds would drown the job logs

    return Handler


def bind_error(host: str, port: int, exc: OSError) -> SettingsError:
    """A start-up error naming the setting to change: the port when it is taken or
    privileged, else the host (unresolvable, or no such address on this machine)."""
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.EADDRINUSE, errno.EACCES):
        return SettingsError(f"POLLER_HTTP_PORT: cannot serve on {host}:{port}: {reason}")
    return SettingsError(f"POLLER_HTTP_HOST: cannot serve on {host}:{port}: {reason}")


class HealthServer:
    """Background HTTP server; ``port`` 0 picks a free port (see ``bound_port``).

    A host or port it cannot bind raises `SettingsError` (one line, exit 2 from ``main.py``),
    not a raw ``OSError`` traceback."""

    def __init__(self, host: str, port: int, probe: ReadinessProbe) -> None:
        try:
            self._server = ThreadingHTTPServer((host, port), _handler(probe))
        except OSError as exc:  # socket.gaierror included
            raise bind_error(host, port, exc) from None
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def bound_port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
