"""A mint try without an answer by a run that then finds its lease taken over (review2 #1).

An in-process issuer (the HTTP issuers, rotator.testing's memory issuer) has no child process whose
start the engine can bound: a process paused between its lease check and the request sends it when
it resumes, after the new holder's recovery has searched the run's tag for the last time and closed
the run. If that request's answer is lost, the retry's tag sweep finds the token but is fenced, and
stops with LeaseLost before it revokes it. The run that lost its lease revokes what carries its own
tag, unfenced (Engine._revoke_own_tag): no other process can have had the value, so no store holds it.
(The HTTP issuers also refuse to send such a request at all: tests/adapters/test_http_start_deadline.py.)
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.core.errors import LeaseLost, TransientError
from rotator.core.journal import RunState
from rotator.core.retry import RetryPolicy
from rotator.core.revocation_rule import CLOCK_SLACK
from tests.engine.test_mint_without_answer import world as world  # noqa: F401 - a fixture, used by name
from tests.engine.test_state_machine import POLICY, World

#: longer than the engines' lease (15 min): another rotator takes it over meanwhile
PAUSE = timedelta(minutes=16)


def _paused_mint_with_its_answer_lost(world: World, recovered: list[list[str]],
                                      before_landing: Any = None) -> None:  # fmt: skip
    """The issuer's next mint with the policy's tag: the process pauses past its lease after its lease
    check (B recovers meanwhile), then the request is carried out and its answer lost (a timeout)."""
    real_create = world.issuer.tokens.create
    done = False

    def create(description: str, expires_at: datetime | None = None) -> tuple[str, str]:
        nonlocal done
        if done or not description.startswith(f"rotator:{POLICY}:"):
            return real_create(description, expires_at)
        done = True
        world.clock.advance(PAUSE)
        recovered.append(world.engine("B").recover())
        if before_landing is not None:
            before_landing()
        real_create(description, expires_at)
        raise TransientError("issuer: no complete answer within 30s (simulated lost answer)")

    world.issuer.tokens.create = create  # type: ignore[method-assign]


def _orphans(world: World) -> set[str]:
    return (world.minted_ids() & world.active_ids()) - set(world.held().values())


@pytest.mark.parametrize("tries", [3, 1], ids=["the retry's sweep stops", "the discard stops"])
def test_a_mint_sent_after_a_take_over_whose_answer_is_lost_leaves_no_orphan(world: World, tries: int) -> None:
    """3 tries: the retry's fenced tag sweep finds the token and stops with LeaseLost; 1 try: the
    mint fails and the discard, fenced too, stops with LeaseLost. Either way the token goes."""
    held = world.held()
    recovered: list[list[str]] = []
    _paused_mint_with_its_answer_lost(world, recovered)
    a = world.engine("A")
    a.retry = RetryPolicy(tries, 1.0, 4.0)
    with pytest.raises(LeaseLost):
        a.rotate()
    [[closed]] = recovered
    assert "rolled back" in closed, "B's recovery closed the run before the token existed"
    [run] = [r for r in world.journal.runs(POLICY) if r.kind == "rotate"]
    assert run.state == RunState.FAILED and not world.journal.open_runs(POLICY)
    [token] = [t for t in world.issuer.tokens.all() if t.description == f"rotator:{POLICY}:{run.run_id}"]
    assert token.revoked_at is not None, "the run that minted it revoked it"
    assert _orphans(world) == set()
    assert world.held() == held, "nothing was published"
    events = [(e["step"], e["result"], e.get("token_id")) for e in world.journal.events(POLICY)
              if e["run_id"] == run.run_id]  # fmt: skip
    assert ("revoke_orphan", "ok", token.token_id) in events
    after = world.journal.get_run(run.run_id)
    assert after is not None and (after.state, after.fence) == (run.state, run.fence), "the run is B's: untouched"
    world.check_invariants(settled=True)


def test_only_what_the_run_could_have_minted_is_revoked_without_the_lease(world: World) -> None:
    """The search after the lease is lost revokes a token carrying the run's tag only if it was created
    after the run began: one older than the run is not its (a claim to check, never an order)."""
    a = world.engine("A")
    a.run_id_factory = lambda: "0123456789abcdef"
    tag = f"rotator:{POLICY}:0123456789abcdef"
    older: list[str] = []

    def older_token() -> None:  # (made now, after B's recovery, so that only A's search can see it)
        _value, token_id = world.issuer.tokens.create(tag)
        world.issuer.tokens._tokens[token_id].created_at = world.clock.now() - PAUSE - timedelta(days=1)
        older.append(token_id)

    recovered: list[list[str]] = []
    _paused_mint_with_its_answer_lost(world, recovered, before_landing=older_token)
    a.retry = RetryPolicy(1, 1.0, 4.0)
    with pytest.raises(LeaseLost):
        a.rotate()
    [run] = [r for r in world.journal.runs(POLICY) if r.kind == "rotate"]
    assert world.issuer.tokens.info(older[0]).created_at < run.started_at - CLOCK_SLACK  # type: ignore[union-attr]
    assert older[0] in world.active_ids(), "created before the run began: not the run's to revoke"
    assert _orphans(world) == {older[0]}, "the token the run minted is revoked"


def test_a_lease_lost_with_no_try_without_an_answer_searches_nothing(world: World) -> None:
    """Every try answered (or none was made): nothing can carry the run's tag unseen; no search."""
    a = world.engine("A")
    calls = len(world.issuer.calls)

    def take_over(name: str) -> None:
        if name == "minting":
            world.on_checkpoint = None
            world.clock.advance(PAUSE)
            world.engine("B").recover()

    world.on_checkpoint = take_over
    with pytest.raises(LeaseLost):
        a.rotate()
    assert "mint" not in world.issuer.calls[calls:]
    assert world.issuer.calls[calls:].count("list_tokens") == 2, "PLAN's issuer check and B's search only"


def test_an_in_process_request_gets_the_calls_timeout_to_be_sent_a_child_seconds_to_start(tmp_path: Path) -> None:
    """Engine._fenced_call's windows: a child (influxctl) must start within FORK_WITHIN_S; a request of an
    in-process issuer (HTTP) within the issuer's call timeout, which a slow but working server's reads
    and connections take by the issuer's own bound; each at most half the lease's TTL."""
    import time

    from rotator.core import child_process
    from rotator.core.contracts import call_timeout_of
    from rotator.core.engine import FORK_WITHIN_S

    world = World(tmp_path)
    world.bootstrap()
    world.clock.advance(timedelta(days=1))
    seen: list[tuple[float, float]] = []
    real_create = world.issuer.tokens.create

    def create(description: str, expires_at: datetime | None = None) -> tuple[str, str]:
        now = time.monotonic()
        request_by, child_by = child_process.start_deadline(), child_process._FORK_DEADLINE.get()
        assert request_by is not None and child_by is not None
        seen.append((request_by - now, child_by - now))
        return real_create(description, expires_at)

    world.issuer.tokens.create = create  # type: ignore[method-assign]
    world.issuer.call_timeout_seconds = 60.0  # type: ignore[misc]  # an HTTP issuer's, at its defaults ~100-200 s
    engine = world.engine("A")
    assert engine.rotate().state == RunState.PUBLISHED
    [(request_s, child_s)] = seen
    expected = min(call_timeout_of(engine.issuer), engine.lease_ttl.total_seconds() / 2)
    assert expected > FORK_WITHIN_S, "the test needs an issuer slower than a child's start"
    assert expected - 2 < request_s <= expected and FORK_WITHIN_S - 2 < child_s <= FORK_WITHIN_S, seen
