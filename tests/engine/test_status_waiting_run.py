"""A rotation whose mint got no answer (the issuer unreachable: every try fails transiently) discards its
run but leaves it open until the mint window has passed (Engine._discard, "waiting"), with the lease
released. `rotator status` must not call that run interrupted (needs attention, exit 4 with --check)
while it waits on purpose; once the window has passed and no pass closed it, it is interrupted."""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from rotator.core.journal import RunState
from rotator.observe.status import policy_status
from tests.engine.test_mint_without_answer import LateIssuer
from tests.engine.test_state_machine import POLICY, World


def test_a_run_waiting_for_its_mint_window_is_not_interrupted_until_the_window_has_passed(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.bootstrap()
    world.clock.advance(timedelta(days=1))
    engine = world.engine()
    engine.issuer = LateIssuer(world.issuer, fail=100)  # unreachable for the whole rotation
    try:
        engine.rotate()
    except Exception:  # noqa: BLE001 - the rotation fails; what it leaves is the point
        pass
    (run,) = world.journal.open_runs(POLICY)
    assert run.state == RunState.REVOKING_NEW and run.tag_search_until is not None
    assert world.journal.lease_holder(POLICY, now=world.clock.now()) is None
    status = policy_status(engine.policy, world.journal, world.clock.now())
    assert status.open_runs == 1 and status.interrupted_runs == 0 and not status.needs_attention

    world.clock.advance(run.tag_search_until - world.clock.now() + timedelta(seconds=1))
    late = policy_status(engine.policy, world.journal, world.clock.now())
    assert late.interrupted_runs == 1 and late.needs_attention
    assert late.interrupted == f"interrupted: run `rotator recover {POLICY}`"
