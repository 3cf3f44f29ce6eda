"""The influxctl-profile store on real files, the fake influxctl reading what it wrote, and a
policy with two stores (vault-kv2 + influxctl-profile) rotated end to end through the CLI.

Error paths a file system will not produce on demand (a failed rename, a non-root writer) go
through the store's ``replace`` seam or a patched ``os.geteuid``; everything else is real.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import signal
import time
import tomllib
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from stat import S_ISREG
from typing import Any

import pytest

from rotator.adapters.influxctl.profile import (
    SIDECAR_SUFFIX,
    InfluxctlProfileSettings,
    InfluxctlProfileStore,
    default_config_path,
    key_problem,
    value_version,
)
from rotator.config.policy import PolicyFileError, parse_config
from rotator.core.clock import FakeClock
from rotator.core.contracts import AdapterContext, StoreState, TokenRecord
from rotator.core.errors import ConfigError, ConflictError, MalformedPayload, PermanentError, TransientError
from rotator.core.secret import Secret
from rotator.runners.cli import _exit_code as cli_exit_code
from tests.harness import Scenario, check_invariants, make_scenario

POLICY = "mgmt"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

#: influxctl's documented sample, trimmed: comments, blank lines, sub-tables, two profiles,
#: a trailing comment, a literal string with its own trailing comment, no final newline.
CONFIG = """\
## influxctl - example configuration
[[profile]]
    ## Profile name ... By default, the profile named "default" is loaded and used.
    name = "default"
    ## Product type
    product = "clustered"   # or "dedicated"
    host = "influxdb.example.test"
    port = "443"
    ## Database and token
    # database = ""
    # token = ""
    [profile.tls]
        insecure = false
    [profile.auth.oauth2]
        client_id = "OAUTH_CLIENT_ID"
        scopes = [""]
        parameters = { audience = "" }

[[profile]]
  name = "other"
  product = "dedicated"
  account_id = "00000000-0000-4000-8000-00000000acc1"
  cluster_id = "00000000-0000-4000-8000-00000000c1a5"
  mgmt_token = 'hand-placed-value-0123456789' # put here by hand"""


def value() -> str:
    return f"test-mgmt-token-{uuid.uuid4().hex}"


def record(token_id: str, token: str | None = None, *, created: datetime = NOW, policy: str = POLICY,
           issuer: str = "influxctl-management") -> TokenRecord:  # fmt: skip
    return TokenRecord(Secret(token or value()), token_id, issuer, policy, created,
                       created + timedelta(days=30))  # fmt: skip


def write_config(tmp_path: Path, text: str = CONFIG, name: str = "config.toml") -> Path:
    path = tmp_path / "influxctl" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode())
    path.chmod(0o644)
    return path


def make_store(path: Path, profile: str = "default", key: str = "mgmt_token", **kw: Any) -> InfluxctlProfileStore:
    settings = InfluxctlProfileSettings.model_validate({"config": path, "profile": profile, "key": key})
    ctx = AdapterContext(policy=POLICY, base_dir=path.parent, clock=kw.pop("clock", FakeClock(NOW)))
    return InfluxctlProfileStore.from_config(settings, ctx, **kw)


def fingerprint(path: Path) -> tuple[int, int, bytes]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns, path.read_bytes()


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path)


# ------------------------------------------------------------------------------ writing


def test_first_publish_adds_one_indented_line_and_keeps_every_other_byte(config: Path) -> None:
    store = make_store(config)
    state = store.read_current()
    assert (state.version, state.managed, state.record) == (None, False, None)
    token = record("id-1")
    version = store.publish(token, None)
    assert version == value_version(token.value.reveal())
    line = f'    mgmt_token = "{token.value.reveal()}"\n'
    assert config.read_text() == CONFIG.replace('    port = "443"\n', '    port = "443"\n' + line, 1)
    assert config.stat().st_mode & 0o777 == 0o600
    sidecar = Path(str(config) + SIDECAR_SUFFIX)
    assert sidecar.stat().st_mode & 0o777 == 0o600
    assert token.value.reveal() not in sidecar.read_text(), "the sidecar holds a salted hash, never the value"
    again = store.read_current()
    assert again.managed and again.version == version and again.record == token
    assert leftovers(config.parent) == []


def test_a_rotation_changes_only_the_value(config: Path) -> None:
    store = make_store(config)
    first = record("id-1")
    v1 = store.publish(first, None)
    before = config.read_text()
    second = record("id-2", created=NOW + timedelta(days=1))
    v2 = store.publish(second, v1)
    assert config.read_text() == before.replace(first.value.reveal(), second.value.reveal())
    assert store.read_current().record == second and v2 != v1


def test_a_literal_string_and_its_trailing_comment_are_kept(config: Path) -> None:
    store = make_store(config, profile="other")
    state = store.read_current()
    assert state.version == value_version("hand-placed-value-0123456789")
    assert not state.managed and state.record is None  # rotator did not write it: adopting is the engine's call
    token = record("id-1")
    store.publish(token, state.version)
    assert config.read_text() == CONFIG.replace("hand-placed-value-0123456789", token.value.reveal())


@pytest.mark.parametrize("newline", ["\r\n", "\n"])
@pytest.mark.parametrize("final_newline", [True, False])
def test_line_endings_are_kept_when_the_line_is_added_last(tmp_path: Path, newline: str, final_newline: bool) -> None:
    text = '[[profile]]\n  name = "default"\n  product = "clustered"\n  host = "h.test"'
    text = text.replace("\n", newline) + (newline if final_newline else "")
    config = write_config(tmp_path, text)
    token = record("id-1")
    make_store(config).publish(token, None)
    line = f'  mgmt_token = "{token.value.reveal()}"'
    expected = text.rstrip("\r\n") + newline + line + newline  # a missing final newline is added with the line
    assert config.read_bytes() == expected.encode()


#: Profile layouts the store adds a missing key to. ``<<NEW>>`` marks where the new line must
#: appear (its own line, after the indent it must have); the file as written has no such line.
#: The profile written is always "target"; ``{other}`` is the other profile key, already there.
MISSING_KEY_LAYOUTS = {
    "first of three profiles": """\
[[profile]]
  name = "target"
  product = "clustered"
  host = "a.test"
  <<NEW>>

[[profile]]
  name = "middle"
  product = "dedicated"

[[profile]]
  name = "last"
  product = "dedicated"
""",
    "middle of three, no blank lines": """\
[[profile]]
name = "first"
product = "dedicated"
[[profile]]
name = "target"
product = "clustered"
<<NEW>>
[[profile]]
name = "last"
product = "dedicated"
""",
    "last of three, the other key present": """\
[[profile]]
name = "first"
[[profile]]
name = "middle"
[[profile]]
name = "target"
{other} = "present-0123456789"
host = "c.test"
<<NEW>>
""",
    "trailing comments on its keys": """\
# influxctl configuration
[[profile]]  # production
    name = "target"   # the profile rotator writes
    host = "a.test"   # the cluster
    <<NEW>>
""",
    "comment lines and sub-tables after its keys": """\
[[profile]]
    ## Profile name
    name = "target"
    product = "clustered"
    port = "443"
    <<NEW>>
    ## Database and token
    # database = ""
    # {other} = ""
    [profile.tls]
        insecure = false
    [profile.auth.oauth2]
        client_id = "OAUTH_CLIENT_ID"
        parameters = {{ audience = "" }}

[[profile]]
  name = "after"
""",
    "dotted keys after its plain keys": """\
[[profile]]
name = "target"
host = "a.test"
<<NEW>>
tls.insecure = false
auth.oauth2.client_id = "x"
""",
    "an inline table last": """\
[[profile]]
  name = "target"
  auth = {{ oauth2 = {{ client_id = "x", scopes = ["a", "b"] }} }}
  <<NEW>>
""",
    "a multi-line array last": """\
[[profile]]
  name = "target"
  scopes = [
    "a",  # first
    "b",
  ]
  <<NEW>>
[[profile]]
  name = "after"
""",
    "a multi-line string last": "[[profile]]\nname = \"target\"\nnote = '''\none\ntwo'''\n<<NEW>>\n",
    "quoted keys, tab indent": """\
[[profile]]
\t"name" = "target"
\t'product' = "dedicated"
\t<<NEW>>
""",
    "only its name": """\
[[profile]]
name = "target"
<<NEW>>
""",
    "blank lines, then another table": """\
[[profile]]
name = "target"

product = "clustered"
<<NEW>>


[[profile]]
name = "after"

[extra]
x = 1
""",
}


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
@pytest.mark.parametrize("key", ["mgmt_token", "token"])
@pytest.mark.parametrize("layout", sorted(MISSING_KEY_LAYOUTS))
def test_a_missing_key_is_added_as_one_line_after_the_profiles_last_plain_key(
    tmp_path: Path, layout: str, key: str, newline: str
) -> None:
    template = MISSING_KEY_LAYOUTS[layout].format(other="token" if key == "mgmt_token" else "mgmt_token")
    text = re.sub(r"^[ \t]*<<NEW>>\n", "", template, flags=re.M).replace("\n", newline)
    config = write_config(tmp_path, text)
    store = make_store(config, profile="target", key=key)
    assert store.read_current().version is None
    token = db_record("id-1") if key == "token" else record("id-1")
    store.publish(token, None)
    expected = template.replace("<<NEW>>", f'{key} = "{token.value.reveal()}"').replace("\n", newline)
    assert config.read_bytes() == expected.encode()
    data = tomllib.loads(text)
    next(p for p in data["profile"] if p["name"] == "target")[key] = token.value.reveal()
    assert tomllib.loads(config.read_text()) == data
    assert store.read_current().record == token


