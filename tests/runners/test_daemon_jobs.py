"""The daemon's jobs against what happens around them, in-process on a fake clock: the watchdog
judging a long run by its progress, a job that cannot start, a reload or a sweep overlapping a job's
end, an inventory that outlives its interval, a policy removed while its job runs.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import time
import types
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import rotator.runners.daemon as daemon_module
from rotator.core.clock import FakeClock
from rotator.core.engine import RunResult
from rotator.core.errors import TransientError
from rotator.core.journal import Revocation, RunRecord, open_journal
from rotator.runners.daemon import TICK_RETRY, Daemon
from tests.runners.test_daemon import POLICY, T0, FakeEngine, Harness, HeldExecutor, InlineExecutor, sample
from tests.runners.test_daemon import harness as harness  # noqa: F401 - a fixture, used by name

HEAD = '[rotator]\njournal = "journal.db"\n[daemon]\naudit = { file = "audit.jsonl" }\n'


@pytest.fixture
def shifted(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The daemon's time.monotonic() (its watchdog's time), ``[seconds]`` ahead of the real one."""
    offset = [0.0]
    real = time.monotonic
    monkeypatch.setattr(daemon_module, "time", types.SimpleNamespace(monotonic=lambda: real() + offset[0]))
    return offset


def _publish(engine: FakeEngine, run_id: str) -> RunResult:
    now = engine.clock.now()
    engine.journal.begin_run(RunRecord(run_id, engine.name, "done", "rotate", now, now, published_at=now,
                                       finished_at=now, new_token_id=f"t-{run_id}"))
    return RunResult(engine.name, "done", run_id, None, f"t-{run_id}", "rotated")


# ---------------------------------------------------------------------------------- the watchdog
@pytest.mark.parametrize(("retry", "between", "limit"), [
    ("", timedelta(minutes=5), 1800),  # twice the lease's TTL (15m; the retry's max_delay is 60 s)
    ('[rotator.retry]\nmax_delay = "1h"\n', timedelta(minutes=50), 7200),  # tries up to an hour apart
])  # fmt: skip
def test_a_long_verify_that_confirms_its_lease_is_live_and_a_run_without_progress_is_stuck(
        harness: Callable[..., Harness], shifted: list[float], retry: str, between: timedelta, limit: float) -> None:
    """A verify may wait hours for a new token to work (verify_timeout), confirming its lease between
    tries: the watchdog judges a run by its progress (its last lease call), not its age. A run with no
    progress for twice the lease's TTL (or twice the longest wait between two tries) is stuck (503,
    systemd's watchdog no longer fed) as before."""
    held = HeldExecutor()
    h = harness([("a", "1h", "")], daemon=retry, executor=held)
    assert h.daemon.loaded.config.settings.retry.max_delay == (timedelta(hours=1) if retry else timedelta(minutes=1))
    engine = h.engines["a"]
    journal = engine.journal  # the daemon's journal as the engine got it
    ttl = h.daemon.loaded.config.settings.lease_ttl
    commands: queue.Queue[str] = queue.Queue()
    confirmed: queue.Queue[str] = queue.Queue()

    def rotate(**_: Any) -> RunResult:
        fence = journal.acquire_lease("a", engine.holder, ttl, h.clock.now())
        while commands.get(timeout=30) == "confirm":
            journal.confirm_lease("a", engine.holder, fence, ttl, h.clock.now(), "verifying")
            confirmed.put("ok")
        journal.release_lease("a", engine.holder)
        return _publish(engine, "r1")

    engine.rotate = rotate  # type: ignore[method-assign]
    h.tick()
    h.clock.advance(timedelta(hours=1))
    h.tick()
    job = threading.Thread(target=held.run, args=("a",))
    job.start()
    try:
        for _ in range(12):  # tries, ``between`` apart
            shifted[0] += between.total_seconds()
            h.clock.advance(between)
            commands.put("confirm")
            confirmed.get(timeout=30)
            h.tick()  # the scheduler's passes go on meanwhile
            alive, detail = h.daemon.liveness()
            assert alive and "stuck" not in detail, detail
        assert h.daemon.progress()[1]["progress_s_ago"] < 10, "progress: the last lease confirmation"
        shifted[0] += limit - 5
        h.tick()
        assert h.daemon.liveness()[0], "no progress for just under twice the lease's TTL: still live"
        shifted[0] += 10
        h.tick()
        alive, detail = h.daemon.liveness()
        assert not alive and detail["stuck"]["a"]["job"] == "rotate", detail
        assert limit < detail["stuck"]["a"]["no_progress_s"] < detail["stuck"]["a"]["running_s"]
        assert detail["progress_s_ago"] > limit
    finally:
        commands.put("end")
        job.join(30)
    h.tick()
    assert h.daemon.liveness()[0], "ended: live again"


