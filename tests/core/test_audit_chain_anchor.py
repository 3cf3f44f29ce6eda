"""What the audit chain holds its unchained parts to (rotator/core/audit_chain.py): the events without
a link (their count and newest time, recorded in the chain), a checkpoint's time, and a link kept
from an earlier verify (`rotator audit verify --expect SEQ:HASH@TIME`), which a chain rewritten and
then pruned must not pass. Also: what the verifier prints of the rows it found edited."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.core import audit_chain
from rotator.core.journal import open_journal, ts
from tests.core.test_audit_chain import _POLICY_FILE, T0, _cli, _history, _journal_from_before_the_chain, raw


@pytest.fixture(params=["sqlite", "postgresql"])
def journal_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'j.db'}"
    return str(request.getfixturevalue("pg_url"))


#: the keys of the chain's record of the events without a link, as journals store them for good
COUNT, NEWEST = "unlinked_events", "newest_unlinked_at"


def rechain(url: str, edit: Callable[[dict[str, Any]], None] = lambda row: None) -> str:
    """Every kept link after the latest checkpoint recomputed (after ``edit`` of each row), and the head
    moved onto the last: what an earlier version wrote, or what someone with write access does to
    hide an edit. Returns the new head hash."""
    columns = ", ".join(audit_chain.EVENT_COLUMNS)
    with raw(url) as sql:
        latest = sql("SELECT seq, hash FROM audit_checkpoints ORDER BY seq DESC LIMIT 1")
        start, prev = latest[0] if latest else (0, audit_chain.GENESIS)
        rows = [dict(zip(audit_chain.EVENT_COLUMNS, r, strict=True))
                for r in sql(f"SELECT {columns} FROM events WHERE seq > ? ORDER BY seq", start)]
        for row in rows:
            edit(row)
            digest = audit_chain.link(prev, row)
            sql("UPDATE events SET at = ?, policy = ?, step = ?, result = ?, detail = ?, prev_hash = ?, hash = ? "
                "WHERE seq = ?", row["at"], row["policy"], row["step"], row["result"], row["detail"], prev, digest,
                row["seq"])
            prev = digest
        sql("UPDATE audit_head SET hash = ? WHERE chain = 'journal'", prev)
    return str(prev)


def _without_record(row: dict[str, Any]) -> None:
    detail = json.loads(row["detail"])
    if isinstance(detail, dict):
        detail.pop(COUNT, None)
        detail.pop(NEWEST, None)
        row["detail"] = json.dumps(detail, sort_keys=True)


def as_written_by_an_earlier_version(url: str) -> None:
    """A never-pruned journal's chain as an earlier version wrote it: its first link records nothing
    of the events without a link (the head row alone counted them)."""
    rechain(url, _without_record)


def _detail(url: str, seq: int) -> dict[str, Any]:
    with raw(url) as sql:
        return dict(json.loads(sql("SELECT detail FROM events WHERE seq = ?", seq)[0][0]))


def _unlinked(url: str, at: datetime | str, *, raise_count: bool = True) -> None:
    """An event without a link inserted (a forged `revoke_old ok`), the head's count raised to hide it."""
    with raw(url) as sql:
        if raise_count:
            sql("UPDATE audit_head SET unchained = unchained + 1")
        sql("INSERT INTO events (at, policy, run_id, step, result, detail) VALUES (?, 'mgmt', 'run-1', 'revoke_old', "
            "'ok', '{\"token_id\": \"t-old\"}')", at if isinstance(at, str) else ts(at))


