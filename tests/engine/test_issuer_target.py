"""A policy whose issuer is pointed at another cluster: tokens minted on the old one are never judged
on the new one (RunRecord.issuer_target, schema 10; revocation_rule.check_same_target).

Before, the journal did not say where a token was minted, so a revocation asked the cluster the policy
names now, found the token not listed there, and recorded it as revoked ("already gone at the issuer")
while it stayed valid on the old cluster; recovery of a run killed inside its mint searched its tag on
the new cluster, found nothing and closed the run. Both an orphan (invariant 2) and false audit evidence.

Two in-memory issuers with targets of their own act as the two clusters (on SQLite and PostgreSQL), and
the fake influxctl with two state files, chosen by the profile's host, as the reviewer's reproduction did.
"""

from __future__ import annotations

import itertools
import stat
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rotator.adapters.http.influxdb2 import InfluxDB2Issuer, InfluxDB2Settings
from rotator.adapters.http.influxdb3 import InfluxDB3Issuer, InfluxDB3Settings
from rotator.adapters.http.management_api import ManagementApiIssuer, ManagementApiSettings
from rotator.adapters.influxctl.management import InfluxctlManagementIssuer, InfluxctlManagementSettings
from rotator.config.adapter_settings import validate_settings
from rotator.core import audit_chain
from rotator.core.contracts import AdapterContext, target_of
from rotator.core.engine import Engine
from rotator.core.errors import ConfigError, JournalError, NeedsAttention, TransientError
from rotator.core.journal import RevocationState, RunRecord, RunState, open_journal
from rotator.core.retry import RetryPolicy
from rotator.core.secret import Secret
from rotator.observe.status import policy_status
from rotator.sandbox.influxctl_state import STATE_ENV, FakeInfluxctl
from rotator.testing import FakeClock, MemoryIssuer, MemoryStore
from tests.engine.test_state_machine import GRACE, POLICY, Crash, World
from tests.fakes.fixtures import BINARY

A = "clustered cluster-a.example.com:443"
B = "clustered cluster-b.example.com:443"


@pytest.fixture(params=["sqlite", "postgresql"])
def journal_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'journal.db'}"
    return str(request.getfixturevalue("pg_url"))


class Clusters:
    """One policy whose issuer is cluster ``a`` or ``b`` (``use``), each an in-memory issuer with a
    credential of its own (an admin token file), on the journal at ``journal_url``."""

    def __init__(self, tmp_path: Path, journal_url: str) -> None:
        self.world = World(tmp_path)
        self.world.journal.close()
        self.world.journal = open_journal(journal_url)
        self.a = MemoryIssuer(clock=self.world.clock, target=A)
        self.b = MemoryIssuer(clock=self.world.clock, target=B)
        self.b.tokens._ids = itertools.count(1001)  # token ids are unique across clusters (UUIDs), as here
        self.world.issuer = self.a

    def use(self, issuer: MemoryIssuer) -> None:
        """The operator points the policy's issuer at ``issuer``'s cluster."""
        self.world.issuer = issuer

    def engine(self) -> Engine:
        return self.world.engine()

    def revocation(self, token_id: str) -> tuple[str, str]:
        (rev,) = [r for r in self.world.journal.revocations(POLICY) if r.token_id == token_id]
        return rev.state, rev.last_error or ""

    def done(self) -> list[str]:
        return [r.token_id for r in self.world.journal.revocations(POLICY, RevocationState.DONE)]


@pytest.fixture
def clusters(tmp_path: Path, journal_url: str) -> Iterator[Clusters]:
    made = Clusters(tmp_path, journal_url)
    yield made
    made.world.journal.close()  # (a PostgreSQL journal left open holds its connections: the server has ~100)


def _active(issuer: MemoryIssuer, token_id: str) -> bool:
    info = issuer.tokens.info(token_id)
    return info is not None and info.revoked_at is None


def _asked(issuer: MemoryIssuer) -> list[str]:
    """What was asked of ``issuer`` about tokens (its listing and revocations)."""
    return [call for call in issuer.calls if call in ("list_tokens", "revoke")]


