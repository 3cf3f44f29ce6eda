"""`rotator demo` under umask 000: its policy file was 0666, and its own first `rotator validate` refused it
(a policy file other users may write: rotator/config/policy_source.py refuse_untrusted_file)."""

from __future__ import annotations

import stat
from pathlib import Path

from rotator.config.policy_source import read_policy_file
from rotator.runners.demo import _policy_file


def test_the_demo_s_policy_file_is_0644_and_read_under_umask_000(tmp_path: Path, umask_000: None) -> None:
    path = _policy_file(tmp_path, tmp_path / "influxctl", "http://127.0.0.1:8200")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    read_policy_file(path)  # refused (ConfigError) when others may write it
