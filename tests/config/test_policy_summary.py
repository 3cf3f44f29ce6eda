"""The cached summary `rotator status` and `rotator plan` read instead of validating the policy file
(rotator/config/policy_summary.py; issue 12: `status` start-up without pydantic).

Each test runs the command line in-process with a frozen clock and counts the full validations
(``rotator.config.policy.load_config`` calls): a cache hit validates nothing, a miss validates once,
and either way the output is the one of a run without any cache.
"""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import rotator
from rotator.config import policy as policy_mod
from rotator.config import policy_summary, registry
from rotator.core.clock import FakeClock
from rotator.core.journal import Revocation, RunRecord, RunState, open_journal
from rotator.runners import cli

NOW = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)
ENV_VAR = "ROTATOR_TEST_SUMMARY_VAULT_TOKEN"
POLICIES = f"""
[rotator]
journal = "journal.db"

[defaults]
grace = "2h"

[[policy]]
name = "interval"
schedule = "30d"
[policy.issuer]
type = "influxctl-management"
[policy.issuer.profile]
product = "clustered"
host = "a.example"
[[policy.store]]
type = "vault-kv2"
url = "https://vault.example:8200"
path = "influx/interval"
[policy.store.auth]
method = "token"
token = {{ env = "{ENV_VAR}" }}

[[policy]]
name = "windowed"
schedule = "1d"
window = "02:00-04:00"
[policy.issuer]
type = "influxctl-management"
[policy.issuer.profile]
product = "clustered"
host = "b.example"
[[policy.store]]
type = "vault-kv2"
url = "https://vault.example:8200"
path = "influx/windowed"
[policy.store.auth]
method = "token"
token = {{ file = "vault-token" }}

[[policy]]
name = "cron-disabled"
enabled = false
schedule = "0 3 * * 1"
max_age = "10d"
[policy.issuer]
type = "influxctl-management"
[policy.issuer.profile]
product = "clustered"
host = "c.example"
[[policy.store]]
type = "vault-kv2"
url = "https://vault.example:8200"
path = "influx/cron"
[policy.store.auth]
method = "token"
token = {{ file = "vault-token" }}
"""


def _journal(folder: Path, token_prefix: str = "tok") -> None:
    """``interval`` published a day ago with an overdue revocation; ``cron-disabled`` 20 days ago (older
    than its max age); ``windowed`` never (no token)."""
    journal = open_journal(f"sqlite:///{folder / 'journal.db'}")
    for name, age in (("interval", timedelta(days=1)), ("cron-disabled", timedelta(days=20))):
        at = NOW - age
        journal.begin_run(RunRecord(run_id=f"r-{name}", policy=name, state=RunState.DONE, kind="rotate",
                                    started_at=at, updated_at=at, new_token_id=f"{token_prefix}-{name}",
                                    published_at=at, new_expires_at=at + timedelta(days=40)))  # fmt: skip
    journal.schedule_revocation(Revocation("interval", "tok-old", "r-interval", "superseded",
                                           due_at=NOW - timedelta(hours=3), state="pending"))  # fmt: skip
    journal.close()


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    folder = tmp_path / "conf"
    folder.mkdir()
    (folder / "vault-token").write_text("s.test\n")
    path = folder / "rotator.toml"
    path.write_text(POLICIES)
    _journal(folder)
    return path


