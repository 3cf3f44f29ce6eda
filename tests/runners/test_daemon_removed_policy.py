"""A policy file that leaves out a policy whose work the journal still holds (an open run, a pending
or failed revocation), in-process on a fake clock:

- a reload is refused: the running configuration stays in force, so that work goes on (runs
  recovered, tokens revoked, metrics exported) instead of being left behind with no log line,
  its candidate token valid and RotatorRevocationOverdue never firing;
- a start is not refused (an upgraded or shared journal would stop every policy's rotation): its
  sweep logs the work as an error and rotator_removed_policies_with_work counts it until the policy
  is back with `enabled = false`, which lets the work drain, then it can be removed;
- a journal that cannot be read at the reload does not refuse it (the check is skipped, with a
  warning), and the sweep reports the work left behind once the journal answers;
- a run of the policy in progress here (before it journaled anything) refuses a reload too, until it
  ends, and a tag search not ended is work like the others (both journal backends).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.core.clock import FakeClock
from rotator.core.errors import JournalError
from rotator.core.journal import Revocation, RunRecord, open_journal
from rotator.runners.daemon import Daemon
from tests.runners.test_daemon import POLICY, T0, FakeEngine, HeldExecutor, InlineExecutor

HEAD = '[rotator]\njournal = "journal.db"\n[daemon]\naudit = { file = "audit.jsonl" }\n'
GRACE = timedelta(minutes=10)


@dataclass
class RecoveringEngine(FakeEngine):
    """FakeEngine whose recovery ends the policy's open runs, as the real one does (undone here)."""

    def recover(self) -> list[str]:
        out = super().recover()
        for run in self.journal.open_runs(self.name):
            self.journal.update_run(run, state="failed", finished_at=self.clock.now())
        return out


@dataclass
class Setup:
    path: Path
    clock: FakeClock
    calls: list[str]

    def write(self, policies: list[tuple[str, str]]) -> None:
        """The policy file with these (name, extra settings) policies."""
        self.path.write_text(HEAD + "".join(POLICY.format(name=n, schedule="30d", extra=e) for n, e in policies))

    def daemon(self) -> Daemon:
        clock, calls = self.clock, self.calls
        return Daemon(self.path, clock=clock, serve_http=False, executor=InlineExecutor(), handle_signals=False,
                      engine_factory=lambda p, c, j, listener: RecoveringEngine(p.name, j, clock, calls))


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    """Policies a and b, each with a bootstrapped token; b's work left in the journal by `leave_work`."""
    (tmp_path / "vault-token").write_text("x")
    s = Setup(tmp_path / "rotator.toml", FakeClock(T0), [])
    s.write([("a", ""), ("b", "")])
    journal = open_journal(f"sqlite:///{tmp_path / 'journal.db'}")
    for name in ("a", "b"):
        journal.begin_run(RunRecord(f"boot-{name}", name, "done", "bootstrap", T0, T0, published_at=T0))
    journal.close()
    yield s


def leave_work(journal: Any, what: str, now: Any) -> None:
    """What b's last runs left: a run a dead process left open (minted: its candidate token is valid),
    the previous token's revocation waiting for its grace, or one that gave up."""
    if what in ("open run", "all"):
        journal.begin_run(RunRecord("dead-b", "b", "minted", "rotate", now, now))
    if what in ("pending revocation", "failed revocation", "all"):
        rev = Revocation("b", "t-old-b", "boot-b", "superseded", now + GRACE, "pending")
        journal.schedule_revocation(rev)
        if what == "failed revocation":
            journal.update_revocation(rev, state="failed", last_error="refused")


def messages(caplog: pytest.LogCaptureFixture, text: str, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage() and r.levelno == level]


def sample(d: Daemon, name: str, **labels: str) -> float | None:
    value: float | None = d.metrics.registry.get_sample_value(name, labels)
    return value


