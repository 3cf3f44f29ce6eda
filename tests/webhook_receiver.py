"""A local HTTP server that records webhook POSTs and answers with scripted statuses (tests only).

:meth:`Delivery.verify` is a receiver's check of the Standard Webhooks signature, written from the
specification (https://www.standardwebhooks.com), not from rotator's code: HMAC-SHA256 over
``webhook-id.webhook-timestamp.body``, base64, ``v1,`` prefix; a timestamp outside the tolerance
window and a ``webhook-id`` seen before are refused (replays), as is any change to the body.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Delivery", "Receiver", "receiver"]


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data

    def header(self, name: str) -> str:
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), "")

    def verify(self, key: str, *, now: float | None = None, tolerance_s: float = 300,
               seen: set[str] | None = None) -> str:
        """``"ok"`` or why a receiver refuses this delivery; ``seen`` holds the ids accepted before."""
        msg_id, stamp = self.header("webhook-id"), self.header("webhook-timestamp")
        if not msg_id or not stamp.isdigit():
            return "missing webhook-id or webhook-timestamp"
        if abs((time.time() if now is None else now) - int(stamp)) > tolerance_s:
            return "timestamp outside the tolerance window"
        signed = f"{msg_id}.{stamp}.".encode() + self.body
        expected = "v1," + base64.b64encode(hmac.new(key.encode(), signed, hashlib.sha256).digest()).decode()
        if not any(hmac.compare_digest(expected, s) for s in self.header("webhook-signature").split()):
            return "bad signature"
        if seen is not None:
            if msg_id in seen:
                return "webhook-id seen before"
            seen.add(msg_id)
        return "ok"

    def signature_ok(self, key: str) -> bool:
        return self.verify(key) == "ok"


@dataclass
class Receiver:
    url: str
    #: statuses to answer, in order; the last one repeats
    statuses: list[int] = field(default_factory=lambda: [200])
    delay_s: float = 0.0
    deliveries: list[Delivery] = field(default_factory=list)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        while len(self.deliveries) < count:
            assert time.monotonic() < deadline, f"only {len(self.deliveries)} of {count} webhook(s) arrived"
            time.sleep(0.02)
        return list(self.deliveries)


@contextmanager
def receiver(statuses: list[int] | None = None, delay_s: float = 0.0) -> Iterator[Receiver]:
    state = Receiver(url="", statuses=list(statuses or [200]), delay_s=delay_s)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with lock:
                state.deliveries.append(Delivery(self.path, dict(self.headers.items()), body, time.monotonic()))
                status = state.statuses.pop(0) if len(state.statuses) > 1 else state.statuses[0]
            if state.delay_s:
                time.sleep(state.delay_s)
            try:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
            except OSError:
                pass  # the client gave up (timeout test)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/rotator"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
