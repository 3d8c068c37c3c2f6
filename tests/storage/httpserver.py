"""A real loopback HTTP(S) server for download tests, with per-path scripted behaviour.

Routes are plain functions given an `Exchange`, so a test can send anything: lying
Content-Length, gzip encodings, endless or trickling bodies, redirects. Responses are written
raw (no framework), and every request is recorded for assertions about what reached the wire.
"""

from __future__ import annotations

import contextlib
import ssl
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["Exchange", "LoopbackServer", "RecordedRequest", "Route", "serve"]


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    path: str
    headers: Mapping[str, str]


@dataclass(slots=True)
class Exchange:
    """One request; helpers write the raw response and count body bytes sent."""

    handler: BaseHTTPRequestHandler
    stopping: threading.Event
    sent: int = field(default=0)
    done: threading.Event = field(default_factory=threading.Event)

    def head(self, status: int, headers: Mapping[str, str] | None = None) -> None:
        lines = [f"HTTP/1.1 {status} X", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        self.handler.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    def write(self, data: bytes) -> bool:
        """False once the client has gone away."""
        try:
            self.handler.wfile.write(data)
            self.handler.wfile.flush()
        except OSError:
            return False
        self.sent += len(data)
        return True


Route = Callable[[Exchange], None]


class LoopbackServer:
    """Threaded server on 127.0.0.1, port chosen by the kernel; optionally TLS."""

    def __init__(self, *, tls: ssl.SSLContext | None = None) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[RecordedRequest] = []
        self.exchanges: list[Exchange] = []
        self.stopping = threading.Event()
        self._tls = tls
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        if tls is not None:
            self._httpd.socket = tls.wrap_socket(
                self._httpd.socket, server_side=True, do_handshake_on_connect=False
            )
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def url(self, path: str, *, host: str = "127.0.0.1") -> str:
        scheme = "https" if self._tls is not None else "http"
        return f"{scheme}://{host}:{self.port}{path}"

    def paths(self) -> list[str]:
        return [request.path for request in self.requests]

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                if isinstance(self.request, ssl.SSLSocket):
                    self.request.do_handshake()  # in this thread, not the accept loop
                super().setup()

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                server.requests.append(RecordedRequest(path, dict(self.headers.items())))
                exchange = Exchange(self, server.stopping)
                server.exchanges.append(exchange)
                route = server.routes.get(path)
                try:
                    with contextlib.suppress(OSError):
                        if route is None:
                            exchange.head(404, {"Content-Length": "0"})
                        else:
                            route(exchange)
                finally:
                    exchange.done.set()
                self.close_connection = True

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: pytest shows failures, not access logs."""

        return Handler

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


@contextlib.contextmanager
def serve(*, tls: ssl.SSLContext | None = None) -> Iterator[LoopbackServer]:
    server = LoopbackServer(tls=tls)
    server.start()
    try:
        yield server
    finally:
        server.stop()
