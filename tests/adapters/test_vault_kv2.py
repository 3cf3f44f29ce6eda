"""The vault-kv2 store against a real OpenBao dev server (one per session, see tests/servers.py).

Each test has its own secret path (``kv_path``); the store reads its token from a file in
``tmp_path`` unless a test says otherwise. Error mapping without a server is in
tests/adapters/test_vault_kv2_errors.py; the store contract every store passes is in tests/contract/test_stores.py.
"""

from __future__ import annotations

import http.server
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import hvac
import pytest
from pydantic import ValidationError

from rotator.adapters.vault.auth import VaultAPI
from rotator.adapters.vault.kv2 import ClientFactory, VaultKV2Settings, VaultKV2Store, hvac_client
from rotator.core.clock import FakeClock
from rotator.core.contracts import AdapterContext, StoreState, TokenRecord
from rotator.core.errors import ConfigError, ConflictError, OwnershipError, PermanentError, TransientError
from rotator.core.secret import Secret
from rotator.sandbox.openbao_dev import OpenBaoStartError, find_bao, free_port, openbao_dev_server
from tests.servers import OpenBao

POLICY = "influx-mgmt"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def token_record(token_id: str) -> TokenRecord:
    return TokenRecord(
        value=Secret(f"test-token-value-{uuid.uuid4().hex}"),
        token_id=token_id,
        issuer="influxctl-management",
        policy=POLICY,
        created_at=NOW,
        expires_at=NOW + timedelta(days=30),
    )


def make_store(
    openbao: OpenBao,
    kv_path: str,
    tmp_path: Path,
    *,
    token: str | None = None,
    auth: dict[str, Any] | None = None,
    clock: FakeClock | None = None,
    client_factory: ClientFactory | None = None,
    **settings: Any,
) -> VaultKV2Store:
    """A store whose token is read from ``tmp_path/vault-token`` (root unless ``token``)."""
    if auth is None:
        (tmp_path / "vault-token").write_text(token or openbao.root_token)
        (tmp_path / "vault-token").chmod(0o600)  # one readable by others is warned about
        auth = {"method": "token", "token": {"file": "vault-token"}}
    model = VaultKV2Settings.model_validate({"url": openbao.url, "path": kv_path, "auth": auth, **settings})
    ctx = AdapterContext(policy=POLICY, base_dir=tmp_path, clock=clock or FakeClock(NOW))
    return VaultKV2Store.from_config(model, ctx, client_factory)


@pytest.fixture
def store(openbao: OpenBao, kv_path: str, tmp_path: Path) -> VaultKV2Store:
    return make_store(openbao, kv_path, tmp_path)


@pytest.fixture
def vault(openbao: OpenBao) -> hvac.Client:
    """Root, for setting the scene and checking what the store did."""
    return openbao.client()


def metadata(vault: hvac.Client, path: str, mount: str = "secret") -> dict[str, Any]:
    data: dict[str, Any] = vault.secrets.kv.v2.read_secret_metadata(path=path, mount_point=mount)["data"]
    return data


def latest(vault: hvac.Client, path: str) -> dict[str, Any]:
    data: dict[str, Any] = vault.secrets.kv.v2.read_secret_version(
        path=path, mount_point="secret", raise_on_deleted_version=True
    )["data"]["data"]
    return data


# -- publish and read ------------------------------------------------------------------------


def test_publish_to_an_absent_path_creates_version_1_marked_managed(store, vault, kv_path):
    """The Vault side of the store contract (tests/contract/test_stores.py): custom metadata."""
    assert store.read_current() == StoreState(version=None, managed=False, record=None)
    record = token_record("tok-1")

    assert store.publish(record, expected_version=None) == "1"

    assert latest(vault, kv_path) == record.payload()
    meta = metadata(vault, kv_path)
    assert meta["custom_metadata"] == {
        "managed-by": "rotator",
        "policy": POLICY,
        "token_id": "tok-1",
        "rotated_at": "2026-03-01T12:00:00Z",
    }
    state = store.read_current()
    assert (state.version, state.managed, state.record) == ("1", True, record)
    assert store.publish(token_record("tok-2"), "1") == "2"
    assert metadata(vault, kv_path)["custom_metadata"]["token_id"] == "tok-2"


def test_publish_keeps_the_operators_own_metadata_and_settings(store, vault, kv_path):
    vault.secrets.kv.v2.update_metadata(
        path=kv_path, mount_point="secret", delete_version_after="720h", custom_metadata={"owner": "team-a"}
    )
    store.publish(token_record("tok-1"), None)

    meta = metadata(vault, kv_path)
    assert meta["custom_metadata"]["owner"] == "team-a"
    assert meta["custom_metadata"]["managed-by"] == "rotator"
    assert meta["delete_version_after"] == "720h0m0s"  # hvac's update_metadata would reset it to 0s


class _Interposed:
    """The real client, with ``after_write()`` run right after each data write (where an operator's
    edit can land between rotator's data write and its custom_metadata write); ``no_patch``: a Vault
    before 1.9, which answers PATCH with 405 and leaves custom_metadata out of a write's answer."""

    def __init__(self, api: VaultAPI, after_write: Callable[[], None] = lambda: None, no_patch: bool = False) -> None:
        self._api, self._after_write, self._no_patch = api, after_write, no_patch
        self.patches = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._api, name)

    def write_version(self, mount: str, path: str, data: Mapping[str, Any], cas: int) -> Mapping[str, Any]:
        answer = self._api.write_version(mount, path, data, cas)
        self._after_write()
        if self._no_patch:
            return {**answer, "data": {k: v for k, v in answer["data"].items() if k != "custom_metadata"}}
        return answer

    def patch_custom_metadata(self, mount: str, path: str, custom_metadata: Mapping[str, str]) -> None:
        self.patches += 1
        if self._no_patch:
            raise hvac.exceptions.UnsupportedOperation(errors=["unsupported operation"])
        self._api.patch_custom_metadata(mount, path, custom_metadata)


def operator_patch(vault: hvac.Client, path: str, **custom: str) -> None:
    """``bao kv metadata patch -custom-metadata=k=v``: the operator's own keys, merged by Vault."""
    vault.adapter.request("PATCH", f"/v1/secret/metadata/{path}", json={"custom_metadata": custom},
                          headers={"Content-Type": "application/merge-patch+json"})


OURS = {"managed-by": "rotator", "policy": POLICY, "rotated_at": "2026-03-01T12:00:00Z"}


