"""CLI lines that must not claim what nothing checked: `inventory --revoke-orphans` with a target that
could not be listed said "no orphan to revoke" (the emergency rotation's postponed revocation, which
`revoke-expired` printed as "nothing to do", is tested in tests/core/test_emergency_rotation.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.harness import make_scenario


def test_revoke_orphans_says_a_target_it_could_not_list_was_not_checked(tmp_path: Path, openbao: Any,
                                                                         fake_influxctl: Any) -> None:
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=3600, attempts=1)
    sc.fake.add_fault("management list", "exit", times=-1, message="Error: rpc error: code = Unavailable desc = down")
    proc = sc.cli("inventory", "--revoke-orphans", "--yes")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "no orphan to revoke" not in proc.stderr, proc.stderr
    assert f"orphans on influxctl-management:{sc.policy}" in proc.stderr, proc.stderr
    assert "not checked: it could not be listed" in proc.stderr, proc.stderr
    sc.fake.clear_faults()  # listed: "none" is then a checked answer again
    proc = sc.cli("inventory", "--revoke-orphans", "--yes")
    assert proc.returncode == 0 and "no orphan to revoke" in proc.stderr, proc.stdout + proc.stderr
    assert "not checked" not in proc.stderr
