"""A mint try that gets no answer (a client-side timeout, a reset connection) while the issuer carries
the request out later: the token it creates carries the run's tag and nothing else of rotator's knows
it. The run's tag is searched again until no try of that mint can still land (its journaled mint start
+ the issuer's call timeout + a margin, Engine._mint_window_end), on SQLite and PostgreSQL:

- the mint fails for good: the run stays open (revoking_new), as a killed run's does, and every pass
  searches its tag until then;
- the mint succeeds on a later try: the run publishes, and records until when its tag is searched
  (RunRecord.tag_search_until); the next pass (recover, revoke-expired, the next rotation) revokes
  what carries the tag besides the published token, and the last search after that time ends it.

A try refused for good (a PermanentError) leaves nothing on its way: its run is closed at once.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.core.contracts import MintedToken, MintRequest
from rotator.core.errors import PermanentError, TransientError
from rotator.core.journal import RunState, open_journal
from rotator.core.secret import Secret
from tests.engine.test_state_machine import GRACE, POLICY, World, rotate

#: past any mint window of these tests (the memory issuer's call timeout is 5 s, the margin 10 s, and
#: the retries of World's engines wait a few seconds of the fake clock)
PAST_WINDOW = timedelta(minutes=2)


class LateIssuer:
    """The world's issuer, whose first ``fail`` mint tries time out at the client while the issuer
    queues the request: it creates the token when :meth:`land` is called (a request still on its
    way, or a server that finished it after the client gave up)."""

    def __init__(self, inner: Any, fail: int = 1) -> None:
        self.inner, self.fail, self.queued = inner, fail, list[MintRequest]()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def land(self) -> list[str]:
        created = [self.inner.tokens.create(request.description, request.expires_at)[1] for request in self.queued]
        self.queued = []
        return created

    def mint(self, request: MintRequest, credential: Secret | None) -> MintedToken:
        if self.fail:
            self.fail -= 1
            self.queued.append(request)
            raise TransientError("issuer: request timed out (simulated)")
        return self.inner.mint(request, credential)


@pytest.fixture(params=["sqlite", "postgresql"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> World:
    world = World(tmp_path)
    if request.param == "postgresql":
        world.journal = open_journal(str(request.getfixturevalue("pg_url")))
    world.bootstrap()
    world.clock.advance(timedelta(days=1))
    return world


def _late(world: World, fail: int = 1) -> tuple[Any, LateIssuer]:
    engine = world.engine()
    late = LateIssuer(world.issuer, fail)
    engine.issuer = late  # type: ignore[assignment]
    return engine, late


def _tagged_live(world: World) -> set[str]:
    return world.minted_ids() & world.active_ids()


def test_a_retried_mint_whose_first_try_lands_after_the_run_is_revoked_by_a_later_pass(world: World) -> None:
    engine, late = _late(world)
    result = engine.rotate()
    assert result.state == RunState.PUBLISHED, result
    run = world.journal.get_run(result.run_id or "")
    assert run is not None and run.tag_search_until is not None
    assert run.mint_started_at is not None and run.tag_search_until > run.mint_started_at
    # A pass within the window finds nothing yet, and keeps the search.
    assert world.engine().recover() == []
    assert [r.run_id for r in world.journal.tag_searches(POLICY)] == [run.run_id]
    [orphan] = late.land()  # the first try's request lands, after the run
    assert orphan in _tagged_live(world)
    world.clock.advance(PAST_WINDOW)
    actions = world.engine().recover()
    assert any(a.startswith(f"token {orphan}: revoked") for a in actions), actions
    assert orphan not in world.active_ids()
    assert world.held() == {"a": result.new_token_id, "b": result.new_token_id}, "the published token is kept"
    assert result.new_token_id in world.active_ids()
    assert world.journal.tag_searches(POLICY) == [], "the search after the window was the last"
    refreshed = world.journal.get_run(run.run_id)
    assert refreshed is not None and refreshed.tag_search_until is None
    assert ("revoke_orphan", "ok", run.run_id, orphan) in [
        (e["step"], e["result"], e["run_id"], e.get("token_id")) for e in world.journal.events(POLICY)]
    world.check_invariants()
    world.settle()


@pytest.mark.parametrize("sweeper", ["revoke-due", "next rotation"])
def test_the_revoke_pass_and_the_next_rotation_search_a_published_runs_tag(world: World, sweeper: str) -> None:
    """Within its window a pass searches the tag and keeps the search; after it, the search is the last."""
    engine, late = _late(world)
    first = engine.rotate()
    assert first.ok, first
    [orphan] = late.land()
    if sweeper == "revoke-due":
        world.clock.advance(GRACE + timedelta(seconds=1))  # the replaced token's revocation is due
        actions = world.engine().revoke_due()
        assert any(a.startswith(f"token {orphan}: revoked") for a in actions), actions
    else:
        world.clock.advance(timedelta(days=1))
        second = rotate(world)  # no open run: the short way, from the preflight's read of the last run
        assert any(a.startswith(f"token {orphan}: revoked") for a in second.actions), second.actions
    assert orphan not in world.active_ids()
    assert world.journal.tag_searches(POLICY) == []
    world.check_invariants()


def test_a_search_within_the_window_revokes_what_landed_and_keeps_searching(world: World) -> None:
    engine, late = _late(world)
    result = engine.rotate()
    [orphan] = late.land()
    actions = world.engine().recover()  # still within the window
    assert any(a.startswith(f"token {orphan}: revoked") for a in actions), actions
    [still] = world.journal.tag_searches(POLICY)
    assert still.run_id == result.run_id, "a later try may still land: searched again"
    world.clock.advance(PAST_WINDOW)
    assert world.engine().recover() == []
    assert world.journal.tag_searches(POLICY) == []


def test_a_mint_that_fails_without_an_answer_keeps_its_run_open_until_its_window_passes(world: World) -> None:
    engine, late = _late(world, fail=3)  # every try of World's retry policy
    with pytest.raises(TransientError):
        engine.rotate()
    [run] = world.journal.open_runs(POLICY)
    assert run.state == RunState.REVOKING_NEW and run.new_token_id is None
    assert run.error is not None and "searches again" in run.error
    landed = late.land()  # the server gets to the queued creates after the run gave up
    assert len(landed) == 3 and set(landed) <= _tagged_live(world)
    world.clock.advance(PAST_WINDOW)
    world.engine().recover()
    assert not set(landed) & world.active_ids()
    [closed] = world.journal.runs(POLICY, limit=1)
    assert closed.run_id == run.run_id and closed.state == RunState.FAILED
    world.check_invariants(settled=True)


def test_a_verify_failure_after_a_mint_try_without_an_answer_searches_until_that_try_cannot_land(
        world: World) -> None:
    engine, late = _late(world)
    world.issuer.fail_next("verify", PermanentError("issuer: token refused (simulated)"))
    with pytest.raises(PermanentError):
        engine.rotate()
    [run] = world.journal.open_runs(POLICY)
    assert run.state == RunState.REVOKING_NEW and run.new_token_id is not None
    assert run.new_token_id not in world.active_ids(), "the candidate is revoked at once"
    [orphan] = late.land()
    world.clock.advance(PAST_WINDOW)
    world.engine().recover()
    assert orphan not in world.active_ids()
    assert world.journal.open_runs(POLICY) == []
    world.check_invariants(settled=True)


def test_a_mint_refused_for_good_closes_its_run_at_once(world: World) -> None:
    """A PermanentError is a definite answer: nothing is on its way, the run is not kept open."""
    engine = world.engine()
    world.issuer.fail_next("mint", PermanentError("issuer: not allowed (simulated)"))
    with pytest.raises(PermanentError):
        engine.rotate()
    assert world.journal.open_runs(POLICY) == []
    [run] = world.journal.runs(POLICY, limit=1)
    assert run.state == RunState.FAILED and run.tag_search_until is None


def test_a_rotation_without_a_failed_try_records_no_search(world: World) -> None:
    result = rotate(world)
    run = world.journal.get_run(result.run_id or "")
    assert run is not None and run.tag_search_until is None
    assert world.journal.tag_searches(POLICY) == []
