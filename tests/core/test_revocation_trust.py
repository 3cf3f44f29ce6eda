"""Invariant 8: store contents never decide what is revoked; a failed revocation backs off (issue 10 §2, 15.2).

Each scenario runs the real `rotator` CLI against OpenBao and the fake influxctl. "Another team's
token" is a live token the issuer knows, created by a human, that no rotator run minted.
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import hvac
import pytest

from rotator.config.policy import load_config
from rotator.core.clock import FakeClock
from rotator.core.contracts import TokenInfo, with_unlisted
from rotator.core.engine import MAX_REVOCATION_ROUNDS, Engine
from rotator.core.errors import NeedsAttention
from rotator.core.journal import open_journal
from rotator.core.retry import RetryPolicy
from rotator.core.revocation_rule import Claim, check_revocable
from tests.e2e.test_e2e import wait_out_grace
from tests.harness import Scenario, check_invariants, make_scenario


def _edit_payload(sc: Scenario, **changes: Any) -> None:
    """What a person with write access to the KV path can do: a new version with edited fields."""
    client = hvac.Client(url=sc.vault_url, token=sc.vault_token)
    payload = {k: v for k, v in sc.current().items() if k != "version"}
    payload.update(changes)
    client.secrets.kv.v2.create_or_update_secret(path=sc.kv_path, secret=payload, mount_point="secret")


def _revocations(sc: Scenario) -> dict[str, tuple[str, int]]:
    return {r[0]: (r[1], r[2]) for r in sc.journal_rows("SELECT token_id, state, attempts FROM revocations")}


def _set_attempts(sc: Scenario, rounds: int) -> None:
    """Every revocation row's rounds counted so far, written as another process would."""
    conn = sqlite3.connect(sc.journal_path, isolation_level=None)
    try:
        conn.execute("UPDATE revocations SET attempts = ?", (rounds,))
    finally:
        conn.close()


# -- the rule itself -------------------------------------------------------------------------------


def test_the_rule_needs_the_record_and_the_issuer_s_tag() -> None:
    now = datetime.now(UTC)
    tokens = [TokenInfo("t1", "rotator:p:run1"), TokenInfo("t2", "team B's token"), TokenInfo("t3", "rotator:p:run10")]
    assert check_revocable(Claim("t1", "p", minted_by=["run1"]), tokens, [], now)
    with pytest.raises(NeedsAttention, match="not in rotator's record"):
        check_revocable(Claim("t2", "p"), tokens, [], now)
    with pytest.raises(NeedsAttention, match="does not carry"):
        check_revocable(Claim("t2", "p", minted_by=["run1"]), tokens, [], now)
    with pytest.raises(NeedsAttention, match="does not carry"):  # run1 is a prefix of run10, not its tag
        check_revocable(Claim("t3", "p", minted_by=["run1"]), tokens, [], now)
    with pytest.raises(NeedsAttention, match="still current"):
        check_revocable(Claim("t1", "p", minted_by=["run1"]), tokens, ["primary"], now)
    assert check_revocable(Claim("t2", "p", bootstrapped=True), tokens, [], now)
    assert not check_revocable(Claim("gone", "p", minted_by=["run1"]), tokens, [], now)
    assert not check_revocable(Claim("gone", "p"), tokens, [], now), "nothing to revoke: no refusal needed"


def test_where_the_listing_may_leave_tokens_out_an_unlisted_token_is_looked_up_and_judged_like_any() -> None:
    """InfluxDB v2 lists only what the credential may read: "not listed" proves nothing there, so
    the token is looked up by id and the rule judges what the issuer says of it (its tag included):
    gone is nothing to do; another org's token without the run's tag is refused, not deactivated."""
    now = datetime(2026, 3, 1, tzinfo=UTC)
    listed = [TokenInfo("t1", "rotator:p:run1")]

    class Partial:
        listing_is_complete = False
        known = {"hidden": TokenInfo("hidden", "rotator:p:run1"), "foreign": TokenInfo("foreign", "team B's token")}
        asked: list[str] = []

        def token_info(self, token_id: str, credential: Any) -> TokenInfo | None:
            self.asked.append(token_id)
            return self.known.get(token_id)

    issuer = Partial()
    claim = Claim("hidden", "p", minted_by=["run1"])
    assert check_revocable(claim, with_unlisted(issuer, listed, "hidden", None), [], now)
    assert not check_revocable(Claim("gone", "p", minted_by=["run1"]), with_unlisted(issuer, listed, "gone", None),
                               [], now)  # fmt: skip
    with pytest.raises(NeedsAttention, match="does not carry"):
        check_revocable(Claim("foreign", "p", minted_by=["run1"]), with_unlisted(issuer, listed, "foreign", None),
                        [], now)  # fmt: skip
    with pytest.raises(NeedsAttention, match="still current"):
        check_revocable(claim, with_unlisted(issuer, listed, "hidden", None), ["primary"], now)
    assert with_unlisted(issuer, listed, "t1", None) is listed, "listed: not looked up"
    assert issuer.asked == ["hidden", "gone", "foreign", "hidden"]
    complete = type("Complete", (), {"token_info": Partial.token_info})()
    assert with_unlisted(complete, listed, "hidden", None) is listed, "a complete listing decides"
    assert not check_revocable(claim, listed, [], now)


