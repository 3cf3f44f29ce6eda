"""End-to-end scenario helpers: a policy on the fake influxctl + a real OpenBao, run through the CLI.

`check_invariants` asserts DESIGN.md's invariants 1-4 from the outside: what the issuer (fake
influxctl state), the store (OpenBao) and the journal say, plus every byte rotator printed.

:class:`CliScenario` is what every end-to-end scenario shares (this file's :class:`Scenario`,
tests/e2e/test_e2e_database_tokens.py's ``DbScenario``, tests/e2e/test_e2e_http_issuers.py's
``HttpScenario``, and through ``Scenario`` tests/e2e/test_e2e_management_api.py's ``Pair``): the
``rotator`` subprocess with its environment, every byte it printed, the KV versions in OpenBao,
the journal (SQLite or PostgreSQL), and the pieces of the invariant checks that do not depend on
the issuer (orphans, grace, leaked values, leftover private influxctl configs).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import hvac

from rotator.sandbox.influxctl_state import FakeInfluxctl
from tests.cli_zygote import run_cli

__all__ = [
    "FAKES", "INFLUXCTL", "REPO", "CliScenario", "Scenario", "make_scenario", "check_invariants",
    "finish_and_settle", "settle", "ts", "read_kv_versions", "live_tagged", "revoked_at", "let_mint_window_pass",
]  # fmt: skip

FAKES = Path(__file__).parent / "fakes"
INFLUXCTL = FAKES / "influxctl"
REPO = Path(__file__).resolve().parents[1]


def ts(value: str | None) -> datetime | None:
    """A journal or fake timestamp (ISO 8601, ``Z`` or offset) as an aware UTC datetime."""
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def read_kv_versions(url: str, token: str, path: str) -> list[dict[str, Any]]:
    """Every KV version's payload at ``path``, oldest first (values included: test-side only)."""
    client = hvac.Client(url=url, token=token)
    try:
        meta = client.secrets.kv.v2.read_secret_metadata(path=path, mount_point="secret")["data"]
    except hvac.exceptions.InvalidPath:
        return []
    out = []
    for version in sorted(int(v) for v in meta["versions"]):
        data = client.secrets.kv.v2.read_secret_version(
            path=path, version=version, mount_point="secret", raise_on_deleted_version=True)
        out.append({"version": version, **data["data"]["data"]})
    return out


