"""Recovery decides that a dead run's tag search is final by the time the listing was taken, not the
time it returned (review2 #2). A listing that starts before the run's mint window ends and returns
after it (a slow ``influxctl list``, a retry) may show the issuer as it was before a token that the
dead run's child created late: closing the run on it leaves that token with no search (an orphan).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from rotator.core.contracts import TokenInfo
from rotator.core.engine import MINT_SETTLE_MARGIN
from rotator.core.journal import RunState
from rotator.core.secret import Secret
from tests.engine.test_state_machine import POLICY, Crash, World

#: how long the slow listing takes, and how long before the mint window's end it starts
LISTING_TAKES = timedelta(seconds=3)
STARTS_BEFORE_THE_END = timedelta(seconds=2)


def test_a_listing_taken_before_the_mint_window_ended_does_not_close_the_run(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.bootstrap()
    world.crash_at = "minting"  # kill -9 inside the mint: its child may still create the token
    try:
        world.engine().rotate()
    except Crash:
        pass
    [run] = world.journal.open_runs(POLICY)
    assert run.state == RunState.MINTING and run.mint_started_at is not None
    window_end = run.mint_started_at + timedelta(seconds=world.issuer.call_timeout_seconds) + MINT_SETTLE_MARGIN
    world.clock.advance(window_end - world.clock.now() - STARTS_BEFORE_THE_END)
    tag = f"rotator:{POLICY}:{run.run_id}"
    real_list = world.issuer.list_tokens
    late: list[str] = []

    def slow_list(credential: Secret | None) -> list[TokenInfo]:
        listed = real_list(credential)  # the issuer as it is when the request runs
        if not late and world.clock.now() < window_end:
            late.append(world.issuer.tokens.create(tag)[1])  # the child's create lands just after
        world.clock.advance(LISTING_TAKES)  # and the answer comes back after the window's end
        return listed

    world.issuer.list_tokens = slow_list  # type: ignore[method-assign]
    world.engine().recover()
    world.issuer.list_tokens = real_list  # type: ignore[method-assign]
    assert late and world.clock.now() > window_end
    after = world.journal.get_run(run.run_id)
    assert after is not None and after.state == RunState.REVOKING_NEW, "searched again: the listing was not final"
    assert [r.run_id for r in world.journal.open_runs(POLICY)] == [run.run_id]
    world.engine().recover()  # a pass whose listing starts after the window's end: final
    assert late[0] not in world.active_ids(), "the token the child created late is revoked"
    closed = world.journal.get_run(run.run_id)
    assert closed is not None and closed.state == RunState.FAILED
    world.check_invariants(settled=True)
