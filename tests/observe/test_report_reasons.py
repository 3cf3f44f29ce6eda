"""`rotator report` and a person's `--reason` of an emergency rotation (`rotate --revoke-previous-now`)
and of a repair (`bootstrap --replace`).

Before, neither reason appeared in any report format, though the CLI and docs/operations.md say it is
"kept in the audit chain for good and shown in every report": the report read the `emergency` events
only for revocation timing and never the `bootstrap` / `replace` event. Now a rotation row says whether
it was an emergency and carries the reason (masked, as a dismissal's), each policy lists the period's
emergency rotations and repairs with their reasons in every format, and a prune's checkpoint keeps
them, so a report of the period says the same after the prune.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from rotator.core import audit_chain
from rotator.core.errors import PermanentError
from rotator.core.journal import ts
from rotator.core.secret import Secret
from rotator.observe import report
from tests.engine.test_state_machine import POLICY, World, rotate
from tests.harness import offline_policy

#: a person's reason with what HTML escapes and a pasted token (a journal from before --reason refused
#: one may hold it): never shown
EMERGENCY = "INC-4242 <leak> & gist, its value was M.V1.abcdefgh12345678"
EMERGENCY_SHOWN = "INC-4242 <leak> & gist, its value was ***"
REPAIR = "REPAIR-777 stores wiped"
TOKEN_VALUE = "M.V1.abcdefgh12345678"


def _evidence(world: World, tmp_path: Path, start: datetime, end: datetime) -> report.Evidence:
    return report.build(world.journal, [offline_policy(tmp_path, POLICY)], start, end, world.clock.now())


def _records(evidence: report.Evidence, record: str) -> list[dict[str, str]]:
    return [r for r in csv.DictReader(io.StringIO(report.render(evidence, "csv"))) if r["record"] == record]


def _emergency_and_repair(world: World) -> tuple[str, str, str]:
    """Bootstrap, an emergency rotation, a plain one, then a repair: the runs of the last three."""
    world.bootstrap()
    world.clock.advance(timedelta(hours=1))
    emergency = world.engine().rotate(revoke_previous_now=True, reason=EMERGENCY)
    assert emergency.ok, emergency.message
    world.clock.advance(timedelta(hours=2))
    plain = rotate(world)
    world.clock.advance(timedelta(hours=2))
    value, token_id = world.issuer.tokens.create("another human token")
    repair = world.engine().bootstrap(Secret(value), token_id, None, replace=True, reason=REPAIR)
    assert repair.ok, repair.message
    return emergency.run_id or "", plain.run_id or "", repair.run_id or ""


def test_the_reasons_of_an_emergency_rotation_and_a_repair_are_in_every_format(tmp_path: Path) -> None:
    world = World(tmp_path)
    emergency, plain, repair = _emergency_and_repair(world)
    now = world.clock.now()
    evidence = _evidence(world, tmp_path, now - timedelta(days=1), now + timedelta(days=1))
    [p] = evidence.policies
    rows = {r.run_id: (r.emergency, r.reason) for r in p.rotations}
    assert rows[emergency] == (True, EMERGENCY_SHOWN)
    assert rows[plain] == (False, None)
    assert rows[repair] == (False, REPAIR)
    assert [(m["run_id"], m["reason"], m["checkpoint_seq"]) for m in p.emergencies] == \
        [(emergency, EMERGENCY_SHOWN, None)]
    assert [(m["run_id"], m["reason"], m["checkpoint_seq"]) for m in p.repairs] == [(repair, REPAIR, None)]
    summary = p.summary()
    assert (summary["emergency_rotations"], summary["repairs"]) == (1, 1)
    assert evidence.not_in_chain == [] and evidence.revocations_not_in_chain == []

    data = json.loads(report.render(evidence, "json"))["policies"][0]
    assert {r["run_id"]: (r["emergency"], r["reason"]) for r in data["rotations"]}[emergency] == (True, EMERGENCY_SHOWN)
    assert [m["reason"] for m in data["emergency_rotations"]] == [EMERGENCY_SHOWN]
    assert [m["reason"] for m in data["repairs"]] == [REPAIR]
    assert (data["summary"]["emergency_rotations"], data["summary"]["repairs"]) == (1, 1)

    rotations = {r["run_id"]: r for r in _records(evidence, "rotation")}
    assert (rotations[emergency]["emergency"], rotations[emergency]["reason"]) == ("yes", EMERGENCY_SHOWN)
    assert (rotations[plain]["emergency"], rotations[plain]["reason"]) == ("no", "")
    assert rotations[repair]["reason"] == REPAIR
    [record] = _records(evidence, "emergency")
    assert (record["run_id"], record["reason"], record["note"]) == (emergency, EMERGENCY_SHOWN, "audit chain event")
    [record] = _records(evidence, "repair")
    assert (record["run_id"], record["reason"]) == (repair, REPAIR)
    [row] = _records(evidence, "summary")
    assert (row["emergency_rotations"], row["repairs"]) == ("1", "1")

    page = report.render(evidence, "html")
    assert "emergency: INC-4242 &lt;leak&gt; &amp; gist, its value was ***" in page
    assert "repair: REPAIR-777 stores wiped" in page and "(1 emergency) (1 repaired)" in page
    for shown in (report.render(evidence, "json"), report.render(evidence, "csv"), page):
        assert TOKEN_VALUE not in shown


def test_an_emergency_that_stopped_before_its_run_is_listed_and_marks_no_later_run(tmp_path: Path) -> None:
    """The issuer refused PLAN's check: no run was planned. The reason is listed without one, and the
    next rotation, an hour later, is no emergency."""
    world = World(tmp_path)
    world.bootstrap()
    world.clock.advance(timedelta(hours=1))
    world.issuer.fail_next("list_tokens", PermanentError("issuer: 403 forbidden (simulated)"))
    with pytest.raises(PermanentError):
        world.engine().rotate(revoke_previous_now=True, reason=EMERGENCY)
    world.clock.advance(timedelta(hours=1))
    later = rotate(world).run_id
    now = world.clock.now()
    evidence = _evidence(world, tmp_path, now - timedelta(days=1), now + timedelta(days=1))
    [p] = evidence.policies
    assert [(m["run_id"], m["reason"]) for m in p.emergencies] == [(None, EMERGENCY_SHOWN)]
    assert [(r.emergency, r.reason) for r in p.rotations if r.run_id == later] == [(False, None)]
    assert "(no run planned)" in report.render(evidence, "html")


def test_the_reasons_outlive_a_prune_in_the_checkpoint(tmp_path: Path) -> None:
    world = World(tmp_path)
    emergency, _plain, repair = _emergency_and_repair(world)
    period_end = world.clock.now() + timedelta(minutes=1)
    world.clock.advance(timedelta(days=2))
    rotate(world)  # (the repair's run is no longer the newest)
    world.clock.advance(timedelta(days=1))
    period = (period_end - timedelta(days=1), period_end)

    def shown() -> tuple[report.PolicyEvidence, report.Evidence]:
        evidence = _evidence(world, tmp_path, *period)
        return evidence.policies[0], evidence

    before, _ = shown()
    now = world.clock.now()
    result = audit_chain.prune(world.journal, ts(now - timedelta(hours=1)), ts(now))
    assert result.checkpoint is not None
    entry = result.checkpoint.detail["policies"][POLICY]
    assert [(m["run_id"], m["reason"]) for m in entry[audit_chain.EMERGENCIES]] == [(emergency, EMERGENCY_SHOWN)]
    assert [(m["run_id"], m["reason"]) for m in entry[audit_chain.REPAIRS]] == [(repair, REPAIR)]
    assert TOKEN_VALUE not in json.dumps(result.checkpoint.detail)
    assert not [e for e in world.journal.events(POLICY, limit=1000) if e["step"] in ("emergency", "bootstrap")]

    after, evidence = shown()
    assert evidence.chain.ok
    for key in ("emergency_rotations", "repairs"):
        assert after.summary()[key] == before.summary()[key] == 1, key
    assert [(m["run_id"], m["reason"], m["checkpoint_seq"]) for m in after.emergencies] == \
        [(emergency, EMERGENCY_SHOWN, result.checkpoint.seq)]
    assert [(m["run_id"], m["reason"]) for m in after.repairs] == [(repair, REPAIR)]
    [record] = _records(evidence, "emergency")
    assert record["reason"] == EMERGENCY_SHOWN and f"checkpoint seq {result.checkpoint.seq}" in record["note"]
    [pruned] = _records(evidence, "pruned")
    assert (pruned["emergency_rotations"], pruned["repairs"]) == ("1", "1")
    page = report.render(evidence, "html")
    assert "INC-4242 &lt;leak&gt; &amp; gist, its value was ***" in page and REPAIR in page
    for text in (report.render(evidence, "json"), report.render(evidence, "csv"), page):
        assert TOKEN_VALUE not in text


def test_an_emergency_start_names_its_run_only_by_the_plan_right_after_it_that_says_so() -> None:
    """Taken by time alone (the next plan within 15 minutes), an ordinary run planned after an emergency
    that failed before it planned one (a store it could not read) was reported as the emergency, with
    its reason: the emergency's plan says so (`emergency` in its detail)."""

    def plan(step: str = "plan", detail: str = '{"kind": "rotate", "emergency": true}') -> dict[str, str]:
        return {"at": "2026-03-01T12:00:01.000000Z", "step": step, "run_id": "r1", "detail": detail}

    assert audit_chain.emergency_run(plan()) == "r1"
    assert audit_chain.emergency_run(plan(detail='{"kind": "rotate"}')) is None  # an ordinary run's
    assert audit_chain.emergency_run(plan(detail='{"kind": "rotate", "emergency": "yes"}')) is None
    assert audit_chain.emergency_run(plan("revoke_old")) is None
    assert audit_chain.emergency_run(None) is None


