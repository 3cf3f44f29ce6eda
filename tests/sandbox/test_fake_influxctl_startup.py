"""The fake influxctl starts fast: the tests start it thousands of times (tests/runners/test_aws_lambda.py once
spent 60% of its time there), so what it imports and how its interpreter starts are part of its contract.

Its behaviour is the other tests' business; here: the stand-ins for the modules it no longer imports give what those
modules gave, and the state file keeps its bytes and its mode.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import stat
import subprocess
import uuid
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from rotator.sandbox import influxctl_simulator as simulator
from rotator.sandbox import influxctl_state as store
from tests.fakes.fixtures import BINARY, FakeInfluxctlFixture

CHECKOUT = BINARY.resolve().parents[2]
#: Modules that once made up most of the fake's start-up (dataclasses: inspect; uuid: platform; secrets: random)
#: and that no command of the fake needs any more. tomllib is imported by the commands that read a profile only,
#: hashlib (public API only, so OpenSSL's ~3 ms stays) by those that hash a token.
SLOW_IMPORTS = {
    "dataclasses", "inspect", "pathlib", "tempfile", "uuid", "platform", "secrets", "random", "base64", "shutil",
}
#: Runs one fake command in the fake's own interpreter as tests/fakes/influxctl does, then reports what it imported.
DRIVER = """\
import json, sys
sys.path.insert(0, {checkout!r})
from rotator.sandbox.influxctl_simulator import main
code = main(sys.argv[1:])
print("MODULES " + json.dumps(sorted(sys.modules)), file=sys.stderr)
sys.exit(code)
"""


def _fake_python(fake: FakeInfluxctlFixture) -> str:
    """The ``python3`` the fake's shebang finds (the fixture's, first on its ``PATH``)."""
    python = shutil.which("python3", path=fake.env["PATH"])
    assert python is not None
    return python


def _imported(fake: FakeInfluxctlFixture, tmp_path: Path, *args: str) -> set[str]:
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER.format(checkout=str(CHECKOUT)))
    done = subprocess.run([_fake_python(fake), str(driver), *args], input="", capture_output=True, text=True,
                          env=fake.env, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    line = done.stderr.rstrip("\n").rsplit("\n", 1)[-1]
    assert line.startswith("MODULES "), done.stderr
    return set(json.loads(line.removeprefix("MODULES ")))


def test_the_fakes_python_skips_site_and_caches_its_bytecode_even_when_told_not_to_write_any(
    fake_influxctl: FakeInfluxctlFixture,
) -> None:
    env = {**fake_influxctl.env, "PYTHONDONTWRITEBYTECODE": "1"}
    probe = "import sys; print(sys.flags.no_site, sys.flags.dont_write_bytecode, sys.pycache_prefix)"
    done = subprocess.run([_fake_python(fake_influxctl), "-c", probe], capture_output=True, text=True, env=env,
                          timeout=30, check=True)
    no_site, dont_write, prefix = done.stdout.split()
    assert (no_site, dont_write) == ("1", "0"), "site costs ~27 ms a start; a stale __pycache__ ~15 ms"
    assert Path(prefix).parent == Path(_fake_python(fake_influxctl)).parent, "the checkout's __pycache__ stays as is"
    assert subprocess.run([str(BINARY), "version"], capture_output=True, env=env, timeout=30).returncode == 0
    assert list(Path(prefix).rglob("influxctl_simulator*.pyc")), "the simulator's bytecode is cached"


def test_a_command_imports_none_of_the_slow_modules(fake_influxctl: FakeInfluxctlFixture, tmp_path: Path) -> None:
    value, _ = fake_influxctl.state.add_token("bootstrap")
    config = str(fake_influxctl.profile(mgmt_token=value))
    imported = _imported(fake_influxctl, tmp_path, "--config", config, "--timeout", "10s",
                         "management", "create", "--description", "x")
    assert imported & SLOW_IMPORTS == set()
    assert "tomllib" in imported
    imported = _imported(fake_influxctl, tmp_path, "--config", config, "token", "create", "--read-database", "db1", "d")
    assert imported & SLOW_IMPORTS == set()
    assert _imported(fake_influxctl, tmp_path, "version") & (SLOW_IMPORTS | {"tomllib"}) == set()


def test_a_revoke_still_takes_as_an_id_what_uuid_parses(booted_value: tuple[FakeInfluxctlFixture, Path]) -> None:
    fake, config = booted_value
    _, token_id = fake.state.add_token("victim")
    braced = "{" + token_id.upper() + "}"  # uuid.UUID parses it: a well-formed id of no token
    done = fake.run("--config", str(config), "management", "revoke", "--force", token_id, braced, "not-a-uuid")
    assert done.returncode == 1
    assert done.stdout == f"revoked management token {token_id}\n"
    assert done.stderr == (
        f'Error: failed to revoke management token "{braced}": rpc error: code = NotFound desc = management token '
        'not found\nError: failed to revoke management token "not-a-uuid": rpc error: code = InvalidArgument desc = '
        "invalid management token id\n"
    )


@pytest.fixture
def booted_value(fake_influxctl: FakeInfluxctlFixture) -> tuple[FakeInfluxctlFixture, Path]:
    value, _ = fake_influxctl.state.add_token("bootstrap")
    return fake_influxctl, fake_influxctl.profile(mgmt_token=value)


# --- the stand-ins give what the modules gave --------------------------------------------------------------------


def test_new_ids_are_what_uuid4_makes() -> None:
    for _ in range(200):
        text = store._new_uuid4()
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, text)


def test_token_values_are_base64_of_random_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    for size in (32, 64):
        raw = bytes(range(200, 200 - size, -1))
        monkeypatch.setattr(os, "urandom", lambda n, raw=raw: raw[:n])
        assert store._random_base64(size) == base64.b64encode(raw).decode()


def test_token_hashes_are_sha256() -> None:
    for value in ("", "M.V1.abc", "apiv1_" + "x" * 86, "é\u2603"):
        assert store.hash_token(value) == hashlib.sha256(value.encode()).hexdigest()


@given(st.text(alphabet="/.a", max_size=12))
@example("")
@example("//a")
@example("///a/./b//")
def test_paths_are_spelled_as_pathlib_spells_them(path: str) -> None:
    assert simulator._path_text(path) == str(PurePosixPath(path))


def test_the_state_file_keeps_its_bytes_and_mode(tmp_path: Path) -> None:
    fake = store.FakeInfluxctl(tmp_path / "state.json")
    fake.init()
    fake.add_token("bootstrap")
    fake.add_db_token("reader", {"read": ["db1"]})
    text = fake.path.read_text()
    assert text == json.dumps(json.loads(text), indent=2)  # what json.dump(state, handle, indent=2) wrote
    assert stat.S_IMODE(fake.path.stat().st_mode) == 0o600  # tempfile.mkstemp's mode, kept by the rename
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json", "state.json.lock"], "no temporary file left"


def test_a_temporary_state_file_is_named_as_mkstemp_names_it(tmp_path: Path) -> None:
    fd, name = store._temp_file(str(tmp_path / "state.json"))
    os.close(fd)
    folder, base = os.path.split(name)
    assert folder == str(tmp_path)
    assert base.startswith(".state.json.") and len(base) == len(".state.json.") + 8
    assert set(base.removeprefix(".state.json.")) <= set("abcdefghijklmnopqrstuvwxyz0123456789_")
    assert stat.S_IMODE(os.stat(name).st_mode) == 0o600
