"""Roll forward copies a store's value to the other stores only when it is the value the run minted.

A run dies after writing its new token N to store ``a`` only. Someone who can write ``a`` (and not
``b``) writes a new version under the same token id N with a value of their choosing. Recovery
copied whatever ``a`` held into ``b`` ("rolled forward, token N published to every store"), so the
writer of one store chose the value every store served, under rotator's name. The run now journals
the SHA-256 of the value it minted with its id at MINTED (RunRecord.new_token_sha256, schema 11, in
the same UPDATE), and roll forward refuses (NeedsAttention, nothing written) a holder whose value has
another digest. The way out its hint names works: put back the version the run wrote, or the one it
replaced.
"""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.core.contracts import TokenRecord
from rotator.core.errors import NeedsAttention
from rotator.core.journal import RunRecord, RunState, open_journal
from rotator.core.secret import Secret, value_sha256
from rotator.testing import MemoryStore
from tests.engine.test_state_machine import POLICY, START, Crash, World, rotate

EVIL = "memtok-chosen-by-whoever-can-write-store-a"


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def _died_after_publishing_to_a(world: World) -> RunRecord:
    world.bootstrap()
    world.crash_at = "published:a"
    with pytest.raises(Crash):
        world.engine().rotate()
    (run,) = world.journal.open_runs(POLICY)
    assert run.state == RunState.VERIFIED and world.held() == {"a": run.new_token_id, "b": world.bootstrap_id}
    return run


def _overwrite_a(world: World, token_id: str) -> None:
    """What a writer of store ``a`` alone can do: a new version under the run's token id, another value."""
    store = world.stores["a"]
    store.publish(TokenRecord(Secret(EVIL), token_id, "memory", POLICY, START, START + timedelta(days=3)),
                  store.read_current().version)


def _put_back(store: MemoryStore, version: int) -> None:
    """`bao kv rollback -version=N`: a new version with what version ``version`` held."""
    with store.backend.lock:
        versions = store.backend.secrets[store.path]
        versions.append(versions[version - 1])


def test_a_store_holding_the_run_s_token_id_with_another_value_is_not_copied(world: World) -> None:
    run = _died_after_publishing_to_a(world)
    minted = world.stores["a"].read_current().record
    assert minted is not None and run.new_token_sha256 == value_sha256(minted.value), "journaled at MINTED"
    _overwrite_a(world, run.new_token_id or "")
    writes = {name: store.versions() for name, store in world.stores.items()}
    for attempt in (lambda: world.engine().recover(), lambda: world.engine().rotate(),
                    lambda: world.engine().revoke_due()):
        with pytest.raises(NeedsAttention) as err:
            attempt()
        assert (f"store 'a' holds token id {run.new_token_id} with a value that is not the one run {run.run_id} "
                "minted; nothing was copied") in str(err.value)
        assert err.value.hint is not None and "put back there the version run" in err.value.hint
        assert "`rotator recover p`" in err.value.hint and EVIL not in str(err.value) + err.value.hint
    assert {name: store.versions() for name, store in world.stores.items()} == writes, "nothing was written"
    assert world.held() == {"a": run.new_token_id, "b": world.bootstrap_id}
    b = world.stores["b"].read_current().record
    assert b is not None and b.value.reveal() != EVIL
    stored = world.journal.get_run(run.run_id)
    assert stored is not None and stored.state == RunState.VERIFIED and "not the one run" in (stored.error or "")


def test_the_version_the_run_wrote_put_back_is_rolled_forward(world: World) -> None:
    run = _died_after_publishing_to_a(world)
    minted = world.stores["a"].read_current().record
    assert minted is not None
    wrote = world.stores["a"].versions()
    _overwrite_a(world, run.new_token_id or "")
    with pytest.raises(NeedsAttention):
        world.engine().recover()
    _put_back(world.stores["a"], wrote)
    (action,) = world.engine().recover()
    assert action == f"run {run.run_id}: rolled forward, token {run.new_token_id} published to every store"
    b = world.stores["b"].read_current().record
    assert b is not None and b.token_id == run.new_token_id and b.value == minted.value
    world.check_invariants()
    world.settle()


def test_the_version_it_replaced_put_back_rolls_the_run_back(world: World) -> None:
    run = _died_after_publishing_to_a(world)
    _overwrite_a(world, run.new_token_id or "")
    with pytest.raises(NeedsAttention):
        world.engine().recover()
    _put_back(world.stores["a"], int(run.planned_versions["a"] or 0))
    (action,) = world.engine().recover()
    assert action == f"run {run.run_id}: rolled back, unpublished token {run.new_token_id} revoked"
    assert run.new_token_id not in world.active_ids()
    assert world.held() == {"a": world.bootstrap_id, "b": world.bootstrap_id}
    rotate(world)
    world.check_invariants()


