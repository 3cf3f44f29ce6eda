"""VaultLogin, the vault-kv2 store's own token, where it fails: against the OpenBao dev server
(tests/servers.py) and, for what a real server cannot be made to do on demand, with a scripted fake.

- A refused login (a wrong secret_id) is not sent again with the same credential before
  REFUSED_LOGIN_RESEND, by any store of the process: the backoff sent it 5 times in 15 s, and Vault's
  user lockout then refused the fixed secret_id for 15 minutes. A changed credential is sent at once.
- A token Vault does not know (revoked, made up) is a failure at once: a 403 from its first
  lookup-self read as "lookup not allowed, renewal off", and one from renew-self rescheduled it from
  the expiry known, both with status ok while every store call failed.
- A jwt_file that is not UTF-8 is a ConfigError, not an internal error.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import hvac
import pytest

from rotator.adapters.vault.auth import TokenAuth, VaultAPI, VaultLogin
from rotator.adapters.vault.kv2 import VaultKV2Settings, VaultKV2Store, hvac_client
from rotator.core.clock import FakeClock
from rotator.core.contracts import AdapterContext
from rotator.core.errors import ConfigError, PermanentError
from rotator.core.secret import Secret
from tests.servers import OpenBao

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class _Logins:
    """A client factory for real clients that counts the logins they send."""

    def __init__(self) -> None:
        self.sent = 0

    def __call__(self, settings: VaultKV2Settings) -> VaultAPI:
        counter = self
        real = hvac_client(settings)

        class Counted:
            def __getattr__(self, name: str) -> Any:
                return getattr(real, name)

            def approle_login(self, mount_path: str, role_id: str, secret_id: Secret) -> Any:
                counter.sent += 1
                return real.approle_login(mount_path, role_id, secret_id)

        return Counted()  # type: ignore[return-value]


def _store(openbao: OpenBao, tmp_path: Path, auth: dict[str, Any], clock: FakeClock,
           factory: Any = None) -> VaultKV2Store:  # fmt: skip
    model = VaultKV2Settings.model_validate({"url": openbao.url, "path": f"tests/login-{uuid.uuid4().hex[:8]}",
                                             "auth": auth})
    return VaultKV2Store.from_config(model, AdapterContext(policy="p", base_dir=tmp_path, clock=clock), factory)


def _approle(openbao: OpenBao, tmp_path: Path) -> tuple[dict[str, Any], str]:
    """A role of its own (a test may lock it out), and a wrong secret_id in the file."""
    role_id, secret_id = openbao.approle(f"login-{uuid.uuid4().hex[:8]}", "default")
    (tmp_path / "secret-id").write_text(str(uuid.uuid4()))
    return {"method": "approle", "role_id": role_id, "secret_id": {"file": "secret-id"}}, secret_id


def _to_due(store: VaultKV2Store, clock: FakeClock) -> None:
    """The daemon's way: keep_alive at the store's due time, 1 s later at the soonest (CREDENTIAL_PAUSE)."""
    due = store.credential_due()
    assert due is not None, "a failed login is always tried again"
    clock.advance(max(due - clock.now(), timedelta(seconds=1)))


# -- a refused login ---------------------------------------------------------------------------------
def test_a_wrong_secret_id_is_sent_at_most_twice_in_15_minutes_and_the_fixed_one_at_the_next_check(
        openbao: OpenBao, tmp_path: Path) -> None:
    auth, right = _approle(openbao, tmp_path)
    clock, logins = FakeClock(NOW), _Logins()
    store = _store(openbao, tmp_path, auth, clock, logins)
    checks = 0
    while clock.now() < NOW + timedelta(minutes=15):
        with pytest.raises(PermanentError, match="HTTP 400"):
            store.keep_alive()
        checks += 1
        _to_due(store, clock)
    assert logins.sent <= 2 and checks >= 8, (logins.sent, checks)
    status = store.credential_status()
    assert status["ok"] is False and status["failures"] == checks
    with pytest.raises(PermanentError, match="HTTP 400") as caught:
        store.read_current()  # a rotation's call between the checks: no login either
    assert logins.sent <= 2 and "sends the same secret_id again at" in (caught.value.hint or "")

    (tmp_path / "secret-id").write_text(right)  # the operator's fix
    _to_due(store, clock)
    store.keep_alive()
    assert store.credential_status()["ok"] is True, "not locked out: Vault took the right secret_id"
    assert logins.sent <= 3


def test_the_same_wrong_secret_id_is_sent_again_after_the_resend_interval(openbao: OpenBao, tmp_path: Path) -> None:
    auth, _ = _approle(openbao, tmp_path)
    clock, logins = FakeClock(NOW), _Logins()
    store = _store(openbao, tmp_path, auth, clock, logins)
    while clock.now() < NOW + timedelta(minutes=35):  # REFUSED_LOGIN_RESEND (30 min, docs/daemon.md) and a check
        with pytest.raises(PermanentError, match="HTTP 400"):
            store.keep_alive()
        _to_due(store, clock)
    assert logins.sent == 2, "a fix made in Vault alone is seen too, half an hour later"


def test_stores_sharing_a_wrong_secret_id_send_it_once_and_a_store_set_up_anew_once_more(
        openbao: OpenBao, tmp_path: Path) -> None:
    """Six policies on one role: six refused logins at once locked the role out (Vault's threshold is 5)."""
    auth, right = _approle(openbao, tmp_path)
    clock, logins = FakeClock(NOW), _Logins()
    stores = [_store(openbao, tmp_path, auth, clock, logins) for _ in range(6)]
    for store in stores:
        with pytest.raises(PermanentError, match="HTTP 400"):
            store.keep_alive()
    assert logins.sent == 1
    clock.advance(timedelta(seconds=5))
    reloaded = _store(openbao, tmp_path, auth, clock, logins)  # a SIGHUP: "try again now"
    with pytest.raises(PermanentError, match="HTTP 400"):
        reloaded.keep_alive()
    assert logins.sent == 2

    (tmp_path / "secret-id").write_text(right)
    for store in [*stores, reloaded]:
        _to_due(store, clock)
        store.keep_alive()
        assert store.credential_status()["ok"] is True, "not locked out"


def test_a_403_after_failed_logins_names_vaults_user_lockout(openbao: OpenBao, tmp_path: Path) -> None:
    """Five different wrong secret_ids (each changed, so each sent) lock the role out: the right one
    then gets a 403, whose hint says what it is and how to end it."""
    auth, right = _approle(openbao, tmp_path)
    clock = FakeClock(NOW)
    store = _store(openbao, tmp_path, auth, clock)
    for _ in range(5):
        (tmp_path / "secret-id").write_text(str(uuid.uuid4()))
        with pytest.raises(PermanentError, match="HTTP 400"):
            store.keep_alive()
        _to_due(store, clock)
    (tmp_path / "secret-id").write_text(right)
    with pytest.raises(PermanentError, match="HTTP 403") as caught:
        store.keep_alive()
    hint = caught.value.hint or ""
    assert "user lockout" in hint and "sys/locked-users" in hint and "lockout_duration" in hint, hint


# -- a token Vault does not know ---------------------------------------------------------------------
@pytest.mark.parametrize("which", ["revoked", "made up"])
def test_a_dead_token_at_start_is_a_failed_credential(openbao: OpenBao, tmp_path: Path, which: str) -> None:
    token = "s.this-is-not-a-token-at-all"
    if which == "revoked":
        token = openbao.create_token("default", ttl="1h")
        openbao.client().auth.token.revoke(token)
    (tmp_path / "vault-token").write_text(token)
    store = _store(openbao, tmp_path, {"method": "token", "token": {"file": "vault-token"}}, FakeClock(NOW))
    with pytest.raises(PermanentError, match="HTTP 403"):
        store.keep_alive()
    status = store.credential_status()
    assert status["ok"] is False and status["failures"] == 1 and status["error"] == "Forbidden", status
    assert store.credential_due() is not None, "checked again (a token written to the file is picked up)"


def test_a_valid_token_that_may_not_look_itself_up_is_fine_until_it_is_revoked(
        openbao: OpenBao, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = f"tests/login-{uuid.uuid4().hex[:8]}"
    token = openbao.create_token(openbao.policy_for(f"login-{uuid.uuid4().hex[:8]}", path, "read"),
                                 no_default_policy=True)
    (tmp_path / "vault-token").write_text(token)
    model = VaultKV2Settings.model_validate({"url": openbao.url, "path": path,
                                             "auth": {"method": "token", "token": {"file": "vault-token"}}})
    store = VaultKV2Store.from_config(model, AdapterContext(policy="p", base_dir=tmp_path, clock=FakeClock(NOW)))
    with caplog.at_level(logging.WARNING, logger="rotator.adapters.vault_kv2"):
        store.keep_alive()
    assert "renewal is off" in caplog.text
    assert store.credential_status()["ok"] is True and store.credential_due() is None
    assert store.read_current().version is None

    openbao.client().auth.token.revoke(token)
    with pytest.raises(PermanentError, match="HTTP 403"):
        store.read_current()
    status = store.credential_status()
    assert status["ok"] is False and status["error"] == "Forbidden", "the store call's 403 was the token's"
    assert store.credential_due() is not None


def test_a_token_revoked_before_its_renewal_is_a_failure_at_the_renewal(openbao: OpenBao, tmp_path: Path) -> None:
    token = openbao.create_token("default", ttl="1h", renewable=True)
    (tmp_path / "vault-token").write_text(token)
    clock = FakeClock(NOW)
    store = _store(openbao, tmp_path, {"method": "token", "token": {"file": "vault-token"}}, clock)
    store.keep_alive()
    assert store.credential_status()["ok"] is True
    openbao.client().auth.token.revoke(token)
    _to_due(store, clock)
    with pytest.raises(PermanentError, match="HTTP 403"):
        store.keep_alive()
    status = store.credential_status()
    assert status["ok"] is False and status["failures"] == 1, status
    _to_due(store, clock)
    with pytest.raises(PermanentError, match="HTTP 403"):
        store.keep_alive()  # and at every retry, not rescheduled from the expiry known
    assert store.credential_status()["failures"] == 2

    fresh = openbao.create_token("default", ttl="1h")
    (tmp_path / "vault-token").write_text(fresh)  # the operator's fix
    _to_due(store, clock)
    store.keep_alive()
    assert store.credential_status()["ok"] is True


class _Scripted:
    """The AuthAPI calls, scripted: a list of answers or exceptions per call."""

    def __init__(self, **script: list[Any]) -> None:
        self.script = script
        self.calls: list[str] = []

    def set_token(self, token: Secret | None) -> None:
        pass

    def _answer(self, name: str) -> Any:
        self.calls.append(name)
        item = self.script[name].pop(0)
        if isinstance(item, BaseException):
            raise item
        return item

    def lookup_self(self) -> Any:
        return self._answer("lookup_self")

    def renew_self(self) -> Any:
        return self._answer("renew_self")

    def check_token(self) -> Any:
        return self._answer("check_token")


def _token_login(tmp_path: Path) -> tuple[VaultLogin, FakeClock]:
    (tmp_path / "token").write_text("s.renewable-token-for-the-unit-test")
    clock = FakeClock(NOW)
    return VaultLogin(TokenAuth.model_validate({"method": "token", "token": {"file": "token"}}), tmp_path, clock), clock


def test_a_renewal_refused_to_a_token_that_still_looks_itself_up_warns_once_and_is_not_tried_again(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    login, clock = _token_login(tmp_path)
    denied = hvac.exceptions.Forbidden("permission denied")
    api = _Scripted(lookup_self=[{"data": {"ttl": 3000, "creation_ttl": 3000, "renewable": True}},
                                 {"data": {"ttl": 1000, "creation_ttl": 3000, "renewable": True}}],
                    renew_self=[denied])
    login.ensure(api)
    clock.advance(timedelta(seconds=2000))
    with caplog.at_level(logging.WARNING, logger="rotator.adapters.vault_kv2"):
        login.ensure(api)  # renew-self: 403, then a lookup (not the expiry known): the token lives
        for _ in range(3):
            due = login.due()
            assert due is not None
            clock.advance(due - clock.now())
            login.ensure(api)
    assert api.calls == ["lookup_self", "renew_self", "lookup_self"], "renewal not tried again, nor the lookup"
    assert caplog.text.count("Vault refused to renew the token") == 1 and "auth/token/renew-self" in caplog.text
    assert login.status()["failures"] == 0


def test_a_renewal_refused_to_a_revoked_token_is_a_failure(tmp_path: Path) -> None:
    """The unit form of the OpenBao test above: renew-self 403, lookup-self 403, and Vault does not know
    the token. Before, the same token was rescheduled without asking Vault, failures reset to 0."""
    login, clock = _token_login(tmp_path)
    denied = hvac.exceptions.Forbidden("permission denied")
    api = _Scripted(lookup_self=[{"data": {"ttl": 3000, "creation_ttl": 3000, "renewable": True}}, denied],
                    renew_self=[denied], check_token=[denied])
    login.ensure(api)
    clock.advance(timedelta(seconds=2000))
    with pytest.raises(hvac.exceptions.Forbidden):
        login.ensure(api)
    assert api.calls == ["lookup_self", "renew_self", "lookup_self", "check_token"]
    status = login.status()
    assert status["ok"] is False and status["failures"] == 1 and status["error"] == "Forbidden", status


# -- the service account token ----------------------------------------------------------------------
def test_a_jwt_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "jwt").write_bytes("eyJhbGciOi".encode("utf-16"))  # a BOM ff fe, then UTF-16
    model = VaultKV2Settings.model_validate({"url": "http://127.0.0.1:9", "path": "x/y",
                                             "auth": {"method": "kubernetes", "role": "rotator", "jwt_file": "jwt"}})
    store = VaultKV2Store.from_config(model, AdapterContext(policy="p", base_dir=tmp_path, clock=FakeClock(NOW)))
    with pytest.raises(ConfigError, match=r"jwt is not UTF-8 text \(byte 1\)") as caught:
        store.keep_alive()
    assert "jwt_file" in (caught.value.hint or "")
    assert store.credential_status()["error"] == "ConfigError"
