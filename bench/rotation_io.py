"""Per steady rotation: journal commits, and the engine's wall time against its minimal I/O floor.

A *steady rotation* is ``Engine.rotate`` on a policy that has a current token and whose previous
rotation's revocation is due (the clock moves one hour per rotation, grace is ten minutes): it
mints, verifies, publishes to the store, schedules the revocation of the token it replaced, and
revokes the token the rotation before replaced.

Both sides run in this process, interleaved, on the same issuer and store:

- engine: ``Engine.rotate()`` with an in-memory issuer (no I/O of its own, so the figure is
  rotator's cost, not a fake server's start-up) and the real influxctl-profile store (a
  ``config.toml`` rewritten atomically, fsync'd), with the SQLite journal (WAL; a durable commit
  waits for an fdatasync of the WAL after it, rotator/core/group_sync.py) or, with
  ``--journal postgresql://...``, a PostgreSQL one;
- floor: the same number of issuer calls (list/mint/verify/revoke) and store calls
  (read/publish) made directly, plus as many single-row commits as the counted rotation made,
  as many of them synced, the way the journal makes them: to a SQLite file in WAL mode with
  synchronous=NORMAL, a synced one followed by an fdatasync of the WAL file (as
  rotator/core/group_sync.py flushes it), or to the same PostgreSQL server, an unsynced one with
  ``SET LOCAL synchronous_commit TO OFF``. ``--floor-commits``, ``--floor-synced`` and
  ``--floor-log-lines`` set other numbers (``--baseline`` passes this tree's to every run of both
  trees, so that both face one floor). The bench prints what the floor did.

Both sides log what the daemon and the command line log by default: rotator's logging is set up
as they set it up (``setup_logging`` at info, text lines) writing to os.devnull, and the floor
writes the lines the counted rotation wrote, as many, to os.devnull too (one write and flush
each, as logging's StreamHandler makes them), so that the figure holds rotator's cost of building
and formatting them and not the I/O both sides make.

Commits are counted exactly: ``Journal.stats`` when the journal has it, else (a journal from
before it) by wrapping ``Journal._tx`` and comparing SQLite's ``total_changes``. A *commit* is a
transaction that wrote at least one row; *synced* the commits that were made durable (on SQLite,
one fdatasync of the WAL file each when alone, every commit but those of
``Journal.transaction(durable=False)``; a transaction that only read writes and syncs nothing);
*transactions* counts reads too; *statements* every SQL statement of those transactions, BEGIN
and COMMIT included (``Journal.stats.statements``; "n/a" for a journal from before it).

The in-memory issuer answers at once, so a steady rotation here is 7 transactions and 32
statements on SQLite: every side effect relies on the lease row its step's transaction read. With
an issuer whose listing takes longer than ``LEASE_READ_FRESH_SECONDS`` (50 ms: influxctl is a
process, an HTTP issuer a round trip) the revocation reads the lease row again (Engine._safe_revoke
lists the tokens between that read and the fenced revoke): 8 and 33, as
tests/core/test_journal_commits.py asserts with the fake influxctl; the commits stay 5, 2 synced.

    .venv/bin/python bench/rotation_io.py [-n 30] [-r 5] [--journal URL] [--fsync-delay-ms MS]
        [--floor-commits N] [--floor-synced N] [--floor-log-lines N]

``--fsync-delay-ms``: every fsync and fdatasync of both sides takes that much longer (bench/slow_fsync.c,
LD_PRELOADed), as on a network volume; a synced one-row commit takes ~0.15 ms on this machine kind's disk.
SQLite journal only: a PostgreSQL server's WAL flushes are not this process's.

``--baseline CHECKOUT --pairs K``: run this bench K times for this tree and K times for the
rotator package of another checkout (e.g. a ``git worktree`` of an older commit), alternating, each
run in a process of its own, and print every run's ratio and the median of each side (this
machine kind's speed drifts by a third over minutes, so only runs alternated like this compare).
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

sys.path.insert(0, os.environ.get("ROTATOR_BENCH_TREE") or str(Path(__file__).resolve().parents[1]))

from rotator.config import registry
from rotator.config.policy import load_config  # noqa: E402
from rotator.core.clock import FakeClock  # noqa: E402
from rotator.core.contracts import MintedToken, MintRequest, TokenInfo, TokenRecord  # noqa: E402
from rotator.core.engine import Engine  # noqa: E402
from rotator.core.journal import Journal, open_journal  # noqa: E402
from rotator.core.retry import RetryPolicy  # noqa: E402
from rotator.core.secret import Secret  # noqa: E402
from rotator.sandbox.influxctl_state import write_profile  # noqa: E402

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class MemoryIssuer:
    """An issuer whose tokens live in a dict: every call costs the same however many rotations ran.

    Its listing holds the live tokens and the last ``KEEP_REVOKED`` revoked ones, as a cluster's
    would once it forgets old revoked tokens: a listing that grew with every rotation would add the
    same growing cost to both sides, and so shrink their ratio the longer the bench runs."""

    call_timeout_seconds = 5.0
    KEEP_REVOKED = 8

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.tokens: dict[str, dict[str, Any]] = {}
        self.by_value: dict[str, str] = {}
        self.revoked: list[str] = []
        self.calls: Counter[str] = Counter()

    def add(self, description: str) -> tuple[str, str]:
        token_id, value = uuid.uuid4().hex[:12], f"bench-{uuid.uuid4().hex}"
        self.tokens[token_id] = {"value": value, "description": description, "revoked": False}
        self.by_value[value] = token_id
        return value, token_id

    def mint(self, request: MintRequest, credential: Secret | None) -> MintedToken:
        self.calls["mint"] += 1
        value, token_id = self.add(request.description)
        return MintedToken(Secret(value), token_id, request.expires_at)

    def verify(self, token: Secret) -> None:
        self.calls["verify"] += 1
        token_id = self.by_value.get(token.reveal())
        if token_id is None or token_id not in self.tokens or self.tokens[token_id]["revoked"]:
            raise RuntimeError("not a live token")

    def revoke(self, token_id: str, credential: Secret | None) -> None:
        self.calls["revoke"] += 1
        token = self.tokens.get(token_id)
        if token is not None and not token["revoked"]:  # None: revoked and forgotten
            token["revoked"] = True
            self.revoked.append(token_id)
        while len(self.revoked) > self.KEEP_REVOKED:
            forgotten = self.tokens.pop(self.revoked.pop(0))
            del self.by_value[forgotten["value"]]

    def list_tokens(self, credential: Secret | None) -> list[TokenInfo]:
        self.calls["list"] += 1
        return [TokenInfo(token_id, t["description"], None, None, self.clock.now() if t["revoked"] else None)
                for token_id, t in self.tokens.items()]


class CountingStore:
    def __init__(self, store: Any) -> None:
        self.store = store
        self.calls: Counter[str] = Counter()
        self.location = store.location

    def read_current(self) -> Any:
        self.calls["read"] += 1
        return self.store.read_current()

    def publish(self, record: TokenRecord, expected_version: str | None) -> str:
        self.calls["publish"] += 1
        return str(self.store.publish(record, expected_version))


@contextmanager
def counting(journal: Journal) -> Iterator[Callable[[], tuple[int, int, int, int | None]]]:
    """Count (commits, synced commits, transactions, statements) of ``journal`` from here on."""
    stats = getattr(journal, "stats", None)
    if stats is not None:
        start = (stats.commits, stats.synced, stats.transactions, getattr(stats, "statements", None))

        def counted() -> tuple[int, int, int, int | None]:
            statements = getattr(stats, "statements", None)
            return (stats.commits - start[0], stats.synced - start[1], stats.transactions - start[2],
                    None if statements is None or start[3] is None else statements - start[3])

        yield counted
        return
    counts = [0, 0]
    original = journal._tx

    @contextmanager
    def tx(immediate: bool = False) -> Iterator[Any]:
        conn = journal._conn
        before = conn.total_changes if conn is not None else None
        with original(immediate) as cur:
            yield cur
        after = journal._conn.total_changes if journal._conn is not None else None
        counts[1] += 1
        if before is None or after != before:
            counts[0] += 1

    journal._tx = tx  # type: ignore[method-assign]
    try:
        yield lambda: (counts[0], counts[0], counts[1], None)  # before Journal.stats every commit was synced
    finally:
        del journal._tx


POLICY = """
[rotator]
journal = "{journal}"
[[policy]]
name = "bench"
schedule = "1h"
grace = "10m"
[policy.issuer]
type = "influxctl-management"
[policy.issuer.profile]
product = "clustered"
host = "cluster.test.invalid"
port = 443
[[policy.store]]
type = "influxctl-profile"
name = "profile"
config = "influxctl/config.toml"
profile = "default"
"""


class Setup:
    def __init__(self, root: Path, journal_url: str | None) -> None:
        root.mkdir(parents=True, exist_ok=True)
        (root / "influxctl").mkdir()
        write_profile(root / "influxctl" / "config.toml")
        (root / "rotator.toml").write_text(POLICY.format(journal=journal_url or "journal.db"))
        config = load_config(root / "rotator.toml")
        self.policy = config.policies[0]
        self.clock = FakeClock(T0)
        self.issuer = MemoryIssuer(self.clock)
        self.store = CountingStore(registry.build_stores(self.policy)[0][1])
        self.journal = open_journal(config.journal_url())
        self.engine = Engine(self.policy, self.journal, issuer=self.issuer, stores=[("profile", self.store)],
                             clock=self.clock, retry=RetryPolicy(1, 0.01, 0.02))
        value, token_id = self.issuer.add("created by a human")
        self.engine.bootstrap(Secret(value), token_id, None)
        # Two rotations: from here on each one revokes the token the one before replaced.
        for _ in range(2):
            self.rotate()

    def rotate(self) -> None:
        self.clock.advance(timedelta(hours=1))
        result = self.engine.rotate()
        assert result.ok, result


#: commit(i, synced): one single-row commit of the floor, made durable before it returns when synced
FloorCommit = Callable[[int, bool], None]

_datasync: Callable[[int], None] = getattr(os, "fdatasync", os.fsync)  # as rotator/core/group_sync.py


class Recorder:
    """A stream that keeps what is written to it instead of writing it."""

    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return len(text)

    def flush(self) -> None:
        pass


def log_as_the_daemon_does() -> logging.StreamHandler[TextIO]:
    """Set up rotator's logging as the daemon and the command line do by default (info, text lines),
    writing to os.devnull; return its handler. (Silenced, the engine would skip building its audit
    records: Engine._announce builds them only for a logger that keeps INFO.)"""
    try:
        from rotator.observe.logs import setup_logging
    except ImportError:  # a --baseline from before the layout by role (84b7df8)
        from rotator.logs import setup_logging  # type: ignore[import-not-found,no-redef,unused-ignore]
    devnull = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - the handler's, for the process's life
    setup_logging("info", "text", stream=devnull)
    handlers = [h for h in logging.getLogger().handlers
                if isinstance(h, logging.StreamHandler) and h.stream is devnull]
    if len(handlers) != 1:
        raise SystemExit(f"rotator's setup_logging left {len(handlers)} handlers on os.devnull, not one: "
                         "this bench's log_as_the_daemon_does needs updating for it")
    return handlers[0]


@contextmanager
def recording(handler: logging.StreamHandler[TextIO]) -> Iterator[list[str]]:
    """The lines ``handler`` writes meanwhile, kept instead of written (one write per record)."""
    recorder = Recorder()
    stream = handler.setStream(recorder)  # type: ignore[arg-type]
    try:
        yield recorder.writes
    finally:
        handler.setStream(stream)  # type: ignore[arg-type]


def floor_lines(recorded: list[str], count: int) -> list[str]:
    """``count`` log lines for the floor: the recorded ones, repeated or cut to that number."""
    if not recorded:
        recorded = ["2026-03-01 12:00:00,000 INFO rotator.engine: a log line of a rotation's length\n"]
    return [recorded[i % len(recorded)] for i in range(count)]


def floor_once(setup: Setup, calls: Counter[str], commit: FloorCommit, commits: int, synced: int,
               lines: list[str], log: TextIO) -> None:
    """The I/O a rotation cannot avoid: the same issuer and store calls, ``commits`` commits of which
    ``synced`` made durable, and ``lines`` written to ``log`` one by one, each flushed."""
    issuer, store, clock = setup.issuer, setup.store.store, setup.clock
    clock.advance(timedelta(hours=1))
    state = None
    for _ in range(calls["read"]):
        state = store.read_current()
    assert state is not None and state.record is not None
    credential = state.record.value
    old = state.record.token_id
    for _ in range(calls["list"]):
        issuer.list_tokens(credential)
    token = issuer.mint(MintRequest("bench", "floor", "rotator:bench:floor", clock.now() + timedelta(days=1)),
                        credential)
    for _ in range(calls["verify"]):
        issuer.verify(token.value)
    record = TokenRecord(token.value, token.token_id, "influxctl-management", "bench", clock.now(),
                         token.expires_at)
    for _ in range(calls["publish"]):
        state = store.read_current() if calls["publish"] > 1 else state
        store.publish(record, state.version if state else None)
    for _ in range(calls["revoke"]):
        issuer.revoke(old, credential)
    for i in range(commits):
        commit(i, i < synced)
    for line in lines:
        log.write(line)
        log.flush()


def sqlite_floor_committer(path: Path) -> FloorCommit:
    """Commits as the SQLite journal makes them: WAL, synchronous=NORMAL (a commit writes the WAL and
    syncs nothing), and a synced one followed by an fdatasync of the WAL file through a descriptor
    kept open (rotator/core/group_sync.py: GroupSync.wait, WalFile.flush)."""
    conn = sqlite3.connect(path, isolation_level=None)
    if conn.execute("PRAGMA journal_mode=WAL").fetchone()[0] != "wal":
        raise SystemExit(f"{path}: SQLite refused WAL mode there; set TMPDIR to a directory on a local disk")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT)")  # creates the WAL
    wal = os.open(f"{path}-wal", os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))

    def commit(i: int, synced: bool) -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t (v) VALUES (?)", (f"row {i}",))
        conn.execute("COMMIT")
        if synced:
            _datasync(wal)

    return commit


def pg_floor_committer(url: str) -> FloorCommit:
    """Commits as the PostgreSQL journal makes them: an unsynced one with synchronous_commit off."""
    import psycopg

    conn = psycopg.connect(url, autocommit=True)
    conn.execute("CREATE TABLE IF NOT EXISTS bench_floor (k SERIAL PRIMARY KEY, v TEXT)")

    def commit(i: int, synced: bool) -> None:
        conn.execute("BEGIN")
        if not synced:
            conn.execute("SET LOCAL synchronous_commit TO OFF")
        conn.execute("INSERT INTO bench_floor (v) VALUES (%s)", (f"row {i}",))
        conn.execute("COMMIT")

    return commit


def floor_counts(args: argparse.Namespace, commits: int, synced: int, lines: int) -> tuple[int, int, int]:
    """The floor's commits, synced commits and log lines: the counted ones, or those asked for."""
    floor_commits = commits if args.floor_commits is None else args.floor_commits
    floor_synced = min(synced, floor_commits) if args.floor_synced is None else args.floor_synced
    floor_log_lines = lines if args.floor_log_lines is None else args.floor_log_lines
    if not 0 <= floor_synced <= floor_commits:
        raise SystemExit(f"--floor-synced {floor_synced} with {floor_commits} floor commits: "
                         "give 0 <= --floor-synced <= --floor-commits")
    return floor_commits, floor_synced, floor_log_lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=30, help="rotations per repeat (default 30)")
    parser.add_argument("-r", "--repeats", type=int, default=5, help="interleaved repeats (default 5)")
    parser.add_argument("--journal", help="a postgresql:// URL (default: a SQLite file in a temp dir)")
    parser.add_argument("--floor-commits", type=int, metavar="N",
                        help="the floor's commits per rotation (default: the counted rotation's)")
    parser.add_argument("--floor-synced", type=int, metavar="N",
                        help="of which synced (default: the counted rotation's, at most --floor-commits)")
    parser.add_argument("--floor-log-lines", type=int, metavar="N",
                        help="the floor's log lines per rotation (default: the counted rotation's)")
    parser.add_argument("--baseline", metavar="CHECKOUT",
                        help="alternate runs with the rotator package of another checkout (see above)")
    parser.add_argument("--pairs", type=int, default=6, help="with --baseline: runs of each tree (default 6)")
    parser.add_argument("--fsync-delay-ms", type=float, default=0.0,
                        help="add this to every fsync/fdatasync (a slower disk, e.g. a network volume: ~0.5-2 ms); "
                        "builds bench/slow_fsync.c with the C compiler and runs again with it LD_PRELOADed")
    args = parser.parse_args()
    for option in ("floor_commits", "floor_synced", "floor_log_lines"):
        if (getattr(args, option) or 0) < 0:
            raise SystemExit(f"--{option.replace('_', '-')} {getattr(args, option)}: give 0 or more")
    slow_disk(args)
    if args.baseline:
        compare(args)
        return

    handler = log_as_the_daemon_does()
    log = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - the floor's, for the process's life
    with tempfile.TemporaryDirectory(prefix="rotator-bench-") as tmp:
        setup = Setup(Path(tmp) / "engine", args.journal)
        # The floor's own issuer and store (same classes), so that neither side sees the other's tokens.
        floor = Setup(Path(tmp) / "floor", None)
        commit = (pg_floor_committer(args.journal) if args.journal
                  else sqlite_floor_committer(Path(tmp) / "floor.db"))
        # One counted rotation: the journal's commits and the calls the floor repeats.
        setup.issuer.calls.clear()
        setup.store.calls.clear()
        with counting(setup.journal) as counted, recording(handler) as recorded:
            setup.rotate()
            commits, synced, transactions, statements = counted()
        calls = setup.issuer.calls + setup.store.calls
        floor_commits, floor_synced, floor_log_lines = floor_counts(args, commits, synced, len(recorded))
        lines = floor_lines(recorded, floor_log_lines)
        engine_ms: list[float] = []
        floor_ms: list[float] = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            for _ in range(args.n):
                setup.rotate()
            engine_ms.append((time.perf_counter() - start) * 1000 / args.n)
            start = time.perf_counter()
            for _ in range(args.n):
                floor_once(floor, calls, commit, floor_commits, floor_synced, lines, log)
            floor_ms.append((time.perf_counter() - start) * 1000 / args.n)
        ratios = [e / f for e, f in zip(engine_ms, floor_ms, strict=True)]
    backend = "postgresql" if args.journal else "sqlite"
    slower = _slower()
    print(f"steady rotation, {backend} journal, {args.n} rotations x {args.repeats} interleaved repeats{slower}")
    print(f"calls per rotation: {dict(sorted(calls.items()))}")
    how = ("WAL, synchronous=NORMAL, an fdatasync of the WAL after each synced one" if backend == "sqlite"
           else "synchronous_commit off for the unsynced ones")
    print(f"floor: the same calls, {floor_commits} one-row commits ({floor_synced} synced; {how}), "
          f"{floor_log_lines} log lines to {os.devnull}; both sides log at info to {os.devnull}")
    print(f"{'measure':<34}{'value':>12}")
    print(f"{'journal commits per rotation':<34}{commits:>12}")
    print(f"{'  of which synced (fdatasync)':<34}{synced:>12}")
    print(f"{'journal transactions per rotation':<34}{transactions:>12}")
    print(f"{'journal statements per rotation':<34}{'n/a' if statements is None else statements:>12}")
    print(f"{'log lines per rotation (info)':<34}{len(recorded):>12}")
    print(f"{'floor commits per rotation':<34}{floor_commits:>12}")
    print(f"{'  of which synced':<34}{floor_synced:>12}")
    print(f"{'floor log lines per rotation':<34}{floor_log_lines:>12}")
    print(f"{'engine ms per rotation (median)':<34}{statistics.median(engine_ms):>12.2f}")
    print(f"{'floor ms per rotation (median)':<34}{statistics.median(floor_ms):>12.2f}")
    import rotator

    print(f"{'rotator imported from':<34}{Path(rotator.__file__).resolve().parent.parent}")
    print(f"{'engine / floor (median of ratios)':<34}{statistics.median(ratios):>11.2f}x"
          f"   min-max {min(ratios):.2f}-{max(ratios):.2f}   goal <= 1.30x")


