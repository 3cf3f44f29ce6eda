"""CPU instructions per steady rotation of the engine alone, counted by valgrind's callgrind.

Wall-time ratios on this machine kind drift by several percent from run to run, more than a small
change of the engine's CPU (a tenth of the engine's CPU moves bench/rotation_io.py's ratio by ~2%).
An instruction count repeats to ~0.05% for the same tree, so it tells whether a change cut CPU.

What runs: bench/rotation_io.py's steady rotation (the same policy, issuer and clock) with the
store replaced by an in-memory one and the journal in a temporary directory (``--dir``, default
/dev/shm where it exists), so that what is counted is rotator's engine and journal: its Python,
SQLite, JSON and hashing, and building and formatting its log lines: rotator's logging is set up
as the daemon and the command line set it up by default (info, text lines; rotation_io's
``log_as_the_daemon_does``), writing to os.devnull. System calls are not instructions of the
process; their cost (the WAL's ``pwrite``s and ``fdatasync``s on a real disk, the log lines'
writes) is rotation_io's business.

Each count is the difference between a run of ``--long`` and one of ``--short`` rotations (both
after the same set-up and warm-up), divided by their difference: start-up cancels out.

    .venv/bin/python bench/engine_instructions.py [--short 100] [--long 400] [--baseline CHECKOUT]

``--baseline CHECKOUT``: count the rotator package of another checkout too (a ``git worktree`` of
an older commit), and print the change.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve()


def child(rotations: int, directory: str) -> None:
    """Set up, warm up, then rotate ``rotations`` times (run under callgrind by the parent)."""
    sys.path.insert(0, str(HERE.parent))
    import rotation_io  # bench/rotation_io.py: puts ROTATOR_BENCH_TREE (or this checkout) first on sys.path

    from rotator.core.contracts import StoreState, TokenRecord

    class MemoryStore:
        location = "memory"

        def __init__(self) -> None:
            self.record: TokenRecord | None = None
            self.version = 0

        def read_current(self) -> StoreState:
            return StoreState(str(self.version) if self.record else None, True, self.record)

        def publish(self, record: TokenRecord, expected_version: str | None) -> str:
            self.version += 1
            self.record = record
            return str(self.version)

    rotation_io.CountingStore = lambda _store: MemoryStore()  # type: ignore[assignment,misc,unused-ignore]
    handler = rotation_io.log_as_the_daemon_does()
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        setup = rotation_io.Setup(Path(tmp) / "engine", None)
        for _ in range(50):
            setup.rotate()
        with rotation_io.recording(handler) as lines:  # (one more rotation in both runs: it cancels out)
            setup.rotate()
        print(f"log lines per rotation (info): {len(lines)}")
        for _ in range(rotations):
            setup.rotate()


def count(tree: Path, rotations: int, directory: str) -> int:
    with tempfile.TemporaryDirectory() as out:
        proc = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/callgrind.out", sys.executable,
             str(HERE), "--child", str(rotations), "--dir", directory],
            capture_output=True, text=True, env={**os.environ, "ROTATOR_BENCH_TREE": str(tree)}, timeout=1800,
        )
    found = re.search(r"Collected : (\d+)", proc.stderr)
    if proc.returncode != 0 or found is None:
        raise SystemExit(f"callgrind run for {tree} failed:\n{proc.stderr[-3000:]}")
    return int(found.group(1))


def per_rotation(tree: Path, short: int, long: int, directory: str) -> float:
    return (count(tree, long, directory) - count(tree, short, directory)) / (long - short)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", type=int, default=100, help="rotations of the shorter run (default 100)")
    parser.add_argument("--long", type=int, default=400, help="rotations of the longer run (default 400)")
    parser.add_argument("--dir", default="/dev/shm" if Path("/dev/shm").is_dir() else None,
                        help="where the journal goes (default /dev/shm)")
    parser.add_argument("--baseline", metavar="CHECKOUT", help="count another checkout's rotator package too")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    directory = args.dir or tempfile.gettempdir()
    if args.child is not None:
        child(args.child, directory)
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    if not 0 <= args.short < args.long:
        raise SystemExit(f"--short {args.short} --long {args.long}: give 0 <= short < long")
    trees = [("this tree", HERE.parents[1])]
    if args.baseline:
        baseline = Path(args.baseline).resolve()
        if not (baseline / "rotator" / "__init__.py").is_file():
            raise SystemExit(f"--baseline {baseline}: no rotator package there (give a checkout's root directory)")
        trees.append((f"baseline {baseline.name}", baseline))
    counts = {label: per_rotation(tree, args.short, args.long, directory) for label, tree in trees}
    print(f"engine instructions per steady rotation (callgrind; runs of {args.long} and {args.short} rotations, "
          f"journal in {directory})")
    for label, value in counts.items():
        print(f"  {label:<24}{value:>14,.0f}")
    if args.baseline:
        mine, theirs = counts["this tree"], counts[trees[1][0]]
        print(f"  change                  {100 * (mine - theirs) / theirs:>+13.1f}%")


if __name__ == "__main__":
    main()