# ------------------------------------------------------------------ the events without a link (#3)
def test_a_journal_created_with_the_chain_records_none_so_any_unlinked_row_is_an_insertion(journal_url: str) -> None:
    """The first link records how many events without a link there were when the chain began (the
    migration's count) and the newest one's time: a journal created with the chain records 0. An
    unlinked `revoke_old ok` dated a minute after the first link, with the head's count raised,
    passed as an event from before the upgrade (within its day of clock slack), and the report used it."""
    journal = open_journal(journal_url)
    _history(journal, 4)
    assert audit_chain.verify(journal).ok
    _unlinked(journal_url, T0 + timedelta(minutes=1))
    report = audit_chain.verify(journal)
    assert not report.ok and "without a chain link, where the chain recorded none (at event seq 1), was inserted" \
        in str(report.problem), report
    events = audit_chain.chained_events(journal, ts(T0 - timedelta(days=1)), ts(T0 + timedelta(days=1)))
    assert all(e["seq"] is not None for e in events), "the inserted row is no evidence"
    assert (audit_chain.UNLINKED_COUNT, audit_chain.UNLINKED_NEWEST) == (COUNT, NEWEST)
    first = _detail(journal_url, 1)
    assert first[COUNT] == 0 and first[NEWEST] is None


def test_the_newest_link_made_unlinked_with_the_head_rewound_is_caught(journal_url: str) -> None:
    """The newest event's link removed (seq, hashes NULL), the head row rewound onto the one before
    and its count raised: the row then passed as an event from before the chain, free to edit."""
    journal = open_journal(journal_url)
    _history(journal, 4)
    with raw(journal_url) as sql:
        before = sql("SELECT seq, hash FROM events WHERE seq = 3")[0]
        sql("UPDATE events SET seq = NULL, prev_hash = NULL, hash = NULL, result = 'failed' WHERE seq = 4")
        sql("UPDATE audit_head SET seq = ?, hash = ?, unchained = unchained + 1", *before)
    report = audit_chain.verify(journal)
    assert not report.ok and "was inserted" in str(report.problem), report


def test_an_upgraded_journal_s_unlinked_events_are_held_to_the_count_its_chain_recorded(tmp_path: Path) -> None:
    """A journal from before the chain, upgraded by this version: its first link records the 3 old
    events and the newest one's time. One more, dated among them, with the head's count raised to
    match, passed (the head's count was the only one); now the chain's count says it was inserted.
    The head's count edited alone is named as that."""
    path, url = tmp_path / "old.db", f"sqlite:///{tmp_path / 'old.db'}"
    _journal_from_before_the_chain(path, [(ts(T0 - timedelta(days=10 - i)), None, "plan", "ok") for i in range(3)])
    journal = open_journal(url)
    _history(journal, 2)
    verified = audit_chain.verify(journal)
    assert verified.ok
    # "OK: 2 events" alone read as the whole history: the 3 from before the chain are named, unlinked
    assert verified.unchained == 3 and verified.as_dict()["unchained"] == 3
    assert verified.text().endswith("; 3 earlier events from before the chain began are not linked (only their "
                                    "count is checked)"), verified.text()
    _unlinked(url, T0 - timedelta(days=9, hours=1))
    report = audit_chain.verify(journal)
    assert not report.ok and "1 event(s) without a chain link were inserted" in str(report.problem), report
    # dated after the newest recorded, a minute after it: inserted (no day of slack)
    with raw(url) as sql:
        sql("DELETE FROM events WHERE seq IS NULL AND at = ?", ts(T0 - timedelta(days=9, hours=1)))
    _unlinked(url, T0 - timedelta(days=8) + timedelta(minutes=1), raise_count=False)
    report = audit_chain.verify(journal)
    assert not report.ok and f"dated after the newest one the chain recorded ({ts(T0 - timedelta(days=8))}" \
        in str(report.problem), report
    with raw(url) as sql:  # the head's count edited alone
        sql("DELETE FROM events WHERE seq IS NULL AND at > ?", ts(T0 - timedelta(days=8)))
    report = audit_chain.verify(journal)
    assert not report.ok and "the head row was edited" in str(report.problem), report
    first = _detail(url, 1)
    assert first[COUNT] == 3 and first[NEWEST] == ts(T0 - timedelta(days=8))


