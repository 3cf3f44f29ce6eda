"""Error answers that are not Vault's, from a small HTTP server on loopback (a thread of the test).

Vault sends every error as a JSON object with an ``errors`` list. Whatever else answers an error status
(a proxy, an ingress, Go's own HTTP server answering plain HTTP on Vault's TLS port) is mapped by its
status: an outage (502) is retried, and a 400 or 403 is no refusal of a credential (no "check the token",
no login held back for 30 minutes).
"""

from __future__ import annotations

import http.server
import json
import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.adapters.vault.kv2 import VaultKV2Settings, VaultKV2Store
from rotator.core.clock import FakeClock
from rotator.core.contracts import AdapterContext
from rotator.core.errors import PermanentError, RotatorError, TransientError

POLICY = "influx-mgmt"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
#: What Go's net/http writes, byte for byte, on a TLS listener that received plain HTTP (OpenBao 2.x
#: `server -dev -dev-tls`, checked with curl): no header at all, then the text.
GO_PLAIN_HTTP_TO_TLS = b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
#: Vault's answers the login needs, as Vault writes them
LOOKUP_SELF = {"data": {"ttl": 3600, "creation_ttl": 3600, "renewable": True, "policies": ["default"]}}
APPROLE_LOGIN = {"auth": {"client_token": "s.login-token", "lease_duration": 3600, "renewable": True}}
DENIED = {"errors": ["permission denied"]}

#: path prefix -> (status, Content-Type, body), or raw bytes written as the whole answer
Route = tuple[int, str, bytes] | bytes


def _json(status: int, body: object) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps(body).encode()


class _Vaultish:
    """A loopback server answering by path prefix (the first that matches), counting requests per path."""

    def __init__(self, routes: dict[str, Route], default: Route) -> None:
        self.routes, self.default = routes, default
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))  # no reset for an unread body
                path = self.path.split("?")[0]
                outer.requests.append(f"{self.command} {path}")
                route = next((r for p, r in outer.routes.items() if path.startswith(p)), outer.default)
                if isinstance(route, bytes):
                    self.wfile.write(route)
                    self.close_connection = True
                    return
                status, content_type, body = route
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_PUT = do_PATCH = do_GET

        self.server: socketserver.TCPServer = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def count(self, path: str) -> int:
        return sum(1 for r in self.requests if r.endswith(" " + path))