def test_the_journal_keeps_the_digest_never_the_value(world: World) -> None:
    run = _died_after_publishing_to_a(world)
    minted = world.stores["a"].read_current().record
    assert minted is not None
    world.journal.close()
    with sqlite3.connect(world.tmp_path / "journal.db") as db:
        (digest,) = db.execute("SELECT new_token_sha256 FROM runs WHERE run_id = ?", (run.run_id,)).fetchone()
        dump = "\n".join(db.iterdump())
    assert digest == value_sha256(minted.value) and len(digest) == 64
    assert minted.value.reveal() not in dump


def test_a_run_journaled_before_schema_11_is_rolled_forward_as_before(world: World) -> None:
    """A journal of schema 10 with the dead run in it, upgraded by the next open: the run has no digest
    to compare with (NULL), and the holder's value is taken as it is, as before (docs/design-notes.md)."""
    run = _died_after_publishing_to_a(world)
    world.journal.close()
    with sqlite3.connect(world.tmp_path / "journal.db") as db:  # what a rotator of schema 10 left
        db.execute("ALTER TABLE runs DROP COLUMN new_token_sha256")
        db.execute("DELETE FROM schema_version WHERE version >= 11")
    world.journal = open_journal(f"sqlite:///{world.tmp_path / 'journal.db'}")
    (upgraded,) = world.journal.open_runs(POLICY)
    assert upgraded.new_token_sha256 is None
    (action,) = world.engine().recover()
    assert action == f"run {run.run_id}: rolled forward, token {run.new_token_id} published to every store"
    assert set(world.held().values()) == {run.new_token_id}


def test_recover_refuses_the_edited_value_end_to_end(tmp_path: Path, openbao: Any, fake_influxctl: Any) -> None:
    """The reviewer's reproduction, with the real CLI and OpenBao: two Vault stores, a rotation killed
    after writing token N to ``primary`` only, and a new version of ``primary`` under N with another
    value. `rotator recover` exits 4 and writes nothing to ``mirror``; the version the run wrote, put
    back (`bao kv rollback`), is rolled forward."""
    import hvac

    from tests.harness import make_scenario, read_kv_versions

    mirror = "influx/mirror-" + tmp_path.name[-8:]
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=1, bootstrap=False)
    sc.extra_stores = sc.vault_store_toml(name="mirror", path=mirror)
    sc.write_policy()
    sc.bootstrap_value, sc.bootstrap_id = sc.fake.add_token("created by a human for bootstrap")
    sc.bootstrap_with(sc.bootstrap_value, sc.bootstrap_id)
    assert sc.cli("rotate", sc.policy, crash_at="published:primary").returncode != 0
    minted = sc.current()
    (run_id,) = sc.journal_rows("SELECT run_id FROM runs WHERE state = 'verified'")[0]
    client = hvac.Client(url=sc.vault_url, token=sc.vault_token)
    evil = dict({k: v for k, v in minted.items() if k != "version"}, token=EVIL)
    client.secrets.kv.v2.create_or_update_secret(path=sc.kv_path, secret=evil, mount_point="secret")
    mirror_versions = len(read_kv_versions(sc.vault_url, sc.vault_token, mirror))

    proc = sc.cli("recover", sc.policy)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert (f"store 'primary' holds token id {minted['token_id']} with a value that is not the one run {run_id} "
            "minted; nothing was copied") in proc.stderr
    assert len(read_kv_versions(sc.vault_url, sc.vault_token, mirror)) == mirror_versions, "mirror not written"
    assert read_kv_versions(sc.vault_url, sc.vault_token, mirror)[-1]["token_id"] == sc.bootstrap_id
    assert sc.cli("status", sc.policy).returncode == 4

    back = {k: v for k, v in minted.items() if k != "version"}  # `bao kv rollback -version=<the run's>`
    client.secrets.kv.v2.create_or_update_secret(path=sc.kv_path, secret=back, mount_point="secret")
    proc = sc.cli("recover", sc.policy)
    assert proc.returncode == 0 and "rolled forward" in proc.stdout, proc.stdout + proc.stderr
    now = read_kv_versions(sc.vault_url, sc.vault_token, mirror)[-1]
    assert (now["token_id"], now["token"]) == (minted["token_id"], minted["token"])
    assert not any(minted["token"] in text or EVIL in text for text in sc.written().values()), "no value written out"


def test_with_neither_version_left_a_repair_publishes_a_new_token_and_recovery_revokes_the_candidate(
        world: World) -> None:
    """The hint's last way out: `bootstrap --replace` publishes a person's token over every store (its
    recovery first fails, warned), and the next recovery finds no store holding N: N is revoked."""
    run = _died_after_publishing_to_a(world)
    _overwrite_a(world, run.new_token_id or "")
    value, token_id = world.issuer.tokens.create("made by a person for the repair")
    assert world.engine().bootstrap(Secret(value), token_id, None, replace=True, reason="store a overwritten").ok
    assert world.held() == {"a": token_id, "b": token_id}
    world.engine().recover()
    assert run.new_token_id not in world.active_ids()
    assert not world.journal.open_runs(POLICY)
    world.check_invariants()