def _slower() -> str:
    delay = int(os.environ.get("SLOW_FSYNC_US") or 0)
    return f", every fsync +{delay / 1000:g} ms" if delay else ""


def slow_disk(args: argparse.Namespace) -> None:
    """``--fsync-delay-ms``: run this script again with bench/slow_fsync.c's library preloaded and
    SLOW_FSYNC_US set (the runs of ``--baseline`` inherit both), or refuse clearly."""
    if args.fsync_delay_ms < 0:
        raise SystemExit(f"--fsync-delay-ms {args.fsync_delay_ms:g}: give a delay of 0 ms or more")
    if args.fsync_delay_ms and args.journal:
        raise SystemExit("--fsync-delay-ms slows this process's fsyncs only, not a PostgreSQL server's WAL flushes: "
                         "use it with the SQLite journal (no --journal)")
    wanted = str(round(args.fsync_delay_ms * 1000)) if args.fsync_delay_ms else None
    current = os.environ.get("SLOW_FSYNC_US")
    if current is not None and not current.isdigit():
        raise SystemExit(f"SLOW_FSYNC_US={current!r}: it must be whole microseconds (or unset it)")
    if wanted is not None and (current != wanted or not _slow_fsync_mapped()):
        if os.environ.get("ROTATOR_BENCH_REEXEC") == wanted:
            raise SystemExit(_NOT_LOADED)  # ran again with it preloaded, and the loader refused it
        spec = importlib.util.spec_from_file_location("bench_daemon_scale", Path(__file__).with_name("daemon_scale.py"))
        assert spec is not None and spec.loader is not None
        daemon_scale = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(daemon_scale)
        preload = ":".join(p for p in (daemon_scale.slow_fsync_library(), os.environ.get("LD_PRELOAD")) if p)
        env = {**os.environ, "LD_PRELOAD": preload, "SLOW_FSYNC_US": wanted, "ROTATOR_BENCH_REEXEC": wanted}
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
    if current and current != "0" and not _slow_fsync_mapped():
        raise SystemExit(_NOT_LOADED)


