"""The daemon's jobs against what happens around them, in-process on a fake clock: the watchdog
judging a long run by its progress (its waits between tries included, before its lease too), a job
that cannot start, a reload or a sweep overlapping a job's end (the views written by the scheduler's
thread alone), an inventory that outlives its interval or wakes the pass that starts the next, a
policy removed while its job runs.
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
from rotator.core.retry import RetryPolicy, call_with_retry
from rotator.runners.daemon import TICK_RETRY, Daemon, default_engine, engine_clock
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


def test_a_run_retrying_plan_before_its_lease_is_live_and_one_hung_in_a_call_is_stuck(
        harness: Callable[..., Harness], shifted: list[float]) -> None:
    """PLAN reads the stores and checks the issuer before the run takes its lease, retrying each
    call (up to 5 tries, waits up to retry.max_delay): no lease call, so no progress, for 5 calls and
    their waits. With calls of 10 minutes (a slow issuer's timeout) that passed twice the lease's TTL,
    and a healthy run was declared stuck (503, a restart). Each wait between two tries is progress
    now (engine_clock); a call that never answers is still stuck past the limit."""
    held = HeldExecutor()
    h = harness([("a", "1h", "")], executor=held)
    engine = h.engines["a"]
    journal = engine.journal
    ttl = h.daemon.loaded.config.settings.lease_ttl
    limit = 2 * ttl.total_seconds()  # 30 min
    call_s = 600.0
    seen: list[tuple[float, Any]] = []  # (the run's time without progress, who is stuck) at each call's end
    hanging, hang = threading.Event(), threading.Event()

    class _Clock:
        """The system clock as the watchdog sees it: a wait moves its time on."""

        def now(self) -> Any:
            return h.clock.now()

        def sleep(self, seconds: float) -> None:
            shifted[0] += seconds

    clock = engine_clock(journal, "a", _Clock())
    assert clock is not None

    def call(fail: bool) -> None:
        shifted[0] += call_s  # a call that takes (or times out after) 10 minutes
        idle = daemon_module.time.monotonic() - h.daemon._job_progress["a"]
        seen.append((idle, h.daemon.progress()[1].get("stuck")))
        if fail:
            raise TransientError("timed out")

    def rotate(**_: Any) -> RunResult:
        retry = RetryPolicy(5, 1.0, 60.0)
        call_with_retry(lambda: call(False), what="read store", policy=retry, clock=clock)
        tries = iter([True] * 4 + [False])
        call_with_retry(lambda: call(next(tries)), what="check issuer", policy=retry, clock=clock)
        journal.acquire_lease("a", engine.holder, ttl, h.clock.now())
        hanging.set()
        hang.wait(30)  # a call that never answers
        journal.release_lease("a", engine.holder)
        return _publish(engine, "r1")

    engine.rotate = rotate  # type: ignore[method-assign]
    h.tick()
    h.clock.advance(timedelta(hours=1))
    h.tick()
    job = threading.Thread(target=held.run, args=("a",))
    job.start()
    try:
        assert hanging.wait(30)
        assert len(seen) == 6 and [stuck for _, stuck in seen] == [None] * 6, seen
        # (real time passes too between a call's mark and its look: ms, seconds on a loaded machine; a
        # third call's would add 600 s)
        assert max(idle for idle, _ in seen) == pytest.approx(2 * call_s, abs=30), "at most a store read and a try"
        shifted[0] += limit - 5
        h.tick()  # the scheduler's passes go on meanwhile
        assert h.daemon.liveness()[0], "hung for just under the limit: still live"
        shifted[0] += 10
        h.tick()
        alive, detail = h.daemon.liveness()
        assert not alive and detail["stuck"]["a"]["job"] == "rotate", detail
    finally:
        hang.set()
        job.join(30)


def test_a_daemons_engine_reports_its_waits_between_tries(harness: Callable[..., Harness]) -> None:
    h = harness([("a", "1h", "")])
    engine = default_engine(h.daemon.policies[0], h.daemon.loaded.config, h.daemon._engine_journal,
                            h.daemon.on_event)
    with h.daemon._lock:
        h.daemon._job_progress["a"] = 0.0  # a job of "a" runs
    try:
        engine.clock.sleep(0)
        assert h.daemon._job_progress["a"] > 0.0
    finally:
        with h.daemon._lock:
            h.daemon._job_progress.pop("a", None)
    assert engine_clock(h.daemon.journal, "a") is None, "outside the daemon: the engine's own clock"


class _HungKeepAlive:
    """A store credential whose keep-alive hangs in its call until told to end."""

    def __init__(self) -> None:
        self.inside = threading.Event()
        self.end = threading.Event()

    def credential_due(self) -> Any:
        return T0

    def keep_alive(self) -> None:
        self.inside.set()
        self.end.wait(30)

    def credential_status(self) -> dict[str, Any]:
        return {"ok": True, "failures": 0, "error": None, "expires_at": None}


def test_a_keep_alive_hung_in_a_call_is_stuck(tmp_path: Path, shifted: list[float]) -> None:
    """The keep-alive jobs are kept apart from the runs (a run waiting for a worker must not hold them
    back): the watchdog still sees one that hangs, as it did when they shared the run table."""
    (tmp_path / "vault-token").write_text("x")
    config = tmp_path / "rotator.toml"
    config.write_text(HEAD + POLICY.format(name="a", schedule="1h", extra=""))
    journal = open_journal("sqlite:///" + str(tmp_path / "journal.db"))
    journal.begin_run(RunRecord("boot-a", "a", "done", "bootstrap", T0, T0, published_at=T0))
    clock = FakeClock(T0)
    store = _HungKeepAlive()

    def factory(policy: Any, cfg: Any, jr: Any, listener: Any) -> FakeEngine:
        engine = FakeEngine(policy.name, jr, clock, [])
        engine.stores = [("vault", store)]  # type: ignore[attr-defined]
        return engine

    d = Daemon(config, clock=clock, serve_http=False, engine_factory=factory, handle_signals=False)
    d.start()
    try:
        d.tick(clock.now())
        assert store.inside.wait(5), "a's keep-alive is going"
        limit = max(10.0, 2 * d.loaded.config.settings.lease_ttl.total_seconds())
        shifted[0] += limit - 5
        d.tick(clock.now())
        assert d.liveness()[0], "just under the limit: still live"
        shifted[0] += 10
        d.tick(clock.now())
        alive, detail = d.liveness()
        assert not alive and detail["stuck"]["a"]["job"] == "credentials", detail
    finally:
        store.end.set()
        d.shutdown()


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
def _a_rotation_held(harness: Callable[..., Harness],
                     pending: Revocation | None = None) -> tuple[HeldExecutor, Harness]:  # fmt: skip
    """Policy "a" (1h), whose rotation is due and held, not run yet: once run, it also schedules the
    revocation of the token it replaced ("t-old", due 10 s after it). ``pending``: a revocation in the
    journal from the start."""
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
    if pending is not None:
        h.daemon.journal.schedule_revocation(pending)
    h.tick()
    h.clock.advance(timedelta(hours=1))
    h.tick()
    assert list(held.held) == ["a"]
    return held, h


@pytest.mark.parametrize("load", ["reload", "sweep"])
def test_a_load_of_the_views_overlapping_a_jobs_end_keeps_the_jobs_result(
        harness: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch, load: str) -> None:
    """A reload (or a sweep) reads the journal just before a job commits; the job ends, and then the
    load puts what it read in place: the job's publication and the previous token's revocation were
    lost from the daemon's view (the revocation not planned until the next sweep). The pass the
    job's end wakes reads its policy again, after the load."""
    # An older token's revocation, pending for days: each sweep compares the policy's revocations.
    later = T0 + timedelta(days=7)
    held, h = _a_rotation_held(harness, Revocation("a", "t-older", "r0", "superseded", later, "pending"))
    journal = h.daemon.journal
    read = journal.overview

    def overview(now: Any, since: Any, **kwargs: Any) -> Any:
        before = read(now, since, **kwargs)  # read before the job commits...
        monkeypatch.setattr(journal, "overview", read)
        held.run("a")  # ...which then ends: it commits and refreshes its view
        return before

    monkeypatch.setattr(journal, "overview", overview)
    if load == "reload":
        # (The watch's reload, which keeps a's engine: after a SIGHUP's new engine the held job would
        # not run, but be planned again: test_daemon_busy_and_reload.py.)
        h.daemon.path.write_text(h.daemon.path.read_text() + "# edited\n")
        assert h.daemon.reload("the file changed", full=False)
    else:
        h.clock.advance(timedelta(minutes=1))  # the next sweep
        h.tick()
    last = journal.last_success("a")
    assert last is not None and last.run_id != "boot-a"
    assert h.tick() == pytest.approx(10), "the pass its end woke: the revocation is planned at its due time"
    view = h.daemon._views["a"]
    assert (view.run_id, view.published_at) == (last.run_id, last.published_at)
    assert [due for due, _ in view.pending] == [h.clock.now() + timedelta(seconds=10), later]
    h.clock.advance(timedelta(seconds=10))
    h.tick()
    assert list(held.held) == ["a"], "its revocation job, on time"
    held.run("a")
    assert h.calls == ["revoke a"]


def test_a_read_of_the_view_made_before_a_jobs_commit_is_not_written_after_it(
        harness: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch) -> None:
    """The scheduler read a running policy's journal state again (Journal.policy_state) just before
    its job committed; the job ended and refreshed the view; then the scheduler wrote what it had read:
    the publication and the revocation were lost until the next sweep. Forced here: a read on the
    scheduler's thread while the job runs lets the job commit and end before it returns. Only the
    scheduler's thread writes the views now, from reads made after the job's end."""
    held, h = _a_rotation_held(harness)
    journal = h.daemon.journal
    read = journal.policy_state
    scheduler = threading.current_thread()

    def policy_state(name: str) -> Any:
        before = read(name)
        if threading.current_thread() is scheduler and "a" in held.held:
            job = threading.Thread(target=held.run, args=("a",))  # the job commits, ends (and refreshes)
            job.start()
            job.join(30)
        return before  # ...then the scheduler writes what it read before

    monkeypatch.setattr(journal, "policy_state", policy_state)
    h.clock.advance(timedelta(minutes=1))
    h.tick()  # the sweep, while the job runs
    if "a" in held.held:  # no read of it meanwhile: it ends after the sweep
        job = threading.Thread(target=held.run, args=("a",))
        job.start()
        job.join(30)
    assert h.tick() == pytest.approx(10), "the revocation is planned at its due time"
    last = journal.last_success("a")
    view = h.daemon._views["a"]
    assert last is not None and (view.run_id, view.published_at) == (last.run_id, last.published_at)
    h.clock.advance(timedelta(seconds=10))
    h.tick()
    assert list(held.held) == ["a"], "its revocation job, on time (not at the next sweep)"
    held.run("a")
    assert h.calls == ["revoke a"]


def test_only_the_schedulers_thread_writes_the_views(harness: Callable[..., Harness],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    held = HeldExecutor()
    h = harness([("a", "1h", "")], executor=held)
    writers: list[str] = []
    set_last = h.daemon._set_last
    monkeypatch.setattr(h.daemon, "_set_last", lambda *a: (writers.append(threading.current_thread().name),
                                                           set_last(*a))[1])
    h.tick()
    h.clock.advance(timedelta(hours=1))
    h.tick()
    job = threading.Thread(target=held.run, args=("a",), name="a-worker")
    job.start()
    job.join(30)
    assert h.daemon._views["a"].run_id == "boot-a", "not yet: the pass its end wakes reads it"
    h.tick()
    assert h.daemon._views["a"].run_id == "r1"
    assert writers and set(writers) == {threading.current_thread().name}, writers


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


def test_the_pass_an_ended_inventory_wakes_starts_the_next_one(
        harness: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch) -> None:
    """The inventory's thread wakes the loop as it ends, alive still: a pass that ran then took it for
    running (Thread.is_alive()), and the overdue inventory waited for a later pass (up to the sweep).
    Forced here: the woken pass runs while the ended thread is still in its wake-up."""
    import rotator.observe.inventory as inventory

    release, started = threading.Event(), []

    def slow(*_: Any, **__: Any) -> Any:
        started.append(1)
        if len(started) == 1:
            release.wait(30)  # the first outlives its interval
        raise RuntimeError("no answer")

    monkeypatch.setattr(inventory, "take_inventory", slow)
    monkeypatch.setattr(inventory, "policy_targets", lambda *_: [])
    h = harness([("a", "30d", "")], daemon='inventory_interval = "1m"\nsweep_interval = "10m"\n')
    woken, resume = threading.Event(), threading.Event()
    wakeup = h.daemon.wakeup

    def wakeup_and_wait() -> None:
        if threading.current_thread().name == "rotator-inventory" and not woken.is_set():
            woken.set()
            resume.wait(30)  # the woken pass runs before this thread exits
        wakeup()

    monkeypatch.setattr(h.daemon, "wakeup", wakeup_and_wait)
    try:
        assert h.tick() == pytest.approx(60)
        first = h.daemon._inventory_thread
        assert first is not None
        h.clock.advance(timedelta(seconds=61))
        assert h.tick() == pytest.approx(60), "still running: looked at again an interval later"
        release.set()
        assert woken.wait(10)
        assert first.is_alive()
        assert h.tick() == pytest.approx(60)
        second = h.daemon._inventory_thread
        assert second is not first, "the ended inventory's wake-up starts the overdue one"
    finally:
        release.set()
        resume.set()
    first.join(10)
    assert second is not None
    second.join(10)
    assert len(started) == 2


# ---------------------------------------------------------------------------------- a policy removed
@pytest.mark.parametrize("outcome", ["failure", "success"])
def test_a_policy_removed_once_its_running_job_ended_leaves_no_metrics_behind(
        harness: Callable[..., Harness], outcome: str) -> None:
    """A reload that removes a policy while its job runs is refused (the run may still publish and schedule
    a revocation: test_daemon_removed_policy.py), so the job's end counts (a failure, a success, a
    duration) while the policy is there. The reload after it forgets those series, for good:
    RotatorRotationFailing must not fire for a policy that no longer exists."""
    held = HeldExecutor()
    h = harness([("a", "1h", ""), ("b", "1h", "")], executor=held)
    h.tick()
    h.clock.advance(timedelta(hours=1))
    h.tick()
    assert sorted(held.held) == ["a", "b"]
    engine = h.engines["a"]
    if outcome == "failure":
        engine.fail.append(TransientError("issuer unreachable"))
    rotate = engine.rotate
    reloads: list[bool] = []

    def reloaded_while_it_runs(**kw: Any) -> RunResult:
        # (b keeps its engine: the watch's reload. A job still queued, not running, when its policy is
        # removed does not run at all: test_daemon_busy_and_reload.py.)
        h.daemon.path.write_text(HEAD + POLICY.format(name="b", schedule="1h", extra=""))
        reloads.append(h.daemon.reload("the file changed", full=False))
        return rotate(**kw)

    engine.rotate = reloaded_while_it_runs  # type: ignore[method-assign]
    held.run("a")
    assert h.calls == ["rotate a"] and reloads == [False], "it ran, and the reload waited for it"
    held.run("b")
    h.tick()
    assert h.daemon.reload("the file changed", full=False), "its run ended: nothing left of it"
    h.tick()
    exposition = h.daemon.metrics.exposition().decode()
    assert 'policy="a"' not in exposition, [line for line in exposition.splitlines() if 'policy="a"' in line]
    assert "a" not in h.daemon._tracks
    assert sample(h, "rotator_rotations_total", policy="b", result="success") == 1, "b's are kept"
