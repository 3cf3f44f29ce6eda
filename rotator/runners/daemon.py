"""`rotator daemon`: rotate every policy on its schedule, revoke previous tokens when their grace
ends, serve /healthz, /readyz and /metrics, and tell the outside world (docs/daemon.md).

The daemon is a pure-ish :meth:`Daemon.tick` — one pass over the journal that starts whatever is
due and returns the seconds until something else will be — and a tiny driver that sleeps on an
event that signals and finished runs set. Runs happen on a thread pool, one at a time per policy;
the stores' keep-alive jobs (below) on a thread of their own, so that long runs never hold them back.

What decides when:

- **Rotations** are due at ``Schedule.next_due(last successful publication, now)`` (a bootstrapped
  token's creation where earlier: RunRecord.token_since; one ahead of the clock by more than
  AHEAD_SLACK, written by a clock that ran ahead, from when the daemon met it: Daemon._origin_for_plan), read
  from the journal (kept in memory, and read again whenever a policy looks due), so a restart never
  resets a clock and every replica agrees. Interval,
  ``rate()``, 5-field and AWS ``cron(...)`` schedules (cron maths by APScheduler's CronTrigger)
  and windows with jitter are all in rotator.config.schedule. APScheduler's job options map to: coalesce
  (however many fire times were missed, a policy rotates once), max_instances=1 (one run per
  policy at a time, in this process by the busy set and across replicas by the journal lease),
  misfire grace (a run starting later than ``misfire_grace`` is counted and logged as a misfire —
  it still runs: skipping it would let a token outlive its schedule; a look that finds the lease
  busy or the due time served already started no run and counts nothing).
- **Revocations** wake the loop at their exact due time (from the journal's pending revocations);
  a sweep every ``sweep_interval`` also recovers runs that another process abandoned (a sweep that
  failed is tried again TICK_RETRY later, doubling to ``sweep_interval``).

What it costs (issue 12): a pass costs what is due, not what is configured. Each policy's journal
state (last publication, open runs, pending and failed revocations, lease) is kept in memory
(``_View``): read for every policy at start in a few queries (:meth:`Journal.overview`), again for
one policy after each job of this process, and by each sweep for what other processes changed
(bounded by what is current). The next due times wait in a heap; a pass pops what is due, and
plans again only the policies whose job ended. The start recovers only policies with open runs.
``/metrics`` is made from the views without a journal query (Daemon.snapshot, metrics.StateText),
and from the stores' credentials as last read, without a store call (metrics.LiveText); their
due times wait in a heap of their own (see the stores' credentials below).
- **Failures** back off per policy (``failure_backoff``, doubling to ``failure_backoff_max``);
  the previous token stays current meanwhile. A reload ends the wait of a policy whose engine it
  built again and caps the others' at the new ``failure_backoff_max``. ``LeaseBusy`` means
  another rotator has the policy: skipped quietly and looked at again a second or two later.

A rotation is ``Engine.rotate(expect_last_run=...)``: the engine takes the policy's lease with the
planned run and, under it, checks that the last successful run is still the one the daemon planned
from (after recovering an interrupted run), so two replicas never rotate one due time twice.

Liveness means progress. A watchdog thread knows when the scheduler last finished a pass (one
that raised is none, nor one within TICK_RETRY after it: :meth:`Daemon.tick`) and
when each run last made progress: took, confirmed, renewed or released its policy's lease (the
engine confirms it before every side effect and between the tries of a verify; the journal the
engines get, :class:`_ProgressJournal`, tells the watchdog), or started or ended a wait between two
tries of a call (their clock, :func:`engine_clock`: PLAN's retries before the lease too). A pass
older than ``max(60 s, 3 sweeps)``, or a run without progress for ``max(2 x lease_ttl, 2 x retry
max_delay, 10 s)`` (past its lease, which it cannot legitimately outlive), makes ``/healthz``
and ``/readyz`` answer 503 and ``rotator_watchdog_stalled`` 1, so Kubernetes restarts a wedged
daemon; a long run that keeps confirming its lease (a verify waiting minutes for a new token to
work) is not stuck. On the way
into a stall it dumps every thread's stack to stderr (faulthandler: no lock, no logging, works
when logging itself is wedged); SIGUSR2 dumps them on demand. A journal
that lost durability (a failed flush of the SQLite WAL, which only opening the journal again
clears) fails ``/healthz`` too, and the daemon stops by itself with exit status
EXIT_JOURNAL_LOST, which systemd's Restart=on-failure restarts as well.

Superseded: once a newer rotator upgraded the journal's schema (a rolling upgrade's first new
replica), this process may write it no more, and every lease take, the readiness ping and the
prune's write transaction say so (JournalSchemaNewer). At the first of them the daemon stops
starting work for good (:meth:`Daemon._supersede`): no rotation, revocation, recovery, keep-alive,
sweep or prune; one ERROR line and one ``rotate``/``failed`` event (``superseded``, policy null)
instead of a failure per policy per retry; /readyz fails and /healthz stays ok. It does not exit: a
restart of this version cannot open the journal either, so an exit would be a restart loop. A job
already running goes on to its end, under the lease it took before the upgrade.

Stores with a credential of their own that expires (a Vault token) are kept alive between runs:
the daemon calls their ``keep_alive()`` when their ``credential_due()`` comes, and shows their
``credential_status()`` in ``/readyz`` and the ``rotator_credential_*`` metrics. Those jobs run on
their own thread (CREDENTIAL_WORKERS), never queued behind ``workers`` busy rotations, nor behind a
job of their own policy that only waits for a worker; but a store is not thread-safe, so a policy's
run and its keep-alive never go at once (the policy's lock, :meth:`Daemon._job`): its run, once it
runs, holds back its keep-alive (its Vault calls renew the token on use; docs/daemon.md says how
long a token must live for that), and a run waits for a keep-alive already going.
Both are read after each job of the policy (whatever its kind: a run's calls move them too), at
start, at a reload, after a clock step back and when the due time queued for them comes
(:meth:`Daemon._plan_credentials`), never for every policy at a pass; the metrics show the status
so read (asked again at a scrape only while a job of the policy runs), ``/readyz`` asks every store.
A status may say when its ``ok`` turns false with time alone (``ok_until``): it is read again then.

Signals: SIGHUP is a full reload: the policy file is read and validated again and every policy's
engine and stores are built anew, whatever the content (a policy records the paths of the files it
references, not their content: a replaced CA bundle or AWS credentials file takes effect only in
new adapters; a Vault secret_id file is read at each login, so at once only in new ones), and the
audit file is reopened; an invalid file is rejected and the running configuration kept whole
(:meth:`Daemon.reload`). The file watch (``watch = true``) reloads
by content: the same content builds nothing, and a policy whose settings did not change keeps its
engine and stores (no new Vault login per ConfigMap edit). SIGUSR1 reopens the audit file and
does nothing else (logrotate's ``postrotate``). SIGTERM/SIGINT stop taking runs, give the runs in
progress ``shutdown_timeout`` to finish, then exit 0. A run still going at the deadline is parked:
its journal entry makes it recoverable, and the next start (or another replica once the lease
expires) recovers it.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import faulthandler
import hashlib
import heapq
import logging
import math
import os
import random
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

from rotator.config.daemon_config import DaemonSettings, parse_listen
from rotator.config.policy import Config, Policy, load_config
from rotator.config.policy_source import read_policy_file
from rotator.config.schedule import NoNextDue, format_duration
from rotator.core import clock_offset
from rotator.core.clock import Clock, SystemClock
from rotator.core.due import age_origin, decide
from rotator.core.engine import NOTHING_TO_DO, Engine, NeedsAttention, RunResult, takes_over_dead_holders
from rotator.core.errors import ConfigError, JournalSchemaNewer, LeaseBusy, LeaseLost, PermanentError, RotatorError
from rotator.core.errors import describe as _describe
from rotator.core.journal import Journal, Overview, RevocationState, RunRecord, RunState, open_journal, sqlite_path, ts
from rotator.core.retry import RetryPolicy, doubling
from rotator.core.secret import REDACTOR
from rotator.observe.compliance import AHEAD_SLACK, is_ahead
from rotator.runners.systemd_notify import SystemdNotify

if TYPE_CHECKING:
    from rotator.observe.metrics import CredentialState, LiveSnapshot, Metrics, StateSnapshot
    from rotator.observe.notify import Notifier

__all__ = ["Daemon", "DaemonConfig", "add_parser", "cmd_daemon", "load_daemon_config", "main"]

logger = logging.getLogger("rotator.daemon")

#: After LeaseBusy, look at the policy again after a random wait in this range (seconds).
BUSY_RETRY = (1.0, 2.0)
#: After an unexpected error in a tick (journal unreachable...), try again after this long.
TICK_RETRY = 5.0
MIN_WAIT = 0.01
#: how often the daemon prunes history older than keep_history
PRUNE_EVERY = timedelta(days=1)
#: The watchdog looks this often (seconds); the readiness probe of the journal runs as often.
WATCHDOG_EVERY = 1.0
#: A journal check older than this (it hangs) makes /readyz fail.
JOURNAL_CHECK_STALE_S = 10.0
#: At a reload that replaces the notifier, how long the previous one's queued webhooks and hooks get
#: before it is closed (what still runs then goes on in the background, reporting to the new one).
RELOAD_NOTIFY_CLOSE_S = 10.0
#: The exit status of a daemon that stopped because its journal can no longer make a commit
#: durable (sysexits EX_IOERR): non-zero, so that systemd (Restart=on-failure) or Kubernetes starts
#: it again, which opens the journal again and recovers the runs that were going.
EXIT_JOURNAL_LOST = 74
#: Threads of the stores' keep-alive jobs (renewing a Vault token), apart from the run threads: behind
#: `workers` long runs (a verify waits up to verify_timeout) a short-lived token expired before its
#: renewal got a thread. A renewal is a request or two, so one thread serves every policy.
CREDENTIAL_WORKERS = 1
#: Between two keep-alive calls of a policy's stores (seconds): after a success, or after an error
#: when the stores planned their own retry (a Vault login backs off, and hurries near the token's
#: expiry); after an error that planned nothing later than now, the longer pause.
CREDENTIAL_PAUSE = (1.0, 5.0)


class EngineLike(Protocol):
    """What the daemon needs of an engine (rotator.core.engine.Engine; a fake in unit tests)."""

    holder: str
    lease_ttl: timedelta

    def rotate(self, *, expect_last_run: str | None) -> RunResult: ...

    def recover(self) -> list[str]: ...

    def revoke_due(self) -> list[str]: ...


EngineFactory = Callable[[Policy, Config, Journal, Callable[[Mapping[str, Any]], None]], EngineLike]


def default_engine(
    policy: Policy, config: Config, journal: Journal, listener: Callable[[Mapping[str, Any]], None]
) -> EngineLike:
    r = config.settings.retry
    return Engine(policy, journal, retry=RetryPolicy(r.attempts, r.base_delay.total_seconds(),
                                                     r.max_delay.total_seconds()),
                  lease_ttl=config.settings.lease_ttl, listeners=[listener], clock=engine_clock(journal, policy.name))


def engine_clock(journal: Journal, policy: str, clock: Clock | None = None) -> Clock | None:
    """The clock a daemon's engine gets: ``clock`` (the system's), whose waits between two tries of a
    call are reported as progress of the policy's job (:class:`_WaitReporting`) when ``journal`` is the
    daemon's :class:`_ProgressJournal`; ``clock`` unchanged otherwise."""
    if not isinstance(journal, _ProgressJournal):
        return clock
    return _WaitReporting(clock or SystemClock(), lambda: journal.waited(policy))


class _WaitReporting:
    """A clock whose ``sleep`` (call_with_retry's wait between two tries, PLAN's before the lease
    too) reports progress as it starts and as it ends: a run that retries is not hung in a call."""

    def __init__(self, clock: Clock, report: Callable[[], None]) -> None:
        self._clock = clock
        self._report = report

    def now(self) -> datetime:
        return self._clock.now()

    def sleep(self, seconds: float) -> None:
        self._report()
        try:
            self._clock.sleep(seconds)
        finally:
            self._report()

    def __getattr__(self, name: str) -> Any:  # FakeClock.advance in tests
        return getattr(self._clock, name)


# ---------------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class DaemonConfig:
    """A validated policy file: the policies (with their windows) and the ``[daemon]`` table."""

    config: Config
    daemon: DaemonSettings


def load_daemon_config(path: str | Path) -> DaemonConfig:
    """Read and validate a policy file with its ``[daemon]`` table; PolicyFileError lists every problem."""
    config = load_config(path)
    return DaemonConfig(config, config.daemon)