def test_a_revocation_due_after_the_issuer_moved_needs_attention_and_marks_nothing_done(clusters: Clusters) -> None:
    """Bootstrap and rotate on A, point the policy at B, revoke-expired: the bootstrap token's
    revocation fails (needs attention) without asking B anything, nothing is recorded as revoked, and
    the token stays valid on A. A rotation on B works; its predecessor (minted on A) meets the same check.
    Pointed at A again, the same command with --retry-failed revokes both on A."""
    world = clusters.world
    t0 = world.bootstrap()
    t1 = world.engine().rotate().new_token_id
    assert t1 is not None
    world.clock.advance(GRACE + timedelta(seconds=1))

    clusters.use(clusters.b)
    (action,) = clusters.engine().revoke_due()
    assert f"token {t0}: revocation failed" in action and A in action and B in action, action
    state, error = clusters.revocation(t0)
    assert state == RevocationState.FAILED
    assert f"token {t0}" in error and f"bootstrapped on {A}" in error and f"now names {B}" in error, error
    assert f"rotator revoke-expired --dismiss {t0} --reason TEXT {POLICY}" in error, error
    assert clusters.done() == [], "nothing is recorded as revoked"
    assert _active(clusters.a, t0), "the token on A is untouched"
    assert _asked(clusters.b) == [], "cluster B is not asked about a token of cluster A"
    events = [(e["step"], e["result"], e.get("needs_attention")) for e in world.journal.events(POLICY)
              if e.get("token_id") == t0 and e["step"] == "revoke_old"]
    assert events == [("revoke_old", "failed", True)], events
    assert clusters.engine().failed_revocations() == [t0]

    # The operator is migrating: a rotation on B works, and replaces the token minted on A.
    rotated = clusters.engine().rotate()
    assert rotated.ok and rotated.old_token_id == t1, rotated
    t2 = rotated.new_token_id
    assert t2 is not None and _active(clusters.b, t2) and world.held() == {"a": t2, "b": t2}
    on_b = world.journal.get_run(rotated.run_id or "")
    assert on_b is not None and on_b.issuer_target == B
    world.clock.advance(GRACE + timedelta(seconds=1))
    (action,) = clusters.engine().revoke_due()
    assert f"token {t1}: revocation failed" in action and f"minted on {A}" in action, action
    assert clusters.revocation(t1)[0] == RevocationState.FAILED and clusters.done() == []
    assert _active(clusters.a, t0) and _active(clusters.a, t1)

    # Pointed back at A: the same command (the failed ones retried) revokes them there.
    clusters.use(clusters.a)
    actions = clusters.engine().revoke_due(retry_failed=True)
    assert sorted(actions) == sorted([f"token {t0}: revoked", f"token {t1}: revoked"]), actions
    assert not _active(clusters.a, t0) and not _active(clusters.a, t1)
    assert sorted(clusters.done()) == sorted([t0, t1])
    assert _active(clusters.b, t2) and world.held() == {"a": t2, "b": t2}


def test_a_revocation_that_needs_attention_for_another_cluster_is_dismissed_after_a_manual_revoke(
        clusters: Clusters) -> None:
    """The other fix: revoke the token on the old cluster by hand, then dismiss the failed revocation.
    Nothing is asked of the new cluster, and later passes leave the row alone."""
    world = clusters.world
    t0 = world.bootstrap()
    world.engine().rotate()
    world.clock.advance(GRACE + timedelta(seconds=1))
    clusters.use(clusters.b)
    clusters.engine().revoke_due()
    assert clusters.revocation(t0)[0] == RevocationState.FAILED

    assert clusters.a.tokens.revoke(t0), "revoked by hand on cluster A"
    message = clusters.engine().dismiss_revocation(t0, "revoked by hand on cluster A")
    assert "revocation dismissed" in message
    state, error = clusters.revocation(t0)
    assert state == RevocationState.DISMISSED and "revoked by hand on cluster A" in error
    assert clusters.engine().revoke_due(retry_failed=True) == []
    assert clusters.engine().dismiss_revocation(t0, "again").endswith("already dismissed (it stays valid)")
    assert _asked(clusters.b) == []
    (published,) = [r for r in world.journal.runs(POLICY, limit=0) if r.kind == "rotate"]
    assert published.state == RunState.DONE, "the run that scheduled it is finished, as with a done revocation"


def test_an_emergency_rotation_after_the_issuer_moved_says_the_previous_token_is_not_revoked(
        clusters: Clusters) -> None:
    world = clusters.world
    world.bootstrap()
    t1 = world.engine().rotate().new_token_id
    assert t1 is not None
    clusters.use(clusters.b)
    # (and the bootstrap token, in its grace period: an emergency rushes every token it replaced)
    with pytest.raises(NeedsAttention, match=f"previous token.* {t1}, [^ ]+ are NOT revoked.*minted on {A}"):
        clusters.engine().rotate(revoke_previous_now=True, reason="leaked")
    assert _active(clusters.a, t1) and t1 not in clusters.done()
    assert clusters.revocation(t1)[0] == RevocationState.FAILED
    assert "revoke" not in clusters.b.calls


