"""The daemon's status page (`/` and `/status.json`, rotator/observe/status_page.py): served by a real
`rotator daemon` after real rotations (fake influxctl + OpenBao), opened in a real headless Chromium
(`--dump-dom`, `--screenshot`); never a token value; the journal read a bounded number of times.

Chromium is Debian's `chromium` package. Without it the browser test skips, saying so; with
ROTATOR_REQUIRE_CHROMIUM=1 (CI) it fails instead. The screenshot is kept as an artifact in
$ROTATOR_ARTIFACTS_DIR (default: the test's tmp dir); docs/images/status-page.png is one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.core.journal import open_journal
from rotator.observe.status_page import StatusPage
from tests.harness import make_scenario
from tests.runners.test_daemon import _free_port, configure, start_daemon
from tests.runners.test_daemon import daemons as daemons  # noqa: F401 - a fixture, used by name

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    reason = "Debian's chromium is not installed (apt-get install -y chromium): the status page browser test needs it"
    if os.environ.get("ROTATOR_REQUIRE_CHROMIUM") == "1":
        pytest.fail(reason + "; ROTATOR_REQUIRE_CHROMIUM=1 says it must run")
    pytest.skip(reason)


def _browser(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    argv = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", "--hide-scrollbars", f"--user-data-dir={home / 'profile'}", *args]
    env = {**os.environ, "HOME": str(home)}
    return subprocess.run(argv, capture_output=True, text=True, timeout=90, env=env, check=False)


def test_status_page_in_headless_chromium(tmp_path: Path, openbao: Any, fake_influxctl: Any, daemons: Any) -> None:
    _chromium()  # skip (or fail, when required) before starting anything
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=3600)
    port = _free_port()
    configure(sc, schedule="30d", daemon="", port=port)  # (before the rotation: its token lives past 30d)
    proc = sc.cli("rotate", sc.policy, "--output", "json")
    assert proc.returncode == 0, proc.stderr
    new_id = json.loads(proc.stdout)[0]["new_token_id"]
    journal = open_journal(f"sqlite:///{sc.journal_path}")  # a failure the page must list
    journal.record_event(datetime.now(UTC) - timedelta(minutes=5), sc.policy, "run-earlier", "mint", "failed",
                         {"error": "issuer answered 503"})
    journal.close()
    d = start_daemon(sc, port)
    daemons.append(d)

    status, body = d.get("/status.json")
    assert status == 200
    data = json.loads(body)
    [p] = data["policies"]
    assert p["policy"] == sc.policy and p["current_token_id"] == new_id
    assert p["max_age_s"] > 0 and 0 <= p["age_ratio"] < 0.01
    assert [r["token_id"] for r in p["pending_revocations"]] == [sc.bootstrap_id]
    assert p["recent_failures"][0]["error"] == "issuer answered 503"
    assert p["last_result"] == "published" and p["next_due"]
    assert data["inventory"] is None

    status, page = d.get("/")
    assert status == 200
    assert '<meta http-equiv="refresh"' in page
    assert not re.search(r"https?://", page), "no external asset"
    assert not re.search(r"<(script|link|img|iframe)\b", page, re.I)

    url = f"http://127.0.0.1:{port}/"
    dom = _browser("--dump-dom", url, home=tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    text = dom.stdout
    assert f'id="policy-{sc.policy}"' in text and new_id in text and sc.bootstrap_id in text
    assert 'role="meter"' in text and "age / max_age" in text and "issuer answered 503" in text
    assert "revocation pending" in text and "no inventory yet" in text

    artifacts = Path(os.environ.get("ROTATOR_ARTIFACTS_DIR") or tmp_path)
    artifacts.mkdir(parents=True, exist_ok=True)
    shot = artifacts / "status-page.png"
    taken = _browser(f"--screenshot={shot}", "--window-size=1280,900", url, home=tmp_path)
    assert taken.returncode == 0, taken.stderr[-2000:]
    assert shot.read_bytes()[:8] == PNG_MAGIC and shot.stat().st_size > 10_000

    values = {v["token"] for v in sc.versions()} | {sc.bootstrap_value}
    for value in values:
        assert value not in body and value not in page and value not in text
    assert d.stop() == 0


class _CountingJournal:
    """A real journal that counts the queries the page makes."""

    def __init__(self, url: str) -> None:
        self.journal = open_journal(url)
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.journal, name)
        if callable(attr):
            def counted(*args: Any, **kw: Any) -> Any:
                self.calls += 1
                return attr(*args, **kw)
            return counted
        return attr


def _policies(tmp_path: Path) -> Any:
    from rotator.config.policy import load_config

    config = tmp_path / "rotator.toml"
    config.write_text("""
