"""Outages: Vault (OpenBao) and PostgreSQL behind a fault proxy (tests/faultproxy.py).

- The CLI matrix: each fault (down, reset, blackhole, HTTP 503/429, 3 s latency) at PLAN, PUBLISH
  and REVOKE makes `rotator` exit 1 within a bound with a "fix:" line; the invariants hold; once
  the fault is gone, `recover` + `rotate` leave everything clean.
- Under the daemon: no hot loop while Vault or the journal is away, /readyz says so, and it
  carries on afterwards.
- Vault token renewal that survives a failed first lookup (issue 15.3).

Policies use short timeouts (Vault timeout_s = 2, two attempts 1 s apart) to keep this quick.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import hvac
import pytest

from tests.e2e.test_e2e import wait_out_grace
from tests.faultproxy import FaultProxy, fault_proxy
from tests.harness import Scenario, check_invariants, let_mint_window_pass, make_scenario
from tests.pg import via_proxy
from tests.runners.test_daemon import DaemonProc, _free_port, configure, dump_threads, start_daemon, wait_until
from tests.scripted_vault import ScriptedAuth as _Auth
from tests.scripted_vault import token_login as _login

#: The longest a failing CLI command may take: at most two Vault calls fail in a row (the publish,
#: then the read that looks for a write whose answer was lost), each 2 attempts x 2 s timeout +
#: 1 s between them, plus the start-up of a Python process on a loaded CI machine.
CLI_BOUND_S = 25.0
VAULT_FAULTS = ("down", "reset", "blackhole", "http503", "http429", "latency")
STEPS = ("plan", "publish", "revoke")


def _set(proxy: FaultProxy, fault: str) -> None:
    if fault == "latency":
        proxy.latency = 3.0
        proxy.mode = "pass"
    else:
        proxy.latency = 0.0
        proxy.mode = fault


def _heal(proxy: FaultProxy) -> None:
    proxy.latency = 0.0
    proxy.mode = "pass"


@pytest.fixture
def daemons() -> Iterator[list[DaemonProc]]:
    started: list[DaemonProc] = []
    yield started
    for d in started:  # never leave a daemon behind, even when a test fails
        if d.proc.poll() is None:
            dump_threads(d)
            os.killpg(d.proc.pid, signal.SIGKILL)
            d.proc.wait(timeout=10)


@pytest.fixture
def vault_proxy(openbao: Any) -> Iterator[FaultProxy]:
    host, port = openbao.url.removeprefix("http://").rsplit(":", 1)
    with fault_proxy((host, int(port))) as proxy:
        yield proxy


def _fast(sc: Scenario, proxy_url: str, *, journal: str | None = None) -> None:
    """Short timeouts and retries; the Vault store behind the proxy (and the journal, if given)."""
    text = sc.config.read_text()
    text = re.sub(r"attempts = \d+", "attempts = 2", text, count=1)
    text = text.replace('max_delay = "2s"', 'max_delay = "1s"')
    text = text.replace(f'url = "{sc.vault_url}"', f'url = "{proxy_url}"\ntimeout_s = 2')
    if journal:
        text = re.sub(r'journal = "[^"]*"', f'journal = "{journal}"', text, count=1)
    sc.config.write_text(text)


def _assert_failed_cleanly(proc: Any, took: float, what: str) -> None:
    assert proc.returncode == 1, f"{what}: exit {proc.returncode}: {proc.stderr[-1500:]}"
    assert "fix:" in proc.stderr, f"{what}: no fix line: {proc.stderr[-1500:]}"
    assert "Traceback" not in proc.stderr
    assert took < CLI_BOUND_S, f"{what}: took {took:.1f}s"


def _clean_up(sc: Scenario) -> None:
    """After the fault: `recover` then `rotate` succeed and every invariant holds."""
    for args in (("recover",), ("rotate", sc.policy)):
        proc = sc.cli(*args)
        assert proc.returncode == 0, f"{args}: {proc.stderr[-1500:]}"
    check_invariants(sc)


# ---------------------------------------------------------------------------------- the CLI matrix
def _run_async(sc: Scenario, args: tuple[str, ...]) -> subprocess.Popen[str]:
    return subprocess.Popen(sc.argv(*args), env=sc.env(), cwd=sc.dir, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)


def _finish(sc: Scenario, proc: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    out, err = proc.communicate(timeout=60)
    sc.outputs += [out, err]
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _faulted(sc: Scenario, proxy: FaultProxy, fault: str, step: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run the command of ``step`` with ``fault`` injected at that step; heal the proxy afterwards."""
    marker = sc.dir / f"minted-{fault}"
    marker.unlink(missing_ok=True)
    if step == "publish":
        # The mint call pauses (after minting) until the fault is set: the next Vault call is PUBLISH.
        sc.fake.add_fault("management create", "pause_after_effect", seconds=1, marker=marker)
    else:
        _set(proxy, fault)
    started = time.monotonic()
    handle = _run_async(sc, ("revoke-expired",) if step == "revoke" else ("rotate", sc.policy))
    try:
        if step == "publish":
            wait_until("the mint", marker.exists, timeout=CLI_BOUND_S)
            _set(proxy, fault)
        proc = _finish(sc, handle)
    finally:
        _heal(proxy)
        if handle.poll() is None:
            handle.kill()
    return proc, time.monotonic() - started


