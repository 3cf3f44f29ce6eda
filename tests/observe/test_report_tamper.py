"""`rotator report` and `rotator status` on a journal whose unchained tables (`runs`, `revocations`) or
structure were edited by hand: the report checks them against the audit chain and names what it finds
(exit 4), and neither command stops with an internal error. Also the report's period arithmetic:
pruned summaries clipped to the period, one definition of a failure, no year before 1000."""

from __future__ import annotations

import csv
import io
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.core.errors import ConfigError
from rotator.core.journal import Journal, Revocation, RevocationState, RunRecord, RunState, open_journal, ts
from tests.harness import offline_policy

_POLICY_TOML = (
    '[[policy]]\nname = "p"\nschedule = "30d"\n[policy.issuer]\ntype = "influxctl-management"\n'
    '[policy.issuer.profile]\nproduct = "clustered"\nhost = "h.invalid"\n[[policy.store]]\ntype = "vault-kv2"\n'
    'url = "http://127.0.0.1:1"\npath = "x"\n[policy.store.auth]\nmethod = "token"\ntoken = { file = "t" }\n'
)


def _journal(tmp_path: Path) -> Journal:
    return open_journal(f"sqlite:///{tmp_path / 'journal.db'}")


def _sql(tmp_path: Path, *statements: str | tuple[str, tuple[Any, ...]]) -> None:
    conn = sqlite3.connect(tmp_path / "journal.db", isolation_level=None)
    try:
        for statement in statements:
            conn.execute(*((statement, ()) if isinstance(statement, str) else statement))
    finally:
        conn.close()


