"""`mount` written as a KV v2 API path (`secret/data`, copied from Vault's API docs), against a real OpenBao.

rotator asks for ``<mount>/data/<path>``: with mount = "secret/data" it read and wrote the secret
``data/<path>`` of the `secret` mount. Its first read misreported the mount as KV version 1 (the mount's config
read found no secret named "config"); when the mount held a secret named "config", it went on, wrote the
token as version 1 of the wrong secret, and every publish then failed to mark it managed (HTTP 400), so the
run stayed open for ever. Vault's ``sys/internal/ui/mounts/<path>`` tells which mount serves a path: the
store's first read asks it when its answers do not fit a KV v2 engine at `mount`, and names the settings to
write, before anything is written. A correctly set store does not ask (its request counts are unchanged:
tests/adapters/test_store_requests.py).

Each test mounts a KV v2 engine of its own, so that what is in it (a secret named "config") is the test's.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import hvac
import pytest

from rotator.adapters.vault.kv2 import VaultKV2Settings, VaultKV2Store
from rotator.core.clock import FakeClock
from rotator.core.contracts import AdapterContext, TokenRecord
from rotator.core.errors import ConfigError, PermanentError
from rotator.core.secret import Secret
from tests.adapters.test_vault_kv2_errors import FakeVault
from tests.adapters.test_vault_kv2_errors import make_store as fake_store
from tests.servers import OpenBao

POLICY = "influx-mgmt"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def token_record(token_id: str) -> TokenRecord:
    return TokenRecord(Secret(f"test-token-value-{uuid.uuid4().hex}"), token_id, "influxctl-management", POLICY,
                       NOW, NOW + timedelta(days=30))  # fmt: skip


def make_store(openbao: OpenBao, tmp_path: Path, *, token: str | None = None, **settings: Any) -> VaultKV2Store:
    (tmp_path / "vault-token").write_text(token or openbao.root_token)
    model = VaultKV2Settings.model_validate({"url": openbao.url, "auth": {"method": "token",
                                                                          "token": {"file": "vault-token"}},
                                             **settings})  # fmt: skip
    return VaultKV2Store.from_config(model, AdapterContext(policy=POLICY, base_dir=tmp_path, clock=FakeClock(NOW)))


def kv2_mount(openbao: OpenBao, name: str | None = None, namespace: str | None = None) -> str:
    mount = name or f"kv-{uuid.uuid4().hex[:8]}"
    openbao.client(namespace=namespace).sys.enable_secrets_engine("kv", path=mount, options={"version": "2"})
    return mount


def secrets_in(vault: hvac.Client, mount: str, folder: str = "") -> dict[str, int]:
    """Every secret of ``mount`` (recursively) and its current version: what a store wrote shows here."""
    try:
        keys = vault.secrets.kv.v2.list_secrets(path=folder, mount_point=mount)["data"]["keys"]
    except hvac.exceptions.InvalidPath:
        return {}
    found: dict[str, int] = {}
    for key in keys:
        if key.endswith("/"):
            found |= secrets_in(vault, mount, folder + key)
        else:
            meta = vault.secrets.kv.v2.read_secret_metadata(path=folder + key, mount_point=mount)["data"]
            found[folder + key] = meta["current_version"]
    return found


def settings_in(hint: str) -> tuple[str, str]:
    """The `mount = "..."` and `path = "..."` a hint tells to set (TOML strings)."""
    mount = hint.split("mount = ", 1)[1].split(" and path = ", 1)
    return json.JSONDecoder().raw_decode(mount[0])[0], json.JSONDecoder().raw_decode(mount[1])[0]


def assert_names_the_settings(exc: ConfigError, mount: str, path: str) -> None:
    assert settings_in(exc.hint or "") == (mount, path), exc.hint
    assert f"mounted at {mount!r}" in str(exc) and "KV version 2 engine" in str(exc), exc
    assert "KV version 1" not in str(exc) and "enable-versioning" not in (exc.hint or ""), exc


def test_mount_written_as_the_api_path_names_the_mount_and_path_to_set_and_writes_nothing(openbao, tmp_path):
    """The reviewer's first scenario: no secret named "config" (the config read answers 404)."""
    mount = kv2_mount(openbao)
    store = make_store(openbao, tmp_path, mount=f"{mount}/data", path="demo/x")

    with pytest.raises(ConfigError) as caught:
        store.read_current()

    assert_names_the_settings(caught.value, mount, "demo/x")
    assert "without the /data/ of the API path" in (caught.value.hint or "")
    assert secrets_in(openbao.client(), mount) == {}, "nothing written"
    with pytest.raises(ConfigError):  # and again: nothing was taken for checked
        store.read_current()
    assert secrets_in(openbao.client(), mount) == {}


