"""The daemon's scheduling around a busy lease and around reloads, in-process on a fake clock:

- a lease another rotator holds for minutes is retried every second or two without counting a
  misfire (or a schedule delay) per retry, and says "rotating" once; a due time another replica
  served while the job waited is no misfire of this process's;
- a reload ends the failure backoff of a policy whose engine it built again (the reload may be its
  fix), and caps every other wait at the new failure_backoff_max;
- a job queued behind busy workers does not run with the engine it was queued with once a reload
  removed, disabled or changed its policy: it is planned again under the new configuration;
- a run that fails on the adapters a SIGHUP replaced while it ran is counted, but holds no try of the
  new ones back; a rotation due by a schedule a reload shortened (or a policy it enabled) is no misfire.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from rotator.core.errors import TransientError
from rotator.core.journal import Revocation, RunRecord
from tests.runners.test_daemon import POLICY, T0, Harness, HeldExecutor, sample
from tests.runners.test_daemon import harness as harness  # noqa: F401 - a fixture, used by name

HEAD = '[rotator]\njournal = "journal.db"\n[daemon]\naudit = { file = "audit.jsonl" }\n'


def write_config(h: Harness, policies: list[tuple[str, str, str]], daemon: str = "") -> None:
    """The policy file as the harness writes it, with other policies or [daemon] settings."""
    h.daemon.path.write_text(HEAD + daemon + "".join(POLICY.format(name=n, schedule=s, extra=e)
                                                     for n, s, e in policies))


def messages(caplog: pytest.LogCaptureFixture, text: str, level: int | None = None) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if text in r.getMessage() and (level is None or r.levelno == level)]


# ---------------------------------------------------------------------------------- a busy lease
def test_a_lease_held_elsewhere_for_minutes_counts_no_misfire_per_retry(
        harness: Callable[..., Harness], caplog: pytest.LogCaptureFixture) -> None:
    """Another rotator (a CLI `rotator rotate`, a replica in a long verify) holds the policy's lease
    for 10 minutes: the daemon looks again every 1-2 s, and each look started no run, so none is
    late nor a misfire. The run that starts once the lease is free is measured, once."""
    h = harness([("a", "1h", "")], daemon='misfire_grace = "1m"\n')
    h.tick()
    due = T0 + timedelta(hours=1)
    h.daemon.journal.acquire_lease("a", "elsewhere:1:y", timedelta(minutes=10), due)
    h.clock.advance(timedelta(hours=1))
    caplog.set_level(logging.DEBUG, logger="rotator.daemon")
    for _ in range(150):  # 5 minutes of busy looks
        h.tick()
        assert h.calls == []
        h.clock.advance(timedelta(seconds=2))
    assert not sample(h, "rotator_schedule_misfires_total", policy="a"), "no run started: no misfire"
    assert not sample(h, "rotator_schedule_delay_seconds_count"), "nor a schedule delay"
    assert messages(caplog, "misfire") == []
    assert len(messages(caplog, "rotating (due", logging.INFO)) == 1, "said once"
    assert len(messages(caplog, "rotating (due", logging.DEBUG)) > 50, "the busy looks at debug level"

    h.daemon.journal.release_lease("a", "elsewhere:1:y")
    caplog.clear()
    h.tick()
    assert h.calls == ["rotate a"]
    assert sample(h, "rotator_schedule_misfires_total", policy="a") == 1, "started 5 minutes late: one misfire"
    assert sample(h, "rotator_schedule_delay_seconds_count") == 1
    assert sample(h, "rotator_schedule_delay_seconds_sum") == pytest.approx(300, abs=5)
    assert len(messages(caplog, "misfire", logging.WARNING)) == 1


def test_a_due_time_another_replica_served_while_the_job_waited_is_no_misfire(
        harness: Callable[..., Harness]) -> None:
    """The job waited 10 minutes for a worker; meanwhile another replica rotated the policy. Under its
    lease the engine finds the due time served (NOTHING_TO_DO): this process started no run."""
    held = HeldExecutor()
    h = harness([("a", "1h", "")], executor=held)
    h.tick()
    h.clock.advance(timedelta(hours=1, minutes=10))
    h.tick()
    assert list(held.held) == ["a"], "queued behind busy workers"
    now = h.clock.now()
    h.daemon.journal.begin_run(RunRecord("other", "a", "done", "rotate", now, now, published_at=now))
    held.run("a")
    assert h.calls == [], "served already"
    assert not sample(h, "rotator_schedule_misfires_total", policy="a")
    assert not sample(h, "rotator_schedule_delay_seconds_count")


# ---------------------------------------------------------------------------------- reload and backoff
def fail_until_far(h: Harness, names: list[str], failures: int = 7) -> None:
    """Let ``names`` fail ``failures`` times in a row (1m doubling to 1h): their next try is far off."""
    for name in names:  # more than that: the first to reach it must not succeed while the others catch up
        h.engines[name].fail += [TransientError("vault path wrong")] * (failures + 3)
    h.clock.advance(timedelta(hours=1))
    tracks = h.daemon._tracks
    for _ in range(24 * 60):
        h.tick()
        if all(n in tracks and tracks[n].failures >= failures for n in names):
            break
        h.clock.advance(timedelta(minutes=1))
    for name in names:
        track = h.daemon._tracks[name]
        assert track.failures == failures and track.retry_at is not None
        assert track.retry_at - h.clock.now() > timedelta(minutes=30), "the wait is long now"


def test_a_reload_that_fixes_a_failing_policy_tries_it_at_once_and_caps_the_others_wait(
        harness: Callable[..., Harness]) -> None:
    """The operator fixes policy a (another store path) and lowers failure_backoff_max to 2m, and the
    watch reloads: a has a new engine, so it is tried at once; b, unchanged (same engine), waits no
    longer than the new cap, though its last backoff was about an hour."""
    backoff = 'failure_backoff = "1m"\nfailure_backoff_max = "1h"\n'
    policies = [("a", "1h", ""), ("b", "1h", "")]
    h = harness(policies, daemon=backoff)
    fail_until_far(h, ["a", "b"])
    engine_b = h.engines["b"]
    write_config(h, policies, daemon=backoff.replace('"1h"', '"2m"'))
    h.daemon.path.write_text(h.daemon.path.read_text().replace('path = "x/a"', 'path = "x/a-fixed"'))
    assert h.daemon.reload("the file changed", full=False)
    assert h.daemon._engines["b"] is engine_b, "b unchanged: its engine kept"
    h.engines["a"].fail.clear()
    engine_b.fail.clear()
    h.tick()
    assert h.calls == ["rotate a"], "the changed policy at once"
    assert sample(h, "rotator_consecutive_failures", policy="a") == 0
    assert h.daemon._tracks["b"].retry_at is not None
    assert h.daemon._tracks["b"].retry_at <= h.clock.now() + timedelta(minutes=2), "b within the new cap"
    h.clock.advance(timedelta(minutes=2))
    h.tick()
    assert h.calls == ["rotate b"]


def test_a_sighup_tries_a_failing_policy_again_at_once_and_a_new_failure_backs_off_on(
        harness: Callable[..., Harness]) -> None:
    """A SIGHUP builds every engine again (a replaced CA bundle or credentials file may be the fix):
    the failing policy is tried at once. Its failure count goes on, so a failure after the reload
    backs off from where it was (reloads make no retry loop)."""
    h = harness([("a", "1h", "")], daemon='failure_backoff = "1m"\nfailure_backoff_max = "1h"\n')
    fail_until_far(h, ["a"])
    assert h.daemon.reload("SIGHUP", full=True)
    h.engines["a"].fail.append(TransientError("still wrong"))
    h.tick()
    assert h.calls == ["rotate a"], "tried at once"
    track = h.daemon._tracks["a"]
    assert track.failures == 8 and track.retry_at is not None
    assert track.retry_at - h.clock.now() >= timedelta(minutes=45), "backs off at the cap again"


def test_a_sighup_during_a_failing_run_lets_the_new_adapters_try_at_once(
        harness: Callable[..., Harness], caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    """The operator's SIGHUP (a fixed CA bundle) comes while the failing run is still inside the issuer:
    the reload ended the policy's backoff, then the run's failure, the old adapters', started a new one
    (10 minutes) before the new adapters were ever tried. It counts, and the new engine rotates at once."""
    workers = HeldExecutor()
    h = harness([("a", "30d", "")], daemon='failure_backoff = "10m"\n', last=None, executor=workers)
    h.tick()
    assert list(workers.held) == ["a"]
    old = h.engines["a"]

    def fail_after_a_sighup(**_: Any) -> Any:
        old.calls.append("rotate a (old adapters)")
        assert h.daemon.reload("SIGHUP", full=True)
        raise TransientError("issuer refused: unknown CA")

    old.rotate = fail_after_a_sighup  # type: ignore[method-assign]
    caplog.set_level(logging.INFO, logger="rotator.daemon")
    workers.run("a")
    assert h.calls == ["rotate a (old adapters)"] and h.engines["a"] is not old
    track = h.daemon._tracks["a"]
    assert track.failures == 1 and track.retry_at is None, "counted, no backoff"
    assert sample(h, "rotator_consecutive_failures", policy="a") == 1
    assert messages(caplog, "retrying at once with the adapters a reload built", logging.ERROR)
    h.tick()
    assert list(workers.held) == ["a"], "tried again at once"
    workers.run("a")
    assert h.calls == ["rotate a"] and sample(h, "rotator_consecutive_failures", policy="a") == 0


@pytest.mark.parametrize("change", ["schedule shortened", "enabled"])
def test_a_rotation_due_by_what_a_reload_changed_is_no_misfire(harness: Callable[..., Harness],
                                                              change: str) -> None:
    """Ten days after a's last rotation, a reload shortens its schedule from 30d to 7d (or enables it, 40 days
    after): due three (ten) days before the reload that made it so. Its rotation follows the reload at once,
    neither days late nor a misfire; only lateness after the change counts."""
    disabled = "enabled = false" if change == "enabled" else ""
    h = harness([("a", "30d", disabled)])
    h.tick()
    h.clock.advance(timedelta(days=10 if change == "schedule shortened" else 40))
    h.tick()
    assert h.calls == []
    if change == "enabled":
        write_config(h, [("a", "30d", "")])
    else:
        write_config(h, [("a", "7d", "")])
    assert h.daemon.reload("SIGHUP")
    h.tick()
    assert h.calls == ["rotate a"]
    assert not sample(h, "rotator_schedule_misfires_total", policy="a")
    assert sample(h, "rotator_schedule_delay_seconds_count") == 1
    assert sample(h, "rotator_schedule_delay_seconds_sum") == 0


def test_a_reload_caps_the_wait_of_a_failing_revocation(harness: Callable[..., Harness]) -> None:
    """A revocation that fails before recording its own next try backs off like a rotation: a reload
    that lowers failure_backoff_max caps its wait too (its policy unchanged, its engine kept)."""
    backoff = 'failure_backoff = "1m"\nfailure_backoff_max = "1h"\nsweep_interval = "2h"\n'
    policies = [("a", "30d", "")]
    h = harness(policies, daemon=backoff)
    h.daemon.journal.schedule_revocation(Revocation("a", "t-old", "r0", "superseded", T0 + timedelta(seconds=5),
                                                    "pending"))
    h.engines["a"].revoke_fail += [TransientError("recovery of run r9 failed: issuer down")] * 7
    h.tick()
    h.clock.advance(timedelta(seconds=5))
    for _ in range(24 * 60):
        h.tick()
        if h.daemon._tracks["a"].revoke_failures >= 7:
            break
        h.clock.advance(timedelta(minutes=1))
    track = h.daemon._tracks["a"]
    assert track.revoke_retry_at is not None and track.revoke_retry_at - h.clock.now() > timedelta(minutes=30)
    engine = h.engines["a"]
    write_config(h, policies, daemon=backoff.replace('max = "1h"', 'max = "2m"'))
    assert h.daemon.reload("the file changed", full=False)
    assert h.daemon._engines["a"] is engine
    h.tick()
    assert h.calls == []
    h.clock.advance(timedelta(minutes=2))
    h.tick()
    assert h.calls == ["revoke a"], "within the new cap"
    assert [r.state for r in h.daemon.journal.revocations("a")] == ["done"]


# ---------------------------------------------------------------------------------- queued jobs
@pytest.mark.parametrize("change", ["disabled", "removed"])
def test_a_queued_rotation_does_not_run_once_a_reload_disabled_or_removed_its_policy(
        harness: Callable[..., Harness], caplog: pytest.LogCaptureFixture, change: str) -> None:
    """Both policies' rotations wait for a worker; the watch reloads a file that disables (removes)
    a. When a worker takes a's job, it is skipped (no failure, no success); b, unchanged, keeps its
    engine and its queued job runs."""
    held = HeldExecutor()
    h = harness([("a", "1h", ""), ("b", "1h", "")], executor=held)
    h.tick()
    h.clock.advance(timedelta(hours=1))
    h.tick()
    assert sorted(held.held) == ["a", "b"]
    if change == "disabled":
        write_config(h, [("a", "1h", "enabled = false"), ("b", "1h", "")])
    else:
        write_config(h, [("b", "1h", "")])
    caplog.set_level(logging.INFO, logger="rotator.daemon")
    assert h.daemon.reload("the file changed", full=False)
    held.run("a")
    assert h.calls == [], "not rotated"
    assert messages(caplog, f"rotate job skipped: its policy was {change} by a reload since the job was queued")
    held.run("b")
    assert h.calls == ["rotate b"], "an unchanged policy's queued job runs"
    h.tick()
    assert h.calls == [] and held.held == {}, "a is not planned again"
    assert "a" not in h.daemon._tracks or h.daemon._tracks["a"].failures == 0
    assert not sample(h, "rotator_rotations_total", policy="a", result="failure")
    assert not sample(h, "rotator_rotations_total", policy="a", result="success")
    assert not sample(h, "rotator_consecutive_failures", policy="a")


def test_a_queued_rotation_runs_with_the_engine_a_sighup_built(
        harness: Callable[..., Harness], caplog: pytest.LogCaptureFixture) -> None:
    """A SIGHUP builds every engine again: a rotation queued before it is not run with the old one
    (its adapters hold what the reload replaced) but planned again, and runs with the new one."""
    held = HeldExecutor()
    h = harness([("a", "1h", "")], executor=held)
    h.tick()
    h.clock.advance(timedelta(hours=1))
    h.tick()
    assert list(held.held) == ["a"]
    old = h.engines["a"]
    assert h.daemon.reload("SIGHUP", full=True)
    new = h.engines["a"]
    assert new is not old
    old_calls: list[str] = []
    old.calls = old_calls  # what the old engine would do
    caplog.set_level(logging.INFO, logger="rotator.daemon")
    held.run("a")
    assert old_calls == [] and h.calls == [], "skipped: planned again"
    assert messages(caplog, "rotate job skipped: its policy was set up anew by a reload since the job was queued")
    h.tick()
    assert list(held.held) == ["a"], "queued again at once: it is still due"
    held.run("a")
    assert h.calls == ["rotate a"] and old_calls == []
    assert sample(h, "rotator_rotations_total", policy="a", result="success") == 1
