"""VaultLogin, the vault-kv2 store's own token, where it fails: against the OpenBao dev server
(tests/servers.py) and, for what a real server cannot be made to do on demand, with a scripted fake.

- A refused login (a wrong secret_id) is not sent again with the same credential before
  REFUSED_LOGIN_RESEND, by any store of the process: the backoff sent it 5 times in 15 s, and Vault's
  user lockout then refused the fixed secret_id for 15 minutes. A changed credential is sent at once.
- A token Vault does not know (revoked, made up) is a failure at once: a 403 from its first
  lookup-self read as "lookup not allowed, renewal off", and one from renew-self rescheduled it from
  the expiry known, both with status ok while every store call failed.
- A login token that Vault still knows but that may not look itself up (a role with
  token_no_default_policy) and is denied a capability does not log in again at every refusal: each login
  left a live token behind and used up a secret_id limited to a few uses. Vault unreachable while that
  is checked is a transient error, not the 403 reported as a permanent one.
- A token from a file revoked mid-life is a failure at the first store call it fails, not at its
  planned renewal (2/3 of its TTL: weeks).
- A jwt_file that is not UTF-8 is a ConfigError, not an internal error; one that is a FIFO, a device or
  larger than 64 KiB is refused as a `{file = ...}` credential is (it blocked the login, filled the
  memory, or was sent to Vault), and so is one with a control character; a BOM is dropped.
- A step of the clock back is measured against the real time passed (a monotonic clock), not from the
  last time of day read: the daemon reads it only at a store's planned times.
- Stores logging in with one AppRole secret_id at the same moment send it one at a time: a refused one
  is sent once, not once per store. A refused Kubernetes JWT is sent again at the next check.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import hvac
import pytest
import requests

from rotator.adapters.vault.auth import AppRoleAuth, KubernetesAuth, TokenAuth, VaultAPI, VaultLogin
from rotator.adapters.vault.kv2 import VaultKV2Settings, VaultKV2Store, hvac_client
from rotator.core.clock import FakeClock
from rotator.core.contracts import AdapterContext
from rotator.core.credentials import MAX_CREDENTIAL_BYTES
from rotator.core.errors import ConfigError, PermanentError, TransientError
from rotator.core.secret import Secret
from tests.harness import REPO
from tests.scripted_vault import ScriptedAuth, token_login
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


def test_a_token_revoked_mid_life_is_a_failure_at_the_first_store_call_it_fails(
        openbao: OpenBao, tmp_path: Path) -> None:
    """Before, the same token in the file, which could look itself up, was taken as denied a capability
    without asking Vault: status ok, /readyz and rotator_credential_ok too, until its planned renewal."""
    token = openbao.create_token("default", ttl="768h", renewable=True)  # a renewal weeks away
    (tmp_path / "vault-token").write_text(token)
    clock = FakeClock(NOW)
    store = _store(openbao, tmp_path, {"method": "token", "token": {"file": "vault-token"}}, clock)
    store.keep_alive()
    openbao.client().auth.token.revoke(token)
    with pytest.raises(PermanentError, match="HTTP 403"):
        store.read_current()
    status = store.credential_status()
    assert status["ok"] is False and status["failures"] == 1 and status["error"] == "Forbidden", status
    due = store.credential_due()
    assert due is not None and due - clock.now() <= timedelta(minutes=5), "checked again soon, not in weeks"

    (tmp_path / "vault-token").write_text(openbao.create_token("default", ttl="1h"))  # the operator's fix
    _to_due(store, clock)
    store.keep_alive()
    assert store.credential_status()["ok"] is True


def test_a_token_denied_a_capability_is_not_a_failed_credential(openbao: OpenBao, tmp_path: Path) -> None:
    """The check a 403 adds: a token Vault still knows stays ok, the 403 is the store call's."""
    token = openbao.create_token(openbao.policy_for(f"login-{uuid.uuid4().hex[:8]}", "tests/elsewhere", "read"))
    (tmp_path / "vault-token").write_text(token)
    store = _store(openbao, tmp_path, {"method": "token", "token": {"file": "vault-token"}}, FakeClock(NOW))
    for _ in range(2):
        with pytest.raises(PermanentError, match="HTTP 403"):
            store.read_current()
    status = store.credential_status()
    assert status["ok"] is True and status["failures"] == 0, status