def _matrix(sc: Scenario, proxy: FaultProxy, what: str, faults: tuple[str, ...]) -> dict[str, float]:
    """For each fault: PLAN, then PUBLISH, fail (exit 1, a fix line, invariants hold); `rotate`
    then recovers the cut run and rotates; REVOKE fails (the next fault's PUBLISH step revokes it
    first, `recover` after the last one). Returns timings."""
    timings: dict[str, float] = {}
    for fault in faults:
        for step in STEPS:
            if step == "revoke":
                wait_out_grace(sc)  # the previous token's grace has ended
            proc, took = _faulted(sc, proxy, fault, step)
            timings[f"{fault}@{step}"] = took
            if step == "revoke" and proc.returncode == 0:
                # After #15.2 a failed revocation is postponed with a backoff, not a failed command.
                assert "postponed" in proc.stdout, f"{what} {fault} at revoke: {proc.stdout}"
            else:
                _assert_failed_cleanly(proc, took, f"{what} {fault} at {step}")
            # A publish cut mid-way leaves its run open (the candidate may have landed): recovery decides.
            check_invariants(sc, after_crash=step == "publish")
            if step == "publish" or (step == "revoke" and fault == faults[-1]):
                started = time.monotonic()
                args = ("rotate", sc.policy) if step == "publish" else ("recover",)
                healed = sc.cli(*args)
                timings[f"{fault}@{step} clean-up"] = time.monotonic() - started
                assert healed.returncode == 0, f"{what} {fault}: {args} after the fault: {healed.stderr[-1500:]}"
                check_invariants(sc)
    # A run cut inside its mint stays open until no call of it can still mint (issue 10 §1b).
    let_mint_window_pass(sc)
    assert sc.cli("recover").returncode == 0
    unfinished = sc.journal_rows("SELECT run_id, state, error FROM runs WHERE state NOT IN ('done', 'failed', "
                                 "'aborted', 'published')")
    assert not unfinished, f"every run finished: {unfinished}"
    return timings


def _report(timings: dict[str, float]) -> None:
    print("\n" + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))


@pytest.mark.parametrize("fault", VAULT_FAULTS)
def test_cli_with_vault_failing_at_each_step(
    tmp_path: Path, openbao: Any, fake_influxctl: Any, vault_proxy: FaultProxy, fault: str
) -> None:
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=1)
    _fast(sc, vault_proxy.url)
    _report(_matrix(sc, vault_proxy, "vault", (fault,)))


def test_cli_with_the_journal_failing_at_each_step(
    tmp_path: Path, openbao: Any, fake_influxctl: Any, pg_url: str, pg_proxy: FaultProxy
) -> None:
    journal = via_proxy(pg_url, pg_proxy)
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=1, journal_url=journal)
    _fast(sc, sc.vault_url, journal=journal)
    _report(_matrix(sc, pg_proxy, "journal", ("down", "reset")))


