"""The daemon's HTTP endpoints: ``/healthz`` (alive), ``/readyz`` (configuration loaded, journal
reachable, not stopping; rotator.runners.daemon.Daemon.readiness), ``/metrics`` (Prometheus text
format), and the status page ``/`` and ``/status.json`` (rotator/observe/status_page.py). Read-only,
no authentication, nothing secret: bind it to loopback or a pod network, not to the internet. An
empty host is every interface, IPv4 and IPv6 alike.

It cannot be starved by idle or slow clients: every connection has a read timeout
(:data:`READ_TIMEOUT_S`) and a total deadline (:data:`CONNECTION_DEADLINE_S`), and at most
:func:`connection_cap` connections are open at once (a small share of the open-file limit, so a
flood of connections never takes the descriptors a rotation needs). When the cap is reached the
oldest connection is closed to make room: a half-sent request from a flood goes, a probe that
answers in milliseconds gets through.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import resource
import socket
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from rotator.core.errors import RotatorError

__all__ = ["CONNECTION_DEADLINE_S", "READ_TIMEOUT_S", "HealthServer", "Unavailable", "connection_cap"]

logger = logging.getLogger("rotator.health")

#: ``() -> (ok, detail)``
Check = Callable[[], tuple[bool, dict[str, Any]]]


class Unavailable(Exception):  # noqa: N818 - the 503's name
    """Raised by a :class:`StatusSource` with nothing to serve now: a 503 whose body is the message
    (no traceback logged: the source logs its own failures, once)."""


class StatusSource(Protocol):
    """What serves ``/`` and ``/status.json`` (rotator.observe.status_page.StatusPage); either may
    raise :class:`Unavailable`. Neither may wait long: each request holds a thread and a descriptor
    until it returns, whatever the connection cap does to its socket."""

    def html_bytes(self) -> bytes: ...
    def json_bytes(self) -> bytes: ...


#: A client that sends nothing for this long is disconnected.
READ_TIMEOUT_S = 5.0
#: No connection lives longer than this, however it trickles its request in.
CONNECTION_DEADLINE_S = 10.0


def connection_cap() -> int:
    """Concurrent connections allowed: 1/16 of the soft open-file limit, between 4 and 64."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 64
    return max(4, min(64, soft // 16))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64  # the kernel's accept backlog: costs the process no descriptor

    def server_activate(self) -> None:
        self.cap = connection_cap()
        self._open: OrderedDict[socket.socket, float] = OrderedDict()
        self._open_lock = threading.Lock()
        super().server_activate()

    def verify_request(self, request: Any, client_address: Any) -> bool:
        now = time.monotonic()
        with self._open_lock:
            self._expire_locked(now)
            while len(self._open) >= self.cap:
                oldest, _ = self._open.popitem(last=False)
                _hang_up(oldest)
            self._open[request] = now
        return True

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.pop(request, None)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away mid-answer is routine (debug); anything else is logged, not printed."""
        if isinstance(sys.exc_info()[1], OSError):
            logger.debug("connection from %s ended early: %s", client_address, sys.exc_info()[1])
        else:
            logger.exception("error serving a connection from %s", client_address)

    def service_actions(self) -> None:  # every poll of serve_forever (0.5 s)
        with self._open_lock:
            self._expire_locked(time.monotonic())

    def _expire_locked(self, now: float) -> None:
        while self._open:
            sock, since = next(iter(self._open.items()))
            if now - since < CONNECTION_DEADLINE_S:
                return
            del self._open[sock]
            _hang_up(sock)


def _hang_up(sock: socket.socket) -> None:
    """Wake the connection's thread (its read or write returns at once); the thread closes the socket.

    Not closed here: the handler's rfile/wfile hold the socket, so a close() from this thread would
    only be deferred until the handler's own (and a raw close of the descriptor could let a new file
    take its number under a thread still using it). What bounds threads and descriptors is that no
    handler waits for long on anything but its socket: every endpoint answers from memory, and the
    status page never queues behind a journal read (rotator/observe/status_page.py)."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class _Server6(_Server):
    address_family = socket.AF_INET6


class _ServerDual(_Server6):
    """``::`` taking IPv4 too: an empty host means every interface, and a pod of an IPv6-only
    cluster has no IPv4 address for the kubelet's probes and Prometheus to reach."""

    def server_bind(self) -> None:
        # The default is the system's (Linux: net.ipv6.bindv6only; the BSDs: IPv6 only).
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def _server(host: str, port: int, handler: type[BaseHTTPRequestHandler]) -> _Server:
    if host == "":
        try:
            return _ServerDual(("::", port), handler)
        except OSError as exc:
            # No IPv6 in this kernel or network namespace (ipv6.disable=1): IPv4's every interface.
            # Anything else (the port taken) is the same with IPv4, and is reported as it is.
            if exc.errno not in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.EPROTONOSUPPORT):
                raise
            logger.debug("no IPv6 here (%s): listening on IPv4 only", exc.strerror)
            return _Server(("0.0.0.0", port), handler)
    return (_Server6 if ":" in host else _Server)((host, port), handler)


