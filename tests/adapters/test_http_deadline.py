"""A whole HTTP request of the HTTP issuers ends within ``3 * timeout_s`` (rotator/adapters/http/common.py ``send``).

httpx's ``timeout_s`` bounds each phase only: a server that trickles its answer (or its headers)
in faster than that held a call for ever, far past ``call_timeout_seconds``, which recovery
takes for the longest a mint can take (the engine's mint window). These servers are real
sockets on loopback; each drips for at most ``DRIP_FOR_S`` and then sends the rest at once, so
that without the deadline a test ends (late, with an answer) instead of hanging.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpcore
import httpx
import pytest

from rotator.adapters.http.common import (
    CALL_MARGIN_S,
    MAX_ANSWER_BYTES,
    REQUEST_PHASES,
    DeadlineExceeded,
    _Watchdog,
    send,
)
from rotator.adapters.http.influxdb2 import InfluxDB2Issuer, InfluxDB2Settings
from rotator.adapters.http.influxdb3 import InfluxDB3Issuer, InfluxDB3Settings
from rotator.adapters.http.management_api import ManagementApiIssuer, ManagementApiSettings
from rotator.core.contracts import AdapterContext, MintRequest
from rotator.core.errors import IssuerOutputError, NotYetAccepted, PermanentError, TransientError
from rotator.core.secret import Secret

TIMEOUT_S = 0.5
DEADLINE_S = REQUEST_PHASES * TIMEOUT_S
DRIP_EVERY_S = 0.1  # well under the read timeout: httpx alone never times out
DRIP_FOR_S = 4.0
TOKEN = "apiv3_" + "A" * 86
MINTED = {"id": 5, "name": "rotator-app-0123456789abcdef", "token": TOKEN, "hash": "ab" * 64,
          "created_at": "2026-01-01T00:00:00Z", "expiry": "2026-02-01T00:00:00Z"}  # fmt: skip


@contextmanager
def dripping_server(
    body: bytes, *, status: str = "201 Created", drip: str = "body", tls: ssl.SSLContext | None = None
) -> Iterator[str]:
    """A server answering every request with ``body``, the headers or the body dripped a byte at a time."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    stop = threading.Event()

    def answer(conn: socket.socket) -> None:
        if tls is not None:
            try:
                conn = tls.wrap_socket(conn, server_side=True)
            except OSError:
                return
        with conn:
            conn.settimeout(10)
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            pad = b"X-Slow: " + b"a" * 200 + b"\r\n"
            ends = time.monotonic() + DRIP_FOR_S
            try:
                if drip == "headers":
                    conn.sendall(head.encode())
                    for i in range(len(pad)):
                        if time.monotonic() > ends or stop.is_set():
                            conn.sendall(pad[i:])
                            break
                        conn.sendall(pad[i:i + 1])
                        time.sleep(DRIP_EVERY_S)
                    conn.sendall(b"\r\n" + body)
                    return
                conn.sendall(head.encode() + b"\r\n")
                for i in range(len(body)):
                    if time.monotonic() > ends or stop.is_set():
                        conn.sendall(body[i:])
                        break
                    conn.sendall(body[i:i + 1])
                    time.sleep(DRIP_EVERY_S)
            except OSError:
                pass  # the client gave up: what the deadline is for

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=answer, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        listener.close()


def influxdb3(url: str, **extra: Any) -> InfluxDB3Issuer:
    data = {"base_url": url, "credential": "self", "timeout_s": TIMEOUT_S, **extra}
    settings = InfluxDB3Settings.model_validate(data)
    return InfluxDB3Issuer.from_config(settings, AdapterContext(policy="app", base_dir=Path(".")))


def mint_request() -> MintRequest:
    return MintRequest("app", "0123456789abcdef", "rotator:app:0123456789abcdef", datetime.now(UTC) + timedelta(days=1))


@pytest.mark.parametrize("drip", ["body", "headers"])
def test_a_mint_answered_drop_by_drop_ends_at_the_deadline_as_unanswered(drip: str) -> None:
    """The token exists on the server, its answer comes a byte per 0.1 s: the mint ends at 3 x
    timeout_s as a timeout (transient: "unanswered", which the engine resolves by the run's tag),
    never as a refusal, and within the issuer's call_timeout_seconds."""
    with dripping_server(json.dumps(MINTED).encode(), drip=drip) as url:
        issuer = influxdb3(url)
        started = time.monotonic()
        with pytest.raises(TransientError) as err:
            issuer.mint(mint_request(), Secret("apiv3_credential-0123456789"))
        took = time.monotonic() - started
    assert DEADLINE_S - 0.1 <= took < DEADLINE_S + 1.0, took
    assert took < issuer.call_timeout_seconds
    assert not isinstance(err.value, NotYetAccepted | PermanentError)
    assert f"got no complete answer within {DEADLINE_S:g}s" in str(err.value)
    assert TOKEN not in str(err.value) + err.value.hint


