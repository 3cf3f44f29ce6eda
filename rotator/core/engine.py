"""The rotation state machine: PLAN -> MINT -> VERIFY -> PUBLISH -> (grace) -> REVOKE_OLD.

Every step is journaled *before* its side effect (numbered comments below), so that a process
killed at any instant can be resumed by :meth:`Engine.recover`:

- a run that published (to some or all stores) is rolled forward, reading the new value back
  from a store that holds it;
- a run that minted but never published is rolled back: the candidate is revoked, found by its
  id or, when the process died inside the mint call, by the ``rotator:<policy>:<run-id>`` tag.

A token that any store still holds as current is never revoked (:meth:`Engine._safe_revoke`).
The engine never touches a scheduler: callers (CLI, daemon, Lambda) decide when to call it.

Fencing (DESIGN invariant 7): every operation runs under the policy's lease, whose fencing number
(``self._fence``) only grows. Every journal write of a run passes it (the journal checks it in the
same transaction, and moves run states only forward, compare-and-set), and every side effect
(mint, publish, revoke) is preceded by :meth:`Engine._fenced`. A process that was paused past its
lease and finds a newer fencing number stops with LeaseLost: no side effect, no journal state
written, an audit event ``<operation>/aborted``.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any, TypeVar

from rotator.config import registry
from rotator.config.policy_types import Policy
from rotator.config.schedule import format_duration
from rotator.config.timefmt import as_utc, rfc3339_seconds
from rotator.core import audit_chain
from rotator.core.child_process import start_children_within
from rotator.core.clock import Clock, SystemClock
from rotator.core.contracts import (
    Issuer,
    MintRequest,
    Store,
    StoreState,
    TokenInfo,
    TokenRecord,
    call_timeout_of,
    target_of,
    with_unlisted,
)
from rotator.core.due import max_age_of
from rotator.core.errors import (
    BadTokenId,
    ConfigError,
    ConflictError,
    JournalError,
    LeaseBusy,
    LeaseLost,
    MalformedPayload,
    NeedsAttention,
    NotYetAccepted,
    OwnershipError,
    PermanentError,
    RotatorError,
    TransientError,
)
from rotator.core.errors import describe as _describe
from rotator.core.journal import (
    Journal,
    Preflight,
    Revocation,
    RevocationState,
    RunRecord,
    RunState,
    dismissal_note,
    ts,
)
from rotator.core.one_line import one_line
from rotator.core.retry import RetryPolicy, call_with_retry
from rotator.core.revocation_rule import (
    ABANDONED_PREFIX,
    CLOCK_SLACK,
    Claim,
    abandoned_note,
    carries_tag,
    check_not_current,
    check_revocable,
    check_run_target,
    check_same_target,
    in_record,
    unrecorded_gone_reason,
)
from rotator.core.secret import REDACTOR, Secret, value_sha256

__all__ = ["ANY_RUN", "DRY_RUN", "NOTHING_TO_DO", "Engine", "NeedsAttention", "RunResult", "default_holder",
           "live_lease_holder", "new_run_id", "postponed_advice"]

T = TypeVar("T")
logger = logging.getLogger("rotator.engine")
audit_logger = logging.getLogger("rotator.audit")

#: A revocation that still fails after this many rounds is marked failed and alerts.
MAX_REVOCATION_ROUNDS = 10
#: the longest after the start of a side effect's try (its lease check comes after) that a child
#: process of it (influxctl) may start: recovery's mint window counts from the run's mint start
#: (see Engine._mint_settles_at)
FORK_WITHIN_S = 5.0
#: Added to a dead run's last mint start + the issuer's call timeout before its tag search is final
#: (clock differences between replicas, process start-up).
MINT_SETTLE_MARGIN = timedelta(seconds=10)
#: A mint's try that starts more than this after the run's journaled mint start moves that start
#: first (Engine._rotate_locked); this plus FORK_WITHIN_S stays within MINT_SETTLE_MARGIN.
MINT_START_SLACK = timedelta(seconds=1)
#: RunResult states that are not run states: a dry run's plan, and a run that was not due
DRY_RUN = "dry-run"
NOTHING_TO_DO = "nothing-to-do"
#: In an open run's error: its recovery failed. The journal's overview, `rotator status` and the daemon
#: (rotator_needs_attention) count such a run as stuck, so a retry keeps it until its outcome is known.
_RECOVERY_FAILED = "recovery failed"
#: In a run's error: its discard could not revoke a token of the run (its candidate, or one its tag
#: search found), which stays valid: ``revoke_new`` / ``failed`` named that token (the orphan webhook,
#: rotator_orphans_total) and :data:`_REPORTED` lists it.
_CANDIDATE_NOT_REVOKED = "revoking the candidate failed"
#: In a run's error: its discard could not find out what the run left (the listing of its tag failed
#: after its candidate, if any, was revoked; or, on a later try, a listing before the candidate's
#: revocation, which an earlier try may have done). No token is known to be left valid, so nothing is
#: reported as an orphan (``revoke_new`` / ``search_failed``): the run stays open, stuck, and every
#: recovery searches again.
_TAG_NOT_SEARCHED = "searching for its tokens failed"
#: In a run's error, last: the ids of the tokens its discard reported as left valid, a JSON list. A later
#: failed try of one of them writes ``revoke_new`` / ``failed_again`` (not an orphan again): one token
#: left valid is reported once, across restarts too; another token of the run is reported on its own.
_REPORTED = "; reported as left valid: "
#: The most token ids a run's error remembers as reported (a run mints one token; more only through
#: retries of a mint that got no answer). One beyond them is reported at every failed try: never missed.
_REPORTED_MAX = 8


class _AnyRun:
    """``Engine.rotate(expect_last_run=ANY_RUN)``: rotate whatever the last successful run is."""

    def __repr__(self) -> str:
        return "ANY_RUN"


ANY_RUN = _AnyRun()


@dataclass
class _Revoking:
    """The token a discard is revoking (None between revocations: a failure then is its tag's listing),
    and whether it is known to be valid: the issuer listed it as active (the tag search, or the lookup
    before its revocation), or it is a candidate no discard tried yet. A failure then leaves it valid;
    before that (a listing on a later try, which an earlier try's revocation may precede) nothing is known."""

    token_id: str | None = None
    valid: bool = False

    def start(self, token_id: str, *, valid: bool) -> None:
        self.token_id, self.valid = token_id, valid

    def done(self) -> None:
        self.token_id, self.valid = None, False

    def left_valid(self) -> str | None:
        """The token a failure now leaves valid, as far as is known."""
        return self.token_id if self.valid else None


class _Unread:
    """``Engine._publish_all(last_published=_UNREAD)``: not read yet (no preflight came first)."""


_UNREAD = _Unread()


class _Replan(Exception):
    """Raised inside the transaction that would take the lease with the run (Engine._new_run) when
    the lease changed hands since the preflight read: that transaction rolls back (nothing written,
    no side effect made yet) and the rotation starts again the long way, lease first."""


class _NotVerifiedInTime(TransientError):
    """VERIFY gave up at verify_timeout: the issuer's last refusal's message (what and where), with a
    hint that names the setting and, once the run's discard is done, what became of the candidate."""


def _noting_unanswered(fn: Callable[[], T], unanswered: list[Exception]) -> Callable[[], T]:
    """``fn``, appending to ``unanswered`` the error of each call that fails without a definite refusal
    (anything but a PermanentError): its side effect may have happened with the answer lost, or may
    still happen."""

    def call() -> T:
        try:
            return fn()
        except PermanentError:
            raise
        except Exception as exc:
            unanswered.append(exc)
            raise

    return call


def _kept_valid(kept: Mapping[str, str], verb: str = "stays") -> str:
    """What a message adds for each replaced token whose revocation a person dismissed (token -> reason)."""
    return "".join(f"; token {token_id} {verb} valid: its revocation was dismissed ({reason or 'no reason'})"
                   for token_id, reason in kept.items())


def postponed_advice(policy: str) -> str:
    """What a postponed revocation's line adds (here and in cli.cmd_revoke_expired's): the backoff keeps a
    timer's pass from retrying in a loop, so a person who fixed the cause needs the way past it."""
    return (f"; the token is still valid: once the cause is fixed, `rotator revoke-expired --retry-failed {policy}` "
            "tries it now")


def new_run_id() -> str:
    """The default run id: 16 random hex digits."""
    return uuid.uuid4().hex[:16]


@dataclass
class RunResult:
    policy: str
    state: str
    run_id: str | None = None
    old_token_id: str | None = None
    new_token_id: str | None = None
    message: str = ""
    dry_run: bool = False
    actions: list[str] = field(default_factory=list)
    #: the token the journal published last, retired too because the stores named another one
    also_revoked: str | None = None

    @property
    def ok(self) -> bool:
        return self.state in (*RunState.SUCCESS, DRY_RUN, NOTHING_TO_DO)

    def to_json(self) -> dict[str, Any]:
        return {
            "policy": self.policy, "state": self.state, "run_id": self.run_id, "ok": self.ok,
            "old_token_id": self.old_token_id, "new_token_id": self.new_token_id,
            "message": self.message, "dry_run": self.dry_run, "actions": self.actions,
            "also_revoked": self.also_revoked,
        }  # fmt: skip


def default_holder() -> str:
    """``instance:pid:nonce:pidns:boot``. The instance is $ROTATOR_INSTANCE (e.g. a pod name) or the
    host name; ``pidns`` names the process's PID namespace and ``boot`` the kernel's boot (Linux; both
    empty elsewhere): a process id means nothing outside them (a container that shares the host name,
    another machine with the same name, the same machine before a reboot)."""
    return f"{audit_chain.instance_name()}:{os.getpid()}:{uuid.uuid4().hex[:8]}:{_pid_namespace()}:{_boot_id()}"


@functools.cache
def _pid_namespace() -> str:
    """This process's PID namespace, the inode of /proc/self/ns/pid ("" where there is none)."""
    try:
        link = os.readlink("/proc/self/ns/pid")  # "pid:[4026531836]"
    except OSError:
        return ""
    return link.removeprefix("pid:[").removesuffix("]")


@functools.cache
def _boot_id() -> str:
    """The running kernel's random boot id, without its dashes ("" where there is none). Two
    machines that share a host name have the same initial PID namespace inode, but not this."""
    try:
        with open("/proc/sys/kernel/random/boot_id", "rb") as file:
            digits = file.read(64).strip().replace(b"-", b"").decode("ascii").lower()
        int(digits, 16)
    except (OSError, UnicodeDecodeError, ValueError):
        return ""
    return digits if len(digits) == 32 else ""


def takes_over_dead_holders() -> bool:
    """Whether this process can tell that a lease's holder on this machine has died (it reads the
    boot id): else a dead holder's lease is waited out (``lease_ttl``), e.g. under systemd's
    ``ProcSubset=pid``, which hides /proc/sys."""
    return bool(_boot_id())


def live_lease_holder(journal: Journal, policy: str, now: datetime) -> str | None:
    """Who holds ``policy``'s lease at ``now`` and is still running: None when the lease expired or was
    released (the test by which `rotator status` counts a policy's open runs as interrupted), or when
    its holder is a process of this host that is gone (:meth:`Engine._take_lease` takes that lease over
    at once). An open run under a live holder is in progress, not interrupted: recovering it now would
    only meet LeaseBusy (`rotate --if-due` and `revoke_due` leave it to its holder)."""
    holder = journal.lease_holder(policy, now)
    return None if holder is None or _holder_is_dead(holder) else holder


#: what a bootstrap's token id is, by issuer (docs/issuers.md)
_BOOTSTRAP_ID_HINT = (
    "pass the id the issuer gives the token: influxctl prints it at `management create` / `token create` and "
    "lists it (`management list`, `token list`); InfluxDB v2: the authorization's id (`influx auth list`, 16 hex "
    "digits); InfluxDB 3: the admin token's name; the Management API: the database token's id (a UUID)"
)


#: what a stopped emergency rotation's hint says of the tokens it left (Engine._say_still_valid)
_STILL_VALID = "still valid and NOT revoked"

class Engine:
    """Rotates one policy. Not thread-safe: one run of a policy at a time (the lease ensures it)."""

    def __init__(
        self,
        policy: Policy,
        journal: Journal,
        *,
        issuer: Issuer | None = None,
        stores: list[tuple[str, Store]] | None = None,
        clock: Clock | None = None,
        retry: RetryPolicy | None = None,
        lease_ttl: timedelta = timedelta(minutes=15),
        holder: str | None = None,
        checkpoint: Callable[[str], None] | None = None,
        listeners: Sequence[Callable[[dict[str, Any]], None]] = (),
        run_id_factory: Callable[[], str] = new_run_id,
    ) -> None:
        self.policy = policy
        self.journal = journal
        #: logged by every run; computed at the first (the policy and its adapters' settings do not
        #: change), not here: a daemon builds an engine for every policy before it is ready
        self._transport_warnings: list[str] | None = None
        self.issuer = issuer if issuer is not None else registry.build_issuer(policy, policy.context(clock))
        self.stores = stores if stores is not None else registry.build_stores(policy, policy.context(clock))
        self.clock = clock or SystemClock()
        self.retry = retry or RetryPolicy()
        self.lease_ttl = lease_ttl
        self.holder = holder or default_holder()
        self._checkpoint = checkpoint or (lambda _name: None)
        #: Called with every audit event (audit files, webhooks, post-publish hooks); a failing
        #: listener is logged and never stops a run.
        self.listeners = list(listeners)
        self.log = logging.LoggerAdapter(logger, {"policy": policy.name})
        #: makes the id of every new run (tests inject a predictable one)
        self.run_id_factory = run_id_factory
        #: the fencing number of the lease this engine holds now (None: no lease held)
        self._fence: int | None = None

    # ------------------------------------------------------------------ public operations
    def rotate(self, *, dry_run: bool = False, revoke_previous_now: bool = False, reason: str = "",
               expect_last_run: str | None | _AnyRun = ANY_RUN) -> RunResult:
        """Rotate now. Recovers unfinished runs and revokes due tokens first.

        ``revoke_previous_now``: the compromise response. The previous token is revoked as soon as
        every store holds the new one, skipping grace (still only if rotator's records prove it is
        this policy's token, rotator/core/revocation_rule.py); audited as an emergency rotation.

        ``expect_last_run``: rotate only if the policy's last successful run is still this one (None:
        there is none), e.g. the run a scheduler planned this due time from; otherwise (another
        rotator served it meanwhile, or recovery finished an interrupted rotation) a NOTHING_TO_DO
        result, without a run. Checked before anything else, and made to hold at the lease (below).

        The steady case costs five commits (the lease has none of its own): a preflight read (lease
        row, open runs, due revocations and their claims, last success); PLAN's store and issuer
        reads, without the lease (no side effect); then the lease is taken in the run's PLANNED
        transaction, on condition that the lease row is still the one the preflight read, a released
        one (or this engine's own), so that nobody held the lease since. Else that transaction rolls
        back and the rotation starts again lease first, as it does when there are open runs to
        recover, for an emergency rotation, and when the preflight read a row that names another
        holder, live or expired (the holder of an expired lease that nobody took may still write
        under it without changing the row: Preflight.fence_planning_first).
        """
        if dry_run:
            return self._plan_only()
        expect = not isinstance(expect_last_run, _AnyRun)
        if not revoke_previous_now:
            now = self.clock.now()
            seen = self.journal.preflight(self.policy.name, now)
            if expect and seen.last_success != expect_last_run:
                return self._nothing_to_do("rotated by another rotator meanwhile; nothing to do")
            if not seen.open_runs and seen.fence_planning_first(self.holder, now) is not None:
                try:
                    with self._lease("rotate", take=False):
                        result = self._rotate_locked(seen)
                        if result.state in RunState.SUCCESS and self.policy.grace <= timedelta(0):
                            self._revoke_replaced_now(result)
                        return result
                except _Replan:
                    self.log.info("the policy's lease changed hands since the preflight read; planning again")
        with self._lease("rotate"):
            try:
                actions = self._recover_locked()
            except RotatorError as exc:
                if revoke_previous_now:
                    self._say_still_valid(exc)
                raise
            if expect and self.journal.last_success_id(self.policy.name) != expect_last_run:
                return self._nothing_to_do("recovery finished an interrupted rotation or another rotator rotated; "
                                           "nothing more to do", actions)
            unrevoked: list[str] = []
            if revoke_previous_now:
                self._event("emergency", "start", None, reason=reason or "(none given)")
                # Every token this policy replaced and rotator has not revoked: the leaked one may be any
                # of them. Above all the leaked token of an earlier emergency rotation that stopped: its
                # revocation failed (pending in a backoff, or failed after its rounds), or it stopped
                # before it (a store refused, a kill), so that recovery (just above, or the daemon's)
                # rolled its run forward and scheduled the leaked token after grace like any other.
                # Running the emergency again once the cause is fixed must revoke those too, or say that
                # it could not (_revoke_left_due), not only the token the first try minted.
                unrevoked = [r.token_id for r in self.journal.unfinished_revocations(self.policy.name)]
            try:
                result = self._rotate_locked(emergency=revoke_previous_now)
            except RotatorError as exc:
                if revoke_previous_now:
                    self._say_still_valid(exc)
                raise
            result.actions = actions + result.actions
            # the replaced token, and the journal's last published one when the stores named another
            # (Engine._publish_all): both were current until now. Their rows may be an earlier run's
            # (a token current again after an older version was restored).
            previous = [t for t in (result.old_token_id, result.also_revoked) if t]
            earlier = [t for t in unrevoked if t not in previous]
            if result.state in RunState.SUCCESS and revoke_previous_now and (previous or earlier):
                now = self.clock.now()
                # (earlier ones due now too: one that fails below is then what `revoke-expired
                # --retry-failed`, which the failure's hint names, tries at once, not after its grace)
                for rev in self.journal.revocations(self.policy.name, "pending"):
                    if rev.token_id in previous or (rev.token_id in earlier and rev.due_at > now):
                        self.journal.update_revocation(rev, fence=self._fence, due_at=now, next_try_at=None)
                self._event("emergency", "revoke_now", result.run_id, token_id=result.old_token_id,
                            also_revoke=result.also_revoked, earlier=earlier or None)
            # Due revocations were done before the mint (_rotate_locked); one is due now only when the
            # token just replaced is (no grace, or the emergency).
            if result.state in RunState.SUCCESS and (revoke_previous_now or self.policy.grace <= timedelta(0)):
                self._revoke_replaced_now(result)
                if revoke_previous_now and earlier:
                    result.actions += self._revoke_left_due(earlier, result.actions)
                rushed = previous + earlier
                if revoke_previous_now and rushed:
                    done = {r.token_id for r in self.journal.revocations(self.policy.name, "done")
                            if r.token_id in rushed}  # revoked already, before this rotation
                    revoked = [t for t in rushed if t in done
                               or any(a.startswith(f"token {t}: revoked") for a in result.actions)]
                    if len(revoked) < len(rushed):
                        kept = self.journal.dismissed_revocations(self.policy.name, rushed)
                        # (each action's own --retry-failed advice left out: the hint below gives it once)
                        advice = postponed_advice(self.policy.name)
                        failed = [a.removesuffix(advice) for t in rushed if t not in revoked for a in result.actions
                                  if a.startswith(f"token {t}:")] or [
                            f"token {t}'s revocation was dismissed ({reason or 'no reason'}), so rotator does "
                            "not revoke it" for t, reason in kept.items()] or ["no revocation was due"]
                        left = [t for t in rushed if t not in revoked]
                        self._event("emergency", "failed", result.run_id, token_id=left[0],
                                    also_revoke=left[1] if len(left) > 1 else None, error=failed[0],
                                    not_revoked=left if len(left) > 2 else None)
                        # (--retry-failed tries a postponed revocation at once too: plain revoke-expired
                        # waits out its backoff, and says until when)
                        raise NeedsAttention(
                            f"emergency rotation: the new token {result.new_token_id} is published, but the "
                            f"previous token(s) {', '.join(left)} are NOT revoked: {'; '.join(failed)}",
                            hint="revoke them with the issuer's own tool now" + (
                                ": rotator never revokes a token whose revocation was dismissed" if kept
                                and set(left) <= set(kept) else ", or fix the cause and run "
                                f"`rotator revoke-expired --retry-failed {self.policy.name}` (it tries them at once)"),
                        )
                    self._event("emergency", "ok", result.run_id, token_id=result.old_token_id,
                                also_revoke=result.also_revoked, earlier=earlier or None)
                    result.message = (f"emergency rotation: published {result.new_token_id}, " + (
                        f"revoked {' and '.join(previous)} at once (grace skipped)" if previous
                        else "no previous token to revoke"))
                    if earlier:
                        result.message += (f"; also revoked {', '.join(earlier)}, left valid by an earlier run "
                                           "(in its grace period, or its revocation failed)")
            return result

    def _say_still_valid(self, exc: RotatorError) -> None:
        """An emergency rotation that stopped before its revocation (in its recovery, or in its run): its
        error says which tokens are still valid (the current one, and those replaced and not revoked, as the
        journal says now: the run may have revoked some before it stopped), and that the same command, once
        the cause is fixed, revokes them."""
        if _STILL_VALID in exc.hint:  # (the same exception raised again)
            return
        try:
            last_id = self.journal.last_success_id(self.policy.name)
            last = self.journal.get_run(last_id) if last_id else None
            unrevoked = [r.token_id for r in self.journal.unfinished_revocations(self.policy.name)]
        except Exception:  # (the journal may be what failed: the error itself matters more than the ids)
            last, unrevoked = None, []
        valid = [t for t in (last.new_token_id if last else None, *unrevoked) if t]
        tokens = f"the previous token(s) {', '.join(dict.fromkeys(valid))} are" if valid else "the previous token is"
        exc.hint = (f"{exc.hint}; " if exc.hint else "") + (
            f"{tokens} {_STILL_VALID}: fix the cause, then run the same emergency command again (it revokes "
            "them), or revoke them with the issuer's own tool now")

    def _revoke_left_due(self, tokens: Sequence[str], tried: Sequence[str]) -> list[str]:
        """An emergency rotation's pass over ``tokens``, the revocations earlier runs left and not
        done (pending, due or in their grace period, or failed). Each one this run has not tried yet
        (``tried``: its actions; the pass before the mint takes those whose backoff has ended) is tried
        once now, backoff or not, through the same checks and fenced path as any revocation (:meth:`_revoke_one`)."""
        actions: list[str] = []
        states: dict[str, StoreState] | None = None
        for rev in self.journal.unfinished_revocations(self.policy.name):
            if rev.token_id in tokens and not any(a.startswith(f"token {rev.token_id}:") for a in tried):
                message, states = self._revoke_one(rev, states)
                actions.append(message)
        return actions

    def _revoke_replaced_now(self, result: RunResult) -> None:
        """After a run that published: revoke what is due now (the token it replaced, with no grace
        or in an emergency), and take the run's state from the journal."""
        result.actions += self._revoke_due_locked()
        refreshed = self.journal.get_run(result.run_id or "")
        if refreshed is not None:
            result.state = refreshed.state

    def recover(self) -> list[str]:
        """Finish or undo unfinished runs, then revoke tokens whose grace has passed."""
        with self._lease("recover"):
            return self._recover_locked() + self._revoke_due_locked()

    def revoke_due(self, *, retry_failed: bool = False) -> list[str]:
        """Revoke the tokens of this policy whose grace period has passed.

        An open run (one that died, e.g. inside a mint whose child may still create a token) is
        recovered first: every pass searches its tag again until its mint window has passed. One whose
        lease a live process holds is in progress there and left to it (:func:`live_lease_holder`).
        ``retry_failed``: also try again the revocations that gave up (``failed``), once their cause
        is fixed; each goes through the same checks as a pending one, and stays failed if they refuse.
        A person who fixed the cause asks for it, so the due pending ones are tried now too, those
        waiting out the backoff of a failed try included: the leaked token of an emergency rotation
        whose revocation failed is revoked by this command, not at a retry time. Without it (the
        daemon's pass, a timer's) the backoff holds, so that nothing retries a failing revocation in
        a loop (:meth:`postponed_revocations` names those it waits for).
        """
        # An open run whose lease a live process holds is that process's run in progress (it revokes what
        # its rotation replaced, and searches the last run's tag): not this pass's to recover, and no
        # reason for a pass with nothing due to take the lease and exit busy. Work that is due still
        # takes the lease below, and meets LeaseBusy while that run lasts.
        open_runs = bool(self.journal.open_runs(self.policy.name))
        in_progress = open_runs and self._run_in_progress()
        open_runs = open_runs and not in_progress
        if open_runs and not retry_failed:
            return self.recover()
        failed = self.journal.revocations(self.policy.name, RevocationState.FAILED) if retry_failed else []
        if not open_runs and not failed and not self._due_now(ignore_backoff=retry_failed) \
                and not self.journal.tag_searches(self.policy.name):
            return []
        with self._lease("revoke"):
            if in_progress:  # that run ended, or died, since: under the lease, an open run is interrupted
                open_runs = bool(self.journal.open_runs(self.policy.name))
            actions = self._recover_locked() if open_runs else []
            # read again under the lease (what another process did meanwhile counts), and before the
            # pending pass: a revocation that fails in it is not tried a second time in this one
            failed = self.journal.revocations(self.policy.name, RevocationState.FAILED) if retry_failed else []
            actions += self._revoke_due_locked(ignore_backoff=retry_failed)
            states = None
            for rev in failed:
                message, states = self._revoke_one(rev, states)
                actions.append(message)
            if not open_runs:  # (recovery searched them)
                actions += self._search_published_tags()
        return actions

    def _run_in_progress(self) -> bool:
        """Whether another process, alive, holds this policy's lease (:func:`live_lease_holder`)."""
        holder = live_lease_holder(self.journal, self.policy.name, self.clock.now())
        return holder is not None and holder != self.holder

    def postponed_revocations(self) -> list[Revocation]:
        """This policy's revocations that are due but wait out the backoff of a failed try (pending,
        ``next_try_at`` still to come): their tokens are still valid, and a plain pass skips them."""
        now = self.clock.now()
        return [rev for rev in self.journal.pending_revocations(self.policy.name)
                if rev.due_at <= now and rev.next_try_at is not None and rev.next_try_at > now]

    def _due_now(self, *, ignore_backoff: bool = False) -> list[Revocation]:
        """This policy's pending revocations whose due time has come, oldest first; those still in the
        backoff of a failed try only with ``ignore_backoff``."""
        now = self.clock.now()
        if not ignore_backoff:
            return self.journal.due_revocations(now, self.policy.name)
        return [rev for rev in self.journal.pending_revocations(self.policy.name) if rev.due_at <= now]

    def failed_revocations(self) -> list[str]:
        """The token ids of this policy whose revocation gave up (``failed``): valid until revoked."""
        return [rev.token_id for rev in self.journal.revocations(self.policy.name, RevocationState.FAILED)]

    def dismiss_revocation(self, token_id: str, reason: str) -> str:
        """Close a revocation that gave up (``failed``) without revoking the token: a person decided it
        stays valid (a claim refused as not rotator's, a token another team still uses). Recorded with
        its reason in the audit chain (``revoke_old`` / ``dismissed``); rotator never tries it again,
        and ``status`` no longer counts it. The token is not touched."""
        reason = reason.strip()
        if not reason:
            raise ConfigError("--dismiss needs a --reason: it is recorded in the audit trail",
                              hint="say why the token stays valid, e.g. --reason \"team X's token, still in use\"")
        with self._lease("dismiss"):
            rev = next((r for r in self.journal.revocations(self.policy.name) if r.token_id == token_id), None)
            if rev is None:
                raise ConfigError(f"policy {self.policy.name} has no revocation of token {token_id}",
                                  hint="`rotator status --output json` shows the policy's failed revocations; "
                                  "`rotator revoke-expired` names their tokens")
            if rev.state == RevocationState.DISMISSED:  # the same command again: nothing more to do
                return f"token {token_id}: revocation already dismissed (it stays valid)"
            if rev.state != RevocationState.FAILED:
                raise ConfigError(
                    f"the revocation of token {token_id} is {rev.state}, not failed: only a revocation that "
                    "gave up can be dismissed",
                    hint="a pending revocation is still tried (after its grace); dismiss it if it gives up")
            now = self.clock.now()
            with self._step():
                # The reason stays with the row (the event may be pruned one day; the row is not), and
                # the run that scheduled it is finished, as when its revocation is done.
                self.journal.update_revocation(rev, fence=self._fence, state=RevocationState.DISMISSED,
                                               done_at=now, last_error=dismissal_note(reason))
                self.journal.finish_published_run(self.policy.name, rev.run_id, token_id, now, fence=self._fence)
                self._event("revoke_old", "dismissed", rev.run_id, token_id=token_id, reason=reason,
                            last_error=rev.last_error)
        self.log.warning("revocation of token %s dismissed: rotator will not revoke it; reason: %s", token_id, reason)
        return f"token {token_id}: revocation dismissed: rotator will not revoke it (it stays valid); reason: {reason}"

    def abandon_run(self, run_id: str, reason: str) -> str:
        """Close an open run that minted at another target than the one the policy's issuer names now (a
        cluster decommissioned since), without searching for or revoking what it left there: a person
        decided so (``rotator recover --abandon RUN_ID --reason TEXT``). Recovery cannot close such a run
        (revocation_rule.check_run_target: a search elsewhere proves nothing), so without this the
        policy never rotates again once the old cluster is gone for good.

        The run ends ``failed`` (never published, and not ``done``: nothing was revoked), with the reason
        in its ``error`` (the row outlives a prune of the event) and the audit event ``recover`` /
        ``abandoned`` naming the candidate token id, which may still be valid on the old target.
        Refused (ConfigError) for a run that is not open, not this policy's, or that plain recovery
        settles: one minted where the issuer points now, one that records no target (judged wherever
        the issuer points), one that minted nothing (planned; a bootstrap's) or whose token a store holds
        (rolled forward). The same command again says the run was abandoned already.

        A published run whose tag is still searched (a try of its mint had no answer) is open in one
        way only, that search, which never ends at another target (:meth:`_search_tags`): for it, the
        search is ended instead (:meth:`_abandon_tag_search`) and the run stays as it is."""
        reason = reason.strip()
        policy = self.policy.name
        if not reason:
            raise ConfigError("--abandon needs a --reason: it is recorded in the audit trail",
                              hint='say why the old cluster cannot be reached, e.g. --reason "cluster A '
                              'decommissioned, INC-42"')
        recover = f"`rotator recover {policy}`"
        with self._lease("abandon"):
            run = self.journal.get_run(run_id)
            if run is None or run.policy != policy:
                raise ConfigError(
                    f"policy {policy} has no run {run_id}" + (f" (it is a run of policy {run.policy!r})"
                                                              if run is not None else ""),
                    hint=f"the message of {recover} names the run it cannot close; `rotator status --output json "
                    f"{policy}` counts the open runs")
            if run.state in RunState.SUCCESS:
                return self._abandon_tag_search(run, reason)
            if run.state not in RunState.OPEN:
                if run.state == RunState.FAILED and (run.error or "").startswith(ABANDONED_PREFIX):
                    return f"run {run_id}: already abandoned ({run.error})"  # the same command again
                raise ConfigError(f"run {run_id} of policy {policy} is {run.state}, not open: nothing to abandon",
                                  hint="only an unfinished run that recovery cannot close is abandoned")
            target = self._abandon_target(run, "it searches for the run's token there, revokes it and closes the run",
                                          "it revokes what the run left on {target} and closes the run")
            if run.kind == "bootstrap" or run.state == RunState.PLANNED:
                what = ("a bootstrap's (its token is a person's)" if run.kind == "bootstrap"
                        else "planned: it minted nothing")
                raise ConfigError(f"run {run_id} of policy {policy} is {what}: recovery closes it without asking "
                                  f"{run.issuer_target}; nothing to abandon", hint=f"run {recover}")
            states = self._read_stores()
            holders = [n for n, s in states.items() if run.new_token_id and s.token_id == run.new_token_id]
            if holders:
                raise ConfigError(
                    f"run {run_id} of policy {policy}: store(s) {', '.join(holders)} hold its token "
                    f"{run.new_token_id}: recovery publishes it to every store, which needs no issuer; nothing to "
                    "abandon", hint=f"run {recover}")
            if run.state == RunState.VERIFIED:
                # Its process may have sent a store write that is still under way, as recovery's discard
                # guards against: landing later, it would put the abandoned candidate in the store.
                self._fence_stale_publishes(run, states)
            now = self.clock.now()
            token = run.new_token_id
            with self._step():
                # (failed: it ended without publishing; not done, nothing was revoked. The reason is kept
                # with the row, which outlives a prune of the event.)
                ended = {"tag_search_until": None} if run.tag_search_until is not None else {}
                self.journal.update_run(run, fence=self._fence, state=RunState.FAILED, finished_at=now, **ended,
                                        error=abandoned_note(reason, run.issuer_target or "", target))
                self._event("recover", "abandoned", run_id, token_id=token, reason=reason,
                            minted_on=run.issuer_target, issuer_target=target)
        what = f"its token {token}" if token else f"any token tagged {self.policy.tag(run_id)}"
        self.log.warning("run %s abandoned without revoking what it left on %s; reason: %s", run_id,
                         run.issuer_target, reason)
        return (f"run {run_id}: abandoned, closed as failed; reason: {reason}; {what} may still be valid on "
                f"{run.issuer_target}: if that cluster still exists, revoke it there with the issuer's own tool")

    def _abandon_target(self, run: RunRecord, settles: str, settles_here: str) -> str:
        """The issuer's target now, for :meth:`abandon_run` of ``run``: ConfigError unless the run records
        where it minted and that is another place (elsewhere nothing stops rotator from searching there,
        and ``settles`` / ``settles_here`` (with ``{target}``) say what the command the hint names does)."""
        policy, target = self.policy.name, target_of(self.issuer)
        recover = f"`rotator recover {policy}`"
        if run.issuer_target is None or target is None:
            raise ConfigError(
                f"run {run.run_id} of policy {policy}: " + (
                    "the run records no target (journaled before schema 10, or by an issuer that names none)"
                    if run.issuer_target is None else "the policy's issuer names no target now")
                + ", so nothing says it minted elsewhere: rotator judges it where the issuer points; "
                "--abandon is only for a run minted at another target than the issuer's",
                hint=f"run {recover}: {settles}")
        if run.issuer_target == target:
            raise ConfigError(
                f"run {run.run_id} of policy {policy} minted on {target}, where the policy's issuer points now: "
                "rotator can search there; --abandon is only for a run minted at another target",
                hint=f"run {recover}: {settles_here.format(target=target)}")
        return target

    def _abandon_tag_search(self, run: RunRecord, reason: str) -> str:
        """:meth:`abandon_run` of a published run (under its lease): end the search of its tag, which a
        try of its mint without an answer left (RunRecord.tag_search_until) and which at another target
        than the run's never ends, every pass warning again. The run published fine and stays as it is;
        the end of the search is fenced and compare-and-set (Journal.end_tag_search), audited as
        ``recover`` / ``abandoned`` with ``tag_search`` and the reason. A token that late try created on
        the old target, if any, is left there. No search left (ended by a pass, or abandoned already):
        nothing to do, said so (the same command again)."""
        policy, run_id, until = self.policy.name, run.run_id, run.tag_search_until
        tag = self.policy.tag(run_id)
        if until is None:
            return (f"run {run_id}: {run.state}, and no search of its tag is left (ended, or abandoned already): "
                    "nothing to abandon")
        target = self._abandon_target(run, "it searches the run's tag there and ends the search once its window "
                                      "has passed", "it searches the run's tag on {target} and ends the search "
                                      "once its window has passed")
        with self._step():
            ended = self.journal.end_tag_search(policy, run_id, until, fence=self._fence)
            if ended:
                self._event("recover", "abandoned", run_id, reason=reason, minted_on=run.issuer_target,
                            issuer_target=target, tag_search=True, tag_search_until=until.isoformat())
        if not ended:  # (compare-and-set: the row no longer holds the search it was read with)
            return f"run {run_id}: no search of its tag is left (ended meanwhile): nothing to abandon"
        self.log.warning("run %s: the search of its tag abandoned without searching %s; reason: %s", run_id,
                         run.issuer_target, reason)
        return (f"run {run_id}: the search of its tag abandoned, the run stays {run.state} (it published token "
                f"{run.new_token_id}); reason: {reason}; a token tagged {tag} that a try of its mint without an "
                f"answer created late may still be valid on {run.issuer_target}: if that cluster still exists, "
                "revoke it there with the issuer's own tool")

    def bootstrap(self, value: Secret, token_id: str, expires_at: datetime | None, *,
                  replace: bool = False, reason: str = "") -> RunResult:
        """Publish a human-created token to every store, after checking it with the issuer.

        Re-runnable (invariant 9): a failure at any step leaves nothing a later command must undo
        (a bootstrap run is never rolled back: the token is a human's, rotator never revokes it
        there), and the same command run again skips the stores that hold the token already (and
        writes nothing at all, no run, once every store holds it and it is the current token).
        ``replace``: the repair path, publish it over stores that hold a managed token (the
        current one revoked out of band, lost, or compromised); ``reason`` is audited.
        """
        with self._lease("bootstrap"):
            if replace:
                # The stores may hold a dead token: recovery may fail until this publish is done.
                try:
                    self._recover_locked()
                except RotatorError as exc:
                    self.log.warning("recovery before the repair failed (retried after it): %s", _describe(exc))
            else:
                self._recover_locked()
            states = self._read_stores(unreadable_ok=replace)

            def unfinished(state: StoreState) -> bool:
                """A store that holds this very token for this policy but is not marked managed: an
                earlier bootstrap whose write landed and whose marker did not (a refused metadata
                write). Publishing the same token again completes it; adopt is not needed."""
                held = state.record
                return (held is not None and not state.managed and held.token_id == token_id
                        and held.policy == self.policy.name and held.value.reveal() == value.reveal())

            for name, state in states.items():
                if unfinished(state):
                    continue
                self._check_ownership(name, state)
                if state.record is not None and state.managed and state.token_id != token_id and not replace:
                    raise PermanentError(
                        f"store {name!r} already holds token {state.token_id} managed by rotator",
                        hint=f"bootstrap is for the first token; use `rotator rotate {self.policy.name}` to replace "
                        "it, or, when that token no longer works, "
                        f"`rotator bootstrap {self.policy.name} --replace --reason TEXT --token-file F --token-id ID` "
                        "(docs/operations.md)",
                    )
            self._check_store_targets()
            try:
                self._call(lambda: self.issuer.verify(value), "verify bootstrap token")
            except NotYetAccepted as exc:  # a person's token, which waiting will not make active
                raise ConfigError(
                    f"the issuer refuses the token to bootstrap: {_describe(exc)}",
                    hint="it is revoked, expired, mistyped, or another cluster's or account's: create a new token "
                    "(and check it works with the issuer's own tool), then run the same bootstrap with it",
                ) from None
            listed = self._call(lambda: self.issuer.list_tokens(value), "list tokens")
            try:
                tokens = self._call(lambda: with_unlisted(self.issuer, listed, token_id, value),
                                    f"look up token {token_id}")
            except BadTokenId as exc:  # the id is the operator's (--token-id), not a record's
                raise ConfigError(f"the token id to bootstrap: {exc}", hint=_BOOTSTRAP_ID_HINT) from None
            info = next((t for t in tokens if t.token_id == token_id), None)
            if info is not None and info.foreign is not None:
                # It exists (the lookup finds it, for revocations), and the issuer's verify may accept it
                # (InfluxDB v2: any readable bucket), but it is another scope's: never this policy's token.
                raise ConfigError(
                    f"token id {token_id} is not an active token of the issuer: it belongs to "
                    f"{one_line(info.foreign)}; nothing was written",
                    hint="bootstrap a token created in the scope the policy's issuer settings name (InfluxDB v2: "
                    "an authorization of org_id: `influx auth create --org-id ID ...`), or, when those settings name "
                    "the wrong one, correct them in the policy file and run the same bootstrap again",
                )
            if info is None or not info.is_active(self.clock.now()):
                raise PermanentError(f"token id {token_id} is not an active token of the issuer",
                                     hint=_BOOTSTRAP_ID_HINT)
            # The id is what rotator revokes after the first rotation's grace: another token's id here
            # would revoke that token and leave the published one valid for good.
            matches = info.value_matches(value)
            # Refused only when the listing shows the file's token as another one: a mismatch that
            # matches no listed token says more about how the issuer shows values than about the id.
            owners = [] if matches is not False else [
                t.token_id for t in tokens if t.token_id != token_id and t.value_matches(value)]
            if owners:
                one = owners[0] if len(owners) == 1 else None
                raise ConfigError(
                    f"token id {token_id} is another token than the one in the file given to bootstrap: by the "
                    f"issuer's listing, the file holds {'token ' + one if one else 'one of ' + ', '.join(owners)}; "
                    "nothing was written",
                    hint=f"run the same command with --token-id {one}" if one
                    else "pass the id of the token in the file (" + _BOOTSTRAP_ID_HINT + ")",
                )
            if not matches:
                self.log.warning(
                    "the issuer shows %s of token %s's value, so rotator cannot check that it is the token being "
                    "bootstrapped; it is the token rotator revokes after the first rotation's grace: make sure the "
                    "id is this token's", "nothing" if matches is None else "no match", token_id)
            now = self.clock.now()
            # The token's age counts from its creation, which the issuer knows (status, the report, the
            # schedule: rotator/core/journal.py RunRecord.token_since); the journal keeps it with the run.
            created = info.created_at if info.created_at is not None and info.created_at < now else None
            if created is not None and now - created > max_age_of(self.policy):
                self.log.warning(
                    "token %s was created %s ago, longer than the policy's max_age (%s): its rotation is due "
                    "now (a daemon rotates it at its next pass; else `rotator rotate %s`)", token_id,
                    format_duration(now - created), format_duration(max_age_of(self.policy)), self.policy.name)
            replaced_ids = {s.token_id for s in states.values() if s.token_id and s.token_id != token_id}
            # rotator's own record of the token it published last: a store whose payload is unreadable,
            # was overwritten or deleted (a plain bootstrap into emptied stores) no longer names it, and
            # it must not be left valid (invariant 2). Retired after grace, through the revocation rule.
            last = self.journal.last_success(self.policy.name)
            # (A store may still name it in a payload rotator does not manage, which this publish
            # overwrites: adopt = true.)
            retire_last = (last.new_token_id if last is not None and last.new_token_id
                           and last.new_token_id != token_id else None)
            if (last is not None and last.new_token_id == token_id
                    and all(s.token_id == token_id and s.managed for s in states.values())):
                # The same bootstrap run again (after an unclear end, say), a replacement's too (nothing is
                # left to replace): done already. A new run would count as a rotation, or a second repair,
                # in the report and make the token look younger to status and the schedule, whose age runs
                # from the last publication when the issuer gives no creation time.
                return self._nothing_to_do(
                    f"token {token_id} is bootstrapped already: it is the policy's current token (run "
                    f"{last.run_id}) and every store holds it; nothing was written")
            if replace and retire_last:
                replaced_ids.add(retire_last)
            also = None if replace else retire_last
            replaced = sorted(replaced_ids)
            # old_token_id stays empty: what a repair replaced is in its audit event and revocations.
            run = self._new_run("bootstrap", old_token_id=None, planned={n: s.version for n, s in states.items()})
            # The id recorded here is what lets rotator revoke this human-made token later (invariant 8).
            self.journal.update_run(run, fence=self._fence, state=RunState.PUBLISHING, new_token_id=token_id,
                                    new_expires_at=expires_at or info.expires_at, token_created_at=created)
            if replace:
                self._event("bootstrap", "replace", run.run_id, token_id=token_id, replaced=",".join(replaced),
                            reason=reason or "(none given)")
            record = TokenRecord(value, token_id, self.policy.issuer_type, self.policy.name, now,
                                 expires_at or info.expires_at)
            try:
                for name, store in self.stores:
                    if states[name].token_id == token_id and not unfinished(states[name]):
                        continue
                    version = self._fenced_call(partial(store.publish, record, states[name].version),
                                                f"publish {name}")
                    self.journal.update_run(run, fence=self._fence,
                                            published_versions={**run.published_versions, name: version})
            except LeaseLost:
                raise  # another process holds the policy now: this one changes no journal state
            except Exception as exc:
                # Close the run: nothing here is rotator's to undo, and the same command finishes it. Closed
                # with its event (one commit): a run closed without it is a failure no report counts.
                with self._step():
                    self.journal.update_run(run, fence=self._fence, state=RunState.FAILED,
                                            finished_at=self.clock.now(), error=f"bootstrap failed: {_describe(exc)}")
                    self._event("bootstrap", "failed", run.run_id, token_id=token_id, error=_describe(exc))
                raise
            revocations = []
            # Published now, after every store write (which retries may stretch): the time the run
            # and its event carry, and the start of the replaced tokens' grace.
            now = self.clock.now()
            # A replaced token that rotator minted is revoked after grace, through the rule (a dead or
            # unknown one is simply found gone); a human's is left to its owner.
            retiring = replaced if replace else [also] if also else []
            # (a token whose revocation a person dismissed stays valid: see _publish_all)
            kept = self.journal.dismissed_revocations(self.policy.name, retiring) if retiring else {}
            if also in kept:
                also = None
            for old in retiring:
                if old in kept:
                    self.log.warning("token %s is replaced but stays valid: its revocation was dismissed (%s)", old,
                                     kept[old] or "no reason recorded")
                    continue
                revocations.append(Revocation(self.policy.name, old, run.run_id, "replaced",
                                              due_at=now + self.policy.grace, state="pending"))
            # One commit: the run published and its audit event (the report counts a publication only
            # with its chained event), and the revocations of what it replaced.
            with self._step():
                self.journal.publish_and_schedule(run, revocations[0] if revocations else None, fence=self._fence,
                                                  state=RunState.DONE, published_at=now, finished_at=now)
                for extra in revocations[1:]:
                    self.journal.schedule_revocation(extra, fence=self._fence)
                self._event("bootstrap", "ok", run.run_id, token_id=token_id, replace=replace or None,
                            also_revoke=also, token_created_at=ts(created) if created is not None else None,
                            kept_dismissed=",".join(sorted(kept)) or None,
                            # when the tokens it retires are due (the report checks their rows against it)
                            revoke_at=revocations[0].due_at if revocations else None)
            if also:
                self.log.warning("no store names token %s, the token rotator published last, any more: it is "
                                 "revoked after grace", also)
            if replace:
                message = (f"replaced {', '.join(replaced) or '(nothing)'} with {token_id}; "
                           f"reason: {reason or '(none given)'}")
            else:
                message = f"bootstrapped token {token_id} into {', '.join(name for name, _ in self.stores)}"
                if also:
                    message += (f"; token {also}, the token rotator published last, which no store names any more, "
                                f"will be revoked after the grace period ({format_duration(self.policy.grace)})")
            message += _kept_valid(kept)
            return RunResult(self.policy.name, RunState.DONE, run.run_id, ",".join(replaced) if replace else None,
                             token_id, message, also_revoked=also)

    def _nothing_to_do(self, message: str, actions: list[str] | None = None) -> RunResult:
        return RunResult(self.policy.name, NOTHING_TO_DO, message=message, actions=list(actions or ()))

    # ------------------------------------------------------------------ the rotation run
    def _rotate_locked(self, seen: Preflight | None = None, *, emergency: bool = False) -> RunResult:
        """The run. With ``seen`` (Engine.rotate's preflight read) the lease is not held yet: PLAN's
        reads come first and the lease is taken with the run (:meth:`_new_run`)."""
        # tls_verify = false, plain http://... (rotator/adapters/transport.py)
        if self._transport_warnings is None:
            self._transport_warnings = self.policy.transport_warnings()
        for warning in self._transport_warnings:
            self.log.warning("insecure transport: %s", warning)
        # PLAN: read every store, check preconditions before any side effect.
        states = self._read_stores()
        current = self._current(states)
        credential = current.value if current else None
        for name, state in states.items():
            self._check_ownership(name, state)
        self._check_store_targets()
        self._call(lambda: self.issuer.list_tokens(credential), "check issuer")
        old_token_id = current.token_id if current else self._published_last()
        run = self._new_run("rotate", old_token_id=old_token_id,
                            planned={n: s.version for n, s in states.items()}, seen=seen, emergency=emergency)
        log = logging.LoggerAdapter(logger, {"policy": self.policy.name, "run_id": run.run_id})
        self._checkpoint("planned")
        # Tokens whose grace has passed are revoked now, under the lease, with the stores PLAN read
        # (no second read); their records ride on MINTING's commit (Journal.defer). A process that
        # dies here leaves a planned run (aborted by recovery) and the revocation pending (the next
        # pass finds the token revoked and records it).
        revoked = self._revoke_due_locked(states, seen, replacing=current.token_id if current else None)
        if seen is not None and seen.last_success and seen.last_tag_search_until is not None:
            # The last run's mint had a try without an answer: its tag is searched again (the long
            # way and the other passes find such runs in the journal: _recover_locked, revoke_due).
            revoked += self._search_tags([(seen.last_success, seen.last_token_id, seen.last_tag_search_until,
                                           seen.last_issuer_target)], credential)
        minted: TokenRecord | None = None
        #: a try of the mint failed without a definite answer (not a PermanentError): the issuer may
        #: still carry that request out, and create a token with the run's tag that nobody asked for
        unanswered: list[Exception] = []
        try:
            # 1. MINT: journal the intent, then mint with the run's tag in the description.
            now = self.clock.now()
            expires_at = now + self.policy.lifetime
            with self._step(renew=True):
                self.journal.update_run(run, fence=self._fence, state=RunState.MINTING, new_expires_at=expires_at,
                                        mint_started_at=now)
            self._checkpoint("minting")
            request = MintRequest(self.policy.name, run.run_id, self.policy.token_description(run.run_id), expires_at)

            def mint_starts_now() -> None:
                # Recovery waits for this mint's child until mint_started_at + the call timeout (+ a
                # margin for this slack and the start window): a try that starts later (a pause since
                # MINTING, a retry) first moves that time, so that no child outlives the wait.
                started = self.clock.now()
                if run.mint_started_at is None or started - run.mint_started_at > MINT_START_SLACK:
                    self.journal.update_run(run, fence=self._fence, mint_started_at=started)

            token = self._fenced_call(_noting_unanswered(partial(self.issuer.mint, request, credential), unanswered),
                                      "mint", before_retry=lambda: self._sweep_tag(run, credential, keep=None),
                                      before_start=mint_starts_now)
            minted = TokenRecord(token.value, token.token_id, self.policy.issuer_type, self.policy.name,
                                 now, token.expires_at or expires_at)
            # 2. Journal the id (never the value: its digest, in the same UPDATE, which is what roll
            # forward checks before it copies a store's value) before anything else can fail. Not synced
            # on its own: verify changes nothing anywhere, and the id is found again without it (a run in
            # MINTING is searched by its tag, and a lost MINTED fails VERIFIED's compare-and-set);
            # VERIFIED's synced commit, before the first store write, makes it durable.
            # A try before this one had no answer: the run's tag is searched again, with this token kept,
            # until that try's request cannot land any more (_search_tags).
            search = {"tag_search_until": self._mint_window_end(run)} if unanswered else {}
            with self._step(durable=False):
                self.journal.update_run(run, fence=self._fence, state=RunState.MINTED, new_token_id=token.token_id,
                                        new_token_sha256=value_sha256(token.value),
                                        new_expires_at=token.expires_at or expires_at, **search)
                self._event("mint", "ok", run.run_id, token_id=token.token_id)
            # (at debug: the audit record of the event above says it at info, with the run's id)
            log.debug("minted token %s", token.token_id)
            self._checkpoint("minted")
            # 3. VERIFY: new tokens may answer 401 for a while; retry until verify_timeout.
            deadline = self.clock.now() + self.policy.verify_timeout
            tried: list[Exception] = []  # the verify's own errors (not the lease checks' between its tries)

            def verify() -> None:
                try:
                    self.issuer.verify(token.value)
                except Exception as exc:
                    tried.append(exc)
                    raise

            try:
                # Between tries, confirm (and renew) the lease: a long activation wait must not outlive it.
                self._call(verify, "verify", deadline=deadline, before_retry=lambda: self._fenced("verifying"))
            except TransientError as exc:
                if not tried or exc is not tried[-1]:
                    raise
                raise self._not_verified_in_time(exc) from exc
            # VERIFIED is the state stores may be written from: recovery finds the token id here
            # and asks every store whether it holds it (roll forward) or not (roll back).
            with self._step(renew=True):
                # (the lease its store writes run under, kept with the run for whoever reads the journal)
                self.journal.update_run(run, fence=self._fence, state=RunState.VERIFIED, verified_fence=self._fence)
                self._event("verify", "ok", run.run_id, token_id=token.token_id)
            self._checkpoint("verified")
        except LeaseLost:
            self._own_tokens_after_lease_lost(run, minted, credential, unanswered)
            raise
        except Exception as exc:
            if isinstance(exc, JournalError):
                self._catch_up(run)
            # A try of the mint without an answer may still create a token: the run stays open (as a
            # killed run's does) and its tag is searched again until then.
            try:
                discarded = self._discard(run, credential, exc, self._mint_settles_at(run) if unanswered else None)
            except LeaseLost:  # (the discard's own writes and revocations are fenced)
                self._own_tokens_after_lease_lost(run, minted, credential, unanswered)
                raise
            if isinstance(exc, _NotVerifiedInTime):
                exc.hint += self._candidate_fate(run, discarded)
            raise
        # 4. PUBLISH to every store with compare-and-set against what PLAN read (each write is
        # preceded by a lease check, _fenced_call).
        self._checkpoint("publishing")
        final, also, kept = self._publish_all(run, minted, states, credential,
                                              seen.last_token_id if seen is not None else _UNREAD,
                                              seen.dismissed if seen is not None else _UNREAD)
        old = run.old_token_id if run.old_token_id not in kept else None
        message = "rotated" + (f"; token {old} will be revoked after the grace period" if old else "")
        if also:
            message += (f"; {'so will' if old else 'token'} {also}, the token rotator published last, which no store "
                        f"named{'' if old else ', will be revoked after the grace period'}")
        message += _kept_valid(kept)
        return RunResult(self.policy.name, final, run.run_id, run.old_token_id, run.new_token_id, message,
                         actions=revoked, also_revoked=also)

    def _publish_all(
        self, run: RunRecord, record: TokenRecord, states: dict[str, StoreState], credential: Secret | None,
        last_published: str | None | _Unread = _UNREAD, dismissed: dict[str, str] | _Unread = _UNREAD,
    ) -> tuple[RunState, str | None, dict[str, str]]:
        """Write ``record`` to every store that lacks it, then mark the run published and schedule the
        old token's revocation. That record is deferred to the operation's next commit (at the
        latest the lease's release): the stores hold the token, so recovery would roll the run
        forward, and nothing is revoked before it is durable (a revocation is due after grace).

        ``last_published``: the token the journal's last successful run published (``_UNREAD``: read
        it here). When the stores named another one (a payload edited, an older version restored),
        that token is replaced too: it is rotator's, and no store would name it again.

        ``dismissed``: the policy's tokens whose revocation a person dismissed, with the reason
        (``_UNREAD``: read here). Such a token stays valid when it is replaced: returned as kept."""
        if isinstance(last_published, _Unread):
            last = self.journal.last_success(self.policy.name)
            last_published = last.new_token_id if last is not None else None
        written: list[tuple[str, str]] = []
        for name, store in self.stores:
            if name in run.published_versions:
                continue
            self._checkpoint(f"publish:{name}")
            # A try of this write that failed without a definite refusal may have landed with its answer
            # lost, or may still land, whatever a later try answers (a 403 after a re-login refused).
            unanswered: list[Exception] = []
            try:
                version = self._fenced_call(
                    _noting_unanswered(partial(store.publish, record, states[name].version), unanswered),
                    f"publish {name}")
            except LeaseLost:
                raise
            except Exception as exc:
                self._publish_failed(run, name, exc, credential,
                                     maybe_landed=bool(unanswered) or not isinstance(exc, PermanentError))
                raise
            # In memory until the run's next commit (the run's record, or an error of a later store).
            run.published_versions = {**run.published_versions, name: version}
            written.append((name, version))
            self._checkpoint(f"published:{name}")
        now = self.clock.now()
        old = run.old_token_id if run.old_token_id and run.old_token_id != run.new_token_id else None
        # The stores named another token than the journal's last published one; that one stays valid
        # unless retired here too (the revocation rule still asks the issuer for its tag).
        other = last_published if old and last_published and last_published not in (old, run.new_token_id) else None
        # A token whose revocation a person dismissed stays valid, even when it was current again and
        # is replaced once more: scheduling it would change nothing (_insert_revocation), and the run
        # would wait for a revocation that never comes.
        replaced = [t for t in (old, other) if t]
        if isinstance(dismissed, _Unread):
            dismissed = self.journal.dismissed_revocations(self.policy.name, replaced) if replaced else {}
        kept = {t: dismissed[t] for t in replaced if t in dismissed}
        due_at = now + self.policy.grace
        rev = None if old is None or old in kept else Revocation(
            self.policy.name, old, run.run_id, "superseded", due_at=due_at, state=RevocationState.PENDING)
        also = None if other is None or other in kept else Revocation(
            self.policy.name, other, run.run_id, "superseded", due_at=due_at, state=RevocationState.PENDING)
        if also is not None:
            self.log.warning("the stores named token %s, but the token rotator published last is %s: %s revoked "
                             "after grace", old, other, "both are" if rev is not None else "that one is")
        for token_id, reason in kept.items():
            self.log.warning("token %s is replaced but stays valid: its revocation was dismissed (%s)", token_id,
                             reason or "no reason recorded")
        state = RunState.PUBLISHED if rev or also else RunState.DONE
        REDACTOR.pin(record.token_id, record.value)  # known to the redactor until revoked (hook output...)

        # The fence of the lease this was done under, taken now: the record runs later (at the latest
        # in the lease's release, when self._fence is reset already) and must stay fenced by it.
        fence = self._fence

        def journal_published() -> None:
            # The fenced write first: it locks the policy's lease row, and only then do the events lock the
            # audit chain's head, in the order of every other transaction (a replica that takes the lease
            # takes its row first, then its "plan" event's head). The other order deadlocked on PostgreSQL
            # against a replica taking this holder's expired lease. The events' order is unchanged.
            self.journal.publish_and_schedule(run, rev, fence=fence, state=state, published_at=now,
                                              finished_at=None if rev or also else now, error=None)
            for name, version in written:
                self._event("publish", "ok", run.run_id, store=name, version=version, token_id=record.token_id)
            if also is not None:
                self.journal.schedule_revocation(also, fence=fence)
            self._event("published", "ok", run.run_id, token_id=run.new_token_id,
                        revoke_old_at=rev.due_at if rev else None, also_revoke=also.token_id if also else None,
                        # (the replaced token kept: the chain still says when the other one is due)
                        also_revoke_at=also.due_at if also is not None and rev is None else None,
                        kept_dismissed=",".join(sorted(kept)) or None)

        self.journal.defer(journal_published)
        self._checkpoint("published")
        # the state the deferred record writes (``run`` changes when it is written), the token retired
        # besides the replaced one, and the replaced tokens that stay valid (dismissed), with the reason
        return state, also.token_id if also else None, kept

    def _publish_failed(self, run: RunRecord, store_name: str, exc: Exception, credential: Secret | None, *,
                        maybe_landed: bool) -> None:
        """The write to ``store_name`` failed with ``exc``. ``maybe_landed``: a try of it failed without a
        definite refusal, so it may have landed with its answer lost, or may still land, whatever the
        last try answered (a timeout, then a 403 on the retry)."""
        # ``credential`` is the one PLAN read: a store overwritten meanwhile may hold a useless one.
        message = _describe(exc)
        if not run.published_versions and not maybe_landed:
            # Every try was refused for good (CAS lost, 403, not ours): the write did not land anywhere.
            self._discard(run, credential, exc)
            return
        # A try may hide a write that landed with its answer lost: ask the stores. One that holds the
        # candidate keeps the run open (VERIFIED), for recovery to roll forward: a discard would try to
        # revoke a token a store holds, which the revocation rule refuses, and leave the run stuck.
        try:
            states = self._read_stores()
        except RotatorError:
            states = {}
        holders = [n for n, s in states.items() if s.token_id == run.new_token_id]
        if states and not holders:
            # No store holds the candidate: discard it, the previous token stays current. A try of the
            # failed write may still land, though (a request the client gave up on, still queued at the
            # server), also when a later try was refused: that store is first moved past the version the
            # write expects, so that it fails instead of putting the revoked candidate in the store.
            if maybe_landed and store_name in states:
                try:
                    self._fence_stale_publishes(run, {store_name: states[store_name]})
                except LeaseLost:
                    raise
                except RotatorError as fence_exc:  # maybe that very write landed: recovery reads again
                    message = f"{message}; moving the store past the write failed: {_describe(fence_exc)}"
                    self.journal.update_run(run, fence=self._fence, error=f"publish to {store_name} failed: {message}")
                    self._event("publish", "partial", run.run_id, store=store_name, error=message)
                    return
            self._discard(run, credential, exc)
            return
        # Some stores may hold the new token and others the old one: both stay valid, and
        # recovery (before the next run, or `rotator recover`) finishes publishing.
        self.journal.update_run(run, fence=self._fence, error=f"publish to {store_name} failed: {message}")
        self._event("publish", "partial", run.run_id, store=store_name, error=message)

    def _discard(self, run: RunRecord, credential: Secret | None, exc: BaseException,
                 search_until: datetime | None = None, swept: list[str] | None = None) -> str:  # fmt: skip
        """REVOKE_NEW: a run failed before publishing; revoke whatever it minted. Returns "closed";
        "stuck" (a revocation failed, the run stays open) or "waiting" (for ``search_until``).

        ``search_until``: a child process of the (dead) run may still mint until then, so the run
        stays open (``revoking_new``) and its tag is searched again by every later recovery.
        ``swept``: extended with the ids of the tokens its tag search revoked (recovery names them).
        """
        message = _describe(exc)
        was = run.state  # (the write below moves ``run`` to revoking_new)
        # A discard tried again keeps the run's error until this try's outcome replaces it: a run marked
        # stuck would read as not stuck for the whole try (minutes while the issuer is down), and its
        # alert's `for:` start over at every retry. Also a run stuck before its discard began (minted or
        # verified, its recovery failed reading a store). The tokens it reported as left valid, too.
        kept = run.error if run.error and (was == RunState.REVOKING_NEW or _RECOVERY_FAILED in run.error) else None
        reported = _reported_tokens(run)
        if run.tag_search_until is not None:  # a try of its mint had no answer: searched until then too
            search_until = max(search_until or run.tag_search_until, run.tag_search_until)
        self.journal.update_run(run, fence=self._fence, state=RunState.REVOKING_NEW, error=kept or message)
        self._event("revoke_new", "start", run.run_id, token_id=run.new_token_id, error=message)
        # Before the listing: what it shows is final only if it was taken at or after search_until. A
        # listing that returns after that time may show the issuer as it was before (a slow call, a
        # retry), and miss a token the dead run's child or request created in between.
        searched_at = self.clock.now()
        revoking = _Revoking()
        try:
            if run.new_token_id:
                # (valid unless a discard tried before: that one may have revoked it)
                revoking.start(run.new_token_id, valid=was != RunState.REVOKING_NEW)
                self._revoke_checked(Claim(run.new_token_id, self.policy.name, minted_by=[run.run_id],
                                           source=f"run {run.run_id}, discarding its candidate",
                                           minted_on=run.issuer_target), credential, None, revoking)
                revoking.done()
            found = self._sweep_tag(run, credential, keep=None, revoking=revoking)
            if swept is not None:
                swept += found
        except LeaseLost:
            raise
        except Exception as revoke_exc:  # keep the run open: recovery retries the revocation
            self._discard_failed(run, message, kept, reported, revoking, revoke_exc)
            return "stuck"
        now = self.clock.now()
        if search_until is not None and searched_at < search_until:
            # (tag_search_until: the wait, recorded where `rotator status` reads it: the run is open on purpose
            # and no process holds its lease, which is not an interrupted run until then)
            # (the tokens reported as left valid stay named: revoked now, yet an issuer whose listing lags
            # may show one again, and its failure then is no new orphan)
            self.journal.update_run(
                run, fence=self._fence, tag_search_until=search_until,
                error=_with_reported(
                    f"{message}; no token tagged {self.policy.tag(run.run_id)} yet, but its mint (a child process "
                    f"of a run that died inside it, or a request that got no answer) may still create one until "
                    f"{search_until.isoformat(timespec='seconds')}; every recover / revoke-expired / daemon pass "
                    "searches again", reported),
            )  # fmt: skip
            self._event("revoke_new", "waiting", run.run_id, search_until=search_until.isoformat())
            return "waiting"
        state = RunState.FAILED if run.new_token_id or was != RunState.PLANNED else RunState.ABORTED
        # (its tag searched for the last time: done with it)
        ended: dict[str, Any] = {"tag_search_until": None} if run.tag_search_until is not None else {}
        if kept is not None:  # (the error kept during the try described the run before it)
            ended["error"] = message
        self.journal.update_run(run, fence=self._fence, state=state, finished_at=now, **ended)
        self._event("revoke_new", "ok", run.run_id, token_id=run.new_token_id)
        return "closed"

    def _discard_failed(self, run: RunRecord, message: str, kept: str | None, reported: list[str],
                        revoking: _Revoking, exc: Exception) -> None:  # fmt: skip
        """Journal a try of :meth:`_discard` that failed with ``exc`` while ``revoking`` a token that it
        now leaves valid (reported as an orphan once), or before any token was known to be left valid
        (the listing of the run's tag: ``search_failed``, no orphan).

        The run's error and the event commit in one transaction: an error that lists a token as reported
        implies the event that reported it committed (a kill -9 or a journal error between two commits
        left it listed and never reported, and every later try said ``failed_again``)."""
        cause = _describe(exc)
        left = revoking.left_valid()
        if left is None:
            self.log.error("run %s: searching for its tokens (tagged %s) failed: %s; none is known to be left "
                           "valid, recovery searches again", run.run_id, self.policy.tag(run.run_id), cause)
            clause, result = f"{_TAG_NOT_SEARCHED}: {cause}", "search_failed"
        else:
            self.log.error("could not revoke token %s, discarded by run %s: %s", left, run.run_id, cause)
            clause = f"{_CANDIDATE_NOT_REVOKED}: {cause}"
            # (reported when a try of it failed before: not a second orphan)
            result = "failed_again" if left in reported else "failed"
            reported = reported if left in reported else [*reported, left]
        stuck = kept is not None and _RECOVERY_FAILED in kept  # still stuck: no moment without the mark
        error = _with_reported(f"{_RECOVERY_FAILED}: {message}; {clause}" if stuck else f"{message}; {clause}",
                               reported)
        with self._step():
            self.journal.update_run(run, fence=self._fence, error=error)
            self._event("revoke_new", result, run.run_id, token_id=left, error=cause)

    def _not_verified_in_time(self, exc: TransientError) -> _NotVerifiedInTime:
        """The error of a VERIFY that tried until verify_timeout: the adapter's hint was for a retry
        (a new token may take a while), which is over; the setting that bounds the wait is the fix."""
        waited = f"verify_timeout ({format_duration(self.policy.verify_timeout)})"
        if isinstance(exc, NotYetAccepted):
            hint = (f"the new token was not accepted within {waited}: if the cluster activates tokens slowly, "
                    "raise verify_timeout; then run the same command again")
        else:  # the issuer kept failing (down, throttling): waiting longer is not the fix
            cause = f" ({exc.hint})" if exc.hint else ""
            hint = (f"verifying the new token kept failing until {waited} ran out{cause}; once the issuer "
                    "answers again, run the same command again")
        return _NotVerifiedInTime(str(exc), hint=hint)

    def _candidate_fate(self, run: RunRecord, discarded: str) -> str:
        """What a failed VERIFY's hint adds about the candidate, from :meth:`_discard`'s outcome."""
        token = f"the new token {run.new_token_id}"
        revoked = f"; rotator revoked {token} (no store was written)"
        if discarded == "stuck" and run.new_token_id not in _reported_tokens(run):  # (its tag's search failed)
            return (f"{revoked}; searching for other tokens of the run failed: the run stays open, and the next "
                    f"run (or `rotator recover {self.policy.name}`) searches again first")
        if discarded == "stuck":
            return (f"; revoking {token} failed too: the run stays open, and the next run (or "
                    f"`rotator recover {self.policy.name}`) revokes it first")
        if discarded == "waiting" and run.tag_search_until is not None:
            return (f"{revoked}; the run stays open until {rfc3339_seconds(run.tag_search_until)}: a try of its "
                    "mint got no answer and may still create a token, which every later recover / revoke-expired / "
                    "daemon pass searches for")
        return revoked

    def _catch_up(self, run: RunRecord) -> None:
        """A journal write of ``run``'s failed: its commit may have landed with the answer lost, and the
        rollback put ``run`` back in memory. The discard that follows moves the run from where the journal
        has it, and revokes the candidate now; else its compare-and-set would fail on the row this very
        lease wrote (once read as a lost lease: a false ``aborted``), and leave the candidate to recovery."""
        try:
            if self.journal.catch_up(run, self._fence):
                self.log.warning("run %s: the journal has it %s, written by a commit whose answer was lost",
                                 run.run_id, run.state)
        except JournalError as exc:  # still down: the discard's own write meets it and says so
            self.log.debug("run %s: could not read it again after a journal error: %s", run.run_id, _describe(exc))

    def _own_tokens_after_lease_lost(self, run: RunRecord, minted: TokenRecord | None, credential: Secret | None,
                                     unanswered: Sequence[Exception]) -> None:  # fmt: skip
        """The run lost its lease before VERIFIED: it is someone else's now (no discard, no write of its
        state). What this process minted meanwhile is revoked, though: the new holder's recovery may
        have searched the run's tag for the last time before it existed. That is the token a try
        answered with (its child, or its request, finished while this process was paused past the
        lease), and, after a try without an answer, whatever carries the run's tag."""
        if minted is not None:
            self._revoke_own_mint(run, minted, credential)
        if unanswered:
            self._revoke_own_tag(run, credential)

    def _revoke_own_tag(self, run: RunRecord, credential: Secret | None) -> None:
        """Revoke every live token carrying ``run``'s tag, after its lease was lost before VERIFIED and
        a try of its mint got no answer. Such a try may have created its token after the new holder's
        recovery closed the run: its answer lost after the issuer carried it out, or its request sent
        late by a process paused between its lease check and the request (an issuer that does not
        bound the start of its side effect, contracts.Issuer). The retry's own tag sweep, fenced,
        stops with LeaseLost before it revokes what it finds.

        Not fenced, as :meth:`_revoke_own_mint`, and for the same reason: no process but this one can
        have had the value of a token minted for this run (every answer but ``minted``'s was lost, and
        no store is written before VERIFIED), so no store holds one, and revoking it undoes nothing
        the new holder did. Invariant 8 holds: what is revoked is what rotator's own record says this
        run minted, the journal's run id found as this policy's tag ``rotator:<policy>:<run id>`` in
        the issuer's own description (which only a holder of the issuer's credential writes), checked
        by the revocation rule as every tag search is, and created no earlier than the run began (a
        token older than the run is not its). One search, now: a try whose request is still on its
        way is found by the new holder's recovery, as long as the issuer bounds the start of its side
        effects (influxctl's children, the HTTP issuers: the request is not sent past that bound, so
        it lands within the run's mint window). The run's journal row is not touched."""
        tag = self.policy.tag(run.run_id)
        since = run.started_at - CLOCK_SLACK  # the issuer's clock may run ahead of rotator's
        where = f"the search of run {run.run_id}'s tag after it lost its lease"
        # Nothing here may replace the LeaseLost that brought us here (the caller audits it).
        try:
            tokens: list[TokenInfo] = self._call(lambda: self.issuer.list_tokens(credential), "list tokens")
        except Exception as exc:
            self.log.error("run %s lost its lease after a try of its mint without an answer; listing the issuer's "
                           "tokens failed: %s; revoke any live token tagged %s with the issuer's tool "
                           "(`rotator inventory` lists it)", run.run_id, _describe(exc), tag)
            return
        now = self.clock.now()
        for info in tokens:
            if not carries_tag(info.description, tag) or not info.is_active(now):
                continue
            if info.created_at is not None and as_utc(info.created_at) < since:
                self.log.warning("token %s carries run %s's tag but was created before the run began; not revoking "
                                 "it", info.token_id, run.run_id)
                continue
            self.log.warning("run %s lost its lease after a try of its mint without an answer: revoking token %s, "
                             "which carries its tag (never published)", run.run_id, info.token_id)
            claim = Claim(info.token_id, self.policy.name, minted_by=[run.run_id], source=where)
            try:
                # (no store can hold it: see above)
                if check_revocable(claim, tokens, (), now):
                    self._call(partial(self.issuer.revoke, info.token_id, credential), f"revoke {info.token_id}")
            except Exception as exc:
                self.log.error("could not revoke token %s, minted by run %s after it lost its lease: %s; it stays "
                               "valid: revoke it with the issuer's tool", info.token_id, run.run_id, _describe(exc))
                outcome: dict[str, Any] = {"result": "failed", "error": _describe(exc)}
            else:
                outcome = {"result": "ok", "note": "carries the run's tag; its mint try had no answer and the run "
                           "lost its lease"}
            try:
                self._event("revoke_orphan", outcome.pop("result"), run.run_id, token_id=info.token_id, **outcome)
            except Exception as exc:  # the journal is down: the log lines are what is left
                self.log.error("could not journal the revocation of token %s: %s", info.token_id, _describe(exc))

    def _revoke_own_mint(self, run: RunRecord, minted: TokenRecord, credential: Secret | None) -> None:
        """Revoke the token this process minted for ``run`` after its lease was lost.

        Not fenced, and the one side effect so: the value never left this process (no store was
        written before VERIFIED, and the new holder cannot publish a token whose value it never
        had), so no store can hold it, and the id is the issuer's answer to this run's own request.
        Without this, a mint that finished after the new holder's recovery searched the run's tag
        would stay valid with no record (an orphan). The run's journal row is not touched."""
        self.log.warning("run %s lost its lease after minting token %s: revoking it (never published)",
                         run.run_id, minted.token_id)
        # Nothing here may replace the LeaseLost that brought us here (the caller audits it).
        try:
            self._call(lambda: self.issuer.revoke(minted.token_id, credential), f"revoke {minted.token_id}")
        except Exception as exc:
            self.log.error("could not revoke token %s, minted by run %s after it lost its lease: %s; it stays "
                           "valid: revoke it with the issuer's tool (`rotator inventory` lists it once the run is "
                           "closed)", minted.token_id, run.run_id, _describe(exc))
            outcome: dict[str, Any] = {"result": "failed", "error": _describe(exc)}
        else:
            outcome = {"result": "ok", "note": "minted by this run after it lost its lease"}
        try:
            self._event("revoke_orphan", outcome.pop("result"), run.run_id, token_id=minted.token_id, **outcome)
        except Exception as exc:  # the journal is down: the log line above is what is left
            self.log.error("could not journal the revocation of token %s: %s", minted.token_id, _describe(exc))

    # ------------------------------------------------------------------ recovery
    def _recover_locked(self) -> list[str]:
        actions: list[str] = []
        for run in self.journal.open_runs(self.policy.name):
            self.log.warning("recovering run %s left in state %s", run.run_id, run.state)
            try:
                actions.append(self._recover_run(run))
            except LeaseLost:
                raise
            except RotatorError as exc:
                self.journal.update_run(run, fence=self._fence, error=_recovery_error(run, exc))
                self._event("recover", "error", run.run_id, error=_describe(exc))
                raise
        return actions + self._search_published_tags()

    def _search_published_tags(self) -> list[str]:
        """:meth:`_search_tags` for the policy's published runs whose tag is still searched."""
        searches = self.journal.tag_searches(self.policy.name)
        return self._search_tags([(r.run_id, r.new_token_id, r.tag_search_until, r.issuer_target) for r in searches
                                  if r.tag_search_until is not None])

    def _recover_run(self, run: RunRecord) -> str:
        if run.kind == "bootstrap":
            # A human's token: never revoked here (invariant 9). Close the run; `rotator bootstrap`
            # run again publishes to the stores that lack it.
            self.journal.update_run(run, fence=self._fence, state=RunState.FAILED, finished_at=self.clock.now(),
                                    error=f"bootstrap interrupted in state {run.state}; run it again")
            self._event("recover", "bootstrap_closed", run.run_id, token_id=run.new_token_id)
            return (f"run {run.run_id}: interrupted bootstrap closed, token {run.new_token_id} left as it is; "
                    "run the same `rotator bootstrap` again")
        states = self._read_stores()
        credential = self._credential_from(states)
        if run.state == RunState.PLANNED:
            self.journal.update_run(run, fence=self._fence, state=RunState.ABORTED, finished_at=self.clock.now(),
                                    error="interrupted before minting")
            self._event("recover", "aborted", run.run_id)
            return f"run {run.run_id}: interrupted before minting, nothing to undo"
        holders = [n for n, s in states.items() if run.new_token_id and s.token_id == run.new_token_id]
        if holders:
            if run.state == RunState.REVOKING_NEW:  # runs never move back; its token may be revoked already
                raise NeedsAttention(
                    f"run {run.run_id} was being discarded, yet store(s) {', '.join(holders)} hold its token "
                    f"{run.new_token_id}",
                    hint="check the token with the issuer; restore the previous token in those stores (e.g. "
                    "`bao kv rollback`) or publish a fresh one with `rotator bootstrap`, then `rotator recover`",
                )
            self._roll_forward(run, states, holders[0])
            return f"run {run.run_id}: rolled forward, token {run.new_token_id} published to every store"
        # Minted (or maybe minted) but never published: discard the candidate. A run that died
        # inside a mint may have left a child process that still mints: search its tag until that
        # child must have ended. Only at the issuer it minted at: elsewhere its candidate is not
        # listed, and a search that finds nothing there would close the run as if none existed.
        if run.issuer_target is not None:
            check_run_target(self.policy.name, run.run_id, run.issuer_target, target_of(self.issuer),
                             token_id=run.new_token_id)
        if run.state == RunState.VERIFIED:
            self._fence_stale_publishes(run, states)
        search_until = self._mint_settles_at(run)
        swept: list[str] = []
        outcome = self._discard(run, credential, RuntimeError(f"process stopped in state {run.state}"), search_until,
                                swept)
        # The tokens its tag search revoked besides its journaled one: a run that died inside its mint
        # journaled no id, and its child may have minted one ("none found" said so even then)
        found = [t for t in swept if t != run.new_token_id]
        tag = self.policy.tag(run.run_id)
        if outcome != "closed":
            if outcome == "waiting" and search_until is not None:
                how = ("died inside a mint" if run.new_token_id is None else
                       f"rolled back, unpublished token {run.new_token_id} revoked; a try of its mint had no answer")
                return (f"run {run.run_id}: {how}; live tokens tagged {tag} revoked ("
                        + (", ".join(found) if found else "none yet") + "); the tag is searched again until "
                        f"{search_until.isoformat(timespec='seconds')} (a child process or a request may still be "
                        "minting), so the run stays open")
            raise TransientError(f"run {run.run_id}: the unpublished token could not be revoked yet",
                                 hint="rotator retries on the next run; check the issuer is reachable")
        if run.new_token_id is None:
            return f"run {run.run_id}: rolled back, " + (
                f"unpublished token(s) {', '.join(found)} tagged {tag} revoked" if found
                else f"unpublished token: none found tagged {tag}, nothing to revoke")
        return (f"run {run.run_id}: rolled back, unpublished token {run.new_token_id} revoked"
                + (f"; also revoked token(s) {', '.join(found)} tagged {tag}" if found else ""))

    def _fence_stale_publishes(self, run: RunRecord, states: dict[str, StoreState]) -> None:
        """Before the candidate of a VERIFIED run is revoked: its process may only be paused, between
        its lease check and a store write compare-and-set against the version PLAN read, or a write it
        sent may still be on its way to the store (the run's own write that failed transiently, or the
        write of a process killed after it sent it: held by a proxy or load balancer, queued at a busy
        Vault). Landing after the revocation, that write would put a revoked token in the store. So every
        store still at that version is written again with what it holds (its version moves on, and the
        stale write fails), fenced by this process's lease (an influxctl profile moves its sidecar entry's
        generation). A store whose version does not move warns: there the stale write can still land
        (docs/design-notes.md).

        Also when this process took the lease over from a holder it found dead: its process is gone,
        but not a request it sent, and nothing journaled proves that request can no longer land
        (tests/engine/test_dead_holder_inflight_write.py)."""
        stores = dict(self.stores)
        for name, state in states.items():
            planned = run.planned_versions.get(name)
            if state.version != planned:
                continue
            if state.record is None or state.version is None:
                self.log.warning("run %s: store %r holds no record rotator can write again (absent, or not rotator's "
                                 "payload), so a write of the run's that is still under way would not be stopped",
                                 run.run_id, name)
                continue
            try:
                moved = self._fenced_call(partial(stores[name].publish, state.record, state.version),
                                          f"move {name} past the version run {run.run_id} planned to write over")
            except ConflictError:
                # The store changed since the read just now: maybe that very write landed. The next
                # recovery reads again and rolls forward if a store holds the candidate.
                raise TransientError(f"run {run.run_id}: store {name!r} changed during recovery",
                                     hint="rotator retries; `rotator recover` reads the stores again") from None
            if str(moved) == str(state.version):
                self.log.warning("run %s: store %r keeps its version when written with what it holds, so a write "
                                 "of the run's that is still under way would not be stopped", run.run_id, name)

    def _mint_settles_at(self, run: RunRecord) -> datetime | None:
        """When no child or request of ``run``'s mint calls can still create a token (None: no mint
        without an id, and no try of it without an answer)."""
        settles = run.tag_search_until  # a try without an answer before the mint that gave the id
        if run.new_token_id is not None or run.state not in (RunState.MINTING, RunState.REVOKING_NEW):
            return settles
        if run.mint_started_at is None and run.state != RunState.MINTING:
            return settles  # discarded before minting (a journal from before mint start times: minting only)
        end = self._mint_window_end(run)
        return end if settles is None else max(settles, end)

    def _mint_window_end(self, run: RunRecord) -> datetime:
        """The start of ``run``'s last mint try (its journaled mint start: a later try moves it first)
        plus the issuer's call timeout and a margin: after it, no try of that mint can still land."""
        started = run.mint_started_at or run.started_at
        return started + timedelta(seconds=call_timeout_of(self.issuer)) + MINT_SETTLE_MARGIN

    def _roll_forward(self, run: RunRecord, states: dict[str, StoreState], holder: str) -> None:
        self._check_minted_value(run, states)  # before anything is written: the value is what is copied
        source = states[holder].record
        assert source is not None
        self._check_roll_forward_targets(run)
        stores = dict(self.stores)
        for name, state in states.items():
            if state.token_id == run.new_token_id:
                if name not in run.published_versions:
                    # The write landed, but what came after it may not have (Vault's custom_metadata,
                    # AWS's tags): publishing the same record against the version PLAN read completes
                    # it without writing the token again (the Store contract), or fails again.
                    version = self._fenced_call(partial(stores[name].publish, source, run.planned_versions.get(name)),
                                                f"complete the publish to {name}")
                    run.published_versions[name] = version
            elif state.token_id is None and state.version == run.planned_versions.get(name):
                continue  # as PLAN read it (no token named there: the old one came from the journal)
            elif state.version is None:
                # No secret there at all, where PLAN read one: the policy now points the store elsewhere
                # (the fix for a path it could not write), or someone deleted it. Nobody's token is there to
                # keep: the new one is published there, create-only (as into any new store), never over a
                # secret that appears meanwhile, and not into one marked for another policy (as PLAN checks).
                self._check_ownership(name, state)
                self.log.warning("run %s: store %r holds no secret where the run's plan read version %s "
                                 "(re-pointed or deleted since): publishing token %s there", run.run_id, name,
                                 run.planned_versions.get(name), run.new_token_id)
                run.published_versions = {k: v for k, v in run.published_versions.items() if k != name}
            elif state.token_id != run.old_token_id:
                raise NeedsAttention(
                    f"run {run.run_id}: store {name!r} holds token {state.token_id}, neither the old "
                    f"({run.old_token_id}) nor the new ({run.new_token_id}) one",
                    hint="someone else wrote the store: restore the old or the new token there (e.g. `bao kv "
                    "rollback`), then `rotator recover`",
                )
        self._publish_all(run, source, states, source.value)

    def _check_minted_value(self, run: RunRecord, states: dict[str, StoreState]) -> None:
        """NeedsAttention, before roll forward copies anything, when a store holds ``run``'s token id with
        another value than the one the run minted (its digest, journaled at MINTED): whoever can write
        that store alone must not get a value of their choosing into the others under rotator's name.
        A run journaled before schema 11 has no digest: its value is taken as it is (as before)."""
        if run.new_token_sha256 is None:
            return
        for name, state in states.items():
            if state.token_id != run.new_token_id or state.record is None:
                continue
            if value_sha256(state.record.value) == run.new_token_sha256:
                continue
            policy, old = self.policy.name, run.old_token_id
            wrote = run.published_versions.get(name)
            planned = run.planned_versions.get(name)
            raise NeedsAttention(
                f"run {run.run_id}: store {name!r} holds token id {run.new_token_id} with a value that is not the "
                f"one run {run.run_id} minted; nothing was copied to the other stores",
                hint=f"someone else wrote store {name!r} (check who can): put back there the version run "
                f"{run.run_id} wrote{f' (version {wrote})' if wrote else ''}, which holds the minted value, and "
                f"`rotator recover {policy}` publishes token {run.new_token_id} to every store; or put back the "
                f"version it replaced{f' (version {planned})' if planned else ''}"
                f"{f', token {old},' if old else ''} in every store that holds token {run.new_token_id} (e.g. "
                f"`bao kv rollback`), and `rotator recover {policy}` revokes token {run.new_token_id}; if neither "
                f"is left, `rotator bootstrap {policy} --replace --reason TEXT --token-file F --token-id ID` "
                f"publishes a new token over it, then `rotator recover {policy}`",
            )

    # ------------------------------------------------------------------ revocation
    def _revoke_due_locked(self, states: dict[str, StoreState] | None = None,
                           seen: Preflight | None = None, replacing: str | None = None, *,
                           ignore_backoff: bool = False) -> list[str]:  # fmt: skip
        """Revoke this policy's due tokens. ``states``: what every store holds, read just before
        (PLAN); otherwise the stores are read once for all of them, on the first. ``seen``: the due
        revocations and their claims as the preflight read them (still so: the lease was taken on
        condition that nobody held it since). ``replacing``: the token the stores hold, which the
        rotation under way replaces; a due revocation of it is left pending (refused now, it would be
        marked failed, and the rotation schedules it again with a grace from its publication).
        ``ignore_backoff``: those waiting out the backoff of a failed try too (not with ``seen``)."""
        actions = []
        due = seen.due if seen is not None else self._due_now(ignore_backoff=ignore_backoff)
        for rev in due:
            if replacing is not None and rev.token_id == replacing:
                continue
            message, states = self._revoke_one(rev, states, None if seen is None else seen.claims.get(rev.token_id))
            actions.append(message)
        return actions

    def _revoke_one(
        self, rev: Revocation, states: dict[str, StoreState] | None = None, minted_by: list[RunRecord] | None = None
    ) -> tuple[str, dict[str, StoreState] | None]:
        """Revoke one due token; returns the message and the store states read (for the next one).

        A revocation that worked is recorded with its run (done) and its audit event in one write,
        deferred to the operation's next commit: a crash before it leaves the revocation pending,
        and the next pass finds the token revoked already and records it then.
        """
        # Everything that can fail is inside the try: a failure anywhere (a store read, the
        # issuer, the rule) counts a round and sets next_try_at, so nobody resubmits at once.
        try:
            claim = self._journal_claim(rev.token_id, f"the revocation scheduled by run {rev.run_id}", minted_by)
            self._checkpoint("revoking")
            if states is None:
                states = self._read_stores()
            revoked = self._safe_revoke(claim, None, states)
        except LeaseLost:
            raise
        except Exception as exc:  # a permanent error counts rounds too: a human may fix it meanwhile
            rounds = rev.attempts + 1
            failed = (rev.state == RevocationState.FAILED or rounds >= MAX_REVOCATION_ROUNDS
                      or isinstance(exc, NeedsAttention))
            delay = min(self.retry.max_delay, self.retry.base_delay * 2 ** min(rounds, 32))
            next_try_at = self.clock.now() + timedelta(seconds=delay)
            with self._step():
                self.journal.update_revocation(
                    rev, fence=self._fence, attempts=rounds, last_error=_describe(exc),
                    state=RevocationState.FAILED if failed else RevocationState.PENDING, next_try_at=next_try_at)
                self._event("revoke_old", "failed" if failed else "retry", rev.run_id, token_id=rev.token_id,
                            error=_describe(exc), needs_attention=True if isinstance(exc, NeedsAttention) else None)
            self.log.error("revocation of token %s %s: %s", rev.token_id,
                           "FAILED, needs attention" if failed else "postponed", _describe(exc))
            if not isinstance(exc, RotatorError):
                self.log.debug("unexpected error revoking %s", rev.token_id, exc_info=True)
            plural = "s" if rounds != 1 else ""
            retry = f"`rotator revoke-expired --retry-failed {self.policy.name}`"
            if failed:
                return (f"token {rev.token_id}: revocation failed: {_describe(exc)} (gave up after {rounds} "
                        f"round{plural}: fix the cause, then {retry})"), states
            # A plain pass (a timer's, `revoke-expired`, the daemon's) waits out the backoff: the first
            # failure says until when, and how to try at once, as cli.cmd_revoke_expired does on the
            # passes after it (which name only the tokens this pass did not report).
            return (f"token {rev.token_id}: revocation postponed until {rfc3339_seconds(next_try_at)}: "
                    f"{_describe(exc)}{postponed_advice(self.policy.name)}"), states
        if not revoked and not in_record(claim):
            return self._dismiss_unrecorded(rev, claim), states
        now = self.clock.now()
        fence = self._fence  # (taken now, as in _publish_all: the record may run in the lease's release)

        def journal_revoked() -> None:
            self.journal.update_revocation(rev, fence=fence, state=RevocationState.DONE, done_at=now,
                                           attempts=rev.attempts + 1, last_error=None)
            self.journal.finish_published_run(self.policy.name, rev.run_id, rev.token_id, now, fence=fence)
            self._event("revoke_old", "ok", rev.run_id, token_id=rev.token_id, reason=rev.reason,
                        note=None if revoked else "already revoked or expired at the issuer")

        self.journal.defer(journal_revoked)
        REDACTOR.unpin(rev.token_id)
        # (at debug: the audit record of the event above says it at info, once it is journaled)
        self.log.debug("revoked token %s (%s)", rev.token_id, rev.reason)
        return f"token {rev.token_id}: revoked" + ("" if revoked else " (already gone at the issuer)"), states

    def _dismiss_unrecorded(self, rev: Revocation, claim: Claim) -> str:
        """``rev``'s token is in no record of rotator's and the issuer does not have it: nothing was
        revoked, and nothing shows it was ever rotator's token (an id a store's edited payload named).
        Recorded as dismissed with the reason, not done (which would read "revoked, confirmed by the
        issuer"), its run finished as a dismissal finishes it; deferred like a done one, and flagged
        ``needs_attention`` in the audit chain: someone wrote that store."""
        reason = unrecorded_gone_reason(claim)
        now = self.clock.now()
        fence = self._fence

        def journal_dismissed() -> None:
            self.journal.update_revocation(rev, fence=fence, state=RevocationState.DISMISSED, done_at=now,
                                           attempts=rev.attempts + 1, last_error=dismissal_note(reason))
            self.journal.finish_published_run(self.policy.name, rev.run_id, rev.token_id, now, fence=fence)
            self._event("revoke_old", "dismissed", rev.run_id, token_id=rev.token_id, reason=reason,
                        automatic=True, needs_attention=True)

        self.journal.defer(journal_dismissed)
        REDACTOR.unpin(rev.token_id)
        self.log.warning("revocation of token %s dismissed, nothing revoked: %s", rev.token_id, reason)
        return f"token {rev.token_id}: not revoked, revocation dismissed: {reason}"

    def _journal_claim(self, token_id: str, source: str, runs: list[RunRecord] | None = None) -> Claim:
        """What the journal says about ``token_id``: the runs of this policy that minted it, or the
        bootstrap that recorded it (``runs``: as read already). A token the journal does not know
        gets an empty claim (refused)."""
        if runs is None:
            runs = self.journal.runs_with_token(self.policy.name, token_id)
        bootstraps = [r.started_at for r in runs if r.kind == "bootstrap"]
        # where the newest run that says so recorded the token (runs from before schema 10 do not say;
        # ``runs`` come oldest first, from the preflight and from runs_with_token alike)
        minted_on = next((r.issuer_target for r in reversed(runs) if r.issuer_target is not None), None)
        return Claim(token_id, self.policy.name, minted_by=[r.run_id for r in runs if r.kind != "bootstrap"],
                     bootstrapped=bool(bootstraps), source=source, recorded_at=max(bootstraps, default=None),
                     minted_on=minted_on)

    def _safe_revoke(self, claim: Claim, credential: Secret | None,
                     states: dict[str, StoreState] | None = None) -> bool:  # fmt: skip
        """Revoke ``claim.token_id`` if rotator's records prove it is this policy's own token and no
        store holds it as current (rotator/core/revocation_rule.py). False: the issuer had revoked it already.

        ``states``: what the stores hold, read by the caller just before (else read here)."""
        return self._revoke_checked(claim, credential, states, None)

    def _revoke_checked(self, claim: Claim, credential: Secret | None, states: dict[str, StoreState] | None,
                        revoking: _Revoking | None) -> bool:  # fmt: skip
        """:meth:`_safe_revoke`; ``revoking`` marked valid once the issuer listed the token as active (a
        failure after that leaves it valid)."""
        if states is None:
            states = self._read_stores()
        holders = [name for name, state in states.items() if state.token_id == claim.token_id]
        if credential is None:
            credential = self._credential_from(states)
        check_not_current(claim.token_id, holders)  # before any lookup: a store's holding decides alone
        if claim.minted_on is not None:
            # Before the issuer is asked: at another cluster the token is not listed, which is no proof
            # that it is revoked (the revocation fails, needs attention; nothing is marked done).
            check_same_target(claim, target_of(self.issuer))
        listed: list[TokenInfo] = self._call(lambda: self.issuer.list_tokens(credential), "list tokens")
        tokens = self._call(lambda: with_unlisted(self.issuer, listed, claim.token_id, credential),
                            f"look up token {claim.token_id}")
        info = next((t for t in tokens if t.token_id == claim.token_id), None)
        if revoking is not None and info is not None and info.is_active(self.clock.now()):
            revoking.valid = True
        if not check_revocable(claim, tokens, holders, self.clock.now()):
            return False
        self._fenced_call(lambda: self.issuer.revoke(claim.token_id, credential), f"revoke {claim.token_id}")
        return True

    def _sweep_tag(self, run: RunRecord, credential: Secret | None, keep: str | None,
                   revoking: _Revoking | None = None) -> list[str]:  # fmt: skip
        """Revoke every live token carrying this run's tag (a lost value, or a retried mint); their ids."""
        return self._sweep_run_tag(run.run_id, credential, keep, minted_on=run.issuer_target, revoking=revoking)

    def _sweep_run_tag(self, run_id: str, credential: Secret | None, keep: str | None,
                       only: Sequence[str] | None = None, minted_on: str | None = None,
                       revoking: _Revoking | None = None) -> list[str]:  # fmt: skip
        """:meth:`_sweep_tag` by run id; returns the ids of the tokens revoked.

        ``revoking``: names the token being revoked while it is (a failure then leaves that one valid).

        ``only``: revoke none but these ids (`rotator inventory --revoke-orphans`: the tokens it listed
        and confirmed as the run's orphans, not another token carrying the tag); None: every one.
        ``minted_on``: where the run minted (RunRecord.issuer_target): NeedsAttention, before any listing,
        when the issuer names another place now (a search there finds nothing, which proves nothing)."""
        if minted_on is not None:
            check_run_target(self.policy.name, run_id, minted_on, target_of(self.issuer))
        tag = self.policy.tag(run_id)
        tokens: list[TokenInfo] = self._call(lambda: self.issuer.list_tokens(credential), "list tokens")
        now = self.clock.now()
        revoked = []
        for info in tokens:
            if only is not None and info.token_id not in only:
                continue
            if carries_tag(info.description, tag) and info.token_id != keep and info.is_active(now):
                self.log.warning("revoking token %s left by run %s", info.token_id, run_id)
                claim = Claim(info.token_id, self.policy.name, minted_by=[run_id],
                              source=f"the tag search of run {run_id}", minted_on=minted_on)
                if revoking is not None:
                    revoking.start(info.token_id, valid=True)  # (listed as active just now)
                self._safe_revoke(claim, credential)
                if revoking is not None:
                    revoking.done()
                self._event("revoke_orphan", "ok", run_id, token_id=info.token_id)
                revoked.append(info.token_id)
        return revoked

    def _search_tags(self, searches: Sequence[tuple[str, str | None, datetime, str | None]],
                     credential: Secret | None | _Unread = _UNREAD) -> list[str]:  # fmt: skip
        """After a run published: search its tag again for a token that a try of its mint without an
        answer created late (``searches``: run id, the token it published, kept, until when:
        RunRecord.tag_search_until, and where it minted: RunRecord.issuer_target). The search that
        starts at or after that time is the last: the run's search ends. A failure is logged and leaves
        the search for the next pass (recover, revoke-expired, the next rotation), a search at another
        issuer than the run's too (it never ends there: a person ends it, `recover --abandon`).
        ``credential``: PLAN's (else read from the stores)."""
        actions: list[str] = []
        for run_id, keep, until, minted_on in searches:
            last = self.clock.now() >= until  # (before the listing: what it shows is then final)
            try:
                # (before the stores are read: at another target its hint names the way out for a run that
                # published, `recover --abandon`, which ends this search and leaves the run as it is)
                check_run_target(self.policy.name, run_id, minted_on, target_of(self.issuer), published=True)
                if isinstance(credential, _Unread):
                    credential = self._credential_from(self._read_stores())
                found = self._sweep_run_tag(run_id, credential, keep, minted_on=minted_on)
                if last:
                    self.journal.end_tag_search(self.policy.name, run_id, until, fence=self._fence)
            except LeaseLost:
                raise
            except RotatorError as exc:
                self.log.warning("searching the tag of run %s for a token left by a mint try without an answer "
                                 "failed (searched again at the next pass): %s", run_id, _describe(exc))
                actions.append(f"run {run_id}: the search of its tag failed, tried again at the next pass: "
                               f"{_describe(exc)}")
                continue
            actions += [f"token {token_id}: revoked, created late by run {run_id}'s mint try without an answer"
                        for token_id in found]
        return actions

    # ------------------------------------------------------------------ helpers
    def _plan_only(self) -> RunResult:
        states = self._read_stores()
        current = self._current(states)
        for name, state in states.items():
            self._check_ownership(name, state)
        self._check_store_targets()
        self._call(lambda: self.issuer.list_tokens(current.value if current else None), "check issuer")
        pending = self.journal.open_runs(self.policy.name)
        old = current.token_id if current else self._published_last()  # what the rotation would replace
        other = None
        if current is not None:
            last = self.journal.last_success(self.policy.name)
            if last is not None and last.new_token_id and last.new_token_id not in (old, None):
                other = last.new_token_id
        kept = self.journal.dismissed_revocations(self.policy.name, [t for t in (old, other) if t])
        revoked = [t for t in (old, other) if t and t not in kept]
        if other is not None and other in revoked:
            revoked[-1] += " (the token rotator published last, which no store names)"
        message = (f"would mint a token expiring in {format_duration(self.policy.lifetime)}, publish it to "
                   f"{', '.join(n for n, _ in self.stores)}, and "
                   + (f"revoke {' and '.join(revoked) or '(no current token)'} after "
                      f"{format_duration(self.policy.grace)}" if revoked or not kept else "revoke nothing"))
        message += _kept_valid(kept, "would stay")
        if pending and self._run_in_progress():
            message += (f"; but a run of this policy is in progress ({len(pending)} unfinished, another process holds "
                        "its lease): rotating now would exit busy (3)")
        elif pending:
            message += f"; would first recover {len(pending)} unfinished run(s)"
        return RunResult(self.policy.name, DRY_RUN, None, old, None, message, dry_run=True)

    def _read_stores(self, *, unreadable_ok: bool = False) -> dict[str, StoreState]:
        """What every store holds. ``unreadable_ok`` (`bootstrap --replace`, the repair): a managed
        secret whose payload is not a token record reads as holding no record, at its version, so
        that the repair writes a valid one over it with compare-and-set."""
        states = {}
        for name, store in self.stores:
            try:
                states[name] = self._call(store.read_current, f"read {name}")
            except MalformedPayload as exc:
                if not unreadable_ok or not isinstance(exc.state, StoreState):
                    raise
                self.log.warning("store %r: %s; writing the new token over it", name, _describe(exc))
                states[name] = exc.state
        return states

    def _published_last(self) -> str | None:
        """No store names a current token (Vault's current version deleted with `kv delete`, the
        secret deleted): the token rotator's journal says it published last may still be valid, and
        is retired like any replaced token (through the revocation rule, after grace)."""
        last = self.journal.last_success(self.policy.name)
        if last is None or not last.new_token_id:
            return None
        kept = self.journal.dismissed_revocations(self.policy.name, [last.new_token_id])
        self.log.warning("no store names the current token; the token rotator published last (%s) %s",
                         last.new_token_id, "will be revoked after grace" if not kept else
                         "is replaced, and stays valid: its revocation was dismissed")
        return last.new_token_id

    def _current(self, states: dict[str, StoreState]) -> TokenRecord | None:
        ids = {s.token_id for s in states.values() if s.record is not None}
        if len(ids) > 1:
            detail = ", ".join(f"{n}={s.token_id}" for n, s in states.items())
            raise NeedsAttention(
                f"stores disagree on the current token ({detail})",
                hint="run `rotator recover`; if they still disagree, make every store hold the same token "
                "(restore the newest version in the lagging store), then `rotator recover` again",
            )
        return next((s.record for s in states.values() if s.record is not None), None)

    def _credential_from(self, states: dict[str, StoreState]) -> Secret | None:
        # During a half-finished publish stores may disagree; any current token authenticates.
        return next((s.record.value for s in states.values() if s.record is not None), None)

    def _check_store_targets(self) -> None:
        """ConfigError unless every store that says where its consumers send the token (contracts.Store
        ``target()``, answered from the read PLAN just made) sends it where the issuer mints: an influxctl
        profile naming another cluster would hand the policy's token to that cluster (and its consumers
        would fail). Before any side effect, so nothing was minted or written."""
        found = self._store_sent_elsewhere(lambda: target_of(self.issuer))
        if found is None:
            return
        name, store, store_target, issuer_target = found
        raise ConfigError(
            f"store {name!r} ({store.location}) sends the token to {store_target}, but the policy's "
            f"issuer ({self.policy.issuer_type}) mints at {issuer_target}: the token would go to another "
            "cluster; nothing was minted or written",
            hint="point the store at the issuer's cluster (an influxctl profile: its product and host/port "
            "or account_id/cluster_id), or at another profile that names it (`profile` of the store), or "
            "correct [policy.issuer] if it is what names the wrong cluster; then run the same command again",
        )

    def _store_sent_elsewhere(self, expected: Callable[[], str | None]) -> tuple[str, Store, str, str] | None:
        """The first store that says where its consumers send the token (contracts.Store ``target()``) and
        names another place than ``expected()`` (asked once, and only when a store says), as (name, store,
        its target, the expected one); None when none does, or when ``expected()`` is unknown (None)."""
        wanted: str | None = None
        for name, store in self.stores:
            store_target = target_of(store)
            if store_target is None:
                continue
            wanted = wanted or expected()
            if wanted is None:
                return None  # nothing says where the token goes: nothing to compare with
            if store_target != wanted:
                return name, store, store_target, wanted
        return None

    def _check_roll_forward_targets(self, run: RunRecord) -> None:
        """:meth:`_check_store_targets` for recovery's roll-forward of ``run`` (each store answering from the
        read recovery just made): a store re-pointed since PLAN (an influxctl profile now naming another
        cluster) must not be handed the run's token. Compared with where that token is valid, the cluster
        the run minted on (its recorded target; the issuer's now for a run that records none): a store
        still naming that cluster gets a token that works there, whatever the issuer names now (the next
        rotation's PLAN refuses that mismatch), and a store pointed at the issuer's new cluster would get a
        token that cluster does not know. ConfigError before any write: recovery fails, the run stays open
        (`recovery failed: ...`), and the same `rotator recover` rolls it forward once the store names that
        cluster again."""
        found = self._store_sent_elsewhere(lambda: run.issuer_target or target_of(self.issuer))
        if found is None:
            return
        name, store, store_target, minted_on = found
        policy = self.policy.name
        raise ConfigError(
            f"run {run.run_id}: store {name!r} ({store.location}) sends the token to {store_target}, but the run's "
            f"token {run.new_token_id} was minted on {minted_on}: rolling it forward would hand it to another "
            "cluster; nothing was written, and the run stays open",
            hint=f"point the store at {minted_on} again (an influxctl profile: its product and host/port or "
            f"account_id/cluster_id), or at another profile that names it (`profile` of the store), and run "
            f"`rotator recover {policy}` again: it publishes the run's token to every store. To move the policy "
            f"to {store_target}, point the store there after that, with the issuer, and rotate; if {minted_on} "
            f"is gone for good, publish a token of {store_target} with `rotator bootstrap {policy} --replace "
            "--reason TEXT --token-file F --token-id ID` (docs/operations.md)",
        )

    def _check_ownership(self, name: str, state: StoreState) -> None:
        if state.version is not None and not state.managed and not self.policy.adopt:
            raise OwnershipError(
                f"store {name!r} holds a secret that rotator does not manage (no managed-by=rotator marker)",
                hint="set `adopt = true` in the policy to take it over, or point the store at another path",
            )
        # The marker says "rotator", not which policy: a secret another policy rotates is not this one's to
        # overwrite (its consumers would get this policy's token, and that policy's old token would be left).
        hint = ("point one of the policies at another path; if this policy was renamed, set `adopt = true` in it "
                "for one rotation")
        if state.record is not None and state.record.policy != self.policy.name and not self.policy.adopt:
            raise OwnershipError(
                f"store {name!r} holds token {state.token_id} of policy {state.record.policy!r}, not of "
                f"{self.policy.name!r}: two policies must not share a secret", hint=hint)
        # The store's own marker names the policy too, and outlives the current version's payload (a
        # deleted current version, a secret with no AWSCURRENT): without a record it is what is left. (With
        # one, the record decides: a marker write that failed after an adopting publish may lag behind it.)
        if state.record is None and state.marker_policy is not None and state.marker_policy != self.policy.name \
                and not self.policy.adopt:
            raise OwnershipError(
                f"store {name!r} is marked as managed by rotator for policy {state.marker_policy!r}, not for "
                f"{self.policy.name!r}: two policies must not share a secret", hint=hint)

    def _new_run(self, kind: str, old_token_id: str | None, planned: dict[str, str | None],
                 seen: Preflight | None = None, emergency: bool = False) -> RunRecord:
        """Journal a planned run. Under the lease already (``seen`` None): one commit, not synced on
        its own (no side effect waits on a planned run; the next synced commit makes it durable).

        ``seen``: the lease is not held yet; it is taken in this transaction, which is then synced
        (the lease must be durable before the side effects it fences) unless the journal is
        single-host (SQLite: a crash that loses it ends every process that could act under it), on
        condition that the lease row is still the one the preflight read, released or this engine's
        own (Preflight.fence_planning_first: nobody held the lease since, so nobody wrote under it,
        and the last successful run is still the one ``seen`` holds, which Engine.rotate checked
        against ``expect_last_run``) and that the fencing number is the one ``seen`` predicts;
        otherwise _Replan (the transaction rolls back).
        """
        # Where the token will live, asked before anything is written: an issuer that cannot say (a file
        # it reads is gone) stops the run here, before any side effect.
        target = target_of(self.issuer)
        # An emergency rotation's plan says so: its `emergency` / `start` event names no run, and the
        # report must not take the next run planned (an ordinary one, after the emergency failed) for it
        plan = {"kind": kind, "old_token_id": old_token_id, **({"emergency": True} if emergency else {})}
        now = self.clock.now()
        run = RunRecord(run_id=self.run_id_factory(), policy=self.policy.name, state=RunState.PLANNED, kind=kind,
                        started_at=now, updated_at=now, old_token_id=old_token_id, planned_versions=planned,
                        issuer_target=target)
        if seen is None:
            with self._step(durable=False):
                self.journal.begin_run(run, fence=self._fence)
                self._event("plan", "ok", run.run_id, **plan)
            return run
        # Synced unless the journal is single-host (Journal.single_host): then a crash that loses this
        # commit ends this process too, and nothing before MINTING's synced commit needs it durable
        # (the due revocations that follow are records of their own, deferred to MINTING's commit).
        with self._step(durable=not self.journal.single_host):
            try:
                fence = self.journal.acquire_lease(self.policy.name, self.holder, self.lease_ttl, now,
                                                   unchanged=seen.lease)
            except LeaseBusy as busy:
                raise _Replan(str(busy)) from None
            # The lease row is exactly the one the preflight read, released or this engine's own, so
            # nobody held the lease since: no run of this policy ended meanwhile, and the last
            # successful run the preflight read (``expect_last_run`` was checked against it) is
            # still the last.
            expected = seen.fence_planning_first(self.holder, now)
            if fence != expected:
                raise _Replan(f"fencing number {fence}, expected {expected}")
            self.journal.begin_run(run, fence=fence)
            self._event("plan", "ok", run.run_id, **plan)
        self._fence = fence
        return run

    @contextmanager
    def _step(self, renew: bool = False, durable: bool = True) -> Iterator[None]:
        """One journal transaction for a step: its state change and audit events commit together
        (listeners hear the events after the commit). ``renew``: confirm the lease in it too (and
        renew it when half of lease_ttl is gone), so that the check before the side effect that
        follows is a read. ``durable=False``: see Journal.transaction."""
        with self.journal.transaction(durable=durable):
            if renew and self._fence is not None:
                self.journal.confirm_lease(self.policy.name, self.holder, self._fence, self.lease_ttl,
                                           self.clock.now(), "journaling a step")
            yield

    def _call(
        self, fn: Callable[[], T], what: str, deadline: datetime | None = None,
        before_retry: Callable[[], object] | None = None,
    ) -> T:
        return call_with_retry(fn, what=f"{self.policy.name}: {what}", policy=self.retry, clock=self.clock,
                               deadline=deadline, before_retry=before_retry)

    def _fenced(self, what: str) -> None:
        """Before a side effect: LeaseLost unless this engine still holds the lease with its fencing
        number (renewing it when half of lease_ttl is gone)."""
        if self._fence is None:
            raise RuntimeError(f"{self.policy.name}: {what} outside of a lease")
        self.journal.confirm_lease(self.policy.name, self.holder, self._fence, self.lease_ttl, self.clock.now(), what)

    def _fenced_call(
        self, fn: Callable[[], T], what: str, before_retry: Callable[[], object] | None = None,
        before_start: Callable[[], None] | None = None,
    ) -> T:
        """:meth:`_call` for a side effect: every try first confirms the lease (:meth:`_fenced`).
        ``before_start``: run by every try first, inside the try's start window."""

        def fenced() -> T:
            # A child process of the side effect (an influxctl mint) starts within half the lease's
            # TTL from here, or not at all (core/child_process.py); the lease, confirmed after this
            # point, has at least that much left then. So a pause before the check, or between the
            # check and the start, never lets a child start on a lease taken over meanwhile.
            # An in-process request (the HTTP issuers) is sent within the try's call timeout instead:
            # a slow but working server takes that long by the issuer's own bound (its reads first,
            # then each connection), and recovery's mint window (_mint_window_end) counts it. Never
            # past half the lease's TTL either.
            half_lease = self.lease_ttl.total_seconds() / 2
            with start_children_within(min(FORK_WITHIN_S, half_lease),
                                       requests_within=min(call_timeout_of(self.issuer), half_lease)):
                if before_start is not None:
                    before_start()
                self._fenced(what)
                return fn()

        return self._call(fenced, what, before_retry=before_retry)

    @contextmanager
    def _lease(self, operation: str, take: bool = True) -> Iterator[None]:
        """Hold the policy's lease for ``operation``; a LeaseLost inside is audited as ``<operation>/aborted``.

        ``take=False``: the lease is taken inside the block (Engine._new_run sets ``self._fence``);
        it is released at the end only if it was taken."""
        outer = self._fence
        if take:
            self._fence = self._take_lease()
        elif outer is not None:
            raise RuntimeError(f"{self.policy.name}: {operation}: the lease is held already")
        released = False
        try:
            yield
            if outer is None and self._fence is not None:
                # The deferred writes of the operation (the run published, revocations done) commit
                # with the release, not synced on its own: recovery finds both again from the stores
                # and the issuer, and the next synced commit makes it durable.
                self.journal.release_lease(self.policy.name, self.holder, self._fence, durable=False)
                released = True
        except LeaseLost as lost:
            self.journal.drop_deferred()  # written under the lost fence: refused anyway
            self.log.error("%s aborted: %s", operation, lost)
            self._event(operation, "aborted", None, reason=str(lost), fence=self._fence, current_fence=lost.current)
            raise
        finally:
            fence, self._fence = self._fence, outer
            if outer is None and not released and fence is not None:
                try:
                    self.journal.release_lease(self.policy.name, self.holder, fence)
                except LeaseLost:  # a deferred write found the lease gone: give up only the lease
                    self.journal.drop_deferred()
                    self.journal.release_lease(self.policy.name, self.holder, fence)

    def _take_lease(self) -> int:
        try:
            return self.journal.acquire_lease(self.policy.name, self.holder, self.lease_ttl, self.clock.now())
        except LeaseBusy as busy:
            if not _holder_is_dead(busy.holder):
                pid = _local_pid(busy.holder)
                if pid is not None:  # a process that can be looked at: how to tell when it is gone
                    busy.hint = (f"the holder is process {pid} on this host: `ps -p {pid}` shows whether it still "
                                 "runs; once it is gone, run the same command again (the lease of a process that is "
                                 f"gone is taken over at once); else {busy.hint}")
                raise
            # A process on this host died holding the lease (kill -9, OOM): no need to wait the TTL.
            self.log.warning("taking over the lease of dead process %s", busy.holder)
            return self.journal.take_over_lease(
                self.policy.name, busy.holder, self.holder, self.lease_ttl, self.clock.now()
            )

    def _event(self, step: str, result: str, run_id: str | None, **detail: Any) -> None:
        """Journal an audit event (in the open step's transaction, if any); once it is committed,
        tell the listeners and the audit log."""
        detail = {k: v for k, v in detail.items() if v is not None}
        now = self.clock.now()
        self.journal.record_event(now, self.policy.name, run_id, step, result, detail)
        self.journal.after_commit(partial(self._announce, now, step, result, run_id, detail))

    def _announce(self, now: datetime, step: str, result: str, run_id: str | None, detail: dict[str, Any]) -> None:
        event = {"at": now, "policy": self.policy.name, "run_id": run_id, "step": step, "result": result, **detail}
        for listener in self.listeners:
            try:
                listener(event)
            except Exception as exc:  # a notification must never break a rotation
                self.log.error("event listener %r failed: %s", listener, _describe(exc))
        if audit_logger.isEnabledFor(logging.INFO):  # the record's extra fields are built only if it is kept
            # What audit_logger.info("%s %s", step, result, extra=...) does, with the caller's place taken
            # from this frame instead of logging's walk of the stack (Logger.findCaller: ~15,000
            # instructions a record, six records a rotation): the same record, file, line and function
            code, line = (frame := sys._getframe()).f_code, frame.f_lineno  # (the record's line: this one)
            audit_logger.handle(audit_logger.makeRecord(
                audit_logger.name, logging.INFO, code.co_filename, line, "%s %s", (step, result), None, code.co_name,
                {"policy": self.policy.name, "run_id": run_id, "step": step, "result": result,
                 **{f"detail_{k}": v for k, v in detail.items()}}))


def _recovery_error(run: RunRecord, exc: BaseException) -> str:
    """``run``'s error once its recovery failed with ``exc``: marked stuck. A run whose discard failed
    keeps saying why (its last clause, with the last cause) and which tokens it reported as left valid:
    their later failed tries are then not reported as new orphans (Engine._discard), also after a
    recovery that failed for another reason (a store holds the token, the issuer points elsewhere)."""
    error = f"{_RECOVERY_FAILED}: {_describe(exc)}"
    before, listed = _split_reported(run.error or "")
    last = max((_CANDIDATE_NOT_REVOKED, _TAG_NOT_SEARCHED), key=before.rfind)
    if last in before:
        error += f"; {last}{before.rpartition(last)[2]}"
    return error + listed


def _split_reported(error: str) -> tuple[str, str]:
    """A run's error, and its :data:`_REPORTED` part ("" when it has none)."""
    at = error.rfind(_REPORTED)
    return (error, "") if at < 0 else (error[:at], error[at:])


def _reported_tokens(run: RunRecord) -> list[str]:
    """The tokens ``run``'s discard reported as left valid (:data:`_REPORTED`). An error written before
    it listed them (only the :data:`_CANDIDATE_NOT_REVOKED` clause) reported the run's candidate."""
    _before, listed = _split_reported(run.error or "")
    if not listed:
        return [run.new_token_id] if run.new_token_id and _CANDIDATE_NOT_REVOKED in (run.error or "") else []
    try:
        ids = json.loads(listed.removeprefix(_REPORTED))
    except ValueError:  # (edited: each token is reported again, rather than none)
        return []
    return [str(i) for i in ids if isinstance(i, str)] if isinstance(ids, list) else []


def _with_reported(error: str, reported: Sequence[str]) -> str:
    """``error`` naming ``reported`` (:data:`_REPORTED`, at most :data:`_REPORTED_MAX` of them)."""
    return f"{error}{_REPORTED}{json.dumps(list(reported[:_REPORTED_MAX]))}" if reported else error


def _holder_is_dead(holder: str) -> bool:
    """True when ``holder`` (instance:pid:nonce:pidns:boot) names a process of this host, this boot and
    this PID namespace that no longer exists, or has ended and waits for its parent to reap it (a
    zombie: a ``kill -9``'d rotator whose parent, a shell script or a supervisor, has not waited yet;
    it runs nothing, and ``kill(pid, 0)`` still succeeds on it). A holder from another namespace (a
    container with the same host name), another boot (another machine with the same name, or this one
    before a reboot), or a version that did not record both, cannot be checked: its lease expires instead."""
    pid = _local_pid(holder)
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's process: it exists, and /proc still says whether it ended
        pass
    return _ended(pid)


def _local_pid(holder: str) -> int | None:
    """The process id of ``holder`` when it names a process of this host, this boot and this PID
    namespace (:func:`_holder_is_dead`); else None: its process id says nothing here."""
    parts = holder.rsplit(":", 4)  # from the right: an instance name may hold a colon
    if len(parts) != 5:
        return None
    host, pid_text, _nonce, namespace, boot = parts
    # Without a boot id (not Linux) a process id cannot be placed on a machine: never judged by it.
    if host != audit_chain.instance_name() or not pid_text.isdigit() or namespace != _pid_namespace() \
            or not boot or boot != _boot_id():
        return None
    return int(pid_text)


def _ended(pid: int) -> bool:
    """Whether process ``pid`` has ended and not been reaped yet (state Z, zombie, or X, dead), by
    /proc/PID/stat; False where that cannot be read (gone meanwhile: the next look finds it so)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            text = stat.read()
    except OSError:
        return False
    # "PID (COMM) STATE ...": COMM may hold spaces and parentheses, so the state follows the last ")"
    fields = text.rpartition(b")")[2].split()
    return bool(fields) and fields[0] in (b"Z", b"X")