def test_publishing_the_current_record_again_writes_nothing(config: Path) -> None:
    store = make_store(config)
    token = record("id-1")
    version = store.publish(token, None)
    sidecar = Path(str(config) + SIDECAR_SUFFIX)
    before = fingerprint(config), fingerprint(sidecar)
    time.sleep(0.01)
    assert store.publish(token, None) == version  # a retry after a write that landed: no conflict
    assert (fingerprint(config), fingerprint(sidecar)) == before


def test_the_current_record_written_again_at_its_own_version_moves_the_version(config: Path) -> None:
    """Recovery fences a publish that may still be under way (a process paused between its lease check
    and its write) by writing each store again with what it holds, at the version it has: the version
    must move, so that the paused write's compare-and-set fails instead of landing with a token that
    recovery then revokes. The value is not written again: the sidecar entry's generation moves."""
    store = make_store(config)
    token = record("id-1")
    version = store.publish(token, None)
    config_before = fingerprint(config)
    moved = store.publish(token, version)
    assert moved != version and moved == value_version(token.value.reveal(), 1)
    assert store.read_current().version == moved and store.read_current().record == token
    assert fingerprint(config) == config_before, "the config file is not rewritten"
    with pytest.raises(ConflictError):
        store.publish(record("id-2"), version)  # the paused write, planned against the version before
    assert store.read_current().record == token
    assert store.publish(token, version) == moved, "a retry of the fencing write (version before) writes nothing"
    assert store.publish(token, moved) == value_version(token.value.reveal(), 2)
    newer = record("id-2")
    assert store.publish(newer, store.read_current().version) == value_version(newer.value.reveal())


def test_adopting_the_value_already_in_the_profile_writes_only_the_sidecar(config: Path) -> None:
    config.chmod(0o600)  # (a file others may read is written again: the next test)
    store = make_store(config, profile="other")
    state = store.read_current()
    before = fingerprint(config)
    token = record("id-1", "hand-placed-value-0123456789")
    assert store.publish(token, state.version) == value_version("hand-placed-value-0123456789", 1)  # the version moves
    assert fingerprint(config) == before
    assert store.read_current().record == token


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_adopting_the_value_in_a_file_others_can_read_writes_it_again_with_mode_0600(
    config: Path, mode: int, caplog: Any
) -> None:
    """An adopt of the value already in the config wrote only the sidecar: the file that now holds a
    managed token stayed readable by others (until a rotation wrote it), without a word."""
    config.chmod(mode)
    text = config.read_bytes()
    store = make_store(config, profile="other")
    state = store.read_current()
    token = record("id-1", "hand-placed-value-0123456789")
    with caplog.at_level(logging.WARNING):
        version = store.publish(token, state.version)
    assert version == value_version("hand-placed-value-0123456789", 1)
    assert config.read_bytes() == text, "the same bytes"
    assert config.stat().st_mode & 0o777 == 0o600
    assert f"was readable by others (mode {mode:o}): written again with mode 0600" in caplog.text
    assert "hand-placed-value" not in caplog.text
    assert store.read_current().record == token
    assert store.publish(token, None) == version, "a retry writes nothing"
    assert leftovers(config.parent) == []


def sidecar_ids(config: Path, profile: str = "default") -> list[str | None]:
    """The token ids of the profile's sidecar entries, as they are stored (newest first)."""
    return [e.get("token_id") for e in json.loads(Path(str(config) + SIDECAR_SUFFIX).read_text())["profiles"][profile]]


def put_back(config: Path, now: TokenRecord, older: TokenRecord) -> None:
    """The config as an older backup (or configuration management) has it: ``older``'s value in place of ``now``'s."""
    config.write_text(config.read_text().replace(now.value.reveal(), older.value.reveal()))


def test_the_sidecar_keeps_the_last_five_entries_and_more_while_their_tokens_may_be_valid(config: Path) -> None:
    """A value put back must name its token while that token may still be valid (its revocation may be
    pending): the newest five entries whatever their expiry, older ones while their tokens have not
    expired (or never do), 32 at most."""
    clock = FakeClock(NOW)
    store = make_store(config, clock=clock)
    version = None
    for n in range(7):  # tokens that expired a month ago: only the newest five stay
        version = store.publish(record(f"old-{n}", created=NOW - timedelta(days=60)), version)
    assert sidecar_ids(config) == ["old-6", "old-5", "old-4", "old-3", "old-2"]
    forever = TokenRecord(Secret(value()), "forever", "influxctl-management", POLICY, NOW, None)
    version = store.publish(forever, version)
    for n in range(40):
        version = store.publish(record(f"id-{n}"), version)
        if n == 3:
            assert sidecar_ids(config) == ["id-3", "id-2", "id-1", "id-0", "forever"], "the expired ones are gone"
        if n == 10:
            assert sidecar_ids(config) == [f"id-{k}" for k in range(10, -1, -1)] + ["forever"], "valid ones stay"
    assert sidecar_ids(config) == [f"id-{k}" for k in range(39, 7, -1)], "32 at most"
    latest = store.read_current().record
    assert latest is not None and latest.token_id == "id-39"
    fenced = store.publish(latest, version)  # recovery's fencing write
    assert fenced == value_version(latest.value.reveal(), 1)
    assert sidecar_ids(config) == [f"id-{k}" for k in range(39, 7, -1)], "only the generation moved"
    clock.advance(timedelta(days=31))  # every token expired: the newest five stay
    store.publish(record("id-40", created=clock.now()), fenced)
    assert sidecar_ids(config) == ["id-40", "id-39", "id-38", "id-37", "id-36"]
    sidecar = json.loads(Path(str(config) + SIDECAR_SUFFIX).read_text())
    assert sidecar["managed-by"] == "rotator" and sidecar["schema"] == 1


def test_two_profiles_of_one_file_are_managed_independently(config: Path) -> None:
    default, other = make_store(config), make_store(config, profile="other")
    a, b = record("id-a"), record("id-b", policy="other-policy")
    default.publish(a, None)
    other.publish(b, other.read_current().version)
    assert default.read_current().record == a
    assert other.read_current().record == b


