"""rotator/runners/systemd_notify.py against real AF_UNIX datagram sockets, as systemd listens on them."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from rotator.runners.systemd_notify import SystemdNotify


def notify_socket(path: Path) -> socket.socket:
    """A socket where systemd would listen, bound at ``path``."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    return sock


def datagrams(sock: socket.socket, wait: float) -> list[str]:
    """What arrived on ``sock`` within ``wait`` seconds."""
    deadline = time.monotonic() + wait
    out = []
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            out.append(sock.recv(4096).decode())
        except TimeoutError:
            break
    return out


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A socket where systemd would listen: (socket, its path)."""
    sock = notify_socket(tmp_path / "notify")
    sock.settimeout(2)
    yield sock, str(tmp_path / "notify")
    sock.close()


def _under_systemd(monkeypatch: pytest.MonkeyPatch, path: str, watchdog_pid: int) -> SystemdNotify:
    """What systemd sets for a Type=notify unit with WatchdogSec=4s, read as the daemon reads it."""
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.setenv("WATCHDOG_PID", str(watchdog_pid))
    return SystemdNotify.from_environment()


def test_from_the_environment_it_notifies_and_feeds_the_watchdog_at_half_its_interval(
        listener: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch) -> None:
    sock, path = listener
    notify = _under_systemd(monkeypatch, path, os.getpid())
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        assert name not in os.environ, f"{name} is not passed on to influxctl or a hook"
    assert notify.watchdog_s == 2.0
    assert notify.send("READY=1\nSTATUS=rotating 2 policies") is True
    assert sock.recv(4096) == b"READY=1\nSTATUS=rotating 2 policies"
    assert notify.ping() is True
    assert sock.recv(4096) == b"WATCHDOG=1"
    assert notify.ping() is False, "not due again before half of WatchdogSec"
    assert datagrams(sock, 0.2) == []


def test_the_abstract_namespace_is_named_with_an_at_sign(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"rotator-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        monkeypatch.delenv("WATCHDOG_USEC", raising=False)
        notify = SystemdNotify.from_environment()
        assert notify.watchdog_s is None and notify.ping() is False, "no WatchdogSec: no pings"
        assert notify.send("STOPPING=1") is True
        assert sock.recv(4096) == b"STOPPING=1"
    finally:
        sock.close()


def test_a_watchdog_meant_for_another_process_is_not_fed(
        listener: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch) -> None:
    sock, path = listener
    notify = _under_systemd(monkeypatch, path, os.getpid() + 1)
    assert notify.watchdog_s is None and notify.ping() is False
    assert datagrams(sock, 0.2) == []


def test_outside_systemd_or_with_a_bad_socket_nothing_is_raised(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(name, raising=False)
    outside = SystemdNotify.from_environment()
    assert outside.address is None and outside.send("READY=1") is False and outside.ping() is False

    monkeypatch.setenv("NOTIFY_SOCKET", "relative/path")
    with caplog.at_level(logging.WARNING, logger="rotator.daemon"):
        assert SystemdNotify.from_environment().address is None
    assert "neither a path nor @name" in caplog.text

    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    monkeypatch.setenv("WATCHDOG_USEC", "1000")
    gone = SystemdNotify.from_environment()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="rotator.daemon"):
        assert gone.send("READY=1") is False
        assert gone.send("WATCHDOG=1") is False
    assert caplog.text.count("cannot notify systemd") == 1, "said once, not at every ping"


def test_a_ping_that_could_not_be_sent_is_tried_again_at_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed ping was stamped as sent: the next one waited half a WatchdogSec more, and one more lost
    datagram then left systemd a whole WatchdogSec without a ping (it kills the daemon)."""
    path = tmp_path / "notify"
    notify = _under_systemd(monkeypatch, str(path), os.getpid())
    assert notify.ping() is False, "nobody listens yet: the datagram cannot be sent"
    sock = notify_socket(path)  # systemd's socket is back
    try:
        sock.settimeout(2)
        assert notify.ping() is True, "tried again at the next pass, not half a WatchdogSec later"
        assert sock.recv(4096) == b"WATCHDOG=1"
        assert notify.ping() is False, "a ping that was sent is not repeated before half of WatchdogSec"
    finally:
        sock.close()


def test_a_notification_to_a_socket_whose_queue_is_full_gives_up_instead_of_blocking(
        listener: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """systemd not reading its socket: a blocking datagram send waited for room for ever, and the daemon's
    watchdog thread with it (no more pings, no more readiness or status)."""
    _sock, path = listener  # bound, never read
    notify = _under_systemd(monkeypatch, path, os.getpid())
    monkeypatch.setattr(SystemdNotify, "send_timeout_s", 0.2)
    outcome: list[tuple[int, bool, float]] = []

    def fill_then_ping() -> None:
        sent = 0
        while sent < 100_000 and notify.send("STATUS=" + "x" * 1000):  # until a send gives up
            sent += 1
        started = time.monotonic()
        outcome.append((sent, notify.send("WATCHDOG=1"), time.monotonic() - started))

    thread = threading.Thread(target=fill_then_ping, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "a send blocked for room in the full queue"
    [(sent, pinged, took)] = outcome
    assert sent < 100_000 and pinged is False and took < 2, outcome
