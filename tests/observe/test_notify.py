"""Audit lines, signed webhooks (against a real local HTTP server) and command hooks (real processes)."""

from __future__ import annotations

import base64
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from rotator.config.daemon_config import DaemonSettings
from rotator.core.errors import ConfigError
from rotator.core.secret import Secret
from rotator.observe.notify import Notifier, check_webhook_keys, event_kinds, sign, signing_key, verify_signature
from tests.webhook_receiver import receiver

#: the HMAC key (its bytes: what tests/webhook_receiver.py verifies with) and its Standard Webhooks secret
KEY = "webhook-signing-key-for-tests"
AT = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def whsec(key: str | bytes) -> str:
    return "whsec_" + base64.b64encode(key.encode() if isinstance(key, str) else key).decode()


def _settings(tmp_path: Path, **daemon: Any) -> DaemonSettings:
    (tmp_path / "hmac-key").write_text(whsec(KEY) + "\n")
    return DaemonSettings.model_validate({"audit": {"file": "audit.jsonl"}, **daemon})


def _webhook(url: str, **extra: Any) -> dict[str, Any]:
    return {"url": url, "secret": {"file": "hmac-key"}, "backoff": "0s", **extra}


def _audit(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]


def _event(step: str, result: str, **detail: Any) -> dict[str, Any]:
    return {"at": AT, "policy": "mgmt", "run_id": "r1", "step": step, "result": result, **detail}


def test_audit_lines_carry_time_policy_run_step_ids_result_error(tmp_path: Path) -> None:
    notifier = Notifier(_settings(tmp_path), tmp_path)
    notifier(_event("mint", "ok", token_id="t-new"))
    notifier(_event("published", "ok", token_id="t-new", revoke_old_at=AT))
    notifier(_event("revoke_new", "start", token_id="t-new", error="verify failed"))
    notifier.close(1)
    lines = _audit(tmp_path)
    assert [(r["step"], r["result"]) for r in lines] == [("mint", "ok"), ("published", "ok"), ("revoke_new", "start")]
    first = lines[0]
    assert list(first)[:5] == ["time", "policy", "run_id", "step", "result"]
    assert first["time"] == "2026-03-01T12:00:00.123456Z" and first["token_id"] == "t-new"
    assert lines[1]["revoke_old_at"] == "2026-03-01T12:00:00.123456Z"
    assert lines[2]["error"] == "verify failed"


def test_audit_file_is_reopened_after_logrotate_moved_it(tmp_path: Path) -> None:
    notifier = Notifier(_settings(tmp_path), tmp_path)
    notifier(_event("plan", "ok"))
    (tmp_path / "audit.jsonl").rename(tmp_path / "audit.jsonl.1")
    notifier.audit.reopen()  # what SIGHUP does
    notifier(_event("mint", "ok", token_id="t-new"))
    notifier.close(1)
    assert [r["step"] for r in _audit(tmp_path)] == ["mint"]
    assert json.loads((tmp_path / "audit.jsonl.1").read_text())["step"] == "plan"


def test_an_audit_file_that_is_a_link_is_refused_at_start_and_not_followed_at_reopen(tmp_path: Path) -> None:
    """The audit file's directory may be writable by others while the daemon runs as root: a link
    planted at its path (before the start, or after logrotate moved the file) must not make rotator
    append to the file it points at."""
    from rotator.core.errors import RotatorError

    victim = tmp_path / "victim.conf"
    victim.write_text("root-owned content\n")
    (tmp_path / "audit.jsonl").symlink_to(victim)
    with pytest.raises(RotatorError, match="cannot open audit file .*audit.jsonl: is a symbolic link"):
        Notifier(_settings(tmp_path), tmp_path)
    (tmp_path / "audit.jsonl").unlink()
    notifier = Notifier(_settings(tmp_path), tmp_path)
    notifier(_event("plan", "ok"))
    (tmp_path / "audit.jsonl").rename(tmp_path / "audit.jsonl.1")
    (tmp_path / "audit.jsonl").symlink_to(victim)
    notifier.audit.reopen()  # refused and logged: the old file is kept
    notifier(_event("mint", "ok", token_id="t-new"))
    notifier.close(1)
    notifier.audit.write({"step": "late", "result": "ok"})  # a line after close opens the path for itself
    assert victim.read_text() == "root-owned content\n"
    assert [json.loads(line)["step"] for line in (tmp_path / "audit.jsonl.1").read_text().splitlines()] == [
        "plan", "mint"]


