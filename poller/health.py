"""``/metrics``, ``/healthz`` and ``/readyz`` on ``POLLER_HTTP_PORT``.

Served from a small threaded stdlib HTTP server so that a busy or stuck event loop cannot
hide the metrics that would explain it; readiness is a snapshot the event loop publishes.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

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


class HealthServer:
    """Background HTTP server; ``port`` 0 picks a free port (see ``bound_port``)."""

    def __init__(self, host: str, port: int, probe: ReadinessProbe) -> None:
        self._server = ThreadingHTTPServer((host, port), _handler(probe))
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
