"""/readyz and a store's own credential: shown in the body, never gating readiness.

A store credential belongs to one policy and every replica shares it. When a dead one made /readyz
503, one wrong Vault role made every replica unready: the chart's PodDisruptionBudget then blocked
`kubectl drain`, and with maxUnavailable 0 a rollout (the one that would fix the credential) never
completed. rotator_credential_ok and the RotatorStoreCredentialExpiring alert report it instead.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from rotator.core.clock import FakeClock
from rotator.runners.daemon import Daemon
from tests.runners.test_daemon import POLICY, T0, FakeEngine, InlineExecutor


class _Credential:
    """A store's own credential (a Vault token), as VaultLogin reports it."""

    def __init__(self, ok: bool) -> None:
        self.ok = ok

    def credential_due(self) -> None:
        return None

    def credential_status(self) -> dict[str, Any]:
        return {"ok": self.ok, "failures": 0 if self.ok else 3, "error": None if self.ok else "Forbidden",
                "expires_at": None}


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    (tmp_path / "vault-token").write_text("x")
    path = tmp_path / "rotator.toml"
    path.write_text('[rotator]\njournal = "journal.db"\n[daemon]\nlisten = "127.0.0.1:0"\n'
                    + POLICY.format(name="a", schedule="1h", extra="")
                    + POLICY.format(name="b", schedule="1h", extra=""))
    clock = FakeClock(T0)

    def factory(policy: Any, config: Any, journal: Any, listener: Any) -> FakeEngine:
        engine = FakeEngine(policy.name, journal, clock, [])
        engine.stores = [("vault", _Credential(ok=policy.name != "b"))]  # type: ignore[attr-defined]
        return engine

    d = Daemon(path, clock=clock, executor=InlineExecutor(), handle_signals=False, engine_factory=factory)
    d.start()
    try:
        yield d
    finally:
        d.shutdown()


def _readyz(d: Daemon) -> tuple[int, dict[str, Any]]:
    assert d.health is not None
    url = f"http://127.0.0.1:{d.health.address[1]}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_a_dead_store_credential_shows_in_readyz_and_leaves_the_replica_ready(daemon: Daemon) -> None:
    status, body = _readyz(daemon)

    assert status == 200 and body["ready"] is True, body
    assert body["degraded"] == ["b/vault"]
    assert body["credentials"]["b/vault"] == {"ok": False, "failures": 3, "error": "Forbidden",
                                              "expires_in_s": None}
    assert body["credentials"]["a/vault"]["ok"] is True
    assert _metric(daemon, "rotator_credential_ok", policy="b", store="vault") == 0


def _metric(d: Daemon, name: str, **labels: str) -> float | None:
    """A sample of /metrics (the credentials are written by LiveText, not through the registry)."""
    assert d.health is not None
    with urllib.request.urlopen(f"http://127.0.0.1:{d.health.address[1]}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


def test_readyz_still_fails_for_what_makes_the_process_unusable(daemon: Daemon) -> None:
    daemon.request_stop()

    status, body = _readyz(daemon)

    assert status == 503 and body["stopping"] is True and body["degraded"] == ["b/vault"]