def _alive(config_dir: Path) -> bool:
    """Whether the process that made ``config_dir`` still runs: it holds the flock() on its lock file."""
    try:
        fd = os.open(config_dir / "lock", os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


@dataclass(kw_only=True)
class CliScenario:
    """A directory with a policy file and journal, a KV path in OpenBao, and ``rotator`` run as a subprocess."""

    dir: Path
    vault_url: str
    vault_token: str
    policy: str = "mgmt"
    kv_path: str = ""
    grace_s: int = 2
    outputs: list[str] = field(default_factory=list)
    bootstrap_id: str = ""
    #: a postgresql:// journal instead of the default SQLite file
    journal_url: str | None = None
    #: More ``[[policy.store]]`` tables (TOML text) after the Vault store "primary", e.g. an
    #: influxctl profile (tests/e2e/test_issuer_matrix.py).
    extra_stores: str = ""
    #: Environment variables (by prefix) a rotator subprocess must not inherit.
    env_drop = ("VAULT_", "ROTATOR_")

    @property
    def config(self) -> Path:
        return self.dir / "rotator.toml"

    @property
    def log_file(self) -> Path:
        return self.dir / "rotator.log"

    @property
    def journal_path(self) -> Path:
        return self.dir / "journal.db"

    @property
    def tmpdir(self) -> Path:
        return self.dir / "tmp"

    # -- policy text ------------------------------------------------------------------------
    def rotator_toml(self, *, attempts: int = 3) -> str:
        """The ``[rotator]`` table: this scenario's journal, fast retries."""
        return f"""
[rotator]
journal = "{self.journal_url or 'journal.db'}"
lease_ttl = "30s"
[rotator.retry]
attempts = {attempts}
base_delay = "1s"
max_delay = "2s"
"""

    def policy_toml(self, *, verify_timeout: str = "20s", extra: str = "") -> str:
        """The ``[[policy]]`` table's head (name, schedule, grace, verify_timeout)."""
        return f"""
[[policy]]
name = "{self.policy}"
schedule = "1h"
grace = "{self.grace_s}s"
verify_timeout = "{verify_timeout}"
{extra}
"""

    def vault_store_toml(self, *, name: str = "primary", path: str = "", extra: str = "") -> str:
        """A ``[[policy.store]]`` table of type vault-kv2 (default: "primary" at this scenario's KV path)."""
        return f"""
[[policy.store]]
type = "vault-kv2"
name = "{name}"
url = "{self.vault_url}"
path = "{path or self.kv_path}"
{extra}
[policy.store.auth]
method = "token"
token = {{ file = "vault-token" }}
"""

    # -- running rotator ----------------------------------------------------------------------
    def extra_env(self) -> dict[str, str]:
        """What a subclass adds to the subprocess environment (e.g. the fake influxctl's state)."""
        return {}

    def env(self, crash_at: str | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(self.env_drop)}
        env.update(self.extra_env())
        env["PYTHONPATH"] = str(REPO)
        # A private temp dir per scenario: the leftover-config check sees only this
        # scenario's processes, also when tests run in parallel.
        self.tmpdir.mkdir(exist_ok=True)
        env["TMPDIR"] = str(self.tmpdir)
        env["ROTATOR_CACHE_DIR"] = str(self.tmpdir / "rotator-cache")  # the status cache, not ~/.cache
        if crash_at:
            env["ROTATOR_TEST_CRASH_AT"] = crash_at
        return env

    def argv(self, *args: str, log_level: str = "debug") -> list[str]:
        argv = [sys.executable, "-m", "rotator.runners.cli", *args]
        if args and args[0] not in ("schema",) and "-c" not in args:
            argv += ["-c", str(self.config)]
        return argv + ["--log-level", log_level, "--log-file", str(self.log_file)]

    def cli(self, *args: str, crash_at: str | None = None, timeout: float = 90,
            log_level: str = "debug") -> subprocess.CompletedProcess[str]:
        proc = run_cli(self.argv(*args, log_level=log_level), env=self.env(crash_at), timeout=timeout, cwd=self.dir)
        self.outputs += [proc.stdout, proc.stderr]
        return proc

    def kill_when(self, args: tuple[str, ...], ready: Callable[[], bool], *, ended: str, never: str) -> None:
        """Run ``rotator *args`` and SIGKILL it (with its children, as a node crash would) once
        ``ready()``; ``ended``/``never`` name what it waits for in the failure messages."""
        proc = subprocess.Popen(self.argv(*args), env=self.env(), cwd=self.dir, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        deadline = time.monotonic() + 30
        while not ready():
            assert proc.poll() is None, f"rotator ended before {ended}: {proc.communicate()}"
            assert time.monotonic() < deadline, never
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)  # rotator and its child processes, as a node crash would
        out, err = proc.communicate(timeout=10)
        self.outputs += [out, err]

    def bootstrap_with(self, value: str, token_id: str, *, policy: str = "", file: str = "first-token") -> None:
        """``rotator bootstrap`` from a token file that is removed afterwards."""
        first = self.dir / file
        first.write_text(value)
        proc = self.cli("bootstrap", policy or self.policy, "--token-file", str(first), "--token-id", token_id)
        first.unlink()
        assert proc.returncode == 0, proc.stderr

    # -- inspection -------------------------------------------------------------------------
    def vault(self) -> hvac.Client:
        return hvac.Client(url=self.vault_url, token=self.vault_token)

    def versions(self, path: str = "") -> list[dict[str, Any]]:
        """Every KV version's payload, oldest first (values included: test-side only)."""
        return read_kv_versions(self.vault_url, self.vault_token, path or self.kv_path)

    def current(self) -> dict[str, Any]:
        versions = self.versions()
        assert versions, "the store holds no version"
        return versions[-1]

    def journal_rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        if self.journal_url:
            import psycopg

            with psycopg.connect(self.journal_url) as pg:
                return [tuple(row) for row in pg.execute(sql, params or None).fetchall()]
        conn = sqlite3.connect(self.journal_path)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def written(self) -> dict[str, str]:
        """Everything rotator wrote: each stdout/stderr, the log file, the journal (the SQLite files, or
        every row of the PostgreSQL journal's schema)."""
        texts = {f"output {i}": text for i, text in enumerate(self.outputs)}
        if self.log_file.exists():
            texts["log"] = self.log_file.read_text(errors="replace")
        if self.journal_url:
            texts.update(self._postgres_rows())
        paths = [Path(str(self.journal_path) + suffix) for suffix in ("", "-wal", "-shm")]
        for path, data in zip(paths, _read_in_a_child(paths), strict=True):
            if data is not None:
                texts[path.name] = data.decode("latin-1")
        return texts

    def _postgres_rows(self) -> dict[str, str]:
        """Each table (or view) of the PostgreSQL journal's schema as text, one JSON row a line: a leak
        there has no file to be found in."""
        import psycopg
        from psycopg import sql

        assert self.journal_url
        texts: dict[str, str] = {}
        with psycopg.connect(self.journal_url, autocommit=True) as pg:
            row = pg.execute("SELECT current_schema()").fetchone()
            schema = row[0] if row else None
            assert schema, "the PostgreSQL journal's schema (its URL's search_path) does not exist"
            tables = [name for (name,) in pg.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s ORDER BY table_name",
                (schema,)).fetchall()]
            for table in tables:
                query = sql.SQL("SELECT row_to_json(t)::text FROM {}.{} t").format(
                    sql.Identifier(schema), sql.Identifier(table))
                texts[f"journal table {table}"] = "\n".join(str(line) for (line,) in pg.execute(query).fetchall())
        return texts

    # -- the issuer-independent invariant checks ----------------------------------------------
    def assert_no_leak(self, values: Iterable[str],
                       message: str = "invariant 4: a token value leaked into output, logs or the journal", *,
                       issued: Mapping[str, str] | None = None, digest: Callable[[str], str] | None = None) -> None:
        """No value of ``values`` in anything rotator wrote. ``issued`` (``{digest: token id}``: every
        token the issuer holds, revoked or not) catches the values the test never saw, e.g. a candidate
        discarded before it was published: each token-shaped string (:data:`TOKEN_SHAPES`) in what
        rotator wrote is hashed with ``digest`` (default: sha256 hex, as the fake influxctl keeps it)
        and must not be one of them."""
        written = self.written()
        for value in values:
            for text in written.values():
                assert value not in text, message
        if issued:
            # Where and which token, never the value: the failure message is printed.
            leaks = sorted({(where, issued[hashed]) for where, text in written.items()
                            for hashed in map(digest or _sha256, _token_shaped(text)) if hashed in issued})
            assert not leaks, f"{message}: (where, token id) {leaks}"

    def assert_no_leftover_configs(self) -> None:
        """No private influxctl config (it holds a token) outlives a finished command."""
        leftovers = [d for d in self.tmpdir.glob("rotator-influxctl-*") if not _alive(d)]
        assert not leftovers, f"private influxctl configs left behind: {leftovers}"

    def assert_no_orphans(self, live: Mapping[str, str], current_id: str | None, *, settled: bool,
                          what: str = "token") -> None:
        """Invariant 2: every working token of this policy's runs (``live``: ``{id: description}``) is
        current, or published and pending revocation within grace."""
        pending = {row[0] for row in self.journal_rows("SELECT token_id FROM revocations WHERE state = 'pending'")}
        published_ids = {v.get("token_id") for v in self.versions()}  # a version someone else wrote may have none
        for token_id, description in live.items():
            if token_id == current_id:
                continue
            assert token_id in published_ids and token_id in pending and not settled, (
                f"invariant 2: orphan {what} {token_id} ({description}) is active, "
                f"neither current nor pending revocation"
            )

    def assert_revoked_after_grace(self, revoked_at: Callable[[str], datetime | None]) -> None:
        """Invariant 3: a superseded token is revoked no sooner than grace after its successor was published."""
        published = {row[0]: ts(row[1]) for row in self.journal_rows(
            "SELECT old_token_id, published_at FROM runs WHERE old_token_id IS NOT NULL AND published_at IS NOT NULL")}
        for old_id, published_at in published.items():
            revoked = revoked_at(old_id)
            if revoked is None or published_at is None:
                continue
            assert revoked >= published_at + timedelta(seconds=self.grace_s) - timedelta(milliseconds=50), (
                f"invariant 3: token {old_id} revoked at {revoked}, before grace ended "
                f"({published_at} + {self.grace_s}s)"
            )


