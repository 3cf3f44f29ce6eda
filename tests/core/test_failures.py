"""Failure paths: each leaves the current token valid and published, no orphan, and a clear error."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import hvac
import pytest

from tests.e2e.test_e2e import wait_out_grace
from tests.harness import Scenario, check_invariants, make_scenario


def _assert_unchanged(sc: Scenario, proc: Any, *, expect_code: int = 1) -> None:
    assert proc.returncode == expect_code, (proc.returncode, proc.stdout, proc.stderr)
    assert sc.current()["token_id"] == sc.bootstrap_id, "the previous token must stay current"
    assert "rotator: error:" in proc.stderr and "fix:" in proc.stderr
    check_invariants(sc, settled=True)


def test_influxctl_create_fails(tmp_path: Path, openbao: Any, fake_influxctl: Any) -> None:
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, attempts=2)
    sc.fake.add_fault("management create", "exit", times=-1, code=1, message="Error: rpc error: code = Internal")
    proc = sc.cli("rotate", sc.policy)
    _assert_unchanged(sc, proc)
    assert "influxctl management create" in proc.stderr


def test_influxctl_create_prints_garbage(tmp_path: Path, openbao: Any, fake_influxctl: Any) -> None:
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state)
    sc.fake.add_fault("management create", "garbage", output="<html>502 Bad Gateway</html> oops")
    proc = sc.cli("rotate", sc.policy)
    _assert_unchanged(sc, proc)
    assert "Bad Gateway" not in proc.stderr, "unexpected output is never echoed (it could hold a token)"


def test_influxctl_create_hangs(tmp_path: Path, openbao: Any, fake_influxctl: Any) -> None:
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, attempts=1, timeout_s=1.5)
    sc.fake.add_fault("management create", "hang", seconds=30)
    proc = sc.cli("rotate", sc.policy)
    _assert_unchanged(sc, proc)
    assert "timed out" in proc.stderr or "timeout" in proc.stderr.lower()


def test_mint_lost_after_server_acted_is_swept_on_retry(tmp_path: Path, openbao: Any, fake_influxctl: Any) -> None:
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, attempts=3)
    sc.fake.add_fault("management create", "after_effect_exit", code=1, message="Error: rpc error: code = Unavailable")
    proc = sc.cli("rotate", sc.policy)
    assert proc.returncode == 0, proc.stderr
    tagged = [t for t in sc.fake.tokens() if t["description"].startswith(f"rotator:{sc.policy}:")]
    assert len(tagged) == 2
    assert sum(1 for t in tagged if t["revoked_at"] is None) == 1, "the lost first mint must be revoked"
    check_invariants(sc)


@pytest.mark.parametrize("code", ["Unavailable", "PermissionDenied"])
def test_revoke_fails_then_succeeds_later(code: str, tmp_path: Path, openbao: Any, fake_influxctl: Any) -> None:
    """Transient or permanent, a failed revocation is postponed (never blocks rotations) and retried."""
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=1, attempts=1)
    assert sc.cli("rotate", sc.policy).returncode == 0
    wait_out_grace(sc)
    sc.fake.add_fault("management revoke", "exit", times=-1, message=f"Error: rpc error: code = {code}")
    proc = sc.cli("revoke-expired")
    assert proc.returncode == 0 and "postponed" in proc.stdout, proc.stdout + proc.stderr
    assert sc.fake.token_by_id(sc.bootstrap_id)["revoked_at"] is None
    sc.fake.clear_faults()
    time.sleep(2.2)  # the postponed revocation's backoff
    proc = sc.cli("revoke-expired")
    assert proc.returncode == 0 and "revoked" in proc.stdout, proc.stdout + proc.stderr
    check_invariants(sc, settled=True)


def test_token_that_never_activates(tmp_path: Path, openbao: Any, fake_influxctl: Any) -> None:
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, verify_timeout="3s")
    sc.fake.set(activation_delay_s=3600)
    proc = sc.cli("rotate", sc.policy)
    _assert_unchanged(sc, proc)
    tagged = [t for t in sc.fake.tokens() if t["description"].startswith(f"rotator:{sc.policy}:")]
    assert tagged and all(t["revoked_at"] for t in tagged), "the candidate that never worked is revoked"


def test_vault_unreachable_mints_nothing(tmp_path: Path, openbao: Any, fake_influxctl: Any) -> None:
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, attempts=2)
    tokens = len(sc.fake.tokens())
    good_url = sc.vault_url
    sc.vault_url = "http://127.0.0.1:9"  # discard port: connection refused
    sc.write_policy(attempts=2)
    proc = sc.cli("rotate", sc.policy)
    assert proc.returncode == 1, proc.stderr
    assert len(sc.fake.tokens()) == tokens, "PLAN failed before any side effect"
    sc.vault_url = good_url
    check_invariants(sc, settled=True)


def test_vault_forbidden_on_write_discards_candidate(tmp_path: Path, openbao: Any, fake_influxctl: Any) -> None:
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state)
    root = sc.vault()
    root.sys.create_or_update_acl_policy(
        name=f"ro-{sc.kv_path.replace('/', '-')}",
        policy=f'path "secret/data/{sc.kv_path}" {{ capabilities = ["read"] }}\n'
               f'path "secret/metadata/{sc.kv_path}" {{ capabilities = ["read"] }}')
    ro = root.auth.token.create(policies=[f"ro-{sc.kv_path.replace('/', '-')}"], ttl="10m")["auth"]["client_token"]
    (tmp_path / "vault-token").write_text(ro)
    proc = sc.cli("rotate", sc.policy)
    (tmp_path / "vault-token").write_text(sc.vault_token)
    _assert_unchanged(sc, proc)
    assert "403" in proc.stderr or "permission" in proc.stderr.lower()


def test_cas_conflict_overwrites_nothing(tmp_path: Path, openbao: Any, fake_influxctl: Any) -> None:
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state)
    marker = tmp_path / "verify-started"
    sc.fake.add_fault("management list", "pause", seconds=0, marker=tmp_path / "plan-check")
    sc.fake.add_fault("management list", "pause", seconds=2, marker=marker)
    intruder = {"token": "written-by-someone-else", "token_id": "other", "issuer": "human", "policy": "mgmt",
                "created_at": "2026-01-01T00:00:00Z", "expires_at": None}

    def write_meanwhile() -> None:
        while not marker.exists():
            time.sleep(0.05)
        hvac.Client(url=sc.vault_url, token=sc.vault_token).secrets.kv.v2.create_or_update_secret(
            path=sc.kv_path, secret=intruder, mount_point="secret")

    thread = threading.Thread(target=write_meanwhile)
    thread.start()
    proc = sc.cli("rotate", sc.policy)
    thread.join()
    assert proc.returncode == 1, proc.stderr
    assert "compare-and-set lost" in proc.stderr, proc.stderr[-700:]
    assert sc.current()["token_id"] == "other", "the other writer's version is kept"
    tagged = [t for t in sc.fake.tokens() if t["description"].startswith(f"rotator:{sc.policy}:")]
    assert tagged and all(t["revoked_at"] for t in tagged), "the unpublished candidate is revoked"


def test_unmanaged_secret_is_refused_without_adopt(tmp_path: Path, openbao: Any, fake_influxctl: Any) -> None:
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, bootstrap=False)
    sc.vault().secrets.kv.v2.create_or_update_secret(path=sc.kv_path, secret={"token": "x" * 20},
                                                     mount_point="secret")
    value, token_id = sc.fake.add_token("human")
    (tmp_path / "tok").write_text(value)
    proc = sc.cli("bootstrap", sc.policy, "--token-file", str(tmp_path / "tok"), "--token-id", token_id)
    assert proc.returncode == 1 and "does not manage" in proc.stderr and "adopt = true" in proc.stderr
    assert sc.current()["token"] == "x" * 20
    sc.write_policy(policy_extra="adopt = true")
    proc = sc.cli("bootstrap", sc.policy, "--token-file", str(tmp_path / "tok"), "--token-id", token_id)
    assert proc.returncode == 0, proc.stderr
    assert sc.current()["token_id"] == token_id


def test_bootstrap_with_wrong_token_id_is_refused(tmp_path: Path, openbao: Any, fake_influxctl: Any) -> None:
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, bootstrap=False)
    value, _ = sc.fake.add_token("human")
    (tmp_path / "tok").write_text(value)
    proc = sc.cli("bootstrap", sc.policy, "--token-file", str(tmp_path / "tok"), "--token-id", "not-an-id")
    assert proc.returncode == 1 and "not an active token" in proc.stderr
    assert sc.versions() == []
    assert value not in proc.stdout + proc.stderr


def test_bootstrap_with_another_token_s_id_is_refused_then_the_right_id_succeeds(
        tmp_path: Path, openbao: Any, fake_influxctl: Any) -> None:
    """An id copied from the wrong line of `management list`: the token exists and is active, but it is
    not the one in the file. Accepted, it would be the token rotator revokes after the first rotation's
    grace, and the published one would stay valid for good. influxctl lists each token's value prefix,
    which tells the two apart: exit 2, nothing written, and the same command with the right id succeeds."""
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, bootstrap=False)
    value, token_id = sc.fake.add_token("human A")
    _other_value, other_id = sc.fake.add_token("human B, another team's")
    (tmp_path / "tok").write_text(value)
    proc = sc.cli("bootstrap", sc.policy, "--token-file", str(tmp_path / "tok"), "--token-id", other_id)
    assert proc.returncode == 2, proc.stderr
    assert f"token id {other_id} is another token than the one in the file given to bootstrap: by the issuer's " \
           f"listing, the file holds token {token_id}" in proc.stderr, proc.stderr
    assert f"run the same command with --token-id {token_id}" in proc.stderr
    assert sc.versions() == [] and value not in proc.stdout + proc.stderr
    proc = sc.cli("bootstrap", sc.policy, "--token-file", str(tmp_path / "tok"), "--token-id", token_id)
    assert proc.returncode == 0, proc.stderr
    assert sc.current()["token_id"] == token_id
    assert "cannot check" not in proc.stderr, "influxctl shows the prefix: no warning"
    assert not any(t["revoked_at"] for t in sc.fake.tokens() if t["id"] == other_id)


def test_bootstrap_whose_metadata_write_was_refused_is_completed_by_the_same_command(
        tmp_path: Path, openbao: Any, fake_influxctl: Any) -> None:
    """A Vault policy that may write the secret's data but not its metadata (an easy ACL slip): the
    token lands as version 1, the managed-by marker does not, and bootstrap fails. Once the ACL is
    fixed the same bootstrap completes it: no `adopt` asked for (the store holds this very token for
    this policy), the secret marked managed, and the next rotation runs without adopt."""
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, bootstrap=False, attempts=1)
    value, token_id = sc.fake.add_token("human")
    name = f"no-metadata-{uuid.uuid4().hex[:6]}"
    openbao.write_policy(name, f'path "secret/data/{sc.kv_path}" {{ capabilities = ["create", "read", "update"] }}\n'
                               f'path "secret/metadata/{sc.kv_path}" {{ capabilities = ["read", "list"] }}\n')
    vault_token = tmp_path / "vault-token"
    vault_token.write_text(openbao.create_token(name))
    (tmp_path / "tok").write_text(value)
    bootstrap = ("bootstrap", sc.policy, "--token-file", str(tmp_path / "tok"), "--token-id", token_id)
    proc = sc.cli(*bootstrap)
    assert proc.returncode == 1, proc.stderr
    assert "marking the secret managed failed" in proc.stderr and "the same `rotator bootstrap`" in proc.stderr
    assert sc.current()["token_id"] == token_id, "the data write landed"

    vault_token.write_text(openbao.root_token)
    proc = sc.cli(*bootstrap)
    assert proc.returncode == 0, proc.stderr
    custom = sc.vault().secrets.kv.v2.read_secret_metadata(path=sc.kv_path, mount_point="secret")["data"]
    assert (custom.get("custom_metadata") or {}).get("managed-by") == "rotator", custom
    assert sc.current()["token_id"] == token_id
    proc = sc.cli("rotate", sc.policy)
    assert proc.returncode == 0, proc.stderr
    assert value not in proc.stdout + proc.stderr


LIST_AND_REVOKE_FAULTS = [
    ("management list", "exit"), ("management list", "garbage"), ("management list", "hang"),
    ("management revoke", "exit"), ("management revoke", "garbage"), ("management revoke", "hang"),
]  # fmt: skip


@pytest.mark.parametrize(("command", "mode"), LIST_AND_REVOKE_FAULTS, ids=lambda v: v.replace(" ", "-"))
def test_list_and_revoke_faults_keep_every_invariant(command: str, mode: str, tmp_path: Path, openbao: Any,
                                                     fake_influxctl: Any) -> None:
    # Only the faulted call runs under the short timeout that cuts a hang: a loaded machine can take
    # longer than that to start the fake influxctl for a call that is not faulted.
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=1, attempts=1)
    short = {"attempts": 1, "timeout_s": 1.5 if mode == "hang" else 10}
    if command == "management list":
        # The first list is PLAN's issuer check: the run must stop before minting anything.
        sc.write_policy(**short)
        sc.fake.add_fault(command, mode, times=-1, seconds=30)
        tokens = len(sc.fake.tokens())
        proc = sc.cli("rotate", sc.policy)
        assert proc.returncode == 1 and "influxctl management list" in proc.stderr, proc.stderr
        assert len(sc.fake.tokens()) == tokens
        sc.fake.clear_faults()
        check_invariants(sc, settled=True)
        return
    assert sc.cli("rotate", sc.policy).returncode == 0
    wait_out_grace(sc)
    sc.write_policy(**short)
    sc.fake.add_fault(command, mode, times=-1, seconds=30)
    proc = sc.cli("revoke-expired")
    assert proc.returncode == 0 and "postponed" in proc.stdout, proc.stdout + proc.stderr
    sc.fake.clear_faults()
    sc.write_policy(attempts=1)
    check_invariants(sc)  # the old token is still pending revocation, not an orphan
    time.sleep(2.2)
    proc = sc.cli("revoke-expired")
    assert proc.returncode == 0 and "revoked" in proc.stdout, proc.stdout + proc.stderr
    check_invariants(sc, settled=True)
