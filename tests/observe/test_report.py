"""`rotator report`, `rotator audit verify` and `rotator prune` through the CLI, on a journal with real
rotations (fake influxctl + real OpenBao): every format, no token value anywhere, a self-contained
HTML file, tampering caught, pruning summarised and still verifiable."""

from __future__ import annotations

import csv
import io
import json
import re
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.core.errors import ConfigError
from rotator.observe.report import parse_date
from tests.e2e.test_e2e import wait_out_grace
from tests.harness import Scenario, check_invariants, make_scenario, offline_policy


def _rotated(tmp_path: Path, openbao: Any, fake_influxctl: Any, rotations: int = 3, first_age_s: float = 0,
             **kw: Any) -> tuple[Scenario, list[str]]:
    """Bootstrap, then ``rotations`` rotations (the first ``first_age_s`` after the bootstrap)."""
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=1, **kw)
    ids = [sc.bootstrap_id]
    time.sleep(first_age_s)
    for _ in range(rotations):
        proc = sc.cli("rotate", sc.policy, "--output", "json")
        assert proc.returncode == 0, proc.stderr
        ids.append(json.loads(proc.stdout)[0]["new_token_id"])
    wait_out_grace(sc)
    assert sc.cli("revoke-expired").returncode == 0
    check_invariants(sc, settled=True)
    return sc, ids


def _period() -> tuple[str, str]:
    today = datetime.now(UTC).date()
    return str(today - timedelta(days=1)), str(today + timedelta(days=1))


def _values(sc: Scenario) -> set[str]:
    values = {v["token"] for v in sc.versions()} | {sc.bootstrap_value}
    assert len(values) >= 3
    return values


def _report(sc: Scenario, fmt: str, *extra: str) -> Any:
    start, end = _period()
    proc = sc.cli("report", "--from", start, "--to", end, "--format", fmt, *extra)
    return proc


def test_json_report_lists_every_rotation_revocation_and_the_chain(tmp_path, openbao, fake_influxctl) -> None:
    sc, ids = _rotated(tmp_path, openbao, fake_influxctl)
    proc = _report(sc, "json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["chain"]["ok"] is True and report["chain"]["checked"] > 10
    assert "not a legal claim" in report["disclaimer"]
    [mgmt] = report["policies"]
    rotations = mgmt["rotations"]
    assert [r["new_token_id"] for r in rotations] == ids
    assert [r["old_token_id"] for r in rotations[1:]] == ids[:-1]
    for r in rotations[1:]:
        assert r["kind"] == "rotate" and r["state"] == "done"
        assert r["started_at"] <= r["verified_at"] <= r["published_at"], r
        assert r["instance"], "the instance that ran it is named"
    revs = mgmt["revocations"]
    assert sorted(r["token_id"] for r in revs) == sorted(ids[:-1])
    assert all(r["state"] == "done" and r["confirmed_by_issuer"] and r["done_at"] >= r["due_at"] for r in revs)
    summary = mgmt["summary"]
    assert summary["rotations"] == 4 and summary["revocations_done"] == 3
    assert summary["within_max_age"] is True and summary["within_90d"] is True
    assert 0 < summary["max_observed_age_s"] < 600
    assert report["controls"]["within_90d"] == "CIS 90-day"
    for value in _values(sc):
        assert value not in proc.stdout


def test_csv_and_html_reports_hold_no_token_value_and_html_is_self_contained(
    tmp_path, openbao, fake_influxctl
) -> None:
    sc, ids = _rotated(tmp_path, openbao, fake_influxctl, rotations=2)
    proc = _report(sc, "csv")
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert [r["new_token_id"] for r in rows if r["record"] == "rotation"] == ids
    [summary] = [r for r in rows if r["record"] == "summary"]
    labelled = [c for c in rows[0] if "PCI DSS 8.6.3" in c or "CIS 90-day" in c]
    assert len(labelled) >= 3, f"columns carry their controls: {list(rows[0])}"
    assert summary["chain_ok [audit trail integrity]"] == "yes"

    out = tmp_path / "evidence.html"
    proc = _report(sc, "html", "--output-file", str(out))
    assert proc.returncode == 0, proc.stderr
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and "@media print" in page
    assert not re.search(r"https?://", page), "no external asset (or any URL) in the HTML report"
    assert not re.search(r"<(script|link|img|iframe)\b", page, re.I)
    assert "not a legal claim" in page and "PCI DSS 8.6.3" in page and "CIS 90-day" in page
    for token_id in ids:
        assert token_id in page
    for value in _values(sc):
        assert value not in page
        assert value not in proc.stdout + proc.stderr


def test_audit_verify_passes_then_names_the_tampered_event(tmp_path, openbao, fake_influxctl) -> None:
    sc, _ = _rotated(tmp_path, openbao, fake_influxctl, rotations=1)
    ok = sc.cli("audit", "verify")
    assert ok.returncode == 0, ok.stderr
    assert "audit chain OK" in ok.stdout
    conn = sqlite3.connect(sc.journal_path)
    seq, at = conn.execute("SELECT seq, at FROM events WHERE step = 'published' ORDER BY seq DESC").fetchone()
    conn.execute("UPDATE events SET detail = '{\"token_id\": \"someone-elses\"}' WHERE seq = ?", (seq,))
    conn.commit()
    conn.close()
    bad = sc.cli("audit", "verify", "--output", "json")
    assert bad.returncode == 4, bad.stderr
    result = json.loads(bad.stdout)
    assert result["ok"] is False and result["broken"]["seq"] == seq and result["broken"]["at"] == at
    assert "edited" in result["problem"]
    report = _report(sc, "json")
    assert report.returncode == 4 and json.loads(report.stdout)["chain"]["ok"] is False

    # A detail that is no longer JSON at all: named like any edit, not an "internal error" (exit 1).
    conn = sqlite3.connect(sc.journal_path)
    conn.execute("UPDATE events SET detail = 'x' WHERE seq = 1")
    conn.commit()
    conn.close()
    bad = sc.cli("audit", "verify", "--output", "json")
    assert bad.returncode == 4 and json.loads(bad.stdout)["broken"]["seq"] == 1, bad.stdout + bad.stderr
    for fmt in ("json", "html"):
        report = _report(sc, fmt)
        assert report.returncode == 4 and "internal error" not in report.stderr, report.stderr


def test_prune_keeps_the_chain_verifiable_and_the_report_shows_pruned_summaries(
    tmp_path, openbao, fake_influxctl
) -> None:
    sc, ids = _rotated(tmp_path, openbao, fake_influxctl, rotations=2, first_age_s=1.2)
    expected_age = _max_token_age(sc)
    assert expected_age >= 1, "the bootstrapped token lived at least first_age_s"
    time.sleep(1.1)
    # keep_history is held to the longest schedule interval when every policy rotates more often than
    # daily (at least a second here, as a test that rotates every second may keep seconds)
    sc.config.write_text(sc.config.read_text().replace('schedule = "1h"', 'schedule = "1s"'))
    assert sc.cli("prune", "--keep-history", "0s").returncode == 2, "not below that floor"
    proc = sc.cli("prune", "--keep-history", "1s", "--output", "json")
    assert proc.returncode == 0, proc.stderr
    pruned = json.loads(proc.stdout)
    assert pruned["events"] > 5 and pruned["checkpoint_seq"] == pruned["events"]
    assert sc.cli("audit", "verify").returncode == 0
    status = json.loads(sc.cli("status", "--output", "json").stdout)[0]
    assert status["current_token_id"] == ids[-1], "the current token's run survives pruning"

    report = json.loads(_report(sc, "json").stdout)
    [mgmt] = report["policies"]
    [summary] = mgmt["pruned"]
    assert summary["rotations"] == 3 and summary["revocations"] == 2 and summary["failures"] == 0
    assert summary["max_token_age_seconds"] == expected_age, "the longest a token lived before its successor"

    conn = sqlite3.connect(sc.journal_path)
    conn.execute("UPDATE audit_checkpoints SET detail = replace(detail, '\"rotations\": 3', '\"rotations\": 9')")
    conn.commit()
    conn.close()
    bad = sc.cli("audit", "verify")
    assert bad.returncode == 4, "a checkpoint summary edited after pruning is caught"
    assert "checkpoint" in bad.stdout


def _max_token_age(sc: Scenario) -> int:
    """The longest a published token of ``sc.policy`` lived before the next publish, in whole seconds, from
    the journal's events (before a prune deletes them): a bootstrapped token ages from its creation."""
    rows = sc.journal_rows("SELECT at, step, detail FROM events WHERE policy = ? AND result = 'ok' AND step IN "
                           "('bootstrap', 'published') ORDER BY at", sc.policy)
    assert [step for _, step, _ in rows] == ["bootstrap", "published", "published"]
    ages: list[int] = []
    since: datetime | None = None
    for at_text, step, detail in rows:
        at = datetime.fromisoformat(at_text)
        if since is not None:
            ages.append(int((at - since).total_seconds()))
        created = json.loads(detail).get("token_created_at") if step == "bootstrap" else None
        since = min(at, datetime.fromisoformat(created)) if created else at
    return max(ages)


def test_report_rejects_bad_dates(tmp_path, openbao, fake_influxctl) -> None:
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state)
    proc = sc.cli("report", "--from", "last tuesday", "--to", "2026-01-01")
    assert proc.returncode == 2 and "--from" in proc.stderr and "YYYY-MM-DD" in proc.stderr
    proc = sc.cli("report", "--from", "2026-02-01", "--to", "2026-01-01")
    assert proc.returncode == 2 and "not after" in proc.stderr
    assert parse_date("--to", "2026-01-01T05:00:00+02:00") == datetime(2026, 1, 1, 3, tzinfo=UTC)
    with pytest.raises(ConfigError, match="not a date"):
        parse_date("--from", "yesterday")


