"""A whole HTTP request of the HTTP issuers ends within ``3 * timeout_s`` (rotator/adapters/http/common.py ``send``).

httpx's ``timeout_s`` bounds each phase only: a server that trickles its answer (or its headers)
in faster than that held a call for ever, far past ``call_timeout_seconds``, which recovery
takes for the longest a mint can take (the engine's mint window). These servers are real
sockets on loopback; each drips for at most ``DRIP_FOR_S`` and then sends the rest at once, so
that without the deadline a test ends (late, with an answer) instead of hanging.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
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
    new_client,
    send,
)
from rotator.adapters.http.influxdb2 import InfluxDB2Issuer, InfluxDB2Settings
from rotator.adapters.http.influxdb3 import InfluxDB3Issuer, InfluxDB3Settings
from rotator.adapters.http.management_api import ManagementApiIssuer, ManagementApiSettings
from rotator.core.contracts import AdapterContext, MintRequest
from rotator.core.errors import IssuerOutputError, NotYetAccepted, PermanentError, TransientError
from rotator.core.secret import Secret
from tests.adapters.loopback_http import TOKEN, FakeStream, influxdb3_issuer, loopback_server, read_head

TIMEOUT_S = 0.5
DEADLINE_S = REQUEST_PHASES * TIMEOUT_S
DRIP_EVERY_S = 0.1  # well under the read timeout: httpx alone never times out
DRIP_FOR_S = 4.0
MINTED = {"id": 5, "name": "rotator-app-0123456789abcdef", "token": TOKEN, "hash": "ab" * 64,
          "created_at": "2026-01-01T00:00:00Z", "expiry": "2026-02-01T00:00:00Z"}  # fmt: skip


@contextmanager
def dripping_server(
    body: bytes, *, status: str = "201 Created", drip: str = "body", tls: ssl.SSLContext | None = None
) -> Iterator[str]:
    """A server answering every request with ``body``, the headers or the body dripped a byte at a time."""
    stop = threading.Event()

    def answer(conn: socket.socket) -> None:
        if read_head(conn) is None:
            return
        head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        pad = b"X-Slow: " + b"a" * 200 + b"\r\n"
        ends = time.monotonic() + DRIP_FOR_S
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

    with loopback_server(answer, tls=tls) as url:
        try:
            yield url
        finally:
            stop.set()


def influxdb3(url: str, **extra: Any) -> InfluxDB3Issuer:
    return influxdb3_issuer(url, TIMEOUT_S, **extra)


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


def test_a_connection_made_after_the_deadline_sends_nothing() -> None:
    """DNS is beyond the watchdog: a connection that completes after the deadline is closed before
    a byte of the request is sent (a mint sent late could land after the engine's mint window)."""
    watchdog = _Watchdog(time.monotonic() + 60)
    watchdog.expire()
    stream = FakeStream()
    with pytest.raises(httpcore.ConnectTimeout):
        watchdog.trace("connection.connect_tcp.complete", {"return_value": stream})
    assert stream.closed
    in_time = _Watchdog(time.monotonic() + 60)
    other = FakeStream()
    in_time.trace("connection.connect_tcp.complete", {"return_value": other})
    in_time.finish()
    in_time.expire()  # after the request: nothing happens to the connection
    assert not in_time.expired and not other.closed
    other.close()


def test_a_request_whose_deadline_passed_is_not_written_though_the_timer_has_not_run() -> None:
    """A process paused (SIGSTOP) and resumed after the deadline runs on in the thread that was
    sending, most often before the timer thread gets to expire the watchdog: the request's own
    thread compares the clock when the connection is made and before the headers and the body
    are written."""
    late = time.monotonic() - 0.001  # the deadline has passed; no timer has run
    stream = FakeStream()
    connected = _Watchdog(late)
    with pytest.raises(httpcore.ConnectTimeout):
        connected.trace("connection.start_tls.complete", {"return_value": stream})
    assert stream.closed and connected.expired
    for event in ("http11.send_request_headers.started", "http11.send_request_body.started"):
        watchdog = _Watchdog(late)
        with pytest.raises(httpcore.WriteTimeout):
            watchdog.trace(event, {"request": None})
        assert watchdog.expired
    in_time = _Watchdog(time.monotonic() + 60)
    in_time.trace("http11.send_request_headers.started", {"request": None})
    assert not in_time.expired


PAUSED_CHILD = """
import json, os, signal, sys
import httpcore
from pathlib import Path
from rotator.adapters.http.common import new_client, send

real = httpcore._backends.sync.SyncBackend.connect_tcp

def connect_tcp(self, *args, **kwargs):
    stream = real(self, *args, **kwargs)
    os.kill(os.getpid(), signal.SIGSTOP)  # paused right after connecting, as by an operator or the OS
    return stream

httpcore._backends.sync.SyncBackend.connect_tcp = connect_tcp
client = new_client(tls_verify=True, ca_bundle=None, base_dir=Path("."), timeout_s=float(sys.argv[2]),
                    base_url=sys.argv[1])
try:
    send(client, "POST", "/api/v3/configure/token/named_admin", timeout_s=float(sys.argv[2]), json={"token_name": "x"})
    print("answered")
except Exception as exc:
    print(type(exc).__name__)
"""


def test_a_process_paused_while_connecting_and_resumed_after_the_deadline_sends_nothing() -> None:
    """Real processes, paused with SIGSTOP just after connecting and resumed with SIGCONT after the
    request's deadline: the server receives not one byte (a mint sent then could land after the
    engine's mint window, and recovery would miss its token). Three at once: before the request
    thread compared the clock itself, it mostly won the race against the timer thread, not always."""
    timeout_s = 0.2
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    received: list[bytes] = []

    def receive(conn: socket.socket) -> None:
        data = b""
        with conn:
            conn.settimeout(5)
            try:
                while chunk := conn.recv(65536):
                    data += chunk
            except OSError:
                pass
        received.append(data)

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=receive, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    children = [subprocess.Popen([sys.executable, "-c", PAUSED_CHILD, url, str(timeout_s)], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    try:
        for child in children:
            _, status = os.waitpid(child.pid, os.WUNTRACED)  # until it has stopped itself
            assert os.WIFSTOPPED(status), child.communicate()
        time.sleep(REQUEST_PHASES * timeout_s + 0.2)  # every request's deadline has passed
        for child in children:
            os.kill(child.pid, signal.SIGCONT)
        outcomes = [child.communicate(timeout=10) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
        listener.close()
    assert [out.strip() for out, _err in outcomes] == ["DeadlineExceeded"] * 3, outcomes
    deadline = time.monotonic() + 5
    while len(received) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert received == [b""] * 3


@contextmanager
def keep_alive_server() -> Iterator[str]:
    """Answers the first request on a connection at once and keeps the connection open; a second
    request on that connection gets its headers dripped for DRIP_FOR_S."""

    def answer(conn: socket.socket) -> None:
        data, served = b"", 0
        while (request := read_head(conn, data)) is not None:
            data = request[1]
            served += 1
            if served == 1:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                continue
            conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            ends = time.monotonic() + DRIP_FOR_S
            while time.monotonic() < ends:
                conn.sendall(b"a")
                time.sleep(DRIP_EVERY_S)
            conn.sendall(b"\r\nContent-Length: 2\r\n\r\n{}")

    with loopback_server(answer) as url:
        yield url


def test_the_second_request_of_a_client_has_the_deadline_too() -> None:
    """The watchdog learns a request's socket when its connection is made: a connection kept alive
    from the request before would be one it cannot shut down (the client keeps none)."""
    with keep_alive_server() as url:
        client = new_client(tls_verify=True, ca_bundle=None, base_dir=Path("."), timeout_s=TIMEOUT_S, base_url=url)
        assert send(client, "GET", "/first", timeout_s=TIMEOUT_S).status_code == 200
        started = time.monotonic()
        try:
            send(client, "GET", "/second", timeout_s=TIMEOUT_S)
        except DeadlineExceeded:
            pass
        assert time.monotonic() - started < DEADLINE_S + 0.5


@contextmanager
def answering_server(head: bytes, parts: list[bytes], *, every_s: float = 0.0) -> Iterator[str]:
    """Answers one request with ``head`` then ``parts``, one each ``every_s``, and closes the connection."""

    def answer(conn: socket.socket) -> None:
        if read_head(conn) is None:
            return
        conn.sendall(head)
        for part in parts:
            conn.sendall(part)
            time.sleep(every_s)

    with loopback_server(answer, once=True) as url:
        yield url


CLOSE_DELIMITED = b"HTTP/1.1 200 OK\r\nContent-Type: application/jsonl\r\nConnection: close\r\n\r\n"
ROWS = [b'{"name": "token-%d"}\n' % i for i in range(40)]


def test_an_answer_ended_by_the_connection_and_cut_off_at_the_deadline_is_not_taken_whole() -> None:
    """No Content-Length, not chunked: the answer ends where the connection ends, and the watchdog's
    shutdown ends it too. Taking what came by then as the answer would be a truncated listing
    (tokens missing from system.tokens look revoked)."""
    with answering_server(CLOSE_DELIMITED, ROWS, every_s=DRIP_EVERY_S) as url:
        client = new_client(tls_verify=True, ca_bundle=None, base_dir=Path("."), timeout_s=TIMEOUT_S, base_url=url)
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            send(client, "POST", "/api/v3/query_sql", timeout_s=TIMEOUT_S)
        assert time.monotonic() - started < DEADLINE_S + 1.0


@pytest.mark.parametrize(
    ("framing", "head", "body", "whole"),
    [
        ("content-length", b"HTTP/1.1 201 Created\r\nContent-Length: 13\r\n\r\n", b'{"token": 1}\n', True),
        ("chunked", b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n",
         b'd\r\n{"token": 1}\n\r\n0\r\n\r\n', True),
        ("close-delimited", b"HTTP/1.1 201 Created\r\nConnection: close\r\n\r\n", b'{"token": 1}\n', False),
        ("no-body", b"HTTP/1.1 204 No Content\r\n\r\n", b"", True),
    ],
    ids=["content-length", "chunked", "close-delimited", "no-body"],
)
def test_an_answer_read_to_its_end_counts_though_the_deadline_passes_a_moment_later(
    monkeypatch: pytest.MonkeyPatch, framing: str, head: bytes, body: bytes, whole: bool
) -> None:
    """The timer fires after the answer's last byte was read, before send() is done with it (here:
    as httpx closes the finished response). An answer whose end the server marked (its
    Content-Length, its last chunk, a status without a body) is whole: refusing it would throw
    away, e.g., the only valid _admin value of an InfluxDB 3 operator regeneration. One that ended
    with the connection cannot be told from one the watchdog cut off."""
    trace = _Watchdog.trace

    def fires_as_the_response_closes(self: _Watchdog, event: str, info: Any) -> None:
        trace(self, event, info)
        if event == "http11.response_closed.started":
            self.expire()

    monkeypatch.setattr(_Watchdog, "trace", fires_as_the_response_closes)
    with answering_server(head, [body]) as url:
        client = new_client(tls_verify=True, ca_bundle=None, base_dir=Path("."), timeout_s=TIMEOUT_S, base_url=url)
        if whole:
            response = send(client, "POST", "/api/v3/configure/token/admin/regenerate", timeout_s=TIMEOUT_S)
            assert (response.json() if body else response.content) == ({"token": 1} if body else b""), framing
        else:
            with pytest.raises(DeadlineExceeded):
                send(client, "POST", "/api/v3/configure/token/admin/regenerate", timeout_s=TIMEOUT_S)


def test_call_timeout_seconds_counts_the_verify_of_a_token_with_only_system_permissions() -> None:
    """influxdb3 verifies such a token on each endpoint it may read with a made-up token first, until
    one refuses that: with /health and /ping open to anyone, that is four requests."""
    calls: list[str] = []

    def server(req: httpx.Request) -> httpx.Response:
        calls.append(req.url.path)
        made_up = "rotator-decoy" in req.headers["Authorization"]
        if req.url.path in ("/health", "/ping") or not made_up:
            return httpx.Response(200, text="OK")
        return httpx.Response(401, json={"error": "unauthorized"})

    permissions = [{"resource_type": "system", "resource_names": ["*"], "actions": ["read"]}]
    settings = InfluxDB3Settings.model_validate({"base_url": "http://influx.invalid", "credential": {"env": "X"},
                                                 "kind": "resource", "permissions": permissions, "timeout_s": 2})
    issuer = InfluxDB3Issuer.from_config(settings, AdapterContext(policy="app"), transport=httpx.MockTransport(server))
    issuer.verify(Secret("apiv3_new-token-0123456789"))
    assert calls == ["/health", "/ping", "/metrics", "/metrics"]
    assert issuer.requests_in_longest_call() >= len(calls)
    assert issuer.call_timeout_seconds == issuer.requests_in_longest_call() * 3 * 2 + CALL_MARGIN_S
    database = InfluxDB3Settings.model_validate({**settings.model_dump(), "permissions": [
        {"resource_type": "db", "resource_names": ["sensors"], "actions": ["read"]}, *permissions]})
    assert InfluxDB3Issuer.from_config(database, AdapterContext(policy="app")).requests_in_longest_call() == 2