def _fingerprint(path: Path) -> tuple[int, int, int] | None:
    """What the watch compares: the file's modification time, size and inode (stat() follows the
    symlinks, so a ConfigMap's swapped ``..data`` link changes it); None when it cannot be read."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


#: ``Daemon._last_failed_fp`` while no reload failed: no file has a size of -1, so it differs from
#: every fingerprint, None (the file is gone or unreadable) included — a file that vanishes is a
#: change the watch reports (a refused reload), not one it takes for "already refused".
_NO_FAILURE: tuple[int, int, int] = (-1, -1, -1)


def _digest(path: Path) -> bytes | None:
    """The file's content, hashed: a watched file whose content did not change (a ``touch``, a
    ConfigMap update of another key) builds nothing again. None when it cannot be read."""
    try:
        return hashlib.sha256(read_policy_file(path)).digest()
    except ConfigError:
        return None


def _journal_left_behind(path: Path, config: Config) -> None:
    """Refuse to start on a new, empty SQLite journal while the one used so far is elsewhere.

    The daemon used to resolve the policy file's symlinks, so a relative path in the file (the
    default ``journal = "rotator-journal.db"`` included) was relative to the directory of the
    link's target. It now keeps the path as given, like every other command (and a Kubernetes
    ConfigMap needs it), so with ``/etc/rotator/rotator.toml -> /srv/cfg/rotator.toml`` a relative
    journal moved from ``/srv/cfg/`` to ``/etc/rotator/``. Opening it there would create an empty
    journal: the history would be lost and the pending revocations never done. So when the journal
    is a relative SQLite path whose file exists where it used to be, next to the resolved file, but
    not where it is now, the start is a ConfigError that says how to fix it. (A ConfigMap's
    ``..<timestamp>/`` directory holds no journal: it is read-only and holds only the map's keys.)
    """
    journal = config.settings.journal
    if "://" in journal or Path(journal).is_absolute():
        return
    now = Path(sqlite_path(config.journal_url()) or journal)
    try:
        target = path.resolve()
        before = (target.parent / journal).resolve()
    except (OSError, RuntimeError):  # a symlink loop: the load would have failed already
        return
    if before == now or not before.is_file():
        return
    if now.exists():
        logger.warning("the journal is %s; another journal file is at %s, where a relative journal was "
                       "read from before (next to %s, the policy file's symlink resolved): the daemon uses %s",
                       now, before, target, now)
        return
    raise ConfigError(
        f"the policy file {path} leads through a symlink to {target}; its relative journal {journal!r} is now "
        f"read next to the link, at {now}, where there is none, while the journal used until now is {before} "
        "(next to the link's target, as the daemon read relative paths before). Starting would begin a new, empty "
        "journal: its history lost and its pending revocations never done",
        hint=f'set journal = "{before}" under [rotator] in the policy file, or stop every rotator and move '
             f"{before} (with its -wal and -shm files, if any) to {now}. Relative paths in the policy file "
             f"are relative to the link's directory, {path.parent}, as for every other rotator command")


#: how the refusal of a reload names a policy's job running here (Daemon._refuse_to_drop_work), by kind
_JOB_WORDS = {"rotate": "a rotation", "recover": "a recovery", "revoke": "a revocation pass"}


def _dropped_work_error(path: Path, work: Mapping[str, str], only_jobs: Collection[str] = ()) -> ConfigError:
    """The refusal of a reload whose policy file leaves out policies with unfinished work:
    their issuer and store settings leave with them, so nothing could recover their runs or revoke
    their tokens, and their metrics (RotatorRevocationOverdue) would go too. ``only_jobs``: the policies
    whose only work is a job of this daemon in progress, which needs nobody: the reload works once it ends."""
    names = list(work)
    listed = "; ".join(f"policy {name!r}: {work[name]}" for name in names[:Overview.NAMED_AT_MOST])
    if len(names) > Overview.NAMED_AT_MOST:
        listed += f"; and {len(names) - Overview.NAMED_AT_MOST} more policies"
    one = names[0] if len(names) == 1 else "NAME"
    if set(names) <= set(only_jobs):
        return ConfigError(
            f"{len(names)} polic{'y' if len(names) == 1 else 'ies'} with a job in progress "
            f"{'is' if len(names) == 1 else 'are'} not in {path}: {listed}. Without a policy's issuer and store "
            "settings nothing could end what that job may leave behind (a candidate token, a revocation)",
            hint=f"reload again once {'its job ends' if len(names) == 1 else 'their jobs end'} (seconds to minutes; "
                 "the daemon logs the end of each): it is refused again only if the journal holds work of it then. "
                 "With [daemon] watch on, the daemon tries the file again by itself once they end")
    return ConfigError(
        f"{len(names)} polic{'y' if len(names) == 1 else 'ies'} with unfinished work in the journal "
        f"{'is' if len(names) == 1 else 'are'} not in {path}: {listed}. Without a policy's issuer and store "
        "settings nothing can recover its runs or revoke its tokens",
        hint=f"put {'it' if len(names) == 1 else 'them'} back in the file with `enabled = false` (no rotation; the "
             "daemon still recovers its runs and revokes its old tokens when due) and remove each once "
             f"`rotator status {one}` shows no open run nor revocation left and the time of its tag search, if any, "
             "has passed (a renamed policy's new name is added "
             "then: two policies may not write one secret); a failed revocation waits for "
             f"`rotator revoke-expired --retry-failed {one}`, or for `rotator revoke-expired --dismiss TOKEN_ID "
             f"--reason TEXT {one}` if the token must stay valid")


class _ProgressJournal:
    """The journal as the daemon's engines see it: the same object, except that every lease call of
    a policy (taken, confirmed, renewed, released) is reported as progress of that policy's job, once
    it returns. The engine confirms its lease before each side effect and between the tries of a
    verify, so a job that goes on doing its work keeps reporting progress however long it lasts, and
    one stuck in a call stops (the watchdog, :meth:`Daemon.progress`). A wait between two tries of
    a call (:func:`engine_clock`) is reported through :meth:`waited`: progress without a lease. A
    lease taken is also reported to ``leased``: only a job that held the lease released it (what
    rotator_lease_active shows after the job, :meth:`Daemon._refresh`)."""

    def __init__(self, journal: Journal, progressed: Callable[[str], None],
                 leased: Callable[[str], None] | None = None) -> None:
        self._journal = journal
        self._progressed = progressed
        self._leased = leased

    def waited(self, policy: str) -> None:
        """A wait between two tries of one of the policy's calls starts or ends (:func:`engine_clock`)."""
        self._progressed(policy)

    #: the journal's lease calls, each reported as progress of the policy it names (its first argument)
    LEASE_CALLS = frozenset({"acquire_lease", "take_over_lease", "confirm_lease", "release_lease"})
    #: the ones that take the lease: once one returns, ``leased`` hears of it (its policy's job held it)
    TAKE_CALLS = frozenset({"acquire_lease", "take_over_lease"})

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._journal, name)
        if name not in self.LEASE_CALLS:
            return method
        leased = self._leased if name in self.TAKE_CALLS else None

        def reported(policy: str, *args: Any, **kwargs: Any) -> Any:
            try:
                result = method(policy, *args, **kwargs)
            finally:
                self._progressed(policy)
            if leased is not None:
                leased(policy)
            return result

        return reported


#: How long the start waits for the run threads to start (_started_pool).
POOL_START_S = 30.0


def _started_pool(workers: int, name: str = "rotator-run", what: str = "run") -> concurrent.futures.ThreadPoolExecutor:
    """A ThreadPoolExecutor whose ``workers`` threads all run already: it never starts one later.

    ThreadPoolExecutor starts a thread in submit() while it has fewer than ``max_workers`` and none
    idle. When that thread cannot start (RuntimeError "can't start new thread": a pids or TasksMax
    limit reached), submit() raises after it queued the job, which a running thread then runs
    anyway, outside the daemon's one-job-per-policy guard. Here every thread is asked for at once,
    each waiting for the others, so none is idle when the next is asked for; a limit reached now
    fails the start instead of a rotation later."""
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
    gate = threading.Barrier(workers + 1)
    try:
        for _ in range(workers):
            pool.submit(gate.wait, POOL_START_S)
        gate.wait(POOL_START_S)
    except (RuntimeError, threading.BrokenBarrierError) as exc:
        gate.abort()
        pool.shutdown(wait=False, cancel_futures=True)
        raise RotatorError(f"cannot start the {workers} {what} threads: {type(exc).__name__}: {exc}",
                           hint="raise the process's thread limit (systemd TasksMax=, the container's pids limit) "
                                "or lower [daemon] workers") from None
    return pool


# ---------------------------------------------------------------------------------- the daemon
@dataclass
class _Track:
    """What this process remembers about a policy between ticks."""

    failures: int = 0
    #: failure backoff: no rotation before this
    retry_at: datetime | None = None
    #: LeaseBusy: nothing at all for this policy before this
    busy_until: datetime | None = None
    #: revocation (or recovery) jobs that failed in a row, and no such job before this: a failure
    #: before a revocation records its own next try (an open run whose recovery fails, the journal)
    #: would otherwise leave it due in the past, started again at every pass
    revoke_failures: int = 0
    revoke_retry_at: datetime | None = None
    #: the last successful run the failed rotations were planned from: a later success (another
    #: replica's, an operator's `rotator rotate`) ends the failures (Daemon._rotated_elsewhere)
    failed_from: str | None = None
    #: the due time whose rotation was last announced ("rotating (due ...)") at INFO
    announced: datetime | None = None
    #: the error of a failed rotation that stopped where only a person can decide (NeedsAttention),
    #: kept until a rotation succeeds here or elsewhere: one that stops in PLAN (the stores disagree)
    #: journals no run, so the journal, which the metrics and the status page read, shows nothing of it
    attention: str | None = None
    #: when the last revocation or recovery job of the policy ended without an error: a tag search whose time
    #: had passed then and that is still open is looked at again a failure_backoff later, not at every pass
    passed_at: datetime | None = None
    #: when this process's last successful rotation of the policy ended: while the journal's last publication
    #: is ahead of the clock it stays the last one there, and the next rotation is planned from this
    rotated_at: datetime | None = None