#: The shapes of the values the fakes issue (rotator/sandbox/influxctl_state.py, and the same in
#: tests/fakes/management_api_fake.py): a management token is "M.V1." + 43 base64 characters, a
#: database token "apiv1_" + 86 (standard alphabet, padding dropped); the HTTP fakes' (64 random bytes
#: in base64 each): InfluxDB 3 "apiv3_" + 88 with padding, InfluxDB v2 88 URL-safe characters ending
#: in "==". A lookahead, so that matches may overlap: a token glued to more base64 characters is still
#: found at its start.
TOKEN_SHAPES = re.compile(
    r"(?=(M\.V1\.[A-Za-z0-9+/]{43}|apiv1_[A-Za-z0-9+/]{86}|apiv3_[A-Za-z0-9+/]{86}==|[A-Za-z0-9_-]{86}==))")


def _token_shaped(text: str) -> set[str]:
    return {match.group(1) for match in TOKEN_SHAPES.finditer(text)}


def issued_in(texts: Mapping[str, str], issued: Mapping[str, str],
              digest: Callable[[str], str] | None = None) -> list[tuple[str, str]]:
    """``(where, token id)`` of each issued token (``issued``: ``{digest: token id}``) whose value is in
    one of ``texts`` (``{where: text}``), found by its shape (:data:`TOKEN_SHAPES`), never the value
    itself: what a test prints on failure must not be the leak again."""
    return sorted({(where, issued[hashed]) for where, text in texts.items()
                   for hashed in map(digest or _sha256, _token_shaped(text)) if hashed in issued})


