"""What the issuer lists is input, not authority: `rotator inventory` calls a token rotator's only where
its own journal proves it, and revokes only what that journal proves it minted.

- A token matched to a failed run by id alone was `orphan`, with no look at its creation time: on
  InfluxDB 3 a token's id is its name, and deleting a discarded candidate frees that name, so a
  person's admin token created under it later was deleted by `--revoke-orphans`.
- The journal's ids counted on every target: a token another instance holds under the name of a
  policy's current token was `managed` there (a never-expiring admin token hidden from `--check`),
  and ids of different issuer types could match each other.
- A policy's current token deleted at the issuer was no finding (only listed tokens were looked at).
- The candidate of a run whose process is gone (its lease expired) was "still in progress".
- `inventory --check` with a policy file holding no policy exited 0 (`status --check` exits 4).
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.config.policy import parse_config
from rotator.core.contracts import TokenInfo
from rotator.core.errors import TransientError
from rotator.core.journal import Journal, Revocation, RunRecord, RunState, open_journal
from rotator.observe.inventory import (
    MANAGED,
    MISSING,
    ORPHAN,
    SUSPICIOUS,
    UNMANAGED,
    Target,
    policy_targets,
    take_inventory,
)

NOW = datetime.now(UTC).replace(microsecond=0)


def _policy(tmp_path: Path, name: str, issuer: str) -> Any:
    return parse_config(tomllib.loads(
        f'[[policy]]\nname = "{name}"\nschedule = "30d"\n[policy.issuer]\n{issuer}[[policy.store]]\n'
        f'type = "vault-kv2"\nurl = "http://127.0.0.1:1"\npath = "x/{name}"\n[policy.store.auth]\nmethod = "token"\n'
        'token = { file = "t" }\n'
    ), tmp_path / "rotator.toml").policies[0]


def _influxdb3(tmp_path: Path, name: str, host: str) -> Any:
    return _policy(tmp_path, name, f'type = "influxdb3"\nbase_url = "https://{host}:8181"\ncredential = "self"\n')


def _journal(tmp_path: Path) -> Journal:
    return open_journal(f"sqlite:///{tmp_path / 'j.db'}")


def _run(journal: Journal, run_id: str, policy: str, state: str, token: str | None, *, published: bool = False,
         at: datetime = NOW) -> None:
    journal.begin_run(RunRecord(run_id=run_id, policy=policy, state=state, kind="rotate", started_at=at,
                                updated_at=at, new_token_id=token, published_at=at if published else None,
                                finished_at=at if state in RunState.FINAL else None))  # fmt: skip


class _Lister:
    """An issuer that lists ``tokens`` (or fails)."""

    def __init__(self, tokens: list[TokenInfo] | None = None, *, fail: bool = False) -> None:
        self.tokens, self.fail = tokens or [], fail

    def list_tokens(self, credential: object) -> list[TokenInfo]:
        if self.fail:
            raise TransientError("instance unavailable")
        return self.tokens


def _listing(target: Target, *listers: Any) -> Target:
    """``target`` listed through ``listers`` (one per policy of it, in order) instead of its issuers."""
    return replace(target, listers=[(p, lister, lambda: None) for (p, _, _), lister in zip(target.listers, listers,
                                                                                          strict=True)])


def _by_id(inv: Any) -> dict[str, Any]:
    return {e.token_id: e for e in inv.entries}


# ---------------------------------------------------------------------------------- 1: an id alone is no proof
@pytest.mark.parametrize(("created", "cls"), [
    (NOW + timedelta(seconds=1), ORPHAN),  # while the run could mint: its candidate
    (NOW + timedelta(days=30), SUSPICIOUS),  # a month later: a person's token under the freed name
    (None, SUSPICIOUS),  # nothing ties it to the run
])
def test_a_token_matched_to_a_failed_run_by_id_must_be_created_while_the_run_could_mint(tmp_path, created, cls):
    policy = _influxdb3(tmp_path, "app", "a.example")
    journal = _journal(tmp_path)
    _run(journal, "r0", "app", RunState.DONE, "rotator-app-r0", published=True, at=NOW - timedelta(days=1))
    _run(journal, "r1", "app", RunState.FAILED, "rotator-app-r1")
    (target,) = policy_targets([policy])
    listed = [TokenInfo("rotator-app-r0", ""), TokenInfo("rotator-app-r1", "", created_at=created)]

    inv = take_inventory([_listing(target, _Lister(listed))], journal, [policy], NOW + timedelta(days=31))

    entry = _by_id(inv)["rotator-app-r1"]
    assert entry.cls == cls, entry.reason
    assert (entry.sweep is not None) is (cls == ORPHAN), "only an orphan is handed to --revoke-orphans"
    if cls == SUSPICIOUS:
        assert entry in inv.findings()
        assert "the journal records run r1 (failed) minting a token of this id, but" in entry.reason


def test_revoke_orphans_does_not_delete_a_person_s_token_named_like_a_discarded_candidate(tmp_path, openbao):
    """InfluxDB 3 end to end: a run killed after its mint is recovered (its candidate deleted, the run
    failed, no revocation row); a month later a person creates an admin token under that name.
    `inventory` called it `orphan` and `--revoke-orphans` deleted it."""
    from tests.e2e.test_e2e_http_issuers import scenario
    from tests.fakes.influxdb3_fake import InfluxDB3Fake

    fake = InfluxDB3Fake("core")
    with fake.running():
        sc = scenario("influxdb3", tmp_path, openbao, fake)
        assert sc.cli("rotate", sc.policy).returncode == 0
        sc.cli("rotate", sc.policy, crash_at="minted")
        assert sc.cli("recover").returncode == 0
        (name,) = [r[0] for r in sc.journal_rows("SELECT new_token_id FROM runs WHERE state = 'failed'")]
        assert fake.token(name) is None, "recovery deleted the candidate"
        assert sc.journal_rows("SELECT * FROM revocations WHERE token_id = ?", name) == []
        real_now = fake.now
        fake.now = lambda: real_now() + timedelta(days=30)  # type: ignore[method-assign]
        sc.secrets.add(fake.add_named_admin(name))
        fake.now = real_now  # type: ignore[method-assign]

        proc = sc.cli("inventory", "--output", "json")
        assert proc.returncode == 0, proc.stderr
        token = {t["token_id"]: t for t in json.loads(proc.stdout)["tokens"]}[name]
        assert token["class"] == "suspicious", token["reason"]
        revoke = sc.cli("inventory", "--revoke-orphans", "--yes")
        assert revoke.returncode == 0, revoke.stderr
        assert "no orphan to revoke" in revoke.stderr
        assert fake.deleted.count(name) == 1 and fake.token(name) is not None, "deleted once: by the recovery"
        sc.assert_no_leak(sc.secrets | {v["token"] for v in sc.versions()})


# ---------------------------------------------------------------------------------- 2: the journal speaks for its place
def test_an_id_the_journal_records_for_another_instance_is_suspicious_not_managed(tmp_path):
    """Policies a and b on two InfluxDB 3 instances: b's instance holds tokens named like a's current
    token, a's previous one and a's failed run's candidate. They are not a's: on b's target each is a
    `suspicious` finding (never `managed`, never a's current token, never an orphan); on a's, a's."""
    a, b = _influxdb3(tmp_path, "a", "a.example"), _influxdb3(tmp_path, "b", "b.example")
    journal = _journal(tmp_path)
    _run(journal, "r0", "a", RunState.DONE, "a-old", published=True, at=NOW - timedelta(days=2))
    _run(journal, "r1", "a", RunState.PUBLISHED, "a-current", published=True, at=NOW - timedelta(days=1))
    journal.schedule_revocation(Revocation("a", "a-old", "r1", "superseded", due_at=NOW + timedelta(hours=1),
                                           state="pending"))
    _run(journal, "r2", "a", RunState.FAILED, "a-candidate", at=NOW - timedelta(minutes=1))
    target_a, target_b = policy_targets([a, b])
    same_names = [TokenInfo(name, "", created_at=NOW - timedelta(minutes=1))
                  for name in ("a-current", "a-old", "a-candidate")]  # fmt: skip

    inv = take_inventory([_listing(target_a, _Lister(same_names)), _listing(target_b, _Lister(same_names))],
                         journal, [a, b], NOW)  # fmt: skip

    on_a = {e.token_id: e for e in inv.entries if e.target == target_a.name}
    on_b = {e.token_id: e for e in inv.entries if e.target == target_b.name}
    assert (on_a["a-current"].cls, on_a["a-current"].current) == (MANAGED, True)
    assert on_a["a-old"].cls == MANAGED and on_a["a-candidate"].cls == ORPHAN
    for name, entry in on_b.items():
        assert (entry.cls, entry.current, entry.sweep) == (SUSPICIOUS, False, None), name
        assert "issuer settings name another cluster or instance" in entry.reason
        assert entry in inv.findings()
    assert inv.counts()[(target_b.name, MANAGED)] == 0 and inv.counts()[(target_b.name, SUSPICIOUS)] == 3


def test_the_journal_s_ids_match_only_tokens_of_the_same_type_of_issuer(tmp_path):
    """A management token's id recorded by an influxctl policy says nothing of an InfluxDB 3 token that
    bears it as its name; the database tokens influxctl and the Management API list are the same."""
    from rotator.observe.inventory import _id_space

    mgmt = _policy(tmp_path, "m", 'type = "influxctl-management"\n[policy.issuer.profile]\nproduct = "clustered"\n'
                                  'host = "c.example"\n')  # fmt: skip
    i3 = _influxdb3(tmp_path, "i3", "a.example")
    journal = _journal(tmp_path)
    _run(journal, "r0", "m", RunState.DONE, "shared-name", published=True)
    _run(journal, "r1", "i3", RunState.DONE, "i3-current", published=True)
    target = next(t for t in policy_targets([mgmt, i3]) if t.kind == "influxdb3")

    inv = take_inventory([_listing(target, _Lister([TokenInfo("shared-name", ""), TokenInfo("i3-current", "")]))],
                         journal, [mgmt, i3], NOW)  # fmt: skip

    assert _by_id(inv)["shared-name"].cls == UNMANAGED
    assert _id_space("management-api") == _id_space("influxctl-database") != _id_space("influxdb3")


def test_a_name_taken_on_another_instance_is_a_finding_end_to_end(tmp_path, openbao):
    """Two InfluxDB 3 policies on two instances (prod, staging): a token created on staging under the
    name of prod's current token (shown on the status page) was `managed` on staging's target."""
    from tests.e2e.test_e2e_http_issuers import scenario
    from tests.fakes.influxdb3_fake import InfluxDB3Fake

    prod, stg = InfluxDB3Fake("core"), InfluxDB3Fake("core")
    with prod.running(), stg.running():
        sc = scenario("influxdb3", tmp_path, openbao, prod)
        (tmp_path / "stg-op").write_text(stg.operator_value)
        sc.secrets.add(stg.operator_value)
        with sc.config.open("a") as fh:
            fh.write(f'\n[[policy]]\nname = "stg"\nschedule = "1h"\ngrace = "1h"\n[policy.issuer]\ntype = "influxdb3"\n'
                     f'base_url = "{stg.url}"\ncredential = {{ file = "stg-op" }}\ntimeout_s = 5\n'
                     + sc.vault_store_toml(path=f"{sc.kv_path}-stg"))
        first = stg.add_named_admin("stg-first")
        sc.secrets.add(first)
        sc.bootstrap_with(first, "stg-first", policy="stg", file="stg-first-token")
        assert sc.cli("rotate", sc.policy).returncode == 0
        current = sc.current()["token_id"]
        sc.secrets.add(stg.add_named_admin(current))  # the same name, on the other instance

        proc = sc.cli("inventory", "--check", "--output", "json")

        assert proc.returncode == 4, proc.stderr
        tokens = [t for t in json.loads(proc.stdout)["tokens"] if t["token_id"] == current]
        by_issuer = {t["issuer"]: t for t in tokens}
        assert by_issuer[f"influxdb3:{sc.policy}"]["class"] == "managed"
        assert by_issuer["influxdb3:stg"]["class"] == "suspicious"
        assert f"rotator: attention: influxdb3:stg: orphan? token {current} (no-expiry)" in proc.stderr
        sc.assert_no_leak(sc.secrets | {v["token"] for v in sc.versions()})


# ---------------------------------------------------------------------------------- 3: a current token gone
def test_a_current_token_a_complete_listing_does_not_show_is_missing_and_the_first_finding(tmp_path):
    policy = _influxdb3(tmp_path, "app", "a.example")
    journal = _journal(tmp_path)
    _run(journal, "r0", "app", RunState.DONE, "rotator-app-r0", published=True)
    (target,) = policy_targets([policy])
    unmanaged = TokenInfo("ci", "")

    inv = take_inventory([_listing(target, _Lister([unmanaged]))], journal, [policy], NOW)

    first = inv.findings()[0]
    assert (first.token_id, first.cls, first.state, first.current, first.policy) == (
        "rotator-app-r0", MANAGED, MISSING, True, "app")
    assert first.reason.startswith("current token not found at the issuer")
    assert "`rotator rotate app`" in first.reason
    assert inv.counts()[(target.name, MANAGED)] == 0, "a token the issuer does not hold is not counted"

    # A listing that failed in part proves nothing missing.
    two = replace(target, listers=[*target.listers, (None, _Lister(fail=True), lambda: None)])
    partly = take_inventory([two], journal, [policy], NOW)
    assert not [e for e in partly.entries if e.state == MISSING] and partly.errors


class _Incomplete(_Lister):
    """An issuer whose listing may leave tokens out (InfluxDB 2): asked about the others by id."""

    listing_is_complete = False

    def __init__(self, known: dict[str, TokenInfo], *, lookup_fails: bool = False) -> None:
        super().__init__([])
        self.known, self.lookup_fails = known, lookup_fails
        self.asked: list[str] = []

    def token_info(self, token_id: str, credential: object) -> TokenInfo | None:
        self.asked.append(token_id)
        if self.lookup_fails:
            raise TransientError("401: may not read that user's authorizations")
        return self.known.get(token_id)


def test_a_listing_that_may_leave_tokens_out_is_asked_about_the_current_token_first(tmp_path):
    policy = _influxdb3(tmp_path, "app", "a.example")
    journal = _journal(tmp_path)
    _run(journal, "r0", "app", RunState.DONE, "cur", published=True)
    (target,) = policy_targets([policy])

    found = _Incomplete({"cur": TokenInfo("cur", "")})
    inv = take_inventory([_listing(target, found)], journal, [policy], NOW)
    assert found.asked == ["cur"]
    assert [(e.token_id, e.cls, e.state, e.reason) for e in inv.entries] == [
        ("cur", MANAGED, "active", "current token")]
    assert not inv.findings()

    gone = take_inventory([_listing(target, _Incomplete({}))], journal, [policy], NOW)
    assert [(e.token_id, e.state) for e in gone.findings()] == [("cur", MISSING)]

    unknown = take_inventory([_listing(target, _Incomplete({}, lookup_fails=True))], journal, [policy], NOW)
    assert not unknown.entries and unknown.errors[0][1].startswith("listed only partly: could not look up")


def test_a_deleted_current_authorization_is_a_check_finding_end_to_end(tmp_path, openbao):
    """InfluxDB 2: a person deletes the policy's current authorization (`influx auth delete`): the
    stores hand out a dead token, and `inventory --check` exited 0 naming nothing."""
    from tests.e2e.test_e2e_http_issuers import scenario
    from tests.fakes.influxdb2_fake import InfluxDB2Fake

    fake = InfluxDB2Fake()
    with fake.running():
        sc = scenario("influxdb2", tmp_path, openbao, fake)
        assert sc.cli("rotate", sc.policy).returncode == 0
        current = sc.current()["token_id"]
        del fake._auths[current]
        assert sc.problem(sc.current()["token"]) is not None, "the stores' token no longer works"

        proc = sc.cli("inventory", "--check", "--output", "json")

        assert proc.returncode == 4, proc.stderr
        attention = [line for line in proc.stderr.splitlines() if line.startswith("rotator: attention: ")]
        assert attention[0] == (f"rotator: attention: influxdb2:{sc.policy}: managed token {current}: current token "
                                f"not found at the issuer: the stores hold a token that no longer works "
                                f"(`rotator rotate {sc.policy}` replaces it)")
        (entry,) = [t for t in json.loads(proc.stdout)["tokens"] if t["token_id"] == current]
        assert (entry["class"], entry["state"]) == ("managed", "missing")
        sc.assert_no_leak(sc.secrets | {v["token"] for v in sc.versions()})


# ---------------------------------------------------------------------------------- 5: an abandoned run
def test_the_candidate_of_a_run_whose_lease_expired_is_an_abandoned_run_finding(tmp_path):
    policy = _influxdb3(tmp_path, "app", "a.example")
    journal = _journal(tmp_path)
    _run(journal, "r0", "app", RunState.DONE, "rotator-app-r0", published=True, at=NOW - timedelta(days=1))
    _run(journal, "r1", "app", RunState.MINTED, "rotator-app-r1")
    (target,) = policy_targets([policy])
    listed = [TokenInfo("rotator-app-r0", ""), TokenInfo("rotator-app-r1", "", created_at=NOW)]

    inv = take_inventory([_listing(target, _Lister(listed))], journal, [policy], NOW)

    entry = _by_id(inv)["rotator-app-r1"]
    assert (entry.cls, entry.abandoned, entry.sweep) == (MANAGED, True, None)
    assert "candidate of abandoned run r1 (minted)" in entry.reason and "`rotator recover app`" in entry.reason
    assert inv.findings() == [entry]

    # A run in progress holds a live lease (a daemon rotating right now): no finding.
    journal.acquire_lease("app", "daemon-a", timedelta(minutes=5), NOW)
    busy = take_inventory([_listing(target, _Lister(listed))], journal, [policy], NOW)
    entry = _by_id(busy)["rotator-app-r1"]
    assert (entry.cls, entry.abandoned, entry.reason) == (MANAGED, False, "candidate of run r1, still in progress "
                                                                          "(minted)")
    assert not busy.findings()


def test_a_token_tagged_by_an_abandoned_run_still_minting_is_a_finding(tmp_path):
    """A run killed while minting records no candidate: a token with its tag is its possible candidate."""
    policy = _policy(tmp_path, "p", 'type = "influxctl-management"\n[policy.issuer.profile]\nproduct = "clustered"\n'
                                    'host = "c.example"\n')  # fmt: skip
    journal = _journal(tmp_path)
    _run(journal, "r0", "p", RunState.DONE, "t-current", published=True)
    _run(journal, "r1", "p", RunState.MINTING, None)
    (target,) = policy_targets([policy])
    listed = [TokenInfo("t-current", "rotator:p:r0"), TokenInfo("t-late", "rotator:p:r1", created_at=NOW)]

    inv = take_inventory([_listing(target, _Lister(listed))], journal, [policy], NOW)

    assert [(e.token_id, e.cls, e.abandoned) for e in inv.findings()] == [("t-late", MANAGED, True)]


# ---------------------------------------------------------------------------------- 6: no policy at all
def test_inventory_check_of_a_policy_file_without_policies_exits_4(tmp_path, capsys, monkeypatch):
    from rotator.runners import cli

    monkeypatch.chdir(tmp_path)
    config = tmp_path / "rotator.toml"
    config.write_text(f'[rotator]\njournal = "{tmp_path / "j.db"}"\n')
    _journal(tmp_path).close()  # (an empty ConfigMap next to the journal of the policies it used to hold)

    assert cli.main(["-c", str(config), "inventory"]) == 0
    capsys.readouterr()
    assert cli.main(["-c", str(config), "inventory", "--check"]) == 4
    assert "rotator: out of compliance: the policy file holds no [[policy]], so no token is rotated" in \
        capsys.readouterr().err
