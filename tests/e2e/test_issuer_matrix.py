"""Every issuer end to end through the CLI with two stores, and the full crash matrix for each.

Each of the five issuers rotates a policy that publishes to Vault (``vault-kv2``, a real OpenBao,
store 1) *and* to an influxctl profile (``influxctl-profile``, a real ``config.toml`` next to the
policy file, store 2, named ``profile``):

============================ ============================== ============== ==========================================
issuer                       fake                           profile key    what the profile is to influxctl
============================ ============================== ============== ==========================================
``influxctl-management``     fake influxctl                 ``mgmt_token`` the credential of ``influxctl management``
``influxctl-database``       fake influxctl                 ``token``      the token of ``influxctl query``/``write``
``management-api``           OpenAPI-validated fake cluster ``token``      as above; the same profile's ``mgmt_token``
                                                                           is published by the management policy
                                                                           the database policy depends on
``influxdb3`` (named admin)   OpenAPI-validated fake         ``token``      nothing: a plain destination file
``influxdb2``                OpenAPI-validated fake         ``token``      nothing: a plain destination file
============================ ============================== ============== ==========================================

An InfluxDB 3 or v2 token in an influxctl profile is unusual but legal: any issuer's token may be
written to a profile's ``token`` key (for automation that reads its token from that file); only
``mgmt_token`` is reserved for management tokens (rotator/adapters/influxctl/profile.py: key_problem).
The ``influxdb3`` operator kind is not in the matrix: it has no grace and no way back from a kill
between regeneration and publication (tests/e2e/test_e2e_http_issuers.py covers it).

Each scenario is the one of that issuer's own e2e file (tests/harness.py, DbScenario, Pair,
HttpScenario) with the profile store added, so the checks are that file's invariants 1-4 (issuer,
Vault, journal, and the leak check of every byte rotator printed or logged) plus, here, the same
for the profile: it holds a token the issuer accepts (invariant 1); outside a crash it holds the
very token Vault holds; influxctl accepts the file and, where influxctl can use the token,
authenticates with it; the file differs from the operator's by that one line only; the sidecar
holds no token value; and no token-shaped string (the value of a candidate the test never saw)
is in rotator's output, log, journal or sidecar.

The crash matrix kills ``rotator rotate`` with SIGKILL (``ROTATOR_TEST_CRASH_AT``) at every step
boundary, the two stores' included, then runs ``rotator recover``, checks everything, rotates
again and checks again; at the end it lets the grace pass and checks that everything is settled.
For speed the ten boundaries of one issuer run one after the other on one scenario (each starts
from the state the previous recovery and rotation left) rather than on a fresh scenario each;
every assertion names its boundary.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rotator.adapters.influxctl.profile import SIDECAR_SUFFIX, InfluxctlProfileSettings, InfluxctlProfileStore
from rotator.core.contracts import AdapterContext
from tests.e2e.test_e2e import wait_out_grace
from tests.e2e.test_e2e_database_tokens import check_db_invariants, make_db_scenario
from tests.e2e.test_e2e_http_issuers import check as check_http
from tests.e2e.test_e2e_http_issuers import scenario as http_scenario
from tests.e2e.test_e2e_management_api import make_pair
from tests.fakes.fixtures import FakeInfluxctlFixture
from tests.fakes.influxdb2_fake import InfluxDB2Fake
from tests.fakes.influxdb3_fake import InfluxDB3Fake
from tests.fakes.management_api_fake import ManagementApiFake
from tests.harness import CliScenario, check_invariants, let_mint_window_pass, make_scenario

ISSUERS = ["influxctl-management", "influxctl-database", "management-api", "influxdb3", "influxdb2"]
GRACE_S = 1
PROFILE_STORE = "profile"

#: The operator's influxctl config: the profile rotator writes, one it must not touch.
PROFILE_TEXT = """\
## influxctl - written by the operator; rotator changes one line of profile "default"
[[profile]]
    name = "default"
    product = "clustered"
    host = "cluster.test.invalid"
    port = "443"
    database = "db1"
    ## The token and database of the query and write subcommands
    # token = ""
    [profile.tls]
        insecure = false

[[profile]]
    name = "other"
    product = "clustered"
    host = "other.test.invalid"
    mgmt_token = 'someone-elses-value-0123456789'
