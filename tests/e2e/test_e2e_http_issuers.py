"""The HTTP issuers end to end through the CLI: spec-validated fake (HTTP) + real OpenBao + SQLite journal.

Each issuer — ``influxdb3`` (named admin tokens, self-rotating), ``influxdb3`` with
``kind = "operator"`` (regenerates ``_admin``: no grace) and ``influxdb2`` (an admin credential
minting app tokens, retired in two stages) — is bootstrapped, rotated and revoked by real
``rotator`` processes. The fakes run in this test process and validate every request and answer
against the official specs (a mismatch fails the test at teardown).

:class:`HttpScenario` is tests/harness.py's ``CliScenario`` (the CLI runner, the store, the journal
and the issuer-independent checks) with an HTTP fake as the issuer, and :func:`check` asserts
DESIGN.md's invariants 1-4 from the outside, through the fake's state, OpenBao and the journal,
plus every byte rotator printed or logged (the leak check). Crashes:
``ROTATOR_TEST_CRASH_AT`` kills ``rotator rotate`` with SIGKILL at ``minted`` and ``published``
(tests/e2e/test_crash_matrix.py has every boundary for the influxctl issuer), and once inside the
mint call, after the server created the token and before its answer arrived.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from rotator.adapters.http.influxdb3 import operator_token_id
from tests.fakes.influxdb2_fake import BUCKET_ID, ORG_ID, USER_ID, InfluxDB2Fake
from tests.fakes.influxdb3_fake import InfluxDB3Fake, token_hash
from tests.harness import CliScenario
from tests.harness import settle as harness_settle

ISSUERS = ["influxdb3", "influxdb3-operator", "influxdb2"]
APP_PERMISSIONS = [
    {"action": "read", "resource": {"type": "buckets", "id": BUCKET_ID, "orgID": ORG_ID}},
    {"action": "write", "resource": {"type": "buckets", "id": BUCKET_ID, "orgID": ORG_ID}},
]


@dataclass(kw_only=True)
class HttpScenario(CliScenario):
    """One policy on one HTTP fake, a KV path in OpenBao, a directory with the policy file and journal."""

    variant: str  # one of ISSUERS
    fake: Any  # InfluxDB3Fake | InfluxDB2Fake
    policy: str = "app"
    grace_s: int = 1
    #: Every token value this scenario handled outside rotator: none may appear in any output.
    secrets: set[str] = field(default_factory=set)
    env_drop = ("VAULT_", "ROTATOR_", "INFLUX")

    def issuer_table(self) -> str:
        url = self.fake.url
        if self.variant == "influxdb3":
            return f'type = "influxdb3"\nbase_url = "{url}"\ncredential = "self"\ntimeout_s = 5\n'
        if self.variant == "influxdb3-operator":
            return (
                f'type = "influxdb3"\nbase_url = "{url}"\nkind = "operator"\nallow_no_grace = true\n'
                'credential = "self"\ntimeout_s = 5\n'
            )
        permissions = ", ".join(
            f'{{ action = "{p["action"]}", resource = {{ type = "buckets", id = "{BUCKET_ID}", orgID = "{ORG_ID}" }} }}'
            for p in APP_PERMISSIONS
        )
        return (
            f'type = "influxdb2"\nbase_url = "{url}"\norg_id = "{ORG_ID}"\ntimeout_s = 5\n'
            f'credential = {{ file = "influx-admin" }}\npermissions = [{permissions}]\n'
        )

    def write_policy(self) -> None:
        self.config.write_text(
            f"""{self.rotator_toml()}
{self.policy_toml(verify_timeout="10s")}
[policy.issuer]
{self.issuer_table()}{self.vault_store_toml()}{self.extra_stores}""",
            encoding="utf-8",
        )

    # -- the issuer, whatever its API --------------------------------------------------------------

    def problem(self, value: str) -> str | None:
        """Why the issuer refuses ``value`` (None: accepted)."""
        return self.fake.problem(value)  # type: ignore[no-any-return]

    def live_tagged(self) -> dict[str, str]:
        """Tokens of this policy's runs that still work at the issuer: ``{id: description}``."""
        tag = f"rotator:{self.policy}:"
        if isinstance(self.fake, InfluxDB2Fake):
            return {
                a["id"]: a["description"]
                for a in self.fake.authorizations()
                if tag in a["description"] and a["status"] == "active"
            }
        prefix = f"rotator-{self.policy}-"
        return {t["name"]: tag + t["name"][len(prefix) :] for t in self.fake.tokens() if t["name"].startswith(prefix)}

    def revoked_at(self, token_id: str) -> datetime | None:
        if isinstance(self.fake, InfluxDB2Fake):
            return self.fake.inactive_since.get(token_id)  # type: ignore[no-any-return]
        return self.fake.deleted_at.get(token_id)  # type: ignore[no-any-return]


