"""Reloads of the daemon's policy file, in-process on a fake clock (and once against OpenBao):

- a Kubernetes ConfigMap volume (symlinks the kubelet swaps) is reloaded, and a file that
  disappears is a refused reload, not a silent one;
- the file watch keeps what did not change: the same content builds nothing, and an unchanged
  policy keeps its engine, so its stores neither log in to Vault again nor forget a dead credential;
- SIGHUP is a full reload: every engine is built again, whatever the content, so that a file the
  policy references (a CA bundle, AWS credentials, a secret_id) and that was replaced takes effect;
- SIGUSR1 reopens the audit file and does nothing else (logrotate's postrotate);
- a reload that fails at any step (the new audit file) changes nothing, and says so;
- a daemon started through a symlink refuses to leave the journal it used behind;
- a reload that shortens the sweep, watch or inventory interval takes effect within the new one;
- a reload whose journal read fails schedules from the new policies at once, not the old ones.
"""

from __future__ import annotations

import http.server
import os
import shutil
import signal
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from rotator.core.clock import FakeClock
from rotator.core.errors import ConfigError, JournalUnavailable
from rotator.core.journal import Revocation, RunRecord, open_journal
from rotator.runners.daemon import Daemon, load_daemon_config
from tests.runners.test_daemon import POLICY, T0, FakeEngine, Harness, HeldExecutor, InlineExecutor, sample
from tests.runners.test_daemon import harness as harness  # noqa: F401 - a fixture, used by name


# ---------------------------------------------------------------------------------- a ConfigMap volume
def kubelet_write(volume: Path, files: Mapping[str, str], stamp: str) -> None:
    """Update ``volume`` as the kubelet updates a ConfigMap volume: the keys are written into a new
    ``..<stamp>/`` directory, the ``..data`` link is swapped to it (atomically, by a rename), each
    key is a link ``KEY -> ..data/KEY``, and the previous directory is deleted."""
    new = volume / f"..{stamp}"
    new.mkdir()
    for key, text in files.items():
        (new / key).write_text(text)
    data = volume / "..data"
    old = os.readlink(data) if data.is_symlink() else None
    (volume / "..data_tmp").symlink_to(new.name)
    os.rename(volume / "..data_tmp", data)
    for key in files:
        if not (volume / key).is_symlink():
            (volume / key).symlink_to(f"..data/{key}")
    if old:
        shutil.rmtree(volume / old)


def _daemon(path: Path, clock: FakeClock, calls: list[str]) -> Daemon:
    d = Daemon(path, clock=clock, serve_http=False, executor=InlineExecutor(), handle_signals=False,
               engine_factory=lambda p, c, j, listener: FakeEngine(p.name, j, clock, calls))
    d.start()
    return d


def metric(d: Daemon, name: str, **labels: str) -> float | None:
    value: float | None = d.metrics.registry.get_sample_value(name, labels)
    return value


@pytest.fixture
def stopped() -> Iterator[list[Daemon]]:
    made: list[Daemon] = []
    yield made
    for d in made:
        d.shutdown()


def test_a_configmap_update_is_reloaded_and_relative_paths_follow_the_volume(
        tmp_path: Path, stopped: list[Daemon]) -> None:
    volume, state = tmp_path / "config", tmp_path / "state"
    volume.mkdir()
    state.mkdir()
    head = (f'[rotator]\njournal = "{state}/journal.db"\n[daemon]\nwatch = true\nwatch_interval = "5s"\n'
            f'audit = {{ file = "{state}/audit.jsonl" }}\n')
    kubelet_write(volume, {"policies.toml": head + POLICY.format(name="a", schedule="1h", extra=""),
                           "vault-token": "first"}, "2026_03_02_12_00_00.1")
    open_journal(f"sqlite:///{state}/journal.db").begin_run(
        RunRecord("boot-a", "a", "done", "bootstrap", T0, T0, published_at=T0))
    clock = FakeClock(T0)
    d = _daemon(volume / "policies.toml", clock, [])
    stopped.append(d)
    d.tick(clock.now())

    # The operator changes the schedule (and the token file): the kubelet swaps the volume's
    # directory and deletes the one the daemon started from.
    kubelet_write(volume, {"policies.toml": head + POLICY.format(name="a", schedule="2h", extra=""),
                           "vault-token": "second"}, "2026_03_02_12_01_00.2")
    clock.advance(timedelta(seconds=6))
    d.tick(clock.now())
    assert d.policies[0].schedule.text == "2h", "the watch sees the ConfigMap's update"
    assert metric(d, "rotator_config_last_reload_successful") == 1
    assert not metric(d, "rotator_config_reload_failures_total")
    # A relative path in the file is read from the volume as mounted, so it sees the kubelet's updates
    # (it would otherwise point into the deleted directory, and the next login would fail).
    policy = d.policies[0]
    token = policy.stores[0].settings.auth.token.resolve(policy.base_dir)
    assert token.reveal() == "second"

    d.request_reload()  # and a SIGHUP reads the current file too (it used to fail: "cannot read policy file")
    kubelet_write(volume, {"policies.toml": head + POLICY.format(name="a", schedule="3h", extra=""),
                           "vault-token": "third"}, "2026_03_02_12_02_00.3")
    d.tick(clock.now())
    assert d.policies[0].schedule.text == "3h"
    assert metric(d, "rotator_config_last_reload_successful") == 1