class _ClientGone(Exception):
    """The client closed its connection, or stopped reading, before its answer was written (not a
    broken check)."""


class HealthServer:
    """Serves the three endpoints on a background thread."""

    def __init__(self, host: str, port: int, *, alive: Check, ready: Check, registry: CollectorRegistry,
                 status: StatusSource | None = None, exposition: Callable[[], bytes] | None = None) -> None:
        """``exposition``: the /metrics body (rotator.observe.metrics.Metrics.exposition); default: the registry's."""
        self._status = status
        self._exposition = exposition or (lambda: bytes(generate_latest(registry)))
        self._alive = alive
        self._ready = ready
        self._registry = registry
        handler = self._handler_class()
        try:
            self._server = _server(host, port, handler)
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
        logger.info("serving /healthz, /readyz, /metrics%s on http://%s:%d",
                    " and the status page / /status.json" if self._status is not None else "",
                    f"[{host}]" if ":" in host else host, port)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "rotator"
            sys_version = ""
            timeout = READ_TIMEOUT_S  # socket timeout of each read and write

            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                path = self.path.split("?", 1)[0]
                self._answering = False
                try:
                    try:
                        if path == "/healthz":
                            ok, detail = outer._alive()
                            self._send(200 if ok else 503, "application/json", _json({"alive": ok, **detail}))
                        elif path == "/readyz":
                            ok, detail = outer._ready()
                            self._send(200 if ok else 503, "application/json", _json({"ready": ok, **detail}))
                        elif path == "/metrics":
                            self._send(200, CONTENT_TYPE_LATEST, outer._exposition())
                        elif path == "/" and outer._status is not None:
                            self._send(200, "text/html; charset=utf-8", outer._status.html_bytes())
                        elif path == "/status.json" and outer._status is not None:
                            self._send(200, "application/json", outer._status.json_bytes())
                        else:
                            self._send(404, "text/plain; charset=utf-8",
                                       b"not found: try /, /status.json, /healthz, /readyz, /metrics\n")
                    except Unavailable as exc:
                        self._send(503, "text/plain; charset=utf-8", f"{exc}\n".encode(), retry_after=True)
                except _ClientGone as exc:  # a probe or scraper that hung up or stalled: routine
                    logger.debug("%s went away before the answer to %s (closed, or stopped reading for %gs): %s",
                                 self.address_string(), path, self.timeout, exc.__cause__)
                except Exception:  # a broken check answers 500, never kills the server
                    logger.exception("error serving %s", path)
                    # Once a status line has gone out, a second one would only corrupt the answer.
                    if not self._answering:
                        with contextlib.suppress(_ClientGone):
                            self._send(500, "text/plain; charset=utf-8", b"internal error, see the daemon's log\n")

            def _send(self, status: int, content_type: str, body: bytes, retry_after: bool = False) -> None:
                self._answering = True
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                if retry_after:
                    self.send_header("Retry-After", "5")
                try:
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(body)
                except OSError as exc:
                    # Reset, closed, or the write timed out (a client that stopped reading, its window
                    # full): whatever it is, the answer cannot be finished on this connection.
                    raise _ClientGone from exc

            do_HEAD = do_GET  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base signature
                logger.debug("%s %s", self.address_string(), format % args)

        return Handler


def _json(value: dict[str, Any]) -> bytes:
    return (json.dumps(value, default=str, sort_keys=True) + "\n").encode("utf-8")
