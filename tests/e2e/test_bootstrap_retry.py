"""Invariant 9 for bootstrap and repair (issue 10 §3, §4): fail at any step, fix, run the same
command again; nothing a human created is revoked on the way. On OpenBao and on moto server."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_e2e import wait_out_grace
from tests.harness import Scenario, check_invariants, make_scenario


def _bootstrap(sc: Scenario, value: str, token_id: str, *extra: str) -> Any:
    token_file = sc.dir / "human-token"
    token_file.write_text(value)
    try:
        return sc.cli("bootstrap", sc.policy, "--token-file", str(token_file), "--token-id", token_id, *extra)
    finally:
        token_file.unlink()


def _no_open_runs(sc: Scenario) -> None:
    left = sc.journal_rows("SELECT run_id, kind, state FROM runs WHERE state NOT IN ('done', 'failed', 'aborted')")
    assert not left, f"a failed bootstrap left something a later command must undo: {left}"


def _rotate_and_settle(sc: Scenario, human_id: str) -> None:
    """After the bootstrap: a rotation works, and the human's token is revoked after grace (its id
    was recorded at bootstrap, so the rule lets rotator revoke it)."""
    proc = sc.cli("rotate", sc.policy)
    assert proc.returncode == 0, proc.stderr
    wait_out_grace(sc)
    proc = sc.cli("revoke-expired")
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert sc.fake.token_by_id(human_id)["revoked_at"] is not None
    check_invariants(sc, settled=True)


@pytest.mark.parametrize("step", ["store-read", "verify", "publish", "second-store"])
def test_bootstrap_fails_at_a_step_then_the_same_command_succeeds(tmp_path: Path, openbao: Any,
                                                                  fake_influxctl: Any, step: str) -> None:
    second = f"influx/{uuid.uuid4().hex[:10]}-mirror" if step == "second-store" else ""
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, bootstrap=False, grace_s=1, attempts=1,
                       second_store=second)
    value, human_id = sc.fake.add_token("created by a human for bootstrap")
    sc.bootstrap_value = value
    token_file = sc.dir / "vault-token"
    if step == "store-read":  # a Vault token without rights on the path: 403 at PLAN
        token_file.write_text(openbao.create_token("default"))
    elif step == "verify":  # the issuer fails every call
        sc.fake.add_fault("management list", "exit", times=-1, code=1, message="Error: rpc error: code = Unavailable")
    elif step == "publish":  # reads work, the write is refused
        token_file.write_text(openbao.create_token(openbao.policy_for(f"ro-{uuid.uuid4().hex[:6]}", sc.kv_path,
                                                                      "read", "list")))
    else:  # the first store is written, the second refuses
        hcl = (f'path "secret/data/{sc.kv_path}" {{ capabilities = ["create", "read", "update", "list"] }}\n'
               f'path "secret/metadata/{sc.kv_path}" {{ capabilities = ["create", "read", "update", "list"] }}\n'
               f'path "secret/data/{second}" {{ capabilities = ["read"] }}\n'
               f'path "secret/metadata/{second}" {{ capabilities = ["read"] }}\n')
        name = f"half-{uuid.uuid4().hex[:6]}"
        openbao.write_policy(name, hcl)
        token_file.write_text(openbao.create_token(name))
    proc = _bootstrap(sc, value, human_id)
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "rotator: error:" in proc.stderr
    assert sc.fake.token_by_id(human_id)["revoked_at"] is None, "the human's token was revoked"
    _no_open_runs(sc)
    # Fix the cause, run the same command again.
    token_file.write_text(openbao.root_token)
    sc.fake.clear_faults()
    proc = _bootstrap(sc, value, human_id)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert sc.current()["token_id"] == human_id
    if second:
        assert sc.versions(second)[-1]["token_id"] == human_id
        assert len(sc.versions()) == 1, "the store that had it was not written twice"
    assert sc.fake.token_by_id(human_id)["revoked_at"] is None
    _no_open_runs(sc)
    _rotate_and_settle(sc, human_id)


def test_a_bootstrap_token_the_issuer_refuses_is_named_as_such_then_the_right_one_succeeds(
        tmp_path: Path, openbao: Any, fake_influxctl: Any) -> None:
    """A mistyped (or revoked, or another cluster's) token given to bootstrap: the issuer answers
    Unauthenticated, which for a token minted moments ago means "not active yet" and is retried.
    A person's token will not become active: the error says the issuer refuses it and how to fix it
    (exit 2), not "a new token can take a while to become active"."""
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, bootstrap=False, grace_s=1, attempts=1)
    value, human_id = sc.fake.add_token("created by a human for bootstrap")
    sc.bootstrap_value = value
    proc = _bootstrap(sc, value[:-4] + "xxxx", human_id)
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "the issuer refuses the token to bootstrap" in proc.stderr and "revoked, expired, mistyped" in proc.stderr
    assert "\nfix: a new token can take a while" not in proc.stderr and value[:-4] not in proc.stderr + proc.stdout
    _no_open_runs(sc)
    proc = _bootstrap(sc, value, human_id)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert sc.current()["token_id"] == human_id


def test_a_bootstrap_killed_in_publishing_is_closed_not_rolled_back(tmp_path: Path, openbao: Any,
                                                                     fake_influxctl: Any) -> None:
    """What an older rotator or a kill -9 left: a bootstrap run in `publishing`. Recovery used to
    "discard" it, i.e. revoke the human's token."""
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, bootstrap=False, grace_s=1)
    value, human_id = sc.fake.add_token("created by a human for bootstrap")
    sc.bootstrap_value = value
    assert sc.cli("recover").returncode == 2, "recover makes no journal"
    from rotator.core.journal import open_journal

    open_journal(f"sqlite://{sc.journal_path}").close()  # (as the first bootstrap makes it)
    import sqlite3

    with sqlite3.connect(sc.journal_path) as db:
        db.execute("INSERT INTO runs (run_id, policy, kind, state, started_at, updated_at, new_token_id) VALUES "
                   "('boot0000dead0000', ?, 'bootstrap', 'publishing', '2026-01-01T00:00:00.000000Z', "
                   "'2026-01-01T00:00:00.000000Z', ?)", (sc.policy, human_id))
    proc = sc.cli("recover")
    assert proc.returncode == 0, proc.stderr
    assert "interrupted bootstrap closed" in proc.stdout
    assert sc.fake.token_by_id(human_id)["revoked_at"] is None
    proc = _bootstrap(sc, value, human_id)
    assert proc.returncode == 0, proc.stderr
    assert sc.fake.token_by_id(human_id)["revoked_at"] is None
    _rotate_and_settle(sc, human_id)


