"""The influxctl-profile store keeps to the directory it locked: every read, temporary file, rename,
removal and check goes through the descriptor opened under the lock, never through the path again.

Run as root (cron, the daemon) on a user's config, the user owns the parent of the influxctl
directory and may swap that directory for a symlink to a directory of root's at any moment; a
path-based step after the swap would create, replace or remove files there (as root, owned by the
user, holding the user's content). No root is needed here: the "victim" is just another directory.
"""

from __future__ import annotations

import errno
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.adapters.influxctl.profile import (
    SIDECAR_SUFFIX,
    InfluxctlProfileSettings,
    InfluxctlProfileStore,
    value_version,
)
from rotator.core.clock import FakeClock
from rotator.core.contracts import AdapterContext, TokenRecord
from rotator.core.errors import ConfigError, PermanentError, RotatorError, TransientError
from rotator.core.secret import Secret

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CONFIG = """\
[[profile]]
    name = "default"
    product = "clustered"
    host = "influxdb.example.test"
    port = "443"
"""
VICTIM_TEXT = "# root's own config.toml\nversion = 2\n"


def record(token_id: str, token: str | None = None) -> TokenRecord:
    return TokenRecord(Secret(token or f"test-mgmt-token-{uuid.uuid4().hex}"), token_id, "influxctl-management",
                       "mgmt", NOW, NOW + timedelta(days=30))  # fmt: skip


def make_store(path: Path, **kw: Any) -> InfluxctlProfileStore:
    settings = InfluxctlProfileSettings.model_validate({"config": path, "profile": "default"})
    return InfluxctlProfileStore.from_config(settings, AdapterContext(policy="mgmt", base_dir=path.parent,
                                                                      clock=FakeClock(NOW)), **kw)  # fmt: skip


def listing(directory: Path) -> dict[str, tuple[int, int, int, bytes]]:
    """Every entry of ``directory``: inode, mtime, mode and bytes (what a write there would change)."""
    out = {}
    for entry in sorted(os.listdir(directory)):
        st = os.lstat(directory / entry)
        out[entry] = (st.st_ino, st.st_mtime_ns, st.st_mode, (directory / entry).read_bytes())
    return out


