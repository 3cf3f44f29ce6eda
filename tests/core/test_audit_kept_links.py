"""A kept link (`rotator audit verify --expect SEQ:HASH@TIME`) that a checkpoint records but the events
no longer hold is a deleted link (rotator/core/audit_chain.py, check_kept_links).

Every prune writes a checkpoint at the last link it deletes, whatever its cutoff; with a batch of
one, at every link. The check took the checkpoint's hash for the link itself and said "held": a
prune with a cutoff of now, by anyone with write access, deleted the recent history the kept link
vouches for and still passed, as did a checkpoint summary forged after it. Such a link goes through
the keep_history test of a missing one, and passes only as "pruned since, cannot be checked"."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rotator.core import audit_chain
from rotator.core.audit_chain import KeptLink
from rotator.core.journal import open_journal, ts
from tests.core.test_audit_chain import _POLICY_FILE, _cli, raw


@pytest.fixture(params=["sqlite", "postgresql"])
def journal_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'j.db'}"
    return str(request.getfixturevalue("pg_url"))


def _policy_file(tmp_path: Path, keep_history: str | None = None) -> Path:
    """rotator.toml in ``tmp_path`` with its journal j.db (keep_history: the file's, default 400d)."""
    path = tmp_path / "j.db"
    text = _POLICY_FILE.format(path=path)
    if keep_history is not None:
        text = text.replace("[rotator]\n", f'[rotator]\nkeep_history = "{keep_history}"\n')
    (tmp_path / "rotator.toml").write_text(text)
    (tmp_path / "t").write_text("x")
    return path


def _history(url: str, start: datetime, n: int = 8) -> tuple[str, str]:
    """``n`` events a minute apart from ``start`` (one a failed revocation); the head as `audit verify`
    prints it, and without its time: (SEQ:HASH@TIME, SEQ:HASH)."""
    journal = open_journal(url)
    for i in range(n):
        journal.record_event(start + timedelta(minutes=i), "p", f"run{i}", "revoke_old",
                             "failed" if i == 3 else "ok", {"token_id": f"tok{i}"})
    head = audit_chain.verify(journal).kept_link()
    journal.close()
    return head, head.split("@")[0]


def _prune(url: str, cutoff: datetime, now: datetime, batch: int = audit_chain.PRUNE_BATCH) -> None:
    journal = open_journal(url)
    audit_chain.prune(journal, ts(cutoff), ts(now), batch=batch)
    journal.close()


@pytest.mark.parametrize("batch", [audit_chain.PRUNE_BATCH, 1])
def test_a_recent_kept_link_a_checkpoint_records_fails_after_a_prune_of_now(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], batch: int) -> None:
    """The review's case: the head kept an hour ago, then rotator's own prune with a cutoff of now
    (keep_history is 400d). The checkpoint sits at the kept link's seq with its hash: exit 0 "1 of 1
    held". The link is gone within keep_history: exit 4, with its time or without."""
    path = _policy_file(tmp_path)
    url = f"sqlite:///{path}"
    now = datetime.now(UTC)
    timed, bare = _history(url, now - timedelta(hours=1))
    for kept in (timed, bare):
        code, out, err = _cli(tmp_path, capsys, "audit", "verify", "--expect", kept)
        assert code == 0 and "kept links: 1 of 1 held" in out, (out, err)
    _prune(url, now, now, batch=batch)
    with raw(url) as sql:
        assert sql("SELECT seq FROM audit_checkpoints WHERE seq = 8"), "a checkpoint at the kept link"
        assert not sql("SELECT seq FROM events WHERE seq <= 8"), "the link itself is gone"
    for kept in (timed, bare):
        code, out, err = _cli(tmp_path, capsys, "audit", "verify", "--expect", kept)
        assert code == 4, (kept, out, err)
        assert "link 8 is not in the journal (a pruning checkpoint records its hash" in err, err
        assert "and no prune of rotator's deleted it" in err, err
        assert "held" not in out.replace("0 of 1 held", "") and "pruned since" not in out, out
    code, out, err = _cli(tmp_path, capsys, "audit", "verify", "--expect", timed)
    assert f"it was kept with its time {timed.split('@')[1]}, and keep_history (400d) keeps" in err, err


