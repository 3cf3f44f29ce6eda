"""The stores' keep-alive jobs (a Vault token's renewal) are never queued behind the rotations.

They shared the run threads: with every worker in a long run (a verify waits up to verify_timeout), a
short-lived token's renewal waited behind them and the token expired (token auth: dead for good;
AppRole: one more login, using up a secret_id use). They now have a thread of their own.

Nor behind a job of their own policy that only waits for a worker: only the policy's run, once it
runs, holds its keep-alive back, and the two never use the policy's stores at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.core.clock import FakeClock
from rotator.core.journal import Revocation, RunRecord, open_journal
from rotator.runners.daemon import Daemon
from tests.runners.test_daemon import POLICY, T0, FakeEngine

TTL = timedelta(seconds=300)


class _Token:
    """A store's credential that lives TTL after each keep_alive and asks for it 100 s before."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.renewed_at: datetime | None = None
        self.kept_alive: list[datetime] = []
        self.called = threading.Event()

    def credential_due(self) -> datetime:
        return T0 if self.renewed_at is None else self.renewed_at + TTL - timedelta(seconds=100)

    def keep_alive(self) -> None:
        self.renewed_at = self.clock.now()
        self.kept_alive.append(self.renewed_at)
        self.called.set()

    def credential_status(self) -> dict[str, Any]:
        left = TTL if self.renewed_at is None else self.renewed_at + TTL - self.clock.now()
        return {"ok": left > TTL / 6, "failures": 0, "error": None, "expires_at": None}


@pytest.fixture
def release() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()  # never leave a run thread blocked


def test_a_renewal_runs_on_time_while_the_only_worker_is_in_a_long_run(tmp_path: Path,
                                                                        release: threading.Event) -> None:
    (tmp_path / "vault-token").write_text("x")
    config = tmp_path / "rotator.toml"
    config.write_text('[rotator]\njournal = "journal.db"\n[daemon]\naudit = { file = "audit.jsonl" }\nworkers = 1\n'
                      + POLICY.format(name="a", schedule="1h", extra="")
                      + POLICY.format(name="b", schedule="30d", extra=""))
    journal = open_journal("sqlite:///" + str(tmp_path / "journal.db"))
    a_last = T0 - timedelta(hours=1) + timedelta(seconds=100)  # a is due 100 s after T0
    journal.begin_run(RunRecord("boot-a", "a", "done", "bootstrap", a_last, a_last, published_at=a_last))
    journal.begin_run(RunRecord("boot-b", "b", "done", "bootstrap", T0, T0, published_at=T0))
    clock = FakeClock(T0)
    token = _Token(clock)
    running = threading.Event()

    def factory(policy: Any, cfg: Any, jr: Any, listener: Any) -> FakeEngine:
        engine = FakeEngine(policy.name, jr, clock, [])
        if policy.name == "a":
            rotate = engine.rotate

            def long_rotation(**kw: Any) -> Any:
                running.set()
                release.wait(30)  # a verify waiting minutes for the new token to work
                return rotate(**kw)

            engine.rotate = long_rotation  # type: ignore[method-assign]
        else:
            engine.stores = [("vault", token)]  # type: ignore[attr-defined]
        return engine

    d = Daemon(config, clock=clock, serve_http=False, engine_factory=factory, handle_signals=False)
    d.start()
    try:
        d.tick(clock.now())
        assert token.called.wait(5), "b's first keep-alive"
        _wait_idle(d, "b")
        clock.advance(timedelta(seconds=100))
        d.tick(clock.now())
        assert running.wait(5), "a's rotation did not start"
        late = []
        while clock.now() < T0 + timedelta(minutes=10):  # the daemon's loop, a pass every 10 s
            due = token.credential_due()
            token.called.clear()
            clock.advance(timedelta(seconds=10))
            d.tick(clock.now())
            if clock.now() >= due:
                assert token.called.wait(5), f"b's keep-alive due at {due:%H:%M:%S} waits behind a's run"
                _wait_idle(d, "b")
                late.append(token.kept_alive[-1] - due)
            assert token.credential_status()["ok"] is True, f"b's token ran out at {clock.now():%H:%M:%S}"
        with d._lock:
            assert d._busy["a"][0] == "rotate", "a's run held the only worker throughout"
        assert len(late) >= 2 and max(late) < timedelta(seconds=10), "within a pass of its due time"
    finally:
        release.set()
        d.shutdown()