def test_fake_influxctl_accepts_the_written_config(config: Path, fake_influxctl: Any) -> None:
    """influxctl refuses unknown keys: the fake does too, and authenticates with mgmt_token."""
    token, token_id = fake_influxctl.state.add_token("for the profile test")
    args = ("--config", str(config), "--profile", "default", "management", "list", "--format", "json")
    before = fake_influxctl.run(*args)
    assert before.returncode == 1 and "login required" in before.stderr
    make_store(config).publish(record(token_id, token), None)
    done = fake_influxctl.run(*args)
    assert done.returncode == 0, done.stderr
    assert token_id in [t["id"] for t in json.loads(done.stdout)]
    other = make_store(config, profile="other")
    other.publish(record(token_id, token), other.read_current().version)
    done = fake_influxctl.run("--config", str(config), "--profile", "other", "management", "list")
    assert done.returncode == 0, done.stderr


# ------------------------------------------------------------------------------ managed or not


def test_a_value_changed_by_hand_reads_as_unmanaged_with_a_warning(config: Path, caplog: Any) -> None:
    store = make_store(config)
    token = record("id-1")
    store.publish(token, None)
    config.write_text(config.read_text().replace(token.value.reveal(), "edited-by-hand-0123456789"))
    with caplog.at_level(logging.WARNING, logger="rotator.adapters.influxctl_profile"):
        state = store.read_current()
    assert not state.managed and state.record is None
    assert state.version == value_version("edited-by-hand-0123456789")
    assert "changed by hand" in caplog.text and "id-1" in caplog.text
    assert "edited-by-hand" not in caplog.text


def test_a_value_rotator_wrote_before_put_back_names_its_token(config: Path, caplog: Any) -> None:
    """A config restored from a backup (or rewritten by configuration management) with a token rotator
    replaced: the store names that token, so that the engine does not revoke it while influxctl uses it,
    and the next publish writes over it with compare-and-set on its version."""
    store = make_store(config)
    a, b, c, d = record("id-a"), record("id-b"), record("id-c"), record("id-d")
    version = store.publish(a, None)
    version = store.publish(b, version)
    put_back(config, b, a)  # one rotation back
    assert store.read_current().record == a
    put_back(config, a, b)
    version = store.publish(c, version)
    put_back(config, c, a)  # two rotations back: the backup from before b
    with caplog.at_level(logging.WARNING, logger="rotator.adapters.influxctl_profile"):
        state = store.read_current()
    assert state.managed and state.record == a and state.version == value_version(a.value.reveal())
    assert "holds token id-a, which rotator wrote before token id-c" in caplog.text
    assert "changed by hand" not in caplog.text and a.value.reveal() not in caplog.text
    with pytest.raises(ConflictError):
        store.publish(d, version)  # planned when the profile held c
    assert store.publish(d, state.version) == value_version(d.value.reveal())
    assert store.read_current().record == d
    assert sidecar_ids(config) == ["id-d", "id-a", "id-c", "id-b"], "the value replaced right after the new one"
    caplog.clear()
    config.write_text(config.read_text().replace(d.value.reveal(), "edited-by-hand-0123456789"))
    with caplog.at_level(logging.WARNING, logger="rotator.adapters.influxctl_profile"):
        state = store.read_current()
    assert not state.managed and state.record is None, "a value rotator never wrote is still not its own"
    assert "is none of the values rotator wrote (the last: token id-d): changed by hand?" in caplog.text


def test_the_entry_of_the_value_the_config_holds_outlives_the_bound_and_a_crash(config: Path) -> None:
    """Crash safety with the bound reached: the sidecar written, the config not (killed between the
    renames), the config's value is the oldest entry kept: its entry stays, right after the new one."""
    store = make_store(config)
    tokens = [record(f"id-{n}", created=NOW - timedelta(days=60)) for n in range(6)]  # expired: five kept
    version = None
    for token in tokens[:5]:
        version = store.publish(token, version)
    assert sidecar_ids(config) == ["id-4", "id-3", "id-2", "id-1", "id-0"]
    put_back(config, tokens[4], tokens[0])
    held = store.read_current()
    assert held.record == tokens[0]
    with pytest.raises(TransientError, match="cannot write"):
        make_store(config, replace=FailingReplace(2)).publish(tokens[5], held.version)  # 1 = sidecar, 2 = config
    assert sidecar_ids(config) == ["id-5", "id-0", "id-4", "id-3", "id-2"]
    assert (store.read_current().record, store.read_current().version) == (tokens[0], held.version)
    assert store.publish(tokens[5], held.version) == value_version(tokens[5].value.reveal())
    assert sidecar_ids(config) == ["id-5", "id-0", "id-4", "id-3", "id-2"], "the retry's entry replaces its own"


def test_an_empty_or_removed_mgmt_token_is_absent(config: Path) -> None:
    store = make_store(config)
    store.publish(record("id-1"), None)
    text = config.read_text()
    line = next(x for x in text.splitlines() if "mgmt_token" in x and "'" not in x)
    config.write_text(text.replace(line, '    mgmt_token = ""'))
    state = store.read_current()
    assert state.version is None and state.record is None
    assert state.managed, "the sidecar still says rotator manages this profile"
    token = record("id-2")
    store.publish(token, None)
    assert f'    mgmt_token = "{token.value.reveal()}"' in config.read_text().splitlines()


# ------------------------------------------------------------------------------ compare-and-set


def test_publish_refuses_when_the_value_changed_since_read(config: Path) -> None:
    store = make_store(config)
    v1 = store.publish(record("id-1"), None)
    planned = store.read_current()
    assert planned.record is not None
    config.write_text(config.read_text().replace(planned.record.value.reveal(), "someone-else-0123456789"))
    before = fingerprint(config)
    with pytest.raises(ConflictError) as info:
        store.publish(record("id-2"), v1)
    assert v1 in str(info.value) and "someone-else" not in str(info.value)
    assert fingerprint(config) == before
    with pytest.raises(ConflictError):
        make_store(config, profile="other").publish(record("id-3"), None)  # expected absent, holds a value


def test_edits_elsewhere_in_the_file_between_read_and_publish_are_kept(config: Path) -> None:
    store = make_store(config)
    planned = store.read_current()
    # (not the profile's cluster: a profile moved to another one since the read is refused, see
    # tests/adapters/test_influxctl_profile_cluster.py)
    config.write_text(config.read_text().replace('# database = ""', 'database = "db2"', 1))
    token = record("id-1")
    store.publish(token, planned.version)
    text = config.read_text()
    assert 'database = "db2"' in text and token.value.reveal() in text


# ------------------------------------------------------------------------------ refusals


def test_an_unparsable_file_is_left_untouched_and_the_error_names_no_content(config: Path) -> None:
    secret = "M.V1.zq-secret-value-0123"
    config.write_text(f'[[profile]]\n  name = "default"\n  product = "clustered"\n  mgmt_token = {secret}\n')
    before = fingerprint(config)
    store = make_store(config)
    for call in (store.read_current, lambda: store.publish(record("id-1"), None)):
        with pytest.raises(ConfigError) as info:
            call()
        message = f"{info.value} {info.value.hint}"
        assert str(config) in message and "line 4" in message and "left untouched" in message
        assert "zq-secret" not in message and "M.V1" not in message
    assert fingerprint(config) == before
    assert sorted(p.name for p in config.parent.iterdir()) == ["config.toml"]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (b'[[profile]]\nname = "default"\nproduct = "clustered"\n[[profile]]\nname = "default"\n', "2 profiles"),
        (b'profile = [{ name = "default", product = "clustered" }]\n', "inline array"),
        (b'[profile]\nname = "default"\n', "not an array"),
        (b'[[profile]]\nname = "default"\nmgmt_token = 42\n', "not a string"),
        (b"[[profile]]\nname = 'default'\nhost = '\xff'\n", "not UTF-8"),
    ],
)
def test_shapes_rotator_does_not_edit_are_refused(tmp_path: Path, text: bytes, words: str) -> None:
    config = write_config(tmp_path)
    config.write_bytes(text)
    before = fingerprint(config)
    with pytest.raises(ConfigError, match=words):
        make_store(config).publish(record("id-1"), None)
    assert fingerprint(config) == before


