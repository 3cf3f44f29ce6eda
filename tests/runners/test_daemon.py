"""`rotator daemon` as a real subprocess against OpenBao and the fake influxctl, with second-scale
schedules: on-time rotations and revocations (timing errors measured), a kill -9 restart between
publication and the end of grace, SIGHUP and file-watch reloads, SIGTERM in the middle of a run,
/healthz, /readyz, /metrics, a signed webhook and a command hook. Then the scheduler's pass
(`Daemon.tick`) in-process on a fake clock, for the decisions that need no real time.
"""

from __future__ import annotations

import base64
import concurrent.futures
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from rotator.core.clock import FakeClock
from rotator.core.engine import ANY_RUN, NOTHING_TO_DO, RunResult
from rotator.core.errors import TransientError
from rotator.core.journal import Revocation, RunRecord, RunState, open_journal
from rotator.runners.daemon import EXIT_JOURNAL_LOST, Daemon, _Track
from tests.harness import REPO, Scenario, check_invariants, let_mint_window_pass, make_scenario
from tests.runners.test_systemd_notify import datagrams, notify_socket
from tests.webhook_receiver import receiver

TIMING_BOUND_S = 1.5  # the largest lateness accepted for a rotation start or a revocation
#: The schedule of the kill-and-restart test: longer than its 3 s grace, so a rotation never starts
#: before the revocation its predecessor scheduled.
SCHEDULE_S = 4
KEY = "daemon-webhook-key"
#: KEY as a Standard Webhooks secret (what the policy file's secret holds)
SECRET = "whsec_" + base64.b64encode(KEY.encode()).decode()


