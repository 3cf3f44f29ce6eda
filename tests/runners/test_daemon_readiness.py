"""/readyz and a store's own credential: shown in the body, never gating readiness.

A store credential belongs to one policy and every replica shares it. When a dead one made /readyz
503, one wrong Vault role made every replica unready: the chart's PodDisruptionBudget then blocked
`kubectl drain`, and with maxUnavailable 0 a rollout (the one that would fix the credential) never
completed. rotator_credential_ok and the RotatorStoreCredentialExpiring alert report it instead.
A store whose credential calls raise (adapter code) is that credential failing, not a failed pass
for every policy nor a 500 of /readyz.

What does gate them: progress. A pass that raises is none, so a daemon whose passes keep failing
(a journal that answers its ping but refuses the scheduling queries) fails /healthz and /readyz; and
one policy whose planning raises holds back neither the pass nor the other policies.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from rotator.core.clock import FakeClock
from rotator.core.errors import JournalError
from rotator.core.journal import RunRecord, open_journal
from rotator.runners.daemon import TICK_RETRY, Daemon
from tests.runners.test_daemon import POLICY, T0, FakeEngine, Harness, InlineExecutor
from tests.runners.test_daemon import harness as harness  # noqa: F401 - a fixture, used by name


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


# ---------------------------------------------------------------------------------- progress
def test_passes_that_keep_failing_are_no_progress(harness: Callable[..., Harness],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The pass stamped its progress as it began, so one that raised every time (serve() logs it and
    tries again 5 s later) kept /healthz, /readyz and rotator_watchdog_stalled healthy while no due
    rotation could start. A pass woken meanwhile (a job's end) comes before the failed work's retry:
    no progress either."""
    h = harness([("a", "1h", "")])
    h.tick()
    d = h.daemon
    real = d.journal.last_successes

    def refused(*a: Any, **k: Any) -> Any:
        raise JournalError('relation "runs": permission denied')

    monkeypatch.setattr(d.journal, "last_successes", refused)
    h.clock.advance(timedelta(hours=2))  # a is due
    d._heartbeat = time.monotonic() - 3600  # as if no pass had counted for an hour
    for _ in range(3):
        with pytest.raises(JournalError):
            h.tick()
        h.tick()  # woken meanwhile: nothing is due before the retry
        h.clock.advance(timedelta(seconds=TICK_RETRY))
    assert d._journal_state()[0], "the journal answers its ping"
    assert d.progress()[0] and not d.liveness()[0] and not d.readiness()[0], "every pass failed: no progress"

    monkeypatch.setattr(d.journal, "last_successes", real)
    h.tick()
    assert h.calls == ["rotate a"]
    assert d.progress()[0], "within TICK_RETRY of a failed pass, still none"
    later = time.monotonic() + TICK_RETRY
    monkeypatch.setattr(time, "monotonic", lambda: later)
    h.tick()
    assert not d.progress()[0] and d.liveness()[0] and d.readiness()[0]


def test_one_policy_whose_planning_raises_holds_back_neither_the_pass_nor_the_others(
        harness: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch) -> None:
    """After a's job, planning a raised (a bug): the pass failed before the sweep and before it
    started what was due, at every pass, so b was never rotated. Now a is logged, retried at the next
    passes (within TICK_RETRY), and the others go on."""
    h = harness([("a", "1h", ""), ("b", "2h", "")])
    h.tick()
    h.clock.advance(timedelta(hours=1))
    h.tick()
    assert h.calls == ["rotate a"]
    d = h.daemon
    target = d._target

    def broken(policy: Any, *a: Any, **k: Any) -> datetime:
        if policy.name == "a":
            raise RuntimeError("a bug in a's schedule")
        return target(policy, *a, **k)

    monkeypatch.setattr(d, "_target", broken)
    h.clock.advance(timedelta(hours=1))
    wait = h.tick()
    assert h.calls == ["rotate b"], "b rotated, whatever a's planning does"
    assert wait <= TICK_RETRY and d._plan_failures == {"a": 1}
    h.tick()
    assert d._plan_failures == {"a": 2}, "tried again"
    monkeypatch.setattr(d, "_target", target)
    h.tick()
    assert h.calls == ["rotate a"] and d._plan_failures == {}