# ---------------------------------------------------------------------------------- starting a job
class _RefusingExecutor(InlineExecutor):
    """Like ThreadPoolExecutor.submit when a worker thread cannot start (a pids/TasksMax limit)."""

    refusals = 1

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        if self.refusals:
            self.refusals -= 1
            raise RuntimeError("can't start new thread")
        return super().submit(fn, *args, **kwargs)


def test_a_job_that_cannot_start_is_logged_and_tried_again(
        harness: Callable[..., Harness], caplog: pytest.LogCaptureFixture) -> None:
    """Only a pool that is shutting down may refuse a job quietly: any other refusal is logged and the
    policy queued again (its queue entry was taken, and no job end would plan it again)."""
    h = harness([("a", "1h", "")], executor=_RefusingExecutor())
    h.tick()
    h.clock.advance(timedelta(hours=1))
    with caplog.at_level(logging.ERROR, logger="rotator.daemon"):
        wait = h.tick()
    assert h.calls == [] and "policy a: cannot start its rotate job" in caplog.text
    assert wait == pytest.approx(TICK_RETRY) or h.tick() == pytest.approx(TICK_RETRY), "queued again"
    assert h.calls == []
    h.clock.advance(timedelta(seconds=TICK_RETRY))
    h.tick()
    assert h.calls == ["rotate a"]


@pytest.fixture
def pooled(tmp_path: Path) -> Iterator[Callable[[], tuple[Daemon, FakeClock, list[str]]]]:
    """A daemon with its own thread pool (no executor given), on a fake clock, with FakeEngines."""
    made: list[Daemon] = []

    def make() -> tuple[Daemon, FakeClock, list[str]]:
        config = tmp_path / "rotator.toml"
        config.write_text(HEAD + POLICY.format(name="a", schedule="1h", extra=""))
        journal = open_journal("sqlite:///" + str(tmp_path / "journal.db"))
        journal.begin_run(RunRecord("boot-a", "a", "done", "bootstrap", T0, T0, published_at=T0))
        clock, calls = FakeClock(T0), []

        def factory(policy: Any, cfg: Any, jr: Any, listener: Any) -> FakeEngine:
            return FakeEngine(policy.name, jr, clock, calls)

        d = Daemon(config, clock=clock, serve_http=False, engine_factory=factory, handle_signals=False)
        d.start()
        made.append(d)
        return d, clock, calls

    yield make
    for d in made:
        d.shutdown()


