"""`rotator inventory --revoke-orphans` revokes only what rotator's journal says it minted (DESIGN
invariant 8), end to end on the fake influxctl and a real OpenBao:

- a tag is confirmed only on the cluster of the policy it names: a bare target of another cluster
  never yields an orphan, and a token the policy's own issuer does not list is "not found", never
  "revoked";
- the sweep revokes the ids the listing confirmed (an allow-list), not every token carrying the tag:
  not a token the same listing called suspicious, not one created after the listing;
- a token tied to a run by its tag alone is an orphan only if it was created while that run could mint;
- a policy's current token that the issuer lists as dead is said to be so.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.sandbox.influxctl_state import (
    FakeInfluxctl,
    find_token,
    format_time,
    server_now,
    transaction,
    write_profile,
)
from tests.harness import INFLUXCTL, Scenario, make_scenario
from tests.observe.test_inventory import rotate_in_process

POLICY = "mgmt"


@pytest.fixture
def failed(tmp_path: Path, openbao: Any, fake_influxctl: Any) -> dict[str, Any]:
    """A rotated policy, then a run whose every mint is refused: it ends FAILED with nothing minted."""
    fake = fake_influxctl.state
    sc = make_scenario(tmp_path, openbao, fake, grace_s=3600)
    assert rotate_in_process(sc) == "published"
    fake.add_fault("management create", "exit", times=10, code=1,
                   message="rpc error: code = PermissionDenied desc = permission denied")
    assert rotate_in_process(sc) == "failed"
    fake.clear_faults()
    (run_id,) = [r[0] for r in sc.journal_rows("SELECT run_id FROM runs WHERE state = 'failed'")]
    return {"sc": sc, "fake": fake, "run": run_id, "current": sc.current()["token_id"]}


def _tokens(sc: Scenario, *args: str) -> dict[str, dict[str, Any]]:
    proc = sc.cli("inventory", "--output", "json", *args)
    assert proc.returncode == 0, proc.stderr
    return {t["token_id"]: t for t in json.loads(proc.stdout)["tokens"]}


def _other_cluster(sc: Scenario, host: str) -> tuple[FakeInfluxctl, list[str], list[str]]:
    """Another cluster (its own fake state, reached through a wrapper of the fake influxctl) and the
    flags that list it as a bare --influxctl-profile whose profile names ``host``."""
    other = FakeInfluxctl(sc.dir / "other-state.json")
    other.init()
    admin, _ = other.add_token("cluster B admin")
    wrapper = sc.dir / "influxctl-b"
    wrapper.write_text(f'#!/bin/sh\nFAKE_INFLUXCTL_STATE={other.path} exec {INFLUXCTL} "$@"\n')
    wrapper.chmod(0o755)
    profile = write_profile(sc.dir / "b.toml", name="b", mgmt_token=admin, host=host)
    return other, ["--influxctl-profile", f"{profile}:b", "--influxctl", str(wrapper)], [admin]


# ---------------------------------------------------------------------------------- item 1: bare targets
def test_a_bare_target_of_another_cluster_never_makes_an_orphan_of_a_policy_s_tag(failed):
    """The tag of a failed run of `mgmt` on a token of another cluster: it was "orphan" (a bare target
    skipped the "does not use this issuer" check), and --revoke-orphans swept mgmt's own cluster, did
    not find it there, and said "revoked" (exit 0) while it stayed active."""
    sc, run_id = failed["sc"], failed["run"]
    other, bare, values = _other_cluster(sc, "b.cluster.test.invalid")
    _, foreign = other.add_token(f"rotator:{POLICY}:{run_id}")
    token = _tokens(sc, *bare)[foreign]
    assert token["class"] == "suspicious"
    assert "does not use this issuer" in token["reason"]
    proc = sc.cli("inventory", *bare, "--revoke-orphans", "--yes")
    assert proc.returncode == 0, proc.stderr
    assert "no orphan to revoke" in proc.stderr
    assert f"orphan {foreign}" not in proc.stderr
    assert other.token_by_id(foreign)["revoked_at"] is None  # type: ignore[index]
    sc.assert_no_leak(values)


def test_an_orphan_the_policy_s_own_issuer_does_not_list_is_not_found_never_revoked(failed):
    """A bare profile that names the policy's cluster (same host) but reaches another one: its token
    with the failed run's tag is an orphan of that listing, yet the policy's own issuer does not list
    it. The outcome is "not found at the issuer" and exit 1, never "revoked"."""
    sc, run_id = failed["sc"], failed["run"]
    other, bare, values = _other_cluster(sc, "CLUSTER.test.invalid.")  # the policy's host, spelt otherwise
    _, foreign = other.add_token(f"rotator:{POLICY}:{run_id}")
    assert _tokens(sc, *bare)[foreign]["class"] == "orphan"
    proc = sc.cli("inventory", *bare, "--revoke-orphans", "--yes")
    assert proc.returncode == 1, proc.stderr
    assert f"{POLICY}: orphan {foreign}: not revoked: not found at the issuer" in proc.stderr
    assert f"orphan {foreign}: revoked" not in proc.stderr
    assert other.token_by_id(foreign)["revoked_at"] is None  # type: ignore[index]
    sc.assert_no_leak(values)


# ---------------------------------------------------------------------------------- item 2: the allow-list
def test_revoke_orphans_never_revokes_a_suspicious_token_that_carries_the_run_s_tag(failed):
    """The engine's sweep revoked every live token carrying the run's tag, the one the same inventory
    called suspicious (several tags) among them."""
    sc, fake, run_id = failed["sc"], failed["fake"], failed["run"]
    _, orphan = fake.add_token(f"rotator:{POLICY}:{run_id}")
    _, shared = fake.add_token(f"shared by team X rotator:{POLICY}:{run_id} rotator:{POLICY}:0123abcd0123abcd")
    tokens = _tokens(sc)
    assert (tokens[orphan]["class"], tokens[shared]["class"]) == ("orphan", "suspicious")
    proc = sc.cli("inventory", "--revoke-orphans", "--yes")
    assert proc.returncode == 0, proc.stderr
    assert f"orphan {orphan}: revoked" in proc.stderr
    assert fake.token_by_id(orphan)["revoked_at"] is not None  # type: ignore[index]
    assert fake.token_by_id(shared)["revoked_at"] is None, "suspicious: never revoked"  # type: ignore[index]
    events = sc.journal_rows("SELECT detail FROM events WHERE step = 'revoke_orphan'")
    assert len(events) == 1 and orphan in events[0][0]


def expire_now(state_path: Path, token_id: str, find: Any) -> None:
    """The fake's token ``token_id`` (found by ``find``: find_token or find_db_token) expired a second ago."""
    with transaction(state_path) as state:
        record = find(state, token_id)
        assert record is not None, token_id
        record["expires_at"] = format_time(server_now(state) - timedelta(seconds=1))


