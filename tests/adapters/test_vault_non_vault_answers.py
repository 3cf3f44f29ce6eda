"""Error answers that are not Vault's, from a small HTTP server on loopback (a thread of the test).

Vault sends every error as a JSON object with an ``errors`` list. Whatever else answers an error status
(a proxy, an ingress, Go's own HTTP server answering plain HTTP on Vault's TLS port) is mapped by its
status: an outage (502) is retried, a 400 or 403 is no refusal of a credential (no "check the token",
no login held back for 30 minutes), and a 404 is no absent secret (an ingress that lost its route).
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
import requests

from rotator.adapters.vault.kv2 import VaultKV2Settings, VaultKV2Store
from rotator.core.clock import FakeClock
from rotator.core.contracts import AdapterContext, TokenRecord
from rotator.core.errors import PermanentError, RotatorError, TransientError
from rotator.core.secret import Secret

POLICY = "influx-mgmt"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
#: What Go's net/http writes, byte for byte, on a TLS listener that received plain HTTP (OpenBao 2.x
#: `server -dev -dev-tls`, checked with curl): no header at all, then the text.
GO_PLAIN_HTTP_TO_TLS = b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
#: Vault's answers the login needs, as Vault writes them
LOOKUP_SELF = {"data": {"ttl": 3600, "creation_ttl": 3600, "renewable": True, "policies": ["default"]}}
APPROLE_LOGIN = {"auth": {"client_token": "s.login-token", "lease_duration": 3600, "renewable": True}}
DENIED = {"errors": ["permission denied"]}

#: What an ingress (Traefik, nginx's default server) answers for a path it has no route for: not Vault's
PROXY_404 = (404, "text/plain; charset=utf-8", b"404 page not found\n")

#: path prefix -> (status, Content-Type, body), raw bytes written as the whole answer, or the URL of a
#: server (a real OpenBao) the request is passed on to, as a reverse proxy does
Route = tuple[int, str, bytes] | bytes | str
#: Headers a proxy does not pass on as they are (requests decodes the body: its encoding is not passed on)
_HOP = frozenset({"host", "content-length", "transfer-encoding", "connection", "content-encoding"})


def forward(handler: http.server.BaseHTTPRequestHandler, upstream: str, body: bytes) -> None:
    """Pass the request ``handler`` holds (its ``body`` read already) on to the server at ``upstream`` and
    write that server's answer back, as a reverse proxy does."""
    headers = {k: v for k, v in handler.headers.items() if k.lower() not in _HOP}
    with requests.Session() as session:
        session.trust_env = False
        answer = session.request(handler.command, upstream + handler.path, headers=headers, data=body,
                                 allow_redirects=False, timeout=30)
    handler.send_response(answer.status_code)
    for name, value in answer.headers.items():
        if name.lower() not in _HOP:
            handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(answer.content)))
    handler.end_headers()
    handler.wfile.write(answer.content)


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
                sent = self.rfile.read(int(self.headers.get("Content-Length") or 0))  # no reset for an unread body
                path = self.path.split("?")[0]
                outer.requests.append(f"{self.command} {path}")
                route = next((r for p, r in outer.routes.items() if path.startswith(p)), outer.default)
                if isinstance(route, str):
                    self._forward(route, sent)
                    return
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

            def _forward(self, upstream: str, body: bytes) -> None:
                forward(self, upstream, body)

            do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

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


#: KV v2's 404 for a path it has no endpoint for: its envelope, with a warning and no errors (OpenBao 2.x)
KV2_INVALID_PATH = {"request_id": "0f4d0968-cbfb-d36c-69c7-068ee4084fc8", "lease_id": "", "renewable": False,
                    "lease_duration": 0, "data": None, "wrap_info": None, "auth": None,
                    "warnings": ["Invalid path for a versioned K/V secrets engine. See the API docs for the "
                                 "appropriate API endpoints to use."]}


@pytest.mark.parametrize("body", [{"errors": []}, KV2_INVALID_PATH])
def test_vault_s_own_404_is_still_an_absent_secret(tmp_path, body):
    """Vault's own answer for a path with no secret: `{"errors": []}`, as JSON (the mount's config, read
    to tell an absent secret from a mount that is no KV v2 engine, answers as KV v2's). KV v2's envelope for
    a path it serves no endpoint at is Vault's too (a `mount` naming a path inside the real mount: the first
    read's mount check tells what to set)."""
    routes = {"/v1/auth/token/lookup-self": _json(200, LOOKUP_SELF),
              "/v1/secret/config": _json(200, {"data": {"max_versions": 0, "cas_required": False,
                                                         "delete_version_after": "0s"}})}
    with _serving(routes, _json(404, body)) as vault:
        state = _store(vault.url, tmp_path).read_current()
    assert state.record is None and state.version is None, state


def _record(n: int) -> TokenRecord:
    return TokenRecord(value=Secret(f"value-of-token-{n}-for-the-test"), token_id=f"tok-{n}", issuer="influxdb2",
                       policy=POLICY, created_at=NOW, expires_at=NOW + timedelta(days=30))


