"""Cold start of the Lambda handler path against a bare ``import boto3``, measured in one run.

Every figure comes from fresh interpreter processes (median of N, the variants interleaved so
that machine load hits all alike). In each process the bare ``import boto3`` is timed first,
then what the handler adds, so every process gives its own ratio ``(boto3 + added) / boto3``:
both parts share that process's share of the machine, which makes the ratio steadier than
figures of separate processes on a shared machine. The variants:

- imports:   what the handler imports: ``rotator.runners.aws_lambda`` (what the Lambda runtime imports
             at init), ``rotator.runners.lambda_rotation`` and the issuer adapter a policy names
             (``influxctl-management``) with everything they import;
- handler:   the first invocation's work before it calls AWS: those imports, then reading the
             policy bundle (``rotator.bundle.json``, see rotator/config/policy_bundle.py) and building
             the policy's issuer;
- no-bundle: the same with the policy file alone (the fallback, validated with pydantic).

The goal (issue 3) is <= 1.10x for the handler. Bytecode is used on both sides (pip compiled
boto3; a zip built with ``--compile`` carries rotator's; a warm-up run writes it for the repo).
Not a test: it prints figures and exits 0.

    .venv/bin/python bench/lambda_cold_import.py [-n 15]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = Path(tempfile.mkdtemp(prefix="rotator-bench-"))
POLICY = """
[[policy]]
name = "bench"
schedule = "30d"
[policy.issuer]
type = "influxctl-management"
[policy.issuer.profile]
product = "clustered"
host = "cluster.example.com"
[[policy.store]]
type = "aws-secretsmanager"
secret_id = "influx/management-token"
region = "eu-west-1"
"""
_IMPORTS = (
    "import rotator.runners.aws_lambda\nimport rotator.runners.lambda_rotation\n"
    "import rotator.adapters.influxctl.management\n"
)
_FIRST_INVOCATION = (
    "import rotator.runners.aws_lambda\n"
    "from pathlib import Path\n"
    "from rotator.runners import lambda_rotation as aws_lambda_rotation\n"
    "from rotator.config import registry\n"
    "registry.build_issuer(aws_lambda_rotation._load_config(Path({path!r})).policy('bench'))\n"
)
VARIANTS = {
    "imports": _IMPORTS,
    "handler": _FIRST_INVOCATION.format(path=str(WORK / "bundled" / "rotator.toml")),
    "no-bundle": _FIRST_INVOCATION.format(path=str(WORK / "plain" / "rotator.toml")),
}
PROBE = """\
import time
_t0 = time.perf_counter()
import boto3
_t1 = time.perf_counter()
{code}
_t2 = time.perf_counter()
print((_t1 - _t0) * 1000, (_t2 - _t1) * 1000)
"""
GOAL = 1.10


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return {**env, "PYTHONPATH": str(REPO)}


def _run(code: str) -> tuple[float, float]:
    """(ms of import boto3, ms of what ``code`` adds) in one fresh process."""
    proc = subprocess.run([sys.executable, "-c", PROBE.format(code=code)], capture_output=True, text=True,
                          env=_env(), cwd=REPO, check=True)  # fmt: skip
    boto3_ms, added_ms = proc.stdout.split()[-2:]
    return float(boto3_ms), float(added_ms)


def _added_modules() -> list[tuple[str, float]]:
    """What the handler imports beyond boto3, by self time under -X importtime (one run, for
    orientation: importtime's own overhead inflates small modules)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", PROBE.format(code=VARIANTS["handler"])],
                          capture_output=True, text=True, env=_env(), cwd=REPO, check=True)  # fmt: skip
    rows, after_boto3 = [], False
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, _, name = line.removeprefix("import time:").split("|", 2)
        if after_boto3:
            rows.append((name.strip(), int(self_us) / 1000))
        after_boto3 = after_boto3 or name.strip() == "boto3"
    return sorted(rows, key=lambda row: -row[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=15, help="fresh processes per variant (>= 5)")
    args = parser.parse_args()
    runs = max(5, args.n)
    from rotator.config.policy_bundle import write_bundle

    for name in ("bundled", "plain"):
        (WORK / name).mkdir()
        (WORK / name / "rotator.toml").write_text(POLICY)
    write_bundle(WORK / "bundled" / "rotator.toml")
    for code in VARIANTS.values():
        _run(code)  # warm-up: writes the bytecode
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in VARIANTS}
    for i in range(runs):
        order = list(VARIANTS)[i % len(VARIANTS):] + list(VARIANTS)[: i % len(VARIANTS)]
        for name in order:
            results[name].append(_run(VARIANTS[name]))

    print(f"Lambda cold start, {runs} fresh processes per variant (python {sys.version.split()[0]})")
    print(f"{'':11}{'import boto3':>14}{'added':>10}{'ratio':>8}{'ratio min-max':>16}")
    for name, rows in results.items():
        ratios = sorted((b + a) / b for b, a in rows)
        ratio = statistics.median(ratios)
        verdict = "" if name == "no-bundle" else ("  meets" if ratio <= GOAL else "  misses") + f" <= {GOAL:.2f}x"
        boto3_ms, added_ms = statistics.median(b for b, _ in rows), statistics.median(a for _, a in rows)
        print(f"{name:11}{boto3_ms:11.1f} ms{added_ms:7.1f} ms{ratio:7.3f}x{ratios[0]:8.3f}-{ratios[-1]:.3f}{verdict}")
    print("added by the handler, self time under -X importtime (one run):")
    for module, ms in _added_modules()[:12]:
        print(f"  {module:40}{ms:6.2f} ms")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