"""

#: Token values as the fakes make them: management (``M.V1.``), database/InfluxDB 3 (``apiv<N>_``),
#: InfluxDB v2 (88 characters of url-safe base64). None may appear in anything rotator wrote.
TOKEN_SHAPES = re.compile(r"M\.V1\.[A-Za-z0-9+/]{16}|apiv\d_[A-Za-z0-9+/]{16}|[A-Za-z0-9_-]{86}==")


def profile_store(key: str) -> str:
    """The ``[[policy.store]]`` table of the profile store (TOML text, appended to a policy)."""
    return f"""
[[policy.store]]
type = "influxctl-profile"
name = "{PROFILE_STORE}"
config = "influxctl/config.toml"
profile = "default"
key = "{key}"
"""


@dataclass
class ProfileKey:
    """One key of profile ``default``, published by one policy."""

    key: str
    policy: str
    issuer: str
    #: The policy's Vault versions, oldest first (values included: test-side only).
    versions: Callable[[], list[dict[str, Any]]]
    #: Why the issuer refuses a token value right now (None: accepted).
    problem: Callable[[str], str | None]
    #: An influxctl command that authenticates with the profile's value under ``key``.
    influxctl: tuple[str, ...] = ()


@dataclass
class Subject:
    """One issuer's scenario, seen through what the matrix needs of it."""

    issuer: str
    policy: str
    vault_store: str  # the Vault store's name in the policy: the crash points publish:/published:<name>
    profile: Path  # the influxctl config.toml
    cli: Callable[..., subprocess.CompletedProcess[str]]
    #: The scenario's own invariants 1-4: ``check(settled=..., after_crash=...)``.
    check: Callable[..., None]
    versions: Callable[[], list[dict[str, Any]]]
    problem: Callable[[str], str | None]
    is_revoked: Callable[[str], bool]
    journal_rows: Callable[[str], list[tuple[Any, ...]]]
    #: Where rotator wrote (a tests/harness.py ``CliScenario``: ``written()``).
    run: CliScenario
    keys: list[ProfileKey]
    influxctl: FakeInfluxctlFixture
    #: The policies one rotation runs, in order (management-api: its management policy first).
    rotate_args: tuple[str, ...]

    def current_id(self) -> str:
        versions = self.versions()
        assert versions, "Vault holds no version"
        return str(versions[-1]["token_id"])

    def last_run(self) -> tuple[str, str | None]:
        """(state, new token id) of the policy's newest rotation run."""
        rows = self.journal_rows(
            f"SELECT state, new_token_id FROM runs WHERE policy = '{self.policy}' AND kind = 'rotate' "
            "ORDER BY started_at DESC"
        )
        assert rows, "no rotation run in the journal"
        return rows[0][0], rows[0][1]


# ------------------------------------------------------------------------------------ checks


def _profile_state(config: Path, key: str) -> Any:
    settings = InfluxctlProfileSettings.model_validate({"config": config, "profile": "default", "key": key})
    return InfluxctlProfileStore.from_config(settings, AdapterContext(policy="matrix", base_dir=config.parent))


def check_profile(sub: Subject, *, after_crash: bool = False, where: str = "") -> None:
    """The profile store's invariants (see the module docstring); ``after_crash``: of the policy
    that was killed, the profile may still hold the previous token (also a valid one)."""
    text = sub.profile.read_text()
    default = next(p for p in tomllib.loads(text)["profile"] if p["name"] == "default")
    lines, values = [], set()
    for pk in sub.keys:
        value = default.get(pk.key)
        assert isinstance(value, str) and value, f"{where}: profile key {pk.key} holds no token"
        state = _profile_state(sub.profile, pk.key).read_current()
        assert state.managed and state.record is not None, f"{where}: {pk.key} is not managed by rotator"
        same = state.record.value.reveal() == value  # (compared outside `assert`: pytest would print values)
        assert same, f"{where}: the store's record and the file disagree"
        assert (state.record.issuer, state.record.policy) == (pk.issuer, pk.policy), where
        problem = pk.problem(value)
        assert problem is None, f"{where}: invariant 1: profile {pk.key} holds {state.token_id}, refused: {problem}"
        versions = pk.versions()
        values |= {v["token"] for v in versions}
        if after_crash and pk.policy == sub.policy:
            assert state.token_id in {v["token_id"] for v in versions[-2:]}, f"{where}: {pk.key} holds {state.token_id}"
        else:
            current = versions[-1]
            same = state.token_id == current["token_id"] and value == current["token"]
            assert same, f"{where}: profile {pk.key} holds {state.token_id}, Vault {current['token_id']}"
        if pk.influxctl:
            done = sub.influxctl.run("--config", str(sub.profile), "--profile", "default", *pk.influxctl)
            assert done.returncode == 0, f"{where}: influxctl {' '.join(pk.influxctl)} with the profile: {done.stderr}"
        lines.append(f'    {pk.key} = "{value}"')
    # The operator's file, plus the keys' lines and nothing else.
    assert all(line in text.splitlines() for line in lines), where
    assert [line for line in text.splitlines() if line not in lines] == PROFILE_TEXT.splitlines(), where
    sidecar = Path(str(sub.profile) + SIDECAR_SUFFIX)
    for path in (sub.profile, sidecar):
        assert path.stat().st_mode & 0o777 == 0o600, f"{where}: {path.name} is not mode 0600"
    sidecar_text = sidecar.read_text()
    leaked = sum(value in sidecar_text for value in values)
    assert leaked == 0, f"{where}: {leaked} token value(s) in the sidecar"
    if not after_crash:
        temp = [p.name for p in sub.profile.parent.iterdir() if p.name.endswith(".tmp")]
        assert not temp, f"{where}: temporary files left: {temp}"