@pytest.mark.parametrize("what", ["open run", "pending revocation", "failed revocation"])
def test_a_reload_that_drops_a_policy_with_unfinished_work_is_refused(
        setup: Setup, caplog: pytest.LogCaptureFixture, what: str) -> None:
    d = setup.daemon()
    d.start()
    try:
        d.tick(setup.clock.now())
        leave_work(d.journal, what, setup.clock.now())
        setup.write([("a", "")])
        caplog.set_level(logging.INFO, logger="rotator.daemon")
        d.request_reload()
        d.tick(setup.clock.now())

        assert [p.name for p in d.policies] == ["a", "b"], "the running configuration is kept"
        assert "b" in d._engines and ("rotate", "b") in d._queued, "b is still scheduled"
        refused = messages(caplog, "reload (SIGHUP) rejected, the running configuration is kept", logging.ERROR)
        assert len(refused) == 1, caplog.text
        assert f"policy 'b': 1 {what}" in refused[0], refused[0]
        assert "enabled = false" in refused[0] and "rotator status b" in refused[0], "the fix is in the line"
        assert "rotator revoke-expired --dismiss TOKEN_ID --reason TEXT b" in refused[0]
        assert sample(d, "rotator_config_reload_failures_total") == 1
        assert sample(d, "rotator_config_last_reload_successful") == 0
        assert '"step":"reload","result":"failed"' in (setup.path.parent / "audit.jsonl").read_text()

        # b's work goes on under the configuration kept, and its metrics with it (the alerts can fire).
        setup.clock.advance(GRACE)
        d.tick(setup.clock.now())
        if what == "open run":
            assert d.journal.open_runs("b") == [] and "recover b" in setup.calls
        if what == "pending revocation":
            assert [r.state for r in d.journal.revocations("b")] == ["done"] and "revoke b" in setup.calls
        if what == "failed revocation":
            assert 'rotator_revocations_failed{policy="b"} 1.0' in d.metrics.exposition().decode()
    finally:
        d.shutdown()


def test_putting_the_policy_back_disabled_lets_its_work_drain_then_it_can_be_removed(
        setup: Setup, caplog: pytest.LogCaptureFixture) -> None:
    d = setup.daemon()
    d.start()
    try:
        d.tick(setup.clock.now())
        leave_work(d.journal, "all", setup.clock.now())
        setup.write([("a", "")])
        assert not d.reload("SIGHUP")

        setup.write([("a", ""), ("b", "enabled = false")])  # the fix the refusal gives
        assert d.reload("SIGHUP"), caplog.text
        assert [(p.name, p.enabled) for p in d.policies] == [("a", True), ("b", False)]
        setup.calls.clear()
        setup.clock.advance(timedelta(seconds=60))  # the sweep recovers the run left open
        d.tick(setup.clock.now())
        assert setup.calls == ["recover b"] and d.journal.open_runs("b") == []
        setup.clock.advance(GRACE)  # its revocation, when due; and no rotation of a disabled policy
        setup.calls.clear()
        d.tick(setup.clock.now())
        assert setup.calls == ["revoke b"]
        assert [r.state for r in d.journal.revocations("b")] == ["done"]

        setup.write([("a", "")])  # drained: now it may go
        assert d.reload("SIGHUP")
        assert [p.name for p in d.policies] == ["a"]
        assert sample(d, "rotator_config_reload_failures_total") == 1, "only the first one failed"
    finally:
        d.shutdown()


