"""The daemon's /metrics body against what the alerts read (deploy/helm/rotator/templates/prometheusrule.yaml):

- every policy's rotator_rotations_total and rotator_orphans_total series, and every channel's
  rotator_notifications_total series, are there at 0 from the load (a reload adds an added policy's,
  drops a removed one's): increase() of a series that appears at 1 is 0, so a process's first
  orphan, first failed delivery or first success went unseen by the alerts;
- a scrape that straddles the scheduler's change of a view does not keep the state made before it;
- rotator_lease_active stays 1 while another replica holds the lease, after a job here that found it busy;
- rotator_journal_up's HELP says what docs/daemon.md says it is.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import rotator.runners.daemon as daemon_mod
from tests.harness import REPO
from tests.runners.test_daemon import POLICY, T0, Harness, HeldExecutor
from tests.runners.test_daemon import harness as harness  # noqa: F401 - a fixture, used by name

HEAD = '[rotator]\njournal = "journal.db"\n[daemon]\naudit = { file = "audit.jsonl" }\n'
RESULTS = ("success", "failure", "needs_attention", "aborted")


def samples(h: Harness) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The scrape's samples, as /metrics writes them (Metrics.exposition)."""
    text = h.daemon.metrics.exposition().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def counters(got: dict[tuple[str, tuple[tuple[str, str], ...]], float], policy: str) -> dict[str, float]:
    """``policy``'s rotation counts by result, and its orphans."""
    found = {dict(labels)["result"]: value for (name, labels), value in got.items()
             if name == "rotator_rotations_total" and dict(labels)["policy"] == policy}
    orphans = got.get(("rotator_orphans_total", (("policy", policy),)))
    return {**found, **({} if orphans is None else {"orphans": orphans})}


def test_a_started_daemon_exports_every_policys_counters_at_zero(harness: Callable[..., Harness]) -> None:
    h = harness([("a", "1h", ""), ("b", "1h", "")])
    got = samples(h)
    zero = {**dict.fromkeys(RESULTS, 0.0), "orphans": 0.0}
    assert counters(got, "a") == counters(got, "b") == zero
    for channel in ("webhook", "hook"):
        for result in ("ok", "failed", "timeout", "dropped"):
            assert got[("rotator_notifications_total", (("channel", channel), ("result", result)))] == 0
    h.tick()
    h.clock.advance(timedelta(hours=1))
    h.tick()
    assert sorted(h.calls) == ["rotate a", "rotate b"]
    assert counters(samples(h), "a") == {**zero, "success": 1.0}


def test_a_reload_gives_an_added_policy_its_series_and_drops_a_removed_ones(
        harness: Callable[..., Harness]) -> None:
    h = harness([("a", "1h", ""), ("b", "1h", "")])
    h.tick()
    h.clock.advance(timedelta(hours=1))
    h.tick()
    h.daemon.path.write_text(HEAD + "".join(POLICY.format(name=n, schedule="1h", extra="") for n in ("b", "c")))
    assert h.daemon.reload("SIGHUP", full=True)
    got = samples(h)
    assert counters(got, "a") == {}, "a removed policy's series go"
    assert counters(got, "b") == {**dict.fromkeys(RESULTS, 0.0), "success": 1.0, "orphans": 0.0}, "kept"
    assert counters(got, "c") == {**dict.fromkeys(RESULTS, 0.0), "orphans": 0.0}


def test_a_scrape_during_a_refresh_does_not_keep_the_state_made_before_it(
        harness: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch) -> None:
    """The scrape (an HTTP thread) read a's view, the scheduler's pass refreshed it after a's rotation
    (cleared its cached state), then the scrape stored the state it had made from before: it was
    exported until that state's end of validity (days), while every pass went on, and
    RotatorTokenTooOld fired. Forced here: the scrape's decide() runs the pass."""
    held = HeldExecutor()
    h = harness([("a", "1d", "")], daemon='sweep_interval = "5m"\n', executor=held)
    h.tick()
    h.clock.advance(timedelta(days=1))
    h.tick()
    assert list(held.held) == ["a"]
    h.daemon.snapshot()  # a's state is kept, with its lease held here
    held.run("a")  # rotates a; the next pass reads its view again (_refresh)
    assert h.calls == ["rotate a"]
    real = daemon_mod.decide
    ran: list[int] = []

    def decide(*args: Any, **kwargs: Any) -> Any:
        if not ran:  # the scrape's thread loses the GIL here, and the scheduler's pass runs
            ran.append(1)
            h.tick()
        return real(*args, **kwargs)

    monkeypatch.setattr(daemon_mod, "decide", decide)
    h.daemon.snapshot()
    monkeypatch.setattr(daemon_mod, "decide", real)
    assert ran, "the scrape made a's state again (its lease is no longer held here)"
    view = h.daemon._views["a"]
    for _ in range(12):  # an hour of passes, each scraped
        h.clock.advance(timedelta(minutes=5))
        h.tick()
        snap = h.daemon.snapshot()
    state = snap.policies[0]
    assert view.published_at is not None and state.rotated_at == view.published_at, \
        "the state exported is the one from before the rotation"
    assert state.next_rotation is not None and state.next_rotation > snap.now, "no overdue rotation"


def lease_active(h: Harness) -> float | None:
    return samples(h).get(("rotator_lease_active", (("policy", "a"),)))


def test_lease_active_stays_while_another_replica_holds_the_lease(harness: Callable[..., Harness]) -> None:
    """The end of each job here took the policy's lease for released, a job that found it busy (LeaseBusy)
    too: rotator_lease_active fell to 0 while the other replica held it, until the next sweep. Only a job
    that took the lease released it; after one, the gauge is 0 at once."""
    h = harness([("a", "1h", "")], daemon='sweep_interval = "10m"\n')
    h.tick()
    h.daemon.journal.acquire_lease("a", "elsewhere:1:y", timedelta(hours=2), T0)
    h.clock.advance(timedelta(minutes=10))
    h.tick()  # the sweep reads the other replica's lease
    assert lease_active(h) == 1
    h.clock.advance(timedelta(minutes=50))
    h.tick()  # due: the rotation finds the lease busy
    assert h.calls == [] and h.daemon._tracks["a"].busy_until is not None, "the look found the lease busy"
    h.tick()  # the job's end read again
    assert lease_active(h) == 1, "the other replica still holds the lease"
    # The other replica is done: this process's next look rotates, under the lease, and releases it.
    h.daemon.journal.release_lease("a", "elsewhere:1:y")
    h.clock.advance(timedelta(seconds=3))
    h.tick()
    assert h.calls == ["rotate a"]
    h.tick()
    assert lease_active(h) == 0, "released by the job that held it"


def test_journal_up_help_says_what_the_docs_say(harness: Callable[..., Harness]) -> None:
    """It said "1 if the journal answered the last scrape", but a scrape makes no journal query."""
    h = harness([("a", "1h", "")])
    docs = (REPO / "docs" / "daemon.md").read_text()
    row = re.search(r"^\| `rotator_journal_up` \| [^|]+\| [^|]*\| (.+?) \|$", docs, re.MULTILINE)
    assert row is not None
    helps = re.findall(r"^# HELP rotator_journal_up (.*)$", h.daemon.metrics.exposition().decode(), re.MULTILINE)
    assert helps == [row.group(1)]