class Swap:
    """The user's move: ``mv influxctl influxctl.real; ln -s victim influxctl`` (and back)."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path / "home" / "influxctl"
        self.dir.mkdir(parents=True)
        self.config = self.dir / "config.toml"
        self.config.write_text(CONFIG)
        self.config.chmod(0o600)
        self.real = tmp_path / "home" / "influxctl.real"
        self.victim = tmp_path / "victim"
        self.victim.mkdir()
        (self.victim / "config.toml").write_text(VICTIM_TEXT)
        self.before = listing(self.victim)
        self.seen: list[dict[str, tuple[int, int, int, bytes]]] = []  # the victim at each moment swapped

    def to_victim(self) -> None:
        os.rename(self.dir, self.real)
        os.symlink(self.victim, self.dir)

    def back(self) -> None:
        os.unlink(self.dir)
        os.rename(self.real, self.dir)

    @property
    def swapped(self) -> bool:
        return self.dir.is_symlink()

    def around(self, call: Callable[[], Any], *, stay: bool = False) -> Any:
        """``call`` with the directory swapped; the victim as ``call`` left it is kept to be checked."""
        self.to_victim()
        try:
            return call()
        finally:
            self.seen.append(listing(self.victim))
            if not stay:
                self.back()


def _is_temp_create(path: Any, flags: int) -> bool:
    name = os.path.basename(os.fsdecode(path))
    return bool(flags & os.O_CREAT) and name.startswith(".config.toml") and name.endswith(".tmp")


@pytest.fixture
def swap(tmp_path: Path) -> Iterator[Swap]:
    s = Swap(tmp_path)
    yield s
    if s.swapped:
        s.back()


@pytest.mark.parametrize("moment", ["temp file", "temp file, for good", "rename", "temp file and rename"])
def test_a_directory_swapped_for_a_symlink_mid_publish_gets_nothing_written_into_its_target(
    swap: Swap, monkeypatch: pytest.MonkeyPatch, moment: str
) -> None:
    """The directory is swapped while the temporary file is created (back after it, or left swapped),
    while the file is renamed over the config, or at both (a path-based store then created its temp
    file in the victim and renamed it over the victim's config.toml): the victim's files and listing
    never change, and the publish either fails (nothing written) or writes into the directory it read
    and locked."""
    real_open, real_replace = os.open, os.replace

    def swapping_open(path: Any, flags: int, *args: Any, **kw: Any) -> int:
        if not _is_temp_create(path, flags) or swap.swapped:
            return real_open(path, flags, *args, **kw)
        return int(swap.around(lambda: real_open(path, flags, *args, **kw), stay=moment == "temp file, for good"))

    def swapping_replace(src: Any, dst: Any, **kw: Any) -> None:
        swap.around(lambda: real_replace(src, dst, **kw))

    if "rename" in moment:
        monkeypatch.setattr(os, "replace", swapping_replace)
    if "temp file" in moment:
        monkeypatch.setattr(os, "open", swapping_open)
    token = record("id-1")
    try:
        version: str | None = make_store(swap.config).publish(token, None)
    except (TransientError, ConfigError) as exc:
        version = None
        assert token.value.reveal() not in str(exc) + (exc.hint or "")
    monkeypatch.undo()
    if swap.swapped:
        swap.back()
    assert swap.seen, "the swap was played"
    assert all(seen == swap.before for seen in swap.seen), "nothing was created or replaced in the victim"
    assert listing(swap.victim) == swap.before
    if version is not None:  # written: into the directory read and locked, and readable from it
        assert token.value.reveal() in swap.config.read_text()
        assert make_store(swap.config).read_current().record == token
    assert sorted(p.name for p in swap.dir.iterdir() if p.name.endswith(".tmp")) == []


def test_a_directory_replaced_by_another_at_the_same_path_stops_the_publish(
    swap: Swap, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The re-check before each rename compares the directory the path leads to now with the one
    locked (device and inode): the same path string naming a new directory is not the file read."""
    real_open = os.open
    moved: list[Path] = []

    def move_then_open(path: Any, flags: int, *args: Any, **kw: Any) -> int:
        if _is_temp_create(path, flags) and not moved:
            old = swap.dir.with_name("influxctl.old")
            os.rename(swap.dir, old)  # configuration management replaces the whole directory
            swap.dir.mkdir()
            (swap.dir / "config.toml").write_bytes((old / "config.toml").read_bytes())
            moved.append(old)
        return real_open(path, flags, *args, **kw)

    monkeypatch.setattr(os, "open", move_then_open)
    with pytest.raises(TransientError, match="was moved or replaced while rotator was using it"):
        make_store(swap.config).publish(record("id-1"), None)
    monkeypatch.undo()
    assert [p.name for p in moved[0].iterdir()] == ["config.toml"], "the temporary file was removed"
    assert sorted(p.name for p in swap.dir.iterdir()) == ["config.toml"]
    assert make_store(swap.config).publish(record("id-1"), None)  # the retry writes the directory there now


def test_a_sidecar_that_is_a_symlink_is_not_read_through(swap: Swap) -> None:
    """The sidecar is read relative to the directory without following a link (rotator writes it as
    a file): as root, a link would read another file's entries (token ids, policies) into the user's."""
    other = swap.victim / "other.rotator.json"
    other.write_text('{"managed-by": "rotator", "schema": 1, "profiles": {}}')
    (swap.dir / f"config.toml{SIDECAR_SUFFIX}").symlink_to(other)
    before = listing(swap.victim)
    with pytest.raises(PermanentError, match="is malformed: a symbolic link"):
        make_store(swap.config).publish(record("id-1"), None)
    assert listing(swap.victim) == before and (swap.dir / f"config.toml{SIDECAR_SUFFIX}").is_symlink()


@pytest.mark.parametrize("call", ["read_current", "publish"])
def test_a_path_component_flipping_while_it_is_resolved_is_a_store_error(
    swap: Swap, monkeypatch: pytest.MonkeyPatch, call: str
) -> None:
    """os.path.realpath raises OSError(EINVAL) when a component is a symlink at its lstat and none at
    its readlink; it escaped as a bare OSError, which `rotator sync` (catching RotatorError) did not report."""

    def flipping(path: Any, **kw: Any) -> str:
        raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))

    store = make_store(swap.config)
    monkeypatch.setattr(os.path, "realpath", flipping)
    with pytest.raises(RotatorError) as info:
        if call == "read_current":
            store.read_current()
        else:
            store.publish(record("id-1"), None)
    assert isinstance(info.value, TransientError), "a retry resolves the path again"


# ------------------------------------------------------------------------------ mode of a config not written


@pytest.mark.parametrize("again_at", ["its own version", "no version (already holds it)"])
def test_a_config_made_readable_is_made_private_again_when_the_publish_writes_no_config(
    swap: Swap, caplog: pytest.LogCaptureFixture, again_at: str
) -> None:
    """The fencing write (the same record at its own version: only the sidecar is written) and the
    early return (the profile holds the record already) write no config; a config someone made
    readable by others since gets mode 0600 in place: the same inode, bytes and mtime."""
    store = make_store(swap.config)
    token = record("id-1")
    v1 = store.publish(token, None)
    swap.config.chmod(0o644)
    st = swap.config.stat()
    data = swap.config.read_bytes()
    caplog.set_level(logging.WARNING, logger="rotator.adapters.influxctl_profile")
    version = store.publish(token, v1 if again_at == "its own version" else None)
    assert version == (value_version(token.value.reveal(), 1) if again_at == "its own version" else v1)
    after = swap.config.stat()
    assert after.st_mode & 0o777 == 0o600
    assert (after.st_ino, after.st_mtime_ns, swap.config.read_bytes()) == (st.st_ino, st.st_mtime_ns, data)
    assert "was readable by others (mode 644): set to mode 0600" in caplog.text
    assert token.value.reveal() not in caplog.text