def test_a_start_without_a_policy_that_has_unfinished_work_logs_and_counts_it_until_it_is_back_disabled(
        setup: Setup, caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    journal = open_journal(f"sqlite:///{setup.path.parent / 'journal.db'}")
    leave_work(journal, "all", T0)
    journal.close()
    setup.write([("a", "")])
    caplog.set_level(logging.INFO, logger="rotator.daemon")
    d = setup.daemon()
    d.start()
    try:
        d.tick(setup.clock.now())  # the start's sweep
        left = messages(caplog, "the journal holds unfinished work of policy 'b'", logging.ERROR)
        assert len(left) == 1 and "1 open run" in left[0] and "1 pending revocation" in left[0], caplog.text
        assert "enabled = false" in left[0]
        assert sample(d, "rotator_removed_policies_with_work") == 1
        assert "recover b" not in setup.calls, "nothing can do b's work without its settings"
        setup.clock.advance(timedelta(minutes=2))
        d.tick(setup.clock.now())
        assert len(messages(caplog, "unfinished work of policy 'b'", logging.ERROR)) == 1, "logged once"
        assert sample(d, "rotator_removed_policies_with_work") == 1
    finally:
        d.shutdown()

    setup.write([("a", ""), ("b", "enabled = false")])
    d = setup.daemon()
    d.start()
    try:
        d.tick(setup.clock.now())  # the start's sweep recovers it
        assert "recover b" in setup.calls and d.journal.open_runs("b") == []
        assert sample(d, "rotator_removed_policies_with_work") == 0
        setup.clock.advance(GRACE)
        d.tick(setup.clock.now())
        assert [r.state for r in d.journal.revocations("b")] == ["done"]
    finally:
        d.shutdown()


def test_a_journal_unreadable_at_the_reload_does_not_refuse_it_and_the_sweep_reports_what_was_left(
        setup: Setup, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """Refusing when the journal cannot be read would keep a watched file refused after the journal
    came back (until the file changed again): the reload goes on as before, with a warning."""
    d = setup.daemon()
    d.start()
    try:
        d.tick(setup.clock.now())
        leave_work(d.journal, "open run", setup.clock.now())
        setup.write([("a", "")])
        overview = d.journal.overview
        down = [True]

        def unreachable(*args: Any, **kwargs: Any) -> Any:
            if down:
                raise JournalError("the journal does not answer")
            return overview(*args, **kwargs)

        monkeypatch.setattr(d.journal, "overview", unreachable)
        caplog.set_level(logging.INFO, logger="rotator.daemon")
        assert d.reload("SIGHUP")
        assert [p.name for p in d.policies] == ["a"]
        assert messages(caplog, "cannot read the journal to check that the policies it removes (b)", logging.WARNING)
        down.clear()  # the journal answers again: the next pass's sweep says what b left behind
        d.tick(setup.clock.now())
        left = messages(caplog, "the journal holds unfinished work of policy 'b'", logging.ERROR)
        assert len(left) == 1 and "1 open run" in left[0] and "enabled = false" in left[0], caplog.text
    finally:
        d.shutdown()


def test_the_refusal_of_many_policies_names_twenty_and_counts_the_rest(tmp_path: Path) -> None:
    """Removing thousands of policies at once must not make a log line of megabytes."""
    from rotator.core.journal import Overview
    from rotator.runners.daemon import _dropped_work_error

    names = {f"p{i:03}" for i in range(25)}
    overview = Overview({}, {n: (1, 0) for n in names}, {}, {"p000": 2, "other": 1}, {})
    work = overview.unfinished_work(names)
    assert work["p000"] == ("1 open run (a candidate token may be valid), "
                            "2 failed revocations (the token is still valid)")
    err = _dropped_work_error(tmp_path / "rotator.toml", work)
    assert str(err).startswith("25 policies with unfinished work in the journal are not in ")
    assert "policy 'p019'" in str(err) and "policy 'p020'" not in str(err) and "and 5 more policies" in str(err)
    assert "`rotator status NAME`" in err.hint and "put them back" in err.hint


def test_a_reload_that_drops_a_policy_whose_run_is_in_progress_is_refused_until_the_run_ends(
        setup: Setup, caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    """b's rotation is in PLAN (reading its stores and issuer: nothing journaled yet) when the file without b
    is reloaded. Accepted, the run went on to publish and schedule the revocation of the token it replaced,
    which nothing did then. Refused while the run lasts; once it ended, the watch tries the file again by
    itself, and b goes (its run left nothing unfinished)."""
    watched = HEAD + 'watch = true\nwatch_interval = "5s"\n'

    def write(names: list[str]) -> None:
        setup.path.write_text(watched + "".join(POLICY.format(name=n, schedule="30d", extra="") for n in names))

    write(["a", "b"])
    clock, calls, workers = setup.clock, setup.calls, HeldExecutor()
    d = Daemon(setup.path, clock=clock, serve_http=False, executor=workers, handle_signals=False,
               engine_factory=lambda p, c, j, listener: RecoveringEngine(p.name, j, clock, calls))
    d.start()
    running = threading.Thread(target=workers.run, args=("b",))
    started, release = threading.Event(), threading.Event()
    try:
        clock.advance(timedelta(days=30))
        d.tick(clock.now())
        assert sorted(workers.held) == ["a", "b"], "both due"
        engine = d._engines["b"]
        rotate = engine.rotate

        def planning(**kw: Any) -> Any:  # PLAN reads the stores and the issuer: nothing journaled yet
            started.set()
            release.wait(30)
            return rotate(**kw)

        engine.rotate = planning  # type: ignore[method-assign]
        running.start()
        assert started.wait(10)
        write(["a"])
        caplog.set_level(logging.INFO, logger="rotator.daemon")
        assert not d.reload("SIGHUP")
        assert [p.name for p in d.policies] == ["a", "b"], "the running configuration is kept"
        refused = messages(caplog, "reload (SIGHUP) rejected", logging.ERROR)
        assert len(refused) == 1 and "policy 'b': a rotation in progress here" in refused[0], caplog.text
        assert "reload again once its job ends" in refused[0]
        clock.advance(timedelta(seconds=6))
        d.tick(clock.now())
        assert [p.name for p in d.policies] == ["a", "b"], "the watch waits for the run"

        release.set()
        running.join(10)
        assert calls == ["rotate b"] and not d.journal.open_runs("b")
        clock.advance(timedelta(seconds=6))
        d.tick(clock.now())
        assert [p.name for p in d.policies] == ["a"], caplog.text
        assert messages(caplog, "reloaded", logging.INFO)
    finally:
        release.set()
        running.join(10)
        if "a" in workers.held:
            workers.run("a")
        d.shutdown()


@pytest.fixture(params=["sqlite", "postgresql"])
def journal_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'journal.db'}"
    return str(request.getfixturevalue("pg_url"))


def test_a_tag_search_not_ended_is_unfinished_work(
        tmp_path: Path, journal_url: str, caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    """b's last rotation published, but a try of its mint had no answer: the issuer may create a token under
    its tag until 12:30, which the search then finds (grace over, nothing else pending). A reload that drops
    b is refused until that search ended; a start without b counts it as work left behind."""
    (tmp_path / "vault-token").write_text("x")
    path, clock, calls = tmp_path / "rotator.toml", FakeClock(T0), list[str]()
    head = HEAD.replace('"journal.db"', f'"{journal_url}"')

    def write(names: list[str]) -> None:
        path.write_text(head + "".join(POLICY.format(name=n, schedule="30d", extra="") for n in names))

    def start(names: list[str]) -> Daemon:
        write(names)
        d = Daemon(path, clock=clock, serve_http=False, executor=InlineExecutor(), handle_signals=False,
                   engine_factory=lambda p, c, j, listener: RecoveringEngine(p.name, j, clock, calls))
        d.start()
        return d

    until = T0 + timedelta(minutes=30)
    journal = open_journal(journal_url)
    journal.begin_run(RunRecord("boot-a", "a", "done", "bootstrap", T0, T0, published_at=T0))
    journal.begin_run(RunRecord("r-b", "b", "done", "rotate", T0, T0, published_at=T0, finished_at=T0,
                                new_token_id="t-b", tag_search_until=until))
    journal.close()
    d = start(["a"])
    try:
        d.tick(clock.now())
        assert sample(d, "rotator_removed_policies_with_work") == 1
        assert messages(caplog, "the journal holds unfinished work of policy 'b'", logging.ERROR)
    finally:
        d.shutdown()

    d = start(["a", "b"])
    try:
        d.tick(clock.now())
        write(["a"])
        caplog.clear()
        assert not d.reload("SIGHUP")
        refused = messages(caplog, "reload (SIGHUP) rejected", logging.ERROR)
        assert len(refused) == 1 and "policy 'b': 1 tag search not ended" in refused[0], caplog.text
        assert d.journal.end_tag_search("b", "r-b", until)  # what b's last search does, at 12:30
        assert d.reload("SIGHUP")
        assert [p.name for p in d.policies] == ["a"]
    finally:
        d.shutdown()


class SearchingEngine(RecoveringEngine):
    """RecoveringEngine whose revocation pass ends the tag searches whose time has come, as the real one does
    (Engine._search_published_tags): a pass at or after a search's time ends it."""

    def revoke_due(self) -> list[str]:
        out = super().revoke_due()
        for run in self.journal.tag_searches(self.name):
            if run.tag_search_until is not None and run.tag_search_until <= self.clock.now():
                self.journal.end_tag_search(self.name, run.run_id, run.tag_search_until)
        return out


@pytest.mark.parametrize("how", ["started-after-its-time", "its-pass-failed"])
def test_a_disabled_policy_s_tag_search_in_the_past_is_ended_then_the_policy_can_be_removed(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, how: str) -> None:  # fmt: skip
    """The refusal's fix: b back in the file disabled, removed once its search's time has passed. A search in
    the past was planned no pass ("the next pass of any kind searches"), which a disabled policy never gets:
    the reload was refused for good."""
    from rotator.core.errors import TransientError

    (tmp_path / "vault-token").write_text("x")
    path, clock, calls = tmp_path / "rotator.toml", FakeClock(T0), list[str]()

    def write(names: list[str]) -> None:
        path.write_text(HEAD + "".join(POLICY.format(name=n, schedule="30d", extra="enabled = false" if n == "b"
                                                     else "") for n in names))  # fmt: skip

    def factory(p: Any, c: Any, j: Any, listener: Any) -> SearchingEngine:
        engine = SearchingEngine(p.name, j, clock, calls)
        if how == "its-pass-failed" and p.name == "b":
            engine.revoke_fail.append(TransientError("issuer down"))
        return engine

    until = T0 + timedelta(minutes=30)
    journal = open_journal(f"sqlite:///{tmp_path / 'journal.db'}")
    journal.begin_run(RunRecord("boot-a", "a", "done", "bootstrap", T0, T0, published_at=T0))
    journal.begin_run(RunRecord("r-b", "b", "done", "rotate", T0, T0, published_at=T0, finished_at=T0,
                                new_token_id="t-b", tag_search_until=until))
    journal.close()
    write(["a", "b"])
    if how == "started-after-its-time":
        clock.advance(timedelta(hours=1))
    d = Daemon(path, clock=clock, serve_http=False, executor=InlineExecutor(), handle_signals=False,
               engine_factory=factory)
    d.start()
    try:
        for _ in range(48):  # four hours of passes
            d.tick(clock.now())
            clock.advance(timedelta(minutes=5))
        assert "revoke b" in calls, calls
        assert not d.journal.tag_searches("b"), "the search was never ended"
        write(["a"])
        assert d.reload("SIGHUP"), caplog.text
        assert [p.name for p in d.policies] == ["a"]
    finally:
        d.shutdown()