def test_audit_to_stdout_is_the_default(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    notifier = Notifier(DaemonSettings.model_validate({}), tmp_path)
    notifier(_event("plan", "ok"))
    notifier.close(1)
    assert json.loads(capsys.readouterr().out)["step"] == "plan"


def test_a_token_value_that_reaches_an_event_is_redacted(tmp_path: Path) -> None:
    value = Secret("tok-" + "q" * 40)  # registered with the redactor, as every token value is
    notifier = Notifier(_settings(tmp_path), tmp_path)
    notifier(_event("rotate", "failed", error=f"server echoed {value.reveal()}"))
    notifier.close(1)
    text = (tmp_path / "audit.jsonl").read_text()
    assert value.reveal() not in text and "server echoed ***" in text


@pytest.mark.parametrize("text", ['pä"ss\\wörd-0123456789', 'tok"en-with-a-quote-0123456789', "back\\slash-0123456789"])
def test_a_secret_that_json_escapes_is_redacted_in_the_audit_line(tmp_path: Path, text: str) -> None:
    # e.g. an operator's token file with a quote or an umlaut: JSON writes it escaped, as the redactor never saw it
    value = Secret(text)
    notifier = Notifier(_settings(tmp_path), tmp_path)
    notifier(_event("rotate", "failed", error=f"server echoed {value.reveal()}", details={"said": [value.reveal()]}))
    notifier.close(1)
    record = json.loads((tmp_path / "audit.jsonl").read_text())
    assert record["error"] == "server echoed ***" and record["details"] == {"said": ["***"]}


@pytest.mark.parametrize(("step", "result", "kinds"), [
    ("published", "ok", {"success"}), ("rotate", "failed", {"failure"}), ("rotate", "needs_attention", {"failure"}),
    ("recover", "failed", {"failure"}), ("recover", "error", set()), ("publish", "partial", set()),
    ("hook", "timeout", {"failure"}),
    ("reload", "failed", {"failure"}), ("revoke_old", "failed", {"orphan"}), ("revoke_new", "failed", {"orphan"}),
    # Engine._revoke_own_mint: a token minted after its run lost its lease, not revoked: left valid
    ("revoke_orphan", "failed", {"orphan"}), ("revoke_orphan", "ok", set()),
    ("revoke_old", "retry", set()), ("mint", "ok", set()), ("rotate", "ok", set()),
])  # fmt: skip
def test_event_kinds(step: str, result: str, kinds: set[str]) -> None:
    assert event_kinds({"step": step, "result": result}) == kinds


def test_webhook_is_signed_retried_and_filtered(tmp_path: Path) -> None:
    with receiver(statuses=[503, 500, 200]) as rx:
        settings = _settings(tmp_path, webhooks=[_webhook(rx.url, on=["failure", "orphan"])])
        notifier = Notifier(settings, tmp_path)
        notifier(_event("published", "ok", token_id="t-new"))  # success: not subscribed
        notifier(_event("rotate", "failed", error="influxctl management create failed"))
        assert notifier.close(10)
        got = rx.wait_for(3)
    assert len(got) == 3, "two failures, then delivered: three attempts"
    assert len({d.header("webhook-id") for d in got}) == 1, "retries keep the delivery id"
    assert got[0].header("webhook-id") == got[0].json["delivery"]
    for delivery in got:
        assert delivery.signature_ok(KEY), "webhook-signature is Standard Webhooks' HMAC-SHA256 of id.timestamp.body"
        assert not delivery.signature_ok("another-key")
        assert delivery.headers["Content-Type"] == "application/json"
        assert delivery.headers["X-Rotator-Event"] == "failure"
        assert delivery.path == "/hooks/rotator"
    body = got[-1].json
    assert body["event"] == "failure" and body["policy"] == "mgmt" and body["run_id"] == "r1"
    assert body["error"] == "influxctl management create failed" and body["time"] == "2026-03-01T12:00:00.123456Z"


def test_webhook_policy_filter_and_env_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROTATOR_TEST_HMAC", whsec("key-from-the-environment"))
    with receiver() as rx:
        hook = {"url": rx.url, "secret": {"env": "ROTATOR_TEST_HMAC"}, "on": ["success"], "policies": ["other"]}
        notifier = Notifier(_settings(tmp_path, webhooks=[hook]), tmp_path)
        notifier(_event("published", "ok", token_id="t1"))  # policy mgmt: filtered out
        notifier({**_event("published", "ok", token_id="t2"), "policy": "other"})
        assert notifier.close(5)
        got = rx.wait_for(1)
    assert len(got) == 1 and got[0].json["token_id"] == "t2" and got[0].json["event"] == "success"
    assert got[0].signature_ok("key-from-the-environment")


def test_webhook_client_error_is_not_retried(tmp_path: Path) -> None:
    results: list[tuple[str, str]] = []
    with receiver(statuses=[400]) as rx:
        notifier = Notifier(_settings(tmp_path, webhooks=[_webhook(rx.url, attempts=5)]), tmp_path,
                            on_result=lambda *r: results.append(r))
        notifier(_event("revoke_old", "failed", token_id="t-old", error="unreachable"))
        assert notifier.close(5)
        assert len(rx.deliveries) == 1
    assert results == [("webhook", "failed")]


def test_a_slow_receiver_never_holds_the_caller(tmp_path: Path) -> None:
    results: list[tuple[str, str]] = []
    with receiver(delay_s=3) as rx:
        notifier = Notifier(_settings(tmp_path, webhooks=[_webhook(rx.url, timeout="1s", attempts=1)]), tmp_path,
                            on_result=lambda *r: results.append(r))
        started = time.monotonic()
        for _ in range(20):
            notifier(_event("rotate", "failed", error="x"))
        assert time.monotonic() - started < 0.5, "the listener only queues the POST"
        notifier.close(1.5)  # shutdown: gives up on the rest
    assert results and results[0] == ("webhook", "failed")


def test_unreachable_webhook_gives_up_after_its_attempts(tmp_path: Path) -> None:
    results: list[tuple[str, str]] = []
    notifier = Notifier(_settings(tmp_path, webhooks=[_webhook("http://127.0.0.1:9/x", attempts=3)]), tmp_path,
                        on_result=lambda *r: results.append(r))
    notifier(_event("rotate", "failed", error="x"))
    assert notifier.close(5)
    assert results == [("webhook", "failed")]


# -- command hooks ------------------------------------------------------------------------------
def _script(tmp_path: Path, body: str) -> list[str]:
    path = tmp_path / "hook.py"
    path.write_text("import json, os, sys, subprocess, time\n" + body)
    return [sys.executable, str(path)]


def test_hook_runs_after_publish_with_ids_and_no_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    value = Secret("tok-" + "z" * 40)
    monkeypatch.setenv("VAULT_TOKEN", "root-credential-of-rotator")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-credential-of-rotator")
    command = _script(tmp_path, "json.dump({'env': dict(os.environ), 'argv': sys.argv}, open('hook-out.json', 'w'))\n")
    settings = _settings(tmp_path, hooks=[{"command": command, "timeout": "10s", "env": {"APP": "billing"}}])
    notifier = Notifier(settings, tmp_path)
    notifier(_event("mint", "ok", token_id="t-new"))  # not a publication: no hook
    notifier(_event("published", "ok", token_id="t-new"))
    assert notifier.close(10)
    out = json.loads((tmp_path / "hook-out.json").read_text())
    env = out["env"]
    assert env["ROTATOR_POLICY"] == "mgmt" and env["ROTATOR_TOKEN_ID"] == "t-new"
    assert env["ROTATOR_RUN_ID"] == "r1" and env["ROTATOR_EVENT"] == "published" and env["APP"] == "billing"
    assert "VAULT_TOKEN" not in env and "AWS_SECRET_ACCESS_KEY" not in env
    everything = json.dumps(out)
    assert value.reveal() not in everything and "root-credential-of-rotator" not in everything
    hook_lines = [r for r in _audit(tmp_path) if r["step"] == "hook"]
    assert len(hook_lines) == 1 and hook_lines[0]["result"] == "ok" and hook_lines[0]["token_id"] == "t-new"


def test_hook_timeout_kills_its_process_group(tmp_path: Path) -> None:
    command = _script(tmp_path, "child = subprocess.Popen(['sleep', '30'])\n"
                                "open('grandchild.pid', 'w').write(str(child.pid))\ntime.sleep(30)\n")
    with receiver() as rx:
        settings = _settings(tmp_path, hooks=[{"command": command, "timeout": "1s"}],
                             webhooks=[_webhook(rx.url, on=["failure"])])
        notifier = Notifier(settings, tmp_path)
        started = time.monotonic()
        notifier(_event("published", "ok", token_id="t-new"))
        assert notifier.close(10)
        assert time.monotonic() - started < 5
        got = rx.wait_for(1)
    hook_lines = [r for r in _audit(tmp_path) if r["step"] == "hook"]
    assert hook_lines[0]["result"] == "timeout" and "killed" in hook_lines[0]["error"]
    assert got[0].json["step"] == "hook" and got[0].json["event"] == "failure", "a failed hook raises a failure"
    pid = int((tmp_path / "grandchild.pid").read_text())
    deadline = time.monotonic() + 5
    while _alive(pid):
        assert time.monotonic() < deadline, "the hook's own child outlived the timeout"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] if Path(f"/proc/{pid}").exists() else ""
    return state != "Z"


