"""The engine's state machine in process: rotator.testing's in-memory issuer and stores, a
FakeClock (no test sleeps: retries and grace periods move the fake clock) and a SQLite journal in
tmp_path. Subprocess and kill -9 behaviour stays in tests/e2e/test_crash_matrix.py and test_e2e*.py;
here every step's outcome is checked directly on the journal, the issuer and the stores.

A crash is simulated by a checkpoint that raises :class:`Crash` (a BaseException, which the engine
does not catch: the run is left in the journal exactly at that step, as kill -9 leaves it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.config.policy_types import Policy, StoreBinding
from rotator.core.contracts import TokenRecord
from rotator.core.engine import Engine, RunResult
from rotator.core.errors import ConflictError, LeaseLost, NeedsAttention, PermanentError, TransientError
from rotator.core.journal import Journal, RunState, open_journal
from rotator.core.retry import RetryPolicy
from rotator.core.secret import Secret
from rotator.testing import FakeClock, MemoryIssuer, MemoryIssuerSettings, MemoryStore, MemoryStoreSettings

POLICY = "p"
GRACE = timedelta(hours=1)
START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class Crash(BaseException):
    """The process dies here (not an Exception: the engine's handlers do not see it)."""


@dataclass
class World:
    """One policy with an in-memory issuer and stores ``a`` and ``b``, a journal and a fake clock."""

    tmp_path: Path
    clock: FakeClock = field(default_factory=lambda: FakeClock(START))
    issuer: MemoryIssuer = field(init=False)
    stores: dict[str, MemoryStore] = field(init=False)
    journal: Journal = field(init=False)
    bootstrap_id: str = ""
    bootstrap_value: str = ""
    crash_at: str | None = None
    on_checkpoint: Callable[[str], None] | None = None
    adopt: bool = False

    def __post_init__(self) -> None:
        self.issuer = MemoryIssuer(clock=self.clock, check_credential=True)
        self.stores = {name: MemoryStore(name) for name in ("a", "b")}
        self.journal = open_journal(f"sqlite:///{self.tmp_path / 'journal.db'}")

    @property
    def policy(self) -> Policy:
        return Policy(
            name=POLICY, enabled=True, issuer_type="memory", issuer_settings=MemoryIssuerSettings(),
            stores=tuple(StoreBinding(n, "memory", MemoryStoreSettings(n)) for n in self.stores),
            schedule_text="1d", window_text=None, grace=GRACE, lifetime=timedelta(days=3),
            verify_timeout=timedelta(seconds=30), adopt=self.adopt, description="{tag}", base_dir=self.tmp_path,
        )  # fmt: skip

    def engine(self, holder: str = "engine-1") -> Engine:
        return Engine(self.policy, self.journal, issuer=self.issuer, stores=list(self.stores.items()),
                      clock=self.clock, retry=RetryPolicy(3, 1.0, 4.0), holder=holder,
                      checkpoint=self._checkpoint)  # fmt: skip

    def _checkpoint(self, name: str) -> None:
        if self.on_checkpoint is not None:
            self.on_checkpoint(name)
        if name == self.crash_at:
            self.crash_at = None
            raise Crash(name)

    def bootstrap(self) -> str:
        self.bootstrap_value, self.bootstrap_id = self.issuer.tokens.create("made by a human")
        assert self.engine().bootstrap(Secret(self.bootstrap_value), self.bootstrap_id, None).ok
        return self.bootstrap_id

    def write_everywhere(self, record: TokenRecord) -> None:
        """Someone writes ``record`` into every store (by hand, or an older version restored)."""
        for store in self.stores.values():
            store.publish(record, store.read_current().version)

    def empty_stores(self) -> None:
        """Someone deletes every store's secret with its history (a store wiped, a new mount)."""
        for store in self.stores.values():
            with store.backend.lock:
                store.backend.secrets.pop(store.path)

    def stray_token_in_stores(self) -> tuple[RunResult, str]:
        """Bootstrap, rotate once and settle; then a token rotator never saw is written into every
        store. The rotation's result, and the stray token's id."""
        self.bootstrap()
        first = rotate(self)
        self.settle()
        value, stray = self.issuer.tokens.create("made by a human, written into the stores by hand")
        self.write_everywhere(TokenRecord(Secret(value), stray, "memory", POLICY, START, START + timedelta(days=3)))
        return first, stray

    def held(self) -> dict[str, str | None]:
        return {name: store.read_current().token_id for name, store in self.stores.items()}

    def active_ids(self) -> set[str]:
        return {t.token_id for t in self.issuer.tokens.active()}

    def minted_ids(self) -> set[str]:
        return {t.token_id for t in self.issuer.tokens.all() if t.description.startswith(f"rotator:{POLICY}:")}

    def check_invariants(self, *, settled: bool = False) -> None:
        """DESIGN.md invariants 1 and 2 from the outside: the stores agree on an active token, and every
        token rotator minted is current, pending revocation (unless ``settled``) or revoked; once
        ``settled``, no run is open."""
        held = set(self.held().values())
        assert len(held) == 1, f"stores disagree: {self.held()}"
        (current,) = held
        assert current in self.active_ids(), "invariant 1: the published token is not active"
        pending = {r.token_id for r in self.journal.revocations(POLICY, "pending")}
        for token_id in self.minted_ids() & self.active_ids():
            assert token_id == current or (token_id in pending and not settled), f"invariant 2: orphan {token_id}"
        if settled:  # a run that died inside a mint stays open until its mint window has passed
            assert not self.journal.open_runs(POLICY), "every run is finished"

    def settle(self) -> None:
        """Let grace pass and revoke what is due: only the current token stays active."""
        self.clock.advance(GRACE + timedelta(seconds=1))
        self.engine().revoke_due()
        self.check_invariants(settled=True)
        assert self.active_ids() == set(self.held().values())


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def rotate(world: World) -> RunResult:
    result = world.engine().rotate()
    assert result.ok, result.message
    return result


# --------------------------------------------------------------------------------- the success path


def test_happy_path_mints_verifies_publishes_everywhere_and_schedules_the_old_token(world: World) -> None:
    old = world.bootstrap()
    result = rotate(world)
    assert result.state == RunState.PUBLISHED and result.old_token_id == old
    new = result.new_token_id
    assert new is not None and world.held() == {"a": new, "b": new}
    assert world.active_ids() == {old, new}, "the old token lives on for the grace period"
    (rev,) = world.journal.revocations(POLICY, "pending")
    assert (rev.token_id, rev.due_at) == (old, START + GRACE)
    info = world.issuer.tokens.info(new)
    assert info is not None and info.description == f"rotator:{POLICY}:{result.run_id}"
    assert info.expires_at == START + timedelta(days=3)
    run = world.journal.get_run(result.run_id or "")
    assert run is not None and set(run.published_versions) == {"a", "b"}
    world.check_invariants()


def test_revoke_after_grace_and_not_before(world: World) -> None:
    old = world.bootstrap()
    result = rotate(world)
    world.clock.advance(GRACE - timedelta(seconds=1))
    assert world.engine().revoke_due() == []
    assert old in world.active_ids()
    world.clock.advance(timedelta(seconds=2))
    assert world.engine().revoke_due() == [f"token {old}: revoked"]
    assert world.active_ids() == {result.new_token_id}
    run = world.journal.get_run(result.run_id or "")
    assert run is not None and run.state == RunState.DONE
    world.check_invariants(settled=True)


def test_dry_run_changes_nothing(world: World) -> None:
    old = world.bootstrap()
    calls = len(world.issuer.calls)
    runs = world.journal.runs(POLICY, limit=0)
    result = world.engine().rotate(dry_run=True)
    assert (result.state, result.ok, result.dry_run, result.old_token_id) == ("dry-run", True, True, old)
    assert "would mint" in result.message
    assert world.issuer.calls[calls:] == ["list_tokens"], "the issuer is asked, nothing is minted"
    assert world.held() == {"a": old, "b": old} and world.journal.runs(POLICY, limit=0) == runs
    assert all(s.calls.count("publish") == 1 for s in world.stores.values()), "only bootstrap's publish"


# --------------------------------------------------------------------------------- failures


def test_verify_fails_the_candidate_is_discarded(world: World) -> None:
    old = world.bootstrap()
    world.issuer.fail_next("verify", PermanentError("memory issuer: verification refused"))
    with pytest.raises(PermanentError, match="verification refused"):
        world.engine().rotate()
    (run,) = [r for r in world.journal.runs(POLICY) if r.kind == "rotate"]
    assert run.state == RunState.FAILED and run.new_token_id is not None
    assert run.new_token_id not in world.active_ids(), "REVOKE_NEW: the candidate is revoked"
    assert world.held() == {"a": old, "b": old} and world.active_ids() == {old}
    world.check_invariants(settled=True)


def test_verify_that_stays_transient_until_the_deadline_discards_too(world: World) -> None:
    world.bootstrap()
    world.issuer.fail_next("verify", TransientError("memory issuer: not active yet"), times=100)
    with pytest.raises(TransientError):
        world.engine().rotate()
    assert world.clock.now() - START >= timedelta(seconds=25), "retried on the fake clock until verify_timeout"
    assert world.active_ids() == {world.bootstrap_id}


def test_publish_refused_by_store_2_of_2_leaves_both_tokens_valid_and_recover_finishes(world: World) -> None:
    old = world.bootstrap()
    world.stores["b"].fail_next("publish", PermanentError("memory store: 403 forbidden"))
    with pytest.raises(PermanentError, match="403"):
        world.engine().rotate()
    (run,) = world.journal.open_runs(POLICY)
    new = run.new_token_id
    # a rotation publishes from VERIFIED (no separate PUBLISHING commit); recovery asks the stores
    assert run.state == RunState.VERIFIED and world.held() == {"a": new, "b": old}
    assert {old, new} <= world.active_ids(), "invariant 1: each store's token is still accepted"
    actions = world.engine().recover()
    assert any("rolled forward" in a for a in actions)
    assert world.held() == {"a": new, "b": new}
    world.check_invariants()
    world.settle()


def test_publish_conflict_on_store_1_discards_the_candidate(world: World) -> None:
    old = world.bootstrap()
    world.stores["a"].fail_next("publish", ConflictError("memory store: compare-and-set lost"))
    with pytest.raises(ConflictError):
        world.engine().rotate()
    assert world.held() == {"a": old, "b": old} and world.active_ids() == {old}
    world.check_invariants(settled=True)


def test_a_publish_that_landed_with_its_answer_lost_is_retried_without_conflict(world: World) -> None:
    world.bootstrap()
    world.stores["b"].fail_next("publish", TransientError("memory store: timeout"), after=True)
    result = rotate(world)
    assert world.held() == {"a": result.new_token_id, "b": result.new_token_id}
    assert world.stores["b"].versions() == 2, "the retry wrote nothing new"
    world.check_invariants()


def test_a_publish_that_landed_with_its_answer_lost_then_was_refused_on_the_retry_is_rolled_forward(
        world: World) -> None:
    """The first try's write to a lands and its answer is lost (a timeout); the retry is refused for good
    (a 403: a proxy, a re-login refused). The refusal says nothing of the first try: the stores are read,
    a holds the candidate, and the run stays VERIFIED for recovery to roll forward. Taken for "nothing
    landed", the run was discarded while a held its token: the candidate could not be revoked, and every
    later command stopped with NeedsAttention."""
    old = world.bootstrap()
    world.stores["a"].fail_next("publish", TransientError("memory store a: timeout"), after=True)
    world.stores["a"].fail_next("publish", PermanentError("memory store a: 403 on the retry"))
    with pytest.raises(PermanentError, match="403 on the retry"):
        world.engine().rotate()
    (run,) = world.journal.open_runs(POLICY)
    new = run.new_token_id
    assert run.state == RunState.VERIFIED and world.held() == {"a": new, "b": old}
    assert {old, new} <= world.active_ids(), "invariant 1: each store's token is still accepted"
    # the cause is fixed
    actions = world.engine().recover()
    assert any("rolled forward" in a for a in actions), actions
    assert world.held() == {"a": new, "b": new}
    world.check_invariants()
    world.settle()
    assert rotate(world).ok


def test_revocation_is_refused_while_a_store_still_holds_the_old_token(world: World) -> None:
    old = world.bootstrap()
    result = rotate(world)
    restored = world.stores["b"]  # someone restores the previous token in b
    previous = TokenRecord(Secret(world.bootstrap_value), old, "memory", POLICY, START, None)
    restored.publish(previous, restored.read_current().version)
    world.clock.advance(GRACE + timedelta(seconds=1))
    (action,) = world.engine().revoke_due()
    assert "revocation failed" in action and "still current in store(s) b" in action
    assert old in world.active_ids(), "invariant 1: never revoke a token a store holds"
    (rev,) = world.journal.revocations(POLICY, "failed")
    assert rev.token_id == old and "refusing to revoke" in (rev.last_error or "")
    assert result.new_token_id in world.active_ids()


def test_a_run_that_lost_its_lease_stops_before_its_next_side_effect(world: World) -> None:
    old = world.bootstrap()
    taken: list[int] = []

    other = open_journal(f"sqlite:///{world.tmp_path / 'journal.db'}")  # another process's connection

    def another_rotator_takes_over(step: str) -> None:
        if step == "verified":  # this process was paused past its lease; another one took the policy
            taken.append(other.take_over_lease(POLICY, "engine-1", "engine-2", timedelta(minutes=15),
                                               world.clock.now()))  # fmt: skip

    world.on_checkpoint = another_rotator_takes_over
    with pytest.raises(LeaseLost):
        world.engine().rotate()
    (run,) = world.journal.open_runs(POLICY)
    assert run.state == RunState.VERIFIED, "no journal state written after the lease was lost"
    assert world.held() == {"a": old, "b": old}, "nothing published"
    assert run.new_token_id in world.active_ids(), "nothing discarded either: the run is the other's now"
    events = [(e["step"], e["result"]) for e in world.journal.events(POLICY)]
    assert ("rotate", "aborted") in events
    # The new holder recovers the run: the unpublished candidate is revoked.
    world.on_checkpoint = None
    world.journal.release_lease(POLICY, "engine-2", taken[0])
    world.engine("engine-2").recover()
    assert run.new_token_id not in world.active_ids()
    world.check_invariants(settled=True)
    other.close()


# --------------------------------------------------------------------------------- re-runs (invariant 9)

STEPS = ["planned", "minting", "minted", "verified", "publishing", "publish:a", "published:a", "publish:b",
         "published:b", "published"]  # fmt: skip


@pytest.mark.parametrize("step", STEPS)
def test_a_rotation_that_died_at_each_step_is_finished_by_the_next_run(world: World, step: str) -> None:
    old = world.bootstrap()
    world.crash_at = step
    with pytest.raises(Crash):
        world.engine().rotate()
    result = rotate(world)  # the same command again: recovers, then rotates
    assert world.held() == {"a": result.new_token_id, "b": result.new_token_id}
    world.check_invariants()
    world.settle()
    assert old not in world.active_ids()


def test_recovery_s_tag_search_takes_the_tag_as_a_whole_word(world: World) -> None:
    """A token whose tag only begins with the dead run's (``rotator:p:<run id>X``: another run's, or
    an InfluxDB 3 name under an overlapping prefix) is not that run's: recovery neither revokes it
    nor stops on the revocation rule's refusal."""
    world.bootstrap()
    world.crash_at = "minting"
    with pytest.raises(Crash):
        world.engine().rotate()
    (run,) = world.journal.open_runs(POLICY)
    _value, lookalike = world.issuer.tokens.create(f"rotator:{POLICY}:{run.run_id}0")
    world.clock.advance(timedelta(hours=1))  # past the mint window: nothing can still be minting
    result = rotate(world)
    assert lookalike in world.active_ids(), "another run's token was revoked"
    assert not world.journal.open_runs(POLICY) and result.old_token_id == world.bootstrap_id


FAILURES = {
    "list": ("issuer", "list_tokens", PermanentError("memory issuer: 503, giving up")),
    "mint": ("issuer", "mint", PermanentError("memory issuer: mint refused")),
    "verify": ("issuer", "verify", PermanentError("memory issuer: verify refused")),
    "publish-a": ("a", "publish", PermanentError("memory store a: 403")),
    "publish-b": ("b", "publish", PermanentError("memory store b: 403")),
    "publish-a-landed-then-403": ("a", "publish", PermanentError("memory store a: 403 on the retry")),
    "read-b": ("b", "read_current", TransientError("memory store b: timeout")),
}
#: a try that comes before the failure and lands with its answer lost
LANDED_FIRST = {"publish-a-landed-then-403": TransientError("memory store a: timeout, the write landed")}


@pytest.mark.parametrize("where", sorted(FAILURES))
def test_after_a_failure_at_each_step_the_same_command_succeeds(world: World, where: str) -> None:
    world.bootstrap()
    target, operation, error = FAILURES[where]
    adapter = world.issuer if target == "issuer" else world.stores[target]
    if where in LANDED_FIRST:
        adapter.fail_next(operation, LANDED_FIRST[where], after=True)
    # A permanent error fails the run at once; a transient one after every retry (RetryPolicy(3, ...)).
    adapter.fail_next(operation, error, times=3 if isinstance(error, TransientError) else 1)
    with pytest.raises(type(error)):
        world.engine().rotate()
    rotate(world)
    world.check_invariants()
    world.settle()


def test_a_failed_revocation_is_retried_by_the_next_pass(world: World) -> None:
    old = world.bootstrap()
    rotate(world)
    world.clock.advance(GRACE + timedelta(seconds=1))
    world.issuer.fail_next("revoke", TransientError("memory issuer: timeout"), times=3)
    (action,) = world.engine().revoke_due()
    assert "revocation postponed" in action and old in world.active_ids()
    world.clock.advance(timedelta(minutes=5))
    assert world.engine().revoke_due() == [f"token {old}: revoked"]
    world.check_invariants(settled=True)


def test_a_bootstrapped_name_given_to_a_new_token_in_grace_is_not_revoked(tmp_path: Path) -> None:
    """Issuers whose ids are names (InfluxDB 3) let a person delete the bootstrapped token and make a
    new one under the same name while rotator waits out the grace period. The journal's record is of
    the old token: the new one (created after the bootstrap) is refused, not revoked."""
    from rotator.testing.memory import _Token

    w = World(tmp_path)
    bootstrap_id = w.bootstrap()
    w.clock.advance(timedelta(days=1))
    assert w.engine().rotate().ok
    w.clock.advance(timedelta(minutes=20))  # in grace: the person deletes the token and reuses its name
    w.issuer.tokens._tokens[bootstrap_id] = _Token("memtok-the-new-one", "made by a person, later", w.clock.now(),
                                                   None)  # fmt: skip
    w.clock.advance(GRACE)
    w.engine().revoke_due()
    assert bootstrap_id in w.active_ids(), "the new token under the reused name was revoked"
    (rev,) = [r for r in w.journal.revocations(POLICY) if r.token_id == bootstrap_id]
    assert rev.state == "failed" and "another token under the same id" in (rev.last_error or "")


def test_a_prune_keeps_the_run_that_minted_a_token_whose_revocation_is_pending(world: World) -> None:
    """keep_history shorter than the time a token is current: the run that minted the token being
    retired finished long before the prune's cutoff, but its revocation needs it (rotator revokes
    only what its records say it minted). Pruned, the revocation was refused and the old token
    stayed valid; kept, it is revoked when due."""
    from rotator.core import audit_chain
    from rotator.core.journal import ts

    world.bootstrap()
    first = rotate(world)
    world.settle()  # the bootstrapped token is revoked; `first`'s run is done
    world.clock.advance(timedelta(days=2))
    rotate(world)  # `first`'s token is now pending revocation, due after grace
    now = world.clock.now()
    result = audit_chain.prune(world.journal, ts(now - timedelta(days=1)), ts(now))  # keep_history = "1d"
    assert result.runs >= 1, "the bootstrap run (its token revoked) is pruned: the prune did run"
    assert [r.run_id for r in world.journal.runs_with_token(POLICY, first.new_token_id)] == [first.run_id]
    world.clock.advance(GRACE + timedelta(seconds=1))
    assert world.engine().revoke_due()
    assert first.new_token_id not in world.active_ids(), "the superseded token is revoked"
    assert [r.state for r in world.journal.revocations(POLICY)] and not world.journal.revocations(POLICY, "pending")
    world.check_invariants(settled=True)
    # Once that revocation is done and older than the cutoff, its minting run may go too.
    world.clock.advance(timedelta(days=2))
    audit_chain.prune(world.journal, ts(world.clock.now() - timedelta(days=1)), ts(world.clock.now()))
    assert not world.journal.runs_with_token(POLICY, first.new_token_id)
    assert audit_chain.verify(world.journal).ok


def test_a_secret_another_policy_rotates_is_not_taken_over(world: World) -> None:
    """Two policies pointed at one secret: the managed-by marker says rotator, not which policy. Without
    `adopt`, this policy refuses before any side effect, and nothing is minted or written."""
    from rotator.core.errors import OwnershipError

    world.bootstrap()
    value, token_id = world.issuer.tokens.create("the other policy's token")
    other = TokenRecord(Secret(value), token_id, "memory", "other-policy", START, START + timedelta(days=3))
    world.write_everywhere(other)
    minted_before = world.minted_ids()
    with pytest.raises(OwnershipError, match="of policy 'other-policy', not of 'p': two policies must not share"):
        world.engine().rotate()
    assert world.minted_ids() == minted_before and set(world.held().values()) == {token_id}
    with pytest.raises(OwnershipError, match="two policies must not share"):
        world.engine().bootstrap(Secret(world.bootstrap_value), world.bootstrap_id, None)
    assert set(world.held().values()) == {token_id}, "nothing written"


def test_a_publish_interrupted_after_the_stores_were_emptied_is_rolled_forward(world: World) -> None:
    """No store names a token (both secrets deleted): the run replaces the token the journal says was
    published last. Store a takes the new token, b fails; recovery must roll forward (b still is as
    PLAN read it), not stop because b holds "neither the old nor the new" token."""
    world.issuer.check_credential = False  # the issuer's own credential: the stores hold none
    world.bootstrap()
    first = rotate(world)
    world.settle()
    for store in world.stores.values():
        store.backend.secrets[store.path] = []  # deleted by someone
    world.stores["b"].fail_next("publish", TransientError("b is down"), times=3)  # every try of this rotation
    with pytest.raises(TransientError, match="b is down"):
        world.engine().rotate()
    (run,) = world.journal.open_runs(POLICY)  # left to recovery
    assert run.old_token_id == first.new_token_id and world.held() == {"a": run.new_token_id, "b": None}
    recovered = world.engine().recover()
    assert world.held() == {"a": run.new_token_id, "b": run.new_token_id}, recovered
    assert not world.journal.open_runs(POLICY)
    assert [r.token_id for r in world.journal.revocations(POLICY, "pending")] == [first.new_token_id]
    world.settle()


@pytest.mark.parametrize("crash_at", [None, "published"])
def test_a_store_that_names_another_token_than_the_journal_leaves_no_token_of_rotator_valid(
        world: World, crash_at: str | None) -> None:
    """The stores name token X (a payload edited by hand, an older version restored) while the journal
    published B last: B is no store's any more, so the rotation retires it as well as X, also when the
    run is finished by recovery. The revocation rule still decides: B is rotator's and is revoked; X is
    not, and is refused for a person to look at."""
    first, stray = world.stray_token_in_stores()
    plan = world.engine().rotate(dry_run=True)
    assert f"revoke {stray} and {first.new_token_id} (the token rotator published last" in plan.message, plan
    world.crash_at = crash_at
    if crash_at is None:
        second = rotate(world)
        assert second.old_token_id == stray
    else:
        with pytest.raises(Crash):
            world.engine().rotate()
        world.engine().recover()
    assert not world.journal.open_runs(POLICY)
    (run,) = [r for r in world.journal.runs(POLICY, limit=0) if r.old_token_id == stray]
    assert {r.token_id: r.run_id for r in world.journal.revocations(POLICY, "pending")} == {
        stray: run.run_id, first.new_token_id: run.run_id}
    (published,) = [e for e in world.journal.events(POLICY) if e["step"] == "published" and e["run_id"] == run.run_id]
    assert published["also_revoke"] == first.new_token_id
    world.clock.advance(GRACE + timedelta(seconds=1))
    actions = world.engine().revoke_due()
    assert f"token {first.new_token_id}: revoked" in actions, actions
    assert first.new_token_id not in world.active_ids() and stray in world.active_ids()
    assert {r.token_id for r in world.journal.revocations(POLICY, "failed")} | {
        r.token_id for r in world.journal.revocations(POLICY, "pending")} == {stray}, "X: refused, not revoked"
    world.check_invariants()


def test_an_emergency_rotation_revokes_at_once_the_journal_s_last_token_that_no_store_named(world: World) -> None:
    """`rotate --revoke-previous-now` after a store was made to name another token: the token rotator
    published last was current as far as rotator knows, so it goes at once too, not after grace."""
    first, stray = world.stray_token_in_stores()
    with pytest.raises(NeedsAttention):  # the stray token is not rotator's: refused, a person looks
        world.engine().rotate(revoke_previous_now=True, reason="leaked")
    assert first.new_token_id not in world.active_ids(), "revoked at once, with no grace"
    assert stray in world.active_ids()


def _restored_older_version(world: World) -> tuple[str, str]:
    """Rotate twice, then put the first rotation's token back in every store (an older version restored):
    that token (t1) is current again while its revocation is still pending; t2 is the journal's last."""
    world.bootstrap()
    first = rotate(world)
    record = world.stores["a"].read_current().record
    assert record is not None and record.token_id == first.new_token_id
    world.clock.advance(timedelta(minutes=10))
    second = rotate(world)
    assert second.old_token_id == first.new_token_id and second.new_token_id is not None
    world.clock.advance(timedelta(minutes=20))
    world.write_everywhere(record)
    return first.new_token_id or "", second.new_token_id


def test_a_token_current_again_gets_its_grace_from_the_rotation_that_replaces_it_again(world: World) -> None:
    """t1's revocation was due 1 h after the second rotation; the third rotation replaces t1 again, so
    the consumers that read it from the restored stores get a whole grace from now (invariant 3), and
    t2, which no store names, is retired with it."""
    t1, t2 = _restored_older_version(world)
    third = rotate(world)
    assert (third.old_token_id, third.also_revoked) == (t1, t2)
    pending = {r.token_id: r.due_at for r in world.journal.revocations(POLICY, "pending")}
    assert (pending[t1], pending[t2]) == (world.clock.now() + GRACE, world.clock.now() + GRACE)
    world.clock.advance(GRACE - timedelta(seconds=1))
    world.engine().revoke_due()  # the bootstrap token's revocation, due since the first rotation
    assert {t1, t2} <= world.active_ids(), "not before its grace"
    world.settle()


@pytest.mark.parametrize("extra_fails", [False, True])
def test_an_emergency_rotation_revokes_both_previous_tokens_or_says_which_it_did_not(
        world: World, extra_fails: bool) -> None:
    """`--revoke-previous-now` after an older version was restored: t1 (whose pending row is the second
    run's) and t2 go at once; when one of them cannot be revoked the command says so (exit 4), never
    "revoked at once"."""
    t1, t2 = _restored_older_version(world)
    if extra_fails:
        world.issuer.fail_next("revoke", TransientError("issuer down"), times=10)
        with pytest.raises(NeedsAttention, match="NOT revoked"):
            world.engine().rotate(revoke_previous_now=True, reason="leaked")
        assert {t1, t2} <= world.active_ids()
        return
    result = world.engine().rotate(revoke_previous_now=True, reason="leaked")
    assert result.ok and f"revoked {t1} and {t2} at once" in result.message, result.message
    assert not {t1, t2} & world.active_ids()


def test_a_restored_token_already_due_is_rescheduled_by_the_rotation_that_replaces_it_not_failed(
        world: World) -> None:
    """t1's revocation is due when the stores hold it again. The rotation's revocation pass before the
    mint leaves it pending (the stores hold it: refused, it would be failed for good and t1 left valid);
    the rotation replaces t1 and schedules it with a whole grace."""
    t1, t2 = _restored_older_version(world)
    world.clock.advance(GRACE)
    third = rotate(world)
    assert third.old_token_id == t1
    rows = {r.token_id: r for r in world.journal.revocations(POLICY)}
    assert (rows[t1].state, rows[t1].due_at) == ("pending", world.clock.now() + GRACE)
    world.settle()
    assert t1 not in world.active_ids()


@pytest.mark.parametrize("emergency", [False, True])
def test_a_restored_token_whose_revocation_a_pass_failed_is_scheduled_again_when_replaced(
        world: World, emergency: bool) -> None:
    """t1's revocation falls due while the stores hold it again, and a revocation pass (the daemon's
    revoke job, `revoke-expired`) refuses it: failed, with an alert. The rotation that replaces t1
    again schedules it once more (pending, rounds counted afresh), so t1 is not left valid for good:
    after a whole grace, or at once in an emergency rotation."""
    t1, t2 = _restored_older_version(world)
    world.clock.advance(GRACE)
    actions = world.engine().revoke_due()
    assert any(a.startswith(f"token {t1}: revocation failed") for a in actions), actions
    (failed,) = world.journal.revocations(POLICY, "failed")
    assert failed.token_id == t1 and t1 in world.active_ids()
    if emergency:
        result = world.engine().rotate(revoke_previous_now=True, reason="leaked")
        assert result.ok and f"revoked {t1} and {t2} at once" in result.message, result.message
        assert not {t1, t2} & world.active_ids()
        world.check_invariants(settled=True)
        return
    third = rotate(world)
    assert (third.old_token_id, third.also_revoked) == (t1, t2)
    (row,) = [r for r in world.journal.revocations(POLICY) if r.token_id == t1]
    assert (row.state, row.due_at, row.attempts, row.last_error) == ("pending", world.clock.now() + GRACE, 0, None)
    world.clock.advance(GRACE - timedelta(seconds=1))
    world.engine().revoke_due()
    assert t1 in world.active_ids(), "not before its grace"
    world.settle()
    assert not {t1, t2} & world.active_ids()
    assert not world.journal.revocations(POLICY, "failed")


def _revoked_token_restored(world: World) -> str:
    """Rotate twice and settle, so that the first rotation's token (t1) is revoked (its row done), then
    put t1 back in every store (a backup restored). The issuer mints with its own credential: the
    stores' dead token is not it. Returns t1."""
    world.issuer.check_credential = False
    world.bootstrap()
    first = rotate(world)
    record = world.stores["a"].read_current().record
    assert record is not None and first.new_token_id is not None
    rotate(world)
    world.settle()
    world.write_everywhere(record)
    return first.new_token_id


def test_a_revoked_token_restored_and_replaced_again_keeps_its_done_row(world: World) -> None:
    """Scheduling a token again never reopens a revocation that is done: the token is revoked."""
    t1 = _revoked_token_restored(world)
    (done,) = [r for r in world.journal.revocations(POLICY, "done") if r.token_id == t1]
    assert rotate(world).old_token_id == t1
    (row,) = [r for r in world.journal.revocations(POLICY) if r.token_id == t1]
    assert (row.state, row.due_at, row.done_at) == ("done", done.due_at, done.done_at)


def test_an_emergency_rotation_does_not_cry_wolf_for_a_previous_token_revoked_already(world: World) -> None:
    """A backup restored into the stores holds t1, which rotator revoked long ago (its row is done): the
    emergency rotation replaces it, and a token revoked already is success, not "NOT revoked"."""
    t1 = _revoked_token_restored(world)
    assert t1 not in world.active_ids()
    result = world.engine().rotate(revoke_previous_now=True, reason="leaked")
    assert result.ok and f"revoked {t1}" in result.message, result.message


def test_a_plain_bootstrap_into_emptied_stores_retires_the_token_rotator_published_last(world: World) -> None:
    """The secrets were deleted (a store wiped, a new mount) and a person bootstraps a new token: the
    token rotator published last is still valid and no store names it. It is revoked after grace
    (invariant 2), said in the result and the audit event; the same command again retires nothing."""
    world.bootstrap()
    t1 = rotate(world).new_token_id
    world.settle()
    world.empty_stores()
    value, human = world.issuer.tokens.create("made by a human, after the stores were wiped")
    result = world.engine().bootstrap(Secret(value), human, None)
    assert result.ok and result.also_revoked == t1 and f"token {t1}, the token rotator published last" in result.message
    (rev,) = world.journal.revocations(POLICY, "pending")
    assert (rev.token_id, rev.due_at) == (t1, world.clock.now() + GRACE)
    (event,) = [e for e in world.journal.events(POLICY) if (e["step"], e["result"], e["run_id"]) == (
        "bootstrap", "ok", result.run_id)]
    assert event["also_revoke"] == t1
    again = world.engine().bootstrap(Secret(value), human, None)
    assert again.ok and again.also_revoked is None and again.run_id is None
    assert again.message.startswith(f"token {human} is bootstrapped already"), again.message
    assert t1 in world.active_ids(), "not before its grace"
    world.settle()
    assert world.active_ids() == {human}


def test_a_plain_bootstrap_over_an_unmanaged_copy_of_the_last_token_retires_it(tmp_path: Path) -> None:
    """``adopt = true``: the stores were recreated by hand with the token rotator published last, in a
    payload without rotator's marker. The bootstrap overwrites it, so that token is retired too."""
    world = World(tmp_path)
    world.adopt = True
    world.bootstrap()
    t1 = rotate(world).new_token_id
    world.settle()
    record = world.stores["a"].read_current().record
    assert record is not None and record.token_id == t1
    world.empty_stores()
    for store in world.stores.values():
        store.write_foreign(record.payload())
    value, human = world.issuer.tokens.create("made by a human")
    result = world.engine().bootstrap(Secret(value), human, None)
    assert result.ok and result.also_revoked == t1, result
    world.settle()
    assert world.active_ids() == {human}


def test_a_bootstrap_is_published_when_its_last_store_write_is_done(world: World) -> None:
    """Store writes may be retried (backoff) for long: the run's published_at, its event and the
    replaced tokens' grace start once every store holds the token, not when the bootstrap began."""
    world.stores["b"].fail_next("publish", TransientError("b is slow"), times=2)
    world.bootstrap()
    (run,) = world.journal.runs(POLICY, limit=0)
    assert run.published_at == world.clock.now() and run.published_at > START, "after the retries' waits"
    (event,) = [e for e in world.journal.events(POLICY) if e["step"] == "bootstrap"]
    assert event["at"] == run.published_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_a_mint_that_starts_long_after_minting_was_journaled_moves_recovery_s_wait(world: World) -> None:
    """A commits MINTING at t0 and is stopped for 90 s, past its 60 s lease, which nobody takes. It
    resumes, renews the lease and starts its mint's child (130 s call timeout), and is stopped again.
    B takes the lease once it expires and recovers at t0+151 s; the child's create lands at t0+153 s,
    and A is killed while stopped. Recovery must wait for that child: before, its wait counted from
    t0 (until t0+140 s), it found no token, closed the run, and the token was left valid, held by
    no store and tracked by nothing. Now the late try moves the run's mint start first."""
    ttl = timedelta(seconds=60)
    world.bootstrap()
    t0: list[datetime] = []

    class SlowIssuer(MemoryIssuer):
        call_timeout_seconds = 130.0

        def mint(self, request: Any, credential: Secret | None) -> Any:
            world.clock.advance(ttl + timedelta(seconds=1))  # A stopped again; its renewed lease expires
            b = Engine(world.policy, world.journal, issuer=self, stores=list(world.stores.items()), clock=world.clock,
                       retry=RetryPolicy(3, 1.0, 4.0), holder="engine-b", lease_ttl=ttl)
            b.recover()
            world.clock.advance(timedelta(seconds=2))  # the child's create lands
            self.tokens.create(request.description, request.expires_at)
            raise Crash("A, still stopped, is killed")

    def stopped_after_minting(name: str) -> None:
        if name == "minting":
            t0.append(world.clock.now())
            world.clock.advance(timedelta(seconds=90))

    issuer = SlowIssuer(world.issuer.tokens, clock=world.clock, check_credential=True)
    a = Engine(world.policy, world.journal, issuer=issuer, stores=list(world.stores.items()), clock=world.clock,
               retry=RetryPolicy(3, 1.0, 4.0), holder="engine-a", lease_ttl=ttl, checkpoint=stopped_after_minting)
    with pytest.raises(Crash):
        a.rotate()
    runs = world.journal.open_runs(POLICY)
    assert len(runs) == 1, "B closed the run while A's child could still mint"
    assert runs[0].mint_started_at == t0[0] + timedelta(seconds=90), "the late try moved the mint start"
    world.clock.advance(timedelta(minutes=5))
    b = Engine(world.policy, world.journal, issuer=issuer, stores=list(world.stores.items()), clock=world.clock,
               retry=RetryPolicy(3, 1.0, 4.0), holder="engine-b", lease_ttl=ttl)
    b.recover()
    assert not world.journal.open_runs(POLICY)
    world.check_invariants(settled=True)


def test_a_replacement_bootstrap_run_again_after_it_succeeded_writes_nothing(world: World) -> None:
    """`bootstrap --replace` run again (its answer lost, a script's retry) recorded a second replacement
    that replaced nothing ("replaced (nothing)"): a repair counted twice in the audit trail and the
    report, and the token made younger. Now, as for a plain bootstrap: nothing is written."""
    world.bootstrap()
    rotate(world)
    value, human = world.issuer.tokens.create("made by a human to repair")
    first = world.engine().bootstrap(Secret(value), human, None, replace=True, reason="incident")
    assert first.ok and first.run_id is not None
    events = len(world.journal.events(POLICY))
    runs = len(world.journal.runs(POLICY, limit=0))
    again = world.engine().bootstrap(Secret(value), human, None, replace=True, reason="incident")
    assert again.ok and again.run_id is None, again
    assert again.message.startswith(f"token {human} is bootstrapped already"), again.message
    assert (len(world.journal.events(POLICY)), len(world.journal.runs(POLICY, limit=0))) == (events, runs)
