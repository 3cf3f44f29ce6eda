"""The daemon's notifier across a reload, and its journal probe in the metrics (in-process, fake engines)."""

from __future__ import annotations

import base64
import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rotator.runners import daemon as daemon_mod
from rotator.runners.daemon import JOURNAL_CHECK_STALE_S
from tests.runners.test_daemon import T0, Harness
from tests.runners.test_daemon import harness as harness  # noqa: F401 - a fixture, used by name
from tests.webhook_receiver import receiver


def _audit(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_hook_still_running_when_a_reload_replaced_the_notifier_is_audited_and_raises_its_webhook(
        harness: Callable[..., Harness], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """The reload closed the previous Notifier after 10 s; a hook of it still running (a hook's default
    timeout is 30 s) then ended into a closed audit file and stopped webhooks: its `hook` audit line
    and its `failure` webhook were lost, and the log said "abandoned at shutdown"."""
    monkeypatch.setattr(daemon_mod, "RELOAD_NOTIFY_CLOSE_S", 0.2)  # instead of 10 s: the hook outlives it
    (tmp_path / "k").write_text("whsec_" + base64.b64encode(b"webhook-key-of-24-bytes!").decode())
    script = tmp_path / "hook.py"
    script.write_text("import sys, time\ntime.sleep(1.0)\nsys.exit(3)\n")
    with receiver() as rx:
        hook = f'[[daemon.hooks]]\ncommand = {json.dumps([sys.executable, str(script)])}\ntimeout = "30s"\n'
        webhook = f'[[daemon.webhooks]]\nurl = "{rx.url}"\nsecret = {{ file = "k" }}\nbackoff = "0s"\n'
        h = harness([("a", "1h", "")], daemon=hook + webhook)
        d = h.daemon
        previous = d.notifier
        d.on_event({"at": T0, "policy": "a", "run_id": "r1", "step": "published", "result": "ok", "token_id": "t1"})
        config = tmp_path / "rotator.toml"
        config.write_text(config.read_text().replace('backoff = "0s"', 'backoff = "0s"\nattempts = 3'))
        with caplog.at_level("INFO", logger="rotator"):
            assert d.reload("test", full=False)
            assert d.notifier is not previous, "[daemon] webhooks changed: a new notifier"
            deadline = time.monotonic() + 10
            audit = tmp_path / "audit.jsonl"
            while not any(r["step"] == "hook" for r in _audit(audit)) and time.monotonic() < deadline:
                time.sleep(0.05)
            got = rx.wait_for(1)
    hooks = [(r["result"], r["exit_code"], r["token_id"]) for r in _audit(audit) if r["step"] == "hook"]
    assert hooks == [("failed", 3, "t1")], "the hook's end is audited (by the notifier now in place)"
    assert [(g.json["step"], g.json["result"], g.json["event"]) for g in got] == [("hook", "failed", "failure")]
    assert "closed file" not in caplog.text and "abandoned at shutdown" not in caplog.text
    assert "the reload replaced this hook while it was still running" in caplog.text


def test_journal_up_turns_0_with_readiness_when_the_journal_probe_hangs(
        harness: Callable[..., Harness]) -> None:
    """/readyz failed after 10 s without an answer from the journal, but rotator_journal_up (what the
    "journal down" alert reads) stayed 1 for as long as the probe hung."""
    h = harness([("a", "1h", "")])
    d = h.daemon
    d._check_journal()
    assert d.readiness()[0] is True and d.snapshot().journal_up is True
    hang = threading.Event()
    d.journal.ping = lambda: hang.wait(30)  # type: ignore[method-assign] - the journal stops answering
    try:
        time.sleep(1.5)  # the probe thread (every second) is now waiting for the ping
        ok, detail, _ = d._journal_check
        d._journal_check = (ok, detail, time.monotonic() - JOURNAL_CHECK_STALE_S - 1)  # its last answer, 11 s ago
        ready, checks = d.readiness()
        assert ready is False and "no answer from the journal" in checks["journal"]
        assert d.snapshot().journal_up is False
        assert "rotator_journal_up 0" in d.metrics.exposition().decode()
    finally:
        hang.set()
    d._check_journal()
    assert d.snapshot().journal_up is True, "up again at the next answer"