def test_a_watched_file_that_disappears_is_a_refused_reload_and_its_return_is_reloaded(
        tmp_path: Path, stopped: list[Daemon]) -> None:
    (tmp_path / "vault-token").write_text("x")
    path = tmp_path / "rotator.toml"
    text = ('[rotator]\njournal = "journal.db"\n[daemon]\nwatch = true\nwatch_interval = "5s"\n'
            'audit = { file = "audit.jsonl" }\n' + POLICY.format(name="a", schedule="1h", extra=""))
    path.write_text(text)
    clock = FakeClock(T0)
    d = _daemon(path, clock, [])
    stopped.append(d)
    d.tick(clock.now())

    path.unlink()
    for _ in range(3):  # said once, not at every look
        clock.advance(timedelta(seconds=6))
        d.tick(clock.now())
    assert metric(d, "rotator_config_reload_failures_total") == 1, "a vanished file is reported"
    assert metric(d, "rotator_config_last_reload_successful") == 0
    assert d.policies[0].schedule.text == "1h", "the running configuration is kept"
    assert '"step":"reload","result":"failed"' in (tmp_path / "audit.jsonl").read_text()

    path.write_text(text.replace('"1h"', '"2h"'))
    clock.advance(timedelta(seconds=6))
    d.tick(clock.now())
    assert d.policies[0].schedule.text == "2h" and metric(d, "rotator_config_last_reload_successful") == 1


# ---------------------------------------------------------------------------------- what the watch keeps
WATCH = 'watch = true\nwatch_interval = "5s"\n'


def _touch(path: Path) -> None:
    """A new modification time, the same content: what the watch sees of a `touch`, or of a ConfigMap
    update of another key."""
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def _watch(h: Harness) -> None:
    h.clock.advance(timedelta(seconds=6))
    h.tick()


def test_a_watched_file_of_the_same_content_builds_nothing_again(harness: Callable[..., Harness]) -> None:
    """A `touch`, or a ConfigMap update of another key: the watch sees a change of the file's mtime."""
    h = harness([("a", "1h", ""), ("b", "1h", "")], daemon=WATCH)
    d = h.daemon
    engines = dict(d._engines)
    loads: list[Path] = []
    d._loader = lambda path: loads.append(path) or load_daemon_config(path)
    before = (d.path.parent / "audit.jsonl").read_text()
    for _ in range(3):
        _touch(d.path)
        _watch(h)
    assert loads == [], "the same content is neither parsed nor validated again"
    assert all(d._engines[name] is engine for name, engine in engines.items()), "no engine (nor store) built again"
    assert sample(h, "rotator_config_last_reload_successful") == 1
    added = (d.path.parent / "audit.jsonl").read_text()[len(before):]
    assert added.count('"step":"reload","result":"ok"') == 3, "each reload is still an audit line"

    # A refused file, then the running one put back: the same content again, and a success.
    good = d.path.read_text()
    d.path.write_text(good.replace('"1h"', '"whenever"'))
    _watch(h)
    assert sample(h, "rotator_config_last_reload_successful") == 0
    d.path.write_text(good)
    _touch(d.path)
    _watch(h)
    assert sample(h, "rotator_config_last_reload_successful") == 1
    assert all(d._engines[name] is engine for name, engine in engines.items())


def test_the_watch_rebuilds_only_the_engines_of_policies_that_changed(harness: Callable[..., Harness]) -> None:
    h = harness([("a", "1h", ""), ("b", "1h", "")], daemon=WATCH)
    d = h.daemon
    a, b = d._engines["a"], d._engines["b"]
    text = d.path.read_text()
    d.path.write_text(text.replace('path = "x/b"', 'path = "x/b2"') + "# an edit elsewhere\n")
    _watch(h)
    assert d._engines["a"] is a, "policy a is the same: it keeps its engine and stores"
    assert d._engines["b"] is not b and d._engines["b"] is h.engines["b"], "policy b's store changed"

    a = d._engines["a"]
    # [rotator] settings go to every engine (retries, lease): all are built again.
    d.path.write_text(d.path.read_text().replace("[rotator]\n", "[rotator]\nlease_ttl = \"20m\"\n"))
    _watch(h)
    assert d._engines["a"] is not a and d.loaded.config.settings.lease_ttl == timedelta(minutes=20)