#: Where the tests below put the secret (the store's settings: mount "secret", path "team/app")
DATA, METADATA = "/v1/secret/data/team/app", "/v1/secret/metadata/team/app"


def _managed_secret() -> dict[str, Route]:
    """Vault's answers for a secret rotator manages, at version 2 (token 2; version 1 holds token 1). The
    loopback server ignores the query: a read of version 1 is answered with version 2's payload, which
    is all these tests need of it (an answer Vault serves)."""
    custom = {"managed-by": "rotator", "policy": POLICY, "token_id": "tok-2", "rotated_at": "2026-03-01T12:00:00Z"}
    versions = {str(n): {"created_time": "2026-03-01T12:00:00Z", "deletion_time": "", "destroyed": False}
                for n in (1, 2)}
    return {
        "/v1/auth/token/lookup-self": _json(200, LOOKUP_SELF),
        "/v1/secret/config": _json(200, {"data": {"max_versions": 0, "cas_required": False,
                                                  "delete_version_after": "0s"}}),
        METADATA: _json(200, {"data": {"current_version": 2, "max_versions": 0, "delete_version_after": "0s",
                                       "custom_metadata": custom, "versions": versions}}),
        DATA: _json(200, {"data": {"data": _record(2).payload(),
                                   "metadata": {"version": 2, "custom_metadata": custom, "deletion_time": "",
                                                "destroyed": False}}}),
    }


def _assert_not_vault_404(error: PermanentError, url: str, what: str) -> None:
    assert f"the answer of {url} to {what} is not Vault's: HTTP 404" in str(error), error
    assert "check url" in (error.hint or ""), error.hint


@pytest.mark.parametrize(("lost", "read", "what"), [
    (DATA, "read_current", "read secret/data/team/app"),  # _read_latest
    (DATA, "read_previous", "read version 1 of secret/data/team/app"),  # _read_version
    (METADATA, "read_previous", "read secret/metadata/team/app"),  # _read_metadata
])
def test_an_ingress_404_after_the_first_read_is_not_an_absent_secret(tmp_path, lost, read, what):
    """The first read checked the mount; then the ingress in front of Vault loses its route for a moment
    and answers 404 as text. That is no "secret absent": read so, the store named no current token, and a
    due revocation of the token it holds found no holder and revoked it. The read fails, as for any
    answer that is not Vault's; a revocation waits for the next one."""
    with _serving(_managed_secret(), PROXY_404) as vault:
        store = _store(vault.url, tmp_path)
        assert store.read_current().token_id == "tok-2"
        assert store.read_previous().version == "1"
        vault.routes[lost] = PROXY_404
        with pytest.raises(PermanentError) as caught:
            getattr(store, read)()
    _assert_not_vault_404(caught.value, vault.url, what)


def test_an_ingress_404_of_the_mount_s_config_is_not_a_mount_that_is_no_kv_v2_engine(tmp_path):
    """The first read of an absent secret: Vault's own 404s for it, and the ingress's for the mount's
    config. KV v2 always has a config, so a 404 of it read as Vault's said "mount is not a KV version 2
    engine": wrong advice, and for an answer Vault never gave."""
    routes = {"/v1/auth/token/lookup-self": _json(200, LOOKUP_SELF), "/v1/secret/config": PROXY_404}
    with _serving(routes, _json(404, {"errors": []})) as vault:
        with pytest.raises(PermanentError) as caught:
            _store(vault.url, tmp_path).read_current()
    _assert_not_vault_404(caught.value, vault.url, "read secret/config")
    assert "KV version 2" not in str(caught.value), caught.value


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "Application/JSON"])
def test_vault_s_own_refusal_of_the_metadata_patch_through_a_proxy_that_adds_a_charset_is_still_vault_s(
        tmp_path, content_type):
    """The PATCH of the custom_metadata reads its error answer itself (hvac has no call for it): it took
    only an exact `application/json`, so a gateway's charset dropped Vault's message (the custom_metadata
    limits it names) for "not Vault's answer, check url", as the other calls no longer did."""
    limit = "1 error occurred:\n\t* custom_metadata validation failed: length of value for key \"policy\" is 600"
    routes = {
        "/v1/auth/token/lookup-self": _json(200, LOOKUP_SELF),
        DATA: _json(200, {"data": {"version": 1, "custom_metadata": None, "created_time": "2026-03-01T12:00:00Z",
                                   "deletion_time": ""}}),
        METADATA: (400, content_type, json.dumps({"errors": [limit + "\n\n"]}).encode()),
    }
    with _serving(routes, PROXY_404) as vault:
        with pytest.raises(RotatorError) as caught:
            _store(vault.url, tmp_path).publish(_record(1), None)
        assert vault.count(METADATA) == 1 and "PATCH " + METADATA in vault.requests, vault.requests
    assert "not Vault's" not in str(caught.value), caught.value
    assert "custom_metadata validation failed" in str(caught.value), caught.value
    assert "custom_metadata keys in a write" in (caught.value.hint or ""), caught.value.hint