@contextmanager
def _in_the_scenario(sc: Scenario, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Any]]:
    """The scenario's policy file and journal, opened in its directory with the fake influxctl's
    environment (the issuers' subprocesses read its state from it)."""
    from rotator.config.policy import load_config
    from rotator.core.journal import open_journal

    for key, value in sc.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(sc.dir)
    config = load_config(sc.config)
    journal = open_journal(f"sqlite:///{sc.journal_path}")
    try:
        yield config, journal
    finally:
        journal.close()


def test_a_token_with_the_tag_created_after_the_listing_is_not_revoked(failed, monkeypatch):
    """The sweep acts on the ids the operator saw listed (and confirmed): a token created with the run's
    tag between the listing and the sweep was revoked too."""
    from rotator.observe.inventory import policy_targets, revoke_orphans, take_inventory

    sc, fake, run_id = failed["sc"], failed["fake"], failed["run"]
    _, orphan = fake.add_token(f"rotator:{POLICY}:{run_id}")
    with _in_the_scenario(sc, monkeypatch) as (config, journal):
        known = list(config.policies)
        result = take_inventory(policy_targets(known), journal, known, datetime.now(UTC))
        assert [e.token_id for e in result.entries if e.cls == "orphan"] == [orphan]
        _, late = fake.add_token(f"rotator:{POLICY}:{run_id}")  # after the listing, before the sweep
        outcomes = {e.token_id: o for e, o in revoke_orphans(result, journal, known)}
    assert outcomes == {orphan: "revoked"}
    assert fake.token_by_id(orphan)["revoked_at"] is not None  # type: ignore[index]
    assert fake.token_by_id(late)["revoked_at"] is None  # type: ignore[index]