@pytest.mark.parametrize("fault", ["blackhole", "latency"])
def test_cli_with_the_journal_hanging_at_each_step(
    tmp_path: Path, openbao: Any, fake_influxctl: Any, pg_url: str, pg_proxy: FaultProxy, fault: str
) -> None:
    """A journal that never answers (blackhole) or answers 3 s late needs its timeouts (#15.4): a
    connection the server never accepts ends at connect_timeout, a query on an established one at the
    journal's transaction deadline (twice the statement timeout + 5 s), which cuts the connection."""
    journal = via_proxy(pg_url, pg_proxy)
    journal = journal.replace("options=", "connect_timeout=2&options=-c%20statement_timeout%3D2000%20", 1)
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=1, journal_url=journal)
    _fast(sc, sc.vault_url, journal=journal)
    _report(_matrix(sc, pg_proxy, "journal", (fault,)))


# ---------------------------------------------------------------------------------- under the daemon
def test_daemon_does_not_hot_loop_a_revocation_while_vault_answers_503(
    tmp_path: Path, openbao: Any, fake_influxctl: Any, vault_proxy: FaultProxy, daemons: list[DaemonProc]
) -> None:
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=1)
    port = _free_port()
    configure(sc, schedule="1h", port=port, daemon='sweep_interval = "1s"')
    _fast(sc, vault_proxy.url)
    assert sc.cli("rotate", sc.policy).returncode == 0
    wait_out_grace(sc)
    vault_proxy.mode = "http503"
    d = start_daemon(sc, port, wait=False)
    daemons.append(d)
    before = vault_proxy.connections
    time.sleep(6)
    attempts = vault_proxy.connections - before
    assert attempts < 20, f"{attempts} Vault connections in 6 s: the revocation is retried in a loop"
    # Every failure counts a round and sets a later try (before #15.2 a store read that failed did neither).
    rounds, next_try = sc.journal_rows("SELECT attempts, next_try_at FROM revocations WHERE state = 'pending'")[0]
    assert rounds >= 1 and next_try, "the failed revocation counted no round"
    assert any(r["step"] == "revoke_old" and r["result"] == "retry" for r in _audit_events(sc))
    _heal(vault_proxy)
    wait_until("the revocation", lambda: not sc.journal_rows("SELECT 1 FROM revocations WHERE state = 'pending'"),
               timeout=30)
    assert d.stop() == 0
    check_invariants(sc, settled=True)


def test_daemon_backs_off_and_readyz_reflects_a_vault_outage(
    tmp_path: Path, openbao: Any, fake_influxctl: Any, vault_proxy: FaultProxy, daemons: list[DaemonProc]
) -> None:
    """A rotation due while Vault is down fails, backs off (no hot loop: a handful of attempts),
    /readyz says what is wrong; once Vault is back the rotation succeeds and /readyz is 200."""
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=30)
    port = _free_port()
    configure(sc, schedule="2s", port=port, daemon='failure_backoff = "1s"\nfailure_backoff_max = "2s"')
    _fast(sc, vault_proxy.url)
    vault_proxy.mode = "http503"
    d = start_daemon(sc, port, wait=False)
    daemons.append(d)
    status, body = wait_until("readyz to report Vault", lambda: (r := _readyz_or_none(d)) and
                              r[1].get("degraded") and r, timeout=20, every=0.2)
    cred = body["credentials"]["mgmt/primary"]
    assert cred["ok"] is False and cred["failures"] >= 1 and cred["error"]
    # Shown, not gating: one policy's credential must not make every replica unready (PDB, rollouts).
    assert status == 200 and body["ready"] is True and body["degraded"] == ["mgmt/primary"]
    before = vault_proxy.connections
    time.sleep(6)
    attempts = vault_proxy.connections - before
    assert 1 <= attempts <= 30, f"{attempts} Vault connections in 6 s"
    failures = d.metric("rotator_rotations_total", policy="mgmt", result="failure") or 0
    assert 1 <= failures <= 6, f"{failures} failed rotations in ~8 s with a 1-2 s backoff"
    _heal(vault_proxy)
    wait_until("a rotation", lambda: d.metric("rotator_rotations_total", policy="mgmt", result="success"),
               timeout=30, every=0.2)
    wait_until("the credential fine again", lambda: (r := _readyz(d))[0] == 200 and r[1]["degraded"] == [],
               timeout=10, every=0.2)
    log = sc.log_file.read_text()
    assert "rotation failed" in log and "HTTP 503" in log and "fix:" in log, "what failed, how to fix it"
    assert d.stop() == 0
    check_invariants(sc)


