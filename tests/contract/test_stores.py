"""rotator.testing's StoreContract over every built-in store and the in-memory one.

Each class provides ``make_store`` (a new adapter on a fresh secret), ``write_foreign`` (a value
written around the adapter, as a person would) and ``unreachable_store``; the tests are in
rotator/testing/suites.py. Store-specific behaviour stays in tests/adapters/test_vault_kv2.py,
tests/adapters/test_aws_secretsmanager.py and tests/adapters/test_influxctl_profile.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from rotator.adapters.aws.secretsmanager import AwsSecretsManagerSettings, AwsSecretsManagerStore
from rotator.adapters.influxctl.profile import InfluxctlProfileSettings, InfluxctlProfileStore
from rotator.adapters.vault.kv2 import VaultKV2Settings, VaultKV2Store
from rotator.core.clock import FakeClock
from rotator.core.contracts import AdapterContext, Store
from rotator.core.errors import TransientError
from rotator.sandbox.openbao_dev import free_port
from rotator.testing import MemorySecrets, MemoryStore, StoreContract
from tests.aws_server import MotoServer
from tests.servers import OpenBao

POLICY = StoreContract.policy


class TestMemoryStore(StoreContract):
    @pytest.fixture
    def make_store(self) -> Callable[[], Store]:
        secrets = MemorySecrets()
        return lambda: MemoryStore("contract", secrets)

    @pytest.fixture
    def write_foreign(self) -> Callable[[Store, str], None]:
        def write(store: Store, text: str) -> None:
            assert isinstance(store, MemoryStore)
            store.write_foreign(text)

        return write

    @pytest.fixture
    def unreachable_store(self) -> Store:
        store = MemoryStore("down")
        store.fail_next("read_current", TransientError("memory store: backend down", hint="wait"))
        return store


class TestVaultKV2Store(StoreContract):
    @staticmethod
    def build(openbao: OpenBao, kv_path: str, tmp_path: Path, **settings: Any) -> VaultKV2Store:
        (tmp_path / "vault-token").write_text(openbao.root_token)
        auth = {"method": "token", "token": {"file": "vault-token"}}
        model = VaultKV2Settings.model_validate({"url": openbao.url, "path": kv_path, "auth": auth, **settings})
        return VaultKV2Store.from_config(model, AdapterContext(policy=POLICY, base_dir=tmp_path,
                                                               clock=FakeClock(StoreContract.created_at)))

    @pytest.fixture
    def make_store(self, openbao: OpenBao, kv_path: str, tmp_path: Path) -> Callable[[], Store]:
        return lambda: self.build(openbao, kv_path, tmp_path)

    @pytest.fixture
    def write_foreign(self, openbao: OpenBao, kv_path: str) -> Callable[[Store, str], None]:
        def write(store: Store, text: str) -> None:
            openbao.client().secrets.kv.v2.create_or_update_secret(
                path=kv_path, secret={"password": text}, mount_point="secret"
            )

        return write

    @pytest.fixture
    def unreachable_store(self, openbao: OpenBao, kv_path: str, tmp_path: Path) -> Store:
        return self.build(openbao, kv_path, tmp_path, url=f"http://127.0.0.1:{free_port()}", timeout_s=2)


class TestAwsSecretsManagerStore(StoreContract):
    @staticmethod
    def build(aws: MotoServer, name: str, own_client: bool = False, **settings: Any) -> AwsSecretsManagerStore:
        model = AwsSecretsManagerSettings(
            **{"secret_id": name, "region": aws.region, "endpoint_url": aws.url, "max_attempts": 1, **settings}
        )
        factory = None if own_client else (lambda s, p: aws.client())
        return AwsSecretsManagerStore.from_config(model, AdapterContext(policy=POLICY), client_factory=factory)

    @pytest.fixture
    def make_store(self, aws: MotoServer, kv_path: str) -> Callable[[], Store]:
        return lambda: self.build(aws, kv_path)

    @pytest.fixture
    def write_foreign(self, aws: MotoServer, kv_path: str) -> Callable[[Store, str], None]:
        def write(store: Store, text: str) -> None:
            try:
                aws.client().put_secret_value(SecretId=kv_path, SecretString=text)
            except botocore.exceptions.ClientError as exc:
                if exc.response["Error"]["Code"] != "ResourceNotFoundException":
                    raise
                aws.client().create_secret(Name=kv_path, SecretString=text)

        return write

    @pytest.fixture
    def unreachable_store(self, aws: MotoServer, kv_path: str) -> Store:
        return self.build(aws, kv_path, own_client=True, endpoint_url=f"http://127.0.0.1:{free_port()}",
                          timeout_s=2.0)  # fmt: skip


PROFILE = '[[profile]]\n  name = "default"\n  product = "clustered"\n  host = "influxdb.example.test"\n'


class TestInfluxctlProfileStore(StoreContract):
    record_issuer = "influxctl-management"  # the key rule: mgmt_token holds management tokens only

    @staticmethod
    def build(path: Path) -> InfluxctlProfileStore:
        settings = InfluxctlProfileSettings.model_validate({"config": path, "profile": "default"})
        ctx = AdapterContext(policy=POLICY, base_dir=path.parent, clock=FakeClock(StoreContract.created_at))
        return InfluxctlProfileStore.from_config(settings, ctx)

    @pytest.fixture
    def config(self, tmp_path: Path) -> Path:
        path = tmp_path / "influxctl" / "config.toml"
        path.parent.mkdir()
        path.write_text(PROFILE)
        return path

    @pytest.fixture
    def make_store(self, config: Path) -> Callable[[], Store]:
        return lambda: self.build(config)

    @pytest.fixture
    def write_foreign(self, config: Path) -> Callable[[Store, str], None]:
        def write(store: Store, text: str) -> None:  # a person edits the file
            config.write_text(PROFILE + f'  mgmt_token = "{text}"\n')

        return write

    @pytest.fixture
    def unreachable_store(self, tmp_path: Path) -> Store:
        return self.build(tmp_path / "absent" / "config.toml")