@pytest.mark.parametrize("killed", ["inside the mint", "after minted"])
def test_recovery_of_a_run_minted_on_another_cluster_needs_attention_and_closes_once_pointed_back(
        clusters: Clusters, killed: str) -> None:
    """A run killed inside its mint (its token exists on A, the journal has no id) or after it (the id is
    journaled), then the policy pointed at B: recovery stops with NeedsAttention, the run stays open
    (stuck, `recovery failed: ...`), nothing is asked of B and the token on A stays. Pointed at A again,
    the same `recover` revokes it there and closes the run; a rotation on B then works."""
    world = clusters.world
    world.bootstrap()
    if killed == "inside the mint":
        clusters.a.fail_next("mint", Crash("killed inside the mint"), after=True)
    else:
        world.crash_at = "minted"
    with pytest.raises(Crash):
        world.engine().rotate()
    (run,) = world.journal.open_runs(POLICY)
    (token,) = [t for t in clusters.a.tokens.active() if t.description == f"rotator:{POLICY}:{run.run_id}"]
    assert run.new_token_id == (token.token_id if killed == "after minted" else None)
    world.clock.advance(timedelta(minutes=5))  # past the mint window: the old code closed the run here

    clusters.use(clusters.b)
    for attempt in (lambda: clusters.engine().recover(), lambda: clusters.engine().revoke_due(),
                    lambda: clusters.engine().rotate()):
        with pytest.raises(NeedsAttention, match=f"run {run.run_id} .*minted on {A}.*now names {B}") as err:
            attempt()
        assert f"`rotator recover {POLICY}`" in err.value.hint
    (stuck,) = world.journal.open_runs(POLICY)
    assert stuck.run_id == run.run_id and stuck.state == run.state and stuck.issuer_target == A
    assert (stuck.error or "").startswith("recovery failed: ") and A in (stuck.error or "")
    assert _active(clusters.a, token.token_id), "the run's token on A is untouched"
    assert _asked(clusters.b) == [] and clusters.b.calls.count("mint") == 0

    clusters.use(clusters.a)
    (action,) = clusters.engine().recover()
    assert f"run {run.run_id}: rolled back" in action, action
    assert not _active(clusters.a, token.token_id)
    closed = world.journal.get_run(run.run_id)
    assert closed is not None and closed.state == RunState.FAILED
    assert not world.journal.open_runs(POLICY)
    clusters.use(clusters.b)
    assert clusters.engine().rotate().ok


def _gone(issuer: MemoryIssuer) -> None:
    """``issuer``'s cluster is decommissioned: every call to it fails (its name no longer resolves)."""
    for call in ("list_tokens", "revoke", "mint", "verify"):
        issuer.fail_next(call, TransientError("cluster-a.example.com: name or service not known"), times=10**6)


def test_a_run_of_a_decommissioned_cluster_is_abandoned_and_the_policy_rotates_on_the_new_one(
        clusters: Clusters) -> None:
    """The reviewer's scenario: a rotation killed after minting on A, A decommissioned, the policy pointed
    at B. recover, rotate and revoke-expired need attention for good (the hint names the way out), and
    pointed back at A recovery fails (A answers nothing): no command closed the run, the policy never
    rotated again. `recover --abandon RUN --reason TEXT` closes it as failed under the lease, audited with
    the reason and the candidate's id; the candidate on A is left as it is; rotate on B then works, and
    the same abandon again says it was done."""
    world = clusters.world
    t0 = world.bootstrap()
    world.crash_at = "minted"
    with pytest.raises(Crash):
        world.engine().rotate()
    (run,) = world.journal.open_runs(POLICY)
    candidate = run.new_token_id
    assert candidate is not None and run.issuer_target == A
    world.clock.advance(timedelta(minutes=5))
    _gone(clusters.a)

    clusters.use(clusters.b)
    for attempt in (lambda: clusters.engine().recover(), lambda: clusters.engine().rotate(),
                    lambda: clusters.engine().revoke_due()):
        with pytest.raises(NeedsAttention, match=f"run {run.run_id} .*minted on {A}") as err:
            attempt()
        hint = err.value.hint
        assert f"point the policy's issuer at {A} again and run `rotator recover {POLICY}`" in hint, hint
        assert f"if {A} is gone for good" in hint and \
            f"`rotator recover --abandon {run.run_id} --reason TEXT {POLICY}`" in hint, hint
        assert f"revoke token {candidate} there" in hint, hint
    clusters.use(clusters.a)
    with pytest.raises(TransientError):
        clusters.engine().recover()  # the fix the message offered first: A is gone
    (still,) = world.journal.open_runs(POLICY)
    with pytest.raises(ConfigError, match=f"minted on {A}, where the policy's issuer points now") as refused:
        clusters.engine().abandon_run(run.run_id, "cluster A decommissioned")
    assert f"`rotator recover {POLICY}`" in (refused.value.hint or "")
    assert [r.state for r in world.journal.open_runs(POLICY)] == [still.state], "left open"

    clusters.use(clusters.b)
    with pytest.raises(ConfigError, match="needs a --reason"):
        clusters.engine().abandon_run(run.run_id, "  ")
    b_calls = len(clusters.b.calls)
    message = clusters.engine().abandon_run(run.run_id, "cluster A decommissioned, INC-42")
    assert message.startswith(f"run {run.run_id}: abandoned, closed as failed; reason: cluster A decommissioned, "
                              "INC-42"), message
    assert f"its token {candidate} may still be valid on {A}" in message, message
    assert clusters.b.calls[b_calls:] == [], "nothing is asked of B"
    closed = world.journal.get_run(run.run_id)
    assert closed is not None and closed.state == RunState.FAILED and closed.finished_at is not None
    assert (closed.error or "").startswith("abandoned by hand: cluster A decommissioned, INC-42; "), closed.error
    assert world.journal.open_runs(POLICY) == []
    assert _active(clusters.a, candidate), "the candidate on A is not touched (a person revokes it there)"
    (event,) = [e for e in world.journal.events(POLICY) if (e["step"], e["result"]) == ("recover", "abandoned")]
    assert event["run_id"] == run.run_id and event["token_id"] == candidate, event
    assert event["reason"] == "cluster A decommissioned, INC-42" and event["minted_on"] == A \
        and event["issuer_target"] == B, event

    again = clusters.engine().abandon_run(run.run_id, "cluster A decommissioned, INC-42")
    assert again.startswith(f"run {run.run_id}: already abandoned (abandoned by hand: "), again
    assert [e["result"] for e in world.journal.events(POLICY) if e["step"] == "recover"].count("abandoned") == 1

    rotated = clusters.engine().rotate()
    assert rotated.ok and rotated.old_token_id == t0, rotated
    assert rotated.new_token_id is not None and _active(clusters.b, rotated.new_token_id)
    assert world.held() == {"a": rotated.new_token_id, "b": rotated.new_token_id}
    status = policy_status(clusters.engine().policy, world.journal, world.clock.now())
    assert status.open_runs == 0 and status.stuck_runs == 0 and status.interrupted_runs == 0, status
    assert audit_chain.verify(world.journal).ok