def test_the_run_threads_all_start_with_the_daemon(
        pooled: Callable[[], tuple[Daemon, FakeClock, list[str]]], monkeypatch: pytest.MonkeyPatch) -> None:
    """ThreadPoolExecutor starts a thread in submit(); one that cannot start leaves the job queued in
    the pool (a running thread runs it later, outside the one-job-per-policy guard). The daemon's pool
    starts all its threads at start(), so a thread limit reached later stops no rotation."""
    d, clock, calls = pooled()
    running = [t for t in threading.enumerate() if t.name.startswith("rotator-run")]
    assert len(running) == d.settings.workers == 4
    start = threading.Thread.start

    def no_new_run_threads(thread: threading.Thread) -> None:
        if thread.name.startswith("rotator-run"):
            raise RuntimeError("can't start new thread")
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", no_new_run_threads)
    d.tick(clock.now())
    clock.advance(timedelta(hours=1))
    d.tick(clock.now())
    deadline = time.monotonic() + 10
    while calls != ["rotate a"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert calls == ["rotate a"]


# ---------------------------------------------------------------------------------- the views
@pytest.mark.parametrize("load", ["reload", "sweep"])
def test_a_load_of_the_views_overlapping_a_jobs_end_keeps_the_jobs_result(
        harness: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch, load: str) -> None:
    """A reload (or a sweep) reads the journal just before a job commits; the job ends, refreshes its
    policy's view, and then the load puts what it read in place: the job's publication and the
    previous token's revocation were lost from the daemon's view (the revocation not planned until
    the next sweep). Policies whose job ran during the read are read again."""
    held = HeldExecutor()
    h = harness([("a", "1h", "")], executor=held)
    engine = h.engines["a"]
    rotate = engine.rotate

    def rotate_and_schedule_the_revocation(**kw: Any) -> RunResult:
        result = rotate(**kw)
        engine.journal.schedule_revocation(Revocation("a", "t-old", str(result.run_id), "superseded",
                                                      h.clock.now() + timedelta(seconds=10), "pending"))
        return result

    engine.rotate = rotate_and_schedule_the_revocation  # type: ignore[method-assign]
    # An older token's revocation, pending for days: each sweep compares the policy's revocations.
    later = T0 + timedelta(days=7)
    h.daemon.journal.schedule_revocation(Revocation("a", "t-older", "r0", "superseded", later, "pending"))
    h.tick()
    h.clock.advance(timedelta(hours=1))
    h.tick()
    assert list(held.held) == ["a"]
    journal = h.daemon.journal
    read = journal.overview

    def overview(now: Any, since: Any) -> Any:
        before = read(now, since)  # read before the job commits...
        monkeypatch.setattr(journal, "overview", read)
        held.run("a")  # ...which then ends: it commits and refreshes its view
        return before

    monkeypatch.setattr(journal, "overview", overview)
    if load == "reload":
        assert h.daemon.reload("SIGHUP", full=True)
    else:
        h.clock.advance(timedelta(minutes=1))  # the next sweep
        h.tick()
    last = journal.last_success("a")
    assert last is not None and last.run_id != "boot-a"
    view = h.daemon._views["a"]
    assert (view.run_id, view.published_at) == (last.run_id, last.published_at)
    assert [due for due, _ in view.pending] == [h.clock.now() + timedelta(seconds=10), later]
    assert h.tick() == pytest.approx(10), "the revocation is planned at its due time"
    h.clock.advance(timedelta(seconds=10))
    h.tick()
    assert list(held.held) == ["a"], "its revocation job, on time"
    held.run("a")
    assert h.calls == ["revoke a"]


# ---------------------------------------------------------------------------------- the inventory
def test_an_inventory_that_outlives_its_interval_does_not_make_the_scheduler_spin(
        harness: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch) -> None:
    """Its next due time passes while it still runs: the pass looked again after 10 ms, every 10 ms,
    until it ended. Now the pass waits (an interval, or the sweep) and the inventory's end wakes it."""
    import rotator.observe.inventory as inventory

    release, started = threading.Event(), []

    def slow(*_: Any, **__: Any) -> Any:
        started.append(1)
        release.wait(30)  # slow or unreachable issuers
        raise RuntimeError("no answer")

    monkeypatch.setattr(inventory, "take_inventory", slow)
    monkeypatch.setattr(inventory, "policy_targets", lambda *_: [])
    h = harness([("a", "30d", "")], daemon='inventory_interval = "1m"\nsweep_interval = "10m"\n')
    woken: list[int] = []
    wakeup = h.daemon.wakeup
    monkeypatch.setattr(h.daemon, "wakeup", lambda: (woken.append(1), wakeup())[1])
    try:
        assert h.tick() == pytest.approx(60) and len(started) == 1
        h.clock.advance(timedelta(seconds=61))
        assert [h.tick() for _ in range(3)] == [pytest.approx(60)] * 3, "no pass before an interval"
        assert len(started) == 1, "one inventory at a time"
        thread = h.daemon._inventory_thread
        assert thread is not None
    finally:
        release.set()
    thread.join(10)
    assert woken, "its end wakes the loop"
    h.tick()
    assert len(started) == 2, "the next one, due already, starts then"


# ---------------------------------------------------------------------------------- a policy removed
@pytest.mark.parametrize("outcome", ["failure", "success"])
def test_a_policy_removed_while_its_job_runs_leaves_no_metrics_behind(
        harness: Callable[..., Harness], outcome: str) -> None:
    """A reload forgets a removed policy's series; its job still running then ends and counts (a
    failure, a success, a duration): those series came back for good, RotatorRotationFailing firing
    for a policy that no longer exists. They go again when the job ends."""
    held = HeldExecutor()
    h = harness([("a", "1h", ""), ("b", "1h", "")], executor=held)
    h.tick()
    h.clock.advance(timedelta(hours=1))
    h.tick()
    assert sorted(held.held) == ["a", "b"]
    if outcome == "failure":
        h.engines["a"].fail.append(TransientError("issuer unreachable"))
    h.daemon.path.write_text(HEAD + POLICY.format(name="b", schedule="1h", extra=""))
    assert h.daemon.reload("SIGHUP", full=True)
    held.run("a")
    held.run("b")
    h.tick()
    exposition = h.daemon.metrics.exposition().decode()
    assert 'policy="a"' not in exposition, [line for line in exposition.splitlines() if 'policy="a"' in line]
    assert "a" not in h.daemon._tracks
    assert sample(h, "rotator_rotations_total", policy="b", result="success") == 1, "b's are kept"