def check_shapes(sub: Subject, where: str = "") -> None:
    """No token-shaped string in anything rotator wrote, the sidecar included: this catches the
    values of candidates that were minted and discarded, which the test never saw."""
    texts = sub.run.written()
    texts["sidecar"] = Path(str(sub.profile) + SIDECAR_SUFFIX).read_text()
    found = sorted(name for name, text in texts.items() if TOKEN_SHAPES.search(text))
    assert not found, f"{where}: invariant 4: a token-shaped string in {found}"


def check_all(sub: Subject, *, settled: bool = False, after_crash: bool = False, where: str = "") -> None:
    sub.check(settled=settled, after_crash=after_crash)
    check_profile(sub, after_crash=after_crash, where=where)
    check_shapes(sub, where)


# ------------------------------------------------------------------------------------ scenarios


def _write_profile(tmp_path: Path) -> Path:
    path = tmp_path / "influxctl" / "config.toml"
    path.parent.mkdir()
    path.write_text(PROFILE_TEXT)
    path.chmod(0o600)
    return path


def management_subject(tmp_path: Path, openbao: Any, influxctl: FakeInfluxctlFixture) -> Subject:
    """tests/harness.py's scenario (Vault store "primary"), the profile store appended to its policy."""
    config = _write_profile(tmp_path)
    sc = make_scenario(tmp_path, openbao, influxctl.state, grace_s=GRACE_S, extra_stores=profile_store("mgmt_token"))
    fake = sc.fake
    return Subject(
        issuer="influxctl-management", policy=sc.policy, vault_store="primary", profile=config, cli=sc.cli,
        check=lambda **kw: check_invariants(sc, **kw), versions=sc.versions, problem=fake.problem,
        is_revoked=lambda token_id: fake.token_by_id(token_id)["revoked_at"] is not None,  # type: ignore[index]
        journal_rows=sc.journal_rows, run=sc, influxctl=influxctl, rotate_args=(sc.policy,),
        keys=[ProfileKey("mgmt_token", sc.policy, "influxctl-management", sc.versions, fake.problem,
                         ("management", "list", "--format", "json"))],
    )  # fmt: skip


def database_subject(tmp_path: Path, openbao: Any, influxctl: FakeInfluxctlFixture) -> Subject:
    config = _write_profile(tmp_path)
    sc = make_db_scenario(tmp_path, openbao, influxctl.state, grace_s=GRACE_S, extra_stores=profile_store("token"))

    def problem(value: str) -> str | None:
        return sc.fake.db_problem(value, "db1")

    return Subject(
        issuer="influxctl-database", policy=sc.policy, vault_store="primary", profile=config, cli=sc.cli,
        check=lambda **kw: check_db_invariants(sc, **kw), versions=sc.versions, problem=problem,
        is_revoked=lambda token_id: sc.db_token(token_id)["revoked_at"] is not None,
        journal_rows=sc.journal_rows, run=sc, influxctl=influxctl, rotate_args=(sc.policy,),
        # influxctl query with neither --token nor --database: both from the profile.
        keys=[ProfileKey("token", sc.policy, "influxctl-database", sc.versions, problem,
                         ("query", "--format", "json", "SELECT 1"))],
    )  # fmt: skip