class Daemon:
    """One scheduler over one policy file and one journal."""

    def __init__(
        self,
        config_path: str | Path,
        *,
        clock: Clock | None = None,
        listen: str | None = None,
        serve_http: bool = True,
        engine_factory: EngineFactory = default_engine,
        executor: concurrent.futures.Executor | None = None,
        loader: Callable[[Path], DaemonConfig] = load_daemon_config,
        stdout: Any = None,
        handle_signals: bool = True,
        systemd: SystemdNotify | None = None,
    ) -> None:
        # Absolute, but with its symlinks kept: a Kubernetes ConfigMap volume holds
        # policies.toml -> ..data/policies.toml and ..data -> ..<timestamp>/, and the kubelet
        # updates it by swapping ..data and deleting the old directory. A resolved path would stay
        # on that deleted directory (no reload would ever see the new file); stat() and open()
        # follow the links at every look. Relative paths inside the file are resolved against its
        # directory as written (rotator/config/policy.py), which the kubelet keeps, as every other
        # command does (before, the daemon resolved them against the link's target: see
        # _journal_left_behind for the journal that this moved).
        self.path = Path(config_path).absolute()
        self.clock = clock or SystemClock()
        self._listen_override = listen
        self._serve_http = serve_http
        self._engine_factory = engine_factory
        self._executor_given = executor
        self._loader = loader
        self._stdout = stdout
        self._handle_signals = handle_signals
        #: READY=1 / WATCHDOG=1 / STOPPING=1 to systemd (Type=notify); a no-op outside systemd
        self.systemd = systemd or SystemdNotify(None, None)
        self._rng = random.Random()
        self._lock = threading.Lock()
        # Signal handlers only set these flags and write to the wake-up pipe: they take no lock
        # (a handler runs in the main thread, which may hold any lock at that moment).
        self._stopping = False
        self._forced = False
        #: SIGTERM/SIGINT came once (the daemon may also stop by itself, which is no signal)
        self._stop_requested = False
        self._reload_wanted = False
        #: SIGUSR1: reopen the audit file (and nothing else) at the next pass
        self._reopen_wanted = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._busy: dict[str, tuple[str, concurrent.futures.Future[None]]] = {}
        self._tracks: dict[str, _Track] = {}
        self._planned: dict[str, datetime] = {}
        #: policy -> what the journal says of it, in memory (the scheduler's and the metrics' source)
        self._views: dict[str, _View] = {}
        #: the scheduler's queue: (when, seq, kind, policy), kind "rotate" or "revoke"; an entry is
        #: current only while ``_queued[(kind, policy)]`` is its time (older ones are skipped)
        self._queue: list[tuple[datetime, int, str, str]] = []
        self._queued: dict[tuple[str, str], datetime] = {}
        self._seq = 0
        #: policies whose job ended since the last pass: planned again (only they) by the next pass
        self._replan: set[str] = set()
        #: the policies of _replan whose (non-credentials) job ended: read again before they are planned
        self._ended: set[str] = set()
        #: the journal's newest publication seen, for the sweep's incremental read
        self._watermark: datetime | None = None
        #: stores that keep a credential alive, per policy (only policies that have one)
        self._credential_engines: dict[str, EngineLike] = {}
        self._by_name: dict[str, Policy] = {}
        #: policies whose view holds an open run, a revocation or a lease (what a sweep compares)
        self._eventful: set[str] = set()
        self._journal_up = True
        #: why this daemon starts no work any more (a newer rotator upgraded the journal: _supersede), or
        #: None; set once, by whichever thread met the refusal first, and never cleared (only a process of
        #: the newer version can use the journal)
        self._superseded: str | None = None
        #: sweeps that raised in a row: the next one is tried TICK_RETRY later, doubling to sweep_interval
        self._sweep_failures = 0
        #: read every policy's journal state at the next sweep (a reload or a refresh failed)
        self._full_load_wanted = False
        #: run id -> policy, of the runs whose discard the engine reported on (on_event) during the policy's job
        #: in progress: _failed reports no orphan of its own for them. Dropped at the end of that job (only
        #: its _failed reads them) and when the policy leaves the configuration (_forget)
        self._orphans_reported: dict[str, str] = {}
        self._orphans_lock = threading.Lock()
        #: policy -> (its current token's age origin, ahead of this host's clock by more than AHEAD_SLACK; the
        #: time the daemon plans its rotations from instead): written by the scheduler's thread (_plan), read
        #: by snapshot() (rotator_needs_attention) on a scrape's
        self._ahead: dict[str, tuple[datetime, datetime]] = {}
        #: when the scheduler last made progress: a pass ended (time.monotonic; see tick)
        self._heartbeat = time.monotonic()
        #: when a pass last raised (time.monotonic)
        self._failed_pass_at = -math.inf
        #: policies whose planning after a job raised (a bug): planned again at each pass until it works,
        #: each with whether its journal state is still to be read again (_refresh), and how many in a row
        self._plan_retry: dict[str, bool] = {}
        self._plan_failures: dict[str, int] = {}
        #: policy -> reads of its stores' credentials that raised in a row (adapter code: _plan_credentials)
        self._credential_read_failures: dict[str, int] = {}
        self._recovered = False
        self._last_failed_fp: tuple[int, int, int] | None = _NO_FAILURE
        #: the removed policies whose job in progress refused the last reload: once none of them has a job any
        #: more, the watch tries that file again by itself (no person has anything to do for it)
        self._reload_after_jobs: set[str] = set()
        #: the policies a reload under way removes, once it found no job of theirs running: a job of theirs that
        #: starts before the new engines are in place is skipped (_changed_since_queued), as it is after
        self._dropping: frozenset[str] = frozenset()
        #: the running configuration's file content (_digest), None if it could not be read
        self._digest: bytes | None = None
        self._warned_unknown: set[str] = set()
        self._unschedulable: set[str] = set()
        #: policy -> when a reload put its schedule (or window) in force, or enabled it: no rotation of it is
        #: late for a due time before then (_started_late measures from it, as from a publication)
        self._schedule_since: dict[str, datetime] = {}
        # time.monotonic() (not the Clock) for the watchdog and durations: they measure elapsed
        # time in this process, which must not jump with the wall clock or stop with a FakeClock.
        #: policy -> when its job started (time.monotonic), for the watchdog
        self._job_started: dict[str, float] = {}
        #: policy -> when its job last made progress (time.monotonic): its start, then every lease call
        #: it made (_ProgressJournal) and every wait between two tries; the watchdog judges a job by
        #: this, not by its age
        self._job_progress: dict[str, float] = {}
        #: policies whose job in progress took their lease (_leased), and those whose job that did ended
        #: since: only after such a job does _refresh take the view's lease for released (a job that found
        #: the lease busy, or served nothing, leaves another replica's lease in it)
        self._lease_taken: set[str] = set()
        self._lease_released: set[str] = set()
        #: the time of the pass under way (its ``now``), what the scheduler's thread plans at (_plan)
        self._pass_now: datetime | None = None
        #: policy -> its keep-alive job (store credentials), submitted or running: apart from _busy, so that
        #: it is not held back by a run of its policy that only waits for a worker (docs/daemon.md)
        self._keeping_alive: dict[str, concurrent.futures.Future[None]] = {}
        #: policy -> when its keep-alive job started (time.monotonic), for the watchdog
        self._keep_alive_started: dict[str, float] = {}
        #: policy -> held by its job while that job runs (a run, or a keep-alive): a store serves one
        #: caller at a time, so the two never use the policy's stores or credential together
        self._policy_locks: dict[str, threading.Lock] = {}
        self._stalled = False
        #: (ok, detail, time.monotonic of the answer) of the last journal check
        self._journal_check: tuple[bool, str, float] = (True, "not checked yet", time.monotonic())
        #: policy -> no keep-alive of its stores' credentials before this
        self._credential_pause: dict[str, datetime] = {}
        #: the stores' own queue: (when, seq, policy), current only while ``_credential_at[policy]`` is its
        #: time, when the policy's stores are looked at again (_plan_credentials)
        self._credential_queue: list[tuple[datetime, int, str]] = []
        self._credential_at: dict[str, datetime] = {}
        #: policy -> its stores' credentials as last read (the metrics' source; written by the scheduler's
        #: thread only), and a number that changes with it (the scrape's flat list is made again then)
        self._credential_states: dict[str, tuple[CredentialState, ...]] = {}
        self._credential_version = 0
        self._credential_flat: tuple[int, list[CredentialState]] = (-1, [])
        self._watchdog_stop = threading.Event()
        self._next_inventory: datetime | None = None
        self._inventory_thread: threading.Thread | None = None
        #: an inventory runs: set by the pass that starts it, cleared by its thread before it wakes
        #: the loop (not the thread's is_alive(): still true while it wakes the loop)
        self._inventory_running = False
        #: the last inventory's result (for the status page); None until one ran
        self.last_inventory: Any = None
        self._next_prune: datetime | None = None
        #: the time of day of the last pass (a later one earlier than it: the clock stepped back)
        self._last_pass_at: datetime | None = None
        self._prune_thread: threading.Thread | None = None
        #: what ``rotator daemon`` exits with once serve() returns: 0, or EXIT_JOURNAL_LOST
        self.exit_status = 0
        #: (the last offset of this host's clock against the journal server's, None if none measured; its
        #: level, clock_offset.OK/WARN/NOT_READY; the readiness limit it was judged by, seconds). One tuple,
        #: replaced whole by the scheduler's thread, so /readyz reads a consistent one
        self._skew: tuple[clock_offset.ClockOffset | None, int, float] = (None, clock_offset.OK, 0.0)

    # -- start and stop ---------------------------------------------------------------------
    def start(self) -> None:
        """Load and validate everything, open the journal, start the HTTP server. Raises on bad input."""
        from rotator.observe.metrics import Metrics
        from rotator.observe.status_page import StatusPage

        self._install_signals()
        # Looked at before the load: a change made while it reads the file is seen by the next watch.
        self._fp = _fingerprint(self.path)
        self._digest = _digest(self.path)
        self.loaded = self._loader(self.path)
        self._journal_url = self.loaded.config.journal_url()
        _journal_left_behind(self.path, self.loaded.config)  # before open_journal() makes a new one
        # (a file that leaves out a policy with unfinished work is not refused at the start, as it is at a
        # reload: a journal upgraded from a version that accepted it, or shared with daemons of other files,
        # would stop every policy's rotation; the start's sweep logs it, and a gauge exports it)
        self.journal: Journal = open_journal(self._journal_url, ran_in=(self.path.parent,))
        #: what the engines get: the journal, reporting their lease calls as progress (the watchdog)
        self._engine_journal = cast(Journal, _ProgressJournal(self.journal, self._progressed, self._leased))
        self.metrics: Metrics = Metrics()
        self.metrics.watch_state_text(self.snapshot)
        self.metrics.watch_live_text(self.live_snapshot)
        self.notifier: Notifier = self._new_notifier(self.settings)
        self._engines = self._build_engines(self.loaded.config)
        self._credential_engines = self._with_credentials(self._engines)
        self._plan_all_credentials()
        self._load_views(full=True)
        self._check_clock()  # before the HTTP server: /readyz judges the clock from its first answer
        self._note_loaded()
        if sys.platform == "linux" and not takes_over_dead_holders():
            logger.warning("cannot read /proc/sys/kernel/random/boot_id (a sandbox that hides /proc/sys, such as "
                           "systemd's ProcSubset=pid): a lease held by a rotator process that died is waited out "
                           "(lease_ttl) instead of taken over at once; allow that file to be read")
        self._next_sweep = self.clock.now()
        self._next_watch = self.clock.now() + self.settings.watch_interval
        self._executor = self._executor_given or _started_pool(self.settings.workers)
        # An executor given (tests) runs the keep-alive jobs too, as it runs everything else.
        try:
            self._credential_executor = self._executor_given or _started_pool(
                CREDENTIAL_WORKERS, "rotator-credentials", "credential keep-alive")
        except RotatorError:
            self._executor.shutdown(wait=False, cancel_futures=True)
            raise
        # (Made without the HTTP server too: it reads nothing until asked.)
        self.status_page = StatusPage(lambda: self.policies, lambda: self.journal, self.clock.now,
                                      lambda: self.last_inventory, attention=self.attention)
        self.health = None
        if self._serve_http:
            from rotator.observe.health import HealthServer

            host, port = parse_listen(self._listen_override or self.settings.listen)
            self.health = HealthServer(host, port, alive=self.liveness, ready=self.readiness,
                                       registry=self.metrics.registry, status=self.status_page,
                                       exposition=self.metrics.exposition)
            self.health.start()
        self._check_journal()  # /readyz answers from the first probe on
        self._heartbeat = time.monotonic()  # the start's load counts as a pass (a long one is no stall)
        for target, thread_name in ((self._watchdog_loop, "rotator-watchdog"),
                                    (self._journal_probe_loop, "rotator-journal-probe")):
            threading.Thread(target=target, name=thread_name, daemon=True).start()
        names = ", ".join(p.name for p in self.policies) or "(none)"
        logger.info("daemon started: %d policies (%s), journal %s, sweep every %s", len(self.policies), names,
                    self.journal.location, format_duration(self.settings.sweep_interval))

    @property
    def settings(self) -> DaemonSettings:
        return self.loaded.daemon

    @property
    def policies(self) -> tuple[Policy, ...]:
        return self.loaded.config.policies

    def serve(self) -> bool:
        """The driver: tick, sleep until woken or due, until stopped. Returns True if runs were parked."""
        while not self._stopping:
            try:
                wait = self.tick(self.clock.now())
            except Exception as exc:  # journal unreachable, a bug: log, retry, never die
                logger.error("scheduler pass failed, retrying in %.0fs: %s", TICK_RETRY, REDACTOR.redact(str(exc)),
                             exc_info=not isinstance(exc, RotatorError))
                wait = TICK_RETRY
            self._sleep(wait)
        return self.shutdown()

    def _sleep(self, seconds: float) -> None:
        """Wait until ``seconds`` pass or someone calls :meth:`wakeup` (a thread or a signal)."""
        if not self._stopping and not self._reload_wanted and not self._reopen_wanted:
            select.select([self._wake_r], [], [], seconds)
        try:
            while os.read(self._wake_r, 512):
                pass
        except BlockingIOError:
            pass

    def wakeup(self) -> None:
        try:
            os.write(self._wake_w, b"w")
        except (BlockingIOError, OSError):
            pass  # the pipe is full (a wake-up is pending anyway) or closed (shut down)

    def request_reload(self) -> None:
        """SIGHUP: a full reload (:meth:`reload`) and the audit file reopened, at the next pass."""
        self._reload_wanted = True
        self.wakeup()

    def request_reopen(self) -> None:
        """SIGUSR1: reopen the audit file at the next pass (after logrotate moved it), nothing else."""
        self._reopen_wanted = True
        self.wakeup()

    def request_stop(self) -> None:
        if self._stop_requested:
            self._forced = True  # a second signal: stop waiting for runs
        self._stop_requested = True
        self._stop()

    def _stop(self) -> None:
        """Take no new runs and end serve() (shutdown() then lets the runs in progress finish)."""
        self._stopping = True
        self.wakeup()

    def _install_signals(self) -> None:
        if not self._handle_signals or threading.current_thread() is not threading.main_thread():
            return
        # A signal may be delivered to any thread; the C-level handler then writes to this pipe,
        # which wakes the main thread from select() so that the Python handler runs at once.
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, lambda *_: self.request_stop())
        signal.signal(signal.SIGINT, lambda *_: self.request_stop())
        signal.signal(signal.SIGHUP, lambda *_: self.request_reload())
        if hasattr(signal, "SIGUSR1"):
            signal.signal(signal.SIGUSR1, lambda *_: self.request_reopen())

    def shutdown(self) -> bool:
        """Take no new runs; let the runs in progress finish within ``shutdown_timeout``.

        Returns True when some run was still going at the deadline (parked): the caller must then
        end the process (its thread cannot be stopped); the journal keeps that run recoverable.
        """
        self._stopping = True
        self.systemd.send("STOPPING=1")
        with self._lock:  # by (policy, kind): a policy's keep-alive may go on beside its run's queued job
            running = {(name, kind): fut for name, (kind, fut) in self._busy.items() if not fut.done()}
            running.update({(name, "credentials"): fut for name, fut in self._keeping_alive.items() if not fut.done()})
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._credential_executor is not self._executor:
            self._credential_executor.shutdown(wait=False, cancel_futures=True)
        timeout = self.settings.shutdown_timeout.total_seconds()
        if running:
            logger.info("stopping: no new runs; waiting up to %.0fs for %s", timeout,
                        ", ".join(sorted({name for name, _ in running})))
        deadline = time.monotonic() + timeout
        while running and time.monotonic() < deadline and not self._forced:
            concurrent.futures.wait(running.values(), timeout=min(0.2, max(deadline - time.monotonic(), 0)))
            running = {job: fut for job, fut in running.items() if not fut.done()}
        if running:
            logger.warning(
                "shutdown timeout: parking the run(s) of %s mid-step; the journal keeps them recoverable and the "
                "next start (or another replica once the lease expires) finishes or undoes them",
                ", ".join(sorted({name for name, _ in running})))
            _terminate_children()
        self.notifier.close(timeout=min(5.0, max(deadline - time.monotonic(), 1.0)))
        self._watchdog_stop.set()
        self._stop_if_durability_lost()  # a flush may have failed since the probe thread's last look
        if self.health is not None:
            self.health.stop()
        pruning = self._prune_thread
        if pruning is not None and not running:
            # It stops after its current batch (a second or so; the whole-chain verification before the
            # first batch takes longer on a long history). Parked runs end the process anyway.
            until = max(deadline, time.monotonic() + 5.0)
            while pruning.is_alive() and time.monotonic() < until and not self._forced:  # a 2nd signal: go
                pruning.join(timeout=0.2)
        if not running and not (pruning is not None and pruning.is_alive()):
            self.journal.close()
        logger.info("daemon stopped%s", " (runs parked)" if running else "")
        return bool(running)

    # -- the pass ---------------------------------------------------------------------------
    def tick(self, now: datetime) -> float:
        """One pass (:meth:`_pass`); what the watchdog counts as the scheduler's progress.

        A pass that raises is no progress (a journal that answers its ping but refuses the scheduling
        queries starts nothing due), nor is one that ends within TICK_RETRY after it: what failed was
        put off that long (a due rotation queued again then), so only a pass after that tries it
        again. Passes woken meanwhile (a job's end) would otherwise keep a daemon that can start no
        rotation looking alive.

        Unless the journal does not answer its ping either: an outage is /readyz's (rotator_journal_up),
        not liveness's. A restart cannot end it, and a daemon cannot start without its journal, so a
        failed liveness would only add a restart loop, and its backoff, to the outage. Only when no
        failed pass of the last liveness window found the journal answering: a ping that fails now and
        then would otherwise keep a daemon whose every pass fails looking alive."""
        self._pass_now = now
        try:
            wait = self._pass(now)
        except Exception:
            self._check_journal()  # now, not as the watchdog last found it
            failed = time.monotonic()
            if self._journal_state()[0]:
                self._failed_pass_at = failed
            elif failed - self._failed_pass_at >= self._pass_limit():
                self._heartbeat = failed
            raise
        except BaseException:
            self._failed_pass_at = time.monotonic()
            raise
        finally:
            self._pass_now = None
        ended = time.monotonic()
        if ended - self._failed_pass_at >= TICK_RETRY:
            self._heartbeat = ended
        return wait

    def _pass(self, now: datetime) -> float:
        """One pass: reload if asked, start what is due; return the seconds until the next thing.

        Costs what is due, not what is configured: the policies wait in a queue ordered by their
        next due time (rotation, or revocation of a previous token), and only the policies whose
        job ended since the last pass are planned again. The sweep (every ``sweep_interval``)
        reads what other processes changed, bounded by what is current.
        """
        settings = self.settings
        self._after_a_clock_step_back(now)
        if self._reopen_wanted or self._reload_wanted:
            # after logrotate moved the audit file (SIGUSR1), and at a SIGHUP whatever its reload gives
            self._reopen_wanted = False
            audit = self.notifier.audit
            if audit.where != "stdout":  # (left alone)
                logger.info("reopening the audit file %s", audit.where)
            audit.reopen()  # an error is logged, and the old file kept
        if self._reload_wanted:
            self._reload_wanted = False
            self.reload("SIGHUP", full=True)
        elif settings.watch and now >= self._next_watch:
            self._next_watch = now + settings.watch_interval
            fp = _fingerprint(self.path)
            if fp != self._fp and (fp != self._last_failed_fp or self._jobs_that_refused_ended()):
                self.reload("the file changed", full=False)
        settings = self.settings
        if self._superseded is not None:
            # A pass that does nothing is still one (tick: the watchdog's progress): /healthz stays ok.
            return settings.sweep_interval.total_seconds()
        with self._lock:
            replan, self._replan = self._replan, set()
            ended, self._ended = self._ended, set()
        retry, self._plan_retry = self._plan_retry, {}
        replan.update(retry)
        ended.update(name for name, refresh in retry.items() if refresh)
        for name in sorted(replan):
            try:
                if name in ended:
                    self._refresh(name)  # what its job committed
                    ended.discard(name)
                self._plan(name)
                self._plan_credentials(name)  # its run's store calls may have renewed the token
            except Exception as exc:  # a bug: one policy's error must not stop the others' planning
                self._plan_failed(name, exc, refresh=name in ended)
            else:
                self._plan_worked(name)
        if now >= self._next_sweep:
            self._next_sweep = now + settings.sweep_interval
            try:
                self._sweep(now)
            except Exception:
                # Tried again soon, not a sweep_interval later: a failed read leaves rotator_journal_up 0
                # (RotatorJournalDown, for 5m) and another process's work unseen until a sweep works, while
                # a journal that blipped once answers at once. Doubling, so one that keeps failing these
                # queries is not hammered.
                self._sweep_failures += 1
                self._next_sweep = now + doubling(timedelta(seconds=TICK_RETRY), settings.sweep_interval,
                                                  self._sweep_failures)
                raise
            self._sweep_failures = 0
        self._recovered = True
        self._maybe_prune(now)
        wake = [self._next_sweep]
        if self._plan_retry:
            fewest = min(self._plan_failures.get(name, 1) for name in self._plan_retry)
            wake.append(now + doubling(timedelta(seconds=TICK_RETRY), settings.sweep_interval, fewest))
        if settings.watch:
            wake.append(self._next_watch)
        if settings.inventory_interval is not None:
            wake.append(self._maybe_inventory(now, settings.inventory_interval))

        # Stores' own credentials (a Vault token to renew) between runs: only those whose time has come.
        self._keep_credentials_alive(now, wake)

        # Rotations and revocations whose time has come.
        if len(self._queue) > 2 * len(self._queued) + 64:
            # An entry whose policy was planned again for another time stays in the heap until its
            # own time (skipped then): rebuilt from what is queued before such entries outgrow it.
            self._queue = [e for e in self._queue if self._queued.get((e[2], e[3])) == e[0]]
            heapq.heapify(self._queue)
        queue = self._queue
        to_rotate: list[str] = []
        while queue and queue[0][0] <= now:
            when, _, kind, name = heapq.heappop(queue)
            if self._queued.get((kind, name)) != when:
                continue  # planned again since
            del self._queued[(kind, name)]
            try:
                if name not in self._engines or not self._idle(name, now, wake):
                    continue  # running: planned again when its job ends; LeaseBusy: queued again
                if kind == "revoke":
                    self._submit(name, "revoke")
                else:
                    to_rotate.append(name)
            except Exception as exc:  # a bug: popped already, so planned again by the next passes
                self._plan_failed(name, exc, refresh=False)
        if to_rotate:
            # Looks due: did another rotator serve them meanwhile? One read for all of them.
            try:
                last = self.journal.last_successes(to_rotate, now)
            except RotatorError:
                for name in to_rotate:  # not lost from the queue
                    self._push("rotate", name, now + timedelta(seconds=TICK_RETRY))
                raise
            for name in to_rotate:
                view = self._views.setdefault(name, _View())
                try:
                    self._set_last(name, view, last.get(name))
                    target = self._plan(name)  # at this pass's now (_pass_now), the one compared here
                except Exception as exc:
                    # A bug in one policy's planning: every name here is popped from the queue already, so
                    # an exception let out would drop the others due with it from the schedule for good.
                    self._plan_failed(name, exc, refresh=False)
                    continue
                if target is None or target > now:
                    continue
                self._queued.pop(("rotate", name), None)
                # A token already overdue when it was published (a person's old token, bootstrapped) is
                # due from its publication: its rotation is not late for a due time before rotator had it
                # (the misfire count and the schedule delay measure from here, whatever the view says
                # by the time a worker runs the job).
                if view.published_at is not None:  # (one ahead of the clock: _origin_for_plan)
                    target = max(target, min(view.published_at, now))
                # Nor for a due time a reload's new schedule put in the past (a 30d schedule shortened to 7d
                # ten days after its last rotation: due three days before the reload that made it so).
                since = self._schedule_since.get(name)
                if since is not None:
                    target = max(target, since)
                self._submit(name, "rotate", planned_from=view.run_id, target=target)
        while queue and self._queued.get((queue[0][2], queue[0][3])) != queue[0][0]:
            heapq.heappop(queue)  # not current (planned again, or submitted above): no wake-up for it
        if queue:
            wake.append(queue[0][0])
        return min(max((min(wake) - now).total_seconds(), MIN_WAIT), settings.sweep_interval.total_seconds())

    def _after_a_clock_step_back(self, now: datetime) -> None:
        """The daemon's own timers are times of day: after the clock stepped back (NTP, a VM
        restored) each would wait that much longer (no sweep: no recovery of a dead replica's runs,
        no reload; a failed rotation's retry hours away). None is ever more than its own interval
        ahead of now, so one further than that is brought back to now plus its interval. Checked
        only when now is earlier than the last pass's (the policies' times are a scan)."""
        last = self._last_pass_at
        if last is None or now >= last:
            self._last_pass_at = now
            return
        logger.warning("the clock stepped back by %s; the daemon's timers follow it",
                       format_duration(last - now, units=2))
        settings = self.settings
        if self._next_sweep > now + settings.sweep_interval:
            self._next_sweep = now + settings.sweep_interval
        if self._next_watch > now + settings.watch_interval:
            self._next_watch = now + settings.watch_interval
        interval = settings.inventory_interval
        if self._next_inventory is not None and interval is not None and self._next_inventory > now + interval:
            self._next_inventory = now + interval
        if self._next_prune is not None and self._next_prune > now + PRUNE_EVERY:
            self._next_prune = now + PRUNE_EVERY
        longest_pause = timedelta(seconds=max(CREDENTIAL_PAUSE))
        for name, pause in list(self._credential_pause.items()):
            if pause > now + longest_pause:
                self._credential_pause[name] = now + longest_pause
        latest = now + max(settings.failure_backoff_max, timedelta(seconds=BUSY_RETRY[1]))
        # busy_until is never more than a LeaseBusy's retry or TICK_RETRY ahead, and holds back everything of
        # its policy (its rotation, revocations, its stores' keep-alive): capped at the longer backoff, one
        # LeaseBusy met just before the step froze the policy for up to failure_backoff_max.
        busy_latest = now + timedelta(seconds=max(BUSY_RETRY[1], TICK_RETRY))
        for name, track in list(self._tracks.items()):
            times = (track.retry_at, track.busy_until, track.revoke_retry_at)
            track.retry_at, track.revoke_retry_at = (None if t is None else min(t, latest)
                                                     for t in (track.retry_at, track.revoke_retry_at))
            if track.busy_until is not None:
                track.busy_until = min(track.busy_until, busy_latest)
            if times != (track.retry_at, track.busy_until, track.revoke_retry_at):
                with self._lock:
                    self._replan.add(name)
        # A publication made before the step is ahead of now by up to its size: planned again, from now
        # (_origin_for_plan), not a step's length later.
        ahead = {name for name, view in self._views.items()
                 if is_ahead(age_origin(view.published_at, view.token_since), now)}
        if ahead:
            with self._lock:
                self._replan.update(ahead)
        # The stores move their own planned times back as they read the clock (VaultLogin._now): asked again
        # now, each is queued at its time of day after the step.
        self._plan_all_credentials()
        self._last_pass_at = now  # (only once all of it is done: an error here is met again next pass)

    def _push(self, kind: str, name: str, when: datetime) -> None:
        if self._queued.get((kind, name)) == when:
            return
        self._queued[(kind, name)] = when
        self._seq += 1
        heapq.heappush(self._queue, (when, self._seq, kind, name))

    def _plan_failed(self, name: str, exc: Exception, *, refresh: bool) -> None:
        """Planning the policy after its job raised: logged (an error at the 1st, 2nd, 4th... of a series),
        counted, and done again by the next passes, at the latest TICK_RETRY later, doubling to sweep_interval."""
        self._plan_retry[name] = refresh
        failures = self._plan_failures[name] = self._plan_failures.get(name, 0) + 1
        if failures & (failures - 1) == 0:  # the 1st, 2nd, 4th, 8th...: never only once, never every pass
            logger.error("policy %s: planning its next jobs failed (%d in a row; it is not scheduled until this "
                         "works), trying again at the next passes (the other policies go on): %s", name, failures,
                         _describe(exc), exc_info=None if isinstance(exc, RotatorError) or failures > 1 else exc)
        else:
            logger.debug("policy %s: planning its next jobs failed again (%d in a row): %s", name, failures,
                         _describe(exc))

    def _plan_worked(self, name: str) -> None:
        failures = self._plan_failures.pop(name, 0)
        if failures:
            logger.info("policy %s: planned again after %d failure(s) in a row", name, failures)

    def _policy(self, name: str) -> Policy | None:
        return self._by_name.get(name)

    def _plan(self, name: str) -> datetime | None:
        """Queue the policy's next rotation and next revocation from its view; the rotation's time.

        Planned at the time of the pass under way (:attr:`_pass_now`; the clock's outside a pass): the
        pass compares the time returned with its own now, and a policy without a publication is due at
        the time it is planned at. With a later reading of the clock it looked not due yet at every
        pass: a wake-up every MIN_WAIT, each with a journal query, and never a rotation."""
        now = self._pass_now or self.clock.now()
        policy = self._policy(name)
        if policy is None or name not in self._engines:
            self._queued.pop(("rotate", name), None)
            self._queued.pop(("revoke", name), None)
            return None
        view = self._views.setdefault(name, _View())
        track = self._tracks.get(name)
        busy_until = track.busy_until if track is not None else None
        # (What stays queued at the same time keeps its heap entry: _push adds none then.)
        times = [max(due, retry or due) for due, retry in view.pending]
        search = view.tag_search_until
        if search is not None:
            # The last run's mint had a try without an answer: a revocation pass searches its tag for a
            # late token at the end of that window (the search then ends), however long grace is. One in
            # the past (a start after its time; its pass failed: revoke_retry_at backs that off) is due now:
            # a disabled policy has no other pass, and its search not ended refuses a reload that drops it.
            # Still open after a pass at or after its time: again a failure_backoff later, not in a loop.
            passed = track.passed_at if track is not None else None
            if passed is not None and passed >= search:
                search = max(search, passed + self.settings.failure_backoff)
            times.append(search)
        if times:
            when = min(times)
            for later in (busy_until, track.revoke_retry_at if track is not None else None):
                if later is not None:
                    when = max(when, later)
            self._push("revoke", name, when)
        else:
            self._queued.pop(("revoke", name), None)
        if not policy.enabled:
            self._queued.pop(("rotate", name), None)
            self._not_ahead(name, view, said=False)  # (no rotation to plan: nothing is held back)
            return None
        published, since = self._origin_for_plan(name, view, now)
        try:
            target = self._target(policy, published, now, since)
        except ValueError as exc:  # a cron schedule that never fires again
            self._queued.pop(("rotate", name), None)
            if name not in self._unschedulable:
                self._unschedulable.add(name)
                logger.error("policy %s: no next rotation: %s", name, exc)
            return None
        self._unschedulable.discard(name)  # logged again if a later edit ends its schedule once more
        self._planned[name] = target
        when = target
        ahead = self._ahead.get(name)
        if ahead is not None:
            # Nothing else plans the policy again when the clock passes that publication: without this
            # wake-up, rotator_needs_attention stayed 1 for up to an interval (a month, for 30d). Popped
            # before its target, it only plans again (the pass's own check: target > now).
            when = min(when, ahead[0] - AHEAD_SLACK)
        self._push("rotate", name, max(when, busy_until) if busy_until is not None else when)
        return target

    def _origin_for_plan(self, name: str, view: _View, now: datetime) -> tuple[datetime | None, datetime | None]:
        """The ``(publication, token_since)`` the policy's next rotation is planned from: the view's, unless
        its token's age origin is more than AHEAD_SLACK ahead of ``now``.

        Such an origin was written by a clock ahead of this one: this host's before a step back (a bad RTC,
        a wrong NTP source), or the publishing host's. Planned from it, the next rotation would wait for the
        whole step (a year, for a clock a year ahead). It is planned instead from the first time a plan met
        it (as the daemon's own timers are, _after_a_clock_step_back), or from this process's last successful
        rotation of the policy since: the journal orders the publications by their time, so the one ahead
        stays the last one there until the clock passes it. Said once per origin (an ERROR), and the policy
        needs attention meanwhile (snapshot: rotator_needs_attention). A fresh daemon plans the same way
        from its first plan."""
        origin = age_origin(view.published_at, view.token_since)
        if origin is None or not is_ahead(origin, now):
            self._not_ahead(name, view)
            return view.published_at, view.token_since
        seen = self._ahead.get(name)
        base = now if seen is None or seen[0] != origin else min(seen[1], now)
        track = self._tracks.get(name)
        rotated = track.rotated_at if track is not None else None
        if rotated is not None and base < rotated <= now:
            base = rotated
        if seen is None or seen[0] != origin:
            logger.error(
                "policy %s: its last publication (%s) is %s ahead of this host's clock: the clock was stepped back, "
                "or the host that published ran ahead; planning from now (its next rotation within one interval). "
                "Until the clock passes that time the journal keeps it as the last publication (`rotator status` "
                "and `rotator rotate --if-due` count from it) and the revocations scheduled with it wait as long. "
                "Check NTP or chrony on this host and on the other rotators' hosts (docs/daemon.md, Clocks)",
                name, origin.isoformat(timespec="seconds"), format_duration(origin - now, units=2))
        if seen != (origin, base):
            self._ahead[name] = (origin, base)
            view.version += 1  # the metrics' state: rotator_needs_attention
        return base, None

    def _not_ahead(self, name: str, view: _View, *, said: bool = True) -> None:
        """The policy's age origin is no longer ahead of the clock (``said``), or it has no rotation to plan."""
        if self._ahead.pop(name, None) is not None:
            view.version += 1
            if said:
                logger.info("policy %s: its last publication is no longer ahead of this host's clock; its rotations "
                            "are planned from it again", name)

    def _maybe_inventory(self, now: datetime, interval: timedelta) -> datetime:
        """Start an inventory (rotator_tokens) on a thread of its own when due; return when the pass
        should look again. An inventory that outlives its interval (slow or unreachable issuers) is
        not waited for in a loop: the pass looks again an interval later, or when it ends
        (_run_inventory wakes the loop), and the next one starts then."""
        due = self._next_inventory or now
        running = self._inventory_running
        if now >= due and not running and not self._stopping:
            due = self._next_inventory = now + interval
            self._inventory_thread = threading.Thread(target=self._run_inventory, name="rotator-inventory",
                                                      daemon=True)
            self._inventory_running = True
            try:
                self._inventory_thread.start()
            except BaseException:
                self._inventory_running = False  # not started: the next pass tries again
                raise
        elif now >= due:
            return now + interval  # still running (a due time in the past would make every pass the next)
        return due

    def _run_inventory(self) -> None:
        try:
            self._inventory()
        finally:
            self._inventory_running = False  # before the wake-up: the pass it wakes may start the next
            self.wakeup()  # the next inventory may be due already (this one outlived its interval)

    def _inventory(self) -> None:
        from rotator.observe.inventory import policy_targets, take_inventory

        try:
            policies = list(self.policies)
            result = take_inventory(policy_targets(policies, self.clock), self.journal, policies, self.clock.now())
            at = self.clock.now()
        except Exception as exc:  # an adapter bug or the journal: logged, tried again next interval
            logger.error("inventory failed: %s", _describe(exc))
            return
        for target, message in result.errors:
            logger.warning("inventory: %s: %s", target, message)
        self.metrics.inventory(result, at)
        self.last_inventory = result

    def _maybe_prune(self, now: datetime) -> None:
        """Start the daily prune (history retention) on a thread of its own when due. Its time grows
        with the history kept (seconds per 100,000 events), and neither due rotations nor the
        watchdog's view of the pass should wait for it; it takes the journal's write lock only in
        short batches (rotator/core/audit_chain.py)."""
        if self._next_prune is not None and now < self._next_prune:
            return
        if self._stopping or self._superseded is not None or (
                self._prune_thread is not None and self._prune_thread.is_alive()):
            return
        self._next_prune = now + PRUNE_EVERY
        self._prune_thread = threading.Thread(target=self._prune, args=(now,), name="rotator-prune", daemon=True)
        self._prune_thread.start()

    def _prune(self, now: datetime) -> None:
        """Delete history older than [rotator] keep_history into checkpoints; stops before its next
        batch when the daemon stops (the next prune goes on from the last checkpoint)."""
        from rotator.core import audit_chain

        try:
            result = audit_chain.prune(self.journal, ts(now - self.loaded.config.settings.keep_history), ts(now),
                                       stop=lambda: self._stopping or self._superseded is not None)
        except JournalSchemaNewer as exc:  # refused in its own write transaction, before it deleted anything
            self._supersede(exc, "the daily prune")
            return
        except Exception as exc:  # a broken chain (ValueError) or the journal: logged, tried again tomorrow
            logger.error("pruning the journal's history failed: %s", _describe(exc))
            return
        if result.checkpoint is not None or result.stopped:
            logger.info("journal history: %s", result.text())

    def _idle(self, name: str, now: datetime, wake: list[datetime]) -> bool:
        """No run of the policy here (running or waiting for a worker), and no recent LeaseBusy from it."""
        with self._lock:
            if name in self._busy:
                return False
        return self._lease_free(name, now, wake)

    def _lease_free(self, name: str, now: datetime, wake: list[datetime]) -> bool:
        """No recent LeaseBusy from the policy (else queued again then, and ``wake`` told)."""
        track = self._tracks.get(name)
        if track is not None and track.busy_until is not None and track.busy_until > now:
            wake.append(track.busy_until)
            self._plan(name)  # queued again at busy_until
            return False
        return True

    def _target(self, policy: Policy, last: datetime | None, now: datetime,
                token_since: datetime | None = None) -> datetime:  # fmt: skip
        """When the daemon runs a policy: when rotator/core/due.py says it is due, or after a failed
        run's retry time."""
        due = decide(policy, last, now, token_since=token_since).next_due
        track = self._tracks.get(policy.name)
        retry_at = track.retry_at if track is not None else None
        return max(due, retry_at) if retry_at is not None else due

    def _sweep(self, now: datetime) -> None:
        """Read what other processes changed; recover runs left open by a dead process (at start:
        only policies with open runs, so a start costs nothing per idle policy); report the unfinished
        work of policies not in the file."""
        overview = self._load_views(full=self._full_load_wanted)
        for name in sorted(overview.open_runs):
            track = self._tracks.get(name)
            if track is not None and track.revoke_retry_at is not None and track.revoke_retry_at > now:
                continue  # its recovery failed lately: tried again at that time (the revocation's queue entry)
            if name in self._engines and self._idle(name, now, []):
                self._submit(name, "recover")
        # A reload that leaves out a policy with unfinished work is refused; this is what the file held at
        # the start, or came after (another process's work, or a reload that could not read the journal).
        unknown = overview.with_work - set(self._views)
        left = overview.unfinished_work(unknown)
        self.metrics.removed_policy_work.set(len(left))
        for name in sorted(left.keys() - self._warned_unknown):
            logger.error("the journal holds unfinished work of policy %r, which is not in %s: %s. Nothing does it "
                         "until the policy is back in the file (with `enabled = false` if it must not rotate)",
                         name, self.path, left[name])
        self._warned_unknown = unknown
        self._check_clock()

    def _shortest_lease_ttl(self) -> timedelta:
        """The shortest lease_ttl any policy's runs take their leases with ([rotator] lease_ttl, which
        every engine gets; an engine of its own may take another)."""
        ttls = [self.loaded.config.settings.lease_ttl]
        ttls += [ttl for engine in self._engines.values() if isinstance(ttl := getattr(engine, "lease_ttl", None),
                                                                            timedelta)]
        return min(ttls)

    def _check_clock(self) -> None:
        """Measure this host's clock against the journal server's (one statement; none on SQLite), export
        it, and say so once when it crosses 1 s or lease_ttl / 4 (which fails /readyz), either way.

        A lease's expiry is compared with each replica's own clock, so a replica ahead of another by
        more than lease_ttl / 2 takes that one's live lease inside its side effect, and the holder only
        reports it was overtaken. Readiness, not liveness: a restart does not fix a clock."""
        try:
            offset = clock_offset.measure(self.journal, self.clock)
        except RotatorError as exc:  # the journal blipped: the sweep's own reads report that; keep the last
            logger.debug("could not measure the clock against the journal server's: %s", REDACTOR.redact(str(exc)))
            return
        if offset is None:
            self.metrics.clock_offset(None)
            self._skew = (None, clock_offset.OK, 0.0)
            return
        ttl = self._shortest_lease_ttl()
        limit = clock_offset.ready_limit_s(ttl)
        before = self._skew[1]
        level = clock_offset.level(offset, limit, before)
        self.metrics.clock_offset(offset.offset_s)
        self._skew = (offset, level, limit)
        if level == before:
            return
        fix = ("Run NTP or chrony on this host and on the database server (docs/daemon.md, Clocks); when every "
               "replica reports about the same offset, the database server's clock is the one that is off")
        if level == clock_offset.NOT_READY:
            logger.error(
                "this host's clock is %s, more than lease_ttl / 4 (%gs of lease_ttl %s): a replica whose clock "
                "runs more than lease_ttl / 2 ahead of another's takes that one's live lease while it is inside a "
                "side effect (which then reports it was overtaken by another rotator). /readyz fails until the "
                "offset is back within %gs. %s", offset.describe(), limit, format_duration(ttl), limit, fix)
        elif level == clock_offset.WARN:
            logger.warning(
                "this host's clock is %s, more than %gs%s: replicas' clocks must agree within 2s (each within "
                "1s of the server's; docs/operations.md, Clocks). %s", offset.describe(), clock_offset.WARN_OFFSET_S,
                "; within lease_ttl / 4 again, /readyz passes" if before == clock_offset.NOT_READY else "", fix)
        else:
            logger.info("this host's clock is within %gs of the journal server's again (%s)%s",
                        clock_offset.WARN_OFFSET_S, offset.describe(),
                        "; /readyz passes" if before == clock_offset.NOT_READY else "")

    def _set_last(self, name: str, view: _View, run: RunRecord | None) -> None:
        if run is None:
            changed = view.run_id is not None
            view.run_id = view.published_at = view.token_id = view.expires_at = view.token_since = None
            view.tag_search_until = None
        else:
            changed = view.run_id != run.run_id
            view.run_id, view.published_at, view.token_since = run.run_id, run.published_at, run.token_since
            view.token_id, view.expires_at = run.new_token_id, run.new_expires_at
            view.tag_search_until = run.tag_search_until
        if changed:
            view.version += 1
            if run is not None:
                self._rotated_elsewhere(name, run)

    def _rotated_elsewhere(self, name: str, run: RunRecord) -> None:
        """A successful run newer than the one this process's failed rotations were planned from
        (another replica's, an operator's `rotator rotate`): the policy is rotated, so its failures
        end here: rotator_consecutive_failures 0 (else RotatorRotationFailing fires for as long as
        this process does not rotate it itself) and no backoff on its next due time. By run id, not
        by time: replicas' clocks differ, and a view read again whole (a reload) sees the same run."""
        track = self._tracks.get(name)
        if track is None or not track.failures or run.run_id == track.failed_from:
            return
        logger.info("policy %s: rotated by run %s since its last failure here: %d failure(s) in a row end",
                    name, run.run_id, track.failures)
        track.failures, track.retry_at, track.failed_from, track.attention = 0, None, None, None
        self.metrics.consecutive_failures.labels(name).set(0)

    def _load_views(self, full: bool) -> Overview:
        """Read the journal's current state into the views, in a few queries whatever the number of
        policies: every open run, pending or failed revocation and live lease, and the last
        publication of each policy (``full``) or the publications since the last read (a sweep).
        Plans again the policies whose view changed."""
        since = None if full or self._watermark is None else self._watermark - WATERMARK_MARGIN
        # A job running now may commit after the overview below is read: what it committed is read
        # by the pass after its end (tick: _refresh of the policies whose job ended), on this same
        # thread, after this overview is applied. No job writes a view.
        read_at = self.clock.now()
        try:
            overview = self.journal.overview(read_at, since, tag_searches=True)
        except RotatorError:
            self._journal_up = False
            raise
        self._journal_up = True
        if full:
            self._full_load_wanted = False
            self._queue.clear()
            self._queued.clear()
            self._views = {p.name: _View() for p in self.policies}
            self._by_name = {p.name: p for p in self.policies}
        views = self._views
        touched: set[str] = set()
        for name, run in overview.last.items():
            view = views.get(name)
            if view is not None and (full or view.run_id != run.run_id):
                self._set_last(name, view, run)
                touched.add(name)
            # At most now: a publication edited far ahead (the year 9999) would make every later sweep read
            # only what was published after it, that is nothing (a watermark too early only reads more).
            published = None if run.published_at is None else min(run.published_at, read_at)
            if published is not None and (self._watermark is None or published > self._watermark):
                self._watermark = published
        current = {*overview.open_runs, *overview.pending, *overview.failed, *overview.leases}
        for name in (views.keys() if full else self._eventful | current):
            view = views.get(name)
            if view is None:
                continue
            fresh = (overview.open_runs.get(name, (0, 0)), overview.pending.get(name, ()),
                     overview.failed.get(name, 0), overview.leases.get(name))
            if fresh != ((view.open_runs, view.stuck_runs), view.pending, view.failed_revocations, view.lease_until):
                (view.open_runs, view.stuck_runs), view.pending, view.failed_revocations, view.lease_until = fresh
                view.version += 1
                touched.add(name)
        self._eventful = current
        for name in (views.keys() if full else touched):
            try:
                self._plan(name)
            except Exception as exc:  # a bug: one policy's error must not stop the others' planning, nor the start
                self._plan_failed(name, exc, refresh=False)
        return overview

    def _adopt_policies(self, policies: Sequence[Policy]) -> None:
        """Make ``policies`` the ones the scheduler plans from (:meth:`_policy`) and its jobs check
        (:meth:`_changed_since_queued`): a new policy gets an empty view (its journal state is read
        before it rotates: tick reads the last successes of what looks due), a removed one loses its."""
        views = self._views
        self._by_name = {p.name: p for p in policies}
        self._views = {p.name: views.get(p.name) or _View() for p in policies}

    def _refresh(self, name: str) -> None:
        """Read one policy's journal state again (after its job ended, in the pass after it: only the
        scheduler's thread writes the views)."""
        view = self._views.get(name)
        with self._lock:
            released = name in self._lease_released
            if view is None:
                self._lease_released.discard(name)
        if view is None:
            return
        try:
            last, runs, unfinished = self.journal.policy_state(name)  # one statement
        except RotatorError as exc:  # the next sweep reads it; meanwhile nothing for this policy
            logger.warning("policy %s: cannot read its journal state: %s", name, _describe(exc))
            self._tracks.setdefault(name, _Track()).busy_until = self.clock.now() + timedelta(seconds=TICK_RETRY)
            self._full_load_wanted = True
            return
        self._set_last(name, view, last)
        view.open_runs, view.stuck_runs = len(runs), sum(1 for r in runs if r.error and "recovery failed" in r.error)
        pending = [r for r in unfinished if r.state == RevocationState.PENDING]
        view.pending = tuple(sorted((r.due_at, r.next_try_at) for r in pending))
        view.failed_revocations = len(unfinished) - len(pending)
        if released:
            with self._lock:
                self._lease_released.discard(name)
            view.lease_until = None  # the job released it
        # (Else its job never held the lease (LeaseBusy, nothing to do): the lease the last sweep read,
        # another replica's, is still live: rotator_lease_active stays 1 until a sweep reads otherwise.)
        view.version += 1

    # -- jobs -------------------------------------------------------------------------------
    def _submit(self, name: str, kind: str, **kwargs: Any) -> None:
        engine = self._engines[name]
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        # A keep-alive job is tracked apart from the policy's run (_keeping_alive): a run that waits for a
        # worker must not hold it back. The policy's lock (_job) keeps the two from running together.
        jobs: dict[str, Any] = self._keeping_alive if kind == "credentials" else self._busy
        with self._lock:
            if name in jobs or self._stopping or self._superseded is not None:
                return
            jobs[name] = future if kind == "credentials" else (kind, future)
        try:
            executor = self._credential_executor if kind == "credentials" else self._executor
            future = executor.submit(self._job, name, engine, kind, kwargs)
        except RuntimeError as exc:
            with self._lock:
                self._untrack(name, kind)
            if self._stopping:
                return  # the executor is shutting down
            # Not shutting down: no thread for it now (a broken pool; ours starts its threads at start()).
            # The policy's queue entry is gone and no job end plans it again: it is queued again here.
            logger.error("policy %s: cannot start its %s job, trying again in %.0fs: %s", name, kind, TICK_RETRY,
                         REDACTOR.redact(str(exc)) or type(exc).__name__)
            self._tracks.setdefault(name, _Track()).busy_until = self.clock.now() + timedelta(seconds=TICK_RETRY)
            self._plan(name)
            self._plan_credentials(name)
            return
        with self._lock:
            if name in jobs:
                jobs[name] = future if kind == "credentials" else (kind, future)
        future.add_done_callback(lambda _f: self._done(name, kind))

    def _untrack(self, name: str, kind: str) -> bool:
        """Forget the policy's job of ``kind`` (under _lock): whether it took the policy's lease (_leased)."""
        if kind == "credentials":
            self._keeping_alive.pop(name, None)
            self._keep_alive_started.pop(name, None)
            return False
        self._busy.pop(name, None)
        self._job_started.pop(name, None)
        self._job_progress.pop(name, None)
        took = name in self._lease_taken
        self._lease_taken.discard(name)
        return took

    def _done(self, name: str, kind: str) -> None:
        with self._lock:
            if self._untrack(name, kind):
                self._lease_released.add(name)
            # One wake-up until the next pass takes the set: the jobs that end meanwhile ride on it
            # (a burst of jobs makes a pass per batch of ended jobs, not one per job). The pass reads
            # the policy's journal state again (_refresh) before planning it: only the scheduler's
            # thread writes the views, so no read of it made before the job's commit is written after.
            first = not self._replan
            self._replan.add(name)
            if kind != "credentials":
                self._ended.add(name)
        if name not in self._engines:
            # A reload removed the policy while this job ran: what the job counted since (a failure's
            # series and backoff, a success's) goes too, as the reload's own forgetting did before.
            self._forget(name)
        # (Its view is left alone: snapshot() compares lease_held_here with _busy itself, and only the
        # scheduler's thread bumps a view's version: `+= 1` on two threads can lose one.)
        if first:
            self.wakeup()

    def _forget(self, name: str) -> None:
        """Drop what this process keeps of a policy that left the configuration (its series, its backoff)."""
        self._tracks.pop(name, None)
        self._planned.pop(name, None)
        self._credential_pause.pop(name, None)
        self._plan_retry.pop(name, None)
        self._plan_failures.pop(name, None)
        self._credential_read_failures.pop(name, None)
        self._schedule_since.pop(name, None)
        self._ahead.pop(name, None)
        self._drop_orphans_reported(name)
        self.metrics.forget(name)

    def _policy_lock(self, name: str) -> threading.Lock:
        with self._lock:
            lock = self._policy_locks.get(name)
            if lock is None:
                lock = self._policy_locks[name] = threading.Lock()
            return lock

    def _stores_in_use(self, name: str) -> bool:
        """A job of the policy uses its stores now or is about to: its run started on a worker (the
        policy's lock is taken just before _job_started is set), or its keep-alive was submitted. A run
        that only waits for a worker does not."""
        with self._lock:
            if name in self._job_started or name in self._keeping_alive:
                return True
            lock = self._policy_locks.get(name)
        return lock is not None and lock.locked()

    def _job(self, name: str, engine: EngineLike, kind: str, kwargs: dict[str, Any]) -> None:
        """A job on its worker, holding its policy's lock: a run and the policy's keep-alive never use
        its stores at once. A run waits for a keep-alive that holds it (a request or two); a keep-alive
        finding the run there is skipped (the run's Vault calls renew the token; _done plans the
        keep-alive again when the run ends): it must not hold the one keep-alive thread for a whole run."""
        lock = self._policy_lock(name)
        if kind == "credentials":
            if not lock.acquire(blocking=False):
                logger.debug("policy %s: keep-alive skipped: the policy's run started meanwhile", name)
                return
            with self._lock:
                self._keep_alive_started[name] = time.monotonic()
        else:
            lock.acquire()
            # Running from now: a job that waited for a free worker held nothing and was not stuck (the
            # watchdog's "stuck" is a running job without progress for longer than its limit).
            with self._lock:
                self._job_started[name] = self._job_progress[name] = time.monotonic()
        try:
            self._run_job(name, engine, kind, kwargs)
        finally:
            if kind != "credentials":
                self._drop_orphans_reported(name)  # (its _failed, the only reader, is done)
            lock.release()

    def _drop_orphans_reported(self, name: str) -> None:
        """Forget the policy's runs in _orphans_reported: a run's discard is reported on during the job that
        made it, and read by that job's _failed, so they would only pile up (one per failed run, for ever)."""
        with self._orphans_lock:
            for run_id in [r for r, policy in self._orphans_reported.items() if policy == name]:
                del self._orphans_reported[run_id]

    def _leased(self, name: str) -> None:
        """A job of the policy took its lease (_ProgressJournal): _refresh takes it for released after
        that job's end."""
        with self._lock:
            if name in self._busy:
                self._lease_taken.add(name)

    def _run_job(self, name: str, engine: EngineLike, kind: str, kwargs: dict[str, Any]) -> None:
        log = logging.LoggerAdapter(logger, {"policy": name})
        if self._superseded is not None:
            # Queued before another job, the probe or the prune met the newer schema: not started (its
            # lease would be refused, and each refusal would be one more failure to report).
            log.debug("%s job not started: this daemon is superseded", kind)
            return
        changed = self._changed_since_queued(name, engine, kind)
        if changed is not None:
            # Not a failure nor a success: _done plans the policy again under the configuration in force.
            log.info("%s job skipped: its policy was %s by a reload since the job was queued", kind, changed)
            return
        try:
            if kind == "rotate":
                self._rotate(name, engine, **kwargs)
            elif kind == "recover":
                for action in engine.recover():
                    log.info("recovery: %s", action)
            elif kind == "revoke":
                for action in engine.revoke_due():
                    log.info("%s", action)
            elif kind == "credentials":
                self._keep_alive(name, engine)
            if kind in ("recover", "revoke"):
                track = self._tracks.setdefault(name, _Track())
                track.revoke_failures, track.revoke_retry_at = 0, None
                track.passed_at = self.clock.now()
        except JournalSchemaNewer as exc:
            self._supersede(exc, f"policy {name}'s {kind} job")
        except LeaseBusy as busy:
            log.debug("%s: skipped, %s", kind, busy)
            self._tracks.setdefault(name, _Track()).busy_until = self.clock.now() + timedelta(
                seconds=self._rng.uniform(*BUSY_RETRY))
        except RotatorError as exc:
            log.error("%s failed: %s", kind, _describe(exc))
            if kind == "recover":
                self._emit({"policy": name, "run_id": None, "step": "recover", "result": "failed",
                            "error": _describe(exc)})
            self._revoke_failed(name, kind, engine)
        except Exception:
            log.exception("%s failed unexpectedly", kind)
            self._revoke_failed(name, kind, engine)

    def _changed_since_queued(self, name: str, engine: EngineLike, kind: str) -> str | None:
        """How a reload changed the policy while its job waited for a worker ("removed", "disabled",
        "set up anew"), or None. The job carries the engine it was queued with: a policy removed or
        disabled since must not be rotated, and a changed one is served by its new engine (a reload
        builds a new engine for every policy whose settings changed, for every policy at a SIGHUP)."""
        current = self._engines.get(name)
        if current is None or name in self._dropping:
            return "removed"
        policy = self._by_name.get(name)
        if kind == "rotate" and policy is not None and not policy.enabled:
            return "disabled"
        if current is not engine:
            return "set up anew"
        return None

    def _revoke_failed(self, name: str, kind: str, engine: EngineLike) -> None:
        """A revocation or recovery job failed: its next try backs off as a rotation's does (unless a reload
        set the policy up anew meanwhile: see _failed)."""
        if kind not in ("recover", "revoke"):
            return
        track = self._tracks.setdefault(name, _Track())
        track.revoke_failures += 1
        replaced = self._engines.get(name) is not engine
        track.revoke_retry_at = None if replaced else self.clock.now() + self._backoff(track.revoke_failures)

    def _backoff(self, failures: int) -> timedelta:
        """The wait after ``failures`` in a row: failure_backoff doubled up to failure_backoff_max, 75-100% of it."""
        base, cap = self.settings.failure_backoff, self.settings.failure_backoff_max
        return doubling(base, cap, failures) * self._rng.uniform(0.75, 1.0)

    def _rotate(self, name: str, engine: EngineLike, *, planned_from: str | None, target: datetime) -> None:
        log = logging.LoggerAdapter(logger, {"policy": name})
        now = self.clock.now()
        track = self._tracks.setdefault(name, _Track())
        # After LeaseBusy the same due time is tried again every second or two while another rotator
        # holds the lease (minutes, for a verify): said once at INFO, the retries at DEBUG.
        level = logging.DEBUG if track.announced == target else logging.INFO
        track.announced = target
        started = time.monotonic()
        try:
            # "Still due?" and the run are one decision, made by the engine under its lease: it rotates
            # only while the last successful run is still the one this due time was planned from
            # (another replica may have served it; recovery of an interrupted run, which comes first,
            # may have finished it), else NOTHING_TO_DO. The lease costs no commit of its own (it is
            # taken with the planned run), and a dead process's lease on this host is taken over.
            log.log(level, "rotating (due %s)", target.isoformat(timespec="seconds"))
            result = engine.rotate(expect_last_run=planned_from)
        except (LeaseBusy, JournalSchemaNewer):
            # LeaseBusy: no run started, neither late nor a misfire (the busy retry measures again).
            # JournalSchemaNewer: not this policy's failure but the whole daemon's (_run_job: _supersede).
            raise
        except RotatorError as exc:
            self._started_late(name, target, now)
            self._failed(name, exc, started, now, planned_from, engine)
            return
        except Exception as exc:  # an adapter bug: back off like any failure instead of looping
            log.exception("rotation failed unexpectedly")
            self._started_late(name, target, now)
            self._failed(name, PermanentError(f"internal error: {type(exc).__name__}: {exc}"), started, now,
                         planned_from, engine)
            return
        if result.state == NOTHING_TO_DO:
            # Served already (another replica, recovery of an interrupted run): no run of this
            # process started, so its lateness is no misfire of this process's.
            log.info("%s", result.message)
            return
        self._started_late(name, target, now)
        elapsed = time.monotonic() - started
        self.metrics.run_duration.observe(elapsed)
        self.metrics.rotations.labels(name, "success").inc()
        self.metrics.consecutive_failures.labels(name).set(0)
        self._tracks[name] = _Track(rotated_at=self.clock.now())
        log.info("rotated in %.1fs: %s", elapsed, result.message)
        self._emit({"policy": name, "run_id": result.run_id, "step": "rotate", "result": "ok",
                    "token_id": result.new_token_id, "old_token_id": result.old_token_id,
                    "duration_s": round(elapsed, 3)})

    def _started_late(self, name: str, target: datetime, began: datetime) -> None:
        """A run of the policy began at ``began`` for the due time ``target``: its lateness counts
        (rotator_schedule_delay_seconds) and, past ``misfire_grace``, is a misfire. Called once the
        engine has said a run started (or failed), never for a busy lease or a due time already served."""
        late = (began - target).total_seconds()
        self.metrics.schedule_delay.observe(max(late, 0.0))
        if late > self.settings.misfire_grace.total_seconds():
            self.metrics.misfires.labels(name).inc()
            logging.LoggerAdapter(logger, {"policy": name}).warning(
                "rotation was due at %s and started %s late (misfire); one run for every due time missed",
                target.isoformat(timespec="seconds"), format_duration(timedelta(seconds=late)))

    def _failed(self, name: str, exc: RotatorError, started: float, began: datetime, planned_from: str | None,
                engine: EngineLike) -> None:
        elapsed = time.monotonic() - started
        outcome = "needs_attention" if isinstance(exc, NeedsAttention) else "failure"
        track = self._tracks.setdefault(name, _Track())
        track.failures += 1
        track.failed_from = planned_from
        # A reload set the policy up anew while this run went on (_reset_backoff ended its wait then: the
        # reload may be its fix): the old adapters' failure counts, but holds back no try of the new ones.
        replaced = self._engines.get(name) is not engine
        track.retry_at = None if replaced else self.clock.now() + self._backoff(track.failures)
        retry_at = track.retry_at or self.clock.now()
        self.metrics.run_duration.observe(elapsed)
        if not isinstance(exc, LeaseLost):  # counted as "aborted" from the engine's rotate/aborted event
            self.metrics.rotations.labels(name, outcome).inc()
        self.metrics.consecutive_failures.labels(name).set(track.failures)
        try:
            runs = self.journal.runs(name, limit=1)
        except RotatorError:
            runs = []
        run = runs[0] if runs and runs[0].started_at >= began - timedelta(seconds=1) else None
        message = _describe(exc)
        if outcome == "needs_attention":
            # Kept across the plain failures that may follow (a journal blip on a retry): only a success
            # shows that a person fixed it. Read by snapshot() and the status page on other threads.
            track.attention = message
        logger.error("policy %s: rotation failed (%d in a row), retrying %s: %s", name, track.failures,
                     "at once with the adapters a reload built since it started" if replaced
                     else f"at {retry_at.isoformat(timespec='seconds')}", message)
        with self._orphans_lock:  # used here only: what the engine said of this run's discard
            reported = run is not None and self._orphans_reported.pop(run.run_id, None) is not None
        if run is not None and run.state == RunState.REVOKING_NEW and not reported:
            # The candidate could not be revoked: it is valid and nobody holds it until recovery.
            self._emit({"policy": name, "run_id": run.run_id, "step": "revoke_new", "result": "failed",
                        "token_id": run.new_token_id, "error": run.error or message})
        self._emit({"policy": name, "run_id": run.run_id if run else None, "step": "rotate",
                    "result": "needs_attention" if outcome == "needs_attention" else "failed",
                    "error": message, "failures": track.failures, "retry_at": retry_at,
                    "duration_s": round(elapsed, 3)})

    def attention(self, name: str) -> str | None:
        """Why the policy's last rotation here stopped where only a person can decide (its error, as
        logged), until a rotation of it succeeds; None otherwise. What the journal cannot say of a
        rotation that stopped before its run was journaled (the status page shows it)."""
        track = self._tracks.get(name)
        return track.attention if track is not None else None

    # -- stores' credentials ----------------------------------------------------------------
    @staticmethod
    def _credential_stores(engine: EngineLike) -> list[tuple[str, Any]]:
        """The engine's stores that keep a credential alive (duck-typed: ``credential_due()``...)."""
        stores = getattr(engine, "stores", None) or ()
        return [(n, s) for n, s in stores if callable(getattr(s, "credential_due", None))]

    def _credentials_due(self, engine: EngineLike) -> datetime | None:
        dues = [due for _, store in self._credential_stores(engine) if (due := store.credential_due()) is not None]
        return min(dues) if dues else None

    def _keep_alive(self, name: str, engine: EngineLike) -> None:
        ok = True
        try:
            for store_name, store in self._credential_stores(engine):
                due = store.credential_due()
                if due is None or due > self.clock.now():
                    continue
                try:
                    store.keep_alive()
                except RotatorError as exc:
                    ok = False
                    logger.warning("policy %s: store %s: keeping its credential alive failed: %s", name, store_name,
                                   _describe(exc))
        finally:
            # Whatever the store planned, never call it in a loop; but a failed call the store plans
            # to retry soon is not held back to the longer pause: near a token's expiry, its retry
            # in 0.5-4 s is what keeps the token from running out (5 s let a 15 s token expire).
            now = self.clock.now()
            retry = self._credentials_due(engine) if not ok else None
            planned = ok or (retry is not None and retry > now)
            self._credential_pause[name] = now + timedelta(seconds=CREDENTIAL_PAUSE[0 if planned else 1])

    def credentials(self) -> list[tuple[str, str, Mapping[str, Any]]]:
        """``(policy, store, status)`` of every store that reports its credential, asked now."""
        return [(name, store, status) for name, engine in list(self._credential_engines.items())
                for store, status in self._credential_statuses(engine)]

    def _credential_statuses(self, engine: EngineLike, errors: list[Exception] | None = None
                             ) -> list[tuple[str, Mapping[str, Any]]]:  # fmt: skip
        """Each store's ``credential_status()``. One that raises (adapter code) is that store's credential
        failing, not an error of /readyz, /metrics or the pass for every policy; its exception is added
        to ``errors``, when given."""
        out: list[tuple[str, Mapping[str, Any]]] = []
        for store_name, store in self._credential_stores(engine):
            status = getattr(store, "credential_status", None)
            if callable(status):
                try:
                    out.append((store_name, status()))
                except Exception as exc:
                    if errors is not None:
                        errors.append(exc)
                    error = f"credential_status() raised {type(exc).__name__}: {_describe(exc)}"
                    out.append((store_name, {"ok": False, "error": error}))
        return out

    def _read_credentials(self, name: str, engine: EngineLike, now: datetime, errors: list[Exception] | None = None
                          ) -> tuple[tuple[CredentialState, ...], datetime | None]:  # fmt: skip
        """The policy's stores' credentials for the metrics, and the soonest ``ok_until`` after ``now``
        of their statuses: when a store says its ``ok`` turns with time alone (None: it does not say).
        A status that raised is added to ``errors`` (:meth:`_credential_statuses`)."""
        from rotator.observe.metrics import CredentialState

        states = []
        turns: datetime | None = None
        for store, st in self._credential_statuses(engine, errors):
            states.append(CredentialState(name, store, bool(st.get("ok", True)), int(st.get("failures") or 0),
                                          st.get("expires_at")))
            until = st.get("ok_until")
            if isinstance(until, datetime) and until > now and (turns is None or until < turns):
                turns = until
        return tuple(states), turns

    def _plan_credentials(self, name: str) -> datetime | None:
        """Read the policy's stores' credentials again (their due times and statuses) and queue the next
        look at them; return when their keep-alive is due (None: nothing planned).

        Called after each job of the policy (its run's Vault calls renew the token on use, a keep-alive
        moved it), for every policy at start, at a reload and after a clock step back, and when its queue
        entry comes: never for every policy at each pass (issue 12: a pass costs what is due). A status's
        ``ok_until`` (its ``ok`` turns false then with time alone) queues a look then, which updates the
        metrics."""
        engine = self._credential_engines.get(name)
        if engine is None:
            self._credential_at.pop(name, None)
            if self._credential_states.pop(name, None) is not None:
                self._credential_version += 1
            return None
        now = self.clock.now()
        errors: list[Exception] = []
        try:
            due = self._credentials_due(engine)
        except Exception as exc:  # adapter code: see _credential_read_failed
            errors.append(exc)
            due = None
        states, turns = self._read_credentials(name, engine, now, errors)
        again = now + self._credential_read_failed(name, errors[0]) if errors else None
        if not errors and self._credential_read_failures.pop(name, 0):
            logger.info("policy %s: its stores' credentials can be read again", name)
        if self._credential_states.get(name) != states:  # else the same objects: LiveText keeps their lines
            self._credential_states[name] = states
            self._credential_version += 1
        if due is not None:
            due = max(due, self._credential_pause.get(name, due))
            track = self._tracks.get(name)
            if track is not None and track.busy_until is not None and track.busy_until > due:
                due = track.busy_until  # LeaseBusy: nothing at all for the policy before then
        look = min((t for t in (due, turns, again) if t is not None), default=None)
        if look is None:
            self._credential_at.pop(name, None)
        elif self._credential_at.get(name) != look:
            self._credential_at[name] = look
            self._seq += 1
            heapq.heappush(self._credential_queue, (look, self._seq, name))
        return due

    def _credential_read_failed(self, name: str, exc: Exception) -> timedelta:
        """A store of the policy raised when asked for its credential's due time or status (adapter code):
        logged once per series, counted, and looked at again after the returned wait (CREDENTIAL_PAUSE's
        longer pause, doubling to sweep_interval). Neither the pass nor the other policies stop for it."""
        failures = self._credential_read_failures[name] = self._credential_read_failures.get(name, 0) + 1
        wait = doubling(timedelta(seconds=CREDENTIAL_PAUSE[1]), self.settings.sweep_interval, failures)
        if failures == 1:
            logger.error("policy %s: reading its stores' credentials failed, looking again in %s (the other "
                         "policies go on): %s", name, format_duration(wait), _describe(exc),
                         exc_info=None if isinstance(exc, RotatorError) else exc)
        else:
            logger.debug("policy %s: reading its stores' credentials failed again (%d in a row): %s", name,
                         failures, _describe(exc))
        return wait

    def _plan_all_credentials(self) -> None:
        """:meth:`_plan_credentials` for every policy with a store credential, and none left of the others."""
        for name in [*self._credential_engines, *(set(self._credential_states) - set(self._credential_engines)),
                     *(set(self._credential_at) - set(self._credential_engines))]:
            self._plan_credentials(name)

    def _keep_credentials_alive(self, now: datetime, wake: list[datetime]) -> None:
        """Start the keep-alive of each policy whose stores' time has come (a pass's share: what is due)."""
        queue = self._credential_queue
        at = self._credential_at
        if len(queue) > 2 * len(at) + 64:  # entries of times planned again since (skipped): see tick
            queue = self._credential_queue = [e for e in queue if at.get(e[2]) == e[0]]
            heapq.heapify(queue)
        come: list[str] = []
        while queue and queue[0][0] <= now:
            when, _, name = heapq.heappop(queue)
            if at.get(name) == when:
                del at[name]
                come.append(name)
        for name in come:
            # Held back only by a job of its own policy that uses its stores: its run once started (not
            # one that waits for a worker: docs/daemon.md), or a keep-alive still going.
            if self._stores_in_use(name):
                continue  # looked at again when its job ends
            due = self._plan_credentials(name)  # the stores may have moved their time since it was queued
            if due is not None and due <= now and self._lease_free(name, now, wake):
                at.pop(name, None)  # looked at again when its job ends
                self._submit(name, "credentials")
        while queue and at.get(queue[0][2]) != queue[0][0]:
            heapq.heappop(queue)  # not current (its job was submitted): no wake-up for it
        if queue:
            wake.append(queue[0][0])

    # -- watchdog ---------------------------------------------------------------------------
    def _progressed(self, name: str) -> None:
        """A job of ``name`` made progress (a lease call returned, or a wait between two tries of a
        call started or ended: _ProgressJournal)."""
        with self._lock:
            if name in self._job_progress:
                self._job_progress[name] = time.monotonic()

    def _pass_limit(self) -> float:
        """How long the scheduler may go without a finished pass before it counts as stalled (seconds)."""
        return max(60.0, 3 * self.settings.sweep_interval.total_seconds())

    def progress(self) -> tuple[bool, dict[str, Any]]:
        """``(stalled, detail)``: has the scheduler, and every run, made progress recently?

        A run is stuck when it made no progress (:meth:`_progressed`: it took, confirmed or renewed
        its lease, or began or ended a wait between two tries of a call) for longer
        than twice the lease's TTL: it is past its lease then, which it cannot legitimately outlive,
        even waiting between two tries of a step (up to ``retry.max_delay``). Before it takes its
        lease, a run that retries PLAN's reads reports each wait: only calls in a row without a wait
        or a lease call count, as after it (each well under the lease's TTL). Its age alone says
        nothing: a verify may wait minutes for a new token, confirming its lease between tries."""
        now = time.monotonic()
        pass_age = now - self._heartbeat
        pass_limit = self._pass_limit()
        settings = self.loaded.config.settings
        run_limit = max(10.0, 2 * settings.lease_ttl.total_seconds(), 2 * settings.retry.max_delay.total_seconds())
        with self._lock:
            runs = {name: (self._busy[name][0], now - started, now - self._job_progress.get(name, started))
                    for name, started in self._job_started.items() if name in self._busy}
            # a keep-alive reports no progress of its own: judged by its age (a request or two)
            for name, started in self._keep_alive_started.items():
                runs.setdefault(name, ("credentials", now - started, now - started))
        stuck = {name: {"job": kind, "running_s": round(age, 1), "no_progress_s": round(idle, 1)}
                 for name, (kind, age, idle) in runs.items() if idle > run_limit}
        oldest = max((idle for _, _, idle in runs.values()), default=0.0)
        stalled = pass_age > pass_limit or bool(stuck)
        detail: dict[str, Any] = {"last_pass_s_ago": round(pass_age, 1),
                                  "progress_s_ago": round(max(pass_age, oldest), 1), "stalled": stalled}
        if stuck:
            detail["stuck"] = stuck
        return stalled, detail

    def _watchdog_loop(self) -> None:
        """Notice a stall and say where: every thread's stack to stderr, once per stall. While there
        is progress, feed systemd's watchdog (WatchdogSec=): under systemd, which reads no /healthz,
        a daemon that stops feeding it is killed and restarted."""
        every = min(WATCHDOG_EVERY, self.systemd.watchdog_s or WATCHDOG_EVERY)  # a short WatchdogSec= too
        while not self._watchdog_stop.wait(every):
            self._watchdog_pass()

    def _watchdog_pass(self) -> None:
        stalled, detail = self.progress()
        if not stalled and self.journal.durability_lost() is None:
            self.systemd.ping()
        if stalled and not self._stalled:
            # faulthandler first: it takes no lock, so it works even when logging is wedged.
            print(f"rotator watchdog: no progress ({detail}); stacks of every thread follow",
                  file=sys.stderr, flush=True)
            faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
            logger.error("watchdog: the daemon made no progress (%s): /healthz fails until it does%s", detail,
                         ", and systemd's watchdog is no longer fed" if self.systemd.watchdog_s else "")
        elif self._stalled and not stalled:
            logger.warning("watchdog: progress again")
        self._stalled = stalled

    def _journal_probe_loop(self) -> None:
        """Check the journal off the HTTP thread: a hanging journal must not hang /readyz."""
        while not self._watchdog_stop.wait(WATCHDOG_EVERY):
            self._check_journal()
            self._stop_if_durability_lost()

    def _check_journal(self) -> None:
        try:
            ping = getattr(self.journal, "ping", None)  # Journal.ping() where the journal has it
            if callable(ping):
                ping()
            else:
                self.journal.lease_holder("rotator-readiness-probe", self.clock.now())
            self._journal_check = (True, "ok", time.monotonic())
        except Exception as exc:
            self._journal_check = (False, REDACTOR.redact(str(exc)) or type(exc).__name__, time.monotonic())
            if isinstance(exc, JournalSchemaNewer):
                self._supersede(exc, "the journal check")

    def _supersede(self, exc: JournalSchemaNewer, where: str) -> None:
        """A newer rotator upgraded the journal (``where``: what met the refusal first): start no work
        any more, and say so once.

        Every due job, retried with backoff, would meet the same refusal at its lease, each one a
        failure event (a webhook) per policy per retry, and a prune would delete by this code's rules.
        Not an exit: this version cannot open the journal again, so a supervisor's restart
        (Restart=on-failure, a pod's restart policy) would only loop; the rollout (or an upgrade and
        restart) replaces this process. /readyz fails from now on; /healthz stays ok."""
        message = _describe(exc)
        with self._lock:  # (the probe thread, a worker and the prune may meet it at once)
            if self._superseded is not None:
                return
            self._superseded = message
        # (the message names both schema versions, and its hint how to replace this process)
        logger.error("daemon superseded (found by %s): it starts no rotation, revocation, recovery or prune any more, "
                     "and stays up but not ready (/readyz fails, /healthz ok) until it is replaced: %s", where, message)
        self.systemd.send(f"STATUS=superseded: the journal has schema {exc.version}, newer than this rotator's "
                          f"({exc.supported}): upgrade rotator and restart the service")
        self._emit({"policy": None, "run_id": None, "step": "rotate", "result": "failed", "superseded": True,
                    "schema": exc.version, "supported_schema": exc.supported, "error": message})

    def _stop_if_durability_lost(self) -> None:
        """Stop, to exit with EXIT_JOURNAL_LOST, once a flush of the journal's WAL has failed.

        Nothing this journal object commits can be durable any more (rotator/core/group_sync.py),
        so every run would fail before its first side effect, and only opening the journal again
        clears it. A failing /healthz restarts a daemon under Kubernetes, but nothing reads it under
        systemd: exiting non-zero lets any supervisor restart it (PostgreSQL does the same after a
        failed fsync: it stops, and recovers on the next start)."""
        lost = self.journal.durability_lost()
        if lost is None or self.exit_status:
            return
        self.exit_status = EXIT_JOURNAL_LOST
        logger.critical("the journal cannot make a commit durable any more (%s): stopping, exit status %d; "
                        "the next start opens it again and recovers the runs that were going. Check the disk "
                        "(dmesg) if it happens again", REDACTOR.redact(lost), EXIT_JOURNAL_LOST)
        # Not request_stop(): an operator's SIGTERM after this must not count as the second signal
        # that parks the runs in progress at once.
        self._stop()

    def live_snapshot(self) -> LiveSnapshot:
        from rotator.observe.metrics import LiveSnapshot

        stalled, detail = self.progress()
        return LiveSnapshot(stalled, self.clock.now().timestamp() - float(detail["progress_s_ago"]),
                            self._credentials_now())

    def _credentials_now(self) -> list[CredentialState]:
        """Every store's credential for the metrics (at each scrape): as read after the last job of its
        policy (:meth:`_plan_credentials`), and asked again only for the policies with a job running now
        (its Vault calls may renew the token or fail meanwhile; a keep-alive waits for a long run). The
        list and its objects stay the same while nothing changed (LiveText keeps their lines)."""
        version = self._credential_version  # read first: a change made meanwhile is taken by the next scrape
        made, flat = self._credential_flat
        items: list[tuple[str, tuple[CredentialState, ...]]] | None = None
        if made != version:
            items = list(self._credential_states.items())
            flat = [state for _, states in items for state in states]
            self._credential_flat = (version, flat)
        engines = self._credential_engines
        with self._lock:
            running = [name for name in {*self._busy, *self._keeping_alive} if name in engines]
        fresh = {}
        now = self.clock.now()
        for name in running:
            engine = engines.get(name)
            if engine is not None:
                states, _ = self._read_credentials(name, engine, now)
                if states != self._credential_states.get(name):
                    fresh[name] = states
        if not fresh:
            return flat
        items = items if items is not None else list(self._credential_states.items())
        return [state for name, states in items for state in fresh.get(name, states)]

    # -- events -----------------------------------------------------------------------------
    def on_event(self, event: Mapping[str, Any]) -> None:
        """The engines' listener: metrics, then audit/webhooks/hooks."""
        # Any outcome of a discard's try but its start: the engine said what became of the candidate (left
        # valid: `failed`; reported before: `failed_again`; revoked, its tag search failed: `search_failed`;
        # `waiting`), so _failed invents no `revoke_new` / `failed` for the run (a false orphan otherwise)
        if event.get("step") == "revoke_new" and event.get("result") != "start" and event.get("run_id"):
            with self._orphans_lock:
                self._orphans_reported[str(event["run_id"])] = str(event.get("policy"))
        self.metrics.on_event(event)
        self.notifier(event)

    def _emit(self, event: dict[str, Any]) -> None:
        self.on_event({"at": self.clock.now(), **event})

    # -- configuration ----------------------------------------------------------------------
    def _build_engines(self, config: Config, running: tuple[Config, Mapping[str, EngineLike]] | None = None
                       ) -> dict[str, EngineLike]:  # fmt: skip
        """Every policy's engine. With ``running`` (the running configuration and its engines), a
        policy whose validated settings and the file's ``[rotator]`` settings are unchanged keeps its
        engine: new stores would log in to Vault again (a new token each, the old ones left to
        expire, an AppRole secret_id with a few uses used up by reloads alone) and forget their
        credential's failures (/readyz would turn 200 again while the credential is dead).
        Builds only (adapters contact nothing until used): nothing is replaced here."""
        same: dict[str, Policy] = {}
        engines_now: Mapping[str, EngineLike] = {}
        if running is not None and running[0].settings == config.settings:
            same = {p.name: p for p in running[0].policies}
            engines_now = running[1]
        engines: dict[str, EngineLike] = {}
        for policy in config.policies:
            kept = engines_now.get(policy.name) if same.get(policy.name) == policy else None
            if kept is not None:
                engines[policy.name] = kept
                continue
            try:
                engines[policy.name] = self._engine_factory(policy, config, self._engine_journal, self.on_event)
            except RotatorError:
                raise
            except Exception as exc:
                raise ConfigError(f"policy {policy.name!r}: cannot set up its adapters: {exc}",
                                  hint="check the issuer and store settings of this policy") from None
        return engines

    def _with_credentials(self, engines: Mapping[str, EngineLike]) -> dict[str, EngineLike]:
        return {name: e for name, e in engines.items() if self._credential_stores(e)}

    def _new_notifier(self, settings: DaemonSettings) -> Notifier:
        """The audit sink, webhooks and hooks of ``settings``; ConfigError if they cannot be set up
        (an audit file that cannot be opened)."""
        from rotator.observe.notify import Notifier

        try:
            return Notifier(settings, self.path.parent, on_result=self.metrics.notification,
                            stdout=self._stdout, clock=self.clock, emit=self._to_current_notifier)
        except RotatorError:
            raise
        except Exception as exc:
            raise ConfigError(f"[daemon] notifications: cannot set them up: {exc}",
                              hint="check the [daemon] audit, webhook and hook settings") from None

    def _to_current_notifier(self, event: Mapping[str, Any]) -> None:
        """Where every notifier's hooks report how they ended: the notifier in place *now*. A hook
        that a reload's notifier replaced runs on (up to its timeout), and its audit line and
        failure webhook must not go to the notifier closed behind it."""
        self.notifier(event)

    def reload(self, reason: str, *, full: bool = True) -> bool:
        """:meth:`_reload`; then no policy is being removed any more (a job of one that it kept may start)."""
        try:
            return self._reload(reason, full=full)
        finally:
            self._dropping = frozenset()

    def _reload(self, reason: str, *, full: bool) -> bool:
        """Load the policy file again; keep the running configuration if the new one is invalid.

        ``full`` (SIGHUP, an operator's explicit reload): the file is read and validated again and
        every policy's engine is built anew, whatever the content. A policy records the paths of
        the files it references, not what they hold, and adapters read some of them once: a CA
        bundle becomes the SSL context of a cached HTTP client, an AWS session keeps the keys of a
        credentials file, a Vault store keeps the token its secret_id got. Only new adapters see a
        replaced file (a renewed private CA, rotated AWS keys); every Vault store logs in again.

        Not ``full`` (the file watch, which sees only the policy file itself):

        - The same content as the running configuration (a ``touch``, a ConfigMap update of another
          key): nothing is built again; the running configuration counts as loaded (a refused file
          put back).
        - Otherwise only the engines of the policies that changed are built (the others keep
          theirs: :meth:`_build_engines`), so an edit does not log every Vault store in again.

        Either way everything that can fail is built first: the configuration, the engines and the
        notifier if its settings changed. Any failure there is a refused reload (logged, counted,
        the running configuration kept whole, the watch tries again when the file changes again);
        only then is the new configuration put in place, all of it.
        """
        fp = _fingerprint(self.path)
        digest = _digest(self.path)
        if not full and digest is not None and digest == self._digest:
            self._fp, self._last_failed_fp = fp, _NO_FAILURE
            self._note_loaded()
            logger.info("reload (%s): %s is unchanged, the running configuration stays as it is", reason, self.path)
            self._emit({"policy": None, "run_id": None, "step": "reload", "result": "ok",
                        "policies": len(self.policies)})
            return True
        notifier: Notifier | None = None
        self._reload_after_jobs = set()
        try:
            loaded = self._loader(self.path)
            url = loaded.config.journal_url()
            if url != self._journal_url:
                raise ConfigError("the journal setting changed: a reload cannot move the journal",
                                  hint="restart the daemon to use another journal")
            removed = {p.name for p in self.policies} - {p.name for p in loaded.config.policies}
            if removed:
                self._refuse_to_drop_work(removed, reason)
            engines = self._build_engines(loaded.config, None if full else (self.loaded.config, self._engines))
            if not self.notifier.same_settings(loaded.daemon):
                notifier = self._new_notifier(loaded.daemon)  # last: nothing after it can fail
        except RotatorError as exc:
            self._last_failed_fp = fp
            self.metrics.reload_failures.inc()
            self.metrics.reload_ok.set(0)
            message = REDACTOR.redact(str(exc))
            fix = f"; fix: {REDACTOR.redact(exc.hint)}" if exc.hint else ""
            logger.error("reload (%s) rejected, the running configuration is kept: %s%s", reason, message, fix)
            self._emit({"policy": None, "run_id": None, "step": "reload", "result": "failed", "error": message})
            return False
        old = self.loaded
        if (loaded.daemon.listen, loaded.daemon.workers) != (old.daemon.listen, old.daemon.workers):
            logger.warning("listen and workers changes take effect at the next restart")
        schedules, now = {p.name: (p.schedule, p.enabled) for p in old.config.policies}, self.clock.now()
        for policy in loaded.config.policies:
            if schedules.get(policy.name) != (policy.schedule, policy.enabled):
                self._schedule_since[policy.name] = now
        kept = sum(1 for name, engine in engines.items() if self._engines.get(name) is engine)
        rebuilt = {name for name, engine in engines.items() if self._engines.get(name) is not engine}
        planned = set(self._by_name)
        # The policies the scheduler plans from and its jobs check go in with the engines, before any
        # journal read: a reload whose read fails below must not leave the old ones scheduling the new
        # engines (a policy it disabled rotated at its old due time). Policies first: a job that looks
        # meanwhile (_changed_since_queued) sees a new policy with an old engine, never the reverse.
        self._adopt_policies(loaded.config.policies)
        self.loaded, self._engines, self._fp, self._last_failed_fp = loaded, engines, fp, _NO_FAILURE
        self._reset_backoff(rebuilt)
        self._rebase_timers()
        self._digest = digest
        self._credential_engines = self._with_credentials(engines)
        self._plan_all_credentials()  # new stores, and those of removed policies gone
        if notifier is not None:
            previous, self.notifier = self.notifier, notifier
            # A hook still running past this goes on in the background, reporting to the new notifier.
            threading.Thread(target=previous.close, args=(RELOAD_NOTIFY_CLOSE_S,), kwargs={"reload": True},
                             name="rotator-notify-close", daemon=True).start()
        try:
            self._load_views(full=True)  # schedules may have changed: plan every policy again
        except RotatorError as exc:  # the journal: the next pass tries again
            logger.error("reload: cannot read the journal: %s", _describe(exc))
            self._full_load_wanted = True
            self._next_sweep = self.clock.now()
            # Until a full load works, every policy is planned from its journal state as last read,
            # under the new settings (a removed one leaves the queue): none waits for, or starts at,
            # a time its old settings gave.
            for name in sorted(planned | set(self._by_name)):
                self._plan(name)
        for name in removed:
            self._forget(name)  # (a job of it still running forgets again when it ends: _done)
        self._note_loaded()
        if full:
            logger.info("reloaded %s (%s): %d policies, the adapters of every one built again", self.path, reason,
                        len(self.policies))
        else:
            logger.info("reloaded %s (%s): %d policies, %d of them unchanged (adapters kept)", self.path, reason,
                        len(self.policies), kept)
        self._emit({"policy": None, "run_id": None, "step": "reload", "result": "ok", "policies": len(self.policies)})
        return True

    def _refuse_to_drop_work(self, removed: set[str], reason: str) -> None:
        """ConfigError when the journal holds unfinished work of a policy the reload would drop (see
        :func:`_dropped_work_error`), or a job of it is running here. One read for all of them,
        bounded by what is unfinished. A journal that cannot be read refuses nothing of its own: the
        reload goes on, as it did before this check, with a warning (refusing would keep a watched file
        refused after the journal came back, until the file changed again); the sweep warns of what it
        then finds left behind.

        A job journals nothing before its lease (a rotation's PLAN reads the stores and the issuer first),
        yet may go on to mint, publish and schedule a revocation that nothing would end once the policy's
        settings are gone. One that only waits for a worker is skipped when it starts (_changed_since_queued),
        from now on (_dropping: a job starts under the same lock) though the new engines are not in place yet."""
        with self._lock:  # (a keep-alive job is not in _job_started: it journals nothing)
            running = {name: self._busy[name][0] for name in removed if name in self._job_started}
            if not running:
                self._dropping = frozenset(removed)
        now = self.clock.now()
        work: dict[str, str] = {}
        try:
            overview = self.journal.overview(now, now, tag_searches=True)  # publications since now: none to read
        except RotatorError as exc:
            names = sorted(removed)
            at_most = Overview.NAMED_AT_MOST
            listed = ", ".join(names[:at_most]) + (f" and {len(names) - at_most} more" if len(names) > at_most else "")
            logger.warning("reload (%s): cannot read the journal to check that the policies it removes (%s) have no "
                           "unfinished work; reloading without that check: %s", reason, listed, _describe(exc))
        else:
            work = overview.unfinished_work(removed)
        only_jobs = set(running) - set(work)
        for name, kind in running.items():
            job = (f"{_JOB_WORDS.get(kind, f'a {kind} job')} in progress here (it may mint, publish or schedule a "
                   "revocation yet)")
            work[name] = f"{work[name]}, {job}" if name in work else job
        if running:
            self._reload_after_jobs = set(running)
        if work:
            raise _dropped_work_error(self.path, dict(sorted(work.items())), only_jobs)

    def _jobs_that_refused_ended(self) -> bool:
        """A reload was refused for jobs of the policies it removes (:meth:`_refuse_to_drop_work`), and none
        of them has a job running any more: the watch tries the file again (once; a job since refuses it again)."""
        if not self._reload_after_jobs:
            return False
        with self._lock:
            return not self._reload_after_jobs & self._job_started.keys()

    def _rebase_timers(self) -> None:
        """After a reload: a shorter sweep, watch or inventory interval takes effect now, not once the
        timer the old interval set has fired (up to a day later). A longer one waits for that timer."""
        now, settings = self.clock.now(), self.settings
        self._next_sweep = min(self._next_sweep, now + settings.sweep_interval)
        self._next_watch = min(self._next_watch, now + settings.watch_interval)
        interval = settings.inventory_interval
        if self._next_inventory is not None and interval is not None:
            self._next_inventory = min(self._next_inventory, now + interval)

    def _reset_backoff(self, rebuilt: set[str]) -> None:
        """After a reload: the failure backoff follows the new settings at once. A policy whose engine
        was built again (its settings changed; every policy at a SIGHUP, which also reads the files
        it references again) is tried again at once: the reload may be its fix. Every other waits
        no longer than the new ``failure_backoff_max``. The failure count stays (the next failure
        backs off from it, so reloads make no retry loop); the caller's full load plans them again."""
        now = self.clock.now()
        latest = now + self.settings.failure_backoff_max
        for name, track in list(self._tracks.items()):
            if name in rebuilt:
                track.retry_at = track.revoke_retry_at = None
                continue
            if track.retry_at is not None and track.retry_at > latest:
                track.retry_at = latest
            if track.revoke_retry_at is not None and track.revoke_retry_at > latest:
                track.revoke_retry_at = latest

    def _note_loaded(self) -> None:
        self.metrics.add_policies(p.name for p in self.policies)  # their counters' series, at 0
        self.metrics.reload_ok.set(1)
        self.metrics.reload_time.set(self.clock.now().timestamp())
        self.metrics.policies.set(len(self.policies))

    # -- health -----------------------------------------------------------------------------
    def liveness(self) -> tuple[bool, dict[str, Any]]:
        stalled, detail = self.progress()
        # A failed flush of the journal's WAL is cleared only by opening it again: a restart.
        lost = self.journal.durability_lost()
        if lost:
            detail = {**detail, "journal": lost}
        return not stalled and not lost, detail

    def _journal_state(self) -> tuple[bool, str]:
        """The last journal check's ``(ok, detail)``; not ok once it is older than
        :data:`JOURNAL_CHECK_STALE_S` (the probe hangs): /readyz and rotator_journal_up agree."""
        ok, detail, at = self._journal_check
        age = time.monotonic() - at
        if age > JOURNAL_CHECK_STALE_S:
            return False, f"no answer from the journal for {age:.0f}s"
        return ok, detail

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        stalled, progress = self.progress()
        checks: dict[str, Any] = {"config_loaded": True, "policies": len(self.policies),
                                  "stopping": self._stopping, "watchdog": progress}
        ok, detail = self._journal_state()
        checks["journal"] = detail
        superseded = self._superseded
        if superseded is not None:
            checks["superseded"] = superseded
        credentials = {}
        for policy, store, status in self.credentials():
            expires = status.get("expires_at")
            credentials[f"{policy}/{store}"] = {
                "ok": bool(status.get("ok", True)), "failures": status.get("failures", 0),
                "error": status.get("error"),
                "expires_in_s": round((expires - self.clock.now()).total_seconds(), 1) if expires else None}
        if credentials:
            checks["credentials"] = credentials
        # Shown, never gating: a store credential is one policy's, and every replica shares it. Were it
        # to fail readiness, one broken Vault role would make every pod unready, which blocks a node's
        # drain (the PodDisruptionBudget) and the rollout that would fix it (maxUnavailable 0). The
        # RotatorStoreCredentialExpiring alert (rotator_credential_ok) is what reports it.
        checks["degraded"] = sorted(name for name, c in credentials.items() if not c["ok"])
        # Gating, unlike a store credential: a clock is this replica's host's, and a replica ahead of the
        # others takes their live leases. Only a database server's clock that is off makes every replica
        # unready at once (each then reports about the same offset: docs/daemon.md, Clocks).
        offset, level, limit = self._skew
        skewed = level == clock_offset.NOT_READY
        if offset is not None:
            checks["clock"] = {"offset_s": round(offset.offset_s, 3), "round_trip_s": round(offset.round_trip_s, 3),
                               "ready_within_s": limit, "ok": not skewed}
            if skewed:
                checks["clock"]["error"] = (
                    f"this host's clock is {offset.describe()}, more than lease_ttl / 4 ({limit:g}s): replicas "
                    "would take each other's live leases. Run NTP or chrony on this host and on the database "
                    "server (docs/daemon.md, Clocks)")
        return ok and superseded is None and not self._stopping and not stalled and not skewed, checks

    def snapshot(self) -> StateSnapshot:
        """Every policy's state for the state metrics (at each scrape), from memory: no journal query.

        The views are read from the journal at start, after each job of this process (its policy
        only) and by every sweep (what other processes changed); a policy's PolicyState is made
        again only when its view changed or a threshold in it passed (age past max_age, a
        revocation overdue), so that StateText writes only those lines again.
        """
        from rotator.observe.compliance import DEFAULT_SLACK, is_compliant, is_overdue, max_age_of
        from rotator.observe.metrics import PolicyState, StateSnapshot

        now = self.clock.now()
        overdue_after = self.settings.sweep_interval
        with self._lock:  # runs only: a store-credential renewal (_keeping_alive) takes no policy lease
            busy = set(self._busy)
        states = []
        views, tracks = self._views, self._tracks
        for policy in self.policies:
            view = views.get(policy.name)
            if view is None:
                continue
            # The version before the fields: a change the scheduler makes while they are read here bumps
            # it past the one stored with the state, which is then made again at the next scrape (a state
            # stored without its version outlived the change: a scrape during a job's _refresh kept the
            # token from before the rotation, and RotatorTokenTooOld fired on a healthy daemon).
            version = view.version
            cached = view.cached
            held = policy.name in busy
            # A rotation that stopped for a person (_failed, on a job's thread) changes no view: compared
            # here, as the lease held is, rather than bumping the version from a thread that does not own it.
            track = tracks.get(policy.name)
            attention = track is not None and track.attention is not None
            if cached is None or cached[0] != version or (cached[2] is not None and now >= cached[2]) \
                    or cached[1].lease_held_here != held or cached[1].enabled != policy.enabled \
                    or cached[3] != attention:
                max_age = max_age_of(policy)
                pending = [due for due, _ in view.pending]
                # (``now - d``, not ``due + d``: a due time edited to the year 9999 overflowed, and every
                # policy's metrics with it)
                overdue = sum(1 for due in pending if due < now - overdue_after)
                late = any(is_overdue("pending", due, now, DEFAULT_SLACK) for due in pending) \
                    or view.failed_revocations > 0
                published = view.published_at
                since = age_origin(published, view.token_since)
                lease_active = held or (view.lease_until is not None and view.lease_until >= now)
                next_rotation: datetime | None
                try:
                    next_rotation = decide(policy, published, now, token_since=since).next_due
                except NoNextDue:
                    # A cron schedule whose years have passed: no next rotation to export, and only a
                    # person can give it one (`rotator status` reports it as a problem, _plan logs it).
                    # One such policy must not take every policy's metrics down with it (a 500).
                    next_rotation = None
                # (a publication ahead of the clock: _origin_for_plan; its change bumps the view's version)
                needs_attention = (attention or view.failed_revocations > 0 or view.stuck_runs > 0
                                   or next_rotation is None or policy.name in self._ahead)
                state = PolicyState(
                    policy=policy.name, enabled=policy.enabled, rotated_at=published, expires_at=view.expires_at,
                    next_rotation=next_rotation, pending_revocations=len(pending),
                    overdue_revocations=overdue, failed_revocations=view.failed_revocations,
                    open_runs=view.open_runs, needs_attention=needs_attention,
                    lease_active=lease_active, lease_held_here=held, max_age_s=max_age.total_seconds(),
                    compliant=is_compliant(since, max_age, late, now), token_since=since)
                # the first moment one of these answers changes with time alone
                moments = [due + d for due in pending for d in (overdue_after, DEFAULT_SLACK)
                           if now - d <= due <= datetime.max.replace(tzinfo=due.tzinfo) - d]
                if since is not None and now - max_age <= since <= datetime.max.replace(tzinfo=since.tzinfo) - max_age:
                    moments.append(since + max_age)
                if since is not None and is_ahead(since, now):  # compliant again once the clock nears it
                    moments.append(since - AHEAD_SLACK)
                if view.lease_until is not None and view.lease_until >= now:
                    moments.append(view.lease_until)
                view.cached = (version, state, now if published is None else min(moments, default=None), attention)
            else:
                state = cached[1]
            states.append(state)
        up = self._journal_state()[0] and self._journal_up and self._superseded is None  # (as /readyz says)
        return StateSnapshot(now, journal_up=up, policies=states)