[rotator]
journal = "j.db"
[[policy]]
name = "p1"
schedule = "30d"
[policy.issuer]
type = "influxctl-management"
[policy.issuer.profile]
product = "clustered"
host = "cluster.test.invalid"
[[policy.store]]
name = "primary"
type = "vault-kv2"
url = "http://127.0.0.1:1"
path = "influx/p1"
[policy.store.auth]
method = "token"
token = { file = "vault-token" }
""")
    (tmp_path / "vault-token").write_text("x")
    return load_config(config).policies


def test_requests_share_one_journal_read_per_cache_period(tmp_path: Path) -> None:
    policies = _policies(tmp_path)
    counting = _CountingJournal(f"sqlite:///{tmp_path / 'j.db'}")
    page = StatusPage(lambda: policies, lambda: counting, lambda: datetime.now(UTC), cache_s=0.5)  # type: ignore[arg-type,return-value]
    for _ in range(50):
        assert b"p1" in page.html_bytes() and b"p1" in page.json_bytes()
    assert page.reads == 1
    per_read = counting.calls
    assert 0 < per_read <= 10, per_read
    time.sleep(0.6)
    page.json_bytes()
    assert page.reads == 2 and counting.calls == 2 * per_read


#: token-shaped text a server or a person wrote (never a registered Secret: the redactor misses it)
SERVER_TOKEN = "apiv1_Zm9vYmFyYmF6cXV4cXV1eHF1dXhxdXV4cXV1eA=="


def test_token_shaped_text_in_errors_is_masked_on_the_page_as_in_the_report(tmp_path: Path) -> None:
    from rotator.core.journal import Revocation, RunRecord

    policies = _policies(tmp_path)
    journal = open_journal(f"sqlite:///{tmp_path / 'j.db'}")
    now = datetime.now(UTC)
    journal.record_event(now, "p1", None, "mint", "failed", {"error": f"403 Forbidden: token {SERVER_TOKEN} lacks it"})
    journal.begin_run(RunRecord("r1", "p1", "failed", "rotate", now, now, error=f"issuer said {SERVER_TOKEN}"))
    journal.schedule_revocation(Revocation("p1", "t-old", "r1", "superseded", now + timedelta(hours=1), "pending",
                                           attempts=1, last_error=f"HTTP 401 for {SERVER_TOKEN}"))
    page = StatusPage(lambda: policies, lambda: journal, lambda: datetime.now(UTC))
    data = json.loads(page.json_bytes())
    html, text = page.html_bytes().decode(), json.dumps(data)
    assert SERVER_TOKEN not in html and SERVER_TOKEN not in text
    (row,) = data["policies"]
    assert row["last_error"] == "issuer said ***", row
    assert row["pending_revocations"][0]["last_error"] == "HTTP 401 for ***"
    assert [f["error"] for f in row["recent_failures"]] == ["403 Forbidden: token *** lacks it"]
    assert "HTTP 401 for ***" in html and "403 Forbidden: token *** lacks it" in html


class _GatedJournal:
    """A real journal whose every query waits while ``open`` is clear (a journal that stopped answering)."""

    def __init__(self, url: str) -> None:
        self.journal = open_journal(url)
        self.open = threading.Event()
        self.open.set()
        self.waiting = threading.Event()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.journal, name)
        if not callable(attr):
            return attr

        def gated(*args: Any, **kw: Any) -> Any:
            if not self.open.is_set():
                self.waiting.set()
                self.open.wait(30)
            return attr(*args, **kw)
        return gated


def _within(seconds: float, fn: Callable[[], Any]) -> tuple[bool, Any]:
    """``(finished, result or exception)`` of ``fn`` run on a thread for at most ``seconds``."""
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(fn())
        except Exception as exc:
            out.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    return (not thread.is_alive(), out[0] if out else None)


def test_no_request_waits_for_a_journal_read_another_request_started(tmp_path: Path) -> None:
    """With the lock held through a whole read, a slow journal parked every other request's thread
    (and its socket) behind it, without bound: they get the previous snapshot, or a 503, at once."""
    from rotator.observe.health import Unavailable

    policies = _policies(tmp_path)
    gated = _GatedJournal(f"sqlite:///{tmp_path / 'j.db'}")
    page = StatusPage(lambda: policies, lambda: gated, lambda: datetime.now(UTC), cache_s=0.2)  # type: ignore[arg-type,return-value]
    try:
        gated.open.clear()
        reader = threading.Thread(target=page.json_bytes, daemon=True)
        reader.start()
        assert gated.waiting.wait(5)
        finished, answer = _within(2, page.json_bytes)
        assert finished, "a request waited for the first read, still going"
        assert isinstance(answer, Unavailable) and "reading the journal" in str(answer)
        gated.open.set()
        reader.join(5)
        first = page.data()
        assert page.reads == 1
        time.sleep(0.25)  # the snapshot is stale: the next request reads again
        gated.waiting.clear()
        gated.open.clear()
        reader = threading.Thread(target=page.json_bytes, daemon=True)
        reader.start()
        assert gated.waiting.wait(5)
        started = time.monotonic()
        for _ in range(20):
            finished, answer = _within(2, page.data)
            assert finished, "a request waited for the read in progress"
            assert answer is first, "the previous snapshot, while the journal is read again"
        assert time.monotonic() - started < 1.0
        assert page.reads == 2
    finally:
        gated.open.set()
    reader.join(5)
    assert page.data() is not first and page.reads == 2


def _get(port: int, path: str, timeout: float = 5) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def test_a_slow_journal_does_not_pile_up_http_threads(tmp_path: Path) -> None:
    """demo4: every GET / behind a slow read held a thread and a descriptor (600 requests, 602 threads)."""
    from prometheus_client import CollectorRegistry

    from rotator.observe.health import HealthServer

    policies = _policies(tmp_path)
    gated = _GatedJournal(f"sqlite:///{tmp_path / 'j.db'}")
    page = StatusPage(lambda: policies, lambda: gated, lambda: datetime.now(UTC))  # type: ignore[arg-type,return-value]
    server = HealthServer("127.0.0.1", 0, alive=lambda: (True, {}), ready=lambda: (True, {}),
                          registry=CollectorRegistry(), status=page)
    server.start()
    port = server.address[1]
    gated.open.clear()
    answers: list[tuple[int, dict[str, str], bytes]] = []

    def get(path: str) -> None:
        answers.append(_get(port, path, timeout=30))

    try:
        first = threading.Thread(target=get, args=("/",), daemon=True)
        first.start()  # its thread reads the journal, which does not answer
        assert gated.waiting.wait(5)
        before = threading.active_count()
        clients = [threading.Thread(target=get, args=("/status.json",), daemon=True) for _ in range(60)]
        for client in clients:
            client.start()
        for client in clients:
            client.join(10)
        assert len(answers) == 60, "every request is answered while the journal read goes on"
        assert {status for status, _, _ in answers} == {503}
        assert all(h["Retry-After"] == "5" and b"reading the journal" in body for _, h, body in answers)
        time.sleep(0.3)
        assert threading.active_count() <= before + 1, "no thread is left waiting for the journal"
        assert _get(port, "/healthz")[0] == 200
    finally:
        gated.open.set()
        first.join(5)
        server.stop()
    assert answers[-1][0] == 200, "the first request, once the journal answered"


def test_a_failed_journal_read_is_cached_and_logged_once_per_period(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """demo11: every request read the journal again and logged a traceback (40 requests, 40 of each)."""
    from prometheus_client import CollectorRegistry

    from rotator.observe.health import HealthServer

    policies = _policies(tmp_path)
    calls: list[str] = []

    class Down:
        def __getattr__(self, name: str) -> Any:
            def refused(*args: Any, **kw: Any) -> Any:
                calls.append(name)
                raise ConnectionError("journal unreachable")
            return refused

    page = StatusPage(lambda: policies, lambda: Down(), lambda: datetime.now(UTC), cache_s=0.5)  # type: ignore[arg-type,return-value]
    server = HealthServer("127.0.0.1", 0, alive=lambda: (True, {}), ready=lambda: (True, {}),
                          registry=CollectorRegistry(), status=page)
    server.start()
    try:
        with caplog.at_level("DEBUG", logger="rotator.health"):
            answers = [_get(server.address[1], path) for path in ("/", "/status.json") * 10]
            assert {status for status, _, _ in answers} == {503}
            assert b"cannot read the journal" in answers[0][2]
            assert page.reads == 1 and len(calls) == 1, "one read per period, failed or not"
            logged = [r for r in caplog.records if r.levelname == "ERROR"]
            # (the traceback is in exc_info, or in exc_text once rotator's RedactingFilter, installed by an
            # earlier test of this process, has redacted it there)
            assert len(logged) == 1, "logged once"
            assert logged[0].exc_info or "ConnectionError: journal unreachable" in (logged[0].exc_text or ""), \
                "with its traceback"
            time.sleep(0.55)
            assert _get(server.address[1], "/status.json")[0] == 503
            assert page.reads == 2
            logged = [r for r in caplog.records if r.levelname == "ERROR"]
            assert len(logged) == 2 and not logged[1].exc_info and "still cannot read" in logged[1].getMessage()
    finally:
        server.stop()
