"""An old daemon on a journal that a newer rotator upgraded (a rolling upgrade's old replica) is superseded.

The journal refused its lease takes (tests/core/test_journal_schema_fence.py), but the daemon went on
trying every due job: each failed at its lease, backed off, tried again, and sent a failure webhook per
policy per retry; and its daily prune, not fenced at all, deleted by an older schema's rules. Now the
first refusal (a job's lease, the readiness check, the prune) supersedes the daemon: it starts no job
and no prune any more, logs one ERROR line and sends one notification, and stays alive (/healthz 200)
but not ready (/readyz 503): a restart of this version could not open the journal (no restart loop).
"""

from __future__ import annotations

import base64
import concurrent.futures
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from rotator.core.clock import FakeClock
from rotator.core.engine import ANY_RUN, RunResult
from rotator.core.journal import SCHEMA_VERSION, RunRecord, open_journal
from rotator.observe.notify import event_kinds
from rotator.runners import daemon as daemon_mod
from rotator.runners.daemon import Daemon
from tests.core.test_audit_chain import raw
from tests.runners.test_daemon import POLICY, T0, FakeEngine, InlineExecutor
from tests.webhook_receiver import Receiver, receiver

NEWER = SCHEMA_VERSION + 1
REFUSED = (f"the journal was upgraded to schema {NEWER} by a newer rotator; this process (schema {SCHEMA_VERSION}) "
           "stops writing it: upgrade or restart it")
POLICIES = ("a", "b", "c")


@dataclass
class _Engine(FakeEngine):
    """A FakeEngine that records every rotation begun (``started``: before its lease, which the journal
    refuses), and whose rotation may wait under its lease until ``hold`` is set (a run under way)."""

    started: list[str] = field(default_factory=list)
    hold: threading.Event | None = None
    took: threading.Event = field(default_factory=threading.Event)

    def rotate(self, *, expect_last_run: Any = ANY_RUN) -> RunResult:
        self.started.append(self.name)
        if self.hold is None:
            return super().rotate(expect_last_run=expect_last_run)
        now = self.clock.now()
        self.journal.acquire_lease(self.name, self.holder, self.lease_ttl, now)
        try:
            self.took.set()
            assert self.hold.wait(10)
            run = RunRecord(f"r-{self.name}", self.name, "done", "rotate", now, now, published_at=now, finished_at=now)
            self.journal.begin_run(run)  # (fenced by the lease's number, which this run holds)
            return RunResult(self.name, "done", run.run_id, None, "t", "rotated")
        finally:
            self.journal.release_lease(self.name, self.holder)


@dataclass
class World:
    daemon: Daemon
    clock: FakeClock
    rx: Receiver
    started: list[str]
    engines: dict[str, _Engine]
    path: Path

    @property
    def url(self) -> str:
        return f"sqlite:///{self.path / 'journal.db'}"

    def upgrade_by_a_newer_rotator(self) -> None:
        """What the rollout's first new pod leaves when its start migrates the shared journal."""
        with raw(self.url) as sql:
            sql(f"INSERT INTO schema_version (version) VALUES ({NEWER})")

    def tick(self, advance: timedelta = timedelta(0)) -> None:
        self.clock.advance(advance)
        self.daemon.tick(self.clock.now())
        self.join_prune()

    def join_prune(self) -> None:
        pruning = self.daemon._prune_thread
        if pruning is not None:
            pruning.join(timeout=30)
            assert not pruning.is_alive()

    def get(self, path: str) -> tuple[int, dict[str, Any]]:
        assert self.daemon.health is not None
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.daemon.health.address[1]}{path}", timeout=5) as ans:
                return ans.status, json.loads(ans.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def metric(self, name: str) -> float | None:
        assert self.daemon.health is not None
        with urllib.request.urlopen(f"http://127.0.0.1:{self.daemon.health.address[1]}/metrics", timeout=5) as ans:
            text = ans.read().decode()
        return next((s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name), None)

    def failures(self) -> list[dict[str, Any]]:
        """The audit records that raise a ``failure`` webhook."""
        lines = (self.path / "audit.jsonl").read_text().splitlines()
        return [r for r in map(json.loads, lines) if "failure" in event_kinds(r)]

    def old_history(self) -> list[tuple[Any, ...]]:
        """Events older than keep_history (400 days): what a prune deletes; returns the events now."""
        for i in range(4):
            self.daemon.journal.record_event(T0 - timedelta(days=800, minutes=-i), "a", f"old-{i}", "plan", "ok", {})
        return self.events()

    def events(self) -> list[tuple[Any, ...]]:
        with raw(self.url) as sql:
            return sorted(sql("SELECT seq, at, step FROM events"))


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., World]]:
    """Three policies due in an hour, a failure webhook, an audit file, /healthz and /readyz on loopback."""
    # The journal probe thread would find the newer schema within a second, racing the test's own
    # look: each test chooses who meets it first (the readiness check: Daemon._check_journal).
    monkeypatch.setattr(daemon_mod, "WATCHDOG_EVERY", 3600.0)
    (tmp_path / "vault-token").write_text("x")
    (tmp_path / "k").write_text("whsec_" + base64.b64encode(b"webhook-key-of-24-bytes!").decode())
    made: list[Daemon] = []
    with receiver() as rx:

        def make(executor: concurrent.futures.Executor | None = None, hold: str | None = None) -> World:
            (tmp_path / "rotator.toml").write_text(
                '[rotator]\njournal = "journal.db"\n[daemon]\nlisten = "127.0.0.1:0"\n'
                'audit = { file = "audit.jsonl" }\n'
                f'[[daemon.webhooks]]\nurl = "{rx.url}"\nsecret = {{ file = "k" }}\nbackoff = "0s"\n'
                + "".join(POLICY.format(name=name, schedule="1h", extra="") for name in POLICIES))
            journal = open_journal(f"sqlite:///{tmp_path / 'journal.db'}")
            try:
                for name in POLICIES:
                    journal.begin_run(RunRecord(f"boot-{name}", name, "done", "bootstrap", T0, T0, published_at=T0))
            finally:
                journal.close()
            clock, started, engines = FakeClock(T0), list[str](), dict[str, _Engine]()

            def factory(policy: Any, config: Any, journal: Any, listener: Any) -> _Engine:
                engine = _Engine(policy.name, journal, clock, [], started=started,
                                 hold=threading.Event() if policy.name == hold else None)
                engines[policy.name] = engine
                return engine

            d = Daemon(tmp_path / "rotator.toml", clock=clock, executor=executor or InlineExecutor(),
                       handle_signals=False, engine_factory=factory)
            d.start()
            made.append(d)
            w = World(d, clock, rx, started, engines, tmp_path)
            w.tick()  # the start's pass: nothing due yet (and the first prune, on this version's schema)
            assert w.get("/readyz")[0] == 200
            return w

        yield make
        for d in made:
            if not d._stopping:
                d.shutdown()


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith("rotator")]


