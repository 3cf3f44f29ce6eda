"""A webhook secret that cannot be used is found when the daemon starts or reloads, not at the first
delivery (which retried it to exhaustion and dropped the webhook, the failure channel, in silence)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from rotator.core.clock import FakeClock
from rotator.core.errors import ConfigError
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
def test_the_daemon_does_not_start_with_a_webhook_secret_it_cannot_use(
        tmp_path: Path, content: str | None, message: str) -> None:
    config = _write_config(tmp_path)
    if content is not None:
        (tmp_path / "hmac-key").write_text(content)
    clock = FakeClock(T0)

    def factory(policy: object, *_: object) -> FakeEngine:
        raise AssertionError("the notifier is checked before any engine is built")

    d = Daemon(config, clock=clock, serve_http=False, engine_factory=factory, executor=InlineExecutor(),
               handle_signals=False)
    try:
        with pytest.raises(ConfigError, match=message) as caught:
            d.start()
    finally:
        d.journal.close()
    assert str(tmp_path / "hmac-key") in str(caught.value) and caught.value.hint


def test_rotator_daemon_exits_2_naming_the_secret_file_and_the_fix(tmp_path: Path) -> None:
    """The operator's view: `rotator daemon` (what systemd starts) says what is wrong and exits 2 at once."""
    config = _write_config(tmp_path)
    (tmp_path / "hmac-key").write_text("an-unprefixed-secret-value\n")
    proc = subprocess.run([sys.executable, "-m", "rotator.runners.cli", "daemon", "-c", str(config),
                           "--listen", "127.0.0.1:0"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert f"credential file {tmp_path / 'hmac-key'} is not a Standard Webhooks secret" in proc.stderr, proc.stderr
    assert "fix: " in proc.stderr and "base64 -w0" in proc.stderr
    assert "an-unprefixed-secret-value" not in proc.stderr


def _audit(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_reload_with_a_webhook_secret_it_cannot_use_is_refused_and_keeps_the_running_configuration(
        harness: Callable[..., Harness], tmp_path: Path) -> None:  # noqa: F811 - the fixture
    (tmp_path / "hmac-key").write_text(SECRET)
    h = harness([("a", "1h", "")], daemon=WEBHOOK)
    d = h.daemon
    running = d.notifier
    config = tmp_path / "rotator.toml"

    # The secret replaced by a bad one, the file unchanged: a SIGHUP is refused.
    (tmp_path / "hmac-key").write_text("an-unprefixed-secret-value")
    assert d.reload("SIGHUP") is False
    assert d.notifier is running
    assert sample(h, "rotator_config_reload_failures_total") == 1
    assert sample(h, "rotator_config_last_reload_successful") == 0
    (refused,) = [r for r in _audit(tmp_path / "audit.jsonl") if r["step"] == "reload"]
    assert refused["result"] == "failed" and "not a Standard Webhooks secret" in str(refused["error"])

    # A changed webhook whose new secret file is missing: refused as well, before anything is replaced.
    (tmp_path / "hmac-key").write_text(SECRET)
    config.write_text(config.read_text().replace('secret = { file = "hmac-key" }', 'secret = { file = "new-key" }'))
    assert d.reload("watch", full=False) is False
    assert d.notifier is running and d.notifier.settings.webhooks[0].secret.file == Path("hmac-key")
    assert sample(h, "rotator_config_reload_failures_total") == 2

    # Fixed: the reload goes through.
    (tmp_path / "new-key").write_text(SECRET)
    assert d.reload("SIGHUP") is True
    assert d.notifier is not running and d.notifier.settings.webhooks[0].secret.file == Path("new-key")
    assert sample(h, "rotator_config_last_reload_successful") == 1
