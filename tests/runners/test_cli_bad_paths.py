"""Bad file paths on the command line: an empty file option, and `inventory --influxctl-profile` naming a FIFO, a
device or a TOML file with an error (found by a sweep of bad CLI input)."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import pytest

from rotator.adapters.influxctl.profile import _NotRegularFile, _os_error
from rotator.core.errors import ConfigError
from rotator.observe.inventory import influxctl_profile_targets
from rotator.runners.cli import main as cli


@pytest.mark.parametrize("argv", [
    ["--log-file", "", "status"],
    ["report", "--output-file", ""],
    ["bundle", "-o", ""],
])  # fmt: skip
def test_an_empty_file_option_is_refused_not_read_as_not_given(
        argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """`--log-file "$LOG"` with LOG unset wrote no log file and exited 0 (the report went to stdout, the bundle
    beside the policy file)."""
    (tmp_path / "rotator.toml").write_text("")
    assert cli(["-c", str(tmp_path / "rotator.toml"), *argv]) == 2
    err = capsys.readouterr().err
    assert "is empty (an unset shell variable?)" in err and "fix: give" in err, err


def test_an_influxctl_profile_that_is_a_fifo_is_refused_at_once(tmp_path: Path) -> None:
    """It waited for a writer for ever (the policy file and --token-file refuse a FIFO)."""
    fifo = tmp_path / "config.toml"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []
    thread = threading.Thread(target=lambda: outcome.append(pytest.raises(ConfigError, influxctl_profile_targets,
                                                                          str(fifo), None).value), daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "it waits for a writer"
    assert "not a regular file" in str(outcome[0])


def test_an_influxctl_profile_that_never_ends_is_not_read() -> None:
    with pytest.raises(ConfigError, match="not a regular file"):
        influxctl_profile_targets("/dev/zero", None)


def test_an_influxctl_profile_with_a_toml_error_says_where(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('[[profile]]\nname = "default"\nmgmt_token = \n')
    with pytest.raises(ConfigError, match=r"at line 3, column 14"):
        influxctl_profile_targets(str(tmp_path / "config.toml"), None)


def test_the_profile_store_s_hint_names_its_config_key() -> None:
    """It said `path`, which the store refuses as an unknown key."""
    for exc in (_NotRegularFile(0o010000), OSError(errno.EISDIR, "Is a directory")):
        hint = _os_error(exc, "profile store: cannot read").hint
        assert "store's `config`" in hint and "`path`" not in hint, hint