def test_a_bootstrapped_id_given_to_a_newer_token_is_not_that_token() -> None:
    """Where ids are names a person chose (InfluxDB 3 named tokens), the bootstrapped name may be
    deleted and given to a new token during the grace period: a token created after rotator recorded
    the id is not the recorded one. The issuer's clock may run ahead by CLOCK_SLACK."""
    from rotator.core.revocation_rule import CLOCK_SLACK

    recorded = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    now = recorded + timedelta(days=2)
    claim = Claim("grafana", "p", bootstrapped=True, recorded_at=recorded)
    older = [TokenInfo("grafana", "made by a person", recorded - timedelta(days=30))]
    skewed = [TokenInfo("grafana", "made by a person", recorded + CLOCK_SLACK)]
    newer = [TokenInfo("grafana", "made by a person", recorded + CLOCK_SLACK + timedelta(seconds=1))]
    undated = [TokenInfo("grafana", "made by a person")]
    assert check_revocable(claim, older, [], now) and check_revocable(claim, skewed, [], now)
    assert check_revocable(claim, undated, [], now), "an issuer that gives no creation time: the id decides"
    with pytest.raises(NeedsAttention, match="after rotator recorded it at bootstrap .* another token under the same"):
        check_revocable(claim, newer, [], now)
    assert check_revocable(claim._replace(recorded_at=None), newer, [], now), "a claim without the time (as before)"
    naive = [TokenInfo("grafana", "an issuer plugin's naive time", (recorded + timedelta(days=1)).replace(tzinfo=None))]
    with pytest.raises(NeedsAttention, match="another token under the same"):  # taken as UTC, no TypeError
        check_revocable(claim, naive, [], now)


# -- (b) a store payload's token_id is a claim, never an order ------------------------------------


def test_an_edited_payload_token_id_never_gets_another_team_s_token_revoked(tmp_path: Path, openbao: Any,
                                                                          fake_influxctl: Any) -> None:
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=1)
    _, victim = sc.fake.add_token("team B's CI token")
    _edit_payload(sc, token_id=victim)  # the value is still the bootstrap token's
    proc = sc.cli("rotate", sc.policy)
    assert proc.returncode == 0, proc.stderr
    wait_out_grace(sc)
    proc = sc.cli("revoke-expired")
    assert sc.fake.token_by_id(victim)["revoked_at"] is None, "another team's token was revoked"
    assert proc.returncode == 4, (proc.returncode, proc.stdout, proc.stderr)
    assert "not in rotator's record" in proc.stdout
    assert _revocations(sc)[victim][0] == "failed"
    events = sc.journal_rows("SELECT detail FROM events WHERE step = 'revoke_old' AND result = 'failed'")
    assert events and json.loads(events[0][0]).get("needs_attention") is True
    # The next run does not retry it: a refused claim waits for a person. Nor does --retry-failed get it
    # revoked: the claim is checked again and refused again.
    assert sc.cli("revoke-expired").returncode == 0
    assert sc.fake.token_by_id(victim)["revoked_at"] is None
    proc = sc.cli("revoke-expired", "--retry-failed", sc.policy)
    assert proc.returncode == 4 and "not in rotator's record" in proc.stdout, proc.stdout + proc.stderr
    assert sc.fake.token_by_id(victim)["revoked_at"] is None and _revocations(sc)[victim][0] == "failed"
    # Its owners revoke it themselves (docs: "revoke it yourself"); the retry then finds it gone and
    # closes the row, dismissed (rotator revoked nothing, and it was never rotator's: not "done"):
    # nothing else is revoked, and status is clear again.
    sc.fake.revoke(victim)
    proc = sc.cli("revoke-expired", "--retry-failed", sc.policy)
    assert proc.returncode == 0 and f"token {victim}: not revoked, revocation dismissed" in proc.stdout, \
        proc.stdout + proc.stderr
    assert _revocations(sc)[victim][0] == "dismissed"
    assert sc.cli("status").returncode == 0


def test_an_edited_payload_token_id_the_issuer_never_had_is_not_reported_as_revoked(
        tmp_path: Path, openbao: Any, fake_influxctl: Any) -> None:
    """The payload names an id the issuer never had and rotator never minted nor bootstrapped. Its
    revocation was recorded done ("revoked (already gone at the issuer)"), and the report showed it
    done and confirmed by the issuer: evidence of a revocation that never happened, of a token that
    was never rotator's. It is closed as dismissed, with the reason, flagged needs_attention in the
    audit chain; the journal's own revocation (the token rotator published last) is done as before."""
    from rotator.core import audit_chain
    from rotator.observe import report
    from tests.harness import offline_policy

    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=1)
    bogus = "00000000-0000-4000-8000-000000000bad"
    _edit_payload(sc, token_id=bogus)
    assert sc.cli("rotate", sc.policy).returncode == 0
    wait_out_grace(sc)
    proc = sc.cli("revoke-expired")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"token {bogus}: not revoked, revocation dismissed" in proc.stdout, proc.stdout
    assert "already gone" not in proc.stdout and f"token {sc.bootstrap_id}: revoked" in proc.stdout
    assert "not one rotator minted or bootstrapped" in proc.stderr, "a warning is logged"
    assert _revocations(sc)[bogus][0] == "dismissed" and _revocations(sc)[sc.bootstrap_id][0] == "done"
    assert sc.fake.token_by_id(sc.bootstrap_id)["revoked_at"] is not None
    [(result, text)] = sc.journal_rows("SELECT result, detail FROM events WHERE step = 'revoke_old' "
                                       "AND detail LIKE ?", f"%{bogus}%")
    detail = json.loads(text)
    assert result == "dismissed" and detail["needs_attention"] is True and detail["automatic"] is True
    assert "the issuer has no active token under that id: nothing revoked" in detail["reason"]
    assert sc.journal_rows("SELECT state FROM runs WHERE kind = 'rotate'") == [("done",)], "its run is finished"
    assert sc.cli("status", "--check", sc.policy).returncode == 0

    data = json.loads(sc.cli("report", "--format", "json").stdout)
    [row] = [r for p in data["policies"] for r in p["revocations"] if r["token_id"] == bogus]
    assert row["state"] == "dismissed" and row["confirmed_by_issuer"] is False, row
    assert "nothing revoked" in row["note"] and "payload may have been edited" in row["note"], row
    journal = open_journal(f"sqlite:///{sc.journal_path}")
    try:
        assert audit_chain.verify(journal).ok
        now = datetime.now(UTC)
        evidence = report.build(journal, [offline_policy(tmp_path, sc.policy)], now - timedelta(days=1),
                                now + timedelta(minutes=1), now)
        assert evidence.revocations_not_in_chain == [], "the dismissal is backed by its chained event"
    finally:
        journal.close()