_NOT_LOADED = ("bench/slow_fsync.c's library is not loaded in this process, so SLOW_FSYNC_US slows nothing: LD_PRELOAD "
               "works on Linux, and not for a library in a noexec temporary directory (set TMPDIR to another); or "
               "run without --fsync-delay-ms and unset SLOW_FSYNC_US")


def _slow_fsync_mapped() -> bool:
    try:
        with open("/proc/self/maps") as maps:
            return any("slow-fsync" in line or "slow_fsync" in line for line in maps)
    except OSError:
        return False


#: the floor's options and the rows of main's output that show the floor a run used
FLOOR_ROWS = (("--floor-commits", "floor commits per rotation"), ("--floor-synced", "  of which synced"),
              ("--floor-log-lines", "floor log lines per rotation"))


def compare(args: argparse.Namespace) -> None:
    """This tree against ``args.baseline``, alternated run by run, each run a process of its own."""
    baseline = Path(args.baseline).resolve()
    if not (baseline / "rotator" / "__init__.py").is_file():
        raise SystemExit(f"--baseline {baseline}: no rotator package there (give a checkout's root directory)")
    here = Path(__file__).resolve().parents[1]
    command = [sys.executable, __file__, "-n", str(args.n), "-r", str(args.repeats)] + (
        ["--journal", args.journal] if args.journal else [])
    # One floor for both trees: the options given, else this tree's counts from its first run (a
    # baseline that commits or logs more would otherwise face a larger floor, and look cheaper).
    floor = {option: value for option, value in (("--floor-commits", args.floor_commits),
                                                 ("--floor-synced", args.floor_synced),
                                                 ("--floor-log-lines", args.floor_log_lines)) if value is not None}
    sides = [("this tree", here, []), (f"baseline {baseline.name}", baseline, [])]
    for _ in range(args.pairs):
        for label, tree, ratios in sides:
            given = [str(part) for item in floor.items() for part in item]
            proc = subprocess.run(command + given, capture_output=True, text=True, timeout=1800,
                                  env={**os.environ, "ROTATOR_BENCH_TREE": str(tree)})
            if proc.returncode != 0:
                raise SystemExit(f"the run for {tree} failed:\n{proc.stderr[-3000:]}")
            imported = re.search(r"^rotator imported from\s+(\S+)$", proc.stdout, re.M)
            if imported is None or Path(imported.group(1)) != tree:
                raise SystemExit(f"the run for {tree} imported rotator from {imported and imported.group(1)}")
            found = re.search(r"^engine / floor \(median of ratios\)\s+([0-9.]+)x", proc.stdout, re.M)
            assert found is not None, proc.stdout
            ratios.append(float(found.group(1)))
            for option, row in FLOOR_ROWS:
                counted = re.search(rf"^{re.escape(row)}\s+(\d+)$", proc.stdout, re.M)
                assert counted is not None, proc.stdout
                floor.setdefault(option, int(counted.group(1)))
            print(f"{label}: run {len(ratios)}: {found.group(1)}x", flush=True)
    for label, _tree, ratios in sides:
        print(f"{label}: median {statistics.median(ratios):.2f}x of {len(ratios)} runs "
              f"({min(ratios):.2f}-{max(ratios):.2f}){_slower()}, goal <= 1.30x")


if __name__ == "__main__":
    main()