def test_daemon_survives_a_journal_outage_without_a_hot_loop(
    tmp_path: Path, openbao: Any, fake_influxctl: Any, pg_url: str, pg_proxy: FaultProxy, daemons: list[DaemonProc]
) -> None:
    journal = via_proxy(pg_url, pg_proxy)
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=30, journal_url=journal)
    port = _free_port()
    configure(sc, schedule="1h", port=port, daemon='sweep_interval = "1s"')
    _fast(sc, sc.vault_url, journal=journal)
    d = start_daemon(sc, port)
    daemons.append(d)
    pg_proxy.mode = "down"
    status, body = wait_until("readyz to report the journal",
                              lambda: (r := _readyz_or_none(d)) and r[0] == 503 and r,
                              timeout=15, every=0.2)
    assert body["journal"] != "ok"
    mark = len(sc.log_file.read_text().splitlines())
    time.sleep(6)
    passes = [line for line in sc.log_file.read_text().splitlines()[mark:] if "scheduler pass failed" in line]
    assert len(passes) <= 3, f"{len(passes)} failed scheduler passes in 6 s: a hot loop"
    assert d.get("/healthz")[0] == 200, "a journal outage is not a wedge: no restart wanted"
    _heal(pg_proxy)
    wait_until("ready again", lambda: _readyz(d)[0] == 200, timeout=15, every=0.2)
    assert d.stop() == 0
    check_invariants(sc)


def _audit_events(sc: Scenario) -> list[dict[str, Any]]:
    rows = sc.journal_rows("SELECT step, result FROM events ORDER BY at")
    return [{"step": step, "result": result} for step, result in rows]


def _readyz(d: DaemonProc) -> tuple[int, dict[str, Any]]:
    status, body = d.get("/readyz")
    return status, json.loads(body)


