"""A prune and a run a person abandoned (`recover --abandon`, Engine.abandon_run).

Before, a prune deleted an abandoned run's row with its `recover` / `abandoned` event: the candidate's
id, where it was minted and the reason went, the chain still verified and the report exited 0 without
a trace of it. An abandoned tag search left nothing on its run's row to begin with. Now an abandoned
run's row is never pruned (as a dismissed revocation's is not), and each checkpoint's summary records
the abandonments of the history it prunes (run, time, token id, where it minted, the masked reason,
whether a tag search), which the report counts and shows in the period they fall in.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from rotator.core import audit_chain
from rotator.core.errors import TransientError
from rotator.core.journal import RunRecord, RunState, ts
from rotator.core.revocation_rule import abandoned_note
from rotator.observe import report
from tests.engine.test_issuer_target import A, Clusters
from tests.engine.test_state_machine import POLICY, START, World
from tests.harness import offline_policy
from tests.observe.test_report_abandoned import REASON, SHOWN, _evidence, _stuck_on_a

TOKEN_VALUE = "M.V1.abcdefgh12345678"  # (inside REASON: never in a checkpoint, never shown)


@pytest.fixture
def clusters(tmp_path: Path) -> Clusters:
    return Clusters(tmp_path, f"sqlite:///{tmp_path / 'journal.db'}")


def _prune_all(world: World) -> audit_chain.PruneResult:
    """A prune whose cutoff is an hour before now: everything older goes that may."""
    now = world.clock.now()
    return audit_chain.prune(world.journal, ts(now - timedelta(hours=1)), ts(now))


def _records(evidence: report.Evidence, record: str) -> list[dict[str, str]]:
    return [r for r in csv.DictReader(io.StringIO(report.render(evidence, "csv"))) if r["record"] == record]


def test_a_full_prune_keeps_an_abandoned_run_and_its_checkpoint_records_the_abandonment(
        clusters: Clusters, tmp_path: Path) -> None:
    world = clusters.world
    run_id, candidate = _stuck_on_a(clusters)
    clusters.engine().abandon_run(run_id, REASON)
    abandoned_at = world.clock.now()
    world.clock.advance(timedelta(days=1))
    period = (abandoned_at - timedelta(days=2), abandoned_at + timedelta(hours=1))
    said = f"abandoned by hand: candidate {candidate} not revoked, may still be valid on {A}; reason: {SHOWN}"
    before = _evidence(clusters, tmp_path, *period).policies[0]
    assert before.summary()["runs_abandoned"] == 1

    result = _prune_all(world)
    assert result.events > 0 and result.runs == 0, result.text()  # (the other, the newest success, stays too)
    assert world.journal.get_run(run_id) is not None, "an abandoned run's row is never pruned"
    assert not [e for e in world.journal.events(POLICY, limit=1000) if e["step"] == "recover"], "the event went"
    assert result.checkpoint is not None
    [record] = result.checkpoint.detail["policies"][POLICY][audit_chain.ABANDONED]
    assert record == {"run_id": run_id, "at": ts(abandoned_at), "token_id": candidate, "minted_on": A,
                      "reason": SHOWN, "tag_search": False}
    assert TOKEN_VALUE not in json.dumps(result.checkpoint.detail)

    evidence = _evidence(clusters, tmp_path, *period)
    [p] = evidence.policies
    assert evidence.chain.ok and evidence.not_in_chain == [] and evidence.revocations_not_in_chain == []
    assert p.summary()["runs_abandoned"] == 1 and p.abandoned == [run_id]
    [rotation] = [r for r in p.rotations if r.run_id == run_id]
    assert (rotation.state, rotation.note) == (RunState.FAILED, said)
    [pruned] = p.pruned
    assert pruned[audit_chain.ABANDONED] == [record]  # (JSON: the checkpoint's summary as it is)
    [row] = _records(evidence, "pruned")
    assert row["runs_abandoned"] == "1"


def test_a_pruned_tag_search_abandonment_is_counted_and_shown_from_the_checkpoint(
        clusters: Clusters, tmp_path: Path) -> None:
    """A published run's tag search ended by hand: its row keeps nothing of it (the search is cleared),
    and once a later run published and the tokens were revoked, a prune deletes the row. The
    checkpoint's record is all there is."""
    world = clusters.world
    world.bootstrap()
    clusters.a.fail_next("mint", TransientError("issuer: no answer (simulated)"))
    run_id = world.engine().rotate().run_id or ""
    world.clock.advance(timedelta(minutes=10))
    clusters.use(clusters.b)
    clusters.engine().abandon_run(run_id, REASON)
    abandoned_at = world.clock.now()
    clusters.use(clusters.a)  # (pointed back: its revocations are done there, and nothing keeps its runs)
    world.clock.advance(timedelta(hours=2))
    assert clusters.engine().rotate().ok  # the tag-searched run is no longer the newest
    world.clock.advance(timedelta(hours=2))
    clusters.engine().revoke_due()
    assert {r.state for r in world.journal.revocations(POLICY)} == {"done"}
    world.clock.advance(timedelta(days=1))
    period = (abandoned_at - timedelta(days=2), abandoned_at + timedelta(hours=1))
    assert _evidence(clusters, tmp_path, *period).policies[0].summary()["runs_abandoned"] == 1

    result = _prune_all(world)
    assert world.journal.get_run(run_id) is None, "a published run's row goes: it says nothing of the abandonment"
    assert result.checkpoint is not None
    [record] = result.checkpoint.detail["policies"][POLICY][audit_chain.ABANDONED]
    assert (record["run_id"], record["tag_search"], record["reason"], record["minted_on"]) == (run_id, True, SHOWN, A)

    evidence = _evidence(clusters, tmp_path, *period)
    [p] = evidence.policies
    said = (f"tag search abandoned by hand: any token tagged rotator:{POLICY}:{run_id} that a mint try without an "
            f"answer created late not revoked, may still be valid on {A}; reason: {SHOWN}")
    assert p.summary()["runs_abandoned"] == 1 and p.abandoned == [run_id]
    assert p.abandoned_without_row == [{"run_id": run_id, "at": ts(abandoned_at), "note": said,
                                        "checkpoint_seq": result.checkpoint.seq}]
    assert evidence.not_in_chain == [] and evidence.revocations_not_in_chain == []
    data = json.loads(report.render(evidence, "json"))["policies"][0]
    assert data["summary"]["runs_abandoned"] == 1 and data["abandoned_without_run_row"][0]["note"] == said
    [row] = _records(evidence, "abandoned_without_run_row")
    assert (row["run_id"], row["at"]) == (run_id, ts(abandoned_at)) and row["note"].startswith(said)
    page = report.render(evidence, "html")
    assert "tag search abandoned by hand: any token tagged" in page and "(1 abandoned)" in page
    for shown in (report.render(evidence, "json"), report.render(evidence, "csv"), page):
        assert TOKEN_VALUE not in shown
    # another period does not count it
    later = _evidence(clusters, tmp_path, abandoned_at + timedelta(hours=1), abandoned_at + timedelta(days=3))
    assert later.policies[0].summary()["runs_abandoned"] == 0 and later.policies[0].abandoned_without_row == []