def management_api_subject(
    tmp_path: Path, openbao: Any, influxctl: FakeInfluxctlFixture, cluster: ManagementApiFake
) -> Subject:
    """The dependent pair: ``mgmt`` writes the profile's mgmt_token, ``db`` (the subject) its token."""
    config = _write_profile(tmp_path)
    pair = make_pair(tmp_path, openbao, influxctl.state, cluster, grace_s=GRACE_S,
                     mgmt_extra_stores=profile_store("mgmt_token"), db_extra_stores=profile_store("token"))  # fmt: skip

    def db_versions() -> list[dict[str, Any]]:
        return pair.versions(pair.db_path)

    def mgmt_versions() -> list[dict[str, Any]]:
        return pair.versions(pair.mgmt_path)

    return Subject(
        issuer="management-api", policy="db", vault_store="vault", profile=config, cli=pair.cli,
        check=pair.check, versions=db_versions, problem=cluster.problem,
        is_revoked=lambda token_id: cluster.token_by_id(token_id)["revokedAt"] is not None,  # type: ignore[index]
        journal_rows=lambda sql: pair.journal(sql), run=pair.mgmt, influxctl=influxctl, rotate_args=("mgmt", "db"),
        keys=[
            ProfileKey("mgmt_token", "mgmt", "influxctl-management", mgmt_versions, influxctl.state.problem,
                       ("management", "list", "--format", "json")),
            ProfileKey("token", "db", "management-api", db_versions, cluster.problem),
        ],
    )  # fmt: skip


def http_subject(variant: str, tmp_path: Path, openbao: Any, influxctl: FakeInfluxctlFixture, fake: Any) -> Subject:
    config = _write_profile(tmp_path)
    sc = http_scenario(variant, tmp_path, openbao, fake, extra_stores=profile_store("token"))
    assert sc.grace_s == GRACE_S
    return Subject(
        issuer=variant, policy=sc.policy, vault_store="primary", profile=config, cli=sc.cli,
        check=lambda **kw: check_http(sc, **kw), versions=sc.versions, problem=sc.problem,
        is_revoked=lambda token_id: sc.revoked_at(token_id) is not None,
        journal_rows=sc.journal_rows, run=sc, influxctl=influxctl, rotate_args=(sc.policy,),
        keys=[ProfileKey("token", sc.policy, variant, sc.versions, sc.problem)],
    )  # fmt: skip


@pytest.fixture(params=ISSUERS)
def subject(
    request: pytest.FixtureRequest, tmp_path: Path, openbao: Any, fake_influxctl: FakeInfluxctlFixture
) -> Iterator[Subject]:
    """One issuer's two-store policy, bootstrapped; the HTTP fakes check the spec at teardown."""
    issuer = request.param
    if issuer == "influxctl-management":
        yield management_subject(tmp_path, openbao, fake_influxctl)
    elif issuer == "influxctl-database":
        yield database_subject(tmp_path, openbao, fake_influxctl)
    elif issuer == "management-api":
        with ManagementApiFake("dedicated").running() as cluster:
            yield management_api_subject(tmp_path, openbao, fake_influxctl, cluster)
    else:
        fake = InfluxDB3Fake("core") if issuer == "influxdb3" else InfluxDB2Fake()
        with fake.running():
            yield http_subject(issuer, tmp_path, openbao, fake_influxctl, fake)


# ------------------------------------------------------------------------------------ tests