def test_the_keep_alive_thread_stops_with_the_daemon(tmp_path: Path) -> None:
    (tmp_path / "vault-token").write_text("x")
    config = tmp_path / "rotator.toml"
    config.write_text('[rotator]\njournal = "journal.db"\n[daemon]\naudit = { file = "audit.jsonl" }\n'
                      + POLICY.format(name="a", schedule="1h", extra=""))
    d = Daemon(config, clock=FakeClock(T0), serve_http=False, handle_signals=False,
               engine_factory=lambda policy, cfg, jr, listener: FakeEngine(policy.name, jr, FakeClock(T0), []))
    d.start()
    pool = d._credential_executor
    assert pool is not d._executor
    d.shutdown()
    with pytest.raises(RuntimeError):
        pool.submit(lambda: None)


def _wait_idle(d: Daemon, name: str, *, runs: bool = True) -> None:
    """Until no job of ``name`` is left: its keep-alive, and its run unless ``runs`` is false."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with d._lock:
            if name not in d._keeping_alive and (not runs or name not in d._busy):
                return
        time.sleep(0.01)
    raise AssertionError(f"{name}'s job did not end")


def test_a_renewal_is_not_held_back_by_its_policys_job_waiting_for_a_worker(tmp_path: Path,
                                                                            release: threading.Event) -> None:
    """b's revocation job waits for the only worker (a is in a long run): it holds nothing, and b's
    keep-alive must not wait for it. It did (a job queued counted as running), and b's token expired."""
    (tmp_path / "vault-token").write_text("x")
    config = tmp_path / "rotator.toml"
    config.write_text('[rotator]\njournal = "journal.db"\n[daemon]\naudit = { file = "audit.jsonl" }\nworkers = 1\n'
                      'sweep_interval = "2h"\n'
                      + POLICY.format(name="a", schedule="1h", extra="")
                      + POLICY.format(name="b", schedule="30d", extra=""))
    journal = open_journal("sqlite:///" + str(tmp_path / "journal.db"))
    a_last = T0 - timedelta(hours=1) + timedelta(seconds=100)  # a is due 100 s after T0
    journal.begin_run(RunRecord("boot-a", "a", "done", "bootstrap", a_last, a_last, published_at=a_last))
    journal.begin_run(RunRecord("boot-b", "b", "done", "bootstrap", T0, T0, published_at=T0))
    # b's previous token is revoked 110 s after T0, while a's run holds the only worker
    journal.schedule_revocation(Revocation("b", "t-old", "boot-b", "superseded", T0 + timedelta(seconds=110),
                                           "pending"))
    clock = FakeClock(T0)
    token = _Token(clock)
    running = threading.Event()
    b_calls: list[str] = []

    def factory(policy: Any, cfg: Any, jr: Any, listener: Any) -> FakeEngine:
        engine = FakeEngine(policy.name, jr, clock, [] if policy.name == "a" else b_calls)
        if policy.name == "a":
            rotate = engine.rotate

            def long_rotation(**kw: Any) -> Any:
                running.set()
                release.wait(30)
                return rotate(**kw)

            engine.rotate = long_rotation  # type: ignore[method-assign]
        else:
            engine.stores = [("vault", token)]  # type: ignore[attr-defined]
        return engine

    d = Daemon(config, clock=clock, serve_http=False, engine_factory=factory, handle_signals=False)
    d.start()
    try:
        d.tick(clock.now())
        assert token.called.wait(5), "b's first keep-alive"
        _wait_idle(d, "b")
        clock.advance(timedelta(seconds=100))
        d.tick(clock.now())
        assert running.wait(5), "a's rotation did not start"
        kept = 0
        while clock.now() < T0 + timedelta(minutes=10):  # the daemon's loop, a pass every 10 s
            due = token.credential_due()
            token.called.clear()
            clock.advance(timedelta(seconds=10))
            d.tick(clock.now())
            if clock.now() >= due:
                assert token.called.wait(5), f"b's keep-alive due at {due:%H:%M:%S} waits behind b's queued job"
                _wait_idle(d, "b", runs=False)
                kept += 1
            assert token.credential_status()["ok"] is True, f"b's token ran out at {clock.now():%H:%M:%S}"
        with d._lock:
            assert d._busy["b"][0] == "revoke" and "b" not in d._job_started, "b's job waited for a worker throughout"
        assert kept >= 2 and b_calls == [], "kept alive twice while b's revocation waited"
        release.set()
        _wait_idle(d, "b")
        assert b_calls == ["revoke b"], "b's revocation ran once a's run ended"
    finally:
        release.set()
        d.shutdown()


