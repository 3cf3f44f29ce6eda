"""End to end through the CLI: a dependent pair of policies.

Policy ``mgmt`` rotates an InfluxDB *management* token with the ``influxctl-management`` issuer
(fake influxctl) into Vault path X. Policy ``db`` rotates *database* tokens with the
``management-api`` issuer against the OpenAPI-validated fake cluster, reading its management
token from Vault path X (``management_token_from``) and publishing to Vault path Y. The fake
cluster accepts exactly the management tokens the fake influxctl knows, so the two fakes are
one cluster; each Management API call records which management token authenticated it.
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hvac
import pytest

from tests.fakes.management_api_fake import ManagementApiFake, influxctl_management_auth
from tests.harness import INFLUXCTL, Scenario, check_invariants, let_mint_window_pass

GRACE_S = 2


@dataclass
class Pair:
    """The two policies' world: OpenBao, the fake influxctl (``mgmt``) and the fake cluster (``db``)."""

    dir: Path
    openbao: Any
    cluster: ManagementApiFake
    mgmt: Scenario  # the harness scenario of policy `mgmt`: runs the CLI and checks its invariants
    db_path: str
    #: Every token value the test saw (test-side only), for the leak check.
    values: set[str] = field(default_factory=set)
    db_bootstrap_id: str = ""
    #: More ``[[policy.store]]`` tables (TOML text) after each policy's Vault store "vault", e.g.
    #: an influxctl profile (tests/e2e/test_issuer_matrix.py).
    mgmt_extra_stores: str = ""
    db_extra_stores: str = ""
    grace_s: int = GRACE_S

    @property
    def mgmt_path(self) -> str:
        return self.mgmt.kv_path

    def cli(self, *args: str, crash_at: str | None = None) -> Any:
        return self.mgmt.cli(*args, crash_at=crash_at)

    def write_policies(self, *, dependency_token: str = "vault-token", verify_timeout: str = "20s") -> None:
        vault = f'url = "{self.openbao.url}"'
        self.mgmt.config.write_text(f"""{self.mgmt.rotator_toml()}
# Policy order matters for `rotate --all`: the management token first (docs/issuers.md).
[[policy]]
name = "mgmt"
schedule = "1h"
grace = "{self.grace_s}s"
verify_timeout = "20s"
[policy.issuer]
type = "influxctl-management"
influxctl = {json.dumps(str(INFLUXCTL))}
timeout_s = 10
[policy.issuer.profile]
product = "clustered"
host = "cluster.test.invalid"
port = 443
[[policy.store]]
type = "vault-kv2"
name = "vault"
{vault}
path = "{self.mgmt_path}"
auth = {{ method = "token", token = {{ file = "vault-token" }} }}
{self.mgmt_extra_stores}
[[policy]]
name = "db"
schedule = "1h"
grace = "{self.grace_s}s"
verify_timeout = "{verify_timeout}"
[policy.issuer]
type = "management-api"
product = "{self.cluster.product}"
{self._ids()}
base_url = "{self.cluster.base_url}"
cluster_host = "{self.cluster.cluster_url}"
permissions = [{{ action = "read", resource = "telemetry" }}, {{ action = "write", resource = "telemetry" }}]
verify = {{ database = "telemetry" }}
timeout_s = 5
[policy.issuer.management_token_from]
type = "vault-kv2"
{vault}
path = "{self.mgmt_path}"
auth = {{ method = "token", token = {{ file = "{dependency_token}" }} }}
[[policy.store]]
type = "vault-kv2"
name = "vault"
{vault}
path = "{self.db_path}"
auth = {{ method = "token", token = {{ file = "vault-token" }} }}
{self.db_extra_stores}""", encoding="utf-8")

    def _ids(self) -> str:
        if self.cluster.product != "dedicated":
            return ""
        return f'account_id = "{self.cluster.account_id}"\ncluster_id = "{self.cluster.cluster_id}"'

    # -- set-up ------------------------------------------------------------------------------

    def bootstrap(self, policy: str, value: str, token_id: str) -> None:
        self.mgmt.bootstrap_with(value, token_id, policy=policy, file=f"first-{policy}")

    # -- inspection --------------------------------------------------------------------------

    def vault(self) -> hvac.Client:
        return self.mgmt.vault()

    def versions(self, path: str) -> list[dict[str, Any]]:
        out = self.mgmt.versions(path)
        self.values |= {v["token"] for v in out}
        return out

    def current(self, path: str) -> dict[str, Any]:
        versions = self.versions(path)
        assert versions, f"{path} holds no version"
        return versions[-1]

    def principals_since(self, index: int) -> set[str | None]:
        return {call.principal for call in self.cluster.calls()[index:]}

    def journal(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        return self.mgmt.journal_rows(sql, *args)

    def check(self, *, settled: bool = False, mgmt: bool = True, after_crash: bool = False) -> None:
        """Invariants 1-4 for both policies, from the fakes, OpenBao, the journal and all output.

        ``mgmt=False`` skips policy ``mgmt``'s own checks (a test that revoked its token on purpose).
        ``after_crash``: right after a kill, an unpublished token may still be live (invariant 2
        says it *ends up* revoked: checked after ``recover``).
        """
        if mgmt:  # policy `mgmt` (fake influxctl, Vault path X)
            check_invariants(self.mgmt, settled=settled, after_crash=after_crash)
        versions = self.versions(self.db_path)
        tokens = {t["id"]: t for t in self.cluster.tokens()}
        # 1. The current database token works on the data plane.
        if versions:
            current = versions[-1]
            assert self.cluster.problem(current["token"]) is None, f"invariant 1: {current['token_id']} is unusable"
        current_id = versions[-1]["token_id"] if versions else None
        # 2. No orphans: each token `db` minted is current, pending revocation (within grace) or revoked.
        pending = {r[0] for r in self.journal(
            "SELECT token_id FROM revocations WHERE state = 'pending' AND policy = 'db'")}
        for token in tokens.values():
            if not token["description"].startswith("rotator:db:") or token["revokedAt"] or token["id"] == current_id:
                continue
            if after_crash:
                continue
            assert token["id"] in pending and not settled, f"invariant 2: orphan database token {token['id']}"
        # 3. A superseded token is revoked no sooner than grace after its successor was published.
        for old_id, published_at in self.journal(
            "SELECT old_token_id, published_at FROM runs WHERE policy = 'db' AND old_token_id IS NOT NULL "
            "AND published_at IS NOT NULL"
        ):
            revoked_at = tokens.get(old_id, {}).get("revokedAt")
            if revoked_at:
                earliest = _ts(published_at) + self.grace_s - 0.05
                assert _ts(revoked_at) >= earliest, f"invariant 3: {old_id} revoked early"
        # 4. No token value (management or database) in any output, log or journal file.
        self.versions(self.mgmt_path)
        assert self.values, "the leak check needs the values"
        self.mgmt.assert_no_leak(self.values)


def _ts(value: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


@pytest.fixture
def pair(tmp_path, openbao, fake_influxctl, management_api_fake) -> Pair:
    """Both policies bootstrapped with human-made tokens (``mgmt``: M0 in X; ``db``: D0 in Y)."""
    return make_pair(tmp_path, openbao, fake_influxctl.state, management_api_fake)


def make_pair(tmp_path: Path, openbao: Any, influx: Any, cluster: ManagementApiFake, *, grace_s: int = GRACE_S,
              mgmt_extra_stores: str = "", db_extra_stores: str = "") -> Pair:  # fmt: skip
    """The world of :func:`pair`; ``*_extra_stores`` add stores to a policy (written before bootstrap)."""
    cluster.management_auth = influxctl_management_auth(influx)  # one cluster: same management tokens
    (tmp_path / "vault-token").write_text(openbao.root_token)
    suffix = uuid.uuid4().hex[:10]
    mgmt = Scenario(dir=tmp_path, vault_url=openbao.url, vault_token=openbao.root_token, fake=influx,
                    policy="mgmt", kv_path=f"influx/mgmt-{suffix}", grace_s=grace_s)
    sc = Pair(dir=tmp_path, openbao=openbao, cluster=cluster, mgmt=mgmt, db_path=f"influx/db-{suffix}",
              mgmt_extra_stores=mgmt_extra_stores, db_extra_stores=db_extra_stores, grace_s=grace_s)
    sc.write_policies()
    mgmt.bootstrap_value, mgmt.bootstrap_id = influx.add_token("created by a human for bootstrap")
    sc.bootstrap("mgmt", mgmt.bootstrap_value, mgmt.bootstrap_id)
    db_value, sc.db_bootstrap_id = cluster.add_token("created by a human", [{"action": "read", "resource": "*"}])
    sc.values |= {mgmt.bootstrap_value, db_value}
    sc.bootstrap("db", db_value, sc.db_bootstrap_id)
    assert sc.principals_since(0) == {mgmt.bootstrap_id}, "db's bootstrap listed tokens with the management token"
    return sc


# --------------------------------------------------------------------------------------------


def test_database_rotation_uses_the_management_token_rotated_just_before(pair):
    sc = pair
    m0 = sc.mgmt.bootstrap_id

    # Rotate the management token: M1 replaces M0 in X (M0 stays valid through its grace).
    proc = sc.cli("rotate", "mgmt", "--output", "json")
    assert proc.returncode == 0, proc.stderr
    m1 = json.loads(proc.stdout)[0]["new_token_id"]
    assert sc.current(sc.mgmt_path)["token_id"] == m1 != m0

    # Rotate the database token: every Management API call authenticates with M1, not M0.
    sc.cluster.activation_delay_s = 1.5  # and the new database token answers 401 for a while
    mark = len(sc.cluster.calls())
    started = time.monotonic()
    proc = sc.cli("rotate", "db", "--output", "json")
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started >= 1.5
    d1 = json.loads(proc.stdout)[0]["new_token_id"]
    assert sc.principals_since(mark) == {m1}
    assert [c.status for c in sc.cluster.calls("query")][-2:] == [401, 200], "verify waited out the activation"
    current = sc.current(sc.db_path)
    assert current["token_id"] == d1 and current["issuer"] == "management-api" and current["policy"] == "db"
    token = sc.cluster.token_by_id(d1)
    assert token["description"].startswith("rotator:db:") and token["expiresAt"]
    assert token["permissions"] == [{"action": "read", "resource": "telemetry"},
                                    {"action": "write", "resource": "telemetry"}]
    sc.check()

    # `rotate --all` runs the policies in file order: mgmt (M2), then db with M2.
    sc.cluster.activation_delay_s = 0
    mark = len(sc.cluster.calls())
    proc = sc.cli("rotate", "--all", "--output", "json")
    assert proc.returncode == 0, proc.stderr
    results = {r["policy"]: r for r in json.loads(proc.stdout)}
    m2, d2 = results["mgmt"]["new_token_id"], results["db"]["new_token_id"]
    assert sc.principals_since(mark) == {m2}
    sc.check()

    # After grace: mgmt revokes M0 and M1; db revokes D0 and D1 with the current management token M2.
    time.sleep(GRACE_S + 0.5)
    mark = len(sc.cluster.calls())
    proc = sc.cli("revoke-expired")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert sc.principals_since(mark) == {m2}
    for old in (m0, m1):
        assert sc.mgmt.fake.token_by_id(old)["revoked_at"] is not None
    for old in (sc.db_bootstrap_id, d1):
        assert sc.cluster.token_by_id(old)["revokedAt"] is not None
    assert sc.cluster.is_active(sc.current(sc.db_path)["token"]) and sc.current(sc.db_path)["token_id"] == d2
    sc.check(settled=True)


@pytest.mark.parametrize("management_api_fake", ["dedicated"], indirect=True)
def test_unreadable_management_token_store_fails_cleanly_naming_the_dependency(pair):
    sc = pair
    before = sc.current(sc.db_path)
    # db's credentials for X: a Vault token that may read Y's neighbourhood but not X.
    denied = sc.openbao.create_token(sc.openbao.policy_for(f"only-{sc.db_path}", sc.db_path, "read"))
    (sc.dir / "dependency-token").write_text(denied)
    sc.write_policies(dependency_token="dependency-token")
    mark = len(sc.cluster.calls())
    proc = sc.cli("rotate", "db")
    assert proc.returncode == 1, proc.stderr
    location = f"vault:{sc.openbao.url}/secret/data/{sc.mgmt_path}"
    assert f"cannot read the management token from {location}" in proc.stderr
    assert "HTTP 403" in proc.stderr
    assert "another policy rotates: rotate or bootstrap that policy first" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert sc.cluster.calls()[mark:] == [], "no Management API call without the management token"
    assert [t for t in sc.cluster.tokens() if t["description"].startswith("rotator:db:")] == [], "nothing minted"
    assert sc.current(sc.db_path)["token_id"] == before["token_id"]
    assert sc.cluster.is_active(before["token"])
    sc.check()


@pytest.mark.parametrize("management_api_fake", ["clustered"], indirect=True)
def test_revoked_management_token_fails_cleanly_naming_the_dependency(pair):
    sc = pair
    before = sc.current(sc.db_path)
    sc.mgmt.fake.revoke(sc.mgmt.bootstrap_id)  # someone revoked the management token in the Admin UI
    proc = sc.cli("rotate", "db")
    assert proc.returncode == 1, proc.stderr
    assert "list database tokens failed: HTTP 401 (unauthorized)" in proc.stderr
    assert f"token {sc.mgmt.bootstrap_id}, published by policy 'mgmt'" in proc.stderr
    assert f"vault:{sc.openbao.url}/secret/data/{sc.mgmt_path}" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert [t for t in sc.cluster.tokens() if t["description"].startswith("rotator:db:")] == [], "nothing minted"
    assert sc.current(sc.db_path)["token_id"] == before["token_id"]
    assert sc.cluster.is_active(before["token"]), "the current database token is untouched"
    # The journal records no run for db: PLAN failed before any side effect.
    assert sc.journal("SELECT count(*) FROM runs WHERE policy = 'db' AND kind = 'rotate'") == [(0,)]
    sc.check(mgmt=False)  # mgmt's current token is revoked on purpose: its invariant 1 cannot hold


@pytest.mark.parametrize("management_api_fake", ["clustered"], indirect=True)
def test_a_lost_create_answer_is_swept_before_the_retry(pair):
    sc = pair
    sc.cluster.drop_next("create", after_effect=True)  # created, but the answer never arrives
    proc = sc.cli("rotate", "db", "--output", "json")
    assert proc.returncode == 0, proc.stderr
    new_id = json.loads(proc.stdout)[0]["new_token_id"]
    minted = [t for t in sc.cluster.tokens() if t["description"].startswith("rotator:db:")]
    assert len(minted) == 2, "one lost, one retried"
    lost = next(t for t in minted if t["id"] != new_id)
    assert lost["revokedAt"] is not None, "the token whose value was lost was revoked by the tag sweep"
    assert lost["description"] == sc.cluster.token_by_id(new_id)["description"], "same run, same tag"
    sc.check()


# --------------------------------------------------------------------------------------------
# crashes (kill -9 of a real `rotator rotate db`), then `rotator recover`

STEP_BOUNDARIES = [
    "planned", "minting", "minted", "verified", "publishing", "publish:vault", "published:vault", "published",
]  # fmt: skip


@pytest.mark.parametrize("management_api_fake", ["clustered"], indirect=True)
def test_kill_at_every_step_boundary_then_recover(pair):
    """One scenario, killed at each step in turn: after each kill and recovery every invariant holds."""
    sc = pair
    for checkpoint in STEP_BOUNDARIES:
        before = sc.current(sc.db_path)["token_id"]
        proc = sc.cli("rotate", "db", crash_at=checkpoint)
        assert proc.returncode == -signal.SIGKILL, (checkpoint, proc.returncode, proc.stderr)
        sc.check(after_crash=True)
        let_mint_window_pass(sc.mgmt)  # killed at "minting": no child can still mint (issue 10 §1b)
        proc = sc.cli("recover", "db")
        assert proc.returncode == 0, (checkpoint, proc.stderr)
        sc.check()
        state, new_id, published_at = sc.journal(
            "SELECT state, new_token_id, published_at FROM runs WHERE policy = 'db' AND kind = 'rotate' "
            "ORDER BY started_at DESC"
        )[0]
        if checkpoint.startswith("published"):
            assert sc.current(sc.db_path)["token_id"] == new_id != before, checkpoint
            # `recover` also revokes what is due: on a loaded machine the 2 s grace can pass between the
            # kill and the end of recovery, and the run is then rightly `done` (sc.check() has verified
            # that the old token was not revoked before its grace).
            if state == "done":
                assert time.time() >= _ts(published_at) + GRACE_S, (checkpoint, "done before grace passed")
            else:
                assert state == "published", (checkpoint, state)
        else:
            assert state == ("aborted" if checkpoint == "planned" else "failed"), (checkpoint, state)
            assert sc.current(sc.db_path)["token_id"] == before, checkpoint
            if new_id is not None:
                assert sc.cluster.token_by_id(new_id)["revokedAt"] is not None, f"{checkpoint}: candidate revoked"
    time.sleep(GRACE_S + 0.3)
    proc = sc.cli("revoke-expired", "db")
    assert proc.returncode == 0, proc.stderr
    assert not sc.journal("SELECT run_id FROM runs WHERE state NOT IN ('done', 'failed', 'aborted')")
    sc.check(settled=True)


@pytest.mark.parametrize("management_api_fake", ["clustered"], indirect=True)
def test_kill_while_the_create_answer_is_in_flight(pair):
    """The cluster created the token, rotator died before reading the answer: found by its tag and revoked."""
    sc = pair
    sc.cluster.delay_next("create", 60, after_effect=True)
    sc.mgmt.kill_when(("rotate", "db"), lambda: bool(sc.cluster.calls("create")), ended="the create call",
                      never="the create call never arrived")
    lost = [t for t in sc.cluster.tokens() if t["description"].startswith("rotator:db:")]
    assert len(lost) == 1 and lost[0]["revokedAt"] is None, "created, value never seen by rotator"
    sc.check(after_crash=True)
    let_mint_window_pass(sc.mgmt)  # the process that made the call is dead: its answer can no longer land
    proc = sc.cli("recover", "db")
    assert proc.returncode == 0, proc.stderr
    assert sc.cluster.token_by_id(lost[0]["id"])["revokedAt"] is not None, "the tag sweep revoked it"
    assert sc.journal("SELECT state FROM runs WHERE policy = 'db' AND kind = 'rotate'") == [("failed",)]
    sc.check()