# ---------------------------------------------------------------------------------- SIGHUP: a full reload
def test_a_sighup_builds_every_engine_again_whatever_the_content(harness: Callable[..., Harness]) -> None:
    """A policy records the paths of the files it references, not their content: only new adapters
    read a replaced CA bundle, AWS credentials file or secret_id file. So the operator's explicit
    reload (SIGHUP, `systemctl reload rotator`) reads, validates and builds everything again, even
    when the policy file itself is unchanged (as every reload did before the content-based watch)."""
    h = harness([("a", "1h", ""), ("b", "1h", "")], daemon=WATCH)
    d = h.daemon
    loads: list[Path] = []
    d._loader = lambda path: loads.append(path) or load_daemon_config(path)
    before = (d.path.parent / "audit.jsonl").read_text()
    for n in range(1, 3):
        engines = dict(d._engines)
        d.request_reload()
        h.tick()
        assert len(loads) == n, "the file is read and validated again"
        assert all(d._engines[name] is not engine for name, engine in engines.items()), "every engine built again"
        assert d._engines == h.engines
        assert sample(h, "rotator_config_last_reload_successful") == 1
    added = (d.path.parent / "audit.jsonl").read_text()[len(before):]
    assert added.count('"step":"reload","result":"ok"') == 2
    # ...and the watch, which saw no change, builds nothing after it.
    engines = dict(d._engines)
    _touch(d.path)
    _watch(h)
    assert d._engines == engines and all(d._engines[name] is engine for name, engine in engines.items())

    # A SIGHUP whose file is invalid is refused like any reload: the running engines stay.
    d.path.write_text(d.path.read_text().replace('"1h"', '"whenever"', 1))
    d.request_reload()
    h.tick()
    assert sample(h, "rotator_config_last_reload_successful") == 0
    assert all(d._engines[name] is engine for name, engine in engines.items())


class _TLSServer:
    """An HTTPS server on 127.0.0.1 that answers 200 to anything, with a given certificate."""

    def __init__(self, cert: Path, key: Path) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_sighup_makes_a_replaced_ca_bundle_take_effect(tmp_path: Path, stopped: list[Daemon]) -> None:
    """The reviewer's case, with real adapters and a real TLS handshake: an issuer's ca_bundle becomes
    the SSL context of its cached HTTP client at first use. The server's CA is renewed (the file
    replaced, cert-manager style): the watch does not see it (the policy file did not change), and a
    SIGHUP kept the engine whenever the policy file's content was the same, so only a restart helped."""
    from tests.deploy.test_deploy_daemon import self_signed_cert

    old_dir, new_dir = tmp_path / "old-ca", tmp_path / "new-ca"
    old_dir.mkdir()
    new_dir.mkdir()
    old_cert, _, _ = self_signed_cert(old_dir)
    new_cert, new_key, _ = self_signed_cert(new_dir)
    server = _TLSServer(new_cert, new_key)  # already serving the renewed certificate
    try:
        shutil.copy(old_cert, tmp_path / "ca.pem")
        (tmp_path / "admin-token").write_text("apiv3_" + "a" * 40)
        (tmp_path / "vault-token").write_text("x")
        path = tmp_path / "rotator.toml"
        path.write_text(f"""[rotator]
journal = "journal.db"
[daemon]
audit = {{ file = "audit.jsonl" }}
{WATCH}
[[policy]]
name = "a"
schedule = "30d"
grace = "1h"
[policy.issuer]
type = "influxdb3"
kind = "named_admin"
base_url = "{server.url}"
ca_bundle = "ca.pem"
credential = {{ file = "admin-token" }}
[[policy.store]]
type = "vault-kv2"
url = "http://127.0.0.1:1"
path = "x/a"
[policy.store.auth]
method = "token"
token = {{ file = "vault-token" }}
""")
        open_journal(f"sqlite:///{tmp_path}/journal.db").begin_run(
            RunRecord("boot-a", "a", "done", "bootstrap", T0, T0, published_at=T0))  # nothing due
        clock = FakeClock(T0)
        d = Daemon(path, clock=clock, serve_http=False, executor=InlineExecutor(), handle_signals=False)
        d.start()
        stopped.append(d)

        def handshake() -> bool:
            client = d._engines["a"].issuer._http()  # type: ignore[attr-defined]
            try:
                client.get("/ping")
            except httpx.ConnectError as exc:
                assert "CERTIFICATE_VERIFY_FAILED" in str(exc), exc
                return False
            return True

        assert not handshake(), "the server's certificate is not signed by the CA in ca.pem yet"
        shutil.copy(new_cert, tmp_path / "ca.pem")  # the renewed CA
        clock.advance(timedelta(seconds=6))
        d.tick(clock.now())
        assert not handshake(), "the watch sees only the policy file, which did not change"
        d.request_reload()  # SIGHUP
        d.tick(clock.now())
        assert handshake(), "the new engine's client trusts the renewed CA"
    finally:
        server.close()


class _DeadCredential:
    """A store whose own credential is dead (a Vault token that can no longer log in)."""

    def __init__(self) -> None:
        self.failures = 0

    def credential_due(self) -> datetime | None:
        return None

    def credential_status(self) -> dict[str, Any]:
        return {"ok": self.failures == 0, "failures": self.failures, "error": "Forbidden" if self.failures else None,
                "expires_at": None}


