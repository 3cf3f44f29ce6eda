"""``rotator report``: the rotation evidence of a period, as JSON, CSV or one self-contained HTML file.

Per policy: every rotation (run id, started / verified / published times, old and new token ids,
the instance that ran it), every revocation (due, done, confirmed by the issuer), failures and how
they ended, and a summary (maximum observed token age against ``max_age`` and a 90-day line), with
the audit chain's verification result. Built from the journal alone; never a token value (the
journal holds none). Pruned periods appear as the checkpoint's per-policy summaries.

Columns carry the control they serve as evidence (PCI DSS 4.0.1 8.6.3 / 3.7.4, CIS 90-day): this is
evidence for an assessor, not a claim of compliance.
"""

from __future__ import annotations

import bisect
import csv
import html
import io
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from rotator.config.policy_types import Policy
from rotator.config.schedule import format_duration
from rotator.config.timefmt import parse_rfc3339
from rotator.core import audit_chain
from rotator.core.errors import ConfigError, JournalError
from rotator.core.journal import Journal, Revocation, RevocationState, RunRecord, RunState, dismissal_reason, ts
from rotator.core.revocation_rule import read_abandoned_note
from rotator.observe.compliance import DEFAULT_SLACK, is_overdue, max_age_of
from rotator.observe.untrusted_text import csv_cell, masked, one_line

__all__ = ["DISCLAIMER", "Evidence", "build", "parse_date", "render"]

DISCLAIMER = (
    "This report is evidence drawn from rotator's journal for an assessor to examine. It is not a legal "
    "claim or an attestation of compliance with PCI DSS, CIS or any other standard; control labels only say "
    "which requirement a column is meant to support."
)
#: the control labels columns carry
CONTROLS = {
    "rotations": "PCI DSS 8.6.3",
    "max_age": "PCI DSS 3.7.4 (cryptoperiod)",
    "within_max_age": "PCI DSS 8.6.3 / 3.7.4",
    "within_90d": "CIS 90-day",
    "revocations": "CIS 90-day (deactivate, delete)",
    "chain": "audit trail integrity",
}
CIS_LIMIT = timedelta(days=90)
#: the journal's time text sorts as the times compare only from the year 1000 on (``rfc3339_micro``
#: does not pad the year): a period bound before it would compare wrongly with every row
EARLIEST_YEAR = 1000


def parse_date(flag: str, text: str) -> datetime:
    """``YYYY-MM-DD`` (midnight UTC) or an RFC 3339 time from the year 1000 on; ConfigError otherwise."""
    try:
        moment = parse_rfc3339(text)
    except ValueError:
        raise ConfigError(f"{flag} {text!r} is not a date",
                          hint=f"use YYYY-MM-DD (UTC) or an RFC 3339 time, e.g. {flag} 2026-01-01") from None
    if moment.year < EARLIEST_YEAR:
        raise ConfigError(f"{flag} {text!r} is before the year {EARLIEST_YEAR}, which the journal cannot hold",
                          hint=f"give a date from {EARLIEST_YEAR}-01-01 on (the journal holds nothing older), "
                          f"e.g. {flag} 2026-01-01")
    return moment


@dataclass
class Rotation:
    run_id: str
    kind: str
    state: str
    started_at: str
    verified_at: str | None
    published_at: str | None
    old_token_id: str | None
    new_token_id: str | None
    instance: str | None
    #: a chained event backs the publication (`published`, or `bootstrap`, ok, naming the token): True;
    #: the run says it published and the chain has no such event (the runs table, which the chain
    #: does not cover, was written to): False; not published, or its events pruned: None
    in_chain: bool | None = None
    #: a person's `recover --abandon` of the run (closed as failed, its candidate not revoked) or of its
    #: tag search, with the reason (:func:`_abandonments`), as a dismissed revocation's reason is shown
    note: str | None = None
    #: an emergency rotation (`rotate --revoke-previous-now`), as the chain (or a checkpoint) says
    emergency: bool = False
    #: the person's ``--reason`` of that emergency rotation or of a repair (`bootstrap --replace`),
    #: masked as a dismissal's reason is (:func:`_decisions`)
    reason: str | None = None


@dataclass
class RevocationRow:
    token_id: str
    run_id: str
    reason: str
    due_at: str
    state: str
    done_at: str | None
    confirmed_by_issuer: bool
    attempts: int
    last_error: str | None
    #: a dismissed revocation's reason (``revoke-expired --dismiss``; the row keeps it, the chained
    #: event too)
    note: str | None = None


@dataclass
class Failure:
    at: str
    run_id: str | None
    step: str
    result: str
    error: str | None
    #: how it ended: the run's final state, or "revocation retried, then done" ...
    ended: str
    instance: str | None


@dataclass
class PolicyEvidence:
    policy: str
    max_age_s: int
    schedule: str
    rotations: list[Rotation] = field(default_factory=list)
    revocations: list[RevocationRow] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    max_observed_age_s: int | None = None
    #: the token that lived longest in the period
    oldest_token_id: str | None = None
    pruned: list[dict[str, Any]] = field(default_factory=list)
    #: runs that say they published a token, among those the rows and the age are built from, with
    #: no chained event that says so (Rotation.in_chain)
    not_in_chain: list[str] = field(default_factory=list)
    #: revocations the chain contradicts (:func:`_revocation_evidence`): a row done with no chained
    #: event that says so, due later than the chain allows, or missing where the chain scheduled or
    #: tried one; written (or deleted) outside rotator. Token ids ("(the token run X replaced)" when a
    #: chained `published` event scheduled one that no event names)
    revocations_not_in_chain: list[str] = field(default_factory=list)
    #: token ids of the listed revocations overdue at the period's end (now, for a period not over yet),
    #: as `rotator status --check` judges one (compliance.is_overdue): pending more than the slack past
    #: the due time the chain allows, or failed
    overdue_revocations: list[str] = field(default_factory=list)
    #: those of them whose rows and events were pruned, as a checkpoint's summary records them
    #: (audit_chain.LATE_REVOCATIONS): token_id, due_at, failed_at, done_at, checkpoint_seq
    overdue_pruned: list[dict[str, Any]] = field(default_factory=list)
    #: why pruned history leaves the overdue count open (None: it does not): a checkpoint that keeps
    #: no revocation's times, whose range may hold one overdue at the period's end
    overdue_undecided: str | None = None
    #: the period, as the journal's time text: a rotation counts in it by its publication
    period: tuple[str, str] = ("", "\uffff")
    #: listed runs whose publication a pruned range's summary counts (their event went with it): the
    #: summary leaves them out, or they would count twice
    counted_in_pruned: list[str] = field(default_factory=list)
    #: chained publications (`published` or `bootstrap`, ok) whose run row is missing or does not say it
    #: published that token: the runs table was written to or deleted from. Each: run_id, step, at,
    #: token_id, problem. The age counts them (the chain's timeline), and so does the rotation count
    publications_without_run: list[dict[str, Any]] = field(default_factory=list)
    #: listed runs whose row says a person abandoned them (``abandoned by hand: ...``) while the chain,
    #: which holds that time, has no `recover` / `abandoned` event of them: the runs table was written to
    abandoned_not_in_chain: list[str] = field(default_factory=list)
    #: listed runs (or their tag searches) a person abandoned in the period, as the chain says (or the
    #: row, where the chain no longer holds that time): counted as dismissed revocations are
    abandoned: list[str] = field(default_factory=list)
    #: abandonments in the period the chain or a checkpoint of pruned history holds whose run has no row
    #: to list (a published run's, pruned; or deleted): run_id, at, note, checkpoint_seq (None: the chain's)
    abandoned_without_row: list[dict[str, Any]] = field(default_factory=list)
    #: emergency rotations started in the period (`rotate --revoke-previous-now --reason`), from the chain
    #: and the checkpoints of pruned history: at, run_id (None: none found), reason (masked),
    #: checkpoint_seq (None: the chain's event)
    emergencies: list[dict[str, Any]] = field(default_factory=list)
    #: repairs in the period (`bootstrap --replace --reason`), likewise: at, run_id, token_id, replaced,
    #: reason (masked), checkpoint_seq
    repairs: list[dict[str, Any]] = field(default_factory=list)
    #: run ids, and revocations' token ids, whose rows hold a value rotator never writes (a time that
    #: does not parse): edited outside rotator, and left out of everything else the report computes
    unreadable_runs: list[str] = field(default_factory=list)
    unreadable_revocations: list[str] = field(default_factory=list)
    #: runs that published the token already current (the same bootstrap run again): no rotation, and
    #: the token ages on from its first publication
    republished: list[str] = field(default_factory=list)
    #: the oldest a token current in the period may have been where pruned history cannot say
    #: (``max_observed_age_s`` is then the oldest it is known to have been), and why (None: measured)
    max_age_bound_s: int | None = None
    age_undecided: str | None = None

    def _within(self, limit: float) -> bool | None:
        """Whether the period's tokens stayed within ``limit`` seconds: None when no token was current,
        or when pruned history leaves it open (known older: False; at most that old: True)."""
        if self.max_observed_age_s is None and self.max_age_bound_s is None:
            return None
        if (self.max_observed_age_s or 0) > limit:
            return False
        return None if self.max_age_bound_s is not None and self.max_age_bound_s > limit else True

    @property
    def within_max_age(self) -> bool | None:
        return self._within(self.max_age_s)

    @property
    def within_90d(self) -> bool | None:
        return self._within(CIS_LIMIT.total_seconds())

    def summary(self) -> dict[str, Any]:
        return {
            # by publication: a run listed because it started in the period may publish after it; only a
            # run in a success state published (another carrying a published_at is in_chain False)
            "rotations": sum(1 for r in self.rotations if r.published_at and r.state in RunState.SUCCESS
                             and r.in_chain is not False
                             and self.period[0] <= r.published_at < self.period[1]
                             and r.run_id not in self.counted_in_pruned and r.run_id not in self.republished)
                         # the chain says these published, whatever their rows (missing) say
                         + sum(1 for p in self.publications_without_run
                               if self.period[0] <= p["at"] < self.period[1] and p["run_id"] not in self.republished),
            "rotations_counted_in_pruned": sum(1 for r in self.rotations if r.run_id in self.counted_in_pruned
                                               and r.published_at and self.period[0] <= r.published_at
                                               < self.period[1]),
            # (a row the chain contradicts is shown in the state the chain supports, and never counted as
            # ended by a person or by rotator on the row's word alone)
            "revocations_done": sum(1 for r in self.revocations
                                    if r.state == "done" and r.token_id not in self.revocations_not_in_chain),
            "revocations_pending": sum(1 for r in self.revocations if r.state == "pending"),
            "revocations_failed": sum(1 for r in self.revocations if r.state == "failed"),
            # (what `status --check` would have called overdue at the period's end: the failed ones too)
            # (None where pruned history cannot say: never 0 on a guess; the note says why, and the list
            # holds those it knows of)
            "revocations_overdue": None if self.overdue_undecided else len(self.overdue_revocations),
            "revocations_overdue_undecided": self.overdue_undecided,
            "revocations_dismissed": sum(1 for r in self.revocations
                                         if r.state == "dismissed" and r.token_id not in self.revocations_not_in_chain),
            # (`recover --abandon`: a run closed without revoking its candidate, or a published run's tag
            # search ended; like a dismissal, a person's decision with its reason, and no verdict of its own)
            "runs_abandoned": len(self.abandoned),
            # (a person's --reason each, listed with it; pruned history's from the checkpoints)
            "emergency_rotations": len(self.emergencies),
            "repairs": len(self.repairs),
            "failures": len(self.failures),
            "max_age_s": self.max_age_s,
            "max_observed_age_s": self.max_observed_age_s,
            "oldest_token_id": self.oldest_token_id,
            "within_max_age": self.within_max_age,
            "within_90d": self.within_90d,
            # (set where pruned history leaves the age open: the oldest it may have been, and why)
            "max_age_bound_s": self.max_age_bound_s,
            "age_undecided": self.age_undecided,
            "republished": len(self.republished),
            # every run finding, each kind also counted on its own below
            "rotations_not_in_chain": len(self.not_in_chain) + len(self.publications_without_run)
                                      + len(self.unreadable_runs) + len(self.abandoned_not_in_chain),
            "revocations_not_in_chain": len(self.revocations_not_in_chain) + len(self.unreadable_revocations),
            "publications_without_run": len(self.publications_without_run),
            "runs_unreadable": len(self.unreadable_runs),
            "revocations_unreadable": len(self.unreadable_revocations),
        }