def test_bootstrap_two_rotations_and_revocation_after_grace(subject: Subject) -> None:
    sub = subject
    check_all(sub, where="bootstrap")
    shaped = TOKEN_SHAPES.search(sub.versions()[-1]["token"]) is not None
    assert shaped, "the token-shape leak check would not recognise this issuer's tokens"
    ids = [sub.current_id()]
    for n in range(2):
        proc = sub.cli("rotate", *sub.rotate_args, "--output", "json")
        assert proc.returncode == 0, proc.stderr
        result = next(r for r in json.loads(proc.stdout) if r["policy"] == sub.policy)
        assert result["ok"] and result["old_token_id"] == ids[-1] and result["new_token_id"] not in ids
        ids.append(result["new_token_id"])
        previous = sub.versions()[-2]
        assert not sub.is_revoked(previous["token_id"]) and sub.problem(previous["token"]) is None, "valid in grace"
        check_all(sub, where=f"rotation {n + 1}")
    assert [v["token_id"] for v in sub.versions()] == ids

    wait_out_grace(sub)
    proc = sub.cli("revoke-expired")
    assert proc.returncode == 0, proc.stderr
    for old in sub.versions()[:-1]:
        assert sub.is_revoked(old["token_id"]), f"{old['token_id']} not revoked after grace"
        assert sub.problem(old["token"]) is not None, f"{old['token_id']} still works after grace"
    assert not sub.is_revoked(ids[-1])
    check_all(sub, settled=True, where="after grace")

    status = sub.cli("status", "--output", "json")
    assert status.returncode == 0, status.stderr
    row = next(r for r in json.loads(status.stdout) if r["policy"] == sub.policy)
    assert row["current_token_id"] == ids[-1] and row["pending_revocations"] == 0
    check_all(sub, settled=True, where="status")  # the leak check covers status' output too


@pytest.mark.timeout(300)  # ten kill/recover cycles of real subprocesses: ~60-160 s on a loaded 2-core machine
def test_kill_at_every_step_boundary_then_recover(subject: Subject) -> None:
    sub = subject
    vault = sub.vault_store
    boundaries = [
        "planned", "minting", "minted", "verified", "publishing",
        f"publish:{vault}", f"published:{vault}", f"publish:{PROFILE_STORE}", f"published:{PROFILE_STORE}",
        "published",
    ]  # fmt: skip
    in_vault = set(boundaries[boundaries.index(f"published:{vault}") :])  # Vault holds the new token
    in_profile = {f"published:{PROFILE_STORE}", "published"}  # so does the profile
    for checkpoint in boundaries:
        before = sub.current_id()
        proc = sub.cli("rotate", sub.policy, crash_at=checkpoint)
        assert proc.returncode == -signal.SIGKILL, (checkpoint, proc.returncode, proc.stderr)
        state, new_id = sub.last_run()
        check_all(sub, after_crash=True, where=f"{checkpoint}: after the kill")
        # The kill happened where it should: between the stores, the profile still holds the old token.
        assert sub.current_id() == (new_id if checkpoint in in_vault else before), checkpoint
        held = _profile_state(sub.profile, sub.keys[-1].key).read_current().token_id
        assert held == (new_id if checkpoint in in_profile else before), (checkpoint, held)

        let_mint_window_pass(sub.run)  # killed at "minting": no child can still mint (issue 10 §1b)
        proc = sub.cli("recover", sub.policy)
        assert proc.returncode == 0, (checkpoint, proc.stderr)
        check_all(sub, where=f"{checkpoint}: after recover")
        state, new_id = sub.last_run()
        if checkpoint in in_vault:  # rolled forward: every store holds the new token
            assert state in ("published", "done") and new_id is not None, (checkpoint, state)
            assert sub.current_id() == new_id != before, checkpoint
            assert checkpoint == "published" or "rolled forward" in proc.stdout, (checkpoint, proc.stdout)
        else:  # rolled back: the old token stays, the candidate (if any) is revoked
            assert state == ("aborted" if checkpoint == "planned" else "failed"), (checkpoint, state)
            assert sub.current_id() == before, checkpoint
            if new_id is not None:
                assert sub.is_revoked(new_id), f"{checkpoint}: candidate {new_id} not revoked"

        current = sub.current_id()
        proc = sub.cli("rotate", sub.policy)
        assert proc.returncode == 0, (checkpoint, proc.stderr)
        assert sub.current_id() != current, checkpoint
        check_all(sub, where=f"{checkpoint}: the next rotation")

    wait_out_grace(sub)
    proc = sub.cli("revoke-expired")
    assert proc.returncode == 0, proc.stderr
    check_all(sub, settled=True, where="settled")
    runs = sub.journal_rows(f"SELECT state FROM runs WHERE policy = '{sub.policy}' AND kind = 'rotate'")
    states = sorted(row[0] for row in runs)
    # 10 runs killed (1 aborted, 5 rolled back, 4 rolled forward) + 10 rotations after them.
    assert states == ["aborted"] + ["done"] * 14 + ["failed"] * 5, states
    assert sub.journal_rows(
        f"SELECT DISTINCT state FROM revocations WHERE policy = '{sub.policy}'"
    ) == [("done",)]  # fmt: skip
