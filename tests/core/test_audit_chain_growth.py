"""Pruning checkpoints grow with the events they prune, not with the number of policies (issue 12,
journal growth): a checkpoint names only its own range's policies, and what is carried on for the
others (their last publish, a bootstrapped token's creation) is found in the earlier checkpoints.
Journals pruned by the previous version, whose every checkpoint held a full copy of it, read and
report the same, and so do journals that mix both."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.core import audit_chain
from rotator.core.journal import Journal, RunRecord, RunState, open_journal, ts
from tests.harness import offline_policy

T0 = datetime(2025, 1, 1, tzinfo=UTC)
#: the days the scenario's daily prunes cut off at (the first takes the backlog)
PRUNE_DAYS = range(2, 13)


@pytest.fixture(params=["sqlite", "postgresql"])
def journal_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'j.db'}"
    return str(request.getfixturevalue("pg_url"))


def _checkpoint_sizes(journal: Journal) -> list[int]:
    """Each checkpoint's detail as the journal stores it, in bytes, oldest first."""
    with journal.audit_transaction(write=False) as (cur, _lock):
        return [len(str(r[0]).encode()) for r in cur.execute("SELECT detail FROM audit_checkpoints ORDER BY seq")
                .fetchall()]  # fmt: skip


def _daily_prunes_beside_idle_policies(url: str, idle: int, days: int) -> tuple[Journal, list[int]]:
    """``idle`` policies published once on day 0 and quiet since; two active policies publish and
    revoke every day. The first prune takes day 0 and 1, then one prune a day, each pruning one
    more day; returns the journal and each daily prune's pruned event count."""
    journal = open_journal(url)
    with journal.transaction():
        for i in range(idle):
            journal.record_event(T0 + timedelta(seconds=i), f"idle-{i:04d}", f"i{i}", "published", "ok",
                                 {"token_id": f"ti{i}"})
        for day in range(days + 3):
            for name in ("act-a", "act-b"):
                at = T0 + timedelta(days=day, hours=1)
                journal.record_event(at, name, f"{name}-{day}", "published", "ok", {"token_id": f"{name}-{day}"})
                journal.record_event(at + timedelta(hours=1), name, f"{name}-{day}", "revoke_old", "ok", {})
    pruned = []
    for day in range(2, days + 2):
        result = audit_chain.prune(journal, ts(T0 + timedelta(days=day)), ts(T0 + timedelta(days=day + 400)))
        pruned.append(result.events)
    return journal, pruned


def test_daily_checkpoints_grow_with_the_events_they_prune_not_with_the_idle_policies(journal_url: str) -> None:
    """The previous version repeated every idle policy's last publish in each checkpoint: 3,000
    policies made a 152 KB checkpoint a day for ~100 policies with events (a reviewer's script),
    kept forever. Now a daily checkpoint is the same size beside 40 idle policies or 400."""
    days = 5
    journal, pruned = _daily_prunes_beside_idle_policies(journal_url, 400, days)
    sizes = _checkpoint_sizes(journal)
    assert len(sizes) == days
    daily = sizes[1:]  # the first took the backlog, the idle policies' publishes among it
    assert pruned[1:] == [4] * (days - 1), "each daily prune deletes a day: 2 policies x 2 events"
    # ~400 bytes of fixed fields (hashes, digests, times) and ~150 bytes per policy with events; the
    # previous version added ~45 bytes per idle policy: ~18 KB each here
    assert all(size <= 700 + 200 * 2 for size in daily), daily
    assert audit_chain.verify(journal).ok

    with journal.audit_transaction(write=False) as (cur, _lock):
        carried = audit_chain._last_published(cur, audit_chain.latest_checkpoint(cur))
    assert len(carried) == 402, "every idle policy's last publish is still carried"
    assert carried["idle-0399"] == ts(T0 + timedelta(seconds=399))
    assert carried["act-a"] == ts(T0 + timedelta(days=days, hours=1))
    journal.close()

    few_url = journal_url.replace("j.db", "few.db") if journal_url.startswith("sqlite") else None
    if few_url is not None:
        few, _pruned = _daily_prunes_beside_idle_policies(few_url, 40, days)
        # (a seq number may take a digit more: a few bytes)
        assert max(abs(a - b) for a, b in zip(_checkpoint_sizes(few)[1:], daily, strict=True)) <= 16
        few.close()