def check(sc: HttpScenario, *, settled: bool = False, after_crash: bool = False) -> None:
    """DESIGN.md invariants 1-4 (3 not for the operator token, which has no grace by definition)."""
    versions = sc.versions()
    current = versions[-1] if versions else None
    # 1. The store's current version holds a token the issuer accepts.
    if current is not None:
        assert sc.problem(current["token"]) is None, (
            f"invariant 1: current token {current['token_id']} is refused: {sc.problem(current['token'])}"
        )
    # 2. No orphans: every working token of this policy's runs is current or pending revocation.
    if not after_crash:
        sc.assert_no_orphans(sc.live_tagged(), current["token_id"] if current is not None else None, settled=settled)
    # 3. A superseded token is revoked no sooner than grace after its successor's publication.
    if sc.variant != "influxdb3-operator":
        sc.assert_revoked_after_grace(sc.revoked_at)
    # 4. No token value in anything rotator wrote.
    check_no_leak(sc)


def check_no_leak(sc: HttpScenario) -> None:
    """Invariant 4: no token value in stdout, stderr, the log file or the journal files; also none the
    test never saw (a candidate discarded before it was published), found by hashing every
    token-shaped string rotator wrote as the fake hashes what it issued."""
    digest = None if isinstance(sc.fake, InfluxDB2Fake) else token_hash
    sc.assert_no_leak({v["token"] for v in sc.versions()} | sc.secrets, "invariant 4: a token value leaked",
                      issued=sc.fake.issued(), digest=digest)


def scenario(variant: str, tmp_path: Path, openbao: Any, fake: Any, *, extra_stores: str = "") -> HttpScenario:
    (tmp_path / "vault-token").write_text(openbao.root_token)
    sc = HttpScenario(
        dir=tmp_path,
        vault_url=openbao.url,
        vault_token=openbao.root_token,
        variant=variant,
        fake=fake,
        kv_path=f"influx/{uuid.uuid4().hex[:10]}",
        extra_stores=extra_stores,
    )
    if variant == "influxdb3":
        first, sc.bootstrap_id = fake.add_named_admin("human-made-admin"), "human-made-admin"
    elif variant == "influxdb3-operator":
        first, sc.bootstrap_id = fake.operator_value, operator_token_id(fake.hash_of("_admin"))
    else:
        (tmp_path / "influx-admin").write_text(fake.operator_value)
        sc.secrets.add(fake.operator_value)
        first, sc.bootstrap_id = fake.add_authorization("app token made by a human", APP_PERMISSIONS)
    sc.secrets.add(first)
    sc.write_policy()
    sc.bootstrap_with(first, sc.bootstrap_id)
    return sc


@pytest.fixture(params=ISSUERS)
def sc(request: pytest.FixtureRequest, tmp_path: Path, openbao: Any) -> Any:
    variant = request.param
    fake = InfluxDB2Fake() if variant == "influxdb2" else InfluxDB3Fake("core")
    with fake.running():
        yield scenario(variant, tmp_path, openbao, fake)


