"""The registry builds a policy's adapters (rotator/config/registry.py): with the caller's clock, from
settings models that load without any vendor SDK, and only adapters that mypy checked."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar

import pytest

from rotator.config import registry
from rotator.config.policy_types import Policy, StoreBinding
from rotator.core.clock import SYSTEM_CLOCK, FakeClock
from rotator.core.contracts import AdapterContext, StoreState, checked_settings
from rotator.core.engine import Engine
from rotator.core.journal import open_journal
from tests.harness import REPO

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class _Settings:
    name: str = "x"


class _RecordingIssuer:
    """Keeps the context it was built with; never called."""

    kind: ClassVar[str] = "test-recording-issuer"
    settings_model: ClassVar[type[Any]] = _Settings

    def __init__(self, ctx: AdapterContext) -> None:
        self.ctx = ctx

    @classmethod
    def from_config(cls, settings: Any, ctx: AdapterContext) -> _RecordingIssuer:
        checked_settings(cls, settings, _Settings)
        return cls(ctx)

    def mint(self, *args: Any) -> Any:
        raise AssertionError("not called")

    verify = revoke = list_tokens = mint


class _RecordingStore:
    kind: ClassVar[str] = "test-recording-store"
    settings_model: ClassVar[type[Any]] = _Settings

    def __init__(self, ctx: AdapterContext, settings: _Settings) -> None:
        self.ctx = ctx
        self.settings = settings

    @classmethod
    def from_config(cls, settings: Any, ctx: AdapterContext) -> _RecordingStore:
        return cls(ctx, checked_settings(cls, settings, _Settings))

    @property
    def location(self) -> str:
        return f"test:{self.settings.name}"

    def read_current(self) -> StoreState:
        return StoreState(None, False, None)

    def publish(self, *args: Any) -> str:
        raise AssertionError("not called")


@pytest.fixture
def policy(tmp_path: Path) -> Policy:
    registry.force_register("issuer", _RecordingIssuer.kind, _RecordingIssuer)
    registry.force_register("store", _RecordingStore.kind, _RecordingStore)
    return Policy(
        name="p", enabled=True, issuer_type=_RecordingIssuer.kind, issuer_settings=_Settings(),
        stores=(StoreBinding("a", _RecordingStore.kind, _Settings("a")),
                StoreBinding("b", _RecordingStore.kind, _Settings("b"))),
        schedule_text="30d", window_text=None, grace=timedelta(days=1), lifetime=timedelta(days=40),
        verify_timeout=timedelta(minutes=5), adopt=False, description="{tag}", base_dir=tmp_path,
    )  # fmt: skip


def test_adapters_are_built_with_the_callers_clock(policy: Policy) -> None:
    fake = FakeClock(T0)
    issuer = registry.build_issuer(policy, policy.context(fake))
    stores = registry.build_stores(policy, policy.context(fake))
    assert isinstance(issuer, _RecordingIssuer) and issuer.ctx.clock is fake
    assert [(name, store.ctx.clock, store.location) for name, store in stores] == [  # type: ignore[attr-defined]
        ("a", fake, "test:a"), ("b", fake, "test:b")]
    assert issuer.ctx.policy == "p" and issuer.ctx.base_dir == policy.base_dir
    # Without a context: the policy's own, on the system clock.
    assert registry.build_issuer(policy).ctx.clock is SYSTEM_CLOCK  # type: ignore[attr-defined]


def test_the_engines_clock_reaches_its_adapters(policy: Policy, tmp_path: Path) -> None:
    fake = FakeClock(T0)
    journal = open_journal(f"sqlite:///{tmp_path / 'j.db'}")
    engine = Engine(policy, journal, clock=fake)
    assert engine.issuer.ctx.clock is fake  # type: ignore[attr-defined]
    assert all(store.ctx.clock is fake for _, store in engine.stores)  # type: ignore[attr-defined]


def test_an_adapter_refuses_settings_of_another_model(policy: Policy) -> None:
    with pytest.raises(TypeError, match="^test-recording-store needs _Settings, got dict$"):
        _RecordingStore.from_config({"name": "a"}, policy.context())


def test_a_missing_sdk_is_refused_when_the_adapter_loads() -> None:
    """lazy_sdk defers the import, not the check: a missing SDK still fails at registry.load."""
    with pytest.raises(ModuleNotFoundError) as caught:
        registry.lazy_sdk("no_such_sdk_for_rotator_tests")
    assert caught.value.name == "no_such_sdk_for_rotator_tests"
    json_sdk = registry.lazy_sdk("json")
    assert json_sdk.dumps([1]) == "[1]"
    assert json_sdk.decoder.JSONDecodeError is json.decoder.JSONDecodeError
    with pytest.raises(AttributeError):
        json_sdk.no_such_attribute  # noqa: B018


POLICY = """
[[policy]]
name = "p1"
schedule = "30d"
[policy.issuer]
type = "influxctl-management"
[policy.issuer.profile]
product = "clustered"
host = "h.example"
[[policy.store]]
type = "vault-kv2"
url = "https://vault.example:8200"
path = "influx/mgmt"
[policy.store.auth]
method = "token"
token = { env = "VAULT_TOKEN" }
[[policy.store]]
type = "aws-secretsmanager"
secret_id = "prod/influx-mgmt"
region = "eu-west-1"
"""

SDKS = ("hvac", "requests", "boto3", "botocore", "httpx")


def test_loading_a_policy_file_imports_no_vendor_sdk(tmp_path: Path) -> None:
    """`rotator validate` and `status` load the file: the adapters' settings models, not their SDKs
    (issue 12). Building the stores contacts nothing either; their first call imports the SDK."""
    path = tmp_path / "rotator.toml"
    path.write_text(POLICY)
    probe = f"""
import json, sys
from rotator.config import registry
from rotator.config.policy import load_config
config = load_config({str(path)!r})
policy = config.policies[0]
assert [b.type for b in policy.stores] == ["vault-kv2", "aws-secretsmanager"]
loaded = sorted(m for m in {SDKS!r} if m in sys.modules)
stores = registry.build_stores(policy)  # contacts nothing
built = sorted(m for m in {SDKS!r} if m in sys.modules)
sys.modules["rotator.adapters.vault.kv2"].hvac.exceptions.Forbidden  # first use of the lazily bound SDK
sys.modules["rotator.adapters.aws.secretsmanager"].botocore.exceptions.ClientError
print(json.dumps({{"after_load": loaded, "after_build": built,
                  "after_use": sorted(m for m in {SDKS!r} if m in sys.modules)}}))
"""
    proc = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "VAULT_TOKEN": "not-used"})
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["after_load"] == [] and result["after_build"] == []
    assert {"hvac", "requests", "botocore"} <= set(result["after_use"]), "the probe did reach the SDKs"


def test_every_built_in_adapter_carries_its_conformance_line() -> None:
    """mypy checks each built-in adapter against its Protocol through one line in its module
    (``_conforms: type[Issuer] = Class`` under TYPE_CHECKING); a new adapter without one fails here."""
    missing = []
    for group, protocol in (("rotator.issuers", "Issuer"), ("rotator.stores", "Store")):
        for ep in entry_points(group=group):
            module, _, attr = ep.value.partition(":")
            if not module.startswith("adapters."):
                continue
            source = (REPO / (module.replace(".", "/") + ".py")).read_text()
            wanted = f"_conforms: type[{protocol}] = {attr}"
            if not any(wanted == ast.unparse(node) for node in ast.walk(ast.parse(source))
                       if isinstance(node, ast.AnnAssign)):
                missing.append(f"{ep.name} ({module})")
    assert missing == []