def test_the_watch_does_not_make_a_dead_store_credential_look_fine(tmp_path: Path, stopped: list[Daemon]) -> None:
    """A new store would start with no failure: /readyz would show the credential fine again while it
    is dead (until its first keep-alive, which a SIGHUP's new store makes at once)."""
    (tmp_path / "vault-token").write_text("x")
    path = tmp_path / "rotator.toml"
    path.write_text('[rotator]\njournal = "journal.db"\n[daemon]\naudit = { file = "audit.jsonl" }\n' + WATCH
                    + POLICY.format(name="a", schedule="1h", extra="") + POLICY.format(name="b", schedule="1h",
                                                                                       extra=""))
    clock = FakeClock(T0)
    calls: list[str] = []

    def factory(policy: Any, config: Any, journal: Any, listener: Any) -> FakeEngine:
        engine = FakeEngine(policy.name, journal, clock, calls)
        engine.stores = [("vault", _DeadCredential())]  # type: ignore[attr-defined]
        return engine

    d = Daemon(path, clock=clock, serve_http=False, executor=InlineExecutor(), handle_signals=False,
               engine_factory=factory)
    d.start()
    stopped.append(d)
    d._engines["a"].stores[0][1].failures = 4  # type: ignore[attr-defined]
    assert d.readiness()[1]["degraded"] == ["a/vault"]
    _touch(path)  # the same file
    clock.advance(timedelta(seconds=6))
    d.tick(clock.now())
    assert d.readiness()[1]["degraded"] == ["a/vault"], "the same store, still failing"
    path.write_text(path.read_text().replace('path = "x/b"', 'path = "x/b2"'))  # another policy changed
    clock.advance(timedelta(seconds=6))
    d.tick(clock.now())
    ready, checks = d.readiness()
    assert checks["degraded"] == ["a/vault"] and checks["credentials"]["a/vault"]["failures"] == 4
    assert ready is True, "one policy's credential does not make the replica unready"


class _ExpiringCredential:
    """A store credential with a few seconds left whose renewals fail: like VaultLogin, each failure
    plans its own retry (``hurried``: soon, as near an expiry; else none, its due stays in the past)."""

    def __init__(self, clock: FakeClock, hurried: bool) -> None:
        self.clock, self.hurried = clock, hurried
        self.due = clock.now()
        self.calls: list[datetime] = []

    def credential_due(self) -> datetime | None:
        return self.due

    def keep_alive(self) -> None:
        from rotator.core.errors import TransientError
        self.calls.append(self.clock.now())
        if self.hurried:
            self.due = self.clock.now() + timedelta(seconds=0.75)
        raise TransientError("cannot reach Vault")

    def credential_status(self) -> dict[str, Any]:
        return {"ok": False, "failures": len(self.calls), "error": "TransientError", "expires_at": None}


@pytest.mark.parametrize("hurried", [True, False])
def test_a_failed_keep_alive_retries_when_the_store_plans_it(tmp_path: Path, stopped: list[Daemon],
                                                             hurried: bool) -> None:
    """After a failed renewal the store plans its retry (in under a second near its token's expiry);
    the daemon's longer pause after an error held it to 5 s, past the expiry of a short-lived token.
    A failure that plans nothing later than now still waits the longer pause (never a loop)."""
    (tmp_path / "vault-token").write_text("x")
    path = tmp_path / "rotator.toml"
    path.write_text('[rotator]\njournal = "journal.db"\n[daemon]\naudit = { file = "audit.jsonl" }\n'
                    + POLICY.format(name="a", schedule="1h", extra=""))
    clock = FakeClock(T0)
    store = _ExpiringCredential(clock, hurried)

    def factory(policy: Any, config: Any, journal: Any, listener: Any) -> FakeEngine:
        engine = FakeEngine(policy.name, journal, clock, [])
        engine.stores = [("vault", store)]  # type: ignore[attr-defined]
        return engine

    d = Daemon(path, clock=clock, serve_http=False, executor=InlineExecutor(), handle_signals=False,
               engine_factory=factory)
    d.start()
    stopped.append(d)
    start = clock.now()
    for _ in range(24):  # 6 s in quarter seconds
        d.tick(clock.now())
        clock.advance(timedelta(seconds=0.25))
    gaps = [(b - a).total_seconds() for a, b in zip(store.calls, store.calls[1:], strict=False)]
    assert store.calls and store.calls[0] == start, store.calls
    if hurried:
        assert gaps and max(gaps) <= 1.0, f"the store's retries in 0.75 s were held back: {gaps}"
    else:
        assert gaps and min(gaps) >= 5.0, f"a store that plans no retry is called in a loop: {gaps}"


VAULT_POLICY = """
[[policy]]
name = "{name}"
schedule = "30d"
grace = "1h"
[policy.issuer]
type = "influxctl-management"
[policy.issuer.profile]
product = "clustered"
host = "cluster.test.invalid"
[[policy.store]]
type = "vault-kv2"
url = "{url}"
path = "{path}/{name}"
[policy.store.auth]
method = "approle"
role_id = "{role_id}"
secret_id = {{ file = "secret-id" }}
"""


