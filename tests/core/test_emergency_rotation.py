"""Compromise response (issue 10 §3): `rotator rotate POLICY --revoke-previous-now` mints, verifies,
publishes, then revokes the previous token at once, skipping grace; audited as an emergency."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_rerun_after_fix import _read_only_on
from tests.harness import make_scenario


def test_revoke_previous_now_needs_yes_when_not_on_a_terminal(tmp_path: Path, openbao: Any,
                                                              fake_influxctl: Any) -> None:
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=3600)
    proc = sc.cli("rotate", sc.policy, "--revoke-previous-now")
    assert proc.returncode == 2 and "--yes" in proc.stderr, proc.stderr
    assert sc.current()["token_id"] == sc.bootstrap_id, "nothing happened without the confirmation"
    assert [t["id"] for t in sc.fake.tokens()] == [sc.bootstrap_id]


def test_revoke_previous_now_on_a_terminal_asks_and_a_no_stops(tmp_path: Path, openbao: Any,
                                                               fake_influxctl: Any) -> None:
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=3600)
    import pty

    primary, secondary = pty.openpty()
    os.write(primary, b"no\n")  # the answer waits in the terminal's input
    proc = subprocess.run(sc.argv("rotate", sc.policy, "--revoke-previous-now"), stdin=secondary,
                          capture_output=True, text=True, env=sc.env(), cwd=sc.dir, timeout=60)
    os.close(primary)
    os.close(secondary)
    assert proc.returncode == 2 and "not confirmed" in proc.stderr, (proc.stdout, proc.stderr)
    assert sc.current()["token_id"] == sc.bootstrap_id


def test_revoke_previous_now_revokes_at_once_and_is_audited(tmp_path: Path, openbao: Any,
                                                            fake_influxctl: Any) -> None:
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=3600)
    assert sc.cli("rotate", sc.policy).returncode == 0
    leaked = sc.current()["token_id"]
    proc = sc.cli("rotate", sc.policy, "--revoke-previous-now", "--yes", "--reason", "token in a public gist",
                  "--output", "json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)[0]
    assert result["old_token_id"] == leaked and "grace skipped" in result["message"]
    assert sc.current()["token_id"] == result["new_token_id"]
    assert sc.fake.token_by_id(leaked)["revoked_at"] is not None, "revoked at once, an hour of grace skipped"
    assert sc.fake.problem(sc.current()["token"]) is None, "the new token works"
    steps = sc.journal_rows("SELECT result, detail FROM events WHERE step = 'emergency' ORDER BY at")
    assert [s[0] for s in steps] == ["start", "revoke_now", "ok"]
    assert json.loads(steps[0][1])["reason"] == "token in a public gist"
    # The token before it (the bootstrap token, in its hour of grace) may be the leaked one as well: an emergency
    # leaves no token of the policy valid but the new one.
    assert f"also revoked {sc.bootstrap_id}, left valid by an earlier run" in result["message"], result["message"]
    assert sc.fake.token_by_id(sc.bootstrap_id)["revoked_at"] is not None
    assert [t["id"] for t in sc.fake.tokens() if t["revoked_at"] is None] == [result["new_token_id"]]


def test_revoke_previous_now_for_all_policies(tmp_path: Path, openbao: Any, fake_influxctl: Any) -> None:
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=3600)
    # A second policy on its own KV path, bootstrapped with its own human token.
    second = f"influx/{uuid.uuid4().hex[:10]}"
    text = sc.config.read_text()
    head, _, rest = text.partition("[[policy]]")
    sc.config.write_text(text + "\n[[policy]]" + rest.replace('name = "mgmt"', 'name = "mgmt2"')
                         .replace(sc.kv_path, second))
    value2, id2 = sc.fake.add_token("created by a human for the second policy")
    sc.bootstrap_with(value2, id2, policy="mgmt2")
    proc = sc.cli("rotate", "--all", "--revoke-previous-now", "--yes", "--reason", "incident 7")
    assert proc.returncode == 0, proc.stderr
    assert sc.fake.token_by_id(sc.bootstrap_id)["revoked_at"] is not None
    assert sc.fake.token_by_id(id2)["revoked_at"] is not None
    assert sc.versions(second)[-1]["token_id"] != id2
    # Invariant 3 (grace) is what an emergency skips on purpose; 1, 2 and 4 hold.
    for path in (sc.kv_path, second):
        assert sc.fake.problem(sc.versions(path)[-1]["token"]) is None
    assert not [t for t in sc.fake.tokens() if t["description"].startswith("rotator:") and not t["revoked_at"]
                and t["id"] not in {sc.current()["token_id"], sc.versions(second)[-1]["token_id"]}]
    sc.assert_no_leak([value2, sc.bootstrap_value, sc.current()["token"], sc.versions(second)[-1]["token"]])


def test_revoke_previous_now_refuses_a_token_rotator_did_not_record(tmp_path: Path, openbao: Any,
                                                                    fake_influxctl: Any) -> None:
    """The emergency skips grace, never the rule: a payload naming another team's token is refused."""
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=3600)
    _, victim = sc.fake.add_token("team B's token")
    payload = {k: v for k, v in sc.current().items() if k != "version"}
    sc.vault().secrets.kv.v2.create_or_update_secret(path=sc.kv_path, secret={**payload, "token_id": victim},
                                                     mount_point="secret")
    proc = sc.cli("rotate", sc.policy, "--revoke-previous-now", "--yes")
    assert proc.returncode == 4, (proc.stdout, proc.stderr)
    assert "NOT revoked" in proc.stderr
    assert sc.fake.token_by_id(victim)["revoked_at"] is None
    assert sc.fake.problem(sc.current()["token"]) is None, "the new token is published and works"


