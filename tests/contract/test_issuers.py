"""rotator.testing's IssuerContract over every built-in issuer and the in-memory one.

Each class provides ``issuer`` (built for the policy ``contract`` on a fake of its own: the fake
influxctl of tests/fakes/ run as a subprocess, or the OpenAPI-validated HTTP fakes over loopback,
set up as tests/adapters/test_influxctl_management.py, test_influxctl_database.py, test_management_api.py,
test_influxdb3.py and test_influxdb2.py do), ``credential`` where the issuer authenticates with
the published token, and the ids its checks need; the tests are in rotator/testing/suites.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rotator.adapters.http.influxdb2 import InfluxDB2Issuer, InfluxDB2Settings
from rotator.adapters.http.influxdb3 import InfluxDB3Issuer, InfluxDB3Settings
from rotator.adapters.http.management_api import ManagementApiIssuer, ManagementApiSettings
from rotator.adapters.influxctl.database import InfluxctlDatabaseIssuer, InfluxctlDatabaseSettings
from rotator.adapters.influxctl.management import InfluxctlManagementIssuer, InfluxctlManagementSettings
from rotator.config.adapter_settings import validate_settings
from rotator.core.contracts import AdapterContext, Issuer
from rotator.core.errors import TransientError
from rotator.core.secret import Secret
from rotator.sandbox.openbao_dev import free_port
from rotator.testing import IssuerContract, MemoryIssuer
from tests.fakes.fixtures import FakeInfluxctlFixture
from tests.fakes.influxdb2_fake import BUCKET_ID, ORG_ID, InfluxDB2Fake
from tests.fakes.influxdb3_fake import InfluxDB3Fake
from tests.fakes.management_api_fake import ManagementApiFake

POLICY = IssuerContract.policy
UNKNOWN_UUID = "99999999-9999-4999-8999-999999999999"
PROFILE = {"product": "clustered", "host": "influxdb.example.test", "port": 443}


class TestMemoryIssuer(IssuerContract):
    unknown_token_id = "mem-9999"
    malformed_token_id = "not-an-id"

    @pytest.fixture
    def issuer(self) -> Issuer:
        return MemoryIssuer(check_credential=True)

    @pytest.fixture
    def credential(self, issuer: MemoryIssuer) -> Secret:
        return Secret(issuer.tokens.create("bootstrap")[0])

    @pytest.fixture
    def unreachable_issuer(self) -> Issuer:
        issuer = MemoryIssuer()
        issuer.fail_next("list_tokens", TransientError("memory issuer: down", hint="wait"))
        return issuer


class TestInfluxctlManagementIssuer(IssuerContract):
    """Self-rotating: authenticates with the management token the stores hold."""

    unknown_token_id = UNKNOWN_UUID
    malformed_token_id = "not-a-uuid"

    @pytest.fixture
    def issuer(self, fake_influxctl: FakeInfluxctlFixture) -> Issuer:
        model = validate_settings(InfluxctlManagementSettings,
                                  {"influxctl": str(fake_influxctl.binary), "profile": PROFILE})  # fmt: skip
        return InfluxctlManagementIssuer.from_config(model, AdapterContext(POLICY, base_dir=fake_influxctl.workdir))

    @pytest.fixture
    def credential(self, fake_influxctl: FakeInfluxctlFixture) -> Secret:
        return Secret(fake_influxctl.state.add_token("bootstrap")[0])

    @pytest.fixture
    def unreachable_issuer(self, issuer: Issuer, fake_influxctl: FakeInfluxctlFixture) -> Issuer:
        fake_influxctl.state.add_fault("management list", "exit")  # influxctl: "connection refused"
        return issuer


class TestInfluxctlDatabaseIssuer(IssuerContract):
    """Database tokens, minted with a management token of its own (from a file)."""

    unknown_token_id = UNKNOWN_UUID
    malformed_token_id = "-rf"

    @pytest.fixture
    def issuer(self, fake_influxctl: FakeInfluxctlFixture) -> Issuer:
        mgmt, _ = fake_influxctl.state.add_token("automation manager")
        (fake_influxctl.workdir / "mgmt.token").write_text(mgmt + "\n")
        model = validate_settings(InfluxctlDatabaseSettings, {
            "influxctl": str(fake_influxctl.binary), "profile": PROFILE,
            "auth": {"method": "mgmt_token", "token": {"file": "mgmt.token"}},
            "permissions": {"read": ["db1"], "write": ["db1"]},
        })  # fmt: skip
        return InfluxctlDatabaseIssuer.from_config(model, AdapterContext(POLICY, base_dir=fake_influxctl.workdir))

    @pytest.fixture
    def unreachable_issuer(self, issuer: Issuer, fake_influxctl: FakeInfluxctlFixture) -> Issuer:
        fake_influxctl.state.add_fault("token list", "exit")  # influxctl: "connection refused"
        return issuer


@pytest.mark.parametrize("management_api_fake", ["clustered"], indirect=True)
class TestManagementApiIssuer(IssuerContract):
    """Database tokens through the Management API v0 (one product: dedicated differs only in URLs)."""

    unknown_token_id = UNKNOWN_UUID
    malformed_token_id = "../management/tokens"

    @staticmethod
    def build(fake: ManagementApiFake, tmp_path: Path, **overrides: object) -> ManagementApiIssuer:
        value, _ = fake.add_management_token()
        (tmp_path / "mgmt-token").write_text(value + "\n")
        raw = {
            "product": fake.product, "base_url": fake.base_url, "cluster_host": fake.cluster_url,
            "permissions": [{"action": "read", "resource": "telemetry"}, {"action": "write", "resource": "telemetry"}],
            "verify": {"database": "telemetry"}, "timeout_s": 2, "management_token": {"file": "mgmt-token"},
            **overrides,
        }  # fmt: skip
        settings = ManagementApiSettings.model_validate(raw)
        return ManagementApiIssuer.from_config(settings, AdapterContext(POLICY, base_dir=tmp_path))

    @pytest.fixture
    def issuer(self, management_api_fake: ManagementApiFake, tmp_path: Path) -> Issuer:
        return self.build(management_api_fake, tmp_path)

    @pytest.fixture
    def unreachable_issuer(self, management_api_fake: ManagementApiFake, tmp_path: Path) -> Issuer:
        closed = f"http://127.0.0.1:{free_port()}"
        return self.build(management_api_fake, tmp_path, base_url=f"{closed}/api/v0", cluster_host=closed)


class TestInfluxDB3Issuer(IssuerContract):
    """Named admin tokens, self-rotating (``credential = "self"``); deleted tokens are not listed."""

    unknown_token_id = "rotator-contract-0000000000000000"
    malformed_token_id = " padded "

    @staticmethod
    def build(url: str) -> InfluxDB3Issuer:
        model = InfluxDB3Settings.model_validate({"base_url": url, "credential": "self", "timeout_s": 2})
        return InfluxDB3Issuer.from_config(model, AdapterContext(POLICY))

    @pytest.fixture
    def issuer(self, influxdb3_fake: InfluxDB3Fake) -> Issuer:
        return self.build(influxdb3_fake.url)

    @pytest.fixture
    def credential(self, influxdb3_fake: InfluxDB3Fake) -> Secret:
        return Secret(influxdb3_fake.add_named_admin("human-bootstrap"))

    @pytest.fixture
    def unreachable_issuer(self) -> Issuer:
        return self.build(f"http://127.0.0.1:{free_port()}")


ADMIN_ENV = "INFLUXDB2_ADMIN_FOR_CONTRACT"


class TestInfluxDB2Issuer(IssuerContract):
    """App tokens minted with an operator credential of its own; revoked = set inactive."""

    unknown_token_id = "0000000000000001"
    malformed_token_id = "NOT-A-V2-ID"

    @staticmethod
    def build(url: str) -> InfluxDB2Issuer:
        permissions = [{"action": action, "resource": {"type": "buckets", "id": BUCKET_ID, "orgID": ORG_ID}}
                       for action in ("read", "write")]  # fmt: skip
        model = InfluxDB2Settings.model_validate({"base_url": url, "org_id": ORG_ID, "timeout_s": 2,
                                                  "credential": {"env": ADMIN_ENV}, "permissions": permissions})
        return InfluxDB2Issuer.from_config(model, AdapterContext(POLICY))

    @pytest.fixture
    def issuer(self, influxdb2_fake: InfluxDB2Fake, monkeypatch: pytest.MonkeyPatch) -> Issuer:
        monkeypatch.setenv(ADMIN_ENV, influxdb2_fake.operator_value)
        return self.build(influxdb2_fake.url)

    @pytest.fixture
    def unreachable_issuer(self, monkeypatch: pytest.MonkeyPatch) -> Issuer:
        monkeypatch.setenv(ADMIN_ENV, "contract-admin-value-0123456789")
        return self.build(f"http://127.0.0.1:{free_port()}")
