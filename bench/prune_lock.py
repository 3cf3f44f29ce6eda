"""How long a prune of a long history holds rotations up: the longest wait of a journal write made
while ``rotator prune`` runs, against the same write on an idle journal.

A SQLite journal is filled by direct SQL with ``--events`` chained audit events (default 300,000,
links computed as rotator computes them), all older than the retention cutoff but the newest 1,000.
Then, in this process, ``audit_chain.prune`` runs in one thread while another records one event
every 5 ms through a second ``Journal`` (a rotation's write, with SQLite's 30 s busy timeout); the
figure is the longest single write and the prune's own wall time. The journal is built again for
each repeat; ``-r`` repeats, medians.

``--baseline CHECKOUT``: run the same in a process of its own with the rotator package of another
checkout (e.g. a ``git worktree`` of an older commit), alternating with this tree.

    .venv/bin/python bench/prune_lock.py [--events 300000] [-r 3] [--baseline CHECKOUT] [--journal URL]

``--journal postgresql://user@host/db``: the same on that PostgreSQL server (each run in a schema
of its own, dropped after) instead of a SQLite file.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, os.environ.get("ROTATOR_BENCH_TREE") or str(Path(__file__).resolve().parents[1]))

from rotator.core import audit_chain  # noqa: E402
from rotator.core.journal import open_journal, ts  # noqa: E402

T0 = datetime(2025, 1, 1, tzinfo=UTC)
KEPT = 1_000


def build(url: str, events: int) -> None:
    """A journal whose chain holds ``events`` events, one a minute from T0, linked as rotator links them."""
    open_journal(url).close()
    rows, prev = [], audit_chain.GENESIS
    for seq in range(1, events + 1):
        event = {"seq": seq, "at": ts(T0 + timedelta(minutes=seq)), "policy": f"p{seq % 100:03d}",
                 "run_id": f"run-{seq // 6}", "step": "published", "result": "ok",
                 "detail": json.dumps({"token_id": f"tok-{seq}"}), "instance": "bench"}
        digest = audit_chain.link(prev, event)
        rows.append((*event.values(), prev, digest))
        prev = digest
    insert = ("INSERT INTO events (seq, at, policy, run_id, step, result, detail, instance, prev_hash, hash) "
              "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
    head = "UPDATE audit_head SET seq = ?, hash = ? WHERE chain = ?"
    if url.startswith("sqlite:///"):
        # rotator.core.journal.sqlite_path's reading, spelt out: --baseline runs trees from before it
        with sqlite3.connect("/" + url[len("sqlite:///"):].lstrip("/")) as db:
            db.executemany(insert, rows)
            db.execute(head, (events, prev, audit_chain.CHAIN))
        return
    import psycopg

    with psycopg.connect(url) as pg, pg.cursor() as cur:
        cur.executemany(insert.replace("?", "%s"), rows)
        cur.execute(head.replace("?", "%s"), (events, prev, audit_chain.CHAIN))


@contextmanager
def journal_url(server: str | None) -> Iterator[str]:
    """A new SQLite file, or a new schema on the PostgreSQL server ``server`` (dropped after)."""
    if server is None:
        with tempfile.TemporaryDirectory(prefix="rotator-prune-") as tmp:
            yield f"sqlite:///{(Path(tmp) / 'journal.db').resolve()}"
        return
    import psycopg

    schema = f"rotator_prune_{os.getpid()}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
        try:
            sep = "&" if "?" in server else "?"
            yield f"{server}{sep}options=-csearch_path%3D{schema}"
        finally:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


def once(events: int, server: str | None = None) -> dict[str, float]:
    with journal_url(server) as url:
        build(url, events)
        pruner, writer = open_journal(url), open_journal(url)
        end = T0 + timedelta(minutes=events)
        cutoff = ts(end - timedelta(minutes=KEPT - 1))  # the newest KEPT events stay

        def write(i: int) -> float:
            start = time.perf_counter()
            writer.record_event(end + timedelta(seconds=i), "p000", None, "plan", "ok", {"n": i})
            return time.perf_counter() - start

        idle = statistics.median(write(i) for i in range(50))
        waits: list[float] = []
        done = threading.Event()

        def rotate() -> None:
            i = 100
            while not done.is_set():
                waits.append(write(i))
                i += 1
                time.sleep(0.005)

        thread = threading.Thread(target=rotate)
        thread.start()
        while not waits:  # at least one write lands during the prune, however short it is
            time.sleep(0.001)
        start = time.perf_counter()
        result = audit_chain.prune(pruner, cutoff, ts(end + timedelta(hours=1)))
        wall = time.perf_counter() - start
        done.set()
        thread.join()
        assert result.events == events - KEPT, result.events
        assert audit_chain.verify(pruner).ok
        pruner.close()
        writer.close()
    return {"prune_s": wall, "longest_write_ms": 1000 * max(waits), "idle_write_ms": 1000 * idle,
            "writes": len(waits)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("-r", "--repeats", type=int, default=3)
    parser.add_argument("--baseline", metavar="CHECKOUT")
    parser.add_argument("--journal", metavar="URL",
                        help="a postgresql:// server URL: each run builds its journal in a schema of its own there")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(once(args.events, args.journal)))
        return
    trees = [("this tree", "")] + ([("baseline", str(Path(args.baseline).resolve()))] if args.baseline else [])
    results: dict[str, list[dict[str, float]]] = {label: [] for label, _ in trees}
    for _ in range(args.repeats):
        for label, tree in trees:
            env = {**os.environ, "ROTATOR_BENCH_TREE": tree} if tree else dict(os.environ)
            journal = ["--journal", args.journal] if args.journal else []
            proc = subprocess.run([sys.executable, __file__, "--child", "--events", str(args.events), *journal],
                                  capture_output=True, text=True, env=env, check=True)
            results[label].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(f"prune of {args.events - KEPT:,} of {args.events:,} chained events, a write every 5 ms meanwhile, "
          f"{'postgresql' if args.journal else 'sqlite'} journal, {args.repeats} repeats (medians)")
    for label, runs in results.items():
        def med(key: str, runs: list[dict[str, float]] = runs) -> float:
            return statistics.median(r[key] for r in runs)

        print(f"  {label:<10} prune {med('prune_s'):6.2f} s   longest write {med('longest_write_ms'):8.1f} ms   "
              f"idle write {med('idle_write_ms'):5.2f} ms   writes {med('writes'):.0f}")


if __name__ == "__main__":
    main()
