"""The daemon at scale: ready time, RSS, start-up storm, one /metrics scrape, one scheduler pass,
and a batch of policies due at once against its ideal wall time (issue 12's daemon rows).

Each repeat runs in a fresh interpreter (``--child``), so RSS and start-up are a new process's;
the variants are interleaved and each figure is the median of ``--repeat`` runs.

- **idle** (N idle policies: a bootstrap run each, next due in 30 days; the influxctl-management
  issuer on the fake influxctl and the influxctl-profile store, both built as the daemon builds
  them, never called): ``ready`` = from ``Daemon.start()`` until ``/readyz`` answers 200;
  ``storm`` = until the start-up work (recovery jobs) is over; ``rss`` after that; ``scrape`` =
  one ``GET /metrics`` (wall ms, and the journal transactions it made), and again once the
  daemon's metrics hold one run and one revocation of every policy; ``pass`` = one
  ``Daemon.tick`` with nothing due, and one with the sweep due, with the transactions each made.
  ``--history H`` adds H finished runs of history spread over the policies (each published before
  its policy's bootstrap, with its done revocation), so that the pass and its sweep are measured on
  a journal that has a history, not only one run per policy.
- **batch** (B policies due at once, an in-process issuer whose mint takes ``--issuer-ms``, an
  in-memory store, the real Engine and journal): wall from the pass that starts them until the
  last run ended, against ``ideal = ceil(B / workers) * issuer_ms`` measured in the same run;
  ``--engine sleep`` replaces the Engine by a job that sleeps ``issuer_ms`` and journals one run,
  which isolates what the daemon's dispatch costs. Each variant also prints the CPU (user + sys)
  and the journal transactions, commits and synced commits per rotation; ``--tmpdir /dev/shm``
  puts the journal on tmpfs, where a synced commit costs nothing (what is left is the CPU bound).

    .venv/bin/python bench/daemon_scale.py            # --quick: 1,000 idle, 100 due (< 2 min)
    .venv/bin/python bench/daemon_scale.py --full     # 10,000 idle, 1,000 due, workers 4/16/32
    .venv/bin/python bench/daemon_scale.py --only idle --history 100000   # the idle pass with history
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import secrets
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
FAKE_INFLUXCTL = REPO / "tests" / "fakes" / "influxctl"

HEADER = """[rotator]
journal = "journal.db"
[daemon]
listen = "127.0.0.1:0"
audit = {{ file = "audit.jsonl" }}
workers = {workers}
"""
POLICY = """
[[policy]]
name = "{name}"
schedule = "30d"
grace = "1h"
[policy.issuer]
type = "influxctl-management"
influxctl = "{influxctl}"
[policy.issuer.profile]
product = "clustered"
host = "cluster.test.invalid"
[[policy.store]]
type = "influxctl-profile"
config = "{dir}/influxctl/config.toml"
profile = "{name}"
"""


def build(directory: Path, n: int, workers: int, published: datetime) -> Path:
    """A policy file of ``n`` policies (each its own profile of one influxctl config: two policies may
    not write the same secret) and a journal with one bootstrap run each (one transaction),
    and the expired lease row each bootstrap leaves behind (``rotator bootstrap`` takes the policy's
    lease; the row stays when released, so the next holder's fencing number is higher)."""
    from rotator.core.journal import open_journal, ts

    (directory / "influxctl").mkdir(parents=True, exist_ok=True)
    (directory / "influxctl" / "config.toml").write_text('[[profile]]\nname = "default"\nproduct = "clustered"\n')
    config = directory / "rotator.toml"
    config.write_text(HEADER.format(workers=workers) + "".join(
        POLICY.format(name=f"p{i:05d}", influxctl=FAKE_INFLUXCTL, dir=directory) for i in range(n)))
    open_journal(f"sqlite:///{(directory / 'journal.db').resolve()}").close()  # the schema
    rows = []
    for i in range(n):  # publications 4 minutes apart, the newest at ``published``
        at = ts(published - timedelta(minutes=4 * i))
        rows.append((f"boot-p{i:05d}", f"p{i:05d}", at, at, f"tok-p{i:05d}", ts(published + timedelta(days=60)),
                     at, at))
    with sqlite3.connect(directory / "journal.db") as db:
        db.executemany(
            "INSERT INTO runs (run_id, policy, kind, state, started_at, updated_at, new_token_id, new_expires_at, "
            "published_at, finished_at) VALUES (?, ?, 'bootstrap', 'done', ?, ?, ?, ?, ?, ?)", rows)
        db.executemany("INSERT INTO leases (policy, holder, fence, expires_at) VALUES (?, '', 1, ?)",
                       [(row[1], row[2]) for row in rows])
    return config


def add_history(directory: Path, n: int, history: int, before: datetime) -> None:
    """``history`` finished runs spread over the ``n`` policies of :func:`build`, each with the done
    revocation of the token it replaced, published from 400 days before ``before`` until ``before``
    (older than every bootstrap run, which stays each policy's last publication), in one transaction."""
    from rotator.core.journal import ts

    start = before - timedelta(days=400)
    step = (before - start) / max(history, 1)
    runs, revocations = [], []
    for i in range(history):
        at = start + step * i
        policy, run_id = f"p{i % n:05d}", f"hist-{i:08d}"
        runs.append((run_id, policy, ts(at), ts(at), f"old-{i}", f"new-{i}", ts(at + timedelta(days=60)), ts(at),
                     ts(at + timedelta(hours=1))))
        revocations.append((policy, f"old-{i}", run_id, ts(at + timedelta(hours=1)), ts(at + timedelta(hours=1))))
    with sqlite3.connect(directory / "journal.db") as db:
        db.executemany(
            "INSERT INTO runs (run_id, policy, kind, state, started_at, updated_at, old_token_id, new_token_id, "
            "new_expires_at, published_at, finished_at) VALUES (?, ?, 'rotate', 'done', ?, ?, ?, ?, ?, ?, ?)", runs)
        db.executemany(
            "INSERT INTO revocations (policy, token_id, run_id, reason, due_at, state, attempts, done_at) "
            "VALUES (?, ?, ?, 'superseded', ?, 'done', 1, ?)", revocations)


@contextmanager
def count_transactions(journal: Any) -> Any:
    """Count the journal's transactions (every query and write is one) while the block runs."""
    counter = {"n": 0}
    original = journal._tx
    me = threading.get_ident()  # not the readiness probe's pings on its own thread

    @contextmanager
    def counted(*args: Any, **kwargs: Any) -> Any:
        counter["n"] += threading.get_ident() == me
        with original(*args, **kwargs) as cur:
            yield cur

    journal._tx = counted
    try:
        yield counter
    finally:
        del journal._tx


def rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


# ---------------------------------------------------------------------------------- children
def child_idle(n: int, directory: Path, history: int = 0) -> dict[str, Any]:
    from rotator.runners.daemon import Daemon

    published = datetime.now(UTC) - timedelta(days=1)
    config = build(directory, n, 4, published)
    if history:
        add_history(directory, n, history, published - timedelta(minutes=4 * n))
    t0 = time.perf_counter()
    d = Daemon(config, handle_signals=False)
    d.start()
    assert d.health is not None
    port = d.health.address[1]
    server = threading.Thread(target=d.serve, daemon=True)
    server.start()
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=30) as resp:
                if resp.status == 200:
                    break
        except (OSError, ValueError):  # not listening yet, 503, or cut off
            pass
        time.sleep(0.005)
    ready = time.perf_counter() - t0
    while True:  # the start-up storm: every job submitted by the first pass has ended
        with d._lock:
            busy = len(d._busy)
        if busy == 0 and d._recovered:
            break
        time.sleep(0.01)
    storm = time.perf_counter() - t0
    rss = rss_mib()
    # The body of one /metrics answer, made in this thread (what the HTTP handler calls): over
    # HTTP, a scrape longer than the server's connection deadline (10 s) is cut off.
    from prometheus_client import generate_latest

    exposition = getattr(d.metrics, "exposition", None) or (lambda: generate_latest(d.metrics.registry))
    scrapes, scrape_tx, cpu = [], [], []
    for _ in range(3):
        with count_transactions(d.journal) as counter:
            c0, w0 = time.process_time(), time.perf_counter()
            body = exposition()
            scrapes.append(time.perf_counter() - w0)
            cpu.append(time.process_time() - c0)
        scrape_tx.append(counter["n"])
    assert b"rotator_token_age_seconds" in body
    # The same scrape once every policy has run and revoked once in this process: what the daemon's
    # metrics then hold (Daemon._ran's updates and the engine listener's revocation count).
    metrics = d.metrics
    for name in (p.name for p in d.policies):
        metrics.run_duration.observe(1.0)
        metrics.rotations.labels(name, "success").inc()
        metrics.consecutive_failures.labels(name).set(0)
        metrics.revocations.labels(name, "ok").inc()
    steady, steady_bytes = [], 0
    for _ in range(3):
        w0 = time.perf_counter()
        steady_bytes = len(exposition())
        steady.append(time.perf_counter() - w0)
    # Passes driven from here while the serve thread sleeps (nothing is due, no job wakes it).
    passes, pass_tx, sweeps, sweep_tx = [], [], [], []
    for _ in range(3):
        now = d.clock.now()
        with count_transactions(d.journal) as counter:
            w0 = time.perf_counter()
            d.tick(now)
            passes.append(time.perf_counter() - w0)
        pass_tx.append(counter["n"])
        d._next_sweep = now  # the same pass with the sweep due
        with count_transactions(d.journal) as counter:
            w0 = time.perf_counter()
            d.tick(now)
            sweeps.append(time.perf_counter() - w0)
        sweep_tx.append(counter["n"])
    d.request_stop()
    server.join(timeout=60)
    return {"ready_s": ready, "storm_s": storm, "rss_mib": rss, "scrape_ms": 1000 * statistics.median(scrapes),
            "scrape_cpu_ms": 1000 * statistics.median(cpu), "scrape_tx": max(scrape_tx),
            "scrape_ran_ms": 1000 * statistics.median(steady), "scrape_ran_mb": steady_bytes / 2**20,
            "scrape_mb": len(body) / 2**20,
            "pass_ms": 1000 * statistics.median(passes), "pass_tx": max(pass_tx),
            "sweep_ms": 1000 * statistics.median(sweeps), "sweep_tx": max(sweep_tx)}