def test_self_rotating_mgmt_token_bootstrap_retry_keeps_the_human_token(tmp_path: Path, openbao: Any,
                                                                        fake_influxctl: Any) -> None:
    """auth.method = "mgmt_token": the issuer has a management token of its own, so recovery
    could revoke the human's token; the retried bootstrap used to do so, then fail Unauthenticated."""
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, bootstrap=False, grace_s=1,
                       issuer_extra='[policy.issuer.auth]\nmethod = "mgmt_token"\ntoken = { file = "mgmt-token" }\n')
    admin_value, _ = sc.fake.add_token("the operator's own management token")
    (sc.dir / "mgmt-token").write_text(admin_value)
    value, human_id = sc.fake.add_token("created by a human for bootstrap")
    sc.bootstrap_value = value
    token_file = sc.dir / "vault-token"
    token_file.write_text(openbao.create_token(openbao.policy_for(f"ro-{uuid.uuid4().hex[:6]}", sc.kv_path,
                                                                  "read", "list")))
    assert _bootstrap(sc, value, human_id).returncode == 1
    token_file.write_text(openbao.root_token)
    proc = _bootstrap(sc, value, human_id)
    assert proc.returncode == 0, proc.stderr
    assert sc.fake.problem(value) is None
    _rotate_and_settle(sc, human_id)


# -- the repair path: bootstrap --replace -----------------------------------------------------------