def test_a_payload_edited_between_plan_and_revoke_changes_nothing_that_is_revoked(
        tmp_path: Path, openbao: Any, fake_influxctl: Any) -> None:
    """Run 1 publishes A and schedules the bootstrap token; the payload is then edited to name a
    victim. The journal's revocation (the bootstrap token) goes ahead; the victim, which the
    next run reads as "old", is refused. A, which the journal published last and which no store
    names after run 2, is retired with it (invariant 2: no orphan): its tag proves it rotator's."""
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=1)
    assert sc.cli("rotate", sc.policy).returncode == 0
    minted = sc.current()["token_id"]
    _, victim = sc.fake.add_token("team B's dashboard token")
    _edit_payload(sc, token_id=victim)
    wait_out_grace(sc)
    assert sc.cli("revoke-expired").returncode == 0
    assert sc.fake.token_by_id(sc.bootstrap_id)["revoked_at"] is not None, "the journal's own revocation"
    assert sc.cli("rotate", sc.policy).returncode == 0
    wait_out_grace(sc)
    proc = sc.cli("revoke-expired")
    assert proc.returncode == 4, proc.stderr
    assert sc.fake.token_by_id(victim)["revoked_at"] is None
    assert sc.fake.token_by_id(minted)["revoked_at"] is not None, "A: rotator's, replaced everywhere"


def test_a_journal_revocation_of_a_token_without_the_run_s_tag_is_refused(
        tmp_path: Path, openbao: Any, fake_influxctl: Any) -> None:
    """The journal alone is not enough: the issuer must show the run's tag in the token's description."""
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=1)
    _, victim = sc.fake.add_token("team B's token")
    # A journal whose run claims to have minted the victim (a restored backup, a bug, a hand edit).
    assert sc.cli("rotate", sc.policy).returncode == 0
    run_id = sc.journal_rows("SELECT run_id FROM runs WHERE kind = 'rotate'")[0][0]
    import sqlite3

    with sqlite3.connect(sc.journal_path) as db:
        db.execute("INSERT INTO runs (run_id, policy, kind, state, started_at, updated_at, new_token_id) "
                   "VALUES ('forged00', ?, 'rotate', 'done', '2026-01-01T00:00:00.000000Z', "
                   "'2026-01-01T00:00:00.000000Z', ?)", (sc.policy, victim))
        db.execute("INSERT INTO revocations (policy, token_id, run_id, reason, due_at, state) "
                   "VALUES (?, ?, ?, 'superseded', '2026-01-01T00:00:00.000000Z', 'pending')",
                   (sc.policy, victim, run_id))
    wait_out_grace(sc)
    proc = sc.cli("revoke-expired")
    assert proc.returncode == 4
    assert "does not carry rotator:mgmt:forged00" in proc.stdout
    assert sc.fake.token_by_id(victim)["revoked_at"] is None
    assert sc.fake.token_by_id(sc.bootstrap_id)["revoked_at"] is not None, "the true revocation went ahead"


# -- issue 15 item 2: a failing revocation backs off, counts rounds, then fails and alerts ----------


def _engine(sc: Scenario, clock: FakeClock) -> Engine:
    config = load_config(sc.config)
    return Engine(config.policies[0], open_journal(config.journal_url()), clock=clock,
                  retry=RetryPolicy(1, 0.01, 0.02))