@dataclass
class Evidence:
    start: datetime
    end: datetime
    generated_at: datetime
    journal: str
    chain: audit_chain.ChainReport
    policies: list[PolicyEvidence]
    #: policies the journal holds events of in the period (or an unfinished revocation, or a token
    #: published before the period's end and not revoked before its start) that the policy file no
    #: longer has: the report cannot show them, and must say so
    not_in_file: list[str] = field(default_factory=list)

    # Both lists are printed on a terminal (`rotator report` names them on stderr), and their ids come
    # from the tables they name as written outside rotator: control characters are written out.
    @property
    def not_in_chain(self) -> list[str]:
        """Runs that say they published a token without a chained event that says so, chained
        publications whose run row is missing or says otherwise, and run rows rotator cannot read:
        ``policy/run id``, the last two with what is wrong."""
        return [one_line(text) for p in self.policies for text in (
            [f"{p.policy}/{run_id}" for run_id in p.not_in_chain]
            + [f"{p.policy}/{m['run_id']} ({m['problem']}: the chain's `{m['step']}` event at {m['at']} names token "
               f"{m['token_id']})" for m in p.publications_without_run]
            + [f"{p.policy}/{run_id} ({_UNREADABLE})" for run_id in p.unreadable_runs]
            + [f"{p.policy}/{run_id} ({_ABANDONED_NOT_IN_CHAIN})" for run_id in p.abandoned_not_in_chain])]

    @property
    def revocations_not_in_chain(self) -> list[str]:
        """Revocations the chain contradicts (marked done with no chained event that says so, due
        later than the chain allows, in a state the chain does not show or rotator never writes, or
        scheduled or tried with no row), and rows rotator cannot read: ``policy/token id``."""
        return [one_line(text) for p in self.policies for text in (
            [f"{p.policy}/{token_id}" for token_id in p.revocations_not_in_chain]
            + [f"{p.policy}/{token_id} ({_UNREADABLE})" for token_id in p.unreadable_revocations])]

    def as_dict(self) -> dict[str, Any]:
        return {
            "disclaimer": DISCLAIMER,
            "controls": CONTROLS,
            "from": ts(self.start), "to": ts(self.end), "generated_at": ts(self.generated_at),
            "journal": self.journal,
            # head: what `rotator audit verify --expect` takes (kept from each report; None: broken)
            "chain": {**self.chain.as_dict(), "head": self.chain.kept_link() if self.chain.ok else None},
            "policies": [
                {"policy": p.policy, "schedule": p.schedule, "summary": p.summary(),
                 "rotations": [asdict(r) for r in p.rotations], "revocations": [asdict(r) for r in p.revocations],
                 "failures": [asdict(f) for f in p.failures], "pruned": p.pruned,
                 "publications_without_run": p.publications_without_run, "unreadable_runs": p.unreadable_runs,
                 "unreadable_revocations": p.unreadable_revocations, "republished_runs": p.republished,
                 "abandoned_runs": p.abandoned, "abandoned_not_in_chain": p.abandoned_not_in_chain,
                 "abandoned_without_run_row": p.abandoned_without_row, "emergency_rotations": p.emergencies,
                 "repairs": p.repairs, "overdue_revocations": p.overdue_revocations,
                 "overdue_revocations_pruned": p.overdue_pruned}
                for p in self.policies
            ],
            "policies_not_in_file": self.not_in_file,
        }  # fmt: skip


def build(journal: Journal, policies: Sequence[Policy], start: datetime, end: datetime, now: datetime,
          in_file: Collection[str] | None = None, slack: timedelta = DEFAULT_SLACK) -> Evidence:  # fmt: skip
    """The evidence of ``policies`` over [start, end). ``in_file``: every policy name of the policy file
    (default: those of ``policies``); the journal's other policies with events in the period, a
    revocation not done, or a token published before the period's end and not revoked before its
    start (:func:`_policies_with_a_token_left`) are listed as not in the file. ``slack``: how long
    past its due time a pending revocation may wait before it counts as overdue, as `rotator status
    --check` judges it (:attr:`PolicyEvidence.overdue_revocations`)."""
    if start.year < EARLIEST_YEAR:  # (a default --from, 90 days before a --to early in the year 1000)
        raise ConfigError(f"the period starts before the year {EARLIEST_YEAR}, which the journal cannot hold",
                          hint=f"give a --from from {EARLIEST_YEAR}-01-01 on, e.g. --from 2026-01-01")
    try:
        # One read snapshot for all of it: the rows are checked against the events, and a revocation
        # that commits its row and its event between two reads would otherwise look contradicted.
        with journal.audit_transaction(write=False):
            return _build(journal, policies, start, end, now, in_file, slack)
    except JournalError:
        missing = _missing_tables(journal)
        if not missing:
            raise
    # rotator creates these tables and never drops one: a missing one is a journal altered outside it
    problem = (f"the journal has no {', '.join(missing)} table{'s' if len(missing) > 1 else ''} (rotator never "
               "drops one: it was dropped outside rotator), so none of its history is evidence; compare the journal "
               "with a backup")
    chain = audit_chain.ChainReport(ok=False, checked=0, head_seq=0, head_hash="", start_seq=0, problem=problem,
                                    broken={"missing_tables": missing})
    return Evidence(start, end, now, journal.location, chain, [
        PolicyEvidence(p.name, int(max_age_of(p).total_seconds()), p.schedule_text, period=(ts(start), ts(end)))
        for p in policies])


#: the tables the report reads; the chain lives in the first three
_TABLES = ("events", "audit_head", "audit_checkpoints", "runs", "revocations")
#: whether a table exists, from each backend's catalogue (the other's fails): SQLite, PostgreSQL
_TABLE_PROBES = (
    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
    "SELECT 1 FROM pg_catalog.pg_tables WHERE tablename = ? AND schemaname = ANY (current_schemas(false))",
)


def _missing_tables(journal: Journal) -> list[str]:
    """Which of :data:`_TABLES` the journal lacks; [] when it has them all or its catalogue cannot be
    read (then the journal's own error is the one to show: a lost connection, a locked file)."""
    missing = []
    for table in _TABLES:
        for probe in _TABLE_PROBES:
            try:
                with journal.audit_transaction(write=False) as (cur, _lock):
                    found = cur.execute(probe, (table,)).fetchone() is not None
                break
            except JournalError:
                continue
        else:
            return []
        if not found:
            missing.append(table)
    return missing


def _build(journal: Journal, policies: Sequence[Policy], start: datetime, end: datetime, now: datetime,
           in_file: Collection[str] | None, slack: timedelta = DEFAULT_SLACK) -> Evidence:  # fmt: skip
    chain = audit_chain.verify(journal)
    events = audit_chain.chained_events(journal, ts(start), ts(end))
    try:
        # An altered checkpoint breaks the chain, and then no summary of one is evidence (nor is its
        # shape known: a prune writes objects, an edit may write anything).
        checkpoints = audit_chain.checkpoints(journal) if chain.ok else []
    except ValueError:
        checkpoints = []
    pruned_publish = audit_chain.pruned_current(reversed(checkpoints))
    # Events before this were pruned (or the chain cannot say): runs from then are not cross-checked.
    pruned_until = max((str(cp.detail.get("to") or "") for cp in checkpoints), default="")
    # Runs published before it (an upgraded journal's) have no chained event to show. A prune moves the
    # first kept link past a quiet stretch: from the last pruned link on, every run has its event.
    first_link = (audit_chain.first_link_at(journal) or "") if chain.ok else None
    began = (audit_chain.began_by(first_link, pruned_until) or "") if first_link is not None else None
    # Where the history the chain holds begins, for revocations: a chain that holds every event the
    # journal ever had (none pruned, none from before it) leaves a done row no excuse for a missing
    # event; a prune's cutoff says which done rows it deleted.
    history = ("" if _holds_all_history(journal) else max(pruned_until, first_link)) if first_link is not None else ""
    cutoff = _prune_cutoff(journal) if chain.ok else ""
    out = []
    for policy in policies:
        out.append(_policy_evidence(journal, policy, start, end, now, events, checkpoints,
                                    pruned_publish.get(policy.name), pruned_until, began, (history, cutoff),
                                    slack))
    known = set(in_file if in_file is not None else (p.name for p in policies))
    seen = ({str(e["policy"]) for e in events} | _policies_with_open_revocations(journal)
            | _policies_with_a_token_left(journal, start, end))
    # (named on a terminal by `rotator report`: an event's policy is text the journal holds)
    missing = sorted(one_line(name) for name in seen - known - {audit_chain.JOURNAL_POLICY})
    return Evidence(start, end, now, journal.location, chain, out, missing)


def _policies_with_a_token_left(journal: Journal, start: datetime, end: datetime) -> set[str]:
    """The policies whose last publication before ``end`` published a token no revocation done before
    ``start`` ended: that token may have been current in the period with no event of it there (a
    policy removed from the file stops rotating, and its token stays valid)."""
    success = ", ".join(f"'{state}'" for state in RunState.SUCCESS)
    with journal.audit_transaction(write=False) as (cur, _lock):
        rows = cur.execute(
            "SELECT DISTINCT r.policy FROM runs r JOIN (SELECT policy, MAX(published_at) AS last FROM runs "
            f"WHERE state IN ({success}) AND published_at IS NOT NULL AND published_at < ? GROUP BY policy) m "
            f"ON r.policy = m.policy AND r.published_at = m.last WHERE r.state IN ({success}) AND NOT EXISTS "
            "(SELECT 1 FROM revocations v WHERE v.policy = r.policy AND v.token_id = r.new_token_id "
            "AND v.state = ? AND v.done_at < ?)", (ts(end), RevocationState.DONE, ts(start)),
        ).fetchall()
    return {str(r[0]) for r in rows}


def _policies_with_open_revocations(journal: Journal) -> set[str]:
    """The policies with a revocation not done (nor dismissed): read without parsing the rows, whose
    times may have been edited (the policies in the file have them checked on their own)."""
    with journal.audit_transaction(write=False) as (cur, _lock):
        rows = cur.execute("SELECT DISTINCT policy FROM revocations WHERE state NOT IN (?, ?)",
                           (RevocationState.DONE, RevocationState.DISMISSED)).fetchall()
    return {str(r[0]) for r in rows}