def test_policies_gone_from_the_file_are_named_not_silently_left_out(tmp_path: Path) -> None:
    """A policy that rotated or failed in the period, or has a revocation not done, and was then removed
    from the policy file cannot be shown (no declared max_age, no schedule): the report says which."""
    from rotator.core.journal import Revocation, open_journal
    from rotator.observe import report

    journal = open_journal(f"sqlite:///{tmp_path / 'j.db'}")
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    journal.record_event(t0, "p", "r1", "published", "ok", {"token_id": "t1"})
    journal.record_event(t0, "gone", "r2", "mint", "failed", {"error": "issuer down"})
    journal.record_event(t0 - timedelta(days=400), "old", "r3", "published", "ok", {})  # before the period
    journal.schedule_revocation(Revocation("left", "t9", "r9", "superseded", t0 - timedelta(days=500), "pending"))
    journal.record_event(t0 + timedelta(hours=1), "(journal)", None, "prune", "ok", {})
    policy = offline_policy(tmp_path, "p")
    evidence = report.build(journal, [policy], t0 - timedelta(days=1), t0 + timedelta(days=1), t0 + timedelta(days=1),
                            in_file=["p", "unselected"])
    assert evidence.not_in_file == ["gone", "left"]
    assert report.build(journal, [policy], t0 - timedelta(days=1), t0 + timedelta(days=1), t0 + timedelta(days=1),
                        in_file=["p", "gone", "left"]).not_in_file == []
    assert json.loads(report.render(evidence, "json"))["policies_not_in_file"] == ["gone", "left"]
    rows = [r for r in csv.DictReader(io.StringIO(report.render(evidence, "csv"))) if r["record"] == "not_in_file"]
    assert [r["policy"] for r in rows] == ["gone", "left"] and "does not show it" in rows[0]["note"]
    assert "Not in this report: gone, left." in report.render(evidence, "html")


def test_report_csv_cells_are_never_formulas(tmp_path: Path) -> None:
    """A failure's error is a server's text (and a token id an issuer's): in a spreadsheet a cell that
    starts with = + - @ runs as a formula."""
    from rotator.core.journal import open_journal
    from rotator.observe import report

    journal = open_journal(f"sqlite:///{tmp_path / 'j.db'}")
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    journal.record_event(t0, "p", "r1", "mint", "failed", {"error": '=HYPERLINK("http://evil.example","x")'})
    evidence = report.build(journal, [offline_policy(tmp_path, "p")], t0 - timedelta(days=1), t0 + timedelta(days=1),
                            t0 + timedelta(days=1))
    rows = [r for r in csv.DictReader(io.StringIO(report.render(evidence, "csv"))) if r["record"] == "failure"]
    assert rows and rows[0]["error"] == '\'=HYPERLINK("http://evil.example","x")'


@pytest.mark.parametrize("fmt", ["csv", "html"])
def test_a_server_s_escape_sequences_in_an_error_never_reach_the_terminal(tmp_path: Path, fmt: str) -> None:
    """A server's error text is stored as it came; the CSV and HTML reports (HTML is the default, on
    stdout) write its control characters out as text, so that no escape sequence reaches a terminal."""
    from rotator.core.journal import open_journal
    from rotator.observe import report

    journal = open_journal(f"sqlite:///{tmp_path / 'j.db'}")
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    journal.record_event(t0, "p", "r1", "mint", "failed", {"error": "HTTP 500: \x1b]0;pwned\x07\x1b[2J\x9b31m"})
    evidence = report.build(journal, [offline_policy(tmp_path, "p")], t0 - timedelta(days=1), t0 + timedelta(days=1),
                            t0 + timedelta(days=1))
    out = report.render(evidence, fmt)
    # (line ends aside: CSV rows end with \r\n)
    assert "pwned" in out and not re.search("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]", out), repr(out[:200])
    assert "\\x1b]0;pwned\\x07" in out