def test_failing_hook_reports_exit_code_and_output_length_never_its_output(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A value the redactor does not know (a hook may print anything, e.g. a token it fetched
    # itself): only the exit code and the output's length leave the hook.
    unknown = "hook-printed-" + "k" * 30
    command = _script(tmp_path, f"print('reloading {unknown}')\nprint('app: no such unit {unknown}', "
                                "file=sys.stderr)\nsys.exit(3)\n")
    with receiver() as rx:
        notifier = Notifier(_settings(tmp_path, hooks=[{"command": command}], webhooks=[_webhook(rx.url)]), tmp_path)
        with caplog.at_level("DEBUG"):
            notifier(_event("published", "ok", token_id="t-new"))
            assert notifier.close(10)
        got = rx.wait_for(1)
    line = next(r for r in _audit(tmp_path) if r["step"] == "hook")
    assert line["result"] == "failed" and line["exit_code"] == 3
    assert line["error"].endswith("exited with status 3")
    assert line["output_chars"] == len(f"reloading {unknown}\napp: no such unit {unknown}\n")
    assert got[0].json["step"] == "hook" and got[0].json["exit_code"] == 3
    for text in ((tmp_path / "audit.jsonl").read_text(), got[0].body.decode(), caplog.text):
        assert unknown not in text and "no such unit" not in text


def _kill_leftover(tmp_path: Path) -> None:
    """Kill the background process a hook script recorded in ``leftover.pid`` (it outlives the hook)."""
    pid_file = tmp_path / "leftover.pid"
    if pid_file.exists():
        try:
            os.kill(int(pid_file.read_text()), 9)
        except ProcessLookupError:
            pass


#: a hook script line: start ``sleep 30`` in a session of its own (a daemon, ``setsid foo &``): the
#: hook's process group kill does not reach it, and it inherits (so holds open) the hook's stdout
_LEFTOVER = ("child = subprocess.Popen(['sleep', '30'], start_new_session=True)\n"
             "open('leftover.pid', 'w').write(str(child.pid))\n")


def test_hook_that_exits_leaving_a_background_process_on_its_output_does_not_wedge(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The hook exits 0 at once; what it started keeps its stdout open. Its exit is reported
    (not a wait for that process's EOF), and the next publication's hook still runs."""
    printed = "daemon-up-" + "q" * 12
    command = _script(tmp_path, _LEFTOVER + f"print('{printed}', flush=True)\n")
    notifier = Notifier(_settings(tmp_path, hooks=[{"command": command, "timeout": "5s"}]), tmp_path)
    try:
        started = time.monotonic()
        with caplog.at_level("INFO", logger="rotator.notify"):
            notifier(_event("published", "ok", token_id="t-1"))
            notifier(_event("published", "ok", token_id="t-2", run_id="r2"))
            assert notifier.close(9), "the hook thread is wedged on a pipe its background process holds"
        elapsed = time.monotonic() - started
    finally:
        _kill_leftover(tmp_path)
    hook_lines = [r for r in _audit(tmp_path) if r["step"] == "hook"]
    assert [(r["token_id"], r["result"], r["exit_code"]) for r in hook_lines] == [("t-1", "ok", 0), ("t-2", "ok", 0)]
    assert all(r["output_chars"] == len(printed + "\n") for r in hook_lines)
    assert all(r["duration_s"] < 4 for r in hook_lines) and elapsed < 8, "reported soon after the hook exited"
    assert "still holds its output" in caplog.text and printed not in caplog.text


def test_hook_killed_at_its_timeout_is_reported_although_a_background_process_holds_its_output(
    tmp_path: Path,
) -> None:
    """The process group kill misses a process in its own session; the timeout is still reported."""
    command = _script(tmp_path, _LEFTOVER + "time.sleep(30)\n")
    notifier = Notifier(_settings(tmp_path, hooks=[{"command": command, "timeout": "1s"}]), tmp_path)
    try:
        started = time.monotonic()
        notifier(_event("published", "ok", token_id="t-new"))
        assert notifier.close(9), "after the kill, the hook thread waited for the leftover's EOF"
        assert time.monotonic() - started < 6
    finally:
        _kill_leftover(tmp_path)
    (line,) = [r for r in _audit(tmp_path) if r["step"] == "hook"]
    assert line["result"] == "timeout" and "killed" in line["error"] and line["exit_code"] is None


def test_hook_that_closes_its_output_and_runs_on_is_killed_at_its_timeout(tmp_path: Path) -> None:
    command = _script(tmp_path, "os.close(1)\nos.close(2)\ntime.sleep(30)\n")
    notifier = Notifier(_settings(tmp_path, hooks=[{"command": command, "timeout": "1s"}]), tmp_path)
    started = time.monotonic()
    notifier(_event("published", "ok", token_id="t-new"))
    assert notifier.close(9)
    assert time.monotonic() - started < 5
    (line,) = [r for r in _audit(tmp_path) if r["step"] == "hook"]
    assert line["result"] == "timeout" and line["output_chars"] == 0


def test_missing_hook_program_is_a_failure_not_a_crash(tmp_path: Path) -> None:
    notifier = Notifier(_settings(tmp_path, hooks=[{"command": ["/nonexistent/reload-app"]}]), tmp_path)
    notifier(_event("published", "ok", token_id="t-new"))
    assert notifier.close(5)
    line = next(r for r in _audit(tmp_path) if r["step"] == "hook")
    assert line["result"] == "failed" and "cannot start /nonexistent/reload-app" in line["error"]


@pytest.mark.parametrize("env", [{"A=B": "x"}, {"A\x00": "x"}, {"A": "x\x00y"}], ids=["eq", "nul-name", "nul-value"])
def test_a_hook_environment_popen_refuses_is_a_failure_not_a_crash(tmp_path: Path, env: dict[str, str]) -> None:
    """Popen raises ValueError, not OSError: the worker logged "unexpected error", with no hook event and
    no failure result, at every publication. (`rotator validate` refuses these; settings made in Python
    may still hold them.)"""
    settings = _settings(tmp_path, hooks=[{"command": ["true"]}])
    hook = settings.hooks[0].model_copy(update={"env": env})  # as validation would not let it be
    results: list[tuple[str, str]] = []
    notifier = Notifier(settings.model_copy(update={"hooks": [hook]}), tmp_path,
                        on_result=lambda *r: results.append(r))
    notifier(_event("published", "ok", token_id="t-new"))
    assert notifier.close(5)
    (line,) = [r for r in _audit(tmp_path) if r["step"] == "hook"]
    assert line["result"] == "failed" and line["error"].startswith("cannot start true: "), line
    assert results == [("hook", "failed")]


def test_signature_follows_standard_webhooks() -> None:
    # The specification's example (standard-webhooks, also in its reference libraries' tests).
    key = signing_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    assert sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}') == (
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")


def test_a_replayed_or_tampered_delivery_is_refused(tmp_path: Path) -> None:
    """The receiver's verifier (tests/webhook_receiver.py, from the specification) and rotator's own
    verify_signature() accept a fresh delivery once, refuse it replayed later or with another body."""
    with receiver() as rx:
        notifier = Notifier(_settings(tmp_path, webhooks=[_webhook(rx.url)]), tmp_path)
        notifier(_event("rotate", "failed", error="x"))
        assert notifier.close(5)
        delivery = rx.wait_for(1)[0]
    stamp = int(delivery.header("webhook-timestamp"))
    assert abs(stamp - time.time()) < 10
    seen: set[str] = set()
    assert delivery.verify(KEY, seen=seen) == "ok"
    assert delivery.verify(KEY, seen=seen) == "webhook-id seen before", "a replay inside the window"
    assert delivery.verify(KEY, now=stamp + 301) == "timestamp outside the tolerance window", "a replay later"
    assert delivery.verify("another-key") == "bad signature"
    tampered = type(delivery)(delivery.path, delivery.headers, delivery.body.replace(b'"x"', b'"y"'), delivery.at)
    assert tampered.body != delivery.body and tampered.verify(KEY) == "bad signature"
    # An attacker who re-stamps a captured body cannot sign the new timestamp.
    headers = {k: v for k, v in delivery.headers.items() if k.lower() != "webhook-timestamp"}
    restamped = type(delivery)(delivery.path, {**headers, "webhook-timestamp": str(stamp + 400)},
                               delivery.body, delivery.at)
    assert restamped.verify(KEY, now=stamp + 400) == "bad signature"
    key = KEY.encode()
    verify_signature(key, delivery.headers, delivery.body, now=stamp)
    unsigned = {k: v for k, v in delivery.headers.items() if k.lower() != "webhook-signature"}
    for headers, body, now, why in [
        (delivery.headers, delivery.body, stamp + 301, "tolerance"),
        (delivery.headers, tampered.body, stamp, "no valid signature"),
        ({k: v for k, v in delivery.headers.items() if k.lower() != "webhook-id"}, delivery.body, stamp, "missing"),
        ({**{k: v for k, v in delivery.headers.items() if k.lower() != "webhook-id"}, "webhook-id": "msg_other"},
         delivery.body, stamp, "no valid signature"),
        # not ASCII: hmac.compare_digest() raised TypeError, not the ValueError promised
        ({**unsigned, "webhook-signature": "v1,\u00e9"}, delivery.body, stamp, "no valid signature"),
    ]:
        with pytest.raises(ValueError, match=why):
            verify_signature(key, headers, body, now=now)
    # ...and the valid signature after such a one is found (the TypeError came first)
    verify_signature(key, {**unsigned, "webhook-signature": f"v1,\u00e9 {delivery.header('webhook-signature')}"},
                     delivery.body, now=stamp)


def test_audit_file_is_created_0600(tmp_path: Path) -> None:
    notifier = Notifier(_settings(tmp_path), tmp_path)
    notifier(_event("plan", "ok"))
    notifier.close(1)
    assert (tmp_path / "audit.jsonl").stat().st_mode & 0o777 == 0o600


# -- settings -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("daemon", "message"), [
    ({"webhooks": [{"url": "https://x.example", "secret": "s3cret"}]}, "inline secrets are refused"),
    ({"webhooks": [{"url": "ftp://x.example", "secret": {"file": "k"}}]}, "http:// or https://"),
    # ports urllib cannot read: `rotator validate` refuses what the daemon would refuse at start
    ({"webhooks": [{"url": "https://x.example:99999/h", "secret": {"file": "k"}}]}, "port cannot be read"),
    ({"webhooks": [{"url": "https://x.example:12ab/h", "secret": {"file": "k"}}]}, "port cannot be read"),
    ({"webhooks": [{"url": "https://x.example:0/h", "secret": {"file": "k"}}]}, "a port from 1 to 65535"),
    ({"webhooks": [{"url": "https://:443/h", "secret": {"file": "k"}}]}, "must name a host"),
    ({"webhooks": [{"url": "https://x.example", "secret": {"file": "k"}, "on": ["sometimes"]}]}, "'failure'"),
    ({"hooks": [{"command": []}]}, "at least 1 item"),
    ({"hooks": [{"command": ["x"], "env": {"TOKEN": "v"}}]}, "refused variable"),
    ({"listen": "9464"}, "not an address"),
    ({"sweep_interval": "0s"}, "at least 1s"),
    ({"audit": {"file": "a.jsonl", "stdout": True}}, "not both"),
    ({"sweep": "60s"}, "Extra inputs are not permitted"),
])  # fmt: skip
def test_bad_daemon_settings(daemon: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        DaemonSettings.model_validate(daemon)


def test_an_answer_that_is_not_http_is_retried(tmp_path: Path) -> None:
    """A receiver (or a proxy before it) that answers garbage raised http.client's BadStatusLine, which
    no handler took for a delivery failure: the webhook was given up without its retries."""
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    answers = [b"garbage\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"]
    served: list[bytes] = []

    def serve() -> None:
        for answer in answers:
            conn, _ = server.accept()
            with conn:
                served.append(conn.recv(65536))
                conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    results: list[tuple[str, str]] = []
    try:
        url = f"http://127.0.0.1:{server.getsockname()[1]}/hook"
        notifier = Notifier(_settings(tmp_path, webhooks=[_webhook(url, attempts=3)]), tmp_path,
                            on_result=lambda *r: results.append(r))
        notifier(_event("rotate", "failed", error="x"))
        assert notifier.close(5)
        thread.join(5)
    finally:
        server.close()
    assert len(served) == 2 and all(s.startswith(b"POST /hook") for s in served), "retried after the garbage"
    assert results == [("webhook", "ok")], results


# -- token-shaped text, deadlines, reloads --------------------------------------------------------
#: token-shaped text a server or a person wrote: never a registered Secret, so the redactor misses it
SERVER_TOKEN = "apiv1_Zm9vYmFyYmF6cXV4cXV1eHF1dXhxdXV4cXV1eA=="
VAULT_TOKEN = "hvs.CAESIJq0aXk5bGx0ZXN0dG9rZW4"


def test_token_shaped_text_in_an_event_is_masked_in_the_audit_line_and_the_webhook_body(tmp_path: Path) -> None:
    """As `rotator report` masks it: an issuer's error quoting a token (after a newline or a non-ASCII
    letter too, which JSON escapes: masked in the values, not in the encoded line)."""
    with receiver() as rx:
        notifier = Notifier(_settings(tmp_path, webhooks=[_webhook(rx.url)]), tmp_path)
        notifier(_event("rotate", "failed", error=f"403: invalid token {SERVER_TOKEN}\n{VAULT_TOKEN}",
                        detail={"body": [f"\u00e9{VAULT_TOKEN}"]}, token_id="a9453323-1ae3-4ea2-aee1-19f151ea83b6"))
        assert notifier.close(5)
        got = rx.wait_for(1)
    text = (tmp_path / "audit.jsonl").read_text()
    body = got[0].body.decode()
    for shown in (text, body):
        assert SERVER_TOKEN not in shown and VAULT_TOKEN not in shown and VAULT_TOKEN[4:] not in shown
    line = _audit(tmp_path)[0]
    assert line["error"] == "403: invalid token ***\n***" and line["detail"] == {"body": ["\u00e9***"]}
    assert line["token_id"] == "a9453323-1ae3-4ea2-aee1-19f151ea83b6", "token ids are not token-shaped"
    assert got[0].json["error"] == line["error"] and got[0].signature_ok(KEY)


@pytest.mark.parametrize("at_once", [b"", b"HTTP/1.1 200 OK\r\n"], ids=["all-dripped", "status-line-at-once"])
def test_a_receiver_that_drips_its_answer_fails_the_attempt_at_its_timeout(tmp_path: Path, at_once: bytes) -> None:
    """urllib's timeout bounds each socket read: a receiver answering a byte every 0.3 s never trips a 1 s
    one, and held the attempt (and every delivery queued behind it) for as long as it dripped. Cut off
    after a whole status line, http.client takes the end of the stream for the end of the headers: a
    200 it parsed that way is no delivery."""
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def drip() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(at_once)
            answer = b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 40 + b"\r\nContent-Length: 0\r\n\r\n"
            for byte in answer.removeprefix(at_once):
                if stop.wait(0.3):
                    return
                try:
                    conn.send(bytes([byte]))
                except OSError:
                    return

    thread = threading.Thread(target=drip, daemon=True)
    thread.start()
    results: list[tuple[str, str, float]] = []
    started = time.monotonic()
    try:
        url = f"http://127.0.0.1:{server.getsockname()[1]}/hook"
        notifier = Notifier(_settings(tmp_path, webhooks=[_webhook(url, timeout="1s", attempts=1)]), tmp_path,
                            on_result=lambda ch, r: results.append((ch, r, time.monotonic() - started)))
        notifier(_event("rotate", "failed", error="x"))
        deadline = time.monotonic() + 8
        while not results and time.monotonic() < deadline:
            time.sleep(0.05)
        notifier.close(1)
    finally:
        stop.set()
        server.close()
    assert results, "the attempt still runs after 8 s: its 1 s timeout is per read, not per attempt"
    channel, result, after = results[0]
    assert (channel, result) == ("webhook", "failed"), "cut off mid-answer: not a delivery, whatever the status line"
    assert 0.9 < after < 3, after


def test_a_hook_that_outlives_its_replaced_notifier_reports_to_the_current_one(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A reload replaces the Notifier and closes the old one after a while; a hook of the old one still
    running then must not end into its closed audit file and stopped webhooks (its result was lost)."""
    hook = {"command": _script(tmp_path, "time.sleep(1.0)\nsys.exit(3)\n"), "timeout": "30s"}
    current: list[Notifier] = []

    def to_current(event: Any) -> None:
        current[-1](event)

    with receiver() as rx:
        old = Notifier(_settings(tmp_path, hooks=[hook], webhooks=[_webhook(rx.url)]), tmp_path, emit=to_current)
        current.append(old)
        old(_event("published", "ok", token_id="t1"))
        new = Notifier(_settings(tmp_path, hooks=[hook], webhooks=[_webhook(rx.url, attempts=2)]), tmp_path,
                       emit=to_current)
        current.append(new)
        with caplog.at_level("WARNING", logger="rotator.notify"):
            assert old.close(0.2, reload=True) is False, "the hook still runs"
        deadline = time.monotonic() + 10
        while not any(r["step"] == "hook" for r in _audit(tmp_path)) and time.monotonic() < deadline:
            time.sleep(0.05)
        got = rx.wait_for(1)
        assert new.close(5)
    hook_lines = [r for r in _audit(tmp_path) if r["step"] == "hook"]
    assert [(r["result"], r["exit_code"], r["token_id"]) for r in hook_lines] == [("failed", 3, "t1")]
    assert [(d.json["step"], d.json["result"]) for d in got] == [("hook", "failed")]
    assert "abandoned at shutdown" not in caplog.text
    assert "the reload replaced this hook while it was still running" in caplog.text


# -- webhook secrets: the Standard Webhooks form, checked before the first delivery -------------------
def _reference_key(secret: str) -> bytes:
    """How the specification's reference library (standard-webhooks, libraries/python, Webhook.__init__)
    reads a secret: an optional whsec_ prefix dropped, the rest base64-decoded, padding added."""
    return base64.b64decode(secret.removeprefix("whsec_") + "==")


@pytest.mark.parametrize("secret", [
    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",  # the specification's example: 24 bytes, no padding needed
    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLFe",  # 23 bytes, unpadded: the library adds the padding
    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLFe=",
    "whsec_" + base64.b64encode(bytes(range(64))).decode(),
    "whsec_" + base64.b64encode(bytes(range(16))).decode().rstrip("="),  # the shortest accepted, unpadded
])  # fmt: skip
def test_a_whsec_secret_gives_the_key_standard_webhooks_libraries_derive(secret: str) -> None:
    """Before, an unpadded whsec_ value was refused (at delivery time only) though the libraries take it."""
    key = signing_key(f"  {secret}\n")
    assert key == _reference_key(secret) and len(key) >= 16


@pytest.mark.parametrize(("secret", "why"), [
    ("whsec_", "0-byte key"),  # an empty HMAC key: anyone could sign "authentic" deliveries
    ("whsec_AA==", "1-byte key"),
    ("whsec_" + base64.b64encode(b"k" * 15).decode(), "15-byte key"),
    ("whsec_MfKQ9r8G KYqrTwjUPD8ILPZIo2LaLaSw", "not base64"),
    ("whsec_MfKQ9r8G-KYqrTwjUPD8ILPZIo2LaLaSw", "not base64"),  # (the library would skip the "-": another key)
    ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwA", "not base64"),  # a character more than base64 can end on
    ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "not a Standard Webhooks secret"),
    ("an-old-style-plain-secret-value", "not a Standard Webhooks secret"),
])  # fmt: skip
def test_a_secret_that_is_not_a_usable_standard_webhooks_secret_is_refused(secret: str, why: str) -> None:
    """An unprefixed value was used as its UTF-8 bytes (the reference library base64-decodes it: another
    key, every delivery refused by such a receiver); whsec_ alone gave an empty key."""
    with pytest.raises(ConfigError, match=why) as caught:
        signing_key(secret)
    quoted = secret.removeprefix("whsec_")[:12]
    assert len(quoted) < 4 or quoted not in str(caught.value) + caught.value.hint, "the message quotes the secret"


def test_the_fix_for_an_unprefixed_secret_keeps_its_key(tmp_path: Path) -> None:
    """The refusal says how to keep the key receivers check now: whsec_ and the base64 of the old value;
    doing so gives exactly the key rotator signed with before."""
    old = "an-old-style-plain-secret-value"
    (tmp_path / "hmac-key").write_text(old + "\n")
    settings = DaemonSettings.model_validate({"webhooks": [_webhook("https://hooks.example/r")]})
    [problem] = check_webhook_keys(settings, tmp_path)
    assert "not a Standard Webhooks secret" in str(problem)
    assert f"< {tmp_path / 'hmac-key'} | base64 -w0" in problem.hint, problem.hint
    assert signing_key(whsec(old)) == old.encode(), "the old key, now in the form every library reads"


@pytest.mark.parametrize(("content", "message"), [
    (None, "cannot read credential file"),
    ("webhook-key-without-prefix", "not a Standard Webhooks secret"),
    ("whsec_", "0-byte key"),
    ("whsec_%%%", "not base64"),
])  # fmt: skip
def test_a_webhook_secret_that_cannot_be_used_is_named_when_the_notifier_is_made(
        tmp_path: Path, content: str | None, message: str, caplog: pytest.LogCaptureFixture) -> None:
    """What Daemon.start() and a reload build: an ERROR naming the webhook, the file and the fix, not a
    daemon whose every delivery fails in silence. The notifier is made all the same: the daemon goes on
    rotating (`rotator validate` is what refuses the file, exit 2)."""
    settings = _settings(tmp_path, webhooks=[_webhook("https://hooks.example/rotator")])
    key = tmp_path / "hmac-key"
    key.unlink()
    if content is not None:
        key.write_text(content)
    [problem] = check_webhook_keys(settings, tmp_path)
    assert message in str(problem) and "webhook https://hooks.example: no signing key: " in str(problem)
    assert str(key) in str(problem) and problem.hint
    caplog.clear()
    notifier = Notifier(settings, tmp_path)
    notifier.close(1)
    [error] = [r for r in caplog.records if r.levelname == "ERROR"]
    assert message in error.getMessage() and str(key) in error.getMessage() and "fix: " in error.getMessage()


def test_a_webhook_secret_that_went_bad_is_named_at_a_reload_even_with_the_same_settings(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Daemon.reload() asks same_settings() whether to build a new notifier: a secret replaced by a bad
    one (the settings, a file name, unchanged) is logged there too, and refuses nothing."""
    settings = _settings(tmp_path, webhooks=[_webhook("https://hooks.example/rotator")])
    notifier = Notifier(settings, tmp_path)
    try:
        assert notifier.same_settings(settings)
        (tmp_path / "hmac-key").write_text("not-a-whsec-value-anymore")
        caplog.clear()
        assert notifier.same_settings(settings)
        assert any("not a Standard Webhooks secret" in r.getMessage() for r in caplog.records
                   if r.levelname == "ERROR")
    finally:
        notifier.close(1)


def test_a_secret_lost_after_the_start_fails_each_delivery_at_once_without_retries(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The secret is read at every delivery (it can be rotated without a reload). One that cannot be read
    is a configuration error: retrying it (5 attempts, backoff up to a minute) held the queue and
    ended in the same failure."""
    results: list[tuple[str, str]] = []
    with receiver() as rx:
        notifier = Notifier(_settings(tmp_path, webhooks=[_webhook(rx.url, attempts=5, backoff="1s")]), tmp_path,
                            on_result=lambda *r: results.append(r))
        (tmp_path / "hmac-key").unlink()
        started = time.monotonic()
        with caplog.at_level("WARNING", logger="rotator.notify"):
            notifier(_event("rotate", "failed", error="x"))
            assert notifier.close(5)
        assert time.monotonic() - started < 1, "no retry, no backoff"
        assert rx.deliveries == []
    assert results == [("webhook", "failed")], "counted as a failed delivery (rotator_notifications_total)"
    assert "retrying" not in caplog.text
    assert "giving up" in caplog.text and str(tmp_path / "hmac-key") in caplog.text and "fix:" in caplog.text


# -- hooks at shutdown ------------------------------------------------------------------------------
@pytest.mark.parametrize("closes_output", [False, True], ids=["output-open", "output-closed"])
def test_a_hook_still_running_at_shutdown_is_killed_with_its_group_and_reported(
        tmp_path: Path, closes_output: bool) -> None:
    """Notifier.close() at shutdown gave a running hook its grace (at most 5 s from the daemon) and
    returned: the hook, in a session of its own, was re-parented to init and ran on past its timeout,
    its `hook` audit line and failure webhook lost. (A hook that closed its output was waited for by
    another path: both are covered.) Hooks still queued are not started then."""
    body = ("open(f\"ran-{os.environ['ROTATOR_TOKEN_ID']}\", 'w').close()\n"
            "child = subprocess.Popen(['sleep', '60'])\n"
            "open('grandchild.pid', 'w').write(str(child.pid))\n"
            # (whole or not at all: the test reads it as soon as it exists)
            "open('hook.pid.tmp', 'w').write(str(os.getpid()))\nos.replace('hook.pid.tmp', 'hook.pid')\n"
            + ("os.close(1)\nos.close(2)\n" if closes_output else "") + "time.sleep(60)\n")
    command = _script(tmp_path, body)
    results: list[tuple[str, str]] = []
    with receiver() as rx:
        settings = _settings(tmp_path, hooks=[{"command": command, "timeout": "30s"}],
                             webhooks=[_webhook(rx.url, on=["failure"])])
        notifier = Notifier(settings, tmp_path, on_result=lambda *r: results.append(r))
        notifier(_event("published", "ok", token_id="t1"))
        notifier(_event("published", "ok", token_id="t2", run_id="r2"))  # queued behind the first
        deadline = time.monotonic() + 10
        while not (tmp_path / "hook.pid").exists():
            assert time.monotonic() < deadline, "the hook did not start"
            time.sleep(0.02)
        pids = [int((tmp_path / name).read_text()) for name in ("hook.pid", "grandchild.pid")]
        try:
            started = time.monotonic()
            assert notifier.close(0.5) is False, "the hook was still running at the end of its grace"
            assert time.monotonic() - started < 4, "killed at once, not waited for to its timeout"
            got = rx.deliveries
        finally:
            for pid in pids:
                if _alive(pid):
                    os.kill(pid, 9)
    assert not any(_alive(pid) for pid in pids), "the hook (or its child) outlived the notifier"
    (line,) = [r for r in _audit(tmp_path) if r["step"] == "hook"]
    assert (line["result"], line["token_id"], line["exit_code"]) == ("failed", "t1", None)
    assert "still running when rotator stopped" in line["error"]
    assert [(d.json["step"], d.json["event"]) for d in got] == [("hook", "failure")], "its failure webhook went out"
    assert ("hook", "failed") in results and ("hook", "dropped") in results
    assert not (tmp_path / "ran-t2").exists(), "a queued hook started at shutdown would be left running"


def test_a_hook_a_reload_left_running_is_killed_at_shutdown_too(tmp_path: Path) -> None:
    """A reload lets the hooks of the notifier it replaced run on (to their own timeout); a shutdown
    soon after closed only the current notifier, and such a hook outlived rotator as well."""
    command = _script(tmp_path, "open('hook.pid.tmp', 'w').write(str(os.getpid()))\n"
                      "os.replace('hook.pid.tmp', 'hook.pid')\ntime.sleep(60)\n")
    current: list[Notifier] = []

    def to_current(event: Any) -> None:
        current[-1](event)

    old = Notifier(_settings(tmp_path, hooks=[{"command": command, "timeout": "30s"}]), tmp_path, emit=to_current)
    current.append(old)
    old(_event("published", "ok", token_id="t1"))
    deadline = time.monotonic() + 10
    while not (tmp_path / "hook.pid").exists():
        assert time.monotonic() < deadline, "the hook did not start"
        time.sleep(0.02)
    pid = int((tmp_path / "hook.pid").read_text())
    try:
        assert old.close(0.2, reload=True) is False, "replaced by a reload: the hook runs on"
        assert _alive(pid)
        new = Notifier(_settings(tmp_path), tmp_path, emit=to_current)  # the reload's: no hooks of its own
        current.append(new)
        started = time.monotonic()
        assert new.close(0.3) is False
        assert time.monotonic() - started < 4
    finally:
        if _alive(pid):
            os.kill(pid, 9)
    assert not _alive(pid), "the replaced notifier's hook outlived the shutdown"
    (line,) = [r for r in _audit(tmp_path) if r["step"] == "hook"]
    assert line["result"] == "failed" and "still running when rotator stopped" in line["error"]


# -- why a webhook gave up ------------------------------------------------------------------------
class _Answering:
    """A receiver answering every POST with one status and headers; counts the POSTs it got."""

    def __init__(self, status: int, headers: dict[str, str]) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                outer.hits += 1
                self.send_response(status)
                for name, value in {**headers, "Content-Length": "0"}.items():
                    self.send_header(name, value)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/rotator"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize(("status", "headers", "hint"), [
    (308, {"Location": "https://hookadmin:pa55w0rd@hooks-new.example:8443/secret-path?sig=q1w2e3"},
     "redirects to https://hooks-new.example:8443 (Location's path and query not logged"),
    (301, {"Location": "/moved/secret-path?sig=q1w2e3"}, "redirects to http://127.0.0.1:"),
    (302, {}, "redirects elsewhere (no readable Location): set url to where it redirects"),
    # urlsplit's host runs to the first "/?#": a "\\" or ";" would bring the path or parameters along
    (307, {"Location": "https://hooks-new.example\\secret-path?sig=q1w2e3"}, "redirects elsewhere (no readable"),
    (307, {"Location": "https://hooks-new.example;sig=q1w2e3/x"}, "redirects elsewhere (no readable"),
    (308, {"Location": "https://[::1]:8443/secret-path"}, "redirects to https://[::1]:8443 (Location's path"),
    (401, {}, "verifies with the same secret as this webhook's (credential file "),
    (403, {}, "its clock is within 300s of this host's"),
    (404, {}, "check the webhook's url"),
    (410, {}, "check the webhook's url"),
])
def test_a_final_status_says_how_to_fix_it_after_one_attempt(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, status: int, headers: dict[str, str], hint: str) -> None:
    """A receiver that moved (a 308 to its new address, an http:// URL redirected to https://) or refuses
    the signature failed with a bare "HTTP 308" / "HTTP 401": nothing said what to change. Redirects are
    not followed (a signed body re-sent to an address nobody configured) nor retried; the hint names the
    Location's scheme and host only: its path, query and user-info may carry secrets."""
    rx = _Answering(status, headers)
    results: list[tuple[str, str]] = []
    try:
        notifier = Notifier(_settings(tmp_path, webhooks=[_webhook(rx.url, attempts=3)]), tmp_path,
                            on_result=lambda *r: results.append(r))
        with caplog.at_level("INFO", logger="rotator.notify"):
            notifier(_event("rotate", "failed", error="x"))
            assert notifier.close(5)
    finally:
        rx.close()
    assert rx.hits == 1, "a redirect or a refusal is not retried"
    assert results == [("webhook", "failed")]
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "giving up on failure event msg_" in errors[0], caplog.text
    assert f"HTTP {status} (fix: " in errors[0] and hint in errors[0], errors[0]
    if 300 <= status < 400:
        assert "set url to" in errors[0] and "does not follow redirects" in errors[0]
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "rotator.notify")
    for secret in ("secret-path", "sig=", "q1w2e3", "hookadmin", "pa55w0rd", "/hooks/rotator", "/moved"):
        assert secret not in logged, secret