def _policy_evidence(
    journal: Journal, policy: Policy, start: datetime, end: datetime, now: datetime,
    events: list[dict[str, Any]], checkpoints: list[audit_chain.Checkpoint],
    pruned_publish: tuple[str, str | None] | None,
    pruned_until: str = "", began: str | None = "", history: tuple[str, str] = ("", ""),
    slack: timedelta = DEFAULT_SLACK,
) -> PolicyEvidence:  # fmt: skip
    """``began``: when the chain began at the latest (:func:`audit_chain.began_by`); None when the
    chain is broken (then no run is checked against it: its events prove nothing). ``history``: where
    the history the chain holds begins, and the latest chained prune's cutoff (:func:`_revocation_evidence`)."""
    ev = PolicyEvidence(policy.name, int(max_age_of(policy).total_seconds()), policy.schedule_text)
    mine = [e for e in events if e["policy"] == policy.name]
    by_run: dict[str, list[dict[str, Any]]] = {}
    for e in mine:
        if e["run_id"]:
            by_run.setdefault(e["run_id"], []).append(e)
    runs, ev.unreadable_runs = _readable_runs(journal, policy.name)
    runs_by_id = {r.run_id: r for r in runs}
    lo, hi = ts(start), ts(end)
    ev.period = (lo, hi)
    abandoned = _abandonments(journal, policy, runs, began, history[0], checkpoints)
    emergencies, repairs = _decisions(journal, policy.name, checkpoints, began)
    emergency_of = {e["run_id"]: e for e in emergencies if e["run_id"]}
    repair_of = {r["run_id"]: r for r in repairs if r["run_id"]}
    for run in sorted(runs, key=lambda r: r.started_at):
        # Started or published in the period: a run that began before it and published in it is one
        # of its rotations (a verify can wait minutes for a new token to become active). Or abandoned
        # in it, as a dismissed revocation is listed in the period it was dismissed in.
        gave_up = abandoned.get(run.run_id)
        if not (lo <= ts(run.started_at) < hi or (run.published_at is not None and lo <= ts(run.published_at) < hi)
                or (gave_up is not None and lo <= gave_up.at < hi)):
            continue
        run_events = by_run.get(run.run_id, [])
        until = run.published_at or run.finished_at or run.updated_at
        if ts(run.started_at) < lo or ts(until) >= hi:
            # The run crosses the period's start or end: its verify (and the instance that ran it)
            # may lie outside the period's events.
            run_events = [e for e in audit_chain.chained_events(journal, ts(run.started_at),
                                                                ts(until + _EVENT_AFTER_PUBLISH))
                          if e["run_id"] == run.run_id]
        verified = next((e["at"] for e in run_events if e["step"] == "verify" and e["result"] == "ok"), None)
        instance = next((e["instance"] for e in run_events if e.get("instance")), None)
        decided = emergency_of.get(run.run_id) or repair_of.get(run.run_id)
        ev.rotations.append(Rotation(
            run.run_id, run.kind, run.state, ts(run.started_at), verified,
            ts(run.published_at) if run.published_at else None, run.old_token_id, run.new_token_id, instance,
            _in_chain(journal, run, run_events, pruned_until, began, history[1]),
            gave_up.text if gave_up is not None else None,
            emergency=run.run_id in emergency_of, reason=decided["reason"] if decided is not None else None,
        ))  # fmt: skip
        if gave_up is not None and gave_up.backed is False:
            ev.abandoned_not_in_chain.append(run.run_id)
        elif gave_up is not None and lo <= gave_up.at < hi:
            ev.abandoned.append(run.run_id)
    # An abandonment the chain or a checkpoint holds counts in its period without a row to list: a
    # published run's tag search leaves none on the row, which a prune may delete.
    for run_id, gave_up in abandoned.items():
        if run_id not in runs_by_id and run_id not in ev.unreadable_runs and lo <= gave_up.at < hi:
            ev.abandoned.append(run_id)
            ev.abandoned_without_row.append({"run_id": run_id, "at": gave_up.at, "note": gave_up.text,
                                             "checkpoint_seq": gave_up.checkpoint_seq})
    ev.emergencies = [e for e in emergencies if lo <= e["at"] < hi]
    ev.repairs = [r for r in repairs if lo <= r["at"] < hi]
    ev.counted_in_pruned = [r.run_id for r in ev.rotations if r.in_chain is None and r.published_at
                            and r.state in RunState.SUCCESS and pruned_until and r.published_at <= pruned_until]
    revocations, ev.unreadable_revocations = _readable_revocations(journal, policy.name)
    _revocation_evidence(journal, ev, runs_by_id, revocations, checkpoints, end, now, began, policy.grace, *history,
                         slack=slack)
    _pruned_overdue(ev, checkpoints, end, now, slack)
    ev.pruned = _pruned_summaries(checkpoints, policy.name, lo, hi)
    # The checkpoint summaries' rule (audit_chain.counts_as_failure): a run counts once, and not again
    # here when a pruned summary shown for the period counted it (a prune split its events).
    counted = {run_id for pr in ev.pruned for run_id in audit_chain.failed_runs(pr)}
    for e in mine:
        if audit_chain.counts_as_failure(e, counted):
            ev.failures.append(Failure(e["at"], e["run_id"], e["step"], e["result"], masked(e["detail"].get("error")),
                                       _ended(e, runs_by_id, revocations, abandoned), e.get("instance")))  # fmt: skip
    # A run the chain does not back is no evidence of a rotation: the age goes on from the token before.
    # Every run the age is computed from is checked, not only those listed (started in the period).
    listed = {r.run_id: r.in_chain for r in ev.rotations}
    for run in _runs_the_age_uses(runs, start, min(end, now)):
        backed = listed.get(run.run_id) if run.run_id in listed else _in_chain(
            journal, run, by_run.get(run.run_id, []), pruned_until, began, history[1])
        if backed is False:
            ev.not_in_chain.append(run.run_id)
    # and every listed run the chain contradicts (one that never published, carrying a published_at)
    ev.not_in_chain += [r.run_id for r in ev.rotations if r.in_chain is False and r.run_id not in ev.not_in_chain]
    forged = set(ev.not_in_chain)
    # The publication timeline is the chain's: a run row deleted (or edited) must not take its token's
    # lifetime out of the age. Rows stand in only where the chain cannot say (pruned, before it began).
    stop = min(end, now)
    publications = _chained_publications(journal, policy.name, ts(stop)) if began is not None else []
    ev.publications_without_run = _publications_without_run(
        publications, runs_by_id, forged, set(ev.unreadable_runs), lo, hi, pruned_until, history[1])
    # (named once: as the publication the chain holds, which counts, or else as a row)
    ev.unreadable_runs = [r for r in ev.unreadable_runs if r not in {m["run_id"] for m in ev.publications_without_run}]
    timeline = _timeline(runs, forged, publications, pruned_until, began, pruned_publish,
                         _pruned_records(checkpoints, policy.name), history[1])
    ev.republished = sorted(timeline.republished)
    age = _max_age(timeline, start, end, now)
    ev.max_observed_age_s, ev.oldest_token_id = age.low, age.token_id
    for pruned in ev.pruned:
        pruned_age = int(pruned.get("max_token_age_seconds") or 0)
        # (not a range that starts at the period's start: a publication then replaced a token current
        # before the period only, and its age may be the one the range kept, as _max_age reads it)
        if pruned["within_period"] and lo < pruned["from"] and pruned_age and pruned_age > (ev.max_observed_age_s or 0):
            ev.max_observed_age_s, ev.oldest_token_id = pruned_age, "(pruned)"
    if age.high is not None and age.high > (ev.max_observed_age_s or 0):
        ev.max_age_bound_s = age.high
        ranges = ", ".join(f"{ts(b.start)} to {ts(b.last)} ({b.count} publications, checkpoint seq {b.seq})"
                           for b in age.open)
        ev.age_undecided = (f"pruned history holds only how many tokens were published and the oldest one replaced "
                            f"({_age(age.high)}) in {ranges}, which the period's start or end falls in: which of them "
                            "were current in the period, and how old, cannot be told from what the journal kept")
    return ev


def _pruned_summaries(checkpoints: Sequence[audit_chain.Checkpoint], policy: str, lo: str,
                      hi: str) -> list[dict[str, Any]]:  # fmt: skip
    """The policy's checkpoint summaries whose ranges meet the period [lo, hi), each with its range,
    its checkpoint's seq and ``within_period``: a summary counts its whole range, and one that reaches
    outside the period may hold a token's age from outside it (January's, in a report of April to
    June), and cannot say which side."""
    found = []
    for cp in checkpoints:
        summary = cp.detail.get("policies", {}).get(policy)
        if not isinstance(summary, dict) or not cp.detail.get("from") or cp.detail["from"] >= hi \
                or cp.detail["to"] < lo:
            continue
        inside = lo <= cp.detail["from"] and cp.detail["to"] < hi
        found.append({"from": cp.detail["from"], "to": cp.detail["to"], "checkpoint_seq": cp.seq, **summary,
                      "within_period": inside})
    return found


_ROW_ERRORS = (ValueError, TypeError)
#: what the report says of a row the journal cannot read
_UNREADABLE = "its row holds a value rotator never writes: edited outside rotator"


def _readable_runs(journal: Journal, policy: str) -> tuple[list[RunRecord], list[str]]:
    """The policy's runs, and the ids of the rows the journal cannot read (a time that does not parse:
    the table is not chained, and such a row is a finding of the report, not a reason to stop it)."""
    try:
        return journal.runs(policy, limit=1_000_000), []
    except _ROW_ERRORS:
        pass
    with journal.audit_transaction(write=False) as (cur, _lock):
        ids = [str(r[0]) for r in cur.execute("SELECT run_id FROM runs WHERE policy = ?", (policy,)).fetchall()]
    runs, unreadable = [], []
    for run_id in ids:
        try:
            run = journal.get_run(run_id)
        except _ROW_ERRORS:
            unreadable.append(run_id)
            continue
        if run is not None and run.policy == policy:
            runs.append(run)
    return runs, sorted(unreadable)


_REVOCATION_COLUMNS = ("token_id", "run_id", "reason", "due_at", "state", "attempts", "next_try_at", "last_error",
                       "done_at")


def _readable_revocations(journal: Journal, policy: str) -> tuple[list[Revocation], list[str]]:
    """The policy's revocations, and the token ids of the rows the journal cannot read (see
    :func:`_readable_runs`). The journal reads none when one fails, and has no read of one row: the
    rows are read here then, each as the journal would."""
    try:
        return journal.revocations(policy), []
    except _ROW_ERRORS:
        pass
    with journal.audit_transaction(write=False) as (cur, _lock):
        rows = cur.execute(f"SELECT {', '.join(_REVOCATION_COLUMNS)} FROM revocations WHERE policy = ? "
                           "ORDER BY due_at", (policy,)).fetchall()
    revocations, unreadable = [], []
    for row in rows:
        d = dict(zip(_REVOCATION_COLUMNS, row, strict=True))
        try:
            due = _row_time(d["due_at"])
            if due is None:
                raise ValueError("no due time")
            revocations.append(Revocation(
                policy, str(d["token_id"]), str(d["run_id"]), str(d["reason"]), due, str(d["state"]),
                int(d["attempts"] or 0), _row_time(d["next_try_at"]), d["last_error"], _row_time(d["done_at"])))
        except _ROW_ERRORS:
            unreadable.append(str(d["token_id"]))
    return revocations, sorted(unreadable)


def _row_time(value: Any) -> datetime | None:
    """A time column as the journal reads it (rotator.core.journal._dt), or ValueError / TypeError."""
    if value is None:
        return None
    if len(value) == 27 and value[-1] == "Z":
        return datetime.fromisoformat(value)
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


@dataclass(frozen=True)
class _Publication:
    """A `published` or `bootstrap` ok event: the chain's record of a token becoming current."""

    at: str
    run_id: str
    step: str
    token_id: str | None
    #: when the token began to age where that is before ``at`` (a bootstrapped token's creation)
    since: str | None
    #: a link of the chain (not an event from before it)
    linked: bool


def _unlinked_bound(cur: Any) -> str:
    """The latest time an event without a link may carry, by the chain's own record
    (:func:`audit_chain.unlinked_until`; "9999": no link yet). A row without a link dated later is an
    insertion, no evidence."""
    bound = audit_chain.unlinked_until_in(cur)
    return "9999" if bound is None else bound


def _event_detail(text: Any) -> dict[str, Any]:
    """An event row's ``detail`` as a dict; {} for one that is not a JSON object (edited outside
    rotator: verify names it, and the report judges the event without it)."""
    try:
        detail = json.loads(text)
    except (ValueError, TypeError):
        return {}
    return detail if isinstance(detail, dict) else {}


def _chained_publications(journal: Journal, policy: str, stop: str) -> list[_Publication]:
    """The policy's publications before ``stop`` that the chain holds (and those from before it, as
    :func:`audit_chain.chained_events` takes them), oldest first."""
    with journal.audit_transaction(write=False) as (cur, _lock):
        unlinked = _unlinked_bound(cur)
        rows = cur.execute(
            f"SELECT seq, at, run_id, step, detail FROM events WHERE policy = ? AND step IN "
            f"({', '.join('?' * len(_PUBLISH_STEPS))}) AND result = 'ok' AND at < ? AND (seq IS NOT NULL OR at <= ?)",
            (policy, *_PUBLISH_STEPS, stop, unlinked),
        ).fetchall()
    out = []
    for seq, at, run_id, step, text in rows:
        if not audit_chain.is_journal_time(at):
            continue  # (an unlinked row's: verify names it; a link's cannot be edited in a chain that holds)
        detail = _event_detail(text)
        made = _due_text(detail.get("token_created_at")) if step == "bootstrap" else None
        out.append(_Publication(str(at), str(run_id or ""), str(step),
                                str(detail["token_id"]) if detail.get("token_id") else None,
                                made if made is not None and made < str(at) else None, seq is not None))
    out.sort(key=lambda p: p.at)
    return out


def _publications_without_run(
    publications: Sequence[_Publication], runs: Mapping[str, RunRecord], named: Collection[str],
    unreadable: Collection[str], lo: str, hi: str, pruned_until: str, cutoff: str,
) -> list[dict[str, Any]]:  # fmt: skip
    """The chained publications whose tokens were current in [lo, hi) (those in it, and the last
    before it) whose run row is missing, cannot be read (``unreadable``) or does not say it published
    that token. ``named``: runs the report names already (contradicted). A prune deletes a finished run older than
    its ``cutoff`` with that run's events, but a run finished before its `published` event was
    written (the same commit): an hour past the cutoff, a row is always kept."""
    after = _plus(cutoff, _EVENT_AFTER_PUBLISH) if cutoff else ""
    before = [p for p in publications if p.at < lo]
    out = []
    for p in before[-1:] + [p for p in publications if lo <= p.at < hi]:
        if not p.linked or p.at <= pruned_until or (after is None or p.at < after) or p.run_id in named:
            continue
        run = runs.get(p.run_id)
        if p.run_id in unreadable:
            problem = _UNREADABLE
        elif run is None:
            problem = "no run row"
        elif run.state in RunState.SUCCESS and run.published_at is not None and run.new_token_id == p.token_id:
            continue
        else:
            problem = "its run row does not say it published that token"
        out.append({"run_id": p.run_id, "step": p.step, "at": p.at, "token_id": p.token_id, "problem": problem})
    return out


class _Published(NamedTuple):
    """A publication of the policy's timeline (:func:`_timeline`)."""

    at: datetime
    #: the token's id as the report shows it ("(pruned)": a checkpoint's, whose run went with it)
    token_id: str | None
    #: when that token began to age
    born: datetime
    #: the run that published it (None: only a checkpoint records it)
    run_id: str | None = None
    #: the token's id as the chain or a checkpoint records it: a publication of the one already current
    #: is no rotation
    same: str | None = None


@dataclass(frozen=True)
class _Pruned:
    """One policy's publications in one checkpoint's range, as its summary records them."""

    seq: int
    #: the range's first event: none of them is earlier
    start: datetime
    #: the last of them, the only one whose time is kept, its token (where recorded) and when it began to age
    last: datetime
    token_id: str | None
    born: datetime
    count: int
    #: the oldest a token they replaced was when replaced, seconds
    max_age_s: int


@dataclass
class _Timeline:
    """The policy's publications by time, what pruned history left open, and the republications."""

    points: list[_Published]
    #: checkpoint ranges whose publications but the last went with pruned history without their
    #: times, by the time of the point that stands for that last one
    blocks: dict[datetime, _Pruned]
    #: runs that published the token already current (the same bootstrap run again): no rotation
    republished: set[str]