class SleepIssuer:
    """In-process issuer: mint takes ``delay`` seconds; every other call is instant."""

    kind = "bench-sleep"
    settings_model = dict
    call_timeout_seconds = 5.0

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.tokens: dict[str, Any] = {}

    def mint(self, request: Any, credential: Any) -> Any:
        from rotator.core.contracts import MintedToken
        from rotator.core.secret import Secret

        time.sleep(self.delay)
        token_id = f"t{len(self.tokens)}-{threading.get_ident()}-{time.perf_counter_ns()}"
        self.tokens[token_id] = request.description
        # a random value, as an issuer's (not derived from the id, which audit lines carry)
        return MintedToken(Secret(secrets.token_urlsafe(32)), token_id, request.expires_at)

    def verify(self, token: Any) -> None:
        return None

    def revoke(self, token_id: str, credential: Any) -> None:
        return None

    def list_tokens(self, credential: Any) -> list[Any]:
        return []


class MemoryStore:
    kind = "bench-memory"
    settings_model = dict

    def __init__(self, record: Any) -> None:
        self.record = record
        self.version = 1

    @property
    def location(self) -> str:
        return "memory"

    def read_current(self) -> Any:
        from rotator.core.contracts import StoreState

        return StoreState(str(self.version), True, self.record)

    def publish(self, record: Any, expected_version: str | None) -> str:
        self.version += 1
        self.record = record
        return str(self.version)


