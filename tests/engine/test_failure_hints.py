"""What a failure tells the operator to do next, on the engine's in-memory world (FakeClock: the
retries and verify_timeout pass on the fake clock):

- a revocation that fails and is postponed says, the first time already, until when it waits and
  that `rotator revoke-expired --retry-failed POLICY` tries it at once (a plain pass waits out the
  backoff even after the cause is fixed);
- a VERIFY that gives up at verify_timeout names that setting and its value (the adapter's "a new
  token can take a while" was advice for the retries, which are over) and says what became of the
  candidate: revoked, or left for the next run / `rotator recover` when revoking it failed too.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.config.policy_types import Policy
from rotator.config.timefmt import rfc3339_seconds
from rotator.core.errors import NotYetAccepted, PermanentError, TransientError
from rotator.core.journal import RunState
from rotator.core.secret import Secret
from tests.engine.test_mint_without_answer import LateIssuer
from tests.engine.test_state_machine import GRACE, POLICY, START, World, rotate

ADAPTER_HINT = "a new token can take a while to become active"
RETRY_NOW = f"`rotator revoke-expired --retry-failed {POLICY}` tries it now"


class ShortVerifyWorld(World):
    """verify_timeout (3s) ends before the mint window of a try without an answer (the memory issuer's
    call timeout, 5s, and a margin)."""

    @property
    def policy(self) -> Policy:
        return super().policy._replace(verify_timeout=timedelta(seconds=3))


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


class RevokeDown:
    """The world's issuer, whose ``revoke`` fails while :attr:`down` (the cluster stopped answering)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.down = inner, True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def revoke(self, token_id: str, credential: Secret | None) -> None:
        if self.down:
            raise TransientError("issuer: revoke timed out (simulated)")
        self.inner.revoke(token_id, credential)


# --------------------------------------------------------------------------------- L2: postponed revocation


def test_a_postponed_revocation_says_until_when_and_names_retry_failed_the_first_time(world: World) -> None:
    old = world.bootstrap()
    rotate(world)
    world.clock.advance(GRACE)
    world.issuer.fail_next("revoke", PermanentError(
        "memory issuer: permission denied", hint="the credential may not manage management tokens"))
    (action,) = world.engine().revoke_due()
    (rev,) = world.journal.revocations(POLICY, "pending")
    assert rev.token_id == old and rev.next_try_at is not None and rev.next_try_at > world.clock.now()
    assert action.startswith(f"token {old}: revocation postponed until {rfc3339_seconds(rev.next_try_at)}: "), action
    assert "permission denied" in action and "may not manage management tokens" in action, "the cause is kept"
    assert action.endswith(f"; the token is still valid: once the cause is fixed, {RETRY_NOW}"), action
    assert old in world.active_ids()
    # the cause fixed, the command the line names revokes it at once (a plain pass waits out the backoff)
    assert world.engine().revoke_due() == []
    assert world.engine().revoke_due(retry_failed=True) == [f"token {old}: revoked"]
    world.check_invariants(settled=True)


def test_an_emergency_whose_revocation_is_postponed_names_retry_failed_once(world: World) -> None:
    """The emergency's NeedsAttention quotes the action and gives --retry-failed in its hint: the
    action's own advice is not repeated in the message."""
    leaked = world.bootstrap()
    world.issuer.fail_next("revoke", TransientError("memory issuer: unavailable"), times=3)
    with pytest.raises(Exception) as raised:
        world.engine().rotate(revoke_previous_now=True, reason="leaked")
    text = f"{raised.value} {getattr(raised.value, 'hint', '')}"
    assert f"{leaked} are NOT revoked" in text and "postponed until" in text, text
    assert text.count("--retry-failed") == 1, text


# --------------------------------------------------------------------------------- L3: verify gives up


def _run(w: World) -> Any:
    (run,) = [r for r in w.journal.runs(POLICY) if r.kind == "rotate"]
    return run


