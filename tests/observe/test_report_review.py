"""`rotator report` over pruned history, re-run bootstraps, policies removed from the file while their
token stayed valid, and the CSV's chain head: findings of a review, each with the journal that showed it."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.core import audit_chain
from rotator.core.journal import Journal, Revocation, RevocationState, RunRecord, RunState, open_journal, ts
from rotator.observe import report
from tests.harness import make_scenario, offline_policy
from tests.observe.test_report_tamper import _cli, _journal, _publish

DAY = 86400


def _daily_prunes(journal: Journal, t0: datetime, days: int) -> None:
    """The daemon's daily prune, keeping 400 days, run every day from ``t0`` on for ``days`` days."""
    for d in range(1, days):
        audit_chain.prune(journal, ts(t0 + timedelta(days=d)), ts(t0 + timedelta(days=d + 400)))


# ------------------------------------------------------------------ the maximum age over pruned history
def _a_token_over_max_age(tmp_path: Path) -> tuple[Journal, datetime]:
    """tokA bootstrapped at t0, tokB at day 10, current 90 days (max_age is 32 days), then a rotation
    every 30 days from day 130."""
    journal = open_journal(f"sqlite:///{tmp_path / 'journal.db'}")
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    _publish(journal, "r0", t0, "tokA", kind="bootstrap")
    _publish(journal, "r1", t0 + timedelta(days=10), "tokB", old="tokA")
    _publish(journal, "r2", t0 + timedelta(days=100), "tokC", old="tokB")
    for d in range(130, 400, 30):
        _publish(journal, f"r{d}", t0 + timedelta(days=d), f"tok{d}", old="x")
    return journal, t0


def test_a_period_in_pruned_history_keeps_its_verdict(tmp_path: Path) -> None:
    """A period (days 5 to 80) whose token current at its end (tokB, 70 days old then) was over max_age
    read compliant once daily prunes had deleted its events: only the newest pruned publication (day
    370) counted, so tokB's age was never measured, and the one inside summary (tokA, 10 days) was
    the period's maximum. Each checkpoint's last publication is a point of the timeline now."""
    journal, t0 = _a_token_over_max_age(tmp_path)
    pol = offline_policy(tmp_path, "p")
    start, end, now = t0 + timedelta(days=5), t0 + timedelta(days=80), t0 + timedelta(days=900)
    before = report.build(journal, [pol], start, end, now).policies[0]
    assert before.within_max_age is False and before.within_90d is True
    _daily_prunes(journal, t0, 460)
    assert audit_chain.verify(journal).ok
    after = report.build(journal, [pol], start, end, now).policies[0]
    assert after.within_max_age is False, (after.max_observed_age_s, after.pruned)
    assert after.within_90d is True and after.age_undecided is None
    assert abs((after.max_observed_age_s or 0) - 70 * DAY) <= 1, "tokB, from day 10 to the period's end"


def test_a_compliant_period_in_daily_pruned_history_stays_decided(tmp_path: Path) -> None:
    """Daily prunes leave one publication per checkpoint: every time is kept, and the verdict is the
    one made before the prune, yes (a rotation every 20 days)."""
    journal = open_journal(f"sqlite:///{tmp_path / 'journal.db'}")
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    _publish(journal, "r0", t0, "t0", kind="bootstrap")
    for i, d in enumerate(range(20, 300, 20), start=1):
        _publish(journal, f"r{i}", t0 + timedelta(days=d), f"t{i}", old=f"t{i - 1}")
    pol = offline_policy(tmp_path, "p")
    start, end, now = t0 + timedelta(days=30), t0 + timedelta(days=120), t0 + timedelta(days=900)
    before = report.build(journal, [pol], start, end, now).policies[0]
    _daily_prunes(journal, t0, 460)
    after = report.build(journal, [pol], start, end, now).policies[0]
    assert before.within_max_age is after.within_max_age is True
    assert after.max_age_bound_s is None and after.age_undecided is None
    assert abs((after.max_observed_age_s or 0) - 20 * DAY) <= 1


