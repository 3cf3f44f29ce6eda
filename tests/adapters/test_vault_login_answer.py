"""What the vault-kv2 store makes of a login's answer, and what its log calls the credential.

A login answer whose ``auth.client_token`` cannot be a token (a CR/LF in it, a space, a character beyond
ASCII) was taken as it came, with none of the checks a token read from a file or a variable gets: the next
request then failed in requests (InvalidHeader), reported as "cannot reach Vault" and retried. Whatever sent
it is not Vault: now the login says so, and never shows the value. Served by a raw HTTP server on loopback
(tests/adapters/loopback_http.py), as no Vault answers that.

The log line of a failed login said "Vault token: login failed" for every auth method; it now names the one
configured (AppRole, Kubernetes, a token and where it is read from).
"""

from __future__ import annotations

import json
import logging
import re
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from rotator.adapters.vault.kv2 import VaultKV2Settings, VaultKV2Store
from rotator.core.clock import FakeClock
from rotator.core.contracts import AdapterContext
from rotator.core.errors import ConfigError, PermanentError
from tests.adapters.loopback_http import loopback_server, read_head

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
AUTH = {
    "approle": {"method": "approle", "role_id": "role-1", "secret_id": {"file": "secret-id"}},
    "kubernetes": {"method": "kubernetes", "role": "rotator", "jwt_file": "jwt"},
}


def _store(url: str, tmp_path: Path, auth: dict[str, Any]) -> VaultKV2Store:
    settings = VaultKV2Settings.model_validate({"url": url, "path": "influx/mgmt", "auth": auth})
    return VaultKV2Store.from_config(settings, AdapterContext(policy="p", base_dir=tmp_path, clock=FakeClock(NOW)))


def _credentials(tmp_path: Path) -> None:
    """The secret_id and the service account JWT the logins send (private: no warning about their mode)."""
    for name, value in (("secret-id", "secret-id-value"), ("jwt", "header.payload.signature")):
        (tmp_path / name).write_text(value)
        (tmp_path / name).chmod(0o600)


def _logging_in_with(client_token: object, seen: list[str]) -> Callable[[socket.socket], None]:
    """A server that answers any login with ``client_token`` (Vault's answer otherwise) and anything else
    with Vault's 404; ``seen``: the request lines it read."""

    def answer(conn: socket.socket) -> None:
        data = b""
        while (got := read_head(conn, data)) is not None:
            head, rest = got
            length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            size = int(length[1]) if length else 0
            while len(rest) < size:
                rest += conn.recv(65536)
            data = rest[size:]
            line = head.split(b"\r\n", 1)[0].decode()
            seen.append(line)
            if "/v1/auth/" in line:
                status, body = "200 OK", {"auth": {"client_token": client_token, "lease_duration": 3600,
                                                   "renewable": True, "policies": ["default"]}}
            else:
                status, body = "404 Not Found", {"errors": []}
            raw = json.dumps(body).encode()
            conn.sendall(f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(raw)}\r\n\r\n"
                         .encode() + raw)

    return answer


@pytest.mark.parametrize("method", ["approle", "kubernetes"])
@pytest.mark.parametrize("client_token", [
    "s.abcdef\r\nX-Injected: 1",  # the reported one: requests raised InvalidHeader, read as "cannot reach Vault"
    "s.abcdef\n",
    "s.abc def",
    "s.abc\u00e9def",
    "",
    None,
], ids=["crlf", "lf", "space", "non-ascii", "empty", "absent"])
def test_a_login_answer_whose_client_token_is_no_token_is_not_vaults_answer(tmp_path, method, client_token):
    _credentials(tmp_path)
    seen: list[str] = []
    with loopback_server(_logging_in_with(client_token, seen)) as url:
        store = _store(url, tmp_path, AUTH[method])
        with pytest.raises(PermanentError) as caught:
            store.read_current()
    message = str(caught.value)
    assert f"the answer of {url} to log in to auth/{method}/login" in message and "is not Vault's" in message
    assert "cannot reach" not in message
    assert caught.value.hint.startswith("check url: it must reach Vault's API itself")
    if client_token:
        assert "abc" not in message + caught.value.hint, "the value is never shown"
    assert seen == [f"POST /v1/auth/{method}/login HTTP/1.1"], \
        "nothing was sent with it"


def test_a_login_answer_with_a_token_is_taken(tmp_path):
    """The check is of the shape only: a token as Vault writes one logs in, and the store's reads follow
    (which this server, no Vault, answers with a 404: some error of the reads, not of the login)."""
    _credentials(tmp_path)
    seen: list[str] = []
    with loopback_server(_logging_in_with("hvs.CAESIJ-abc_XYZ0123456789", seen)) as url:
        with pytest.raises(PermanentError) as caught:
            _store(url, tmp_path, AUTH["approle"]).read_current()
    assert "log in to" not in str(caught.value)
    assert seen[0] == "POST /v1/auth/approle/login HTTP/1.1" and len(seen) > 1


@pytest.mark.parametrize(("auth", "says"), [
    (AUTH["approle"], "Vault AppRole login (auth/approle): login failed (ConfigError, 1 in a row)"),
    ({**AUTH["approle"], "mount_path": "team-a/approle"},
     "Vault AppRole login (auth/team-a/approle): login failed (ConfigError, 1 in a row)"),
    (AUTH["kubernetes"],
     "Vault Kubernetes login (auth/kubernetes, role 'rotator'): login failed (ConfigError, 1 in a row)"),
    ({"method": "token", "token": {"file": "vault-token"}},
     "Vault token (file vault-token): reading the token failed (ConfigError, 1 in a row)"),
], ids=["approle", "approle-mount", "kubernetes", "token-file"])
def test_a_failed_login_is_logged_under_the_auth_method_configured(openbao, tmp_path, caplog, auth, says):
    """The reported line: a policy whose store logs in with AppRole, its secret_id file missing, logged
    "Vault token: login failed (ConfigError, 1 in a row)"."""
    caplog.set_level(logging.WARNING, logger="rotator.adapters.vault_kv2")
    with pytest.raises(ConfigError):
        _store(openbao.url, tmp_path, auth).read_current()
    lines = [r.getMessage() for r in caplog.records if r.name == "rotator.adapters.vault_kv2"]
    assert any(line.startswith(says) for line in lines), lines
    if auth["method"] != "token":
        assert not any("Vault token" in line for line in lines), lines
