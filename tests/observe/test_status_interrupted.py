"""`rotator status` and an unfinished run whose lease expired: its process is gone (killed after MINT,
say), its candidate may be live and published nowhere, and nothing finishes it until `rotator recover`.

`status`, `status --check` and the status page said ok: only runs whose recovery had failed counted.
Such a run is *interrupted* and needs attention; a run in progress under a live lease (a daemon
rotating right now) is not.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rotator.core.journal import Journal, RunRecord, RunState, open_journal
from rotator.observe.status import policy_status, render_table
from tests.harness import offline_policy

_POLICY_TOML = (
    '[[policy]]\nname = "p"\nschedule = "30d"\n[policy.issuer]\ntype = "influxctl-management"\n'
    '[policy.issuer.profile]\nproduct = "clustered"\nhost = "h.invalid"\n[[policy.store]]\ntype = "vault-kv2"\n'
    'url = "http://127.0.0.1:1"\npath = "x"\n[policy.store.auth]\nmethod = "token"\ntoken = { file = "t" }\n'
)


def _journal(tmp_path: Path, now: datetime, *, error: str | None = None) -> Journal:
    """Policy p: a published token, then a run that minted a candidate and stopped there."""
    journal = open_journal(f"sqlite:///{tmp_path / 'journal.db'}")
    at = now - timedelta(minutes=10)
    journal.begin_run(RunRecord(run_id="r0", policy="p", state=RunState.DONE, kind="rotate", started_at=at,
                                updated_at=at, new_token_id="tok-current", published_at=at, finished_at=at))
    journal.begin_run(RunRecord(run_id="r1", policy="p", state=RunState.MINTED, kind="rotate", started_at=now,
                                updated_at=now, new_token_id="tok-candidate", error=error))
    return journal


def test_an_open_run_whose_lease_expired_is_interrupted_and_needs_attention(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    status = policy_status(offline_policy(tmp_path, "p"), _journal(tmp_path, now), now)

    assert (status.open_runs, status.stuck_runs, status.interrupted_runs) == (1, 0, 1)
    assert status.needs_attention
    assert status.interrupted == "interrupted: run `rotator recover p`"
    assert status.to_json()["interrupted"] == "interrupted: run `rotator recover p`"
    assert status.to_json()["interrupted_runs"] == 1 and status.to_json()["needs_attention"] is True
    assert "minted (interrupted) !" in render_table([status])


def test_a_run_in_progress_under_a_live_lease_is_not_flagged(tmp_path: Path) -> None:
    """A daemon (or `rotator rotate`) rotating right now holds the lease and renews it."""
    now = datetime.now(UTC)
    journal = _journal(tmp_path, now)
    journal.acquire_lease("p", "daemon-a", timedelta(minutes=5), now)

    status = policy_status(offline_policy(tmp_path, "p"), journal, now)

    assert (status.open_runs, status.interrupted_runs) == (1, 0)
    assert not status.needs_attention and status.interrupted is None
    # ... until that lease lapses without the run finishing.
    later = now + timedelta(minutes=6)
    assert policy_status(offline_policy(tmp_path, "p"), journal, later).interrupted_runs == 1


def test_a_run_whose_recovery_failed_is_stuck_and_not_counted_twice(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    journal = _journal(tmp_path, now, error="recovery failed: the issuer is unreachable")

    status = policy_status(offline_policy(tmp_path, "p"), journal, now)

    assert (status.stuck_runs, status.interrupted_runs) == (1, 0) and status.needs_attention


def test_status_check_exits_4_and_says_to_recover(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rotator.runners import cli

    now = datetime.now(UTC)
    _journal(tmp_path, now).close()
    config = tmp_path / "rotator.toml"
    config.write_text(f'[rotator]\njournal = "{tmp_path / "journal.db"}"\n' + _POLICY_TOML)

    for args in (["status"], ["status", "--check"]):
        code = cli.main(["-c", str(config), *args])
        err = capsys.readouterr().err
        assert code == 4, err
        assert "rotator: attention: p: interrupted: 1 unfinished run(s) whose lease expired" in err
        assert f"fix: run `rotator -c {config} recover p`" in err