def settle(sc: HttpScenario) -> None:
    harness_settle(sc, check)


# ---------------------------------------------------------------------------------- rotation


def test_two_rotations_then_revocation_after_grace(sc: HttpScenario) -> None:
    ids = [sc.bootstrap_id]
    for _ in range(2):
        proc = sc.cli("rotate", sc.policy, "--output", "json")
        assert proc.returncode == 0, proc.stderr
        result = json.loads(proc.stdout)[0]
        assert result["ok"] and result["old_token_id"] == ids[-1]
        ids.append(result["new_token_id"])
        old_value = sc.versions()[-2]["token"]
        if sc.variant == "influxdb3-operator":
            assert sc.problem(old_value) == "unknown token"  # regeneration: no grace at all
        else:
            assert sc.problem(old_value) is None  # still valid during grace
        check(sc)
    assert [v["token_id"] for v in sc.versions()] == ids
    payload = sc.current()
    assert payload["issuer"] == ("influxdb2" if sc.variant == "influxdb2" else "influxdb3")
    settle(sc)
    for old in sc.versions()[:-1]:
        assert sc.problem(old["token"]) is not None, f"{old['token_id']} still works after grace"
    assert sc.journal_rows("SELECT DISTINCT state FROM revocations") == [("done",)]
    if sc.variant == "influxdb2":
        assert all(sc.fake.authorization(i)["status"] == "inactive" for i in ids[:-1])  # stage 1, not deleted
    elif sc.variant == "influxdb3":
        assert sc.fake.deleted == ids[:-1]
    else:
        assert not sc.fake.deleted  # _admin is never deleted


def test_influxdb2_a_credential_that_cannot_read_the_user_never_marks_a_live_token_revoked(
    tmp_path: Path, openbao: Any
) -> None:
    """InfluxDB v2 lists only the authorizations of users the credential may read, silently. A token
    rotator must revoke that its listing does not show is not taken for one already gone: the
    revocation looks it up, gets the 401, fails and alerts; the token is left as it is, not recorded
    revoked. With the permission granted, the same command revokes it."""
    fake = InfluxDB2Fake()
    with fake.running():
        sc = scenario("influxdb2", tmp_path, openbao, fake)
        blind = [{"action": a, "resource": {"type": "authorizations", "orgID": ORG_ID}} for a in ("read", "write")]
        blind.append({"action": "write", "resource": {"type": "users", "id": USER_ID}})
        blind += APP_PERMISSIONS  # InfluxDB grants only what the credential holds itself
        limited, _ = fake.add_authorization("rotator credential without read on the user", blind)
        (tmp_path / "influx-admin").write_text(limited)
        sc.secrets.add(limited)
        proc = sc.cli("rotate", sc.policy)
        assert proc.returncode == 0, proc.stderr
        time.sleep(sc.grace_s + 0.3)
        proc = sc.cli("revoke-expired")
        assert "read and write on the user" in proc.stdout + proc.stderr
        assert fake.authorization(sc.bootstrap_id)["status"] == "active"
        assert sc.journal_rows("SELECT state FROM revocations WHERE token_id = ?", sc.bootstrap_id) != [("done",)]
        # the cause fixed (the operator's token as the credential), the same command revokes it
        (tmp_path / "influx-admin").write_text(fake.operator_value)
        with sqlite3.connect(sc.journal_path) as journal:  # its retry is due now, not after the backoff
            journal.execute("UPDATE revocations SET next_try_at = NULL")
        proc = sc.cli("revoke-expired")
        assert proc.returncode == 0, proc.stderr
        assert fake.authorization(sc.bootstrap_id)["status"] == "inactive"
        check_no_leak(sc)