class _BrokenStore:
    """A store whose credential call ``broken`` raises (a bug in adapter code) while ``raising``."""

    def __init__(self, broken: str) -> None:
        self.broken, self.raising = broken, False

    def _call(self, name: str) -> None:
        if self.raising and name == self.broken:
            raise KeyError("expires_at")

    def credential_due(self) -> None:
        self._call("credential_due")

    def credential_status(self) -> dict[str, Any]:
        self._call("credential_status")
        return {"ok": True, "failures": 0, "error": None, "expires_at": None}


@pytest.mark.parametrize("broken", ["credential_due", "credential_status"])
def test_a_store_whose_credential_calls_raise_stops_neither_the_pass_nor_the_other_policies(
        tmp_path: Path, broken: str) -> None:
    """Planning a after its job asked its store, which raised: the whole pass failed, at every pass, so
    b was never rotated (and a raising credential_status made /readyz and /metrics answer 500)."""
    (tmp_path / "vault-token").write_text("x")
    path = tmp_path / "rotator.toml"
    path.write_text('[rotator]\njournal = "journal.db"\n[daemon]\nlisten = "127.0.0.1:0"\n'
                    + POLICY.format(name="a", schedule="1h", extra="")
                    + POLICY.format(name="b", schedule="2h", extra=""))
    clock = FakeClock(T0)
    calls: list[str] = []
    store = _BrokenStore(broken)

    def factory(policy: Any, config: Any, journal: Any, listener: Any) -> FakeEngine:
        engine = FakeEngine(policy.name, journal, clock, calls)
        engine.stores = [("vault", store if policy.name == "a" else _BrokenStore(broken))]  # type: ignore[attr-defined]
        return engine

    journal = open_journal("sqlite:///" + str(tmp_path / "journal.db"))
    for name in ("a", "b"):
        journal.begin_run(RunRecord(f"boot-{name}", name, "done", "bootstrap", T0, T0, published_at=T0))
    journal.close()
    d = Daemon(path, clock=clock, executor=InlineExecutor(), handle_signals=False, engine_factory=factory)
    d.start()
    try:
        d.tick(clock.now())
        clock.advance(timedelta(hours=1))
        d.tick(clock.now())
        assert calls == ["rotate a"]
        store.raising = True
        clock.advance(timedelta(hours=1))
        d.tick(clock.now())  # plans a after its job: its store raises
        assert sorted(calls[1:]) == ["rotate a", "rotate b"], "b rotated, whatever a's store does; a too"
        assert d._credential_at["a"] == clock.now() + timedelta(seconds=5), "a's stores looked at again in 5 s"
        status, body = _readyz(d)
        assert status == 200 and body["ready"] is True
        if broken == "credential_status":
            assert body["degraded"] == ["a/vault"] and "KeyError" in body["credentials"]["a/vault"]["error"]
            assert _metric(d, "rotator_credential_ok", policy="a", store="vault") == 0
        store.raising = False
        clock.advance(timedelta(seconds=5))
        d.tick(clock.now())
        assert d._credential_read_failures == {} and _readyz(d)[1]["degraded"] == []
        assert _metric(d, "rotator_credential_ok", policy="a", store="vault") == 1
    finally:
        d.shutdown()


