"""``rotator sync`` and what others write: the source store's payload (whoever can write the Vault path
or the AWS secret), and the sidecar of the profile it writes (a person, another tool).

The source here is an ``influxctl-profile`` store named with ``--store``: its sidecar is a file, so a
payload of any shape is one write away, with no server to run; sync reads every store's payload the
same way (a TokenRecord), Vault's and AWS's included (tests/runners/test_sync.py runs them).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.adapters.influxctl.profile import SIDECAR_SUFFIX, InfluxctlProfileSettings, InfluxctlProfileStore
from rotator.core.contracts import AdapterContext, TokenRecord
from rotator.core.errors import MalformedPayload
from rotator.core.secret import Secret
from tests.harness import REPO

POLICY = "mgmt-prod"
NOW = datetime.now(UTC).replace(microsecond=0)
GOOD_ID = "11111111-1111-4111-8111-111111111111"
OLD_ID = "22222222-2222-4222-8222-222222222222"
#: retitles the terminal, clears it, turns what follows red
ESCAPES = "\x1b]0;pwned\x07\x1b[2J\x1b[31mRED-ID"
PROFILE = '[[profile]]\nname = "default"\nproduct = "clustered"\nhost = "cluster.test.invalid"\n'
POLICY_FILE = f"""
[rotator.retry]
attempts = 1

[[policy]]
name = "{POLICY}"
schedule = "30d"
[policy.issuer]
type = "influxctl-management"
[policy.issuer.profile]
product = "clustered"
host = "cluster.test.invalid"

[[policy.store]]
type = "influxctl-profile"
name = "src"
config = "src.toml"
"""


@dataclass
class Scene:
    dir: Path
    values: list[str]

    @property
    def target(self) -> Path:
        return self.dir / "dst.toml"

    def store(self, name: str) -> InfluxctlProfileStore:
        settings = InfluxctlProfileSettings(config=self.dir / name, profile="default")
        return InfluxctlProfileStore.from_config(settings, AdapterContext(policy=POLICY, base_dir=self.dir))

    def publish(self, file: str, token_id: str, *, policy: str = POLICY, created: datetime = NOW) -> str:
        """``file``'s profile gets a new token, then its sidecar entry says ``token_id`` (any text)."""
        value = f"test-mgmt-token-{len(self.values)}-{os.urandom(8).hex()}"
        self.values.append(value)
        store = self.store(file)
        record = TokenRecord(Secret(value), GOOD_ID, "influxctl-management", policy, created, created + timedelta(30))
        try:
            version = store.read_current().version
        except MalformedPayload:  # (a profile store's own fix: the entry out of its sidecar, then written over)
            doc = json.loads(self.sidecar(file).read_text())
            del doc["profiles"]["default"]
            self.sidecar(file).write_text(json.dumps(doc))
            version = store.read_current().version
        store.publish(record, version)
        self.edit_entry(file, token_id=token_id)
        return value

    def sidecar(self, file: str) -> Path:
        return self.dir / (file + SIDECAR_SUFFIX)

    def edit_entry(self, file: str, **changes: Any) -> None:
        doc = json.loads(self.sidecar(file).read_text())
        doc["profiles"]["default"][0].update(changes)  # the newest entry: the value the profile holds
        self.sidecar(file).write_text(json.dumps(doc))

    def sync(self, *args: str, cli: bool = False) -> subprocess.CompletedProcess[str]:
        entry = ["rotator.runners.cli", "sync"] if cli else ["rotator.runners.sync"]
        argv = [sys.executable, "-m", *entry, "--from", f"{self.dir / 'rotator.toml'}:{POLICY}", "--store", "src",
                "--config", str(self.target), "--log-file", str(self.dir / "sync.log"), *args]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROTATOR_")}
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                              env={**env, "PYTHONPATH": str(REPO)}, cwd=self.dir)  # fmt: skip
        for text in (proc.stdout, proc.stderr, (self.dir / "sync.log").read_text()):
            for value in self.values:
                assert value not in text, "a token value leaked"
        return proc

    def profile_token(self) -> str | None:
        import tomllib

        return tomllib.loads(self.target.read_text())["profile"][0].get("mgmt_token")


@pytest.fixture
def scene(tmp_path: Path) -> Scene:
    (tmp_path / "rotator.toml").write_text(POLICY_FILE)
    (tmp_path / "src.toml").write_text(PROFILE)
    (tmp_path / "dst.toml").write_text(PROFILE)
    return Scene(tmp_path, [])


def no_control_characters(proc: subprocess.CompletedProcess[str]) -> bool:
    return not any(c in proc.stdout + proc.stderr for c in "\x1b\x07\x9b")