def _cli(tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    from rotator.runners import cli

    config = tmp_path / "rotator.toml"
    config.write_text(f'[rotator]\njournal = "{tmp_path / "journal.db"}"\n' + _POLICY_TOML)
    code = cli.main(["-c", str(config), *args])
    out, err = capsys.readouterr()
    return code, out, err


def _publish(journal: Journal, run_id: str, at: datetime, token: str, old: str | None = None,
             kind: str = "rotate", revoke_old_at: datetime | None = None) -> None:
    """What rotator journals for a run that published ``token``: its row, its `plan` and its chained
    `published` (or `bootstrap`) event."""
    journal.begin_run(RunRecord(run_id=run_id, policy="p", state=RunState.DONE, kind=kind, started_at=at,
                                updated_at=at, old_token_id=old, new_token_id=token, published_at=at, finished_at=at))
    journal.record_event(at, "p", run_id, "plan", "ok", {"kind": kind, **({"old_token_id": old} if old else {})})
    journal.record_event(at + timedelta(milliseconds=1), "p", run_id, "published" if kind == "rotate" else "bootstrap",
                         "ok", {"token_id": token, **({"revoke_old_at": ts(revoke_old_at)} if revoke_old_at else {})})


def _three_tokens(tmp_path: Path, now: datetime) -> Journal:
    """tokA bootstrapped 100 days before ``now`` and current for 60 days (longer than max_age, ~31
    days), then tokB for 30, then tokC."""
    journal = _journal(tmp_path)
    t0 = now - timedelta(days=100)
    _publish(journal, "r0", t0, "tokA", kind="bootstrap")
    _publish(journal, "r1", t0 + timedelta(days=60), "tokB", old="tokA")
    _publish(journal, "r2", t0 + timedelta(days=90), "tokC", old="tokB")
    return journal


# ---------------------------------------------------------------- a run row deleted or edited (finding 1)
def test_a_deleted_run_row_hides_no_token_age_and_is_named(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """The runs table is not chained. Deleting the row of the bootstrap whose token outlived max_age
    took that token's lifetime out of the age (the next token became "the first"): the report said
    within max_age, exit 0. The age is the chain's timeline now, and the chained publication without
    its row is named (exit 4)."""
    from rotator.observe import report

    now = datetime.now(UTC)
    journal = _three_tokens(tmp_path, now)
    start, end = now - timedelta(days=70), now + timedelta(days=1)
    args = ("report", "--format", "json", "--from", ts(start), "--to", ts(end))

    def evidence() -> Any:
        return report.build(journal, [offline_policy(tmp_path, "p")], start, end, now)

    honest = evidence().policies[0]
    assert (honest.oldest_token_id, honest.max_observed_age_s, honest.within_max_age) == ("tokA", 60 * 86400, False)
    assert _cli(tmp_path, capsys, *args)[0] == 0

    _sql(tmp_path, "DELETE FROM runs WHERE run_id = 'r0'")
    found = evidence()
    [p] = found.policies
    assert (p.oldest_token_id, p.max_observed_age_s, p.within_max_age) == ("tokA", 60 * 86400, False)
    assert [(m["run_id"], m["problem"], m["token_id"]) for m in p.publications_without_run] == [
        ("r0", "no run row", "tokA")]
    assert found.not_in_chain[0].startswith("p/r0 (no run row: the chain's `bootstrap` event at ")
    assert p.summary()["rotations_not_in_chain"] == 1 and p.summary()["publications_without_run"] == 1
    code, _, err = _cli(tmp_path, capsys, *args)
    assert code == 4 and "p/r0 (no run row" in err, err
    assert "publication_without_run,p,r0,bootstrap" in report.render(found, "csv")


def test_a_run_row_edited_to_say_it_never_published_is_named_and_still_counted(tmp_path: Path) -> None:
    """A row whose state and publication time are edited away says nothing the run-side check reads;
    the chained `published` event says it published: named, and counted as the chain says."""
    from rotator.observe import report

    now = datetime.now(UTC)
    journal = _three_tokens(tmp_path, now)
    start, end = now - timedelta(days=20), now + timedelta(days=1)
    before = report.build(journal, [offline_policy(tmp_path, "p")], start, end, now).policies[0].summary()
    assert before["rotations"] == 1 and before["rotations_not_in_chain"] == 0
    _sql(tmp_path, "UPDATE runs SET state = 'failed', published_at = NULL WHERE run_id = 'r2'")
    evidence = report.build(journal, [offline_policy(tmp_path, "p")], start, end, now)
    assert [name.split(" ")[0] for name in evidence.not_in_chain] == ["p/r2"]
    [p] = evidence.policies
    assert [(m["run_id"], m["problem"]) for m in p.publications_without_run] == [
        ("r2", "its run row does not say it published that token")]
    assert p.summary()["rotations"] == 1, "the chain's publication counts, whatever its row says"


def test_an_honest_pruned_journal_names_no_publication_without_its_run(tmp_path: Path) -> None:
    """A prune deletes old runs with their events: what it deletes is no finding, and what it keeps
    (the runs of the kept events) still backs every kept publication."""
    from rotator.core import audit_chain
    from rotator.observe import report

    now = datetime.now(UTC)
    journal = _three_tokens(tmp_path, now)
    result = audit_chain.prune(journal, ts(now - timedelta(days=25)), ts(now))
    assert result.runs == 2
    evidence = report.build(journal, [offline_policy(tmp_path, "p")], now - timedelta(days=120),
                            now + timedelta(days=1), now)
    [p] = evidence.policies
    assert evidence.chain.ok and evidence.not_in_chain == [] and p.publications_without_run == []
    assert p.oldest_token_id == "(pruned)" and p.max_observed_age_s == 60 * 86400


# ----------------------------------------------- a revocation in a state rotator never writes (finding 5)
def _failed_revocation(tmp_path: Path, now: datetime) -> Journal:
    """tokA replaced by tokB, its revocation tried and failed (the token is still valid): the events
    and rows rotator writes for that."""
    journal = _journal(tmp_path)
    _publish(journal, "r0", now - timedelta(days=3), "tokA", kind="bootstrap")
    due = now - timedelta(days=2) + timedelta(hours=1)
    _publish(journal, "r1", now - timedelta(days=2), "tokB", old="tokA", revoke_old_at=due)
    journal.schedule_revocation(Revocation("p", "tokA", "r1", "superseded", due_at=due, state="pending"))
    journal.record_event(due + timedelta(minutes=1), "p", "r1", "revoke_old", "failed",
                         {"token_id": "tokA", "error": "boom"})
    _sql(tmp_path, "UPDATE revocations SET state = 'failed', attempts = 5, last_error = 'boom'")
    return journal


@pytest.mark.parametrize("state", ["closed", "pending", ""])
def test_a_revocation_row_whose_state_the_chain_does_not_show_is_named_and_counted_as_the_chain_says(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], state: str) -> None:
    """A failed revocation whose row is edited to `closed` (a state rotator never writes) vanished from
    a report of a period not over yet: counted nowhere, not named, exit 0. Edited to `pending`, it hid
    that the revocation gave up. The chain's tries say failed: the row is named and counted failed."""
    from rotator.observe import report

    now = datetime.now(UTC)
    journal = _failed_revocation(tmp_path, now)
    start, end = now - timedelta(days=10), now + timedelta(days=30)  # not over yet
    args = ("report", "--format", "json", "--from", ts(start), "--to", ts(end))

    def summary() -> tuple[dict[str, Any], list[str], list[tuple[str, str]]]:
        evidence = report.build(journal, [offline_policy(tmp_path, "p")], start, end, now)
        [p] = evidence.policies
        return p.summary(), evidence.revocations_not_in_chain, [(r.token_id, r.state) for r in p.revocations]

    s, named, rows = summary()
    assert (s["revocations_failed"], named, rows) == (1, [], [("tokA", "failed")])
    assert _cli(tmp_path, capsys, *args)[0] == 0
    _sql(tmp_path, ("UPDATE revocations SET state = ?", (state,)))
    s, named, rows = summary()
    assert (s["revocations_failed"], s["revocations_pending"], named, rows) == (1, 0, ["p/tokA"], [("tokA", "failed")])
    code, _, err = _cli(tmp_path, capsys, *args)
    assert code == 4 and "p/tokA" in err


def test_a_revocation_in_a_state_rotator_never_writes_without_tries_is_named_and_counted_failed(
        tmp_path: Path) -> None:
    """Scheduled by no event the chain holds, and never tried: nothing says what it is, and nothing
    shows the token revoked. It counts as failed, and is named, in a closed period too."""
    from rotator.observe import report

    now = datetime.now(UTC)
    journal = _journal(tmp_path)
    _publish(journal, "r0", now - timedelta(days=3), "tokA", kind="bootstrap")
    journal.schedule_revocation(Revocation("p", "tokZ", "r0", "superseded", due_at=now - timedelta(days=2),
                                           state="pending"))
    _sql(tmp_path, "UPDATE revocations SET state = 'weird'")
    for end in (now + timedelta(days=1), now - timedelta(hours=1)):
        evidence = report.build(journal, [offline_policy(tmp_path, "p")], now - timedelta(days=10), end, now)
        [p] = evidence.policies
        assert evidence.revocations_not_in_chain == ["p/tokZ"]
        assert [(r.token_id, r.state) for r in p.revocations] == [("tokZ", "failed")]


@pytest.mark.parametrize("ended", ["done", "dismissed"])
@pytest.mark.parametrize("closed", [False, True])
def test_a_revocation_row_ended_by_hand_without_tries_is_shown_and_counted_as_the_chain_says(
        tmp_path: Path, ended: str, closed: bool) -> None:
    """A pending revocation (scheduled by the chain, never tried) whose row is set to done or dismissed
    by hand, with no chained event: named, but shown in the claimed state and counted in no bucket (not
    done, not pending), and a forged dismissal counted as dismissed. The chain says pending: it is shown
    and counted so, with nothing of the row's claim (no done time, no dismissal note)."""
    from rotator.observe import report

    now = datetime.now(UTC)
    journal = _journal(tmp_path)
    _publish(journal, "r0", now - timedelta(days=3), "tokA", kind="bootstrap")
    due = now - timedelta(hours=1)
    _publish(journal, "r1", now - timedelta(hours=2), "tokB", old="tokA", revoke_old_at=due)
    journal.schedule_revocation(Revocation("p", "tokA", "r1", "superseded", due_at=due, state="pending"))
    _sql(tmp_path, ("UPDATE revocations SET state = ?, done_at = ?, last_error = ?",
                    (ended, ts(now - timedelta(minutes=30)), "dismissed: theirs" if ended == "dismissed" else None)))
    end = now - timedelta(minutes=1) if closed else now + timedelta(days=1)
    evidence = report.build(journal, [offline_policy(tmp_path, "p")], now - timedelta(days=10), end, now)
    [p] = evidence.policies
    assert evidence.revocations_not_in_chain == ["p/tokA"]
    assert [(r.token_id, r.state, r.done_at, r.note, r.last_error) for r in p.revocations] == \
        [("tokA", "pending", None, None, None)]
    s = p.summary()
    assert (s["revocations_done"], s["revocations_pending"], s["revocations_failed"], s["revocations_dismissed"]) \
        == (0, 1, 0, 0)
    rows = [r for r in csv.DictReader(io.StringIO(report.render(evidence, "csv"))) if r["record"] == "revocation"]
    assert [(r["token_id"], r["state"], r["done_at"]) for r in rows] == [("tokA", "pending", "")]


def test_a_revocation_row_dismissed_by_hand_is_not_counted_dismissed_in_any_state(tmp_path: Path) -> None:
    """A failed revocation (tried: the chain says failed) flipped to dismissed by hand: shown and
    counted failed, not dismissed."""
    from rotator.observe import report

    now = datetime.now(UTC)
    journal = _failed_revocation(tmp_path, now)
    _sql(tmp_path, ("UPDATE revocations SET state = 'dismissed', done_at = ?, last_error = 'dismissed: theirs'",
                    (ts(now - timedelta(minutes=30)),)))
    evidence = report.build(journal, [offline_policy(tmp_path, "p")], now - timedelta(days=10),
                            now + timedelta(days=1), now)
    [p] = evidence.policies
    assert evidence.revocations_not_in_chain == ["p/tokA"]
    assert [(r.state, r.note) for r in p.revocations] == [("failed", None)]
    s = p.summary()
    assert (s["revocations_failed"], s["revocations_dismissed"]) == (1, 0)


def test_status_counts_a_revocation_in_a_state_rotator_never_writes_as_failed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`status` read pending and failed rows only: a failed revocation edited to `closed` vanished, and
    `status --check` exited 0 with a token still valid."""
    from rotator.observe.compliance import policy_compliance
    from rotator.observe.status import policy_status

    now = datetime.now(UTC)
    journal = _failed_revocation(tmp_path, now)
    _sql(tmp_path, "UPDATE revocations SET state = 'closed'")
    status = policy_status(offline_policy(tmp_path, "p"), journal, now)
    assert status.failed_revocations == 1 and status.needs_attention
    assert status.compliance is not None and not status.compliance.compliant
    assert "in state 'closed', which rotator never writes" in status.compliance.problems()[0]
    assert not policy_compliance(offline_policy(tmp_path, "p"), journal, now).compliant
    code, _, err = _cli(tmp_path, capsys, "status", "--check")
    assert code == 4 and "state 'closed'" in err, err


def test_the_revocation_states_compliance_knows_are_the_journal_s() -> None:
    from rotator.observe.compliance import REVOCATION_STATES

    assert set(REVOCATION_STATES) == {s.value for s in RevocationState}


# ----------------------------------------------------------- a time rotator never writes (finding 6)
@pytest.mark.parametrize(("sql", "named"), [
    ("UPDATE runs SET published_at = 'yesterday' WHERE run_id = 'r1'", "not_in_chain"),
    ("UPDATE runs SET started_at = '2026-01-01 00:00:00' WHERE run_id = 'r0'", "not_in_chain"),
    ("UPDATE runs SET planned_versions = 'nope' WHERE run_id = 'r0'", "not_in_chain"),
    ("UPDATE revocations SET due_at = 'x'", "revocations_not_in_chain"),
    ("UPDATE revocations SET done_at = 5", "revocations_not_in_chain"),
])
def test_a_row_whose_time_rotator_never_writes_is_named_not_an_internal_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], sql: str, named: str) -> None:
    """A hand-edited time in the unchained tables stopped `report` and `status` with "internal error
    ... this is a bug" (exit 1). The report names the row (exit 4) and reports the rest; `status` shows
    the policy as needing attention."""
    from rotator.observe import report
    from rotator.observe.status import policy_status, render_table

    now = datetime.now(UTC)
    journal = _failed_revocation(tmp_path, now)
    journal.record_event(now - timedelta(hours=1), "p", "r1", "revoke_old", "ok", {"token_id": "tokA"})
    _sql(tmp_path, ("UPDATE revocations SET state = 'done', done_at = ?", (ts(now - timedelta(hours=1)),)))
    args = ("report", "--format", "json", "--from", ts(now - timedelta(days=10)), "--to", ts(now + timedelta(days=1)))
    assert _cli(tmp_path, capsys, *args)[0] == 0
    _sql(tmp_path, sql)
    evidence = report.build(journal, [offline_policy(tmp_path, "p")], now - timedelta(days=10),
                            now + timedelta(days=1), now)
    found = getattr(evidence, named)
    assert len(found) == 1 and "rotator never writes" in found[0], found
    [p] = evidence.policies
    assert p.oldest_token_id == "tokB", "the age is the chain's, the unreadable row's run included"
    code, _, err = _cli(tmp_path, capsys, *args)
    assert code == 4 and "internal error" not in err, err
    code, out, err = _cli(tmp_path, capsys, "status")
    assert "internal error" not in err, err
    status = policy_status(offline_policy(tmp_path, "p"), journal, now)
    if sql.startswith("UPDATE runs SET published_at"):  # (the row status reads: the current token's)
        assert code == 4 and status.unreadable and status.needs_attention and "UNREADABLE" in render_table([status])
        assert status.compliance is not None and not status.compliance.compliant
        assert _cli(tmp_path, capsys, "status", "--check")[0] == 4


def test_a_revocation_row_status_reads_with_a_time_rotator_never_writes_needs_attention(tmp_path: Path) -> None:
    from rotator.observe.status import policy_status

    now = datetime.now(UTC)
    journal = _failed_revocation(tmp_path, now)
    _sql(tmp_path, "UPDATE revocations SET due_at = 'soon'")
    status = policy_status(offline_policy(tmp_path, "p"), journal, now)
    assert status.unreadable and status.needs_attention and status.current_token_id == "tokB"
    assert status.compliance is not None and not status.compliance.compliant
    assert "revocations table holds a row rotator cannot read" in status.compliance.problems()[0]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_dropped_chain_table_is_a_broken_chain_not_an_io_error(
        tmp_path: Path, request: pytest.FixtureRequest, backend: str) -> None:
    """`DROP TABLE audit_checkpoints` made the report fail as a journal I/O error (exit 1): a table
    rotator never drops is missing, which is tampering (the chain is broken: exit 4)."""
    from rotator.core.errors import JournalError
    from rotator.observe import report

    url = f"sqlite:///{tmp_path / 'journal.db'}" if backend == "sqlite" else request.getfixturevalue("pg_url")
    journal = open_journal(url)
    now = datetime.now(UTC)
    _publish(journal, "r0", now - timedelta(days=3), "tokA", kind="bootstrap")
    with journal.audit_transaction() as (cur, _lock):
        cur.execute("DROP TABLE audit_checkpoints")
    evidence = report.build(journal, [offline_policy(tmp_path, "p")], now - timedelta(days=10),
                            now + timedelta(days=1), now)
    assert not evidence.chain.ok and "no audit_checkpoints table" in str(evidence.chain.problem)
    assert "audit chain BROKEN" in report.render(evidence, "html")
    journal.close()
    if backend == "sqlite":  # a journal that cannot be read at all is still an I/O error
        (tmp_path / "journal.db").write_bytes(b"not a database" * 100)
        with pytest.raises(JournalError):
            report.build(open_journal(url), [offline_policy(tmp_path, "p")], now - timedelta(days=10),
                         now + timedelta(days=1), now)


def test_a_dropped_chain_table_exits_4(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    now = datetime.now(UTC)
    _publish(_journal(tmp_path), "r0", now - timedelta(days=3), "tokA", kind="bootstrap")
    _sql(tmp_path, "DROP TABLE audit_checkpoints")
    code, out, err = _cli(tmp_path, capsys, "report", "--format", "json")
    assert code == 4 and '"ok": false' in out, (code, err)


# --------------------------------------------------------------------- a year before 1000 (finding 7)
@pytest.mark.parametrize("text", ["0999-01-01", "0001-01-01T00:00:00Z", "0999-12-31T23:59:59+00:00"])
def test_a_date_before_the_year_1000_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                text: str) -> None:
    """"999-..." sorts after "2026-..." in the journal's time text: a --from before the year 1000 made
    the report count nothing and still say "within max_age: yes", exit 0."""
    from rotator.observe.report import parse_date

    with pytest.raises(ConfigError, match="before the year 1000"):
        parse_date("--from", text)
    assert parse_date("--from", "1000-01-01").year == 1000
    _journal(tmp_path).close()
    code, _, err = _cli(tmp_path, capsys, "report", "--format", "csv", "--from", text, "--to", "2027-01-01")
    assert code == 2 and "before the year 1000" in err, err


# ------------------------------------------------------------ pruned summaries and failures (finding 8)
def test_a_pruned_summary_reaching_outside_the_period_does_not_decide_its_verdict(tmp_path: Path) -> None:
    """A Q2 report whose period overlaps a checkpoint covering January to mid-April showed January's
    over-age as Q2's: within_max_age NO. The summary is listed with its own range, and its maximum
    age counts in the verdict only when its range lies inside the period. Nor does it say yes: the
    checkpoint keeps only the last of its four publications' times, so which tokens were current on
    April 1 and how old (up to its 59 days) is open: undecided, with the reason."""
    from rotator.core import audit_chain
    from rotator.observe import report

    journal = _journal(tmp_path)
    policy = offline_policy(tmp_path, "p")
    days = [datetime(2025, 1, 1, tzinfo=UTC) + timedelta(days=d) for d in (0, 59, 83, 99, 124, 151)]
    for i, at in enumerate(days):  # Jan 1, Mar 1 (59 days: over max_age), Mar 25, Apr 10, May 5, Jun 1
        _publish(journal, f"r{i}", at, f"t{i}", old=f"t{i - 1}" if i else None,
                 kind="rotate" if i else "bootstrap")
    q2, q3 = datetime(2025, 4, 1, tzinfo=UTC), datetime(2025, 7, 1, tzinfo=UTC)
    audit_chain.prune(journal, ts(datetime(2025, 4, 15, tzinfo=UTC)), ts(q3))
    [p] = report.build(journal, [policy], q2, q3, q3).policies
    assert p.oldest_token_id == "t5" and abs((p.max_observed_age_s or 0) - 30 * 86400) <= 1, "Jun 1 to Jul 1"
    assert p.within_max_age is None and p.max_age_bound_s is not None and p.max_age_bound_s >= 59 * 86400
    assert p.age_undecided is not None and "checkpoint seq" in p.age_undecided
    assert p.within_90d is True, "59 days at most"
    [pruned] = p.pruned
    assert pruned["max_token_age_seconds"] >= 59 * 86400 and pruned["within_period"] is False
    evidence = report.build(journal, [policy], q2, q3, q3)
    [row] = [r for r in csv.DictReader(io.StringIO(report.render(evidence, "csv"))) if r["record"] == "pruned"]
    assert "partly outside this period" in row["note"]
    # the whole year: the range lies inside it, and its maximum is the period's
    [p] = report.build(journal, [policy], datetime(2025, 1, 1, tzinfo=UTC), q3, q3).policies
    assert p.pruned[0]["within_period"] is True and p.within_max_age is False and p.oldest_token_id == "(pruned)"


def test_a_period_shows_as_many_failures_before_a_prune_as_its_summary_after(tmp_path: Path) -> None:
    """The live report counted `revoke_old retry` and `recover aborted` as failures, the checkpoint's
    summary did not: the same history showed more failures before a prune than after it."""
    from rotator.core import audit_chain
    from rotator.observe import report

    journal = _journal(tmp_path)
    policy = offline_policy(tmp_path, "p")
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    _publish(journal, "r0", t0, "t0", kind="bootstrap")
    journal.record_event(t0 + timedelta(days=1), "p", "r1", "mint", "failed", {"error": "boom"})
    journal.record_event(t0 + timedelta(days=2), "p", "r0", "revoke_old", "retry", {"token_id": "x", "error": "e"})
    journal.record_event(t0 + timedelta(days=3), "p", "r2", "recover", "aborted", {})
    journal.record_event(t0 + timedelta(days=4), "p", "r3", "publish", "partial", {"error": "half"})
    end = t0 + timedelta(days=10)
    live = report.build(journal, [policy], t0, end, end).policies[0].summary()["failures"]
    audit_chain.prune(journal, ts(t0 + timedelta(days=5)), ts(end + timedelta(days=400)))
    [p] = report.build(journal, [policy], t0, end, end).policies
    assert p.failures == [] and [pr["failures"] for pr in p.pruned] == [live] == [2]


# ------------------------------------------------- journal text on a terminal (finding 4, status/report)
def test_status_table_writes_control_characters_of_journal_text_out(tmp_path: Path) -> None:
    from rotator.observe.status import policy_status, render_table

    now = datetime.now(UTC)
    journal = _journal(tmp_path)
    _publish(journal, "r0", now - timedelta(days=1), "tok\x1b]0;pwned\x07\x1b[2J", kind="bootstrap")
    journal.begin_run(RunRecord(run_id="r1", policy="p", state=RunState.FAILED, kind="rotate",
                                started_at=now - timedelta(hours=1), updated_at=now - timedelta(hours=1)))
    _sql(tmp_path, "UPDATE runs SET state = 'failed' || char(27) || '[8m' WHERE run_id = 'r1'")
    table = render_table([policy_status(offline_policy(tmp_path, "p"), journal, now)])
    assert "\x1b" not in table and "\x07" not in table
    assert "tok\\x1b]0;pwned\\x07\\x1b[2J" in table and "failed\\x1b[8m" in table


def test_report_findings_printed_on_a_terminal_write_control_characters_out(tmp_path: Path) -> None:
    """`rotator report` names the rows it finds on stderr: their ids come from the edited tables."""
    from rotator.observe import report

    now = datetime.now(UTC)
    journal = _journal(tmp_path)
    _publish(journal, "r0", now - timedelta(days=1), "tokA", kind="bootstrap")
    forged = "f\x1b[2K\rforged"
    journal.begin_run(RunRecord(run_id=forged, policy="p", state=RunState.DONE, kind="rotate",
                                started_at=now - timedelta(hours=1), updated_at=now - timedelta(hours=1),
                                new_token_id="tX", published_at=now - timedelta(hours=1)))
    journal.schedule_revocation(Revocation("p", "t\x1b[8m", "r0", "superseded", due_at=now, state="pending"))
    _sql(tmp_path, "UPDATE revocations SET state = 'done', done_at = due_at")
    evidence = report.build(journal, [offline_policy(tmp_path, "p")], now - timedelta(days=2),
                            now + timedelta(days=1), now)
    assert evidence.not_in_chain == ["p/f\\x1b[2K\\x0dforged"]
    assert evidence.revocations_not_in_chain == ["p/t\\x1b[8m"]