def _sha256(value: str) -> str:
    """The digest the fake influxctl keeps as ``token_sha256`` (influxctl_state.hash_token)."""
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass(kw_only=True)
class Scenario(CliScenario):
    fake: FakeInfluxctl
    bootstrap_value: str = ""

    def issued(self) -> dict[str, str]:
        """``{token_sha256: id}`` of every token the fake influxctl holds, management and database,
        revoked or not (for :meth:`CliScenario.assert_no_leak`)."""
        return {t["token_sha256"]: t["id"] for t in [*self.fake.tokens(), *self.fake.db_tokens()]}

    def write_policy(self, *, issuer_extra: str = "", store_extra: str = "", policy_extra: str = "",
                     verify_timeout: str = "20s", attempts: int = 3, timeout_s: float = 10,
                     second_store: str = "") -> None:
        """Write the policy file; ``second_store`` adds a second vault-kv2 store at that KV path."""
        extra_store = self.vault_store_toml(name="mirror", path=second_store) if second_store else ""
        self.config.write_text(f"""{self.rotator_toml(attempts=attempts)}
{self.policy_toml(verify_timeout=verify_timeout, extra=policy_extra)}
[policy.issuer]
type = "influxctl-management"
influxctl = {json.dumps(str(INFLUXCTL))}
timeout_s = {timeout_s}
{issuer_extra}
[policy.issuer.profile]
product = "clustered"
host = "cluster.test.invalid"
port = 443
{self.vault_store_toml(extra=store_extra)}{extra_store}{self.extra_stores}""", encoding="utf-8")

    def extra_env(self) -> dict[str, str]:
        # influxctl children get an allow-listed environment: name the fake's variable.
        return {"FAKE_INFLUXCTL_STATE": str(self.fake.path), "ROTATOR_INFLUXCTL_ENV": "FAKE_INFLUXCTL_STATE"}


