"""kill -9 of a real `rotator rotate` at every step boundary and inside every influxctl call.

After each kill: invariants 1, 3, 4 hold at once; `rotator recover` then restores invariant 2
(no orphan); a following rotation and revocation work and leave everything settled.
"""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_e2e import wait_out_grace
from tests.harness import Scenario, check_invariants, finish_and_settle, let_mint_window_pass, make_scenario

STEP_BOUNDARIES = [
    "planned", "minting", "minted", "verified", "publishing",
    "publish:primary", "published:primary", "published",
]  # fmt: skip


def _finish_and_settle(sc: Scenario) -> None:
    _mint_window_passed(sc)
    finish_and_settle(sc, check_invariants)


def _mint_window_passed(sc: Scenario) -> None:
    """A run killed inside (or just before) a mint stays open until no child of it can still mint
    (issue 10 §1b): check that a first recovery keeps it open, then let that window pass."""
    rows = sc.journal_rows("SELECT run_id FROM runs WHERE state = 'minting' AND new_token_id IS NULL")
    if not rows:
        return
    proc = sc.cli("recover")
    assert proc.returncode == 0, proc.stderr
    assert "died inside a mint" in proc.stdout and "none found" not in proc.stdout, proc.stdout
    assert sc.journal_rows("SELECT state FROM runs WHERE run_id = ?", rows[0][0]) == [("revoking_new",)]
    let_mint_window_pass(sc)


@pytest.mark.parametrize("checkpoint", STEP_BOUNDARIES)
def test_kill_at_step_boundary(checkpoint: str, tmp_path: Path, openbao: Any, fake_influxctl: Any) -> None:
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=1)
    proc = sc.cli("rotate", sc.policy, crash_at=checkpoint)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr)
    check_invariants(sc, after_crash=True)
    published = checkpoint.startswith("published")
    _finish_and_settle(sc)
    runs = sc.journal_rows("SELECT state FROM runs WHERE kind = 'rotate' ORDER BY started_at")
    assert runs[0][0] == ("done" if published else "failed" if checkpoint != "planned" else "aborted")


def _rotate_killed_inside_call(sc: Scenario, marker: Path, args: tuple[str, ...]) -> None:
    sc.kill_when(args, marker.exists, ended="the influxctl call", never="the paused influxctl call never started")


# (influxctl command, fault mode, nth call of that command in one rotation)
INSIDE_CALLS = [
    ("management list", "pause", 1),  # PLAN's issuer check
    ("management create", "pause", 1),  # before the server mints
    ("management create", "pause_after_effect", 1),  # minted, value never printed: found by tag
    ("management list", "pause", 2),  # VERIFY with the new token
]


@pytest.mark.parametrize(("command", "mode", "nth"), INSIDE_CALLS, ids=lambda v: str(v).replace(" ", "-"))
def test_kill_inside_influxctl_call(command: str, mode: str, nth: int, tmp_path: Path, openbao: Any,
                                    fake_influxctl: Any) -> None:
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=1)
    marker = tmp_path / "paused"
    for _ in range(nth - 1):  # let the earlier calls of the same command through
        sc.fake.add_fault(command, "pause", seconds=0, marker=tmp_path / "ignored")
    sc.fake.add_fault(command, mode, seconds=60, marker=marker)
    _rotate_killed_inside_call(sc, marker, ("rotate", sc.policy))
    sc.fake.clear_faults()
    check_invariants(sc, after_crash=True)
    _finish_and_settle(sc)


def test_kill_inside_revoke_call(tmp_path: Path, openbao: Any, fake_influxctl: Any) -> None:
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=1)
    assert sc.cli("rotate", sc.policy).returncode == 0
    wait_out_grace(sc)
    marker = tmp_path / "paused"
    sc.fake.add_fault("management revoke", "pause_after_effect", seconds=60, marker=marker)
    _rotate_killed_inside_call(sc, marker, ("revoke-expired",))
    sc.fake.clear_faults()
    check_invariants(sc, after_crash=True)
    assert sc.fake.token_by_id(sc.bootstrap_id)["revoked_at"] is not None  # the server did act
    proc = sc.cli("revoke-expired")
    assert proc.returncode == 0, proc.stderr
    assert sc.journal_rows("SELECT state FROM revocations") == [("done",)]
    check_invariants(sc, settled=True)