# ---------------------------------------------------------------------------------- journal state
#: A sweep reads the publications since the newest it saw minus this (a replica's run that
#: committed late, or a replica whose clock is behind).
WATERMARK_MARGIN = timedelta(hours=1)


@dataclass
class _View:
    """What the journal says of one policy, in memory."""

    #: the last successful run: its id, publication, token id and the token's expiry
    run_id: str | None = None
    published_at: datetime | None = None
    #: when its token began to age (RunRecord.token_since: a bootstrapped token's creation)
    token_since: datetime | None = None
    token_id: str | None = None
    expires_at: datetime | None = None
    open_runs: int = 0
    #: open runs that recovery tried and could not finish
    stuck_runs: int = 0
    #: pending revocations: (due at, next try at), sorted
    pending: tuple[tuple[datetime, datetime | None], ...] = ()
    failed_revocations: int = 0
    #: until when another process (or this one) holds the lease, as last read
    lease_until: datetime | None = None
    #: the last successful run's RunRecord.tag_search_until (a mint try of it had no answer)
    tag_search_until: datetime | None = None
    #: bumped by the scheduler's thread after it changed the fields above (and by no other thread)
    version: int = 0
    #: the metrics' state made from this view: (the version read before the fields it was made from,
    #: the PolicyState, until when it holds, whether this process's last rotation of it needs a person)
    cached: tuple[int, Any, datetime | None, bool] | None = None