class _Exclusive(_Token):
    """A store credential whose keep-alive takes a while: it says whether it is going now."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.inside = threading.Event()
        self.go = threading.Event()

    def keep_alive(self) -> None:
        self.inside.set()
        try:
            assert self.go.wait(10)
            super().keep_alive()
        finally:
            self.inside.clear()


def test_a_policys_run_and_its_keep_alive_never_use_its_stores_at_once(tmp_path: Path) -> None:
    """A run that starts while its policy's keep-alive is going waits for it (a request or two); a
    keep-alive due while the run goes is held back until it ends, then runs."""
    (tmp_path / "vault-token").write_text("x")
    config = tmp_path / "rotator.toml"
    config.write_text('[rotator]\njournal = "journal.db"\n[daemon]\naudit = { file = "audit.jsonl" }\n'
                      'sweep_interval = "2h"\n' + POLICY.format(name="b", schedule="1h", extra=""))
    journal = open_journal("sqlite:///" + str(tmp_path / "journal.db"))
    last = T0 - timedelta(hours=1) + timedelta(seconds=100)  # b is due 100 s after T0
    journal.begin_run(RunRecord("boot-b", "b", "done", "bootstrap", last, last, published_at=last))
    clock = FakeClock(T0)
    token = _Exclusive(clock)
    overlaps: list[str] = []
    in_run = threading.Event()
    end_run = threading.Event()

    def factory(policy: Any, cfg: Any, jr: Any, listener: Any) -> FakeEngine:
        engine = FakeEngine(policy.name, jr, clock, [])
        rotate = engine.rotate

        def rotation(**kw: Any) -> Any:
            if token.inside.is_set():
                overlaps.append("the run started inside the keep-alive")
            in_run.set()
            try:
                assert end_run.wait(10)
                return rotate(**kw)
            finally:
                in_run.clear()

        engine.rotate = rotation  # type: ignore[method-assign]
        engine.stores = [("vault", token)]  # type: ignore[attr-defined]
        return engine

    d = Daemon(config, clock=clock, serve_http=False, engine_factory=factory, handle_signals=False)
    d.start()
    try:
        d.tick(clock.now())
        assert token.inside.wait(5), "b's keep-alive is going"
        clock.advance(timedelta(seconds=100))
        d.tick(clock.now())  # b's rotation is due: on a worker, it waits for the keep-alive
        time.sleep(0.3)
        assert not in_run.is_set(), "the run started while its policy's keep-alive was going"
        token.go.set()
        assert in_run.wait(5), "the run starts once the keep-alive ended"
        # the keep-alive comes due while the run goes: held back until it ends
        token.called.clear()
        token.go.clear()
        clock.advance(TTL)
        for _ in range(5):
            d.tick(clock.now())
            time.sleep(0.02)
        assert not token.inside.is_set() and not token.called.is_set(), "a keep-alive inside the run"
        end_run.set()
        deadline = time.monotonic() + 5
        while not token.inside.is_set() and time.monotonic() < deadline:
            d.tick(clock.now())  # the run's end plans the keep-alive again
            time.sleep(0.02)
        assert token.inside.is_set(), "the keep-alive held back runs once the run ended"
        token.go.set()
        assert token.called.wait(5)
        assert overlaps == []
    finally:
        token.go.set()
        end_run.set()
        d.shutdown()