def test_current_token_revoked_out_of_band_then_bootstrap_replace_repairs(tmp_path: Path, openbao: Any,
                                                                          fake_influxctl: Any) -> None:
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=1)  # self-rotating
    assert sc.cli("rotate", sc.policy).returncode == 0
    dead = sc.current()["token_id"]
    sc.fake.revoke(dead)  # an incident: a person revoked the current token
    assert sc.cli("rotate", sc.policy).returncode == 1
    value, human_id = sc.fake.add_token("created by a human to repair")
    proc = _bootstrap(sc, value, human_id)
    assert proc.returncode == 1 and "--replace" in proc.stderr, "the refusal names the way out"
    proc = _bootstrap(sc, value, human_id, "--replace")
    assert proc.returncode == 2 and "--reason" in proc.stderr
    proc = _bootstrap(sc, value, human_id, "--replace", "--reason", "token revoked in incident 42")
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert f"replaced {dead} with {human_id}" in proc.stdout
    assert sc.current()["token_id"] == human_id
    events = sc.journal_rows("SELECT detail FROM events WHERE step = 'bootstrap' AND result = 'replace'")
    assert events and json.loads(events[0][0])["reason"] == "token revoked in incident 42"
    # The schedule resumes: rotate works again, and everything settles.
    sc.bootstrap_value = value
    _rotate_and_settle(sc, human_id)


def test_a_plain_bootstrap_after_the_secret_was_deleted_retires_the_token_rotator_published_last(
        tmp_path: Path, openbao: Any, fake_influxctl: Any) -> None:
    """The secret was deleted with its history (`vault kv metadata delete`) and a person bootstraps a
    new token: the token rotator published last is valid and no store names it. The command says it
    will be revoked after grace, and it is; the human's token stays (invariant 2, without an orphan)."""
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=1)
    assert sc.cli("rotate", sc.policy).returncode == 0
    wait_out_grace(sc)
    assert sc.cli("revoke-expired").returncode == 0
    last = sc.current()["token_id"]
    sc.vault().secrets.kv.v2.delete_metadata_and_all_versions(path=sc.kv_path, mount_point="secret")
    value, human_id = sc.fake.add_token("created by a human after the secret was deleted")
    proc = _bootstrap(sc, value, human_id)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert (f"token {last}, the token rotator published last, which no store names any more, will be revoked"
            in proc.stdout)
    assert value not in proc.stdout + proc.stderr
    assert sc.current()["token_id"] == human_id
    wait_out_grace(sc)
    proc = sc.cli("revoke-expired")
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert sc.fake.token_by_id(last)["revoked_at"] is not None, "no orphan"
    assert sc.fake.token_by_id(human_id)["revoked_at"] is None, "the token the store holds stays valid"
    check_invariants(sc, settled=True)


# -- AWS Secrets Manager (moto server), following docs/aws-lambda.md ---------------------------------


def _aws_scene(aws: Any, fake: Any, tmp_path: Path, secret_id: str) -> Any:
    from tests.adapters.test_aws_secretsmanager import CliScenario, _policy_toml

    sc = CliScenario(tmp_path, aws, fake, secret_id, grace_s=1)
    sc.config.write_text(_policy_toml(secret_id, aws.url, grace="1s"))
    return sc


def _aws_bootstrap(sc: Any, value: str, token_id: str) -> Any:
    from tests.adapters.test_aws_secretsmanager import POLICY

    token_file = sc.dir / "human-token"
    token_file.write_text(value)
    try:
        return sc.cli("bootstrap", POLICY, "--token-file", str(token_file), "--token-id", token_id)
    finally:
        token_file.unlink()


def _aws_open_runs(sc: Any) -> list[Any]:
    return sc.journal_rows("SELECT run_id, state FROM runs WHERE state NOT IN ('done', 'failed', 'aborted')")