def test_a_token_current_across_the_prune_cutoff_keeps_its_whole_age(tmp_path: Path) -> None:
    """Rotations every 30 days, then one token stays current 150 days. A prune whose cutoff falls inside
    that time deletes the run that published it; the report's maximum age must still be 150 days
    (from the checkpoint's last publish time), not the 30 days of the runs left."""
    from rotator.core import audit_chain
    from rotator.core.journal import RunRecord, RunState, open_journal, ts
    from rotator.observe import report

    policy = offline_policy(tmp_path, "p")
    journal = open_journal(f"sqlite:///{tmp_path / 'j.db'}")
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    days = [0, 30, 60, 90, 240]  # t3 is current from day 90 to day 240
    for i, day in enumerate(days):
        at = t0 + timedelta(days=day)
        journal.begin_run(RunRecord(run_id=f"r{i}", policy="p", state=RunState.DONE, kind="rotate", started_at=at,
                                    updated_at=at, old_token_id=f"t{i - 1}" if i else None, new_token_id=f"t{i}",
                                    published_at=at, finished_at=at))
        journal.record_event(at, "p", f"r{i}", "published", "ok", {"token_id": f"t{i}"})
    now = t0 + timedelta(days=250)

    def oldest() -> tuple[float, str | None, bool | None]:
        policy_evidence = report.build(journal, [policy], t0, now, now).policies[0]
        return (policy_evidence.max_observed_age_s or 0) / 86400, policy_evidence.oldest_token_id, \
            policy_evidence.within_90d

    assert oldest() == (150.0, "t3", False)
    result = audit_chain.prune(journal, ts(t0 + timedelta(days=200)), ts(now))
    assert result.runs == 4, "r0-r3 are pruned: r3 published t3 and its revocation is done"
    assert oldest() == (150.0, "(pruned)", False), "the pruned token still counts with its whole age"
    assert audit_chain.verify(journal).ok


def test_a_kept_run_behind_the_pruned_publish_keeps_its_token_and_age(tmp_path: Path) -> None:
    """The engine writes the `published` event a few milliseconds after the run's published_at. When the
    run behind the checkpoint's last publish is kept (the newest run always is), its token must not
    be counted twice, once as "(pruned)" with the age and once as itself with none."""
    from rotator.core import audit_chain
    from rotator.core.journal import RunRecord, RunState, open_journal, ts
    from rotator.observe import report

    policy = offline_policy(tmp_path, "p")
    journal = open_journal(f"sqlite:///{tmp_path / 'j.db'}")
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    for i, day in enumerate([0, 30]):
        at = t0 + timedelta(days=day)
        journal.begin_run(RunRecord(run_id=f"r{i}", policy="p", state=RunState.DONE, kind="rotate", started_at=at,
                                    updated_at=at, new_token_id=f"t{i}", published_at=at, finished_at=at))
        journal.record_event(at + timedelta(milliseconds=3), "p", f"r{i}", "published", "ok", {"token_id": f"t{i}"})
    now = t0 + timedelta(days=150)  # t1 current for 120 days, its run the newest: kept
    audit_chain.prune(journal, ts(t0 + timedelta(days=60)), ts(now))
    evidence = report.build(journal, [policy], t0, now, now).policies[0]
    assert (evidence.max_observed_age_s, evidence.oldest_token_id) == (120 * 86400, "t1")


def test_a_run_the_audit_chain_does_not_back_is_flagged_and_counts_no_rotation(tmp_path: Path) -> None:
    """The runs table is not chained. A run written into it by hand, saying it published a token, has no
    chained `published` event that says so: the report marks it and counts no rotation for it; the
    maximum age follows the chain's publications, not the row's (an event of that run naming another
    token is a publication of that token); and a run whose event lies just past the period is still
    backed."""
    from rotator.core.journal import RunRecord, RunState, open_journal
    from rotator.observe import report

    policy = offline_policy(tmp_path, "p")
    journal = open_journal(f"sqlite:///{tmp_path / 'j.db'}")
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    end = t0 + timedelta(days=150)

    def run(i: int, at: datetime, kind: str = "rotate") -> None:
        journal.begin_run(RunRecord(run_id=f"r{i}", policy="p", state=RunState.DONE, kind=kind, started_at=at,
                                    updated_at=at, new_token_id=f"t{i}", published_at=at, finished_at=at))

    run(0, t0, kind="bootstrap")
    journal.record_event(t0, "p", "r0", "bootstrap", "ok", {"token_id": "t0"})
    run(1, t0 + timedelta(days=80))  # forged: no event
    journal.record_event(t0 + timedelta(days=80), "p", "r1", "published", "ok", {"token_id": "not-t1"})
    run(2, end - timedelta(minutes=1))
    journal.record_event(end + timedelta(seconds=2), "p", "r2", "published", "ok", {"token_id": "t2"})
    evidence = report.build(journal, [policy], t0, end, end)
    [p] = evidence.policies
    assert [(r.run_id, r.in_chain) for r in p.rotations] == [("r0", True), ("r1", False), ("r2", True)]
    assert evidence.not_in_chain == ["p/r1"] and p.summary()["rotations_not_in_chain"] == 1
    assert p.summary()["rotations"] == 2, "r1 counts no rotation"
    assert (p.oldest_token_id, p.max_observed_age_s) == ("t0", 80 * 86400), "the chain published not-t1 on day 80"
    rows = [r for r in csv.DictReader(io.StringIO(report.render(evidence, "csv"))) if r["record"] == "rotation"]
    assert [r["in_chain"] for r in rows] == ["yes", "NO", "yes"]
    assert "no event in the audit chain that says so" in report.render(evidence, "html")


def test_report_exits_4_and_names_a_run_written_outside_rotator(tmp_path, openbao, fake_influxctl) -> None:
    sc, ids = _rotated(tmp_path, openbao, fake_influxctl, rotations=1)
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    with sqlite3.connect(sc.journal_path) as conn:
        conn.execute("INSERT INTO runs (run_id, policy, kind, state, started_at, updated_at, new_token_id, "
                     "published_at, finished_at) VALUES ('forged1', ?, 'rotate', 'done', ?, ?, 'tX', ?, ?)",
                     (sc.policy, now, now, now, now))
    proc = _report(sc, "json")
    assert proc.returncode == 4, (proc.returncode, proc.stderr)
    assert f"{sc.policy}/forged1" in proc.stderr and "runs the audit chain does not back" in proc.stderr
    [p] = json.loads(proc.stdout)["policies"]
    assert {r["run_id"]: r["in_chain"] for r in p["rotations"]} == {
        **{r["run_id"]: True for r in p["rotations"] if r["run_id"] != "forged1"}, "forged1": False}
    assert p["summary"]["rotations_not_in_chain"] == 1
    assert json.loads(proc.stdout)["chain"]["ok"] is True, "the chain itself is intact: only the runs table changed"


def test_report_exits_4_for_revocation_rows_written_or_deleted_outside_rotator(tmp_path, openbao,
                                                                              fake_influxctl) -> None:
    """The revocations table is not chained. A row marked done without its chained `revoke_old ok`
    (a failed revocation flipped to done hides a token that is still valid), and a row deleted where a
    chained `published` event scheduled it, are named, not counted as done, and exit 4; real rows whose
    events are there are not."""
    sc, ids = _rotated(tmp_path, openbao, fake_influxctl, rotations=2)
    proc = _report(sc, "json")
    assert proc.returncode == 0, proc.stderr
    [p] = json.loads(proc.stdout)["policies"]
    done = p["summary"]["revocations_done"]
    assert done == 2 and p["summary"]["revocations_not_in_chain"] == 0
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    conn = sqlite3.connect(sc.journal_path, isolation_level=None)
    try:
        conn.execute("INSERT INTO revocations (policy, token_id, run_id, reason, due_at, state, attempts, done_at) "
                     "VALUES (?, 'tZ', 'r-forged', 'superseded', ?, 'done', 1, ?)", (sc.policy, now, now))
        conn.execute("DELETE FROM revocations WHERE token_id = ?", (ids[0],))
    finally:
        conn.close()
    proc = _report(sc, "json")
    assert proc.returncode == 4, (proc.returncode, proc.stderr)
    assert f"{sc.policy}/tZ" in proc.stderr and f"{sc.policy}/{ids[0]}" in proc.stderr, proc.stderr
    [p] = json.loads(proc.stdout)["policies"]
    assert p["summary"]["revocations_not_in_chain"] == 2
    assert p["summary"]["revocations_done"] == done - 1, "the deleted row is gone and the forged one not counted"
    assert json.loads(proc.stdout)["chain"]["ok"] is True, "the chain itself is intact: only the table changed"
    assert "rows written or deleted outside rotator" in _report(sc, "html").stdout