# ---------------------------------------------------------------------------------- Vault token renewal
def test_vault_token_renewal_survives_a_failed_first_lookup(
    tmp_path: Path, openbao: Any, fake_influxctl: Any, vault_proxy: FaultProxy, daemons: list[DaemonProc]
) -> None:
    """Issue 15.3: the daemon's first lookup of a renewable 20 s token fails (Vault down); it retries,
    learns the TTL, and keeps renewing the token between runs, far past its first TTL. /readyz and
    rotator_credential_* show the state meanwhile. (A loaded CI machine took ~10 s to start the
    daemon, and the daemon then held its retry to 5 s: the 15 s token this test had ran out.)"""
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=30)
    root = hvac.Client(url=openbao.url, token=openbao.root_token)
    token = root.auth.token.create(policies=["root"], ttl="20s", renewable=True, explicit_max_ttl="10m")["auth"]
    created, created_at = time.monotonic(), datetime.now(UTC)
    (tmp_path / "vault-token").write_text(token["client_token"])
    port = _free_port()
    configure(sc, schedule="1h", port=port, daemon="")
    _fast(sc, vault_proxy.url)
    vault_proxy.mode = "down"
    d = start_daemon(sc, port, wait=False)
    daemons.append(d)
    status, body = wait_until("a failed first lookup in /readyz", lambda: (r := _readyz_or_none(d))
                              and r[1].get("credentials", {}).get("mgmt/primary", {}).get("failures") and r,
                              timeout=15, every=0.1)
    assert body["credentials"]["mgmt/primary"]["ok"] is False and body["degraded"] == ["mgmt/primary"]
    assert status == 200 and body["ready"] is True, "a store credential is shown in /readyz, not gating it"
    assert d.metric("rotator_credential_ok", policy="mgmt", store="primary") == 0
    _heal(vault_proxy)
    wait_until("the credential fine", lambda: (r := _readyz(d))[0] == 200 and r[1]["degraded"] == [],
               timeout=10, every=0.1)
    expiry = d.metric("rotator_credential_expiry_timestamp_seconds", policy="mgmt", store="primary")
    assert expiry is not None and 0 < expiry - datetime.now(UTC).timestamp() <= 20
    # Well past the first TTL, the token is still valid: it was renewed between runs.
    time.sleep(max(0.0, created + 27 - time.monotonic()))
    try:
        looked_up = root.auth.token.lookup(token["client_token"])["data"]
    except hvac.exceptions.Forbidden:
        vault_lines = [line for line in sc.log_file.read_text().splitlines() if "Vault token" in line
                       or "daemon started" in line]
        raise AssertionError(f"the token expired: nobody renewed it in time; created at {created_at:%H:%M:%S.%f}, "
                             f"the daemon's log: {vault_lines}") from None
    assert looked_up["ttl"] > 0, "the token expired: nobody renewed it"
    status, body = _readyz(d)
    assert status == 200 and body["degraded"] == []
    assert d.metric("rotator_credential_renewal_failures", policy="mgmt", store="primary") == 0
    assert d.stop() == 0
    check_invariants(sc)


def _readyz_or_none(d: DaemonProc) -> tuple[int, dict[str, Any]] | None:
    assert d.proc.poll() is None, f"the daemon exited: {d.err.read_text()[-2000:]}"
    try:
        return _readyz(d)
    except OSError:
        return None


# ---------------------------------------------------------------------------------- VaultLogin, unit


def test_a_failed_first_lookup_is_retried_and_renewal_scheduled(tmp_path: Path) -> None:
    import requests

    from rotator.core.clock import FakeClock

    login, clock = _login(tmp_path)
    assert isinstance(clock, FakeClock)
    api = _Auth(lookup_self=[requests.exceptions.ConnectionError(), requests.exceptions.ConnectionError(),
                             {"data": {"ttl": 30, "creation_ttl": 30, "renewable": True}}],
                renew_self=[hvac.exceptions.VaultDown(), {"auth": {"lease_duration": 30}}])
    with pytest.raises(requests.exceptions.ConnectionError):
        login.ensure(api)
    status = login.status()
    assert status["ok"] is False and status["failures"] == 1 and status["renewable"] is None
    first = login.due()
    assert first is not None and first == clock.now() + timedelta(seconds=1), "retried in 1 s, not never"
    login.ensure(api)  # not due yet: nothing happens
    assert api.calls == ["lookup_self"]
    clock.advance(timedelta(seconds=1))
    with pytest.raises(requests.exceptions.ConnectionError):
        login.ensure(api)
    assert login.due() == clock.now() + timedelta(seconds=2), "the backoff doubles"
    clock.advance(timedelta(seconds=2))
    login.ensure(api)  # the lookup answers: the renewal is planned from the TTL
    status = login.status()
    assert status["ok"] is True and status["failures"] == 0 and status["renewable"] is True
    assert login.due() == clock.now() + timedelta(seconds=20), "renew once less than a third of the TTL is left"
    clock.advance(timedelta(seconds=21))
    with pytest.raises(hvac.exceptions.VaultDown):
        login.ensure(api)  # a 503 on renewal: retried, not a new login
    assert login.status()["ok"] is False, "9 s left of 30 after a failed renewal: close to expiry"
    assert login.due() == clock.now() + timedelta(seconds=1)
    clock.advance(timedelta(seconds=1))
    login.ensure(api)
    assert api.calls == ["lookup_self"] * 3 + ["renew_self"] * 2
    assert login.status()["ok"] is True and login.status()["expires_at"] == clock.now() + timedelta(seconds=30)