def test_an_ordinary_rotation_after_an_emergency_that_planned_nothing_is_not_the_emergency(tmp_path: Path) -> None:
    """An emergency rotation stopped before it planned a run (a store it could not read); a person's plain
    `rotate` ten minutes later was reported as the emergency rotation, with the emergency's reason:
    false evidence that the leaked token was revoked at once. The emergency is listed with no run."""
    world = World(tmp_path)
    world.bootstrap()
    world.clock.advance(timedelta(hours=1))
    store = world.stores["a"]
    real = store.read_current

    def unreachable() -> None:
        raise PermanentError("store a unreachable")

    store.read_current = unreachable  # type: ignore[method-assign]
    with pytest.raises(PermanentError):
        world.engine().rotate(revoke_previous_now=True, reason="INC-1 leaked")
    store.read_current = real  # type: ignore[method-assign]
    world.clock.advance(timedelta(minutes=10))
    plain = rotate(world)
    world.clock.advance(timedelta(minutes=10))
    emergency = world.engine().rotate(revoke_previous_now=True, reason="INC-1 again")
    now = world.clock.now()
    [p] = report.build(world.journal, [offline_policy(tmp_path, POLICY)], now - timedelta(days=1),
                       now + timedelta(days=1), now).policies
    rows = {r.run_id: (r.emergency, r.reason) for r in p.rotations}
    assert rows[plain.run_id] == (False, None)
    assert rows[emergency.run_id] == (True, "INC-1 again")
    assert [(m["run_id"], m["reason"]) for m in p.emergencies] == [(None, "INC-1 leaked"),
                                                                   (emergency.run_id, "INC-1 again")]
