"""What a stopped emergency rotation says, and where recovery's roll-forward may publish (this session's own
review of 2fe016a and 8dee6c4)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from rotator.core.contracts import StoreState
from rotator.core.errors import OwnershipError, PermanentError, RotatorError
from rotator.testing import MemoryStore
from tests.engine.test_state_machine import GRACE, Crash, World, rotate


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def test_a_stopped_emergency_names_only_the_tokens_still_valid(world: World) -> None:
    """The emergency's pass before its mint revoked the due bootstrap token; its verify then failed. The hint
    named that token "still valid and NOT revoked" from a list read before the run."""
    b0 = world.bootstrap()
    t1 = rotate(world).new_token_id
    world.clock.advance(GRACE + timedelta(minutes=1))  # b0's revocation is due; nobody ran revoke-expired
    world.issuer.fail_next("verify", PermanentError("memory issuer: verification refused"))
    with pytest.raises(RotatorError) as stopped:
        world.engine().rotate(revoke_previous_now=True, reason="leak")
    assert b0 not in world.active_ids() and t1 in world.active_ids()
    named = stopped.value.hint.split("still valid and NOT revoked")[0]
    assert t1 in named and b0 not in named, stopped.value.hint


def test_an_emergency_again_whose_recovery_stops_still_names_the_leaked_token(world: World) -> None:
    world.bootstrap()
    leaked = rotate(world).new_token_id
    world.stores["b"].fail_next("publish", PermanentError("memory store: 403 permission denied"), times=1)
    with pytest.raises(RotatorError) as first:
        world.engine().rotate(revoke_previous_now=True, reason="leak")
    assert leaked in first.value.hint
    world.stores["b"].fail_next("publish", PermanentError("memory store: 403 permission denied (again)"), times=1)
    with pytest.raises(RotatorError) as again:  # the cause not fixed yet: the recovery of the first run stops
        world.engine().rotate(revoke_previous_now=True, reason="leak")
    assert leaked in world.active_ids()
    assert leaked in again.value.hint.split("still valid and NOT revoked")[0], again.value.hint


class _MarkedForOther(MemoryStore):
    """A secret with no version, marked managed by rotator for policy 'other' (Vault: metadata with that
    custom_metadata and no version; AWS: an empty secret so tagged)."""

    def _read(self) -> StoreState:
        state = super()._read()
        return StoreState(None, True, None, marker_policy="other") if state.version is None else state


def test_roll_forward_does_not_publish_into_a_secret_marked_for_another_policy(world: World) -> None:
    """Re-pointed at an empty secret another policy owns: PLAN refuses it, and so must recovery's roll-forward,
    which otherwise gave that policy's consumers this policy's token."""
    world.bootstrap()
    world.crash_at = "published:a"  # a holds the new token, b does not yet
    with pytest.raises(Crash):
        world.engine().rotate()
    world.stores["b"] = _MarkedForOther("b-new")
    with pytest.raises(OwnershipError, match="for policy 'other'"):
        world.engine().recover()
    assert world.stores["b"].read_current().version is None, "nothing written there"
