"""`rotator status` on a journal with 100k runs of history against the same on a fresh journal.

Two SQLite journals for the same 10 policies: *fresh* (one published run per policy) and
*history* (``--runs``, default 100,000, finished runs spread over the policies, each with its
done revocation, plus the same current run per policy), filled by direct SQL inserts.

Measured per journal, interleaved, medians of ``-r`` repeats:

- ``status()``: what ``rotator status`` computes, in-process: open the journal read-only (as the
  command does) and call ``rotator.observe.status.policy_status`` for every policy (the command's own
  code, as it is on this branch: its reads of the last run, the open runs and, through
  ``compliance.open_revocations``, the revocations that are not done);
- ``VM steps``: the SQLite VM instructions of those ``policy_status`` calls (sqlite3's progress
  handler): a count of the work the journal does, which a loaded machine does not blur;
- ``bounded``: the same figures from the journal's bounded queries (``Journal.latest_run``,
  ``revocation_counts``, ``unfinished_revocations``, ``last_success``, ``open_runs``), printed when
  the journal has them: what status costs once it uses them;
- ``--subprocess``: also ``rotator status --output json`` as a subprocess (interpreter start-up
  included, which dilutes the ratio).

    .venv/bin/python bench/status_history.py [--runs 100000] [-r 5] [--subprocess]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rotator.config.policy import load_config  # noqa: E402
from rotator.core.journal import Journal, open_journal, ts  # noqa: E402
from rotator.observe.status import policy_status  # noqa: E402

POLICIES = [f"p{i:02d}" for i in range(10)]
NOW = datetime.now(UTC)


def policy_file(root: Path) -> Path:
    text = '[rotator]\njournal = "journal.db"\n'
    for name in POLICIES:
        text += f"""
[[policy]]
name = "{name}"
schedule = "30d"
grace = "1h"
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
profile = "{name}"
"""
    path = root / "rotator.toml"
    path.write_text(text)
    return path


def fill(root: Path, history: int) -> Path:
    """A journal made by rotator (current schema): ``history`` finished runs + one current run per policy."""
    root.mkdir(parents=True)
    config = policy_file(root)
    journal_path = root / "journal.db"
    open_journal(f"sqlite:///{journal_path.resolve()}").close()
    db = sqlite3.connect(journal_path)
    runs, revs = [], []
    start = NOW - timedelta(days=400)
    step = timedelta(days=400) / max(history, 1)
    for i in range(history):
        policy = POLICIES[i % len(POLICIES)]
        at = start + step * i
        run_id = f"h{i:015d}"
        runs.append((run_id, policy, "rotate", "done", ts(at), ts(at), f"old{i}", f"tok{i}",
                     ts(at + timedelta(days=60)), ts(at), ts(at + timedelta(hours=1)), "{}", "{}", None, 1, ts(at)))
        revs.append((policy, f"old{i}", run_id, "superseded", ts(at + timedelta(hours=1)), "done", 1, None, None,
                     ts(at + timedelta(hours=1))))
    for j, policy in enumerate(POLICIES):
        at = NOW - timedelta(days=1, minutes=j)
        runs.append((f"c{j:015d}", policy, "rotate", "published", ts(at), ts(at), f"prev{j}", f"cur{j}",
                     ts(at + timedelta(days=60)), ts(at), None, "{}", "{}", None, 1, ts(at)))
        revs.append((policy, f"prev{j}", f"c{j:015d}", "superseded", ts(at + timedelta(hours=1)), "pending", 0, None,
                     None, None))
    with db:
        db.executemany("INSERT INTO runs (run_id, policy, kind, state, started_at, updated_at, old_token_id, "
                       "new_token_id, new_expires_at, published_at, finished_at, planned_versions, "
                       "published_versions, error, fence, mint_started_at) VALUES "
                       "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", runs)
        db.executemany("INSERT INTO revocations (policy, token_id, run_id, reason, due_at, state, attempts, "
                       "next_try_at, last_error, done_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", revs)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return config


def status_once(config_path: Path) -> list[dict[str, Any]]:
    config = load_config(config_path)
    journal = open_journal(config.journal_url(), create=False, read_only=True)
    try:
        return [policy_status(p, journal, NOW).to_json() for p in config.policies]
    finally:
        journal.close()


def status_steps(config_path: Path) -> int:
    """The SQLite VM instructions of every policy's status row (the journal already open)."""
    config = load_config(config_path)
    journal = open_journal(config.journal_url(), create=False, read_only=True)
    steps = 0

    def step() -> int:
        nonlocal steps
        steps += 1
        return 0

    try:
        policy_status(config.policies[0], journal, NOW)  # the connection made, its statements prepared
        conn = journal._connection()
        conn.set_progress_handler(step, 1)
        for p in config.policies:
            policy_status(p, journal, NOW)
        conn.set_progress_handler(None, 0)
        return steps
    finally:
        journal.close()


