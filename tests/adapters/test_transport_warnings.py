"""Insecure transport is never silent (issue 11.6): one mechanism for every adapter kind.

Each adapter's settings say what exposes a token on the wire (``transport_warnings()``, worded by
rotator/adapters/transport.py); ``Policy.transport_warnings()`` collects them; ``rotator validate`` prints
them (still exit 0: they are warnings) and the engine logs each as WARNING when a run starts.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rotator.adapters.aws.secretsmanager import AwsSecretsManagerSettings
from rotator.adapters.http.influxdb2 import InfluxDB2Settings
from rotator.adapters.http.influxdb3 import InfluxDB3Settings
from rotator.adapters.http.management_api import ManagementApiSettings
from rotator.adapters.influxctl.management import InfluxctlManagementSettings
from rotator.adapters.transport import is_loopback_host
from rotator.adapters.vault.kv2 import VaultKV2Settings
from rotator.config.adapter_settings import validate_settings
from rotator.config.policy import load_config
from rotator.core.engine import Engine
from rotator.core.errors import PermanentError
from rotator.core.journal import open_journal
from rotator.core.retry import RetryPolicy
from tests.harness import REPO

V3 = {"credential": {"env": "ADMIN"}}
V2 = {"org_id": "0123456789abcdef", "credential": {"env": "ADMIN"}, "copy_from_authorization_id": "0123456789abcdef"}
VAULT = {"path": "influx/mgmt", "auth": {"method": "token", "token": {"env": "VAULT_TOKEN"}}}
MGMT_API = {
    "product": "clustered",
    "permissions": [{"action": "read", "resource": "db"}],
    "verify": {"database": "db"},
    "management_token": {"env": "MGMT"},
}


def warnings_of(model: Any, settings: dict[str, Any]) -> list[str]:
    """The warnings of ``settings`` validated as the policy loader does (pydantic model or dataclass)."""
    result: list[str] = validate_settings(model, settings).transport_warnings()
    return result


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("localhost", True), ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("[::1]", True),
     ("api.localhost", False), ("LOCALHOST.", True), ("10.0.0.1", False), ("influx.example.test", False),
     ("", False), (None, False), ("localhost.example.test", False)],
)  # fmt: skip
def test_loopback_hosts(host: str | None, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


@pytest.mark.parametrize(
    ("model", "extra"), [(InfluxDB3Settings, V3), (InfluxDB2Settings, V2)], ids=["influxdb3", "influxdb2"]
)
def test_http_issuers(model: Any, extra: dict[str, Any]) -> None:
    assert warnings_of(model, {"base_url": "https://influx.example.test:8181", **extra}) == []
    assert warnings_of(model, {"base_url": "http://127.0.0.1:8181", **extra}) == []  # loopback: tests, sidecars
    [plain] = warnings_of(model, {"base_url": "http://influx.example.test:8181", **extra})
    assert "`base_url` is plain http:// to influx.example.test" in plain
    # a *.localhost name is resolved like any other by many resolvers: it may leave the machine
    [named] = warnings_of(model, {"base_url": "http://influx.localhost:8181", **extra})
    assert "`base_url` is plain http:// to influx.localhost" in named
    assert warnings_of(model, {"base_url": "http://localhost:8181", **extra}) == []
    [unverified] = warnings_of(model, {"base_url": "https://influx.example.test", "tls_verify": False, **extra})
    assert "`tls_verify = false`" in unverified and "influx.example.test" in unverified


def test_management_api_warns_of_unchecked_certificates_on_either_plane() -> None:
    """verify sends the new database token to cluster_host, which base_url (the management plane)
    may not be: an unchecked certificate there is warned of too, once when both are one host."""
    sidecar = {**MGMT_API, "cluster_host": "https://cluster.example.test", "base_url": "http://127.0.0.1:8080",
               "tls_verify": False}
    [unverified] = warnings_of(ManagementApiSettings, sidecar)
    assert "`tls_verify = false`" in unverified and "cluster.example.test" in unverified
    [one] = warnings_of(ManagementApiSettings, {**MGMT_API, "cluster_host": "https://cluster.example.test",
                                                 "tls_verify": False})  # base_url: <cluster_host>/api/v0
    assert "cluster.example.test" in one
    both = warnings_of(ManagementApiSettings, {**sidecar, "base_url": "https://mgmt.example.test"})
    assert len(both) == 2 and "mgmt.example.test" in both[0] and "cluster.example.test" in both[1]


def test_management_api_including_the_store_its_token_comes_from() -> None:
    secure = {**MGMT_API, "cluster_host": "https://cluster.example.test"}
    assert warnings_of(ManagementApiSettings, secure) == []
    found = warnings_of(
        ManagementApiSettings,
        {**MGMT_API, "cluster_host": "http://cluster.example.test", "tls_verify": False},
    )
    assert any("`base_url` is plain http:// to cluster.example.test" in w for w in found)  # <cluster_host>/api/v0
    assert any("`cluster_host` is plain http://" in w for w in found)
    from_store = {
        **MGMT_API,
        "cluster_host": "https://cluster.example.test",
        "management_token": None,
        "management_token_from": {
            "type": "vault-kv2", "url": "https://vault.example.test", "tls_verify": False, **VAULT
        },
    }
    [store] = warnings_of(ManagementApiSettings, from_store)
    assert store.startswith("management_token_from: `tls_verify = false`")


def test_influxctl_profile_tls() -> None:
    def profile(**tls: Any) -> dict[str, Any]:
        return {"profile": {"product": "clustered", "host": tls.pop("host", "influx.example.test"), "tls": tls}}

    assert warnings_of(InfluxctlManagementSettings, profile()) == []
    [insecure] = warnings_of(InfluxctlManagementSettings, profile(insecure=True))
    assert "`profile.tls.insecure = true`" in insecure and "influx.example.test" in insecure
    [disabled] = warnings_of(InfluxctlManagementSettings, profile(disable=True))
    assert "`profile.tls.disable = true`" in disabled
    assert warnings_of(InfluxctlManagementSettings, profile(disable=True, host="127.0.0.1")) == []


def test_vault_store() -> None:
    assert warnings_of(VaultKV2Settings, {"url": "https://vault.example.test:8200", **VAULT}) == []
    assert warnings_of(VaultKV2Settings, {"url": "http://127.0.0.1:8200", **VAULT}) == []
    [plain] = warnings_of(VaultKV2Settings, {"url": "http://vault.example.test:8200", **VAULT})
    assert "`url` is plain http:// to vault.example.test" in plain
    [unverified] = warnings_of(VaultKV2Settings, {"url": "https://vault.example.test", "tls_verify": False, **VAULT})
    assert "`tls_verify = false`" in unverified


def test_aws_store_endpoints() -> None:
    base = {"secret_id": "influx/mgmt", "region": "eu-west-1"}
    assert warnings_of(AwsSecretsManagerSettings, base) == []
    assert warnings_of(AwsSecretsManagerSettings, {**base, "endpoint_url": "http://127.0.0.1:5000"}) == []
    [plain] = warnings_of(AwsSecretsManagerSettings, {**base, "endpoint_url": "http://sm.example.test"})
    assert "`endpoint_url` is plain http:// to sm.example.test" in plain


INSECURE_POLICY = """\
[rotator]
journal = "journal.db"

