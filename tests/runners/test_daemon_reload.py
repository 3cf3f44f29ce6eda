"""Reloads of the daemon's policy file, in-process on a fake clock (and once against OpenBao):

- a Kubernetes ConfigMap volume (symlinks the kubelet swaps) is reloaded, and a file that
  disappears is a refused reload, not a silent one;
- a reload keeps what did not change: the same content builds nothing, and an unchanged policy
  keeps its engine, so its stores neither log in to Vault again nor forget a dead credential;
- a reload that fails at any step (the new audit file) changes nothing, and says so.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.core.clock import FakeClock
from rotator.core.journal import RunRecord, open_journal
from rotator.runners.daemon import Daemon, load_daemon_config
from tests.runners.test_daemon import POLICY, T0, FakeEngine, Harness, InlineExecutor, sample
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


# ---------------------------------------------------------------------------------- what a reload keeps
def test_a_reload_of_the_same_content_builds_nothing_again(harness: Callable[..., Harness]) -> None:
    """logrotate's postrotate (`systemctl reload rotator`) sends a SIGHUP with the file unchanged."""
    h = harness([("a", "1h", ""), ("b", "1h", "")])
    d = h.daemon
    engines = dict(d._engines)
    loads: list[Path] = []
    d._loader = lambda path: loads.append(path) or load_daemon_config(path)
    before = (d.path.parent / "audit.jsonl").read_text()
    for _ in range(3):
        d.request_reload()
        h.tick()
    assert loads == [], "the same content is neither parsed nor validated again"
    assert all(d._engines[name] is engine for name, engine in engines.items()), "no engine (nor store) built again"
    assert sample(h, "rotator_config_last_reload_successful") == 1
    added = (d.path.parent / "audit.jsonl").read_text()[len(before):]
    assert added.count('"step":"reload","result":"ok"') == 3, "each reload is still an audit line"

    # A refused file, then the running one put back: the same content again, and a success.
    good = d.path.read_text()
    d.path.write_text(good.replace('"1h"', '"whenever"'))
    d.request_reload()
    h.tick()
    assert sample(h, "rotator_config_last_reload_successful") == 0
    d.path.write_text(good)
    d.request_reload()
    h.tick()
    assert sample(h, "rotator_config_last_reload_successful") == 1
    assert all(d._engines[name] is engine for name, engine in engines.items())


def test_a_reload_rebuilds_only_the_engines_of_policies_that_changed(harness: Callable[..., Harness]) -> None:
    h = harness([("a", "1h", ""), ("b", "1h", "")])
    d = h.daemon
    a, b = d._engines["a"], d._engines["b"]
    text = d.path.read_text()
    d.path.write_text(text.replace('path = "x/b"', 'path = "x/b2"') + "# an edit elsewhere\n")
    d.request_reload()
    h.tick()
    assert d._engines["a"] is a, "policy a is the same: it keeps its engine and stores"
    assert d._engines["b"] is not b and d._engines["b"] is h.engines["b"], "policy b's store changed"

    a = d._engines["a"]
    # [rotator] settings go to every engine (retries, lease): all are built again.
    d.path.write_text(d.path.read_text().replace("[rotator]\n", "[rotator]\nlease_ttl = \"20m\"\n"))
    d.request_reload()
    h.tick()
    assert d._engines["a"] is not a and d.loaded.config.settings.lease_ttl == timedelta(minutes=20)


class _DeadCredential:
    """A store whose own credential is dead (a Vault token that can no longer log in)."""

    def __init__(self) -> None:
        self.failures = 0

    def credential_due(self) -> datetime | None:
        return None

    def credential_status(self) -> dict[str, Any]:
        return {"ok": self.failures == 0, "failures": self.failures, "error": "Forbidden" if self.failures else None,
                "expires_at": None}


def test_a_reload_does_not_make_a_dead_store_credential_look_fine(tmp_path: Path, stopped: list[Daemon]) -> None:
    """A new store would start with no failure: /readyz 200 again while the credential is dead."""
    (tmp_path / "vault-token").write_text("x")
    path = tmp_path / "rotator.toml"
    path.write_text('[rotator]\njournal = "journal.db"\n[daemon]\naudit = { file = "audit.jsonl" }\n'
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
    assert d.readiness()[0] is False
    d.request_reload()  # the same file
    d.tick(clock.now())
    assert d.readiness()[0] is False, "the same store, still failing"
    path.write_text(path.read_text().replace('path = "x/b"', 'path = "x/b2"'))  # another policy changed
    d.request_reload()
    d.tick(clock.now())
    ready, checks = d.readiness()
    assert ready is False and checks["credentials"]["a/vault"]["failures"] == 4


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


def test_reloads_never_log_in_to_vault_again(tmp_path: Path, openbao: Any, kv_path: str,
                                             stopped: list[Daemon]) -> None:
    """Each new store logs in (a new Vault token, the old one never revoked): reloads alone used up
    an AppRole secret_id limited to a few uses. Real OpenBao, real stores, real clock."""
    bao = openbao
    bao.policy_for("reload-relogin", f"{kv_path}/*", "read", "create", "update", "patch")
    role_id, secret_id = bao.approle("reload-relogin", "reload-relogin", secret_id_num_uses=3, token_ttl="1h")
    (tmp_path / "secret-id").write_text(secret_id)
    path = tmp_path / "rotator.toml"
    path.write_text('[rotator]\njournal = "journal.db"\n[daemon]\naudit = { file = "audit.jsonl" }\n'
                    + "".join(VAULT_POLICY.format(name=n, url=bao.url, path=kv_path, role_id=role_id)
                              for n in ("p0", "p1")))
    d = Daemon(path, serve_http=False, executor=InlineExecutor(), handle_signals=False)
    d.start()
    stopped.append(d)

    def uses_left() -> int:  # Vault counts the secret_id's logins down: one per login, whoever made it
        answer = bao.client().auth.approle.read_secret_id("reload-relogin", secret_id)
        return int(answer["data"]["secret_id_num_uses"])

    d.tick(d.clock.now())  # the stores log in between runs (keep-alive)
    assert uses_left() == 1 and d.readiness()[0], "one login per store"
    edits = [None, None, "# a comment: another content, the same policies\n"]  # SIGHUP x2, then an edit
    for edit in edits:
        if edit:
            path.write_text(path.read_text() + edit)
        d.request_reload()
        d.tick(d.clock.now())
        time.sleep(1.1)  # past the keep-alive pause after a login (CREDENTIAL_PAUSE)
        d.tick(d.clock.now())
        assert d.readiness()[0], d.readiness()[1].get("credentials")
    assert metric(d, "rotator_config_last_reload_successful") == 1
    assert uses_left() == 1, "no new login (and no new Vault token): the stores kept theirs"


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
