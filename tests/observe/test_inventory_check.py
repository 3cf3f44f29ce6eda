"""`rotator inventory --check` (an exit status cron and CI can alert on) and a cluster's error text on
the terminal, end to end on the fake influxctl and a real OpenBao."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from rotator.sandbox.influxctl_state import find_db_token
from tests.harness import make_scenario
from tests.observe.test_inventory_orphans import expire_now

POLICY = "mgmt"
#: what a cluster (or whatever answers in its place) may write as a gRPC status message
EVIL = ("Error: rpc error: code = Unavailable desc = \x1b]0;owned-title\x07\x1b[2J\x1b[1;31mALL TOKENS ROTATED OK"
        "\x1b[0m \u202etxt.exe\x9b2J")


# ---------------------------------------------------------------------------------- item 7: --check
def test_check_exits_4_for_each_kind_of_finding_and_0_without(tmp_path, openbao, fake_influxctl):
    """`rotator inventory` exited 0 whatever it found; `--check` exits 4 for a live orphan, a suspicious
    token, an unmanaged token that never expires or is older than --max-age, and names each on stderr."""
    fake = fake_influxctl.state
    sc = make_scenario(tmp_path, openbao, fake, grace_s=3600)
    assert sc.cli("rotate", POLICY).returncode == 0
    clean = sc.cli("inventory", "--check")
    assert clean.returncode == 0, clean.stderr
    assert "rotator: attention" not in clean.stderr
    # An unmanaged token that expires, young: not a finding; older than --max-age: one.
    _, young = fake.add_token("ci, expires", expires_at=datetime.now(UTC) + timedelta(days=30),
                              created_at=datetime.now(UTC) - timedelta(hours=1))
    assert sc.cli("inventory", "--check").returncode == 0
    aged = sc.cli("inventory", "--check", "--max-age", "1m")
    assert aged.returncode == 4, aged.stderr
    assert f"rotator: attention: influxctl-management:{POLICY}: unmanaged token {young} (older-than-max-age)" \
        in aged.stderr
    assert sc.cli("inventory").returncode == 0, "without --check the exit status is unchanged"

    fake.add_fault("management create", "exit", times=10, code=1,
                   message="rpc error: code = PermissionDenied desc = permission denied")
    assert sc.cli("rotate", POLICY).returncode == 1
    fake.clear_faults()
    (run_id,) = [r[0] for r in sc.journal_rows("SELECT run_id FROM runs WHERE state = 'failed'")]
    cases = [("orphan", f"rotator:{POLICY}:{run_id}", {}),
             ("orphan?", f"rotator:{POLICY}:0123abcd0123abcd", {}),
             ("unmanaged", "grafana, never expires", {})]
    for what, description, kw in cases:
        _, token_id = fake.add_token(description, **kw)
        proc = sc.cli("inventory", "--check", "--output", "json")
        assert proc.returncode == 4, (what, proc.stderr)
        assert f": {what} token {token_id}" in proc.stderr
        json.loads(proc.stdout)  # stdout stays the JSON document
        assert sc.cli("inventory", "--output", "json").returncode == 0
        if what == "orphan":  # revoked by the same command: no longer a finding
            revoked = sc.cli("inventory", "--check", "--revoke-orphans", "--yes")
            assert revoked.returncode == 0, revoked.stderr
            assert f"orphan {token_id}: revoked" in revoked.stderr
        else:
            fake.revoke(token_id)
    assert sc.cli("inventory", "--check").returncode == 0
    # An issuer that cannot be listed: 1, as without --check.
    fake.add_fault("management list", "exit", times=-1, code=1, message="Error: service unavailable")
    assert sc.cli("inventory", "--check").returncode == 1


@pytest.mark.parametrize("dead", ["REVOKED", "EXPIRED"])
def test_check_exits_4_first_for_a_current_token_the_issuer_no_longer_accepts(tmp_path, openbao, fake_influxctl,
                                                                            dead):
    """A policy's current token revoked or expired at the issuer: its stores hand out a token that no
    longer works (DESIGN invariant 1), the most urgent finding. `--check` exited 0 for it: the entry is
    `managed` and not live, which no rule counted. It is named first, before the other findings.
    (Database tokens: their policy lists with a management token, so a dead current token is listed.)"""
    from tests.e2e.test_e2e_database_tokens import POLICY as DB_POLICY
    from tests.e2e.test_e2e_database_tokens import make_db_scenario

    fake = fake_influxctl.state
    sc = make_db_scenario(tmp_path, openbao, fake, grace_s=3600, bootstrap=False)
    # An expiry an hour away, moved into the past once bootstrapped: a token due 3 s after its creation
    # expired before a bootstrap slowed by a busy machine had verified it
    expires = datetime.now(UTC) + timedelta(hours=1) if dead == "EXPIRED" else None
    sc.bootstrap_value, sc.bootstrap_id = fake.add_db_token("created by a human for bootstrap", {"read": ["db1"]},
                                                            expires_at=expires)  # fmt: skip
    sc.bootstrap_with(sc.bootstrap_value, sc.bootstrap_id)
    _, unmanaged = fake.add_db_token("grafana, never expires", {"read": ["db1"]})
    assert sc.cli("inventory", "--check").returncode == 4  # the unmanaged token alone
    if expires is None:
        fake.revoke_db_token(sc.bootstrap_id)
    else:
        expire_now(fake.path, sc.bootstrap_id, find_db_token)
    proc = sc.cli("inventory", "--check")
    assert proc.returncode == 4, proc.stderr
    attention = [line for line in proc.stderr.splitlines() if line.startswith("rotator: attention: ")]
    assert attention[0].startswith(f"rotator: attention: influxctl-database:{DB_POLICY}: managed token "
                                   f"{sc.bootstrap_id}")
    assert f"current token, {dead} at the issuer: the stores hold a token that no longer works" in attention[0]
    assert f"`rotator rotate {DB_POLICY}` replaces it" in attention[0]
    assert [line for line in attention if f"unmanaged token {unmanaged}" in line]
    fake.revoke_db_token(unmanaged)
    assert sc.cli("inventory", "--check").returncode == 4, "the dead current token alone is a finding"
    assert sc.cli("rotate", DB_POLICY).returncode == 0
    assert sc.cli("inventory", "--check").returncode == 0, "rotated: nothing left to find"
    sc.assert_no_leak([sc.bootstrap_value, sc.mgmt_value, *(v["token"] for v in sc.versions())])


# ---------------------------------------------------------------------------------- item 8: error text
def _assert_escaped(text: str) -> None:
    assert "\x1b" not in text and "\u202e" not in text and "\x9b" not in text and "\x07" not in text
    assert "\\x1b]0;owned-title\\x07\\x1b[2J" in text and "\\u202etxt.exe\\x9b2J" in text


def test_a_cluster_s_error_text_reaches_no_terminal_and_no_journal_raw(tmp_path, openbao, fake_influxctl):
    """influxctl's last stderr line (the cluster's gRPC status message) was printed as it came: escape
    sequences (a window title, a cleared screen, a forged "ALL TOKENS ROTATED OK"), C1 and bidi controls."""
    fake = fake_influxctl.state
    sc = make_scenario(tmp_path, openbao, fake)
    fake.add_fault("management list", "exit", times=-1, code=1, message=EVIL)
    inventory = sc.cli("inventory")
    assert inventory.returncode == 1
    (line,) = [line for line in inventory.stderr.splitlines() if line.startswith("rotator: error: ")]
    _assert_escaped(line)
    errors = json.loads(sc.cli("inventory", "--output", "json").stdout)["errors"]
    _assert_escaped(errors[0]["error"])
    # The same message through a rotation: on the terminal, in the log file and in the journal.
    fake.clear_faults()
    fake.add_fault("management create", "exit", times=10, code=1, message=EVIL.replace("Unavailable",
                                                                                        "PermissionDenied"))
    rotate = sc.cli("rotate", POLICY)
    assert rotate.returncode == 1
    _assert_escaped(rotate.stderr + sc.log_file.read_text())
    (error,) = [r[0] for r in sc.journal_rows("SELECT error FROM runs WHERE state = 'failed'")]
    assert "\x1b" not in error and "\u202e" not in error