def test_a_certificate_this_host_does_not_trust_is_not_retried_and_says_how_to_trust_its_ca(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """An untrusted certificate was retried 5 times over a minute and logged as a bare SSL error;
    it stays untrusted until a person acts. The hint's SSL_CERT_FILE is what the webhook's HTTPS
    handler (urllib's default context) reads: with it set, the same receiver gets the delivery."""
    import socket
    import ssl
    import threading

    from tests.deploy.test_deploy_daemon import self_signed_cert

    cert, key, _ = self_signed_cert(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    connections: list[int] = []
    posts: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # closed: the test is over
            connections.append(1)
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.settimeout(5)
                    request = b""
                    while b"\r\n\r\n" not in request:
                        request += tls.recv(65536)
                    head, _, body = request.partition(b"\r\n\r\n")
                    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                      if line.lower().startswith(b"content-length:")))
                    while len(body) < length:  # all of it: a close with unread data is a reset
                        body += tls.recv(65536)
                    posts.append(body)
                    tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            except OSError:
                conn.close()  # the client refused our certificate

    threading.Thread(target=serve, daemon=True).start()
    url = f"https://127.0.0.1:{listener.getsockname()[1]}/hooks/rotator"
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    results: list[tuple[str, str]] = []
    try:
        notifier = Notifier(_settings(tmp_path, webhooks=[_webhook(url, attempts=3)]), tmp_path,
                            on_result=lambda *r: results.append(r))
        with caplog.at_level("INFO", logger="rotator.notify"):
            notifier(_event("rotate", "failed", error="x"))
            assert notifier.close(5)
        assert connections == [1], "not retried"
        assert results == [("webhook", "failed")]
        errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert len(errors) == 1 and "CERTIFICATE_VERIFY_FAILED" in errors[0], caplog.text
        assert "(fix: this host does not trust the CA" in errors[0] and "SSL_CERT_FILE" in errors[0], errors[0]

        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # what the hint says
        notifier = Notifier(_settings(tmp_path, webhooks=[_webhook(url, attempts=1)]), tmp_path,
                            on_result=lambda *r: results.append(r))
        notifier(_event("rotate", "failed", error="x"))
        assert notifier.close(5)
        assert results[-1] == ("webhook", "ok") and len(posts) == 1, caplog.text
        assert json.loads(posts[0])["event"] == "failure"
    finally:
        listener.close()