def test_an_unknown_profile_is_refused_and_never_created(config: Path) -> None:
    before = fingerprint(config)
    store = make_store(config, profile="automation")
    with pytest.raises(ConfigError) as info:
        store.publish(record("id-1"), None)
    assert "no [[profile]] named 'automation'" in str(info.value) and "'default', 'other'" in str(info.value)
    assert "never creates" in info.value.hint
    assert fingerprint(config) == before and not Path(str(config) + SIDECAR_SUFFIX).exists()


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    for path in (tmp_path / "config.toml", tmp_path / "no-dir" / "config.toml"):
        with pytest.raises(ConfigError, match="does not exist"):
            make_store(path).read_current()
        assert not path.exists()


def test_a_malformed_sidecar_is_a_permanent_error(config: Path) -> None:
    Path(str(config) + SIDECAR_SUFFIX).write_text("{not json")
    with pytest.raises(PermanentError, match="sidecar .* malformed: not JSON") as info:
        make_store(config).read_current()
    assert "delete it" in info.value.hint


def test_a_sidecar_digest_with_non_ascii_text_reads_as_no_match_not_a_type_error(config: Path) -> None:
    """hmac.compare_digest refuses a str with non-ASCII characters (TypeError: an "internal error");
    a hand-edited digest is a digest that does not match."""
    import json

    store = make_store(config)
    store.publish(record("id-1"), None)
    sidecar = Path(str(config) + SIDECAR_SUFFIX)
    text = sidecar.read_text()
    data = json.loads(text)
    entries = [e for e in _walk_dicts(data) if isinstance(e.get("sha256"), str)]
    assert entries, text
    for entry in entries:
        entry["sha256"] = "é" + entry["sha256"][1:]
    sidecar.write_text(json.dumps(data))
    state = store.read_current()
    assert not state.managed and state.record is None


def _walk_dicts(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, dict):
        return [value, *(d for v in value.values() for d in _walk_dicts(v))]
    if isinstance(value, list):
        return [d for v in value for d in _walk_dicts(v)]
    return []


def test_a_sidecar_nested_100000_deep_is_a_malformed_sidecar_not_a_recursion_error(config: Path) -> None:
    """json.loads raised RecursionError through read_current and publish (an internal error)."""
    sidecar = Path(str(config) + SIDECAR_SUFFIX)
    sidecar.write_text("[" * 100_000 + "]" * 100_000)
    before = fingerprint(config)
    store = make_store(config)
    for call in (store.read_current, lambda: store.publish(record("id-1"), None)):
        with pytest.raises(PermanentError, match="sidecar .* malformed: not JSON") as info:
            call()
        assert "delete it" in info.value.hint
    assert fingerprint(config) == before


HOSTILE_TOML = {
    "array nested 5000 deep": "x = " + "[" * 5000 + "]" * 5000,
    "inline table nested 5000 deep": "x = " + "{a=" * 5000 + "1" + "}" * 5000,
    "integer of 5000 digits": "x = " + "1" * 5000,
}


@pytest.mark.parametrize("line", HOSTILE_TOML.values(), ids=HOSTILE_TOML.keys())
def test_a_config_tomllib_cannot_hold_is_a_config_error_naming_the_file(tmp_path: Path, line: str) -> None:
    """Valid TOML syntax that tomllib cannot turn into data (RecursionError, or int()'s 4,300-digit
    ValueError) escaped read_current and publish instead of the ConfigError every unparsable file gets."""
    config = write_config(tmp_path, f'[[profile]]\nname = "default"\nproduct = "clustered"\nhost = "h"\n{line}\n')
    before = fingerprint(config)
    store = make_store(config)
    for call in (store.read_current, lambda: store.publish(record("id-1"), None)):
        with pytest.raises(ConfigError) as info:
            call()
        message = str(info.value)
        assert f"{config} is not valid TOML" in message and "left untouched" in message
        assert "nested too deep, or an integer of thousands of digits" in message
        assert "remove it by hand" in info.value.hint
    assert fingerprint(config) == before
    assert sorted(p.name for p in config.parent.iterdir()) == ["config.toml"]


@pytest.mark.parametrize("moment", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00", "garbage"])
@pytest.mark.parametrize("field", ["created_at", "expires_at"])
def test_a_sidecar_time_past_the_years_datetime_holds_is_a_malformed_payload(
    config: Path, field: str, moment: str
) -> None:
    """Valid RFC 3339 that overflows when moved to UTC raised OverflowError (an internal error); it is
    now refused like any other time that is not one ("garbage"), with the state read so far."""
    store = make_store(config)
    version = store.publish(record("id-1"), None)
    sidecar = Path(str(config) + SIDECAR_SUFFIX)
    doc = json.loads(sidecar.read_text())
    doc["profiles"]["default"][0][field] = moment
    sidecar.write_text(json.dumps(doc))
    with pytest.raises(MalformedPayload, match=r"payload key 'created_at/expires_at' is not an RFC 3339 time") as info:
        store.read_current()
    assert info.value.state == StoreState(version=version, managed=True, record=None)


def test_a_token_with_a_newline_is_refused(config: Path) -> None:
    with pytest.raises(PermanentError, match="control characters"):
        make_store(config).publish(record("id-1", "two\nlines-0123456789"), None)


def test_a_non_root_writer_that_does_not_own_the_file_is_refused(config: Path, monkeypatch: Any) -> None:
    os.chown(config, 4321, 4321)
    before = fingerprint(config)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(PermanentError, match="belongs to uid 4321, rotator runs as uid 1000"):
        make_store(config).publish(record("id-1"), None)
    assert fingerprint(config) == before


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_root_keeps_owner_and_group_of_the_file(config: Path) -> None:
    os.chown(config, 4321, 4322)
    make_store(config).publish(record("id-1"), None)
    for path in (config, Path(str(config) + SIDECAR_SUFFIX)):
        st = path.stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (4321, 4322, 0o600)


def test_a_symlinked_config_is_written_through(config: Path, tmp_path: Path) -> None:
    link = tmp_path / "link.toml"
    link.symlink_to(config)
    token = record("id-1")
    make_store(link).publish(token, None)
    assert link.is_symlink() and token.value.reveal() in config.read_text()
    assert Path(str(config) + SIDECAR_SUFFIX).exists()
    assert make_store(link).read_current().record == token


# ------------------------------------------------------------------------------ atomicity


class FailingReplace:
    """The store's rename seam: fails the ``nth`` call (1-based) with ``errno``, as a crash would stop it."""

    def __init__(self, nth: int, err: int = errno.EIO) -> None:
        self.nth, self.err, self.calls = nth, err, 0

    def __call__(self, src: str, dst: str, dir_fd: int) -> None:
        self.calls += 1
        if self.calls == self.nth:
            raise OSError(self.err, os.strerror(self.err))
        os.replace(src, dst, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


def test_a_failed_rename_of_the_config_leaves_it_and_no_temp_file(config: Path) -> None:
    """Killed between the sidecar and the config: the store still reads its old, consistent self."""
    store = make_store(config)
    first = record("id-1")
    v1 = store.publish(first, None)
    before = fingerprint(config)
    failing = make_store(config, replace=FailingReplace(2))  # 1 = the sidecar, 2 = the config
    with pytest.raises(TransientError, match="cannot write"):
        failing.publish(record("id-2"), v1)
    assert fingerprint(config) == before
    assert leftovers(config.parent) == []
    state = store.read_current()
    assert state.managed and state.record == first and state.version == v1
    second = record("id-2")
    assert store.publish(second, v1) == value_version(second.value.reveal())


def test_a_permission_refused_rename_is_a_permanent_error(config: Path) -> None:
    before = fingerprint(config)
    with pytest.raises(PermanentError, match="Permission denied") as info:
        make_store(config, replace=FailingReplace(1, errno.EACCES)).publish(record("id-1"), None)
    assert not isinstance(info.value, TransientError)
    assert fingerprint(config) == before and leftovers(config.parent) == []


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EDQUOT], ids=["full", "quota"])
def test_a_full_file_system_is_said_so_and_the_same_command_succeeds_once_there_is_space(
        config: Path, err: int) -> None:  # fmt: skip
    """Finding: a full disk under the profile got the hint for a directory rotator may not write to."""
    before = fingerprint(config)
    with pytest.raises(TransientError, match="cannot write") as info:
        make_store(config, replace=FailingReplace(1, err)).publish(record("id-1"), None)
    assert f"free space (or quota) on the file system that holds {config.parent}" in (info.value.hint or "")
    assert "write access" not in (info.value.hint or "")
    assert fingerprint(config) == before and leftovers(config.parent) == []
    assert make_store(config).publish(record("id-1"), None)