# ---------------------------------------------------------------------------------- helpers
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ts(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def configure(sc: Scenario, *, schedule: str, daemon: str, port: int) -> None:
    """The harness's policy file with another schedule, plus a [daemon] table."""
    sc.write_policy()
    text = sc.config.read_text()
    text = text.replace('schedule = "1h"', f'schedule = "{schedule}"', 1)
    assert f'schedule = "{schedule}"' in text
    sc.config.write_text(text + f'\n[daemon]\nlisten = "127.0.0.1:{port}"\n{daemon}\n')


@dataclass
class DaemonProc:
    sc: Scenario
    port: int
    proc: subprocess.Popen[bytes]
    out: Path
    err: Path
    started: float = field(default_factory=time.monotonic)

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as resp:
                return int(resp.status), resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        status, text = self.get("/metrics")
        assert status == 200
        samples = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return samples

    def metric(self, name: str, **labels: str) -> float | None:
        return self.metrics().get((name, tuple(sorted(labels.items()))))

    def wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, f"the daemon exited: {self.err.read_text()[-2000:]}"
            try:
                if self.get("/readyz")[0] == 200:
                    return
            except OSError:
                pass
            assert time.monotonic() < deadline, "the daemon never became ready"
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            if sig == signal.SIGKILL:
                os.killpg(self.proc.pid, signal.SIGKILL)  # the daemon and its influxctl children
            else:
                self.proc.send_signal(sig)
        code = self.proc.wait(timeout=timeout)
        self.sc.outputs += [self.out.read_text(errors="replace"), self.err.read_text(errors="replace")]
        return code


def start_daemon(sc: Scenario, port: int, tag: str = "", wait: bool = True,
                 env: dict[str, str] | None = None) -> DaemonProc:
    out, err = sc.dir / f"daemon{tag}.out", sc.dir / f"daemon{tag}.err"
    argv = [sys.executable, "-m", "rotator.runners.daemon", "-c", str(sc.config), "--log-level", "debug",
            "--log-file", str(sc.log_file)]
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen(argv, env=env or sc.env(), cwd=sc.dir, stdout=o, stderr=e,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    d = DaemonProc(sc, port, proc, out, err)
    if wait:
        d.wait_ready()
    return d


def dump_threads(d: DaemonProc) -> None:
    """A daemon still running at the end of a test (it failed, or hangs): print where every thread is
    (SIGUSR2 makes the daemon write its stacks to stderr, rotator.runners.daemon.cmd_daemon)."""
    before = d.err.stat().st_size
    try:
        os.kill(d.proc.pid, signal.SIGUSR2)
    except ProcessLookupError:
        return
    time.sleep(0.5)
    with open(d.err, "rb") as err:
        err.seek(before)
        dump = err.read().decode(errors="replace")
    print(f"\n--- threads of the daemon (pid {d.proc.pid}) at teardown ---\n{dump[-8000:]}")


@pytest.fixture
def daemons() -> Iterator[list[DaemonProc]]:
    started: list[DaemonProc] = []
    yield started
    for d in started:  # never leave a daemon behind, even when a test fails
        if d.proc.poll() is None:
            dump_threads(d)
            os.killpg(d.proc.pid, signal.SIGKILL)
            d.proc.wait(timeout=10)


def wait_until(what: str, predicate: Callable[[], Any], timeout: float = 20, every: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)


def rotate_runs(sc: Scenario) -> list[dict[str, Any]]:
    rows = sc.journal_rows("SELECT run_id, state, started_at, published_at, old_token_id, new_token_id FROM runs "
                           "WHERE kind = 'rotate' ORDER BY started_at")
    keys = ("run_id", "state", "started_at", "published_at", "old_token_id", "new_token_id")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def bootstrap_published(sc: Scenario) -> datetime:
    rows = sc.journal_rows("SELECT published_at FROM runs WHERE kind = 'bootstrap'")
    value = _ts(rows[0][0])
    assert value is not None
    return value


def bootstrap_token_since(sc: Scenario) -> datetime:
    """When the bootstrapped token began to age: its creation at the (fake) issuer, just before the
    bootstrap published it; the schedule counts from then."""
    rows = sc.journal_rows("SELECT token_created_at, published_at FROM runs WHERE kind = 'bootstrap'")
    created, published = _ts(rows[0][0]), _ts(rows[0][1])
    assert created is not None and published is not None and created <= published
    return created


def audit(sc: Scenario) -> list[dict[str, Any]]:
    path = sc.dir / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


HOOK = """import json, os, sys
with open(os.path.join(os.path.dirname(os.path.abspath(sys.argv[0])), "hook-calls.jsonl"), "a") as fh:
    fh.write(json.dumps({"env": dict(os.environ), "argv": sys.argv}) + "\\n")
"""


# ---------------------------------------------------------------------------------- subprocess tests
def test_rotates_and_revokes_on_time_across_a_kill_and_restart(
    tmp_path: Path, openbao: Any, fake_influxctl: Any, daemons: list[DaemonProc]
) -> None:
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=3)
    (tmp_path / "hmac-key").write_text(SECRET)
    (tmp_path / "hook.py").write_text(HOOK)
    port = _free_port()
    with receiver() as rx:
        configure(sc, schedule=f"{SCHEDULE_S}s", port=port, daemon=f"""
[daemon.audit]
file = "audit.jsonl"
[[daemon.webhooks]]
url = "{rx.url}"
on = ["success", "failure", "orphan"]
secret = {{ file = "hmac-key" }}
[[daemon.hooks]]
command = [{json.dumps(sys.executable)}, "hook.py"]
timeout = "10s"
""")
        first = start_daemon(sc, port, "-a")
        daemons.append(first)
        ready_at = datetime.now(UTC)
        status, body = first.get("/healthz")
        assert status == 200 and json.loads(body)["alive"] is True
        run1 = wait_until("the first rotation", lambda: [r for r in rotate_runs(sc) if r["published_at"]])[0]
        # kill -9 between publication and the end of the grace period
        assert first.stop(signal.SIGKILL) == -signal.SIGKILL
        published1 = _ts(run1["published_at"])
        assert published1 is not None and datetime.now(UTC) < published1 + timedelta(seconds=3), "killed too late"
        assert sc.fake.token_by_id(sc.bootstrap_id)["revoked_at"] is None
        check_invariants(sc, after_crash=True)

        second = start_daemon(sc, port, "-b")
        daemons.append(second)
        # The revocation the first daemon scheduled happens on time, done by the second one.
        wait_until("the bootstrap token's revocation", lambda: sc.fake.token_by_id(sc.bootstrap_id)["revoked_at"])
        wait_until("three rotations and two revocations", lambda: sum(
            1 for r in rotate_runs(sc) if r["published_at"]) >= 3 and all(
            t["revoked_at"] for t in sc.fake.tokens() if t["id"] == rotate_runs(sc)[1]["old_token_id"]), timeout=30)
        # The journal shows a publication before the run returns and the daemon counts it.
        wait_until("the second daemon's counts", lambda: (second.metric(
            "rotator_rotations_total", policy="mgmt", result="success") or 0) >= 2 and (second.metric(
            "rotator_revocations_total", policy="mgmt", result="ok") or 0) >= 2, timeout=10)
        metrics = second.metrics()
        assert second.stop() == 0
        rx.wait_for(2)  # the first daemon's may have died with it (kill -9 right after publishing)
        deliveries = list(rx.deliveries)

    runs = rotate_runs(sc)
    assert all(r["state"] in ("published", "done") for r in runs)
    # -- timing: rotations start at last publication + SCHEDULE_S, revocations at publication + grace.
    lateness = []
    previous = bootstrap_token_since(sc)
    for run in runs:
        due = previous + timedelta(seconds=SCHEDULE_S)
        started = _ts(run["started_at"])
        assert started is not None
        if run is not runs[0] or due > ready_at:  # the first is on time only if the daemon was up by then
            lateness.append((started - due).total_seconds())
        published = _ts(run["published_at"])
        assert published is not None
        previous = published
    revocations = sc.journal_rows("SELECT token_id, due_at, done_at FROM revocations WHERE state = 'done'")
    rev_lateness = []
    for token_id, due_at, _done_at in revocations:
        revoked = _ts(sc.fake.token_by_id(token_id)["revoked_at"])
        due = _ts(due_at)
        assert revoked is not None and due is not None
        rev_lateness.append((revoked - due).total_seconds())
    print(f"\nrotation start lateness (s): {[round(x, 3) for x in lateness]}")
    print(f"revocation lateness (s): {[round(x, 3) for x in rev_lateness]}")
    assert len(lateness) >= 2 and len(rev_lateness) >= 2
    assert all(0 <= x < TIMING_BOUND_S for x in lateness), lateness
    assert all(0 <= x < TIMING_BOUND_S for x in rev_lateness), rev_lateness
    delay_count = metrics[("rotator_schedule_delay_seconds_count", ())]
    delay_sum = metrics[("rotator_schedule_delay_seconds_sum", ())]
    print(f"scheduler wake-up lateness (metric): {delay_sum / delay_count * 1000:.1f} ms on average")
    assert delay_count >= 2 and delay_sum / delay_count < 0.5
    assert metrics[("rotator_rotations_total", (("policy", "mgmt"), ("result", "success")))] >= 2
    assert metrics[("rotator_revocations_total", (("policy", "mgmt"), ("result", "ok")))] >= 2

    # -- audit: every step, with run ids and token ids; no token value anywhere.
    lines = audit(sc)
    steps = [(line["step"], line["result"]) for line in lines if line["run_id"] == runs[-1]["run_id"]]
    assert ("plan", "ok") in steps and ("mint", "ok") in steps and ("published", "ok") in steps
    assert all({"time", "policy", "run_id", "step", "result"} <= set(line) for line in lines)
    sc.outputs.append((tmp_path / "audit.jsonl").read_text())
    # -- webhooks: one signed "success" per publication (the second daemon's, at least).
    assert all(d.signature_ok(KEY) for d in deliveries)
    published_ids = {r["new_token_id"] for r in runs}
    by_second = {r["new_token_id"] for r in runs[1:]}
    successes = [d.json["token_id"] for d in deliveries if d.json["event"] == "success"]
    assert by_second <= set(successes) <= published_ids and len(successes) == len(set(successes))
    # -- the command hook: once per publication, ids in its environment, never a value.
    calls = [json.loads(line) for line in (tmp_path / "hook-calls.jsonl").read_text().splitlines()]
    hooked = [c["env"]["ROTATOR_TOKEN_ID"] for c in calls]
    assert by_second <= set(hooked) <= published_ids and len(hooked) == len(set(hooked))
    assert all(c["env"]["ROTATOR_POLICY"] == "mgmt" and c["env"]["ROTATOR_EVENT"] == "published" for c in calls)
    sc.outputs.append((tmp_path / "hook-calls.jsonl").read_text())
    assert "FAKE_INFLUXCTL_STATE" not in calls[0]["env"], "a hook gets a minimal environment"
    check_invariants(sc)


def test_sighup_with_a_broken_file_keeps_the_running_configuration(
    tmp_path: Path, openbao: Any, fake_influxctl: Any, daemons: list[DaemonProc]
) -> None:
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state)
    port = _free_port()
    configure(sc, schedule="1h", port=port, daemon='[daemon.audit]\nfile = "audit.jsonl"')
    good = sc.config.read_text()
    d = start_daemon(sc, port)
    daemons.append(d)
    assert d.get("/healthz")[0] == 200
    status, body = d.get("/readyz")
    assert status == 200 and json.loads(body)["journal"] == "ok"
    assert d.get("/nope")[0] == 404
    boot, since = bootstrap_published(sc), bootstrap_token_since(sc)  # the schedule counts from the token's creation
    m = d.metrics()
    assert m[("rotator_policies", ())] == 1 and m[("rotator_config_last_reload_successful", ())] == 1
    assert m[("rotator_journal_up", ())] == 1
    assert m[("rotator_next_rotation_timestamp_seconds", (("policy", "mgmt"),))] == pytest.approx(
        (since + timedelta(hours=1)).timestamp(), abs=0.01)
    assert m[("rotator_last_success_timestamp_seconds", (("policy", "mgmt"),))] == pytest.approx(
        boot.timestamp(), abs=0.01)
    assert 0 <= m[("rotator_token_age_seconds", (("policy", "mgmt"),))] < 60
    assert m[("rotator_revocations_pending", (("policy", "mgmt"),))] == 0
    assert m[("rotator_lease_active", (("policy", "mgmt"),))] == 0
    assert m[("rotator_build_info", (("version", "0.1.0"),))] == 1
    labels = {label for (_, labels) in m for label in labels}
    assert {name for name, _ in labels} <= {"policy", "store", "result", "channel", "version", "le"}
    assert m[("rotator_watchdog_stalled", ())] == 0
    assert m[("rotator_credential_ok", (("policy", "mgmt"), ("store", "primary")))] == 1, "the root token never expires"
    assert not any(sc.bootstrap_id in value for _, value in labels), "no token id in labels"

    # 1. Not TOML at all, 2. TOML with an invalid policy: both rejected, the old configuration runs on.
    for n, broken in enumerate([good.replace("[[policy]]", "[[policy"),
                                good.replace('schedule = "1h"', 'schedule = "soon"')], start=1):
        sc.config.write_text(broken)
        d.proc.send_signal(signal.SIGHUP)
        wait_until(f"reload failure {n}", lambda n=n: d.metric("rotator_config_reload_failures_total") == n)
        assert d.metric("rotator_config_last_reload_successful") == 0
        assert d.proc.poll() is None and d.get("/readyz")[0] == 200
        assert d.metric("rotator_policies") == 1
    log = sc.log_file.read_text()
    assert "reload (SIGHUP) rejected, the running configuration is kept" in log
    assert "not valid TOML" in log and "'soon' is not a schedule" in log
    assert [r["result"] for r in audit(sc) if r["step"] == "reload"] == ["failed", "failed"]

    # 3. A valid file (now with watch = true) is taken.
    sc.config.write_text(good.replace('schedule = "1h"', 'schedule = "2h"')
                         .replace("[daemon]\n", '[daemon]\nwatch = true\nwatch_interval = "1s"\n'))
    d.proc.send_signal(signal.SIGHUP)
    wait_until("the reload", lambda: d.metric("rotator_config_last_reload_successful") == 1)
    assert d.metric("rotator_next_rotation_timestamp_seconds", policy="mgmt") == pytest.approx(
        (since + timedelta(hours=2)).timestamp(), abs=0.01)
    assert d.metric("rotator_config_reload_failures_total") == 2

    # 4. watch: an edit without SIGHUP is picked up by mtime polling.
    sc.config.write_text(sc.config.read_text().replace('schedule = "2h"', 'schedule = "3h"'))
    wait_until("the watched reload", lambda: d.metric("rotator_next_rotation_timestamp_seconds", policy="mgmt")
               == pytest.approx((since + timedelta(hours=3)).timestamp(), abs=0.01), timeout=10)
    assert d.stop() == 0
    assert not rotate_runs(sc), "nothing was due"
    check_invariants(sc, settled=True)


def test_sigusr1_reopens_the_audit_file_sighup_reloads_and_sigusr2_dumps_the_stacks(
    tmp_path: Path, openbao: Any, fake_influxctl: Any, daemons: list[DaemonProc]
) -> None:
    """logrotate's postrotate sends SIGUSR1 (`systemctl kill --kill-who=main --signal=USR1`): the
    audit file is reopened and nothing else happens (no reload: the Vault stores keep their logins).
    SIGHUP is the full reload; the stacks on demand moved from SIGUSR1 to SIGUSR2."""
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state)
    port = _free_port()
    configure(sc, schedule="1h", port=port, daemon='[daemon.audit]\nfile = "audit.jsonl"')
    d = start_daemon(sc, port)
    daemons.append(d)
    audit_file = sc.dir / "audit.jsonl"
    assert audit_file.exists()
    reloaded_at = d.metric("rotator_config_last_reload_success_timestamp_seconds")
    os.rename(audit_file, sc.dir / "audit.jsonl.1")  # logrotate moves it...
    os.rename(sc.log_file, sc.dir / "rotator.log.1")  # (and --log-file, which needs no signal)
    d.proc.send_signal(signal.SIGUSR1)  # ...and tells the daemon
    wait_until("the audit file reopened", audit_file.exists, timeout=10)
    assert d.proc.poll() is None and d.get("/readyz")[0] == 200
    assert "reopening the audit file" in sc.log_file.read_text(), "written to a new --log-file"
    assert "reopening the audit file" not in (sc.dir / "rotator.log.1").read_text()
    assert "most recent call first" not in d.err.read_text(), "no stack dump"
    assert d.metric("rotator_config_last_reload_success_timestamp_seconds") == reloaded_at, "no reload"

    d.proc.send_signal(signal.SIGHUP)
    wait_until("the reload", lambda: [r["result"] for r in audit(sc) if r["step"] == "reload"] == ["ok"])
    assert "the adapters of every one built again" in sc.log_file.read_text()
    assert "reload" not in (sc.dir / "audit.jsonl.1").read_text()

    d.proc.send_signal(signal.SIGUSR2)
    wait_until("the stacks", lambda: "most recent call first" in d.err.read_text(), timeout=10)
    assert d.proc.poll() is None
    assert d.stop() == 0