def _operator_edits_after_each_write(vault: Any, kv_path: str) -> tuple[Callable[[VaultKV2Settings], VaultAPI],
                                                                        list[_Interposed]]:
    """A client factory whose clients let an operator set ``owner`` (team-x, then team-y) right after
    each data write, and the clients it made."""
    edits = iter(["team-x", "team-y"])
    interposed: list[_Interposed] = []

    def factory(settings: VaultKV2Settings) -> VaultAPI:
        interposed.append(_Interposed(hvac_client(settings), lambda: operator_patch(vault, kv_path,
                                                                                    owner=next(edits))))
        return interposed[-1]

    return factory, interposed


def test_an_operator_key_written_between_the_data_write_and_the_metadata_write_stays(
    openbao, vault, kv_path, tmp_path
):
    """The custom_metadata write was a POST of the whole map as the data write's answer showed it: a
    key an operator set a moment later was dropped. Now rotator PATCHes only its own keys."""
    factory, interposed = _operator_edits_after_each_write(vault, kv_path)

    store = make_store(openbao, kv_path, tmp_path, client_factory=factory)
    assert store.publish(token_record("tok-1"), None) == "1"
    assert metadata(vault, kv_path)["custom_metadata"] == {**OURS, "token_id": "tok-1", "owner": "team-x"}
    assert store.publish(token_record("tok-2"), "1") == "2"
    assert metadata(vault, kv_path)["custom_metadata"] == {**OURS, "token_id": "tok-2", "owner": "team-y"}
    assert interposed[0].patches == 2