# -- a login token denied a capability ---------------------------------------------------------------
def test_a_login_token_without_the_default_policy_denied_a_capability_logs_in_no_more(
        openbao: OpenBao, tmp_path: Path) -> None:
    """A role with token_no_default_policy: its token may not look itself up, and that 403 was taken for a
    dead token, so every refused store call logged in again, left a live token behind and used up one of
    the secret_id's uses; after the operator fixed the policy, the store could not log in at all."""
    path = f"tests/login-{uuid.uuid4().hex[:8]}"
    policy = f"login-{uuid.uuid4().hex[:8]}"
    openbao.write_policy(policy, f'path "secret/data/{path}" {{ capabilities = ["read"] }}\n')  # no metadata
    role_id, secret_id = openbao.approle(policy, policy, token_no_default_policy=True, secret_id_num_uses=2,
                                         token_ttl="1h")  # fmt: skip
    (tmp_path / "secret-id").write_text(secret_id)
    model = VaultKV2Settings.model_validate({"url": openbao.url, "path": path, "auth": {
        "method": "approle", "role_id": role_id, "secret_id": {"file": "secret-id"}}})
    logins = _Logins()
    store = VaultKV2Store.from_config(model, AdapterContext(policy="p", base_dir=tmp_path, clock=FakeClock(NOW)),
                                      logins)  # fmt: skip
    for _ in range(2):
        with pytest.raises(PermanentError, match="HTTP 403") as caught:
            store.read_current()
        assert "metadata" in str(caught.value)
    assert logins.sent == 1, f"{logins.sent} logins for two refusals of a capability"
    assert store.credential_status()["ok"] is True

    openbao.policy_for(policy, path, "read")  # the operator's fix: the token's policy, by name, at once
    assert store.read_current().version is None
    assert logins.sent == 1


class _LoginVault(ScriptedAuth):
    """An AppRole login that Vault grants, and the store's first call scripted (``read_metadata``)."""

    def __init__(self, **script: list[Any]) -> None:
        super().__init__(**script)
        self.logins = 0

    def approle_login(self, mount_path: str, role_id: str, secret_id: Secret) -> Any:
        self.logins += 1
        return {"auth": {"client_token": f"s.login-{self.logins}", "lease_duration": 3600, "renewable": True}}

    def read_metadata(self, mount: str, path: str) -> Any:
        return self._answer("read_metadata")


def _login_store(tmp_path: Path, api: _LoginVault) -> VaultKV2Store:
    (tmp_path / "secret-id").write_text("secret-id-0123456789")
    model = VaultKV2Settings.model_validate({"url": "http://127.0.0.1:9", "path": "x/y", "auth": {
        "method": "approle", "role_id": "role-1", "secret_id": {"file": "secret-id"}}})
    return VaultKV2Store.from_config(model, AdapterContext(policy="p", base_dir=tmp_path, clock=FakeClock(NOW)),
                                     lambda _: api)  # type: ignore[arg-type,return-value]


@pytest.mark.parametrize("down_at", ["lookup_self", "check_token"])
def test_vault_unreachable_while_a_refused_login_token_is_checked_is_transient(
        tmp_path: Path, down_at: str) -> None:
    """The 403 may be an expired token's, which a login fixes once Vault answers: it was reported as a
    permanent refusal of the capability."""
    denied = hvac.exceptions.Forbidden("permission denied", errors=["permission denied"])
    script: dict[str, list[Any]] = {"read_metadata": [denied], "lookup_self": [denied], "check_token": []}
    script[down_at] = [requests.exceptions.ConnectionError()]
    api = _LoginVault(**script)
    with pytest.raises(TransientError):
        _login_store(tmp_path, api).read_current()
    assert api.logins == 1


@pytest.mark.parametrize(("check", "logins"), [
    (hvac.exceptions.Forbidden("permission denied"), 2),  # Vault does not know the token: a login helps
    (None, 1),  # Vault knows it: the capability is missing
    (hvac.exceptions.InvalidPath(), 2),  # cannot be told (a proxy without that call): a login, as before
])  # fmt: skip
def test_a_refused_login_token_that_may_not_look_itself_up_logs_in_again_only_when_vault_forgot_it(
        tmp_path: Path, check: Exception | None, logins: int) -> None:
    denied = hvac.exceptions.Forbidden("permission denied", errors=["permission denied"])
    api = _LoginVault(read_metadata=[denied, denied], lookup_self=[denied], check_token=[check])
    with pytest.raises(PermanentError, match="HTTP 403"):
        _login_store(tmp_path, api).read_current()
    assert api.logins == logins and api.calls[:3] == ["read_metadata", "lookup_self", "check_token"], api.calls


