"""The benchmarks still run and still measure what they say (they are not timed here: bench/ holds
the figures). A bench that fails at once measures nothing, and no other test runs them, so a change
of an interface they use (Engine.rotate's arguments, the journal's counters) went unnoticed once.

The batch also gives exact per-rotation journal counts under the daemon with concurrent workers:
5 commits (2 synced) and 7 transactions (plus the daemon's few passes), as a steady rotation
without a due revocation has them (tests/core/test_journal_commits.py) plus the daemon's one read
that refreshes its view of the policy (Journal.policy_state; it was 3 reads). As there, the lease
row a transaction read serves the side effects after it however loaded the machine is (one more
read each otherwise: Journal.confirm_lease).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest

from rotator.core import journal as journal_module

REPO = Path(__file__).resolve().parents[2]


def _bench(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("engine", ["real", "sleep"])
def test_the_batch_bench_runs_every_rotation_with_the_expected_journal_counts(
        tmp_path: Path, engine: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journal_module, "LEASE_READ_FRESH_SECONDS", 3600.0)
    daemon_scale = _bench("daemon_scale")
    result = daemon_scale.child_batch(12, tmp_path, 4, 5.0, engine)
    assert result["served"] == 12, result
    assert result["ideal_s"] == pytest.approx(3 * 0.005)
    assert result["wall_s"] >= result["ideal_s"]
    # Transactions also count the daemon's own passes (a read of the due policies, the sweep), a
    # few for the whole batch: per rotation they add less than one. The bench reads the counters
    # when the last rotation's event arrives, before that job's refresh read may have run.
    expected = (5.0, 2.0, 7) if engine == "real" else (1.0, 1.0, 2)  # the sleep job journals one run
    assert (result["commits"], result["synced"]) == expected[:2], result
    assert expected[2] - 1 / 12 <= result["tx"] < expected[2] + 1, result


def _rows(stdout: str) -> dict[str, str]:
    """rotation_io's table: each row's label and value."""
    return dict(line.rsplit(None, 1) for line in stdout.splitlines()
                if line.startswith(("journal ", "  of which synced", "log lines", "floor ")))


def test_the_steady_rotation_bench_counts_what_the_journal_test_asserts() -> None:
    """The counts of tests/core/test_journal_commits.py (the in-memory issuer answers inside the lease
    read's window: 7 transactions, 32 statements), and a floor that commits, syncs and logs as much as
    the counted rotation did: the engine logs at info (as the daemon does), not silenced."""
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "rotation_io.py"), "-n", "3", "-r", "1"],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _rows(proc.stdout)
    assert (rows["journal commits per rotation"], rows["  of which synced (fdatasync)"],
            rows["journal transactions per rotation"], rows["journal statements per rotation"]) == \
        ("5", "2", "7", "32"), proc.stdout
    assert int(rows["log lines per rotation (info)"]) >= 5, "the steps' audit lines at least: logging is on"
    assert (rows["floor commits per rotation"], rows["  of which synced"], rows["floor log lines per rotation"]) == \
        ("5", "2", rows["log lines per rotation (info)"]), proc.stdout
    assert "5 one-row commits (2 synced; WAL, synchronous=NORMAL" in proc.stdout, proc.stdout
    # Asked for: other numbers; and a floor that syncs more than it commits is refused.
    script = [sys.executable, str(REPO / "bench" / "rotation_io.py"), "-n", "2", "-r", "1"]
    asked = subprocess.run([*script, "--floor-commits", "3", "--floor-log-lines", "0"], capture_output=True, text=True,
                           timeout=300, cwd=REPO)
    assert asked.returncode == 0, asked.stderr[-3000:]
    rows = _rows(asked.stdout)
    assert (rows["floor commits per rotation"], rows["  of which synced"], rows["floor log lines per rotation"]) == \
        ("3", "2", "0"), asked.stdout
    refused = subprocess.run([*script, "--floor-commits", "1", "--floor-synced", "2"], capture_output=True, text=True,
                             timeout=300, cwd=REPO)
    assert refused.returncode != 0 and "--floor-synced <= --floor-commits" in refused.stderr, refused.stderr


def test_the_steady_rotation_floor_syncs_as_the_journal_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite: WAL with synchronous=NORMAL, and one fdatasync of the WAL file per synced commit
    (rotator/core/group_sync.py), not one per commit; the floor's log lines written one by one."""
    rotation_io = _bench("rotation_io")
    flushed: list[int] = []
    monkeypatch.setattr(rotation_io, "_datasync", lambda fd: flushed.append(os.fstat(fd).st_ino))
    setup = rotation_io.Setup(tmp_path / "floor", None)
    commits: list[tuple[int, bool]] = []
    log = rotation_io.Recorder()
    calls = Counter(read=1, list=2, verify=1, publish=1, revoke=1)
    rotation_io.floor_once(setup, calls, lambda i, synced: commits.append((i, synced)), 5, 2, ["a\n", "b\n"], log)
    assert commits == [(0, True), (1, True), (2, False), (3, False), (4, False)]
    assert log.writes == ["a\n", "b\n"]
    opened: list[sqlite3.Connection] = []
    connect = sqlite3.connect
    monkeypatch.setattr(rotation_io.sqlite3, "connect", lambda *a, **k: opened.append(connect(*a, **k)) or opened[-1])
    commit = rotation_io.sqlite_floor_committer(tmp_path / "floor.db")
    for i, synced in commits:
        commit(i, synced)
    assert flushed == [os.stat(tmp_path / "floor.db-wal").st_ino] * 2
    [conn] = opened
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1, "NORMAL: a commit alone syncs nothing"
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 5
    assert rotation_io.floor_lines(["x\n", "y\n"], 3) == ["x\n", "y\n", "x\n"]
    setup.journal.close()


@pytest.mark.skipif(shutil.which(os.environ.get("CC", "cc")) is None or not Path("/proc/self/maps").exists(),
                    reason="--fsync-delay-ms builds a C library and LD_PRELOADs it (Linux)")
def test_the_steady_rotation_bench_runs_on_a_slower_disk_with_the_same_counts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clean = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "SLOW_FSYNC_US", "ROTATOR_BENCH_REEXEC")}
    command = [sys.executable, str(REPO / "bench" / "rotation_io.py"), "-n", "2", "-r", "1"]
    proc = subprocess.run([*command, "--fsync-delay-ms", "20"], capture_output=True, text=True, timeout=300, cwd=REPO,
                          env=clean)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines()[0].endswith("every fsync +20 ms"), proc.stdout
    rows = _rows(proc.stdout)
    assert (rows["journal commits per rotation"], rows["  of which synced (fdatasync)"]) == ("5", "2"), proc.stdout
    assert rows["  of which synced"] == "2", proc.stdout
    # The delay really applies, to the floor's two synced commits (its three others sync nothing) and to
    # the store's fsyncs, counted here (a sleep never ends early): a floor without its WAL flushes is short.
    rotation_io = _bench("rotation_io")
    setup = rotation_io.Setup(tmp_path / "store", None)
    syncs: list[int] = []
    for name in ("fsync", "fdatasync"):
        real = getattr(os, name)
        monkeypatch.setattr(os, name, lambda fd, real=real: (syncs.append(fd), real(fd))[1])
    calls = Counter(read=1, list=2, verify=1, publish=1, revoke=1)
    rotation_io.floor_once(setup, calls, lambda i, synced: None, 0, 0, [], rotation_io.Recorder())
    monkeypatch.undo()
    setup.journal.close()
    assert syncs, "the profile store fsyncs what it writes"
    assert float(rows["floor ms per rotation (median)"]) >= (len(syncs) + 2) * 20, (len(syncs), proc.stdout)
    unloaded = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO,
                              env={**clean, "SLOW_FSYNC_US": "200"})  # asked for, but nothing preloaded
    assert unloaded.returncode != 0 and "is not loaded in this process" in unloaded.stderr, unloaded.stderr


