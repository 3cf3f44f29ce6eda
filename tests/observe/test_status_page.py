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
import subprocess
import time
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


def test_requests_share_one_journal_read_per_cache_period(tmp_path: Path) -> None:
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
    policies = load_config(config).policies
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
