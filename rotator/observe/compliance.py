"""Compliance state of a policy: is its published token within ``max_age``, and is no revocation overdue?

``max_age`` is the policy's declared cryptoperiod (PCI DSS 4.0.1 req. 3.7.4, NIST SP 800-57): by
default the schedule's longest gap (cron: the longest gap between fires; plus the longest wait for
a window) + grace + margin, the longest a token may live when everything works. A policy is
*compliant* when a token is published, it is younger than ``max_age``, and no previous token
outlived its revocation time by more than ``slack`` (the tick at which revocations run) or gave up.

Computed from the journal alone, like rotator/observe/status.py, so `rotator status --check`, the daemon's
metrics and the AWS Lambda function (from its secret's versions) say the same thing.
docs/compliance.md explains how a team uses it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from rotator.config.schedule import format_duration
from rotator.core.due import age_origin, max_age_of
from rotator.core.one_line import one_line

if TYPE_CHECKING:  # annotations only: `rotator status` imports neither the policy model nor, here, the journal
    from rotator.config.policy_types import Policy
    from rotator.core.journal import Journal, Revocation

__all__ = ["AHEAD_SLACK", "DEFAULT_SLACK", "REVOCATION_STATES", "ROW_ERRORS", "Compliance", "is_ahead",
           "is_compliant", "is_overdue", "max_age_of", "open_revocations", "policy_compliance", "revocations_overdue",
           "unreadable_row"]

#: How long after its due time a pending revocation may wait (for the next revoke-expired tick or
#: daemon sweep, and its retries) before it counts as overdue. audit_chain.LATE_REVOCATION_SLACK
#: writes it out: a prune's checkpoint keeps each revocation done later than that past its due time
#: (and says so), for `rotator report` to count once its row is gone.
DEFAULT_SLACK = timedelta(hours=1)
#: the states rotator writes to a revocation row (rotator.core.journal.RevocationState, which this
#: module does not import at run time; tests/observe check they agree)
REVOCATION_STATES = ("pending", "done", "failed", "dismissed")
#: what reading the journal's rows raises when a row holds what rotator never writes (a time that
#: does not parse: the runs and revocations tables are not chained, and may be edited by hand)
ROW_ERRORS = (ValueError, TypeError)


def revocations_overdue(revocations: Sequence[Revocation], now: datetime, slack: timedelta) -> list[Revocation]:
    """Pending revocations whose due time passed more than ``slack`` ago, and failed ones (a state
    rotator never writes counts as failed: nothing shows that the token was revoked)."""
    return [r for r in revocations if is_overdue(r.state, r.due_at, now, slack)]


def is_overdue(state: str, due_at: datetime, now: datetime, slack: timedelta) -> bool:
    """The rule of :func:`revocations_overdue` for one revocation, in ``state`` and due at ``due_at``,
    judged at ``now``; `rotator report` judges its rows by it at the period's end."""
    # (``now - slack``, not ``due_at + slack``: a due time edited to the year 9999 must not overflow)
    return (state == "pending" and due_at < now - slack) or state not in ("pending", "done", "dismissed")


def open_revocations(journal: Journal, policy: str) -> list[Revocation]:
    """The policy's revocations that are not done (nor dismissed): pending, failed, and those in a
    state rotator never writes (a row edited by hand). Those would otherwise be read by nothing: the
    journal's reads of open revocations name pending and failed. ROW_ERRORS when a row's time is not
    one rotator writes."""
    found = list(journal.unfinished_revocations(policy))
    with journal.audit_transaction(write=False) as (cur, _lock):
        odd = [str(r[0]) for r in cur.execute(_STATES_SQL, (policy, policy)).fetchall()
               if r[0] not in REVOCATION_STATES]
    for state in odd:
        found += journal.revocations(policy, state)
    return found


#: the distinct states of a policy's revocations, one seek each on the index (policy, state, due_at):
#: from each state found to the next one above it (a loose index scan, written out as SQLite and
#: PostgreSQL both run it). A ``state NOT IN (...)`` read every done row of the policy's history on
#: the way: 120,000 SQLite VM steps a status row at 100k runs against 36 on a fresh journal (issue 12).
_STATES_SQL = (
    "WITH RECURSIVE s (state) AS (SELECT MIN(state) FROM revocations WHERE policy = ? "
    "UNION ALL SELECT (SELECT MIN(state) FROM revocations WHERE policy = ? AND state > s.state) "
    "FROM s WHERE s.state IS NOT NULL) "
    "SELECT state FROM s WHERE state IS NOT NULL"
)


#: A token's age origin later than now by more than this was written by a clock ahead of the reader's (a
#: clock stepped back since, or another host's running ahead): its age is unknown, so it is not compliant.
#: Far above what hosts that keep time differ by (2 s, docs/operations.md), far below a step that matters.
#: The daemon plans such a policy's rotations from now (rotator/runners/daemon.py _origin_for_plan).
AHEAD_SLACK = timedelta(minutes=5)


