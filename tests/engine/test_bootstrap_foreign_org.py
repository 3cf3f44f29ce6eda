"""`rotator bootstrap` refuses an InfluxDB v2 authorization of another organization than org_id.

Since 1fb4319 the influxdb2 lookup by id (``token_info``) answers such an authorization too, so that
a pending revocation of it is not recorded done while it stays active. Bootstrap falls back to that
lookup (the v2 listing by org_id leaves it out), and verify accepts any token that reads a bucket: the
lookup marks it ``foreign`` and bootstrap refuses it, naming both organizations, before it writes a
store or records a run. The same bootstrap succeeds once org_id is corrected (invariant 9).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rotator.adapters.http.influxdb2 import InfluxDB2Issuer, InfluxDB2Settings
from rotator.core.clock import SystemClock
from rotator.core.contracts import AdapterContext
from rotator.core.engine import Engine
from rotator.core.errors import ConfigError
from rotator.core.journal import open_journal
from rotator.core.retry import RetryPolicy
from rotator.core.secret import Secret
from rotator.testing import MemoryStore
from tests.engine.test_state_machine import POLICY, World
from tests.fakes.influxdb2_fake import BUCKET_ID, ORG_ID, InfluxDB2Fake

OTHER_ORG = "ffffffffffffffff"
ADMIN_ENV = "INFLUXDB2_ADMIN_FOR_BOOTSTRAP_TEST"
READ_BUCKET = [{"action": "read", "resource": {"type": "buckets", "id": BUCKET_ID, "orgID": ORG_ID}}]


def _engine(tmp_path: Path, fake: InfluxDB2Fake, org_id: str, stores: dict[str, MemoryStore]) -> Engine:
    model = InfluxDB2Settings.model_validate({"base_url": fake.url, "org_id": org_id, "credential": {"env": ADMIN_ENV},
                                              "permissions": READ_BUCKET, "timeout_s": 5})
    issuer = InfluxDB2Issuer.from_config(model, AdapterContext(policy=POLICY))
    policy = World(tmp_path).policy._replace(issuer_type="influxdb2", issuer_settings=model)
    return Engine(policy, open_journal(f"sqlite:///{tmp_path / 'journal.db'}"), issuer=issuer,
                  stores=list(stores.items()), clock=SystemClock(), retry=RetryPolicy(3, 0.01, 0.05))


def test_bootstrap_refuses_an_authorization_of_another_org_and_writes_nothing(
    tmp_path: Path, influxdb2_fake: InfluxDB2Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = influxdb2_fake
    monkeypatch.setenv(ADMIN_ENV, fake.operator_value)
    value, token_id = fake.add_authorization("a person's", READ_BUCKET)  # of the fake's organization, ORG_ID
    stores = {name: MemoryStore(name) for name in ("a", "b")}
    # The policy names another organization: the token is not one of its issuer's.
    engine = _engine(tmp_path, fake, OTHER_ORG, stores)
    with pytest.raises(ConfigError) as err:
        engine.bootstrap(Secret(value), token_id, None)
    text = f"{err.value} {err.value.hint}"
    assert f"token id {token_id} is not an active token of the issuer" in text
    assert f"belongs to organization {ORG_ID}, not org_id {OTHER_ORG}" in text
    assert "org_id" in (err.value.hint or "") and value not in text
    assert all(store.read_current().record is None for store in stores.values()), "no store is written"
    assert engine.journal.runs(POLICY) == [] and engine.journal.last_success(POLICY) is None, "no run is recorded"
    assert fake.authorization(token_id)["status"] == "active"  # type: ignore[index]

    # org_id corrected: the same bootstrap publishes it.
    assert _engine(tmp_path, fake, ORG_ID, stores).bootstrap(Secret(value), token_id, None).ok
    assert {store.read_current().token_id for store in stores.values()} == {token_id}
