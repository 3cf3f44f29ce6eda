"""Cold import of the Lambda handler path against a bare ``import boto3``, measured in one run.

Each figure is the median over N fresh interpreter processes, the statements interleaved so
that machine load hits both alike. Two measures per statement:

- importtime: ``python -X importtime -c <statement>``, the summed cumulative time of the
  top-level imports the statement triggers (interpreter start-up imports excluded);
- wall: ``time.perf_counter()`` around the statement in a process without ``-X importtime``.

The statements:

- boto3:   ``import boto3``
- entry:   ``import rotator.aws_lambda`` (what the Lambda runtime imports at init)
- handler: the entry module plus everything the first invocation imports before it calls AWS:
           ``adapters.aws_lambda_rotation``, boto3 (its client), and the two adapters a policy
           names (loaded through the entry-point registry, as ``load_config`` does)

The goal (issue 3) is handler <= 1.10 x boto3. Not a test: it prints figures and exits 0.

    .venv/bin/python bench/lambda_cold_import.py [-n 9]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STATEMENTS = {
    "boto3": "import boto3",
    "entry": "import rotator.aws_lambda",
    "handler": (
        "import rotator.aws_lambda\n"
        "import adapters.aws_lambda_rotation\n"
        "import boto3.session, botocore.config\n"
        "from rotator import registry\n"
        "registry.load('issuer', 'influxctl-management')\n"
        "registry.load('store', 'aws-secretsmanager')\n"
    ),
}
GOAL = 1.10


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def _importtime(code: str) -> list[tuple[int, int, str]]:
    """(self us, cumulative us, name with its indentation) for every import of one process."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True,
                          env=_env(), cwd=REPO, check=True)  # fmt: skip
    rows = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cumulative_us, name = line.removeprefix("import time:").split("|", 2)
        rows.append((int(self_us), int(cumulative_us), name.rstrip()))
    return rows


def _top_level(rows: list[tuple[int, int, str]]) -> dict[str, int]:
    return {name.strip(): cum for _, cum, name in rows if not name.startswith("  ")}


def _import_ms(code: str, startup: set[str]) -> float:
    top = _top_level(_importtime(code))
    return sum(cum for name, cum in top.items() if name not in startup) / 1000


def _wall_ms(code: str) -> float:
    probe = f"import time\n_t = time.perf_counter()\n{code}\nprint((time.perf_counter() - _t) * 1000)\n"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=_env(), cwd=REPO,
                          check=True)  # fmt: skip
    return float(proc.stdout.strip().splitlines()[-1])


def _extra_modules(limit: int = 12) -> list[tuple[str, float]]:
    """What the handler path imports beyond boto3, by self time (one run, for orientation)."""
    bare = {name.strip() for _, _, name in _importtime(STATEMENTS["boto3"])}
    extra: dict[str, float] = {}
    for self_us, _, name in _importtime(STATEMENTS["handler"]):
        module = name.strip()
        if module not in bare:
            root = module.split(".")[0]
            extra[root] = extra.get(root, 0.0) + self_us / 1000
    return sorted(extra.items(), key=lambda item: -item[1])[:limit]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=9, help="fresh processes per statement (>= 5)")
    args = parser.parse_args()
    runs = max(5, args.n)
    startup = set(_top_level(_importtime("pass")))
    imports: dict[str, list[float]] = {name: [] for name in STATEMENTS}
    walls: dict[str, list[float]] = {name: [] for name in STATEMENTS}
    for i in range(runs):
        order = list(STATEMENTS)[i % len(STATEMENTS):] + list(STATEMENTS)[: i % len(STATEMENTS)]
        for name in order:
            imports[name].append(_import_ms(STATEMENTS[name], startup))
            walls[name].append(_wall_ms(STATEMENTS[name]))

    print(f"Lambda cold import, median of {runs} fresh processes each (python {sys.version.split()[0]})")
    print(f"{'':10}{'importtime':>14}{'wall':>12}")
    for name in STATEMENTS:
        print(f"{name:10}{statistics.median(imports[name]):11.1f} ms{statistics.median(walls[name]):9.1f} ms")
    for label, series in (("importtime", imports), ("wall", walls)):
        ratio = statistics.median(series["handler"]) / statistics.median(series["boto3"])
        verdict = "meets" if ratio <= GOAL else "misses"
        print(f"ratio handler / boto3 ({label}): {ratio:.2f}x ({verdict} the goal of <= {GOAL:.2f}x)")
    print("beyond boto3, the handler path spends (self time, one run, by top-level package):")
    for root, ms in _extra_modules():
        print(f"  {root:32}{ms:7.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
