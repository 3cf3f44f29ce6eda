"""Database tokens end to end through the CLI: influxctl-database issuer (fake influxctl) + OpenBao.

The policy mints with a separate management token (``auth.method = "mgmt_token"``, read from a
file) or the Clustered admin token file, never with the database token it rotates. The checks
are DESIGN.md's invariants 1-4, read from the fake's database tokens, the store, the journal and
every byte rotator printed or logged; a subset of the crash matrix runs a real ``rotator rotate``
killed with SIGKILL.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rotator.sandbox.influxctl_state import FakeInfluxctl, write_profile
from tests.fakes.fixtures import FakeInfluxctlFixture
from tests.harness import INFLUXCTL, Scenario, finish_and_settle, let_mint_window_pass, live_tagged, revoked_at, ts

POLICY = "dbtok"
ADMIN_TOKEN = "clustered-admin-token-for-e2e-0123456789"


@dataclass(kw_only=True)
class DbScenario(Scenario):
    """A database-token policy on the fake influxctl and OpenBao (harness.Scenario's CLI and store helpers)."""

    mgmt_value: str = ""  # the management token the policy mints with (test-side only)
    auth: str = "mgmt_token"

    def write_policy(
        self,
        *,
        verify_timeout: str = "20s",
        attempts: int = 3,
        timeout_s: float = 10,
        permissions: str = '{ read = ["db1"], write = ["db1", "db2"] }',
        **_: Any,
    ) -> None:
        if self.auth == "mgmt_token":
            auth = 'method = "mgmt_token"\ntoken = { file = "mgmt-token" }'
        else:
            auth = 'method = "token_file"\ntoken_file = "admin-token.json"'
        self.config.write_text(
            f"""{self.rotator_toml(attempts=attempts)}
{self.policy_toml(verify_timeout=verify_timeout)}
[policy.issuer]
type = "influxctl-database"
influxctl = {json.dumps(str(INFLUXCTL))}
timeout_s = {timeout_s}
permissions = {permissions}
[policy.issuer.profile]
product = "clustered"
host = "cluster.test.invalid"
port = 443
[policy.issuer.auth]
{auth}
{self.vault_store_toml()}{self.extra_stores}""",
            encoding="utf-8",
        )

    def influxctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        """influxctl run by an operator with the management token (to check what rotator did)."""
        config = write_profile(self.dir / "operator.toml", mgmt_token=self.mgmt_value)
        return subprocess.run(
            [sys.executable, str(INFLUXCTL), "--config", str(config), *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )

    def db_token(self, token_id: str) -> dict[str, Any]:
        record = self.fake.db_token_by_id(token_id)
        assert record is not None, f"no database token {token_id}"
        return record


def make_db_scenario(
    tmp: Path,
    openbao: Any,
    fake: FakeInfluxctl,
    *,
    grace_s: int = 2,
    auth: str = "mgmt_token",
    db_activation_delay_s: float = 0.0,
    bootstrap: bool = True,
    extra_stores: str = "",
    **policy: Any,
) -> DbScenario:
    fake.init(db_activation_delay_s=db_activation_delay_s)
    vault_token = tmp / "vault-token"
    vault_token.write_text(openbao.root_token)
    vault_token.chmod(0o600)
    sc = DbScenario(
        dir=tmp,
        vault_url=openbao.url,
        vault_token=openbao.root_token,
        fake=fake,
        policy=POLICY,
        kv_path=f"influx-db/{uuid.uuid4().hex[:10]}",
        grace_s=grace_s,
        auth=auth,
        extra_stores=extra_stores,
    )
    # The minting credential: a management token created by a human (or kept current by an
    # influxctl-management policy), in a file the policy names.
    sc.mgmt_value, _ = fake.add_token("automation: database token rotation")
    (tmp / "mgmt-token").write_text(sc.mgmt_value + "\n")
    (tmp / "mgmt-token").chmod(0o600)
    if auth == "token_file":
        fake.set(admin_token=ADMIN_TOKEN)
        (tmp / "admin-token.json").write_text(ADMIN_TOKEN + "\n")
    sc.write_policy(**policy)
    if bootstrap:
        sc.bootstrap_value, sc.bootstrap_id = fake.add_db_token(
            "created by a human for bootstrap", {"read": ["db1"], "write": ["db1", "db2"]}
        )
        sc.bootstrap_with(sc.bootstrap_value, sc.bootstrap_id)
    return sc


def check_db_invariants(sc: DbScenario, *, settled: bool = False, after_crash: bool = False) -> None:
    """DESIGN.md invariants 1-4 for a database-token policy (see tests/harness.check_invariants)."""
    versions = sc.versions()
    tokens = {t["id"]: t for t in sc.fake.db_tokens()}
    # 1. The store's current version holds a database token the cluster accepts for its database.
    current_id = None
    if versions:
        current = versions[-1]
        current_id = current["token_id"]
        problem = sc.fake.db_problem(current["token"], "db1")
        assert problem is None, f"invariant 1: current token {current_id} is not accepted: {problem}"
        assert current["issuer"] == "influxctl-database"
    # The minting credential is never touched.
    assert sc.fake.problem(sc.mgmt_value) is None, "the management token must stay valid"

    # 2. No orphans: every rotator-minted token is current, pending revocation in grace, or revoked.
    if not after_crash:
        sc.assert_no_orphans(live_tagged(tokens.values(), sc.policy), current_id, settled=settled,
                             what="database token")

    # 3. A superseded token is revoked no sooner than grace after its successor was published.
    sc.assert_revoked_after_grace(lambda token_id: revoked_at(tokens, token_id))

    # 4. No token value (database tokens, the management token) in anything rotator wrote, and no
    # private influxctl config (it holds a token) outlives a finished command. The fake keeps only
    # hashes: a token never published (a discarded candidate) is found by its hash.
    if not after_crash:
        sc.assert_no_leftover_configs()
    values = {v["token"] for v in versions} | {sc.mgmt_value, ADMIN_TOKEN}
    if sc.bootstrap_value:
        values.add(sc.bootstrap_value)
    sc.assert_no_leak(values, issued=sc.issued())


@pytest.fixture
def db(tmp_path: Path, openbao: Any, fake_influxctl: FakeInfluxctlFixture) -> DbScenario:
    return make_db_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=1)


# --- rotations -----------------------------------------------------------------------------------


def test_bootstrap_then_three_rotations_revoke_each_old_token_after_grace(db: DbScenario) -> None:
    ids = [db.bootstrap_id]
    for _ in range(3):
        proc = db.cli("rotate", db.policy, "--output", "json")
        assert proc.returncode == 0, proc.stderr
        result = json.loads(proc.stdout)[0]
        assert result["ok"] and result["old_token_id"] == ids[-1]
        ids.append(result["new_token_id"])
        assert db.db_token(ids[-2])["revoked_at"] is None, "not before grace"
        check_db_invariants(db)

    versions = db.versions()
    assert [v["token_id"] for v in versions] == ids
    for payload in versions[1:]:
        assert payload["issuer"] == "influxctl-database" and payload["policy"] == db.policy
        record = db.db_token(payload["token_id"])
        assert record["description"].startswith(f"rotator:{db.policy}:")
        assert [(p["action"], p["resource"]) for p in record["permissions"]] == [
            ("read", "db1"),
            ("write", "db1"),
            ("write", "db2"),
        ]
        assert record["expires_at"] and payload["expires_at"]
        assert ts(record["expires_at"]) == ts(payload["expires_at"])
    # The current token works; superseded ones may already be revoked if a rotation outlasted the
    # grace period (rotate revokes what is due), which invariant 3 checks for timing.
    assert db.fake.db_problem(versions[-1]["token"], "db2", "write") is None
    # No management token was minted: only the human's automation token exists.
    assert len(db.fake.tokens()) == 1

    time.sleep(db.grace_s + 0.3)
    proc = db.cli("revoke-expired")
    assert proc.returncode == 0, proc.stderr
    for old in ids[:-1]:
        assert db.db_token(old)["revoked_at"] is not None, f"{old} should be revoked after grace"
    assert db.db_token(ids[-1])["revoked_at"] is None
    # What an operator sees: the revoked ones only with --include-revoked.
    live = json.loads(db.influxctl("token", "list", "--format", "json").stdout)
    assert [t["id"] for t in live] == [ids[-1]]
    every = json.loads(db.influxctl("token", "list", "--include-revoked", "--format", "json").stdout)
    assert {t["id"] for t in every} == set(ids)
    check_db_invariants(db, settled=True)

    status = db.cli("status", "--output", "json")
    assert status.returncode == 0, status.stderr
    row = json.loads(status.stdout)[0]
    assert row["current_token_id"] == ids[-1] and row["pending_revocations"] == 0


def test_activation_delay_is_waited_out(tmp_path: Path, openbao: Any, fake_influxctl: FakeInfluxctlFixture) -> None:
    sc = make_db_scenario(tmp_path, openbao, fake_influxctl.state, db_activation_delay_s=2.0)
    start = time.monotonic()
    proc = sc.cli("rotate", sc.policy)
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - start >= 2.0
    queries = [c for c in sc.fake.calls() if c["command"] == "query"]
    assert len(queries) >= 3, "bootstrap verify + at least one refused and one accepted query"
    check_db_invariants(sc)


def test_a_write_only_token_with_the_admin_token_file(
    tmp_path: Path, openbao: Any, fake_influxctl: FakeInfluxctlFixture
) -> None:
    sc = make_db_scenario(
        tmp_path, openbao, fake_influxctl.state, auth="token_file", bootstrap=False, permissions='{ write = ["db1"] }'
    )
    sc.bootstrap_value, sc.bootstrap_id = sc.fake.add_db_token("telegraf writer", {"write": ["db1"]})
    first = tmp_path / "first"
    first.write_text(sc.bootstrap_value)
    assert sc.cli("bootstrap", sc.policy, "--token-file", str(first), "--token-id", sc.bootstrap_id).returncode == 0
    proc = sc.cli("rotate", sc.policy, "--output", "json")
    assert proc.returncode == 0, proc.stderr
    new_id = json.loads(proc.stdout)[0]["new_token_id"]
    assert [(p["action"], p["resource"]) for p in sc.db_token(new_id)["permissions"]] == [("write", "db1")]
    assert sc.fake.db_problem(sc.current()["token"], "db1", "write") is None
    admin = [c for c in sc.fake.calls() if c["command"] == "token create"]
    assert len(admin) == 1


def test_a_failed_verification_discards_the_new_token(
    tmp_path: Path, openbao: Any, fake_influxctl: FakeInfluxctlFixture
) -> None:
    sc = make_db_scenario(tmp_path, openbao, fake_influxctl.state, db_activation_delay_s=30, verify_timeout="2s")
    proc = sc.cli("rotate", sc.policy)
    assert proc.returncode == 1
    assert "Unauthenticated" in proc.stderr
    assert sc.current()["token_id"] == sc.bootstrap_id
    [minted] = [t for t in sc.fake.db_tokens() if t["description"].startswith(f"rotator:{sc.policy}:")]
    assert minted["revoked_at"] is not None, "REVOKE_NEW"
    check_db_invariants(sc, settled=True)


def test_validate_refuses_self_auth(tmp_path: Path) -> None:
    config = tmp_path / "rotator.toml"
    config.write_text("""
[[policy]]
name = "db"
schedule = "1d"
[policy.issuer]
type = "influxctl-database"
permissions = { read = ["*"] }
profile = { product = "clustered", host = "h" }
auth = { method = "self" }
[[policy.store]]
type = "vault-kv2"
url = "http://127.0.0.1:8200"
path = "x"
auth = { method = "token", token = { env = "VAULT_TOKEN" } }
""")
    proc = subprocess.run(
        [sys.executable, "-m", "rotator.runners.cli", "validate", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert "policy[0] 'db'.issuer.auth" in proc.stderr
    assert "auth.method = 'self' cannot work for database tokens" in proc.stderr


def test_leak_check_at_debug_level_json_logs(db: DbScenario) -> None:
    for _ in range(2):
        assert db.cli("rotate", db.policy, "--log-format", "json").returncode == 0
    db.fake.add_fault("token list", "exit", message="Error: rpc error: code = InvalidArgument desc = boom")
    failing = db.cli("rotate", db.policy, "--log-format", "json")
    assert failing.returncode == 1
    time.sleep(db.grace_s + 0.3)
    assert db.cli("revoke-expired", "--log-format", "json").returncode == 0
    db.cli("status", "--output", "json")
    assert db.log_file.read_text().count("\n") > 10, "debug logging should have produced records"
    check_db_invariants(db, settled=True)


# --- crash matrix subset -------------------------------------------------------------------------


def _finish_and_settle(sc: DbScenario) -> None:
    finish_and_settle(sc, check_db_invariants)


@pytest.mark.parametrize("checkpoint", ["minted", "verified", "published"])
def test_kill_at_step_boundary(checkpoint: str, db: DbScenario) -> None:
    proc = db.cli("rotate", db.policy, crash_at=checkpoint)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr)
    check_db_invariants(db, after_crash=True)
    minted = [t for t in db.fake.db_tokens() if t["description"].startswith(f"rotator:{db.policy}:")]
    assert len(minted) == 1 and minted[0]["revoked_at"] is None
    _finish_and_settle(db)
    [first_run] = db.journal_rows("SELECT state FROM runs WHERE kind = 'rotate' ORDER BY started_at LIMIT 1")
    assert first_run[0] == ("done" if checkpoint == "published" else "failed")
    if checkpoint != "published":
        assert db.db_token(minted[0]["id"])["revoked_at"] is not None, "the unpublished token is rolled back"


def test_kill_inside_token_create_after_the_server_minted(db: DbScenario, tmp_path: Path) -> None:
    """The value never reached rotator: recovery finds the token by its run tag and revokes it."""
    marker = tmp_path / "paused"
    db.fake.add_fault("token create", "pause_after_effect", seconds=60, marker=marker)
    db.kill_when(("rotate", db.policy), marker.exists, ended="token create",
                 never="the paused token create never started")
    db.fake.clear_faults()
    [lost] = [t for t in db.fake.db_tokens() if t["description"].startswith(f"rotator:{db.policy}:")]
    assert lost["revoked_at"] is None
    check_db_invariants(db, after_crash=True)
    let_mint_window_pass(db)  # killed with its child: none can still mint (issue 10 §1b)
    _finish_and_settle(db)
    assert db.db_token(lost["id"])["revoked_at"] is not None
