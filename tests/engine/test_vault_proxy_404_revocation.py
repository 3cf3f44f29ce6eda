"""A due revocation meets an ingress's 404 in front of Vault: the token the Vault secret holds as current is
not revoked.

An operator rolled the secret back to the replaced token (`kv rollback`: the new one misbehaved), so the
revocation rule must find the store holding it and refuse. The ingress then lost its route for a moment
and answered "404 page not found" as text: read as "no such secret", the store held no token, nothing
stopped the revocation, and the consumers' token was revoked. The store's read fails instead (not Vault's
answer); the revocation stays pending and says why.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rotator.adapters.vault.kv2 import VaultKV2Settings, VaultKV2Store
from rotator.config.policy_types import Policy, StoreBinding
from rotator.core.contracts import AdapterContext
from rotator.core.engine import Engine
from rotator.core.journal import RevocationState, open_journal
from rotator.core.retry import RetryPolicy
from rotator.core.secret import Secret
from rotator.testing import FakeClock, MemoryIssuer, MemoryIssuerSettings, MemoryStoreSettings
from tests.adapters.test_vault_non_vault_answers import PROXY_404, _serving

POLICY = "vault-behind-ingress"
GRACE = timedelta(hours=1)


def test_an_ingress_404_does_not_let_the_token_the_secret_holds_be_revoked(tmp_path: Path, openbao: Any,
                                                                          kv_path: str) -> None:
    token_file = tmp_path / "vault-token"
    token_file.write_text(openbao.root_token)
    token_file.chmod(0o600)
    clock = FakeClock(datetime.now(UTC).replace(microsecond=0))  # the root token's TTL is Vault's, not this clock's
    issuer = MemoryIssuer(clock=clock, check_credential=False)
    policy = Policy(name=POLICY, enabled=True, issuer_type="memory", issuer_settings=MemoryIssuerSettings(),
                    stores=(StoreBinding("vault", "memory", MemoryStoreSettings("vault")),), schedule_text="1d",
                    window_text=None, grace=GRACE, lifetime=timedelta(days=3), verify_timeout=timedelta(seconds=30),
                    adopt=False, description="{tag}", base_dir=tmp_path)
    journal = open_journal(f"sqlite:///{tmp_path / 'journal.db'}")
    with _serving({}, openbao.url) as ingress:  # passes every request on to OpenBao, until told otherwise
        settings = VaultKV2Settings.model_validate({"url": ingress.url, "path": kv_path,
                                                    "auth": {"method": "token", "token": {"file": "vault-token"}}})
        store = VaultKV2Store.from_config(settings, AdapterContext(policy=POLICY, base_dir=tmp_path, clock=clock))
        engine = Engine(policy, journal, issuer=issuer, stores=[("vault", store)], clock=clock,
                        retry=RetryPolicy(1, 0.01, 0.01), holder="daemon")
        value, first = issuer.tokens.create("made by a human")
        engine.bootstrap(Secret(value), first, None)
        second = engine.rotate().new_token_id
        assert second is not None and second != first
        assert [r.token_id for r in journal.pending_revocations(POLICY)] == [first]

        # The operator rolls the secret back to version 1, the first token (what `kv rollback` writes).
        vault = openbao.client()
        held = vault.secrets.kv.v2.read_secret_version(path=kv_path, version=1, mount_point="secret",
                                                       raise_on_deleted_version=True)["data"]["data"]
        vault.secrets.kv.v2.create_or_update_secret(path=kv_path, secret=held, cas=2, mount_point="secret")
        assert store.read_current().token_id == first

        clock.advance(GRACE + timedelta(minutes=1))
        ingress.default = PROXY_404  # the ingress loses its route for a moment
        actions = engine.revoke_due()
        assert first in {t.token_id for t in issuer.tokens.active()}, f"revoked while the secret holds it: {actions}"
        assert len(actions) == 1 and actions[0].startswith(f"token {first}: revocation postponed until "), actions
        assert f"the answer of {ingress.url} to read secret/data/{kv_path} is not Vault's: HTTP 404" in actions[0]
        pending = journal.revocations(POLICY, RevocationState.PENDING)
        assert [(r.token_id, r.attempts) for r in pending] == [(first, 1)]
        assert "is not Vault's: HTTP 404" in (pending[0].last_error or "")

        ingress.default = openbao.url  # the route is back: the store names the token it holds, and keeps it
        assert store.read_current().token_id == first
        engine.revoke_due(retry_failed=True)
        assert first in {t.token_id for t in issuer.tokens.active()}
