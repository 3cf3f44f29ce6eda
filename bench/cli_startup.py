"""Start-up of the `rotator` command line against `python -c pass`, and `rotator status` on a long history.

Every figure is the wall time of a fresh process (the venv's ``rotator`` console script, as a
user runs it), the median of N, with all variants interleaved round by round so that machine
load hits them alike; each ratio divides two medians of the same run:

- help:     ``rotator --help`` / ``python -c pass`` (the floor: the same interpreter and site)
- status:   ``rotator -c FILE status`` with 10 policies (Vault stores, influxctl issuers) and a
            fresh journal / ``python -c pass``; the policy file's summary is cached (the warm-up
            round wrote it: rotator/config/policy_summary.py), as for every status but the first
            after an edit of the file
- uncached: the same status with the cache off (``ROTATOR_CACHE_DIR=""``): a full validation of
            the policy file, what the first status after an edit pays (informational, no goal)
- history:  the same ``rotator status`` on a journal holding 100,000 finished runs (10,000 per
            policy, each with its done revocation, written by direct SQL inserts) / the fresh journal

Goals (issue 12): help <= 3x, status <= 4x, history <= 1.25x. Not a test: it prints figures and exits 0.
The cache lives in a directory of the run (``ROTATOR_CACHE_DIR``), removed at the end.

    .venv/bin/python bench/cli_startup.py [-n 7] [--runs 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
POLICIES = 10
POLICY = """
[[policy]]
name = "mgmt-{i}"
schedule = "30d"
grace = "1h"
[policy.issuer]
type = "influxctl-management"
[policy.issuer.profile]
product = "clustered"
host = "cluster-{i}.example.com"
[[policy.store]]
type = "vault-kv2"
url = "https://vault.example.com:8200"
path = "influx/mgmt-{i}"
[policy.store.auth]
method = "token"
token = {{ file = "vault-token" }}
"""
GOALS = {"help": 3.0, "status": 4.0, "uncached": None, "history": 1.25}
#: the environment variable of the cache's directory (rotator/config/policy_summary.py: CACHE_ENV)
CACHE_ENV = "ROTATOR_CACHE_DIR"


def _ts(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _setup(work: Path, runs: int) -> dict[str, tuple[list[str], dict[str, str]]]:
    """Two policy files (fresh journal, long history) and the command and environment of each variant."""
    sys.path.insert(0, str(REPO))
    from rotator.core.journal import open_journal

    body = "".join(POLICY.format(i=i) for i in range(POLICIES))
    for name in ("fresh", "history"):
        folder = work / name
        folder.mkdir()
        (folder / "vault-token").write_text("s.bench\n")
        (folder / "rotator.toml").write_text(f'[rotator]\njournal = "journal.db"\n{body}')
        open_journal(f"sqlite:///{(folder / 'journal.db').resolve()}").close()
    _fill(work / "history" / "journal.db", runs)
    rotator = str(BIN / "rotator")
    cached, off = _env(str(work / "cache")), _env("")
    status = [rotator, "-c", str(work / "fresh" / "rotator.toml"), "status"]
    return {
        "floor": ([sys.executable, "-c", "pass"], cached),
        "help": ([rotator, "--help"], cached),
        "fresh": (status, cached),
        "uncached": (status, off),
        "history": ([rotator, "-c", str(work / "history" / "rotator.toml"), "status"], cached),
    }


#: the columns _fill writes (named: a later schema's columns keep their defaults)
RUN_COLUMNS = ("run_id", "policy", "kind", "state", "started_at", "updated_at", "old_token_id", "new_token_id",
               "new_expires_at", "published_at", "finished_at", "planned_versions", "published_versions", "error",
               "fence", "mint_started_at")


def _fill(path: Path, runs: int) -> None:
    """``runs`` finished rotations spread over the policies, the newest 30 minutes ago, each with its
    done revocation of the token it replaced; the last one's revocation is still pending."""
    now = datetime.now(UTC)
    per_policy = runs // POLICIES
    step = timedelta(hours=1)
    run_rows, rev_rows = [], []
    for p in range(POLICIES):
        policy = f"mgmt-{p}"
        for k in range(per_policy):
            started = now - timedelta(minutes=30) - step * (per_policy - 1 - k)
            published = started + timedelta(seconds=20)
            old, new = f"tok-{p}-{k - 1}" if k else None, f"tok-{p}-{k}"
            run_rows.append((f"run-{p}-{k}", policy, "rotate", "done", _ts(started), _ts(published), old, new,
                             _ts(started + timedelta(days=31)), _ts(published), _ts(published + step),
                             "{}", json.dumps({"primary": str(k + 1)}), None, 1, _ts(started)))
            if old is not None:
                last = k == per_policy - 1
                rev_rows.append((policy, old, f"run-{p}-{k}", "superseded", _ts(published + step),
                                 "pending" if last else "done", 0 if last else 1, None, None,
                                 None if last else _ts(published + step)))
    conn = sqlite3.connect(path)
    with conn:
        conn.executemany(f"INSERT INTO runs ({', '.join(RUN_COLUMNS)}) VALUES ({', '.join('?' * len(RUN_COLUMNS))})",
                         run_rows)
        conn.executemany(f"INSERT INTO revocations VALUES ({', '.join('?' * 10)})", rev_rows)
    conn.close()


def _time(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)}: exit {done.returncode}: {done.stderr.decode()[-500:]}")
    return elapsed * 1000


def _env(cache: str) -> dict[str, str]:
    """The environment of a variant: the policy file's summary cached in ``cache`` ("": no cache)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "ROTATOR_CONFIG")}
    return {**env, CACHE_ENV: cache}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=7, help="processes per variant (default 7)")
    parser.add_argument("--runs", type=int, default=100_000, help="runs of history (default 100000)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rotator-bench-cli-"))
    try:
        commands = _setup(work, args.runs)
        for command, env in commands.values():  # warm-up: bytecode written, files in the page cache, cache
            _time(command, env)
        cached = sorted(p.name for p in (work / "cache").glob("status-*.json"))
        if len(cached) != 2:  # one summary per policy file: the status variants below read it
            raise SystemExit(f"expected the summaries of 2 policy files in {work / 'cache'}, found {cached}")
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.n):
            for name, (command, env) in commands.items():
                times[name].append(_time(command, env))
        med = {name: statistics.median(values) for name, values in times.items()}
        ratios = {"help": med["help"] / med["floor"], "status": med["fresh"] / med["floor"],
                  "uncached": med["uncached"] / med["floor"], "history": med["history"] / med["fresh"]}
        print(f"medians of {args.n} interleaved processes (ms): "
              + ", ".join(f"{name} {value:.1f}" for name, value in med.items()))
        for name, ratio in ratios.items():
            goal = GOALS[name]
            verdict = "(no goal: the first status after an edit)" if goal is None else (
                f"{'meets' if ratio <= goal else 'misses'} <= {goal}x")
            print(f"{name:8} {ratio:6.2f}x   {verdict}")
        print(json.dumps({"medians_ms": {k: round(v, 1) for k, v in med.items()},
                          "ratios": {k: round(v, 3) for k, v in ratios.items()}}))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