def _leaked_and_not_revoked(sc: Any) -> tuple[str, str]:
    """An emergency rotation whose revocation fails (the cluster answers Unavailable): exit 4, the
    leaked token still valid and its revocation postponed by a backoff (a minute, from a retry
    setting of 30 s to 60 s) that a plain pass waits out. Returns the leaked token and the first
    emergency's new one."""
    sc.config.write_text(sc.config.read_text().replace('base_delay = "1s"', 'base_delay = "30s"')
                         .replace('max_delay = "2s"', 'max_delay = "60s"'))
    sc.fake.add_fault("management revoke", "exit", times=-1, message="Error: rpc error: code = Unavailable desc = down")
    leaked = sc.current()["token_id"]
    proc = sc.cli("rotate", sc.policy, "--revoke-previous-now", "--yes", "--reason", "leaked in incident 7")
    assert proc.returncode == 4 and f"previous token(s) {leaked} are NOT revoked" in proc.stderr, proc.stderr
    # the hint names a command that tries it at once, not one that waits out the backoff
    assert f"`rotator revoke-expired --retry-failed {sc.policy}`" in proc.stderr, proc.stderr
    [(next_try,)] = sc.journal_rows("SELECT next_try_at FROM revocations WHERE token_id = ? AND state = 'pending'",
                                    leaked)
    assert next_try is not None
    return leaked, sc.current()["token_id"]


def test_a_failed_emergency_revocation_is_named_by_revoke_expired_and_retried_at_once(
        tmp_path: Path, openbao: Any, fake_influxctl: Any) -> None:
    """Once the cause is fixed, a plain `revoke-expired` (a timer's pass: it keeps the backoff) names
    the leaked token as postponed, with until when, where it said "nothing to do"; `--retry-failed`,
    which the emergency's hint names, revokes it at once."""
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=3600, attempts=1)
    leaked, _ = _leaked_and_not_revoked(sc)
    sc.fake.clear_faults()  # the cause is fixed
    proc = sc.cli("revoke-expired")
    [(next_try, attempts)] = sc.journal_rows("SELECT next_try_at, attempts FROM revocations WHERE token_id = ?",
                                             leaked)
    assert proc.returncode == 0 and "nothing to do" not in proc.stdout, proc.stdout
    assert f"token {leaked}: revocation postponed until {next_try[:19]}Z" in proc.stdout, proc.stdout
    assert "Unavailable" in proc.stdout and f"revoke-expired --retry-failed {sc.policy}" in proc.stdout
    assert attempts == 1, "a plain pass did not try it again before its backoff ended"
    proc = sc.cli("revoke-expired", "--retry-failed", sc.policy)
    assert proc.returncode == 0 and f"token {leaked}: revoked" in proc.stdout, proc.stdout + proc.stderr
    assert sc.fake.token_by_id(leaked)["revoked_at"] is not None
    assert sc.journal_rows("SELECT state FROM revocations WHERE token_id = ?", leaked) == [("done",)]
    assert sc.fake.problem(sc.current()["token"]) is None