def is_ahead(since: datetime | None, now: datetime) -> bool:
    """Whether a token that began to age at ``since`` did so more than :data:`AHEAD_SLACK` after ``now``."""
    return since is not None and since - now > AHEAD_SLACK


def is_compliant(since: datetime | None, max_age: timedelta, overdue: bool, now: datetime) -> bool:
    """The compliance rule: a token is published, no older than ``max_age`` (and not begun to age more
    than :data:`AHEAD_SLACK` after ``now``), and no revocation is overdue (pending past the slack, or
    failed). ``since``: when the current token began to age (RunRecord.token_since; None: no token).
    Used by :class:`Compliance` and by the daemon's in-memory metrics."""
    return since is not None and not is_ahead(since, now) and now - since <= max_age and not overdue


@dataclass(frozen=True)
class Compliance:
    policy: str
    max_age: timedelta
    #: when the current token was published (None: no token yet)
    published_at: datetime | None
    current_token_id: str | None
    overdue: tuple[Revocation, ...]
    now: datetime
    #: when it began to age, where that is before its publication (a bootstrapped token's creation)
    token_since: datetime | None = None
    #: the journal's tables whose rows rotator cannot read (a value it never writes: edited by hand),
    #: each with why; nothing read from them can be shown compliant
    unreadable: tuple[str, ...] = ()

    @property
    def since(self) -> datetime | None:
        return age_origin(self.published_at, self.token_since)

    @property
    def age(self) -> timedelta | None:
        since = self.since
        return self.now - since if since is not None else None

    @property
    def too_old(self) -> bool:
        age = self.age
        return age is not None and age > self.max_age

    @property
    def ahead(self) -> bool:
        """Its token began to age more than :data:`AHEAD_SLACK` after now: its age is unknown."""
        return is_ahead(self.since, self.now)

    @property
    def compliant(self) -> bool:
        return not self.unreadable and is_compliant(self.since, self.max_age, bool(self.overdue), self.now)

    def problems(self) -> list[str]:
        """What is out of compliance, for a person (`status --check` prints each on a terminal: the
        token ids and states come from the journal, and their control characters are written out)."""
        out = [f"the journal's {what}" for what in self.unreadable]
        if self.published_at is None:
            if not self.unreadable:
                out.append("no token published yet (run `rotator bootstrap POLICY --token-file FILE --token-id ID`)")
        elif self.too_old:
            out.append(f"token {self.current_token_id} is {format_duration(self.age or timedelta(0))} old, "
                       f"older than max_age {format_duration(self.max_age)}")
        elif self.ahead:
            out.append(f"token {self.current_token_id} began to age {format_duration(-(self.age or timedelta(0)))} "
                       "after this host's now (a clock ran ahead: this host's before a step back, or the publishing "
                       "host's), so its age is unknown; fix that clock (NTP, chrony): docs/daemon.md, Clocks")
        for rev in self.overdue:
            if rev.state == "failed":
                out.append(f"revocation of token {rev.token_id} failed: it is still valid")
            elif rev.state != "pending":
                out.append(f"revocation of token {rev.token_id} is in state {rev.state!r}, which rotator never "
                           "writes (its row was edited outside rotator): count it as failed, the token may still "
                           "be valid; `rotator report` checks the row against the audit chain")
            else:
                out.append(f"revocation of token {rev.token_id} is {format_duration(self.now - rev.due_at)} overdue")
        return [one_line(problem) for problem in out]

    def to_json(self) -> dict[str, Any]:
        age = self.age
        return {
            "policy": self.policy, "compliant": self.compliant, "max_age_s": int(self.max_age.total_seconds()),
            "age_s": int(age.total_seconds()) if age is not None else None, "too_old": self.too_old,
            "ahead_of_clock": self.ahead,
            "current_token_id": self.current_token_id, "overdue_revocations": len(self.overdue),
            "problems": self.problems(), "unreadable": list(self.unreadable),
        }  # fmt: skip


def unreadable_row(table: str, exc: BaseException) -> str:
    """What :attr:`Compliance.unreadable` says of a table one of whose rows cannot be read."""
    return (f"{table} table holds a row rotator cannot read, a value it never writes (edited outside rotator: "
            f"{exc}); compare the journal with a backup, and run `rotator report` to check it against the audit chain")


def policy_compliance(policy: Policy, journal: Journal, now: datetime, slack: timedelta = DEFAULT_SLACK) -> Compliance:
    unreadable = []
    try:
        last = journal.last_success(policy.name)
    except ROW_ERRORS as exc:
        last = None
        unreadable.append(unreadable_row("runs", exc))
    try:
        revocations = open_revocations(journal, policy.name)
    except ROW_ERRORS as exc:
        revocations = []
        unreadable.append(unreadable_row("revocations", exc))
    return Compliance(
        policy=policy.name,
        max_age=max_age_of(policy),
        published_at=last.published_at if last else None,
        token_since=last.token_since if last else None,
        current_token_id=last.new_token_id if last else None,
        overdue=tuple(revocations_overdue(revocations, now, slack)),
        now=now,
        unreadable=tuple(unreadable),
    )