def test_an_io_error_is_said_so_not_a_missing_write_access(config: Path) -> None:
    """Finding: every error but a full disk got "rotator needs write access to the directory", false for
    an EIO (and as root): the file system failed, the same command succeeds once it is dealt with (exit 1)."""
    before = fingerprint(config)
    with pytest.raises(TransientError, match="cannot write .*: Input/output error") as info:
        make_store(config, replace=FailingReplace(1, errno.EIO)).publish(record("id-1"), None)
    hint = info.value.hint or ""
    assert hint.startswith(f"the file system that holds {config.parent} failed the write (EIO: Input/output error): "
                           "check its health")
    assert "run the same command again" in hint and "nothing was replaced" in hint
    assert "write access" not in hint
    assert cli_exit_code(info.value) == 1
    assert fingerprint(config) == before and leftovers(config.parent) == []


def test_an_io_error_at_fsync_is_said_so_too(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = make_store(config)
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if S_ISREG(os.fstat(fd).st_mode):  # a temporary file's (the sidecar's, written first), not the directory's
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(TransientError) as info:
        store.publish(record("id-1"), None)
    assert "failed the write (EIO: Input/output error)" in (info.value.hint or "")
    assert "write access" not in (info.value.hint or "")


@pytest.mark.parametrize("err", [errno.EACCES, errno.EPERM, errno.EROFS], ids=["EACCES", "EPERM", "EROFS"])
def test_a_refused_write_keeps_the_write_access_hint(config: Path, err: int) -> None:
    with pytest.raises(PermanentError) as info:
        make_store(config, replace=FailingReplace(1, err)).publish(record("id-1"), None)
    assert not isinstance(info.value, TransientError)
    assert info.value.hint == f"rotator needs write access to the directory {config.parent} (temporary file + rename)"
    assert cli_exit_code(info.value) == 1


def test_a_config_replaced_by_a_directory_says_so(config: Path) -> None:
    with pytest.raises(PermanentError) as info:
        make_store(config, replace=FailingReplace(2, errno.EISDIR)).publish(record("id-1"), None)
    assert not isinstance(info.value, TransientError)
    assert f"that {config} is a file (not a directory)" in (info.value.hint or "")


def test_temp_files_of_a_killed_writer_are_removed(config: Path) -> None:
    """Under the directory's exclusive lock, which every writer holds from its temp file to its
    rename, each temp file found is a dead writer's, whatever process id it names: one that is alive
    (rotator as PID 1 in a container, killed and restarted as PID 1 again) is no writer of it."""
    dead = _dead_pid()
    stale = config.parent / f".config.toml.rotator-{dead}-abc123.tmp"
    stale_sidecar = config.parent / f".config.toml{SIDECAR_SUFFIX}.rotator-{dead}-xyz_89.tmp"
    pid_1 = config.parent / ".config.toml.rotator-1-live42.tmp"
    other = config.parent / ".other.toml.rotator-1-abc.tmp"  # not this store's file
    for path in (stale, stale_sidecar, pid_1, other):
        path.write_text("a token would be here")
    make_store(config).publish(record("id-1"), None)
    assert not stale.exists() and not stale_sidecar.exists() and not pid_1.exists()
    assert other.exists()


def test_without_a_lock_a_live_writer_s_temp_file_is_left(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the file system refuses locks (ENOLCK, some network file systems) another writer may be
    between its temp file and its rename: only files of writers that are gone are removed then."""
    dead = _dead_pid()
    stale = config.parent / f".config.toml.rotator-{dead}-abc123.tmp"
    alive = config.parent / f".config.toml.rotator-{os.getpid()}-live42.tmp"
    for path in (stale, alive):
        path.write_text("a token would be here")

    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    make_store(config).publish(record("id-1"), None)
    assert not stale.exists()
    assert alive.exists(), "a live writer's temp file is not ours to remove"


def test_a_writer_holding_the_directory_lock_makes_publish_wait_then_give_up(config: Path) -> None:
    fd = os.open(config.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        clock = FakeClock(NOW)
        with pytest.raises(TransientError, match="another process has been writing"):
            make_store(config, clock=clock).publish(record("id-1"), None)
        assert clock.now() >= NOW + timedelta(seconds=10)
    finally:
        os.close(fd)
    make_store(config).publish(record("id-1"), None)


# ------------------------------------------------------------------------------ writers that take no lock


def save_atomically(config: Path, text: str) -> None:
    """How an editor or Ansible saves: a new file renamed over the old one (a new inode)."""
    saved = config.with_name("saved-by-hand.tmp~")
    saved.write_text(text)
    os.replace(saved, config)


def rewrite_in_place(config: Path, text: str) -> None:
    """An in-place rewrite of the same size whose mtime reads as before (a file system clock that
    ticks coarser than the write): only the bytes tell it from the file read."""
    st = config.stat()
    data = text.encode()
    assert len(data) == st.st_size
    with open(config, "r+b") as fh:
        fh.write(data)
    os.utime(config, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert config.stat().st_ino == st.st_ino and config.stat().st_mtime_ns == st.st_mtime_ns


class EditDuringSidecarRename:
    """The store's rename seam: another writer, which takes no lock, saves the config just before
    the sidecar's rename (after the read, before the config's rename)."""

    def __init__(self, config: Path, edit: Any) -> None:
        self.config, self.edit, self.calls = config, edit, 0

    def __call__(self, src: str, dst: str, dir_fd: int) -> None:
        self.calls += 1
        if self.calls == 1 and dst.endswith(SIDECAR_SUFFIX):
            self.edit(self.config)
        os.replace(src, dst, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


# Same length as "influxdb.example.test", so that an in-place rewrite keeps the size.
OTHER_HOST = "influxdb.example.tesx"


@pytest.mark.parametrize("save", [save_atomically, rewrite_in_place])
def test_an_edit_saved_while_publishing_is_kept_and_the_retry_writes_over_it(config: Path, save: Any) -> None:
    """A hand or configuration-management edit elsewhere in the file that lands between the read and
    the config's rename is not lost: the publish stops (TransientError, the config as the other writer
    left it), and the retry, at the same expected version, reads the new file and edits that."""
    store = make_store(config)
    v1 = store.publish(record("id-1"), None)
    edited = config.read_text().replace("influxdb.example.test", OTHER_HOST)
    seam = EditDuringSidecarRename(config, lambda path: save(path, edited))
    racing = make_store(config, replace=seam)
    second = record("id-2")
    with pytest.raises(TransientError, match="changed by another writer while rotator was writing it") as info:
        racing.publish(second, v1)
    assert second.value.reveal() not in str(info.value) + info.value.hint
    assert config.read_text() == edited, "the other writer's file stays as it saved it"
    assert leftovers(config.parent) == []
    state = store.read_current()
    assert state.version == v1 and state.record is not None and state.record.token_id == "id-1"
    # The retry (the engine's, or sync's call_with_retry) publishes at the version it planned with.
    assert racing.publish(second, v1) == value_version(second.value.reveal())
    text = config.read_text()
    assert OTHER_HOST in text and second.value.reveal() in text
    assert store.read_current().record == second


def test_a_token_saved_by_hand_while_publishing_is_a_conflict_and_is_kept(config: Path) -> None:
    """An operator pastes an emergency mgmt_token (an atomic save) while rotator publishes: the
    compare-and-set, made again before the rename, fails; the operator's token stays."""
    store = make_store(config)
    first = record("id-1")
    v1 = store.publish(first, None)
    emergency = "emergency-hand-token-0123456789"
    edited = config.read_text().replace(first.value.reveal(), emergency)
    racing = make_store(config, replace=EditDuringSidecarRename(config, lambda path: save_atomically(path, edited)))
    second = record("id-2")
    with pytest.raises(ConflictError, match="compare-and-set lost: expected version") as info:
        racing.publish(second, v1)
    message = str(info.value) + info.value.hint
    assert "changed while rotator was writing" in message and v1 in message
    assert emergency not in message and second.value.reveal() not in message
    assert config.read_text() == edited and leftovers(config.parent) == []
    state = store.read_current()
    assert not state.managed and state.version == value_version(emergency)
    with pytest.raises(ConflictError):
        racing.publish(second, v1)  # a retry does not write over it either


