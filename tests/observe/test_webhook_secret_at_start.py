"""A webhook secret that cannot be used is found when the daemon starts or reloads (logged), and by
`rotator validate` (exit 2), not at the first delivery (which retried it to exhaustion and dropped the
webhook, the failure channel, in silence)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rotator.core.clock import FakeClock
from rotator.runners.daemon import Daemon
from tests.runners.test_daemon import POLICY, T0, FakeEngine, Harness, InlineExecutor, sample
from tests.runners.test_daemon import harness as harness  # noqa: F401 - a fixture, used by name

REPO = Path(__file__).resolve().parents[2]
SECRET = "whsec_" + base64.b64encode(b"a-webhook-key-of-24-bytes").decode()
WEBHOOK = '[[daemon.webhooks]]\nurl = "http://127.0.0.1:9/hook"\nsecret = { file = "hmac-key" }\nattempts = 1\n'


def _write_config(tmp_path: Path) -> Path:
    config = tmp_path / "rotator.toml"
    config.write_text('[rotator]\njournal = "journal.db"\n[daemon]\naudit = { file = "audit.jsonl" }\n' + WEBHOOK
                      + POLICY.format(name="a", schedule="1h", extra=""))
    return config


@pytest.mark.parametrize(("content", "message"), [
    (None, "cannot read credential file"),
    ("an-unprefixed-secret-value", "not a Standard Webhooks secret"),
    ("whsec_", "0-byte key"),
])  # fmt: skip
def test_the_daemon_names_a_webhook_secret_it_cannot_use_at_start_and_rotates_on(
        tmp_path: Path, content: str | None, message: str, caplog: pytest.LogCaptureFixture) -> None:
    """Found at start (an ERROR naming the file and the fix), not at the first delivery. The daemon
    still starts: refusing to would stop every rotation over the failure channel's key (an
    unprefixed secret, valid for an earlier rotator, would do that at the upgrade)."""
    config = _write_config(tmp_path)
    if content is not None:
        (tmp_path / "hmac-key").write_text(content)
    clock = FakeClock(T0)
    calls: list[str] = []

    def factory(policy: Any, config: Any, journal: Any, listener: Any) -> FakeEngine:
        return FakeEngine(policy.name, journal, clock, calls)

    d = Daemon(config, clock=clock, serve_http=False, engine_factory=factory, executor=InlineExecutor(),
               handle_signals=False)
    d.start()
    try:
        d.tick(clock.now())
    finally:
        d.shutdown()
    [error] = [r for r in caplog.records if r.levelname == "ERROR" and "hmac-key" in r.getMessage()]
    assert message in error.getMessage() and "fix: " in error.getMessage(), error.getMessage()
    assert "rotations go on" in error.getMessage() and "an-unprefixed-secret-value" not in caplog.text
    assert calls == ["rotate a"], "the daemon rotates as usual"


def test_rotator_validate_exits_2_naming_the_secret_file_and_the_fix(tmp_path: Path) -> None:
    """The operator's check before a deploy (CI, the chart's pre-install): `rotator validate` refuses it."""
    config = _write_config(tmp_path)
    (tmp_path / "hmac-key").write_text("an-unprefixed-secret-value\n")
    proc = subprocess.run([sys.executable, "-m", "rotator.runners.cli", "validate", "-c", str(config)],
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert f"credential file {tmp_path / 'hmac-key'} is not a Standard Webhooks secret" in proc.stderr, proc.stderr
    assert "fix: " in proc.stderr and "base64 -w0" in proc.stderr
    assert "an-unprefixed-secret-value" not in proc.stderr


def _audit(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_reload_with_a_webhook_secret_it_cannot_use_goes_through_and_names_it(
        harness: Callable[..., Harness], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    """A reload is how an urgent policy change arrives: a bad webhook secret (replaced under the same
    settings, or a new file missing) is logged as at start and refuses nothing."""
    (tmp_path / "hmac-key").write_text(SECRET)
    h = harness([("a", "1h", "")], daemon=WEBHOOK)
    d = h.daemon
    config = tmp_path / "rotator.toml"

    (tmp_path / "hmac-key").write_text("an-unprefixed-secret-value")
    assert d.reload("SIGHUP") is True
    assert any("not a Standard Webhooks secret" in r.getMessage() for r in caplog.records if r.levelname == "ERROR")
    assert sample(h, "rotator_config_last_reload_successful") == 1

    caplog.clear()
    (tmp_path / "hmac-key").write_text(SECRET)
    config.write_text(config.read_text().replace('secret = { file = "hmac-key" }', 'secret = { file = "new-key" }'))
    assert d.reload("watch", full=False) is True
    assert d.notifier.settings.webhooks[0].secret.file == Path("new-key")
    assert any("cannot read credential file" in r.getMessage() for r in caplog.records if r.levelname == "ERROR")