def test_sigterm_lets_the_current_run_finish(
    tmp_path: Path, openbao: Any, fake_influxctl: Any, daemons: list[DaemonProc]
) -> None:
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=2)
    marker = tmp_path / "paused"
    sc.fake.add_fault("management create", "pause", seconds=2, marker=marker)
    port = _free_port()
    configure(sc, schedule="1s", port=port, daemon='shutdown_timeout = "15s"')
    d = start_daemon(sc, port)
    daemons.append(d)
    wait_until("the paused mint", marker.exists)
    signalled = time.monotonic()
    assert d.stop() == 0  # one SIGTERM (a second one, once the first was handled, parks the run)
    took = time.monotonic() - signalled
    runs = rotate_runs(sc)
    assert len(runs) == 1 and runs[0]["state"] == "published", "the run finished, no new run started"
    assert 1.0 < took < 10, f"exit {took:.1f}s after SIGTERM: it waited for the paused mint, not the timeout"
    assert "waiting up to 15s for mgmt" in sc.log_file.read_text()
    check_invariants(sc)
    # Restart with a long schedule: the old token's revocation is still carried out.
    configure(sc, schedule="1h", port=port, daemon="")
    d2 = start_daemon(sc, port, "-2")
    daemons.append(d2)
    wait_until("the revocation", lambda: sc.fake.token_by_id(sc.bootstrap_id)["revoked_at"])
    assert d2.stop() == 0
    assert len(rotate_runs(sc)) == 1
    check_invariants(sc, settled=True)


