"""The daemon's costs as exact counts (bench/daemon_scale.py measures the times): a /metrics
scrape reads nothing from the journal, a pass with nothing due touches no policy, a finished job
makes the next pass plan that policy alone, a start recovers only policies with open runs, and
the state metrics are written again only for policies whose state changed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from rotator.core.journal import Revocation, RunRecord
from rotator.observe.metrics import Metrics, StateText
from tests.runners.test_daemon import T0, Harness, harness  # noqa: F401 - the fixture

POLICIES = [(f"p{i}", "1h", "") for i in range(20)]


@contextmanager
def transactions(journal: Any) -> Iterator[dict[str, int]]:
    """Count the journal's transactions of this thread (each query or write is one) inside the block."""
    counter = {"n": 0}
    original = journal._tx
    me = threading.get_ident()  # not the readiness probe's pings on its own thread

    @contextmanager
    def counted(*args: Any, **kwargs: Any) -> Iterator[Any]:
        counter["n"] += threading.get_ident() == me
        with original(*args, **kwargs) as cur:
            yield cur

    journal._tx = counted
    try:
        yield counter
    finally:
        del journal._tx


def planned(h: Harness, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The policies the daemon plans from now on (Daemon._plan calls)."""
    calls: list[str] = []
    original = h.daemon._plan

    def plan(name: str) -> Any:
        calls.append(name)
        return original(name)

    monkeypatch.setattr(h.daemon, "_plan", plan)
    return calls


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_a_scrape_reads_nothing_from_the_journal(harness: Callable[..., Harness]) -> None:  # noqa: F811
    h = harness(POLICIES)
    h.tick()
    h.clock.advance(timedelta(minutes=5))
    with transactions(h.daemon.journal) as counter:
        text = h.daemon.metrics.exposition().decode()
    assert counter["n"] == 0
    got = samples(text)
    assert got[("rotator_token_age_seconds", (("policy", "p7"),))] == 300
    due = (T0 + timedelta(hours=1)).timestamp()
    assert got[("rotator_next_rotation_timestamp_seconds", (("policy", "p7"),))] == due
    assert got[("rotator_journal_up", ())] == 1
    assert sum(1 for name, _ in got if name == "rotator_policy_compliant") == len(POLICIES)


def test_the_metrics_follow_the_daemons_own_jobs_without_a_query(harness: Callable[..., Harness]) -> None:  # noqa: F811
    h = harness([("a", "1h", "")], daemon='sweep_interval = "2h"\n')
    h.tick()
    h.clock.advance(timedelta(hours=1))
    h.tick()
    assert h.calls == ["rotate a"]
    h.tick()  # the pass the job's end wakes: it reads the policy's journal state again
    with transactions(h.daemon.journal) as counter:
        got = samples(h.daemon.metrics.exposition().decode())
    assert counter["n"] == 0
    assert got[("rotator_last_success_timestamp_seconds", (("policy", "a"),))] == h.clock.now().timestamp()
    assert got[("rotator_rotations_total", (("policy", "a"), ("result", "success")))] == 1


def test_a_pass_with_nothing_due_touches_no_policy(harness: Callable[..., Harness],  # noqa: F811
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    h = harness(POLICIES)
    h.tick()  # the first pass sweeps
    plans = planned(h, monkeypatch)
    with transactions(h.daemon.journal) as counter:
        wait = h.tick()
    assert (counter["n"], plans, h.calls) == (0, [], [])
    assert wait == pytest.approx(60)


def test_a_finished_job_replans_only_its_policy(harness: Callable[..., Harness],  # noqa: F811
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    h = harness(POLICIES[:1] + [(n, "3h", "") for n, _, _ in POLICIES[1:]], daemon='sweep_interval = "2h"\n')
    h.tick()
    h.clock.advance(timedelta(hours=1))
    plans = planned(h, monkeypatch)
    with transactions(h.daemon.journal) as counter:
        h.tick()
    assert h.calls == ["rotate p0"]
    assert plans == ["p0"], "the due policy, after its re-read"
    # the re-read of the due policy (1); Daemon._rotate itself: none (it was 4: its own lease taken
    # and released, and the check that the plan still holds, now inside Engine.rotate); the fake
    # rotation (4: its preflight read with that check, its lease, the run, the release)
    assert counter["n"] == 1 + 4
    plans.clear()
    with transactions(h.daemon.journal) as counter:
        h.tick()
    # the pass the job's end wakes: the view's refresh (1: its last publication, its open runs, its
    # pending and failed revocations in one statement, Journal.policy_state; it was 3), on the
    # scheduler's thread (only it writes the views), then the policy alone is planned
    assert plans == ["p0"] and counter["n"] == 1 and h.calls == []
    plans.clear()
    with transactions(h.daemon.journal) as counter:
        h.tick()
    assert plans == [] and counter["n"] == 0 and h.calls == []


def test_a_start_recovers_only_the_policies_with_open_runs(harness: Callable[..., Harness]) -> None:  # noqa: F811
    h = harness(POLICIES)
    h.daemon.journal.begin_run(RunRecord("dead", "p3", "minted", "rotate", T0, T0))
    h.daemon._next_sweep = h.clock.now()
    h.tick()
    assert h.calls == ["recover p3"]


def test_a_revocation_of_another_process_is_read_by_the_sweep(harness: Callable[..., Harness]) -> None:  # noqa: F811
    h = harness([("a", "1h", "")], daemon='sweep_interval = "30s"\n')
    h.tick()
    h.daemon.journal.schedule_revocation(Revocation("a", "t-old", "r0", "superseded", T0 + timedelta(seconds=40),
                                                    "pending"))
    assert h.tick() == pytest.approx(30), "not before the sweep"
    h.clock.advance(timedelta(seconds=30))
    assert h.tick() == pytest.approx(10)
    h.clock.advance(timedelta(seconds=10))
    h.tick()
    assert h.calls == ["revoke a"]


def test_state_text_matches_the_registry_and_rewrites_only_changed_policies(
        harness: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    h = harness(POLICIES)
    h.tick()
    snap = h.daemon.snapshot()
    reference = Metrics()
    reference.watch_state(lambda: snap)
    text = StateText()
    assert samples(text.render(snap).decode()) == {
        k: v for k, v in samples(generate_latest(reference.registry).decode()).items()
        if k[0].startswith(("rotator_journal_up", "rotator_token", "rotator_last_success", "rotator_next_rotation",
                            "rotator_revocations_", "rotator_open_runs", "rotator_needs_attention",
                            "rotator_policy_", "rotator_lease_"))}
    made: list[str] = []
    original = StateText._make

    def make(state: Any, now: Any) -> Any:
        made.append(state.policy)
        return original(state, now)

    monkeypatch.setattr(StateText, "_make", staticmethod(make))
    text.render(h.daemon.snapshot())
    assert made == [], "nothing changed: every line is kept"
    h.daemon.journal.schedule_revocation(Revocation("p4", "t-old", "r0", "superseded", T0 + timedelta(hours=2),
                                                    "pending"))
    h.daemon._refresh("p4")
    text.render(h.daemon.snapshot())
    assert made == ["p4"]


def test_a_lost_lease_is_counted_as_an_aborted_rotation() -> None:
    metrics = Metrics()
    metrics.on_event({"policy": "p", "step": "rotate", "result": "aborted"})
    assert metrics.registry.get_sample_value("rotator_rotations_total", {"policy": "p", "result": "aborted"}) == 1


def test_a_journal_error_on_the_due_reread_keeps_the_policy_queued(harness: Callable[..., Harness],  # noqa: F811
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from rotator.core.errors import JournalError

    h = harness([("a", "1h", "")])
    h.tick()
    h.clock.advance(timedelta(hours=1))

    def down(*args: Any) -> Any:
        raise JournalError("journal down")

    monkeypatch.setattr(h.daemon.journal, "last_successes", down)
    with pytest.raises(JournalError):
        h.tick()
    monkeypatch.undo()
    assert h.tick() == pytest.approx(5) and h.calls == [], "tried again after TICK_RETRY"
    h.clock.advance(timedelta(seconds=5))
    h.tick()
    assert h.calls == ["rotate a"]


def test_the_daemon_reads_time_from_its_clock(harness: Callable[..., Harness]) -> None:  # noqa: F811
    h = harness([("a", "1h", "")])
    h.tick()
    value = h.daemon.metrics.registry.get_sample_value
    assert value("rotator_config_last_reload_success_timestamp_seconds") == T0.timestamp()
    got = samples(h.daemon.metrics.exposition().decode())
    assert abs(got[("rotator_watchdog_last_progress_timestamp_seconds", ())] - T0.timestamp()) < 5


def test_the_bulk_reads_agree_with_the_journal(tmp_path: Any) -> None:
    from rotator.core.journal import open_journal

    journal = open_journal(f"sqlite:///{tmp_path / 'j.db'}")
    for i, (policy, state, published) in enumerate([("a", "done", 1), ("a", "published", 3), ("a", "failed", None),
                                                    ("b", "done", 2), ("c", "minted", None)]):
        at = T0 + timedelta(minutes=published) if published is not None else None
        journal.begin_run(RunRecord(f"r{i}", policy, state, "rotate", T0, T0, new_token_id=f"t{i}", published_at=at))
    bulk = journal.last_successes(["a", "b", "c"], T0)
    for policy in "abc":
        one = journal.last_success(policy)
        assert (bulk[policy].run_id, bulk[policy].published_at) == (one.run_id, one.published_at) if one else \
            policy not in bulk
    overview = journal.overview(T0, None)
    assert {p: r.run_id for p, r in overview.last.items()} == {"a": "r1", "b": "r3"}
    assert overview.open_runs == {"c": (1, 0)}
    journal.close()


def test_a_bootstrapped_token_ages_from_its_creation_in_the_metrics_and_the_schedule(
        harness: Callable[..., Harness], tmp_path: Any) -> None:  # noqa: F811
    """Policy "a" holds a token a person created 2 h ago and bootstrapped just now; "b" one created 30 min
    ago. On a 1 h schedule "a" is due at once and "b" in 30 min, and the metrics give their age from
    their creation. Before, both were 0 s old and due in an hour."""
    from rotator.core.journal import open_journal

    journal = open_journal("sqlite:///" + str(tmp_path / "journal.db"))
    for name, created in (("a", T0 - timedelta(hours=2)), ("b", T0 - timedelta(minutes=30))):
        journal.begin_run(RunRecord(f"boot-{name}", name, "done", "bootstrap", T0, T0, new_token_id=f"t-{name}",
                                    published_at=T0, token_created_at=created))
    journal.close()
    h = harness([("a", "1h", ""), ("b", "1h", "")], last=None)
    got = samples(h.daemon.metrics.exposition().decode())
    assert got[("rotator_token_age_seconds", (("policy", "a"),))] == 7200
    assert got[("rotator_token_age_seconds", (("policy", "b"),))] == 1800
    assert got[("rotator_policy_compliant", (("policy", "a"),))] == 1  # max_age is above the schedule
    assert got[("rotator_next_rotation_timestamp_seconds", (("policy", "b"),))] == (
        T0 + timedelta(minutes=30)).timestamp()
    h.tick()
    assert h.calls == ["rotate a"], "a's token is older than its schedule: due at once, b not yet"