def test_without_the_patch_capability_publish_reads_and_merges_and_warns_once(
    openbao, vault, kv_path, tmp_path, caplog
):
    """A policy written for an older rotator grants ``update`` on the metadata, not ``patch``: Vault
    refuses the PATCH (403). The store falls back to reading the custom_metadata and writing it whole,
    so the publish succeeds and the operator's keys stay; it says once that ``patch`` avoids the race."""
    token = openbao.create_token(openbao.policy_for(f"kv-no-patch-{uuid.uuid4().hex[:6]}", kv_path,
                                                    "create", "read", "update"))
    factory, interposed = _operator_edits_after_each_write(vault, kv_path)

    store = make_store(openbao, kv_path, tmp_path, token=token, client_factory=factory)
    caplog.set_level(logging.INFO, logger="rotator.adapters.vault_kv2")
    assert store.publish(token_record("tok-1"), None) == "1"
    assert metadata(vault, kv_path)["custom_metadata"] == {**OURS, "token_id": "tok-1", "owner": "team-x"}
    assert store.publish(token_record("tok-2"), "1") == "2"
    assert metadata(vault, kv_path)["custom_metadata"] == {**OURS, "token_id": "tok-2", "owner": "team-y"}
    assert store.read_current().managed is True
    warnings = [r for r in caplog.records if "refused to patch the custom_metadata" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert f"`patch` capability on secret/metadata/{kv_path}" in warnings[0].getMessage()
    assert interposed[0].patches == 1, "refused once: the store does not ask again"


def test_a_vault_without_patch_that_leaves_custom_metadata_out_of_the_write_answer_keeps_the_operators_keys(
    openbao, vault, kv_path, tmp_path, caplog
):
    """Vault before 1.9: no custom_metadata in the data write's answer, and PATCH answers 405. The
    store wrote back what the answer showed (nothing) and dropped every key of the operator's."""
    vault.secrets.kv.v2.update_metadata(path=kv_path, mount_point="secret", custom_metadata={"owner": "team-a"})
    store = make_store(openbao, kv_path, tmp_path,
                       client_factory=lambda settings: _Interposed(hvac_client(settings), no_patch=True))
    caplog.set_level(logging.INFO, logger="rotator.adapters.vault_kv2")

    assert store.publish(token_record("tok-1"), None) == "1"
    assert store.publish(token_record("tok-2"), "1") == "2"

    assert metadata(vault, kv_path)["custom_metadata"] == {**OURS, "token_id": "tok-2", "owner": "team-a"}
    assert caplog.text.count("cannot patch custom_metadata (HTTP 405") == 1


def test_a_403_from_a_token_that_died_after_the_write_is_not_taken_for_a_missing_patch_capability(
    openbao, vault, kv_path, tmp_path, caplog
):
    """The token expired or was revoked between the data write and the custom_metadata PATCH (Vault
    Agent had not written the new one yet): Vault refused the PATCH, and the store remembered that as
    "no `patch` capability" for its whole life. With a policy granting what PATCH needs on the metadata
    (read, patch) but not update, every later publish then failed to mark the secret managed, even
    once the token file held a valid token, and the warning sent the operator to grant `patch`."""
    name = f"kv-patch-only-{uuid.uuid4().hex[:6]}"
    openbao.write_policy(name, f'path "secret/data/{kv_path}" {{ capabilities = ["create", "read", "update"] }}\n'
                               f'path "secret/metadata/{kv_path}" {{ capabilities = ["read", "patch"] }}\n')
    dying = [openbao.create_token(name)]

    def revoke_once() -> None:
        if dying:
            vault.auth.token.revoke(dying.pop())

    store = make_store(openbao, kv_path, tmp_path, token=dying[0],
                       client_factory=lambda settings: _Interposed(hvac_client(settings), revoke_once))
    caplog.set_level(logging.DEBUG, logger="rotator.adapters.vault_kv2")
    record = token_record("tok-1")
    with pytest.raises(TransientError, match="version 1 holds token tok-1, but marking the secret managed failed"):
        store.publish(record, None)

    (tmp_path / "vault-token").write_text(openbao.create_token(name))  # Vault Agent's next token
    assert store.publish(record, None) == "1", "the engine's retry completes the publish"
    assert store.read_current() == StoreState(version="1", managed=True, record=record)
    assert store.publish(token_record("tok-2"), "1") == "2"
    assert metadata(vault, kv_path)["custom_metadata"]["token_id"] == "tok-2"
    assert "no `patch` capability" not in caplog.text


@pytest.mark.parametrize("where", ["secret", "mount"])
def test_a_live_version_under_delete_version_after_holds_the_token(openbao, vault, kv_path, tmp_path, where):
    """delete_version_after gives every live version a deletion_time in the future: Vault serves it
    until then, so it holds the current token (read as deleted, the stores would name no token:
    the revocation rule could not see it, and recovery would revoke a published token)."""
    mount = "secret"
    if where == "mount":
        mount = f"kv-dva-{uuid.uuid4().hex[:8]}"
        vault.sys.enable_secrets_engine("kv", path=mount, options={"version": "2"})
        vault.secrets.kv.v2.configure(mount_point=mount, delete_version_after="720h")
    else:
        vault.secrets.kv.v2.update_metadata(path=kv_path, mount_point=mount, delete_version_after="720h")
    store = make_store(openbao, kv_path, tmp_path, mount=mount)
    first = token_record("tok-1")
    assert store.publish(first, None) == "1"
    served = vault.secrets.kv.v2.read_secret_version(path=kv_path, mount_point=mount, raise_on_deleted_version=True)
    assert served["data"]["metadata"]["deletion_time"]  # the scene: a live version with a deletion time

    assert store.read_current() == StoreState(version="1", managed=True, record=first)
    second = token_record("tok-2")
    assert store.publish(second, "1") == "2"
    # a retry of the same publish (its answer lost) completes it instead of conflicting
    assert store.publish(second, "1") == "2"
    assert store.read_current().record == second
    assert store.read_previous() == StoreState(version="1", managed=True, record=first)


def test_cas_conflict_when_someone_else_wrote_overwrites_nothing(store, vault, kv_path):
    store.publish(token_record("tok-1"), None)
    vault.secrets.kv.v2.create_or_update_secret(path=kv_path, secret={"other": "writer"}, mount_point="secret")

    with pytest.raises(ConflictError) as caught:
        store.publish(token_record("tok-2"), "1")

    message = str(caught.value)
    assert store.location in message
    assert "expected version 1" in message and "version 2" in message
    assert "kv metadata get" in caught.value.hint
    meta = metadata(vault, kv_path)
    assert meta["current_version"] == 2 and len(meta["versions"]) == 2
    assert latest(vault, kv_path) == {"other": "writer"}
    assert meta["custom_metadata"]["token_id"] == "tok-1"


def test_publishing_the_same_record_again_completes_instead_of_conflicting(store, vault, kv_path):
    """A crash after the data write and before the metadata write: the retry finishes the job."""
    record = token_record("tok-1")
    vault.secrets.kv.v2.create_or_update_secret(path=kv_path, secret=record.payload(), mount_point="secret", cas=0)
    assert store.read_current().managed is False

    assert store.publish(record, None) == "1"
    assert store.publish(record, None) == "1"

    assert store.read_current() == StoreState(version="1", managed=True, record=record)
    assert metadata(vault, kv_path)["current_version"] == 1


def test_unmanaged_rotator_payload_is_parsed_but_not_managed(store, vault, kv_path):
    record = token_record("tok-9")
    vault.secrets.kv.v2.create_or_update_secret(path=kv_path, secret=record.payload(), mount_point="secret")

    assert store.read_current() == StoreState(version="1", managed=False, record=record)


def test_managed_but_malformed_payload_is_a_permanent_error_naming_the_key(store, vault, kv_path):
    store.publish(token_record("tok-1"), None)
    broken = {**token_record("tok-2").payload(), "token_id": ""}
    vault.secrets.kv.v2.create_or_update_secret(path=kv_path, secret=broken, mount_point="secret")

    with pytest.raises(PermanentError, match=r"version 2: payload key 'token_id' is missing"):
        store.read_current()


def test_deleted_current_version_is_no_token_and_can_be_published_over(store, vault, kv_path):
    store.publish(token_record("tok-1"), None)
    store.publish(token_record("tok-2"), "1")
    vault.secrets.kv.v2.delete_latest_version_of_secret(path=kv_path, mount_point="secret")

    # the marker still says whose secret it is (Engine._check_ownership: no other policy takes it over)
    assert store.read_current() == StoreState(version="2", managed=True, record=None, marker_policy=POLICY)
    third = token_record("tok-3")
    assert store.publish(third, "2") == "3"
    assert store.read_current().record == third


@pytest.mark.parametrize("reads_before", [0, 1], ids=["first-read", "later-read"])
def test_a_secret_with_metadata_and_no_version_still_names_its_policy(openbao, vault, kv_path, tmp_path, reads_before):
    """`kv metadata put` before any version (Terraform does that): the marker it sets says whose secret it
    is. It read as absent, so another policy's bootstrap or rotation took the secret over without ``adopt``."""
    store = make_store(openbao, kv_path, tmp_path)
    for _ in range(reads_before):  # a later read of the store, whose first read found the secret absent
        assert store.read_current() == StoreState(version=None, managed=False, record=None)
    vault.secrets.kv.v2.update_metadata(path=kv_path, mount_point="secret",
                                        custom_metadata={"managed-by": "rotator", "policy": "other-policy"})
    assert store.read_current() == StoreState(version=None, managed=True, record=None, marker_policy="other-policy")


def test_an_engine_does_not_take_over_a_metadata_only_secret_marked_for_another_policy(
        openbao, vault, kv_path, tmp_path):  # fmt: skip
    """The engine's side (as tests/engine/test_ownership_marker.py for a store with a marker): without
    ``adopt`` it refuses, and writes nothing."""
    from tests.engine.test_state_machine import World

    vault.secrets.kv.v2.update_metadata(path=kv_path, mount_point="secret",
                                        custom_metadata={"managed-by": "rotator", "policy": "other-policy"})
    world = World(tmp_path)
    world.stores = {"a": make_store(openbao, kv_path, tmp_path)}
    value, token_id = world.issuer.tokens.create("made by a human")
    with pytest.raises(OwnershipError, match="marked as managed by rotator for policy 'other-policy'"):
        world.engine().bootstrap(Secret(value), token_id, None)
    meta = metadata(vault, kv_path)
    assert (meta["current_version"], meta["custom_metadata"]["policy"]) == (0, "other-policy"), "nothing written"


def test_destroyed_current_version_is_no_token(store, vault, kv_path):
    store.publish(token_record("tok-1"), None)
    vault.secrets.kv.v2.destroy_secret_versions(path=kv_path, versions=[1], mount_point="secret")

    assert store.read_current() == StoreState(version="1", managed=True, record=None, marker_policy=POLICY)


def test_read_previous_skips_deleted_and_destroyed_versions(store, vault, kv_path):
    assert store.read_previous() == StoreState(version=None, managed=False, record=None)
    first, second, third = token_record("tok-1"), token_record("tok-2"), token_record("tok-3")
    store.publish(first, None)
    assert store.read_previous() == StoreState(version=None, managed=True, record=None)
    store.publish(second, "1")
    store.publish(third, "2")

    assert store.read_previous() == StoreState(version="2", managed=True, record=second)
    vault.secrets.kv.v2.delete_secret_versions(path=kv_path, versions=[2], mount_point="secret")
    assert store.read_previous() == StoreState(version="1", managed=True, record=first)
    vault.secrets.kv.v2.destroy_secret_versions(path=kv_path, versions=[1], mount_point="secret")
    assert store.read_previous() == StoreState(version=None, managed=True, record=None)


# -- max_versions ----------------------------------------------------------------------------


def test_warns_once_when_the_secret_keeps_fewer_than_3_versions(store, vault, kv_path, caplog):
    vault.secrets.kv.v2.update_metadata(path=kv_path, mount_point="secret", max_versions=2)
    caplog.set_level(logging.WARNING, logger="rotator.adapters.vault_kv2")

    store.read_current()
    store.read_current()

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "keeps only 2 versions (the secret's max_versions)" in warnings[0]


def test_warns_when_the_mount_keeps_fewer_than_3_versions(openbao, vault, kv_path, tmp_path, caplog):
    mount = f"kv-{uuid.uuid4().hex[:8]}"
    vault.sys.enable_secrets_engine("kv", path=mount, options={"version": "2"})
    vault.secrets.kv.v2.configure(max_versions=1, mount_point=mount)
    caplog.set_level(logging.WARNING, logger="rotator.adapters.vault_kv2")

    make_store(openbao, kv_path, tmp_path, mount=mount).read_current()

    assert "keeps only 1 versions (the mount's max_versions)" in caplog.text


def test_no_warning_with_the_default_of_10_versions(store, caplog):
    caplog.set_level(logging.WARNING, logger="rotator.adapters.vault_kv2")
    store.read_current()
    assert caplog.records == []


# -- delete_version_after ----------------------------------------------------------------------


def _deletion_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and "delete_version_after" in r.getMessage()]