#: prints each file named by its arguments as "<length>\n<bytes>", or "-\n" for a file that does not exist
_READ_FILES = """
import sys
for name in sys.argv[1:]:
    try:
        data = open(name, "rb").read()
    except FileNotFoundError:
        sys.stdout.buffer.write(b"-\\n")
        continue
    sys.stdout.buffer.write(b"%d\\n" % len(data) + data)
"""


def _read_in_a_child(paths: list[Path]) -> list[bytes | None]:
    """The files' bytes (None: no such file), read by another process. Closing a descriptor of a file
    drops every fcntl lock this process holds on it, SQLite's too: a test that has a journal open in
    process (an Engine) and read the journal here would lose its connection's locks; a CLI child would
    then take the database as unused, reset the -shm and delete the WAL under it, and the open
    connection would go on in a deleted WAL ("disk I/O error", or commits lost at its checkpoint)."""
    out = subprocess.run([sys.executable, "-c", _READ_FILES, *map(str, paths)], capture_output=True, check=True,
                         timeout=60).stdout
    found: list[bytes | None] = []
    for _ in paths:
        head, _, out = out.partition(b"\n")
        if head == b"-":
            found.append(None)
        else:
            found.append(out[:int(head)])
            out = out[int(head):]
    return found


def make_scenario(tmp: Path, openbao: Any, fake: FakeInfluxctl, *, grace_s: int = 2,
                  activation_delay_s: float = 0.0, bootstrap: bool = True, journal_url: str | None = None,
                  extra_stores: str = "", **policy: Any) -> Scenario:
    fake.init(activation_delay_s=activation_delay_s)
    token_file = tmp / "vault-token"
    token_file.write_text(openbao.root_token)
    token_file.chmod(0o600)
    sc = Scenario(dir=tmp, vault_url=openbao.url, vault_token=openbao.root_token, fake=fake,
                  kv_path=f"influx/{uuid.uuid4().hex[:10]}", grace_s=grace_s, journal_url=journal_url,
                  extra_stores=extra_stores)
    sc.write_policy(**policy)
    if bootstrap:
        sc.bootstrap_value, sc.bootstrap_id = fake.add_token("created by a human for bootstrap")
        sc.bootstrap_with(sc.bootstrap_value, sc.bootstrap_id)
    return sc


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
    if not after_crash:
        sc.assert_no_orphans(live_tagged(tokens.values(), sc.policy), current_id, settled=settled)

    # 3. Superseded tokens are revoked no sooner than grace after their successor was published.
    sc.assert_revoked_after_grace(lambda token_id: revoked_at(tokens, token_id))

    # 4. No token value in anything rotator wrote: stdout, stderr, log file, journal, and no private
    # influxctl config (it holds a token) outlives a finished command. The fake keeps only hashes: a
    # token never published (discarded, swept, minted late) is found by its hash.
    if not after_crash:
        sc.assert_no_leftover_configs()
    values = {v["token"] for v in versions}
    if sc.bootstrap_value:
        values.add(sc.bootstrap_value)
    sc.assert_no_leak(values, issued=sc.issued())