def test_abandoning_a_verified_run_moves_the_stores_past_the_version_it_would_write_over(clusters: Clusters) -> None:
    """A run killed after VERIFIED may have a store write still under way: abandon moves every store past
    the version the run planned to write over (as recovery's discard does), so that write cannot land."""
    from tests.engine.test_dead_holder_fencing import VersionedStore

    world = clusters.world
    world.stores = {name: VersionedStore(name) for name in world.stores}  # a new version per write, as Vault's
    world.bootstrap()
    world.crash_at = "verified"
    with pytest.raises(Crash):
        world.engine().rotate()
    (run,) = world.journal.open_runs(POLICY)
    assert run.state == RunState.VERIFIED
    _gone(clusters.a)
    clusters.use(clusters.b)
    assert "abandoned" in clusters.engine().abandon_run(run.run_id, "cluster A decommissioned")
    moved = {name: store.read_current().version for name, store in world.stores.items()}
    assert all(moved[name] != run.planned_versions[name] for name in moved), (moved, run.planned_versions)
    assert world.held() == {"a": world.bootstrap_id, "b": world.bootstrap_id} and _asked(clusters.b) == []
    assert clusters.engine().rotate().ok


def _other_policy_run(clusters: Clusters) -> str:
    now = clusters.world.clock.now()
    clusters.world.journal.begin_run(RunRecord(run_id="0ther0policy0run", policy="other", state=RunState.MINTED,
                                               kind="rotate", started_at=now, updated_at=now, new_token_id="x",
                                               issuer_target=A))
    return "0ther0policy0run"


@pytest.mark.parametrize("case", ["unknown run", "another policy's run", "closed by recovery",
                                  "no target recorded", "planned", "a store holds its token"])
def test_abandon_is_refused_where_the_run_is_not_open_not_the_policy_s_or_recovery_settles_it(
        clusters: Clusters, case: str) -> None:
    """Every refusal is a ConfigError (exit 2) that changes nothing and asks no issuer: abandon is only for
    an open run of this policy that minted at another target, where recovery cannot search. A run that
    records no target (before schema 10) is judged wherever the issuer points, so recovery settles it."""
    world = clusters.world
    world.bootstrap()
    run_id = "no-such-run"
    if case == "another policy's run":
        run_id = _other_policy_run(clusters)
    elif case == "closed by recovery":
        world.crash_at = "minted"
        with pytest.raises(Crash):
            world.engine().rotate()
        world.clock.advance(timedelta(minutes=5))
        world.engine().recover()
        (run,) = [r for r in world.journal.runs(POLICY, limit=0) if r.kind == "rotate"]
        run_id = run.run_id
    elif case != "unknown run":
        world.crash_at = {"planned": "planned", "a store holds its token": "published:a"}.get(case, "minted")
        with pytest.raises(Crash):
            world.engine().rotate()
        (run,) = world.journal.open_runs(POLICY)
        run_id = run.run_id
        if case == "no target recorded":
            with world.journal._tx(immediate=True) as cur:  # a row as schema 9 left it
                cur.execute("UPDATE runs SET issuer_target = NULL WHERE run_id = ?", (run_id,))
    before = [(r.run_id, r.state, r.error) for r in world.journal.runs(POLICY, limit=0)]
    events, asked_a = len(world.journal.events(POLICY)), _asked(clusters.a)
    clusters.use(clusters.b)
    says = {
        "unknown run": f"policy {POLICY} has no run no-such-run",
        "another policy's run": f"policy {POLICY} has no run 0ther0policy0run .it is a run of policy 'other'",
        "closed by recovery": "is failed, not open: nothing to abandon",
        "no target recorded": "the run records no target .*--abandon is only for a run minted at another target",
        "planned": "is planned: it minted nothing: recovery closes it",
        "a store holds its token": "store.s. a hold its token .*recovery publishes it to every store",
    }[case]
    with pytest.raises(ConfigError, match=says):
        clusters.engine().abandon_run(run_id, "cluster A decommissioned")
    assert [(r.run_id, r.state, r.error) for r in world.journal.runs(POLICY, limit=0)] == before
    assert len(world.journal.events(POLICY)) == events, "nothing audited"
    assert _asked(clusters.a) == asked_a and _asked(clusters.b) == []
    if case in ("no target recorded", "planned", "a store holds its token"):
        clusters.engine().recover()  # the way the refusal names: it settles the run, at B
        assert world.journal.open_runs(POLICY) == []