def test_the_watch_never_logs_in_to_vault_again_and_a_sighup_does(tmp_path: Path, openbao: Any, kv_path: str,
                                                                  stopped: list[Daemon]) -> None:
    """Each new store logs in (a new Vault token, the old one never revoked): watched edits alone
    used up an AppRole secret_id limited to a few uses. An explicit SIGHUP builds every store
    again, so it logs each in again, once. Real OpenBao, real stores, real clock."""
    bao = openbao
    bao.policy_for("reload-relogin", f"{kv_path}/*", "read", "create", "update", "patch")
    role_id, secret_id = bao.approle("reload-relogin", "reload-relogin", secret_id_num_uses=5, token_ttl="1h")
    (tmp_path / "secret-id").write_text(secret_id)
    path = tmp_path / "rotator.toml"
    path.write_text('[rotator]\njournal = "journal.db"\n[daemon]\naudit = { file = "audit.jsonl" }\n'
                    'watch = true\nwatch_interval = "1s"\n'
                    + "".join(VAULT_POLICY.format(name=n, url=bao.url, path=kv_path, role_id=role_id)
                              for n in ("p0", "p1")))
    d = Daemon(path, serve_http=False, executor=InlineExecutor(), handle_signals=False)
    d.start()
    stopped.append(d)

    def uses_left() -> int:  # Vault counts the secret_id's logins down: one per login, whoever made it
        answer = bao.client().auth.approle.read_secret_id("reload-relogin", secret_id)
        return int(answer["data"]["secret_id_num_uses"])

    def settle() -> None:
        d.tick(d.clock.now())
        time.sleep(1.1)  # past the keep-alive pause after a login (CREDENTIAL_PAUSE), and the watch interval
        d.tick(d.clock.now())
        assert d.readiness()[1]["degraded"] == [], d.readiness()[1].get("credentials")

    d.tick(d.clock.now())  # the stores log in between runs (keep-alive)
    assert uses_left() == 3 and d.readiness()[1]["degraded"] == [], "one login per store"
    edits = [None, None, "# a comment: another content, the same policies\n"]  # touched x2, then an edit
    for edit in edits:
        if edit:
            path.write_text(path.read_text() + edit)
        else:
            _touch(path)
        time.sleep(1.1)
        settle()
    assert metric(d, "rotator_config_last_reload_successful") == 1
    assert not metric(d, "rotator_config_reload_failures_total")
    assert uses_left() == 3, "no new login (and no new Vault token): the stores kept theirs"

    d.request_reload()  # SIGHUP: new stores, which log in
    settle()
    assert uses_left() == 1, "one new login per store"


# ---------------------------------------------------------------------------------- a reload that fails
def test_a_reload_whose_audit_file_cannot_be_opened_changes_nothing(harness: Callable[..., Harness]) -> None:
    """The new configuration must not be in force while the reload is reported as failed (or, as it
    was, not reported at all: no event, reload_successful 1, the watch never trying again)."""
    h = harness([("a", "1h", ""), ("b", "1h", "")], daemon='watch = true\nwatch_interval = "5s"\n')
    d = h.daemon
    (d.path.parent / "blocker").write_text("a file, where the new audit file wants a directory")
    good = d.path.read_text()
    engines = dict(d._engines)
    notifier = d.notifier
    # b removed, a's schedule changed, and the audit file moved where it cannot be opened
    d.path.write_text(good.replace('audit = { file = "audit.jsonl" }', 'audit = { file = "blocker/audit.jsonl" }')
                      .split("[[policy]]\nname = \"b\"")[0].replace('"1h"', '"2h"'))
    h.clock.advance(timedelta(seconds=6))
    h.tick()
    assert [(p.name, p.schedule.text) for p in d.policies] == [("a", "1h"), ("b", "1h")], "nothing applied"
    assert d._engines == engines and d.notifier is notifier
    assert sample(h, "rotator_config_last_reload_successful") == 0
    assert sample(h, "rotator_config_reload_failures_total") == 1
    audit = (d.path.parent / "audit.jsonl").read_text()
    assert '"step":"reload","result":"failed"' in audit and "cannot open audit file" in audit
    for _ in range(2):  # not tried again at every look...
        h.clock.advance(timedelta(seconds=6))
        h.tick()
    assert sample(h, "rotator_config_reload_failures_total") == 1
    (d.path.parent / "blocker").unlink()  # ...but once the cause is fixed and the file changes again
    d.path.write_text(d.path.read_text() + "\n")
    h.clock.advance(timedelta(seconds=6))
    h.tick()
    assert [(p.name, p.schedule.text) for p in d.policies] == [("a", "2h")]
    assert sample(h, "rotator_config_last_reload_successful") == 1
    assert '"step":"reload","result":"ok"' in (d.path.parent / "blocker" / "audit.jsonl").read_text()