def test_warns_at_publish_and_first_read_when_the_secret_deletes_versions_before_their_token_expires(
    openbao, vault, kv_path, tmp_path, caplog
):
    """delete_version_after soft-deletes every version that long after it is written, current or not:
    consumers then read nothing (404). The store checked max_versions and said nothing of this."""
    vault.secrets.kv.v2.update_metadata(path=kv_path, mount_point="secret", delete_version_after="1h")
    caplog.set_level(logging.WARNING, logger="rotator.adapters.vault_kv2")
    store = make_store(openbao, kv_path, tmp_path)

    assert store.read_current().version is None and _deletion_warnings(caplog) == [], "no token to compare yet"
    assert store.publish(token_record("tok-1"), None) == "1"
    [published] = _deletion_warnings(caplog)
    assert "Vault deletes version 1 1h after writing it (delete_version_after), before its token expires " \
           "(in 30d)" in published  # fmt: skip
    assert "consumers read no token (HTTP 404)" in published and "0s (off) or to more than" in published
    assert "`write secret/config delete_version_after=...`" in published

    caplog.clear()
    fresh = make_store(openbao, kv_path, tmp_path)  # a restart: its first read says it before any write
    fresh.read_current()
    fresh.read_current()
    [read] = _deletion_warnings(caplog)
    assert "Vault deletes every version 1h after it is written (the secret's delete_version_after), sooner " \
           "than a token lives (the current one: 30d)" in read  # fmt: skip


@pytest.mark.parametrize(("mount_after", "secret_after", "warned"), [
    ("2h", None, "the mount's"),  # the mount's setting applies to every secret
    ("2h", "1000h", "the mount's"),  # Vault takes the shorter of the two
    ("1000h", "2h", "the secret's"),
    ("-1s", "2h", None),  # a negative mount setting turns deletion off for every secret
    ("1000h", None, None),  # longer than the token lives (30d)
])  # fmt: skip
def test_the_deletion_warning_follows_vaults_rule_for_the_mount_and_the_secret(
    openbao, vault, kv_path, tmp_path, caplog, mount_after, secret_after, warned
):
    mount = f"kv-dva-{uuid.uuid4().hex[:8]}"
    vault.sys.enable_secrets_engine("kv", path=mount, options={"version": "2"})
    vault.secrets.kv.v2.configure(mount_point=mount, delete_version_after=mount_after)
    if secret_after is not None:
        vault.secrets.kv.v2.update_metadata(path=kv_path, mount_point=mount, delete_version_after=secret_after)
    vault.secrets.kv.v2.create_or_update_secret(path=kv_path, mount_point=mount,
                                                secret=token_record("tok-0").payload())  # fmt: skip
    caplog.set_level(logging.WARNING, logger="rotator.adapters.vault_kv2")
    store = make_store(openbao, kv_path, tmp_path, mount=mount)

    store.read_current()
    assert store.publish(token_record("tok-1"), "1") == "2"
    warnings = _deletion_warnings(caplog)
    if warned is None:
        assert warnings == []
    else:
        assert len(warnings) == 2, warnings  # the first read's, and the publish's
        assert f"every version 2h after it is written ({warned} delete_version_after)" in warnings[0]
        assert "Vault deletes version 2 2h after writing it" in warnings[1]


# -- auth ------------------------------------------------------------------------------------


def test_token_auth_from_an_environment_variable(openbao, kv_path, tmp_path, monkeypatch):
    token = openbao.create_token(openbao.policy_for("kv-rw-env", kv_path, "create", "read", "update"))
    monkeypatch.setenv("ROTATOR_TEST_VAULT_TOKEN", token)
    auth = {"method": "token", "token": {"env": "ROTATOR_TEST_VAULT_TOKEN"}}
    store = make_store(openbao, kv_path, tmp_path, auth=auth)

    assert store.publish(token_record("tok-1"), None) == "1"
    assert store.read_current().version == "1"


def test_token_auth_from_a_file_with_a_least_privilege_token(openbao, kv_path, tmp_path):
    token = openbao.create_token(openbao.policy_for("kv-rw-file", kv_path, "create", "read", "update"))
    store = make_store(openbao, kv_path, tmp_path, token=token)

    assert store.publish(token_record("tok-1"), None) == "1"
    assert store.read_current().record is not None


def test_token_is_renewed_once_less_than_a_third_of_its_ttl_is_left(openbao, kv_path, tmp_path, caplog):
    token = openbao.create_token(openbao.policy_for("kv-rw-renew", kv_path, "create", "read", "update"), ttl="1h")
    clock = FakeClock(NOW)
    store = make_store(openbao, kv_path, tmp_path, token=token, clock=clock)
    caplog.set_level(logging.DEBUG, logger="rotator.adapters.vault_kv2")
    store.read_current()
    assert "renewed the Vault token" not in caplog.text

    clock.advance(timedelta(minutes=41))
    store.read_current()

    assert "renewed the Vault token" in caplog.text


def test_missing_token_file_is_a_config_error(openbao, kv_path, tmp_path):
    store = make_store(openbao, kv_path, tmp_path, auth={"method": "token", "token": {"file": "absent"}})
    with pytest.raises(ConfigError, match="cannot read credential file"):
        store.read_current()


def test_approle_login(openbao, kv_path, tmp_path):
    role_id, secret_id = openbao.approle(
        "rotator-ok", openbao.policy_for("kv-rw-approle", kv_path, "create", "read", "update")
    )
    (tmp_path / "secret-id").write_text(secret_id)
    auth = {"method": "approle", "role_id": role_id, "secret_id": {"file": "secret-id"}}
    store = make_store(openbao, kv_path, tmp_path, auth=auth)

    assert store.publish(token_record("tok-1"), None) == "1"
    assert store.read_current().version == "1"