def _assert_superseded(w: World, found_by: str, caplog: pytest.LogCaptureFixture) -> None:
    """Not ready, alive, journal down in the metrics; one ERROR line; one failure event and one webhook."""
    status, body = w.get("/readyz")
    assert status == 503 and REFUSED in body["superseded"], body
    assert w.get("/healthz")[0] == 200, "alive: a restart of this version could not open the journal (no restart loop)"
    assert w.metric("rotator_journal_up") == 0
    [error] = _errors(caplog)
    assert error.startswith(f"daemon superseded (found by {found_by}): it starts no rotation") and REFUSED in error
    assert "Replace it with the newer version" in error, "says what to do"
    [failure] = w.failures()
    assert (failure["policy"], failure["step"], failure["result"], failure["superseded"]) == (None, "rotate", "failed",
                                                                                             True)
    assert (failure["schema"], failure["supported_schema"]) == (NEWER, SCHEMA_VERSION)
    w.daemon.shutdown()  # (the webhooks queued are delivered first)
    assert [(d.json["event"], d.json["superseded"]) for d in w.rx.deliveries] == [("failure", True)]


def test_the_first_refused_lease_supersedes_the_daemon_and_no_other_job_or_prune_starts(
        world: Callable[..., World], caplog: pytest.LogCaptureFixture) -> None:
    w = world()
    history = w.old_history()  # (after the start's prune: the next one is a day later)
    w.upgrade_by_a_newer_rotator()

    with caplog.at_level(logging.INFO, logger="rotator"):
        w.tick(timedelta(hours=2))  # a, b and c are due: a meets the refusal at its lease
        assert w.started == ["a"], "no job starts after the first refusal"
        for _ in range(6):  # past every backoff, a sweep and the next day's prune
            w.tick(timedelta(hours=5))
        assert w.started == ["a"], "nothing retried"
        assert w.events() == history, "no prune"
        assert w.daemon.liveness()[0]
        _assert_superseded(w, "policy a's rotate job", caplog)


def test_a_prune_that_meets_the_newer_schema_deletes_nothing_and_supersedes_the_daemon(
        world: Callable[..., World], caplog: pytest.LogCaptureFixture) -> None:
    w = world()
    history = w.old_history()
    w.upgrade_by_a_newer_rotator()

    with caplog.at_level(logging.INFO, logger="rotator"):
        w.daemon._prune(w.clock.now())  # the daily prune's thread, before any job looked
        assert w.events() == history, "refused in the prune's own write transaction: nothing deleted"
        w.tick(timedelta(hours=2))
        assert w.started == [], "superseded: no job starts"
        _assert_superseded(w, "the daily prune", caplog)


def test_the_readiness_check_supersedes_it_a_running_job_ends_and_queued_ones_never_start(
        world: Callable[..., World], caplog: pytest.LogCaptureFixture) -> None:
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        w = world(executor=pool, hold="a")
        with caplog.at_level(logging.INFO, logger="rotator"):
            w.tick(timedelta(hours=2))  # a runs (its lease taken), b and c wait for the one worker
            assert w.engines["a"].took.wait(10)
            w.upgrade_by_a_newer_rotator()  # meanwhile, the rollout's first new pod starts

            w.daemon._check_journal()  # the probe thread's next look
            assert w.daemon.readiness()[0] is False
            hold = w.engines["a"].hold
            assert hold is not None
            hold.set()
            deadline = time.monotonic() + 10
            while w.daemon._busy and time.monotonic() < deadline:
                time.sleep(0.01)
            assert not w.daemon._busy
            w.tick()

            assert w.started == ["a"], "the queued jobs of b and c never started"
            assert [r.run_id for r in w.daemon.journal.runs("a")][:1] == ["r-a"], "the running job ended as it would"
            _assert_superseded(w, "the journal check", caplog)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