def test_forged_runs_the_age_depends_on_are_caught_before_the_period_and_with_an_edited_time(tmp_path: Path) -> None:
    """Two ways around a check of the listed runs alone: a run written with a start just before the
    period (not listed, yet it splits the age), and an honest run whose published_at was edited (its
    event is at another time). Both are named, and the age is the one the chain shows."""
    from rotator.core.journal import RunRecord, RunState, open_journal
    from rotator.observe import report

    policy = offline_policy(tmp_path, "p")
    journal = open_journal(f"sqlite:///{tmp_path / 'j.db'}")
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    start, end = t0 + timedelta(days=100), t0 + timedelta(days=300)

    def run(i: int, at: datetime, event_at: datetime | None) -> None:
        journal.begin_run(RunRecord(run_id=f"r{i}", policy="p", state=RunState.DONE, kind="rotate", started_at=at,
                                    updated_at=at, new_token_id=f"t{i}", published_at=at, finished_at=at))
        if event_at is not None:
            journal.record_event(event_at, "p", f"r{i}", "published", "ok", {"token_id": f"t{i}"})

    run(0, t0, t0)
    run(1, start - timedelta(seconds=1), None)  # forged, started before the period
    run(2, t0 + timedelta(days=200), t0 + timedelta(days=290))  # honest, published_at edited back 90 days
    evidence = report.build(journal, [policy], start, end, end)
    [p] = evidence.policies
    assert sorted(p.not_in_chain) == ["r1", "r2"] and evidence.not_in_chain == ["p/r1", "p/r2"]
    assert [(r.run_id, r.in_chain) for r in p.rotations] == [("r2", False)]
    assert p.summary()["rotations"] == 0 and p.summary()["rotations_not_in_chain"] == 2
    # The age follows the chain, not the rows: r1 published nothing, and r2 published t2 on day 290
    # (its event), whatever its edited row says.
    assert (p.oldest_token_id, p.max_observed_age_s) == ("t0", 290 * 86400), "t0 was current until day 290"


def test_a_bootstrap_journals_its_run_and_its_event_in_one_commit(tmp_path: Path) -> None:
    """A bootstrap that fails to write its audit event leaves no run that says it published (the
    report would find that run without its event), and the same command then succeeds."""
    from rotator.core.journal import RunState
    from tests.engine.test_state_machine import World

    world = World(tmp_path)
    value, token_id = world.issuer.tokens.create("made by a human")
    engine = world.engine()
    original = world.journal.record_event

    def record_event(at: Any, policy: str, run_id: Any, step: str, result: str, detail: Any) -> None:
        if step == "bootstrap" and result == "ok":
            raise RuntimeError("the journal went away")
        original(at, policy, run_id, step, result, detail)

    world.journal.record_event = record_event  # type: ignore[method-assign]
    from rotator.core.secret import Secret

    with pytest.raises(RuntimeError):
        engine.bootstrap(Secret(value), token_id, None)
    assert not [r for r in world.journal.runs("p", limit=0) if r.published_at is not None]
    world.journal.record_event = original  # type: ignore[method-assign]
    assert world.engine().bootstrap(Secret(value), token_id, None).ok
    assert [r.state for r in world.journal.runs("p", limit=0) if r.published_at] == [RunState.DONE]