def test_the_deadline_holds_over_tls(tmp_path: Path) -> None:
    """TLS wraps the socket into a new object: the watchdog shuts that one down (the headers drip:
    only the watchdog ends that phase)."""
    from tests.deploy.test_deploy_daemon import self_signed_cert

    cert, key, _ = self_signed_cert(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with dripping_server(json.dumps(MINTED).encode(), tls=context, drip="headers") as url:
        issuer = influxdb3(url, ca_bundle=str(cert))
        started = time.monotonic()
        with pytest.raises(TransientError, match=f"got no complete answer within {DEADLINE_S:g}s"):
            issuer.mint(mint_request(), Secret("apiv3_credential-0123456789"))
        assert time.monotonic() - started < DEADLINE_S + 1.0


def test_influxdb2_and_management_api_requests_have_the_deadline_too(tmp_path: Path) -> None:
    body = json.dumps({"authorizations": [], "links": {}}).encode()
    with dripping_server(body, status="200 OK") as url:
        settings2 = InfluxDB2Settings.model_validate({
            "base_url": url, "org_id": "0a0b0c0d0e0f1011", "credential": "self", "timeout_s": TIMEOUT_S,
            "permissions": [{"action": "read", "resource": {"type": "buckets"}}],
        })
        v2 = InfluxDB2Issuer.from_config(settings2, AdapterContext(policy="app"))
        started = time.monotonic()
        with pytest.raises(TransientError, match=f"no complete answer within {DEADLINE_S:g}s"):
            v2.list_tokens(Secret("v2-credential-" + "x" * 40))
        assert time.monotonic() - started < DEADLINE_S + 1.0

        (tmp_path / "t").write_text("M.V1.not-a-real-token-0000")
        settings = ManagementApiSettings.model_validate({
            "product": "clustered", "cluster_host": url, "permissions": [{"action": "read", "resource": "*"}],
            "verify": {"database": "x"}, "management_token": {"file": str(tmp_path / "t")}, "timeout_s": TIMEOUT_S,
        })
        mgmt = ManagementApiIssuer.from_config(settings, AdapterContext(policy="db", base_dir=tmp_path))
        started = time.monotonic()
        with pytest.raises(TransientError, match=f"no complete answer from {url} within {DEADLINE_S:g}s"):
            mgmt.list_tokens(None)
        assert time.monotonic() - started < DEADLINE_S + 1.0


def test_call_timeout_seconds_bounds_what_the_deadlines_allow() -> None:
    """The engine's mint window counts on it: every request of a call ends within its deadline."""
    issuer = influxdb3("http://influx.invalid")
    assert issuer.call_timeout_seconds == issuer.requests_per_call * DEADLINE_S + CALL_MARGIN_S


def test_a_transport_without_a_socket_is_bounded_between_chunks() -> None:
    """What the watchdog cannot shut down (a transport of its own) is cut off between two chunks."""

    def slow_chunks() -> Iterator[bytes]:
        for _ in range(100):
            time.sleep(DRIP_EVERY_S)
            yield b" "

    client = httpx.Client(transport=httpx.MockTransport(lambda req: httpx.Response(200, content=slow_chunks())))
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        send(client, "GET", "http://influx.invalid/x", timeout_s=TIMEOUT_S)
    assert time.monotonic() - started < DEADLINE_S + 0.5


def test_a_complete_answer_is_returned_read() -> None:
    client = httpx.Client(transport=httpx.MockTransport(lambda req: httpx.Response(200, json={"a": 1})))
    response = send(client, "GET", "http://influx.invalid/x", timeout_s=TIMEOUT_S, params={"q": "1"})
    assert response.json() == {"a": 1} and response.request.url.params["q"] == "1"


def huge(req: httpx.Request) -> httpx.Response:
    def chunks() -> Iterator[bytes]:
        for _ in range(MAX_ANSWER_BYTES // (1 << 20) + 8):
            yield b" " * (1 << 20)

    return httpx.Response(200, content=chunks())


def test_an_answer_past_the_size_limit_is_cut_off(tmp_path: Path) -> None:
    settings = InfluxDB3Settings.model_validate({"base_url": "http://influx.invalid", "credential": "self"})
    issuer = InfluxDB3Issuer.from_config(settings, AdapterContext(policy="app"), transport=httpx.MockTransport(huge))
    with pytest.raises(IssuerOutputError, match=f"answered more than {MAX_ANSWER_BYTES} bytes"):
        issuer.list_tokens(Secret("apiv3_credential-0123456789"))

    (tmp_path / "t").write_text("M.V1.not-a-real-token-0000")
    model = ManagementApiSettings.model_validate({
        "product": "clustered", "cluster_host": "https://cluster.example.test", "verify": {"database": "x"},
        "permissions": [{"action": "read", "resource": "*"}], "management_token": {"file": str(tmp_path / "t")},
    })
    mgmt = ManagementApiIssuer.from_config(model, AdapterContext(policy="db", base_dir=tmp_path),
                                           client=httpx.Client(transport=httpx.MockTransport(huge)))
    with pytest.raises(IssuerOutputError, match=f"longer than {MAX_ANSWER_BYTES} bytes"):
        mgmt.list_tokens(None)


class _Stream:
    def __init__(self) -> None:
        self.sock = socket.socket()
        self.closed = False

    def get_extra_info(self, info: str) -> Any:
        return self.sock if info == "socket" else None

    def close(self) -> None:
        self.closed = True
        self.sock.close()


def test_a_connection_made_after_the_deadline_sends_nothing() -> None:
    """DNS is beyond the watchdog: a connection that completes after the deadline is closed before
    a byte of the request is sent (a mint sent late could land after the engine's mint window)."""
    watchdog = _Watchdog()
    watchdog.expire()
    stream = _Stream()
    with pytest.raises(httpcore.ConnectTimeout):
        watchdog.trace("connection.connect_tcp.complete", {"return_value": stream})
    assert stream.closed
    in_time = _Watchdog()
    other = _Stream()
    in_time.trace("connection.connect_tcp.complete", {"return_value": other})
    in_time.finish()
    in_time.expire()  # after the request: nothing happens to the connection
    assert not in_time.expired and not other.closed
    other.close()