def test_a_real_daemon_prunes_its_history_while_it_rotates(
    tmp_path: Path, openbao: Any, fake_influxctl: Any, daemons: list[DaemonProc]
) -> None:
    """keep_history = "2s": the first pass's prune (on its own thread) checkpoints the bootstrap's
    history while rotations run every second beside it; the chain verifies, the current token's run
    is kept, and nothing a rotation did is lost."""
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=1)
    port = _free_port()
    configure(sc, schedule="1s", port=port, daemon="")
    sc.config.write_text(sc.config.read_text().replace("[rotator]\n", '[rotator]\nkeep_history = "2s"\n', 1))
    time.sleep(2.5)  # the bootstrap's events are older than keep_history now
    d = start_daemon(sc, port)
    daemons.append(d)
    wait_until("the prune", lambda: "journal history: pruned" in sc.log_file.read_text())
    wait_until("two rotations", lambda: len([r for r in rotate_runs(sc) if r["state"] == "done"]) >= 2, timeout=30)
    assert d.stop() == 0
    proc = sc.cli("audit", "verify", "--output", "json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] and report["start_seq"] > 0, "verified from the prune's checkpoint"
    newest = max((r for r in rotate_runs(sc) if r["published_at"]), key=lambda r: r["published_at"])
    status = json.loads(sc.cli("status", "--output", "json").stdout)[0]
    assert status["current_token_id"] == newest["new_token_id"], "the current token's run is kept"
    check_invariants(sc)


def test_sigterm_parks_a_run_that_outlives_the_timeout_and_restart_recovers_it(
    tmp_path: Path, openbao: Any, fake_influxctl: Any, daemons: list[DaemonProc]
) -> None:
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=2)
    marker = tmp_path / "paused"
    # The server mints, then the call hangs before printing the token: only the tag can find it.
    sc.fake.add_fault("management create", "pause_after_effect", seconds=60, marker=marker)
    port = _free_port()
    configure(sc, schedule="1s", port=port, daemon='shutdown_timeout = "1s"')
    d = start_daemon(sc, port)
    daemons.append(d)
    wait_until("the paused mint", marker.exists)
    child = int(marker.read_text())
    signalled = time.monotonic()
    assert d.stop() == 0, "a parked run is a clean, planned exit"  # one SIGTERM: parked by the timeout
    assert time.monotonic() - signalled < 5
    assert "parking the run(s) of mgmt" in sc.log_file.read_text()
    wait_until("the influxctl child to be terminated", lambda: not _alive(child), timeout=5)
    runs = rotate_runs(sc)
    assert len(runs) == 1 and runs[0]["state"] == "minting", "parked in the journal"
    tagged = [t for t in sc.fake.tokens() if t["description"].startswith("rotator:mgmt:")]
    assert len(tagged) == 1 and tagged[0]["revoked_at"] is None
    check_invariants(sc, after_crash=True)

    configure(sc, schedule="1h", port=port, daemon="")
    let_mint_window_pass(sc)  # the child was terminated: none can still mint (issue 10 §1b)
    d2 = start_daemon(sc, port, "-2")
    daemons.append(d2)
    wait_until("recovery", lambda: rotate_runs(sc)[0]["state"] == "failed")
    assert d2.stop() == 0
    assert sc.fake.token_by_id(tagged[0]["id"])["revoked_at"], "the candidate found by its tag is revoked"
    assert sc.current()["token_id"] == sc.bootstrap_id
    assert "rolled back" in sc.log_file.read_text()
    check_invariants(sc, settled=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def test_invalid_files_are_refused_at_start(tmp_path: Path) -> None:
    config = tmp_path / "rotator.toml"
    config.write_text('[daemon]\nlisten = "nowhere"\nsweep = "1m"\n'
                      + POLICY.format(name="p", schedule="soon", extra='window = "2am"'))
    proc = subprocess.run([sys.executable, "-m", "rotator.runners.daemon", "-c", str(config)], capture_output=True,
                          text=True, timeout=30, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2
    assert "daemon.listen: 'nowhere' is not an address" in proc.stderr
    assert "daemon.sweep: Extra inputs are not permitted" in proc.stderr
    assert "policy[0] 'p'.window: '2am' is not a window" in proc.stderr
    assert "policy[0] 'p'.schedule: 'soon' is not a schedule" in proc.stderr, "every problem in one pass"


@pytest.mark.parametrize(("args", "env", "said"), [
    (["--log-file", "/nonexistent-dir/x.log"], {}, "cannot open --log-file"),
    ([], {"ROTATOR_LOG_LEVEL": "verbose"}, "ROTATOR_LOG_LEVEL"),
], ids=["log-file", "log-level"])
def test_the_module_entry_point_reports_bad_logging_settings_as_the_command_does(
        tmp_path: Path, args: list[str], env: dict[str, str], said: str) -> None:
    """``python -m rotator.runners.daemon`` is ``rotator daemon``: a --log-file it cannot open or a bad
    $ROTATOR_LOG_LEVEL is an error with a fix and exit 2, not a traceback."""
    config = tmp_path / "rotator.toml"
    config.write_text(POLICY.format(name="p", schedule="30d", extra=""))
    proc = subprocess.run([sys.executable, "-m", "rotator.runners.daemon", "-c", str(config), *args],
                          capture_output=True, text=True, timeout=30,
                          env={**os.environ, "PYTHONPATH": str(REPO), **env})
    assert proc.returncode == 2, proc.stderr
    assert said in proc.stderr and "fix:" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr


def test_the_module_entry_point_never_echoes_a_token_given_as_the_policy_file(tmp_path: Path) -> None:
    token = "M.V1.abcdefghijklmnopqrst"
    proc = subprocess.run([sys.executable, "-m", "rotator.runners.daemon", "-c", str(tmp_path / token)],
                          capture_output=True, text=True, timeout=30, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2, proc.stderr
    assert token not in proc.stdout + proc.stderr, proc.stderr


# ---------------------------------------------------------------------------------- the pass, in-process
T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


class InlineExecutor(concurrent.futures.Executor):
    """Runs each job at submit time, so a test sees its effect right after tick()."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


@dataclass
class FakeEngine:
    """Stands in for Engine: records calls; rotate() journals a published run like the real one."""

    name: str
    journal: Any
    clock: FakeClock
    calls: list[str]
    fail: list[Exception] = field(default_factory=list)
    #: what revoke_due() and recover() raise, one per call (e.g. the recovery of an open run that fails)
    revoke_fail: list[Exception] = field(default_factory=list)
    holder: str = "here:1:x"
    lease_ttl: timedelta = timedelta(minutes=15)

    def rotate(self, *, expect_last_run: Any = ANY_RUN) -> RunResult:
        """Like Engine.rotate: a preflight read and the "still due?" check, the lease (LeaseBusy:
        nothing done), recovery of open runs first and the check again, the run, the lease released."""
        now = self.clock.now()
        expect = expect_last_run is not ANY_RUN
        seen = self.journal.preflight(self.name, now)
        if expect and seen.last_success != expect_last_run:
            return RunResult(self.name, NOTHING_TO_DO, message="rotated by another rotator meanwhile")
        self.journal.acquire_lease(self.name, self.holder, self.lease_ttl, now)
        try:
            if seen.open_runs:
                self.calls.append(f"recover {self.name}")
                if expect and self.journal.last_success_id(self.name) != expect_last_run:
                    return RunResult(self.name, NOTHING_TO_DO, message="recovery finished it")
            self.calls.append(f"rotate {self.name}")
            if self.fail:
                raise self.fail.pop(0)
            run = RunRecord(f"r{len(self.calls)}", self.name, "done", "rotate", now, now, published_at=now,
                            finished_at=now)
            self.journal.begin_run(run)
            return RunResult(self.name, "done", run.run_id, None, "t", "rotated")
        finally:
            self.journal.release_lease(self.name, self.holder)

    def recover(self) -> list[str]:
        self.calls.append(f"recover {self.name}")
        if self.revoke_fail:
            raise self.revoke_fail.pop(0)
        self.journal.acquire_lease(self.name, self.holder, self.lease_ttl, self.clock.now())
        self.journal.release_lease(self.name, self.holder)
        return []

    def revoke_due(self) -> list[str]:
        self.calls.append(f"revoke {self.name}")
        if self.revoke_fail:
            raise self.revoke_fail.pop(0)
        for rev in self.journal.due_revocations(self.clock.now(), self.name):
            self.journal.update_revocation(rev, state="done", done_at=self.clock.now())
        return []


POLICY = """
[[policy]]
name = "{name}"
schedule = "{schedule}"
grace = "10s"
{extra}
[policy.issuer]
type = "influxctl-management"
[policy.issuer.profile]
product = "clustered"
host = "cluster.test.invalid"
[[policy.store]]
type = "vault-kv2"
url = "http://127.0.0.1:1"
path = "x/{name}"
[policy.store.auth]
method = "token"
token = {{ file = "vault-token" }}
"""


@dataclass
class Harness:
    daemon: Daemon
    clock: FakeClock
    calls: list[str]
    engines: dict[str, FakeEngine]

    def tick(self) -> float:
        self.calls.clear()
        return self.daemon.tick(self.clock.now())


def sample(h: Harness, name: str, **labels: str) -> float | None:
    value: float | None = h.daemon.metrics.registry.get_sample_value(name, labels)
    return value


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    made: list[Daemon] = []

    def make(policies: list[tuple[str, str, str]], daemon: str = "", last: datetime | None = T0,
             executor: concurrent.futures.Executor | None = None) -> Harness:
        config = tmp_path / "rotator.toml"
        config.write_text('[rotator]\njournal = "journal.db"\n[daemon]\naudit = { file = "audit.jsonl" }\n'
                          + daemon + "".join(POLICY.format(name=n, schedule=s, extra=e) for n, s, e in policies))
        journal = open_journal("sqlite:///" + str(tmp_path / "journal.db"))
        for name, _, _ in policies:
            if last is not None:
                journal.begin_run(RunRecord(f"boot-{name}", name, "done", "bootstrap", last, last, published_at=last))
        clock = FakeClock(T0)
        calls: list[str] = []
        engines: dict[str, FakeEngine] = {}

        def factory(policy: Any, cfg: Any, jr: Any, listener: Any) -> FakeEngine:
            engines[policy.name] = FakeEngine(policy.name, jr, clock, calls)
            return engines[policy.name]

        d = Daemon(config, clock=clock, serve_http=False, engine_factory=factory, executor=executor or InlineExecutor(),
                   handle_signals=False)
        d.start()
        made.append(d)
        return Harness(d, clock, calls, engines)

    yield make
    for d in made:
        d.shutdown()


def test_tick_recovers_first_then_rotates_once_when_due(harness: Callable[..., Harness]) -> None:
    h = harness([("a", "1h", ""), ("b", "2h", "")])
    assert h.tick() == pytest.approx(60), "nothing due: sleep until the sweep"
    assert h.calls == [], "on start: recovery only of policies with open runs (none here)"
    wait = h.tick()
    assert h.calls == [] and wait == pytest.approx(60), "nothing due: sleep until the sweep (1h is later)"
    h.clock.advance(timedelta(hours=1))
    h.tick()
    assert h.calls == ["rotate a"]
    assert h.tick() == pytest.approx(60) and h.calls == [], "rotated: due again in an hour, not twice"
    h.clock.advance(timedelta(hours=5))  # b missed several due times: coalesced into one run
    h.tick()
    assert sorted(h.calls) == ["rotate a", "rotate b"]
    assert sample(h, "rotator_schedule_misfires_total", policy="b") == 1, "3h late is past the misfire grace"
    h.tick()
    assert h.calls == []


def test_a_bootstrapped_token_overdue_already_is_rotated_at_once_and_is_no_misfire(
        harness: Callable[..., Harness]) -> None:
    """A person's token created 30 days ago, bootstrapped now under a 1h schedule, is due at once.
    Its rotation is not late for a due time before rotator had the token: no misfire is counted (an
    alert on misfires would fire on every such bootstrap). A due time missed after the publication
    still counts (test_tick_recovers_first_then_rotates_once_when_due)."""
    h = harness([("a", "1h", "")], last=None)
    h.daemon.journal.begin_run(RunRecord("boot-a", "a", "done", "bootstrap", T0, T0, published_at=T0,
                                         token_created_at=T0 - timedelta(days=30)))
    h.clock.advance(timedelta(seconds=61))  # the sweep finds the bootstrap
    seen: list[str] = []
    for _ in range(3):
        h.tick()
        seen += h.calls
    assert seen == ["rotate a"], "due at once"
    assert not sample(h, "rotator_schedule_misfires_total", policy="a"), "no misfire"


def test_a_job_that_waited_is_a_misfire_even_when_a_later_publication_was_seen_meanwhile(
        harness: Callable[..., Harness]) -> None:
    """The lateness counts from the publication the due time was planned from: a manual rotation seen
    while the job waited 3 days for a worker must not hide the 3-day misfire of the run that starts.
    (The engine is made to rotate anyway: a real one finds the due time served, NOTHING_TO_DO, and
    no run of this process starts, which is no misfire: test_daemon_busy_and_reload.py.)"""
    h = harness([("a", "1h", "")])
    rotate = h.engines["a"].rotate
    h.engines["a"].rotate = lambda **_: rotate(expect_last_run=ANY_RUN)  # type: ignore[method-assign]
    h.tick()
    planned = h.daemon.journal.last_success("a")
    assert planned is not None
    due = T0 + timedelta(hours=1)
    h.clock.advance(timedelta(days=3))
    now = h.clock.now()
    manual = RunRecord("manual", "a", "done", "rotate", now - timedelta(minutes=2), now - timedelta(minutes=2),
                       published_at=now - timedelta(minutes=2))
    h.daemon.journal.begin_run(manual)
    h.daemon._set_last("a", h.daemon._views["a"], h.daemon.journal.last_success("a"))
    assert h.daemon._views["a"].published_at == manual.published_at, "the daemon has seen it"
    h.daemon._rotate("a", h.engines["a"], planned_from=planned.run_id, target=due)
    assert h.calls == ["rotate a"]
    assert sample(h, "rotator_schedule_misfires_total", policy="a") == 1


class _HeldExecutor(concurrent.futures.Executor):
    """Keeps each job until the test runs it: the job waits for a worker meanwhile."""

    def __init__(self) -> None:
        self.held: list[Callable[[], Any]] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # noqa: BLE001  (the future carries it)
                future.set_exception(exc)

        self.held.append(run)
        return future


def test_a_due_time_is_fixed_when_its_job_is_submitted_not_when_a_worker_runs_it(
        harness: Callable[..., Harness]) -> None:
    """A bootstrapped overdue token's rotation is due from its publication. While its job waits for a
    worker, the daemon's view of the policy may change (another replica rotates): the job must still
    measure from the publication it was planned from, not count a 30-day misfire. (The engine is
    made to rotate anyway, so that the run starts and its lateness counts.)"""
    held = _HeldExecutor()
    h = harness([("a", "1h", "")], last=None, executor=held)
    rotate = h.engines["a"].rotate
    h.engines["a"].rotate = lambda **_: rotate(expect_last_run=ANY_RUN)  # type: ignore[method-assign]
    h.daemon.journal.begin_run(RunRecord("boot-a", "a", "done", "bootstrap", T0, T0, published_at=T0,
                                         token_created_at=T0 - timedelta(days=30)))
    h.clock.advance(timedelta(seconds=61))  # the sweep finds the bootstrap
    for _ in range(3):
        h.daemon.tick(h.clock.now())
        if held.held:
            break
    [job] = held.held
    h.clock.advance(timedelta(seconds=30))  # waiting for a worker; another replica rotates meanwhile
    now = h.clock.now()
    h.daemon.journal.begin_run(RunRecord("other", "a", "done", "rotate", now, now, published_at=now))
    h.daemon._set_last("a", h.daemon._views["a"], h.daemon.journal.last_success("a"))
    job()
    assert h.calls == ["rotate a"]
    assert sample(h, "rotator_schedule_delay_seconds_count") == 1
    assert not sample(h, "rotator_schedule_misfires_total", policy="a"), "30 s after its publication: no misfire"


def test_tick_wakes_exactly_when_a_revocation_is_due(harness: Callable[..., Harness]) -> None:
    h = harness([("a", "1h", "")], daemon='sweep_interval = "2h"\n')
    h.daemon.journal.schedule_revocation(Revocation("a", "t-old", "r0", "superseded", T0 + timedelta(seconds=7.5),
                                                    "pending"))
    assert h.tick() == pytest.approx(7.5), "the first pass's sweep reads it"
    h.clock.advance(timedelta(seconds=7.5))
    h.tick()
    assert h.calls == ["revoke a"]
    assert h.tick() == pytest.approx(3600 - 7.5) and h.calls == []


def test_tick_backs_off_after_failures(harness: Callable[..., Harness]) -> None:
    h = harness([("a", "1h", "")], daemon='failure_backoff = "10s"\n', last=None)  # never rotated: due now
    h.engines["a"].fail += [TransientError("issuer down"), TransientError("issuer down")]
    h.tick()
    assert h.calls == ["rotate a"]
    wait = h.tick()
    assert h.calls == [] and 7.5 <= wait <= 10, "first retry after 75-100% of failure_backoff"
    h.clock.advance(timedelta(seconds=10))
    h.tick()
    assert h.calls == ["rotate a"]
    wait = h.tick()
    assert h.calls == [] and 15 <= wait <= 20, "then it doubles"
    assert sample(h, "rotator_consecutive_failures", policy="a") == 2
    h.clock.advance(timedelta(seconds=20))
    h.tick()
    assert h.calls == ["rotate a"] and sample(h, "rotator_consecutive_failures", policy="a") == 0
    events = [json.loads(line) for line in (h.daemon.path.parent / "audit.jsonl").read_text().splitlines()]
    rotations = [(e["result"], e.get("error")) for e in events if e["step"] == "rotate"]
    assert rotations == [("failed", "issuer down"), ("failed", "issuer down"), ("ok", None)]


def test_a_failing_revocation_job_backs_off_instead_of_running_at_every_pass(
        harness: Callable[..., Harness]) -> None:
    """revoke_due() that fails before the revocation records its own next try (an open run whose
    recovery fails, the journal): the revocation stays due in the past, and the job waits as a failed
    rotation does instead of being started again at every pass (invariant 6: no endless loop)."""
    h = harness([("a", "1h", "")], daemon='failure_backoff = "10s"\nsweep_interval = "2h"\n')
    h.daemon.journal.schedule_revocation(Revocation("a", "t-old", "r0", "superseded", T0 + timedelta(seconds=5),
                                                    "pending"))
    h.engines["a"].revoke_fail += [TransientError("recovery of run r9 failed: issuer down")] * 2
    h.tick()
    h.clock.advance(timedelta(seconds=5))
    h.tick()
    assert h.calls == ["revoke a"]
    for _ in range(3):
        wait = h.tick()
        assert h.calls == [] and 7.5 <= wait <= 10, "first retry after 75-100% of failure_backoff"
    h.clock.advance(timedelta(seconds=10))
    h.tick()
    assert h.calls == ["revoke a"]
    wait = h.tick()
    assert h.calls == [] and 15 <= wait <= 20, "then it doubles"
    h.clock.advance(timedelta(seconds=20))
    h.tick()
    assert h.calls == ["revoke a"], "the cause fixed: the same job succeeds"
    assert [r.state for r in h.daemon.journal.revocations("a")] == ["done"]
    h.clock.advance(timedelta(seconds=1))
    h.tick()
    assert h.calls == [], "nothing is due any more"


def test_a_failing_recovery_of_an_open_run_backs_off_across_sweeps(harness: Callable[..., Harness]) -> None:
    """The sweep (every minute here) starts the recovery of a policy's open run; while that keeps
    failing, it is started again only after the backoff, not at every sweep."""
    h = harness([("a", "1h", "")], daemon='sweep_interval = "1m"\nfailure_backoff = "10m"\n')
    h.daemon.journal.begin_run(RunRecord("left", "a", "minting", "rotate", T0, T0))  # a dead process's
    h.engines["a"].revoke_fail += [TransientError("recovery of run left failed: issuer down")] * 2
    h.tick()
    assert h.calls == ["recover a"]
    for _ in range(7):
        h.clock.advance(timedelta(minutes=1))
        h.tick()
        assert h.calls == [], "within 75% of failure_backoff: no sweep starts it again"
    seen = []
    for _ in range(4):
        h.clock.advance(timedelta(minutes=1))
        h.tick()
        seen += h.calls
    assert seen == ["recover a"], seen


def test_a_failure_count_without_bound_keeps_the_wait_at_its_cap(harness: Callable[..., Harness]) -> None:
    """Days of failures in a row: the doubled wait stays at failure_backoff_max (a timedelta times
    2**44 overflows, which had left the retry time in the past: a retry at every pass)."""
    h = harness([("a", "1h", "")], daemon='failure_backoff = "10s"\nfailure_backoff_max = "1m"\n', last=None)
    h.engines["a"].fail += [TransientError("issuer down")] * 60
    for failures in range(1, 61):
        h.tick()
        assert h.calls == ["rotate a"]
        wait = h.tick()
        assert h.calls == [] and (45 if failures > 3 else 7.5) <= wait <= 60, (failures, wait)
        h.clock.advance(timedelta(seconds=60))
    h.tick()
    assert h.calls == ["rotate a"] and sample(h, "rotator_consecutive_failures", policy="a") == 0


class HeldExecutor(concurrent.futures.Executor):
    """Keeps each job until the test runs it (no free worker until then)."""

    def __init__(self) -> None:
        self.held: dict[str, tuple[Callable[[], Any], concurrent.futures.Future[Any]]] = {}

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.held[args[0]] = (lambda: fn(*args, **kwargs), future)  # Daemon._job(name, ...)
        return future

    def run(self, name: str) -> None:
        fn, future = self.held.pop(name)
        future.set_result(fn())


def test_a_job_waiting_for_a_worker_is_not_a_stuck_run(harness: Callable[..., Harness], monkeypatch: Any) -> None:
    """The watchdog's "stuck" (a 503 from /healthz, a restart) is a job that runs past its limit; a job
    queued behind busy workers holds no lease and waits its turn, however long."""
    workers = HeldExecutor()
    h = harness([("a", "1h", ""), ("b", "1h", "")], last=None, executor=workers)
    h.tick()
    assert sorted(workers.held) == ["a", "b"], "both due, neither started"
    real = time.monotonic

    def stuck_after(seconds: float) -> Any:
        monkeypatch.setattr(time, "monotonic", lambda: real() + seconds)
        try:
            return h.daemon.progress()[1].get("stuck")
        finally:
            monkeypatch.setattr(time, "monotonic", real)

    assert stuck_after(3600) is None
    started, release = threading.Event(), threading.Event()
    engine = h.engines["a"]
    rotate = engine.rotate
    engine.rotate = lambda **kw: (started.set(), release.wait(30), rotate(**kw))[2]  # type: ignore[method-assign]
    running = threading.Thread(target=workers.run, args=("a",))
    running.start()
    try:
        assert started.wait(10)
        assert list(stuck_after(3600)) == ["a"], "the running one only"
    finally:
        release.set()
        running.join(10)
    workers.run("b")
    assert stuck_after(3600) is None


def test_planning_a_policy_again_does_not_grow_the_queue(harness: Callable[..., Harness]) -> None:
    """Each finished job, sweep change or busy retry plans its policy again: at an unchanged time that
    adds nothing to the scheduler's queue, and entries left by changed times are dropped before they
    outnumber the live ones (a long-running daemon's memory)."""
    h = harness([("a", "1h", ""), ("b", "30d", "")], daemon='sweep_interval = "2h"\n')
    h.daemon.journal.schedule_revocation(Revocation("a", "t-old", "r0", "superseded", T0 + timedelta(days=7),
                                                    "pending"))
    h.tick()
    size = len(h.daemon._queue)
    assert size == 3, "a's rotation and revocation, b's rotation"
    for _ in range(1000):
        h.daemon._plan("a")
        h.daemon._plan("b")
    assert len(h.daemon._queue) == size
    for minutes in range(1000):  # a time that moves (a retry time, say) leaves an entry behind each time
        h.daemon._tracks.setdefault("b", _Track()).retry_at = T0 + timedelta(days=40, minutes=minutes)
        h.daemon._plan("b")
        h.tick()
        assert len(h.daemon._queue) <= 2 * size + 65
    h.clock.advance(timedelta(hours=1))
    h.tick()
    assert h.calls == ["rotate a"], "what is queued still runs when due"


def test_a_clock_step_back_neither_stops_the_sweep_nor_stretches_a_retry(harness: Callable[..., Harness]) -> None:
    """The daemon's timers are times of day: after the clock steps back 6 hours (NTP, a VM restored)
    the next sweep (which reads other processes' changes) and a failed rotation's retry still come
    within their own intervals, not 6 hours later."""
    h = harness([("a", "1h", "")], daemon='sweep_interval = "1m"\nfailure_backoff = "10s"\n'
                'failure_backoff_max = "1m"\n', last=None)
    h.engines["a"].fail += [TransientError("issuer down")]
    h.tick()
    assert h.calls == ["rotate a"]
    h.daemon._credential_pause["a"] = h.clock.now() + timedelta(seconds=5)  # a store credential's pause
    h.clock.advance(-timedelta(hours=6))
    h.tick()
    assert h.calls == []
    assert h.daemon._credential_pause["a"] <= h.clock.now() + timedelta(seconds=5), "its pause follows the clock"
    # Written by another process: only a sweep reads it.
    h.daemon.journal.schedule_revocation(Revocation("a", "t-old", "r0", "superseded", h.clock.now(), "pending"))
    seen = []
    for _ in range(2):
        h.clock.advance(timedelta(minutes=1))
        h.tick()
        seen += h.calls
    assert sorted(seen) == ["revoke a", "rotate a"], seen


def test_a_clock_step_back_right_after_a_busy_lease_holds_the_policy_back_seconds_not_an_hour(
        harness: Callable[..., Harness]) -> None:  # fmt: skip
    """A LeaseBusy holds everything of the policy back for a second or two (busy_until); the step back
    capped it at failure_backoff_max (1 h) instead, and a revocation due right after the step waited."""
    h = harness([("a", "1h", "")], daemon='failure_backoff_max = "1h"\n')
    h.tick()
    h.clock.advance(timedelta(hours=1))
    h.daemon.journal.acquire_lease("a", "elsewhere:1:y", timedelta(minutes=2), h.clock.now())
    h.tick()
    assert h.calls == [] and h.daemon._tracks["a"].busy_until is not None
    h.daemon.journal.release_lease("a", "elsewhere:1:y")
    h.clock.advance(-timedelta(hours=3))
    h.tick()
    busy_until = h.daemon._tracks["a"].busy_until
    assert busy_until is not None and busy_until - h.clock.now() <= timedelta(seconds=5)
    # Written by another process: the next sweep reads it.
    h.daemon.journal.schedule_revocation(Revocation("a", "t-old", "r0", "superseded", h.clock.now(), "pending"))
    seen = []
    for _ in range(2):
        h.clock.advance(timedelta(minutes=1))
        h.tick()
        seen += h.calls
    assert seen == ["revoke a"], seen


def test_tick_skips_a_policy_another_rotator_holds(harness: Callable[..., Harness]) -> None:
    h = harness([("a", "1h", "")])
    h.tick()
    h.daemon.journal.acquire_lease("a", "elsewhere:1:y", timedelta(hours=2), T0)
    h.clock.advance(timedelta(hours=1))
    h.tick()
    assert h.calls == [], "LeaseBusy: no rotation (the engine takes over a dead process's lease itself)"
    wait = h.tick()
    assert h.calls == [] and 1 <= wait <= 2, "looked at again a second or two later"
    h.daemon.journal.release_lease("a", "elsewhere:1:y")
    h.clock.advance(timedelta(seconds=2))
    h.tick()
    assert h.calls == ["rotate a"]


def test_tick_skips_a_due_time_another_replica_already_served(harness: Callable[..., Harness]) -> None:
    h = harness([("a", "1h", "")])
    h.tick()
    h.clock.advance(timedelta(hours=1))
    # The planned run was based on the bootstrap; another replica rotates first.
    planned = h.daemon.journal.last_success("a")
    now = h.clock.now()
    h.daemon.journal.begin_run(RunRecord("other", "a", "done", "rotate", now, now, published_at=now))
    h.calls.clear()
    h.daemon._rotate("a", h.engines["a"], planned_from=planned.run_id if planned else None, target=now)
    assert h.calls == [], "re-checked under the lease: not rotated twice"


def test_tick_rereads_the_journal_before_a_due_rotation(harness: Callable[..., Harness]) -> None:
    h = harness([("a", "1h", "")], daemon='sweep_interval = "2h"\n')
    h.tick()
    # Another replica rotates after 30 minutes; this daemon's cached plan still says T0 + 1h.
    at = T0 + timedelta(minutes=30)
    h.daemon.journal.begin_run(RunRecord("other", "a", "done", "rotate", at, at, published_at=at))
    h.clock.advance(timedelta(hours=1))
    assert h.tick() == pytest.approx(1800) and h.calls == [], "due again at 13:30, not now"
    h.clock.advance(timedelta(minutes=30))
    h.tick()
    assert h.calls == ["rotate a"]


def test_tick_rotates_inside_the_window(harness: Callable[..., Harness]) -> None:
    h = harness([("a", "1h", 'window = "14:00-14:30"')])  # nominal due 13:00, waits for 14:00-14:30
    h.tick()
    wait = h.tick()
    planned = h.daemon._planned["a"]
    assert datetime(2026, 3, 2, 14, 0, tzinfo=UTC) <= planned < datetime(2026, 3, 2, 14, 30, tzinfo=UTC)
    assert wait == pytest.approx(60)
    h.clock.advance(planned - h.clock.now() - timedelta(seconds=1))
    h.tick()
    assert h.calls == []
    h.clock.advance(timedelta(seconds=1))
    h.tick()
    assert h.calls == ["rotate a"]


def test_sweep_recovers_runs_left_open(harness: Callable[..., Harness]) -> None:
    h = harness([("a", "1h", "")], daemon='sweep_interval = "30s"\n')
    h.tick()
    h.daemon.journal.begin_run(RunRecord("dead", "a", "minted", "rotate", T0, T0))
    h.tick()
    assert h.calls == [], "not before the sweep"
    h.clock.advance(timedelta(seconds=30))
    h.tick()
    assert h.calls == ["recover a"]


def test_reload_from_a_tick_keeps_the_old_config_when_invalid(harness: Callable[..., Harness]) -> None:
    h = harness([("a", "1h", "")])
    h.tick()
    good = h.daemon.path.read_text()
    h.daemon.path.write_text(good.replace('"1h"', '"whenever"'))
    h.daemon.request_reload()
    h.tick()
    assert sample(h, "rotator_config_reload_failures_total") == 1
    assert h.daemon.policies[0].schedule.text == "1h"
    h.daemon.path.write_text(good.replace('"1h"', '"2h"'))
    h.daemon.request_reload()
    h.tick()
    assert h.daemon.policies[0].schedule.text == "2h" and sample(h, "rotator_config_last_reload_successful") == 1
    assert re.search(r'"step":"reload","result":"failed"', (h.daemon.path.parent / "audit.jsonl").read_text())


# ---------------------------------------------------------------------------------- leaks, starvation, wedges
LEAKY_HOOK = """import json, os, sys, time, urllib.request
time.sleep(0.5)  # after the run ended: nothing of the run keeps the value alive any more
cfg = json.load(open("leaky-hook.json"))
req = urllib.request.Request(cfg["url"] + "/v1/secret/data/" + cfg["path"], headers={"X-Vault-Token": cfg["token"]})
token = json.load(urllib.request.urlopen(req))["data"]["data"]["token"]
print("reloaded with", token)
print("error: consumer rejected", token, file=sys.stderr)
sys.exit(3)
"""


def test_hook_output_holding_the_published_token_never_leaks(
    tmp_path: Path, openbao: Any, fake_influxctl: Any, daemons: list[DaemonProc]
) -> None:
    """Issue 11.1: a post-publish hook prints the token it was told about; neither the daemon's log
    and stderr, nor the audit file, nor the failure webhook's body carry it."""
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=60)
    (tmp_path / "hmac-key").write_text(SECRET)
    (tmp_path / "leaky-hook.py").write_text(LEAKY_HOOK)
    (tmp_path / "leaky-hook.json").write_text(json.dumps({"url": openbao.url, "path": sc.kv_path,
                                                          "token": openbao.root_token}))
    port = _free_port()
    with receiver() as rx:
        configure(sc, schedule="2s", port=port, daemon=f"""
[daemon.audit]
file = "audit.jsonl"
[[daemon.webhooks]]
url = "{rx.url}"
on = ["failure"]
secret = {{ file = "hmac-key" }}
backoff = "0s"
[[daemon.hooks]]
command = [{json.dumps(sys.executable)}, "leaky-hook.py"]
timeout = "10s"
""")
        d = start_daemon(sc, port)
        daemons.append(d)
        wait_until("the hook's failure", lambda: [r for r in audit(sc) if r["step"] == "hook"], timeout=30)
        got = rx.wait_for(1)
        published = sc.current()["token"]
        assert d.stop() == 0
    hook = next(r for r in audit(sc) if r["step"] == "hook")
    assert hook["result"] == "failed" and hook["exit_code"] == 3 and hook["output_chars"] > len(published)
    assert hook["token_id"] in {v["token_id"] for v in sc.versions()}
    bodies = [delivery.body.decode() for delivery in got]
    assert any('"step":"hook"' in body for body in bodies)
    audit_text = (tmp_path / "audit.jsonl").read_text()
    for name, text in [("audit", audit_text), *((f"webhook {i}", b) for i, b in enumerate(bodies)),
                       *sc.written().items()]:
        assert published not in text, f"the published token leaked into {name}"
    check_invariants(sc)


def _half_sent(port: int) -> socket.socket | None:
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect(("127.0.0.1", port))
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finished
    except OSError:
        s.close()
        return None
    return s


def test_idle_connections_cannot_starve_the_endpoint_or_the_rotation(
    tmp_path: Path, openbao: Any, fake_influxctl: Any, daemons: list[DaemonProc]
) -> None:
    """Issue 11.2: with a 256 open-file limit, 400 half-sent requests neither take /healthz down nor
    make the next rotation fail with "Too many open files"; idle connections are closed."""
    import resource

    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=60)
    port = _free_port()
    configure(sc, schedule="6s", port=port, daemon="")
    out, err = sc.dir / "daemon.out", sc.dir / "daemon.err"
    argv = [sys.executable, "-m", "rotator.runners.daemon", "-c", str(sc.config), "--log-file", str(sc.log_file)]
    limit = 256

    def lower_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen(argv, env=sc.env(), cwd=sc.dir, stdout=o, stderr=e, stdin=subprocess.DEVNULL,
                                start_new_session=True, preexec_fn=lower_limit)
    d = DaemonProc(sc, port, proc, out, err)
    daemons.append(d)
    d.wait_ready()
    before = sum(1 for r in rotate_runs(sc) if r["published_at"])
    flood = [s for s in (_half_sent(port) for _ in range(400)) if s is not None]
    assert len(flood) >= 300, "the flood itself could not connect"
    status, body = d.get("/healthz")
    assert status == 200 and json.loads(body)["alive"] is True, "a probe gets through during the flood"
    open_fds = len(os.listdir(f"/proc/{proc.pid}/fd"))
    assert open_fds < limit // 2, f"the daemon holds {open_fds} descriptors during the flood"
    wait_until("a rotation after the flood", lambda: sum(1 for r in rotate_runs(sc) if r["published_at"]) > before,
               timeout=20)
    assert all(r["state"] in ("published", "done") for r in rotate_runs(sc))
    # Every idle connection is closed within the deadline (10 s), evicted ones at once.
    deadline = time.monotonic() + 15
    for s in flood:
        s.settimeout(max(deadline - time.monotonic(), 0.1))
        try:
            data = s.recv(100)
        except TimeoutError:
            pytest.fail("an idle connection outlived the connection deadline")
        except OSError:
            data = b""  # reset: closed too
        finally:
            s.close()
        assert data == b"", "a half-sent request gets no answer, only a close"
    assert d.get("/healthz")[0] == 200
    assert d.stop() == 0
    assert "Too many open files" not in sc.log_file.read_text() + err.read_text()
    check_invariants(sc)


def test_a_wedged_run_fails_liveness_and_dumps_every_thread(
    tmp_path: Path, openbao: Any, fake_influxctl: Any, daemons: list[DaemonProc]
) -> None:
    """Issue 15.5: a run stuck on a Vault that accepts and never answers (a blackhole) turns
    /healthz and /readyz to 503 and rotator_watchdog_stalled to 1 once it outlives twice the lease
    TTL, with every thread's stack on stderr; once Vault answers again, all is well again."""
    from tests.faultproxy import fault_proxy

    host, vault_port = openbao.url.removeprefix("http://").split(":")
    with fault_proxy((host, int(vault_port))) as proxy:
        sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=60)
        port = _free_port()
        configure(sc, schedule="2s", port=port, daemon="")
        text = sc.config.read_text().replace('lease_ttl = "30s"', 'lease_ttl = "5s"')
        sc.config.write_text(text.replace(f'url = "{openbao.url}"', f'url = "{proxy.url}"\ntimeout_s = 60'))
        d = start_daemon(sc, port)
        daemons.append(d)
        assert json.loads(d.get("/healthz")[1])["stalled"] is False
        proxy.mode = "blackhole"
        stalled_at = wait_until("the watchdog", lambda: d.get("/healthz")[0] == 503 and time.monotonic(),
                                timeout=30, every=0.2)
        status, body = d.get("/healthz")
        detail = json.loads(body)
        assert status == 503 and detail["stalled"] is True and detail["stuck"]["mgmt"]["running_s"] >= 10
        assert d.get("/readyz")[0] == 503
        assert d.metric("rotator_watchdog_stalled") == 1
        dump = wait_until("the thread dump", lambda: "most recent call first" in d.err.read_text() and
                          d.err.read_text(), timeout=5)
        assert "rotator watchdog: no progress" in dump, dump
        assert "adapters/vault/kv2.py" in dump, "the stacks say where it hangs"
        proxy.mode = "reset"  # the hung call fails (connection reset): the run retries
        proxy.mode = "pass"
        wait_until("progress again", lambda: d.get("/healthz")[0] == 200, timeout=30, every=0.2)
        assert time.monotonic() - stalled_at < 30
        assert d.metric("rotator_watchdog_stalled") == 0
        assert d.stop() == 0
    check_invariants(sc)


def test_a_journal_whose_wal_flush_failed_fails_liveness_and_readiness(
        harness: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed fdatasync of the SQLite WAL leaves no later commit durable, and only opening the
    journal again clears that: /healthz fails (Kubernetes restarts the daemon), /readyz says why."""
    from rotator.core import group_sync
    from rotator.core.errors import JournalError

    h = harness([("a", "1h", "")])
    assert h.daemon.liveness()[0] is True
    h.daemon._stop_if_durability_lost()  # what the probe thread runs every second, after its check
    assert h.daemon.exit_status == 0 and not h.daemon._stopping

    def failing(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(group_sync, "_datasync", failing)
    with pytest.raises(JournalError, match="could not make it durable"):
        h.daemon.journal.acquire_lease("a", "probe", timedelta(minutes=1), T0)
    alive, detail = h.daemon.liveness()
    assert alive is False and "Input/output error" in detail["journal"]
    h.daemon._check_journal()
    ready, checks = h.daemon.readiness()
    assert ready is False and "could not make it durable" in checks["journal"]
    # Under systemd nothing reads /healthz: the daemon stops, to exit non-zero and be restarted.
    h.daemon._stop_if_durability_lost()
    assert h.daemon.exit_status == EXIT_JOURNAL_LOST == 74 and h.daemon._stopping
    # An operator's SIGTERM after that is the first signal, not the second that parks runs at once.
    h.daemon.request_stop()
    assert not h.daemon._forced
    h.daemon.request_stop()
    assert h.daemon._forced


def test_a_flush_failing_during_the_shutdown_still_exits_74(
        harness: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe thread is stopped by then: shutdown() looks once more."""
    from rotator.core import group_sync
    from rotator.core.errors import JournalError

    h = harness([("a", "1h", "")])
    h.daemon.request_stop()

    def failing(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(group_sync, "_datasync", failing)
    with pytest.raises(JournalError):
        h.daemon.journal.acquire_lease("a", "a run's last commit", timedelta(minutes=1), T0)
    h.daemon.shutdown()
    assert h.daemon.exit_status == EXIT_JOURNAL_LOST


def test_the_daily_prune_runs_beside_the_pass_and_stops_with_the_daemon(
        harness: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch) -> None:
    """A prune of a long history takes minutes: due rotations do not wait for it, a pass while it
    runs starts no second one, and a stopping daemon tells it to stop and waits for it to return
    before it closes the journal."""
    from rotator.core import audit_chain

    h = harness([("a", "1h", "")], last=T0 - timedelta(hours=2))  # due now
    in_prune, told_to_stop, release = threading.Event(), threading.Event(), threading.Event()

    def slow_prune(journal: Any, cutoff: str, now: str, *, stop: Callable[[], bool]) -> Any:
        in_prune.set()
        while not stop():  # batches until the daemon stops
            time.sleep(0.01)
        told_to_stop.set()
        release.wait(30)  # the batch that was going when it stopped
        return audit_chain.PruneResult(0, 0, 0, None, stopped=True)

    monkeypatch.setattr(audit_chain, "prune", slow_prune)
    h.tick()
    assert in_prune.wait(10), "the first pass starts the prune"
    first = h.daemon._prune_thread
    assert first is not None and first.is_alive(), "the pass returned while the prune goes on"
    assert "rotate a" in h.engines["a"].calls, "the due rotation ran meanwhile"
    h.daemon._next_prune = h.clock.now()  # due again
    h.tick()
    assert h.daemon._prune_thread is first, "no second prune while one runs"

    closed: list[bool] = []
    monkeypatch.setattr(h.daemon.journal, "close", lambda: closed.append(True))
    h.daemon.request_stop()
    stopper = threading.Thread(target=h.daemon.shutdown)
    stopper.start()
    assert told_to_stop.wait(10), "the prune was told to stop"
    stopper.join(0.5)
    assert stopper.is_alive() and not closed, "shutdown waits for the prune's batch before closing the journal"
    release.set()
    stopper.join(10)
    assert not stopper.is_alive() and closed == [True] and not first.is_alive()


def test_a_second_signal_does_not_wait_for_the_prune(
        harness: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch) -> None:
    """While shutdown waits for the prune's batch, a second SIGTERM ends the wait: the process ends
    (the batch in flight rolls back), and the journal the prune still uses is not closed under it."""
    from rotator.core import audit_chain

    h = harness([("a", "1h", "")])
    in_prune, release = threading.Event(), threading.Event()

    def stuck_prune(journal: Any, cutoff: str, now: str, *, stop: Callable[[], bool]) -> Any:
        in_prune.set()
        release.wait(30)
        return audit_chain.PruneResult(0, 0, 0, None, stopped=True)

    monkeypatch.setattr(audit_chain, "prune", stuck_prune)
    h.tick()
    assert in_prune.wait(10)
    closed: list[bool] = []
    monkeypatch.setattr(h.daemon.journal, "close", lambda: closed.append(True))
    h.daemon.request_stop()
    stopper = threading.Thread(target=h.daemon.shutdown)
    stopper.start()
    stopper.join(0.5)
    assert stopper.is_alive(), "the first signal waits for the prune"
    h.daemon._forced = True  # what the second SIGTERM's handler sets
    stopper.join(5)
    assert not stopper.is_alive() and not closed, "no wait after the second; the prune's journal left open"
    release.set()


#: Loaded by the daemon's interpreter (PYTHONPATH): its WAL flushes fail while the flag file exists.
FAILING_DISK = """
import errno, os
from pathlib import Path
from rotator.core import group_sync
_flag, _real = Path(os.environ["ROTATOR_TEST_DISK_FAILS"]), group_sync._datasync
def _datasync(fd):
    if _flag.exists():
        raise OSError(errno.EIO, "Input/output error")
    _real(fd)
group_sync._datasync = _datasync
"""


def test_a_daemon_whose_journal_flush_fails_exits_non_zero_and_a_restart_carries_on(
    tmp_path: Path, openbao: Any, fake_influxctl: Any, daemons: list[DaemonProc]
) -> None:
    """A disk error on the WAL's fdatasync: the daemon stops with exit status 74 (what systemd's
    Restart=on-failure restarts), having done no side effect after the lost commit; once the disk
    works, the same command recovers and rotates again."""
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=2)
    inject, flag = tmp_path / "inject", tmp_path / "disk-fails"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(FAILING_DISK)
    env = sc.env()
    env.update(PYTHONPATH=f"{inject}{os.pathsep}{env['PYTHONPATH']}", ROTATOR_TEST_DISK_FAILS=str(flag))
    port = _free_port()
    configure(sc, schedule="1s", port=port, daemon="")
    d = start_daemon(sc, port, env=env)
    daemons.append(d)
    wait_until("a first rotation", lambda: any(r["published_at"] for r in rotate_runs(sc)))
    flag.touch()  # the disk fails from here on
    failed_at = time.monotonic()
    code = d.proc.wait(timeout=30)
    assert code == 74, d.err.read_text()[-2000:]
    assert time.monotonic() - failed_at < 15
    d.stop()
    log = sc.log_file.read_text()
    assert "cannot make a commit durable any more" in log and "exit status 74" in log
    check_invariants(sc, after_crash=True)
    published = sum(1 for r in rotate_runs(sc) if r["published_at"])

    flag.unlink()  # the disk is fixed (or the journal moved): the same command again
    # The run whose MINTING commit was not made durable may have a child minting, as far as
    # recovery can know: it searches the run's tag until the mint window has passed.
    let_mint_window_pass(sc)
    d2 = start_daemon(sc, port, "-2", env=env)
    daemons.append(d2)
    wait_until("a rotation after the restart",
               lambda: sum(1 for r in rotate_runs(sc) if r["published_at"]) > published, timeout=30)
    assert d2.stop() == 0
    still_open = [r for r in rotate_runs(sc) if r["state"] in RunState.OPEN]
    assert not still_open, f"the restart ended every run the failed disk interrupted: {still_open}"
    check_invariants(sc)


def test_systemds_watchdog_is_fed_only_while_the_daemon_makes_progress(
        harness: Callable[..., Harness], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rotator.runners.systemd_notify import SystemdNotify

    h = harness([("a", "1h", "")])
    sock = notify_socket(tmp_path / "notify")
    try:
        h.daemon.systemd = SystemdNotify(str(tmp_path / "notify"), watchdog_s=0.01)
        h.daemon._watchdog_pass()
        assert "WATCHDOG=1" in datagrams(sock, 0.5), "progress: the watchdog is fed"
        monkeypatch.setattr(h.daemon, "progress", lambda: (True, {"stalled": True, "progress_s_ago": 120.0}))
        datagrams(sock, 0.1)
        h.daemon._watchdog_pass()
        assert datagrams(sock, 1.5) == [], "stalled: no more pings (the watchdog thread ran meanwhile too)"
        monkeypatch.undo()
        h.daemon._watchdog_pass()
        assert "WATCHDOG=1" in datagrams(sock, 0.5), "progress again: fed again"
    finally:
        sock.close()


def test_under_systemd_the_daemon_says_ready_feeds_the_watchdog_and_says_stopping(
    tmp_path: Path, openbao: Any, fake_influxctl: Any, daemons: list[DaemonProc]
) -> None:
    """Type=notify with WatchdogSec=: READY=1 once it serves, WATCHDOG=1 at half the interval while it
    runs, STOPPING=1 on SIGTERM; its children never see NOTIFY_SOCKET."""
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=2)
    sock = notify_socket(tmp_path / "notify")
    try:
        env = sc.env()
        env.update(NOTIFY_SOCKET=str(tmp_path / "notify"), WATCHDOG_USEC="1000000")  # WatchdogSec=1s
        port = _free_port()
        seen = tmp_path / "hook-env"
        (tmp_path / "env_hook.py").write_text(
            "import os, pathlib, sys\n"
            f"pathlib.Path({str(seen)!r}).write_text(repr(os.environ.get('NOTIFY_SOCKET')))\n")
        configure(sc, schedule="1s", port=port, daemon=f"""
[[daemon.hooks]]
command = [{json.dumps(sys.executable)}, "env_hook.py"]
timeout = "10s"
""")
        d = start_daemon(sc, port, env=env, wait=False)
        daemons.append(d)
        sock.settimeout(20)
        assert sock.recv(4096).decode() == "READY=1\nSTATUS=rotating 1 policies"
        d.wait_ready()
        pings = [m for m in datagrams(sock, 2.6) if m == "WATCHDOG=1"]
        assert len(pings) >= 4, f"every ~0.5 s (half of WatchdogSec): {pings}"
        wait_until("a hook run", seen.exists)
        assert seen.read_text() == "None", "a child of the daemon does not inherit NOTIFY_SOCKET"
        assert d.stop() == 0  # SIGTERM
        assert "STOPPING=1" in datagrams(sock, 2)
    finally:
        sock.close()
    check_invariants(sc)


def _can_unshare_pid() -> bool:
    try:
        return subprocess.run(["unshare", "--pid", "--fork", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.mark.skipif(not _can_unshare_pid(), reason="needs `unshare --pid` (util-linux, and root or user namespaces)")
def test_a_rotator_in_another_pid_namespace_never_takes_a_live_daemon_s_lease_as_dead(
        tmp_path: Path, openbao: Any, fake_influxctl: Any, daemons: list[DaemonProc]) -> None:
    """A container that shares the host name but not the PID namespace (a sidecar, host networking):
    the daemon's process id means nothing there. Its `recover`, while the daemon mints, must wait for
    the lease instead of taking it as a dead process's."""
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=2)
    marker = tmp_path / "create-started"
    # Long enough for the `recover` below to start and find the lease held (~1 s; 5 leaves room for a loaded machine).
    sc.fake.add_fault("management create", "pause", seconds=5, marker=marker)
    port = _free_port()
    configure(sc, schedule="1s", port=port, daemon="")
    daemon = start_daemon(sc, port)
    daemons.append(daemon)
    wait_until("the mint child", marker.exists, timeout=30)
    proc = subprocess.run(["unshare", "--pid", "--fork", "--kill-child", *sc.argv("recover")], env=sc.env(),
                          cwd=sc.dir, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3 and "is being rotated by" in proc.stderr, (proc.returncode, proc.stderr[-600:])
    assert "taking over the lease of dead process" not in sc.log_file.read_text()
    wait_until("the daemon's rotation", lambda: any(r["state"] == "published" for r in rotate_runs(sc)), timeout=60)
    daemon.stop()
    check_invariants(sc)
