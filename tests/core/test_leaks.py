"""No token value on any path: the redactor (deadlock-free, counted references, pins), SDK debug
logs (botocore's canonical request carries the STS session token), files created 0600."""

from __future__ import annotations

import gc
import logging
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from rotator.core.secret import REDACTOR, Redactor, Secret
from rotator.observe.logs import setup_logging
from tests.harness import REPO, make_scenario


# ---------------------------------------------------------------------------------- the redactor
def test_a_finalizer_during_redact_cannot_deadlock() -> None:
    """Issue 15.1's reproduction: a GC inside redact() runs Secret finalizers on the same thread.
    In a subprocess, with faulthandler: a hang ends it after 10 s with every thread's stack."""
    code = textwrap.dedent("""
        import faulthandler, gc, sys
        from rotator.core.secret import REDACTOR, Secret
        faulthandler.dump_traceback_later(10, exit=True)
        class Box: pass
        for k in range(20000):
            b = Box(); b.me = b; b.s = Secret(f"M.V1.fake-token-{k:016d}"); del b
            gc.set_threshold(1 + k % 5)
            REDACTOR.redact("a log line")
        gc.collect()
        assert not REDACTOR.knows("M.V1.fake-token-0000000000000000"), "freed values are forgotten"
        print("done")
    """)
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 0 and proc.stdout.strip() == "done", f"hung or failed:\n{proc.stderr[-3000:]}"
    assert time.monotonic() - started < 10


def test_a_value_stays_known_while_any_copy_lives() -> None:
    value = "tok-" + uuid.uuid4().hex * 2
    first, second = Secret(value), Secret(value)
    del first
    gc.collect()
    assert REDACTOR.redact(f"echo {value}") == "echo ***", "one copy freed must not forget the value"
    del second
    gc.collect()
    assert REDACTOR.redact(f"echo {value}") == f"echo {value}", "every copy freed: forgotten (no unbounded growth)"


def test_a_pinned_value_outlives_its_secrets_until_unpinned() -> None:
    redactor = Redactor()
    value = "tok-" + uuid.uuid4().hex
    redactor.add(value)
    redactor.pin("token-id-1", Secret(value))
    redactor.discard(value)
    assert redactor.redact(value) == "***"
    redactor.pin("token-id-1", Secret(value))  # pinning twice under one key counts once
    redactor.unpin("token-id-1")
    assert redactor.redact(value) == value
    redactor.unpin("token-id-1")  # unknown key: nothing happens


def test_pins_are_bounded() -> None:
    redactor = Redactor()
    redactor.MAX_PINS = 3
    values = [f"value-{i}-" + "x" * 10 for i in range(5)]
    for i, value in enumerate(values):
        redactor.pin(f"id-{i}", Secret(value))
    gc.collect()
    assert [redactor.knows(v) for v in values] == [False, False, True, True, True]


def test_a_value_inside_another_is_redacted_whole() -> None:
    redactor = Redactor()
    short, long = "abcdefgh1234", "abcdefgh1234-and-more"
    redactor.add(short)
    redactor.add(long)
    assert redactor.redact(f"{long} {short}") == "*** ***"


def test_a_text_shorter_than_every_value_is_returned_as_it_is_and_a_shorter_value_is_found_at_once() -> None:
    """redact() returns a text shorter than the shortest value the redactor ever knew without looking it
    up (most log fields: ids, times, steps); a shorter value added later lowers that bound before it can
    be looked for, and forgetting values never raises it (a lower bound stays true)."""
    redactor = Redactor()
    long = "tok-" + uuid.uuid4().hex  # 36 characters
    redactor.add(long)
    assert redactor.redact(long[:35]) == long[:35] and redactor.redact(long) == "***"
    assert redactor.redact(f"a{long}") == "a***"
    short = "s3cr3t-v4lue"  # 12: indexed among the short values
    redactor.add(short)
    assert redactor.redact(short) == "***" and redactor.redact(f"[{short}]") == "[***]"
    redactor.discard(short)
    assert redactor.redact(short) == short, "forgotten"
    assert redactor.redact(f"x{long}") == "x***"
    exactly8 = "abcdefgh"
    redactor.add(exactly8)
    assert redactor.redact(exactly8) == "***" and redactor.redact("abcdefg") == "abcdefg"


# ---------------------------------------------------------------------------------- files
def test_every_known_value_is_redacted_among_thousands() -> None:
    """The index of first characters (issue 12) finds each value wherever it is in the text: at
    the start, at the end, twice, next to another, sharing a prefix with others, exactly 8 long."""
    redactor = Redactor()
    values = [f"tok-{i:05d}-" + uuid.uuid4().hex for i in range(3000)]
    values += ["exactly8", "fourteen-chars", "fifteen-chars!!", "aaaaaaaaaaaaaaaaaaaa"]
    for value in values:
        redactor.add(value)
    text = (f"{values[0]} and {values[1]}{values[2]}, {values[1]} / exactly8 / fourteen-chars: {values[2999]} "
            "x fifteen-chars!! aaaaaaaaaaaaaaaaaaaaaa")
    assert redactor.redact(text) == "*** and ******, *** / *** / ***: *** x *** ***aa"
    for shift in range(20):  # at every offset, and at the very end
        assert redactor.redact("." * shift + values[7]) == "." * shift + "***"
        assert redactor.redact("." * shift + "fifteen-chars!!.") == "." * shift + "***."
    assert redactor.redact("tok-00001- is not a value, nor exactly") == "tok-00001- is not a value, nor exactly"
    for value in values[:2000]:
        redactor.discard(value)
    assert redactor.redact(f"{values[0]} {values[2500]}") == f"{values[0]} ***"
    assert not redactor.knows(values[0]) and redactor.knows(values[2500])


def test_log_file_is_created_0600(tmp_path: Path) -> None:
    log = tmp_path / "rotator.log"
    try:
        setup_logging("info", file=str(log))
        logging.getLogger("rotator.test").info("hello")
    finally:
        for handler in list(logging.getLogger().handlers):
            handler.close()
            logging.getLogger().removeHandler(handler)
    assert log.stat().st_mode & 0o777 == 0o600 and "hello" in log.read_text()


# ---------------------------------------------------------------------------------- SDK debug logs
def test_debug_logs_never_show_the_aws_session_token(
    tmp_path: Path, openbao: Any, fake_influxctl: Any, aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--log-level debug` with an AWS store and a session token: botocore signs every call, and
    its DEBUG canonical request carries ``x-amz-security-token``; none of it reaches the logs."""
    session_token = "IQoJb3JpZ2luX2VjEXAMPLE" + uuid.uuid4().hex
    monkeypatch.setenv("AWS_SESSION_TOKEN", session_token)
    store = f"""
[[policy.store]]
type = "aws-secretsmanager"
name = "aws"
secret_id = "tests/leaks-{uuid.uuid4().hex[:8]}"
region = "us-east-1"
endpoint_url = "{aws.url}"
max_attempts = 1
"""
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, extra_stores=store)
    proc = sc.cli("rotate", sc.policy, log_level="debug")
    assert proc.returncode == 0, proc.stderr
    texts = sc.written()
    assert any("botocore" in t or "secretsmanager" in t.lower() for t in texts.values()), "the AWS store was used"
    for name, text in texts.items():
        assert session_token not in text, f"the STS session token leaked into {name}"
    assert sc.log_file.stat().st_mode & 0o777 == 0o600