def child_batch(n: int, directory: Path, workers: int, issuer_ms: float, engine_kind: str) -> dict[str, Any]:
    from rotator.core.contracts import TokenRecord
    from rotator.core.engine import Engine, RunResult
    from rotator.core.journal import RunRecord
    from rotator.core.retry import RetryPolicy
    from rotator.core.secret import Secret
    from rotator.runners.daemon import Daemon, default_engine

    published = datetime.now(UTC) - timedelta(days=31)  # every policy is due now
    config = build(directory, n, workers, published)
    delay = issuer_ms / 1000
    runs = {"n": 0}
    lock = threading.Lock()

    class SleepEngine:
        holder = "bench"
        lease_ttl = timedelta(minutes=15)

        def __init__(self, name: str, journal: Any) -> None:
            self.name, self.journal = name, journal

        def rotate(self, *, expect_last_run: str | None = None) -> Any:
            time.sleep(delay)
            now = datetime.now(UTC)
            with lock:
                runs["n"] += 1
                run_id = f"r{runs['n']}"
            self.journal.begin_run(RunRecord(run_id, self.name, "done", "rotate", now, now, published_at=now))
            return RunResult(self.name, "done", run_id, None, "t", "rotated")

        def recover(self) -> list[str]:
            return []

        def revoke_due(self) -> list[str]:
            return []

    def factory(policy: Any, cfg: Any, journal: Any, listener: Any) -> Any:
        if engine_kind == "sleep":
            return SleepEngine(policy.name, journal)
        record = TokenRecord(Secret(secrets.token_urlsafe(32)), f"tok-{policy.name}", "influxctl-management",
                             policy.name, published, published + timedelta(days=60))
        r = cfg.settings.retry
        return Engine(policy, journal, issuer=SleepIssuer(delay), stores=[("mem", MemoryStore(record))],
                      retry=RetryPolicy(r.attempts, r.base_delay.total_seconds(), r.max_delay.total_seconds()),
                      lease_ttl=cfg.settings.lease_ttl, listeners=[listener])

    assert default_engine is not None
    d = Daemon(config, handle_signals=False, serve_http=False, engine_factory=factory)
    d.start()
    d._recovered = True  # the start-up pass is the idle variant's business: here only the due batch
    served = {"n": 0}
    finished = threading.Event()
    original = d.on_event

    def on_event(event: Any) -> None:
        original(event)
        if event.get("step") == "rotate" and event.get("result") in ("ok", "failed", "needs_attention"):
            with lock:
                served["n"] += 1
                if served["n"] >= n:
                    finished.set()

    d.on_event = on_event  # type: ignore[method-assign]
    stats0 = d.journal.stats.snapshot()
    t0, c0 = time.perf_counter(), os.times()
    server = threading.Thread(target=d.serve, daemon=True)
    server.start()
    # Woken by the last rotation's event (a poll here would take the GIL from the workers).
    if not finished.wait(600):
        raise SystemExit(f"only {served['n']} of {n} rotations ended in 600 s")
    wall, c1 = time.perf_counter() - t0, os.times()
    stats = d.journal.stats.snapshot()
    d.request_stop()
    server.join(timeout=60)
    ideal = math.ceil(n / workers) * delay
    return {"wall_s": wall, "ideal_s": ideal, "ratio": wall / ideal, "served": served["n"],
            "user_ms": 1000 * (c1.user - c0.user) / n, "sys_ms": 1000 * (c1.system - c0.system) / n,
            "tx": (stats.transactions - stats0.transactions) / n, "commits": (stats.commits - stats0.commits) / n,
            "synced": (stats.synced - stats0.synced) / n}


