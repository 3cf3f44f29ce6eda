"""End to end through the CLI: fake influxctl (subprocess) + real OpenBao + SQLite journal."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from tests.harness import Scenario, check_invariants, make_scenario, ts


def _scenario(tmp_path: Any, openbao: Any, fake_influxctl: Any, **kw: Any) -> Scenario:
    return make_scenario(tmp_path, openbao, fake_influxctl.state, **kw)


def wait_out_grace(sc: Any) -> None:
    """Sleep until every pending revocation is due (its successor's publication + grace), and 0.2 s
    more: what a fixed ``grace + 0.3 s`` after the publishing command waited for, without also
    sleeping through the time that command and the checks since took."""
    dues = [due if isinstance(due, datetime) else ts(due)
            for (due,) in sc.journal_rows("SELECT due_at FROM revocations WHERE state = 'pending'")]
    assert dues and None not in dues, f"no pending revocation whose grace could end: {dues}"
    time.sleep(max(0.0, (max(dues) - datetime.now(UTC)).total_seconds()) + 0.2)


def test_bootstrap_then_three_rotations_revoke_each_old_token_after_grace(tmp_path, openbao, fake_influxctl):
    sc = _scenario(tmp_path, openbao, fake_influxctl, grace_s=2)
    ids = [sc.bootstrap_id]
    for _ in range(3):
        proc = sc.cli("rotate", sc.policy, "--output", "json")
        assert proc.returncode == 0, proc.stderr
        result = json.loads(proc.stdout)[0]
        assert result["ok"] and result["old_token_id"] == ids[-1]
        ids.append(result["new_token_id"])
        # Not before grace: the token just replaced is still active at the issuer.
        assert sc.fake.token_by_id(ids[-2])["revoked_at"] is None
        check_invariants(sc)

    versions = sc.versions()
    assert [v["token_id"] for v in versions] == ids
    meta = sc.vault().secrets.kv.v2.read_secret_metadata(path=sc.kv_path, mount_point="secret")["data"]
    assert meta["custom_metadata"]["managed-by"] == "rotator"
    assert meta["custom_metadata"]["token_id"] == ids[-1]
    assert meta["custom_metadata"]["policy"] == sc.policy
    for payload in versions[1:]:
        assert payload["issuer"] == "influxctl-management" and payload["policy"] == sc.policy
        assert payload["expires_at"], "every minted token carries an expiry"
        token = sc.fake.token_by_id(payload["token_id"])
        assert token["expires_at"] is not None
        assert token["description"].startswith(f"rotator:{sc.policy}:")

    wait_out_grace(sc)
    proc = sc.cli("revoke-expired")
    assert proc.returncode == 0, proc.stderr
    for old in ids[:-1]:
        assert sc.fake.token_by_id(old)["revoked_at"] is not None, f"{old} should be revoked after grace"
    assert sc.fake.token_by_id(ids[-1])["revoked_at"] is None
    check_invariants(sc, settled=True)

    status = sc.cli("status", "--output", "json")
    assert status.returncode == 0, status.stderr
    row = json.loads(status.stdout)[0]
    assert row["current_token_id"] == ids[-1]
    assert row["pending_revocations"] == 0 and row["failed_revocations"] == 0
    assert not row["due"]


def test_revocation_waits_for_grace_and_status_plan_report_it(tmp_path, openbao, fake_influxctl):
    sc = _scenario(tmp_path, openbao, fake_influxctl, grace_s=30)
    assert sc.cli("rotate", sc.policy).returncode == 0
    early = sc.cli("revoke-expired")
    assert early.returncode == 0 and "nothing to do" in early.stdout
    assert sc.fake.token_by_id(sc.bootstrap_id)["revoked_at"] is None
    plan = sc.cli("plan")
    assert plan.returncode == 0 and "1 revocation(s) pending" in plan.stdout
    table = sc.cli("status")
    assert "1 pending" in table.stdout and "CURRENT TOKEN" in table.stdout
    check_invariants(sc)


def test_activation_delay_is_waited_out(tmp_path, openbao, fake_influxctl):
    sc = _scenario(tmp_path, openbao, fake_influxctl, activation_delay_s=2.5)
    start = time.monotonic()
    proc = sc.cli("rotate", sc.policy)
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - start >= 2.5
    check_invariants(sc)


def test_dry_run_changes_nothing(tmp_path, openbao, fake_influxctl):
    sc = _scenario(tmp_path, openbao, fake_influxctl)
    before = (len(sc.versions()), len(sc.fake.tokens()))
    proc = sc.cli("rotate", sc.policy, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "would mint" in proc.stdout
    assert (len(sc.versions()), len(sc.fake.tokens())) == before


def test_rotate_if_due_skips_a_fresh_policy(tmp_path, openbao, fake_influxctl):
    sc = _scenario(tmp_path, openbao, fake_influxctl)
    assert sc.cli("rotate", "--all", "--if-due").returncode == 0  # due: only bootstrapped
    tokens = len(sc.fake.tokens())
    proc = sc.cli("rotate", "--all", "--if-due")
    assert proc.returncode == 0 and "not due" in proc.stdout
    assert len(sc.fake.tokens()) == tokens


def test_leak_check_at_debug_level_json_logs(tmp_path, openbao, fake_influxctl):
    sc = _scenario(tmp_path, openbao, fake_influxctl, grace_s=1)
    for _ in range(2):
        assert sc.cli("rotate", sc.policy, "--log-format", "json").returncode == 0
    wait_out_grace(sc)
    sc.cli("revoke-expired", "--log-format", "json")
    sc.cli("status", "--output", "json")
    assert sc.log_file.read_text().count("\n") > 10, "debug logging should have produced records"
    check_invariants(sc, settled=True)


def test_expiry_of_minted_token_is_interval_plus_grace_plus_margin(tmp_path, openbao, fake_influxctl):
    sc = _scenario(tmp_path, openbao, fake_influxctl, grace_s=60)
    before = datetime.now(UTC)
    assert sc.cli("rotate", sc.policy).returncode == 0
    expires = datetime.fromisoformat(sc.current()["expires_at"].replace("Z", "+00:00"))
    lifetime = (expires - before).total_seconds()
    # schedule 1h + grace 60s + default margin 1d
    assert 3600 + 60 + 86400 - 5 <= lifetime <= 3600 + 60 + 86400 + 60


def test_a_publish_whose_metadata_write_is_denied_is_completed_once_the_grant_is_fixed(
    tmp_path, openbao, fake_influxctl
):
    """Fail at the step after the data write, fix, re-run: rotator's Vault token may write the secret's
    versions but not its metadata (a policy without `update` on metadata/). The version with the new
    token landed, so the failure must leave the run to recovery, not discard the token (its revocation
    would then be refused for ever, the store holding it). With the grant fixed, `rotator recover`
    completes the publish."""
    import uuid

    sc = _scenario(tmp_path, openbao, fake_influxctl, grace_s=1, attempts=1)
    name = f"no-meta-{uuid.uuid4().hex[:8]}"
    openbao.write_policy(name, f'path "secret/data/{sc.kv_path}" {{ capabilities = ["create", "update", "read"] }}\n'
                               f'path "secret/metadata/{sc.kv_path}" {{ capabilities = ["read"] }}\n')
    (tmp_path / "vault-token").write_text(openbao.create_token(name))
    proc = sc.cli("rotate", sc.policy, "--output", "json")
    assert proc.returncode != 0, proc.stdout
    assert "marking the secret managed failed" in proc.stderr and "rotator recover" in proc.stderr, proc.stderr
    new_id = sc.versions()[-1]["token_id"]
    assert new_id != sc.bootstrap_id, "the new version landed"
    assert sc.fake.token_by_id(new_id)["revoked_at"] is None, "the token the store holds is not discarded"
    check_invariants(sc, after_crash=True)

    proc = sc.cli("recover")  # before the fix: the completion fails again, and the run stays open
    assert proc.returncode != 0 and "marking the secret managed failed" in proc.stderr, proc.stdout + proc.stderr
    assert sc.journal_rows("SELECT state FROM runs WHERE new_token_id = ?", new_id) == [("verified",)]
    (tmp_path / "vault-token").write_text(openbao.root_token)  # the fix: a token with the metadata grant
    proc = sc.cli("recover")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"rolled forward, token {new_id} published" in proc.stdout, proc.stdout
    meta = sc.vault().secrets.kv.v2.read_secret_metadata(path=sc.kv_path, mount_point="secret")["data"]
    assert meta["custom_metadata"]["token_id"] == new_id, "recovery completed the publish: the marker names it"
    assert [v["token_id"] for v in sc.versions()].count(new_id) == 1, "without writing the token again"
    wait_out_grace(sc)
    assert sc.cli("revoke-expired").returncode == 0
    assert sc.fake.token_by_id(sc.bootstrap_id)["revoked_at"] is not None
    check_invariants(sc, settled=True)
    assert sc.cli("rotate", sc.policy).returncode == 0, "and the next rotation runs as usual"


def test_a_deleted_current_version_does_not_leave_the_previous_token_valid(tmp_path, openbao, fake_influxctl):
    """Someone soft-deletes the current version in Vault (`vault kv delete`; or delete_version_after is
    shorter than the interval): the store then names no token. The next rotation must still retire
    the token rotator published last, from its own journal, or it stays valid (an orphan)."""
    sc = _scenario(tmp_path, openbao, fake_influxctl, grace_s=1, bootstrap=False,
                   issuer_extra='auth = { method = "mgmt_token", token = { file = "admin-token" } }')
    admin, _ = sc.fake.add_token("the issuer's own credential, not the store's")
    (tmp_path / "admin-token").write_text(admin)
    sc.bootstrap_value, sc.bootstrap_id = sc.fake.add_token("created by a human for bootstrap")
    sc.bootstrap_with(sc.bootstrap_value, sc.bootstrap_id)
    proc = sc.cli("rotate", sc.policy, "--output", "json")
    assert proc.returncode == 0, proc.stderr
    published = json.loads(proc.stdout)[0]["new_token_id"]
    wait_out_grace(sc)
    assert sc.cli("revoke-expired").returncode == 0
    sc.vault().secrets.kv.v2.delete_latest_version_of_secret(path=sc.kv_path, mount_point="secret")
    dry = sc.cli("rotate", sc.policy, "--dry-run")
    assert dry.returncode == 0 and f"and revoke {published} after" in dry.stdout, dry.stdout + dry.stderr
    proc = sc.cli("rotate", sc.policy, "--output", "json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)[0]
    assert result["old_token_id"] == published, result
    assert "no store names the current token" in proc.stderr
    wait_out_grace(sc)
    assert sc.cli("revoke-expired").returncode == 0
    assert sc.fake.token_by_id(published)["revoked_at"] is not None, "the deleted version's token is retired"
    assert sc.fake.token_by_id(result["new_token_id"])["revoked_at"] is None