def test_a_forged_checkpoint_summary_at_the_kept_link_fails(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """The variant: after that prune, the checkpoint's summary has its failure erased and the `prune`
    event is re-linked with the new digest: the walk and the report read the forgery; the kept
    link does not pass it."""
    path = _policy_file(tmp_path)
    url = f"sqlite:///{path}"
    now = datetime.now(UTC)
    timed, _bare = _history(url, now - timedelta(hours=1))
    _prune(url, now, now)
    with raw(url) as sql:
        [(seq, digest, detail)] = sql("SELECT seq, hash, detail FROM audit_checkpoints")
        summary = json.loads(detail)
        summary["policies"]["p"]["failures"] = 0
        sql("UPDATE audit_checkpoints SET detail = ? WHERE seq = ?", json.dumps(summary, sort_keys=True), seq)
        [(pseq, pat, pdetail, instance)] = sql("SELECT seq, at, detail, instance FROM events WHERE step = 'prune'")
        relinked = {**json.loads(pdetail), "checkpoint_sha256": audit_chain._digest(summary)}
        text = json.dumps(relinked, sort_keys=True)
        event = {"seq": pseq, "at": pat, "policy": "(journal)", "run_id": None, "step": "prune", "result": "ok",
                 "detail": text, "instance": instance}
        head = audit_chain.link(digest, event)
        sql("UPDATE events SET detail = ?, hash = ? WHERE seq = ?", text, head, pseq)
        sql("UPDATE audit_head SET hash = ? WHERE chain = 'journal'", head)
    code, out, err = _cli(tmp_path, capsys, "audit", "verify")
    assert code == 0, "the walk alone sees nothing"
    code, out, err = _cli(tmp_path, capsys, "audit", "verify", "--expect", timed)
    assert code == 4 and "link 8 is not in the journal" in err, (out, err)


@pytest.mark.parametrize("how", ["timed", "bare"])
def test_a_kept_link_older_than_keep_history_pruned_into_a_checkpoint_is_unchecked_not_broken(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], how: str) -> None:
    """The legitimate case: `rotator prune` with the file's keep_history deletes a head kept 500 days
    ago; the checkpoint at its seq records it. It cannot be checked, and says so: exit 0."""
    _policy_file(tmp_path)
    url = f"sqlite:///{tmp_path / 'j.db'}"
    timed, bare = _history(url, datetime.now(UTC) - timedelta(days=500))
    code, out, err = _cli(tmp_path, capsys, "prune")
    assert code == 0, (out, err)
    with raw(url) as sql:
        assert sql("SELECT seq FROM audit_checkpoints") == [(8,)]
    code, out, err = _cli(tmp_path, capsys, "audit", "verify", "--expect", timed if how == "timed" else bare)
    assert code == 0, (out, err)
    assert "kept links: 0 of 1 held; 1 pruned since, cannot be checked: seq 8" in out, out


def test_a_checkpoint_recording_another_hash_for_the_kept_link_fails(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _policy_file(tmp_path)
    url = f"sqlite:///{tmp_path / 'j.db'}"
    timed, _bare = _history(url, datetime.now(UTC) - timedelta(days=500))
    assert _cli(tmp_path, capsys, "prune")[0] == 0
    other = f"8:{'a' * 64}@{timed.split('@')[1]}"
    code, out, err = _cli(tmp_path, capsys, "audit", "verify", "--expect", other)
    assert code == 4, (out, err)
    assert "(as the pruning checkpoint at its seq records it), not the kept aaaaaaaaaaaaaaaa...: the chain was " \
        "rewritten" in err, err


def test_keep_history_raised_after_a_prune_is_verified_with_the_one_the_prune_kept(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """keep_history was 30d when a prune deleted the head kept 40 days ago, and is 400d now: against
    the file's value the link is gone too early (exit 4, with the hint); `audit verify
    --keep-history 30d` says what the prune kept, and the link is unchecked (exit 0)."""
    _policy_file(tmp_path, keep_history="30d")
    url = f"sqlite:///{tmp_path / 'j.db'}"
    timed, bare = _history(url, datetime.now(UTC) - timedelta(days=40))
    assert _cli(tmp_path, capsys, "prune")[0] == 0
    code, out, err = _cli(tmp_path, capsys, "audit", "verify", "--expect", timed)
    assert code == 0 and "1 pruned since, cannot be checked: seq 8" in out, (out, err)
    _policy_file(tmp_path, keep_history="400d")
    for kept in (timed, bare):
        code, out, err = _cli(tmp_path, capsys, "audit", "verify", "--expect", kept)
        assert code == 4 and "pass the shortest it kept as --keep-history" in err, (out, err)
        code, out, err = _cli(tmp_path, capsys, "audit", "verify", "--keep-history", "30d", "--expect", kept)
        assert code == 0 and "1 pruned since, cannot be checked: seq 8" in out, (out, err)


def test_check_kept_links_on_each_backend(journal_url: str) -> None:
    """The same through the API, on SQLite and PostgreSQL: a link a checkpoint records (batch=1: every
    pruned link has one) is pruned only when keep_history allows it, and the new head is held."""
    now = datetime.now(UTC)
    start = now - timedelta(days=3)
    journal = open_journal(journal_url)
    for i in range(4):
        journal.record_event(start + timedelta(minutes=i), "p", f"run{i}", "plan", "ok", {})
    before = audit_chain.verify(journal)
    kept = KeptLink(before.head_seq, before.head_hash, start + timedelta(minutes=3))
    audit_chain.prune(journal, ts(now - timedelta(days=1)), ts(now), batch=1)  # keeps a day
    after = audit_chain.verify(journal)
    assert after.ok and after.start_seq == kept.seq
    head = KeptLink(after.head_seq, after.head_hash)
    problems, pruned = audit_chain.check_kept_links(journal, after, [kept, head], timedelta(days=400), now)
    assert pruned == [] and len(problems) == 1, problems
    assert problems[0].startswith(f"link {kept.seq} is not in the journal (a pruning checkpoint records its hash")
    problems, pruned = audit_chain.check_kept_links(journal, after, [kept, head], timedelta(days=1), now)
    assert (problems, pruned) == ([], [kept.seq])
    journal.close()
