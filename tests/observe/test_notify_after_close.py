"""An event that reaches a Notifier after its close().

The daemon's listener reads its notifier without a lock while a reload swaps it and closes the old one
on another thread: an event can reach the closed one. Before, it was lost twice: the audit write failed
("I/O operation on closed file") and the webhook item sat behind the worker's end mark, never sent and
never counted. Now its audit line reaches the file (opened for that one line, nothing left open) and
its webhook and hook deliveries are dropped and reported ``dropped`` (rotator_notifications_total).
"""

from __future__ import annotations

import base64
import json
import os
import stat
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from rotator.config.daemon_config import DaemonSettings, WebhookSettings
from rotator.observe.notify import Notifier, WebhookSender

AT = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
#: nothing listens there: a delivery attempt, if one were made, would fail (never "ok")
NOWHERE = "http://127.0.0.1:9/hooks/rotator"


def _settings(tmp_path: Path, **daemon: Any) -> DaemonSettings:
    (tmp_path / "hmac-key").write_text("whsec_" + base64.b64encode(b"k" * 32).decode() + "\n")
    return DaemonSettings.model_validate({"audit": {"file": "audit.jsonl"}, **daemon})


def _webhook(**extra: Any) -> dict[str, Any]:
    return {"url": NOWHERE, "secret": {"file": "hmac-key"}, "backoff": "0s", "attempts": 1, **extra}


def _event(step: str, result: str, **detail: Any) -> dict[str, Any]:
    return {"at": AT, "policy": "mgmt", "run_id": "r1", "step": step, "result": result, **detail}


def _audit(path: Path) -> list[tuple[str, str]]:
    return [(r["step"], r["result"]) for r in map(json.loads, path.read_text().splitlines())]


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_an_event_after_a_reload_closed_the_notifier_is_audited_and_its_webhook_counted_dropped(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    results: list[tuple[str, str]] = []
    notifier = Notifier(_settings(tmp_path, webhooks=[_webhook(on=["failure"])]), tmp_path,
                        on_result=lambda channel, result: results.append((channel, result)))
    notifier(_event("plan", "ok"))
    assert notifier.close(1, reload=True)
    with caplog.at_level("ERROR", logger="rotator.notify"):
        notifier(_event("rotate", "failed", error="boom"))  # the listener read the notifier before the swap
    assert _audit(tmp_path / "audit.jsonl") == [("plan", "ok"), ("rotate", "failed")], "the late line is written"
    assert "cannot write audit event" not in caplog.text
    sender = notifier.webhooks[0]
    assert sender._queue.qsize() == 0, "nothing left behind the end mark"
    assert results == [("webhook", "dropped")], "the lost delivery is counted"
    assert "came after it was closed" in caplog.text


def test_a_hook_due_after_the_close_is_counted_dropped_not_left_queued(tmp_path: Path) -> None:
    results: list[tuple[str, str]] = []
    hook = {"command": ["true"], "timeout": "5s"}
    notifier = Notifier(_settings(tmp_path, hooks=[hook]), tmp_path,
                        on_result=lambda channel, result: results.append((channel, result)))
    assert notifier.close(1, reload=True)
    notifier(_event("published", "ok", token_id="t-new"))
    assert _audit(tmp_path / "audit.jsonl") == [("published", "ok")]
    assert notifier.hooks[0]._queue.qsize() == 0
    assert results == [("hook", "dropped")]


def test_a_late_audit_line_leaves_no_descriptor_open_and_a_reopen_after_close_opens_nothing(tmp_path: Path) -> None:
    notifier = Notifier(_settings(tmp_path), tmp_path)
    notifier.close(1)
    before = _open_fds()
    for _ in range(20):
        notifier(_event("plan", "ok"))
        notifier.audit.reopen()  # SIGUSR1 reaching the daemon meanwhile: the closed sink stays closed
    assert _open_fds() == before, "every late line's file is closed again"
    assert len(_audit(tmp_path / "audit.jsonl")) == 20


def test_a_late_audit_line_goes_to_the_file_now_at_the_path_created_0600(tmp_path: Path) -> None:
    notifier = Notifier(_settings(tmp_path), tmp_path)
    notifier(_event("plan", "ok"))
    notifier.close(1)
    (tmp_path / "audit.jsonl").rename(tmp_path / "audit.jsonl.1")  # logrotate moved it meanwhile
    notifier(_event("mint", "ok", token_id="t-new"))
    assert _audit(tmp_path / "audit.jsonl") == [("mint", "ok")]
    assert _audit(tmp_path / "audit.jsonl.1") == [("plan", "ok")]
    assert stat.S_IMODE((tmp_path / "audit.jsonl").stat().st_mode) == 0o600, "audit lines name token ids"


class _Accepting(urllib.request.OpenerDirector):
    """An opener whose every POST is answered 200 at once."""

    class _Answer:
        status = 200

        def __enter__(self) -> _Accepting._Answer:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

    def open(self, *args: Any, **kwargs: Any) -> Any:
        return self._Answer()


def test_every_delivery_submitted_around_the_close_is_sent_or_counted_dropped(tmp_path: Path) -> None:
    """Submitters racing the close: each item either goes out (queued before the end mark) or is counted
    ``dropped``; none is queued behind the mark and silently lost."""
    _settings(tmp_path)
    results: list[tuple[str, str]] = []
    sender = WebhookSender(WebhookSettings.model_validate(_webhook()), tmp_path, opener=_Accepting(),
                           on_result=lambda channel, result: results.append((channel, result)))
    stop = threading.Event()
    submitted = [0] * 4

    def submit(index: int) -> None:
        while not stop.is_set():
            sender.submit("failure", {"step": "rotate", "result": "failed"})
            submitted[index] += 1
            time.sleep(0.0005)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(0.05)
    assert sender.close(10)
    time.sleep(0.05)  # the submitters go on after the close returned
    stop.set()
    for thread in threads:
        thread.join()
    ok, dropped = results.count(("webhook", "ok")), results.count(("webhook", "dropped"))
    assert ok > 0 and dropped > 0
    assert ok + dropped == sum(submitted) == len(results), "every submission is delivered or counted"
