"""influxctl's home is the call's private config directory, not rotator's.

influxctl caches logins (OAuth device-flow tokens) under ``$HOME/.cache/influxctl`` and loads a cached
token unless the profile names an admin token file (influxctl 2.5.0's release notes): an operator's
login left in the home of the user rotator runs as could stand in for the credential rotator wrote.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from rotator.adapters.influxctl.management import InfluxctlManagementIssuer, InfluxctlManagementSettings
from rotator.config.adapter_settings import validate_settings
from rotator.core.secret import Secret
from tests.fakes.fixtures import FakeInfluxctlFixture


def test_influxctl_runs_with_its_private_config_directory_as_home(
        fake_influxctl: FakeInfluxctlFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    operator_home = tmp_path / "operator-home"
    (operator_home / ".cache" / "influxctl").mkdir(parents=True)
    (operator_home / ".cache" / "influxctl" / "token.json").write_text('{"access_token": "a person\'s login"}')
    monkeypatch.setenv("HOME", str(operator_home))
    record = tmp_path / "seen.txt"
    wrapper = tmp_path / "influxctl-wrapper"
    # what the child sees: its HOME, whether a login cache is there, and the --config it was given
    wrapper.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n%s\\n" "$HOME" "$(ls -A "$HOME/.cache/influxctl" 2>/dev/null)" > "{record}"\n'
        f'printf "%s\\n" "$@" >> "{record}"\n'
        f'exec "{fake_influxctl.binary}" "$@"\n'
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    value, _ = fake_influxctl.state.add_token("bootstrap")
    model = validate_settings(InfluxctlManagementSettings, {
        "influxctl": str(wrapper), "profile": {"product": "clustered", "host": "influxdb.example.test"}})
    issuer = InfluxctlManagementIssuer(model, base_dir=fake_influxctl.workdir)

    assert issuer.list_tokens(Secret(value))  # the fake answered: the call ran as usual
    home, cached, *argv = record.read_text().splitlines()
    config = Path(argv[argv.index("--config") + 1])
    assert home == str(config.parent) != str(operator_home)
    assert config.parent.name.startswith("rotator-influxctl-")
    assert cached == "", "the child found a login cache in its home"
    assert not config.parent.exists(), "the private directory (the child's home) outlived the call"
    assert os.environ["HOME"] == str(operator_home)  # rotator's own environment is unchanged
