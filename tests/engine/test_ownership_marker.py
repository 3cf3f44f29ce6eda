"""Two policies must not share a secret, also when its current version holds no record (review1 #9).

The Vault store keeps the policy in the secret's custom_metadata and the AWS store in a tag: that
marker outlives the current version's payload (a soft-deleted or destroyed current version, a
secret with no AWSCURRENT). The ownership check reads it (StoreState.marker_policy) when there is
no record, so another policy does not overwrite the secret without ``adopt``.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from rotator.core.contracts import StoreState, TokenRecord
from rotator.core.errors import OwnershipError
from rotator.core.secret import Secret
from rotator.testing import MemoryStore
from tests.engine.test_state_machine import POLICY, START, World


class MarkedStore(MemoryStore):
    """A memory store that marks the secret with the policy it last published for (as Vault's
    custom_metadata), and whose current version can be deleted (its payload gone, the marker kept)."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.marker: str | None = None
        self.deleted: str | None = None

    def delete_current(self) -> None:
        self.deleted = self._read().version

    def _read(self) -> StoreState:
        state = super()._read()
        record = None if state.version is not None and state.version == self.deleted else state.record
        return state._replace(record=record, marker_policy=self.marker)

    def _publish(self, record: TokenRecord, expected_version: str | None) -> str:
        version = super()._publish(record, expected_version)
        self.marker = record.policy
        return version


def _world(tmp_path: Path, *, adopt: bool = False) -> World:
    world = World(tmp_path, adopt=adopt)
    world.stores = {name: MarkedStore(name) for name in ("a", "b")}
    return world


def _other_policys_deleted_secret(world: World) -> MarkedStore:
    """Store ``a`` is another policy's secret (published by it), whose current version was deleted."""
    store = world.stores["a"]
    assert isinstance(store, MarkedStore)
    value, token_id = world.issuer.tokens.create("rotator:other:0123456789abcdef")
    store.publish(TokenRecord(Secret(value), token_id, "memory", "other", START, START + timedelta(days=3)),
                  store.read_current().version)
    store.delete_current()
    state = store.read_current()
    assert (state.managed, state.record, state.marker_policy) == (True, None, "other")
    return store


def test_a_secret_marked_for_another_policy_with_no_record_is_not_taken_over(tmp_path: Path) -> None:
    world = _world(tmp_path)
    store = _other_policys_deleted_secret(world)
    versions = store.versions()
    value, token_id = world.issuer.tokens.create("made by a human")
    with pytest.raises(OwnershipError, match="policy 'other'"):
        world.engine().bootstrap(Secret(value), token_id, None)
    assert store.versions() == versions
    world.stores["a"] = MarkedStore("a2")  # bootstrap this policy elsewhere, then point it back at `a`
    world.bootstrap()
    world.stores["a"] = store
    with pytest.raises(OwnershipError, match="policy 'other'"):
        world.engine().rotate()
    assert store.versions() == versions, "the other policy's secret is not written"


def test_adopt_takes_it_over_and_this_policy_s_own_marker_is_no_obstacle(tmp_path: Path) -> None:
    world = _world(tmp_path, adopt=True)
    store = _other_policys_deleted_secret(world)
    world.bootstrap()
    assert store.read_current().marker_policy == POLICY
    world.adopt = False
    store.delete_current()  # this policy's own secret, its current version deleted: still its own
    result = world.engine().rotate()
    assert result.ok, result.message
    assert store.read_current().token_id == result.new_token_id