@pytest.mark.parametrize("caught", ["truncated mid-save", "unlinked before it is created again"])
def test_a_writer_caught_mid_save_is_a_retry_not_a_permanent_error(config: Path, caught: str) -> None:
    """An editor that truncates the file, or unlinks it and creates it again, may be half-way when the
    check reads the file to tell a conflict from another edit: that moment's missing or broken file is
    no answer. It was a ConfigError (permanent), so the engine discarded the candidate it had minted."""
    store = make_store(config)
    v1 = store.publish(record("id-1"), None)
    full = config.read_text()

    def edit(path: Path) -> None:
        if caught == "truncated mid-save":
            path.write_text(full[: len(full) // 3])
        else:
            path.unlink()

    racing = make_store(config, replace=EditDuringSidecarRename(config, edit))
    with pytest.raises(TransientError, match="changed by another writer"):
        racing.publish(record("id-2"), v1)
    config.write_text(full)  # the writer finishes its save
    assert racing.read_current().version == v1
    assert racing.publish(record("id-2"), v1) != v1  # the retry writes


def test_a_symlink_pointed_elsewhere_while_publishing_is_not_written_through_the_old_target(tmp_path: Path) -> None:
    """config.toml -> a.toml swapped for -> b.toml between the read and the rename: the old target is
    unchanged, so its own check passed, and the token went into a.toml, which influxctl no longer reads."""
    a = write_config(tmp_path, name="a.toml")
    b = write_config(tmp_path, name="b.toml")
    link = a.parent / "config.toml"
    link.symlink_to("a.toml")
    v1 = make_store(link).publish(record("id-1"), None)
    b.write_text(a.read_text())  # configuration management prepares the new target

    def relink(path: Path) -> None:
        new = path.parent / "config.toml.new"
        new.symlink_to("b.toml")
        os.replace(new, path)

    racing = make_store(link, replace=EditDuringSidecarRename(link, relink))
    with pytest.raises(TransientError, match="now points to another file"):
        racing.publish(record("id-2"), v1)
    v2 = racing.publish(record("id-2"), v1)  # the retry reads and writes the file the link names now
    state = make_store(link).read_current()
    assert state.version == v2 and state.record is not None and state.record.token_id == "id-2"


@pytest.mark.parametrize("adopt", [False, True], ids=["new value", "adopt: the sidecar only"])
def test_an_edit_right_after_the_read_stops_the_publish_before_anything_is_written(
    config: Path, monkeypatch: pytest.MonkeyPatch, adopt: bool
) -> None:
    """The check before the sidecar's rename: an edit landing between the read and the first rename
    leaves both files untouched (also where only the sidecar would be written: an adopt)."""
    store = make_store(config)
    v1 = store.publish(record("id-1"), None)
    current = store.read_current().record
    assert current is not None
    sidecar = Path(str(config) + SIDECAR_SUFFIX)
    edited = config.read_text().replace("influxdb.example.test", OTHER_HOST)
    real_read = InfluxctlProfileStore._read
    reads: list[Any] = []

    def read_then_edit(self: InfluxctlProfileStore, directory: Any) -> Any:
        reads.append(real_read(self, directory))
        if len(reads) == 1:  # the publish's read; the edit lands right after it
            save_atomically(config, edited)
        return reads[-1]

    before = fingerprint(sidecar)
    monkeypatch.setattr(InfluxctlProfileStore, "_read", read_then_edit)
    # adopt: the same value under another token id: only the sidecar would change
    token = record("id-2", current.value.reveal() if adopt else None)
    with pytest.raises(TransientError, match="changed by another writer"):
        store.publish(token, v1)
    monkeypatch.undo()
    assert fingerprint(sidecar) == before and config.read_text() == edited
    assert leftovers(config.parent) == []
    assert store.read_current().version == v1


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


# ------------------------------------------------------------------------------ key = "token"

DB_ISSUER = "influxctl-database"


def db_record(token_id: str, token: str | None = None, **kw: Any) -> TokenRecord:
    return record(token_id, token or f"test-db-token-{uuid.uuid4().hex}", issuer=DB_ISSUER, **kw)


def test_a_database_token_goes_to_the_token_key_and_influxctl_query_uses_it(config: Path, fake_influxctl: Any) -> None:
    """key = "token": the line influxctl's query/write read (with the profile's database), nothing else."""
    value_, token_id = fake_influxctl.state.add_db_token("for the profile test", {"read": ["db1"]})
    text = CONFIG.replace('    port = "443"\n', '    port = "443"\n    database = "db1"\n', 1)
    config.write_text(text)
    store = make_store(config, key="token")
    assert store.location.endswith("config.toml#default.token") and store.key == "token"
    assert store.read_current().version is None, "the commented-out `# token` line is no value"
    token = db_record(token_id, value_)
    store.publish(token, None)
    line = f'    token = "{value_}"\n'
    assert config.read_text() == text.replace('    database = "db1"\n', '    database = "db1"\n' + line, 1)
    assert store.read_current().record == token
    assert make_store(config).read_current().version is None, "mgmt_token is another key: untouched, absent"
    done = fake_influxctl.run("--config", str(config), "query", "--format", "json", "SELECT 1")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [{"Int64(1)": 1}]


def test_mgmt_token_and_token_of_one_profile_share_the_sidecar_without_touching_each_other(config: Path) -> None:
    mgmt, db = make_store(config), make_store(config, key="token")
    m1, d1 = record("m-1"), db_record("d-1")
    vm = mgmt.publish(m1, None)
    vd = db.publish(d1, None)
    for n in range(2, 5):  # a few rotations of each, interleaved
        vm = mgmt.publish(record(f"m-{n}"), vm)
        vd = db.publish(db_record(f"d-{n}"), vd)
    assert mgmt.read_current().token_id == "m-4" and db.read_current().token_id == "d-4"
    sidecar = json.loads(Path(str(config) + SIDECAR_SUFFIX).read_text())
    entries = sidecar["profiles"]["default"]
    assert [(e["key"], e["token_id"]) for e in entries] == [
        ("token", "d-4"), ("token", "d-3"), ("token", "d-2"), ("token", "d-1"),
        ("mgmt_token", "m-4"), ("mgmt_token", "m-3"), ("mgmt_token", "m-2"), ("mgmt_token", "m-1"),
    ]  # fmt: skip
    assert sidecar["schema"] == 1
    # The two lines are the only change from the operator's file.
    text = config.read_text()
    assert [line for line in text.splitlines() if line not in CONFIG.splitlines()] == [
        f'    mgmt_token = "{mgmt.read_current().record.value.reveal()}"',  # type: ignore[union-attr]
        f'    token = "{db.read_current().record.value.reveal()}"',  # type: ignore[union-attr]
    ]


def test_a_sidecar_entry_without_key_describes_mgmt_token(config: Path) -> None:
    """Sidecars written before the `key` setting existed keep working."""
    store = make_store(config)
    token = record("id-1")
    version = store.publish(token, None)
    sidecar = Path(str(config) + SIDECAR_SUFFIX)
    doc = json.loads(sidecar.read_text())
    for entry in doc["profiles"]["default"]:
        del entry["key"]
    sidecar.write_text(json.dumps(doc))
    state = store.read_current()
    assert state.managed and state.record == token
    assert make_store(config, key="token").read_current().version is None
    store.publish(record("id-2"), version)
    assert [e.get("key") for e in json.loads(sidecar.read_text())["profiles"]["default"]] == ["mgmt_token", None]


def test_the_token_key_keeps_a_literal_string_and_its_comment(config: Path) -> None:
    text = CONFIG.replace(
        "  mgmt_token = 'hand-placed", "  token = 'hand-placed-db-0123456789' # by hand\n  mgmt_token = 'hand-placed"
    )
    config.write_text(text)
    store = make_store(config, profile="other", key="token")
    state = store.read_current()
    assert state.version == value_version("hand-placed-db-0123456789") and not state.managed
    token = db_record("d-1")
    store.publish(token, state.version)
    assert config.read_text() == text.replace("hand-placed-db-0123456789", token.value.reveal())
    assert make_store(config, profile="other").read_current().version == value_version("hand-placed-value-0123456789")


@pytest.mark.parametrize(
    ("key", "issuer", "allowed"),
    [
        ("mgmt_token", "influxctl-management", True),
        ("mgmt_token", "influxctl-database", False),
        ("mgmt_token", "management-api", False),
        ("mgmt_token", "influxdb3", False),
        ("token", "influxctl-database", True),
        ("token", "management-api", True),
        ("token", "influxdb3", True),
        ("token", "influxdb2", True),
        ("token", "influxctl-management", False),
        ("mgmt_token", "", True),  # a payload that does not name its issuer: not checked
    ],
)
def test_which_issuer_may_publish_to_which_key(config: Path, key: str, issuer: str, allowed: bool) -> None:
    problem = key_problem(key, issuer)
    assert (problem is None) == allowed
    assert InfluxctlProfileSettings.model_validate({"key": key}).issuer_problem(issuer) == problem
    before = fingerprint(config)
    store = make_store(config, key=key)
    token = record("id-1", issuer=issuer)
    if allowed:
        store.publish(token, None)
        assert store.read_current().record == token
        return
    with pytest.raises(PermanentError) as info:
        store.publish(token, None)
    assert f"token id-1 of issuer {issuer!r} is not written to {key}" in str(info.value)
    assert 'key = "token"' in info.value.hint and token.value.reveal() not in str(info.value)
    assert fingerprint(config) == before and not Path(str(config) + SIDECAR_SUFFIX).exists()


def test_conflict_and_edit_messages_name_the_key(config: Path) -> None:
    store = make_store(config, key="token")
    store.publish(db_record("d-1"), None)
    with pytest.raises(ConflictError) as info:
        store.publish(db_record("d-2"), None)
    assert "expected no token, the profile now holds version" in str(info.value)
    assert "someone changed token of this profile" in info.value.hint


def test_rotator_sync_refuses_a_database_token_for_mgmt_token(tmp_path: Path, openbao: Any) -> None:
    """sync writes mgmt_token: the store's key rule keeps a database policy's token out of it (checked
    against the policy's issuer first, so a payload that does not name its issuer is kept out too)."""
    import subprocess
    import sys

    from rotator.adapters.vault.kv2 import VaultKV2Settings, VaultKV2Store
    from tests.harness import REPO

    kv = f"sync-db/{uuid.uuid4().hex[:10]}"
    (tmp_path / "vault-token").write_text(openbao.root_token)
    (tmp_path / "mgmt-token").write_text("not used by sync\n")
    (tmp_path / "rotator.toml").write_text(f"""
[[policy]]
name = "dbtok"
schedule = "7d"
[policy.issuer]
type = "influxctl-database"
permissions = {{ read = ["db1"] }}
profile = {{ product = "clustered", host = "cluster.test.invalid" }}
auth = {{ method = "mgmt_token", token = {{ file = "mgmt-token" }} }}
[[policy.store]]
type = "vault-kv2"
url = "{openbao.url}"
path = "{kv}"
auth = {{ method = "token", token = {{ file = "vault-token" }} }}
""")
    settings = VaultKV2Settings.model_validate(
        {"url": openbao.url, "path": kv, "auth": {"method": "token", "token": {"file": "vault-token"}}}
    )
    vault = VaultKV2Store.from_config(settings, AdapterContext(policy="dbtok", base_dir=tmp_path))
    token = db_record("d-1", policy="dbtok")
    vault.publish(token, None)
    config = write_config(tmp_path)
    before = fingerprint(config)
    proc = subprocess.run(
        [sys.executable, "-m", "rotator.runners.sync", "--from", f"{tmp_path / 'rotator.toml'}:dbtok",
         "--config", str(config)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, stdin=subprocess.DEVNULL,
        env={**{k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "ROTATOR_"))},
             "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr  # refused from the policy, before the store is read
    assert "policy 'dbtok' (influxctl-database): mgmt_token holds a management token" in proc.stderr
    assert 'key = "token"' in proc.stderr and token.value.reveal() not in proc.stdout + proc.stderr
    assert fingerprint(config) == before and not Path(str(config) + SIDECAR_SUFFIX).exists()


# ------------------------------------------------------------------------------ settings


def test_settings_default_path_and_relative_paths(tmp_path: Path) -> None:
    assert default_config_path({"HOME": "/home/u"}, "linux") == Path("/home/u/.config/influxctl/config.toml")
    assert default_config_path({"HOME": "/home/u", "XDG_CONFIG_HOME": "/x"}, "linux") == Path(
        "/x/influxctl/config.toml"
    )
    assert default_config_path({"HOME": "/Users/u"}, "darwin") == Path(
        "/Users/u/Library/Application Support/influxctl/config.toml"
    )
    settings = InfluxctlProfileSettings.model_validate({"config": "influxctl/config.toml"})
    store = InfluxctlProfileStore.from_config(settings, AdapterContext(policy=POLICY, base_dir=tmp_path))
    assert store.path == tmp_path / "influxctl" / "config.toml"
    assert store.location == f"influxctl-profile:{tmp_path}/influxctl/config.toml#default"


def test_policy_validation_of_the_store_settings(tmp_path: Path) -> None:
    def policy(store: str) -> dict[str, Any]:
        return {"policy": [{
            "name": "p", "schedule": "30d",
            "issuer": {"type": "influxctl-management", "profile": {"product": "clustered", "host": "h"}},
            "store": [{"type": "influxctl-profile", **json.loads(store)}],
        }]}  # fmt: skip

    config = parse_config(policy('{"config": "c.toml", "profile": "automation"}'), tmp_path / "rotator.toml")
    assert config.policies[0].stores[0].settings == InfluxctlProfileSettings(
        config=Path("c.toml"), profile="automation"
    )
    with pytest.raises(PolicyFileError) as info:
        parse_config(policy('{"create": true, "profile": ""}'), tmp_path / "rotator.toml")
    text = str(info.value)
    assert "store[0].create: Extra inputs are not permitted" in text
    assert "store[0].profile" in text


def test_policy_validation_of_key(tmp_path: Path) -> None:
    def policy(key: str) -> dict[str, Any]:
        return {"policy": [{
            "name": "p", "schedule": "30d",
            "issuer": {"type": "influxctl-database", "permissions": {"read": ["db1"]},
                       "profile": {"product": "clustered", "host": "h"},
                       "auth": {"method": "mgmt_token", "token": {"file": "m"}}},
            "store": [{"type": "influxctl-profile", "key": key}],
        }]}  # fmt: skip

    settings = parse_config(policy("token"), tmp_path / "rotator.toml").policies[0].stores[0].settings
    assert isinstance(settings, InfluxctlProfileSettings) and settings.key == "token"
    assert InfluxctlProfileSettings().key == "mgmt_token"
    with pytest.raises(PolicyFileError) as info:
        parse_config(policy("database_token"), tmp_path / "rotator.toml")
    assert "store[0].key" in str(info.value) and "'mgmt_token' or 'token'" in str(info.value)


# ------------------------------------------------------------------------------ end to end


#: CONFIG with profile "default" on tests/harness.py's cluster: the engine refuses to publish a policy's
#: management token to a profile that names another cluster (tests/adapters/test_influxctl_profile_cluster.py)
HARNESS_CONFIG = CONFIG.replace('host = "influxdb.example.test"', 'host = "cluster.test.invalid"', 1)


def two_store_scenario(
    tmp_path: Path, openbao: Any, fake: Any, *, profile_text: str = HARNESS_CONFIG, bootstrap: bool = True,
    grace_s: int = 2,
) -> tuple[Scenario, Path]:
    """The influxctl-management policy publishing to Vault ("primary") and to profile "default"
    of ``influxctl/config.toml`` ("profile"): tests/harness.py's scenario with one more store."""
    config = write_config(tmp_path, profile_text)
    sc = make_scenario(tmp_path, openbao, fake, grace_s=grace_s, bootstrap=bootstrap, extra_stores="""
[[policy.store]]
type = "influxctl-profile"
name = "profile"
config = "influxctl/config.toml"
profile = "default"
""")
    return sc, config


def profile_value(config: Path, profile: str = "default") -> str | None:
    import tomllib

    entry = next(p for p in tomllib.loads(config.read_text())["profile"] if p["name"] == profile)
    return entry.get("mgmt_token")


def check_profile(sc: Scenario, config: Path, fake_influxctl: Any) -> None:
    """The profile holds Vault's current token, influxctl accepts it, nothing else changed,
    and no token value is in the sidecar."""
    current = sc.current()
    assert profile_value(config) == current["token"]
    state = make_store(config).read_current()
    assert state.managed and state.token_id == current["token_id"]
    assert config.read_text() == HARNESS_CONFIG.replace(
        '    port = "443"\n', f'    port = "443"\n    mgmt_token = "{current["token"]}"\n', 1
    )
    done = fake_influxctl.run("--config", str(config), "--profile", "default", "management", "list", "--format", "json")
    assert done.returncode == 0, done.stderr
    sidecar = Path(str(config) + SIDECAR_SUFFIX).read_text()
    for version in sc.versions():
        assert version["token"] not in sidecar
    assert config.stat().st_mode & 0o777 == 0o600


def test_two_stores_vault_and_profile_rotated_through_the_cli(tmp_path: Path, openbao: Any,
                                                             fake_influxctl: Any) -> None:  # fmt: skip
    sc, config = two_store_scenario(tmp_path, openbao, fake_influxctl.state)
    check_profile(sc, config, fake_influxctl)
    ids = [sc.bootstrap_id]
    for _ in range(2):
        proc = sc.cli("rotate", sc.policy, "--output", "json")
        assert proc.returncode == 0, proc.stderr
        result = json.loads(proc.stdout)[0]
        assert result["ok"] and result["old_token_id"] == ids[-1]
        ids.append(result["new_token_id"])
        check_profile(sc, config, fake_influxctl)
        check_invariants(sc)
    time.sleep(sc.grace_s + 0.3)
    proc = sc.cli("revoke-expired")
    assert proc.returncode == 0, proc.stderr
    assert all(sc.fake.token_by_id(old)["revoked_at"] for old in ids[:-1])
    check_profile(sc, config, fake_influxctl)
    check_invariants(sc, settled=True)
    status = json.loads(sc.cli("status", "--output", "json").stdout)[0]
    assert status["current_token_id"] == ids[-1]


def test_killed_between_vault_and_the_profile_recovery_rolls_the_profile_forward(
    tmp_path: Path, openbao: Any, fake_influxctl: Any
) -> None:
    sc, config = two_store_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=1)
    proc = sc.cli("rotate", sc.policy, crash_at="published:primary")
    assert proc.returncode == -signal.SIGKILL
    new_id = sc.current()["token_id"]
    assert new_id != sc.bootstrap_id
    assert make_store(config).read_current().token_id == sc.bootstrap_id  # the old, valid token
    check_invariants(sc, after_crash=True)
    proc = sc.cli("recover")
    assert proc.returncode == 0, proc.stderr
    assert "rolled forward" in proc.stdout
    check_profile(sc, config, fake_influxctl)
    time.sleep(sc.grace_s + 0.3)
    assert sc.cli("revoke-expired").returncode == 0
    assert sc.fake.token_by_id(sc.bootstrap_id)["revoked_at"] is not None
    check_invariants(sc, settled=True)


def test_bootstrap_over_a_hand_placed_mgmt_token_needs_adopt(tmp_path: Path, openbao: Any, fake_influxctl: Any) -> None:
    text = HARNESS_CONFIG.replace('    port = "443"\n', '    port = "443"\n    mgmt_token = "hand-placed-0123456789"\n',
                                  1)
    sc, config = two_store_scenario(tmp_path, openbao, fake_influxctl.state, profile_text=text, bootstrap=False)
    before = fingerprint(config)
    value_, token_id = fake_influxctl.state.add_token("first")
    first = tmp_path / "first-token"
    first.write_text(value_)
    proc = sc.cli("bootstrap", sc.policy, "--token-file", str(first), "--token-id", token_id)
    assert proc.returncode == 1
    assert "store 'profile' holds a secret that rotator does not manage" in proc.stderr and "adopt" in proc.stderr
    assert fingerprint(config) == before and sc.versions() == []
    sc.config.write_text(
        sc.config.read_text().replace('verify_timeout = "20s"', 'verify_timeout = "20s"\nadopt = true')
    )
    proc = sc.cli("bootstrap", sc.policy, "--token-file", str(first), "--token-id", token_id)
    assert proc.returncode == 0, proc.stderr
    assert profile_value(config) == value_ and sc.current()["token_id"] == token_id
    sc.bootstrap_value, sc.bootstrap_id = value_, token_id
    check_invariants(sc)


def test_a_path_that_names_no_file_is_a_configuration_error_not_retried(tmp_path: Path) -> None:
    """A directory (or a path through a file) given as the profile file: no retry fixes it, so it is a
    configuration error (exit 2) that says to point at config.toml, not a transient one."""
    for path in (tmp_path, write_config(tmp_path) / "config.toml"):
        for call in (make_store(path).read_current, lambda p=path: make_store(p).publish(record("id-1"), None)):
            with pytest.raises(ConfigError) as info:
                call()
            assert "config.toml file itself" in info.value.hint, info.value


def test_a_token_that_is_not_a_string_names_the_fix(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    config.write_bytes(b'[[profile]]\nname = "default"\nproduct = "clustered"\nmgmt_token = 12\n')
    with pytest.raises(ConfigError, match="is not a string") as info:
        make_store(config).read_current()
    assert 'mgmt_token = "..."' in info.value.hint


def test_a_retry_of_an_adopt_that_landed_writes_nothing(config: Path) -> None:
    """An adopt leaves the value as it is: its version moves by the generation, so a retry of it (the
    same arguments, after an error that came once the write had landed) finds the version before
    gone and writes nothing, instead of moving the version again."""
    store = make_store(config, profile="other")
    state = store.read_current()
    token = record("id-1", "hand-placed-value-0123456789")
    adopted = store.publish(token, state.version)
    assert adopted == value_version("hand-placed-value-0123456789", 1) != state.version
    sidecar = Path(str(config) + SIDECAR_SUFFIX)
    before = fingerprint(sidecar)
    assert store.publish(token, state.version) == adopted
    assert fingerprint(sidecar) == before
