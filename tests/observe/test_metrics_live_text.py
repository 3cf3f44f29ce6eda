"""LiveText (rotator/observe/metrics.py): the watchdog's and the stores' credential metrics, written as
the registry writes them, with each credential's lines made again only for a new state (issue 12:
prometheus_client wrote 10,006 credential lines at every scrape of 5,000 Vault policies)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from rotator.observe.metrics import CredentialState, LiveSnapshot, LiveText, Metrics

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def families(text: str) -> list[tuple[str, str]]:
    return [(f.name, f.documentation) for f in text_string_to_metric_families(text)]


def credentials(n: int) -> list[CredentialState]:
    odd = ['we"ird\\', "new\nline"]  # label values the text format escapes
    return [CredentialState(f"p{i}" if i >= 2 else odd[i], "vault", i % 3 != 0, i % 4,
                            None if i % 5 == 0 else NOW + timedelta(seconds=i * 7.25)) for i in range(n)]


@pytest.mark.parametrize("n", [0, 1, 30])
def test_live_text_writes_what_the_registry_writes(n: int) -> None:
    snap = LiveSnapshot(stalled=n == 1, last_progress=NOW.timestamp() + 0.5, credentials=credentials(n))
    reference = Metrics()
    reference.watch_live(lambda: snap)
    registry = generate_latest(reference.registry).decode()
    live = {k: v for k, v in samples(registry).items() if k[0].startswith(("rotator_watchdog", "rotator_credential"))}
    text = LiveText().render(snap).decode()

    assert samples(text) == live
    assert families(text) == [f for f in families(registry) if f[0].startswith(("rotator_watchdog",
                                                                                  "rotator_credential"))]


def test_live_text_makes_lines_again_only_for_a_new_credential_state(monkeypatch: pytest.MonkeyPatch) -> None:
    creds = credentials(50)
    text = LiveText()
    made: list[str] = []
    original = LiveText._make

    def make(cred: CredentialState) -> Any:
        made.append(cred.policy)
        return original(cred)

    monkeypatch.setattr(LiveText, "_make", staticmethod(make))
    first = text.render(LiveSnapshot(False, 1.0, creds))
    assert len(made) == 50
    made.clear()
    assert text.render(LiveSnapshot(True, 2.0, list(creds))).replace(b"stalled 1.0", b"stalled 0.0").replace(
        b"seconds 2.0", b"seconds 1.0") == first
    assert made == [], "the same states: every line kept"
    creds[7] = CredentialState("p7", "vault", False, 3, NOW)
    got = samples(text.render(LiveSnapshot(False, 1.0, creds)).decode())
    assert made == ["p7"]
    assert got[("rotator_credential_ok", (("policy", "p7"), ("store", "vault")))] == 0
    assert got[("rotator_credential_renewal_failures", (("policy", "p7"), ("store", "vault")))] == 3
    made.clear()
    got = samples(text.render(LiveSnapshot(False, 1.0, creds[:10])).decode())
    assert made == [] and {dict(labels)["policy"] for name, labels in got if name == "rotator_credential_ok"} == {
        c.policy for c in creds[:10]}, "the policies that left the configuration leave the metrics"


def test_the_exposition_holds_the_live_metrics_once_and_the_registry_none() -> None:
    metrics = Metrics()
    cred = CredentialState("p", "vault", True, 0, NOW)
    metrics.watch_live_text(lambda: LiveSnapshot(False, 5.0, [cred]))
    body = metrics.exposition().decode()

    assert body.count("# TYPE rotator_credential_ok gauge") == 1
    assert samples(body)[("rotator_credential_expiry_timestamp_seconds", (("policy", "p"), ("store", "vault")))] \
        == NOW.timestamp()
    assert samples(body)[("rotator_watchdog_last_progress_timestamp_seconds", ())] == 5.0
    assert metrics.registry.get_sample_value("rotator_credential_ok", {"policy": "p", "store": "vault"}) is None
