"""A run stuck in revoking_new (its recovery failed) stays marked stuck while a later recovery tries again.

The journal's overview, `rotator status` and the daemon (rotator_needs_attention) read "stuck" from the
run's error. Engine._discard rewrote it first (``process stopped in state revoking_new``), and the mark
came back only once the try had failed: for the whole try (minutes while the issuer is down) the run
read as not stuck, and the alert's ``for: 5m`` started over at every retry.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rotator.core.engine import Engine
from rotator.core.errors import RotatorError, TransientError
from rotator.core.journal import RunState
from rotator.core.secret import Secret
from tests.engine.test_state_machine import POLICY, Crash, World


class _Revocations:
    """The issuer's revoke, failing while ``down``; records the journal's (open, stuck) runs at each call."""

    def __init__(self, world: World) -> None:
        self.world, self.down, self.seen = world, True, list[tuple[int, int]]()
        self._revoke = world.issuer.revoke

    def __call__(self, token_id: str, credential: Secret | None) -> None:
        self.seen.append(_open_and_stuck(self.world))
        if self.down:
            raise TransientError("issuer down")
        self._revoke(token_id, credential)


def _open_and_stuck(world: World) -> tuple[int, int]:
    return world.journal.overview(world.clock.now(), None).open_runs.get(POLICY, (0, 0))


def _stuck_run(world: World, monkeypatch: pytest.MonkeyPatch) -> tuple[Engine, _Revocations]:
    """A rotation whose verify and then its candidate's revocation fail; one recovery fails too: stuck."""
    world.bootstrap()
    revocations = _Revocations(world)
    monkeypatch.setattr(world.issuer, "revoke", revocations)
    world.issuer.fail_next("verify", TransientError("issuer down"), times=100)
    engine = world.engine()
    with pytest.raises(RotatorError):
        engine.rotate()
    with pytest.raises(TransientError):
        engine.recover()
    assert _open_and_stuck(world) == (1, 1)
    return engine, revocations


def test_a_stuck_run_reads_as_stuck_during_every_retry_of_its_recovery(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    world = World(tmp_path)
    engine, revocations = _stuck_run(world, monkeypatch)
    for _ in range(2):
        revocations.seen.clear()
        with pytest.raises(TransientError):
            engine.recover()
        assert revocations.seen, "the recovery tried the revocation again"
        assert set(revocations.seen) == {(1, 1)}, f"the stuck mark went away during the retry: {revocations.seen}"
        assert _open_and_stuck(world) == (1, 1)
    (run,) = world.journal.open_runs(POLICY)
    assert run.error is not None and run.error.startswith("recovery failed: ")
    assert "revoking the candidate failed: issuer down" in run.error, "the error says why, once"
    assert run.error.count("recovery failed") == 1 and run.error.count("revoking the candidate failed") == 1


def test_a_retry_that_revokes_the_candidate_closes_the_run_without_the_mark(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    world = World(tmp_path)
    engine, revocations = _stuck_run(world, monkeypatch)
    (stuck,) = world.journal.open_runs(POLICY)
    revocations.down = False
    engine.recover()
    assert _open_and_stuck(world) == (0, 0)
    closed = world.journal.get_run(stuck.run_id)
    assert closed is not None and closed.state == RunState.FAILED
    assert closed.error is not None and "recovery failed" not in closed.error, closed.error
    candidate = world.issuer.tokens.info(stuck.new_token_id or "")
    assert candidate is not None and candidate.revoked_at is not None


@pytest.mark.parametrize("crash", ["minted", "verified"])
def test_a_run_stuck_before_its_discard_began_keeps_the_mark_during_the_discard(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash: str) -> None:
    """A run killed in minted / verified whose recovery failed before its discard (a store it could not
    read) is stuck too: the discard that a later recovery begins keeps its error, not only a discard
    tried again (revoking_new)."""
    world = World(tmp_path)
    world.bootstrap()
    world.crash_at = crash
    with pytest.raises(Crash):
        world.engine().rotate()
    world.stores["a"].fail_next("read_current", TransientError("store a down"), times=3)  # (every retry)
    with pytest.raises(TransientError):
        world.engine("engine-2").recover()
    (run,) = world.journal.open_runs(POLICY)
    assert run.state == crash and _open_and_stuck(world) == (1, 1)
    # the store is back; the issuer's revoke is down
    revocations = _Revocations(world)
    monkeypatch.setattr(world.issuer, "revoke", revocations)
    with pytest.raises(TransientError):
        world.engine("engine-2").recover()
    assert revocations.seen and set(revocations.seen) == {(1, 1)}, revocations.seen
    (run,) = world.journal.open_runs(POLICY)
    assert run.error is not None and run.error.startswith("recovery failed: ") and _open_and_stuck(world) == (1, 1)
    revocations.down = False
    world.engine("engine-2").recover()
    closed = world.journal.get_run(run.run_id)
    assert closed is not None and closed.state == RunState.FAILED and "recovery failed" not in (closed.error or "")