def live_tagged(tokens: Iterable[Mapping[str, Any]], policy: str) -> dict[str, str]:
    """The fake influxctl's tokens (management or database) of ``policy``'s runs that are not revoked."""
    return {t["id"]: t["description"] for t in tokens
            if t["description"].startswith(f"rotator:{policy}:") and not t["revoked_at"]}


def revoked_at(tokens: Mapping[str, Mapping[str, Any]], token_id: str) -> datetime | None:
    """When the fake influxctl revoked ``token_id`` (None: unknown or not revoked)."""
    token = tokens.get(token_id)
    return ts(token["revoked_at"]) if token is not None else None


def settle(sc: CliScenario, check: Callable[..., None]) -> None:
    """Let the grace pass, revoke, and check that everything is settled (no run left open)."""
    time.sleep(sc.grace_s + 0.3)
    proc = sc.cli("revoke-expired")
    assert proc.returncode == 0, proc.stderr
    check(sc, settled=True)
    assert not sc.journal_rows("SELECT run_id FROM runs WHERE state NOT IN ('done', 'failed', 'aborted')")


def finish_and_settle(sc: CliScenario, check: Callable[..., None]) -> None:
    """After a crash: recover, check, rotate once more (a new token), then :func:`settle`."""
    proc = sc.cli("recover")
    assert proc.returncode == 0, proc.stderr
    check(sc)
    current = sc.current()["token_id"]
    proc = sc.cli("rotate", sc.policy)
    assert proc.returncode == 0, proc.stderr
    assert sc.current()["token_id"] != current
    settle(sc, check)


def let_mint_window_pass(sc: CliScenario) -> None:
    """A run killed inside (or just before) a mint stays open until no child of it can still mint:
    its journaled mint start + the issuer's call timeout + a margin (issue 10 §1b), which a discarded
    run waiting for it records as its tag_search_until. Let that time pass by moving both back."""
    statements = (
        "UPDATE runs SET mint_started_at = '2000-01-01T00:00:00.000000Z' "
        "WHERE mint_started_at IS NOT NULL AND new_token_id IS NULL AND state IN ('minting', 'revoking_new')",
        "UPDATE runs SET tag_search_until = '2000-01-01T00:00:00.000000Z' "
        "WHERE tag_search_until IS NOT NULL AND state = 'revoking_new'",
    )
    if sc.journal_url:
        import psycopg

        with psycopg.connect(sc.journal_url, autocommit=True) as pg:
            for sql in statements:
                pg.execute(sql)
        return
    conn = sqlite3.connect(sc.journal_path)
    try:
        with conn:
            for sql in statements:
                conn.execute(sql)
    finally:
        conn.close()


def offline_policy(tmp_path: Path, name: str) -> Any:
    """A validated policy that reads nothing and reaches no server (an influxctl issuer, a Vault store
    on a closed port): for tests that need only its name, schedule and max_age against a journal."""
    import tomllib

    from rotator.config.policy import parse_config

    return parse_config(tomllib.loads(
        f'[[policy]]\nname = "{name}"\nschedule = "30d"\n[policy.issuer]\ntype = "influxctl-management"\n'
        '[policy.issuer.profile]\nproduct = "clustered"\nhost = "h.invalid"\n[[policy.store]]\ntype = "vault-kv2"\n'
        'url = "http://127.0.0.1:1"\npath = "x"\n[policy.store.auth]\nmethod = "token"\ntoken = { file = "t" }\n'
    ), tmp_path / "rotator.toml").policies[0]


def vm_steps(journal: Any, call: Callable[[], object]) -> int:
    """SQLite's count of the VM instructions ``call`` runs on this thread's connection to ``journal``
    (a Journal): what a read costs, whatever the machine's speed."""
    count = 0

    def step() -> int:
        nonlocal count
        count += 1
        return 0

    conn = journal._connection()
    conn.set_progress_handler(step, 1)
    try:
        call()
    finally:
        conn.set_progress_handler(None, 0)
    return count