def _pruned_records(checkpoints: Sequence[audit_chain.Checkpoint], policy: str) -> list[_Pruned]:
    """The policy's publications in each checkpoint's range (oldest first), from its summary."""
    out = []
    for cp in checkpoints:
        entry = cp.detail.get("policies", {}).get(policy)
        if not isinstance(entry, dict):
            continue
        try:
            count = int(entry.get("rotations") or 0)
            if count < 1:
                continue
            last = parse_rfc3339(str(entry["last_published_at"]))
            since = entry.get("token_since")
            born = min(parse_rfc3339(str(since)), last) if since else last
            first = min(parse_rfc3339(str(cp.detail["from"])), last)
            oldest = int(entry.get("max_token_age_seconds") or 0)
        except (KeyError, TypeError, ValueError):  # not what a prune writes (a verified chain covers it)
            continue
        token = entry.get("token_id")
        out.append(_Pruned(cp.seq, first, last, str(token) if token else None, born, count, oldest))
    return out


def _timeline(runs: Sequence[RunRecord], forged: Collection[str], publications: Sequence[_Publication],
              pruned_until: str, began: str | None, pruned_publish: tuple[str, str | None] | None,
              pruned: Sequence[_Pruned] = (), cutoff: str = "") -> _Timeline:  # fmt: skip
    """Every publication of the policy: when, the token, when that token began to age, by time.

    The chain's (``publications``) where it holds them. Over pruned history, the checkpoints'
    summaries (``pruned``): each range's last publication of the policy, with its time, and the
    range itself where it held more than one (a block: only their count and the oldest token they
    replaced are kept). A run's row stands in only where the chain cannot say (:func:`_unchecked`;
    all of them when it is broken, ``began`` None), never a ``forged`` one; inside a checkpoint's
    range only for a publication the checkpoint records (its time within a minute: the row names its
    token and run). ``pruned_publish``: the last publish among the pruned events, for checkpoints that
    record no per-range publications. A publication of the token already current starts nothing:
    the token ages on from its first publication. ``cutoff``: the latest chained prune's (:func:`_unchecked`)."""
    points: list[_Published] = []
    runs_by_id = {r.run_id: r for r in runs}
    seen: set[tuple[str, str | None]] = set()
    for p in publications:
        if (p.run_id, p.token_id) in seen:
            continue
        seen.add((p.run_id, p.token_id))
        at = _parse_ts(p.at)
        run = runs_by_id.get(p.run_id)
        # (an event from before the chain may name no token: its run's row does, the chain cannot)
        token = p.token_id or (run.new_token_id if run is not None and not p.linked else None)
        points.append(_Published(at, token, min(_parse_ts(p.since), at) if p.since else at, p.run_id or None, token))
    backed = {p.run_id for p in publications}
    # From the first checkpoint's range on, its summaries are the record; the runs table is not chained.
    covered = min(r.start for r in pruned) - _EVENT_AFTER_PUBLISH if pruned else None
    labels: list[_Published] = []
    for r in runs:
        if not (r.state in RunState.SUCCESS and r.published_at is not None and r.run_id not in forged
                and r.run_id not in backed and (began is None or _unchecked(r, pruned_until, began, cutoff))):
            continue
        row = _Published(r.published_at, r.new_token_id, r.token_since or r.published_at, r.run_id, r.new_token_id)
        in_pruned = covered is not None and covered <= r.published_at and ts(r.published_at) <= pruned_until
        (labels if in_pruned else points).append(row)
    blocks: dict[datetime, _Pruned] = {}
    for record in pruned:
        # The checkpoint holds the `published` event's time, which the engine takes just after the
        # run's published_at (milliseconds): a kept run published up to a minute before is that token.
        label = next((x for x in labels if record.last - _SAME_PUBLISH <= x.at <= record.last), None)
        point = (label._replace(same=record.token_id or label.same) if label is not None
                 else _Published(record.last, "(pruned)", record.born, None, record.token_id))
        points.append(point)
        if record.count > 1:
            blocks[point.at] = record
    if pruned_publish is not None:
        at = parse_rfc3339(pruned_publish[0])
        born = parse_rfc3339(pruned_publish[1]) if pruned_publish[1] else at
        # Its run may be pruned while its token stayed current past the cutoff: it still counts, with
        # its whole age, as "(pruned)" (its id went with the run).
        if not any(at - _SAME_PUBLISH <= x.at <= at for x in points):
            points.append(_Published(at, "(pruned)", min(born, at)))
    points.sort(key=lambda x: x.at)
    # (inside a block, a point can only be a row's: the block's count and oldest age stand for them)
    spans = sorted((b.start, last) for last, b in blocks.items())
    starts = [first for first, _ in spans]
    points = [x for x in points if not _inside(spans, starts, x.at)]
    kept: list[_Published] = []
    republished: set[str] = set()
    for x in points:
        if kept and x.same is not None and x.same == kept[-1].same and x.at not in blocks:
            if x.run_id:
                republished.add(x.run_id)
            continue
        kept.append(x)
    return _Timeline(kept, blocks, republished)


def _inside(spans: Sequence[tuple[datetime, datetime]], starts: Sequence[datetime], at: datetime) -> bool:
    """Whether ``at`` lies in one of ``spans`` ([first, last), sorted; ``starts``: their firsts), found by
    bisection: a year of daily checkpoints of a policy that rotates hourly makes hundreds of spans."""
    i = bisect.bisect_right(starts, at)
    return any(first <= at < last for first, last in spans[max(i - 2, 0):i])


def _unchecked(run: RunRecord, pruned_until: str, began: str, cutoff: str = "") -> bool:
    """Whether the chain cannot say if it backs ``run``'s publication: published before the pruned
    history's end (its event went with it), or before the chain began (an upgraded journal's).
    ``cutoff``: the latest chained prune's (:func:`_prune_cutoff`)."""
    assert run.published_at is not None
    if pruned_until and ts(run.published_at) <= pruned_until:
        return True
    if not began:
        return False
    first = _parse_ts(began)
    # Within the hour before the first link, its event (unlinked, from before the chain) is looked
    # for; a prune deletes every unlinked event older than its cutoff and, deleting no link, writes no
    # checkpoint (pruned_until stays ""): its absence then says nothing.
    return run.published_at < first - _EVENT_AFTER_PUBLISH or (run.published_at < first
                                                                and bool(cutoff) and ts(run.published_at) < cutoff)




def _parse_ts(text: str) -> datetime:
    try:
        return parse_rfc3339(text)
    except ValueError:  # an edited time (verification names it)
        return datetime.max.replace(tzinfo=UTC)


_PUBLISH_STEPS = ("published", "bootstrap")
#: every state rotator writes to a revocation row
_REVOCATION_STATES = frozenset(RevocationState)
#: an ended revocation's state, and the result of the `revoke_old` event that ended it
_RESULT_OF: dict[str, str] = {RevocationState.DONE: "ok", RevocationState.DISMISSED: "dismissed"}
#: how long after a run's published_at its `published` event may be written (the engine writes it
#: with the run's record, microseconds later; a clock step back could put it earlier)
_EVENT_AFTER_PUBLISH = timedelta(hours=1)
#: a checkpoint's last publish and a kept run published this much before it are one publication
_SAME_PUBLISH = timedelta(minutes=1)


#: the steps whose events say which revocations were scheduled, and what became of them
_REVOCATION_STEPS = ("plan", "published", "bootstrap", "revoke_old", "emergency")
#: a revocation's `revoke_old` event is written in the commit that marks its row done, its time read
#: when that commit is made, which other due revocations' retries before it can delay by minutes (a
#: day is far more than any retry budget)
_DONE_EVENT_WITHIN = (timedelta(seconds=5), timedelta(days=1))


@dataclass
class _Story:
    """What the chain still holds about one token's revocation, in chain order (``order``)."""

    #: (order, time, the due time the event carries or None, a run's replaced token: `revoke_old_at`)
    scheduled: list[tuple[int, str, str | None, bool]] = field(default_factory=list)
    #: `revoke_old` events: (order, time, result, error)
    tries: list[tuple[int, str, str, str | None]] = field(default_factory=list)
    #: when the token itself was published (`published` or `bootstrap`, ok)
    published: list[str] = field(default_factory=list)
    #: an emergency rotation made it due at once (`emergency revoke_now`): (order, time)
    hastened: list[tuple[int, str]] = field(default_factory=list)

    def due_bound(self, until: str = "\uffff", grace: timedelta | None = None) -> str | None:
        """The latest its row's due time can be (as it stood at ``until``): the latest the scheduling
        events carry (a row rescheduled keeps the later time; done, it keeps its own, earlier), and a
        row is tried (or made due at once) only once due, so never after the first such event since
        it was last scheduled. ``grace``: taken as the grace of a bootstrap's scheduling (its event
        carries no due time) for an estimate, not a bound (the policy file's grace may have changed)."""
        before = [s for s in self.scheduled if s[1] < until]
        dues = [due or (_plus(at, grace) if grace is not None else None) for _, at, due, _ in before]
        bounds = [max(str(d) for d in dues)] if dues and None not in dues else []
        last = before[-1][0] if before else -1
        following = min((order for order, *_ in self.scheduled if order > last), default=1 << 62)
        due_by = sorted([(order, at) for order, at, _, _ in self.tries] + self.hastened)
        bounds += [at for order, at in due_by if last < order < following][:1]
        return min(bounds, default=None)

    def changed_since(self, when: str, done_at: str | None) -> bool:
        """Whether its row's due time may have changed at or after ``when``: scheduled again, or
        hastened, before the row ended at ``done_at`` (an ended row keeps its due time)."""
        return any(when <= at and (done_at is None or at <= done_at)
                   for at in [s[1] for s in self.scheduled] + [at for _, at in self.hastened])

    def ended_near(self, done_at: str, result: str) -> bool:
        """Whether its `revoke_old` ``result`` event is the one of a row marked ended at ``done_at``."""
        moment = _parse_ts(done_at)
        try:
            lo, hi = ts(moment - _DONE_EVENT_WITHIN[0]), ts(moment + _DONE_EVENT_WITHIN[1])
        except OverflowError:
            return False
        return any(r == result and lo <= at < hi for _, at, r, _ in self.tries)

    def last_try(self, result: str) -> str | None:
        """When the last `revoke_old` event with ``result`` was written (None: none is kept)."""
        return max((at for _, at, r, _ in self.tries if r == result), default=None)

    def state_before(self, hi: str) -> tuple[str | None, int, str | None, bool]:
        """Its state by the events before ``hi`` (None: none), the tries since it was last scheduled,
        the last one's error, and whether a scheduling event before ``hi`` is kept."""
        state, tries, error, seen = None, 0, None, False
        steps = sorted([(o, at, "scheduled", None) for o, at, _, _ in self.scheduled] + self.tries)
        for _, at, what, err in steps:
            if at >= hi:
                continue
            if what == "scheduled":
                seen, tries, error = True, 0, None
                state = state if state in ("done", "dismissed") else "pending"
            elif what != "dismissed":
                tries += 1
                error = err
                state = {"ok": "done", "failed": "failed"}.get(what, "pending") if state != "done" else state
            else:
                state = what
        return state, tries, error, seen


def _plus(at: str, delta: timedelta) -> str | None:
    try:
        return ts(_parse_ts(at) + delta)
    except OverflowError:
        return None


def _due_text(value: Any) -> str | None:
    """A due time an event carries (its text, however the event wrote it), as journal time text."""
    try:
        return ts(parse_rfc3339(str(value))) if value else None
    except (ValueError, OverflowError):
        return None


def _ids(value: Any) -> list[str]:
    return [t for t in str(value or "").split(",") if t]


