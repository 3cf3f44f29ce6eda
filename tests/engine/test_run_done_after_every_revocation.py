"""A rotation that retires two tokens (the replaced one and the token the journal published last, which no
store named any more) is done only when both revocations have ended: a run that says "old token revoked"
while one of its tokens is still valid misleads status, reports and the audit (finding #4)."""

from __future__ import annotations

from datetime import timedelta

from rotator.core.journal import RevocationState, RunState
from tests.engine.test_state_machine import GRACE, POLICY, World, rotate
from tests.engine.test_state_machine import world as world  # noqa: F401 - a fixture, used by name


def test_a_run_stays_published_while_its_other_revocation_is_unfinished(world: World) -> None:
    first, stray = world.stray_token_in_stores()
    run_id = rotate(world).run_id
    assert run_id is not None
    assert {r.token_id: r.run_id for r in world.journal.revocations(POLICY, RevocationState.PENDING)} == {
        stray: run_id, first.new_token_id: run_id}
    world.clock.advance(GRACE + timedelta(seconds=1))
    actions = world.engine().revoke_due()
    # the token rotator published last is revoked; the stray one is not rotator's: refused, for a person
    assert f"token {first.new_token_id}: revoked" in actions, actions
    assert stray in world.active_ids()
    assert [r.token_id for r in world.journal.unfinished_revocations(POLICY)] == [stray]
    run = world.journal.get_run(run_id)
    assert run is not None and run.state == RunState.PUBLISHED and run.finished_at is None, (
        "the run's revocation of the stray token has not ended")
    assert world.journal.policy_state(POLICY).last_success.run_id == run_id  # type: ignore[union-attr]
    world.check_invariants()
    # refused as not rotator's (NeedsAttention): the revocation gave up at once
    failed = world.journal.revocations(POLICY, RevocationState.FAILED)
    assert [r.token_id for r in failed] == [stray]
    assert world.journal.get_run(run_id).state == RunState.PUBLISHED  # type: ignore[union-attr]
    world.engine().dismiss_revocation(stray, "a human's token, still in use")
    run = world.journal.get_run(run_id)
    assert run is not None and run.state == RunState.DONE and run.finished_at is not None
