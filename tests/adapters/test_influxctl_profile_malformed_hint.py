"""influxctl-profile: a managed entry rotator cannot read, and the fix its error names.

The sidecar entry that describes the profile's value is rotator's record of the token there; when it
cannot be read (a hand edit dropped ``token_id``), every run fails with MalformedPayload. Its hint said
to run `rotator bootstrap --replace`, whose publish read the same entry, failed on it too and left the
policy stuck. The store's own hint names that command (which now writes over the entry, at the version
the error carries) and the sidecar's backup; following it repairs the policy.
"""

from __future__ import annotations

import json
import shlex
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.adapters.influxctl.profile import SIDECAR_SUFFIX, InfluxctlProfileSettings, InfluxctlProfileStore
from rotator.core.clock import FakeClock
from rotator.core.contracts import MALFORMED_HINT, AdapterContext, StoreState, TokenRecord
from rotator.core.errors import MalformedPayload
from rotator.core.secret import Secret
from tests.harness import Scenario, check_invariants, make_scenario

POLICY = "mgmt"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
#: A profile on tests/harness.py's cluster (the engine refuses a profile of another cluster).
CONFIG = """\
[[profile]]
    name = "default"
    product = "clustered"
    host = "cluster.test.invalid"
    port = "443"
"""
#: The hint's command, as an operator copies it: the placeholders are the ones MALFORMED_HINT uses.
REPAIR = "rotator bootstrap POLICY --replace --reason TEXT --token-file FILE --token-id ID"


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "influxctl" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(CONFIG)
    return path


def _store(config: Path) -> InfluxctlProfileStore:
    settings = InfluxctlProfileSettings.model_validate({"config": config, "profile": "default"})
    return InfluxctlProfileStore.from_config(settings, AdapterContext(policy=POLICY, base_dir=config.parent,
                                                                      clock=FakeClock(NOW)))  # fmt: skip


def _record(token_id: str, value: str) -> TokenRecord:
    return TokenRecord(Secret(value), token_id, "influxctl-management", POLICY, NOW, NOW + timedelta(days=30))


def _break_entry(config: Path) -> None:
    """Drop ``token_id`` from every entry of profile "default": the value's record cannot be read."""
    sidecar = Path(f"{config}{SIDECAR_SUFFIX}")
    doc = json.loads(sidecar.read_text())
    for entry in doc["profiles"]["default"]:
        entry.pop("token_id", None)
    sidecar.write_text(json.dumps(doc))


def _malformed(store: InfluxctlProfileStore) -> MalformedPayload:
    with pytest.raises(MalformedPayload, match="payload key 'token_id' is missing or empty") as info:
        store.read_current()
    return info.value


def test_the_hint_is_the_stores_own_and_names_its_sidecar(tmp_path: Path) -> None:
    config = _config(tmp_path)
    value = "first-mgmt-token-0123456789abcdef"
    _store(config).publish(_record("id-1", value), None)
    _break_entry(config)
    error = _malformed(_store(config))
    assert error.hint != MALFORMED_HINT and REPAIR in error.hint
    assert f"{config}{SIDECAR_SUFFIX}" in error.hint and "backup" in error.hint
    assert value not in str(error) and value not in error.hint


def test_publish_writes_over_an_unreadable_entry_at_the_version_its_error_carries(tmp_path: Path) -> None:
    """What `bootstrap --replace` does with the store (rotator/core/engine.py, _read_stores(unreadable_ok))."""
    config = _config(tmp_path)
    _store(config).publish(_record("id-1", "first-mgmt-token-0123456789abcdef"), None)
    _break_entry(config)
    store = _store(config)
    state = _malformed(store).state
    assert isinstance(state, StoreState) and state.managed and state.record is None
    repaired = _record("id-2", "second-mgmt-token-0123456789abcdef")
    version = store.publish(repaired, state.version)
    after = _store(config).read_current()
    assert (after.version, after.record) == (version, repaired)
    # the unreadable entry stays, as every older entry does: its value put back (a config restored from
    # a backup) fails the read again, which stops revocations, rather than reading as a hand edit
    third = _record("id-3", "third-mgmt-token-0123456789abcdefg")
    _store(config).publish(third, version)
    entries = json.loads(Path(f"{config}{SIDECAR_SUFFIX}").read_text())["profiles"]["default"]
    assert [e.get("token_id") for e in entries] == ["id-3", "id-2", None]
    config.write_text(config.read_text().replace(third.value.reveal(), "first-mgmt-token-0123456789abcdef"))
    _malformed(_store(config))


def test_putting_back_the_sidecar_from_a_backup_repairs_it(tmp_path: Path) -> None:
    config = _config(tmp_path)
    first = _record("id-1", "first-mgmt-token-0123456789abcdef")
    _store(config).publish(first, None)
    sidecar = Path(f"{config}{SIDECAR_SUFFIX}")
    backup = sidecar.read_bytes()
    _break_entry(config)
    _malformed(_store(config))
    sidecar.write_bytes(backup)
    assert _store(config).read_current().record == first


def _scenario(tmp_path: Path, openbao: Any, fake: Any) -> tuple[Scenario, Path]:
    """The influxctl-management policy publishing to Vault ("primary") and to the profile ("profile")."""
    config = _config(tmp_path)
    sc = make_scenario(tmp_path, openbao, fake, extra_stores="""
[[policy.store]]
type = "influxctl-profile"
name = "profile"
config = "influxctl/config.toml"
profile = "default"
""")
    return sc, config


def test_following_the_hint_repairs_the_policy(tmp_path: Path, openbao: Any, fake_influxctl: Any) -> None:
    """Fail, do what the hint says, run again: it works (before, `--replace` failed on the same entry)."""
    sc, config = _scenario(tmp_path, openbao, fake_influxctl.state)
    _break_entry(config)
    proc = sc.cli("rotate", sc.policy)
    assert proc.returncode != 0
    assert "payload key 'token_id' is missing or empty" in proc.stderr and REPAIR in proc.stderr, proc.stderr

    value, token_id = fake_influxctl.state.add_token("made by hand for the repair")
    token_file = tmp_path / "repair-token"
    token_file.write_text(value)
    token_file.chmod(0o400)
    fill = {"POLICY": sc.policy, "TEXT": "sidecar entry edited by hand", "FILE": str(token_file), "ID": token_id}
    argv = [fill.get(word, word) for word in shlex.split(REPAIR)]
    proc = sc.cli(*argv[1:])
    assert proc.returncode == 0, proc.stderr
    token_file.unlink()
    state = _store(config).read_current()
    assert state.managed and state.token_id == token_id and sc.current()["token_id"] == token_id

    proc = sc.cli("rotate", sc.policy, "--output", "json")
    assert proc.returncode == 0, proc.stderr
    new_id = json.loads(proc.stdout)[0]["new_token_id"]
    assert _store(config).read_current().token_id == new_id == sc.current()["token_id"]
    check_invariants(sc)
