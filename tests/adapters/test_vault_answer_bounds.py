"""How much of an answer the vault-kv2 store reads, and for how long: from a small HTTP server on loopback (a
thread of the test) standing where Vault should be, as a proxy, an ingress or a relay in front of it may.

An answer is read up to ``MAX_ANSWER_BYTES`` (lowered here to 2 MiB: the tests push a few MiB, not 32), and a
whole request, redirects included, ends ``timeout_s`` after it started: requests' timeout bounds each read of
the socket only, so a server that sent a byte now and then held ``read_current`` for ever. Both are
TransientErrors naming Vault's address, never the body nor a token. A real OpenBao still answers as before.
"""

from __future__ import annotations

import gzip
import http.server
import json
import logging
import socket
import socketserver
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.adapters.vault import kv2
from rotator.adapters.vault.kv2 import VaultKV2Settings, VaultKV2Store
from rotator.core.clock import FakeClock
from rotator.core.contracts import AdapterContext, TokenRecord
from rotator.core.errors import RotatorError, TransientError
from rotator.core.secret import Secret
from tests.servers import OpenBao

POLICY = "influx-mgmt"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
#: The store's Vault token: never in a message
TOKEN = "s.bounds-test-" + uuid.uuid4().hex
#: The answer bound in these tests (the store's is 32 MiB)
LIMIT = 2 * 1024 * 1024
#: Seconds on top of ``timeout_s`` a bounded call may take (a thread's start, a busy CI host)
SLACK_S = 1.5
#: How long a test waits for a call that may never end (without the bounds) before it fails
GIVE_UP_S = 12.0
LOOKUP_SELF = {"data": {"ttl": 3600, "creation_ttl": 3600, "renewable": True, "policies": ["default"]}}
MOUNT_CONFIG = {"data": {"max_versions": 10, "cas_required": False, "delete_version_after": "0s"}}

#: One answer: writes what the server sends for one request (``server.sent`` counts the body bytes)
Behaviour = Callable[[http.server.BaseHTTPRequestHandler, "_Server"], None]


class _Server:
    """Answers lookup-self as Vault does, and every request ``bad`` selects with ``behave``."""

    def __init__(self, behave: Behaviour, bad: Callable[[str], bool]) -> None:
        self.sent = 0
        #: The Cookie header of each request (None: none)
        self.cookies: list[str | None] = []
        self.stop = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.cookies.append(self.headers.get("Cookie"))
                if bad(self.path.split("?")[0]):
                    behave(self, outer)
                    return
                _answer(self, 200, json.dumps(LOOKUP_SELF).encode())

            do_POST = do_PUT = do_PATCH = do_GET

        self.server: socketserver.TCPServer = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@contextmanager