def test_a_closed_worker_whose_end_mark_did_not_fit_its_full_queue_ends_once_drained(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """close() puts an end mark in the queue, and gives up on it when the queue stays full (a slow
    receiver): the thread then delivered what was queued and waited on an empty queue forever, one
    thread (and its sender) leaked per reload."""
    import socket
    from datetime import timedelta

    from rotator.config.daemon_config import WebhookSettings
    from rotator.observe import notify

    monkeypatch.setattr(notify, "QUEUE_MAX", 2)
    (tmp_path / "hmac-key").write_text(whsec(KEY) + "\n")
    with socket.create_server(("127.0.0.1", 0), backlog=16) as silent:  # connects, never answers
        settings = WebhookSettings.model_validate({
            "url": f"http://127.0.0.1:{silent.getsockname()[1]}/hook", "secret": {"file": "hmac-key"},
            "attempts": 1, "timeout": timedelta(seconds=0.2)})
        results: list[str] = []
        sender = notify.WebhookSender(settings, tmp_path, on_result=lambda _c, r: results.append(r))
        sender.submit("failure", _event("rotate", "failed"))
        deadline = time.monotonic() + 5
        while not sender._queue.empty():  # in the thread's hands (its attempt waits for an answer)
            assert time.monotonic() < deadline
            time.sleep(0.01)
        for _ in range(2):
            sender.submit("failure", _event("rotate", "failed"))
        assert sender._queue.full()
        assert not sender.close(0.05, reload=True), "still busy: the end mark did not fit"
        sender._thread.join(3)
        assert not sender._thread.is_alive(), "the drained thread still waits for an end mark that never came"
    assert results == ["failed"] * 3, "what was queued was still attempted"


@pytest.mark.parametrize("password", ["pr0xyPa55", "pr0x/yPa55", "pr0x@yPa55", "pr0x'yPa55", 'pr0x"yPa55'])
def test_a_malformed_proxy_url_s_password_is_not_logged(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, password: str) -> None:
    """urllib quotes a malformed proxy URL whole in its ValueError ("proxy URL with no authority:
    'http:/user:password@proxy:3128'"): the retry and giving-up lines carried the proxy's password,
    whatever characters it holds (the quotes urllib picks follow the value's own)."""
    for name in ("http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(name, f"http:/hookuser:{password}@proxy.example:3128")
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    rx = _Answering(204, {})
    try:
        notifier = Notifier(_settings(tmp_path, webhooks=[_webhook(rx.url, attempts=1)]), tmp_path)
        with caplog.at_level("DEBUG", logger="rotator.notify"):
            notifier(_event("rotate", "failed", error="x"))
            assert notifier.close(5)
    finally:
        rx.close()
    assert rx.hits == 0, "the proxy setting is unusable: nothing reached the receiver"
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "rotator.notify")
    assert "has no // after its scheme" in logged, logged  # what is wrong is still said
    assert "yPa55" not in logged and "hookuser" not in logged and "pr0x" not in logged, logged
