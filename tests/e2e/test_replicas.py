"""Three daemon replicas share one PostgreSQL journal: 50 policies due every few seconds for a
minute, one replica killed with SIGKILL halfway. Every due rotation happens exactly once, the
killed replica's policies are picked up after the lease TTL, and the invariants hold.

The issuer is tests/replica_issuer.PgIssuer (tokens in a PostgreSQL table) so that the test
measures coordination rather than the start-up of 2,000 influxctl processes on two cores; the
store is the real vault-kv2 adapter against OpenBao, the journal the real PostgreSQL backend.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import hvac
import psycopg
import pytest

from rotator.config import registry
from rotator.config.policy import load_config
from rotator.core.engine import Engine
from rotator.core.journal import open_journal
from rotator.core.secret import Secret
from tests.harness import REPO
from tests.replica_issuer import PgIssuer, setup

POLICIES = 50
INTERVAL_S = 6
GRACE_S = 2
LEASE_TTL_S = 8
RUN_FOR_S = 60
KILL_AT_S = 25


def _policy_file(path: Path, pg_url: str, vault_url: str, kv_prefix: str) -> None:
    blocks = [f"""
[rotator]
journal = "{pg_url}"
lease_ttl = "{LEASE_TTL_S}s"
[rotator.retry]
attempts = 3
base_delay = "1s"
max_delay = "2s"

[daemon]
sweep_interval = "2s"
workers = 4
failure_backoff = "1s"
failure_backoff_max = "2s"
[daemon.audit]
stdout = false
"""]
    for i in range(POLICIES):
        blocks.append(f"""
[[policy]]
name = "p{i:02d}"
schedule = "{INTERVAL_S}s"
grace = "{GRACE_S}s"
verify_timeout = "5s"
[policy.issuer]
type = "test-pg"
dsn = "{pg_url}"
[[policy.store]]
type = "vault-kv2"
url = "{vault_url}"
path = "{kv_prefix}/p{i:02d}"
[policy.store.auth]
method = "token"
token = {{ file = "vault-token" }}
""")
    path.write_text("".join(blocks))


def _start_replica(tmp: Path, n: int) -> subprocess.Popen[str]:
    # Distinct instance names make the replicas behave as on separate hosts: a dead replica's
    # lease is then taken over only after its TTL (on one host a dead pid is taken over at once).
    env = {**os.environ, "PYTHONPATH": str(REPO), "ROTATOR_INSTANCE": f"replica-{n}"}
    log = tmp / f"replica-{n}.log"
    # stderr goes to a file: an unread pipe fills up and blocks the daemon's log writes.
    with open(tmp / f"replica-{n}.stderr", "w") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.replica_issuer", "-c", str(tmp / "rotator.toml"), "--listen",
             "127.0.0.1:0", "--log-level", "info", "--log-file", str(log)],
            env=env, cwd=tmp, stdout=subprocess.DEVNULL, stderr=err, text=True, start_new_session=True,
        )


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_three_replicas_fifty_policies_exactly_once_and_kill9(tmp_path: Path, pg_url: str, openbao: Any) -> None:
    registry.force_register("issuer", "test-pg", PgIssuer)
    (tmp_path / "vault-token").write_text(openbao.root_token)
    kv_prefix = f"replicas/{tmp_path.name}"
    _policy_file(tmp_path / "rotator.toml", pg_url, openbao.url, kv_prefix)
    config = load_config(tmp_path / "rotator.toml")
    names = [p.name for p in config.policies]
    first = setup(pg_url, names)
    journal = open_journal(config.journal_url())
    for policy in config.policies:
        value, token_id = first[policy.name]
        Engine(policy, journal).bootstrap(Secret(value), token_id, None)

    replicas = [_start_replica(tmp_path, n) for n in range(3)]
    started = time.monotonic()
    killed_holder_pid = replicas[0].pid
    try:
        time.sleep(KILL_AT_S)
        # Read while it is stopped, then killed: exactly the leases it held when it died (a poll before the kill
        # could see a lease it released before the kill, a read after it could find none, and check nothing).
        # Each ends at its own expiry, lease_ttl after it was taken or last renewed: maybe sooner than after the kill.
        expiry = _stop_while_holding_a_lease(replicas[0], pg_url, "replica-0:")
        os.killpg(replicas[0].pid, signal.SIGKILL)  # mid-run
        killed_at = time.time()
        assert expiry, "the replica held no lease when stopped: the take-over after its lease expiry is not tested"
        held = set(expiry)
        time.sleep(RUN_FOR_S - KILL_AT_S)
    finally:
        for proc in replicas[1:]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in replicas[1:]:
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        for proc in replicas:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    elapsed = time.monotonic() - started
    for n, proc in enumerate(replicas[1:], start=1):
        err = (tmp_path / f"replica-{n}.stderr").read_text()[-2000:]
        assert proc.returncode == 0, f"replica {n} did not exit cleanly: {err}"

    with psycopg.connect(pg_url) as conn:
        runs = conn.execute(
            "SELECT policy, state, published_at, started_at FROM runs WHERE kind = 'rotate' ORDER BY published_at"
        ).fetchall()
        events = conn.execute("SELECT policy, run_id, step, result, detail FROM events").fetchall()

    published: dict[str, list[float]] = defaultdict(list)
    for policy, state, published_at, _started in runs:
        if published_at is not None and state in ("published", "done"):
            published[policy].append(_epoch(published_at))
    counts = {name: len(published[name]) for name in names}
    total = sum(counts.values())
    # Each policy is due every INTERVAL_S after its previous rotation: about RUN_FOR_S / (INTERVAL_S + latency).
    assert min(counts.values()) >= 5, f"a policy starved: {counts}"
    gaps = [b - a for name in names for a, b in zip(published[name], published[name][1:], strict=False)]
    # Exactly once: a second rotation for the same due time would publish sooner than the interval.
    assert min(gaps) >= INTERVAL_S - 0.5, f"a due time was rotated twice (gap {min(gaps):.2f}s)"
    # None missed: the largest gap is bounded by interval + lease TTL (the killed replica's) + slack.
    assert max(gaps) <= INTERVAL_S + LEASE_TTL_S + 8, f"a policy waited {max(gaps):.1f}s"

    # Runs the killed replica left open were recovered by another replica (none left open).
    open_runs = [r for r in runs if r[1] not in ("published", "done", "failed", "aborted")]
    assert not open_runs, f"unfinished runs left: {open_runs}"

    # Invariants: every store holds an active token; no orphan (tokens not current are revoked or in grace).
    vault = hvac.Client(url=openbao.url, token=openbao.root_token)
    with psycopg.connect(pg_url) as conn:
        tokens = {row[0]: row for row in conn.execute(
            "SELECT id, sha256, policy, description, revoked_at FROM test_tokens").fetchall()}
        pending = {row[0] for row in conn.execute(
            "SELECT token_id FROM revocations WHERE state = 'pending'").fetchall()}
    import hashlib

    current_ids = set()
    for name in names:
        data = vault.secrets.kv.v2.read_secret_version(path=f"{kv_prefix}/{name}", mount_point="secret",
                                                       raise_on_deleted_version=True)["data"]["data"]
        row = tokens[data["token_id"]]
        assert row[1] == hashlib.sha256(data["token"].encode()).hexdigest()
        assert row[4] is None, f"{name}: the current token {data['token_id']} is revoked"
        current_ids.add(data["token_id"])
    for token_id, row in tokens.items():
        if row[4] is None and token_id not in current_ids:
            assert token_id in pending, f"orphan token {token_id} of {row[2]} ({row[3]})"

    # The killed replica's policies: nobody touched them before its lease expired, and they were
    # rotated again soon after.
    for name in held:
        after = [t for t in published[name] if t > killed_at]
        assert after, f"{name} (held by the killed replica) was never rotated again"
        assert after[0] >= expiry[name] - 0.5, (
            f"{name} was rotated {after[0] - killed_at:.1f}s after the kill, inside the dead replica's lease "
            f"(it expired {expiry[name] - killed_at:.1f}s after the kill)")
        assert after[0] <= killed_at + LEASE_TTL_S + INTERVAL_S + 8
    lease_takeovers = sum(1 for e in events if e[2] == "recover")
    print(json.dumps({"replicas": 3, "policies": POLICIES, "interval_s": INTERVAL_S, "ran_s": round(elapsed, 1),
                      "rotations": total, "per_policy_min": min(counts.values()),
                      "per_policy_max": max(counts.values()), "min_gap_s": round(min(gaps), 2),
                      "max_gap_s": round(max(gaps), 2), "recover_events": lease_takeovers,
                      "killed_pid": killed_holder_pid, "held_at_kill": sorted(held),
                      "first_rotation_after_kill_s": {n: round(min(t for t in published[n] if t > killed_at)
                                                               - killed_at, 1) for n in held}}))


def _wait_for_lease_held_by(pg_url: str, prefix: str, timeout: float = 20) -> set[str]:
    """Poll until the replica holds a lease (a run is in flight); the policies it holds."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(pg_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            rows = conn.execute("SELECT policy FROM leases WHERE holder LIKE %s", (prefix + "%",)).fetchall()
            if rows:
                return {r[0] for r in rows}
            time.sleep(0.01)
    raise AssertionError(f"no lease held by {prefix} within {timeout}s")