def _serving(behave: Behaviour, *, login: bool, every: bool = False) -> Iterator[_Server]:
    """``login``: the login (lookup-self) gets the bad answer; otherwise the secret's reads do; ``every``: all."""
    prefix = "/v1/auth/token/lookup-self" if login else "/v1/secret/"
    vault = _Server(behave, lambda path: every or path.startswith(prefix))
    thread = threading.Thread(target=vault.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield vault
    finally:
        vault.stop.set()  # a handler still writing stops at its next byte
        vault.server.shutdown()
        vault.server.server_close()


def _answer(handler: http.server.BaseHTTPRequestHandler, status: int, body: bytes) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def _huge(size: int) -> Behaviour:
    """A 200 announcing ``size`` bytes, written as fast as the reader takes them."""

    def behave(handler: http.server.BaseHTTPRequestHandler, server: _Server) -> None:
        # A small send buffer: what the server counts as sent is then close to what reached the store
        handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(size))
        handler.end_headers()
        chunk = b" " * 65536
        try:
            for _ in range(size // len(chunk)):
                handler.wfile.write(chunk)
                server.sent += len(chunk)
                if server.stop.is_set():
                    return
        except OSError:  # the reader hung up
            pass

    return behave


def _gzip_bomb(handler: http.server.BaseHTTPRequestHandler, server: _Server) -> None:
    """64 MiB of JSON whitespace in a gzip body of a few dozen KiB: small on the wire, large once decoded."""
    body = _bomb()
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Encoding", "gzip")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    try:
        handler.wfile.write(body)
        server.sent += len(body)
    except OSError:
        pass


_BOMB: list[bytes] = []


def _bomb() -> bytes:
    if not _BOMB:
        _BOMB.append(gzip.compress(b" " * (64 * 1024 * 1024) + json.dumps(LOOKUP_SELF).encode(), compresslevel=1))
    return _BOMB[0]


def _absent(*, gzipped: bool, cookie: bool) -> Behaviour:
    """Vault's answers for a secret that does not exist: lookup-self, the mount's config, 404s. ``gzipped``: each
    body gzip-encoded (as a proxy may send it); ``cookie``: lookup-self's sets one (a load balancer's stickiness)."""

    def behave(handler: http.server.BaseHTTPRequestHandler, server: _Server) -> None:
        found = {"/v1/auth/token/lookup-self": LOOKUP_SELF, "/v1/secret/config": MOUNT_CONFIG}
        answer = found.get(handler.path.split("?")[0])
        body = json.dumps(answer or {"errors": []}).encode()
        handler.send_response(200 if answer else 404)
        handler.send_header("Content-Type", "application/json")
        if gzipped:
            body = gzip.compress(body)
            handler.send_header("Content-Encoding", "gzip")
        if cookie and answer is LOOKUP_SELF:
            handler.send_header("Set-Cookie", "node=vault-1; Path=/")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return behave


def _trickle(head: bytes) -> Behaviour:
    """Writes ``head`` whole, then one byte every 0.1 s: each read of the socket gets data well within
    ``timeout_s``, the answer never ends."""

    def behave(handler: http.server.BaseHTTPRequestHandler, server: _Server) -> None:
        try:
            handler.wfile.write(head)
            handler.wfile.flush()
            while not server.stop.wait(0.1):
                handler.wfile.write(b" ")
                handler.wfile.flush()
                server.sent += 1
        except OSError:
            pass

    return behave


#: The head of an answer whose body (100000 bytes announced) trickles
TRICKLED_BODY = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
#: The start of an answer whose head trickles: a header line that never ends
TRICKLED_HEAD = b"HTTP/1.1 200 OK\r\nX-Padding: "


def _slow_redirect(handler: http.server.BaseHTTPRequestHandler, server: _Server) -> None:
    """A redirect to the same address after 0.4 s: each hop answers well within ``timeout_s``."""
    if server.stop.wait(0.4):
        return
    handler.send_response(307)
    handler.send_header("Location", handler.path)
    handler.send_header("Content-Length", "0")
    handler.end_headers()


def _store(url: str, tmp_path: Path, timeout_s: float = 10) -> VaultKV2Store:
    (tmp_path / "vault-token").write_text(TOKEN)
    (tmp_path / "vault-token").chmod(0o600)
    model = VaultKV2Settings.model_validate(
        {
            "url": url,
            "path": "team/app",
            "timeout_s": timeout_s,
            "auth": {"method": "token", "token": {"file": "vault-token"}},
        }
    )
    ctx = AdapterContext(policy=POLICY, base_dir=tmp_path, clock=FakeClock(NOW))
    return VaultKV2Store.from_config(model, ctx)


def _outcome(call: Callable[[], object]) -> tuple[BaseException | None, float]:
    """What ``call`` raised (None: it returned) and how long it took; fails the test if it has not ended
    after GIVE_UP_S (it goes on in a daemon thread until the server stops)."""
    result: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            result.append(exc)
        else:
            result.append(None)

    started = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(GIVE_UP_S)
    elapsed = time.monotonic() - started
    assert not thread.is_alive(), f"read_current still running after {elapsed:.1f}s"
    return result[0], elapsed


def _no_token(exc: BaseException, caplog: pytest.LogCaptureFixture) -> None:
    assert isinstance(exc, RotatorError)
    for text in (str(exc), exc.hint, repr(exc), caplog.text):
        assert TOKEN not in text
    assert exc.__cause__ is None or TOKEN not in str(exc.__cause__)


@pytest.fixture
def low_limit(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(kv2, "MAX_ANSWER_BYTES", LIMIT, raising=False)
    return LIMIT


@pytest.mark.parametrize("login", [True, False], ids=["login", "secret-read"])
def test_an_oversized_answer_is_cut_off(
    login: bool, low_limit: int, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with _serving(_huge(32 * low_limit), login=login) as vault:
        exc, elapsed = _outcome(_store(vault.url, tmp_path).read_current)
        sent = vault.sent
    assert isinstance(exc, TransientError), exc
    assert vault.url in str(exc) and f"{low_limit} bytes" in str(exc)
    assert "proxy" in exc.hint and "url" in exc.hint
    assert elapsed < 5, f"read_current took {elapsed:.1f}s to give up on an answer of {32 * low_limit} bytes"
    # Not read whole: the server got rid of little more than the limit (the rest of what it wrote was in
    # the sockets' buffers when the store hung up)
    assert sent < 2 * low_limit, f"the server wrote {sent / 2**20:.1f} MiB of a {32 * low_limit / 2**20:.0f} MiB answer"
    _no_token(exc, caplog)


def test_the_limit_counts_the_decoded_answer(low_limit: int, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _bomb()  # compressed before the store's request, not while it waits
    with _serving(_gzip_bomb, login=True) as vault:
        exc, _ = _outcome(_store(vault.url, tmp_path).read_current)
    assert isinstance(exc, TransientError), exc
    assert f"{low_limit} bytes" in str(exc)
    _no_token(exc, caplog)


def test_a_compressed_answer_is_decoded_once(tmp_path: Path) -> None:
    # The store reads (and decodes) the body itself, then hands it to requests, which must not decode it again
    with _serving(_absent(gzipped=True, cookie=False), login=True, every=True) as vault:
        state = _store(vault.url, tmp_path).read_current()
    assert state.version is None and state.record is None


def test_a_cookie_vault_s_address_sets_is_sent_back(tmp_path: Path) -> None:
    # requests' session keeps it (a load balancer's sticky session) though the store hands it the body it read
    with _serving(_absent(gzipped=False, cookie=True), login=True, every=True) as vault:
        _store(vault.url, tmp_path).read_current()
    assert vault.cookies[0] is None and len(vault.cookies) > 1
    assert vault.cookies[1:] == ["node=vault-1"] * (len(vault.cookies) - 1)


@pytest.mark.parametrize(
    ("head", "login"),
    [(TRICKLED_BODY, True), (TRICKLED_BODY, False), (TRICKLED_HEAD, True)],
    ids=["body-login", "body-secret-read", "head-login"],
)
def test_a_trickled_answer_ends_at_timeout_s(
    head: bytes, login: bool, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with _serving(_trickle(head), login=login) as vault:
        exc, elapsed = _outcome(_store(vault.url, tmp_path, timeout_s=1).read_current)
    assert isinstance(exc, TransientError), exc
    assert elapsed < 1 + SLACK_S, f"read_current took {elapsed:.1f}s with timeout_s = 1"
    assert vault.url in str(exc) and "timeout_s = 1" in str(exc)
    _no_token(exc, caplog)


def test_redirects_share_the_request_s_deadline(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Each hop answers in 0.4 s: 30 hops (requests' limit) took 12 s with timeout_s = 1
    with _serving(_slow_redirect, login=False) as vault:
        exc, elapsed = _outcome(_store(vault.url, tmp_path, timeout_s=1).read_current)
    assert isinstance(exc, TransientError), exc
    assert elapsed < 1 + SLACK_S, f"read_current took {elapsed:.1f}s with timeout_s = 1"
    _no_token(exc, caplog)


@contextmanager
def _dropping_connects(host: str, port: int = 0) -> Iterator[tuple[str, int]]:
    """A listener at ``host:port`` whose accept queue is full: Linux drops the next SYNs, so a connect there
    waits for its timeout. Skips where the system accepts past the backlog."""
    listener = socket.socket()
    fillers: list[socket.socket] = []
    try:
        listener.bind((host, port))
        listener.listen(0)
        address = listener.getsockname()
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(address)
            fillers.append(filler)
        probe = socket.socket()
        probe.settimeout(0.3)
        try:
            probe.connect(address)
        except TimeoutError:
            pass
        else:
            pytest.skip("this system accepts connections past the listen backlog")
        finally:
            probe.close()
        yield address
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def test_the_connect_timeout_still_applies(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with _dropping_connects("127.0.0.1") as (host, port):
        exc, elapsed = _outcome(_store(f"http://{host}:{port}", tmp_path, timeout_s=1).read_current)
    assert isinstance(exc, TransientError), exc
    assert elapsed < 1 + SLACK_S, f"read_current took {elapsed:.1f}s to give up connecting with timeout_s = 1"
    _no_token(exc, caplog)


def test_answers_of_a_real_openbao_are_read_as_before(
    openbao: OpenBao, kv_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Well under the bound: Vault's answers to the store are a few KB
    monkeypatch.setattr(kv2, "MAX_ANSWER_BYTES", 64 * 1024, raising=False)
    (tmp_path / "vault-token").write_text(openbao.root_token)
    (tmp_path / "vault-token").chmod(0o600)
    model = VaultKV2Settings.model_validate(
        {
            "url": openbao.url,
            "path": kv_path,
            "timeout_s": 5,
            "auth": {"method": "token", "token": {"file": "vault-token"}},
        }
    )
    store = VaultKV2Store.from_config(model, AdapterContext(policy=POLICY, base_dir=tmp_path, clock=FakeClock(NOW)))
    record = TokenRecord(
        value=Secret(f"test-token-value-{uuid.uuid4().hex}"),
        token_id="tok-1",
        issuer="influxctl-management",
        policy=POLICY,
        created_at=NOW,
        expires_at=NOW + timedelta(days=30),
    )
    assert store.read_current().version is None
    version = store.publish(record, None)
    state = store.read_current()
    assert state.version == version and state.record == record and state.managed


def test_a_host_whose_first_address_drops_connects_is_reached_at_its_second(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A broken route to a host's first address (IPv6 behind an AAAA record, say): requests waits out a connect
    timeout there, then connects to the next. With connects counted in the deadline, the first address took all
    of it and the second, connected, was refused: every request failed, whatever timeout_s."""
    with _serving(_absent(gzipped=False, cookie=False), login=True, every=True) as vault:
        port = vault.server.server_address[1]
        # 127.0.0.2 at the same port drops connects; 127.0.0.1 answers
        with _dropping_connects("127.0.0.2", port):
            real = socket.getaddrinfo

            def two_addresses(host: Any, *args: Any, **kwargs: Any) -> Any:
                if host != "vault.test":
                    return real(host, *args, **kwargs)
                return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in ("127.0.0.2", "127.0.0.1")]

            monkeypatch.setattr(socket, "getaddrinfo", two_addresses)
            exc, elapsed = _outcome(_store(f"http://vault.test:{port}", tmp_path, timeout_s=1).read_current)
    # (each request pays the first address's connect timeout: this server closes its connections)
    assert exc is None, exc
    assert elapsed >= 1, "the first address was tried first"