def _terminate_children() -> None:
    """SIGTERM the processes this one started (influxctl calls, hooks) before a parked exit.

    A child left running could still mint a token after the journal was last written; the tag in
    its description lets recovery find it, but a call that never lands is simpler. Linux only
    (reads /proc); elsewhere the children finish or time out on their own.
    """
    me = os.getpid()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 1 and fields[1] == str(me):
            pid = int(entry)
            try:
                if os.getpgid(pid) == pid:
                    os.killpg(pid, signal.SIGTERM)
                else:
                    os.kill(pid, signal.SIGTERM)
                logger.warning("terminated child process %d", pid)
            except OSError:
                pass


def _remove_private_configs() -> None:
    """Before a parked exit: remove the private influxctl configs (each holds a credential) of the calls
    the parked threads are inside, and let them start no other. ``os._exit`` runs no atexit handler, and
    a thread cut off mid-call, or mid-way through removing its config (its lock file gone already), would
    leave one that no sweep removes at once (rotator/adapters/influxctl/common.py, remove_own_configs).
    shutdown() terminated their children first."""
    if "rotator.adapters.influxctl.common" not in sys.modules:
        return  # no influxctl issuer loaded: no private config was made
    from rotator.adapters.influxctl.common import remove_own_configs

    remove_own_configs()