def test_approle_logs_in_again_after_its_token_was_revoked(openbao, vault, kv_path, tmp_path, caplog):
    role_id, secret_id = openbao.approle(
        "rotator-relogin", openbao.policy_for("kv-rw-relogin", kv_path, "create", "read", "update")
    )
    (tmp_path / "secret-id").write_text(secret_id)
    (tmp_path / "role-id").write_text(role_id)
    auth = {"method": "approle", "role_id": {"file": "role-id"}, "secret_id": {"file": "secret-id"}}
    store = make_store(openbao, kv_path, tmp_path, auth=auth)
    store.read_current()
    for accessor in vault.list("auth/token/accessors")["data"]["keys"]:
        info = vault.auth.token.lookup_accessor(accessor)["data"]
        if (info.get("meta") or {}).get("role_name") == "rotator-relogin":
            vault.auth.token.revoke_accessor(accessor)
    caplog.set_level(logging.DEBUG, logger="rotator.adapters.vault_kv2")

    assert store.publish(token_record("tok-1"), None) == "1"
    assert "logging in again" in caplog.text


def test_a_403_for_a_missing_capability_keeps_the_approle_token_and_names_the_capability(openbao, kv_path, tmp_path):
    """A 403 with a token that can still look itself up is a missing capability, not an expired
    token: no new login (which would not grant it, and would use up a secret_id limited to one
    login), and the error names the path and capability to grant."""
    openbao.write_policy("kv-no-meta-update",
                         f'path "secret/data/{kv_path}" {{ capabilities = ["create", "read", "update"] }}\n'
                         f'path "secret/metadata/{kv_path}" {{ capabilities = ["read"] }}\n')
    role_id, secret_id = openbao.approle("rotator-once", "kv-no-meta-update", secret_id_num_uses=1)
    (tmp_path / "secret-id").write_text(secret_id)
    store = make_store(openbao, kv_path, tmp_path,
                       auth={"method": "approle", "role_id": role_id, "secret_id": {"file": "secret-id"}})
    store.read_current()
    record = token_record("tok-1")
    with pytest.raises(TransientError, match="marking the secret managed failed") as caught:
        store.publish(record, None)
    assert f"secret/metadata/{kv_path}" in (caught.value.hint or "") and "auth/approle" not in str(caught.value)
    assert store.credential_status()["logged_in"]
    openbao.write_policy("kv-no-meta-update",
                         f'path "secret/data/{kv_path}" {{ capabilities = ["create", "read", "update"] }}\n'
                         f'path "secret/metadata/{kv_path}" {{ capabilities = ["read", "update"] }}\n')
    assert store.publish(record, None) == "1", "the grant fixed, the same publish completes"


def test_approle_with_a_wrong_secret_id_is_permanent(openbao, kv_path, tmp_path):
    role_id, _ = openbao.approle("rotator-wrong", "default")
    (tmp_path / "secret-id").write_text("not-the-secret-id")
    auth = {"method": "approle", "role_id": role_id, "secret_id": {"file": "secret-id"}}
    store = make_store(openbao, kv_path, tmp_path, auth=auth)

    with pytest.raises(PermanentError) as caught:
        store.read_current()
    assert "auth/approle/login: HTTP 400 (invalid role or secret ID)" in str(caught.value)
    assert "secret_id" in caught.value.hint


# -- refusals and outages ------------------------------------------------------------------


def test_token_for_another_path_gets_a_403_naming_path_and_capability(openbao, kv_path, tmp_path):
    token = openbao.create_token(openbao.policy_for("kv-elsewhere", "elsewhere/*", "create", "read", "update"))
    store = make_store(openbao, kv_path, tmp_path, token=token)

    with pytest.raises(PermanentError) as caught:
        store.read_current()

    assert not isinstance(caught.value, TransientError)
    assert f"read secret/metadata/{kv_path}: HTTP 403 (permission denied)" in str(caught.value)
    assert f"[\"read\"] on path 'secret/metadata/{kv_path}'" in caught.value.hint


def test_read_only_token_cannot_publish_and_is_told_which_capability(openbao, vault, kv_path, tmp_path):
    vault.secrets.kv.v2.create_or_update_secret(path=kv_path, secret={"a": "b"}, mount_point="secret")
    token = openbao.create_token(openbao.policy_for("kv-read-only", kv_path, "read"))
    store = make_store(openbao, kv_path, tmp_path, token=token)
    assert store.read_current().version == "1"

    with pytest.raises(PermanentError) as caught:
        store.publish(token_record("tok-1"), "1")

    assert f"write secret/data/{kv_path}: HTTP 403" in str(caught.value)
    assert '["create", "update"]' in caught.value.hint
    assert metadata(vault, kv_path)["current_version"] == 1


def test_a_vault_token_an_http_header_cannot_carry_is_a_config_error_without_it(openbao, kv_path, tmp_path):
    """http.client encodes X-Vault-Token as Latin-1; its UnicodeEncodeError holds the whole value."""
    store = make_store(openbao, kv_path, tmp_path, token="hvs.copied\u2019from-a-document")
    with pytest.raises(ConfigError, match="cannot carry") as caught:
        store.read_current()
    assert "copied" not in str(caught.value) and caught.value.__suppress_context__


def test_a_kv_version_1_mount_is_refused_before_anything_is_written(openbao, vault, kv_path, tmp_path):
    """A KV v1 engine would keep the payload (a token value) as a plain secret at <mount>/data/<path>:
    the first read tells, before any write; a leftover from an older rotator is not read as a token."""
    mount = f"kv1-{uuid.uuid4().hex[:8]}"
    vault.sys.enable_secrets_engine("kv", path=mount, options={"version": "1"})
    store = make_store(openbao, kv_path, tmp_path, mount=mount)
    with pytest.raises(PermanentError, match=f"mount '{mount}' is not a KV version 2 secrets engine") as caught:
        store.read_current()
    assert "enable-versioning" in (caught.value.hint or "")
    assert vault.read(f"{mount}/data/{kv_path}") is None, "nothing written"
    # what an older rotator's first write left there: the KV v2 request body, kept as a v1 secret
    vault.adapter.post(f"/v1/{mount}/data/{kv_path}", json={"data": token_record("tok-old").payload(),
                                                             "options": {"cas": 0}})
    with pytest.raises(PermanentError, match="is not a KV version 2 secrets engine"):
        make_store(openbao, kv_path, tmp_path, mount=mount).read_current()


def test_a_missing_mount_is_permanent(openbao, kv_path, tmp_path):
    store = make_store(openbao, kv_path, tmp_path, mount="no-such-mount")
    with pytest.raises(PermanentError, match="HTTP 404 .no handler for route"):
        store.read_current()


