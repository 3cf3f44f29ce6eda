"""Journal growth under ``[rotator] keep_history``: the bytes a rotation adds, and the bytes the daily
prune keeps of each day it deletes (its checkpoint), against the size of the events it deleted.

1. Per rotation: ``--rotations`` steady rotations through ``Engine.rotate`` (bench/rotation_io.py's
   setup: an in-memory issuer, an influxctl-profile store, a SQLite journal), each minting,
   publishing and revoking the token the one before replaced. The figure is the bytes their rows
   add to ``events``, ``runs`` and ``revocations`` (the columns' own lengths, as
   ``SUM(length(...))`` gives them), and the journal file's growth (after a WAL checkpoint).
2. Per day, with pruning: ``--policies`` policies, each rotated every ``--period-days`` days (one
   policy after the other, spread over the period), each rotation writing the events of one
   rotation of step 1 again (their steps, results and details, under its own policy and run id).
   The journal holds a period of history and ``--days`` more days; the first prune deletes the
   period (every policy has a publish to carry on), then one prune a day deletes one more day, as
   the daemon's daily prune with ``keep_history`` does once the history is older than that. Each
   prune runs at its cutoff plus ``--keep-history-days`` (the prune's own event stays). The figures
   are each daily checkpoint's size, against the size of the events that prune deleted (the same
   column lengths): the ratio is what pruning keeps of a day's events, forever (checkpoints are
   never pruned). The same history is pruned a second time with every checkpoint a full copy of
   what is carried on (``last_published_elsewhere``, as rotator wrote each one before issue 12's
   fix: every idle policy's last publish in every checkpoint), when this tree has that switch.

Sizes, not times, so one run suffices (the prune's wall time is printed for information only).

    .venv/bin/python bench/journal_growth.py [--policies 3000] [--period-days 30] [--days 7]
        [--keep-history-days 400] [--rotations 20]

A smoke run: ``--policies 50 --days 2 --rotations 3``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

sys.path.insert(0, os.environ.get("ROTATOR_BENCH_TREE") or str(Path(__file__).resolve().parents[1]))

from rotator.core import audit_chain  # noqa: E402
from rotator.core.journal import open_journal, ts  # noqa: E402

T0 = datetime(2025, 1, 1, tzinfo=UTC)
#: the byte length of an event row's columns (seq as 8 bytes), as the journal stores them
EVENT_BYTES = ("8 + length(at) + length(policy) + COALESCE(length(run_id), 0) + length(step) + length(result) "
               "+ length(detail) + COALESCE(length(instance), 0) + COALESCE(length(prev_hash), 0) "
               "+ COALESCE(length(hash), 0)")


def _row_bytes(conn: sqlite3.Connection, table: str) -> int:
    """The summed length of every column of ``table``'s rows (a NULL counts 0, a number 8)."""
    columns = [r[1] for r in conn.execute(f"PRAGMA table_info({table})").fetchall()]
    per_row = " + ".join(f"COALESCE(CASE typeof({c}) WHEN 'integer' THEN 8 WHEN 'real' THEN 8 "
                         f"ELSE length({c}) END, 0)" for c in columns)
    return int(conn.execute(f"SELECT COALESCE(SUM({per_row}), 0) FROM {table}").fetchone()[0])


