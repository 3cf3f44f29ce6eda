"""`rotator report` and a run a person abandoned (`recover --abandon`, Engine.abandon_run).

Before, the report said of every `failed` run "new token discarded, old kept", an abandoned run's too,
whose candidate was never revoked and may still be valid on the cluster it minted on; the reason and the
`recover` / `abandoned` event appeared nowhere. Now it is shown as a dismissed revocation is: in every
format, with its reason (masked), counted in the summary, and with no verdict of its own. The chain's
event decides; the run's row stands in where a prune took the event, and a row that says so while the
chain, which holds that time, has no such event is a finding (written outside rotator).

Two in-memory clusters (tests/engine/test_issuer_target.py) on a SQLite journal.
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from rotator.core import audit_chain
from rotator.core.errors import NeedsAttention, TransientError
from rotator.core.journal import RunState, ts
from rotator.core.revocation_rule import abandoned_note
from rotator.observe import report
from tests.engine.test_issuer_target import A, B, Clusters, _active, _gone
from tests.engine.test_state_machine import POLICY, Crash
from tests.harness import offline_policy

#: a person's reason, with what HTML must escape and a pasted management token, which is never shown
REASON = "cluster A <decommissioned> & INC-42, its key was M.V1.abcdefgh12345678"
SHOWN = "cluster A <decommissioned> & INC-42, its key was ***"


@pytest.fixture
def clusters(tmp_path: Path) -> Clusters:
    return Clusters(tmp_path, f"sqlite:///{tmp_path / 'journal.db'}")


def _evidence(clusters: Clusters, tmp_path: Path, start: datetime, end: datetime) -> report.Evidence:
    world = clusters.world
    return report.build(world.journal, [offline_policy(tmp_path, POLICY)], start, end, world.clock.now())


def _stuck_on_a(clusters: Clusters) -> tuple[str, str]:
    """A rotation killed after minting on A, then A decommissioned and the policy pointed at B: recovery
    needs attention (a `recover` / `error` failure). The run's id and its candidate's."""
    world = clusters.world
    world.bootstrap()
    world.crash_at = "minted"
    with pytest.raises(Crash):
        world.engine().rotate()
    (run,) = world.journal.open_runs(POLICY)
    assert run.new_token_id is not None
    world.clock.advance(timedelta(minutes=5))
    _gone(clusters.a)
    clusters.use(clusters.b)
    with pytest.raises(NeedsAttention):
        clusters.engine().recover()
    return run.run_id, run.new_token_id


def _csv_rows(evidence: report.Evidence) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(report.render(evidence, "csv"))))


def test_an_abandoned_run_is_reported_with_its_reason_in_every_format_and_leaves_the_verdict(
        clusters: Clusters, tmp_path: Path) -> None:
    world = clusters.world
    run_id, candidate = _stuck_on_a(clusters)
    started = world.clock.now()
    before = _evidence(clusters, tmp_path, started - timedelta(days=1), started + timedelta(days=1))
    world.clock.advance(timedelta(days=2))  # abandoned in a later period than the one the run started in
    clusters.engine().abandon_run(run_id, REASON)
    assert _active(clusters.a, candidate)
    said = f"abandoned by hand: candidate {candidate} not revoked, may still be valid on {A}; reason: {SHOWN}"

    now = world.clock.now()
    for start, end, counted in ((now - timedelta(hours=1), now + timedelta(hours=1), 1),  # abandoned in it
                                (started - timedelta(days=1), started + timedelta(days=1), 0)):  # started in it
        evidence = _evidence(clusters, tmp_path, start, end)
        [p] = evidence.policies
        [rotation] = [r for r in p.rotations if r.run_id == run_id]
        assert (rotation.state, rotation.note) == (RunState.FAILED, said), rotation
        summary = p.summary()
        assert summary["runs_abandoned"] == counted, summary
        assert evidence.not_in_chain == [] and evidence.revocations_not_in_chain == [], "no finding: exit 0"
        assert p.abandoned_not_in_chain == []
        if counted:
            continue
        [failure] = [f for f in p.failures if f.run_id == run_id]
        assert (failure.step, failure.result, failure.ended) == ("recover", "error", said), failure
        # like a dismissal, no verdict of its own: the period's verdict is the one it had before
        [was] = before.policies
        assert (summary["within_max_age"], summary["within_90d"], summary["rotations"]) == \
            (was.summary()["within_max_age"], was.summary()["within_90d"], was.summary()["rotations"])
        assert summary["within_max_age"] is True

        text = report.render(evidence, "json")
        data = json.loads(text)["policies"][0]
        assert [r["note"] for r in data["rotations"] if r["run_id"] == run_id] == [said]
        assert [f["ended"] for f in data["failures"] if f["run_id"] == run_id] == [said]
        rows = _csv_rows(evidence)
        [row] = [r for r in rows if r["record"] == "rotation" and r["run_id"] == run_id]
        assert (row["state"], row["note"]) == ("failed", said), row
        assert [r["ended"] for r in rows if r["record"] == "failure" and r["run_id"] == run_id] == [said]
        page = report.render(evidence, "html")
        assert ("failed (abandoned by hand: candidate " + candidate + " not revoked, may still be valid on "
                + A + "; reason: cluster A &lt;decommissioned&gt; &amp; INC-42, its key was ***)") in page
        for shown in (text, report.render(evidence, "csv"), page):
            assert "new token discarded" not in shown and "M.V1.abcdefgh12345678" not in shown
    evidence = _evidence(clusters, tmp_path, now - timedelta(hours=1), now + timedelta(hours=1))
    [summary] = [r for r in _csv_rows(evidence) if r["record"] == "summary"]
    assert summary["runs_abandoned"] == "1", summary
    assert json.loads(report.render(evidence, "json"))["policies"][0]["summary"]["runs_abandoned"] == 1
    assert "(1 abandoned)</td>" in report.render(evidence, "html")


def test_a_pruned_abandon_event_leaves_the_row_to_say_it(clusters: Clusters, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The event went with a prune of an earlier version, whose checkpoint records no abandonment (a
    prune keeps the row), so the row's reason stands in, as a dismissed revocation's row does; no
    finding. (This version's checkpoint records it: tests/observe/test_prune_abandoned.py.)"""
    world = clusters.world
    run_id, candidate = _stuck_on_a(clusters)
    clusters.engine().abandon_run(run_id, REASON)
    world.clock.advance(timedelta(days=1))
    monkeypatch.setattr(audit_chain, "_decisions", lambda *_args: None)  # an earlier version's summary

    result = audit_chain.prune(world.journal, ts(world.clock.now() - timedelta(hours=1)), ts(world.clock.now()))
    assert result.events > 0 and result.runs == 0
    assert result.checkpoint is not None and audit_chain.ABANDONED not in result.checkpoint.detail["policies"][POLICY]
    assert not [e for e in world.journal.events(POLICY, limit=1000) if e["step"] == "recover"], "the event went"
    assert world.journal.get_run(run_id) is not None, "the row stays"

    now = world.clock.now()
    evidence = _evidence(clusters, tmp_path, now - timedelta(days=2), now + timedelta(hours=1))
    [p] = evidence.policies
    [rotation] = [r for r in p.rotations if r.run_id == run_id]
    assert rotation.note == f"abandoned by hand: candidate {candidate} not revoked, may still be valid on {A}; " \
                            f"reason: {SHOWN}", rotation.note
    assert p.summary()["runs_abandoned"] == 1 and p.abandoned_not_in_chain == [] and evidence.not_in_chain == []


