"""What the command line imports before it does anything (issue 12: start-up; issue 14 §6: the rotate path).

Each command runs in a fresh interpreter that reports which of the heavy modules below it
imported. Exact sets, not timings: bench/cli_startup.py measures the start-up ratios.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rotator.core.journal import RunRecord, RunState, open_journal
from tests.harness import REPO

#: third-party packages that cost tens of milliseconds or more to import (top-level names)
HEAVY_PACKAGES = frozenset({"pydantic", "hvac", "requests", "httpx", "boto3", "botocore", "apscheduler",
                            "prometheus_client", "psycopg", "tomlkit"})  # fmt: skip
#: rotator's own modules that import those, or a lot of code; any built-in adapter counts as
#: "rotator.adapters"
HEAVY_MODULES = frozenset({"rotator.config.policy", "rotator.config.registry", "rotator.core.journal",
                           "rotator.core.engine", "rotator.runners.daemon", "rotator.config.daemon_config",
                           "rotator.observe.status", "rotator.config.schedule", "rotator.observe.metrics",
                           "rotator.observe.notify", "rotator.config.policy_bundle"})  # fmt: skip
#: standard-library modules that cost milliseconds and that `status` from its cache does without
HEAVY_STDLIB = frozenset({"logging"})
#: What `rotator status` needs the first time it meets a policy file (or after an edit): the validated policy
#: file (pydantic, the adapters' settings models; the [daemon] models only when the file has that table),
#: the journal and the status model; never the engine, the daemon, or an SDK of AWS.
STATUS_LOADS = frozenset({"pydantic", "rotator.adapters", "rotator.config.policy", "rotator.config.registry",
                          "rotator.core.journal", "rotator.observe.status",
                          "rotator.config.schedule", "logging"})  # fmt: skip
#: ... and every later time, from the policy file's cached summary (rotator/config/policy_summary.py): the
#: journal, the status model and the schedule; no pydantic, no policy model, no adapter, and no logging (no
#: module on that path logs: rotator/runners/cli.py configures logging only before a full validation).
STATUS_CACHED_LOADS = frozenset({"rotator.core.journal", "rotator.observe.status", "rotator.config.schedule"})
#: The vault-kv2 store's SDK: its settings model must not import it (registry.lazy_sdk).
VAULT_SDK = frozenset({"hvac", "requests"})
POLICY = """
[[policy]]
name = "p{i}"
schedule = "30d"
[policy.issuer]
type = "influxctl-management"
[policy.issuer.profile]
product = "clustered"
host = "h{i}.example"
[[policy.store]]
type = "vault-kv2"
url = "https://vault.example:8200"
path = "influx/p{i}"
[policy.store.auth]
method = "token"
token = {{ file = "vault-token" }}
"""
NOW = datetime.now(UTC)


def _heavy_after(tmp_path: Path, *args: str) -> tuple[int, str, frozenset[str]]:
    """Run ``rotator ARGS`` in a new interpreter: its exit code, stdout, and the heavy modules it imported.

    The status cache is ``tmp_path/cache``: the first status of a test validates, the next reads the cache."""
    report = tmp_path / "modules.json"
    probe = (f"import json, sys\nfrom rotator.runners.cli import main\ntry:\n    code = main({list(args)!r})\n"
             "except SystemExit as stop:\n    code = stop.code\n"
             f"open({str(report)!r}, 'w').write(json.dumps(sorted(sys.modules)))\nraise SystemExit(code)\n")
    env = {**os.environ, "ROTATOR_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=False,
                          timeout=60, env=env)  # fmt: skip
    modules = set(json.loads(report.read_text()))
    heavy = {m for m in modules if m.split(".")[0] in HEAVY_PACKAGES} | (modules & (HEAVY_MODULES | HEAVY_STDLIB))
    heavy |= {"rotator.adapters"} if any(m.startswith("rotator.adapters.") for m in modules) else set()
    return done.returncode, done.stdout, frozenset(m if m.startswith("rotator.") else m.split(".")[0] for m in heavy)


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    """Two policies with a journal whose runs published a day ago (nothing due)."""
    (tmp_path / "vault-token").write_text("s.test\n")
    path = tmp_path / "rotator.toml"
    path.write_text('[rotator]\njournal = "journal.db"\n' + "".join(POLICY.format(i=i) for i in range(2)))
    journal = open_journal(f"sqlite:///{tmp_path / 'journal.db'}")
    for i in range(2):
        at = NOW - timedelta(days=1)
        journal.begin_run(RunRecord(run_id=f"r{i}", policy=f"p{i}", state=RunState.DONE, kind="rotate",
                                    started_at=at, updated_at=at, new_token_id=f"tok-{i}", published_at=at))
    journal.close()
    return path


def test_help_imports_nothing_heavy(tmp_path: Path) -> None:
    code, out, heavy = _heavy_after(tmp_path, "--help")
    assert code == 0 and "rotator COMMAND --help" in out
    assert heavy == frozenset()


def test_a_command_s_help_imports_nothing_heavy(tmp_path: Path) -> None:
    for command in ("status", "daemon", "sync", "rotate"):
        code, out, heavy = _heavy_after(tmp_path, command, "--help")
        assert code == 0 and "example" in out, command
        assert heavy == frozenset(), command


def test_status_imports_the_policy_model_and_the_journal_only(policy_file: Path, tmp_path: Path) -> None:
    code, out, heavy = _heavy_after(tmp_path, "-c", str(policy_file), "status")
    assert code == 0 and "tok-1" in out
    assert heavy == STATUS_LOADS


def test_status_from_its_cache_imports_no_pydantic(policy_file: Path, tmp_path: Path) -> None:
    """The first status validates the policy file and caches its summary; the next ones read the summary
    (rotator/config/policy_summary.py) with the standard library: no pydantic, policy model or adapter,
    and the same output."""
    first = _heavy_after(tmp_path, "-c", str(policy_file), "status")
    assert first[2] == STATUS_LOADS
    for command in ("status", "plan"):
        code, out, heavy = _heavy_after(tmp_path, "-c", str(policy_file), command)
        assert code == 0, command
        assert heavy == STATUS_CACHED_LOADS, command
        assert "pydantic" not in heavy and "rotator.config.policy" not in heavy
    assert _heavy_after(tmp_path, "-c", str(policy_file), "status")[:2] == first[:2]


def test_status_after_an_edit_validates_again(policy_file: Path, tmp_path: Path) -> None:
    _heavy_after(tmp_path, "-c", str(policy_file), "status")
    policy_file.write_text(policy_file.read_text().replace('schedule = "30d"', 'schedule = "20d"'))
    code, out, heavy = _heavy_after(tmp_path, "-c", str(policy_file), "status")
    assert code == 0 and heavy == STATUS_LOADS
    # the edited schedule's max age (20d + grace 1d + margin 1d), next due 19 days from now
    assert "ok (max 22d)" in out and "18d23h" in out and "max 32d" not in out
    assert _heavy_after(tmp_path, "-c", str(policy_file), "status")[2] == STATUS_CACHED_LOADS


def test_status_imports_no_store_sdk(policy_file: Path, tmp_path: Path) -> None:
    _, _, heavy = _heavy_after(tmp_path, "-c", str(policy_file), "status")
    assert heavy & VAULT_SDK == frozenset()


def test_rotate_if_due_decides_without_the_status_model(policy_file: Path, tmp_path: Path) -> None:
    """The path of `rotate --if-due` is policy file -> journal -> due decision -> engine: the
    decision is rotator/core/due.py's, not the status model's (which reads more of the journal)."""
    code, out, heavy = _heavy_after(tmp_path, "-c", str(policy_file), "rotate", "--all", "--if-due")
    assert code == 0
    assert out.splitlines() == ["p0: nothing-to-do - not due", "p1: nothing-to-do - not due"]
    assert "rotator.observe.status" not in heavy
    assert {"rotator.config.policy", "rotator.core.journal", "rotator.config.schedule"} <= heavy


def test_loading_a_policy_file_reads_the_entry_points_once(policy_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issuers and stores come from one walk of the installed distributions' metadata per policy file
    (registry.one_scan); outside a load, each lookup walks it afresh."""
    from rotator.config import registry
    from rotator.config.policy import load_config

    calls: list[dict[str, str]] = []
    real = registry.entry_points

    def counting(**params: str) -> object:
        calls.append(params)
        return real(**params)

    monkeypatch.setattr(registry, "_cache", {})  # the adapters are looked up again
    monkeypatch.setattr(registry, "entry_points", counting)
    assert len(load_config(policy_file).policies) == 2
    assert calls == [{}]
    assert registry.available("store") and calls == [{}, {"group": "rotator.stores"}]
