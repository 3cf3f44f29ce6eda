"""A rotation plans before it takes the lease (Engine.rotate's shortcut) only over a released lease
row or its own (Preflight.fence_planning_first).

An expired lease that nobody took is still its holder's: a holder paused past the expiry (a GC,
SIGSTOP) commits fenced writes under it without changing the lease row. A rotation whose preflight
read that row, and whose take of the lease found it unchanged, acted on what it read before that
holder's writes: it tried to record a due revocation done that the paused holder had recorded
meanwhile, and stopped with a false LeaseLost ("overtaken by another rotator"), its run left planned.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

from rotator.core.contracts import StoreState
from rotator.core.engine import Engine, RunResult
from rotator.core.errors import LeaseLost
from rotator.core.journal import Preflight, RevocationState, ts
from rotator.core.retry import RetryPolicy
from tests.engine.test_state_machine import GRACE, POLICY, START, World, rotate

WAIT_S = 10


class ReadHook:
    """A store that calls ``hook`` before each read of its current secret."""

    def __init__(self, inner: Any, hook: Any) -> None:
        self.inner, self.hook = inner, hook

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def read_current(self) -> StoreState:
        self.hook()
        state: StoreState = self.inner.read_current()
        return state


def _preflight(lease: tuple[str, int, str] | None) -> Preflight:
    return Preflight(policy=POLICY, lease=lease, open_runs=[], due=[], claims={}, last_success=None)


def test_only_a_released_or_own_lease_row_lets_a_rotation_plan_first() -> None:
    now = START
    expired, live = ts(now - timedelta(minutes=1)), ts(now + timedelta(minutes=1))
    released = ts(START.replace(year=1970))
    assert _preflight(("", 7, released)).fence_planning_first("y", now) == 8
    assert _preflight(("y", 7, expired)).fence_planning_first("y", now) == 7, "its own row: the same number"
    assert _preflight(("x", 7, live)).fence_planning_first("y", now) is None
    expired_row = _preflight(("x", 7, expired))
    assert expired_row.fence_after("y", now) == 8, "the lease can be taken..."
    assert expired_row.fence_planning_first("y", now) is None, "...but x may still write under it"
    assert _preflight(None).fence_planning_first("y", now) is None


def test_a_rotation_does_not_plan_on_a_read_made_under_another_holders_expired_lease(tmp_path: Path) -> None:
    w = World(tmp_path)
    try:
        w.bootstrap()
        rotate(w)
        rotate(w)
        w.clock.advance(GRACE + timedelta(seconds=1))
        due = [r.token_id for r in w.journal.due_revocations(w.clock.now(), POLICY)]
        assert len(due) == 2, due

        # X revokes the due tokens; it pauses after the issuer revoked the first, before the journal
        # records it, and again before the second
        x_revoked, go_x, x_settled, go_x2 = (threading.Event() for _ in range(4))
        real_revoke = w.issuer.revoke
        revoked_by_x: list[str] = []

        def revoke(token_id: str, credential: Any) -> None:
            real_revoke(token_id, credential)
            if threading.current_thread().name == "X":
                revoked_by_x.append(token_id)
                if len(revoked_by_x) == 1:
                    x_revoked.set()
                    go_x.wait(WAIT_S)

        w.issuer.revoke = revoke  # type: ignore[method-assign]
        x_checkpoints: list[str] = []

        def on_checkpoint(name: str) -> None:
            if threading.current_thread().name == "X" and name == "revoking":
                x_checkpoints.append(name)
                if len(x_checkpoints) == 2:  # the first revocation recorded done under X's fence
                    x_settled.set()
                    go_x2.wait(WAIT_S)

        w.on_checkpoint = on_checkpoint
        x = w.engine("x")
        x_out: list[object] = []

        def run_x() -> None:
            try:
                x_out.append(x.revoke_due())
            except BaseException as exc:  # noqa: BLE001 - the thread's outcome, asserted below
                x_out.append(exc)
            finally:
                x_settled.set()

        thread = threading.Thread(target=run_x, name="X")
        thread.start()
        try:
            assert x_revoked.wait(WAIT_S)
            w.clock.advance(timedelta(minutes=16))  # X is paused past its 15 min lease; nobody takes it

            def resume_x() -> None:
                # Y's first read of a store: X resumes and writes under its expired lease (or finds it
                # taken, once Y took the lease before reading)
                if not go_x.is_set():
                    go_x.set()
                    assert x_settled.wait(WAIT_S)

            stores = [(name, ReadHook(store, resume_x)) for name, store in w.stores.items()]
            y = Engine(w.policy, w.journal, issuer=w.issuer, stores=stores, clock=w.clock,
                       retry=RetryPolicy(3, 1.0, 4.0), holder="y", checkpoint=w._checkpoint)
            try:
                result: RunResult | LeaseLost = y.rotate()
            except LeaseLost as lost:
                result = lost
        finally:
            go_x.set()
            go_x2.set()
            thread.join(WAIT_S)
        assert not thread.is_alive()

        assert isinstance(result, RunResult), f"Y stopped with LeaseLost though nobody took its lease: {result}"
        assert result.ok, result.message
        assert len(x_out) == 1 and isinstance(x_out[0], LeaseLost), f"X wrote after Y took the lease: {x_out}"
        assert w.journal.open_runs(POLICY) == []
        states = {r.token_id: r.state for r in w.journal.revocations(POLICY) if r.token_id in due}
        assert states == dict.fromkeys(due, RevocationState.DONE)
        assert not {t for t in due if t in w.active_ids()}, "a due token is still valid"
    finally:
        w.journal.close()
