"""A store write whose first try got no answer and whose retry was refused for good (a timeout, then a
403: a proxy, a re-login refused). The refusal says nothing of the first try, which may have landed
(tests/engine/test_state_machine.py: the run is rolled forward) or may still land: a request the client
gave up on, still queued at the server. Here it has not landed yet: no store holds the candidate, and
the run is discarded, but the store is first moved past the version the write expects
(Engine._fence_stale_publishes), so that the first try, carried out late, fails instead of putting the
revoked candidate in the store (invariant 1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rotator.core.contracts import TokenRecord
from rotator.core.errors import ConflictError, PermanentError, TransientError
from rotator.core.journal import RunState
from tests.engine.test_dead_holder_fencing import VersionedStore
from tests.engine.test_state_machine import POLICY, World, rotate


class RecordingStore(VersionedStore):
    """Keeps every write request it was sent, for the test to carry one out again late."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.sent: list[tuple[TokenRecord, str | None]] = []

    def publish(self, record: TokenRecord, expected_version: str | None) -> str:
        self.sent.append((record, expected_version))
        return super().publish(record, expected_version)


def test_a_publish_without_an_answer_then_refused_on_the_retry_is_discarded_and_cannot_land_later(
        tmp_path: Path) -> None:
    world = World(tmp_path)
    store = RecordingStore("a")
    world.stores = {"a": store, "b": VersionedStore("b")}
    old = world.bootstrap()
    store.sent.clear()
    store.fail_next("publish", TransientError("memory store a: timeout"))
    store.fail_next("publish", PermanentError("memory store a: 403 on the retry"))
    with pytest.raises(PermanentError, match="403 on the retry"):
        world.engine().rotate()
    (discarded,) = [r for r in world.journal.runs(POLICY) if r.kind == "rotate"]
    assert discarded.state == RunState.FAILED and discarded.new_token_id not in world.active_ids()
    assert world.held() == {"a": old, "b": old} and world.active_ids() == {old}
    late, _retry = store.sent[:2]
    assert late[0].token_id == discarded.new_token_id
    with pytest.raises(ConflictError):  # the first try's request, carried out late by the server
        store.publish(*late)
    assert world.held() == {"a": old, "b": old}
    world.check_invariants(settled=True)
    rotate(world)
    world.check_invariants()
    world.settle()
