"""A cron tick (`rotate --all --if-due`, then `revoke-expired`) beside a live `rotator rotate NAME`.

Real processes against OpenBao and the fake influxctl. The live run waits in VERIFY (the fake's new
tokens are refused for a while) and renews its lease meanwhile: its open run is in progress, not
interrupted, so the tick has nothing to recover and is not busy (a non-zero exit marks a systemd
timer's service failed). Once that run is killed, the tick recovers it as before: at once when its
holder was a process of this host, after its lease expired otherwise (docs/operations.md, "Running
from cron or a systemd timer").
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rotator.core.due import decide
from rotator.core.journal import RunState
from tests.harness import Scenario, check_invariants, make_scenario, offline_policy

#: how long the fake refuses a new token: the live run stays in VERIFY (verify_timeout is 20 s)
ACTIVATION_DELAY_S = 15.0
LEASE_TTL_S = 10


def _scenario(tmp_path: Path, openbao: Any, fake_influxctl: Any) -> Scenario:
    # a long grace: the first rotation's revocation of the bootstrap token is not due during the test
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=3600)
    sc.config.write_text(sc.config.read_text().replace('lease_ttl = "30s"', f'lease_ttl = "{LEASE_TTL_S}s"'))
    # rotated once: the policy is not due (schedule 1h), the tick's rotation has nothing to do
    proc = sc.cli("rotate", sc.policy)
    assert proc.returncode == 0, proc.stderr
    sc.fake.set(activation_delay_s=ACTIVATION_DELAY_S)
    return sc


def _start_live_run(sc: Scenario, instance: str | None = None) -> tuple[subprocess.Popen[str], str]:
    """`rotator rotate NAME` started and waiting in VERIFY: the process and its candidate's id."""
    env = sc.env()
    if instance is not None:
        env["ROTATOR_INSTANCE"] = instance
    proc = subprocess.Popen(sc.argv("rotate", sc.policy), env=env, cwd=sc.dir, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 30
    while not (minted := sc.journal_rows("SELECT new_token_id FROM runs WHERE state = 'minted'")):
        assert proc.poll() is None, f"the live run ended before VERIFY: {proc.communicate()}"
        assert time.monotonic() < deadline, "the live run never reached VERIFY"
        time.sleep(0.05)
    return proc, minted[0][0]


def _kill(sc: Scenario, proc: subprocess.Popen[str]) -> None:
    os.killpg(proc.pid, signal.SIGKILL)  # rotator and its influxctl children, as a node crash would
    out, err = proc.communicate(timeout=10)
    sc.outputs += [out, err]


def _open_runs(sc: Scenario) -> list[tuple[Any, ...]]:
    """The unfinished runs (Journal.open_runs; the first rotation's waits as published for its revocation)."""
    states = ", ".join(f"'{state}'" for state in RunState.OPEN)
    return sc.journal_rows(f"SELECT run_id, state FROM runs WHERE state IN ({states})")


def _lease_expires_at(sc: Scenario) -> datetime:
    (expires,) = sc.journal_rows("SELECT expires_at FROM leases WHERE policy = ?", sc.policy)[0]
    return datetime.fromisoformat(expires.replace("Z", "+00:00"))


def _tick_recovers(sc: Scenario, candidate: str) -> None:
    """The next tick recovers the killed run: its candidate revoked, nothing left open, exit 0."""
    tick = sc.cli("rotate", "--all", "--if-due")
    assert tick.returncode == 0, tick.stderr
    assert tick.stdout.startswith(f"{sc.policy}: nothing-to-do - not due; "), tick.stdout
    assert candidate in tick.stdout, tick.stdout
    assert not _open_runs(sc)
    token = sc.fake.token_by_id(candidate)
    assert token is not None and token["revoked_at"] is not None, "the killed run's candidate is revoked"
    check_invariants(sc)


def test_a_cron_tick_beside_a_live_run_is_not_busy_and_recovers_it_once_killed(
        tmp_path: Path, openbao: Any, fake_influxctl: Any) -> None:
    sc = _scenario(tmp_path, openbao, fake_influxctl)
    live, candidate = _start_live_run(sc, instance="another-host")

    tick = sc.cli("rotate", "--all", "--if-due")
    assert (tick.returncode, tick.stdout.strip()) == (0, f"{sc.policy}: nothing-to-do - not due"), \
        (tick.stdout, tick.stderr)
    assert "being rotated by" not in tick.stderr, tick.stderr
    revoke = sc.cli("revoke-expired")
    assert revoke.returncode == 0, (revoke.stdout, revoke.stderr)
    assert "being rotated by" not in revoke.stderr, revoke.stderr
    # What a person asks meanwhile says the run is in progress, not that it will be recovered
    plan = sc.cli("plan")
    assert plan.returncode == 0 and "will be recovered first" not in plan.stdout, plan.stdout
    assert "1 unfinished run(s): in progress (its process holds the lease)" in plan.stdout, plan.stdout
    dry = sc.cli("rotate", sc.policy, "--dry-run")
    assert "would first recover" not in dry.stdout and "a run of this policy is in progress" in dry.stdout, \
        (dry.stdout, dry.stderr)
    # (the ticks ran beside the live run: still in VERIFY, its run open, its lease its own)
    assert live.poll() is None and _open_runs(sc), "the live run ended before the ticks did"
    assert _lease_expires_at(sc) > datetime.now(UTC)

    # Killed on "another host": its lease is waited out, then the tick recovers the run.
    _kill(sc, live)
    time.sleep(max(0.0, (_lease_expires_at(sc) - datetime.now(UTC)).total_seconds()) + 0.5)
    _tick_recovers(sc, candidate)


def test_a_cron_tick_recovers_a_run_killed_on_this_host_at_once(tmp_path: Path, openbao: Any,
                                                                fake_influxctl: Any) -> None:
    """Its holder was a process of this host that is gone: no need to wait for its lease."""
    sc = _scenario(tmp_path, openbao, fake_influxctl)
    live, candidate = _start_live_run(sc)
    _kill(sc, live)
    assert _lease_expires_at(sc) > datetime.now(UTC), "the lease is still live"
    _tick_recovers(sc, candidate)


def test_the_due_decision_recovers_first_only_an_interrupted_run(tmp_path: Path) -> None:
    policy, now = offline_policy(tmp_path, "p1"), datetime(2026, 6, 1, tzinfo=UTC)
    rotated = now - timedelta(minutes=1)
    assert decide(policy, rotated, now, open_runs=1).recover_first, "interrupted: recovered first"
    in_progress = decide(policy, rotated, now, open_runs=1, in_progress=True)
    assert not in_progress.due and not in_progress.recover_first, "in progress: its holder's"
