"""Fail at a step, fix the cause, run the same command again: it succeeds, with nothing lost, no orphan and
no duplicate. The steps here had no such test (the crash and outage matrices cover kills and store or
journal outages at each step: tests/e2e/test_crash_matrix.py, tests/e2e/test_outages.py)."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path
from typing import Any

from tests.e2e.test_e2e import wait_out_grace
from tests.faultproxy import FaultProxy
from tests.harness import check_invariants, make_scenario, settle
from tests.observe.test_inventory import rotate_in_process
from tests.pg import via_proxy
from tests.runners.test_daemon import wait_until


def _read_only_on(openbao: Any, writable: str, read_only: str) -> str:
    """A Vault token that may write the KV path ``writable`` and only read ``read_only``."""
    rules = "".join(f'path "secret/{kind}/{path}" {{ capabilities = {caps} }}\n'
                    for path, caps in ((writable, '["create", "read", "update", "list"]'),
                                       (read_only, '["read", "list"]'))
                    for kind in ("data", "metadata"))  # fmt: skip
    name = f"half-{uuid.uuid4().hex[:6]}"
    openbao.write_policy(name, rules)
    return str(openbao.create_token(name))


def test_a_rotation_whose_second_store_refused_is_finished_by_the_same_command(
        tmp_path: Path, openbao: Any, fake_influxctl: Any) -> None:  # fmt: skip
    mirror = f"influx/{uuid.uuid4().hex[:10]}-mirror"
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=1, attempts=1, second_store=mirror)
    token_file = sc.dir / "vault-token"
    token_file.write_text(_read_only_on(openbao, sc.kv_path, mirror))
    failed = sc.cli("rotate", sc.policy)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "fix:" in failed.stderr
    assert sc.versions()[-1]["token_id"] != sc.versions(mirror)[-1]["token_id"], "the mirror took no write"

    token_file.write_text(openbao.root_token)
    again = sc.cli("rotate", sc.policy)
    assert again.returncode == 0, again.stderr
    assert sc.versions()[-1]["token_id"] == sc.versions(mirror)[-1]["token_id"]
    check_invariants(sc)
    wait_out_grace(sc)
    settle(sc, check_invariants)


def test_a_rotation_whose_second_store_refused_is_finished_once_the_policy_points_that_store_elsewhere(
        tmp_path: Path, openbao: Any, fake_influxctl: Any) -> None:  # fmt: skip
    """The fix for a path rotator may not write can be the policy's: the store pointed at a new, empty path.
    Recovery read "no secret" there as a third token ("store 'mirror' holds token None"), told the operator
    to roll back a secret that never existed, and every `rotate` or `recover` failed the same way."""
    wrong, right = (f"influx/{uuid.uuid4().hex[:10]}-{name}" for name in ("wrong", "right"))
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=1, attempts=1, second_store=wrong)
    token_file = sc.dir / "vault-token"
    token_file.write_text(_read_only_on(openbao, sc.kv_path, wrong))
    assert sc.cli("rotate", sc.policy).returncode == 1

    token_file.write_text(openbao.root_token)
    sc.write_policy(attempts=1, second_store=right)
    again = sc.cli("rotate", sc.policy)
    assert again.returncode == 0, again.stdout + again.stderr
    assert sc.versions()[-1]["token_id"] == sc.versions(right)[-1]["token_id"]
    assert len(sc.versions(right)) == 2, "the interrupted run's token, then this rotation's, both published there"
    check_invariants(sc)
    wait_out_grace(sc)
    settle(sc, check_invariants)


def test_a_replacement_bootstrap_the_store_refused_is_done_by_the_same_command(
        tmp_path: Path, openbao: Any, fake_influxctl: Any) -> None:  # fmt: skip
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=1, attempts=1)
    assert sc.cli("rotate", sc.policy).returncode == 0
    sc.fake.revoke(sc.current()["token_id"])  # the published token died out of band: the documented repair
    value, human_id = sc.fake.add_token("created by a human to repair")
    sc.bootstrap_value = value
    (sc.dir / "human").write_text(value)
    token_file = sc.dir / "vault-token"
    token_file.write_text(openbao.create_token(openbao.policy_for(f"ro-{uuid.uuid4().hex[:6]}", sc.kv_path,
                                                                  "read", "list")))  # fmt: skip
    before = len(sc.versions())
    args = ("bootstrap", sc.policy, "--token-file", str(sc.dir / "human"), "--token-id", human_id, "--replace",
            "--reason", "incident")  # fmt: skip
    failed = sc.cli(*args)
    assert failed.returncode != 0 and len(sc.versions()) == before, failed.stdout + failed.stderr

    token_file.write_text(openbao.root_token)
    again = sc.cli(*args)
    assert again.returncode == 0, again.stderr
    assert sc.current()["token_id"] == human_id and len(sc.versions()) == before + 1
    assert sc.fake.token_by_id(human_id)["revoked_at"] is None
    check_invariants(sc)


def test_a_revocation_whose_journal_write_was_lost_after_the_issuer_revoked_is_closed_by_the_same_command(
        tmp_path: Path, openbao: Any, fake_influxctl: Any, pg_url: str, pg_proxy: FaultProxy) -> None:  # fmt: skip
    journal = via_proxy(pg_url, pg_proxy).replace(
        "options=", "connect_timeout=2&options=-c%20statement_timeout%3D2000%20", 1)
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=1, journal_url=journal, attempts=1)
    assert sc.cli("rotate", sc.policy).returncode == 0
    wait_out_grace(sc)
    marker = sc.dir / "revoked-marker"
    sc.fake.add_fault("management revoke", "pause_after_effect", seconds=1, marker=marker)
    handle = subprocess.Popen(sc.argv("revoke-expired"), env=sc.env(), cwd=sc.dir, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_until("the issuer's revocation", marker.exists, timeout=30)
        pg_proxy.mode = "down"
        out, err = handle.communicate(timeout=90)
    finally:
        pg_proxy.mode = "pass"
        if handle.poll() is None:
            handle.kill()
    sc.outputs += [out, err]
    assert handle.returncode == 1, out + err
    assert sc.fake.token_by_id(sc.bootstrap_id)["revoked_at"] is not None
    assert sc.journal_rows("SELECT state FROM revocations") == [("pending",)]

    again = sc.cli("revoke-expired")
    assert again.returncode == 0, again.stderr
    assert sc.journal_rows("SELECT state FROM revocations") == [("done",)]
    check = sc.cli("status", "--check")
    assert check.returncode == 0, check.stdout + check.stderr
    check_invariants(sc, settled=True)


def test_an_orphan_the_issuer_would_not_revoke_is_revoked_by_the_same_command(
        tmp_path: Path, openbao: Any, fake_influxctl: Any) -> None:  # fmt: skip
    fake = fake_influxctl.state
    sc = make_scenario(tmp_path, openbao, fake, grace_s=3600)
    fake.add_fault("management create", "exit", times=10, code=1,
                   message="rpc error: code = PermissionDenied desc = permission denied")
    assert rotate_in_process(sc) == "failed"
    fake.clear_faults()
    (run_id,) = [row[0] for row in sc.journal_rows("SELECT run_id FROM runs WHERE state = 'failed'")]
    _, orphan = fake.add_token(f"rotator:{sc.policy}:{run_id}")  # its mint landed after all
    fake.add_fault("management revoke", "exit", times=-1, code=1, message="Error: rpc error: code = Unavailable")
    failed = sc.cli("inventory", "--revoke-orphans", "--yes")
    assert failed.returncode != 0 and fake.token_by_id(orphan)["revoked_at"] is None, failed.stdout + failed.stderr

    fake.clear_faults()
    again = sc.cli("inventory", "--revoke-orphans", "--yes")
    assert again.returncode == 0, again.stdout + again.stderr
    assert fake.token_by_id(orphan)["revoked_at"] is not None
    check_invariants(sc)


def test_a_self_authenticated_rotation_after_the_current_version_was_deleted_names_undelete_and_works_after_it(
        tmp_path: Path, openbao: Any, fake_influxctl: Any) -> None:  # fmt: skip
    """auth.method = 'self' reads its credential from the store: a current version deleted by hand (or by Vault's
    delete_version_after) reads as no token, though one is published and valid. The fix that keeps that token,
    undelete, is named first; after it the same command rotates."""
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=1)
    assert sc.cli("rotate", sc.policy).returncode == 0
    vault = sc.vault()
    version = vault.secrets.kv.v2.read_secret_metadata(path=sc.kv_path, mount_point="secret")["data"]["current_version"]
    vault.secrets.kv.v2.delete_latest_version_of_secret(path=sc.kv_path, mount_point="secret")
    failed = sc.cli("rotate", sc.policy)
    assert failed.returncode == 2, failed.stdout + failed.stderr
    assert "the store's current version was deleted" in failed.stderr
    assert "fix: if `rotator status POLICY` names a current token" in failed.stderr and "kv undelete" in failed.stderr
    vault.secrets.kv.v2.undelete_secret_versions(path=sc.kv_path, versions=[version], mount_point="secret")
    assert sc.cli("rotate", sc.policy).returncode == 0
    wait_out_grace(sc)
    assert sc.cli("revoke-expired").returncode == 0
    check_invariants(sc, settled=True)
