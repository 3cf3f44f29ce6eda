"""Compliance state: max_age per policy, `rotator status --check`, the metrics the daemon exports."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.config.policy import PolicyFileError, parse_config
from rotator.core.journal import Revocation, RunRecord, RunState, open_journal
from rotator.observe.compliance import policy_compliance
from tests.harness import make_scenario

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)


def _policy(tmp_path: Path, **extra: str) -> Any:
    lines = "\n".join(f"{k} = {v!r}" for k, v in extra.items())
    data = f"""
[[policy]]
name = "p"
{lines}
[policy.issuer]
type = "influxctl-management"
[policy.issuer.profile]
product = "clustered"
host = "h.invalid"
[[policy.store]]
type = "vault-kv2"
url = "http://127.0.0.1:1"
path = "x"
[policy.store.auth]
method = "token"
token = {{ file = "t" }}
"""
    import tomllib

    return parse_config(tomllib.loads(data), tmp_path / "rotator.toml").policies[0]


def test_max_age_defaults_to_longest_gap_plus_grace_plus_margin(tmp_path):
    assert _policy(tmp_path, schedule="30d", grace="1d", margin="2d").max_age == timedelta(days=33)
    # cron: the longest gap between fires (first of the month: 31 days), not the shortest.
    assert _policy(tmp_path, schedule="0 3 1 * *", grace="1d", margin="1d").max_age == timedelta(days=33)
    assert _policy(tmp_path, schedule="30d", max_age="90d").max_age == timedelta(days=90)


def test_max_age_not_longer_than_the_schedule_is_a_validation_problem(tmp_path):
    with pytest.raises(PolicyFileError) as err:
        _policy(tmp_path, schedule="30d", max_age="20d")
    assert "policy[0] 'p'.max_age: is not longer than the schedule's longest gap (30d)" in str(err.value)


def _run(journal: Any, run_id: str, token: str, published: datetime, old: str | None = None) -> None:
    journal.begin_run(RunRecord(run_id=run_id, policy="p", state=RunState.DONE, kind="rotate", started_at=published,
                                updated_at=published, old_token_id=old, new_token_id=token, published_at=published,
                                finished_at=published))


def test_compliance_token_too_old_and_revocations_overdue(tmp_path):
    policy = _policy(tmp_path, schedule="1d", grace="1h", margin="1h")  # max_age 26h
    journal = open_journal(f"sqlite:///{tmp_path / 'j.db'}")
    assert not policy_compliance(policy, journal, NOW).compliant  # no token yet
    _run(journal, "r1", "tok-1", NOW - timedelta(hours=25))
    ok = policy_compliance(policy, journal, NOW)
    assert ok.compliant and ok.problems() == []
    old = policy_compliance(policy, journal, NOW + timedelta(hours=2))
    assert old.too_old and not old.compliant
    assert old.problems() == ["token tok-1 is 1d3h old, older than max_age 1d2h"]
    journal.schedule_revocation(Revocation("p", "tok-0", "r1", "superseded", due_at=NOW - timedelta(minutes=30),
                                           state="pending"))
    assert policy_compliance(policy, journal, NOW).compliant  # within the 1h slack
    late = policy_compliance(policy, journal, NOW, slack=timedelta(minutes=10))
    assert not late.compliant and late.problems() == ["revocation of token tok-0 is 30m overdue"]
    assert late.to_json()["overdue_revocations"] == 1


def test_status_check_exits_4_when_a_revocation_is_overdue(tmp_path, openbao, fake_influxctl):
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=1)
    assert sc.cli("rotate", "mgmt").returncode == 0
    ok = sc.cli("status", "--check")
    assert ok.returncode == 0, ok.stderr
    assert "ok (max" in ok.stdout
    time.sleep(2.5)  # the grace ends; nobody runs revoke-expired
    late = sc.cli("status", "--check", "--revocation-slack", "1s")
    assert late.returncode == 4
    assert f"out of compliance: mgmt: revocation of token {sc.bootstrap_id} is" in late.stderr
    assert "REVOCATION(S) OVERDUE" in late.stdout
    assert sc.cli("status", "--revocation-slack", "1s").returncode == 0  # without --check: informational
    assert sc.cli("revoke-expired").returncode == 0
    assert sc.cli("status", "--check", "--revocation-slack", "1s").returncode == 0
    bad = sc.cli("status", "--check", "--revocation-slack", "soon")
    assert bad.returncode == 2 and "--revocation-slack" in bad.stderr


def test_daemon_snapshot_exports_max_age_and_compliance(tmp_path):
    from rotator.observe.metrics import Metrics, PolicyState, StateSnapshot

    metrics = Metrics()
    state = PolicyState(policy="p", enabled=True, rotated_at=NOW - timedelta(days=40), expires_at=None,
                        next_rotation=NOW, pending_revocations=0, overdue_revocations=0, failed_revocations=0,
                        open_runs=0, needs_attention=False, lease_active=False, lease_held_here=False,
                        max_age_s=timedelta(days=33).total_seconds(), compliant=False)
    metrics.watch_state(lambda: StateSnapshot(NOW, True, [state]))
    assert metrics.registry.get_sample_value("rotator_token_max_age_seconds", {"policy": "p"}) == 33 * 86400
    assert metrics.registry.get_sample_value("rotator_policy_compliant", {"policy": "p"}) == 0


def test_metrics_export_the_inventory_counts():
    from rotator.observe.inventory import Entry, Inventory
    from rotator.observe.metrics import Metrics

    metrics = Metrics()
    inv = Inventory(targets=["influxdb3:p"], entries=[
        Entry("influxdb3:p", "influxdb3", "t1", "", "active", "unmanaged", ("no-expiry",), "no tag"),
        Entry("influxdb3:p", "influxdb3", "t2", "", "active", "orphan", (), "run r"),
        Entry("influxdb3:p", "influxdb3", "t3", "", "revoked", "retired", (), "old"),
    ])
    metrics.inventory(inv)
    value = metrics.registry.get_sample_value
    assert value("rotator_tokens", {"issuer": "influxdb3:p", "class": "orphan"}) == 1
    assert value("rotator_tokens", {"issuer": "influxdb3:p", "class": "managed"}) == 0
    assert value("rotator_tokens", {"issuer": "influxdb3:p", "class": "retired"}) == 0  # revoked: not counted
    assert value("rotator_tokens_flagged", {"issuer": "influxdb3:p", "class": "unmanaged", "flag": "no-expiry"}) == 1


# ---------------------------------------------------------------------------------- the Lambda function
from tests.runners.test_aws_lambda import GRACE, POLICY, scene  # noqa: E402,F401  (the moto + fake influxctl scene)


def _lines(out: str) -> list[dict[str, Any]]:
    import json

    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_lambda_revoke_expired_logs_one_compliance_line_per_secret(scene, capsys, monkeypatch):  # noqa: F811
    from rotator.core.errors import TransientError

    monkeypatch.delenv("ROTATOR_EMF", raising=False)
    scene.rotate()
    capsys.readouterr()
    scene.invoke({"action": "revoke-expired"})
    (line,) = [x["rotator_compliance"] for x in _lines(capsys.readouterr().out) if "rotator_compliance" in x]
    # schedule 30d + grace 1h + the default margin 1d
    assert line["max_age_s"] == (30 * 86400 + 3600 + 86400)
    assert line["policy"] == POLICY and line["secret"] == scene.arn and line["compliant"] is True
    assert line["overdue_revocations"] == 0 and 0 <= line["age_s"] < 60
    # Grace + 2h later the previous token's revocation fails: overdue, out of compliance, and EMF lines.
    monkeypatch.setenv("ROTATOR_EMF", "1")
    scene.clock.advance(GRACE + timedelta(hours=2))
    scene.fake.state.add_fault("management revoke", "exit", times=-1, message="Error: service unavailable")
    scene.fake.state.add_fault("management list", "exit", times=-1, message="Error: service unavailable")
    with pytest.raises(TransientError):
        scene.invoke({"action": "revoke-expired"})
    lines = _lines(capsys.readouterr().out)
    (late,) = [x["rotator_compliance"] for x in lines if "rotator_compliance" in x]
    assert late["overdue_revocations"] == 1 and late["overdue_token_ids"] == [scene.bootstrap_id]
    assert late["compliant"] is False
    (emf,) = [x for x in lines if "_aws" in x]
    spec = emf["_aws"]["CloudWatchMetrics"][0]
    assert spec["Namespace"] == "rotator" and spec["Dimensions"] == [["Policy"]]
    assert {m["Name"] for m in spec["Metrics"]} == {"TokenAgeSeconds", "TokenMaxAgeSeconds", "OverdueRevocations",
                                                    "UnrevokedOrphans", "Compliant"}
    assert emf["Policy"] == POLICY and emf["OverdueRevocations"] == 1 and emf["Compliant"] == 0
    assert emf["UnrevokedOrphans"] == late["unrevoked_orphans"] == 0  # (the listing failed: no orphan known)
    assert emf["TokenMaxAgeSeconds"] == line["max_age_s"]


def test_inventory_interval_is_off_by_default_and_at_least_a_minute(tmp_path):
    from rotator.config.daemon_config import DaemonSettings

    assert DaemonSettings.model_validate({}).inventory_interval is None
    assert DaemonSettings.model_validate({"inventory_interval": "1h"}).inventory_interval == timedelta(hours=1)
    with pytest.raises(ValueError, match="must be at least 1m"):
        DaemonSettings.model_validate({"inventory_interval": "10s"})
