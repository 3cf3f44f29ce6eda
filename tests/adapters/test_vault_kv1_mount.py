"""A KV version 1 `mount` with the shipped least-privilege Vault policy, against the session's OpenBao.

deploy/vault/rotator-policy.hcl leaves the `<mount>/config` read out (optional). On a KV v1 engine the store's
first read then got a 403 for the config and two 404s (data, metadata) that look like an absent KV v2 secret:
nothing told it the engine was KV v1. `rotate` minted a token and wrote it to `<mount>/data/<path>`, which KV v1
keeps as a plain secret; the write's answer has no version, so the candidate was discarded but could not be
revoked (the revocation's store read then saw the KV v1 secret and raised): the run stayed in revoking_new and
the token live. The first read now asks Vault which engine serves the path whenever the config read is
refused (`sys/internal/ui/mounts/<mount>/<path>`, no capability of its own), before anything is minted.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from rotator.adapters.vault import kv2
from rotator.adapters.vault.kv2 import VaultKV2Settings, VaultKV2Store
from rotator.core.clock import FakeClock
from rotator.core.contracts import AdapterContext, TokenRecord
from rotator.core.errors import ConfigError, PermanentError, TransientError
from rotator.core.secret import Secret
from tests.harness import check_invariants, live_tagged, make_scenario
from tests.servers import OpenBao

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
VAULT_POLICY = Path(__file__).resolve().parents[2] / "deploy" / "vault" / "rotator-policy.hcl"
ISSUER_AUTH = 'auth = { method = "mgmt_token", token = { file = "admin-token" } }'


def kv1_mount(openbao: OpenBao) -> str:
    mount = f"kv1-{uuid.uuid4().hex[:8]}"
    openbao.client().sys.enable_secrets_engine("kv", path=mount, options={"version": "1"})
    return mount


def shipped_policy_token(openbao: OpenBao, *mounts_and_paths: tuple[str, str]) -> str:
    """A token holding only deploy/vault/rotator-policy.hcl (no config read, no `default` policy), rendered
    for each ``(mount, path)``."""
    assert '\npath "<mount>/config"' not in VAULT_POLICY.read_text(), "the config read is no longer optional"
    names = []
    for mount, path in mounts_and_paths:
        names.append(f"rotator-{uuid.uuid4().hex[:8]}")
        hcl = VAULT_POLICY.read_text().replace("<mount>", mount).replace("<path>", path)  # as its comment says
        openbao.write_policy(names[-1], hcl)
    return openbao.create_token(*names, ttl="1h", no_default_policy=True)


def kv1_secrets(openbao: OpenBao, mount: str) -> list[str]:
    """Every key of the KV v1 ``mount``'s top level (what a write to <mount>/data/... would leave)."""
    listed = openbao.client().list(mount)
    return sorted(listed["data"]["keys"]) if listed else []


def test_rotate_on_a_kv1_mount_with_the_shipped_policy_fails_before_minting_then_works_on_kv2(
    tmp_path: Path, openbao: OpenBao, fake_influxctl: Any
) -> None:
    mount = kv1_mount(openbao)
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=1, attempts=1, bootstrap=False,
                       store_extra=f'mount = "{mount}"', issuer_extra=ISSUER_AUTH)
    admin, admin_id = sc.fake.add_token("the issuer's own credential")
    (tmp_path / "admin-token").write_text(admin)
    (tmp_path / "vault-token").write_text(shipped_policy_token(openbao, (mount, sc.kv_path), ("secret", sc.kv_path)))

    proc = sc.cli("rotate", sc.policy)

    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert f"mount '{mount}' is not a KV version 2 secrets engine" in proc.stderr, proc.stderr
    assert "KV version 1" in proc.stderr and "enable-versioning" in proc.stderr, proc.stderr
    assert [t["id"] for t in sc.fake.tokens()] == [admin_id], "no token minted"
    assert kv1_secrets(openbao, mount) == [], "nothing written to the KV v1 mount"
    assert sc.journal_rows("SELECT count(*) FROM revocations") == [(0,)]

    sc.write_policy(attempts=1, issuer_extra=ISSUER_AUTH)  # `mount` back to its default: the KV v2 "secret"
    proc = sc.cli("rotate", sc.policy)

    assert proc.returncode == 0, proc.stderr
    assert [v["token_id"] for v in sc.versions()] == list(live_tagged(sc.fake.tokens(), sc.policy))
    assert kv1_secrets(openbao, mount) == []
    check_invariants(sc)