def test_mount_written_as_the_api_path_with_a_secret_named_config_writes_nothing(openbao, tmp_path):
    """The reviewer's second scenario: the mount's config read answered with the data of the secret "config",
    and rotator wrote the token as version 1 of `data/demo/y`, then failed to mark it for ever."""
    mount = kv2_mount(openbao)
    vault = openbao.client()
    vault.secrets.kv.v2.create_or_update_secret(path="config", secret={"x": "y"}, mount_point=mount)
    store = make_store(openbao, tmp_path, mount=f"{mount}/data", path="demo/y")

    with pytest.raises(ConfigError) as caught:
        store.read_current()

    assert_names_the_settings(caught.value, mount, "demo/y")
    assert secrets_in(vault, mount) == {"config": 1}, "no version created anywhere"


@pytest.mark.parametrize(("suffix", "path", "expected_path"), [
    ("metadata", "demo/z", "demo/z"),
    ("data/team", "demo/z", "team/demo/z"),
    ("team", "demo/z", "team/demo/z"),
])
def test_other_paths_inside_a_mount_name_the_settings_too(openbao, tmp_path, suffix, path, expected_path):
    mount = kv2_mount(openbao)
    vault = openbao.client()
    vault.secrets.kv.v2.create_or_update_secret(path="config", secret={"x": "y"}, mount_point=mount)
    store = make_store(openbao, tmp_path, mount=f"{mount}/{suffix}", path=path)

    with pytest.raises(ConfigError) as caught:
        store.read_current()

    assert_names_the_settings(caught.value, mount, expected_path)
    assert secrets_in(vault, mount) == {"config": 1}


def test_a_policy_written_for_the_intended_secret_gets_the_settings_not_a_403(openbao, tmp_path):
    """A least-privilege token whose policy grants the secret meant (<mount>/data/demo/x): rotator's
    metadata read of <mount>/data/metadata/demo/x is refused. The 403 told to grant that path; the mount's
    lookup tells what to set instead."""
    mount = kv2_mount(openbao)
    name = f"meant-{uuid.uuid4().hex[:8]}"
    openbao.policy_for(name, "demo/x", "create", "read", "update", "patch", mount=mount)
    store = make_store(openbao, tmp_path, token=openbao.create_token(name), mount=f"{mount}/data", path="demo/x")

    with pytest.raises(ConfigError) as caught:
        store.read_current()

    assert_names_the_settings(caught.value, mount, "demo/x")
    assert secrets_in(openbao.client(), mount) == {}


def test_a_policy_granting_the_doubled_paths_but_not_the_config_is_caught_too(openbao, tmp_path):
    """A token granted exactly what rotator asked for with mount = "<m>/data" (the paths its 403 hints
    named: <m>/data/data/demo/x, <m>/data/metadata/demo/x), not the optional config: the config read is
    refused, and `mount` looks like an API path, so the store asks Vault before it writes anything."""
    mount = kv2_mount(openbao)
    name = f"doubled-{uuid.uuid4().hex[:8]}"
    openbao.policy_for(name, "demo/x", "create", "read", "update", "patch", mount=f"{mount}/data")
    store = make_store(openbao, tmp_path, token=openbao.create_token(name), mount=f"{mount}/data", path="demo/x")

    with pytest.raises(ConfigError) as caught:
        store.read_current()

    assert_names_the_settings(caught.value, mount, "demo/x")
    assert secrets_in(openbao.client(), mount) == {}


def test_in_a_namespace_the_settings_are_relative_to_it(openbao, tmp_path):
    namespace = openbao.namespace(f"team-{uuid.uuid4().hex[:6]}")
    openbao.client(namespace=namespace).secrets.kv.v2.create_or_update_secret(
        path="config", secret={"x": "y"}, mount_point="secret")
    store = make_store(openbao, tmp_path, namespace=namespace, mount="secret/data", path="demo/x")

    with pytest.raises(ConfigError) as caught:
        store.read_current()

    assert_names_the_settings(caught.value, "secret", "demo/x")
    assert secrets_in(openbao.client(namespace=namespace), "secret") == {"config": 1}