def _revocation_stories(journal: Journal, policy: str,
                        runs_by_id: Mapping[str, RunRecord]) -> tuple[dict[str, _Story], list[tuple[str, str]]]:
    """Every token's :class:`_Story` from the policy's kept events (chained, or from before the chain
    as :func:`audit_chain.chained_events` takes them), and the runs whose chained `published` event
    scheduled the revocation of the token they replaced without the chain naming it: (time, run id).

    The token a rotation replaced is its `plan` event's ``old_token_id`` (its `published` event
    carries when that token's revocation is due), not the runs table's; only a run whose `plan`
    event was pruned falls back on its row."""
    with journal.audit_transaction(write=False) as (cur, _lock):
        unlinked = _unlinked_bound(cur)
        rows = cur.execute(
            f"SELECT seq, at, run_id, step, result, detail FROM events WHERE policy = ? AND step IN "
            f"({', '.join('?' * len(_REVOCATION_STEPS))}) AND (seq IS NOT NULL OR at <= ?)",
            (policy, *_REVOCATION_STEPS, unlinked),
        ).fetchall()
    # A row without a link is evidence only with a journal time (verify names any other): '' sorts
    # before every time, and passed for an event from before the chain.
    rows = [r for r in rows if r[0] is not None or audit_chain.is_journal_time(r[1])]
    # chain order: the events from before the chain (no seq) by time, then the links
    rows.sort(key=lambda r: (r[0] is not None, int(r[0]) if r[0] is not None else 0, str(r[1])))
    stories: dict[str, _Story] = {}
    plans: dict[str, str | None] = {}
    replaced: dict[str, list[str]] = {}
    unnamed: list[tuple[str, str]] = []

    def story(token: Any) -> _Story:
        return stories.setdefault(str(token), _Story())

    for order, (_seq, at, run_id, step, result, text) in enumerate(rows):
        at, run_id = str(at), str(run_id)
        detail = _event_detail(text)
        if step == "plan":
            plans[run_id] = str(detail["old_token_id"]) if detail.get("old_token_id") else None
        elif step == "bootstrap" and result == "replace":
            replaced[run_id] = _ids(detail.get("replaced"))
        elif step == "revoke_old" and detail.get("token_id"):
            error = detail.get("error")
            story(detail["token_id"]).tries.append((order, at, str(result), str(error) if error else None))
        elif step == "emergency" and result == "revoke_now":
            for token in (detail.get("token_id"), detail.get("also_revoke")):
                if token:
                    story(token).hastened.append((order, at))
        elif step in _PUBLISH_STEPS and result == "ok":
            if detail.get("token_id"):
                story(detail["token_id"]).published.append(at)
            kept = set(_ids(detail.get("kept_dismissed")))
            also = str(detail["also_revoke"]) if detail.get("also_revoke") else None
            if step == "bootstrap":
                # (its due time: `revoke_at`; an event from before it carries none, estimated by grace)
                for token in (replaced.get(run_id, []) if detail.get("replace") else [also] if also else []):
                    if token not in kept:
                        story(token).scheduled.append((order, at, _due_text(detail.get("revoke_at")), False))
                continue
            due = _due_text(detail.get("revoke_old_at"))
            if detail.get("revoke_old_at"):
                run = runs_by_id.get(run_id)
                old = plans[run_id] if run_id in plans else run.old_token_id if run is not None else None
                if old:
                    story(old).scheduled.append((order, at, due, True))
                else:
                    unnamed.append((at, run_id))
            if also:
                story(also).scheduled.append((order, at, _due_text(detail.get("also_revoke_at")) or due, False))
    return stories, unnamed


def _revocation_evidence(
    journal: Journal, ev: PolicyEvidence, runs_by_id: Mapping[str, RunRecord], revocations: Sequence[Revocation],
    checkpoints: Sequence[audit_chain.Checkpoint], end: datetime, now: datetime, began: str | None,
    grace: timedelta, floor: str = "", cutoff: str = "", *, slack: timedelta = DEFAULT_SLACK,
) -> None:  # fmt: skip
    """The period's revocations (:attr:`PolicyEvidence.revocations`), each as it stood at the period's
    end (or now, for a period not over yet), and the rows the chain contradicts
    (:attr:`PolicyEvidence.revocations_not_in_chain`).

    The `revocations` table is rotator's working state, not chained, so which rows are checked is
    decided by the chain, never by a row's own fields. A row becomes done (dismissed) only in the
    commit that chains its `revoke_old ok` (`dismissed`) event; a rotation's chained `published`
    event schedules the revocation of the token its `plan` event names, and says when it is due. A
    row is named when it is done without its event, unless that event went with the history the
    chain no longer holds (pruned, or from before the chain) and nothing the chain holds says
    otherwise; when it is due later than the chain allows; when its state is one rotator never
    writes, or not the one the chain's tries of it end in (the row is then shown in the chain's state,
    and in a state rotator never writes with none, as failed: nothing shows the token revoked); and
    when the chain scheduled or tried a revocation whose row is missing, unless a prune may have
    deleted it (done). Nothing is checked
    when the chain is broken (``began`` None: its events prove nothing; the report says it is
    broken). ``floor``: where the history the chain holds begins (a done row's event from before it
    may be gone); ``cutoff``: the latest chained prune's (it deleted the done rows older than that).
    ``slack``: what :attr:`PolicyEvidence.overdue_revocations` allows past the due time."""
    lo, hi = ev.period
    closed = end <= now  # judged as at its end; a period not over yet as the journal is now
    stories, unnamed = (_revocation_stories(journal, ev.policy, runs_by_id) if began is not None
                        else ({}, []))  # fmt: skip
    flagged: list[str] = []
    for rev in revocations:
        story = stories.get(rev.token_id, _Story())
        due, bound = ts(rev.due_at), story.due_bound()
        done_at = ts(rev.done_at) if rev.done_at is not None else None
        if began is not None and _contradicted(story, rev.state, due, bound, done_at, floor, cutoff):
            flagged.append(rev.token_id)
        # The row's state, unless the chain says otherwise: a row's every change of state commits with
        # its `revoke_old` event, so where the chain holds tries the last one says what the row is, and
        # a row ended (done, dismissed) without its event, where the chain holds that time, is only
        # what the chain says before it (scheduled: pending), else as failed. (A broken chain gives no
        # story: its events prove nothing.)
        row_state, attempts, error = rev.state, rev.attempts, rev.last_error
        chained_now, tries_now, error_now, _seen = story.state_before("\uffff")
        unbacked = began is not None and _end_unbacked(story, rev.state, due, done_at, floor, cutoff)
        if rev.state not in _REVOCATION_STATES or unbacked or (story.tries and chained_now not in (None, rev.state)):
            if began is not None:
                flagged.append(rev.token_id)
            # with nothing to say what it is, as failed: nothing shows the token revoked
            row_state = chained_now or RevocationState.FAILED.value
            if story.tries or unbacked:  # (not the row's error: a forged dismissal's note, say)
                attempts, error = tries_now, error_now
            done_at = story.last_try(_RESULT_OF[row_state]) if row_state in _RESULT_OF else None
        ended = row_state in _RESULT_OF
        if closed and story.changed_since(hi, done_at if ended else None):
            # Scheduled again (or hastened) since the period ended: the row's due time is a later
            # one; the chain's is the one that held at the end.
            due = story.due_bound(hi, grace) or due
        # Listed by the due time the chain allows (a row's may have been moved past the period); a
        # bootstrap's event carries none: its grace from the policy file stands in.
        at_end = story.due_bound(hi if closed else "\uffff", grace)
        if at_end is None and floor and not story.scheduled:
            at_end = _plus(floor, grace)  # scheduled before the history the chain holds
        effective_due = min(due, at_end) if at_end is not None else due
        state = row_state
        done_by_end = ended and done_at is not None and (not closed or done_at < hi)
        if closed and not done_by_end:
            chained, tries, last_error, scheduled = story.state_before(hi)
            state = chained if chained in ("pending", "failed") else (
                row_state if row_state in ("pending", "failed") else "pending")
            if chained is None and state == "pending" and effective_due < hi:
                # its tries before the period's end may have gone with pruned history, which says
                # whether one failed (a failed revocation stays failed until done)
                failed = _failed_in_pruned(checkpoints, ev.policy, rev.token_id, hi, effective_due)
                if failed:
                    state = "failed"
                elif failed is None and not is_overdue(state, _parse_ts(effective_due), min(end, now), slack):
                    _undecide(ev, f"the tries of token {rev.token_id}'s revocation before the period's end went with "
                                  "a prune of an earlier version, whose checkpoint keeps no revocation's failure")
            if scheduled:
                attempts, error = tries, last_error
            done_at = None
        in_period = lo <= effective_due < hi or (done_by_end and done_at is not None and lo <= done_at < hi)
        if not (in_period or (not done_by_end and effective_due < hi)):
            continue
        ev.revocations.append(RevocationRow(
            rev.token_id, rev.run_id, rev.reason, due, state, done_at,
            state == "done" and done_at is not None and story.ended_near(done_at, "ok"), attempts, masked(error),
            masked(dismissal_reason(rev.last_error) or None) if state == "dismissed" else None,
        ))  # fmt: skip
        # as `status --check` would have judged it then (compliance.is_overdue), by the due time the
        # chain allows: a due time moved later must not hide it
        if is_overdue(state, _parse_ts(effective_due), min(end, now), slack):
            ev.overdue_revocations.append(rev.token_id)
    if began is not None:
        # (a row the journal cannot read is named as such: not again as missing)
        rows = {r.token_id for r in revocations} | set(ev.unreadable_revocations)
        pruned_at = [cp.at for cp in checkpoints]
        for token, story in stories.items():
            if token not in rows and _row_deleted(story, hi, pruned_at):
                flagged.append(token)
        flagged += [f"(the token run {run_id} replaced)" for at, run_id in unnamed if at < hi]
    ev.revocations.sort(key=lambda r: (r.due_at, r.token_id))  # (the row's due time may be a later one's)
    ev.revocations_not_in_chain = list(dict.fromkeys(flagged))


def _pruned_overdue(ev: PolicyEvidence, checkpoints: Sequence[audit_chain.Checkpoint], end: datetime,
                    now: datetime, slack: timedelta) -> None:  # fmt: skip
    """Add to ``ev``'s overdue revocations those whose rows and events went with pruned history: a
    prune deletes a revocation's row once it is done, and its checkpoint's summary records each one
    done late (audit_chain.LATE_REVOCATIONS), which was overdue in a period that ended after its due
    time (and the slack) or its failure and before it was done, whenever the report is made. A
    checkpoint that keeps no revocation's times (an earlier version's), or a record without a due
    time, whose range may hold one overdue at the period's end leaves the count undecided."""
    if end > now:
        return  # judged now: every revocation a prune deleted was done by then
    hi = ev.period[1]
    unsure: list[str] = []
    for cp in checkpoints:
        entry = cp.detail.get("policies", {}).get(ev.policy)
        if not isinstance(entry, dict) or str(cp.detail.get("to") or "") < hi:
            continue  # each revocation done in its range was done by the period's end
        kept = cp.detail.get(audit_chain.LATE_REVOCATIONS_SLACK_S)
        if audit_chain.OPEN_REVOCATIONS not in cp.detail or not isinstance(kept, int) or slack.total_seconds() < kept:
            done = entry.get("revocations")
            if not isinstance(done, int) or done > 0:
                unsure.append(f"checkpoint seq {cp.seq} (pruned {cp.detail.get('from')} to {cp.detail.get('to')}) "
                              f"counts {done} revocation(s) done in its range and "
                              + (f"keeps those done more than {format_duration(timedelta(seconds=kept))} late only, "
                                 f"while this report allows {format_duration(slack)}"
                                 if audit_chain.OPEN_REVOCATIONS in cp.detail and isinstance(kept, int) else
                                 "keeps none of their due and done times (written by an earlier version)"))
            continue
        records = entry.get(audit_chain.LATE_REVOCATIONS)
        for late in records if isinstance(records, list) else []:
            verdict = _late_overdue(late, end, hi, slack) if isinstance(late, dict) else None
            if verdict is None:
                unsure.append(f"checkpoint seq {cp.seq} records a revocation done late with no due time known: "
                              f"{late.get('token_id') if isinstance(late, dict) else late!r}")
            elif verdict:
                token = str(late["token_id"])
                ev.overdue_pruned.append({**late, "checkpoint_seq": cp.seq})
                if token not in ev.overdue_revocations:
                    ev.overdue_revocations.append(token)
    for text in unsure:
        _undecide(ev, text)


def _undecide(ev: PolicyEvidence, why: str) -> None:
    """Leave ``ev``'s overdue count open (:attr:`PolicyEvidence.overdue_undecided`), saying ``why``."""
    ev.overdue_undecided = (f"{ev.overdue_undecided}; {why}" if ev.overdue_undecided else "pruned history "
                            f"cannot say whether more revocations were overdue at the period's end: {why}")


def _failed_in_pruned(checkpoints: Sequence[audit_chain.Checkpoint], policy: str, token: str, hi: str,
                      due: str) -> bool | None:  # fmt: skip
    """Whether pruned history says the revocation of ``token``, none of whose events before ``hi`` is
    kept, had failed by then: the checkpoint whose range holds ``hi`` carries it on failed before
    ``hi`` (audit_chain.OPEN_REVOCATIONS), or the last one before ``hi`` carries it on failed (nothing
    after it, before ``hi``, is kept of it, nor pruned). None: a checkpoint of an earlier version,
    which carries none on, holds history from its due time ``due`` to ``hi``."""
    holding = last_before = None
    earlier_version = False
    for cp in checkpoints:
        start, stop = str(cp.detail.get("from") or ""), str(cp.detail.get("to") or "")
        if not start:
            continue
        if audit_chain.OPEN_REVOCATIONS not in cp.detail:
            earlier_version = earlier_version or (stop >= due and start < hi)
        elif start < hi <= stop:
            holding = cp
        elif stop < hi:
            last_before = cp
    chosen = holding or last_before
    carried = chosen.detail.get(audit_chain.OPEN_REVOCATIONS) if chosen is not None else None
    tokens = carried.get(policy) if isinstance(carried, dict) else None
    record = tokens.get(token) if isinstance(tokens, dict) else None
    failed = record.get("failed_at") if isinstance(record, dict) else None
    if isinstance(failed, str) and (chosen is last_before or failed < hi):
        return True
    return None if earlier_version else False


def _late_overdue(late: Mapping[str, Any], end: datetime, hi: str, slack: timedelta) -> bool | None:
    """Whether a revocation a checkpoint records as done late was overdue at the period's end ``end``
    (``hi``, its text), as :func:`_revocation_evidence` judged it while its row was there: not done by
    then, and failed or pending more than ``slack`` past its due time. None: its due time is not known."""
    done, due, failed = (_due_text(late.get(key)) for key in ("done_at", "due_at", "failed_at"))
    if done is not None and done < hi:
        return False  # done by the period's end
    if due is None or done is None:
        return None
    return due < hi and ((failed is not None and failed < hi) or is_overdue("pending", _parse_ts(due), end, slack))