def test_other_failed_runs_are_still_pruned(tmp_path: Path) -> None:
    """Only an abandoned run's row is kept: a failed run with another error, or none (NULL), goes."""
    world = World(tmp_path)
    journal = world.journal
    old = START - timedelta(days=30)

    def run(run_id: str, state: str, error: str | None, at: datetime, token: str | None = None) -> None:
        journal.begin_run(RunRecord(run_id=run_id, policy=POLICY, state=state, kind="rotate", started_at=at,
                                    updated_at=at, old_token_id=None, new_token_id=token, error=error,
                                    published_at=at if state == RunState.DONE else None, finished_at=at))
        journal.record_event(at, POLICY, run_id, "plan", "ok", {"kind": "rotate"})

    run("no-error", RunState.FAILED, None, old)
    run("an-error", RunState.FAILED, "mint failed: 503", old)
    run("abandoned", RunState.FAILED, abandoned_note("cluster gone", A, "elsewhere"), old)
    run("newest", RunState.DONE, None, old + timedelta(days=1), token="tok")
    result = _prune_all(world)
    assert result.runs == 2, result.text()
    assert sorted(r.run_id for r in journal.runs(POLICY, limit=10)) == ["abandoned", "newest"]


def test_a_checkpoint_of_an_earlier_version_reads_as_no_abandonment(tmp_path: Path) -> None:
    """A summary without the key (every one written before) holds none, and one with nothing to
    record does not carry it."""
    world = World(tmp_path)
    world.bootstrap()
    world.clock.advance(timedelta(days=1))
    result = _prune_all(world)
    assert result.checkpoint is not None
    entry = result.checkpoint.detail["policies"][POLICY]
    assert not {audit_chain.ABANDONED, audit_chain.EMERGENCIES, audit_chain.REPAIRS} & set(entry)
    now = world.clock.now()
    evidence = report.build(world.journal, [offline_policy(tmp_path, POLICY)], now - timedelta(days=2), now, now)
    [p] = evidence.policies
    assert (p.abandoned, p.abandoned_without_row, p.emergencies, p.repairs) == ([], [], [], [])
    assert p.summary()["runs_abandoned"] == 0
    assert [row["runs_abandoned"] for row in _records(evidence, "pruned")] == ["0"]


def test_the_prune_s_abandoned_prefix_is_the_engine_s() -> None:
    """audit_chain writes the prefix out (importing revocation_rule would load logging on status's cached
    path): a change of the note's wording must change both, or prune would delete abandoned runs again."""
    from rotator.core import audit_chain, revocation_rule

    assert audit_chain.ABANDONED_PREFIX == revocation_rule.ABANDONED_PREFIX
    assert revocation_rule.abandoned_note("why", "minted-on", "target").startswith(audit_chain.ABANDONED_PREFIX)
