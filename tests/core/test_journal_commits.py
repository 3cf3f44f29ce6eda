"""Exact journal commits per steady rotation (issue 12), on SQLite and PostgreSQL.

In process: the engine with the fake ``influxctl`` (a real subprocess) as issuer and an influxctl
profile (``config.toml``) as store, bootstrapped, then rotated with a clock that moves two hours
per rotation past a one-minute grace, so that each rotation also revokes the token the one
before replaced. ``Journal.stats.commits`` counts transactions that wrote (each one fdatasync on
SQLite); the figure below is the whole operation, lease included:

1. the lease taken;
2. the run planned (plus the revocation done just before, deferred into it);
3. MINTING (the mint's intent, before the mint);
4. MINTED (the token id, before verify);
5. VERIFIED (before the first store write);
6. the run published, the old token's revocation scheduled, and the lease released.

2 and 6 are not synced on their own (``Journal.transaction(durable=False)``): no side effect waits
on them, and the next synced commit makes them durable.
"""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.config import registry
from rotator.config.policy import load_config
from rotator.core import audit_chain
from rotator.core.clock import FakeClock
from rotator.core.engine import Engine
from rotator.core.errors import LeaseLost
from rotator.core.journal import Journal, RevocationState, RunRecord, RunState, open_journal
from rotator.core.retry import RetryPolicy
from rotator.core.secret import Secret
from rotator.sandbox.influxctl_state import write_profile
from tests.harness import INFLUXCTL

#: commits of one steady rotation (see the module docstring)
STEADY_ROTATION_COMMITS = 6
#: of which synced (fdatasync on SQLite): 2 and 6 are not, nothing waits on them (Journal.transaction)
STEADY_ROTATION_SYNCED = 4
#: and all its transactions, reads included
STEADY_ROTATION_TRANSACTIONS = 12


def _policy_file(tmp_path: Path, journal_url: str) -> Path:
    (tmp_path / "influxctl").mkdir()
    write_profile(tmp_path / "influxctl" / "config.toml")
    path = tmp_path / "rotator.toml"
    path.write_text(f"""
[rotator]
journal = {json.dumps(journal_url)}
[[policy]]
name = "mgmt"
schedule = "1h"
grace = "1m"
[policy.issuer]
type = "influxctl-management"
influxctl = {json.dumps(str(INFLUXCTL))}
[policy.issuer.profile]
product = "clustered"
host = "cluster.test.invalid"
port = 443
[[policy.store]]
type = "influxctl-profile"
name = "profile"
config = "influxctl/config.toml"
profile = "default"
""")
    return path


class _CountingStore:
    def __init__(self, store: Any) -> None:
        self.store, self.reads = store, 0
        self.location = store.location

    def read_current(self) -> Any:
        self.reads += 1
        return self.store.read_current()

    def publish(self, record: Any, expected_version: str | None) -> str:
        return str(self.store.publish(record, expected_version))


@pytest.fixture(params=["sqlite", "postgresql"])
def journal_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'journal.db'}"
    return str(request.getfixturevalue("pg_url"))


def _engine(tmp_path: Path, journal_url: str, fake: Any) -> tuple[Engine, Journal, FakeClock, _CountingStore]:
    config = load_config(_policy_file(tmp_path, journal_url))
    policy = config.policies[0]
    journal = open_journal(config.journal_url())
    clock = FakeClock(datetime.now(UTC))
    store = _CountingStore(registry.build_stores(policy)[0][1])
    ids = (f"run{n:04d}" for n in itertools.count(1))
    engine = Engine(policy, journal, stores=[("profile", store)], clock=clock, retry=RetryPolicy(1, 0.01, 0.02),
                    run_id_factory=lambda: next(ids))
    value, token_id = fake.state.add_token("created by a human for bootstrap")
    engine.bootstrap(Secret(value), token_id, None)
    return engine, journal, clock, store


def _rotate(engine: Engine, clock: FakeClock) -> Any:
    clock.advance(timedelta(hours=2))
    result = engine.rotate()
    assert result.ok, result
    return result


def test_a_steady_rotation_commits_six_times_and_syncs_four(
        tmp_path: Path, journal_url: str, fake_influxctl: Any) -> None:
    engine, journal, clock, store = _engine(tmp_path, journal_url, fake_influxctl)
    first = _rotate(engine, clock)  # replaces the bootstrap token; its revocation is due at the next one
    before, reads = journal.stats.snapshot(), store.reads
    second = _rotate(engine, clock)
    commits = journal.stats.commits - before.commits
    synced = journal.stats.synced - before.synced
    transactions = journal.stats.transactions - before.transactions
    assert (commits, synced, transactions) == (
        STEADY_ROTATION_COMMITS, STEADY_ROTATION_SYNCED, STEADY_ROTATION_TRANSACTIONS)
    assert journal.stats.rollbacks == before.rollbacks
    assert store.reads - reads == 1, "PLAN's read serves the revocation too"
    assert f"token {first.old_token_id}: revoked" in second.actions
    assert (first.run_id, second.run_id) == ("run0002", "run0003"), "the injected run-id factory (run0001: bootstrap)"
    # Everything the steps wrote is there: runs, revocations, and a valid audit chain.
    runs = {r.run_id: r for r in journal.runs("mgmt", limit=0)}
    assert runs[first.run_id].state == RunState.DONE and runs[second.run_id].state == RunState.PUBLISHED
    assert runs[second.run_id].published_versions.keys() == {"profile"}
    revs = {r.token_id: r.state for r in journal.revocations("mgmt")}
    assert revs == {first.old_token_id: RevocationState.DONE, second.old_token_id: RevocationState.PENDING}
    with journal._tx() as cur:  # the chain's order (the fake clock gives every event one time)
        steps = cur.execute("SELECT step, result FROM events ORDER BY seq DESC LIMIT 6").fetchall()
    assert [tuple(row) for row in reversed(steps)] == [
        ("revoke_old", "ok"), ("plan", "ok"), ("mint", "ok"), ("verify", "ok"), ("publish", "ok"), ("published", "ok")]
    assert audit_chain.verify(journal).ok
    assert fake_influxctl.state.token_by_id(first.old_token_id)["revoked_at"] is not None
    journal.close()


def test_a_rolled_back_step_leaves_the_record_as_the_journal_has_it(tmp_path: Path, journal_url: str) -> None:
    journal = open_journal(journal_url)
    now = datetime(2026, 3, 1, tzinfo=UTC)
    fence = journal.acquire_lease("p", "A", timedelta(minutes=1), now)
    run = RunRecord("r1", "p", RunState.PLANNED, "rotate", now, now)
    journal.begin_run(run, fence=fence)
    before = journal.stats.snapshot()
    with pytest.raises(LeaseLost), journal.transaction():
        journal.update_run(run, fence=fence, state=RunState.MINTING)
        journal.record_event(now, "p", "r1", "mint", "start", {})
        journal.update_run(run, fence=fence + 1, state=RunState.MINTED)  # a stale fence: the step rolls back
    assert run.state == RunState.PLANNED, "the in-memory record follows the rollback"
    stored = journal.get_run("r1")
    assert stored is not None and stored.state == RunState.PLANNED
    assert journal.events("p") == []
    assert (journal.stats.commits, journal.stats.rollbacks) == (before.commits, before.rollbacks + 1)
    # Deferred writes ride on the next transaction, even a read, and a read sees them.
    journal.defer(lambda: journal.update_run(run, fence=fence, state=RunState.MINTING))
    assert journal.get_run("r1").state == RunState.MINTING  # type: ignore[union-attr]
    assert journal.stats.commits == before.commits + 1
    journal.close()
