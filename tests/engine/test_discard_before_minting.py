"""A run that fails before anything was minted ends ``aborted``, not ``failed`` (Engine._discard reads the
state the run was in before it moved it to revoking_new)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rotator.core.journal import RunRecord, RunState
from tests.engine.test_state_machine import POLICY, World


def test_a_run_whose_minting_record_fails_ends_aborted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    world = World(tmp_path)
    world.bootstrap()
    real = world.journal.update_run

    def update_run(run: RunRecord, **changes: Any) -> None:
        if changes.get("state") == RunState.MINTING:
            raise RuntimeError("the journal refused the mint's intent (simulated)")
        real(run, **changes)

    monkeypatch.setattr(world.journal, "update_run", update_run)
    with pytest.raises(RuntimeError, match="simulated"):
        world.engine().rotate()
    [run] = world.journal.runs(POLICY, limit=1)
    assert run.state == RunState.ABORTED and run.new_token_id is None, run
    assert world.minted_ids() == set(), "nothing was minted"
    assert world.journal.open_runs(POLICY) == []
    world.check_invariants(settled=True)