def test_a_published_run_s_tag_search_does_not_end_at_another_cluster(clusters: Clusters) -> None:
    """A run whose mint had a try without an answer keeps searching its tag until its window ends. At
    another cluster the search is refused (it would find nothing and end): the run keeps its search, a
    token its late request created on A stays found, and pointed at A again the search revokes it."""
    world = clusters.world
    world.bootstrap()
    clusters.a.fail_next("mint", TransientError("issuer: no answer (simulated)"))
    result = world.engine().rotate()
    run = world.journal.get_run(result.run_id or "")
    assert run is not None and run.tag_search_until is not None, "a try without an answer: searched until then"
    _, late = clusters.a.tokens.create(f"rotator:{POLICY}:{run.run_id}")  # the lost request lands on A
    world.clock.advance(timedelta(minutes=10))  # past the window: the next search is the last

    clusters.use(clusters.b)
    actions = clusters.engine().revoke_due()
    assert any(f"run {run.run_id}: the search of its tag failed" in a and A in a for a in actions), actions
    still = world.journal.get_run(run.run_id)
    assert still is not None and still.tag_search_until is not None, "the search goes on"
    assert _active(clusters.a, late) and _asked(clusters.b) == []

    clusters.use(clusters.a)
    actions = clusters.engine().revoke_due()
    assert f"token {late}: revoked, created late by run {run.run_id}'s mint try without an answer" in actions
    assert not _active(clusters.a, late)
    ended = world.journal.get_run(run.run_id)
    assert ended is not None and ended.tag_search_until is None


def test_a_published_run_s_tag_search_at_a_decommissioned_cluster_is_abandoned_and_the_run_stays_published(
        clusters: Clusters) -> None:
    """The reviewer's scenario: a published run whose mint had a try without an answer keeps searching its
    tag; with A gone for good nothing ended that search, every pass warned again, and the warning's hint
    named `recover --abandon`, which refused any run that is not open. Now the hint says what abandon
    does to a published run, and abandon ends the search (fenced, audited with the reason), leaving the
    run as it is; the same command again says there is no search left. Where rotator can search (the
    run's own target) it still refuses."""
    world = clusters.world
    t0 = world.bootstrap()
    clusters.a.fail_next("mint", TransientError("issuer: no answer (simulated)"))
    result = world.engine().rotate()
    run = world.journal.get_run(result.run_id or "")
    assert run is not None and run.state == RunState.PUBLISHED and run.tag_search_until is not None
    with pytest.raises(ConfigError, match=f"minted on {A}, where the policy's issuer points now") as refused:
        clusters.engine().abandon_run(run.run_id, "cluster A decommissioned")  # A is still there: search it
    assert f"`rotator recover {POLICY}`: it searches the run's tag on {A}" in (refused.value.hint or "")
    world.clock.advance(timedelta(minutes=10))
    _gone(clusters.a)

    clusters.use(clusters.b)
    actions = clusters.engine().revoke_due()
    (hint,) = [a for a in actions if f"run {run.run_id}: the search of its tag failed" in a]
    assert f"if {A} is gone for good, end the search of its tag without it: " \
        f"`rotator recover --abandon {run.run_id} --reason TEXT {POLICY}` (the run stays published" in hint, hint
    assert "close the run" not in hint, hint
    events = len(world.journal.events(POLICY, limit=1000))
    b_calls = len(clusters.b.calls)
    message = clusters.engine().abandon_run(run.run_id, "cluster A decommissioned, INC-43")
    assert message.startswith(f"run {run.run_id}: the search of its tag abandoned, the run stays published (it "
                              f"published token {result.new_token_id}); reason: cluster A decommissioned, "
                              "INC-43"), message
    assert f"may still be valid on {A}" in message, message
    assert clusters.b.calls[b_calls:] == [], "nothing is asked of B"
    after = world.journal.get_run(run.run_id)
    assert after is not None and after.tag_search_until is None
    assert (after.state, after.published_at, after.finished_at, after.error) == \
        (run.state, run.published_at, run.finished_at, run.error), "the run is left as it is"
    (event,) = [e for e in world.journal.events(POLICY, limit=1000)
                if (e["step"], e["result"]) == ("recover", "abandoned")]
    assert event["run_id"] == run.run_id and event["tag_search"] is True and "token_id" not in event, event
    assert (event["reason"], event["minted_on"], event["issuer_target"]) == ("cluster A decommissioned, INC-43", A, B)
    assert len(world.journal.events(POLICY, limit=1000)) == events + 1
    assert world.journal.tag_searches(POLICY) == []
    assert not any("the search of its tag failed" in a for a in clusters.engine().revoke_due()), "it ended"

    again = clusters.engine().abandon_run(run.run_id, "cluster A decommissioned, INC-43")
    assert again == (f"run {run.run_id}: published, and no search of its tag is left (ended, or abandoned already): "
                     "nothing to abandon"), again
    assert len(world.journal.events(POLICY, limit=1000)) == events + 1, "nothing audited again"
    rotated = clusters.engine().rotate()
    assert rotated.ok and rotated.old_token_id == result.new_token_id, rotated
    assert not any("the search of its tag failed" in a for a in rotated.actions), rotated.actions
    assert t0 != rotated.new_token_id and audit_chain.verify(world.journal).ok