@pytest.mark.parametrize("outage", ["forbidden", "down"])
def test_a_revocation_whose_store_read_fails_backs_off_and_finally_fails(
        tmp_path: Path, openbao: Any, fake_influxctl: Any, outage: str) -> None:
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=1, attempts=1)
    assert sc.cli("rotate", sc.policy).returncode == 0
    # Rounds a minute apart, so that the second run below comes before the next one even on a slow machine.
    sc.config.write_text(sc.config.read_text().replace('base_delay = "1s"', 'base_delay = "30s"')
                         .replace('max_delay = "2s"', 'max_delay = "60s"'))
    wait_out_grace(sc)
    if outage == "forbidden":  # Vault answers 403: the rotator's token was revoked
        limited = openbao.create_token("default", ttl="1h")
        (sc.dir / "vault-token").write_text(limited)
    else:  # Vault down: nothing listens at the address any more
        sc.config.write_text(sc.config.read_text().replace(sc.vault_url, "http://127.0.0.1:9"))
    proc = sc.cli("revoke-expired")
    assert proc.returncode == 0 and "postponed" in proc.stdout, (proc.returncode, proc.stdout, proc.stderr)
    assert _revocations(sc)[sc.bootstrap_id] == ("pending", 1), "the failed store read counts a round"
    next_try = sc.journal_rows("SELECT next_try_at FROM revocations")[0][0]
    assert next_try is not None
    # Run again at once: not due yet (this was the hot loop: 153 tries a second with a 403).
    proc = sc.cli("revoke-expired")
    assert _revocations(sc)[sc.bootstrap_id] == ("pending", 1), proc.stdout
    retries = sc.journal_rows("SELECT COUNT(*) FROM events WHERE step = 'revoke_old' AND result = 'retry'")
    assert retries[0][0] == 1
    # Rounds go on with the clock; past the bound the revocation fails and alerts.
    events: list[dict[str, Any]] = []
    clock = FakeClock(datetime.now(UTC))
    engine = _engine(sc, clock)
    engine.listeners.append(events.append)
    for _ in range(MAX_REVOCATION_ROUNDS + 3):
        clock.advance(timedelta(minutes=10))
        engine.revoke_due()
    assert _revocations(sc)[sc.bootstrap_id] == ("failed", MAX_REVOCATION_ROUNDS)
    assert [e["result"] for e in events if e["step"] == "revoke_old"][-1] == "failed"
    assert sc.fake.token_by_id(sc.bootstrap_id)["revoked_at"] is None
    check_invariants(sc, settled=False)

    # The same command says, every time, that the revocation gave up and the token is still valid (its
    # exit code is its own run's: `status` exits 4 for this), until --retry-failed tries it again:
    # while the cause lasts it stays failed, one round more.
    proc = sc.cli("revoke-expired")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"token {sc.bootstrap_id}: an earlier revocation gave up and is not retried by itself" in proc.stdout
    assert f"rotator revoke-expired --retry-failed {sc.policy}" in proc.stdout
    # (as a revocation refused at once leaves it: failed after one round, not after the bound)
    engine.journal.close()
    _set_attempts(sc, 1)
    proc = sc.cli("revoke-expired", "--retry-failed", sc.policy)
    assert proc.returncode == 4 and "revocation failed" in proc.stdout, proc.stdout + proc.stderr
    assert _revocations(sc)[sc.bootstrap_id] == ("failed", 2)
    # an hourly --retry-failed over a cause that lasts: rounds go on counting, the backoff stays bounded
    _set_attempts(sc, 1030)
    proc = sc.cli("revoke-expired", "--retry-failed", sc.policy)
    assert proc.returncode == 4 and "revocation failed" in proc.stdout, proc.stdout + proc.stderr
    assert _revocations(sc)[sc.bootstrap_id] == ("failed", 1031)
    # Fix the cause, run it again: revoked, recorded, and nothing left to say.
    if outage == "forbidden":
        (sc.dir / "vault-token").write_text(openbao.root_token)
    else:
        sc.config.write_text(sc.config.read_text().replace("http://127.0.0.1:9", sc.vault_url))
    proc = sc.cli("revoke-expired", "--retry-failed", sc.policy)
    assert proc.returncode == 0 and f"token {sc.bootstrap_id}: revoked" in proc.stdout, proc.stdout + proc.stderr
    assert _revocations(sc)[sc.bootstrap_id][0] == "done"
    assert sc.fake.token_by_id(sc.bootstrap_id)["revoked_at"] is not None
    proc = sc.cli("revoke-expired")
    assert proc.returncode == 0 and "nothing to do" in proc.stdout, proc.stdout
    assert sc.cli("status").returncode == 0
    check_invariants(sc, settled=True)


# -- where the issuer's listing may leave tokens out (InfluxDB v2): the holder check comes first ----


class _PartialIssuer:
    """An issuer whose listing shows nothing (the credential may read no user) and that answers
    lookups by id: every call is recorded, so a test sees what was asked before a decision."""

    listing_is_complete = False
    call_timeout_seconds = 5.0

    def __init__(self, known: dict[str, TokenInfo]) -> None:
        self.known, self.calls = known, []  # type: list[str]

    def list_tokens(self, credential: Any) -> list[TokenInfo]:
        self.calls.append("list")
        return []

    def token_info(self, token_id: str, credential: Any) -> TokenInfo | None:
        self.calls.append(f"info {token_id}")
        return self.known.get(token_id)

    def revoke(self, token_id: str, credential: Any) -> None:
        self.calls.append(f"revoke {token_id}")


class _Holding:
    location = "memory"

    def __init__(self, token_id: str | None) -> None:
        from rotator.core.contracts import StoreState, TokenRecord
        from rotator.core.secret import Secret

        record = None if token_id is None else TokenRecord(Secret(f"value-of-{token_id}-0123456789"), token_id,
                                                           "influxdb2", "p", datetime(2026, 3, 1, tzinfo=UTC), None)
        self.state = StoreState("1" if record else None, record is not None, record)

    def read_current(self) -> Any:
        return self.state


def _engine_of(tmp_path: Path, issuer: Any, store: tuple[str, Any], *, schedule: str, grace: str | None = None,
               now: datetime = datetime(2026, 3, 2, tzinfo=UTC)) -> Engine:
    """An engine of policy "p" (an influxctl-management policy) on ``issuer`` and one in-memory store,
    its journal in ``tmp_path``, at the fake time ``now``."""
    policy_file = tmp_path / "rotator.toml"
    policy_file.write_text(f"""
[rotator]
journal = "{tmp_path / 'journal.db'}"
[[policy]]
name = "p"
schedule = "{schedule}"
{f'grace = "{grace}"' if grace else ""}
[policy.issuer]
type = "influxctl-management"
[policy.issuer.profile]
product = "clustered"
host = "cluster.test.invalid"
[[policy.store]]
type = "influxctl-profile"
config = "config.toml"
""")
    config = load_config(policy_file)
    return Engine(config.policies[0], open_journal(config.journal_url()), issuer=issuer, stores=[store],
                  clock=FakeClock(now), retry=RetryPolicy(1, 0.01, 0.02))