def test_a_chain_begun_by_an_earlier_version_still_verifies_and_a_prune_records_its_count(tmp_path: Path) -> None:
    """A journal whose chain an earlier version began records no count of its events without a link:
    it verifies as it did (the head row's count; a day of clock slack after the chain began). Its
    first prune by this version records the count it leaves, and from then on that holds."""
    path, url = tmp_path / "old.db", f"sqlite:///{tmp_path / 'old.db'}"
    _journal_from_before_the_chain(path, [(ts(T0 - timedelta(days=10 - i)), None, "plan", "ok") for i in range(3)])
    journal = open_journal(url)
    _history(journal, 4)
    as_written_by_an_earlier_version(url)
    assert COUNT not in _detail(url, 1)
    report = audit_chain.verify(journal)
    assert report.ok, report.problem
    # as before: an old event dated a little after the first link (a clock corrected at the upgrade)
    _unlinked(url, T0 + timedelta(minutes=2))
    assert audit_chain.verify(journal).ok, "as an earlier version's chain verified"
    with raw(url) as sql:
        sql("DELETE FROM events WHERE seq IS NULL AND at = ?", ts(T0 + timedelta(minutes=2)))
        sql("UPDATE audit_head SET unchained = 3")
    # a prune of this version deletes the two oldest (and no link: made no checkpoint) and records the one left
    result = audit_chain.prune(journal, ts(T0 - timedelta(days=8, hours=12)), ts(T0 + timedelta(days=1)))
    assert result.checkpoint is None
    report = audit_chain.verify(journal)
    assert report.ok, report.problem
    _unlinked(url, T0 - timedelta(days=9))
    report = audit_chain.verify(journal)
    assert not report.ok and "1 event(s) without a chain link were inserted" in str(report.problem), report
    with raw(url) as sql:
        [(detail,)] = sql("SELECT detail FROM events WHERE step = 'prune'")
    assert json.loads(detail)[COUNT] == 1


def test_the_first_prune_of_a_chain_an_earlier_version_began_records_its_count_with_nothing_to_delete(
        journal_url: str) -> None:
    """An upgraded journal younger than keep_history: the daemon's daily prune deletes nothing for a
    year. Its first prune records the count of events without a link all the same (a `prune` event
    that deleted nothing), and from then on an inserted one is caught."""
    journal = open_journal(journal_url)
    _history(journal, 4)
    as_written_by_an_earlier_version(journal_url)
    result = audit_chain.prune(journal, ts(T0 - timedelta(days=1)), ts(T0 + timedelta(days=1)))
    assert result.checkpoint is None and result.events == 0 and result.text() == \
        "nothing older than the retention period"
    assert audit_chain.verify(journal).ok
    _unlinked(journal_url, T0 + timedelta(minutes=1))
    report = audit_chain.verify(journal)
    assert not report.ok and "where the chain recorded none (at event seq 5)" in str(report.problem), report
    with raw(journal_url) as sql:
        assert sql("SELECT COUNT(*) FROM events WHERE step = 'prune'")[0][0] == 1
        sql("DELETE FROM events WHERE seq IS NULL")
        sql("UPDATE audit_head SET unchained = 0")
    audit_chain.prune(journal, ts(T0 - timedelta(days=1)), ts(T0 + timedelta(days=2)))
    with raw(journal_url) as sql:
        assert sql("SELECT COUNT(*) FROM events WHERE step = 'prune'")[0][0] == 1, "once recorded, no more"


def test_the_prune_of_an_empty_journal_writes_nothing(journal_url: str) -> None:
    """A daemon's first pass prunes before anything happened: no event to record (its first link will
    record its count, as every new chain's does). It wrote a `prune` event, one commit more per new
    journal, which the bench's exact commit counts caught."""
    journal = open_journal(journal_url)
    audit_chain.prune(journal, ts(T0 - timedelta(days=1)), ts(T0))
    with raw(journal_url) as sql:
        assert sql("SELECT COUNT(*) FROM events")[0][0] == 0
    _history(journal, 2)
    assert audit_chain.verify(journal).ok and _detail(journal_url, 1)[audit_chain.UNLINKED_COUNT] == 0