def test_a_journal_outage_fails_readiness_not_liveness(harness: Callable[..., Harness],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Passes that failed because the journal refused connections made /healthz fail after a minute: a
    restart loop (a daemon cannot start without its journal) added to the outage. The outage is
    /readyz's; the daemon goes on by itself once the journal is back."""
    h = harness([("a", "1h", "")])
    h.tick()
    d = h.daemon
    real_ping, real_last = d.journal.ping, d.journal.last_successes

    def down(*a: Any, **k: Any) -> Any:
        raise JournalError("journal postgresql://rotator@db/rotator: cannot connect: Connection refused")

    monkeypatch.setattr(d.journal, "last_successes", down)
    monkeypatch.setattr(d.journal, "ping", down)
    h.clock.advance(timedelta(hours=2))  # a is due
    start = time.monotonic()
    clock = [start]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    limit = max(60.0, 3 * d.settings.sweep_interval.total_seconds())
    for _ in range(int(limit // TICK_RETRY) + 2):  # one pass every TICK_RETRY, as serve() does
        with pytest.raises(JournalError):
            h.tick()
        clock[0] += TICK_RETRY
        h.clock.advance(timedelta(seconds=TICK_RETRY))
    assert d.liveness()[0], d.liveness()
    assert not d.readiness()[0]

    monkeypatch.setattr(d.journal, "last_successes", real_last)
    monkeypatch.setattr(d.journal, "ping", real_ping)
    h.tick()
    assert h.calls == ["rotate a"]
    d._check_journal()  # (the watchdog thread's probe, which the harness does not run)
    assert d.liveness()[0] and d.readiness()[0]


def test_a_policy_whose_planning_keeps_failing_is_logged_as_an_error_again(
        harness: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    h = harness([("a", "1h", "")])
    h.tick()
    h.clock.advance(timedelta(hours=1))
    h.tick()
    d = h.daemon

    def broken(*a: Any, **k: Any) -> datetime:
        raise RuntimeError("a bug in a's schedule")

    monkeypatch.setattr(d, "_target", broken)
    h.clock.advance(timedelta(hours=1))
    with caplog.at_level(logging.DEBUG, logger="rotator"):
        for _ in range(8):
            h.tick()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and "planning its next jobs" in r.getMessage()]
    assert [r.args[1] for r in errors] == [1, 2, 4, 8], [r.getMessage() for r in errors]  # type: ignore[index]


def test_a_ping_that_fails_now_and_then_does_not_keep_failing_passes_alive(
        harness: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Each failed pass whose own ping failed counted as progress (an outage is /readyz's): a journal that
    answers its ping but refuses every scheduling query, and times out one ping in eight, kept /healthz
    green for good while no rotation could start."""
    h = harness([("a", "1h", "")])
    h.tick()
    d = h.daemon
    real_ping = d.journal.ping
    clock = [time.monotonic()]
    passes = [0]

    def refused(*a: Any, **k: Any) -> Any:
        passes[0] += 1
        raise JournalError("journal: canceling statement due to lock timeout")

    def flaky_ping() -> None:
        if passes[0] % 8 == 7:
            raise JournalError("journal: canceling statement due to statement timeout")
        real_ping()

    monkeypatch.setattr(d.journal, "last_successes", refused)
    monkeypatch.setattr(d.journal, "ping", flaky_ping)
    h.clock.advance(timedelta(hours=2))  # a is due
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    limit = max(60.0, 3 * d.settings.sweep_interval.total_seconds())
    alive = []
    for _ in range(int(3 * limit // TICK_RETRY)):  # three liveness windows, no pass succeeds
        with pytest.raises(JournalError):
            h.tick()
        clock[0] += TICK_RETRY
        h.clock.advance(timedelta(seconds=TICK_RETRY))
        alive.append(d.liveness()[0])
    assert not alive[-1], "no pass worked for three liveness windows, yet /healthz is green"
    assert h.calls == []


def test_a_journal_a_newer_rotator_upgraded_fails_readiness(daemon: Daemon, tmp_path: Path) -> None:
    """A rolling upgrade's first new replica migrates the shared journal: the old replicas, which take no
    lease on it any more (Journal.acquire_lease), go unready until the rollout replaces them."""
    import sqlite3

    from rotator.core.journal import _MIGRATIONS

    assert _readyz(daemon)[0] == 200
    conn = sqlite3.connect(tmp_path / "journal.db")
    try:
        with conn:
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (len(_MIGRATIONS) + 1,))
    finally:
        conn.close()

    daemon._check_journal()  # (the probe thread's next look)

    status, body = _readyz(daemon)
    assert status == 503 and body["ready"] is False, body
    assert (f"the journal was upgraded to schema {len(_MIGRATIONS) + 1} by a newer rotator; this process "
            f"(schema {len(_MIGRATIONS)}) stops writing it: upgrade or restart it") in body["journal"], body
    assert _metric(daemon, "rotator_journal_up") == 0
    assert daemon.liveness()[0], "not a restart loop: a restart of this version cannot open the journal either"