def _contradicted(story: _Story, state: str, due: str, bound: str | None, done_at: str | None,
                  floor: str, cutoff: str = "") -> bool:  # fmt: skip
    """Whether the chain contradicts a revocation row (see :func:`_revocation_evidence`). ``floor``:
    where the history the chain holds begins; ``cutoff``: the latest chained prune's."""
    if state not in _REVOCATION_STATES:
        return True  # rotator never writes it: a row edited outside rotator (and counted as what?)
    if bound is not None and due > bound:
        return True  # due later than the chain says: moved past a period's end, it would not be listed
    if state == "failed" and not story.scheduled and not story.tries and due >= floor:
        return True  # failed, so tried once due; its tries are gone with history older than its due time
    return _end_unbacked(story, state, due, done_at, floor, cutoff)


def _end_unbacked(story: _Story, state: str, due: str, done_at: str | None, floor: str, cutoff: str = "") -> bool:
    """Whether a revocation row that says it ended (done, dismissed) has no chained event of that end,
    and the chain holds the history where it would be (see :func:`_revocation_evidence`)."""
    if state not in ("done", "dismissed"):
        return False
    if done_at is None:
        return True
    if story.ended_near(done_at, "ok" if state == "done" else "dismissed"):
        return False
    # Its event may be gone with history the chain no longer holds, if the row ended before it and
    # after its due time, and the chain shows the token neither tried nor published since.
    if not (done_at < floor and due <= done_at and all(at <= done_at for _, at, _, _ in story.tries)
            and all(at <= done_at for at in story.published)):
        return True
    # That prune deleted the done rows older than its cutoff, but for a token a run published since
    # replaced again (its chained `published` event is kept).
    return state == "done" and done_at < cutoff and not any(old and at >= cutoff for _, at, _, old in story.scheduled)


def _row_deleted(story: _Story, hi: str, pruned_at: Sequence[str]) -> bool:
    """Whether a revocation the chain scheduled or tried before ``hi`` lacks a row that no prune can
    have deleted: a prune deletes done rows only, and keeps those whose token a kept run replaced."""
    if not any(at < hi for _, at, _, _ in story.scheduled) and not any(at < hi for _, at, _, _ in story.tries):
        return False
    if any(old for *_, old in story.scheduled):
        return True
    if any(result == "ok" for _, _, result, _ in story.tries):
        return False  # revoked: a prune deletes its row once it is old enough
    if story.tries:
        return True  # not done (tried, failed, dismissed): never pruned
    # Scheduled only (a bootstrap's, or the token the stores named besides): a row done before, of a
    # token current again, may have been deleted by a prune since, if the token's history went with it.
    last = story.scheduled[-1][1]
    return not any(at > last for at in pruned_at) or bool(story.published)


def _holds_all_history(journal: Journal) -> bool:
    """Whether the chain starts at its first link and the journal has no event without a link."""
    with journal.audit_transaction(write=False) as (cur, _lock):
        first = cur.execute("SELECT MIN(seq) FROM events WHERE seq IS NOT NULL").fetchone()[0]
        unlinked = cur.execute("SELECT 1 FROM events WHERE seq IS NULL LIMIT 1").fetchone()
    return first is not None and int(first) == 1 and unlinked is None


def _prune_cutoff(journal: Journal) -> str:
    """The latest cutoff a chained `prune` event records ("" if none): done revocations older than it
    were deleted, but those of a token a run published since replaced again."""
    with journal.audit_transaction(write=False) as (cur, _lock):
        rows = cur.execute("SELECT detail FROM events WHERE policy = ? AND step = 'prune' AND seq IS NOT NULL",
                           (audit_chain.JOURNAL_POLICY,)).fetchall()
    cutoffs = []
    for (text,) in rows:
        cutoff = _due_text(_event_detail(text).get("cutoff"))
        if cutoff:
            cutoffs.append(cutoff)
    return max(cutoffs, default="")


def _in_chain(journal: Journal, run: RunRecord, run_events: list[dict[str, Any]], pruned_until: str,
              began: str | None, cutoff: str = "") -> bool | None:  # fmt: skip
    """Whether a chained event backs ``run``'s publication, at its time (see :class:`Rotation`).
    ``cutoff``: the latest chained prune's (:func:`_unchecked`)."""
    if run.published_at is None or began is None:
        return None
    if run.state not in RunState.SUCCESS:
        # rotator writes published_at only with a success state (and never leaves one): a run that
        # never published carrying one was written outside rotator, whatever the chain holds
        return False
    # Published before the last prune's cutoff: its event was pruned (the checkpoint counts it), unless
    # it was written just after the last pruned one.
    pruned = bool(pruned_until) and ts(run.published_at) <= pruned_until
    if not pruned and _unchecked(run, pruned_until, began, cutoff):
        return None  # before the chain (an upgraded journal's history)
    # The event is written with the run's record; the runs table is not chained, so a published_at
    # edited by more than this no longer matches its event.
    lo, hi = ts(run.published_at - _EVENT_AFTER_PUBLISH), ts(run.published_at + _EVENT_AFTER_PUBLISH)

    # A bootstrap's event also carries when the issuer created the token (the age counts from then):
    # a run whose creation time was edited or removed no longer matches it.
    created = ts(run.token_created_at) if run.token_created_at is not None else None

    def backs(e: dict[str, Any]) -> bool:
        return (e["run_id"] == run.run_id and e["step"] in _PUBLISH_STEPS and e["result"] == "ok"
                and e["detail"].get("token_id") == run.new_token_id and lo <= str(e["at"]) <= hi
                and e["detail"].get("token_created_at") == created)

    found = [e for e in run_events if backs(e)]
    if not any(e["seq"] is not None for e in found):
        # outside the period's events (published near its start or end, or before it)
        found += [e for e in audit_chain.chained_events(
            journal, lo, ts(run.published_at + _EVENT_AFTER_PUBLISH + timedelta(microseconds=1))) if backs(e)]
    if any(e["seq"] is not None for e in found):
        return True
    if found:
        # Its event is one from before the chain began (an upgraded journal's, within the hour before
        # the first link): unlinked, it backs nothing, and the chain cannot say (n/a, not "yes")
        return None
    return None if pruned else False


def _runs_the_age_uses(runs: list[RunRecord], start: datetime, stop: datetime) -> list[RunRecord]:
    """The published runs whose tokens were current in [start, stop): those published in it, and the
    last one before it."""
    published = sorted((r for r in runs if r.state in RunState.SUCCESS and r.published_at is not None),
                       key=lambda r: r.published_at or start)
    before = [r for r in published if (r.published_at or start) < start]
    return before[-1:] + [r for r in published if start <= (r.published_at or start) < stop]


def _ended(event: dict[str, Any], runs: dict[str, RunRecord], revocations: Sequence[Revocation],
           abandoned: Mapping[str, _Abandoned] | None = None) -> str:  # fmt: skip
    if event["step"] == "revoke_old":
        token = event["detail"].get("token_id")
        for rev in revocations:
            if rev.token_id == token:
                return f"revocation {rev.state}" + (f" at {ts(rev.done_at)}" if rev.done_at else "")
        return "revocation record pruned"
    run = runs.get(event["run_id"] or "")
    gave_up = (abandoned or {}).get(event["run_id"] or "")
    if gave_up is not None and not gave_up.tag_search and (run is None or run.state == RunState.FAILED):
        return gave_up.text  # its candidate was not discarded: it may still be valid where it was minted
    if run is None:
        return "run record pruned" if event["run_id"] else "-"
    if run.state in RunState.SUCCESS:
        return f"recovered: run {run.state}" + (f"; {gave_up.text}" if gave_up is not None and gave_up.tag_search
                                                else "")
    if run.state in RunState.OPEN:
        return f"still open ({run.state})"
    return f"run {run.state}" + (" (new token discarded, old kept)" if run.state == RunState.FAILED else "")


@dataclass(frozen=True)
class _Abandoned:
    """A person's `recover --abandon` of a run (:func:`_abandonments`)."""

    #: when, as the journal's time text: the event's (the row's end where the chain no longer holds it)
    at: str
    #: what the report says of it (:func:`_abandoned_text`)
    text: str
    #: a published run's tag search ended (the run stays as it is), not an open run closed as failed
    tag_search: bool
    #: a chained `recover` / `abandoned` event says so: True; only the row, where the chain no longer
    #: holds that time (pruned, from before the chain) or cannot say (broken): None; only the row, where
    #: the chain holds that time and no such event: False (the runs table was written outside rotator)
    backed: bool | None
    #: the checkpoint whose summary of pruned history records it (its event went with that history)
    checkpoint_seq: int | None = None


def _abandonments(journal: Journal, policy: Policy, runs: Sequence[RunRecord], began: str | None,
                  floor: str, checkpoints: Sequence[audit_chain.Checkpoint] = ()) -> dict[str, _Abandoned]:  # fmt: skip
    """The policy's runs a person abandoned (``recover --abandon``), by run id. The chain decides, as
    for a dismissed revocation: its `recover` / `abandoned` events, and where a prune took them, the
    checkpoints' summaries of them (:data:`audit_chain.ABANDONED`; the chain covers each checkpoint).
    A failed run's row that says so (``abandoned by hand: REASON; minted on ...``, kept with the row as
    a dismissal's reason is) stands in where that event went with history the chain no longer holds
    (ended before ``floor``, where the history it holds begins) and no checkpoint records it (an
    earlier version's), or where the chain is broken (``began`` None: its events prove nothing);
    elsewhere such a row is a claim the chain does not back (:attr:`_Abandoned.backed` False)."""
    out: dict[str, _Abandoned] = {}
    if began is not None:
        with journal.audit_transaction(write=False) as (cur, _lock):
            rows = cur.execute(
                "SELECT at, run_id, detail FROM events WHERE policy = ? AND step = 'recover' AND result = 'abandoned' "
                "AND (seq IS NOT NULL OR at <= ?) ORDER BY at", (policy.name, _unlinked_bound(cur)),
            ).fetchall()
        for at, run_id, text in rows:
            if not run_id or not audit_chain.is_journal_time(at):
                continue  # (an unlinked row's: verify names it)
            detail = _event_detail(text)
            tag_search = bool(detail.get("tag_search"))
            out[str(run_id)] = _Abandoned(str(at), _abandoned_text(
                policy, str(run_id), _text_or_none(detail.get("token_id")), _text_or_none(detail.get("minted_on")),
                _text_or_none(detail.get("reason")), tag_search=tag_search), tag_search, True)
    for cp in checkpoints:
        entry = cp.detail.get("policies", {}).get(policy.name)
        records = entry.get(audit_chain.ABANDONED) if isinstance(entry, dict) else None
        for record in records if isinstance(records, list) else []:
            if not isinstance(record, dict) or not record.get("run_id") \
                    or not audit_chain.is_journal_time(record.get("at")):
                continue  # (not what a prune writes: a verified chain covers every checkpoint)
            run_id, tag_search = str(record["run_id"]), bool(record.get("tag_search"))
            out.setdefault(run_id, _Abandoned(str(record["at"]), _abandoned_text(
                policy, run_id, _text_or_none(record.get("token_id")), _text_or_none(record.get("minted_on")),
                _text_or_none(record.get("reason")), tag_search=tag_search), tag_search, True, cp.seq))
    for run in runs:
        if run.run_id in out or run.state != RunState.FAILED:
            continue
        note = read_abandoned_note(run.error)
        if note is None:
            continue
        at = ts(run.finished_at or run.updated_at)
        # (its event is written after the row's end, in the same commit: at most as old as the history's start)
        backed = None if began is None or at <= floor else False
        reason, minted_on = note
        out[run.run_id] = _Abandoned(at, _abandoned_text(policy, run.run_id, run.new_token_id, minted_on, reason,
                                                         backed=backed), False, backed)
    return out


def _text_or_none(value: Any) -> str | None:
    return str(value) if value else None