@pytest.mark.parametrize("granted_config", [True, False], ids=["config-readable", "config-refused"])
def test_a_real_mount_named_like_an_api_path_works(openbao, tmp_path, granted_config):
    """A pure name check would be wrong: a KV v2 engine may be mounted at `<x>/data`. With its config
    readable nothing more is asked; with it refused, the one lookup at the first read says it is the mount."""
    mount = kv2_mount(openbao, f"team-{uuid.uuid4().hex[:6]}/data")
    name = f"real-{uuid.uuid4().hex[:8]}"
    openbao.policy_for(name, "demo/x", "create", "read", "update", "patch", mount=mount)
    if granted_config:
        hcl = f'path "{mount}/data/demo/x" {{ capabilities = ["create", "read", "update"] }}\n' \
              f'path "{mount}/metadata/demo/x" {{ capabilities = ["read", "update", "patch"] }}\n' \
              f'path "{mount}/config" {{ capabilities = ["read"] }}\n'
        openbao.write_policy(name, hcl)
    store = make_store(openbao, tmp_path, token=openbao.create_token(name), mount=mount, path="demo/x")

    assert store.read_current().version is None
    # lookup-self, metadata (404), config (read, or refused then the mount's lookup), GET data (404)
    assert store.request_count == (4 if granted_config else 5)
    assert store.publish(token_record("tok-1"), None) == "1"
    assert store.read_current().version == "1"
    assert secrets_in(openbao.client(), mount) == {"demo/x": 1}


def test_a_kv_version_1_mount_is_named_as_such_and_nothing_was_written(openbao, tmp_path):
    """The mount's lookup confirms KV version 1: the hint does not tell to delete a write that never happened."""
    mount = f"kv1-{uuid.uuid4().hex[:8]}"
    openbao.client().sys.enable_secrets_engine("kv", path=mount, options={"version": "1"})
    store = make_store(openbao, tmp_path, mount=mount, path="demo/x")

    with pytest.raises(PermanentError) as caught:
        store.read_current()

    assert not isinstance(caught.value, ConfigError)
    assert f"mount '{mount}' is not a KV version 2 secrets engine (Vault says it is a KV version 1 engine)" in str(
        caught.value)
    assert "enable-versioning" in (caught.value.hint or "") and "delete" not in (caught.value.hint or "")
    assert openbao.client().read(f"{mount}/data/demo/x") is None


@pytest.mark.parametrize("config_answer", [
    {"data": {"data": {"x": "y"}, "metadata": {"version": 1}}},  # the data of a secret named "config"
    {"data": {"current_version": 1, "max_versions": 0, "versions": {"1": {}}}},  # its metadata (".../metadata")
    hvac.exceptions.InvalidPath(errors=[]),  # no secret named "config"
], ids=["data", "metadata", "absent"])
def test_without_the_lookup_a_config_that_is_not_kv2_still_stops_before_the_write(tmp_path, config_answer):
    """A client that cannot look the mount up (a fake given as client_factory): the config answer alone
    shows `mount` is not a KV v2 engine's path, and nothing is written."""
    fake = FakeVault()

    def read_mount_config(mount: str) -> Mapping[str, Any]:
        fake.calls.append("read_mount_config")
        if isinstance(config_answer, Exception):
            raise config_answer
        return config_answer

    fake.read_mount_config = read_mount_config  # type: ignore[method-assign]
    store = fake_store(fake, tmp_path)

    with pytest.raises(PermanentError, match="its config does not answer as a KV v2 engine's") as caught:
        store.read_current()

    assert "never the API path `secret/data`" in (caught.value.hint or "")
    assert "write_version" not in fake.calls and fake.versions == []


def test_mount_and_path_that_together_name_a_mount_say_to_set_mount_and_a_path_inside_it(openbao, tmp_path):
    mount = kv2_mount(openbao, f"team-{uuid.uuid4().hex[:6]}/data/demo")
    store = make_store(openbao, tmp_path, mount=mount.rsplit("/", 1)[0], path="demo")

    with pytest.raises(ConfigError) as caught:
        store.read_current()

    assert f"mounted at {mount!r}" in str(caught.value)
    assert f'set mount = "{mount}" in the store\'s settings, and `path`' in (caught.value.hint or "")
    assert secrets_in(openbao.client(), mount) == {}
