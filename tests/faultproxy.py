"""A TCP proxy on loopback that injects faults between rotator and a real server (tests only).

Modes, switched from the test at any moment (``proxy.mode = "reset"``), apply to new connections
and, for ``down``/``reset``/``blackhole``, also cut the ones already open:

- ``pass``: bytes flow both ways; each chunk of an answer waits ``latency`` seconds first;
- ``down``: the port refuses (the listener is closed: ECONNREFUSED);
- ``reset``: accept, then close with SO_LINGER 0 (ECONNRESET);
- ``blackhole``: accept and never answer (reads time out);
- ``http503`` / ``http429``: answer every request with that status (``Retry-After: 1``) and close.

One thread per direction of a connection; threads are daemons, ``close()`` cuts everything.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Iterator

__all__ = ["FaultProxy", "fault_proxy"]

MODES = ("pass", "down", "reset", "blackhole", "http503", "http429")


class FaultProxy:
    """Listens on 127.0.0.1:<port>; forwards to ``target``, a ``(host, port)`` or a unix socket path."""

    def __init__(self, target: tuple[str, int] | str) -> None:
        self.target = target
        self.latency = 0.0
        self._mode = "pass"
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self.connections = 0  # accepted so far, for tests that count attempts
        self._closed = False
        threading.Thread(target=self._accept_loop, name="faultproxy", daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, mode: str) -> None:
        assert mode in MODES, mode
        with self._lock:
            self._mode = mode
            if mode != "pass":  # an outage cuts what is in flight too
                for conn in list(self._conns):
                    _abort(conn)
                self._conns.clear()
        if mode == "down":
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
            self._listener.close()
        elif self._listener.fileno() == -1 and not self._closed:
            self._listener = socket.create_server(("127.0.0.1", self.port))
            threading.Thread(target=self._accept_loop, name="faultproxy", daemon=True).start()

    def close(self) -> None:
        self._closed = True
        self.mode = "down"

    def _accept_loop(self) -> None:
        listener = self._listener
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed: "down" or close()
            self.connections += 1
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        mode = self._mode
        if mode == "reset":
            _abort(client)
        elif mode == "blackhole":
            self._track(client)  # held open, never answered, until the mode changes
        elif mode.startswith("http"):
            status = mode.removeprefix("http")
            client.settimeout(2)
            with contextlib.suppress(OSError):
                client.recv(65536)
                client.sendall(f"HTTP/1.1 {status} Injected\r\nRetry-After: 1\r\nContent-Type: application/json\r\n"
                               f"Content-Length: 2\r\nConnection: close\r\n\r\n{{}}".encode())
            client.close()
        else:
            try:
                upstream = _connect(self.target)
            except OSError:
                _abort(client)
                return
            for sock in (client, upstream):
                self._track(sock)
            threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()
            self._pipe(client, upstream, False)

    def _pipe(self, src: socket.socket, dst: socket.socket, answers: bool) -> None:
        try:
            while chunk := src.recv(65536):
                if answers and self.latency:
                    time.sleep(self.latency)
                dst.sendall(chunk)
        except OSError:
            pass
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._conns.add(sock)


def _connect(target: tuple[str, int] | str) -> socket.socket:
    if isinstance(target, str):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(target)
        except OSError:
            sock.close()
            raise
        return sock
    return socket.create_connection(target, timeout=5)


def _abort(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the peer gets a RST (connection reset), not a FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RD)  # wakes a thread blocked reading it; sends nothing
    sock.close()


@contextlib.contextmanager
def fault_proxy(target: tuple[str, int] | str) -> Iterator[FaultProxy]:
    proxy = FaultProxy(target)
    try:
        yield proxy
    finally:
        proxy.close()