@pytest.fixture
def validations(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[Path]:
    """The policy files validated in full; the cache in ``tmp_path/cache``; the clock frozen at NOW."""
    calls: list[Path] = []
    real = policy_mod.load_config_bytes

    def counting(raw: bytes, path: Path) -> Any:
        calls.append(Path(path))
        return real(raw, path)

    monkeypatch.setattr(policy_mod, "load_config_bytes", counting)
    monkeypatch.setattr(cli, "SystemClock", lambda: FakeClock(NOW))
    monkeypatch.setattr(registry, "_forced", {})  # an adapter registered by another test would stop the writes
    monkeypatch.setenv("ROTATOR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(ENV_VAR, raising=False)
    return calls


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = cli.main(list(argv))
    except SystemExit as stop:
        code = int(stop.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def _uncached(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with monkeypatch.context() as patch:
        patch.setenv("ROTATOR_CACHE_DIR", "")
        return _run(capsys, *argv)


def _cache_file(policy_file: Path) -> Path:
    found = policy_summary.cache_file(policy_file)
    assert found is not None
    return found


def test_the_first_status_validates_and_caches_the_next_reads_the_cache(
    policy_file: Path, validations: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    first = _run(capsys, "-c", str(policy_file), "status")
    assert first[0] == 0 and "tok-interval" in first[1] and validations == [policy_file]
    cache = _cache_file(policy_file)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    assert stat.S_IMODE(cache.parent.stat().st_mode) == 0o700
    for _ in range(2):
        assert _run(capsys, "-c", str(policy_file), "status") == first
    assert validations == [policy_file]  # the later ones validated nothing
    summary = policy_summary.read_cache(policy_file)
    assert summary == policy_summary.summarize(policy_mod.load_config(policy_file))


@pytest.mark.parametrize("argv", [
    ["status"], ["status", "--output", "json"], ["status", "--check"], ["status", "windowed", "interval"],
    ["status", "--revocation-slack", "5h"], ["plan"], ["plan", "--output", "json"], ["status", "no-such-policy"],
])  # fmt: skip
def test_the_output_is_the_same_with_and_without_the_cache(
    argv: list[str], policy_file: Path, validations: list[Path], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    without = _uncached(monkeypatch, capsys, "-c", str(policy_file), *argv)
    assert not (policy_file.parent.parent / "cache").exists()  # ROTATOR_CACHE_DIR="": no cache at all
    assert without[1] or without[2]
    miss = _run(capsys, "-c", str(policy_file), *argv)
    hit = _run(capsys, "-c", str(policy_file), *argv)
    assert without == miss == hit
    assert len(validations) == 2  # without the cache, then the miss; the hit validated nothing


def test_a_missing_policy_file_is_reported_as_without_the_cache(
    tmp_path: Path, validations: list[Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "nowhere.toml")
    result = _run(capsys, "-c", missing, "status")
    assert result[0] == 2 and "cannot read policy file" in result[2]
    assert result == _uncached(monkeypatch, capsys, "-c", missing, "status")
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())


def test_the_rows_are_the_same_as_from_the_validated_file(policy_file: Path, validations: list[Path]) -> None:
    """What the rows are made of: status of the summary == status of the validated policies, field by field."""
    from rotator.observe.status import policy_status

    config = policy_mod.load_config(policy_file)
    summary = policy_summary.summarize(config)
    journal = open_journal(config.journal_url(), create=False)
    try:
        for policy, short in zip(config.policies, summary.policies, strict=True):
            assert policy_status(short, journal, NOW) == policy_status(policy, journal, NOW)
    finally:
        journal.close()
    assert summary.journal_url() == config.journal_url()
    interval, _, cron = summary.policies
    assert (interval.max_age, cron.max_age, cron.enabled) == (timedelta(days=31, hours=2), timedelta(days=10), False)


def test_an_edited_file_is_validated_again(
    policy_file: Path, validations: list[Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _run(capsys, "-c", str(policy_file), "status")
    original = policy_file.read_text()
    policy_file.write_text(original.replace('schedule = "30d"', 'schedule = "20d"'))
    code, out, _ = _run(capsys, "-c", str(policy_file), "status", "--output", "json")
    assert code == 0 and len(validations) == 2
    row = json.loads(out)[0]  # the edited schedule: max age 20d + grace 2h + margin 1d; due 19 days from now
    assert row["compliance"]["max_age_s"] == (21 * 24 + 2) * 3600 and row["reason"] == "not due for 19d"
    assert _run(capsys, "-c", str(policy_file), "status", "--output", "json")[1] == out and len(validations) == 2

    # an invalid edit: the same problems, exit code and message as without the cache, and nothing cached
    policy_file.write_text(original.replace('schedule = "30d"', 'schedule = "every month"'))
    broken = _run(capsys, "-c", str(policy_file), "status")
    assert broken[0] == 2 and "policy[0] 'interval'.schedule" in broken[2]
    assert broken == _uncached(monkeypatch, capsys, "-c", str(policy_file), "status")
    assert _run(capsys, "-c", str(policy_file), "status") == broken  # still refused: an error is never cached

    policy_file.write_text(original)
    assert _run(capsys, "-c", str(policy_file), "status") == _uncached(monkeypatch, capsys, "-c", str(policy_file),
                                                                      "status")  # fmt: skip


def _valid_cache(policy_file: Path) -> dict[str, Any]:
    return json.loads(_cache_file(policy_file).read_text())


def _corrupt(kind: str, cache: Path, data: dict[str, Any]) -> None:
    policies = data["config"]["policies"]
    if kind == "garbage":
        cache.write_bytes(b"\x00\xff not json")
        return
    if kind == "empty":
        cache.write_text("")
        return
    if kind == "directory":
        cache.unlink()
        cache.mkdir()
        return
    if kind == "symlink":
        real = cache.with_name("elsewhere.json")
        cache.rename(real)
        cache.symlink_to(real)
        return
    if kind == "group-writable":
        cache.chmod(0o620)
        return
    changes = {
        "other-format": lambda: data.update(format="rotator-status-cache/0"),
        "other-digest": lambda: data["key"].update(sha256="0" * 64),
        "other-location": lambda: data["key"].update(policy_file="/elsewhere/rotator.toml"),
        "no-config": lambda: data.pop("config"),
        "bad-enabled": lambda: policies[0].update(enabled="yes"),
        "bad-schedule": lambda: policies[0].update(schedule="whenever"),
        "bad-duration": lambda: policies[0].update(lifetime=[1, 2]),
        "negative-duration": lambda: policies[0].update(max_age=[-1, 0, 0]),
        "extra-field": lambda: policies[0].update(token="s.abc"),
        "duplicate-name": lambda: policies.append(dict(policies[0])),
        "not-a-list": lambda: data["config"].update(policies={"interval": {}}),
        "empty-journal": lambda: data["config"].update(journal=" "),
    }
    changes[kind]()
    cache.write_text(json.dumps(data))


@pytest.mark.parametrize("kind", [
    "garbage", "empty", "directory", "symlink", "group-writable", "other-format", "other-digest", "other-location",
    "no-config", "bad-enabled", "bad-schedule", "bad-duration", "negative-duration", "extra-field", "duplicate-name",
    "not-a-list", "empty-journal",
])  # fmt: skip
def test_a_corrupt_or_foreign_cache_is_a_miss_never_an_error(
    kind: str, policy_file: Path, validations: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    expected = _run(capsys, "-c", str(policy_file), "status")
    cache = _cache_file(policy_file)
    _corrupt(kind, cache, _valid_cache(policy_file))
    assert policy_summary.read_cache(policy_file) is None
    assert _run(capsys, "-c", str(policy_file), "status") == expected
    assert len(validations) == 2  # the miss validated the file again
    if kind != "directory":  # ... and replaced the cache (a directory in its place cannot be)
        assert not cache.is_symlink() and stat.S_IMODE(cache.stat().st_mode) == 0o600
        assert policy_summary.read_cache(policy_file) is not None


def test_the_key_holds_the_location_the_version_and_the_installed_packages(
    policy_file: Path, validations: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    _run(capsys, "-c", str(policy_file), "status")
    assert policy_summary.read_cache(policy_file) is not None

    # The same bytes elsewhere name another journal (a relative path): another cache, another journal's rows.
    other = tmp_path / "other"
    other.mkdir()
    (other / "rotator.toml").write_bytes(policy_file.read_bytes())
    _journal(other, token_prefix="other")
    assert policy_summary.read_cache(other / "rotator.toml") is None
    code, out, _ = _run(capsys, "-c", str(other / "rotator.toml"), "status")
    assert "other-interval" in out and "tok-interval" not in out
    assert _cache_file(other / "rotator.toml") != _cache_file(policy_file)
    assert "tok-interval" in _run(capsys, "-c", str(policy_file), "status")[1]
    assert len(validations) == 2

    with monkeypatch.context() as patch:  # another rotator version
        patch.setattr(rotator, "__version__", "99.0")
        assert policy_summary.read_cache(policy_file) is None

    # installing or removing a distribution changes its site-packages directory
    packages = tmp_path / "lib" / "site-packages"
    packages.mkdir(parents=True)
    monkeypatch.syspath_prepend(str(packages))
    assert policy_summary.read_cache(policy_file) is None  # a new directory of packages
    _run(capsys, "-c", str(policy_file), "status")
    assert policy_summary.read_cache(policy_file) is not None
    (packages / "plugin-1.0.dist-info").mkdir()
    os.utime(packages, ns=(1, packages.stat().st_mtime_ns + 10**9))
    assert policy_summary.read_cache(policy_file) is None


def test_the_journal_is_resolved_when_status_runs(
    policy_file: Path, validations: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """The cache holds the journal setting, not its resolved path: a symlinked journal pointed at another
    database since the summary was written is followed, as without the cache."""
    folder = policy_file.parent
    (folder / "journal.db").rename(folder / "a.db")
    (folder / "journal.db").symlink_to(folder / "a.db")
    assert "tok-interval" in _run(capsys, "-c", str(policy_file), "status")[1]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    _journal(elsewhere, token_prefix="moved")
    (folder / "journal.db").unlink()
    (folder / "journal.db").symlink_to(elsewhere / "journal.db")
    hit = _run(capsys, "-c", str(policy_file), "status")
    assert "moved-interval" in hit[1] and "tok-interval" not in hit[1]
    assert hit == _uncached(monkeypatch, capsys, "-c", str(policy_file), "status")
    assert len(validations) == 2  # the first status, and the uncached one


def test_credential_references_are_neither_resolved_nor_cached(
    policy_file: Path, validations: list[Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Validation resolves no ``{ env = ... }`` or ``{ file = ... }`` reference (the adapters read them
    when they act), so status is the same whatever the variable holds, with or without the cache, and
    the cache holds neither the references nor any value."""
    unset = _run(capsys, "-c", str(policy_file), "status")
    monkeypatch.setenv(ENV_VAR, "s.ZmFrZXRva2VudmFsdWUxMjM0")
    assert _run(capsys, "-c", str(policy_file), "status") == unset
    (policy_file.parent / "vault-token").unlink()
    assert _run(capsys, "-c", str(policy_file), "status") == unset
    assert validations == [policy_file]
    assert _uncached(monkeypatch, capsys, "-c", str(policy_file), "status") == unset
    text = _cache_file(policy_file).read_text()
    for needle in (ENV_VAR, "s.ZmFrZXRva2VudmFsdWUxMjM0", "s.test", "vault-token", "vault.example", "influx/"):
        assert needle not in text
    assert set(json.loads(text)["config"]["policies"][0]) == {"name", "enabled", "schedule", "window", "lifetime",
                                                              "max_age"}  # fmt: skip


def test_validate_writes_the_cache_and_the_default_location_is_xdg(
    policy_file: Path, validations: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.delenv("ROTATOR_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert _run(capsys, "validate", str(policy_file))[0] == 0
    assert [p.parent for p in (tmp_path / "xdg" / "rotator").glob("status-*.json")] == [tmp_path / "xdg" / "rotator"]
    _run(capsys, "-c", str(policy_file), "status")
    assert validations == [policy_file]  # status read what validate cached


def test_nothing_is_cached_while_an_adapter_is_registered_in_process(
    policy_file: Path, validations: list[Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An adapter registered without an entry point (tests, a plugin under development) exists in this
    process only: another process must not read a summary that relied on it."""
    monkeypatch.setattr(registry, "_forced", {("store", "memory"): object})
    _run(capsys, "-c", str(policy_file), "status")
    assert not _cache_file(policy_file).exists()


def test_a_status_from_the_cache_still_honours_log_file(
    policy_file: Path, validations: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`status` from the cache configures no logging, unless the user asked for a log file or debug logs."""
    _run(capsys, "-c", str(policy_file), "status")
    log = tmp_path / "rotator.log"
    assert _run(capsys, "-c", str(policy_file), "--log-file", str(log), "status")[0] == 0
    assert log.exists() and stat.S_IMODE(log.stat().st_mode) == 0o600
    assert validations == [policy_file]


def test_writing_a_summary_deletes_the_ones_not_rewritten_for_a_month(
    policy_file: Path, validations: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    old, recent, other = cache / "status-0123.json", cache / "status-4567.json", cache / "notes.txt"
    leftover = cache / ".status-abc.tmp"
    for path in (old, recent, other, leftover):
        path.write_text("{}")
    month = policy_summary.STALE_AFTER_S + 60
    for path in (old, other, leftover):
        os.utime(path, (NOW.timestamp(), datetime.now(UTC).timestamp() - month))
    _run(capsys, "-c", str(policy_file), "status")
    assert sorted(p.name for p in cache.iterdir()) == sorted([recent.name, other.name, _cache_file(policy_file).name])