# ---------------------------------------------------------------------------------- SIGUSR1: reopen the audit file
def test_sigusr1_reopens_the_audit_file_and_does_nothing_else(harness: Callable[..., Harness]) -> None:
    """logrotate's postrotate: the moved file is let go and a new one opened at the same path; no
    reload (nothing read, validated or built, no reload event, the reload metrics as they were)."""
    h = harness([("a", "1h", ""), ("b", "1h", "")], last=T0 - timedelta(minutes=30))
    d = h.daemon
    h.tick()
    engines = dict(d._engines)
    loads: list[Path] = []
    d._loader = lambda path: loads.append(path) or load_daemon_config(path)
    audit = d.path.parent / "audit.jsonl"
    reloaded_at = sample(h, "rotator_config_last_reload_success_timestamp_seconds")
    os.rename(audit, d.path.parent / "audit.jsonl.1")  # logrotate's rotation
    h.clock.advance(timedelta(seconds=10))
    d.request_reopen()
    h.tick()
    assert audit.exists(), "a new audit file at the configured path"
    assert loads == [] and all(d._engines[name] is engine for name, engine in engines.items())
    assert sample(h, "rotator_config_last_reload_success_timestamp_seconds") == reloaded_at
    assert "reload" not in audit.read_text() + (d.path.parent / "audit.jsonl.1").read_text()

    h.clock.advance(timedelta(minutes=30))  # a rotation: its events go to the new file only
    h.tick()
    assert sorted(h.calls) == ["rotate a", "rotate b"]
    assert '"step":"rotate","result":"ok"' in audit.read_text()
    assert '"step":"rotate"' not in (d.path.parent / "audit.jsonl.1").read_text()


@pytest.fixture
def signal_handlers() -> Iterator[None]:
    """Put back the test process's signal handlers and wake-up fd after a daemon installed its own."""
    signals = [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1]
    saved = {sig: signal.getsignal(sig) for sig in signals}
    wakeup = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(wakeup)
    yield
    signal.set_wakeup_fd(wakeup)
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def test_the_daemon_handles_sighup_and_sigusr1(tmp_path: Path, signal_handlers: None,
                                               stopped: list[Daemon]) -> None:
    """Real signals to this process: SIGUSR1 (whose default action would end the process) reopens the
    audit file only, SIGHUP reloads every engine."""
    (tmp_path / "vault-token").write_text("x")
    path = tmp_path / "rotator.toml"
    path.write_text('[rotator]\njournal = "journal.db"\n[daemon]\naudit = { file = "audit.jsonl" }\n'
                    + POLICY.format(name="a", schedule="1h", extra=""))
    clock = FakeClock(T0)
    d = Daemon(path, clock=clock, serve_http=False, executor=InlineExecutor(),
               engine_factory=lambda p, c, j, listener: FakeEngine(p.name, j, clock, []))
    d.start()  # handle_signals: installed (this is the main thread)
    stopped.append(d)
    engine = d._engines["a"]
    os.rename(tmp_path / "audit.jsonl", tmp_path / "audit.jsonl.1")
    assert callable(signal.getsignal(signal.SIGUSR1)), "no handler: SIGUSR1 would end this process"
    os.kill(os.getpid(), signal.SIGUSR1)
    d._sleep(5.0)  # woken at once by the signal (the wake-up fd), not after 5 s
    d.tick(clock.now())
    assert (tmp_path / "audit.jsonl").exists() and d._engines["a"] is engine, "reopened, nothing reloaded"
    os.kill(os.getpid(), signal.SIGHUP)
    d._sleep(5.0)
    d.tick(clock.now())
    assert d._engines["a"] is not engine
    assert '"step":"reload","result":"ok"' in (tmp_path / "audit.jsonl").read_text()


# ---------------------------------------------------------------------------------- the journal behind a symlink
def _linked_policy_file(tmp_path: Path, journal: str | None = None) -> tuple[Path, Path, Path]:
    """``/etc/rotator/rotator.toml -> /srv/cfg/rotator.toml`` under tmp_path: (link, its directory,
    the target's directory)."""
    etc, srv = tmp_path / "etc" / "rotator", tmp_path / "srv" / "cfg"
    etc.mkdir(parents=True)
    srv.mkdir(parents=True)
    for directory in (etc, srv):
        (directory / "vault-token").write_text("x")
    head = "[rotator]\n" + (f'journal = "{journal}"\n' if journal else "")
    (srv / "rotator.toml").write_text(head + POLICY.format(name="a", schedule="1h", extra=""))
    (etc / "rotator.toml").symlink_to(srv / "rotator.toml")
    return etc / "rotator.toml", etc, srv


def _new_daemon(path: Path) -> Daemon:
    clock = FakeClock(T0)
    return Daemon(path, clock=clock, serve_http=False, executor=InlineExecutor(), handle_signals=False,
                  engine_factory=lambda p, c, j, listener: FakeEngine(p.name, j, clock, []))