# ---------------------------------------------------------------------------------- command line
def add_parser(subparsers: Any, common_parent: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``rotator daemon`` to the CLI's subparsers (``common_parent`` holds -c, --log-*).

    Defined in rotator/runners/cli_options.py, with the options every command shares."""
    from rotator.runners.cli_options import add_daemon_parser

    return add_daemon_parser(subparsers, common_parent)


def cmd_daemon(args: argparse.Namespace) -> int:
    """Run the daemon until SIGTERM/SIGINT; 0 on a clean stop, EXIT_JOURNAL_LOST after the journal's WAL
    could not be flushed. Bad input raises (exit 2 from the CLI)."""
    if args.listen is not None:
        try:
            parse_listen(args.listen)
        except ValueError as exc:
            raise ConfigError(f"--listen: {exc}", hint="e.g. --listen 127.0.0.1:9464") from None
    from rotator.config import policy_source

    policy_source.SERVICE = True  # a fix that runs "this command" as another user names the service's setting
    systemd = SystemdNotify.from_environment()
    daemon = Daemon(args.config, listen=args.listen, systemd=systemd)
    if hasattr(signal, "SIGUSR2"):
        # Stacks on demand (SIGUSR1 reopens the audit file: Daemon._install_signals). Dumped from a
        # Python handler, which runs with the GIL held: faulthandler's own C handler walks the other
        # threads' frames while they run, and a thread starting or ending meanwhile crashed the
        # daemon with SIGSEGV (seen in CI). A main thread wedged inside C code delays this dump; the
        # stall watchdog dumps the stacks by itself then.
        signal.signal(signal.SIGUSR2, lambda *_: faulthandler.dump_traceback(file=sys.stderr, all_threads=True))
    daemon.start()
    systemd.send(f"READY=1\nSTATUS=rotating {len(daemon.policies)} policies")
    if daemon.serve():
        # Parked: a worker thread is still inside a run and cannot be stopped; the journal makes
        # the run recoverable, so end the process here without waiting for it.
        _remove_private_configs()
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(daemon.exit_status)
    return daemon.exit_status


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m rotator.runners.daemon -c FILE``: ``rotator daemon`` itself, through the command line's
    entry point, so that its arguments, logging set-up and errors are checked and shown as that command's
    are (a bad --log-file or $ROTATOR_LOG_LEVEL, a token-shaped argument masked, exit codes)."""
    from rotator.runners.cli import main as cli_main

    return cli_main(["daemon", *(argv if argv is not None else sys.argv[1:])])


if __name__ == "__main__":
    sys.exit(main())
