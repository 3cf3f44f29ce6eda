"""Every token a failed run's discard leaves valid is reported as an orphan once, by its own id.

``revoke_new`` / ``failed`` (the ``orphan`` webhook, rotator_orphans_total) names the token whose
revocation failed; the run's error lists the tokens reported so (Engine._discard), and a later failed try
of one of them writes ``failed_again``. Found by review:

- the error and the event were two commits: a kill -9 or a journal error between them left the token
  listed as reported and never reported (every later try said ``failed_again``). Now one transaction.
- "reported" was per run: a token the run's tag search found later (a dead run's child minted it) and
  could not revoke said ``failed_again`` with no token id, and no event ever named it.
- a tag listing that failed after the candidate was revoked reported the revoked candidate as left
  valid (``revoke_new`` / ``failed`` with its id): a false orphan. Now ``search_failed``, no orphan.
- a bootstrap that failed closed its run and wrote ``bootstrap`` / ``failed`` in two commits: a kill
  between them left a failed bootstrap that no report counts.

A real engine (tests/engine/test_state_machine.py's World: an in-memory issuer and stores, a SQLite
journal, a fake clock).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.core.contracts import TokenInfo
from rotator.core.errors import JournalUnavailable, NotYetAccepted, PermanentError, RotatorError, TransientError
from rotator.core.journal import RunRecord, RunState
from rotator.core.secret import Secret
from rotator.observe import report
from rotator.observe.metrics import Metrics
from tests.engine.test_state_machine import POLICY, Crash, World


class _Revoke:
    """The issuer's revoke, failing for the ids in ``down`` ("*": every id)."""

    def __init__(self, world: World, *down: str) -> None:
        self.down, self._revoke = set(down), world.issuer.revoke

    def __call__(self, token_id: str, credential: Secret | None) -> None:
        if "*" in self.down or token_id in self.down:
            raise TransientError("issuer down")
        self._revoke(token_id, credential)


class _Heard:
    """What a daemon hears of the engines' events: rotator_orphans_total and the events."""

    def __init__(self) -> None:
        self.metrics = Metrics()
        self.metrics.add_policies([POLICY])
        self.events: list[dict[str, Any]] = []

    def on(self, world: World, holder: str = "engine-1") -> Any:
        engine = world.engine(holder)
        engine.listeners += [self.events.append, self.metrics.on_event]
        return engine

    @property
    def orphans(self) -> float:
        return self.metrics.registry.get_sample_value("rotator_orphans_total", {"policy": POLICY}) or 0

    def discards(self) -> list[tuple[str, str | None]]:
        return [(e["result"], e.get("token_id")) for e in self.events
                if e["step"] == "revoke_new" and e["result"] != "start"]  # fmt: skip


def _journaled(world: World, run_id: str) -> list[tuple[str, str | None]]:
    """The run's journaled ``revoke_new`` events other than ``start``, oldest first: (result, token id)."""
    return [(e["result"], e.get("token_id")) for e in reversed(world.journal.events(POLICY, limit=500))
            if e["run_id"] == run_id and e["step"] == "revoke_new" and e["result"] != "start"]  # fmt: skip


def _verify_fails(world: World) -> None:
    world.issuer.fail_next("verify", PermanentError("verify refused"))