def test_a_start_through_a_symlink_refuses_to_leave_the_journal_it_used_behind(
        tmp_path: Path, stopped: list[Daemon]) -> None:
    """The daemon resolved the policy file's symlinks before, so the default relative journal was next
    to the link's target; it now reads relative paths next to the link, as every command does. Starting
    on a new, empty journal there would lose the history and never do the pending revocations."""
    link, etc, srv = _linked_policy_file(tmp_path)
    journal = open_journal(f"sqlite:///{srv}/rotator-journal.db")
    journal.begin_run(RunRecord("boot-a", "a", "done", "bootstrap", T0, T0, published_at=T0))
    journal.close()
    with pytest.raises(ConfigError) as err:
        _new_daemon(link).start()
    message = str(err.value)
    assert f"{etc}/rotator-journal.db" in message and f"{srv}/rotator-journal.db" in message, message
    assert f'journal = "{srv}/rotator-journal.db"' in (err.value.hint or "")
    assert not (etc / "rotator-journal.db").exists(), "no empty journal was made"

    # Fixed as the hint says: the journal's absolute path in the file. The history is there.
    text = (srv / "rotator.toml").read_text()
    (srv / "rotator.toml").write_text(text.replace("[rotator]\n", f'[rotator]\njournal = "{srv}/rotator-journal.db"\n'))
    d = _new_daemon(link)
    d.start()
    stopped.append(d)
    assert d._views["a"].run_id == "boot-a"


def test_a_moved_journal_or_a_journal_on_both_sides_starts(tmp_path: Path, stopped: list[Daemon]) -> None:
    link, etc, srv = _linked_policy_file(tmp_path)
    open_journal(f"sqlite:///{srv}/rotator-journal.db").close()
    os.rename(srv / "rotator-journal.db", etc / "rotator-journal.db")  # moved, as the hint's other fix says
    d = _new_daemon(link)
    d.start()
    stopped.append(d)
    assert d.journal.location == f"{etc}/rotator-journal.db"
    d.shutdown()
    stopped.remove(d)
    open_journal(f"sqlite:///{srv}/rotator-journal.db").close()  # one on each side: the link's is used
    d = _new_daemon(link)
    d.start()
    stopped.append(d)
    assert d.journal.location == f"{etc}/rotator-journal.db"


def test_the_journal_check_leaves_a_configmap_and_absolute_journals_alone(
        tmp_path: Path, stopped: list[Daemon]) -> None:
    """A ConfigMap volume's policies.toml -> ..data/policies.toml -> ..<timestamp>/policies.toml: the
    timestamped directory holds the map's keys, never a journal, so the start goes on."""
    volume = tmp_path / "config"
    volume.mkdir()
    text = "[rotator]\n" + POLICY.format(name="a", schedule="1h", extra="")
    kubelet_write(volume, {"policies.toml": text, "vault-token": "x"}, "2026_03_02_12_00_00.1")
    d = _new_daemon(volume / "policies.toml")
    d.start()
    stopped.append(d)
    assert d.journal.location == f"{volume}/rotator-journal.db"

    link, _, srv = _linked_policy_file(tmp_path / "absolute", journal=str(tmp_path / "state.db"))
    open_journal(f"sqlite:///{srv}/rotator-journal.db").close()  # a file of that name, not the journal
    d = _new_daemon(link)
    d.start()
    stopped.append(d)
    assert d.journal.location == str(tmp_path / "state.db")


# ---------------------------------------------------------------------------------- shorter intervals by reload
def _reload_with(h: Harness, old: str, new: str) -> None:
    """A SIGHUP after ``old`` was replaced with ``new`` in the policy file."""
    text = h.daemon.path.read_text()
    assert old in text
    h.daemon.path.write_text(text.replace(old, new))
    h.daemon.request_reload()
    h.tick()


def test_a_reload_that_shortens_sweep_interval_sweeps_within_the_new_interval(harness: Callable[..., Harness]) -> None:
    """The sweep timer was set with the old interval: a 1h sweep shortened to 10s by a reload swept
    only an hour later, so a revocation only a sweep sees (another process scheduled it) waited."""
    h = harness([("a", "30d", "")], daemon='sweep_interval = "1h"\n')
    h.tick()
    _reload_with(h, 'sweep_interval = "1h"', 'sweep_interval = "10s"')
    assert h.daemon.settings.sweep_interval == timedelta(seconds=10)
    h.daemon.journal.schedule_revocation(Revocation("a", "t-old", "r0", "superseded", h.clock.now(), "pending"))
    h.clock.advance(timedelta(seconds=10))
    h.tick()
    assert h.calls == ["revoke a"], "the next sweep comes 10s after the reload, not 1h after the last one"


def test_a_reload_that_shortens_watch_interval_watches_within_the_new_interval(
        harness: Callable[..., Harness]) -> None:
    h = harness([("a", "30d", "")], daemon='watch = true\nwatch_interval = "1h"\n')
    h.tick()
    _reload_with(h, 'watch_interval = "1h"', 'watch_interval = "5s"')
    text = h.daemon.path.read_text()
    h.daemon.path.write_text(text.replace('schedule = "30d"', 'schedule = "7d"'))
    h.clock.advance(timedelta(seconds=6))
    h.tick()
    assert h.daemon.policies[0].schedule.text == "7d", "the edit is seen 5s after the reload, not 1h after"