def test_a_store_on_a_kv1_mount_says_so_at_its_first_read_and_the_lookup_is_sent_once(
    tmp_path: Path, openbao: OpenBao, kv_path: str
) -> None:
    mount = kv1_mount(openbao)
    token = shipped_policy_token(openbao, (mount, kv_path), ("secret", kv_path))

    with pytest.raises(PermanentError) as caught:
        store_at(tmp_path, openbao, token, mount, kv_path).read_current()

    assert not isinstance(caught.value, ConfigError), caught.value
    assert "Vault says it is a KV version 1 engine" in str(caught.value)
    assert kv1_secrets(openbao, mount) == []

    store = store_at(tmp_path, openbao, token, "secret", kv_path)
    assert store.read_current().version is None
    # lookup-self, metadata (404), config (403), the mount's lookup, GET data (404)
    assert store.request_count == 5
    assert store.publish(record("tok-1"), None) == "1"
    before = store.request_count
    assert store.read_current().version == "1"
    assert store.request_count - before == 1, "a warm store does not look the mount up again"


def test_a_mount_lookup_that_fails_transiently_fails_the_first_read_and_the_next_read_asks_again(
    tmp_path: Path, openbao: OpenBao, kv_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the config read refused, the lookup is the only thing that tells KV v1: a network blip during it
    must not let the mount pass (the check is marked done for the store's life once it passes)."""
    mount = kv1_mount(openbao)
    token = shipped_policy_token(openbao, (mount, kv_path))
    real = kv2._StoreAPI.mount_info
    lookups: list[str] = []

    def blip_once(api: Any, path: str) -> Any:
        lookups.append(path)
        if len(lookups) == 1:
            raise requests.ConnectionError("connection reset by peer")
        return real(api, path)

    monkeypatch.setattr(kv2._StoreAPI, "mount_info", blip_once)
    store = store_at(tmp_path, openbao, token, mount, kv_path)

    with pytest.raises(TransientError):
        store.read_current()
    with pytest.raises(PermanentError) as caught:
        store.read_current()

    assert "Vault says it is a KV version 1 engine" in str(caught.value)
    assert len(lookups) == 2
    assert kv1_secrets(openbao, mount) == []


def test_a_write_answered_without_a_version_says_a_kv1_mount_keeps_it_as_a_plain_secret(
    tmp_path: Path, openbao: OpenBao, kv_path: str
) -> None:
    """A publish with no read before it (the first read's check skipped) still names KV v1 and the cleanup."""
    mount = kv1_mount(openbao)
    store = store_at(tmp_path, openbao, openbao.root_token, mount, kv_path)

    with pytest.raises(PermanentError) as caught:
        store.publish(record("tok-1"), None)

    assert "has no version" in str(caught.value)
    hint = caught.value.hint or ""
    assert "KV v1 mount keeps what was written" in hint and "plain secret" in hint and "delete" in hint, hint
    openbao.client().delete(f"{mount}/data/{kv_path}")


def store_at(tmp_path: Path, openbao: OpenBao, token: str, mount: str, path: str) -> VaultKV2Store:
    (tmp_path / "vault-token").write_text(token)
    settings = VaultKV2Settings.model_validate({"url": openbao.url, "mount": mount, "path": path,
                                                "auth": {"method": "token", "token": {"file": "vault-token"}}})
    return VaultKV2Store.from_config(settings, AdapterContext(policy="kv1", base_dir=tmp_path, clock=FakeClock(NOW)))


def record(token_id: str) -> TokenRecord:
    return TokenRecord(Secret(f"kv1-test-{uuid.uuid4().hex}"), token_id, "influxctl-management", "kv1",
                       NOW, NOW + timedelta(days=30))  # fmt: skip