def _stop_while_holding_a_lease(proc: subprocess.Popen[str], pg_url: str, prefix: str,
                                timeout: float = 20) -> dict[str, float]:
    """SIGSTOP ``proc`` while it holds a lease; the leases it holds then (see _leases_held_by). If it released
    them all between the poll and the stop, it is resumed (SIGCONT) and stopped at its next lease."""
    deadline = time.monotonic() + timeout
    while True:
        _wait_for_lease_held_by(pg_url, prefix, timeout=max(deadline - time.monotonic(), 0.1))
        os.killpg(proc.pid, signal.SIGSTOP)
        time.sleep(0.2)  # a statement it sent before it stopped has reached the server and run by then
        held = _leases_held_by(pg_url, prefix)
        if held or time.monotonic() > deadline:
            return held
        os.killpg(proc.pid, signal.SIGCONT)


def _leases_held_by(pg_url: str, prefix: str) -> dict[str, float]:
    """The policies whose lease ``prefix``'s holder holds, each with the epoch its lease expires at."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        rows = conn.execute("SELECT policy, expires_at FROM leases WHERE holder LIKE %s", (prefix + "%",)).fetchall()
    return {policy: _epoch(expires_at) for policy, expires_at in rows}


def _epoch(text: str) -> float:
    from datetime import UTC, datetime

    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def test_lease_ttl_bounds_takeover() -> None:
    """The bound asserted above is only meaningful if the lease TTL is shorter than the run window."""
    assert timedelta(seconds=LEASE_TTL_S) < timedelta(seconds=RUN_FOR_S - KILL_AT_S)
