"""The daemon's HTTP endpoints: ``/healthz`` (alive), ``/readyz`` (journal reachable, configuration
loaded) and ``/metrics`` (Prometheus text format). Read-only, no authentication, nothing secret:
bind it to loopback or a pod network, not to the internet.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from rotator.errors import RotatorError

__all__ = ["HealthServer"]

logger = logging.getLogger("rotator.health")

#: ``() -> (ok, detail)``
Check = Callable[[], tuple[bool, dict[str, Any]]]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class HealthServer:
    """Serves the three endpoints on a background thread."""

    def __init__(self, host: str, port: int, *, alive: Check, ready: Check, registry: CollectorRegistry) -> None:
        self._alive = alive
        self._ready = ready
        self._registry = registry
        handler = self._handler_class()
        server_class = _Server6 if ":" in host else _Server
        try:
            self._server = server_class((host, port), handler)
        except OSError as exc:
            raise RotatorError(f"cannot listen on {host or '*'}:{port}: {exc.strerror}",
                               hint="pick a free address with [daemon] listen = 'HOST:PORT' or --listen") from None
        self._thread = threading.Thread(target=self._server.serve_forever, name="rotator-http", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread.start()
        host, port = self.address
        logger.info("serving /healthz, /readyz and /metrics on http://%s:%d",
                    f"[{host}]" if ":" in host else host, port)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "rotator"
            sys_version = ""

            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                path = self.path.split("?", 1)[0]
                try:
                    if path == "/healthz":
                        ok, detail = outer._alive()
                        self._send(200 if ok else 503, "application/json", _json({"alive": ok, **detail}))
                    elif path == "/readyz":
                        ok, detail = outer._ready()
                        self._send(200 if ok else 503, "application/json", _json({"ready": ok, **detail}))
                    elif path == "/metrics":
                        self._send(200, CONTENT_TYPE_LATEST, generate_latest(outer._registry))
                    else:
                        self._send(404, "text/plain; charset=utf-8", b"not found: try /healthz, /readyz, /metrics\n")
                except Exception:  # a broken check answers 500, never kills the server
                    logger.exception("error serving %s", path)
                    self._send(500, "text/plain; charset=utf-8", b"internal error, see the daemon's log\n")

            def _send(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_HEAD = do_GET  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base signature
                logger.debug("%s %s", self.address_string(), format % args)

        return Handler


def _json(value: dict[str, Any]) -> bytes:
    return (json.dumps(value, default=str, sort_keys=True) + "\n").encode("utf-8")