# ---------------------------------------------------------------------------------- driver
def slow_fsync_library() -> str:
    """bench/slow_fsync.c built into a shared library: once per version of the source, kept in the
    temporary directory under a name of its hash (no run leaves a directory behind)."""
    source = REPO / "bench" / "slow_fsync.c"
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    out = Path(tempfile.gettempdir()) / f"rotator-bench-slow-fsync-{digest}.so"
    if out.is_file():
        return str(out)
    compiler = os.environ.get("CC", "cc")
    partial = out.with_name(f"{out.name}.{os.getpid()}.tmp")
    try:
        subprocess.run([compiler, "-O2", "-shared", "-fPIC", "-o", str(partial), str(source), "-ldl"], check=True,
                       capture_output=True, text=True)
        os.replace(partial, out)  # concurrent builds: each renames a whole library
    except (OSError, subprocess.CalledProcessError) as exc:
        partial.unlink(missing_ok=True)
        detail = getattr(exc, "stderr", "") or exc
        raise SystemExit(f"--fsync-delay-ms needs a C compiler ({compiler}; set CC): {detail}") from None
    return str(out)


def run_child(args: list[str], tmpdir: str | None = None, env: dict[str, str] | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="daemon-scale-", dir=tmpdir) as tmp:
        proc = subprocess.run([sys.executable, __file__, "--child", *args, "--dir", tmp], capture_output=True,
                              text=True, cwd=REPO, timeout=900, env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise SystemExit(f"child {args} failed:\n{proc.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="1,000 idle policies, 100 due (default)")
    mode.add_argument("--full", action="store_true", help="10,000 idle policies, 1,000 due")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--idle", type=int, help="idle policies (overrides the mode)")
    parser.add_argument("--history", type=int, default=0, metavar="H",
                        help="finished runs of history (with their done revocations) spread over the idle "
                        "policies (default 0: one bootstrap run each)")
    parser.add_argument("--batch", type=int, help="policies due at once (overrides the mode)")
    parser.add_argument("--workers", default=None, help="comma-separated worker counts of the batch")
    parser.add_argument("--issuer-ms", type=float, default=100.0)
    parser.add_argument("--engine", default="real,sleep", help="batch engines: real, sleep or both")
    parser.add_argument("--only", choices=["idle", "batch"])
    parser.add_argument("--tmpdir", help="where the journal and policy files go (default: the system's temporary "
                        "directory); e.g. /dev/shm: no fsync costs anything, which isolates the CPU bound")
    parser.add_argument("--fsync-delay-ms", type=float, default=0.0,
                        help="add this to every fsync/fdatasync of the children (a slower disk, e.g. a network "
                        "volume: ~0.5-2 ms); builds bench/slow_fsync.c with the C compiler and LD_PRELOADs it")
    parser.add_argument("--baseline", metavar="CHECKOUT",
                        help="also run each batch variant with the rotator package of another checkout (e.g. a "
                        "`git worktree` of an older commit), interleaved with this one")
    parser.add_argument("--child", choices=["idle", "batch"], help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--w", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--kind", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        sys.path.insert(0, os.environ.get("ROTATOR_BENCH_TREE") or str(REPO))
        import logging

        logging.basicConfig(level=logging.WARNING)
        directory = Path(args.dir)
        if args.child == "idle":
            out = child_idle(args.n, directory, args.history)
        else:
            out = child_batch(args.n, directory, args.w, args.issuer_ms, args.kind)
        import rotator

        out["rotator"] = str(Path(rotator.__file__).parent.parent)
        print(json.dumps(out))
        return 0
    idle_n = args.idle or (10_000 if args.full else 1_000)
    batch_n = args.batch or (1_000 if args.full else 100)
    workers = [int(w) for w in (args.workers or ("4,16,32" if args.full else "4,32")).split(",")]
    engines = args.engine.split(",")
    env: dict[str, str] = {}
    if args.fsync_delay_ms:
        preload = ":".join(p for p in (slow_fsync_library(), os.environ.get("LD_PRELOAD")) if p)
        env = {"LD_PRELOAD": preload, "SLOW_FSYNC_US": str(round(args.fsync_delay_ms * 1000))}
    trees: list[tuple[str, dict[str, str]]] = [("", env)]
    if args.baseline:
        baseline = Path(args.baseline).resolve()
        if not (baseline / "rotator" / "__init__.py").is_file():
            raise SystemExit(f"--baseline {baseline}: no rotator package there (give a checkout's root directory)")
        trees.append((f"baseline {baseline.name}: ", {**env, "ROTATOR_BENCH_TREE": str(baseline)}))
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores; idle {idle_n}, batch {batch_n} "
          f"x {args.issuer_ms:.0f} ms issuer, workers {workers}, {args.repeat} repeats (interleaved)"
          + (f", fsync +{args.fsync_delay_ms:g} ms" if args.fsync_delay_ms else ""))
    idle: list[dict[str, Any]] = []
    batches: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for _ in range(args.repeat):
        if args.only in (None, "idle"):
            idle.append(run_child(["idle", "--n", str(idle_n), "--history", str(args.history)], args.tmpdir, env))
        if args.only in (None, "batch"):
            for kind in engines:
                for w in workers:
                    for label, tree_env in trees:
                        batches.setdefault((label, kind, w), []).append(run_child(
                            ["batch", "--n", str(batch_n), "--w", str(w), "--kind", kind,
                             "--issuer-ms", str(args.issuer_ms)], args.tmpdir, tree_env))
    if idle:
        def med(key: str) -> float:
            return statistics.median(r[key] for r in idle)

        print(f"\nidle daemon, {idle_n} policies, {args.history:,} runs of history (median of {len(idle)})")
        print(f"  ready                 {med('ready_s'):8.2f} s")
        print(f"  start-up work ended   {med('storm_s'):8.2f} s")
        print(f"  RSS                   {med('rss_mib'):8.1f} MiB")
        print(f"  /metrics scrape       {med('scrape_ms'):8.1f} ms wall, {med('scrape_cpu_ms'):.1f} ms CPU, "
              f"{max(r['scrape_tx'] for r in idle)} journal transactions, {med('scrape_mb'):.1f} MiB")
        print(f"  ... once every policy ran {med('scrape_ran_ms'):8.1f} ms wall, {med('scrape_ran_mb'):.1f} MiB")
        print(f"  pass, nothing due     {med('pass_ms'):8.2f} ms, {max(r['pass_tx'] for r in idle)} journal "
              "transactions")
        print(f"  pass with the sweep   {med('sweep_ms'):8.2f} ms, {max(r['sweep_tx'] for r in idle)} journal "
              "transactions")
    if batches:
        print(f"\n{batch_n} policies due at once, {args.issuer_ms:.0f} ms issuer (median of {args.repeat})")
        for (label, kind, w), rs in batches.items():
            ratio = statistics.median(r["ratio"] for r in rs)
            if label and len({r["rotator"] for r in rs} | {str(REPO)}) != 2:
                raise SystemExit(f"{label}the children did not import the baseline's rotator: {rs[0]['rotator']}")
            print(f"  {label}engine {kind:5} workers {w:2}: wall {statistics.median(r['wall_s'] for r in rs):6.2f} s, "
                  f"ideal {rs[0]['ideal_s']:5.2f} s, ratio {ratio:.2f}x "
                  f"(min-max {min(r['ratio'] for r in rs):.2f}-{max(r['ratio'] for r in rs):.2f}); per rotation: "
                  f"CPU {statistics.median(r['user_ms'] + r['sys_ms'] for r in rs):.2f} ms, journal "
                  f"{rs[0]['tx']:.0f} transactions, {rs[0]['commits']:.0f} commits ({rs[0]['synced']:.0f} synced)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