def test_an_orphan_that_became_another_policy_s_token_after_the_listing_is_not_revoked(failed, monkeypatch):
    """Each listed orphan is classified again under the lease before the sweep: one that a person
    bootstrapped into policy b since the listing is b's current token now (b's store, not mgmt's,
    holds it: mgmt's own store check would not stop its revocation)."""
    from rotator.observe.inventory import policy_targets, revoke_orphans, take_inventory

    sc, fake, run_id = failed["sc"], failed["fake"], failed["run"]
    text = sc.config.read_text()
    issuer = text[text.index("[policy.issuer]"):text.index("[[policy.store]]")]
    with sc.config.open("a") as fh:
        fh.write(f'\n[[policy]]\nname = "b"\nschedule = "1h"\n{issuer}' + sc.vault_store_toml(path=f"{sc.kv_path}-b"))
    value, orphan = fake.add_token(f"rotator:{POLICY}:{run_id}")
    with _in_the_scenario(sc, monkeypatch) as (config, journal):
        known = list(config.policies)
        result = take_inventory(policy_targets([config.policy(POLICY)]), journal, known, datetime.now(UTC))
        assert [e.token_id for e in result.entries if e.cls == "orphan"] == [orphan]
        sc.bootstrap_with(value, orphan, policy="b", file="b-token")  # after the listing, before the sweep
        outcomes = {e.token_id: o for e, o in revoke_orphans(result, journal, known)}
    assert outcomes[orphan].startswith("not revoked: no longer an orphan (managed, active: current token")
    assert fake.token_by_id(orphan)["revoked_at"] is None  # type: ignore[index]
    sc.assert_no_leak([value])


@pytest.mark.parametrize("confirmed", [True, False], ids=["listed", "listing-fails"])
def test_a_sweep_that_fails_part_way_reports_the_orphans_it_revoked(failed, monkeypatch, confirmed):
    """The sweep revokes a run's orphans one at a time: when the second revoke failed, both were
    reported "not revoked" and the confirming listing was skipped, so --check counted the revoked one
    as a live orphan. Whether or not the confirming listing works, the revoked one is not "not revoked"."""
    from rotator.core.errors import PermanentError
    from rotator.observe import inventory as inv_mod
    from rotator.observe.inventory import policy_targets, revoke_orphans, take_inventory

    sc, fake, run_id = failed["sc"], failed["fake"], failed["run"]
    _, first = fake.add_token(f"rotator:{POLICY}:{run_id}")
    _, second = fake.add_token(f"rotator:{POLICY}:{run_id}")
    real_revoke, real_read = inv_mod._OrphanSweeper._safe_revoke, inv_mod._OrphanSweeper._read_stores
    calls: list[str] = []

    def flaky(self: Any, claim: Any, credential: Any, states: Any = None) -> bool:
        calls.append(claim.token_id)
        if len(calls) == 2:
            raise PermanentError("issuer refused the revoke (injected)")
        return real_revoke(self, claim, credential, states)

    def read_stores(self: Any) -> Any:
        if len(calls) == 2 and not confirmed:
            raise PermanentError("store unreachable (injected)")
        return real_read(self)

    monkeypatch.setattr(inv_mod._OrphanSweeper, "_safe_revoke", flaky)
    monkeypatch.setattr(inv_mod._OrphanSweeper, "_read_stores", read_stores)
    with _in_the_scenario(sc, monkeypatch) as (config, journal):
        known = list(config.policies)
        inv = take_inventory(policy_targets(known), journal, known, datetime.now(UTC))
        outcomes = {e.token_id: o for e, o in revoke_orphans(inv, journal, known)}
    done, refused = calls
    assert fake.token_by_id(done)["revoked_at"] is not None  # type: ignore[index]
    assert fake.token_by_id(refused)["revoked_at"] is None  # type: ignore[index]
    if confirmed:
        assert outcomes[done] == "revoked"
    else:
        assert outcomes[done].startswith("revoke sent, not confirmed (the listing that confirms it failed: store")
    assert outcomes[refused] == "not revoked: issuer refused the revoke (injected)"