def _token_login(tmp_path: Path) -> tuple[VaultLogin, FakeClock]:
    return token_login(tmp_path, NOW)


def test_a_renewal_refused_to_a_token_that_still_looks_itself_up_warns_once_and_is_not_tried_again(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    login, clock = _token_login(tmp_path)
    denied = hvac.exceptions.Forbidden("permission denied")
    api = ScriptedAuth(lookup_self=[{"data": {"ttl": 3000, "creation_ttl": 3000, "renewable": True}},
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
    api = ScriptedAuth(lookup_self=[{"data": {"ttl": 3000, "creation_ttl": 3000, "renewable": True}}, denied],
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


class _K8sVault(ScriptedAuth):
    """Vault's Kubernetes login: records each JWT sent and grants it."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[str] = []

    def kubernetes_login(self, mount_path: str, role: str, jwt: Secret) -> Any:
        self.sent.append(jwt.reveal())
        return {"auth": {"client_token": f"s.k8s-{len(self.sent)}", "lease_duration": 600, "renewable": True}}


def _k8s_store(tmp_path: Path, jwt_file: str, api: _K8sVault) -> VaultKV2Store:
    model = VaultKV2Settings.model_validate({"url": "http://127.0.0.1:9", "path": "x/y",
                                             "auth": {"method": "kubernetes", "role": "rotator", "jwt_file": jwt_file}})
    return VaultKV2Store.from_config(model, AdapterContext(policy="p", base_dir=tmp_path, clock=FakeClock(NOW)),
                                     lambda _: api)  # type: ignore[arg-type,return-value]


def _keep_alive_in_a_thread(store: VaultKV2Store, fifo: Path | None = None) -> BaseException | None:
    """What keep_alive raises, failing the test instead of hanging when the login blocks on the JWT read
    (for a FIFO, the test then is the writer it waits for, so that the read ends)."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            store.keep_alive()
            outcome.append(None)
        except Exception as exc:  # noqa: BLE001 - collected for the assertions
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(5)
    if thread.is_alive():
        if fifo is not None:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            thread.join(5)
        pytest.fail("the login blocked on reading the service account token")
    return outcome[0]


def test_a_jwt_file_that_is_a_fifo_is_refused_at_once(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "jwt")
    api = _K8sVault()
    outcome = _keep_alive_in_a_thread(_k8s_store(tmp_path, "jwt", api), tmp_path / "jwt")
    assert isinstance(outcome, ConfigError), repr(outcome)
    assert str(outcome).endswith("Kubernetes service account token "
                                 f"{tmp_path / 'jwt'}: it is a FIFO (named pipe), not a regular file")
    assert "jwt_file" in outcome.hint and not api.sent


def test_a_jwt_file_larger_than_any_jwt_is_refused_not_sent(tmp_path: Path) -> None:
    (tmp_path / "jwt").write_text("eyJ" + "a" * MAX_CREDENTIAL_BYTES)
    api = _K8sVault()
    outcome = _keep_alive_in_a_thread(_k8s_store(tmp_path, "jwt", api))
    assert isinstance(outcome, ConfigError), repr(outcome)
    assert "service account token" in str(outcome) and "is larger than 64 KiB" in str(outcome)
    assert "aaaa" not in str(outcome) and "jwt_file" in outcome.hint and not api.sent


@pytest.mark.parametrize("device", ["/dev/null", "/dev/zero"])
def test_a_jwt_file_that_is_a_device_is_refused(device: str) -> None:
    """In a child whose address space is bounded: /dev/zero, read to its end, was a MemoryError."""
    if not Path(device).exists():
        pytest.skip(f"no {device} here")
    probe = f"""
import resource, threading
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
from datetime import UTC, datetime
from pathlib import Path
from rotator.adapters.vault.kv2 import VaultKV2Settings, VaultKV2Store
from rotator.core.clock import FakeClock
from rotator.core.contracts import AdapterContext
model = VaultKV2Settings.model_validate({{"url": "http://127.0.0.1:9", "path": "x/y",
    "auth": {{"method": "kubernetes", "role": "rotator", "jwt_file": {device!r}}}}})
store = VaultKV2Store.from_config(model, AdapterContext(policy="p", base_dir=Path("."),
                                  clock=FakeClock(datetime(2026, 3, 1, tzinfo=UTC))))
outcome = []
def run():
    try:
        store.keep_alive()
        outcome.append("no error")
    except BaseException as exc:
        outcome.append(f"{{type(exc).__name__}}: {{exc}}")
thread = threading.Thread(target=run, daemon=True)
thread.start()
thread.join(10)
print(outcome[0] if outcome else "blocked")
"""
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=60,
                          check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == (f"ConfigError: cannot read the Kubernetes service account token {device}: "
                                   "it is a character device, not a regular file"), proc.stdout


def test_a_jwt_file_with_a_control_character_is_refused_and_a_bom_dropped(tmp_path: Path) -> None:
    jwt = "eyJhbGciOiJSUzI1NiJ9.the-pods-service-account-token.sig"
    (tmp_path / "jwt").write_text(f"{jwt[:20]}\n{jwt[20:]}\n")  # wrapped
    api = _K8sVault()
    outcome = _keep_alive_in_a_thread(_k8s_store(tmp_path, "jwt", api))
    assert isinstance(outcome, ConfigError), repr(outcome)
    assert "service account token" in str(outcome) and "U+000A, character 21" in str(outcome)
    assert jwt[:10] not in str(outcome) and "jwt_file" in outcome.hint and not api.sent
    (tmp_path / "jwt").write_text(f"\ufeff{jwt}\n")  # an editor's UTF-8 signature
    assert _keep_alive_in_a_thread(_k8s_store(tmp_path, "jwt", api)) is None
    assert api.sent == [jwt]


def test_a_projected_jwt_replaced_by_a_symbolic_link_swap_is_read_anew(tmp_path: Path) -> None:
    """The kubelet writes a new ..<timestamp> directory and swaps the ..data link to it: the read follows
    the links at every login."""
    mount = tmp_path / "mount"
    for stamp, jwt in (("..2026_03_01_00_00_00.1", "eyJ.first.sig"), ("..2026_03_01_01_00_00.2", "eyJ.second.sig")):
        (mount / stamp).mkdir(parents=True)
        (mount / stamp / "token").write_text(jwt)
    (mount / "..data").symlink_to("..2026_03_01_00_00_00.1")
    (mount / "token").symlink_to("..data/token")
    auth = KubernetesAuth.model_validate({"method": "kubernetes", "role": "rotator", "jwt_file": str(mount / "token")})
    login, api = VaultLogin(auth, tmp_path, FakeClock(NOW)), _K8sVault()
    login.ensure(api)
    (mount / "..data_tmp").symlink_to("..2026_03_01_01_00_00.2")
    os.replace(mount / "..data_tmp", mount / "..data")
    login.forget(ScriptedAuth(lookup_self=[hvac.exceptions.Forbidden()], check_token=[hvac.exceptions.Forbidden()]))
    login.ensure(api)
    assert api.sent == ["eyJ.first.sig", "eyJ.second.sig"]


# -- a step of the clock ----------------------------------------------------------------------------
class _RealTime(FakeClock):
    """A FakeClock that also tells the real time passed (``monotonic``): ``advance`` and ``sleep`` are time
    passing, ``step`` moves the time of day alone (NTP)."""

    def __init__(self, start: datetime) -> None:
        super().__init__(start)
        self.real = 0.0

    def monotonic(self) -> float:
        return self.real

    def advance(self, delta: timedelta) -> None:
        super().advance(delta)
        self.real += delta.total_seconds()

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        self.real += max(seconds, 0)

    def step(self, delta: timedelta) -> None:
        super().advance(delta)


class _SystemLike:
    """A clock as the daemon's: the time of day only (no ``advance``, no ``monotonic``)."""

    def __init__(self, clock: _RealTime) -> None:
        self._clock = clock

    def now(self) -> datetime:
        return self._clock.now()

    def sleep(self, seconds: float) -> None:
        self._clock.sleep(seconds)


@pytest.mark.parametrize("clock_kind", ["own monotonic", "the system's monotonic"])
def test_a_clock_step_back_long_after_the_last_look_moves_the_renewal_back_by_all_of_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock_kind: str) -> None:
    """The daemon asks an idle store only at its planned times. The step was measured from the last time
    of day read: 20 minutes after it, a step back of 1 h moved a 1 h token's renewal back 40 minutes,
    to the moment Vault expires the token ("check in 40 min, expires in 40 min")."""
    (tmp_path / "token").write_text("s.renewable-token-for-the-unit-test")
    clock = _RealTime(NOW)
    seen_by_login: Any = clock
    if clock_kind == "the system's monotonic":
        from rotator.adapters.vault import auth as auth_module

        monkeypatch.setattr(auth_module, "time", SimpleNamespace(monotonic=clock.monotonic), raising=False)
        seen_by_login = _SystemLike(clock)
    login = VaultLogin(TokenAuth.model_validate({"method": "token", "token": {"file": "token"}}), tmp_path,
                       seen_by_login)
    api = ScriptedAuth(lookup_self=[{"data": {"ttl": 3600, "creation_ttl": 3600, "renewable": True}}],
                    renew_self=[{"auth": {"lease_duration": 3600}}])
    login.ensure(api)
    assert login.due() == NOW + timedelta(minutes=40)
    clock.advance(timedelta(minutes=20))  # nothing asks the store meanwhile
    clock.step(timedelta(hours=-1))
    due = login.due()
    assert due == clock.now() + timedelta(minutes=20), f"check in {due - clock.now() if due else None}, not 20 min"
    assert login.status()["expires_at"] == clock.now() + timedelta(minutes=40), "Vault's count: 40 minutes left"
    clock.advance(timedelta(minutes=20))
    login.ensure(api)
    assert api.calls == ["lookup_self", "renew_self"], "renewed 20 minutes before the token expired"
    assert login.status()["ok"] is True
    clock.advance(timedelta(minutes=30))
    clock.step(timedelta(hours=2))  # forward (a suspended VM's clock catching up): renewing early is safe
    assert login.due() == clock.now() - timedelta(hours=2) + timedelta(minutes=10), "a step forward moves nothing"


# -- concurrent logins with one AppRole ---------------------------------------------------------------
class _AppRoleVault:
    """Vault's AppRole login behind a slow network: ``answer`` says what it answers, and every login is
    recorded (thread name and secret_id)."""

    def __init__(self, answer: Callable[[], Any], timeout: float | None = None) -> None:
        self.origin = f"https://vault-{uuid.uuid4().hex[:8]}.example:8200 "  # its own key in the process' registry
        self.timeout = timeout
        self.answer = answer
        self.sent: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def set_token(self, token: Secret | None) -> None:
        pass

    def approle_login(self, mount_path: str, role_id: str, secret_id: Secret) -> Any:
        with self.lock:
            self.sent.append((threading.current_thread().name, secret_id.reveal()))
        return self.answer()


def _refusing() -> Any:
    time.sleep(0.2)  # Vault's round trip: the other stores try meanwhile
    raise hvac.exceptions.InvalidRequest("invalid role or secret ID", errors=["invalid role or secret ID"])


def _approle_logins(tmp_path: Path, count: int, clock: FakeClock) -> list[VaultLogin]:
    (tmp_path / "secret-id").write_text("wrong-secret-id-0000")
    auth = AppRoleAuth.model_validate({"method": "approle", "role_id": "role-1", "secret_id": {"file": "secret-id"}})
    return [VaultLogin(auth, tmp_path, clock) for _ in range(count)]


def _at_once(logins: list[VaultLogin], api: Any) -> list[BaseException | None]:
    gate = threading.Barrier(len(logins))
    outcome: list[BaseException | None] = [None] * len(logins)

    def go(i: int) -> None:
        gate.wait()
        try:
            logins[i].ensure(api)
        except Exception as exc:  # noqa: BLE001 - collected for the assertions
            outcome[i] = exc

    threads = [threading.Thread(target=go, args=(i,), name=f"store-{i}") for i in range(len(logins))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads)
    return outcome


def test_stores_logging_in_at_once_with_a_refused_secret_id_send_it_once(tmp_path: Path) -> None:
    """Five policies' stores on one AppRole log in at the same moment (4 run workers and the keep-alive
    thread): each looked at the registry before the first refusal was in it, and all five sent the wrong
    secret_id, Vault's default lockout_threshold."""
    logins = _approle_logins(tmp_path, 5, FakeClock(NOW))
    api = _AppRoleVault(_refusing)
    outcome = _at_once(logins, api)
    assert len(api.sent) == 1, f"the refused secret_id was sent {len(api.sent)} times"
    assert all(isinstance(exc, hvac.exceptions.InvalidRequest) for exc in outcome), outcome
    assert all(login.status()["failures"] == 1 for login in logins)


def test_stores_logging_in_at_once_with_an_accepted_secret_id_each_log_in(tmp_path: Path) -> None:
    def accepted() -> Any:
        time.sleep(0.05)
        return {"auth": {"client_token": f"s.token-{uuid.uuid4().hex}", "lease_duration": 600, "renewable": True}}

    logins = _approle_logins(tmp_path, 3, FakeClock(NOW))
    api = _AppRoleVault(accepted)
    assert _at_once(logins, api) == [None] * 3
    assert len(api.sent) == 3 and all(login.status()["ok"] for login in logins)


def test_a_login_waits_for_another_with_the_same_secret_id_no_longer_than_the_client_timeout(
        tmp_path: Path) -> None:
    """Vault never answers the first login: the second is held back for the login's own bound (twice the
    client's timeout per request, connecting and reading, and a second), then sent."""
    release = threading.Event()

    def hanging() -> Any:
        if threading.current_thread() is not threading.main_thread():
            release.wait(10)  # the first login: no answer until the test ends it
        raise requests.exceptions.ReadTimeout()

    first, second = _approle_logins(tmp_path, 2, FakeClock(NOW))
    api = _AppRoleVault(hanging, timeout=0.05)
    thread = threading.Thread(target=lambda: pytest.raises(requests.exceptions.ReadTimeout, first.ensure, api))
    thread.start()
    while not api.sent:
        time.sleep(0.01)
    started = time.monotonic()
    timer = threading.Timer(5, release.set)  # the bound is 1.1 s; the first login ends at 5 s at the latest
    timer.start()
    with pytest.raises(requests.exceptions.ReadTimeout):
        second.ensure(api)
    waited = time.monotonic() - started
    release.set()
    timer.cancel()
    thread.join(10)
    assert len(api.sent) == 2 and 1.0 <= waited < 4.5, waited


# -- Kubernetes auth: no user lockout -----------------------------------------------------------------
def test_a_refused_kubernetes_login_is_sent_again_at_the_next_check_with_the_same_jwt(tmp_path: Path) -> None:
    """Vault has no user lockout for Kubernetes auth (only userpass, ldap and approle): holding a refused
    JWT back for 30 minutes only delayed the recovery from a fix made in Vault (the role's bindings, a
    TokenReview that failed once). The checks still back off to 5 minutes, and the JWT is sent at each."""
    (tmp_path / "jwt").write_text("eyJhbGciOiJSUzI1NiJ9.the-pods-service-account-token.sig")
    auth = KubernetesAuth.model_validate({"method": "kubernetes", "role": "rotator", "jwt_file": "jwt"})
    clock = FakeClock(NOW)
    login = VaultLogin(auth, tmp_path, clock)
    sent: list[str] = []
    refusals = 11

    class Vault(ScriptedAuth):
        def kubernetes_login(self, mount_path: str, role: str, jwt: Secret) -> Any:
            sent.append(jwt.reveal())
            if len(sent) <= refusals:
                raise hvac.exceptions.Forbidden("permission denied", errors=["permission denied"])
            return {"auth": {"client_token": "s.k8s-token", "lease_duration": 600, "renewable": True}}

    api = Vault()
    waits = []
    for _ in range(refusals):
        with pytest.raises(hvac.exceptions.Forbidden):
            login.ensure(api)
        assert "sends the same" not in login.endpoint[1]
        due = login.due()
        assert due is not None
        waits.append((due - clock.now()).total_seconds())
        clock.advance(due - clock.now())
    assert waits == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300], "the refused-login backoff, capped at 5 min"
    login.ensure(api)
    assert len(sent) == refusals + 1 and set(sent) == {(tmp_path / "jwt").read_text()}, "the same JWT each time"
    assert login.status()["ok"] is True and login.status()["failures"] == 0