def test_abandon_of_a_published_run_without_a_search_changes_nothing(clusters: Clusters) -> None:
    """A published run whose tag is not searched (its mint answered) has nothing to abandon: said so,
    nothing changes, nothing is audited or asked (the same answer as abandon run again)."""
    world = clusters.world
    world.bootstrap()
    run_id = world.engine().rotate().run_id or ""
    before = [(r.run_id, r.state, r.error, r.tag_search_until) for r in world.journal.runs(POLICY, limit=0)]
    events, asked_a = len(world.journal.events(POLICY, limit=1000)), _asked(clusters.a)
    clusters.use(clusters.b)
    message = clusters.engine().abandon_run(run_id, "cluster A decommissioned")
    assert message == (f"run {run_id}: published, and no search of its tag is left (ended, or abandoned already): "
                       "nothing to abandon"), message
    assert [(r.run_id, r.state, r.error, r.tag_search_until) for r in world.journal.runs(POLICY, limit=0)] == before
    assert len(world.journal.events(POLICY, limit=1000)) == events
    assert _asked(clusters.a) == asked_a and _asked(clusters.b) == []


C = "clustered cluster-c.example.com:443"


class _Profile(MemoryStore):
    """A store that says where its consumers send the token (contracts.Store ``target()``), as an
    influxctl profile does; ``pointed_at`` is what the operator wrote in it."""

    def __init__(self, path: str, pointed_at: str) -> None:
        super().__init__(path)
        self.pointed_at = pointed_at

    def target(self) -> str | None:
        return self.pointed_at


@pytest.mark.parametrize("moved", ["the profile", "the profile and the issuer"])
def test_recovery_rolls_a_run_forward_only_into_stores_that_send_its_token_where_it_was_minted(
        clusters: Clusters, moved: str) -> None:
    """A run killed after publishing to store a, then store b (a profile) pointed at another cluster:
    recovery's roll-forward wrote the run's token (valid on A) into b, where its consumers send it to that
    other cluster, a check rotate makes before its mint (Engine._check_store_targets) and recovery did
    not. Now recovery refuses before any write (exit 2), the run stays open, and the same `recover`
    rolls it forward once b names A again, the issuer pointed elsewhere or not (the token works on A)."""
    world = clusters.world
    world.stores = {"a": MemoryStore("a"), "b": _Profile("b", A)}
    t0 = world.bootstrap()
    world.crash_at = "published:a"
    with pytest.raises(Crash):
        world.engine().rotate()
    (run,) = world.journal.open_runs(POLICY)
    candidate = run.new_token_id
    assert candidate is not None and world.held() == {"a": candidate, "b": t0}
    profile = world.stores["b"]
    assert isinstance(profile, _Profile)
    elsewhere = C if moved == "the profile" else B
    profile.pointed_at = elsewhere
    if moved == "the profile and the issuer":
        clusters.use(clusters.b)

    with pytest.raises(ConfigError, match=f"run {run.run_id}: store 'b' .* sends the token to {elsewhere}, but the "
                       f"run's token {candidate} was minted on {A}") as refused:
        clusters.engine().recover()
    assert f"point the store at {A} again" in (refused.value.hint or "") and \
        f"`rotator recover {POLICY}` again" in (refused.value.hint or ""), refused.value.hint
    assert world.held() == {"a": candidate, "b": t0}, "nothing was written to b"
    (stuck,) = world.journal.open_runs(POLICY)
    assert stuck.run_id == run.run_id and stuck.state == run.state
    assert (stuck.error or "").startswith("recovery failed: ") and elsewhere in (stuck.error or "")
    assert [e["result"] for e in world.journal.events(POLICY, limit=1000) if e["step"] == "recover"] == ["error"]

    profile.pointed_at = A  # the operator points the profile back at the cluster the token is valid on
    (action,) = [a for a in clusters.engine().recover() if a.startswith(f"run {run.run_id}")]
    assert action == f"run {run.run_id}: rolled forward, token {candidate} published to every store", action
    assert world.held() == {"a": candidate, "b": candidate} and world.journal.open_runs(POLICY) == []