@pytest.mark.parametrize("args", [(), ("--adopt",), ("--dry-run",), ("--output", "json")])
@pytest.mark.parametrize("cli", [False, True], ids=["python -m rotator.runners.sync", "rotator sync"])
def test_a_source_token_id_that_is_not_a_management_token_id_is_refused_unprinted(
        scene: Scene, args: tuple[str, ...], cli: bool) -> None:  # fmt: skip
    """A payload's token_id is text of whoever can write the store: one with escape sequences is not a
    management token id (a UUID); sync refuses it before writing, and never sends it to the terminal."""
    scene.publish("src.toml", ESCAPES)
    before = scene.target.read_bytes()
    proc = scene.sync(*args, cli=cli)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert no_control_characters(proc), proc.stdout + proc.stderr
    assert "influxctl-profile:" in proc.stderr and "src.toml#default (" in proc.stderr
    # (refused as the store reads it: no issuer's token id holds a control character, contracts.token_id_problem)
    assert "payload key 'token_id' holds a control character (\\x1b at index 0)" in proc.stderr, proc.stderr
    assert "nothing was synced" in proc.stderr
    assert f"`rotator bootstrap {POLICY} --replace" in proc.stderr
    assert proc.stdout == ""
    assert scene.target.read_bytes() == before and not scene.sidecar("dst.toml").exists()
    assert "\x1b" not in (scene.dir / "sync.log").read_text()
    # The rotating host publishes a good token: the same command now succeeds.
    scene.publish("src.toml", GOOD_ID)
    proc = scene.sync(*args, cli=cli)
    assert proc.returncode == 0, proc.stderr
    assert GOOD_ID in proc.stdout


@pytest.mark.parametrize("cli", [False, True], ids=["python -m rotator.runners.sync", "rotator sync"])
def test_an_id_with_escapes_in_the_target_s_sidecar_is_refused_escaped_and_its_fix_works(
        scene: Scene, cli: bool) -> None:  # fmt: skip
    """The profile's sidecar names the token it replaces (and whose it is): an id with escape sequences is no
    issuer's, refused as a malformed entry (contracts.token_id_problem) with its control characters written
    out, as rotator's other commands do; the fix the error names (the entry out, --adopt once) works."""
    scene.publish("src.toml", GOOD_ID)
    scene.publish("dst.toml", ESCAPES, policy="other-policy")
    before = scene.target.read_bytes()
    proc = scene.sync(cli=cli)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "dst.toml#default (" in proc.stderr and "holds a control character (\\x1b at index 0)" in proc.stderr
    assert no_control_characters(proc), proc.stderr
    fix = next(line for line in proc.stderr.splitlines() if line.startswith("fix: "))
    assert str(scene.sidecar("dst.toml")) in fix and "--adopt" in fix, fix
    assert scene.target.read_bytes() == before

    doc = json.loads(scene.sidecar("dst.toml").read_text())
    del doc["profiles"]["default"]
    scene.sidecar("dst.toml").write_text(json.dumps(doc))
    proc = scene.sync("--adopt", cli=cli)
    assert proc.returncode == 0, proc.stderr
    assert f"wrote token {GOOD_ID} from " in proc.stdout
    assert no_control_characters(proc), proc.stdout
    assert scene.profile_token() == scene.values[0]


def test_a_malformed_sidecar_entry_of_the_target_names_this_host_s_fix_which_works(scene: Scene) -> None:
    """The store's own fix for a malformed payload is `rotator bootstrap --replace`, a command of the
    rotating host; the sync host's fix is its sidecar, and the run after it succeeds (fail, fix, re-run)."""
    scene.publish("src.toml", GOOD_ID)
    scene.publish("dst.toml", OLD_ID)
    scene.edit_entry("dst.toml", created_at="yesterday")
    doc = json.loads(scene.sidecar("dst.toml").read_text())
    doc["profiles"]["other"] = [{"key": "mgmt_token", "token_id": OLD_ID}]  # another profile's: kept by the fix
    scene.sidecar("dst.toml").write_text(json.dumps(doc))
    before = scene.target.read_bytes()
    for args in ((), ("--adopt",)):
        proc = scene.sync(*args)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "payload key 'created_at/expires_at' is not an RFC 3339 time" in proc.stderr
        fix = next(line for line in proc.stderr.splitlines() if line.startswith("fix: "))
        assert str(scene.sidecar("dst.toml")) in fix and "profile 'default'" in fix and "--adopt" in fix, fix
        assert "bootstrap" not in fix
        assert scene.target.read_bytes() == before
    # The fix as the hint says it: the profile's entry out of the sidecar, then --adopt once.
    doc = json.loads(scene.sidecar("dst.toml").read_text())
    del doc["profiles"]["default"]
    scene.sidecar("dst.toml").write_text(json.dumps(doc))
    assert scene.sync().returncode == 1  # now an unmanaged value: --adopt is still needed, as the hint says
    proc = scene.sync("--adopt")
    assert proc.returncode == 0, proc.stderr
    assert scene.profile_token() == scene.values[0]
    assert "already current" in scene.sync().stdout
    assert json.loads(scene.sidecar("dst.toml").read_text())["profiles"]["other"][0]["token_id"] == OLD_ID
