"""End-to-end scenario helpers: a policy on the fake influxctl + a real OpenBao, run through the CLI.

`check_invariants` asserts DESIGN.md's invariants 1-4 from the outside: what the issuer (fake
influxctl state), the store (OpenBao) and the journal say, plus every byte rotator printed.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import hvac

from tests.fakes.influxctl_state import FakeInfluxctl

FAKES = Path(__file__).parent / "fakes"
INFLUXCTL = FAKES / "influxctl"
REPO = Path(__file__).resolve().parents[1]


@dataclass
class Scenario:
    dir: Path
    vault_url: str
    vault_token: str
    fake: FakeInfluxctl
    policy: str = "mgmt"
    kv_path: str = ""
    grace_s: int = 2
    outputs: list[str] = field(default_factory=list)
    bootstrap_value: str = ""
    bootstrap_id: str = ""
    #: a postgresql:// journal instead of the default SQLite file
    journal_url: str | None = None

    @property
    def config(self) -> Path:
        return self.dir / "rotator.toml"

    @property
    def log_file(self) -> Path:
        return self.dir / "rotator.log"

    @property
    def journal_path(self) -> Path:
        return self.dir / "journal.db"

    def write_policy(self, *, issuer_extra: str = "", store_extra: str = "", policy_extra: str = "",
                     verify_timeout: str = "20s", attempts: int = 3, timeout_s: float = 10,
                     second_store: str = "") -> None:
        """Write the policy file; ``second_store`` adds a second vault-kv2 store at that KV path."""
        extra_store = f"""
[[policy.store]]
type = "vault-kv2"
name = "mirror"
url = "{self.vault_url}"
path = "{second_store}"
[policy.store.auth]
method = "token"
token = {{ file = "vault-token" }}
""" if second_store else ""
        self.config.write_text(f"""
[rotator]
journal = "{self.journal_url or 'journal.db'}"
lease_ttl = "30s"
[rotator.retry]
attempts = {attempts}
base_delay = "1s"
max_delay = "2s"

[[policy]]
name = "{self.policy}"
schedule = "1h"
grace = "{self.grace_s}s"
verify_timeout = "{verify_timeout}"
{policy_extra}

[policy.issuer]
type = "influxctl-management"
influxctl = {json.dumps(str(INFLUXCTL))}
timeout_s = {timeout_s}
{issuer_extra}
[policy.issuer.profile]
product = "clustered"
host = "cluster.test.invalid"
port = 443

[[policy.store]]
type = "vault-kv2"
name = "primary"
url = "{self.vault_url}"
path = "{self.kv_path}"
{store_extra}
[policy.store.auth]
method = "token"
token = {{ file = "vault-token" }}
{extra_store}""", encoding="utf-8")

    def env(self, crash_at: str | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "ROTATOR_"))}
        env["FAKE_INFLUXCTL_STATE"] = str(self.fake.path)
        env["PYTHONPATH"] = str(REPO)
        # A private temp dir per scenario: the leftover-config check below sees only this
        # scenario's processes, also when tests run in parallel.
        self.tmpdir.mkdir(exist_ok=True)
        env["TMPDIR"] = str(self.tmpdir)
        if crash_at:
            env["ROTATOR_TEST_CRASH_AT"] = crash_at
        return env

    @property
    def tmpdir(self) -> Path:
        return self.dir / "tmp"

    def cli(self, *args: str, crash_at: str | None = None, timeout: float = 90,
            log_level: str = "debug") -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "rotator.cli", *args]
        if args and args[0] not in ("schema",) and "-c" not in args:
            argv += ["-c", str(self.config)]
        argv += ["--log-level", log_level, "--log-file", str(self.log_file)]
        proc = subprocess.run(argv, capture_output=True, text=True, env=self.env(crash_at), timeout=timeout,
                              cwd=self.dir, stdin=subprocess.DEVNULL)
        self.outputs += [proc.stdout, proc.stderr]
        return proc

    # -- inspection -------------------------------------------------------------------------
    def vault(self) -> hvac.Client:
        return hvac.Client(url=self.vault_url, token=self.vault_token)

    def versions(self) -> list[dict[str, Any]]:
        """Every KV version's payload, oldest first (values included: test-side only)."""
        client = self.vault()
        try:
            meta = client.secrets.kv.v2.read_secret_metadata(path=self.kv_path, mount_point="secret")["data"]
        except hvac.exceptions.InvalidPath:
            return []
        out = []
        for version in sorted(int(v) for v in meta["versions"]):
            data = client.secrets.kv.v2.read_secret_version(
                path=self.kv_path, version=version, mount_point="secret", raise_on_deleted_version=True)
            out.append({"version": version, **data["data"]["data"]})
        return out

    def current(self) -> dict[str, Any]:
        versions = self.versions()
        assert versions, "the store holds no version"
        return versions[-1]

    def journal_rows(self, sql: str) -> list[tuple[Any, ...]]:
        if self.journal_url:
            import psycopg

            with psycopg.connect(self.journal_url) as pg:
                return [tuple(row) for row in pg.execute(sql).fetchall()]
        conn = sqlite3.connect(self.journal_path)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()