def test_the_steady_rotation_bench_alternates_two_trees_and_checks_which_it_imported(tmp_path: Path) -> None:
    """The baseline is another tree (a copy of the rotator package: all a run imports from it), so a run
    that imported this tree's rotator instead of the baseline's is caught, not compared with itself."""
    baseline = tmp_path / "baseline-copy"
    shutil.copytree(REPO / "rotator", baseline / "rotator", ignore=shutil.ignore_patterns("__pycache__"))
    command = [sys.executable, str(REPO / "bench" / "rotation_io.py"), "-n", "2", "-r", "1", "--pairs", "1"]
    proc = subprocess.run([*command, "--baseline", str(baseline)], capture_output=True, text=True, timeout=300,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["this tree", "baseline baseline-copy"] * 2, proc.stdout
    assert lines[0].startswith("this tree: run 1: ") and lines[1].startswith("baseline baseline-copy: run 1: ")
    assert "median" in lines[-1] and "median" in lines[-2], proc.stdout
    empty = tmp_path / "no-checkout"
    empty.mkdir()
    refused = subprocess.run([*command, "--baseline", str(empty)], capture_output=True, text=True, timeout=60,
                             cwd=REPO)
    assert refused.returncode != 0 and "no rotator package there" in refused.stderr


def test_the_prune_bench_prunes_all_but_the_kept_events_and_times_a_concurrent_writer() -> None:
    prune_lock = _bench("prune_lock")
    result = prune_lock.once(prune_lock.KEPT + 2_000)  # asserts the pruned count and a verifiable chain
    assert result["writes"] >= 1 and result["longest_write_ms"] > 0 < result["idle_write_ms"], result


# callgrind runs ~50x slower than Python: ~20 s alone, past 120 s on a loaded 2-core machine (a .ci/run
# with other work going); the bound is the count's own subprocess timeout, not pytest's default
@pytest.mark.timeout(720)
def test_the_instruction_bench_rotates_in_its_child_and_counts_under_callgrind(tmp_path: Path) -> None:
    """Its child (what callgrind runs) rotates with the in-memory store and counts nothing itself; the
    count needs valgrind, which takes ~20 s for a few rotations: run once, short, where it is there."""
    script = str(REPO / "bench" / "engine_instructions.py")
    child = subprocess.run([sys.executable, script, "--child", "3", "--dir", str(tmp_path)], capture_output=True,
                           text=True, timeout=120, cwd=REPO)
    assert child.returncode == 0, child.stderr[-3000:]
    lines = int(child.stdout.split("log lines per rotation (info):")[1].split()[0])
    assert lines >= 5, "the engine logs at info, as the daemon does: its audit lines are built and formatted"
    refused = subprocess.run([sys.executable, script, "--short", "5", "--long", "5"], capture_output=True, text=True,
                             timeout=60, cwd=REPO)
    assert refused.returncode != 0 and ("short < long" in refused.stderr or "valgrind" in refused.stderr)
    if shutil.which("valgrind") is None:
        pytest.skip("valgrind is not installed: the count itself is not run (Debian: apt-get install valgrind)")
    proc = subprocess.run([sys.executable, script, "--short", "0", "--long", "2", "--dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    count = int(proc.stdout.split("this tree")[1].split()[0].replace(",", ""))
    assert 100_000 < count < 100_000_000, proc.stdout  # ~3.6M on the development machine kind


def test_the_start_up_bench_fills_a_journal_of_the_current_schema_that_status_reads(tmp_path: Path) -> None:
    """bench/cli_startup.py writes its 'history' journal's rows with SQL of its own: a schema change
    broke it once, unseen (the bench is not run by the suite)."""
    cli_startup = _bench("cli_startup")
    command, env = cli_startup._setup(tmp_path, 100)["history"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert all(f"mgmt-{p}" in done.stdout for p in range(cli_startup.POLICIES)), done.stdout