[[policy]]
name = "lax"
schedule = "30d"
[policy.issuer]
type = "influxdb3"
base_url = "https://influx.example.test:8181"
tls_verify = false
credential = { env = "INFLUXDB3_ADMIN" }
[[policy.store]]
type = "vault-kv2"
name = "vault"
url = "http://vault.example.test:8200"
path = "influx/lax"
auth = { method = "token", token = { env = "VAULT_TOKEN" } }

[[policy]]
name = "strict"
schedule = "30d"
[policy.issuer]
type = "influxctl-management"
[policy.issuer.profile]
product = "clustered"
host = "influx.example.test"
[[policy.store]]
type = "vault-kv2"
url = "https://vault.example.test:8200"
path = "influx/strict"
auth = { method = "token", token = { env = "VAULT_TOKEN" } }
"""


def test_rotator_validate_prints_each_warning_and_still_exits_0(tmp_path: Path) -> None:
    (tmp_path / "rotator.toml").write_text(INSECURE_POLICY)
    done = subprocess.run(
        [sys.executable, "-m", "rotator.runners.cli", "validate", str(tmp_path / "rotator.toml")],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "TMPDIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.startswith("rotator: warning: ")]
    assert len(warnings) == 2, done.stderr
    assert "policy 'lax' issuer: `tls_verify = false`" in warnings[0]
    assert "policy 'lax' store 'vault': `url` is plain http:// to vault.example.test" in warnings[1]
    assert "strict" not in done.stderr
    assert "valid, 2 policies" in done.stdout


class _StopAtPlan:
    """A store whose first read fails: the run stops at PLAN, before any side effect."""

    location = "stub:stop"

    def read_current(self) -> Any:
        raise PermanentError("stop at PLAN (test)")

    def publish(self, record: Any, expected_version: str | None) -> str:
        raise AssertionError("never reached")


def test_a_run_logs_each_warning_when_it_starts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "rotator.toml").write_text(INSECURE_POLICY)
    config = load_config(tmp_path / "rotator.toml")
    lax, strict = config.policies
    for policy in (lax, strict):
        engine = Engine(
            policy,
            open_journal(config.journal_url()),
            issuer=object(),  # type: ignore[arg-type]  # never reached: PLAN stops first
            stores=[("stub", _StopAtPlan())],  # type: ignore[list-item]
            retry=RetryPolicy(1, 0.01, 0.01),
        )
        with caplog.at_level(logging.WARNING, logger="rotator.engine"):
            try:
                engine.rotate()
            except PermanentError:
                pass
    lines = [r.getMessage() for r in caplog.records if r.name == "rotator.engine" and r.levelno == logging.WARNING]
    insecure = [line for line in lines if line.startswith("insecure transport: ")]
    assert len(insecure) == 2
    assert "policy 'lax' issuer: `tls_verify = false`" in insecure[0]
    assert "policy 'lax' store 'vault': `url` is plain http://" in insecure[1]
    assert not any("strict" in line for line in insecure)