def test_kill_between_two_stores_rolls_forward(tmp_path: Path, openbao: Any, fake_influxctl: Any) -> None:
    """Killed after the first of two stores: recovery copies the new token to the second."""
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=1, second_store=f"mirror/{tmp_path.name}")
    mirror = sc.vault().secrets.kv.v2.read_secret_version(path=f"mirror/{tmp_path.name}", mount_point="secret",
                                                          raise_on_deleted_version=True)["data"]["data"]
    assert mirror["token_id"] == sc.bootstrap_id
    proc = sc.cli("rotate", sc.policy, crash_at="published:primary")
    assert proc.returncode == -signal.SIGKILL
    new_id = sc.current()["token_id"]
    assert new_id != sc.bootstrap_id
    # Both tokens are valid: the primary holds the new one, the mirror still the old one.
    check_invariants(sc, after_crash=True)
    assert sc.fake.token_by_id(sc.bootstrap_id)["revoked_at"] is None
    proc = sc.cli("recover")
    assert proc.returncode == 0, proc.stderr
    assert "rolled forward" in proc.stdout
    mirror = sc.vault().secrets.kv.v2.read_secret_version(path=f"mirror/{tmp_path.name}", mount_point="secret",
                                                          raise_on_deleted_version=True)["data"]["data"]
    assert mirror["token_id"] == new_id
    _finish_and_settle(sc)


@pytest.mark.parametrize("holder", ["dead here", "unknown"])
def test_recovery_of_a_verified_run_moves_the_store_on_whether_its_holder_is_dead_or_may_be_paused(
        holder: str, tmp_path: Path, openbao: Any, fake_influxctl: Any) -> None:
    """Killed after VERIFIED, before any store write. Recovery rolls back and revokes the candidate.
    A holder it cannot judge (another host; its lease expired) may be only paused before its
    compare-and-set write; one found dead here (its pid gone) may have sent that write, still held by a
    proxy or queued at the server. Either way recovery first writes the store again with what it
    holds, so that a late write fails (tests/engine/test_dead_holder_inflight_write.py)."""
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=1)
    before = len(sc.versions())
    proc = sc.cli("rotate", sc.policy, crash_at="verified")
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr)
    if holder == "unknown":
        with sqlite3.connect(sc.journal_path) as conn:
            conn.execute("UPDATE leases SET holder = 'elsewhere:1:abcd1234:0', expires_at = '2000-01-01T00:00:00Z'")
        conn.close()
    proc = sc.cli("recover")
    assert proc.returncode == 0 and "rolled back" in proc.stdout, proc.stdout + proc.stderr
    assert len(sc.versions()) == before + 1, sc.versions()
    assert sc.current()["token_id"] == sc.bootstrap_id
    check_invariants(sc)


def _killed_after_the_server_minted(tmp_path: Path, openbao: Any, fake_influxctl: Any) -> tuple[Scenario, str, str]:
    """A rotation killed inside `management create` after the server minted (its value never printed, so
    the run journaled no id): the scenario, the run's id and the id of the token it left tagged."""
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=1)
    marker = tmp_path / "paused"
    sc.fake.add_fault("management create", "pause_after_effect", seconds=60, marker=marker)
    _rotate_killed_inside_call(sc, marker, ("rotate", sc.policy))
    sc.fake.clear_faults()
    (run_id,) = sc.journal_rows("SELECT run_id FROM runs WHERE kind = 'rotate'")[0]
    (tagged,) = [t["id"] for t in sc.fake.tokens() if t["description"].startswith(f"rotator:{sc.policy}:{run_id}")]
    return sc, run_id, tagged


def test_a_recovery_after_the_mint_window_names_the_token_its_tag_search_revoked(
        tmp_path: Path, openbao: Any, fake_influxctl: Any) -> None:
    """Killed inside `management create` after the server minted (the value never printed): the run
    journaled no token id. A recovery after the mint window finds the token by its tag and revokes it,
    and said "unpublished token (none found) revoked": it names the token it revoked."""
    sc, run_id, tagged = _killed_after_the_server_minted(tmp_path, openbao, fake_influxctl)
    let_mint_window_pass(sc)
    proc = sc.cli("recover")
    assert proc.returncode == 0, proc.stderr
    assert f"unpublished token(s) {tagged} tagged rotator:{sc.policy}:{run_id} revoked" in proc.stdout, proc.stdout
    assert "none found" not in proc.stdout
    assert sc.fake.token_by_id(tagged)["revoked_at"]
    check_invariants(sc)


def test_a_recovery_inside_the_mint_window_names_the_token_its_tag_search_revoked(
        tmp_path: Path, openbao: Any, fake_influxctl: Any) -> None:
    """The same kill, recovered while the mint window is open: the run stays open, and the message said
    "live tokens tagged ... revoked" without saying which; the one after the window then said none
    was found. Each names what it revoked."""
    sc, run_id, tagged = _killed_after_the_server_minted(tmp_path, openbao, fake_influxctl)
    proc = sc.cli("recover")
    assert proc.returncode == 0, proc.stderr
    assert f"died inside a mint; live tokens tagged rotator:{sc.policy}:{run_id} revoked ({tagged})" in proc.stdout, \
        proc.stdout
    assert sc.fake.token_by_id(tagged)["revoked_at"]
    let_mint_window_pass(sc)
    finish_and_settle(sc, check_invariants)