def make_scenario(tmp: Path, openbao: Any, fake: FakeInfluxctl, *, grace_s: int = 2,
                  activation_delay_s: float = 0.0, bootstrap: bool = True, journal_url: str | None = None,
                  **policy: Any) -> Scenario:
    fake.init(activation_delay_s=activation_delay_s)
    token_file = tmp / "vault-token"
    token_file.write_text(openbao.root_token)
    token_file.chmod(0o600)
    sc = Scenario(dir=tmp, vault_url=openbao.url, vault_token=openbao.root_token, fake=fake,
                  kv_path=f"influx/{uuid.uuid4().hex[:10]}", grace_s=grace_s, journal_url=journal_url)
    sc.write_policy(**policy)
    if bootstrap:
        sc.bootstrap_value, sc.bootstrap_id = fake.add_token("created by a human for bootstrap")
        first = tmp / "first-token"
        first.write_text(sc.bootstrap_value)
        proc = sc.cli("bootstrap", sc.policy, "--token-file", str(first), "--token-id", sc.bootstrap_id)
        assert proc.returncode == 0, proc.stderr
        first.unlink()
    return sc


def _alive(config_dir: Path) -> bool:
    pid = config_dir.name.removeprefix("rotator-influxctl-").partition("-")[0]
    if not pid.isdigit():
        return True  # not a name this version writes: some other process's, leave it be
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    return True


def _ts(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def check_invariants(sc: Scenario, *, settled: bool = False, after_crash: bool = False) -> None:
    """DESIGN.md invariants 1-4, checked from the issuer, the store, the journal and all output.

    ``settled``: every run is finished and every grace period has passed, so nothing may be
    pending any more (stricter orphan check). ``after_crash``: right after a kill, before
    recovery, a minted-but-unpublished token may still exist (invariant 2 says it *ends up*
    revoked), so the orphan check is skipped.
    """
    versions = sc.versions()
    tokens = {t["id"]: t for t in sc.fake.tokens()}
    # 1. The store's current version holds a token the issuer accepts.
    if versions:
        current = versions[-1]
        problem = sc.fake.problem(current["token"])
        assert problem is None, f"invariant 1: current token {current['token_id']} is not accepted: {problem}"
        assert tokens[current["token_id"]]["revoked_at"] is None
    current_id = versions[-1]["token_id"] if versions else None

    # 2. No orphans: every rotator-minted token is current, pending revocation in grace, or revoked.
    pending = {row[0]: _ts(row[1]) for row in sc.journal_rows(
        "SELECT token_id, due_at FROM revocations WHERE state = 'pending'")}
    published_ids = {v["token_id"] for v in versions}
    for token in tokens.values():
        if not token["description"].startswith(f"rotator:{sc.policy}:") or token["revoked_at"]:
            continue
        if token["id"] == current_id or after_crash:
            continue
        assert token["id"] in published_ids and token["id"] in pending and not settled, (
            f"invariant 2: orphan token {token['id']} ({token['description']}) is active, "
            f"neither current nor pending revocation"
        )

    # 3. Superseded tokens are revoked no sooner than grace after their successor was published.
    published = {row[0]: _ts(row[1]) for row in sc.journal_rows(
        "SELECT old_token_id, published_at FROM runs WHERE old_token_id IS NOT NULL AND published_at IS NOT NULL")}
    for old_id, published_at in published.items():
        token = tokens.get(old_id)
        if token is None or not token["revoked_at"] or published_at is None:
            continue
        revoked_at = _ts(token["revoked_at"])
        assert revoked_at is not None
        assert revoked_at >= published_at + timedelta(seconds=sc.grace_s) - timedelta(milliseconds=50), (
            f"invariant 3: token {old_id} revoked at {revoked_at}, before grace ended "
            f"({published_at} + {sc.grace_s}s)"
        )

    # 4. No token value in anything rotator wrote: stdout, stderr, log file, journal files, and
    # no private influxctl config (it holds a token) outlives a finished command.
    if not after_crash:

        leftovers = [d for d in sc.tmpdir.glob("rotator-influxctl-*") if not _alive(d)]
        assert not leftovers, f"private influxctl configs left behind: {leftovers}"
    values = {v["token"] for v in versions}
    if sc.bootstrap_value:
        values.add(sc.bootstrap_value)
    texts = list(sc.outputs)
    if sc.log_file.exists():
        texts.append(sc.log_file.read_text(errors="replace"))
    for suffix in ("", "-wal", "-shm"):
        path = Path(str(sc.journal_path) + suffix)
        if path.exists():
            texts.append(path.read_bytes().decode("latin-1"))
    for value in values:
        for text in texts:
            assert value not in text, "invariant 4: a token value leaked into output, logs or the journal"