def _scenario(journal: Journal) -> None:
    """Nine policies over 20 days, written in time order (a prune deletes a prefix of the chain): idle
    ones (one publish on day 0), a bootstrapped token created 200 days before its bootstrap and
    replaced on day 9, three policies published daily, one that publishes on day 0 and then only
    fails, every other day."""
    steps: list[tuple[datetime, str, str, str, str, dict[str, Any], RunRecord]] = []

    def run(at: datetime, policy: str, run_id: str, step: str, result: str, detail: dict[str, Any],
            **fields: Any) -> None:
        ok = result == "ok"
        steps.append((at, policy, run_id, step, result, detail, RunRecord(
            run_id=run_id, policy=policy, state=RunState.DONE if ok else RunState.FAILED,
            kind=fields.pop("kind", "rotate"), started_at=at, updated_at=at, finished_at=at,
            published_at=at if ok else None, **fields)))

    for i in range(4):
        run(T0 + timedelta(minutes=i), f"idle-{i}", f"idle-{i}-r", "published", "ok", {"token_id": f"ti{i}"},
            new_token_id=f"ti{i}")
    created = T0 - timedelta(days=200)
    run(T0 + timedelta(minutes=5), "boot", "boot-r0", "bootstrap", "ok",
        {"token_id": "tb0", "token_created_at": ts(created)}, kind="bootstrap", new_token_id="tb0",
        token_created_at=created)
    run(T0 + timedelta(days=9), "boot", "boot-r1", "published", "ok", {"token_id": "tb1"}, old_token_id="tb0",
        new_token_id="tb1")
    for day in range(20):
        for name in ("act-a", "act-b", "act-c"):
            run(T0 + timedelta(days=day, hours=2), name, f"{name}-{day}", "published", "ok",
                {"token_id": f"{name}-{day}"}, new_token_id=f"{name}-{day}",
                old_token_id=f"{name}-{day - 1}" if day else None)
    run(T0 + timedelta(hours=3), "flaky", "flaky-r0", "published", "ok", {"token_id": "tf0"}, new_token_id="tf0")
    for day in range(1, 20, 2):
        run(T0 + timedelta(days=day, hours=4), "flaky", f"flaky-f{day}", "mint", "failed", {"error": "issuer down"})
    with journal.transaction():
        for at, policy, run_id, step, result, detail, record in sorted(steps, key=lambda s: s[0]):
            journal.begin_run(record)
            journal.record_event(at, policy, run_id, step, result, detail)


POLICIES = ("idle-0", "idle-1", "idle-2", "idle-3", "boot", "act-a", "act-b", "act-c", "flaky")


