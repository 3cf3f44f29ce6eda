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
import subprocess
import sys
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


def test_the_steady_rotation_bench_counts_what_the_journal_test_asserts() -> None:
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "rotation_io.py"), "-n", "3", "-r", "1"],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = dict(line.rsplit(None, 1) for line in proc.stdout.splitlines()
                if line.startswith(("journal commits per rotation", "  of which synced")))
    assert rows == {"journal commits per rotation": "5", "  of which synced (fdatasync)": "2"}, proc.stdout


@pytest.mark.skipif(shutil.which(os.environ.get("CC", "cc")) is None or not Path("/proc/self/maps").exists(),
                    reason="--fsync-delay-ms builds a C library and LD_PRELOADs it (Linux)")
def test_the_steady_rotation_bench_runs_on_a_slower_disk_with_the_same_counts() -> None:
    clean = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "SLOW_FSYNC_US", "ROTATOR_BENCH_REEXEC")}
    command = [sys.executable, str(REPO / "bench" / "rotation_io.py"), "-n", "2", "-r", "1"]
    proc = subprocess.run([*command, "--fsync-delay-ms", "20"], capture_output=True, text=True, timeout=300, cwd=REPO,
                          env=clean)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines()[0].endswith("every fsync +20 ms"), proc.stdout
    rows = dict(line.rsplit(None, 1) for line in proc.stdout.splitlines()
                if line.startswith(("journal commits per rotation", "  of which synced", "floor ms per rotation")))
    assert (rows["journal commits per rotation"], rows["  of which synced (fdatasync)"]) == ("5", "2"), proc.stdout
    # The delay really applies: the floor's five synced commits alone take 5 x 20 ms (a sleep never ends early).
    assert float(rows["floor ms per rotation (median)"]) >= 100, proc.stdout
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