def test_a_reload_that_shortens_inventory_interval_takes_inventory_within_the_new_interval(
        harness: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch) -> None:
    import rotator.observe.inventory as inventory

    taken: list[int] = []

    def take(*_: Any, **__: Any) -> Any:
        taken.append(1)
        raise RuntimeError("not looked at here")

    monkeypatch.setattr(inventory, "take_inventory", take)
    monkeypatch.setattr(inventory, "policy_targets", lambda *_: [])
    h = harness([("a", "30d", "")], daemon='inventory_interval = "1d"\n')

    def tick_and_wait() -> None:
        h.tick()
        thread = h.daemon._inventory_thread
        if thread is not None:
            thread.join(10)

    tick_and_wait()
    assert len(taken) == 1, "the first inventory at start"
    h.daemon.path.write_text(h.daemon.path.read_text().replace('inventory_interval = "1d"',
                                                               'inventory_interval = "1m"'))
    h.daemon.request_reload()
    tick_and_wait()
    assert len(taken) == 1
    h.clock.advance(timedelta(seconds=61))
    tick_and_wait()
    assert len(taken) == 2, "the next inventory a minute after the reload, not a day after the last one"


# ---------------------------------------------------------------------------------- a reload the journal missed
def _reload_during_an_outage(h: Harness, monkeypatch: pytest.MonkeyPatch, old: str, new: str) -> None:
    """A SIGHUP after ``old`` was replaced with ``new``, while the journal's overview fails twice: the
    reload's full load, and the sweep the reload asks for in the same pass. The next full load comes
    only with the next sweep, a sweep_interval (60 s) later."""
    d = h.daemon
    text = d.path.read_text()
    assert old in text
    d.path.write_text(text.replace(old, new))
    real = d.journal.overview
    fails = {"n": 2}

    def overview(*a: Any, **k: Any) -> Any:
        if fails["n"]:
            fails["n"] -= 1
            raise JournalUnavailable("journal down for a moment")
        return real(*a, **k)

    monkeypatch.setattr(d.journal, "overview", overview)
    d.request_reload()
    with pytest.raises(JournalUnavailable):
        d.tick(h.clock.now())
    assert fails["n"] == 0


def test_a_policy_disabled_by_a_reload_the_journal_missed_is_not_rotated(harness: Callable[..., Harness],
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The reload put the new policies and engines in place, but the scheduler kept planning from the old
    policies until a full load worked: the old due time came and the disabled policy rotated."""
    h = harness([("a", "1h", "")])  # due at T0 + 1h
    h.tick()
    h.clock.advance(timedelta(minutes=59, seconds=30))
    h.tick()
    _reload_during_an_outage(h, monkeypatch, 'schedule = "1h"', 'schedule = "1h"\nenabled = false')
    assert h.daemon.policies[0].enabled is False
    h.clock.advance(timedelta(seconds=35))  # the journal answers again; the old due time has passed
    h.tick()
    assert h.calls == [], "a policy the running configuration disables was rotated"


def test_a_rotation_waiting_for_a_worker_when_a_reload_disables_its_policy_is_not_rotated(
        harness: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch) -> None:
    """The queued job is skipped (its policy was set up anew); the policy was then planned again from
    its old settings, and rotated on the engine built from the disabled policy."""
    workers = HeldExecutor()
    h = harness([("a", "1h", "")], executor=workers)
    h.tick()
    h.clock.advance(timedelta(hours=1))
    h.tick()
    assert list(workers.held) == ["a"], "due, waiting for a worker"
    _reload_during_an_outage(h, monkeypatch, 'schedule = "1h"', 'schedule = "1h"\nenabled = false')
    workers.run("a")
    assert h.calls == [], "skipped: disabled by the reload"
    ran: list[str] = []
    for _ in range(3):  # (each tick clears h.calls)
        h.clock.advance(timedelta(seconds=5))
        h.tick()
        for name in list(workers.held):
            workers.run(name)
        ran += h.calls
    assert ran == [], "a policy the running configuration disables was rotated"


def test_a_window_set_by_a_reload_the_journal_missed_is_kept(harness: Callable[..., Harness],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A window added by the reload: the rotation waits for it, not for the old due time (13:00)."""
    h = harness([("a", "1h", "")])
    h.tick()
    h.clock.advance(timedelta(minutes=59, seconds=30))
    h.tick()
    _reload_during_an_outage(h, monkeypatch, 'schedule = "1h"', 'schedule = "1h"\nwindow = "14:00-14:30"')
    h.clock.advance(timedelta(seconds=35))
    h.tick()
    assert h.calls == [], "rotated at 13:00, outside the window the running configuration sets"
    planned = h.daemon._planned["a"]
    assert datetime(2026, 3, 2, 14, 0, tzinfo=UTC) <= planned < datetime(2026, 3, 2, 14, 30, tzinfo=UTC)
    h.clock.advance(planned - h.clock.now())
    h.tick()
    assert h.calls == ["rotate a"]