def _pruned_and_reported(url: str, tmp_path: Path, full_until: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The scenario pruned daily, its first ``full_until`` checkpoints written as the previous version
    wrote every one (a full copy of the carried publish times): what the readers make of it."""
    from rotator.observe import report

    journal = open_journal(url)
    _scenario(journal)
    written = [0]
    original: Callable[[audit_chain.Checkpoint | None], bool] = audit_chain._writes_full_map

    def previous_version_first(previous: audit_chain.Checkpoint | None) -> bool:
        written[0] += 1
        return True if written[0] <= full_until else original(previous)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(audit_chain, "_writes_full_map", previous_version_first)
        for day in PRUNE_DAYS:
            audit_chain.prune(journal, ts(T0 + timedelta(days=day)), ts(T0 + timedelta(days=day + 20)))
    made = audit_chain.checkpoints(journal)
    assert len(made) == len(PRUNE_DAYS)
    assert [audit_chain.LAST_PUBLISHED_ELSEWHERE in c.detail for c in made] == \
        [i < full_until for i in range(len(made))]
    assert [c.detail.get(audit_chain.ELSEWHERE_IN_EARLIER) is True for c in made] == \
        [i >= full_until for i in range(len(made))]
    chain = audit_chain.verify(journal)
    assert chain.ok, chain.problem
    with journal.audit_transaction(write=False) as (cur, _lock):
        latest = audit_chain.latest_checkpoint(cur)
        carried = audit_chain._carried(cur, latest)
    read = {"pruned_current": audit_chain.pruned_current(reversed(made)), "carried": carried}
    policies = [offline_policy(tmp_path, name) for name in POLICIES]
    now = T0 + timedelta(days=40)
    reports = []
    for start, end in ((T0 - timedelta(days=1), now), (T0 + timedelta(days=3), T0 + timedelta(days=8)),
                       (T0 + timedelta(days=10), now)):
        evidence = report.build(journal, policies, start, end, now).as_dict()
        assert evidence["chain"]["ok"]
        # (the chain's head hash: the prune events name each format's checkpoint digests; its location)
        evidence.pop("chain")
        evidence.pop("journal")
        reports.append(evidence)
    journal.close()
    return read, reports


@pytest.mark.parametrize("full_until", [0, 4, len(PRUNE_DAYS)], ids=["new", "upgraded", "previous-version"])
def test_the_readers_see_the_same_history_whatever_format_its_checkpoints_are_in(
        journal_url: str, tmp_path: Path, full_until: int) -> None:
    """pruned_current, the carried map a prune starts from and the report (its maximum token age over
    pruned history, the pruned summaries, the evidence checks) give the same answers for the same
    history pruned by the previous version (every checkpoint a full copy), by this one, and by the
    previous one and then this one (a journal upgraded between two daily prunes)."""
    base = tmp_path / "previous"
    base.mkdir()
    expected = _pruned_and_reported(f"sqlite:///{base / 'j.db'}", base, len(PRUNE_DAYS))
    mine = tmp_path / "mine"
    mine.mkdir()
    got = _pruned_and_reported(journal_url, mine, full_until)
    assert got[0] == expected[0]
    assert got[1] == expected[1]
    read, reports = got
    # the answers themselves, so that equal is also right
    assert read["pruned_current"]["idle-3"] == (ts(T0 + timedelta(minutes=3)), None)
    assert read["pruned_current"]["boot"] == (ts(T0 + timedelta(days=9)), None)
    assert read["pruned_current"]["flaky"] == (ts(T0 + timedelta(hours=3)), None)
    assert read["carried"][0] == {name: at for name, (at, _since) in read["pruned_current"].items()}
    whole = {p["policy"]: p for p in reports[0]["policies"]}
    assert whole["boot"]["summary"]["max_observed_age_s"] == 209 * 86400, "the bootstrapped token's whole age"
    # published at 3:00 on day 0, only failures since
    assert whole["flaky"]["summary"]["max_observed_age_s"] == 40 * 86400 - 3 * 3600
    assert whole["idle-0"]["summary"]["max_observed_age_s"] == 40 * 86400
    assert sum(s["failures"] for s in whole["flaky"]["pruned"]) == 6, "days 1, 3, ..., 11 are pruned"


def test_a_bootstrap_s_creation_time_before_a_delta_range_is_found_in_the_earlier_checkpoint(
        journal_url: str) -> None:
    """A bootstrapped token ages from its creation; a checkpoint whose range holds no event of its
    policy no longer repeats that time (nor its publish): the walk back finds them where they were."""
    journal = open_journal(journal_url)
    created = T0 - timedelta(days=200)
    journal.record_event(T0, "boot", "r0", "bootstrap", "ok", {"token_id": "t0", "token_created_at": ts(created)})
    for day in range(1, 6):
        journal.record_event(T0 + timedelta(days=day), "other", f"o{day}", "published", "ok", {"token_id": f"o{day}"})
    for day in (1, 3, 5):
        audit_chain.prune(journal, ts(T0 + timedelta(days=day, hours=1)), ts(T0 + timedelta(days=day + 20)))
    made = audit_chain.checkpoints(journal)
    assert [sorted(c.detail["policies"]) for c in made] == [["boot", "other"], ["other"], ["other"]]
    assert all(audit_chain.TOKEN_SINCE_ELSEWHERE not in c.detail for c in made)
    assert audit_chain.pruned_current(reversed(made))["boot"] == (ts(T0), ts(created))
    with journal.audit_transaction(write=False) as (cur, _lock):
        _published, since = audit_chain._carried(cur, audit_chain.latest_checkpoint(cur))
    assert since == {"boot": ts(created)}
    journal.close()


def test_after_a_checkpoint_that_carried_nothing_one_full_copy_is_written_then_deltas(journal_url: str) -> None:
    """Checkpoints of a version before any carried map (no predecessor digest either): the walk back
    through them is not covered by the chain's digests, so the first prune after them fixes what it
    found in one full copy, and the prunes after that write only their own policies again."""
    journal = open_journal(journal_url)
    journal.record_event(T0, "a", "ra", "published", "ok", {"token_id": "a1"})
    journal.record_event(T0 + timedelta(days=1), "b", "rb", "published", "ok", {"token_id": "b1"})
    for day in range(2, 5):
        journal.record_event(T0 + timedelta(days=day), "c", f"rc{day}", "published", "ok", {"token_id": f"c{day}"})
    cutoffs = [ts(T0 + timedelta(days=day, hours=12)) for day in range(4)]
    original = audit_chain._checkpoint_for
    old_keys = (audit_chain.ELSEWHERE_IN_EARLIER, audit_chain.LAST_PUBLISHED_ELSEWHERE,
                audit_chain.TOKEN_SINCE_ELSEWHERE, "previous_checkpoint_sha256")

    def carrying_nothing(*args: Any, **kwargs: Any) -> audit_chain.Checkpoint:
        made = original(*args, **kwargs)
        return audit_chain.Checkpoint(made.seq, made.hash, made.at,
                                      {k: v for k, v in made.detail.items() if k not in old_keys})

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(audit_chain, "_checkpoint_for", carrying_nothing)
        for day in (0, 1):  # a's publish, then b's
            audit_chain.prune(journal, cutoffs[day], ts(T0 + timedelta(days=day + 20)))
    for day in (2, 3):  # c's, a day each
        audit_chain.prune(journal, cutoffs[day], ts(T0 + timedelta(days=day + 20)))
    legacy_a, legacy_b, full, delta = audit_chain.checkpoints(journal)
    assert not any(k in legacy_b.detail for k in old_keys)
    assert full.detail[audit_chain.LAST_PUBLISHED_ELSEWHERE] == {"a": ts(T0), "b": ts(T0 + timedelta(days=1))}
    assert audit_chain.ELSEWHERE_IN_EARLIER not in full.detail
    assert delta.detail[audit_chain.ELSEWHERE_IN_EARLIER] is True and sorted(delta.detail["policies"]) == ["c"]
    assert audit_chain.LAST_PUBLISHED_ELSEWHERE not in delta.detail
    assert audit_chain.verify(journal).ok
    # the readers stop at the full copy: an edit of the uncovered checkpoints before it changes nothing
    with journal.audit_transaction() as (cur, _lock):
        edited = {**legacy_a.detail, "policies": {"a": {**legacy_a.detail["policies"]["a"],
                                                        "last_published_at": ts(T0 + timedelta(days=300))}}}
        cur.execute("UPDATE audit_checkpoints SET detail = ? WHERE seq = ?", (json.dumps(edited), legacy_a.seq))
    with journal.audit_transaction(write=False) as (cur, _lock):
        carried, _since = audit_chain._carried(cur, audit_chain.latest_checkpoint(cur))
    assert carried == {"a": ts(T0), "b": ts(T0 + timedelta(days=1)), "c": ts(T0 + timedelta(days=3))}
    journal.close()