def test_server_not_listening_is_transient(openbao, kv_path, tmp_path):
    store = make_store(openbao, kv_path, tmp_path, url=f"http://127.0.0.1:{free_port()}", timeout_s=2)

    with pytest.raises(TransientError, match=r"cannot reach Vault at http://127\.0\.0\.1:\d+ \(ConnectionError\)"):
        store.read_current()


class _Loopback(http.server.BaseHTTPRequestHandler):
    """A quiet handler that answers every GET, POST, PUT and PATCH with :meth:`respond`."""

    def log_message(self, *args: Any) -> None:
        pass

    def respond(self) -> None:
        raise NotImplementedError

    def reply(self, status: int, headers: Mapping[str, str] | None = None, body: bytes = b"") -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.respond()

    do_POST = do_PUT = do_PATCH = do_GET


@contextmanager
def _serving(handler: type[_Loopback]) -> Iterator[str]:
    """``handler`` on a free loopback port, in a thread, for the block; yields its URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def _store_at(url: str, kv_path: str, tmp_path: Path) -> VaultKV2Store:
    (tmp_path / "vault-token").write_text("s.not-a-token-anyone-checks")
    model = VaultKV2Settings.model_validate({"url": url, "path": kv_path,
                                             "auth": {"method": "token", "token": {"file": "vault-token"}}})
    return VaultKV2Store.from_config(model, AdapterContext(policy=POLICY, base_dir=tmp_path, clock=FakeClock(NOW)))


@pytest.mark.parametrize(("content_type", "body"), [("text/html", b"<html>default backend - 404</html>"),
                                                    ("application/json", b'{"status": "ok"}')])
def test_an_answer_that_is_not_vault_s_is_a_permanent_error_naming_the_url(kv_path, tmp_path, content_type, body):
    """A url that reaches an ingress's default page, a proxy or another service answering 200: the
    error says so and what to check, instead of an internal KeyError or TypeError."""

    class NotVault(_Loopback):
        def respond(self) -> None:
            self.reply(200, {"Content-Type": content_type}, body)

    with _serving(NotVault) as url:
        with pytest.raises(PermanentError, match=f"the answer of {url} to .* is not Vault's") as caught:
            _store_at(url, kv_path, tmp_path).read_current()
        assert "check url" in (caught.value.hint or "")


def test_a_redirect_to_another_origin_is_refused_before_anything_is_sent_there(kv_path, tmp_path):
    """requests strips only Authorization on a redirect to another host and keeps a 307's body: the
    X-Vault-Token header and the token payload would follow any Location (a standby without request
    forwarding, a misrouted name). Nothing reaches the other origin, and the error says what to set."""
    received: list[str] = []

    class Elsewhere(_Loopback):
        def respond(self) -> None:
            received.append(f"{self.command} {self.path} {self.headers.get('X-Vault-Token')}")
            self.reply(500)

    with _serving(Elsewhere) as other:

        class Redirector(_Loopback):
            def respond(self) -> None:
                self.reply(307, {"Location": other + self.path})

        with _serving(Redirector) as front:
            store = _store_at(front, kv_path, tmp_path)
            record = token_record("tok-1")
            with pytest.raises(PermanentError) as caught:
                store.publish(record, None)
    assert f"with a redirect to {other}" in str(caught.value)
    assert "active node" in (caught.value.hint or "")
    assert "s.not-a-token" not in str(caught.value) and record.value.reveal() not in str(caught.value)
    assert received == []


def test_https_to_a_plain_http_server_is_a_tls_error(openbao, kv_path, tmp_path):
    store = make_store(openbao, kv_path, tmp_path, url=openbao.url.replace("http://", "https://"))

    with pytest.raises(PermanentError, match="TLS") as caught:
        store.read_current()
    assert "ca_bundle" in caught.value.hint


# -- namespaces ----------------------------------------------------------------------------


def test_namespace_is_used_for_login_reads_and_writes(openbao, kv_path, tmp_path):
    namespace = openbao.namespace(f"team-{uuid.uuid4().hex[:6]}")
    store = make_store(openbao, kv_path, tmp_path, namespace=namespace)
    assert store.location == f"vault:{openbao.url}/{namespace}/secret/data/{kv_path}"

    assert store.publish(token_record("tok-1"), None) == "1"

    in_namespace = openbao.client(namespace=namespace)
    assert metadata(in_namespace, kv_path)["custom_metadata"]["token_id"] == "tok-1"
    with pytest.raises(hvac.exceptions.InvalidPath):
        metadata(openbao.client(), kv_path)


def test_the_conflict_hint_names_the_namespace_and_its_command_reads_the_secret(openbao, kv_path, tmp_path):
    """The printed `bao kv metadata get` left out the namespace: it read the root namespace ("No value
    found"), sending the operator the wrong way during a conflict. Quoted, it works for any path."""
    namespace = openbao.namespace(f"team-{uuid.uuid4().hex[:6]}")
    path = f"{kv_path}/with space's"
    store = make_store(openbao, path, tmp_path, namespace=namespace)
    store.publish(token_record("tok-1"), None)
    openbao.client(namespace=namespace).secrets.kv.v2.create_or_update_secret(
        path=path, mount_point="secret", secret={"other": "writer"})

    with pytest.raises(ConflictError) as caught:
        store.publish(token_record("tok-2"), "1")

    command = caught.value.hint.split("`")[1]
    assert f"-namespace={namespace} " in command
    env = {"BAO_ADDR": openbao.url, "BAO_TOKEN": openbao.root_token, "HOME": str(tmp_path),
           "PATH": os.environ.get("PATH", "")}  # fmt: skip
    bao = Path(find_bao()).parent
    shown = subprocess.run(["sh", "-c", command], env={**env, "PATH": f"{bao}:{env['PATH']}"},
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"(?m)^current_version\s+2$", shown.stdout), shown.stdout
    assert "managed-by:rotator" in shown.stdout, shown.stdout


# -- secrecy -------------------------------------------------------------------------------
# -- secrecy -------------------------------------------------------------------------------


def test_no_token_value_in_any_log_record_or_error(openbao, vault, kv_path, tmp_path, caplog):
    """Vault token, AppRole secret_id and the published token: none may reach a log or an error."""
    caplog.set_level(logging.DEBUG)
    role_id, secret_id = openbao.approle(
        "rotator-leak", openbao.policy_for("kv-rw-leak", kv_path, "create", "read", "update")
    )
    (tmp_path / "secret-id").write_text(secret_id)
    approle = make_store(
        openbao, kv_path, tmp_path, auth={"method": "approle", "role_id": role_id, "secret_id": {"file": "secret-id"}}
    )
    by_token = make_store(openbao, kv_path, tmp_path)  # root, from the file
    first, second = token_record("tok-1"), token_record("tok-2")
    third = token_record("tok-3")  # refused: a failed publish may not name its value either
    errors: list[BaseException] = []

    approle.publish(first, None)
    approle.read_current()
    by_token.publish(second, "1")
    by_token.read_previous()
    (tmp_path / "other").mkdir()
    denied = make_store(openbao, "elsewhere/x", tmp_path / "other", token=openbao.create_token("default"))
    for attempt in (
        lambda: approle.publish(third, "1"),  # a conflict
        denied.read_current,  # a 403
    ):
        with pytest.raises(PermanentError) as caught:
            attempt()
        errors.append(caught.value)

    secrets = [openbao.root_token, secret_id, *(record.value.reveal() for record in (first, second, third))]
    texts = [r.getMessage() for r in caplog.records] + [f"{e} {getattr(e, 'hint', '')}" for e in errors]
    assert caplog.records, "expected DEBUG/INFO records to check"
    # Which secret in which text, never the secret: pytest would print it beside a failed `in`.
    leaks = [(f"secret {i}", f"text {j}") for i, secret in enumerate(secrets) for j, text in enumerate(texts)
             if secret in text]
    assert not leaks, f"a secret leaked into a log record or an error: {leaks}"
    assert all(e.__cause__ is None for e in errors)


# -- settings ------------------------------------------------------------------------------


def test_settings_refuse_inline_secrets_and_unknown_keys():
    base = {"url": "https://vault.example:8200", "path": "influx/mgmt"}
    by_env = {"method": "token", "token": {"env": "X"}}
    refused = [
        ({"auth": {"method": "token", "token": "s.inline"}}, "token"),
        ({"auth": {"method": "approle", "role_id": "r", "secret_id": "inline-secret-id"}}, "secret_id"),
        ({"auth": by_env, "token": {"env": "X"}}, "Extra inputs are not permitted"),
        ({"auth": by_env, "url": "https://user:pw@vault.example"}, "must not carry credentials"),
        ({"auth": by_env, "tls_verify": False, "ca_bundle": "ca.pem"}, "ca_bundle"),
        ({"auth": {"method": "aws", "role": "r"}}, "method"),
    ]
    for extra, reason in refused:
        with pytest.raises(ValidationError, match=reason):
            VaultKV2Settings.model_validate({**base, **extra})


@pytest.mark.parametrize("timeout", [float("inf"), float("nan"), 1e12, 300.5, 0, -1])
def test_timeout_s_is_more_than_0_and_at_most_300(timeout):
    """inf passed (TOML allows it) and failed at the first request as an internal error (OverflowError
    from the socket); a huge value meant no timeout at all. The AWS store allows 0 < timeout_s <= 300."""
    base = {"url": "https://vault.example:8200", "path": "influx/mgmt", "auth": {"method": "token",
                                                                               "token": {"env": "X"}}}
    with pytest.raises(ValidationError, match="timeout_s") as caught:
        VaultKV2Settings.model_validate({**base, "timeout_s": timeout})
    assert "at most 300" in str(caught.value) or "greater than 0" in str(caught.value)
    assert VaultKV2Settings.model_validate({**base, "timeout_s": 300}).timeout_s == 300


@pytest.mark.parametrize("namespace", ["\u00e9quipe", "team/\u00fc\u2713", "caf\u00e9/ops"])
def test_a_namespace_an_http_header_cannot_carry_is_refused_by_validation(openbao, kv_path, tmp_path, namespace):
    """It went out as the X-Vault-Namespace header: refused there at run time, as if the Vault token held
    the character ("write the credential again as it was issued")."""
    with pytest.raises(ValidationError, match="namespace\n.*must be ASCII") as caught:
        make_store(openbao, kv_path, tmp_path, namespace=namespace)
    assert "HTTP header" in str(caught.value)
    assert make_store(openbao, kv_path, tmp_path, namespace="team-a/ops").location.endswith("/team-a/ops/secret/data/"
                                                                                          + kv_path)


def test_settings_defaults_and_normalisation():
    settings = VaultKV2Settings.model_validate(
        {
            "url": "https://vault.example:8200/",
            "mount": "/secret/",
            "path": "influx/mgmt",  # a path with outer slashes is refused (tests/adapters/test_vault_kv2_errors.py)
            "auth": {"method": "approle", "role_id": {"env": "ROLE"}, "secret_id": {"env": "SECRET"}},
        }
    )
    assert (settings.url, settings.mount, settings.path) == ("https://vault.example:8200", "secret", "influx/mgmt")
    assert (settings.tls_verify, settings.ca_bundle, settings.timeout_s, settings.namespace) == (True, None, 10, None)
    assert settings.auth.method == "approle" and settings.auth.mount_path == "approle"


def test_from_config_contacts_nothing_and_resolves_ca_bundle_against_the_policy_dir(tmp_path):
    built: list[VaultKV2Settings] = []

    def factory(settings: VaultKV2Settings) -> Any:
        built.append(settings)
        raise RuntimeError("first use")

    settings = VaultKV2Settings.model_validate(
        {
            "url": "https://vault.invalid",
            "path": "p",
            "ca_bundle": "ca.pem",
            "auth": {"method": "token", "token": {"env": "UNSET_VARIABLE"}},
        }
    )
    store = VaultKV2Store.from_config(
        settings, AdapterContext(policy=POLICY, base_dir=tmp_path), client_factory=factory
    )
    assert built == []
    assert store.location == "vault:https://vault.invalid/secret/data/p"

    with pytest.raises(RuntimeError, match="first use"):
        store.read_current()
    assert built[0].ca_bundle == tmp_path / "ca.pem"


def test_a_missing_ca_bundle_is_a_config_error(openbao, kv_path, tmp_path):
    store = make_store(openbao, kv_path, tmp_path, ca_bundle="missing.pem")
    with pytest.raises(ConfigError, match="missing.pem"):
        store.read_current()


# -- the dev server launcher ---------------------------------------------------------------


def test_dev_server_on_a_taken_port_fails_with_its_log(openbao):
    taken = int(openbao.url.rsplit(":", 1)[1])
    with pytest.raises(OpenBaoStartError, match="address already in use"):
        with openbao_dev_server(port=taken):
            pass


def test_kill_9_of_the_process_running_a_dev_server_kills_the_server(tmp_path):
    """A killed test run or demo must not leave `bao server -dev` behind, holding its port."""
    ready = tmp_path / "ready"
    script = (
        "import pathlib, sys, time\n"
        "from rotator.sandbox.openbao_dev import openbao_dev_server\n"
        "with openbao_dev_server() as (url, _):\n"
        f"    pathlib.Path({str(ready)!r}).write_text(url)\n"
        "    time.sleep(120)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and time.monotonic() < deadline and holder.poll() is None:
            time.sleep(0.05)
        assert ready.exists(), "the dev server did not start"
        children = Path(f"/proc/{holder.pid}/task/{holder.pid}/children").read_text().split()
        assert len(children) == 1
        server = int(children[0])
        assert "bao" in Path(f"/proc/{server}/cmdline").read_bytes().decode(errors="replace")
    finally:
        holder.kill()
        holder.wait(timeout=10)
    deadline = time.monotonic() + 10
    while _alive(server) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(server), "bao server -dev outlived the process that started it"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.parametrize("custom", [["managed-by", "rotator"], "rotator", {"managed-by": 1}],
                         ids=["list", "text", "number-value"])
def test_custom_metadata_that_is_not_vaults_is_a_permanent_error_at_every_read(kv_path, tmp_path, custom):
    """Vault's custom_metadata is an object of text values. Anything else (a proxy's or another
    service's answer shaped almost like Vault's) is reported as not Vault's answer, naming the url,
    on the data read, the metadata read and the previous version's read; before, a list or a text
    there raised an AttributeError that the engine could only call an internal error."""
    payload = token_record("tok-1").payload()

    class AlmostVault(_Loopback):
        def respond(self) -> None:
            path = self.path.split("?")[0]
            if path.endswith("/lookup-self"):
                body: dict[str, Any] = {"data": {"ttl": 0, "renewable": False, "policies": ["root"]}}
            elif "/metadata/" in path:
                body = {"data": {"current_version": 2, "max_versions": 10, "custom_metadata": custom,
                                 "versions": {"1": {"destroyed": False}, "2": {"destroyed": False}}}}
            elif path.endswith("/config"):
                body = {"data": {"max_versions": 10}}
            elif self.command in ("POST", "PUT"):  # the write of a version
                body = {"data": {"version": 3, "custom_metadata": custom}}
            else:
                body = {"data": {"data": payload, "metadata": {"version": 2, "custom_metadata": custom}}}
            self.reply(200, {"Content-Type": "application/json"}, json.dumps(body).encode())

    with _serving(AlmostVault) as url:
        calls: dict[str, Callable[[VaultKV2Store], object]] = {
            "read_current": lambda store: store.read_current(), "read_previous": lambda store: store.read_previous()}
        for name, call in calls.items():
            with pytest.raises(PermanentError, match=f"the answer of {url} to .* is not Vault's") as caught:
                call(_store_at(url, kv_path, tmp_path))
            assert not isinstance(caught.value, TransientError), name
            assert "check url" in (caught.value.hint or ""), name
        # After the write landed, the token is in the store: transient (the run stays open and
        # recovery completes the publish), never "nothing written", which would get it revoked.
        with pytest.raises(TransientError, match="version 3 holds token tok-2, but marking the secret managed "
                                                 f"failed: .*the answer of {url} to .* is not Vault's") as caught:
            _store_at(url, kv_path, tmp_path).publish(token_record("tok-2"), "2")
        assert "rotator recover" in (caught.value.hint or "")


#: JSON nested deeper than json.loads can decode (its C decoder raises RecursionError).
_DEEP_JSON = b"[" * 5000 + b"]" * 5000


@pytest.mark.parametrize(("deep", "auth", "call", "operation"), [
    ("lookup-self", "token", "read_current", "log in to auth/token/lookup-self"),
    ("login", "approle", "read_current", "log in to auth/approle/login"),
    ("metadata read", "token", "read_current", "read secret/metadata/"),
    ("config read", "token", "read_current", "read secret/config"),
    ("data write", "token", "publish", "write secret/data/"),
    ("metadata write", "token", "publish", "update custom_metadata of secret/metadata/"),
])  # fmt: skip
def test_an_answer_nested_thousands_deep_is_not_vault_s_answer_at_every_call(kv_path, tmp_path, deep, auth, call,
                                                                              operation):
    """hvac decodes every 200 with json.loads: only the two data reads caught its RecursionError, so a
    proxy or another service answering JSON nested thousands deep on a login, lookup, metadata or config
    read or a write ended as an internal error. Now it is the error of any answer that is not Vault's."""

    class DeepOnce(_Loopback):
        def respond(self) -> None:
            path = self.path.split("?")[0]
            writing = self.command in ("POST", "PUT", "PATCH")
            kind = ("login" if path.endswith("/login") else "lookup-self" if path.endswith("/lookup-self")
                    else "config read" if path.endswith("/config")
                    else f"metadata {'write' if writing else 'read'}" if "/metadata/" in path
                    else f"data {'write' if writing else 'read'}")  # fmt: skip
            if kind == deep:
                self.reply(200, {"Content-Type": "application/json"}, _DEEP_JSON)
                return
            body: dict[str, Any] | None = {
                "login": {"auth": {"client_token": "s.not-a-token-anyone-checks", "lease_duration": 0}},
                "lookup-self": {"data": {"ttl": 0, "renewable": False}},
                "metadata read": {"data": {"current_version": 1, "max_versions": 0, "custom_metadata": None,
                                           "versions": {"1": {"destroyed": False}}}},
                "config read": {"data": {"max_versions": 10}},
                "data read": {"data": {"data": {"other": "value"},
                                       "metadata": {"version": 1, "custom_metadata": None}}},
                "data write": {"data": {"version": 2, "custom_metadata": None}},
                "metadata write": None,  # Vault answers 204
            }[kind]  # fmt: skip
            if body is None:
                self.reply(204)
            else:
                self.reply(200, {"Content-Type": "application/json"}, json.dumps(body).encode())

    (tmp_path / "secret-id").write_text("secret-id-value-0123456789abcdef")
    settings = {"token": {"method": "token", "token": {"file": "vault-token"}},
                "approle": {"method": "approle", "role_id": "r", "secret_id": {"file": "secret-id"}}}[auth]
    (tmp_path / "vault-token").write_text("s.not-a-token-anyone-checks")
    with _serving(DeepOnce) as url:
        model = VaultKV2Settings.model_validate({"url": url, "path": kv_path, "auth": settings})
        store = VaultKV2Store.from_config(model, AdapterContext(policy=POLICY, base_dir=tmp_path,
                                                                clock=FakeClock(NOW)))
        run: Callable[[], object] = (store.read_current if call == "read_current"
                                     else lambda: store.publish(token_record("tok-2"), "1"))
        with pytest.raises((PermanentError, TransientError),
                           match=f"the answer of {url} to {operation}.* is not Vault's") as caught:
            run()
    assert "check url" in (caught.value.hint or "")
    # The metadata write comes after the token landed: transient, so that recovery completes the publish.
    assert isinstance(caught.value, TransientError) == (deep == "metadata write")
