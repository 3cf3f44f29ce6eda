"""Compromise response (issue 10 §3): `rotator rotate POLICY --revoke-previous-now` mints, verifies,
publishes, then revokes the previous token at once, skipping grace; audited as an emergency."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

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
    # The earlier revocation (bootstrap token, grace 1 h) is untouched: only the previous token is rushed.
    assert sc.fake.token_by_id(sc.bootstrap_id)["revoked_at"] is None


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