def test_a_prune_of_only_events_from_before_the_chain_records_what_it_left(journal_url: str) -> None:
    """A prune that deletes events without a link but no linked one writes no checkpoint; its `prune`
    event still records what it left, or the first link's count would then say some were deleted."""
    journal = open_journal(journal_url)
    with raw(journal_url) as sql:  # rows from before the chain, in a journal the chain began in since
        for i in range(3):
            sql("INSERT INTO events (at, policy, step, result, detail) VALUES (?, 'p', 'plan', 'ok', '{}')",
                ts(T0 - timedelta(days=10 - i)))
        sql("UPDATE audit_head SET unchained = 3")
    _history(journal, 2)
    assert _detail(journal_url, 1)[COUNT] == 3
    result = audit_chain.prune(journal, ts(T0 - timedelta(days=8, hours=12)), ts(T0 + timedelta(days=1)))
    assert result.checkpoint is None and result.events == 0
    report = audit_chain.verify(journal)
    assert report.ok, report.problem
    with raw(journal_url) as sql:
        assert sql("SELECT COUNT(*) FROM events WHERE seq IS NULL")[0][0] == 1


def test_a_prune_event_forged_to_count_more_unlinked_events_is_caught(journal_url: str) -> None:
    """The records only shrink (only a prune deletes such rows): a `prune` event appended with a larger
    count, and a row inserted to match it, are caught."""
    journal = open_journal(journal_url)
    _history(journal, 4)
    audit_chain.prune(journal, ts(T0 + timedelta(minutes=2)), ts(T0 + timedelta(days=3)))
    assert audit_chain.verify(journal).ok
    with journal.audit_transaction() as (cur, lock):
        audit_chain.append_event(cur, lock, {
            "at": ts(T0 + timedelta(days=4)), "policy": audit_chain.JOURNAL_POLICY, "run_id": None, "step": "prune",
            "result": "ok", "detail": json.dumps({COUNT: 1, NEWEST: ts(T0)})})
    _unlinked(journal_url, T0 - timedelta(days=1))
    report = audit_chain.verify(journal)
    assert not report.ok and "more or newer than the 0" in str(report.problem), report


# ------------------------------------------------------------------ a checkpoint's time (#10)
def test_a_checkpoint_s_time_edited_is_caught(journal_url: str) -> None:
    """`audit_checkpoints.at` was covered by no digest: an edit (which moves when a prune seems to have
    run, and what the report excuses as pruned) went unnoticed. The latest checkpoint's time is its
    `prune` event's; each checkpoint's summary records its own."""
    journal = open_journal(journal_url)
    _history(journal, 6)
    audit_chain.prune(journal, ts(T0 + timedelta(minutes=2)), ts(T0 + timedelta(days=2)))
    audit_chain.prune(journal, ts(T0 + timedelta(minutes=4)), ts(T0 + timedelta(days=3)))
    first, latest = audit_chain.checkpoints(journal)
    assert audit_chain.verify(journal).ok
    for seq, at in ((latest.seq, latest.at), (first.seq, first.at)):
        with raw(journal_url) as sql:
            sql("UPDATE audit_checkpoints SET at = ? WHERE seq = ?", ts(T0 + timedelta(days=900)), seq)
        report = audit_chain.verify(journal)
        assert not report.ok and f"checkpoint at seq {seq}" in str(report.problem), (seq, report)
        with raw(journal_url) as sql:
            sql("UPDATE audit_checkpoints SET at = ? WHERE seq = ?", at, seq)
    assert audit_chain.verify(journal).ok
    assert first.detail["at"] == first.at and latest.detail["at"] == latest.at