def _decisions(journal: Journal, policy: str, checkpoints: Sequence[audit_chain.Checkpoint],
               began: str | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:  # fmt: skip
    """The policy's emergency rotations (`emergency` / `start`) and repairs (`bootstrap` / `replace`),
    oldest first, each with the person's reason (masked): those of pruned history from the
    checkpoints' summaries (:data:`audit_chain.EMERGENCIES`, :data:`audit_chain.REPAIRS`), then the
    chain's (none when it is broken, ``began`` None: its events prove nothing). An emergency's start
    names no run: its run is the `plan` right after it that says so (:func:`audit_chain.emergency_run`), or the one
    its later `emergency` events name."""
    emergencies: list[dict[str, Any]] = []
    repairs: list[dict[str, Any]] = []
    for cp in checkpoints:
        entry = cp.detail.get("policies", {}).get(policy)
        for key, out in ((audit_chain.EMERGENCIES, emergencies), (audit_chain.REPAIRS, repairs)):
            records = entry.get(key) if isinstance(entry, dict) else None
            out += [{**record, "run_id": _text_or_none(record.get("run_id")), "reason": masked(record.get("reason")),
                     "checkpoint_seq": cp.seq}
                    for record in (records if isinstance(records, list) else [])
                    if isinstance(record, dict) and audit_chain.is_journal_time(record.get("at"))]
    if began is None:
        return emergencies, repairs
    with journal.audit_transaction(write=False) as (cur, _lock):
        rows = cur.execute(
            "SELECT seq, at, run_id, step, result, detail FROM events WHERE policy = ? AND (step = 'emergency' "
            "OR (step = 'bootstrap' AND result = 'replace')) AND (seq IS NOT NULL OR at <= ?)",
            (policy, _unlinked_bound(cur)),
        ).fetchall()
        rows = [r for r in rows if audit_chain.is_journal_time(r[1])]  # (an unlinked row's: verify names it)
        rows.sort(key=lambda r: (r[0] is not None, int(r[0]) if r[0] is not None else 0, str(r[1])))  # chain order
        last = emergencies[-1] if emergencies else None
        for seq, at, run_id, step, result, text in rows:
            event = {"at": str(at), "run_id": _text_or_none(run_id), "step": step, "result": result}
            detail = _event_detail(text)
            if step == "emergency" and result == "start":
                following = cur.execute("SELECT run_id, step, detail FROM events WHERE policy = ? AND seq > ? "
                                        "ORDER BY seq LIMIT 1", (policy, seq)).fetchone() if seq is not None else None
                last = {"at": str(at), "run_id": audit_chain.emergency_run(dict(zip(
                    ("run_id", "step", "detail"), following, strict=True)) if following is not None else None),
                        "reason": masked(detail.get("reason")), "checkpoint_seq": None}
                emergencies.append(last)
            elif audit_chain.names_emergency_run(event) and last is not None and last["run_id"] is None:
                last["run_id"] = event["run_id"]  # (a journal from before the plan said it is the emergency's)
            elif step == "bootstrap":
                repairs.append({"at": str(at), "run_id": event["run_id"],
                                "token_id": _text_or_none(detail.get("token_id")),
                                "replaced": _text_or_none(detail.get("replaced")),
                                "reason": masked(detail.get("reason")), "checkpoint_seq": None})
    return emergencies, repairs


def _abandoned_text(policy: Policy, run_id: str, token_id: str | None, minted_on: str | None, reason: str | None,
                    *, tag_search: bool = False, backed: bool | None = True) -> str:  # fmt: skip
    """What the report says of an abandoned run: its candidate (or a token its tag names) was not revoked
    and may still be valid where it was minted, and the person's reason (masked, as a dismissal's)."""
    where = minted_on or "the cluster it minted on"
    said = masked(reason) or "(none recorded)"
    tagged = f"any token tagged {policy.tag(run_id)}"
    if backed is False:
        return (f"run failed; {_ABANDONED_NOT_IN_CHAIN}; candidate {token_id or '(none recorded)'} and {tagged} "
                f"may still be valid on {where}; reason given: {said}")
    if tag_search:
        return (f"tag search abandoned by hand: {tagged} that a mint try without an answer created late not revoked, "
                f"may still be valid on {where}; reason: {said}")
    what = f"candidate {token_id}" if token_id else f"no candidate id recorded, {tagged}"
    return f"abandoned by hand: {what} not revoked, may still be valid on {where}; reason: {said}"



@dataclass
class _Age:
    """The oldest a token current in the period was (:func:`_max_age`)."""

    #: known: the oldest one the kept history shows (None: no token was current)
    low: int | None = None
    token_id: str | None = None
    #: the oldest it may have been, where pruned history leaves that open (None: ``low`` is exact)
    high: int | None = None
    #: the checkpoint ranges that leave it open
    open: list[_Pruned] = field(default_factory=list)

    def saw(self, age: int, token_id: str | None) -> None:
        if self.low is None or age > self.low:
            self.low, self.token_id = age, token_id


def _max_age(timeline: _Timeline, start: datetime, end: datetime, now: datetime) -> _Age:
    """The oldest any published token of the policy was while it was the current one within [start, end).

    A token's age counts from when it began to age (its publication, or a bootstrapped token's creation
    at the issuer) to its replacement, or the period's end. A block of pruned publications
    (:attr:`_Timeline.blocks`) counts its oldest replaced token where every replacement in it lies in
    the period after its start; where it crosses the period's start or end (or begins at its start
    after an earlier publication: a token replaced then was current before it only), which of its
    tokens were current in the period went with the pruned history: their oldest is a bound, not a
    measure."""
    stop = min(end, now)
    age = _Age()
    points = timeline.points
    for i in range(-1, len(points)):
        current = points[i] if i >= 0 else None  # (-1: the token before the first, unknown)
        following = points[i + 1].at if i + 1 < len(points) else None
        if current is not None and current.at >= stop:
            break
        block = timeline.blocks.get(following) if following is not None else None
        if block is None or block.start >= stop:
            if current is None:
                continue
            until = min(following, stop) if following is not None else stop
            if until > start:  # its age when replaced (or at the period's end)
                age.saw(int((until - current.born).total_seconds()), current.token_id)
        elif following is not None and following <= start:
            continue  # every token it replaced was replaced by the period's start
        elif (block.start > start or (block.start == start and current is None)) and following is not None \
                and following <= stop:
            # each one it replaced was current in the period (one published at its start replaced a
            # token current before the period only, if there was one: which one its oldest is, is not known)
            age.saw(block.max_age_s, "(pruned)")
        else:
            if current is not None and block.start > start:
                # current until the block's first publication at least, inside the period
                age.saw(int((block.start - current.born).total_seconds()), current.token_id)
            age.high = max(age.high or 0, block.max_age_s)
            age.open.append(block)
    if age.high is not None and age.low is not None and age.high <= age.low:
        age.high, age.open = None, []
    return age


# ------------------------------------------------------------------------------ rendering
def render(evidence: Evidence, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(evidence.as_dict(), indent=2, default=str) + "\n"
    if fmt == "csv":
        return _csv(evidence)
    return _html(evidence)


_CSV_COLUMNS = (
    "record", "policy", "run_id", "kind", "state", "started_at", "verified_at", "published_at", "old_token_id",
    "new_token_id", "instance", "token_id", "reason", "due_at", "done_at", "confirmed_by_issuer", "at", "step",
    "result", "error", "ended",
    f"rotations [{CONTROLS['rotations']}]", f"max_age [{CONTROLS['max_age']}]", "max_observed_age",
    f"within_max_age [{CONTROLS['within_max_age']}]", f"within_90d [{CONTROLS['within_90d']}]",
    f"revocations_done [{CONTROLS['revocations']}]", "failures", f"chain_ok [{CONTROLS['chain']}]", "note",
    "in_chain", "revocations_pending", "revocations_failed", "revocations_dismissed", "runs_abandoned", "chain_head",
    "emergency", "emergency_rotations", "repairs", "revocations_overdue",
)  # fmt: skip


class _SafeWriter(csv.DictWriter):  # type: ignore[type-arg]
    """Cells hold issuers' and servers' text (error messages, token ids): none is run as a formula, and
    none carries a control character (an escape sequence reaches the terminal the report is printed to)."""

    def writerow(self, rowdict: Mapping[str, Any]) -> Any:
        return super().writerow({k: csv_cell(v) for k, v in rowdict.items()})


def _escape(text: str) -> str:
    """HTML-escaped, with control characters written out: the page may be printed to a terminal."""
    return html.escape(one_line(text))


def _csv(evidence: Evidence) -> str:
    buf = io.StringIO()
    writer = _SafeWriter(buf, fieldnames=_CSV_COLUMNS, extrasaction="raise")
    writer.writeheader()
    chain = evidence.chain
    # the head to keep for `rotator audit verify --expect`, and what broke (one_line: rows' text)
    writer.writerow({"record": "chain", _CSV_COLUMNS[28]: _yn(chain.ok),
                     "chain_head": chain.kept_link() if chain.ok else "", "note": chain.text()})
    for p in evidence.policies:
        s = p.summary()
        writer.writerow({
            "record": "summary", "policy": p.policy, _CSV_COLUMNS[21]: s["rotations"],
            _CSV_COLUMNS[22]: format_duration(timedelta(seconds=p.max_age_s)),
            "max_observed_age": _age(p.max_observed_age_s), _CSV_COLUMNS[24]: _yn(s["within_max_age"]),
            _CSV_COLUMNS[25]: _yn(s["within_90d"]), _CSV_COLUMNS[26]: s["revocations_done"],
            "failures": s["failures"], _CSV_COLUMNS[28]: _yn(evidence.chain.ok),
            "note": f"{ts(evidence.start)} to {ts(evidence.end)}; evidence, not a legal claim"
                    + (f"; {_IN_PRUNED.format(n=n)}" if (n := s["rotations_counted_in_pruned"]) else "")
                    + (f"; {_undecided(p)}" if p.age_undecided else "")
                    + (f"; {_overdue_undecided(p)}" if p.overdue_undecided else ""),
            # (as the JSON summary and the HTML one count them)
            "revocations_pending": s["revocations_pending"], "revocations_failed": s["revocations_failed"],
            "revocations_dismissed": s["revocations_dismissed"], "runs_abandoned": s["runs_abandoned"],
            "emergency_rotations": s["emergency_rotations"], "repairs": s["repairs"],
            "revocations_overdue": _na(s["revocations_overdue"]),
        })  # fmt: skip
        for r in p.rotations:
            writer.writerow({"record": "rotation", "policy": p.policy, **asdict(r), "in_chain": _yn(r.in_chain),
                             "note": _REPUBLISHED if r.run_id in p.republished else r.note,
                             "emergency": "yes" if r.emergency else "no"})
        for v in p.revocations:
            row = asdict(v)
            row["confirmed_by_issuer"] = _yn(v.confirmed_by_issuer)
            row.pop("attempts"), row.pop("last_error")
            writer.writerow({"record": "revocation", "policy": p.policy, **row})
        for m in p.overdue_pruned:
            writer.writerow({"record": "overdue_revocation_pruned", "policy": p.policy, "token_id": m["token_id"],
                             "due_at": m["due_at"], "done_at": m["done_at"], "note": _overdue_pruned(m)})
        for f in p.failures:
            writer.writerow({"record": "failure", "policy": p.policy, **asdict(f)})
        for pr in p.pruned:
            writer.writerow({"record": "pruned", "policy": p.policy, _CSV_COLUMNS[21]: pr.get("rotations"),
                             "max_observed_age": _age(pr.get("max_token_age_seconds")),
                             _CSV_COLUMNS[26]: pr.get("revocations"), "failures": pr.get("failures"),
                             "note": f"pruned {pr['from']} to {pr['to']} (checkpoint seq {pr['checkpoint_seq']})"
                                     + ("" if pr.get("within_period", True) else f"; {_PARTLY_OUTSIDE}"),
                             # (each one is a record of its own too: emergency, repair, a listed rotation's note)
                             "runs_abandoned": _count(pr, audit_chain.ABANDONED),
                             "emergency_rotations": _count(pr, audit_chain.EMERGENCIES),
                             "repairs": _count(pr, audit_chain.REPAIRS)})
        for m in p.emergencies:
            writer.writerow({"record": "emergency", "policy": p.policy, "at": m["at"], "run_id": m["run_id"],
                             "reason": m["reason"], "emergency": "yes", "note": _recorded_in(m)})
        for m in p.repairs:
            writer.writerow({"record": "repair", "policy": p.policy, "at": m["at"], "run_id": m["run_id"],
                             "kind": "bootstrap", "old_token_id": m.get("replaced"), "new_token_id": m.get("token_id"),
                             "reason": m["reason"], "note": _recorded_in(m)})
        for m in p.abandoned_without_row:
            writer.writerow({"record": "abandoned_without_run_row", "policy": p.policy, "at": m["at"],
                             "run_id": m["run_id"], "note": f"{m['note']} ({_recorded_in(m)})"})
        for m in p.publications_without_run:
            writer.writerow({"record": "publication_without_run", "policy": p.policy, "run_id": m["run_id"],
                             "kind": m["step"], "published_at": m["at"], "new_token_id": m["token_id"],
                             "in_chain": "yes", "note": m["problem"]})
        for run_id in p.unreadable_runs:
            writer.writerow({"record": "unreadable_run", "policy": p.policy, "run_id": run_id, "note": _UNREADABLE})
        for run_id in p.abandoned_not_in_chain:
            writer.writerow({"record": "abandoned_not_in_chain", "policy": p.policy, "run_id": run_id,
                             "note": _ABANDONED_NOT_IN_CHAIN})
        for token_id in p.unreadable_revocations:
            writer.writerow({"record": "unreadable_revocation", "policy": p.policy, "token_id": token_id,
                             "note": _UNREADABLE})
    for name in evidence.not_in_file:
        writer.writerow({"record": "not_in_file", "policy": name, "note": _NOT_IN_FILE})
    return buf.getvalue()


#: a summary's note when listed rotations are counted in a pruned range's summary instead
_IN_PRUNED = ("{n} listed rotation(s) whose events were pruned are counted in the pruned history's summary, "
              "not in this one")
_NOT_IN_FILE = ("the journal holds events of this policy in the period, a revocation not done, or a token it published "
                "before the period's end and did not revoke before its start (such a token stays valid, and nothing "
                "rotates it any more), but the policy file no longer has it, so this report does not show it: report "
                "with the policy file that had it, and revoke a token that is left")
#: a listed run whose row says a person abandoned it, with no chained event that says so
_ABANDONED_NOT_IN_CHAIN = ("its row says abandoned by hand, and the audit chain, which holds that time, has no "
                           "recover/abandoned event of it: the runs table was written outside rotator")
#: a listed run that published the token already current
_REPUBLISHED = ("published the token already current (the same bootstrap again): no rotation, and the token ages on "
                "from its first publication")


_NOT_IN_CHAIN = ("Runs that say they published a token, with no event in the audit chain that says so (the "
                 "runs table is not chained: it was written to); they are not counted as rotations in the age. "
                 "Also publications the chain holds whose run row is missing or says otherwise (counted, the age "
                 "included, as the chain says), run rows rotator cannot read, and runs whose row says they were "
                 "abandoned by hand with no chained event that says so (not counted as abandoned)")
_REVOCATIONS_NOT_IN_CHAIN = ("Revocations that the journal's table marks done, or due later than the audit chain "
                             "allows, or in a state rotator never writes or the chain's tries do not end in (shown as "
                             "the chain says, else as failed), or that the chain scheduled or tried and the table "
                             "lacks, with no chained event that says so, and rows rotator cannot read (rows written "
                             "or deleted outside rotator; none is counted as done)")
#: a pruned summary that reaches outside the period
_PARTLY_OUTSIDE = ("partly outside this period: its counts and max age are the whole range's, and its max age is not "
                   "in this period's verdict")


def _count(summary: Mapping[str, Any], key: str) -> int:
    """How many records a checkpoint summary keeps under ``key`` (an earlier version's: none)."""
    records = summary.get(key)
    return len(records) if isinstance(records, list) else 0


def _recorded_in(decision: Mapping[str, Any]) -> str:
    """Where the report read a person's decision: the chain's event, or a checkpoint's summary."""
    seq = decision.get("checkpoint_seq")
    return "audit chain event" if seq is None else f"pruned history: checkpoint seq {seq}'s summary"


def _by_hand(p: PolicyEvidence) -> list[tuple[Any, ...]]:
    """The HTML rows of a policy's decisions with a reason: emergency rotations, repairs, and
    abandonments whose run has no row to list them."""
    rows = [(m["at"], "emergency rotation", m["run_id"] or "(no run planned)", m["reason"], _recorded_in(m))
            for m in p.emergencies]
    rows += [(m["at"], "repair (bootstrap --replace)", m["run_id"],
              f"replaced {m.get('replaced') or '(nothing)'} with {m.get('token_id') or '(none recorded)'}; reason: "
              f"{m['reason'] or '(none recorded)'}", _recorded_in(m)) for m in p.repairs]
    rows += [(m["at"], "abandoned by hand", m["run_id"], m["note"], _recorded_in(m)) for m in p.abandoned_without_row]
    return sorted(rows, key=lambda row: str(row[0]))


def _undecided(p: PolicyEvidence) -> str:
    """What a summary says of a maximum age that pruned history leaves open."""
    return (f"max observed age at least {_age(p.max_observed_age_s or 0)}, up to {_age(p.max_age_bound_s)} "
            f"(a verdict it leaves open is n/a): {p.age_undecided}")


def _overdue_undecided(p: PolicyEvidence) -> str:
    """What a summary says of an overdue count that pruned history leaves open."""
    return f"revocations overdue at least {len(p.overdue_revocations)} (n/a): {p.overdue_undecided}"


def _overdue_pruned(m: Mapping[str, Any]) -> str:
    """What the report says of an overdue revocation that only a checkpoint's summary records."""
    failed = f", failed {m['failed_at']}" if m.get("failed_at") else ""
    row = " (its row's due time)" if m.get("due_at_from_row") else ""
    return (f"overdue at the period's end: due {m['due_at']}{row}{failed}, done {m['done_at']}; its row and events "
            f"were pruned ({_recorded_in(m)})")


def _na(count: int | None) -> int | str:
    return "n/a" if count is None else count


def _yn(value: bool | None) -> str:
    return "n/a" if value is None else ("yes" if value else "NO")


def _age(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds / 86400:.1f}d" if seconds >= 86400 else format_duration(timedelta(seconds=seconds))


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1b1f24;margin:2rem;max-width:1200px}
h1{font-size:1.5rem;margin:0 0 .2rem}h2{font-size:1.2rem;margin:2rem 0 .4rem;border-bottom:2px solid #1b1f24}
h3{font-size:1rem;margin:1.2rem 0 .3rem}
table{border-collapse:collapse;width:100%;margin:.3rem 0 1rem;font-size:12.5px}
th,td{border:1px solid #c9ced6;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#eef1f5}td.mono,span.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}
.ok{color:#116329;font-weight:600}.bad{color:#a40e26;font-weight:600}.muted{color:#57606a}
.control{display:block;font-weight:400;font-size:11px;color:#57606a}
.note{border-left:4px solid #9a6700;background:#fff8c5;padding:.5rem .8rem;margin:1rem 0}
@media print{body{margin:0;max-width:none;font-size:11px}h2{break-before:auto;break-after:avoid}
 table{font-size:10px}tr{break-inside:avoid}.note{background:none}a{color:inherit;text-decoration:none}}
"""


def _html(evidence: Evidence) -> str:
    e = _escape
    chain = evidence.chain
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>rotator evidence {e(ts(evidence.start)[:10])} to {e(ts(evidence.end)[:10])}</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>Token rotation evidence</h1>",
        f'<p class="muted">Period {e(ts(evidence.start))} to {e(ts(evidence.end))} (UTC, end exclusive) &middot; '
        f"generated {e(ts(evidence.generated_at))} &middot; journal {e(evidence.journal)}</p>",
        f'<p class="note">{e(DISCLAIMER)}</p>',
        "<h2>Audit chain</h2>",
        f'<p><span class="{"ok" if chain.ok else "bad"}">{e(chain.text())}</span>'
        f'<span class="control">{e(CONTROLS["chain"])}: SHA-256 hash chain over every journal event; '
        "check it yourself with <code>rotator audit verify</code></span></p>",
        "<h2>Summary</h2>", "<table><tr><th>policy</th><th>schedule</th>",
        _th("rotations", "rotations"), _th("max_age", "max_age (declared)"), "<th>max observed token age</th>",
        _th("within_max_age", "within max_age"), _th("within_90d", "within 90 days"),
        _th("revocations", "revocations done / pending / failed"), _th("revocations", "revocations overdue"),
        "<th>failures</th></tr>",
    ]  # fmt: skip
    for p in evidence.policies:
        s = p.summary()
        parts.append(
            f"<tr><td>{e(p.policy)}</td><td class=mono>{e(p.schedule)}</td><td>{s['rotations']}"
            + (f" ({s['runs_abandoned']} abandoned)" if s["runs_abandoned"] else "")
            + (f" ({s['emergency_rotations']} emergency)" if s["emergency_rotations"] else "")
            + (f" ({s['repairs']} repaired)" if s["repairs"] else "") + "</td>"
            f"<td>{e(format_duration(timedelta(seconds=p.max_age_s)))}</td>"
            f"<td>{e(_age(p.max_observed_age_s))}"
            + (f" (up to {e(_age(p.max_age_bound_s))})" if p.max_age_bound_s is not None else "")
            + f"</td>{_flag(s['within_max_age'])}{_flag(s['within_90d'])}"
            f"<td>{s['revocations_done']} / {s['revocations_pending']} / {s['revocations_failed']}"
            + (f" ({s['revocations_dismissed']} dismissed)" if s["revocations_dismissed"] else "") + "</td>"
            f'<td class="{"bad" if p.overdue_revocations else "ok" if s["revocations_overdue"] == 0 else "muted"}">'
            f'{_na(s["revocations_overdue"])}</td>'
            f"<td>{s['failures']}</td></tr>"
        )
    parts.append("</table>")
    for p in evidence.policies:
        if n := p.summary()["rotations_counted_in_pruned"]:
            parts.append(f'<p class="note">{e(p.policy)}: {e(_IN_PRUNED.format(n=n))}.</p>')
        if p.age_undecided:
            parts.append(f'<p class="note">{e(p.policy)}: {e(_undecided(p))}.</p>')
        if p.overdue_undecided:
            parts.append(f'<p class="note">{e(p.policy)}: {e(_overdue_undecided(p))}.</p>')
        for m in p.overdue_pruned:
            parts.append(f'<p class="note">{e(p.policy)}: revocation of token {e(str(m["token_id"]))} '
                         f"{e(_overdue_pruned(m))}.</p>")
        if p.republished:
            parts.append(f'<p class="note">{e(p.policy)}: runs {e(", ".join(p.republished))} {e(_REPUBLISHED)}.</p>')
    if evidence.not_in_chain:
        parts.append(f'<p class="note">{e(_NOT_IN_CHAIN)}: {e(", ".join(evidence.not_in_chain))}.</p>')
    if evidence.revocations_not_in_chain:
        parts.append(f'<p class="note">{e(_REVOCATIONS_NOT_IN_CHAIN)}: '
                     f'{e(", ".join(evidence.revocations_not_in_chain))}.</p>')
    if evidence.not_in_file:
        parts.append(f'<p class="note">Not in this report: {e(", ".join(evidence.not_in_file))}. {e(_NOT_IN_FILE)}.'
                     "</p>")
    for p in evidence.policies:
        parts.append(f"<h2>Policy {e(p.policy)}</h2>")
        parts.append(f"<h3>Rotations {_ctl('rotations')}</h3>")
        parts.append(_table(("run id", "kind", "state", "started", "verified", "published", "old token id",
                             "new token id", "instance", "in audit chain", "emergency / reason"),
                            [(r.run_id, r.kind, r.state + (f" ({r.note})" if r.note else ""), r.started_at,
                              r.verified_at, r.published_at, r.old_token_id, r.new_token_id, r.instance,
                              _yn(r.in_chain), _reason_cell(r)) for r in p.rotations]))  # fmt: skip
        if decided := _by_hand(p):
            parts.append("<h3>Emergency rotations, repairs and abandoned runs without a row (the person's reason)</h3>")
            parts.append(_table(("time", "what", "run id", "reason", "recorded in"), decided))
        parts.append(f"<h3>Revocations {_ctl('revocations')}</h3>")
        parts.append(_table(("token id", "run id", "reason", "due", "state", "done", "confirmed by issuer"),
                            [(v.token_id, v.run_id, v.reason, v.due_at, _revocation_state(p, v),
                              v.done_at, _yn(v.confirmed_by_issuer)) for v in p.revocations]))  # fmt: skip
        parts.append("<h3>Failures and how they ended</h3>")
        parts.append(_table(("time", "run id", "step", "result", "error", "ended", "instance"),
                            [(f.at, f.run_id, f.step, f.result, f.error, f.ended, f.instance)
                             for f in p.failures]))  # fmt: skip
        if p.pruned:
            parts.append("<h3>Pruned history (checkpoint summaries)</h3>")
            parts.append(_table(("from", "to", "checkpoint seq", "rotations", "revocations", "failures",
                                 "max token age", "in this period", "abandoned / emergency / repaired"),
                                [(pr["from"], pr["to"], pr["checkpoint_seq"], pr.get("rotations"),
                                  pr.get("revocations"), pr.get("failures"),
                                  _age(pr.get("max_token_age_seconds")),
                                  "whole range" if pr.get("within_period", True) else _PARTLY_OUTSIDE,
                                  f"{_count(pr, audit_chain.ABANDONED)} / {_count(pr, audit_chain.EMERGENCIES)} / "
                                  f"{_count(pr, audit_chain.REPAIRS)}")
                                 for pr in p.pruned]))  # fmt: skip
    parts.append('<p class="muted">Token ids only: rotator never records a token value. Times are UTC.</p>')
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _revocation_state(p: PolicyEvidence, v: RevocationRow) -> str:
    """The HTML state cell of a revocation: its state, OVERDUE as the summary counts it, and its note."""
    overdue = " OVERDUE" if v.token_id in p.overdue_revocations else ""
    return v.state + overdue + (f" ({v.note})" if v.note else "")


def _reason_cell(r: Rotation) -> str | None:
    """The HTML cell of a rotation's emergency and a person's reason (an emergency's or a repair's)."""
    if r.emergency:
        return f"emergency: {r.reason or '(none recorded)'}"
    return f"repair: {r.reason}" if r.reason else None


def _th(control: str, label: str) -> str:
    return f'<th>{html.escape(label)}<span class="control">{html.escape(CONTROLS[control])}</span></th>'


def _ctl(control: str) -> str:
    return f'<span class="control">{html.escape(CONTROLS[control])}</span>'


def _flag(value: bool | None) -> str:
    cls = "muted" if value is None else ("ok" if value else "bad")
    return f'<td class="{cls}">{_yn(value)}</td>'


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    if not rows:
        return '<p class="muted">none in this period</p>'
    head = "".join(f"<th>{_escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td class=mono>{_escape('-' if c is None else str(c))}</td>" for c in row) + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"