def test_a_row_that_says_abandoned_without_its_event_is_a_finding(clusters: Clusters, tmp_path: Path) -> None:
    """A run recovery closed (its candidate revoked), whose row was then edited to say it was abandoned:
    the chain, which holds that time, has no such event. The report names it (the CLI's exit 4), counts
    no abandon, and says what the row claims."""
    world = clusters.world
    world.bootstrap()
    world.crash_at = "minted"
    with pytest.raises(Crash):
        world.engine().rotate()
    world.clock.advance(timedelta(minutes=5))
    world.engine().recover()
    [run] = [r for r in world.journal.runs(POLICY, limit=0) if r.kind == "rotate"]
    assert run.state == RunState.FAILED
    with sqlite3.connect(world.tmp_path / "journal.db") as conn:
        conn.execute("UPDATE runs SET error = ? WHERE run_id = ?", (abandoned_note(REASON, A, B), run.run_id))

    now = world.clock.now()
    evidence = _evidence(clusters, tmp_path, now - timedelta(days=1), now + timedelta(hours=1))
    [p] = evidence.policies
    assert p.abandoned_not_in_chain == [run.run_id] and p.summary()["runs_abandoned"] == 0
    [named] = evidence.not_in_chain
    assert named.startswith(f"{POLICY}/{run.run_id} (its row says abandoned by hand, and the audit chain"), named
    [rotation] = [r for r in p.rotations if r.run_id == run.run_id]
    assert rotation.note is not None and rotation.note.startswith("run failed; its row says abandoned by hand")
    assert rotation.note.endswith(f"reason given: {SHOWN}"), rotation.note
    assert [r["run_id"] for r in _csv_rows(evidence) if r["record"] == "abandoned_not_in_chain"] == [run.run_id]
    assert json.loads(report.render(evidence, "json"))["policies"][0]["abandoned_not_in_chain"] == [run.run_id]


def test_an_abandoned_tag_search_is_reported_on_its_published_run(clusters: Clusters, tmp_path: Path) -> None:
    """`recover --abandon` of a published run ends its tag search: the run stays published, and the report
    says what may be left on A, with the reason."""
    world = clusters.world
    world.bootstrap()
    clusters.a.fail_next("mint", TransientError("issuer: no answer (simulated)"))
    run_id = world.engine().rotate().run_id or ""
    world.clock.advance(timedelta(minutes=10))
    _gone(clusters.a)
    clusters.use(clusters.b)
    clusters.engine().abandon_run(run_id, REASON)

    now = world.clock.now()
    evidence = _evidence(clusters, tmp_path, now - timedelta(days=1), now + timedelta(hours=1))
    [p] = evidence.policies
    [rotation] = [r for r in p.rotations if r.run_id == run_id]
    assert rotation.state == RunState.PUBLISHED
    assert rotation.note == (f"tag search abandoned by hand: any token tagged rotator:{POLICY}:{run_id} that a "
                             f"mint try without an answer created late not revoked, may still be valid on {A}; "
                             f"reason: {SHOWN}"), rotation.note
    summary = p.summary()
    assert summary["runs_abandoned"] == 1 and summary["rotations"] == 2 and evidence.not_in_chain == []