def test_a_redirect_loop_is_a_url_to_fix_not_an_unreachable_vault(tmp_path):
    """An address that redirects every request to itself: requests gives up after 30 redirects. Vault (or
    what answers there) was reached, and a retry meets the same loop: the url is to fix."""
    loop = (b"HTTP/1.1 307 Temporary Redirect\r\nLocation: /v1/auth/token/lookup-self\r\nContent-Length: 0\r\n"
            b"Connection: close\r\n\r\n")
    with _serving({}, loop) as vault:
        with pytest.raises(RotatorError) as caught:
            _store(vault.url, tmp_path).read_current()
        assert vault.count("/v1/auth/token/lookup-self") == 31  # the request and requests' 30 redirects
    assert isinstance(caught.value, PermanentError), caught.value
    assert f"{vault.url} answered a request to log in to auth/token/lookup-self with redirects that never end" in (
        str(caught.value)), caught.value
    assert "check url" in (caught.value.hint or "") and "cannot reach" not in str(caught.value), caught.value.hint


def _write_answer(version: int) -> tuple[int, str, bytes]:
    """Vault's answer to a data write, as it writes one (the new version's metadata)."""
    return _json(200, {"request_id": "6b1e9b5a-3f7c-4c1e-9d3e-2a1f0c9e8d7b", "data": {
        "version": version, "created_time": "2026-03-01T12:00:00Z", "deletion_time": "", "destroyed": False,
        "custom_metadata": None}})


def _metadata_after(version: int) -> tuple[int, str, bytes]:
    custom = {"managed-by": "rotator", "policy": POLICY, "token_id": f"tok-{version}",
              "rotated_at": "2026-03-01T12:00:00Z"}
    versions = {str(n): {"created_time": "2026-03-01T12:00:00Z", "deletion_time": "", "destroyed": False}
                for n in range(1, version + 1)}
    return _json(200, {"data": {"current_version": version, "max_versions": 0, "delete_version_after": "0s",
                                "custom_metadata": custom, "versions": versions}})


@pytest.mark.parametrize(("expected", "answered"), [("2", 7), ("2", 2), ("2", 1), (None, 6), (None, 0)])
def test_an_answer_to_the_cas_write_naming_another_version_is_not_vault_s(tmp_path, expected, answered):
    """Vault accepts a cas write only while the secret is at version cas, and writes it as cas + 1 (1 for cas=0:
    no secret yet). A proxy or a cache that answers the write itself (an earlier answer replayed, a catch-all
    naming any version) was taken as the publish: the journal recorded a version Vault never wrote, and the
    custom_metadata was claimed for it. Whether the write reached Vault is unknown, so the error is transient:
    a retry with the same cas completes a write that landed (Vault's cas mismatch, then the read finds it),
    and the engine reads the stores before it revokes the new token."""
    routes = _managed_secret() if expected is not None else {
        "/v1/auth/token/lookup-self": _json(200, LOOKUP_SELF),
        "/v1/secret/config": _json(200, {"data": {"max_versions": 0, "cas_required": False,
                                                  "delete_version_after": "0s"}}),
    }
    with _serving(routes, _json(404, {"errors": []})) as vault:
        store = _store(vault.url, tmp_path)
        assert store.read_current().version == expected
        vault.routes[DATA] = _write_answer(answered)
        with pytest.raises(RotatorError) as caught:
            store.publish(_record(3), expected)
        assert f"POST {DATA}" in vault.requests and not any(r.startswith(f"PATCH {METADATA}") for r in
                                                             vault.requests), vault.requests
    assert type(caught.value) is TransientError, caught.value
    cas = int(expected or 0)
    assert (f"the answer of {vault.url} to write secret/data/team/app with cas={cas} is not Vault's: it names "
            f"version {answered}, but a compare-and-set write Vault accepts with cas={cas} is always version "
            f"{cas + 1}") in str(caught.value), caught.value
    assert "check url" in (caught.value.hint or ""), caught.value.hint


@pytest.mark.parametrize("expected", ["2", None])
def test_vault_s_own_answer_to_the_cas_write_is_still_the_publish(tmp_path, expected):
    """Version cas + 1, as Vault writes it: the publish is done, and the secret marked managed."""
    routes = _managed_secret() if expected is not None else {
        "/v1/auth/token/lookup-self": _json(200, LOOKUP_SELF),
        "/v1/secret/config": _json(200, {"data": {"max_versions": 0, "cas_required": False,
                                                  "delete_version_after": "0s"}}),
    }
    written = int(expected or 0) + 1
    with _serving(routes, _json(404, {"errors": []})) as vault:
        store = _store(vault.url, tmp_path)
        assert store.read_current().version == expected
        vault.routes[DATA] = _write_answer(written)
        vault.routes[METADATA] = _metadata_after(written)
        assert store.publish(_record(written), expected) == str(written)
        assert f"PATCH {METADATA}" in vault.requests, vault.requests
