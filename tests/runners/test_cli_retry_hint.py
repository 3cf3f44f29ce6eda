"""What a one-shot command tells about a failure the daemon would retry (rotator/runners/cli_options.py `once_hint`).

Found: with Vault down, `rotator rotate` printed the store's hint "fix: rotator retries; check that Vault
is up...": true of the daemon, which tries again, not of the command, which had already retried and
exited 1. Now the command's fix line says to run the same command again once the cause is fixed, and
keeps the rest of the adapter's hint.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from rotator.sandbox.influxctl_state import write_profile
from tests.harness import Scenario


def test_a_store_that_cannot_be_reached_says_to_run_the_command_again(tmp_path: Path, fake_influxctl: Any) -> None:
    fake_influxctl.state.init()
    (tmp_path / "vault-token").write_text("hvs.XXXXXXXXXXXXXXXXXXXXXXXX")
    (tmp_path / "vault-token").chmod(0o600)
    sc = Scenario(dir=tmp_path, vault_url="http://127.0.0.1:1", vault_token="", fake=fake_influxctl.state,
                  kv_path="influx/down")  # (port 1: nothing listens there)
    sc.write_policy(attempts=2)
    proc = sc.cli("rotate", sc.policy)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    fixes = [line for line in proc.stderr.splitlines() if line.startswith("fix: ")]
    assert fixes == ["fix: check that Vault is up, unsealed and reachable from here; once the cause is fixed, run "
                     "the same command again (it retried already, and gave up)"], proc.stderr
    assert "rotator retries" not in proc.stderr


def test_rotator_sync_says_it_too(tmp_path: Path, fake_influxctl: Any) -> None:
    """`rotator sync` prints its errors itself (rotator/runners/sync.py): the same rewrite."""
    fake_influxctl.state.init()
    (tmp_path / "vault-token").write_text("hvs.XXXXXXXXXXXXXXXXXXXXXXXX")
    (tmp_path / "vault-token").chmod(0o600)
    sc = Scenario(dir=tmp_path, vault_url="http://127.0.0.1:1", vault_token="", fake=fake_influxctl.state,
                  kv_path="influx/down")
    sc.write_policy(attempts=2)
    profile = write_profile(tmp_path / "influxctl.toml", host="cluster.test.invalid")
    argv = [sys.executable, "-m", "rotator.runners.cli", "sync", "--from", f"{sc.config}:{sc.policy}", "--config",
            str(profile)]  # (sync takes no -c, which sc.cli adds)
    proc = subprocess.run(argv, capture_output=True, text=True, env=sc.env(), timeout=90, cwd=tmp_path, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    fixes = [line for line in proc.stderr.splitlines() if line.startswith("fix: ")]
    assert fixes and all("rotator retries" not in line for line in fixes), proc.stderr
    assert fixes[-1].endswith("run the same command again (it retried already, and gave up)"), proc.stderr


def test_each_shape_of_a_retry_hint_is_rewritten_and_others_are_kept() -> None:
    from rotator.runners.cli_options import once_hint as _once_hint

    again = "run the same command again (it retried already, and gave up)"
    assert _once_hint("rotator retries on the next run; check the issuer is reachable") == \
        f"check the issuer is reachable; once the cause is fixed, {again}"
    # influxctl's: the retry clause last
    assert _once_hint("the cluster did not answer: check the network; rotator retries this call and a later run "
                      "retries the rotation") == f"the cluster did not answer: check the network; once the cause is " \
                                                 f"fixed, {again}"
    assert _once_hint("rotator retries") == f"fix the cause, then {again}"
    kept = "a new token may take a moment to be accepted; rotator retries until verify_timeout"
    assert _once_hint("check the path; see docs") == "check the path; see docs"
    assert _once_hint("") == ""
    assert "rotator retries" not in _once_hint(kept) and _once_hint(kept).startswith("a new token may take")