def test_a_revocation_whose_event_commits_minutes_after_it_is_not_flagged(tmp_path: Path) -> None:
    """Two revocations due in one PLAN: the first one's commit (done_at, then its event) waits through
    the second's listing retries. A report whose period ends between the two must find the event."""
    from rotator.observe import report
    from tests.engine.test_state_machine import GRACE, World, rotate
    world = World(tmp_path)
    world.bootstrap()
    rotate(world)
    rotate(world)  # two tokens pending revocation now (the bootstrap token and the first rotation's)
    world.clock.advance(GRACE + timedelta(seconds=1))
    calls = {"n": 0}
    original = world.issuer.list_tokens

    def slow_listing(credential: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:  # 1: PLAN's issuer check, 2: the first due token's, 3: the second's (retried)
            world.clock.advance(timedelta(minutes=5, seconds=30))
        return original(credential)

    world.issuer.list_tokens = slow_listing  # type: ignore[method-assign]
    result = world.engine().rotate()  # PLAN revokes both due tokens with the preflight's claims
    assert result.ok, result.message
    assert sum(r.state == "done" for r in world.journal.revocations("p")) == 2, "both due ones revoked"
    first = min(r.done_at for r in world.journal.revocations("p") if r.done_at)
    # a report whose period ends a moment after the first revocation (e.g. --to at midnight)
    start, end = first - timedelta(days=1), first + timedelta(minutes=1)
    evidence = report.build(world.journal, [offline_policy(tmp_path, "p")], start, end, world.clock.now())
    assert evidence.chain.ok
    assert evidence.revocations_not_in_chain == [], "an honest journal: report would exit 4"


def test_a_restored_revoked_token_replaced_again_then_pruned_is_not_flagged(tmp_path: Path) -> None:
    """A token revoked long ago is current again (an old store version restored); a rotation replaces
    it: its `published` event schedules it, the row stays done with its old done_at. A later prune
    whose cutoff falls between that done_at and the rotation deletes the row, and the report names
    the token as 'missing where a chained rotation scheduled one' (exit 4) for an honest journal:
    prune keeps a done row whose token a kept run replaced."""
    from rotator.core import audit_chain
    from rotator.core.contracts import TokenRecord
    from rotator.core.journal import ts
    from rotator.core.secret import Secret
    from rotator.observe import report
    from tests.engine.test_state_machine import GRACE, World, rotate

    world = World(tmp_path)
    world.issuer.check_credential = False  # an issuer with a credential of its own (influxctl's login)
    t0 = world.bootstrap()
    rotate(world)
    world.settle()  # t0 revoked, its row done
    t0_record = TokenRecord(Secret(world.bootstrap_value), t0, "memory", "p", world.clock.now(),
                            world.clock.now() + timedelta(days=3))
    world.clock.advance(timedelta(days=40))
    world.write_everywhere(t0_record)  # someone restores an old version (`vault kv rollback`)
    result = world.engine().rotate()
    assert result.ok
    world.clock.advance(GRACE + timedelta(seconds=1))
    world.engine().revoke_due()
    n = world.clock.now()
    before = report.build(world.journal, [offline_policy(tmp_path, "p")], n - timedelta(days=10),
                          n + timedelta(days=1), n)
    assert before.revocations_not_in_chain == []
    cutoff = world.clock.now() - timedelta(days=20)  # keep_history = 20d: between t0's done_at and the rotation
    audit_chain.prune(world.journal, ts(cutoff), ts(world.clock.now()))
    now = world.clock.now()
    evidence = report.build(world.journal, [offline_policy(tmp_path, "p")], now - timedelta(days=10),
                            now + timedelta(days=1), now)
    assert evidence.chain.ok
    assert evidence.revocations_not_in_chain == [], "an honest journal: report would exit 4"


def _bootstrapped_200_days_old_then_rotated(tmp_path: Path) -> tuple[Any, datetime, datetime, datetime, datetime]:
    """A journal of policy "p": token t0, created 200 days before its bootstrap at t0, replaced by t1
    30 days later (runs and chained events); returns it with t0, the creation, t1 and t0 + 40 days."""
    from rotator.core.journal import RunRecord, RunState, open_journal, ts

    journal = open_journal(f"sqlite:///{tmp_path / 'j.db'}")
    t0 = datetime(2025, 6, 1, tzinfo=UTC)
    created, t1 = t0 - timedelta(days=200), t0 + timedelta(days=30)
    journal.begin_run(RunRecord(run_id="r0", policy="p", state=RunState.DONE, kind="bootstrap", started_at=t0,
                                updated_at=t0, new_token_id="t0", published_at=t0, finished_at=t0,
                                token_created_at=created))
    journal.record_event(t0, "p", "r0", "bootstrap", "ok", {"token_id": "t0", "token_created_at": ts(created)})
    journal.begin_run(RunRecord(run_id="r1", policy="p", state=RunState.DONE, kind="rotate", started_at=t1,
                                updated_at=t1, old_token_id="t0", new_token_id="t1", published_at=t1, finished_at=t1))
    journal.record_event(t1, "p", "r1", "published", "ok", {"token_id": "t1"})
    return journal, t0, created, t1, t0 + timedelta(days=40)


def test_a_bootstrapped_token_s_age_counts_from_its_creation_and_an_edited_creation_time_is_caught(
        tmp_path: Path) -> None:
    """A person's token created 200 days before its bootstrap, replaced 30 days after it, was 230 days
    old: the report's maximum age says so (before, 30 days and "within 90 days"). The bootstrap's
    chained event carries the creation time: a run whose creation time was removed, to make the token
    look younger, is no longer backed by the chain. A prune's checkpoint counts it the same way."""
    from rotator.core import audit_chain
    from rotator.core.journal import ts
    from rotator.observe import report

    policy = offline_policy(tmp_path, "p")
    journal, t0, created, t1, end = _bootstrapped_200_days_old_then_rotated(tmp_path)
    evidence = report.build(journal, [policy], t0, end, end)
    [p] = evidence.policies
    assert (p.max_observed_age_s, p.oldest_token_id) == (230 * 86400, "t0")
    assert p.within_90d is False and evidence.not_in_chain == []

    with sqlite3.connect(tmp_path / "j.db") as conn:
        conn.execute("UPDATE runs SET token_created_at = NULL WHERE run_id = 'r0'")
    evidence = report.build(journal, [policy], t0, end, end)
    assert evidence.not_in_chain == ["p/r0"], "the run no longer says what its chained event says"

    with sqlite3.connect(tmp_path / "j.db") as conn:
        conn.execute("UPDATE runs SET token_created_at = ? WHERE run_id = 'r0'", (ts(created),))
    result = audit_chain.prune(journal, ts(t1 + timedelta(days=1)), ts(end))
    [checkpoint] = audit_chain.checkpoints(journal)
    assert result.events == 2 and checkpoint.detail["policies"]["p"]["max_token_age_seconds"] == 230 * 86400
    journal.close()


@pytest.mark.parametrize("cutoffs", [(31,), (1, 31), (1,)], ids=["one-prune", "two-prunes", "bootstrap-pruned"])
def test_a_bootstrapped_token_s_creation_time_survives_prunes_that_split_its_events(
        tmp_path: Path, cutoffs: tuple[int, ...]) -> None:
    """The bootstrap's event (with the token's creation time) and the next publish can fall into
    different prunes (a daily prune; two batches of one): the creation time is carried from
    checkpoint to checkpoint, so the token is still 230 days old in the report, not 30. A cold review
    found it lost at the second prune."""
    from rotator.core import audit_chain
    from rotator.core.journal import ts
    from rotator.observe import report

    policy = offline_policy(tmp_path, "p")
    journal, t0, created, t1, end = _bootstrapped_200_days_old_then_rotated(tmp_path)
    for day in cutoffs:
        audit_chain.prune(journal, ts(t0 + timedelta(days=day)), ts(end))
    evidence = report.build(journal, [policy], t0 - timedelta(days=1), end, end)
    [p] = evidence.policies
    assert p.max_observed_age_s == 230 * 86400, (p.max_observed_age_s / 86400, p.oldest_token_id, p.pruned)
    assert p.within_90d is False and evidence.chain.ok
    journal.close()


def test_a_rotation_counts_in_the_period_it_published_in(tmp_path: Path) -> None:
    """A new token can take minutes to become active, so a run may start before a period's boundary and
    publish after it. It is that period's rotation: listed and counted in the period it published in,
    and in the one it started in listed but not counted. Before, runs were taken by start time only: the
    rotation was counted in the period before, and missing from its own."""
    from rotator.core.audit_chain import instance_name
    from rotator.core.journal import ts
    from rotator.observe import report
    from tests.engine.test_state_machine import World, rotate
    world = World(tmp_path)
    world.bootstrap()
    original = world.issuer.verify

    def slow_activation(token: Any) -> Any:
        world.clock.advance(timedelta(minutes=10))
        return original(token)

    def slow_first_write(name: str) -> None:
        if name == "verified":
            world.clock.advance(timedelta(minutes=2))

    world.issuer.verify = slow_activation  # type: ignore[method-assign]
    world.on_checkpoint = slow_first_write
    rotate(world)
    [run] = [r for r in world.journal.runs("p") if r.kind == "rotate"]
    assert run.published_at is not None and run.published_at - run.started_at == timedelta(minutes=12)
    # e.g. midnight, the start of a quarter: the run verified before it and published after it
    boundary = run.started_at + timedelta(minutes=11)
    policy = offline_policy(tmp_path, "p")
    now = world.clock.now()
    before = report.build(world.journal, [policy], boundary - timedelta(days=1), boundary, now).policies[0]
    after = report.build(world.journal, [policy], boundary, now + timedelta(days=1), now).policies[0]
    assert [r.run_id for r in after.rotations if r.kind == "rotate"] == [run.run_id], "listed where it published"
    assert after.summary()["rotations"] == 1, after.rotations
    [listed] = [r for r in after.rotations if r.kind == "rotate"]
    verified_at = ts(run.started_at + timedelta(minutes=10))
    assert (listed.verified_at, listed.instance, listed.in_chain) == (verified_at, instance_name(), True), \
        "its verify too"
    assert [r.run_id for r in before.rotations if r.kind == "rotate"] == [run.run_id], "listed where it started"
    assert before.summary()["rotations"] == 1, "the bootstrap's publication only"


def _a_failed_revocation(tmp_path: Path) -> tuple[Any, Any]:
    """A World (fake clock, in-memory issuer): bootstrap, one rotation, and the old token's revocation
    refused until it gives up (`failed`: the token is still valid). Returns the world and its row."""
    from rotator.core.errors import PermanentError
    from tests.engine.test_state_machine import GRACE, World, rotate

    world = World(tmp_path)
    world.bootstrap()
    rotate(world)
    world.clock.advance(GRACE + timedelta(seconds=1))
    world.issuer.fail_next("revoke", PermanentError("memory issuer: 403 revoke refused"), times=50)
    for _ in range(12):
        world.engine().revoke_due()
        world.clock.advance(timedelta(minutes=10))
    [rev] = world.journal.revocations("p")
    assert rev.state == "failed" and world.issuer.tokens.is_active(world.bootstrap_value)
    return world, rev


def _evidence_around_now(world: Any, tmp_path: Path) -> Any:
    from rotator.observe import report

    now = world.clock.now()
    return report.build(world.journal, [offline_policy(tmp_path, "p")], now - timedelta(days=1),
                        now + timedelta(days=1), now)


def _sql(tmp_path: Path, *statements: tuple[str, tuple[Any, ...]]) -> None:
    conn = sqlite3.connect(tmp_path / "journal.db", isolation_level=None)
    try:
        for statement in statements:
            conn.execute(*statement)
    finally:
        conn.close()


@pytest.mark.parametrize("times", [("2000-01-01T00:00:00.000000Z", None),
                                   ("2000-01-01T00:00:00.000000Z", "1999-12-31T00:00:00.000000Z")],
                         ids=["done-before-the-chain", "due-and-done-before-the-chain"])
def test_a_failed_revocation_flipped_to_done_before_the_chain_began_is_named(
        tmp_path: Path, times: tuple[str, str | None]) -> None:
    """A row whose done_at is dated before the chain (or the last prune) was not checked: flipping a
    failed revocation to done with such a time hid a token still valid, exit 0. Whether a row is
    checked is the chain's to say: its rotation scheduled the token, its tries failed, and no
    `revoke_old ok` follows them."""
    world, rev = _a_failed_revocation(tmp_path)
    assert _evidence_around_now(world, tmp_path).revocations_not_in_chain == []
    done_at, due_at = times
    _sql(tmp_path, ("UPDATE revocations SET state = 'done', done_at = ?, last_error = NULL, due_at = COALESCE(?, "
                    "due_at) WHERE token_id = ?", (done_at, due_at, rev.token_id)))
    evidence = _evidence_around_now(world, tmp_path)
    assert evidence.chain.ok, "only the table changed"
    assert evidence.revocations_not_in_chain == [f"p/{rev.token_id}"]
    assert evidence.policies[0].summary()["revocations_done"] == 0


def test_a_failed_revocation_whose_due_time_is_moved_past_the_period_is_named_and_listed(tmp_path: Path) -> None:
    """The period lists an unfinished revocation by its due time: moved to 2099, the failed revocation
    vanished from the report. The chained `published` event says when it is due (and its tries that it
    was due by then): the row is named, and listed as the failure it is."""
    world, rev = _a_failed_revocation(tmp_path)
    _sql(tmp_path, ("UPDATE revocations SET due_at = '2099-01-01T00:00:00.000000Z' WHERE token_id = ?",
                    (rev.token_id,)))
    evidence = _evidence_around_now(world, tmp_path)
    assert evidence.revocations_not_in_chain == [f"p/{rev.token_id}"]
    [p] = evidence.policies
    assert [(r.token_id, r.state) for r in p.revocations] == [(rev.token_id, "failed")]
    assert p.summary()["revocations_failed"] == 1


def test_a_deleted_revocation_is_named_though_its_run_no_longer_names_the_old_token(tmp_path: Path) -> None:
    """The token a rotation replaced was taken from the runs table (not chained): deleting the
    revocation and clearing the run's old_token_id left nothing to miss. The run's chained `plan`
    event names the token its `published` event scheduled the revocation of."""
    world, rev = _a_failed_revocation(tmp_path)
    _sql(tmp_path, ("DELETE FROM revocations WHERE token_id = ?", (rev.token_id,)),
         ("UPDATE runs SET old_token_id = NULL WHERE run_id = ?", (rev.run_id,)))
    evidence = _evidence_around_now(world, tmp_path)
    assert evidence.chain.ok and evidence.revocations_not_in_chain == [f"p/{rev.token_id}"]


def test_a_closed_period_s_revocations_do_not_change_with_when_the_report_runs(tmp_path: Path) -> None:
    """A revocation due in the period, tried and postponed in it, done two days after it: the report
    made right after the period said pending, one made later said done (and not confirmed, its event
    being outside the period). Each is judged as at the period's end."""
    from rotator.core.errors import PermanentError
    from rotator.observe import report
    from tests.engine.test_state_machine import GRACE, World, rotate

    world = World(tmp_path)
    world.bootstrap()
    rotate(world)
    [rev] = world.journal.revocations("p")
    start, end = rev.due_at - timedelta(days=1), rev.due_at + timedelta(minutes=1)
    world.issuer.fail_next("revoke", PermanentError("memory issuer: 503"), times=1)
    world.clock.advance(GRACE + timedelta(seconds=5))
    world.engine().revoke_due()
    world.clock.advance(timedelta(minutes=2))
    policy = offline_policy(tmp_path, "p")

    def figures() -> tuple[Any, ...]:
        [p] = report.build(world.journal, [policy], start, end, world.clock.now()).policies
        s = p.summary()
        return (s["revocations_done"], s["revocations_pending"], s["revocations_failed"],
                [(r.state, r.done_at, r.confirmed_by_issuer, r.attempts, r.last_error) for r in p.revocations])

    right_after = figures()
    assert right_after == (0, 1, 0, [("pending", None, False, 1, "memory issuer: 503")])
    world.clock.advance(timedelta(days=2))
    world.engine().revoke_due()
    assert [r.state for r in world.journal.revocations("p")] == ["done"]
    assert figures() == right_after


def test_a_revocation_done_just_before_the_period_ends_is_confirmed_by_its_event_just_after(tmp_path: Path) -> None:
    """`confirmed by issuer` came from the period's events only: a revocation done a moment before the
    period's end, whose `revoke_old ok` commits after it (other revocations' retries first), showed NO."""
    from rotator.observe import report
    from tests.engine.test_state_machine import GRACE, World, rotate

    world = World(tmp_path)
    world.bootstrap()
    rotate(world)
    rotate(world)
    world.clock.advance(GRACE + timedelta(seconds=1))
    calls = {"n": 0}
    original = world.issuer.list_tokens

    def slow_listing(credential: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            world.clock.advance(timedelta(minutes=5, seconds=30))
        return original(credential)

    world.issuer.list_tokens = slow_listing  # type: ignore[method-assign]
    assert world.engine().rotate().ok
    first = min(r.done_at for r in world.journal.revocations("p") if r.done_at)
    end = first + timedelta(minutes=1)
    evidence = report.build(world.journal, [offline_policy(tmp_path, "p")], first - timedelta(days=1), end,
                            world.clock.now())
    done = [r for r in evidence.policies[0].revocations if r.state == "done"]
    assert done and all(r.confirmed_by_issuer for r in done), done
    assert evidence.revocations_not_in_chain == []


def test_a_kept_run_whose_publication_a_checkpoint_counts_is_not_counted_again(tmp_path: Path) -> None:
    """A prune keeps the policy's newest run (it names the current token) and deletes its events: the
    checkpoint's summary counts its publication, and the period's summary counted it again (4 shown
    for 3). It stays listed, and the summary says where it is counted."""
    from rotator.core import audit_chain
    from rotator.core.journal import ts
    from rotator.observe import report

    world = _two_rotations_settled(tmp_path)
    start, end = world.clock.now() - timedelta(days=5), world.clock.now() + timedelta(days=1)
    policy = offline_policy(tmp_path, "p")
    assert report.build(world.journal, [policy], start, end, world.clock.now()).policies[0].summary()["rotations"] == 3
    world.clock.advance(timedelta(days=500))
    audit_chain.prune(world.journal, ts(world.clock.now() - timedelta(days=400)), ts(world.clock.now()))
    evidence = report.build(world.journal, [policy], start, end, world.clock.now())
    [p] = evidence.policies
    [kept] = p.rotations
    assert kept.in_chain is None, "its events were pruned"
    assert p.summary()["rotations"] + sum(x["rotations"] for x in p.pruned) == 3
    assert p.summary()["rotations_counted_in_pruned"] == 1
    assert "1 listed rotation(s) whose events were pruned" in report.render(evidence, "csv")
    assert evidence.revocations_not_in_chain == [] and evidence.not_in_chain == []


@pytest.mark.parametrize("edit", ["done-before-the-cutoff", "due-moved"])
def test_a_failed_revocation_whose_events_were_pruned_is_not_named_until_its_row_is_edited(
        tmp_path: Path, edit: str) -> None:
    """A prune deletes a failed revocation's events (by design: the checkpoint counts them) and keeps
    its row. The report does not name it for the missing events; but a prune deletes done rows older
    than its chained cutoff, so that row flipped to done then is named, and so is its due time moved
    past the period (failed: it was tried, so it was due before the history the chain holds)."""
    from rotator.core import audit_chain
    from rotator.core.journal import ts

    world, rev = _a_failed_revocation(tmp_path)
    world.clock.advance(timedelta(days=30))
    audit_chain.prune(world.journal, ts(world.clock.now() - timedelta(days=1)), ts(world.clock.now()))
    evidence = _evidence_around_now(world, tmp_path)
    assert evidence.chain.ok and evidence.revocations_not_in_chain == []
    assert [(r.token_id, r.state) for r in evidence.policies[0].revocations] == [(rev.token_id, "failed")]
    if edit == "due-moved":
        _sql(tmp_path, ("UPDATE revocations SET due_at = '2099-01-01T00:00:00.000000Z' WHERE token_id = ?",
                        (rev.token_id,)))
    else:
        _sql(tmp_path, ("UPDATE revocations SET state = 'done', last_error = NULL, done_at = ? WHERE token_id = ?",
                        (ts(rev.due_at + timedelta(minutes=1)), rev.token_id)))
    assert _evidence_around_now(world, tmp_path).revocations_not_in_chain == [f"p/{rev.token_id}"]


def test_a_bootstrap_retired_token_whose_due_time_is_moved_is_named(tmp_path: Path) -> None:
    """A bootstrap into emptied stores retires the token rotator published last, due after grace. Its
    `bootstrap ok` event carries that due time (`revoke_at`), so a row moved to 2099, which would keep
    the token valid and out of the period, is named like a rotation's."""
    from rotator.core.secret import Secret
    from tests.engine.test_state_machine import World, rotate

    world = World(tmp_path)
    world.bootstrap()
    t1 = rotate(world).new_token_id
    world.settle()
    world.empty_stores()
    value, human = world.issuer.tokens.create("made by a human, after the stores were wiped")
    assert world.engine().bootstrap(Secret(value), human, None).also_revoked == t1
    assert _evidence_around_now(world, tmp_path).revocations_not_in_chain == []
    _sql(tmp_path, ("UPDATE revocations SET due_at = '2099-01-01T00:00:00.000000Z' WHERE token_id = ?", (t1,)))
    evidence = _evidence_around_now(world, tmp_path)
    assert evidence.revocations_not_in_chain == [f"p/{t1}"]


def _two_rotations_settled(tmp_path: Path) -> Any:
    """A World: bootstrap, two rotations a day apart, and the first replaced token revoked after grace."""
    from tests.engine.test_state_machine import GRACE, World, rotate

    world = World(tmp_path)
    world.bootstrap()
    for _ in range(2):
        world.clock.advance(timedelta(days=1))
        rotate(world)
    world.clock.advance(GRACE + timedelta(seconds=5))
    world.engine().revoke_due()
    return world


def _pruned_then_quiet(tmp_path: Path) -> Any:
    """Bootstrap and two rotations, then 500 quiet days and a prune: the first kept link is the prune's
    own event, long after the last pruned one."""
    from rotator.core import audit_chain
    from rotator.core.journal import ts

    world = _two_rotations_settled(tmp_path)
    world.clock.advance(timedelta(days=500))
    audit_chain.prune(world.journal, ts(world.clock.now() - timedelta(days=400)), ts(world.clock.now()))
    return world


def test_a_run_forged_in_the_quiet_stretch_before_the_first_kept_link_is_named(tmp_path: Path) -> None:
    """After a prune, the chain began no later than the last pruned link: a run published after it must
    be backed by a kept event. The report took the first kept link as the chain's start, so a forged
    run dated in the quiet stretch between the two counted as "before the chain" and was not checked."""
    from rotator.observe import report

    world = _pruned_then_quiet(tmp_path)
    now = world.clock.now()
    at = f"{(now - timedelta(days=200)).date().isoformat()}T12:00:00.000000Z"
    _sql(tmp_path, ("INSERT INTO runs (run_id, policy, kind, state, started_at, updated_at, old_token_id, "
                    "new_token_id, published_at, finished_at) VALUES ('f0rged', 'p', 'rotate', 'done', ?, ?, 'x', 'y', "
                    "?, ?)",
                    (at, at, at, at)))
    evidence = report.build(world.journal, [offline_policy(tmp_path, "p")], now - timedelta(days=300), now, now)
    assert evidence.chain.ok and evidence.not_in_chain == ["p/f0rged"]


def test_an_unlinked_event_in_the_quiet_stretch_before_the_first_kept_link_breaks_the_chain(tmp_path: Path) -> None:
    """An unlinked `published ok` dated 200 days after the last pruned link, with the head's count
    raised: `audit verify` said OK (the chain "began" at the first kept link, 300 days later), and the
    report took the row as evidence. From the last pruned link on, every event carries a link."""
    from rotator.core import audit_chain

    world = _pruned_then_quiet(tmp_path)
    at = f"{(world.clock.now() - timedelta(days=200)).date().isoformat()}T12:00:00.000000Z"
    _sql(tmp_path, ("INSERT INTO events (at, policy, run_id, step, result, detail) VALUES "
                    "(?, 'p', 'f0rged', 'published', 'ok', '{\"token_id\": \"y\"}')", (at,)),
         ("UPDATE audit_head SET unchained = unchained + 1", ()))
    verified = audit_chain.verify(world.journal)
    assert not verified.ok and "without a chain link, dated after the chain began" in str(verified.problem)


def _an_overdue_revocation(tmp_path: Path) -> tuple[Any, Any]:
    """A World: bootstrap, one rotation, and two days on: the old token's revocation, due after an
    hour's grace, is still pending (nothing ran `revoke-expired`)."""
    from tests.engine.test_state_machine import World, rotate

    world = World(tmp_path)
    world.bootstrap()
    rotate(world)
    world.clock.advance(timedelta(days=2))
    [rev] = world.journal.revocations("p")
    assert rev.state == "pending"
    return world, rev


def test_an_unlinked_published_event_dated_before_every_time_hides_no_overdue_revocation(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unlinked `published ok` dated '' (sorting before the chain began, so taken for an event from
    before the chain), scheduling the old token's revocation in 2099, with the row's due time moved
    there too and the head's count raised: `audit verify` said OK and the report dropped the overdue
    revocation (pending 0, exit 0). The chain is broken now; and the report, even with a verifier
    that missed it, takes no such row as evidence: the row is named and still listed as pending."""
    from rotator.core import audit_chain

    world, rev = _an_overdue_revocation(tmp_path)
    assert _evidence_around_now(world, tmp_path).policies[0].summary()["revocations_pending"] == 1
    _sql(tmp_path, ("UPDATE audit_head SET unchained = unchained + 1", ()),
         ("INSERT INTO events (at, policy, run_id, step, result, detail) VALUES ('', 'p', ?, 'published', 'ok', "
          "'{\"revoke_old_at\": \"2099-01-01T00:00:00Z\"}')", (rev.run_id,)),
         ("UPDATE revocations SET due_at = '2099-01-01T00:00:00.000000Z' WHERE token_id = ?", (rev.token_id,)))
    evidence = _evidence_around_now(world, tmp_path)
    assert not evidence.chain.ok and "is not one rotator writes" in str(evidence.chain.problem)
    monkeypatch.setattr(audit_chain, "_unlinked_not_a_time", lambda cur: None)  # a verifier that misses it
    # (and a journal whose chain keeps no record of its unlinked rows: one begun by an earlier version)
    monkeypatch.setattr(audit_chain, "_unlinked_record", lambda cur, check=True: (None, None))
    evidence = _evidence_around_now(world, tmp_path)
    assert evidence.chain.ok
    assert evidence.revocations_not_in_chain == [f"p/{rev.token_id}"]
    [p] = evidence.policies
    assert [(r.token_id, r.state) for r in p.revocations] == [(rev.token_id, "pending")]
    assert p.summary()["revocations_pending"] == 1


@pytest.mark.parametrize("state", ["aborted", "failed", "revoking_new"])
def test_a_run_that_never_published_carrying_a_published_at_counts_no_rotation_and_is_named(
        tmp_path: Path, state: str) -> None:
    """The summary counted every run with a published_at in the period (and in_chain not NO), and a run
    that never published was `n/a`: an `aborted` row given a published_at counted as a rotation. rotator
    writes published_at only with a success state, so such a row was written outside rotator."""
    from rotator.core.journal import ts
    from tests.engine.test_state_machine import World, rotate

    world = World(tmp_path)
    world.bootstrap()
    rotate(world)
    assert _evidence_around_now(world, tmp_path).policies[0].summary()["rotations"] == 2
    at = ts(world.clock.now() - timedelta(minutes=5))
    _sql(tmp_path, ("INSERT INTO runs (run_id, policy, kind, state, started_at, updated_at, old_token_id, "
                    "new_token_id, published_at, finished_at) "
                    "VALUES ('f0rged', 'p', 'rotate', ?, ?, ?, 'x', 'y', ?, ?)", (state, at, at, at, at)))
    evidence = _evidence_around_now(world, tmp_path)
    [p] = evidence.policies
    assert p.summary()["rotations"] == 2 and p.summary()["rotations_not_in_chain"] == 1
    assert [r.in_chain for r in p.rotations if r.run_id == "f0rged"] == [False]
    assert evidence.chain.ok and evidence.not_in_chain == ["p/f0rged"]
    # with the chain broken no run is checked against it (all n/a), and still only a success is counted
    _sql(tmp_path, ("UPDATE events SET detail = '{}' WHERE seq = 1", ()))
    evidence = _evidence_around_now(world, tmp_path)
    assert not evidence.chain.ok and evidence.policies[0].summary()["rotations"] == 2


@pytest.mark.parametrize(("to", "said"), [
    ("0001-01-01", "--to '0001-01-01' is before the year 1000"),
    # the default --from (90 days before it) is before the year 1000 too
    ("1000-01-05", "the period starts before the year 1000"),
])
def test_report_to_before_the_default_period_fits_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                    to: str, said: str) -> None:
    """`report --to 0001-01-01` without --from: the default --from, 90 days before it, is no date
    (an OverflowError, reported as an internal error). It is exit 2, saying what to pass; so is a
    --to whose default --from falls before the year 1000 (the journal's time text would not sort)."""
    from rotator.core.journal import open_journal
    from rotator.runners import cli

    journal = tmp_path / "journal.db"
    open_journal(f"sqlite:///{journal}").close()
    config = tmp_path / "rotator.toml"
    config.write_text(f'[rotator]\njournal = "{journal}"\n')
    code = cli.main(["-c", str(config), "report", "--to", to, "--format", "json"])
    _, err = capsys.readouterr()
    assert code == 2 and "internal error" not in err, err
    assert said in err and "fix: give a" in err, err


def test_a_run_an_upgraded_journal_published_just_before_the_chain_began_is_not_called_backed(
        tmp_path: Path) -> None:
    """A journal from before the chain (schema 1), upgraded: the first link is written 30 minutes after
    its last rotation. That rotation's `published` event has no link (nothing it says can be checked),
    and it showed `in_chain: yes` because it lay within the hour of slack before the chain began; it is
    `n/a` as every run from before the chain is. A run after the upgrade is still backed."""
    from rotator.core.journal import _MIGRATIONS, RunRecord, RunState, open_journal, ts
    from rotator.observe import report

    path = tmp_path / "old.db"
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    old = t0 - timedelta(minutes=30)
    conn = sqlite3.connect(path)
    conn.executescript(str(_MIGRATIONS[0]) + "; CREATE TABLE schema_version (version INTEGER NOT NULL);"
                       "INSERT INTO schema_version VALUES (1);")
    conn.execute("INSERT INTO runs (run_id, policy, kind, state, started_at, updated_at, new_token_id, published_at, "
                 "finished_at) VALUES ('old', 'p', 'rotate', 'done', ?, ?, 't-old', ?, ?)", (ts(old),) * 4)
    conn.execute("INSERT INTO events (at, policy, run_id, step, result, detail) VALUES (?, 'p', 'old', 'published', "
                 "'ok', '{\"token_id\": \"t-old\"}')", (ts(old),))
    conn.commit()
    conn.close()
    journal = open_journal(f"sqlite:///{path}")
    try:
        journal.begin_run(RunRecord(run_id="new", policy="p", state=RunState.DONE, kind="rotate", started_at=t0,
                                    updated_at=t0, new_token_id="t-new", published_at=t0, finished_at=t0))
        journal.record_event(t0, "p", "new", "published", "ok", {"token_id": "t-new"})  # the chain's first link
        evidence = report.build(journal, [offline_policy(tmp_path, "p")], t0 - timedelta(days=1),
                                t0 + timedelta(days=1), t0 + timedelta(days=1))
    finally:
        journal.close()
    [p] = evidence.policies
    assert [(r.run_id, r.in_chain) for r in p.rotations] == [("old", None), ("new", True)]
    assert evidence.not_in_chain == []