def test_dry_run_changes_nothing(sc: HttpScenario) -> None:
    seen = len(sc.fake.api.calls)
    proc = sc.cli("rotate", sc.policy, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "would mint" in proc.stdout
    assert [v["token_id"] for v in sc.versions()] == [sc.bootstrap_id]
    calls = sc.fake.api.calls[seen:]
    assert calls, "a dry run checks the issuer"
    changes = {
        "PostCreateNamedAdminToken",
        "PostRegenerateAdminToken",
        "DeleteToken",
        "PostAuthorizations",
        "PatchAuthorizationsID",
        "DeleteAuthorizationsID",
    }
    assert not {c.operation_id for c in calls} & changes
    check(sc)


# ---------------------------------------------------------------------------------- crashes


CRASH_CASES = [
    pytest.param(variant, checkpoint, id=f"{variant}-{checkpoint}")
    for variant in ISSUERS
    for checkpoint in ("minted", "published")
    if (variant, checkpoint) != ("influxdb3-operator", "minted")  # its own test below: no way back
]


@pytest.mark.parametrize(("variant", "checkpoint"), CRASH_CASES)
def test_kill_after_step_then_recover(variant: str, checkpoint: str, tmp_path: Path, openbao: Any) -> None:
    fake = InfluxDB2Fake() if variant == "influxdb2" else InfluxDB3Fake("core")
    with fake.running():
        sc = scenario(variant, tmp_path, openbao, fake)
        proc = sc.cli("rotate", sc.policy, crash_at=checkpoint)
        assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr)
        check(sc, after_crash=True)
        minted_id = sc.journal_rows("SELECT new_token_id FROM runs WHERE kind = 'rotate'")[0][0]
        assert minted_id
        proc = sc.cli("recover")
        assert proc.returncode == 0, proc.stderr
        check(sc)
        state = sc.journal_rows("SELECT state FROM runs WHERE kind = 'rotate'")[0][0]
        if checkpoint == "published":
            assert "rolled forward" in proc.stdout or state in ("published", "done")
            assert sc.current()["token_id"] == minted_id
        else:  # minted, never published: rolled back, the candidate revoked
            assert state == "failed" and sc.current()["token_id"] == sc.bootstrap_id
            assert minted_id not in sc.live_tagged()
        proc = sc.cli("rotate", sc.policy)
        assert proc.returncode == 0, proc.stderr
        settle(sc)


def test_operator_token_regenerated_but_never_published_is_loud(tmp_path: Path, openbao: Any) -> None:
    """The price of no grace: killed between regeneration and publish, the stores hold a dead value.

    Nothing can bring the lost value back. rotator must not report success: ``recover`` fails
    with the explanation, and the run stays open (``status`` flags it) until a human acts
    (docs/issuers.md#influxdb3, 'Recovering the operator token').
    """
    with InfluxDB3Fake("core").running() as fake:
        sc = scenario("influxdb3-operator", tmp_path, openbao, fake)
        proc = sc.cli("rotate", sc.policy, crash_at="minted")
        assert proc.returncode == -signal.SIGKILL
        assert sc.problem(sc.current()["token"]) == "unknown token"  # invariant 1 is broken, by design
        proc = sc.cli("recover")
        assert proc.returncode != 0
        assert "stores hold a dead value" in proc.stderr or "stores hold a dead value" in sc.log_file.read_text()
        assert sc.journal_rows("SELECT state FROM runs WHERE kind = 'rotate'") != [("done",)]
        assert not sc.fake.deleted
        sc.secrets.add(fake.operator_value)  # the live value nobody holds: not printed either
        check_no_leak(sc)
        status = sc.cli("status")
        assert status.returncode == 4 and "revoking_new" in status.stdout

        # The documented way out: regenerate through the recovery endpoint, put the value in the
        # store as a new version (same payload keys), then `rotator recover`.
        value = fake.recover_operator()
        sc.secrets.add(value)
        payload = {
            "token": value,
            "token_id": operator_token_id(token_hash(value)),
            "issuer": "influxdb3",
            "policy": sc.policy,
            "created_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "expires_at": None,
        }
        sc.vault().secrets.kv.v2.create_or_update_secret(
            path=sc.kv_path, mount_point="secret", secret=payload
        )
        proc = sc.cli("recover")
        assert proc.returncode == 0, proc.stderr
        assert sc.journal_rows("SELECT state FROM runs WHERE kind = 'rotate'") == [("failed",)]
        check(sc)
        proc = sc.cli("rotate", sc.policy)
        assert proc.returncode == 0, proc.stderr
        settle(sc)


