"""Exact HTTP request budgets of the stores (issue 12), against the real servers.

One rotation as rotator/core/engine.py runs it reads every store once (PLAN: ``read_current``) and
publishes with the version read (``publish``); a revocation pass reads every store before it
revokes (``Engine._safe_revoke``). For vault-kv2 a steady rotation is 3 requests: GET of the
data endpoint (version, payload and custom_metadata in one answer), the ``cas`` write, the
custom_metadata PATCH (4 with a Vault policy without ``patch``: the metadata read and a POST instead).
A store's first read adds its one-off calls: the token's lookup-self (or the AppRole login), the
secret's metadata and the mount's config (the max_versions check); when the token may not read that config
(deploy/vault/rotator-policy.hcl leaves it out), the mount's lookup too (KV version 2, not 1: once per store).
The counts come from the store's own ``request_count`` (every HTTP request its client sent).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.adapters.aws.secretsmanager import AwsSecretsManagerSettings, AwsSecretsManagerStore
from rotator.adapters.vault.auth import TokenAuth, VaultLogin
from rotator.adapters.vault.kv2 import VaultKV2Settings, VaultKV2Store
from rotator.config.policy import load_config
from rotator.core.clock import FakeClock
from rotator.core.contracts import AdapterContext, TokenRecord
from rotator.core.engine import Engine
from rotator.core.errors import ConflictError, PermanentError, TransientError
from rotator.core.journal import open_journal
from rotator.core.retry import RetryPolicy
from rotator.core.secret import Secret
from tests.aws_server import MotoServer
from tests.harness import Scenario, make_scenario
from tests.servers import OpenBao

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _record(token_id: str, policy: str = "bench") -> TokenRecord:
    return TokenRecord(Secret(f"requests-test-{uuid.uuid4().hex}"), token_id, "influxctl-management", policy,
                       NOW, NOW + timedelta(days=30))  # fmt: skip


def _vault_store(openbao: OpenBao, kv_path: str, tmp_path: Path, auth: dict[str, Any] | None = None) -> VaultKV2Store:
    if auth is None:
        (tmp_path / "vault-token").write_text(openbao.create_token("root", ttl="1h"))
        auth = {"method": "token", "token": {"file": "vault-token"}}
    settings = VaultKV2Settings.model_validate({"url": openbao.url, "path": kv_path, "auth": auth})
    return VaultKV2Store.from_config(settings, AdapterContext(policy="bench", base_dir=tmp_path, clock=FakeClock(NOW)))


class _Delta:
    """Requests a store sends from now on."""

    def __init__(self, store: Any) -> None:
        self.store, self.start = store, store.request_count

    def __call__(self) -> int:
        sent: int = self.store.request_count - self.start
        self.start = self.store.request_count
        return sent


# -- vault-kv2, driven by the engine ----------------------------------------------------------------


def _engine(sc: Scenario, clock: FakeClock) -> Engine:
    config = load_config(sc.config)
    return Engine(config.policies[0], open_journal(config.journal_url()), clock=clock,
                  retry=RetryPolicy(1, 0.01, 0.02))  # fmt: skip


def test_an_engine_rotation_costs_vault_3_requests_once_the_store_is_warm(
    tmp_path: Path, openbao: OpenBao, fake_influxctl: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=60)
    clock = FakeClock(datetime.now(UTC))
    engine = _engine(sc, clock)
    [(_, store)] = engine.stores
    assert isinstance(store, VaultKV2Store)
    reads = 0
    read_current = store.read_current

    def counted_read() -> Any:
        nonlocal reads
        reads += 1
        return read_current()

    monkeypatch.setattr(store, "read_current", counted_read)
    sent = _Delta(store)

    assert engine.rotate().state == "published"
    # A fresh process: lookup-self, the secret's metadata, the mount's config (max_versions),
    # GET data; then PUT data (cas) and PATCH metadata (custom_metadata).
    assert (reads, sent()) == (1, 6)

    assert engine.rotate().state == "published"
    assert (reads, sent()) == (2, 3), "steady: GET data, PUT data with cas, PATCH custom_metadata"

    clock.advance(timedelta(seconds=61))  # both superseded tokens are due
    reads = 0
    actions = engine.revoke_due()
    assert len(actions) == 2 and all(a.endswith(": revoked") for a in actions), actions
    assert (reads, sent()) == (1, 1), "a revocation pass reads each store once, for all its due revocations: one GET"


# -- vault-kv2, store calls ------------------------------------------------------------------------


def test_vault_store_calls_each_cost_a_known_number_of_requests(openbao: OpenBao, kv_path: str,
                                                                tmp_path: Path) -> None:
    store = _vault_store(openbao, kv_path, tmp_path)
    sent = _Delta(store)
    state = store.read_current()  # absent secret: lookup-self, metadata (404), mount config, GET data (404)
    assert (state.version, sent()) == (None, 4)
    assert store.publish(_record("tok-1"), None) == "1"
    assert sent() == 2
    for n in range(2, 5):
        state = store.read_current()
        assert sent() == 1
        assert store.publish(_record(f"tok-{n}"), state.version) == str(n)
        assert sent() == 2
    # A conflict is settled with one more GET (who is there now), never by overwriting.
    openbao.client().secrets.kv.v2.create_or_update_secret(path=kv_path, secret={"other": "writer"})
    with pytest.raises(ConflictError, match="compare-and-set lost: expected version 4, Vault is at version 5"):
        store.publish(_record("tok-5"), "4")
    assert sent() == 2


def test_a_fresh_vault_store_skips_the_mount_config_when_the_secret_sets_max_versions(
    openbao: OpenBao, kv_path: str, tmp_path: Path
) -> None:
    openbao.client().secrets.kv.v2.update_metadata(path=kv_path, max_versions=5)
    _vault_store(openbao, kv_path, tmp_path).publish(_record("tok-1"), None)
    store = _vault_store(openbao, kv_path, tmp_path)
    sent = _Delta(store)
    assert store.read_current().version == "1"
    assert sent() == 3, "lookup-self, metadata, GET data"


def test_a_fresh_vault_store_with_approle_logs_in_instead_of_looking_up(openbao: OpenBao, kv_path: str,
                                                                         tmp_path: Path) -> None:
    name = f"req-{uuid.uuid4().hex[:8]}"
    role_id, secret_id = openbao.approle(name, openbao.policy_for(name, kv_path, "create", "read", "update", "patch"))
    (tmp_path / "secret-id").write_text(secret_id)
    auth = {"method": "approle", "role_id": role_id, "secret_id": {"file": "secret-id"}}
    store = _vault_store(openbao, kv_path, tmp_path, auth)
    sent = _Delta(store)
    store.read_current()
    assert sent() == 5, "login, metadata, mount config (refused: not in this policy), the mount's lookup, GET data"
    store.publish(_record("tok-1"), None)
    store.read_current()
    assert sent() == 3


@pytest.mark.parametrize("auth", ["token", "approle"])
def test_without_the_patch_capability_a_steady_rotation_costs_one_request_more(openbao: OpenBao, kv_path: str,
                                                                             tmp_path: Path, auth: str) -> None:
    """A policy granting update, not patch, on the metadata: the PATCH is refused once (plus the request
    that tells a missing capability from a dead token: AppRole's lookup-self, a token from a file asks
    whether Vault knows it), then the store reads the metadata and POSTs it: 4 requests a steady
    rotation instead of 3."""
    name = f"req-{uuid.uuid4().hex[:8]}"
    policy = openbao.policy_for(name, kv_path, "create", "read", "update")
    if auth == "token":
        (tmp_path / "vault-token").write_text(openbao.create_token(policy, ttl="1h"))
        settings = {"method": "token", "token": {"file": "vault-token"}}
    else:
        role_id, secret_id = openbao.approle(name, policy)
        (tmp_path / "secret-id").write_text(secret_id)
        settings = {"method": "approle", "role_id": role_id, "secret_id": {"file": "secret-id"}}
    store = _vault_store(openbao, kv_path, tmp_path, settings)
    sent = _Delta(store)
    store.read_current()
    assert sent() == 5, "lookup-self or login, metadata, mount config (refused), the mount's lookup, GET data"
    assert store.publish(_record("tok-1"), None) == "1"
    assert sent() == 5, "PUT data, PATCH (403), lookup-self or the token check, GET metadata, POST"
    for n in range(2, 4):
        state = store.read_current()
        assert store.publish(_record(f"tok-{n}"), state.version) == str(n)
        assert sent() == 4, "GET data, PUT data with cas, GET metadata, POST custom_metadata"


def test_vault_ignores_proxy_variables(openbao: OpenBao, kv_path: str, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """trust_env is off: a proxy variable (here a closed port) does not reroute the store."""
    store = _vault_store(openbao, kv_path, tmp_path)
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert store.publish(_record("tok-1"), None) == "1"
    assert store.read_current().version == "1"


def test_vault_ignores_a_client_certificate_from_the_environment(openbao: OpenBao, kv_path: str,
                                                                 tmp_path: Path) -> None:
    """hvac reads $VAULT_CLIENT_CERT/$VAULT_CLIENT_KEY when it is imported and adds them to every
    request: a host set up for the Vault CLI's mTLS lent rotator its certificate (here a missing
    file, which requests checks before it connects). A process of its own: hvac reads them once."""
    (tmp_path / "vault-token").write_text(openbao.create_token("root", ttl="1h"))
    script = f"""