# ---------------------------------------------------------------------------------- item 4: the mint window
def test_a_tag_on_a_token_created_long_after_its_run_is_suspicious_and_never_revoked(failed):
    """A person's token, created today, whose description mentions the tag of a run that failed three
    days ago (every influxctl child of it long dead): it was an orphan, and --revoke-orphans revoked it."""
    sc, fake, run_id = failed["sc"], failed["fake"], failed["run"]
    old = (datetime.now(UTC) - timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    conn = sqlite3.connect(sc.journal_path)
    with conn:
        conn.execute("UPDATE runs SET started_at = ?, updated_at = ?, finished_at = ?, "
                     "mint_started_at = CASE WHEN mint_started_at IS NULL THEN NULL ELSE ? END WHERE run_id = ?",
                     (old, old, old, old, run_id))
    conn.close()
    _, human = fake.add_token(f"ops: temporary token while rotator:{POLICY}:{run_id} was failing")
    # Created while the run could still mint (the issuer's clock a little behind): still its orphan.
    _, leftover = fake.add_token(f"rotator:{POLICY}:{run_id}",
                                 created_at=datetime.now(UTC) - timedelta(days=3, minutes=-1))
    tokens = _tokens(sc)
    assert tokens[human]["class"] == "suspicious"
    assert "when no mint of that run could create it" in tokens[human]["reason"]
    assert tokens[leftover]["class"] == "orphan"
    proc = sc.cli("inventory", "--revoke-orphans", "--yes")
    assert proc.returncode == 0, proc.stderr
    assert fake.token_by_id(human)["revoked_at"] is None  # type: ignore[index]
    assert fake.token_by_id(leftover)["revoked_at"] is not None  # type: ignore[index]


# ---------------------------------------------------------------------------------- minor: a dead current token
@pytest.mark.parametrize("how", ["revoked", "expired"])
def test_a_current_token_the_issuer_lists_dead_is_said_to_be(tmp_path, openbao, fake_influxctl, how):
    """The journal's current token, revoked (or expired) at the issuer, was "current token" like a
    working one (and a revoked one was not even shown without --include-revoked). The policy's issuer
    authenticates with that token, so the cluster is listed through a person's profile of it."""
    fake = fake_influxctl.state
    sc = make_scenario(tmp_path, openbao, fake, bootstrap=False)
    # expired by moving its expiry into the past once bootstrapped: a token due 3 s after its creation
    # expired before a bootstrap slowed by a busy machine had verified it
    expiry = datetime.now(UTC) + timedelta(hours=1)
    value, token_id = fake.add_token("created by a human for bootstrap", expires_at=expiry)
    sc.bootstrap_with(value, token_id)
    if how == "revoked":
        fake.revoke(token_id)
    else:
        expire_now(fake.path, token_id, find_token)
    admin, _ = fake.add_token("a person's admin token")
    profile = write_profile(tmp_path / "person.toml", mgmt_token=admin, host="cluster.test.invalid")
    proc = sc.cli("inventory", "--output", "json", "--influxctl-profile", str(profile), "--influxctl", str(INFLUXCTL))
    assert proc.returncode == 1, "the policy's own issuer cannot list with its dead token"
    token = next(t for t in json.loads(proc.stdout)["tokens"] if t["token_id"] == token_id)
    assert token["issuer"] == f"influxctl-management:{profile}:default"
    assert token["class"] == "managed" and token["state"] == how
    assert token["reason"].startswith(f"current token, {how.upper()} at the issuer")
    assert f"`rotator rotate {POLICY}`" in token["reason"]
    sc.assert_no_leak([value, admin])
