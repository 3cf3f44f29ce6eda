"""What `rotator status` and `rotator plan` show, computed from the journal alone (no store reads).

Each row reads only what is current, so its cost does not grow with history: the last successful
run, the latest run, the unfinished runs, and the pending and failed revocations, and those in a
state rotator never writes (finished runs and done revocations are never loaded). Whether a
rotation is due is rotator/core/due.py's decision.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from rotator.config.schedule import format_duration
from rotator.config.timefmt import rfc3339_or_none
from rotator.core.due import Scheduled, age_origin, decide, explain
from rotator.core.one_line import one_line
from rotator.observe.compliance import (
    DEFAULT_SLACK,
    ROW_ERRORS,
    Compliance,
    open_revocations,
    revocations_overdue,
    unreadable_row,
)
from rotator.observe.untrusted_text import masked

if TYPE_CHECKING:
    from rotator.core.journal import Journal, RunRecord

__all__ = ["PolicyStatus", "Shown", "policy_status", "render_table"]

_T = TypeVar("_T")


class Shown(Scheduled, Protocol):
    """What a status row reads of a policy: a validated :class:`rotator.config.policy_types.Policy`, or
    the cached summary of `rotator status` (rotator/config/policy_summary.py)."""

    @property
    def enabled(self) -> bool: ...


@dataclass(frozen=True)
class PolicyStatus:
    policy: str
    enabled: bool
    current_token_id: str | None
    rotated_at: datetime | None
    expires_at: datetime | None
    next_due: datetime
    due: bool
    last_run_state: str | None
    last_run_error: str | None
    pending_revocations: int
    failed_revocations: int
    open_runs: int
    #: unfinished runs that recovery tried and could not finish (they carry an error)
    stuck_runs: int
    now: datetime
    #: max_age and overdue revocations (rotator/observe/compliance.py)
    compliance: Compliance | None = None
    #: when the current token began to age: its publication, or a bootstrapped token's creation
    token_since: datetime | None = None
    #: the journal's tables that hold a row rotator cannot read (a value it never writes: edited by
    #: hand), each with why: what the row shows from them is unknown, and needs a person
    unreadable: tuple[str, ...] = ()
    #: unfinished runs (not stuck) whose policy's lease expired: their process is gone, and nothing
    #: finishes them (a candidate may be live and unpublished) until `rotator recover`
    interrupted_runs: int = 0

    @property
    def since(self) -> datetime | None:
        return age_origin(self.rotated_at, self.token_since)

    @property
    def expires_first(self) -> bool:
        """The current token has expired, or expires before its next rotation is due (a bootstrapped
        token's short expiry, a lifetime shortened since): consumers would break before rotator acts."""
        if self.expires_at is None or self.current_token_id is None or not self.enabled:
            return False  # (a disabled policy is rotated by no schedule: its EXPIRES IN cell still shows it)
        return self.expires_at <= (self.now if self.due else self.next_due)

    @property
    def needs_attention(self) -> bool:
        return (self.failed_revocations > 0 or self.stuck_runs > 0 or self.interrupted_runs > 0 or self.expires_first
                or bool(self.unreadable))  # fmt: skip

    @property
    def interrupted(self) -> str | None:
        """What to do about the interrupted runs, if any."""
        if not self.interrupted_runs:
            return None
        return f"interrupted: run `rotator recover {self.policy}`"

    def reason(self) -> str:
        """Why the rotation is due or not (rotator/core/due.py)."""
        if self.unreadable:
            return one_line("; ".join(f"the journal's {what}" for what in self.unreadable))
        return explain(self.due, self.next_due, self.rotated_at, self.now, self.token_since)

    def to_json(self) -> dict[str, Any]:
        return {
            "policy": self.policy, "enabled": self.enabled, "current_token_id": self.current_token_id,
            "rotated_at": rfc3339_or_none(self.rotated_at), "token_since": rfc3339_or_none(self.since),
            "age_s": int((self.now - self.since).total_seconds()) if self.since else None,
            "expires_at": rfc3339_or_none(self.expires_at), "next_due": rfc3339_or_none(self.next_due), "due": self.due,
            "last_run_state": self.last_run_state, "last_run_error": masked(self.last_run_error),
            "pending_revocations": self.pending_revocations, "failed_revocations": self.failed_revocations,
            "open_runs": self.open_runs, "stuck_runs": self.stuck_runs, "interrupted_runs": self.interrupted_runs,
            "interrupted": self.interrupted,
            "needs_attention": self.needs_attention, "expires_before_rotation": self.expires_first,
            "reason": self.reason(),
            "compliance": self.compliance.to_json() if self.compliance is not None else None,
            "unreadable": list(self.unreadable),
        }  # fmt: skip


def policy_status(policy: Shown, journal: Journal, now: datetime, slack: timedelta = DEFAULT_SLACK) -> PolicyStatus:
    """The status row of ``policy`` at ``now``, from five queries bounded by what is current (and the
    policy's lease, when a run is unfinished: one whose lease expired is interrupted).

    NoNextDue (a cron schedule whose years have passed) propagates: a row needs a next due time.
    `rotator status` reports it after the other policies' rows; the daemon's status page shows the
    policy without one, as needing attention (rotator/observe/status_page.py).

    A row that holds a value rotator never writes (a time edited by hand: the tables are not chained)
    does not stop the others' rows: what it hides is unknown, and the row says so (:attr:`PolicyStatus.unreadable`).
    A revocation in a state rotator never writes counts as failed: nothing shows that it was revoked."""
    unreadable: dict[str, str] = {}

    def read(table: str, query: Callable[[str], _T]) -> _T | None:
        try:
            return query(policy.name)
        except ROW_ERRORS as exc:
            unreadable.setdefault(table, unreadable_row(table, exc))
            return None

    last = read("runs", journal.last_success)
    latest = read("runs", journal.latest_run)
    open_runs = read("runs", journal.open_runs) or []
    unfinished = sorted(read("revocations", partial(open_revocations, journal)) or [],
                        key=lambda r: (r.due_at, r.token_id))
    pending = [r for r in unfinished if r.state == "pending"]
    failed = [r for r in unfinished if r.state != "pending"]
    due = decide(policy, last.published_at if last else None, now, len(open_runs), last.token_since if last else None)
    stuck = [r for r in open_runs if r.error and "recovery failed" in r.error]
    # A run in progress renews its policy's lease; one whose lease lapsed was killed or cut off (a
    # daemon rotating right now holds a live lease: not flagged).
    lapsed = False
    if open_runs:
        holder = read("leases", partial(journal.lease_holder, now=now))
        lapsed = not holder and "leases" not in unreadable
    return PolicyStatus(
        policy=policy.name,
        enabled=policy.enabled,
        current_token_id=last.new_token_id if last else None,
        rotated_at=due.rotated_at,
        expires_at=last.new_expires_at if last else None,
        next_due=due.next_due,
        due=due.due,
        last_run_state=latest.state if latest else None,
        last_run_error=latest.error if latest else None,
        pending_revocations=len(pending),
        failed_revocations=len(failed),
        open_runs=len(open_runs),
        stuck_runs=len(stuck),
        now=now,
        compliance=Compliance(
            policy=policy.name, max_age=due.max_age, published_at=due.rotated_at,
            current_token_id=last.new_token_id if last else None,
            overdue=tuple(revocations_overdue(unfinished, now, slack)), now=now, token_since=due.token_since,
            unreadable=tuple(unreadable.values()),
        ),
        token_since=due.token_since,
        unreadable=tuple(unreadable.values()),
        interrupted_runs=sum(1 for r in open_runs if r not in stuck and not _waits(r, now)) if lapsed else 0,
    )  # fmt: skip


def _waits(run: RunRecord, now: datetime) -> bool:
    """Whether ``run`` is left open on purpose, until its mint can no longer create a token: a discarded
    candidate's run whose tag every pass searches again until then (Engine._discard, "waiting")."""
    # (the state's text: the journal module is not imported here, `status`'s start-up budget)
    return run.state == "revoking_new" and run.tag_search_until is not None and run.tag_search_until > now


def _compliance_cell(c: Compliance | None) -> str:
    if c is None:
        return "-"
    if c.compliant:
        return f"ok (max {format_duration(c.max_age)})"
    words = []
    if c.unreadable:
        words.append("UNREADABLE JOURNAL ROW")
    elif c.published_at is None:
        words.append("NO TOKEN")
    if c.too_old:
        words.append(f"OLDER THAN {format_duration(c.max_age)}")
    elif c.ahead:
        words.append("AGE UNKNOWN (CLOCK)")
    if c.overdue:
        words.append(f"{len(c.overdue)} REVOCATION(S) OVERDUE")
    return ", ".join(words)


def _expires_cell(s: PolicyStatus) -> str:
    if s.expires_at is None:
        return "-"
    if s.expires_at <= s.now:
        return "EXPIRED"
    return format_duration(s.expires_at - s.now, units=2) + (" !" if s.expires_first else "")


def render_table(rows: list[PolicyStatus]) -> str:
    """The table `rotator status` prints on a terminal. Token ids and run states are the journal's text
    (an issuer's ids; rows a person may have edited): control characters are written out."""
    header = ("POLICY", "CURRENT TOKEN", "AGE", "EXPIRES IN", "NEXT DUE", "LAST RUN", "REVOCATIONS", "COMPLIANCE")
    lines = [header]
    for s in rows:
        lines.append((
            one_line(s.policy) + ("" if s.enabled else " (disabled)"),
            one_line(s.current_token_id or ("?" if s.unreadable else "-")),
            format_duration(s.now - s.since, units=2) if s.since else "-",
            _expires_cell(s),
            "now" if s.due else format_duration(s.next_due - s.now, units=2),
            one_line(s.last_run_state or ("UNREADABLE" if s.unreadable else "-"))
            + (" (interrupted)" if s.interrupted_runs else "") + (" !" if s.needs_attention else ""),
            f"{s.pending_revocations} pending" + (f", {s.failed_revocations} FAILED" if s.failed_revocations else ""),
            _compliance_cell(s.compliance),
        ))
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in lines)