@pytest.mark.parametrize("variant", ["influxdb3", "influxdb2"])
def test_kill_inside_mint_after_the_server_created_the_token(variant: str, tmp_path: Path, openbao: Any) -> None:
    """The answer with the only copy of the value is lost: recovery finds the token by its run tag."""
    fake = InfluxDB2Fake() if variant == "influxdb2" else InfluxDB3Fake("core")
    with fake.running():
        sc = scenario(variant, tmp_path, openbao, fake)
        operation = "create" if variant == "influxdb2" else "named_admin"
        before = set(sc.live_tagged())
        fake.delay_next(operation, 30, after_handler=True)
        sc.kill_when(("rotate", sc.policy), lambda: set(sc.live_tagged()) != before, ended="the mint",
                     never="the mint never reached the server")
        fake.api.clear_faults()
        [orphan] = set(sc.live_tagged()) - before
        check(sc, after_crash=True)
        proc = sc.cli("recover")
        assert proc.returncode == 0, proc.stderr
        assert orphan not in sc.live_tagged(), "the orphan found by its tag is revoked"
        check(sc)
        assert sc.current()["token_id"] == sc.bootstrap_id


def test_a_changed_token_name_prefix_keeps_the_tokens_named_with_the_former_one(tmp_path: Path, openbao: Any) -> None:
    """docs/issuers.md: a token's name is its tag. After a change of token_name_prefix that lists the old
    one as former, the token a killed mint left is found by recovery, and the token that was current
    is revoked after its grace (not refused for want of a tag)."""
    fake = InfluxDB3Fake("core")
    with fake.running():
        sc = scenario("influxdb3", tmp_path, openbao, fake)
        proc = sc.cli("rotate", sc.policy, "--output", "json")
        assert proc.returncode == 0, proc.stderr
        first = json.loads(proc.stdout)[0]["new_token_id"]
        assert first.startswith("rotator-app-")
        before = set(sc.live_tagged())
        fake.delay_next("named_admin", 30, after_handler=True)
        sc.kill_when(("rotate", sc.policy), lambda: set(sc.live_tagged()) != before, ended="the mint",
                     never="the mint never reached the server")
        fake.api.clear_faults()
        [orphan] = set(sc.live_tagged()) - before
        table = sc.issuer_table()
        changed = table + 'token_name_prefix = "svc-new"\nformer_token_name_prefixes = ["rotator-app"]\n'
        sc.issuer_table = lambda: changed  # type: ignore[method-assign]
        sc.write_policy()
        proc = sc.cli("recover")
        assert proc.returncode == 0, proc.stderr
        assert orphan in fake.deleted, "the token of the killed mint is found under the former prefix"
        proc = sc.cli("rotate", sc.policy, "--output", "json")
        assert proc.returncode == 0, proc.stderr
        result = json.loads(proc.stdout)[0]
        assert result["new_token_id"].startswith("svc-new-") and result["old_token_id"] == first
        time.sleep(sc.grace_s + 0.3)
        proc = sc.cli("revoke-expired")
        assert proc.returncode == 0, proc.stderr + proc.stdout
        assert first in fake.deleted, "the token current before the change is revoked after its grace"
        assert sc.problem(sc.current()["token"]) is None
        assert fake.names() - {"_admin"} == {result["new_token_id"]}, "only the current token is left"
        check_no_leak(sc)