def test_a_checkpoint_an_earlier_version_wrote_without_its_time_still_verifies(journal_url: str) -> None:
    """Checkpoints written before their summary recorded their time: the latest is held to its `prune`
    event's time, and it verifies as it is."""
    journal = open_journal(journal_url)
    _history(journal, 6)
    audit_chain.prune(journal, ts(T0 + timedelta(minutes=2)), ts(T0 + timedelta(days=2)))
    [made] = audit_chain.checkpoints(journal)
    detail = {k: v for k, v in made.detail.items() if k != "at"}
    with raw(journal_url) as sql:
        sql("UPDATE audit_checkpoints SET detail = ? WHERE seq = ?", json.dumps(detail, sort_keys=True), made.seq)

    def earlier(row: dict[str, Any]) -> None:
        if row["step"] == "prune":
            prune = json.loads(row["detail"])
            prune["checkpoint_sha256"] = audit_chain._digest(detail)
            row["detail"] = json.dumps(prune, sort_keys=True)

    rechain(journal_url, earlier)
    report = audit_chain.verify(journal)
    assert report.ok, report.problem
    with raw(journal_url) as sql:
        sql("UPDATE audit_checkpoints SET at = ? WHERE seq = ?", ts(T0 + timedelta(days=900)), made.seq)
    assert not audit_chain.verify(journal).ok, "its prune event's time still covers it"


# ------------------------------------------------------------------ kept links (#2, #9)
def _policy_file(tmp_path: Path, keep_history: str | None = None) -> Path:
    text = _POLICY_FILE.format(path=tmp_path / "j.db")
    if keep_history:
        text = text.replace("[rotator]\n", f'[rotator]\nkeep_history = "{keep_history}"\n')
    (tmp_path / "rotator.toml").write_text(text)
    return tmp_path / "j.db"


def _rewrite_and_prune(url: str, now: datetime, cutoff: datetime, *, backdate: timedelta | None = None) -> None:
    """The attack: the failed revocation (seq 4) made ok, every later link recomputed and the head moved;
    then a prune of everything before ``cutoff`` (rotator's own prune: its records are true to it).
    ``backdate``: every event's time moved that far back too, so that the prune looks like one
    that kept keep_history."""
    def edit(row: dict[str, Any]) -> None:
        if row["seq"] == 4:
            row["result"] = "ok"
        if backdate is not None:
            row["at"] = ts(datetime.fromisoformat(row["at"][:-1]).replace(tzinfo=UTC) - backdate)

    rechain(url, edit)
    journal = open_journal(url)
    audit_chain.prune(journal, ts(cutoff), ts(now))
    journal.close()


def _events_ten_days_old(url: str, now: datetime) -> audit_chain.ChainReport:
    journal = open_journal(url)
    for i in range(20):
        journal.record_event(now - timedelta(days=10) + timedelta(hours=i), "p", f"run{i:02d}", "revoke_old",
                             "failed" if i == 3 else "ok", {"token_id": f"tok{i}"})
    report = audit_chain.verify(journal)
    journal.close()
    return report


def _kept(url: str, seq: int) -> tuple[str, str]:
    """Link ``seq`` as `audit verify` would have printed it had it been the head: (SEQ:HASH, SEQ:HASH@TIME)."""
    with raw(url) as sql:
        [(digest, at)] = sql("SELECT hash, at FROM events WHERE seq = ?", seq)
    return f"{seq}:{digest}", f"{seq}:{digest}@{at}"