def test_runs_without_a_target_and_issuers_without_one_are_judged_as_before(clusters: Clusters) -> None:
    """Rows from before schema 10 (NULL) and an issuer that names no target: the token is judged wherever
    the issuer points, as before (here always cluster A: each is revoked there when due)."""
    world = clusters.world
    t0 = world.bootstrap()
    t1 = world.engine().rotate().new_token_id
    with world.journal._tx(immediate=True) as cur:  # the bootstrap's row as schema 9 left it
        cur.execute("UPDATE runs SET issuer_target = NULL WHERE kind = 'bootstrap'")
    unknown = MemoryIssuer(clusters.a.tokens, clock=world.clock)  # cluster A, through an issuer naming no target
    world.clock.advance(GRACE + timedelta(seconds=1))
    clusters.use(unknown)
    assert clusters.engine().revoke_due() == [f"token {t0}: revoked"]  # NULL row, no target now

    t2 = clusters.engine().rotate().new_token_id  # its run records no target
    latest = world.journal.latest_run(POLICY)
    assert latest is not None and latest.issuer_target is None
    world.clock.advance(GRACE + timedelta(seconds=1))
    assert clusters.engine().revoke_due() == [f"token {t1}: revoked"]  # recorded A, no target now

    clusters.use(clusters.a)
    t3 = clusters.engine().rotate().new_token_id
    world.clock.advance(GRACE + timedelta(seconds=1))
    assert clusters.engine().revoke_due() == [f"token {t2}: revoked"]  # recorded nothing, A now
    assert {t.token_id for t in clusters.a.tokens.active()} == {t3}
    assert clusters.b.calls == []


def test_the_target_is_recorded_with_the_planned_run_and_a_journal_of_schema_9_is_upgraded(
        tmp_path: Path, journal_url: str) -> None:
    """Schema 10 adds the column (no rebuild): a journal of schema 9 is upgraded at its next writable open,
    its runs read as NULL, and a new run (and a bootstrap's) records the issuer's target in its first row,
    as PLAN and bootstrap write it: no extra statement."""
    clusters = Clusters(tmp_path, journal_url)
    try:
        _upgraded_from_schema_9(clusters, journal_url)
    finally:
        clusters.world.journal.close()


def _upgraded_from_schema_9(clusters: Clusters, journal_url: str) -> None:
    clusters.world.bootstrap()
    (boot,) = clusters.world.journal.runs(POLICY, limit=0)
    assert boot.kind == "bootstrap" and boot.issuer_target == A
    clusters.world.journal.close()
    journal = open_journal(journal_url)
    with journal._tx(immediate=True) as cur:
        cur.execute("ALTER TABLE runs DROP COLUMN issuer_target")
        cur.execute("DELETE FROM schema_version WHERE version >= 10")  # (schema 11's column is added again)
    journal.close()
    with pytest.raises(JournalError, match="schema version 9, older than this rotator's"):
        open_journal(journal_url, read_only=True)
    clusters.world.journal = open_journal(journal_url)
    (old,) = clusters.world.journal.runs(POLICY, limit=0)
    assert old.run_id == boot.run_id and old.issuer_target is None
    clusters.use(clusters.b)
    run_id = clusters.engine().rotate().run_id
    assert clusters.world.journal.get_run(run_id or "").issuer_target == B


# ------------------------------------------------------------------------------------------ influxctl

ADMIN = "clustered-admin-token-0123456789abcdef"


def _launcher(directory: Path) -> Path:
    """An influxctl that runs the fake on the state file of the cluster its --config's profile names
    (``<host>.json``): two state files are two clusters, as in the reviewer's reproduction."""
    launcher = directory / "influxctl-by-host"
    launcher.write_text(
        f"#!{sys.executable}\n"
        "import os, sys, tomllib\n"
        "argv = sys.argv[1:]\n"
        "with open(argv[argv.index('--config') + 1], 'rb') as f:\n"
        "    host = tomllib.load(f)['profile'][0]['host'].lower().rstrip('.')\n"
        f"os.environ[{STATE_ENV!r}] = os.path.join({str(directory)!r}, host + '.json')\n"
        f"os.execv(sys.executable, [sys.executable, {str(BINARY)!r}, *argv])\n"
    )
    launcher.chmod(launcher.stat().st_mode | stat.S_IXUSR)
    return launcher


def _influxctl_issuer(directory: Path, host: str, port: int | None = 443) -> InfluxctlManagementIssuer:
    settings = validate_settings(InfluxctlManagementSettings, {
        "influxctl": str(directory / "influxctl-by-host"), "timeout_s": 10,
        "profile": {"product": "clustered", "host": host, **({"port": port} if port is not None else {})},
        "auth": {"method": "token_file", "token_file": "admin.json"},
    })  # fmt: skip
    return InfluxctlManagementIssuer(settings, base_dir=directory)