def test_the_retry_never_waits_past_a_quarter_of_what_is_left(tmp_path: Path) -> None:
    import requests

    login, clock = _login(tmp_path)
    api = _Auth(lookup_self=[{"data": {"ttl": 8, "creation_ttl": 300, "renewable": True}}],
                renew_self=[requests.exceptions.ConnectionError()] * 6)
    login.ensure(api)
    assert login.due() == clock.now() + timedelta(seconds=4), "past the renewal point: check at half the TTL"
    clock.advance(timedelta(seconds=4))
    waits = []
    for _ in range(4):
        with pytest.raises(requests.exceptions.ConnectionError):
            login.ensure(api)
        due = login.due()
        assert due is not None
        waits.append((due - clock.now()).total_seconds())
        clock.advance(due - clock.now())
    assert waits == [1.0, 0.75, 0.5625, 0.5], waits
    assert login.status()["ok"] is False


def test_a_clock_step_back_does_not_push_the_renewal_past_the_token_s_expiry(tmp_path: Path) -> None:
    """Vault counts the TTL in its own time. The renewal was planned at a time of day: after the clock
    stepped back an hour, it came an hour late, 40 minutes after the 1 h token had expired."""
    login, clock = _login(tmp_path)
    api = _Auth(lookup_self=[{"data": {"ttl": 3600, "creation_ttl": 3600, "renewable": True}}],
                renew_self=[{"auth": {"lease_duration": 3600}}])
    login.ensure(api)
    assert login.due() == clock.now() + timedelta(minutes=40)
    clock.advance(timedelta(minutes=10))
    # A FakeClock tells no real time: the step counts from this last read (with real time passed too:
    # tests/adapters/test_vault_login.py, test_a_clock_step_back_long_after_the_last_look_...)
    assert login.due() == clock.now() + timedelta(minutes=30)
    clock.advance(timedelta(hours=-1))  # the step
    assert login.due() == clock.now() + timedelta(minutes=30), "still 30 minutes of real time away"
    assert login.status()["expires_at"] == clock.now() + timedelta(minutes=50)
    clock.advance(timedelta(minutes=30))
    login.ensure(api)
    assert api.calls == ["lookup_self", "renew_self"], "renewed on time"
    assert login.status()["ok"] is True


def test_a_status_says_when_its_ok_turns_false_with_time_alone(tmp_path: Path) -> None:
    """The daemon reads a store's status after each job and at its due time, not at every scrape: a
    status whose ``ok`` turns false with nothing but time must say when (``ok_until``), or the
    RotatorStoreCredentialExpiring alert would fire late."""
    login, clock = _login(tmp_path)
    api = _Auth(lookup_self=[{"data": {"ttl": 600, "creation_ttl": 600, "renewable": True}}])
    login.ensure(api)
    until = login.status()["ok_until"]
    assert until == clock.now() + timedelta(seconds=500), "ok until 1/6 of the TTL is left"
    clock.advance(until - clock.now() - timedelta(seconds=1))
    assert login.status()["ok"] is True
    clock.advance(timedelta(seconds=2))
    assert login.status()["ok"] is False and login.status()["ok_until"] is None


def test_a_denied_lookup_of_a_token_past_its_expiry_is_a_failure_not_renewal_off(tmp_path: Path) -> None:
    """A non-renewable token whose TTL ran out is looked up again (the same token in its file): Vault
    answers 403 for an expired token. That read as "lookup not allowed, renewal off" and status
    went back to ok, with a dead token."""
    login, clock = _login(tmp_path)
    api = _Auth(lookup_self=[{"data": {"ttl": 60, "creation_ttl": 60, "renewable": False}},
                             *[hvac.exceptions.Forbidden("permission denied")] * 3,
                             {"data": {"ttl": 600, "creation_ttl": 600, "renewable": False}}])
    login.ensure(api)
    clock.advance(timedelta(seconds=61))
    for failures in (1, 2, 3):  # and at every retry, not only the first
        with pytest.raises(hvac.exceptions.Forbidden):
            login.ensure(api)
        status = login.status()
        assert status["ok"] is False and status["failures"] == failures, status
        due = login.due()
        assert due is not None, "retried, not given up as 'renewal off'"
        clock.advance(due - clock.now())
    login.ensure(api)  # a lookup answers again (the token was renewed elsewhere): the failure ends
    assert login.status()["ok"] is True and login.status()["failures"] == 0