@contextmanager
def _serving(routes: dict[str, Route], default: Route) -> Iterator[_Vaultish]:
    vault = _Vaultish(routes, default)
    thread = threading.Thread(target=vault.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield vault
    finally:
        vault.server.shutdown()
        vault.server.server_close()
        thread.join(timeout=10)


def _store(url: str, tmp_path: Path, auth: str = "token", clock: FakeClock | None = None) -> VaultKV2Store:
    (tmp_path / "credential").write_text("s.not-a-token-anyone-checks")
    settings: dict[str, Any] = {
        "token": {"method": "token", "token": {"file": "credential"}},
        "approle": {"method": "approle", "role_id": "role-1", "secret_id": {"file": "credential"}},
    }
    model = VaultKV2Settings.model_validate({"url": url, "path": "team/app", "auth": settings[auth]})
    return VaultKV2Store.from_config(model, AdapterContext(policy=POLICY, base_dir=tmp_path,
                                                           clock=clock or FakeClock(NOW)))


NOT_OBJECTS = [b"null", b"[]", b'"Service Unavailable"']


@pytest.mark.parametrize("body", NOT_OBJECTS)
def test_a_502_whose_json_body_is_not_an_object_is_retried_at_the_login(tmp_path, body):
    """Token auth's first request (lookup-self) meets a proxy's 502: a transient error (hvac's
    ``json.get("errors")`` raised a bare AttributeError, "internal error ... a bug" to the CLI)."""
    with _serving({}, (502, "application/json", body)) as vault:
        with pytest.raises(RotatorError) as caught:
            _store(vault.url, tmp_path).read_current()
    assert isinstance(caught.value, TransientError), caught.value
    assert "HTTP 502" in str(caught.value) and "retries" in (caught.value.hint or "")


@pytest.mark.parametrize("body", NOT_OBJECTS)
def test_a_502_whose_json_body_is_not_an_object_is_retried_at_the_kv_read(tmp_path, body):
    """Logged in, the secret's reads meet the 502: transient too."""
    routes = {"/v1/auth/token/lookup-self": _json(200, LOOKUP_SELF)}
    with _serving(routes, (502, "application/json", body)) as vault:
        with pytest.raises(RotatorError) as caught:
            _store(vault.url, tmp_path).read_current()
        assert vault.count("/v1/auth/token/lookup-self") == 1
    assert isinstance(caught.value, TransientError), caught.value
    assert "HTTP 502" in str(caught.value) and "team/app" in str(caught.value)


@pytest.mark.parametrize("body", NOT_OBJECTS)
def test_a_502_of_the_token_check_after_a_403_is_retried_not_taken_for_the_403(tmp_path, body):
    """A store call refused (403, Vault's own answer): the login asks Vault whether it still knows the
    token (VaultLogin.forget, _vault_knows), and that check meets the outage. The outage is what is
    reported, retried (the AttributeError there was swallowed: the 403 stood as a permanent refusal)."""
    routes = {
        "/v1/auth/approle/login": _json(200, APPROLE_LOGIN),
        "/v1/auth/token/lookup-self": _json(403, DENIED),
        "/v1/sys/internal/ui/mounts": (502, "application/json", body),
    }
    with _serving(routes, _json(403, DENIED)) as vault:
        with pytest.raises(RotatorError) as caught:
            _store(vault.url, tmp_path, auth="approle").read_current()
        assert vault.count("/v1/sys/internal/ui/mounts") == 1
    assert isinstance(caught.value, TransientError), caught.value


@pytest.mark.parametrize("body", NOT_OBJECTS)
def test_a_400_whose_json_body_is_not_an_object_is_not_vault_s_answer(tmp_path, body):
    with _serving({}, (400, "application/json", body)) as vault:
        with pytest.raises(PermanentError) as caught:
            _store(vault.url, tmp_path).read_current()
    assert f"the answer of {vault.url} to log in to auth/token/lookup-self is not Vault's: HTTP 400" in str(
        caught.value)
    assert "check url" in (caught.value.hint or "")
    assert "expired or revoked" not in (caught.value.hint or "")


def test_plain_http_to_vault_s_tls_port_says_the_url_must_be_https(tmp_path):
    """Go's 400 to plain HTTP is no refusal of the token: the url is to fix, and how. The daemon checks
    again as after any failure (every 30 s at most), not as after a refused credential (every 5 minutes)."""
    clock = FakeClock(NOW)
    with _serving({}, GO_PLAIN_HTTP_TO_TLS) as vault:
        store = _store(vault.url, tmp_path, clock=clock)
        with pytest.raises(PermanentError) as caught:
            store.read_current()
        for _ in range(8):  # the daemon's checks between runs: the backoff doubles from 1 s, past 30 s if it may
            due = store.credential_due()
            assert due is not None
            clock.advance(max(due - clock.now(), timedelta(0)))
            with pytest.raises(PermanentError):
                store.keep_alive()
        assert vault.count("/v1/auth/token/lookup-self") == 9
    text = f"{caught.value} | {caught.value.hint}"
    assert "Client sent an HTTP request to an HTTPS server" in str(caught.value)
    assert f'set url = "https://{vault.url.removeprefix("http://")}"' in (caught.value.hint or ""), text
    assert "expired or revoked" not in text and "check the token" not in text
    due = store.credential_due()
    assert due is not None and (due - clock.now()).total_seconds() <= 30, due - clock.now()


@pytest.mark.parametrize(("route", "says"), [
    (GO_PLAIN_HTTP_TO_TLS, "set url = \"https://"),
    ((403, "text/html", b"<html><body>403 Forbidden</body></html>"), "check url"),
])
def test_an_approle_login_answered_by_something_else_is_sent_again_not_held_back(tmp_path, route, says):
    """An AppRole secret_id Vault refused is not sent again for 30 minutes (Vault's user lockout). An answer
    that is not Vault's refused nothing: the next call sends it again, and no lockout hint is given."""
    with _serving({}, route) as vault:
        store = _store(vault.url, tmp_path, auth="approle")
        for attempt in (1, 2):
            with pytest.raises(PermanentError) as caught:
                store.read_current()
            assert vault.count("/v1/auth/approle/login") == attempt, "sent again"
            hint = caught.value.hint or ""
            assert says in hint and "secret_id" not in hint and "lockout" not in hint, hint
            assert "not Vault's" in str(caught.value) or "HTTPS server" in str(caught.value)


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "Application/JSON"])
def test_vault_s_own_refusal_through_a_proxy_that_adds_a_charset_is_still_vault_s(tmp_path, content_type):
    """A gateway that writes `application/json; charset=utf-8` over Vault's own 403: its errors were
    dropped (an exact match of the Content-Type), so the refusal read as "not Vault's answer, check
    url" instead of naming the token, and a 403 for an expired token no longer led to a new login."""
    refused = (403, content_type, json.dumps(DENIED).encode())
    with _serving({}, refused) as vault:
        with pytest.raises(PermanentError) as caught:
            _store(vault.url, tmp_path).read_current()
    assert "not Vault's" not in str(caught.value), caught.value
    assert "permission denied" in str(caught.value) and "expired or revoked" in (caught.value.hint or ""), (
        caught.value, caught.value.hint)


def test_vault_s_own_404_is_still_an_absent_secret(tmp_path):
    """Vault's own answer for a path with no secret: `{"errors": []}`, as JSON (the mount's config, read
    to tell an absent secret from a mount that is no KV v2 engine, answers as KV v2's)."""
    routes = {"/v1/auth/token/lookup-self": _json(200, LOOKUP_SELF),
              "/v1/secret/config": _json(200, {"data": {"max_versions": 0, "cas_required": False,
                                                         "delete_version_after": "0s"}})}
    with _serving(routes, _json(404, {"errors": []})) as vault:
        state = _store(vault.url, tmp_path).read_current()
    assert state.record is None and state.version is None, state