def test_influxctl_two_clusters_a_token_of_cluster_a_is_not_recorded_revoked_through_cluster_b(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reviewer's reproduction through the influxctl-management adapter and the fake influxctl: the
    policy's profile host moves from cluster-a.test to cluster-b.test. Before, revoke-expired ran
    `management revoke` on B, which answered NotFound and did not list the token, and the revocation was
    recorded done while the token stayed valid on A."""
    monkeypatch.setenv("ROTATOR_INFLUXCTL_ENV", STATE_ENV)
    monkeypatch.delenv("INFLUXCTL_PROFILE", raising=False)
    clusters = {host: FakeInfluxctl(tmp_path / f"{host}.json") for host in ("cluster-a.test", "cluster-b.test")}
    for state in clusters.values():
        state.init(admin_token=ADMIN)
    (tmp_path / "admin.json").write_text(ADMIN)
    _launcher(tmp_path)
    a_state = clusters["cluster-a.test"]
    value, t0 = a_state.add_token("made by a human")

    world = World(tmp_path)
    world.clock = FakeClock(datetime.now(UTC).replace(microsecond=0))
    issuer_a = _influxctl_issuer(tmp_path, "Cluster-A.test.", port=None)  # a host's spelling is not a move
    issuer_b = _influxctl_issuer(tmp_path, "cluster-b.test")
    assert target_of(issuer_a) == target_of(_influxctl_issuer(tmp_path, "cluster-a.test")) \
        == "clustered cluster-a.test:443"

    def engine(issuer: InfluxctlManagementIssuer) -> Engine:
        policy = world.policy._replace(issuer_type="influxctl-management", issuer_settings=issuer.settings)
        return Engine(policy, world.journal, issuer=issuer, stores=list(world.stores.items()), clock=world.clock,
                      retry=RetryPolicy(2, 0.01, 0.02), holder="engine-1")

    assert engine(issuer_a).bootstrap(Secret(value), t0, None).ok
    t1 = engine(issuer_a).rotate().new_token_id
    assert t1 is not None and a_state.token_by_id(t1) is not None
    world.clock.advance(GRACE + timedelta(seconds=1))
    b_before = clusters["cluster-b.test"].tokens()

    (action,) = engine(issuer_b).revoke_due()
    assert f"token {t0}: revocation failed" in action and "cluster-a.test:443" in action, action
    assert [r.state for r in world.journal.revocations(POLICY)] == [RevocationState.FAILED]
    assert (a_state.token_by_id(t0) or {}).get("revoked_at") is None, "the token stays valid on A, untouched"
    assert clusters["cluster-b.test"].tokens() == b_before

    (action,) = engine(issuer_a).revoke_due(retry_failed=True)
    assert action == f"token {t0}: revoked"
    assert (a_state.token_by_id(t0) or {}).get("revoked_at") is not None


# ------------------------------------------------------------------------------------------ targets

def test_each_issuer_names_its_cluster_or_server_and_cosmetic_edits_keep_it(tmp_path: Path) -> None:
    def influxctl(**profile: object) -> str | None:
        settings = validate_settings(InfluxctlManagementSettings, {"profile": profile})
        return target_of(InfluxctlManagementIssuer(settings, base_dir=tmp_path))

    assert influxctl(product="clustered", host="Cluster-A.Example.COM.") == "clustered cluster-a.example.com:443"
    assert influxctl(product="clustered", host="cluster-a.example.com", port=443) == \
        "clustered cluster-a.example.com:443"
    assert influxctl(product="clustered", host="cluster-a.example.com", port=8443) == \
        "clustered cluster-a.example.com:8443"
    account, cluster = "11111111-1111-4111-8111-111111111111", "33333333-3333-4333-8333-333333333333"
    dedicated = f"dedicated {account}/{cluster}"
    assert influxctl(product="dedicated", account_id=account.upper(), cluster_id=cluster) == dedicated
    assert influxctl(product="dedicated", account_id=account, cluster_id=cluster, host="x.a.influxdb.io") == dedicated

    def v3(url: str) -> str | None:
        model = InfluxDB3Settings.model_validate({"base_url": url, "credential": "self"})
        return target_of(InfluxDB3Issuer.from_config(model, AdapterContext(POLICY)))

    assert v3("https://InfluxDB3.example.com") == v3("https://influxdb3.example.com:443/") == \
        "influxdb3.example.com:443"
    assert v3("http://influxdb3.example.com:8181") == "influxdb3.example.com:8181" != v3("http://influxdb3.example.com")
    v2 = InfluxDB2Settings.model_validate({"base_url": "https://[::1]:8086", "org_id": "0123456789abcdef",
                                           "credential": {"env": "T"}, "copy_from_authorization_id": "0" * 16})
    assert target_of(InfluxDB2Issuer.from_config(v2, AdapterContext(POLICY))) == "[::1]:8086"

    def management_api(**raw: object) -> str | None:
        settings = ManagementApiSettings.model_validate({
            "management_token": {"env": "T"}, "verify": {"database": "telemetry"},
            "permissions": [{"action": "read", "resource": "telemetry"}], **raw})
        return target_of(ManagementApiIssuer.from_config(settings, AdapterContext(POLICY, base_dir=tmp_path)))

    assert management_api(product="dedicated", account_id=account, cluster_id=cluster.upper(),
                          cluster_host="https://x.a.influxdb.io") == dedicated, "as influxctl names the cluster"
    assert management_api(product="clustered", cluster_host="Cluster-A.example.com") == \
        management_api(product="clustered", cluster_host="https://cluster-a.example.com:443",
                       base_url="https://cluster-a.example.com/api/v0") == "clustered cluster-a.example.com:443"
    assert target_of(MemoryIssuer()) is None