import sys
from pathlib import Path
sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
from tests.adapters.test_store_requests import _record, _vault_store
class Bao:
    url = {openbao.url!r}
store = _vault_store(Bao(), {kv_path!r}, Path({str(tmp_path)!r}),
                     auth={{"method": "token", "token": {{"file": "vault-token"}}}})
print(store.publish(_record("tok-1"), None), store.read_current().version)
"""
    env = {**os.environ, "VAULT_CLIENT_CERT": str(tmp_path / "no-such.pem"),
           "VAULT_CLIENT_KEY": str(tmp_path / "no-such.key")}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["1", "1"]


def test_a_ca_bundle_removed_after_start_is_a_clear_permanent_error(tmp_path: Path) -> None:
    """requests checks the CA file before it sends anything and raises a bare OSError: it escaped
    the store's error mapping (an internal error, the run left in VERIFIED with no error)."""
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    (tmp_path / "vault-token").write_text("s.not-used-0123456789")
    settings = VaultKV2Settings.model_validate({
        "url": "https://127.0.0.1:9", "path": "rotator/x", "ca_bundle": str(ca),
        "auth": {"method": "token", "token": {"file": "vault-token"}}})
    store = VaultKV2Store.from_config(settings, AdapterContext(policy="p", base_dir=tmp_path, clock=FakeClock(NOW)))
    with pytest.raises(TransientError):  # the client is built (its ca_bundle checked) on first use
        store.read_current()
    ca.unlink()  # then a certificate redeploy that is not atomic
    with pytest.raises(PermanentError) as caught:
        store.read_current()
    assert str(ca) in str(caught.value) and "ca_bundle" in (caught.value.hint or ""), caught.value