@pytest.mark.parametrize("how", ["kill", "journal_error"])
def test_a_failure_whose_event_did_not_commit_is_reported_by_the_next_failed_try(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    world = World(tmp_path)
    world.bootstrap()
    monkeypatch.setattr(world.issuer, "revoke", _Revoke(world, "*"))
    record_event = world.journal.record_event
    lost: list[str] = []

    def first_failed_lost(at: Any, policy: str, run_id: str | None, step: str, result: str, detail: Any) -> None:
        if (step, result) == ("revoke_new", "failed") and not lost:
            lost.append(result)
            raise Crash("killed at the event") if how == "kill" else JournalUnavailable("connection reset")
        record_event(at, policy, run_id, step, result, detail)

    monkeypatch.setattr(world.journal, "record_event", first_failed_lost)
    _verify_fails(world)
    heard = _Heard()
    with pytest.raises((Crash, RotatorError)):
        heard.on(world).rotate()
    (run,) = world.journal.open_runs(POLICY)
    assert run.new_token_id and "reported as left valid" not in (run.error or ""), \
        "the error naming the token as reported rolled back with its event"
    for _ in range(3):
        with pytest.raises(TransientError):
            heard.on(world, "engine-2").recover()
    assert _journaled(world, run.run_id) == [("failed", run.new_token_id)] + [("failed_again", run.new_token_id)] * 2
    assert heard.orphans == 1


def _died_inside_its_mint(world: World) -> RunRecord:
    world.bootstrap()
    world.crash_at = "minting"
    with pytest.raises(Crash):
        world.engine().rotate()
    (run,) = world.journal.open_runs(POLICY)
    assert run.new_token_id is None
    world.clock.advance(timedelta(minutes=16))  # past its mint window: every search is the last
    return run


def test_a_token_the_tag_search_finds_and_cannot_revoke_is_reported_by_its_own_id(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run died inside its mint; recovery 1's listing of its tag fails (no token known: no orphan);
    the dead run's child then mints T; recovery 2 finds T and cannot revoke it: T is the orphan."""
    world = World(tmp_path)
    run = _died_inside_its_mint(world)
    heard = _Heard()
    world.issuer.fail_next("list_tokens", TransientError("issuer down"), times=3)
    with pytest.raises(RotatorError):
        heard.on(world, "engine-2").recover()
    assert heard.discards() == [("search_failed", None)] and heard.orphans == 0
    _value, late = world.issuer.tokens.create(f"rotator:{POLICY}:{run.run_id}")
    revoke = _Revoke(world, late)
    monkeypatch.setattr(world.issuer, "revoke", revoke)
    for _ in range(2):
        with pytest.raises(RotatorError):
            heard.on(world, "engine-2").recover()
    assert heard.discards() == [("search_failed", None), ("failed", late), ("failed_again", late)]
    assert heard.orphans == 1
    assert _journaled(world, run.run_id) == heard.discards()
    revoke.down.clear()
    heard.on(world, "engine-2").recover()
    assert late not in world.active_ids() and not world.journal.open_runs(POLICY)


def test_the_candidate_and_a_token_found_later_are_two_orphans_each_reported_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    world = World(tmp_path)
    world.bootstrap()
    revoke = _Revoke(world, "*")
    monkeypatch.setattr(world.issuer, "revoke", revoke)
    _verify_fails(world)
    heard = _Heard()
    with pytest.raises(RotatorError):
        heard.on(world).rotate()
    (run,) = world.journal.open_runs(POLICY)
    candidate = run.new_token_id
    _value, late = world.issuer.tokens.create(f"rotator:{POLICY}:{run.run_id}")  # (a retried mint's first try)
    revoke.down = {late}
    for _ in range(2):
        with pytest.raises(TransientError):
            heard.on(world).recover()
    assert heard.discards() == [("failed", candidate), ("failed", late), ("failed_again", late)]
    assert heard.orphans == 2
    (stuck,) = world.journal.open_runs(POLICY)
    assert stuck.error is not None and stuck.error.startswith("recovery failed: ")
    assert stuck.error.endswith(f'; reported as left valid: ["{candidate}", "{late}"]'), stuck.error


class _TagListingDown:
    """The issuer's listing, failing from the discard's second on: the one before its candidate's
    revocation answers, the search of its tag after it does not."""

    def __init__(self, world: World, heard: _Heard) -> None:
        self.listed, self.heard, self.calls = world.issuer.list_tokens, heard, 0

    def __call__(self, credential: Secret | None) -> list[TokenInfo]:
        if any(e["step"] == "revoke_new" for e in self.heard.events):
            self.calls += 1
            if self.calls >= 2:
                raise TransientError("issuer down")
        return self.listed(credential)


def test_a_tag_listing_that_fails_after_the_candidate_was_revoked_reports_no_orphan(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    world = World(tmp_path)
    world.bootstrap()
    listed = world.issuer.list_tokens
    heard = _Heard()
    monkeypatch.setattr(world.issuer, "list_tokens", _TagListingDown(world, heard))
    _verify_fails(world)
    with pytest.raises(RotatorError):
        heard.on(world).rotate()
    (run,) = world.journal.open_runs(POLICY)
    assert run.new_token_id not in world.active_ids(), "the candidate was revoked"
    assert heard.discards() == [("search_failed", None)] and heard.orphans == 0
    assert run.error is not None and "searching for its tokens failed: " in run.error and "reported" not in run.error
    # The next try's listing, before the candidate's revocation, fails too: that revocation is done already
    # as far as anyone knows, so its candidate is still not reported as left valid.
    monkeypatch.setattr(world.issuer, "list_tokens", listed)
    world.issuer.fail_next("list_tokens", TransientError("issuer down"), times=3)
    with pytest.raises(TransientError):
        heard.on(world).recover()
    assert heard.discards() == [("search_failed", None)] * 2 and heard.orphans == 0
    heard.on(world).recover()  # searched again: closed
    assert world.journal.get_run(run.run_id).state == RunState.FAILED  # type: ignore[union-attr]


def test_a_verify_that_gave_up_says_its_candidate_was_revoked_when_only_the_tag_search_failed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    world = World(tmp_path)
    world.bootstrap()
    heard = _Heard()
    monkeypatch.setattr(world.issuer, "list_tokens", _TagListingDown(world, heard))
    world.issuer.fail_next("verify", NotYetAccepted("memory issuer: 401 on /query"), times=100)
    with pytest.raises(TransientError) as raised:
        heard.on(world).rotate()
    (run,) = world.journal.open_runs(POLICY)
    assert run.new_token_id not in world.active_ids()
    assert f"rotator revoked the new token {run.new_token_id}" in raised.value.hint, raised.value.hint
    assert "searching for other tokens of the run failed" in raised.value.hint
    assert "failed too" not in raised.value.hint


def test_a_waiting_discard_keeps_the_tokens_it_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run died inside its mint, whose window is still open: a recovery that revokes what it found
    waits (``waiting``) and rewrites the run's error. The tokens reported stay listed: an issuer whose
    listing lags may show one of them active again, and its failure then is no second orphan."""
    world = World(tmp_path)
    world.bootstrap()
    world.crash_at = "minting"
    with pytest.raises(Crash):
        world.engine().rotate()
    (run,) = world.journal.open_runs(POLICY)
    _value, late = world.issuer.tokens.create(f"rotator:{POLICY}:{run.run_id}")
    heard = _Heard()
    revoke = _Revoke(world, late)
    monkeypatch.setattr(world.issuer, "revoke", revoke)
    with pytest.raises(RotatorError):
        heard.on(world).recover()
    revoke.down.clear()
    assert "searched again until" in heard.on(world).recover()[0], "its mint window is still open: waiting"
    waiting = world.journal.get_run(run.run_id)
    assert waiting is not None and waiting.error is not None
    assert waiting.error.endswith(f'; reported as left valid: ["{late}"]'), waiting.error
    listed = world.issuer.list_tokens

    def lagging(credential: Secret | None) -> list[TokenInfo]:
        return [t._replace(revoked_at=None) if t.token_id == late else t for t in listed(credential)]

    monkeypatch.setattr(world.issuer, "list_tokens", lagging)
    revoke.down.add(late)
    with pytest.raises(RotatorError):
        heard.on(world).recover()
    assert heard.discards() == [("failed", late), ("waiting", None), ("failed_again", late)]
    assert heard.orphans == 1


def test_a_bootstrap_killed_as_it_journals_its_failure_is_still_counted(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The run's close and its `bootstrap` / `failed` event are one commit: killed at the event, the run
    stays open, and recovery closes it with `recover` / `bootstrap_closed`, which the report counts."""
    world = World(tmp_path)
    start = world.clock.now() - timedelta(hours=1)
    value, token_id = world.issuer.tokens.create("made by a human")
    record_event = world.journal.record_event

    def killed_at_the_failure(at: Any, policy: str, run_id: str | None, step: str, result: str,
                              detail: Any) -> None:  # fmt: skip
        if (step, result) == ("bootstrap", "failed"):
            raise Crash("killed at the event")
        record_event(at, policy, run_id, step, result, detail)

    monkeypatch.setattr(world.journal, "record_event", killed_at_the_failure)
    world.stores["b"].fail_next("publish", PermanentError("403 Forbidden"))
    with pytest.raises(Crash):
        world.engine().bootstrap(Secret(value), token_id, None)
    (run,) = world.journal.open_runs(POLICY)
    assert run.state == RunState.PUBLISHING, "the close rolled back with its event"
    monkeypatch.setattr(world.journal, "record_event", record_event)
    world.clock.advance(timedelta(hours=1))
    world.engine().recover()
    [p] = report.build(world.journal, [world.policy], start, world.clock.now() + timedelta(hours=1),
                       world.clock.now()).policies
    assert [(f.run_id, f.step, f.result) for f in p.failures] == [(run.run_id, "recover", "bootstrap_closed")]