def test_a_period_ending_inside_a_range_of_several_pruned_publications_is_never_compliant(tmp_path: Path) -> None:
    """One prune deletes four publications (days 0, 10, 50, 60): its checkpoint keeps the last one's
    time, their count and the oldest token replaced (tokB, 40 days). A period from day 20 to day 55
    starts and ends inside that range: which tokens were current in it cannot be told, so the
    verdict is undecided with the reason, never yes (before the prune it was NO)."""
    journal = open_journal(f"sqlite:///{tmp_path / 'journal.db'}")
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    for i, d in enumerate((0, 10, 50, 60)):
        _publish(journal, f"r{i}", t0 + timedelta(days=d), f"tok{i}", old=f"tok{i - 1}" if i else None,
                 kind="rotate" if i else "bootstrap")
    _publish(journal, "r9", t0 + timedelta(days=200), "tok9", old="tok3")
    pol = offline_policy(tmp_path, "p")
    start, end, now = t0 + timedelta(days=20), t0 + timedelta(days=55), t0 + timedelta(days=300)
    assert report.build(journal, [pol], start, end, now).policies[0].within_max_age is False
    audit_chain.prune(journal, ts(t0 + timedelta(days=100)), ts(now))
    [checkpoint] = audit_chain.checkpoints(journal)
    assert checkpoint.detail["policies"]["p"]["rotations"] == 4
    evidence = report.build(journal, [pol], start, end, now)
    p = evidence.policies[0]
    assert p.within_max_age is None and p.within_90d is True, "40 days at most"
    assert p.max_age_bound_s is not None and abs(p.max_age_bound_s - 40 * DAY) <= 1
    assert p.age_undecided is not None and f"checkpoint seq {checkpoint.seq}" in p.age_undecided
    assert p.summary()["age_undecided"] == p.age_undecided
    [row] = [r for r in csv.DictReader(io.StringIO(report.render(evidence, "csv"))) if r["record"] == "summary"]
    assert row["within_max_age [PCI DSS 8.6.3 / 3.7.4]"] == "n/a" and "up to 40.0d" in row["note"]
    assert "up to 40.0d" in report.render(evidence, "html")
    # a period that holds the whole range: its oldest replaced token is the period's, decided
    whole = report.build(journal, [pol], t0 - timedelta(days=1), t0 + timedelta(days=100), now).policies[0]
    assert whole.within_max_age is False and whole.age_undecided is None


# ------------------------------------------------------------------ a bootstrap run again with the same token
def _bootstrapped_twice(tmp_path: Path) -> tuple[Journal, datetime]:
    """tokA bootstrapped at t0 (the issuer gives no creation time), the same bootstrap run again at day
    20, tokB rotated in at day 40."""
    journal = _journal(tmp_path)
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    _publish(journal, "b0", t0, "tokA", kind="bootstrap")
    _publish(journal, "b1", t0 + timedelta(days=20), "tokA", kind="bootstrap")
    _publish(journal, "r1", t0 + timedelta(days=40), "tokB", old="tokA")
    return journal, t0


def test_a_bootstrap_run_again_is_no_rotation_and_does_not_make_its_token_younger(tmp_path: Path) -> None:
    """The same bootstrap run again publishes the token already current: it counted as a rotation, and
    its token's age started again from it (20 days instead of 40, within max_age). Before and after a
    prune."""
    journal, t0 = _bootstrapped_twice(tmp_path)
    pol = offline_policy(tmp_path, "p")
    start, end, now = t0 - timedelta(days=1), t0 + timedelta(days=50), t0 + timedelta(days=50)
    evidence = report.build(journal, [pol], start, end, now)
    p = evidence.policies[0]
    assert p.summary()["rotations"] == 2 and p.republished == ["b1"]
    assert p.within_max_age is False and abs((p.max_observed_age_s or 0) - 40 * DAY) <= 1
    rows = {r["run_id"]: r for r in csv.DictReader(io.StringIO(report.render(evidence, "csv")))
            if r["record"] == "rotation"}
    assert "no rotation" in rows["b1"]["note"] and rows["b0"]["note"] == ""
    assert json.loads(report.render(evidence, "json"))["policies"][0]["republished_runs"] == ["b1"]
    audit_chain.prune(journal, ts(t0 + timedelta(days=45)), ts(now))
    [checkpoint] = audit_chain.checkpoints(journal)
    summary = checkpoint.detail["policies"]["p"]
    assert summary["rotations"] == 2 and summary["token_id"] == "tokB"
    assert abs(summary["max_token_age_seconds"] - 40 * DAY) <= 1
    p = report.build(journal, [pol], start, end, now).policies[0]
    assert p.within_max_age is False and abs((p.max_observed_age_s or 0) - 40 * DAY) <= 1


def test_rebootstrap_of_current_token(tmp_path: Path, openbao: Any, fake_influxctl: Any) -> None:
    """The same command run again (say after a timeout the operator could not read) counted as
    another rotation in the report: 3 where 1 published a token; and, where the issuer gives no
    creation time, status and the schedule took the token's age from the last of them. A bootstrap
    run again with the current token, held by every store, is done already: no run, nothing written."""
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=1)
    versions = len(sc.versions())
    for _ in range(2):
        first = sc.dir / "first-token"
        first.write_text(sc.bootstrap_value)
        proc = sc.cli("bootstrap", sc.policy, "--token-file", str(first), "--token-id", sc.bootstrap_id)
        first.unlink()
        assert proc.returncode == 0, proc.stderr
        assert f"token {sc.bootstrap_id} is bootstrapped already" in proc.stdout
        assert "nothing was written" in proc.stdout
    assert len(sc.versions()) == versions, "no store write"
    assert sc.journal_rows("SELECT COUNT(*) FROM runs WHERE kind = 'bootstrap'") == [(1,)]
    today = datetime.now(UTC).date()
    proc = sc.cli("report", "--from", str(today - timedelta(days=1)), "--to", str(today + timedelta(days=1)),
                  "--format", "json")
    [p] = json.loads(proc.stdout)["policies"]
    assert p["summary"]["rotations"] == 1 and p["summary"]["republished"] == 0, p["summary"]