def test_a_refused_login_backs_off_to_minutes_not_30_seconds(tmp_path: Path) -> None:
    """A wrong or used-up AppRole secret_id: retrying every 30 s fixes nothing, and each failed login
    counts toward Vault's user lockout, which would then refuse the fixed secret_id too. So the checks
    back off to minutes and the refused secret_id is not sent again meanwhile; a changed one is sent at
    the next check. A login that could not reach Vault keeps the short backoff."""
    import requests

    from rotator.adapters.vault.auth import AppRoleAuth, VaultLogin
    from rotator.core.clock import FakeClock

    (tmp_path / "secret-id").write_text("wrong-secret-id")
    auth = AppRoleAuth.model_validate({"method": "approle", "role_id": "role", "secret_id": {"file": "secret-id"}})
    clock = FakeClock()
    login = VaultLogin(auth, tmp_path, clock)
    refused = hvac.exceptions.InvalidRequest("invalid role or secret ID")

    class Api(_Auth):
        def approle_login(self, mount: str, role: str, secret: Any) -> Any:
            return self._answer("approle_login")

    ok = {"auth": {"client_token": "s.approle-token", "lease_duration": 60, "renewable": False}}
    api = Api(approle_login=[ok, refused] + [requests.exceptions.ConnectionError()] * 8)
    login.ensure(api)  # logged in: a 60 s token that cannot be renewed, so the next step is a new login
    due = login.due()
    assert due is not None
    clock.advance(due - clock.now())

    def check(times: int) -> list[float]:
        waits = []
        for _ in range(times):
            with pytest.raises((hvac.exceptions.InvalidRequest, requests.exceptions.ConnectionError)):
                login.ensure(api)
            due = login.due()
            assert due is not None
            waits.append((due - clock.now()).total_seconds())
            clock.advance(due - clock.now())
        return waits

    waits = check(12)
    # Not hurried by the old token's expiry either (it was: retries shrank toward 0.5 s near its end).
    assert waits[:10] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300] and waits[10:12] == [300, 300], waits
    assert api.calls.count("approle_login") == 2, "the refused secret_id was sent once, not at every check"
    (tmp_path / "secret-id").write_text("another-secret-id")
    waits = check(8)
    assert api.calls.count("approle_login") == 10, "a changed secret_id is sent at every check"
    assert max(waits) == 30, f"unreachable: the usual cap ({waits})"


def test_a_token_file_fixed_after_the_token_expired_is_read_again(tmp_path: Path) -> None:
    """The token in the file expired; the operator writes a new one. The retries looked the old token
    up again and again: status stayed failing until some store call happened to drop it."""
    login, clock = _login(tmp_path)
    first = (tmp_path / "token").read_text()

    class Vault(_Auth):
        token = ""

        def set_token(self, token: Any) -> None:
            self.token = token.reveal() if token is not None else ""

        def lookup_self(self) -> Any:
            self.calls.append("lookup_self")
            if self.token == first and clock.now() >= expiry:
                raise hvac.exceptions.Forbidden("permission denied")
            return {"data": {"ttl": 60, "creation_ttl": 60, "renewable": False}}

    api = Vault()
    expiry = clock.now() + timedelta(seconds=60)
    login.ensure(api)
    clock.advance(timedelta(seconds=61))
    with pytest.raises(hvac.exceptions.Forbidden):
        login.ensure(api)
    (tmp_path / "token").write_text("s.a-new-token-written-by-the-operator")
    due = login.due()
    assert due is not None
    clock.advance(due - clock.now())
    login.ensure(api)
    assert login.status()["ok"] is True and api.token == "s.a-new-token-written-by-the-operator"
