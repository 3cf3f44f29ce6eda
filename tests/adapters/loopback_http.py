"""Raw HTTP/1.1 servers on loopback for the tests of :func:`rotator.adapters.http.common.send`.

Each answer is written byte by byte by the test (dripped, cut off, with headers no ``httpx.Response``
built in a test would carry), as a slow server or a proxy would send it.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rotator.adapters.http.influxdb3 import InfluxDB3Issuer, InfluxDB3Settings
from rotator.core.contracts import AdapterContext

TOKEN = "apiv3_" + "A" * 86


@contextmanager
def loopback_server(answer: Callable[[socket.socket], None], *, tls: ssl.SSLContext | None = None,
                    once: bool = False) -> Iterator[str]:  # fmt: skip
    """Runs ``answer`` on each connection (a thread each; ``once``: the first connection only) and
    yields the server's URL. A connection error ends that connection's answer (the client gave up)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)

    def handle(conn: socket.socket) -> None:
        try:
            if tls is not None:
                conn = tls.wrap_socket(conn, server_side=True)
            with conn:
                conn.settimeout(10)
                answer(conn)
        except OSError:
            pass

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            if once:
                handle(conn)
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


class FakeStream:
    """An httpcore network stream whose socket the request watchdog can find (``get_extra_info``),
    for the tests that drive its trace callbacks by hand."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.closed = False

    def get_extra_info(self, info: str) -> Any:
        return self.sock if info == "socket" else None

    def close(self) -> None:
        self.closed = True
        self.sock.close()


def read_head(conn: socket.socket, data: bytes = b"") -> tuple[bytes, bytes] | None:
    """A request's head from ``conn`` (``data``: what was read already) and what followed it; None when
    the client closed the connection first."""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def influxdb3_issuer(url: str, timeout_s: float, **extra: Any) -> InfluxDB3Issuer:
    """An ``influxdb3`` issuer (``credential = "self"``) of the server at ``url``."""
    data = {"base_url": url, "credential": "self", "timeout_s": timeout_s, **extra}
    settings = InfluxDB3Settings.model_validate(data)
    return InfluxDB3Issuer.from_config(settings, AdapterContext(policy="app", base_dir=Path(".")))