def _partial_engine(tmp_path: Path, issuer: _PartialIssuer, held: str | None) -> Engine:
    engine = _engine_of(tmp_path, issuer, ("primary", _Holding(held)), schedule="1h", grace="10m")
    engine._fence = 1  # the revocation is fenced: as under the policy's lease
    engine.journal.confirm_lease = lambda *args, **kwargs: None  # type: ignore[method-assign]
    return engine


def test_a_token_a_store_holds_is_refused_before_the_issuer_is_asked_anything(tmp_path: Path) -> None:
    """Invariant 1 decides alone: a store holding the token stops its revocation before the listing
    and before the lookup by id that an incomplete listing calls for (a lookup that fails or answers
    oddly must not matter). A token no store holds is looked up by id, judged and revoked."""
    hidden = TokenInfo("0000000000000abc", "rotator:p:run1")
    issuer = _PartialIssuer({hidden.token_id: hidden})
    claim = Claim(hidden.token_id, "p", minted_by=["run1"])
    engine = _partial_engine(tmp_path, issuer, held=hidden.token_id)
    with pytest.raises(NeedsAttention, match="still current in store"):
        engine._safe_revoke(claim, None)
    assert issuer.calls == [], "nothing asked of the issuer"

    engine.stores = [("primary", _Holding(None))]
    assert engine._safe_revoke(claim, None)
    assert issuer.calls == ["list", f"info {hidden.token_id}", f"revoke {hidden.token_id}"]


# -- bootstrap: the id against the value, by what the issuer's listing shows of values --------------


class _ListingIssuer:
    """Lists ``infos`` and accepts any token; it never revokes (bootstrap must not)."""

    call_timeout_seconds = 5.0

    def __init__(self, infos: list[TokenInfo]) -> None:
        self.infos = infos

    def verify(self, token: Any) -> None:
        return None

    def list_tokens(self, credential: Any) -> list[TokenInfo]:
        return list(self.infos)

    def revoke(self, token_id: str, credential: Any) -> None:
        raise AssertionError("bootstrap revoked something")


class _MemoryStore:
    location = "memory"

    def __init__(self) -> None:
        from rotator.core.contracts import StoreState

        self.state = StoreState(None, False, None)

    def read_current(self) -> Any:
        return self.state

    def publish(self, record: Any, expected_version: str | None) -> str:
        from rotator.core.contracts import StoreState

        self.state = StoreState("1", True, record)
        return "1"


@pytest.mark.parametrize(("listed", "outcome"), [
    ({"a": "M.V1.aaaa", "b": "M.V1.bbbb"}, "published"),
    ({"a": "M.V1.zzzz", "b": "M.V1.bbbb"}, "refused, naming c"),  # the file's token is listed as c
    ({"a": "M.V1.zzzz", "b": "M.V1.yyyy"}, "published, no match"),  # no listed token matches: not refused
    ({"a": None, "b": None}, "published, nothing shown"),
], ids=["prefix-matches", "another-token-s", "no-listed-match", "no-prefix"])
def test_bootstrap_refuses_an_id_only_when_the_listing_shows_the_file_s_token_as_another(
        tmp_path: Path, listed: dict[str, str | None], outcome: str, caplog: pytest.LogCaptureFixture) -> None:
    from rotator.core.errors import ConfigError
    from rotator.core.secret import Secret

    infos = [TokenInfo(token_id, "human", value_prefix=prefix) for token_id, prefix in listed.items()]
    if outcome.startswith("refused"):
        infos.append(TokenInfo("c", "another", value_prefix="M.V1.aaaa"))
    store = _MemoryStore()
    engine = _engine_of(tmp_path, _ListingIssuer(infos), ("primary", store), schedule="1h")
    value = Secret("M.V1.aaaa0123456789abcdef")
    if outcome.startswith("refused"):
        with pytest.raises(ConfigError, match="by the issuer's listing, the file holds token c") as caught:
            engine.bootstrap(value, "a", None)
        assert caught.value.hint == "run the same command with --token-id c"
        assert store.state.record is None, "nothing written"
        return
    engine.bootstrap(value, "a", None)
    assert store.state.record is not None and store.state.record.token_id == "a"
    warned = [r.getMessage() for r in caplog.records if "cannot check that it is the token" in r.getMessage()]
    assert warned == ([] if outcome == "published" else [
        f"the issuer shows {'no match' if 'no match' in outcome else 'nothing'} of token a's value, so rotator "
        "cannot check that it is the token being bootstrapped; it is the token rotator revokes after the first "
        "rotation's grace: make sure the id is this token's"])
    assert "0123456789abcdef" not in caplog.text


@pytest.mark.parametrize("retry_failed", [True, False], ids=["retry-failed", "plain"])
def test_a_revocation_that_gives_up_in_this_run_is_tried_and_reported_once(
        tmp_path: Path, openbao: Any, fake_influxctl: Any, retry_failed: bool) -> None:
    """The store is rolled back to the bootstrapped token, so its revocation is refused at once and
    marked failed in this run's pending pass. --retry-failed does not try it a second time in the same
    run (it reads the failed ones before that pass), and neither form calls it 'an earlier' failure."""
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=1, attempts=1)
    old_payload = {k: v for k, v in sc.current().items() if k != "version"}
    assert sc.cli("rotate", sc.policy).returncode == 0
    sc.vault().secrets.kv.v2.create_or_update_secret(path=sc.kv_path, secret=old_payload, mount_point="secret")
    wait_out_grace(sc)
    proc = sc.cli("revoke-expired", *(["--retry-failed"] if retry_failed else []), sc.policy)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert proc.stdout.count(f"token {sc.bootstrap_id}:") == 1, proc.stdout
    assert "gave up after 1 round:" in proc.stdout
    assert _revocations(sc)[sc.bootstrap_id] == ("failed", 1)
    assert sc.fake.token_by_id(sc.bootstrap_id)["revoked_at"] is None, "a store holds it"