def test_aws_full_arn_of_a_missing_secret_then_created_then_the_bootstrap_succeeds(aws: Any, fake_influxctl: Any,
                                                                                  tmp_path: Path) -> None:
    """Issue 10 §3 (AWS) and §4: the ARN form of docs/aws-lambda.md's example, secret not created yet."""
    from tests.adapters.test_aws_secretsmanager import POLICY, secret_name, value_at

    name = secret_name()
    sc = _aws_scene(aws, fake_influxctl, tmp_path, aws.arn(f"{name}-AbCdEf"))
    value, human_id = fake_influxctl.state.add_token("created by a human for bootstrap")
    sc.values.add(value)
    proc = _aws_bootstrap(sc, value, human_id)
    assert proc.returncode == 1, proc.stderr
    assert f"aws secretsmanager create-secret --region {aws.region} --name {name}" in proc.stderr
    assert fake_influxctl.state.token_by_id(human_id)["revoked_at"] is None
    assert not _aws_open_runs(sc)
    # The user does what the message says, and puts the ARN it printed into the policy.
    arn = aws.client().create_secret(Name=name)["ARN"]
    sc.name = arn
    sc.config.write_text(sc.config.read_text().replace(aws.arn(f"{name}-AbCdEf"), arn))
    proc = _aws_bootstrap(sc, value, human_id)
    assert proc.returncode == 0, proc.stderr
    assert value_at(aws, name, "AWSCURRENT")["token_id"] == human_id
    assert fake_influxctl.state.token_by_id(human_id)["revoked_at"] is None
    assert sc.cli("rotate", POLICY).returncode == 0
    wait_out_grace(sc)
    proc = sc.cli("revoke-expired")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert fake_influxctl.state.token_by_id(human_id)["revoked_at"] is not None, "recorded at bootstrap: revoked"
    sc.check_invariants(settled=True)


def test_aws_a_name_or_an_arn_without_suffix_is_created_by_bootstrap(aws: Any, fake_influxctl: Any,
                                                                     tmp_path: Path) -> None:
    from tests.adapters.test_aws_secretsmanager import secret_name, value_at

    for secret_id in (secret_name(), aws.arn(secret_name())):
        sc = _aws_scene(aws, fake_influxctl, tmp_path, secret_id)
        value, human_id = fake_influxctl.state.add_token("created by a human for bootstrap")
        proc = _aws_bootstrap(sc, value, human_id)
        assert proc.returncode == 0, proc.stderr
        name = secret_id.rpartition(":secret:")[2]
        assert value_at(aws, name, "AWSCURRENT")["token_id"] == human_id
        described = aws.client().describe_secret(SecretId=name)
        assert described["ARN"].startswith(aws.arn(name) + "-")
        (tmp_path / "journal.db").unlink()


def test_a_managed_secret_with_an_unreadable_payload_is_repaired_by_bootstrap_replace(
    tmp_path: Path, openbao: Any, fake_influxctl: Any
) -> None:
    """Someone writes a value that is not a token record into the managed secret: rotate refuses it, and
    its hint names the repair, which must work (it read the store strictly too and failed the same
    way). The token rotator published last is retired after grace, from rotator's own record: the
    store no longer names it."""
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=1)
    assert sc.cli("rotate", sc.policy).returncode == 0
    minted = sc.current()["token_id"]
    sc.vault().secrets.kv.v2.create_or_update_secret(path=sc.kv_path, secret={"token": "not a record"},
                                                    mount_point="secret")  # fmt: skip
    proc = sc.cli("rotate", sc.policy)
    assert proc.returncode == 1 and "payload key 'token_id' is missing or empty" in proc.stderr, proc.stderr
    assert "rotator bootstrap POLICY --replace --reason TEXT" in proc.stderr
    value, human_id = sc.fake.add_token("created by a human to repair")
    proc = _bootstrap(sc, value, human_id, "--replace", "--reason", "payload overwritten")
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert f"replaced {minted} with {human_id}" in proc.stdout
    assert sc.current()["token_id"] == human_id
    assert sc.fake.token_by_id(minted)["revoked_at"] is None, "not before grace"
    wait_out_grace(sc)
    assert sc.cli("revoke-expired").returncode == 0
    assert sc.fake.token_by_id(minted)["revoked_at"] is not None, "rotator's own last token is not left valid"
    sc.bootstrap_value = value
    _rotate_and_settle(sc, human_id)