@pytest.mark.parametrize("row", ["postponed", "gave-up"])
def test_the_emergency_again_revokes_the_token_an_earlier_one_left_valid(
        tmp_path: Path, openbao: Any, fake_influxctl: Any, row: str) -> None:
    """The same emergency command again revokes the leaked token that the first one could not, its
    backoff or not (and after its rounds ran out: failed), and never exits 0 while it is valid: before,
    it revoked only the harmless token the first one minted and said ok."""
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=3600, attempts=1)
    leaked, first = _leaked_and_not_revoked(sc)
    if row == "gave-up":  # a timer's rounds ran out while the cluster was down
        with sqlite3.connect(sc.journal_path) as db:
            db.execute("UPDATE revocations SET state = 'failed', attempts = 10 WHERE token_id = ?", (leaked,))
    args = ("rotate", sc.policy, "--revoke-previous-now", "--yes", "--reason", "leaked in incident 7")
    # The cause still there: exit 4, naming the leaked token (tried again, backoff or not) too.
    proc = sc.cli(*args)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "NOT revoked" in proc.stderr and leaked in proc.stderr.split("NOT revoked")[0], proc.stderr
    assert sc.journal_rows("SELECT attempts FROM revocations WHERE token_id = ?", leaked) == [(11 if row == "gave-up"
                                                                                               else 2,)]
    assert sc.fake.token_by_id(leaked)["revoked_at"] is None
    second = sc.current()["token_id"]
    sc.fake.clear_faults()  # the cause is fixed: the same command again
    proc = sc.cli(*args, "--output", "json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [result] = json.loads(proc.stdout)
    assert result["old_token_id"] == second and f"also revoked {leaked}, {first}" in result["message"], result
    for token in (leaked, first, second):
        assert sc.fake.token_by_id(token)["revoked_at"] is not None, token
    assert sc.fake.problem(sc.current()["token"]) is None, "the new token is published and works"
    assert not sc.journal_rows("SELECT token_id FROM revocations WHERE state IN ('pending', 'failed')")
    events = sc.journal_rows("SELECT result, detail FROM events WHERE step = 'emergency' ORDER BY seq")
    assert json.loads(events[-1][1])["earlier"] == [leaked, first] and events[-1][0] == "ok"


EMERGENCY = ("--revoke-previous-now", "--yes", "--reason", "leaked in a gist")


@pytest.mark.parametrize("stop", ["a store refuses", "killed after publishing"])
def test_an_emergency_that_stopped_before_its_revocation_revokes_the_leaked_token_when_run_again(
        tmp_path: Path, openbao: Any, fake_influxctl: Any, stop: str) -> None:
    """The emergency stopped before it revoked (a second store refused; a kill -9 once the stores held the new
    token). The same command again recovered the run, which scheduled the leaked token after its hour of grace
    like any replaced token, then revoked only the harmless token the first try minted, and said ok (exit 0)
    while the leaked one stayed valid."""
    mirror = f"influx/{uuid.uuid4().hex[:10]}-mirror"
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=3600, attempts=1, second_store=mirror)
    assert sc.cli("rotate", sc.policy).returncode == 0
    leaked = sc.current()["token_id"]
    if stop == "a store refuses":
        token_file = sc.dir / "vault-token"
        token_file.write_text(_read_only_on(openbao, sc.kv_path, mirror))
        proc = sc.cli("rotate", sc.policy, *EMERGENCY)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        # the error says the leaked token is still valid, and what revokes it
        hint = proc.stderr.split("fix:", 1)[1]
        assert leaked in hint and "still valid and NOT revoked" in hint and "same emergency command again" in hint
        token_file.write_text(openbao.root_token)  # the cause is fixed
    else:
        assert sc.cli("rotate", sc.policy, *EMERGENCY, crash_at="published").returncode < 0
    proc = sc.cli("rotate", sc.policy, *EMERGENCY, "--output", "json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [result] = json.loads(proc.stdout)
    assert leaked in result["message"].split("also revoked", 1)[1], result["message"]
    assert sc.fake.token_by_id(leaked)["revoked_at"] is not None, "the leaked token is revoked"
    assert [t["id"] for t in sc.fake.tokens() if t["revoked_at"] is None] == [result["new_token_id"]]
    assert sc.fake.problem(sc.current()["token"]) is None, "the new token is published and works"
    assert not sc.journal_rows("SELECT token_id FROM revocations WHERE state IN ('pending', 'failed')")
