"""Is a policy's rotation due, and why: the one place that decides (issue 14 §6).

Used by ``rotator status`` and ``rotator plan`` (rotator/observe/status.py, which show the decision),
``rotator rotate --if-due`` (rotator/runners/cli.py, which acts on it) and the daemon. The decision:

- a policy with no successful rotation yet is due now (its first token comes from ``rotator
  bootstrap``; a rotation run says so);
- otherwise it is due at ``policy.schedule.next_due(since, now)``: the interval or cron schedule
  from when the current token began to age, moved into the policy's window if it has one
  (rotator/config/schedule.py). That is its publication, or for a bootstrapped token its creation
  at the issuer when the journal has it (``RunRecord.token_since``): a token a person created a year
  ago is as old on the day it is bootstrapped;
- an unfinished run of the policy does not make it due, but an interrupted one must not wait a
  whole interval either: :attr:`Due.recover_first` tells a caller that is not going to rotate to
  recover it. A run whose lease a live process holds is in progress, not interrupted: it is left
  to that process (a cron tick beside a manual `rotator rotate NAME` is not busy for it).

:func:`decide` is a pure function of its inputs; :func:`due_now` reads them from the journal with
two queries bounded by what is current (the last successful run, the unfinished runs), and the
policy's lease when a run is unfinished, never the history. A ValueError from a cron schedule that
never fires again propagates.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, NamedTuple, Protocol

from rotator.config.schedule import format_duration

if TYPE_CHECKING:
    from rotator.config.schedule import Schedule
    from rotator.core.clock import Clock
    from rotator.core.journal import Journal

__all__ = ["Due", "Scheduled", "age_origin", "decide", "due_now", "explain", "max_age_of"]


class Scheduled(Protocol):
    """What the decision reads of a policy: a validated :class:`rotator.config.policy_types.Policy`, or
    the summary `rotator status` reads from its cache (rotator/config/policy_summary.py)."""

    @property
    def name(self) -> str: ...
    @property
    def schedule(self) -> Schedule: ...
    @property
    def lifetime(self) -> timedelta: ...
    @property
    def max_age(self) -> timedelta | None: ...


def age_origin(published: datetime | None, token_since: datetime | None) -> datetime | None:
    """When the current token began to age: ``token_since`` (RunRecord.token_since: a bootstrapped
    token's creation) where a token is published and that is known, else its publication (None: no
    token). The one rule the schedule, status, compliance and the metrics share."""
    return token_since if token_since is not None and published is not None else published


def max_age_of(policy: Scheduled) -> timedelta:
    """The policy's ``max_age``; a policy built without one (an old bundle) falls back to its lifetime."""
    return policy.max_age if policy.max_age is not None else policy.lifetime


class Due(NamedTuple):
    """The decision for one policy at ``now``."""

    due: bool
    #: when the next rotation is due (``now`` when never rotated)
    next_due: datetime
    #: publication time of the last successful rotation; None: never rotated
    rotated_at: datetime | None
    #: unfinished runs of the policy (crashed or in progress)
    open_runs: int
    now: datetime
    #: the policy's max_age (rotator/observe/compliance.py: max_age_of)
    max_age: timedelta
    #: when the current token began to age (RunRecord.token_since); None: never rotated
    token_since: datetime | None = None
    #: a live process holds the policy's lease: its unfinished run is in progress, not interrupted
    in_progress: bool = False

    @property
    def recover_first(self) -> bool:
        """Not due, but an interrupted run waits (its lease expired, was released, or its holder on this
        host is gone): recover it now rather than at the next due time. Not while a live process holds
        the lease: that run is in progress, and recovering it would only meet LeaseBusy."""
        return not self.due and self.open_runs > 0 and not self.in_progress

    @property
    def too_old(self) -> bool:
        """The current token is older than max_age: the rotation is due and late (see rotator/observe/compliance.py)."""
        since = self.since
        return since is not None and self.now - since > self.max_age

    @property
    def since(self) -> datetime | None:
        """When the current token began to age (its publication unless the journal knows better)."""
        return age_origin(self.rotated_at, self.token_since)

    def reason(self) -> str:
        """Why, in one line (shown by ``rotator status --output json`` and ``rotator plan``)."""
        return explain(self.due, self.next_due, self.rotated_at, self.now, self.token_since)


def explain(due: bool, next_due: datetime, rotated_at: datetime | None, now: datetime,
            token_since: datetime | None = None) -> str:
    """The one-line reason of a decision (:meth:`Due.reason`)."""
    if rotated_at is None:
        return ("no token yet: run `rotator bootstrap POLICY --token-file FILE --token-id ID` with the first, "
                "human-created token")
    if due:
        if token_since is not None and token_since < rotated_at:
            return (f"due: the current token was created {format_duration(now - token_since, units=2)} ago "
                    f"(published {format_duration(now - rotated_at, units=2)} ago)")
        return f"due: last rotation {format_duration(now - rotated_at, units=2)} ago"
    return f"not due for {format_duration(next_due - now, units=2)}"


def decide(policy: Scheduled, rotated_at: datetime | None, now: datetime, open_runs: int = 0,
           token_since: datetime | None = None, in_progress: bool = False) -> Due:
    """The decision from its inputs: the policy (schedule, window, max_age), the publication time of
    its last successful rotation (None: never), the number of its unfinished runs, ``now``, when
    the current token began to age (``token_since``, RunRecord.token_since; None: its publication),
    and whether a live process holds the policy's lease (``in_progress``)."""
    since = age_origin(rotated_at, token_since)
    next_due = policy.schedule.next_due(since, now)
    return Due(next_due <= now, next_due, rotated_at, open_runs, now, max_age_of(policy),
               since if since != rotated_at else None, in_progress)


def due_now(policy: Scheduled, journal: Journal, clock: Clock) -> Due:
    """:func:`decide` with its inputs read from ``journal`` at ``clock.now()``."""
    last = journal.last_success(policy.name)
    now = clock.now()
    open_runs = len(journal.open_runs(policy.name))
    in_progress = False
    if open_runs:
        # (imported here: the engine imports this module, and only a policy with an unfinished run needs it)
        from rotator.core.engine import live_lease_holder

        in_progress = live_lease_holder(journal, policy.name, now) is not None
    return decide(policy, last.published_at if last else None, now, open_runs,
                  last.token_since if last else None, in_progress)