def test_a_rewrite_hidden_by_a_short_prune_fails_the_kept_link(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """The review's attack: a failed revocation turned ok, every hash recomputed, then rotator's own
    prune with a cutoff 2 days back (the floor of keep_history is a day; the file's is 400d). The
    kept link counted as "pruned since, cannot be checked", exit 0. A prune that kept less than the
    file's keep_history is not rotator's: exit 4, with or without the link's time."""
    url = f"sqlite:///{_policy_file(tmp_path)}"
    now = datetime.now(UTC)
    _events_ten_days_old(url, now)
    bare, timed = _kept(url, 10)
    _rewrite_and_prune(url, now, now - timedelta(days=2))
    for kept in (bare, timed):
        code, out, err = _cli(tmp_path, capsys, "audit", "verify", "--expect", kept)
        assert code == 4, (kept, out, err)
        assert "link 10 is not in the journal, and no prune of rotator's deleted it" in err, err
        assert "pruned since" not in out, out
    code, out, err = _cli(tmp_path, capsys, "audit", "verify", "--expect", bare)
    assert "keep_history (400d) keeps until" in err, err


def test_a_kept_link_s_time_catches_a_rewrite_that_backdated_every_event(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """A rewriter can move every event's time back as well, and then prune as rotator would with the
    file's keep_history: every record in the journal agrees, and a bare SEQ:HASH can only be said to
    be pruned. The time kept with the link (SEQ:HASH@TIME, as `audit verify` prints it) is the
    auditor's: a link 10 days old is gone although keep_history keeps 400 days: exit 4."""
    url = f"sqlite:///{_policy_file(tmp_path)}"
    now = datetime.now(UTC)
    _events_ten_days_old(url, now)
    bare, timed = _kept(url, 10)
    _rewrite_and_prune(url, now, now - timedelta(days=400), backdate=timedelta(days=500))
    code, out, err = _cli(tmp_path, capsys, "audit", "verify", "--expect", bare)
    assert code == 0 and "1 pruned since, cannot be checked: seq 10" in out, (out, err)
    code, out, err = _cli(tmp_path, capsys, "audit", "verify", "--expect", timed)
    assert code == 4, (out, err)
    assert f"it was kept with its time {timed.split('@')[1]}, and keep_history (400d) keeps every event since" \
        in err, err


def test_verify_prints_the_head_with_its_time_and_takes_it_back(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """`audit verify` prints its head as SEQ:HASH@TIME, which --expect takes as it is (and SEQ:HASH as
    before); a time that is not one is exit 2."""
    url = f"sqlite:///{_policy_file(tmp_path)}"
    _events_ten_days_old(url, datetime.now(UTC))
    _bare, head = _kept(url, 20)
    code, out, _ = _cli(tmp_path, capsys, "audit", "verify")
    assert code == 0 and f"audit chain OK: 20 events, head {head}\n" == out, out
    code, out, _ = _cli(tmp_path, capsys, "audit", "verify", "--output", "json")
    assert json.loads(out)["head_at"] == head.split("@")[1]
    for kept in (head, head.split("@")[0]):
        code, out, err = _cli(tmp_path, capsys, "audit", "verify", "--expect", kept)
        assert code == 0 and "kept links: 1 of 1 held" in out, (out, err)
    code, _, err = _cli(tmp_path, capsys, "audit", "verify", "--expect", head.split("@")[0] + "@yesterday")
    assert code == 2 and "'yesterday' after the @ is not an RFC 3339 time" in err, err


def test_a_prune_that_kept_less_than_the_file_says_is_checked_with_keep_history(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`rotator prune --keep-history 2d` keeps less than the file's 400d: a link it deleted fails the
    check against the file's value, and passes as pruned with `audit verify --keep-history 2d` (held
    to the same floor as prune's: 1h is exit 2)."""
    url = f"sqlite:///{_policy_file(tmp_path)}"
    _events_ten_days_old(url, datetime.now(UTC))
    bare, timed = _kept(url, 10)
    code, out, err = _cli(tmp_path, capsys, "prune", "--keep-history", "2d")
    assert code == 0, (out, err)
    code, out, err = _cli(tmp_path, capsys, "audit", "verify", "--expect", timed)
    assert code == 4 and "pass the shortest it kept as --keep-history" in err, (out, err)
    for kept in (bare, timed):
        code, out, err = _cli(tmp_path, capsys, "audit", "verify", "--keep-history", "2d", "--expect", kept)
        assert code == 0 and "1 pruned since, cannot be checked: seq 10" in out, (out, err)
    code, out, err = _cli(tmp_path, capsys, "audit", "verify", "--keep-history", "1h", "--expect", timed)
    assert code == 2 and "--keep-history is 1h, shorter than one day" in err, err


def test_link_0_is_the_chain_s_start_not_a_pruned_link(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--expect 0:<anything>` passed on a journal never pruned ("1 pruned since"): seq 0 is the chain's
    start, whose hash is fixed. A link no checkpoint covers is never said to be pruned."""
    url = f"sqlite:///{_policy_file(tmp_path)}"
    _events_ten_days_old(url, datetime.now(UTC))
    code, out, err = _cli(tmp_path, capsys, "audit", "verify", "--expect", f"0:{'0' * 64}")
    assert code == 0 and "kept links: 1 of 1 held" in out, (out, err)
    code, out, err = _cli(tmp_path, capsys, "audit", "verify", "--expect", f"0:{'1' * 64}")
    assert code == 4 and "link 0 is the chain's start" in err and "pruned" not in out, (out, err)


# ------------------------------------------------------------------ what the verifier prints (#4)
SPOOF = "\r\x1b[2Kaudit chain OK: 14 events\x1b[8m"


def test_an_edited_row_s_text_cannot_act_on_the_terminal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The problem quotes fields of the very row found edited: a carriage return and escape sequences
    put into its policy showed "audit chain OK" over the BROKEN line, and concealed what followed."""
    url = f"sqlite:///{_policy_file(tmp_path)}"
    _events_ten_days_old(url, datetime.now(UTC))
    with raw(url) as sql:
        sql("UPDATE events SET policy = ? WHERE seq = 13", SPOOF)
    code, out, err = _cli(tmp_path, capsys, "audit", "verify")
    assert code == 4
    assert "\x1b" not in out + err and "\r" not in out + err, (out, err)
    assert out.startswith("audit chain BROKEN: event seq 13 at ") and "(\\x0d\\x1b[2Kaudit chain OK" in out, out
    code, out, err = _cli(tmp_path, capsys, "audit", "verify", "--output", "json")
    assert json.loads(out)["broken"]["policy"] == SPOOF, "JSON keeps the value (json.dumps escapes it)"


def test_a_chained_time_is_written_out_in_the_head_too() -> None:
    """A link appended with a time that is no time (the walk checks links, not their times) is the head
    that an OK verification prints."""
    broken = audit_chain.ChainReport(ok=False, checked=0, head_seq=1, head_hash="h", start_seq=0, problem=SPOOF)
    assert broken.text() == "audit chain BROKEN: \\x0d\\x1b[2Kaudit chain OK: 14 events\\x1b[8m"
    report = audit_chain.ChainReport(ok=True, checked=1, head_seq=1, head_hash="h", start_seq=0, head_at=SPOOF)
    assert "\x1b" not in report.text() and "\r" not in report.text(), report.text()


def test_unlinked_rows_named_in_a_problem_are_written_out(journal_url: str) -> None:
    journal = open_journal(journal_url)
    _history(journal, 2)
    with raw(journal_url) as sql:
        sql("INSERT INTO events (at, policy, run_id, step, result, detail) VALUES (?, ?, NULL, 'plan', 'ok', '{}')",
            ts(T0 + timedelta(days=5)), SPOOF)
    report = audit_chain.verify(journal)
    assert not report.ok and "\x1b" not in str(report.problem) and "\\x1b[2K" in str(report.problem), report


def test_a_kept_link_s_hash_read_from_the_journal_is_written_out(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = _policy_file(tmp_path)
    _events_ten_days_old(f"sqlite:///{path}", datetime.now(UTC))
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("UPDATE events SET hash = ? WHERE seq = 5", ("\x1b]0;PWNED\x07" + "0" * 50,))
    finally:
        conn.close()
    code, out, err = _cli(tmp_path, capsys, "audit", "verify", "--expect", f"5:{'f' * 64}")
    assert code == 4 and "link 5 has hash \\x1b]0;PWNED\\x07" in err, err
    assert "\x1b" not in out + err and "\x07" not in out + err, (out, err)