def test_a_bootstrapped_token_ages_from_its_creation_at_the_issuer(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A person's token created two years ago is two years old on the day it is bootstrapped. The
    journal keeps when the issuer created it, and the schedule, ``status``, compliance and the metrics
    count from then. Before, they counted from the bootstrap: the token showed as new and compliant,
    and its first rotation came a whole schedule later. A token older than max_age is published (it is
    what works now), with a warning that its rotation is due now."""
    from rotator.core.due import due_now
    from rotator.core.secret import Secret
    from rotator.observe.compliance import policy_compliance
    from rotator.observe.status import policy_status

    now = datetime(2026, 3, 2, tzinfo=UTC)
    value = Secret("M.V1.aaaa0123456789abcdef")
    store = _MemoryStore()
    for days, warned in ((730, True), (3, False)):
        created = now - timedelta(days=days)
        issuer = _ListingIssuer([TokenInfo(f"a{days}", "human", created_at=created, value_prefix="M.V1.aaaa")])
        engine = _engine_of(tmp_path, issuer, ("primary", store), schedule="30d", now=now)
        caplog.clear()
        engine.bootstrap(value, f"a{days}", None, replace=days == 3)
        assert store.state.record is not None and store.state.record.token_id == f"a{days}"
        text = " ".join(r.getMessage() for r in caplog.records)
        assert ("longer than the policy's max_age" in text) is warned, text
        assert ("its rotation is due now" in text and "`rotator rotate p`" in text) is warned, text
        last = engine.journal.last_success("p")
        assert last is not None and (last.published_at, last.token_since) == (now, created)
        due = due_now(engine.policy, engine.journal, engine.clock)
        assert due.due is warned and due.too_old is warned, due
        assert due.next_due == created + timedelta(days=30), due  # in the past while it is overdue
        status = policy_status(engine.policy, engine.journal, now)
        assert status.to_json()["age_s"] == days * 86400 and status.to_json()["rotated_at"] is not None
        assert status.compliance is not None and status.compliance.compliant is not warned
        assert policy_compliance(engine.policy, engine.journal, now).compliant is not warned
        if warned:
            assert "created 730d ago (published 0s ago)" in status.reason(), status.reason()
        engine.journal.close()


def test_a_failed_revocation_of_a_token_that_must_stay_valid_is_dismissed_with_its_reason(
        tmp_path: Path, openbao: Any, fake_influxctl: Any) -> None:
    """A revocation that gave up on a token that must stay valid kept `status` at exit 4 for good: no
    command closed it (only SQL, which the report then flags). `revoke-expired --dismiss` closes it,
    audited with its reason; the token is not touched, and the same command again changes nothing.
    Wrong uses are refused with exit 2 and change nothing."""
    from rotator.core import audit_chain
    from rotator.core.journal import ts
    from rotator.observe import report
    from tests.harness import offline_policy

    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=1, attempts=1)
    old_payload = {k: v for k, v in sc.current().items() if k != "version"}
    assert sc.cli("rotate", sc.policy).returncode == 0
    rotated = sc.current()["token_id"]
    sc.vault().secrets.kv.v2.create_or_update_secret(path=sc.kv_path, secret=old_payload, mount_point="secret")
    wait_out_grace(sc)
    assert sc.cli("revoke-expired", sc.policy).returncode == 4
    assert _revocations(sc)[sc.bootstrap_id] == ("failed", 1)
    plain = sc.cli("revoke-expired", sc.policy)
    assert f"`rotator revoke-expired --dismiss {sc.bootstrap_id} --reason TEXT {sc.policy}`" in plain.stdout
    assert sc.cli("status", "--check", sc.policy).returncode == 4

    reason = "restored on purpose: the ingest team still uses it"
    for args, says in (
        (["--dismiss", sc.bootstrap_id, sc.policy], "--dismiss needs --reason"),
        (["--dismiss", sc.bootstrap_id, "--reason", reason], "exactly one policy"),
        (["--dismiss", sc.bootstrap_id, "--reason", reason, "--retry-failed", sc.policy], "exclude each other"),
        (["--dismiss", "no-such-token", "--reason", reason, sc.policy], "has no revocation of token no-such-token"),
        (["--dismiss", rotated, "--reason", reason, sc.policy], "has no revocation of token"),
        (["--reason", reason, sc.policy], "--reason goes with --dismiss"),
        (["--dismiss", sc.bootstrap_id, "--reason", "two\nlines", sc.policy], "one line"),
    ):
        proc = sc.cli("revoke-expired", *args)
        assert proc.returncode == 2 and says in proc.stderr, (args, proc.stderr)
        assert _revocations(sc)[sc.bootstrap_id] == ("failed", 1), args

    proc = sc.cli("revoke-expired", "--dismiss", sc.bootstrap_id, "--reason", reason, sc.policy)
    assert proc.returncode == 0, proc.stderr
    assert f"token {sc.bootstrap_id}: revocation dismissed" in proc.stdout and reason in proc.stdout
    assert _revocations(sc)[sc.bootstrap_id] == ("dismissed", 1)
    assert sc.fake.token_by_id(sc.bootstrap_id)["revoked_at"] is None, "the token is not touched"
    assert sc.journal_rows("SELECT state FROM runs WHERE kind = 'rotate'") == [("done",)], "its run is finished"
    inventory = json.loads(sc.cli("inventory", "--output", "json").stdout)
    [listed] = [t for t in inventory["tokens"] if t["token_id"] == sc.bootstrap_id]
    assert listed["class"] == "managed" and "revocation dismissed" in listed["reason"], listed
    again = sc.cli("revoke-expired", "--dismiss", sc.bootstrap_id, "--reason", reason, sc.policy)
    assert again.returncode == 0 and "already dismissed" in again.stdout, again.stdout + again.stderr
    assert sc.cli("status", "--check", sc.policy).returncode == 0
    status = json.loads(sc.cli("status", "--output", "json", sc.policy).stdout)[0]
    assert status["failed_revocations"] == 0 and not status["needs_attention"], status
    plain = sc.cli("revoke-expired", "--retry-failed", sc.policy)
    assert plain.returncode == 0 and sc.bootstrap_id not in plain.stdout, plain.stdout
    assert sc.fake.token_by_id(sc.bootstrap_id)["revoked_at"] is None, "never tried again"

    events = sc.journal_rows("SELECT result, detail FROM events WHERE step = 'revoke_old' ORDER BY seq")
    assert [r for r, _ in events].count("dismissed") == 1
    detail = json.loads([d for r, d in events if r == "dismissed"][0])
    assert detail["reason"] == reason and detail["token_id"] == sc.bootstrap_id and detail["last_error"]
    journal = open_journal(f"sqlite:///{sc.journal_path}")
    try:
        assert audit_chain.verify(journal).ok
        now = datetime.now(UTC)
        evidence = report.build(journal, [offline_policy(tmp_path, sc.policy)], now - timedelta(days=1),
                                now + timedelta(minutes=1), now)
        [p] = evidence.policies
        [row] = [r for r in p.revocations if r.token_id == sc.bootstrap_id]
        assert (row.state, row.note) == ("dismissed", reason)
        assert f"dismissed ({reason})" in report.render(evidence, "html")
        assert "0 / 0 / 0 (1 dismissed)" in report.render(evidence, "html"), "the summary counts it"
        [summary] = [r for r in csv.DictReader(io.StringIO(report.render(evidence, "csv"))) if r["record"] == "summary"]
        assert (summary["revocations_dismissed"], summary["revocations_failed"]) == ("1", "0"), "so does the CSV's"
        assert p.summary()["revocations_dismissed"] == 1 and evidence.revocations_not_in_chain == []
        # A row dismissed by hand (SQL) has no chained event: the report says so.
        (run_id,) = sc.journal_rows("SELECT run_id FROM runs WHERE kind = 'rotate'")[0]
        with sqlite3.connect(sc.journal_path) as conn:
            conn.execute("INSERT INTO revocations (policy, token_id, run_id, reason, due_at, state, attempts, done_at) "
                         "VALUES (?, ?, ?, 'superseded', ?, 'dismissed', 1, ?)",
                         (sc.policy, rotated, run_id, ts(now - timedelta(hours=1)), ts(now)))
        evidence = report.build(journal, [offline_policy(tmp_path, sc.policy)], now - timedelta(days=1),
                                now + timedelta(minutes=1), now)
        assert evidence.revocations_not_in_chain == [f"{sc.policy}/{rotated}"], evidence.revocations_not_in_chain
    finally:
        journal.close()


def test_the_revocation_of_a_late_mint_never_hides_the_lost_lease(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """`_revoke_own_mint` runs while a LeaseLost is on its way to the caller (which audits it): neither
    a failed revocation nor a journal that refuses the audit event may replace that error."""
    from rotator.core.contracts import TokenRecord
    from rotator.core.errors import JournalError, TransientError
    from rotator.core.journal import RunRecord
    from rotator.core.secret import Secret

    revoked: list[str] = []

    class Revoking(_ListingIssuer):
        def revoke(self, token_id: str, credential: Any) -> None:
            revoked.append(token_id)
            if len(revoked) == 1:
                raise TransientError("issuer down")

    now = datetime(2026, 3, 2, tzinfo=UTC)
    engine = _engine_of(tmp_path, Revoking([]), ("primary", _MemoryStore()), schedule="30d", now=now)
    engine.retry = RetryPolicy(1, 0.01, 0.02)
    run = RunRecord("r-late", "p", "minting", "rotate", now, now)
    minted = TokenRecord(Secret("M.V1.late0123456789abcdef"), "t-late", "influxctl-management", "p", now, None)

    def refuse(*_args: Any, **_kwargs: Any) -> None:
        raise JournalError("journal down")

    engine.journal.record_event = refuse  # type: ignore[method-assign]
    engine._revoke_own_mint(run, minted, None)  # the revocation fails, and so does its audit event
    engine._revoke_own_mint(run, minted, None)  # the revocation works; its audit event still fails
    assert revoked == ["t-late", "t-late"]
    text = caplog.text
    assert "could not revoke token t-late" in text and "could not journal the revocation of token t-late" in text
    assert "late0123456789abcdef" not in text
    engine.journal.close()


class _Restored(NamedTuple):
    engine: Engine
    issuer: Any
    person: Any
    clock: FakeClock
    value: str
    human: str
    human_record: Any
    first: Any


def _restored_after_a_rotation(tmp_path: Path) -> _Restored:
    """A person's token bootstrapped, replaced by a rotation, then current again (the older version
    restored with the backend's own tool, ``person``); its revocation pass, after grace, refused it
    (a store holds it) and marked it failed."""
    from rotator.core.secret import Secret
    from rotator.testing.memory import MemoryIssuer, MemoryStore

    issuer = MemoryIssuer()
    store = MemoryStore("p")
    engine = _engine_of(tmp_path, issuer, ("primary", store), schedule="1h", grace="10m")
    issuer.tokens.clock = engine.clock
    clock = engine.clock
    assert isinstance(clock, FakeClock)
    value, human = issuer.tokens.create("made by a person")
    engine.bootstrap(Secret(value), human, None)
    human_record = store.read_current().record
    clock.advance(timedelta(hours=1))
    first = engine.rotate()
    assert first.ok
    person = MemoryStore("p", store.backend)
    person.publish(human_record, person.read_current().version)
    clock.advance(timedelta(minutes=11))
    engine.revoke_due()
    assert {r.token_id: r.state for r in engine.journal.revocations("p")}[human] == "failed"
    return _Restored(engine, issuer, person, clock, value, human, human_record, first)


def test_a_dismissed_token_replaced_once_more_stays_valid_and_nothing_says_otherwise(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A token whose revocation a person dismissed can be current again (an older version restored)
    and be replaced once more. It stays valid, as the dismissal said: before, the rotation said "will
    be revoked after the grace period", its chained event named a due time, and a run with no other
    revocation waited in ``published`` for one that never came. Nor does an emergency rotation say
    "no revocation was due" of it."""
    from rotator.core.journal import RunState
    from rotator.core.secret import Secret

    engine, issuer, person, clock, value, human, human_record, _ = _restored_after_a_rotation(tmp_path)
    engine.dismiss_revocation(human, "team X still uses it")

    # Replaced once more; the token rotator published last is retired (it is no person's).
    clock.advance(timedelta(hours=1))
    plan = engine.rotate(dry_run=True).message
    assert f"revoke {human}" not in plan and f"token {human} would stay valid: its revocation was dismissed" in plan
    assert "the token rotator published last" in plan, plan
    caplog.clear()
    result = engine.rotate()
    assert any(r.getMessage().endswith(f"the token rotator published last is {result.also_revoked}: that one is "
                                       "revoked after grace") for r in caplog.records), caplog.text
    assert result.ok and result.also_revoked is not None, result
    assert f"token {human} will be revoked" not in result.message, result.message
    assert f"token {human} stays valid: its revocation was dismissed (team X still uses it)" in result.message
    assert f"token {result.also_revoked}, the token rotator published last" in result.message
    states = {r.token_id: r.state for r in engine.journal.revocations("p")}
    assert states == {human: "dismissed", result.also_revoked: "pending"}, states
    published = next(e for e in engine.journal.events("p") if e["step"] == "published")  # the newest
    assert published.get("revoke_old_at") is None and published["kept_dismissed"] == human, published
    [due] = [r.due_at for r in engine.journal.revocations("p") if r.token_id == result.also_revoked]
    assert published["also_revoke_at"] == str(due), "the chain still says when the other one is due"

    # Current again, and the token rotator published last is that token (bootstrapped again, as a
    # repair): the run that replaces it has nothing to revoke, and is done at once.
    clock.advance(timedelta(minutes=11))
    engine.revoke_due()
    person.publish(human_record, person.read_current().version)
    engine.bootstrap(Secret(value), human, None, replace=True, reason="back to the team's token")
    clock.advance(timedelta(hours=1))
    result = engine.rotate()
    assert result.ok and result.state == RunState.DONE and result.also_revoked is None, result
    assert result.message == (f"rotated; token {human} stays valid: its revocation was dismissed "
                              "(team X still uses it)"), result.message
    assert engine.journal.open_runs("p") == [] and not issuer.tokens.info(human).revoked_at  # type: ignore[union-attr]

    # An emergency asks for the token it replaces to be revoked now: it says why it is not.
    person.publish(human_record, person.read_current().version)
    engine.bootstrap(Secret(value), human, None, replace=True, reason="back again")
    clock.advance(timedelta(hours=1))
    with pytest.raises(NeedsAttention,
                       match=f"token {human}'s revocation was dismissed \\(team X still uses it\\)") as raised:
        engine.rotate(revoke_previous_now=True, reason="leaked")
    assert "never revokes a token whose revocation was dismissed" in (raised.value.hint or ""), raised.value.hint
    assert issuer.tokens.info(human).revoked_at is None  # type: ignore[union-attr]


def test_a_run_that_replaced_a_token_current_again_is_done_once_that_token_is_revoked(tmp_path: Path) -> None:
    """A token current again (an older version restored) and replaced once more keeps its revocation
    row, which keeps its first run's id. Only that run was finished when the revocation was done: the
    later run, with no other token to retire, stayed `published` for good."""
    from rotator.core.secret import Secret

    engine, _, _, clock, value, human, _, first = _restored_after_a_rotation(tmp_path)
    engine.bootstrap(Secret(value), human, None, replace=True, reason="back to the team's token")
    clock.advance(timedelta(hours=1))
    second = engine.rotate()  # replaces it once more: the row is pending again, with the first run's id
    assert second.ok and second.also_revoked is None, second
    [row] = [r for r in engine.journal.revocations("p") if r.token_id == human]
    assert (row.state, row.run_id) == ("pending", first.run_id)
    clock.advance(timedelta(minutes=11))
    assert engine.revoke_due() == [f"token {human}: revoked"]
    states = {r.run_id: r.state for r in engine.journal.runs("p", limit=10)}
    assert states[second.run_id] == "done", states