# ------------------------------------------------------------------ a policy removed from the file
def _old_policy_bootstrapped(journal: Journal, at: datetime, token: str = "tokOLD") -> None:
    journal.begin_run(RunRecord(run_id="o0", policy="old", state=RunState.DONE, kind="bootstrap", started_at=at,
                                updated_at=at, old_token_id=None, new_token_id=token, published_at=at, finished_at=at))
    journal.record_event(at, "old", "o0", "bootstrap", "ok", {"token_id": token})


def test_a_removed_policy_whose_token_stayed_current_is_named(tmp_path: Path) -> None:
    """Policy "old", bootstrapped 200 days ago and then removed from the file, has no event in the
    period and no open revocation: the report did not name it, though its token stayed valid."""
    journal = _journal(tmp_path)
    now = datetime.now(UTC)
    _publish(journal, "r0", now - timedelta(days=200), "tokP", kind="bootstrap")
    for d in range(20, 200, 20):
        _publish(journal, f"r{d}", now - timedelta(days=200 - d), f"tokP{d}", old="x")
    _old_policy_bootstrapped(journal, now - timedelta(days=200))
    evidence = report.build(journal, [offline_policy(tmp_path, "p")], now - timedelta(days=90), now, now,
                            in_file=["p"])
    assert evidence.not_in_file == ["old"]
    rows = [r for r in csv.DictReader(io.StringIO(report.render(evidence, "csv"))) if r["record"] == "not_in_file"]
    assert [r["policy"] for r in rows] == ["old"] and "stays valid" in rows[0]["note"]


def test_a_removed_policy_whose_token_was_revoked_before_the_period_is_not_named(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    now = datetime.now(UTC)
    _old_policy_bootstrapped(journal, now - timedelta(days=200))
    revocation = Revocation("old", "tokOLD", "o0", "superseded", now - timedelta(days=150), RevocationState.PENDING)
    journal.schedule_revocation(revocation)
    journal.update_revocation(revocation, state=RevocationState.DONE, done_at=now - timedelta(days=150))
    policy = offline_policy(tmp_path, "p")
    assert report.build(journal, [policy], now - timedelta(days=90), now, now, in_file=["p"]).not_in_file == []
    # a period in which it was still valid names it
    assert report.build(journal, [policy], now - timedelta(days=190), now - timedelta(days=160), now,
                        in_file=["p"]).not_in_file == ["old"]


# ------------------------------------------------------------------ the CSV's chain head
def test_the_csv_report_carries_the_chain_head(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """docs/compliance.md says to keep the head from each report for `audit verify --expect`: the CSV
    had none, nor a broken chain's problem."""
    journal = _journal(tmp_path)
    _publish(journal, "r0", datetime.now(UTC) - timedelta(days=1), "tokA", kind="bootstrap")
    head = audit_chain.verify(journal).kept_link()
    code, out, _ = _cli(tmp_path, capsys, "report", "--format", "csv")
    assert code == 0
    [chain] = [r for r in csv.DictReader(io.StringIO(out)) if r["record"] == "chain"]
    assert chain["chain_head"] == head and chain["chain_ok [audit trail integrity]"] == "yes"
    assert head in chain["note"]
    assert _cli(tmp_path, capsys, "audit", "verify", "--expect", chain["chain_head"])[0] == 0
    code, out, _ = _cli(tmp_path, capsys, "report", "--format", "json")
    assert json.loads(out)["chain"]["head"] == head

    conn = sqlite3.connect(tmp_path / "journal.db", isolation_level=None)
    conn.execute("UPDATE events SET result = 'failed' WHERE seq = 2")
    conn.close()
    code, out, _ = _cli(tmp_path, capsys, "report", "--format", "csv")
    assert code == 4
    [chain] = [r for r in csv.DictReader(io.StringIO(out)) if r["record"] == "chain"]
    assert chain["chain_ok [audit trail integrity]"] == "NO" and chain["chain_head"] == ""
    assert "BROKEN" in chain["note"] and "seq 2" in chain["note"]


# ------------------------------------------------------------------ empty dates
@pytest.mark.parametrize("flag", ["--from", "--to"])
def test_an_empty_date_is_refused_not_taken_as_the_default(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           flag: str) -> None:
    _journal(tmp_path).close()
    code, _, err = _cli(tmp_path, capsys, "report", "--format", "csv", flag, "")
    assert code == 2 and flag in err and "not a date" in err, err