def test_verify_that_gives_up_names_verify_timeout_and_the_revoked_candidate(world: World) -> None:
    old = world.bootstrap()
    world.issuer.fail_next("verify", NotYetAccepted("memory issuer: 401 on /query", hint=ADAPTER_HINT), times=100)
    with pytest.raises(TransientError) as raised:
        world.engine().rotate()
    exc = raised.value
    assert (world.clock.now() - START).total_seconds() >= 25, "retried until verify_timeout (30s)"
    assert str(exc) == "memory issuer: 401 on /query", "the adapter's what and where stay the message"
    assert isinstance(exc.__cause__, NotYetAccepted)
    run = _run(world)
    assert exc.hint.startswith(
        "the new token was not accepted within verify_timeout (30s): if the cluster activates tokens slowly, "
        "raise verify_timeout; then run the same command again"), exc.hint
    assert ADAPTER_HINT not in exc.hint
    assert f"rotator revoked the new token {run.new_token_id}" in exc.hint, exc.hint
    assert run.state == RunState.FAILED and run.new_token_id not in world.active_ids()
    assert run.error is not None and "verify_timeout (30s)" in run.error, "the journal says so too"
    assert world.held() == {"a": old, "b": old}
    assert "memtok-" not in f"{exc} {exc.hint} {run.error}", "no token value (the memory issuer's memtok-...)"
    world.check_invariants(settled=True)


def test_verify_that_gives_up_with_the_candidates_revoke_failing_leaves_it_to_the_next_run(world: World) -> None:
    world.bootstrap()
    issuer = world.issuer = RevokeDown(world.issuer)  # type: ignore[assignment]
    world.issuer.fail_next("verify", NotYetAccepted("memory issuer: 401 on /query", hint=ADAPTER_HINT), times=100)
    with pytest.raises(TransientError) as raised:
        world.engine().rotate()
    hint = raised.value.hint
    run = _run(world)
    assert "verify_timeout (30s)" in hint, hint
    assert (f"revoking the new token {run.new_token_id} failed too: the run stays open, and the next run "
            f"(or `rotator recover {POLICY}`) revokes it first") in hint, hint
    assert "rotator revoked" not in hint
    assert run.state == RunState.REVOKING_NEW and run.new_token_id in world.active_ids()
    issuer.down = False
    world.engine().recover()
    assert run.new_token_id not in world.active_ids(), "what the hint said: recover revoked it"
    world.check_invariants(settled=True)


def test_verify_that_keeps_failing_otherwise_does_not_advise_a_longer_timeout(world: World) -> None:
    world.bootstrap()
    down = "the cluster did not answer: check its host and port"
    world.issuer.fail_next("verify", TransientError("memory issuer: connection refused", hint=down), times=100)
    with pytest.raises(TransientError) as raised:
        world.engine().rotate()
    hint = raised.value.hint
    assert str(raised.value) == "memory issuer: connection refused"
    assert hint.startswith(f"verifying the new token kept failing until verify_timeout (30s) ran out ({down}); "
                           "once the issuer answers again, run the same command again"), hint
    assert "raise verify_timeout" not in hint and "rotator revoked the new token" in hint


def test_verify_that_gives_up_after_a_mint_try_without_answer_says_the_run_stays_open(tmp_path: Path) -> None:
    """The candidate is revoked, but a try of its mint got no answer: the run stays open until that
    try cannot land any more, and the hint says until when."""
    world = ShortVerifyWorld(tmp_path)
    world.bootstrap()
    world.issuer = LateIssuer(world.issuer)  # type: ignore[assignment]
    world.issuer.fail_next("verify", NotYetAccepted("memory issuer: 401 on /query", hint=ADAPTER_HINT), times=100)
    with pytest.raises(TransientError) as raised:
        world.engine().rotate()
    hint = raised.value.hint
    run = _run(world)
    assert run.state == RunState.REVOKING_NEW and run.tag_search_until is not None
    assert f"rotator revoked the new token {run.new_token_id} (no store was written); the run stays open until " \
           f"{rfc3339_seconds(run.tag_search_until)}: a try of its mint got no answer" in hint, hint