def _file_bytes(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path.stat().st_size


def _rotation_io() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_rotation_io", Path(__file__).with_name("rotation_io.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class PerRotation(NamedTuple):
    rows: dict[str, float]
    file: float
    #: one steady rotation's events: (step, result, detail JSON)
    events: list[tuple[str, str, str]]


def per_rotation(root: Path, rotations: int) -> PerRotation:
    """Bytes a steady rotation adds, by table and to the file, and the events it writes."""
    setup = _rotation_io().Setup(root, None)
    path = root / "journal.db"
    tables = ("events", "runs", "revocations")
    with sqlite3.connect(path) as conn:
        before = {t: _row_bytes(conn, t) for t in tables}
    size = _file_bytes(path)
    for _ in range(rotations - 1):
        setup.rotate()
    head = audit_chain.verify(setup.journal).head_seq
    setup.rotate()
    with sqlite3.connect(path) as conn:
        after = {t: _row_bytes(conn, t) for t in tables}
        events = [(str(s), str(r), str(d)) for s, r, d in conn.execute(
            "SELECT step, result, detail FROM events WHERE seq > ? ORDER BY seq", (head,)).fetchall()]
    grown = _file_bytes(path) - size
    setup.journal.close()
    return PerRotation({t: (after[t] - before[t]) / rotations for t in tables}, grown / rotations, events)


class Daily(NamedTuple):
    events: int
    event_bytes: int
    checkpoint_bytes: int
    policies_with_events: int
    prune_s: float


def _history(url: str, policies: int, period: int, days: int, template: list[tuple[str, str, str]]) -> int:
    """Every policy rotated every ``period`` days over ``period + days + 1`` days, in time order, each
    rotation writing ``template``'s events; returns how many events."""
    journal = open_journal(url)
    count = 0
    per_day = max(1, policies // period)
    with journal.transaction():
        for day in range(period + days + 1):
            for i in range(policies):
                if i % period != day % period:
                    continue
                at = T0 + timedelta(days=day, seconds=(i // period) * 86400 // (per_day + 1))
                for k, (step, result, detail) in enumerate(template):
                    journal.record_event(at + timedelta(milliseconds=k), f"policy-{i:05d}", f"run-{day:04d}-{i:05d}",
                                         step, result, json.loads(detail))
                    count += 1
    journal.close()
    return count


def daily_prunes(url: str, period: int, days: int, keep: timedelta) -> list[Daily]:
    """The backlog prune, then ``days`` daily prunes; each one's figures (the backlog's first)."""
    journal = open_journal(url)
    out = []
    for day in range(period + 1, period + 2 + days):
        cutoff = T0 + timedelta(days=day)
        with journal.audit_transaction(write=False) as (cur, _lock):
            count, size, names = cur.execute(
                f"SELECT COUNT(*), COALESCE(SUM({EVENT_BYTES}), 0), COUNT(DISTINCT policy) FROM events "
                "WHERE seq IS NOT NULL AND at < ? AND step <> 'prune'", (ts(cutoff),)).fetchone()
        before = _checkpoint_bytes(journal)
        began = time.perf_counter()
        result = audit_chain.prune(journal, ts(cutoff), ts(cutoff + keep))
        took = time.perf_counter() - began
        assert result.events == count, (result.events, count)
        # (a backlog of more than a batch, 50,000 events, writes a checkpoint per batch)
        out.append(Daily(int(count), int(size), _checkpoint_bytes(journal) - before, int(names), took))
    assert audit_chain.verify(journal).ok
    journal.close()
    return out


def _checkpoint_bytes(journal: Any) -> int:
    with journal.audit_transaction(write=False) as (cur, _lock):
        return sum(len(str(r[0]).encode()) for r in cur.execute("SELECT detail FROM audit_checkpoints").fetchall())


@contextmanager
def full_copies() -> Iterator[bool]:
    """Every checkpoint a full copy of what is carried on, as before issue 12's fix (False: this tree
    has no such switch, it writes full copies anyway or none)."""
    original = getattr(audit_chain, "_writes_full_map", None)
    if original is None:
        yield False
        return

    def always(previous: audit_chain.Checkpoint | None) -> bool:
        return True

    audit_chain._writes_full_map = always
    try:
        yield True
    finally:
        audit_chain._writes_full_map = original


def _kb(n: float) -> str:
    return f"{n / 1000:,.1f} KB"


def report(label: str, runs: list[Daily], policies: int, keep_days: int) -> None:
    backlog, daily = runs[0], runs[1:]
    cp = statistics.median(d.checkpoint_bytes for d in daily)
    ev = statistics.median(d.event_bytes for d in daily)
    names = statistics.median(d.policies_with_events for d in daily)
    print(f"\n{label}")
    print(f"  backlog prune: {backlog.events:,} events ({_kb(backlog.event_bytes)}) -> checkpoint "
          f"{_kb(backlog.checkpoint_bytes)} (one per {audit_chain.PRUNE_BATCH:,} events)")
    for i, d in enumerate(daily, 1):
        print(f"  day {i}: {d.events:,} events of {d.policies_with_events} policies ({_kb(d.event_bytes)}) -> "
              f"checkpoint {_kb(d.checkpoint_bytes)}, ratio {d.checkpoint_bytes / max(d.event_bytes, 1):.3f}, "
              f"prune {d.prune_s * 1000:.0f} ms")
    print(f"  median daily checkpoint: {_kb(cp)} = {cp / max(names, 1):.0f} bytes per policy with events "
          f"({names:.0f} of {policies}); ratio to the day's events {cp / max(ev, 1):.3f}")
    print(f"  kept forever per year of daily prunes: {_kb(365 * cp)} (the kept {keep_days} days of events: "
          f"{_kb(keep_days * ev)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policies", type=int, default=3000)
    parser.add_argument("--period-days", type=int, default=30, help="each policy's rotation interval, days")
    parser.add_argument("--days", type=int, default=7, help="daily prunes after the backlog's")
    parser.add_argument("--keep-history-days", type=int, default=400)
    parser.add_argument("--rotations", type=int, default=20, help="steady rotations measured in step 1")
    args = parser.parse_args()
    # (the bootstrap's warning about the in-memory issuer would reach stderr through logging's last resort)
    logging.getLogger().addHandler(logging.NullHandler())
    if min(args.policies, args.period_days, args.days, args.rotations) < 1:
        parser.error("--policies, --period-days, --days and --rotations take 1 or more")
    with tempfile.TemporaryDirectory() as tmp:
        rot = per_rotation(Path(tmp) / "rotation", args.rotations)
        rows = sum(rot.rows.values())
        print(f"per steady rotation ({args.rotations} rotations, {len(rot.events)} events each):")
        print("  rows: " + ", ".join(f"{t} {b:,.0f} B" for t, b in rot.rows.items()) + f"; {rows:,.0f} B in all")
        print(f"  SQLite file growth: {rot.file:,.0f} B per rotation ({rot.file / max(rows, 1):.2f}x the rows)")
        daily_events = args.policies / args.period_days * rot.rows["events"]
        print(f"  at {args.policies} policies every {args.period_days} days: ~{_kb(daily_events)} of events a day, "
              f"~{_kb(daily_events * args.keep_history_days)} kept by keep_history {args.keep_history_days}d")
        keep = timedelta(days=args.keep_history_days)
        for variant in ("deltas", "full"):
            url = f"sqlite:///{Path(tmp) / f'{variant}.db'}"
            events = _history(url, args.policies, args.period_days, args.days, rot.events)
            if variant == "deltas":
                print(f"\n{args.policies} policies, each rotated every {args.period_days} days: {events:,} events "
                      f"over {args.period_days + args.days + 1} days")
                report("checkpoints of this tree:", daily_prunes(url, args.period_days, args.days, keep),
                       args.policies, args.keep_history_days)
                continue
            with full_copies() as switched:
                if not switched:
                    break
                report("every checkpoint a full copy (before issue 12's fix):",
                       daily_prunes(url, args.period_days, args.days, keep), args.policies, args.keep_history_days)


if __name__ == "__main__":
    main()