# -- the token's lookup-self ------------------------------------------------------------------------


class _Auth:
    """A token that Vault says expires ``ttl`` seconds after the lookup; not renewable."""

    def __init__(self, ttl: int) -> None:
        self.ttl, self.calls = ttl, 0

    def set_token(self, token: Secret | None) -> None:
        pass

    def lookup_self(self) -> dict[str, Any]:
        self.calls += 1
        return {"data": {"ttl": self.ttl, "creation_ttl": self.ttl, "renewable": False}}


def test_the_same_token_is_not_looked_up_again_and_still_shows_close_to_expiry(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("s.not-renewable-0123456789")
    clock = FakeClock(NOW)
    login = VaultLogin(TokenAuth.model_validate({"method": "token", "token": {"file": "token"}}), tmp_path, clock)
    api = _Auth(ttl=60)
    login.ensure(api)
    assert api.calls == 1 and login.due() == NOW + timedelta(seconds=40)
    clock.advance(timedelta(seconds=40))
    login.ensure(api)  # the file still holds the same token: its expiry is known
    assert api.calls == 1 and login.due() == clock.now() + timedelta(seconds=10)
    assert login.status()["ok"] is True and login.status()["expires_at"] == NOW + timedelta(seconds=60)
    clock.advance(timedelta(seconds=10))
    login.ensure(api)
    assert api.calls == 1
    assert login.status()["ok"] is False, "10 s of 60 left: close to expiry (/readyz)"
    (tmp_path / "token").write_text("s.replaced-by-vault-agent-0123456789")
    clock.advance(timedelta(seconds=5))
    login.ensure(api)  # a new token: looked up
    assert api.calls == 2 and login.status()["ok"] is True


# -- aws-secretsmanager ------------------------------------------------------------------------------


def _aws_store(aws: MotoServer, name: str) -> AwsSecretsManagerStore:
    settings = AwsSecretsManagerSettings(secret_id=name, region=aws.region, endpoint_url=aws.url, max_attempts=1)
    return AwsSecretsManagerStore.from_config(settings, AdapterContext(policy="bench"))


def test_aws_store_calls_each_cost_a_known_number_of_requests(aws: MotoServer) -> None:
    name = f"tests/requests-{uuid.uuid4().hex[:10]}"
    store = _aws_store(aws, name)
    sent = _Delta(store)
    assert store.read_current().version is None
    assert sent() == 1, "DescribeSecret (not found)"
    store.publish(_record("tok-1"), None)
    assert sent() == 3, "DescribeSecret, CreateSecret, DescribeSecret (the secret_id names it)"
    for n in range(2, 4):
        state = store.read_current()
        assert sent() == 2, "DescribeSecret, GetSecretValue"
        store.publish(_record(f"tok-{n}"), state.version)
        assert sent() == 4, "DescribeSecret, PutSecretValue (AWSPENDING), move AWSCURRENT, drop AWSPENDING"