def test_influxdb2_bootstrap_with_a_malformed_token_id_names_the_argument_then_the_fixed_command_succeeds(
    tmp_path: Path, openbao: Any
) -> None:
    """An authorization id that is not 16 hex digits is the operator's typo: the error names the
    token id given to bootstrap and says where each issuer shows its ids (it used to send the operator
    to the journal's records), exits as a configuration error, and writes nothing; the same command
    with the id fixed succeeds."""
    fake = InfluxDB2Fake()
    with fake.running():
        (tmp_path / "vault-token").write_text(openbao.root_token)
        sc = HttpScenario(dir=tmp_path, vault_url=openbao.url, vault_token=openbao.root_token, variant="influxdb2",
                          fake=fake, kv_path=f"influx/{uuid.uuid4().hex[:10]}", extra_stores="")
        (tmp_path / "influx-admin").write_text(fake.operator_value)
        sc.secrets.add(fake.operator_value)
        first, token_id = fake.add_authorization("app token made by a human", APP_PERMISSIONS)
        sc.secrets.add(first)
        sc.write_policy()
        (tmp_path / "first-token").write_text(first)
        proc = sc.cli("bootstrap", sc.policy, "--token-file", str(tmp_path / "first-token"),
                      "--token-id", f"{token_id}-typo")
        assert proc.returncode == 2, proc.stderr
        assert "the token id to bootstrap: influxdb2: token id" in proc.stderr, proc.stderr
        assert "influx auth list" in proc.stderr and "journal" not in proc.stderr, proc.stderr
        assert sc.versions() == [], "nothing published"
        sc.bootstrap_with(first, token_id)
        assert sc.current()["token_id"] == token_id
        check_no_leak(sc)


@pytest.mark.parametrize("hashed", [False, True], ids=["values-listed", "hashed-tokens"])
def test_influxdb2_bootstrap_with_another_authorization_s_id(tmp_path: Path, openbao: Any, hashed: bool) -> None:
    """The id of another active authorization: where the server lists token values (OSS without hashed
    tokens) the mismatch is a configuration error and nothing is written, then the right id succeeds;
    where it hashes them the listing shows nothing of the value, so bootstrap says it could not check."""
    fake = InfluxDB2Fake(hashed_tokens=hashed)
    with fake.running():
        (tmp_path / "vault-token").write_text(openbao.root_token)
        sc = HttpScenario(dir=tmp_path, vault_url=openbao.url, vault_token=openbao.root_token, variant="influxdb2",
                          fake=fake, kv_path=f"influx/{uuid.uuid4().hex[:10]}", extra_stores="")
        (tmp_path / "influx-admin").write_text(fake.operator_value)
        sc.secrets.add(fake.operator_value)
        first, token_id = fake.add_authorization("app token made by a human", APP_PERMISSIONS)
        other, other_id = fake.add_authorization("another team's token", APP_PERMISSIONS)
        sc.secrets.update({first, other})
        sc.write_policy()
        (tmp_path / "first-token").write_text(first)
        args = ("bootstrap", sc.policy, "--token-file", str(tmp_path / "first-token"), "--token-id")
        if hashed:
            proc = sc.cli(*args, token_id)
            assert proc.returncode == 0, proc.stderr
            assert "cannot check that it is the token being bootstrapped" in proc.stderr, proc.stderr
        else:
            proc = sc.cli(*args, other_id)
            assert proc.returncode == 2, proc.stderr
            assert f"token id {other_id} is another token than the one in the file" in proc.stderr, proc.stderr
            assert f"the file holds token {token_id}" in proc.stderr, proc.stderr
            assert sc.versions() == [], "nothing published"
            proc = sc.cli(*args, token_id)
            assert proc.returncode == 0, proc.stderr
            assert "cannot check" not in proc.stderr
        assert sc.current()["token_id"] == token_id
        assert fake.authorization(other_id)["status"] == "active"
        check_no_leak(sc)
