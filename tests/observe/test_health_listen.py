"""The daemon's listener for ``--listen :PORT`` (what the Helm chart passes): every interface, IPv4
and IPv6. It bound 0.0.0.0 only, so on an IPv6-only cluster the kubelet's probes were refused (the
pod never started) and Prometheus could not scrape it."""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from rotator.config.daemon_config import parse_listen
from rotator.core.errors import RotatorError
from rotator.observe import health
from rotator.observe.health import HealthServer


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


def _status_line(family: socket.AddressFamily, address: str, port: int) -> bytes:
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect((address, port))
        s.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
        answer = b""
        while chunk := s.recv(4096):  # to the end: a client leaving mid-answer is logged as an error
            answer += chunk
        return answer.split(b"\r\n")[0]


@pytest.fixture
def every_interface() -> Iterator[HealthServer]:
    host, port = parse_listen(":0")
    server = HealthServer(host, port, alive=lambda: (True, {}), ready=lambda: (True, {}), registry=CollectorRegistry())
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_listen_on_every_interface_answers_ipv4(every_interface: HealthServer) -> None:
    assert _status_line(socket.AF_INET, "127.0.0.1", every_interface.address[1]) == b"HTTP/1.0 200 OK"


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="this machine has no IPv6 loopback (::1)")
def test_listen_on_every_interface_answers_ipv6(every_interface: HealthServer) -> None:
    assert _status_line(socket.AF_INET6, "::1", every_interface.address[1]) == b"HTTP/1.0 200 OK"


def test_without_ipv6_every_interface_falls_back_to_ipv4(monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel booted with ipv6.disable=1 refuses AF_INET6 sockets: IPv4 only, not a failed start."""

    class NoIPv6(health._ServerDual):
        def __init__(self, *args: object, **kwargs: object) -> None:
            raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")

    monkeypatch.setattr(health, "_ServerDual", NoIPv6)
    server = HealthServer("", 0, alive=lambda: (True, {}), ready=lambda: (True, {}), registry=CollectorRegistry())
    server.start()
    try:
        assert server.address[0] == "0.0.0.0"
        assert _status_line(socket.AF_INET, "127.0.0.1", server.address[1]) == b"HTTP/1.0 200 OK"
    finally:
        server.stop()


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="this machine has no IPv6 loopback (::1)")
def test_a_port_in_use_is_reported_not_hidden_by_the_fallback() -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as taken:
        taken.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        taken.bind(("::", 0))
        taken.listen()
        with pytest.raises(RotatorError, match="cannot listen on \\*:.*in use"):
            HealthServer("", taken.getsockname()[1], alive=lambda: (True, {}), ready=lambda: (True, {}),
                         registry=CollectorRegistry())


def test_a_client_that_hangs_up_before_its_answer_is_no_error(caplog: pytest.LogCaptureFixture) -> None:
    """A probe that gives up (its timeout) before a slow check answers: writing the answer fails with
    a reset connection. That logged an ERROR with a traceback ("error serving /readyz"), as a broken
    check does, on every such probe."""
    import struct
    import threading
    import time

    caplog.set_level("DEBUG", logger="rotator.health")
    checked = threading.Event()

    def slow_ready() -> tuple[bool, dict[str, object]]:
        time.sleep(0.3)  # the client is gone by then
        checked.set()
        return True, {}

    server = HealthServer("127.0.0.1", 0, alive=lambda: (True, {}), ready=slow_ready, registry=CollectorRegistry())
    server.start()
    try:
        with socket.create_connection(server.address, timeout=5) as s:
            s.sendall(b"GET /readyz HTTP/1.0\r\n\r\n")
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset
        assert checked.wait(5)
        time.sleep(0.3)
    finally:
        server.stop()
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert not errors, [r.getMessage() for r in errors]
    assert any("went away before the answer to /readyz" in r.getMessage() for r in caplog.records), caplog.text


def test_a_client_that_stops_reading_is_no_error_and_gets_one_status_line(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """A scraper that stops reading a large /metrics answer: the write times out (TimeoutError, an
    OSError but no ConnectionError). That logged an ERROR with a traceback, then wrote a 500 status
    line after the 200's headers and part of its body (or, that write timing out too, logged it)."""
    import threading
    import time

    monkeypatch.setattr(health, "READ_TIMEOUT_S", 0.3)  # the handler's socket timeout, read when it is made
    caplog.set_level("DEBUG", logger="rotator.health")
    body = b"x" * (16 * 1024 * 1024)  # far more than the kernel buffers of both ends hold (tcp_wmem: 4 MiB)
    served = threading.Event()

    def exposition() -> bytes:
        served.set()
        return body

    server = HealthServer("127.0.0.1", 0, alive=lambda: (True, {}), ready=lambda: (True, {}),
                          registry=CollectorRegistry(), exposition=exposition)
    server.start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: the window it offers
            s.settimeout(5)
            s.connect(server.address)
            s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            assert served.wait(5)
            # Read once the handler has given up on the write (whichever way it logs that): reading
            # then lets through whatever it writes after the timeout (a 500 status line, before).
            deadline = time.monotonic() + 5
            while not any(r.name == "rotator.health" and (r.levelno >= logging.ERROR or "went away" in r.getMessage())
                          for r in caplog.records):
                assert time.monotonic() < deadline, "the write to a client that reads nothing did not time out"
                time.sleep(0.01)
            answer = bytearray()
            while chunk := s.recv(1 << 20):
                answer += chunk
        time.sleep(0.1)
    finally:
        server.stop()
    errors = [r for r in caplog.records if r.name == "rotator.health" and r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
    assert answer.startswith(b"HTTP/1.0 200 OK\r\n") and len(answer) < len(body)
    assert answer.count(b"HTTP/1.") == 1, "one status line: nothing written after the body was cut off"
    assert any("went away before the answer to /metrics" in r.getMessage() for r in caplog.records), caplog.text
