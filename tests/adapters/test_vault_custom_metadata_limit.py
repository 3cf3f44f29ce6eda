"""Vault's custom_metadata limits (64 keys in a write, keys of 128 bytes, values of 512) against the session's
OpenBao dev server (tests/servers.py).

A Vault policy that grants ``update`` on the metadata but not ``patch`` (the documented fallback) makes
rotator write the whole map. With 63 keys of an operator's it would hold 67: Vault refused it with HTTP 400
at every publish, and the hint was the generic "check the store settings ... run again". Now the write is
not sent, and the error says how many keys there are, how many rotator needs, and what to do.
"""

from __future__ import annotations

import uuid

import pytest

from rotator.core.errors import PermanentError, TransientError
from tests.adapters.test_vault_kv2 import make_store, metadata, token_record

#: What the generic hint said (kv2._HINT_VAULT): the settings are not the problem here
GENERIC = "check the store settings"


def test_a_whole_map_write_with_too_many_operator_keys_is_not_sent_and_says_how_to_make_room(openbao, kv_path,
                                                                                            tmp_path):
    """The reviewer's setup: a policy without ``patch``, 63 keys of an operator's, two publishes of one record
    (the second completes the first, as recovery does). Each fails with the same count and the same fix; the
    token is in the store, so the store's error stays transient (the run stays open: store contract), its
    cause permanent."""
    name = f"kv-no-patch-{uuid.uuid4().hex[:6]}"
    token = openbao.create_token(openbao.policy_for(name, kv_path, "create", "read", "update"))
    vault = openbao.client()
    operator_keys = {f"k{i}": "v" for i in range(63)}
    vault.secrets.kv.v2.update_metadata(path=kv_path, mount_point="secret", custom_metadata=operator_keys)
    store = make_store(openbao, kv_path, tmp_path, token=token)
    record = token_record("tok-1")

    for _ in range(2):
        with pytest.raises(TransientError) as caught:
            store.publish(record, None)
        cause = caught.value.__cause__
        assert isinstance(cause, PermanentError) and not isinstance(cause, TransientError)
        message, hint = str(caught.value), caught.value.hint
        assert "version 1 holds token tok-1" in message
        assert (f"the custom_metadata of secret/metadata/{kv_path} holds 63 keys besides rotator's; with rotator's 4 "
                "(managed-by, policy, token_id, rotated_at) the whole map") in message
        assert "would have 67, and Vault takes at most 64" in message
        assert GENERIC not in hint
        assert f"grant `patch` on secret/metadata/{kv_path}" in hint
        assert (f"remove at least 3 of the other keys with `bao kv metadata patch -mount=secret "
                f"-remove-custom-metadata=KEY {kv_path}`") in hint
        assert "`rotator recover`" in hint

    assert metadata(vault, kv_path)["custom_metadata"] == operator_keys, "nothing written over the operator's keys"

    # The fix the hint gives works: three keys removed, the same publish completes
    for key in ("k0", "k1", "k2"):
        vault.adapter.request("PATCH", f"/v1/secret/metadata/{kv_path}", json={"custom_metadata": {key: None}},
                              headers={"Content-Type": "application/merge-patch+json"})
    assert store.publish(record, None) == "1"
    custom = metadata(vault, kv_path)["custom_metadata"]
    assert len(custom) == 64 and custom["token_id"] == "tok-1"


def test_vaults_own_custom_metadata_refusal_gets_the_limits_not_the_settings_hint(openbao, kv_path, tmp_path):
    """Vault's own 400 "custom_metadata validation failed" (here a value longer than 512 bytes, in a PATCH: no
    settings make one) names Vault's limits instead of the settings; the count's fix is only for a count."""
    store = make_store(openbao, kv_path, tmp_path)
    with pytest.raises(TransientError) as caught:
        store.publish(token_record("t" * 600), None)
    cause = caught.value.__cause__
    assert isinstance(cause, PermanentError)
    assert "HTTP 400 (custom_metadata validation failed: length of value for key" in str(cause)
    hint = cause.hint
    assert GENERIC not in hint
    assert hint == ("Vault takes at most 64 custom_metadata keys in a write, of at most 128 bytes, with values of at "
                    "most 512 bytes; its message names what broke them")