def bounded_once(config_path: Path) -> list[tuple[Any, ...]]:
    config = load_config(config_path)
    journal: Any = open_journal(config.journal_url(), create=False, read_only=True)
    try:
        out = []
        for p in config.policies:
            last = journal.last_success(p.name)
            latest = journal.latest_run(p.name)
            counts = journal.revocation_counts(p.name)
            unfinished = journal.unfinished_revocations(p.name)
            open_runs = journal.open_runs(p.name)
            out.append((last.new_token_id if last else None, latest.state if latest else None, counts.get("pending", 0),
                        counts.get("failed", 0), len(unfinished), len(open_runs)))
        return out
    finally:
        journal.close()


def subprocess_once(config_path: Path) -> Any:
    command = [sys.executable, "-m", "rotator.runners.cli", "status", "-c", str(config_path), "--output", "json"]
    proc = subprocess.run(command,
                          capture_output=True, text=True, cwd=config_path.parent, env={"PYTHONPATH": str(REPO)})
    return json.loads(proc.stdout)


def measure(fn: Callable[[Path], Any], fresh: Path, history: Path, repeats: int) -> tuple[float, float, float]:
    fresh_ms, hist_ms = [], []
    fn(fresh), fn(history)  # warm-up: bytecode, page cache
    for _ in range(repeats):
        for config, out in ((fresh, fresh_ms), (history, hist_ms)):
            start = time.perf_counter()
            fn(config)
            out.append((time.perf_counter() - start) * 1000)
    ratios = [h / f for f, h in zip(fresh_ms, hist_ms, strict=True)]
    return statistics.median(fresh_ms), statistics.median(hist_ms), statistics.median(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("-r", "--repeats", type=int, default=5)
    parser.add_argument("--subprocess", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rotator-status-bench-") as tmp:
        fresh = fill(Path(tmp) / "fresh", 0)
        history = fill(Path(tmp) / "history", args.runs)
        assert status_once(fresh) and status_once(history)
        variants: list[tuple[str, Callable[[Path], Any]]] = [("status()", status_once)]
        if hasattr(Journal, "latest_run"):
            variants.append(("bounded", bounded_once))
        if args.subprocess:
            variants.append(("rotator status", subprocess_once))
        print(f"10 policies; fresh journal vs {args.runs:,} runs of history; medians of {args.repeats} interleaved "
              "repeats")
        print(f"{'variant':<16}{'fresh ms':>10}{'history ms':>12}{'ratio':>8}   goal <= 1.25x")
        for name, fn in variants:
            f, h, ratio = measure(fn, fresh, history, args.repeats)
            print(f"{name:<16}{f:>10.1f}{h:>12.1f}{ratio:>7.2f}x")
        f_steps, h_steps = status_steps(fresh), status_steps(history)
        print(f"{'VM steps':<16}{f_steps:>10,}{h_steps:>12,}{h_steps / f_steps:>7.2f}x   (status(), SQLite's count of "
              "its work)")


if __name__ == "__main__":
    main()
