"""`rotator inventory`: every token an issuer holds, and whose it is (docs/compliance.md).

For each issuer the policy file uses (policies on the same cluster or instance are listed once,
as one *target*) and for bare targets given on the command line, list every token
(:meth:`Issuer.list_tokens`) and classify it against rotator's **journal** (not the stores):

``managed``
    the current token of a policy, a previous one waiting for (or failing) its revocation, or the
    candidate of an unfinished run (the token the journal records for it; a token with the run's
    tag only while the journal records none yet). What the journal says of a policy's tokens counts
    on the policy's own cluster or instance (the target its issuer settings name), through whichever
    policy or bare target it is listed. A policy's current token that a complete listing of its
    cluster or instance does not show is entered as state ``missing`` (deleted at the issuer).
    The candidate of an unfinished run whose lease expired (its process is gone) is an *abandoned
    run*: `rotator recover` publishes or discards it.
``orphan``
    a live token that the journal records as minted, and never published, by a run of a policy
    on this target's cluster or instance; or one that carries the tag ``rotator:<policy>:<run-id>``
    of such a run that never published it (the run failed or aborted, or published another token);
    either way created while that run could still mint (from its start to its last journal write plus
    the issuer's call timeout, give or take the clock slack of the revocation rule). The id alone is
    no proof: an InfluxDB 3 token's id is its name, which anyone may give a token once rotator
    deleted the run's candidate.
    Only these are revoked by ``--revoke-orphans``: each is classified again under the policy's
    lease, through the policy's own issuer, then the engine's own tag sweep revokes exactly those
    ids (an allow-list), after checking no store holds them (DESIGN invariants 1 and 8).
``suspicious`` (``orphan?``)
    a live token whose tag rotator cannot confirm: the run id is unknown to the journal (the AWS
    Lambda function's runs, which keep no journal, among them), the tag names a policy that does
    not use this target's cluster or instance or is not in the file, the description carries
    several tags, the tag names a run in progress whose journal records another candidate, the
    token was created when the tagged (or recorded) run could not mint it (or the issuer gives no
    creation time), the journal records the id for a policy whose issuer settings name another
    cluster or instance (a token of the same id there is not the one it records), or the journal
    says rotator revoked it and the issuer lists it active. A tag is a claim anyone able to create
    tokens can write; rotator never revokes on a claim alone.
``unmanaged``
    no tag and unknown to the journal: a token nothing rotates. ``--suggest`` prints the policy
    that would bring it under rotation (then ``rotator bootstrap``).
``retired``
    rotator's own token, no longer valid (revoked or expired): history.

Flags: ``no-expiry`` (live, never expires), ``expired-not-revoked`` (past its expiry, never
revoked: it lingers in the issuer's list), ``older-than-max-age`` (live and older than its
policy's ``max_age``, or than ``--max-age`` for a token of no policy).

No token value is ever read here: issuers list ids, descriptions and times only. Those are other
people's text, and a person may paste a value into one: every token-shaped part is masked before
it becomes an :class:`Entry` (REDACTOR knows only the values this process holds).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

from rotator.config import registry
from rotator.config.inline_secrets import mask_tokens, starts_a_token
from rotator.config.policy_types import Policy
from rotator.config.timefmt import as_utc, rfc3339, rfc3339_or_none
from rotator.core.clock import Clock
from rotator.core.contracts import Issuer, StoreState, TokenInfo, call_timeout_of, read_for_reading, with_unlisted
from rotator.core.engine import Engine
from rotator.core.errors import RotatorError
from rotator.core.journal import Journal, Revocation, RunRecord, RunState
from rotator.core.revocation_rule import CLOCK_SLACK, Claim
from rotator.core.secret import REDACTOR, Secret
from rotator.observe.cluster_keys import place_keys
from rotator.observe.compliance import max_age_of
from rotator.observe.untrusted_text import one_line

logger = logging.getLogger("rotator.inventory")

__all__ = [
    "CLASSES",
    "Entry",
    "Inventory",
    "Target",
    "policy_targets",
    "revoke_orphans",
    "suggest_policy",
    "take_inventory",
]

MANAGED, ORPHAN, SUSPICIOUS, UNMANAGED, RETIRED = "managed", "orphan", "suspicious", "unmanaged", "retired"
CLASSES = (MANAGED, ORPHAN, SUSPICIOUS, UNMANAGED, RETIRED)
NO_EXPIRY, EXPIRED_NOT_REVOKED, TOO_OLD = "no-expiry", "expired-not-revoked", "older-than-max-age"
#: the state of a policy's current token that a complete listing of its cluster or instance does not show
MISSING = "missing"
#: The age above which a token of no policy is flagged (CIS: rotate access keys every 90 days).
DEFAULT_UNMANAGED_MAX_AGE = timedelta(days=90)

#: A run id is the engine's (16 letters and digits; up to 64 accepted) or the AWS Lambda function's, its
#: ClientRequestToken (32-64 letters, digits and hyphens, a UUID as Secrets Manager makes it:
#: rotator/runners/lambda_rotation.py). The bound keeps a token value pasted after a tag (an InfluxDB v2
#: token is 86 such characters and ``==``) from being read as a run id, and shown as one; a value that
#: has a + or / early on is left to :func:`_tags`. Read tags through :func:`_tags`, not this pattern.
_TAG = re.compile(
    r"rotator:([A-Za-z0-9][A-Za-z0-9._-]{0,62}):([A-Za-z0-9]{1,64}|[A-Za-z0-9-]{32,64})(?![A-Za-z0-9_-])"
)
#: Settings that name the cluster or instance an issuer talks to: policies whose issuers agree on
#: these (and on the type) see the same tokens, so the target is listed once.
_WHERE_ATTRS = ("profile", "base_url", "org_id", "product", "account_id", "cluster_id", "cluster_host")
#: influxctl's port when a profile names none; a URL's when it names none
_INFLUXCTL_PORT = 443
_URL_PORTS = {"http": 80, "https": 443}


@dataclass
class Target:
    """One cluster or instance to list: an issuer, how to get its credential, the policies on it."""

    name: str
    kind: str
    #: (policy, issuer, credential reader); a bare target has one entry with policy None
    listers: list[tuple[Policy | None, Issuer, Callable[[], Secret | None]]]
    #: the cluster or instance, written one way (:func:`_where_key`): a policy whose own key is this
    #: one rotates tokens of this target, listed through it or not. Empty: only the listers' policies
    where: str = ""

    @property
    def policies(self) -> list[Policy]:
        return [p for p, _, _ in self.listers if p is not None]

    @property
    def label(self) -> str:
        """The target as a metric label (rotator_tokens{issuer}): its cluster or instance. Not ``name``,
        which lists the policies on it: that grew with the policy file, and each policy added or
        removed started new series (resetting an alert's ``for:``)."""
        return mask_tokens(self.where) if self.where else self.name


@dataclass(frozen=True)
class Entry:
    """One token of one target, classified. Never a value."""

    target: str
    kind: str
    token_id: str
    description: str
    state: str  # active | expired | revoked | missing (MISSING: a current token the issuer does not list)
    cls: str
    flags: tuple[str, ...]
    reason: str
    policy: str | None = None
    run_id: str | None = None
    created_at: datetime | None = None
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    age: timedelta | None = None
    #: the run whose tag sweep revokes this orphan, and the token that run published (kept)
    sweep: tuple[str, str | None] | None = None
    #: the journal's current token of ``policy``: the one its stores hand out
    current: bool = False
    #: the id as the issuer lists it, for finding the token again (revoke_orphans); ``token_id`` is
    #: what is shown, with token-shaped text masked (an InfluxDB 3 token's id is its name, anyone's
    #: choice). Empty: the same as ``token_id``. Never printed.
    listed_id: str = field(default="", repr=False)
    #: the candidate of an unfinished run whose lease expired: nothing finishes it until `rotator recover`
    abandoned: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "issuer": self.target, "kind": self.kind, "token_id": self.token_id, "description": self.description,
            "state": self.state, "class": self.cls, "flags": list(self.flags), "reason": self.reason,
            "policy": self.policy, "run_id": self.run_id, "created_at": rfc3339_or_none(self.created_at),
            "expires_at": rfc3339_or_none(self.expires_at), "revoked_at": rfc3339_or_none(self.revoked_at),
            "age_s": int(self.age.total_seconds()) if self.age is not None else None,
        }  # fmt: skip


@dataclass
class Inventory:
    entries: list[Entry] = field(default_factory=list)
    #: (target, message): a target that could not be listed (the others still are)
    errors: list[tuple[str, str]] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)
    #: target -> the policies whose cluster or instance it is (revoke_orphans acts only there)
    policies_on: dict[str, frozenset[str]] = field(default_factory=dict)
    #: target -> its metric label (:attr:`Target.label`); a target missing here is labelled by its name
    labels: dict[str, str] = field(default_factory=dict)
    #: the targets that could not be listed at all (each has its line in ``errors``)
    unlisted: list[str] = field(default_factory=list)

    def counts(self) -> dict[tuple[str, str], int]:
        """``(target, class) -> count`` of the tokens the issuers hold and did not revoke (every class, zeros
        included). A target that could not be listed has none: zeros would say it was checked and clean."""
        out = {(t, c): 0 for t in self.targets if t not in self.unlisted for c in CLASSES}
        for e in self.entries:
            if e.state not in ("revoked", MISSING):
                out[(e.target, e.cls)] = out.get((e.target, e.cls), 0) + 1
        return out

    def findings(self) -> list[Entry]:
        """What ``rotator inventory --check`` exits 4 for, the most urgent first: a policy's current token
        that the issuer lists as expired or revoked, or does not list at all (its stores hand out a token
        that no longer works: DESIGN invariant 1), then every live orphan or suspicious token, the live
        candidate of an abandoned run, and every live unmanaged one that never expires or is older than
        its max age."""
        dead = [e for e in self.entries if e.current and e.state != "active"]
        return dead + [e for e in self.entries if e.state == "active" and (
            e.cls in (ORPHAN, SUSPICIOUS) or e.abandoned
            or (e.cls == UNMANAGED and (NO_EXPIRY in e.flags or TOO_OLD in e.flags)))]

    def flag_counts(self) -> dict[tuple[str, str, str], int]:
        """``(target, class, flag) -> count`` of live tokens carrying ``flag``."""
        out: dict[tuple[str, str, str], int] = {}
        for e in self.entries:
            for flag in e.flags:
                key = (e.target, e.cls, flag)
                out[key] = out.get(key, 0) + 1
        return out


# ---------------------------------------------------------------------------------- targets
def _where(policy: Policy) -> str:
    """The policy's cluster or instance (:func:`_where_key`); an adapter that names its target
    otherwise is a target of its own."""
    return _where_key(policy.issuer_type, policy.issuer_settings) or f"{policy.issuer_type}|policy={policy.name}"


def _where_key(kind: str, settings: Any) -> str | None:
    """The cluster or instance an issuer of ``kind`` with ``settings`` lists, written one way, so that
    two spellings of one place agree: a host in any case, influxctl's port 443 written or left out, a
    URL's default port and trailing slash. TLS settings say how to reach it, not which it is: not
    part of it. None: the settings name no place."""
    parts = [kind]
    for attr in _WHERE_ATTRS:
        value = getattr(settings, attr, None)
        if value is None:
            continue
        if attr == "profile":
            text = _profile_where(value, kind)
        elif attr in ("base_url", "cluster_host"):
            text = _url_where(str(value))
        else:
            text = str(value).strip().lower()
        parts.append(f"{attr}={text!r}")
    return "|".join(parts) if len(parts) > 1 else None


def _host_where(host: str) -> str:
    return host.strip().lower().rstrip(".").removeprefix("[").removesuffix("]")


def _profile_where(profile: Any, kind: str) -> str:
    """An influxctl profile's place: product, then host, port (influxctl's default 443 when left out),
    account and cluster, each written only if it names where an issuer of ``kind`` lists its tokens for
    that product (:func:`~rotator.observe.cluster_keys.place_keys`), as rotator sync compares a profile
    with a policy: a Dedicated policy without ``host`` and an operator's profile with one are the same
    place. Cloud Dedicated's management tokens are the account's: the management policies of two clusters
    of one account list the same tokens, so their place is the account alone (each token listed once, and
    one policy's run no claim of "a policy that does not use this issuer" on the other's cluster); its
    database tokens stay the cluster's. (Every key for a product this module does not know.)"""
    product = str(getattr(profile, "product", ""))
    named = place_keys(kind, product) or ("host", "port", "account_id", "cluster_id")
    host = getattr(profile, "host", None)
    port = getattr(profile, "port", None)
    ids = [str(getattr(profile, key, None) or "").strip().lower() if key in named else ""
           for key in ("account_id", "cluster_id")]  # fmt: skip
    return "/".join([product, _host_where(host) if host and "host" in named else "",
                     str(port or _INFLUXCTL_PORT) if "port" in named else "", *ids])  # fmt: skip


def _url_where(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    host = _host_where(parts.hostname or "")
    return f"{scheme}://{host}:{port or _URL_PORTS.get(scheme, '')}{parts.path.rstrip('/')}"


def store_credential(policy: Policy, clock: Clock | None = None) -> Callable[[], Secret | None]:
    """The token the policy's stores hold now (what a self-authenticating issuer lists with)."""

    def read() -> Secret | None:
        for _, store in registry.build_stores(policy, policy.context(clock)):
            state = read_for_reading(store, logger)
            if state.record is not None:
                return state.record.value
        return None

    return read


def policy_targets(policies: Sequence[Policy], clock: Clock | None = None) -> list[Target]:
    """One target per cluster or instance the policies' issuers talk to, built with ``clock``
    (the system clock unless given)."""
    groups: dict[str, list[Policy]] = {}
    for policy in policies:
        groups.setdefault(_where(policy), []).append(policy)
    targets = []
    for where, members in groups.items():
        kind = members[0].issuer_type
        name = f"{kind}:{','.join(sorted(p.name for p in members))}"
        targets.append(Target(name, kind, [
            (p, registry.build_issuer(p, p.context(clock)), store_credential(p, clock)) for p in members
        ], where))
    return targets


# ---------------------------------------------------------------------------------- classification
@dataclass
class _Facts:
    """What the journal says about the policies of the file."""

    current: dict[str, str] = field(default_factory=dict)  # token id -> policy
    revocations: dict[str, Revocation] = field(default_factory=dict)  # token id -> its revocation
    minted: dict[str, RunRecord] = field(default_factory=dict)  # token id -> the (latest) run that minted it
    published_at: dict[str, datetime] = field(default_factory=dict)  # token id -> when it was published


#: Issuer types that list the same tokens under the same ids: a Cloud Dedicated or Clustered cluster's
#: database tokens, through influxctl or the Management API. Every other type's ids are its own: an
#: InfluxDB 3 token's id is its name, anyone's choice, and may spell another type's id.
_ID_SPACES = {"management-api": "influxctl-database"}


#: Issuer types whose token ids are names a person chooses (an InfluxDB 3 token's name).
_CHOSEN_IDS = frozenset({"influxdb3"})


def _id_space(kind: str) -> str:
    return _ID_SPACES.get(kind, kind)


def _facts(journal: Journal, policies: Iterable[Policy]) -> dict[str, _Facts]:
    """What the journal says, per id space (:func:`_id_space` of the policies' issuer types), keyed by
    the ids the policies' issuers list (:func:`_as_listed`): an id recorded for one type of issuer says
    nothing of a token of another type that happens to bear it."""
    spaces: dict[str, _Facts] = {}
    for policy in policies:
        facts = spaces.setdefault(_id_space(policy.issuer_type), _Facts())
        listed = partial(_as_listed, policy.issuer_type)
        last = journal.last_success(policy.name)
        if last is not None and last.new_token_id:
            facts.current[listed(last.new_token_id)] = policy.name
        for rev in journal.revocations(policy.name):
            facts.revocations[listed(rev.token_id)] = rev
        for run in reversed(journal.runs(policy.name, limit=0)):  # oldest first: the latest run wins
            if run.new_token_id:
                facts.minted[listed(run.new_token_id)] = run
                if run.published_at is not None:
                    facts.published_at[listed(run.new_token_id)] = run.published_at
    return spaces


def _as_listed(kind: str, token_id: str) -> str:
    """The id under which an issuer of ``kind`` lists the token the journal records as ``token_id``:
    the issuer's ``listed_token_id`` if it has one, else the same id.

    InfluxDB 3 has one: rotator recorded its operator token generations as ``_admin@<16 hex digits>``
    of the value's hash before, and system.tokens shows 9. Unmapped, the live operator token of such
    a journal would be listed as a token of no policy, and its current id as gone. (Through the
    registry: this module imports no adapter, tests/core/test_layout.py.)"""
    from rotator.config import registry

    listed = getattr(registry.load("issuer", kind), "listed_token_id", None)
    return str(listed(token_id)) if listed is not None else token_id


class _Classifier:
    """The journal's word on every policy of the file, and which policies each target is the cluster
    or instance of.

    The journal is the trust root for the tokens of each policy's own cluster or instance: what it
    records of a token id counts on every target of that place (a policy's current token stays managed
    when another policy's target, or a bare one, of the same place lists it), and on no other (an
    InfluxDB 3 token's id is its name: another instance may hold a token of that name, anyone's).
    A tag is only a claim: it is confirmed only on a target of the policy it names."""

    def __init__(self, journal: Journal, known: Sequence[Policy], targets: Sequence[Target], now: datetime) -> None:
        self.journal = journal
        self.now = now
        self.known = {p.name: p for p in known}
        self.wheres = {p.name: _where(p) for p in known}
        #: a policy's own issuer, where a target lists through it (for its call timeout)
        self.issuers = {p.name: issuer for t in targets for p, issuer, _ in t.listers if p is not None}
        self._facts = _facts(journal, known)
        self._lease_lapsed: dict[str, bool] = {}

    def facts_for(self, kind: str) -> _Facts:
        """What the journal says of the ids an issuer of type ``kind`` lists."""
        return self._facts.setdefault(_id_space(kind), _Facts())

    @staticmethod
    def owns(policy: str, target: Target, on_target: frozenset[str]) -> bool:
        """Whether the journal's record of ``policy`` speaks for a token ``target`` lists under that id:
        ``target`` is the policy's cluster or instance, or names no place to tell, or its issuer makes
        its ids (UUIDs, 16 hex digits: one token's id wherever it is listed, and one cluster's database
        tokens are listed by two issuer types, :data:`_ID_SPACES`, whose places are written apart).
        Only where an id is a name anyone chooses (:data:`_CHOSEN_IDS`) does another place's token
        of the same id say nothing of the policy's."""
        return policy in on_target or not target.where or target.kind not in _CHOSEN_IDS

    def abandoned(self, run: RunRecord) -> bool:
        """An unfinished run whose policy's lease expired: its process is gone (a live process renews
        the lease), and nothing finishes the run until `rotator recover` (the daemon's next pass)."""
        if run.state not in RunState.OPEN:
            return False
        if run.policy not in self._lease_lapsed:
            self._lease_lapsed[run.policy] = not self.journal.lease_holder(run.policy, self.now)
        return self._lease_lapsed[run.policy]

    def policies_on(self, target: Target) -> frozenset[str]:
        """The policies whose cluster or instance ``target`` is: those it lists through, and those
        whose issuer settings name the same place (`--policy a` lists b's cluster too; so does a bare
        target of it)."""
        names = {p.name for p in target.policies}
        if target.where:
            names |= {name for name, where in self.wheres.items() if where == target.where}
        return frozenset(names)

    def mint_window(self, run: RunRecord, target: Target) -> tuple[datetime, datetime]:
        """When a mint of ``run`` can have created a token: from the run's start to its last journal
        write (or the end of its tag search) plus the issuer's call timeout, widened on both sides by
        the revocation rule's clock slack (the issuer's clock is not rotator's)."""
        issuer = self.issuers.get(run.policy) or (target.listers[0][1] if target.listers else None)
        last = max(as_utc(t) for t in (run.started_at, run.updated_at, run.finished_at, run.mint_started_at,
                                       run.tag_search_until) if t is not None)  # fmt: skip
        return (as_utc(run.started_at) - CLOCK_SLACK,
                last + timedelta(seconds=call_timeout_of(issuer)) + CLOCK_SLACK)  # fmt: skip


def _state(info: TokenInfo, now: datetime) -> str:
    if info.revoked_at is not None:
        return "revoked"
    if info.expires_at is not None and info.expires_at <= now:
        return "expired"
    return "active"


class _Class(NamedTuple):
    cls: str
    reason: str
    policy: str | None
    run_id: str | None
    sweep: tuple[str, str | None] | None = None
    #: the candidate of an unfinished run whose process is gone (:meth:`_Classifier.abandoned`)
    abandoned: bool = False


def _classify(info: TokenInfo, state: str, c: _Classifier, target: Target, on_target: frozenset[str]) -> _Class:
    """The class, reason, policy, run id and sweep of one token."""
    live = state == "active"
    token_id = info.token_id
    facts, journal = c.facts_for(target.kind), c.journal

    def not_this(policy: str, what: str, run_id: str | None) -> _Class:
        # By id, from the journal: an id the issuer makes is unique, but an InfluxDB 3 token's id is its
        # name, anyone's choice. The journal speaks for the policy's own cluster or instance only.
        why = (f"the journal records {what} of policy {policy!r} under this id, but the policy's issuer "
               "settings name another cluster or instance: not the token it records")
        return _Class(SUSPICIOUS if live else RETIRED, why if live else f"{why}; no longer active ({state})",
                      policy, run_id)  # fmt: skip

    def candidate(run: RunRecord, policy: str, run_id: str) -> _Class:
        if c.abandoned(run):
            return _Class(MANAGED, f"candidate of abandoned run {run_id} ({run.state}): its lease expired with the "
                          f"run unfinished; `rotator recover {policy}` publishes or discards it", policy, run_id,
                          abandoned=True)  # fmt: skip
        return _Class(MANAGED, f"candidate of run {run_id}, still in progress ({run.state})", policy, run_id)

    def outside_window(run: RunRecord, what: str) -> str | None:
        # Only the journal's id or the description ties the token to the run: its creation must fall where
        # a mint of that run could land (a person's token that takes the name of a candidate rotator deleted,
        # or mentions the tag of a run that failed days ago, is not the run's).
        if info.created_at is None:
            return f"{what}, but the issuer gives no creation time to tie the token to that run"
        start, end = c.mint_window(run, target)
        created = as_utc(info.created_at)
        if not start <= created <= end:
            return (f"{what}, but the token was created at {rfc3339(created)}, when no mint of that run could "
                    f"create it ({rfc3339(start)} to {rfc3339(end)})")
        return None

    if token_id in facts.current:
        policy = facts.current[token_id]
        if not c.owns(policy, target, on_target):
            return not_this(policy, "the current token", None)
        if live:
            return _Class(MANAGED, "current token", policy, None)
        # Invariant 1 broken: the stores hand out a token the issuer no longer accepts.
        return _Class(MANAGED, f"current token, {state.upper()} at the issuer: the stores hold a token that no "
                      f"longer works (`rotator rotate {policy}` replaces it)", policy, None)  # fmt: skip
    rev = facts.revocations.get(token_id)
    if rev is not None:
        if not c.owns(rev.policy, target, on_target):
            return not_this(rev.policy, "a previous token", rev.run_id)
        due, done = rfc3339_or_none(rev.due_at), rfc3339_or_none(rev.done_at)
        if rev.state == "pending":
            return _Class(MANAGED, f"previous token, revocation due {due}", rev.policy, rev.run_id)
        if rev.state == "failed":
            return _Class(MANAGED, "previous token, revocation FAILED: revoke it by hand", rev.policy, rev.run_id)
        if rev.state == "dismissed":  # a person decided it stays valid (revoke-expired --dismiss)
            if live:
                return _Class(MANAGED, f"previous token, revocation dismissed {done}: kept valid on purpose",
                              rev.policy, rev.run_id)  # fmt: skip
            return _Class(RETIRED, f"no longer active at the issuer; its revocation was dismissed {done}", rev.policy,
                          rev.run_id)  # fmt: skip
        if live:
            return _Class(SUSPICIOUS, f"the journal says rotator revoked it at {done}, the issuer lists it active",
                          rev.policy, rev.run_id)  # fmt: skip
        return _Class(RETIRED, f"revoked by rotator {done}", rev.policy, rev.run_id)
    run = facts.minted.get(token_id)
    if run is not None:
        if not c.owns(run.policy, target, on_target):
            return not_this(run.policy, f"a token minted by run {run.run_id}", run.run_id)
        if run.state in RunState.OPEN:
            return candidate(run, run.policy, run.run_id)
        if not live:
            return _Class(RETIRED, f"minted by run {run.run_id} ({run.state})", run.policy, run.run_id)
        if run.published_at is None:
            # (a discarded candidate leaves no revocation row, and deleting it frees its name)
            why = outside_window(run, f"the journal records run {run.run_id} ({run.state}) minting a token of this id")
            if why is not None:
                return _Class(SUSPICIOUS, why, run.policy, run.run_id)
            return _Class(ORPHAN, f"minted by run {run.run_id}, which {run.state} without publishing it", run.policy,
                          run.run_id, (run.run_id, None))  # fmt: skip
        return _Class(SUSPICIOUS, f"published by run {run.run_id}, superseded, and no revocation recorded",
                      run.policy, run.run_id)  # fmt: skip
    tags = _tags(info.description)
    if not tags:
        return _Class(UNMANAGED, "no rotator tag, unknown to the journal", None, None)
    policy_name, run_id = tags[0] if len(tags) == 1 else (None, None)

    def doubtful(why: str) -> _Class:
        # Suspicious is for a token that still works. One that no longer does is retired, whatever its
        # tag names: a revocation that finds its token expired records it done without revoking it, and
        # the issuer goes on listing it after the journal pruned its run or the policy left the file.
        # The names are the description's (anyone's text): shown masked, as the description is.
        return _Class(SUSPICIOUS if live else RETIRED, why if live else f"{why}; no longer active ({state})",
                      _masked(policy_name), _masked(run_id))  # fmt: skip

    if policy_name is None or run_id is None:
        return doubtful("the description carries several rotator tags")
    if policy_name not in c.known:
        return doubtful(f"tag names policy {policy_name!r}, which is not in this policy file")
    if policy_name not in on_target:
        # (a bare target, or another policy's cluster: the policy's own run cannot have minted it here)
        return doubtful(f"tag names policy {policy_name!r}, which does not use this issuer")
    tagged = journal.get_run(run_id)
    if tagged is None or tagged.policy != policy_name:
        if "-" in run_id:  # the engine's run ids have no hyphen: the AWS Lambda function's form
            return doubtful(f"tag names run {run_id}, an AWS Lambda rotation's ClientRequestToken: the Lambda "
                            "keeps no journal, so this one cannot confirm it (the secret's versions in Secrets "
                            "Manager say which token is current)")
        return doubtful(f"tag names run {run_id}, which the journal does not know for policy {policy_name!r}")
    if tagged.state in RunState.OPEN:
        # The tag vouches for a token only while the journal cannot name the run's candidate (planned,
        # minting: a mint whose answer is not recorded yet). Once it names one, this is another token
        # with the run's tag: a retried mint's leftover, or a copy of the tag. It is not revoked while
        # the run may still act on it; once the run ends it is an orphan (or the run's discard revokes it).
        if tagged.new_token_id is None:
            return candidate(tagged, policy_name, run_id)
        return doubtful(f"tag names run {run_id}, still in progress ({tagged.state}), whose candidate is "
                        f"{tagged.new_token_id}, not this token")
    if not live:
        return _Class(RETIRED, f"tagged by run {run_id} ({tagged.state})", policy_name, run_id)
    why = outside_window(tagged, f"tag names run {run_id} ({tagged.state})")
    if why is not None:
        return doubtful(why)
    what = "published another token" if tagged.published_at is not None else f"{tagged.state} without publishing"
    keep = tagged.new_token_id if tagged.published_at is not None else None
    return _Class(ORPHAN, f"tagged by run {run_id}, which {what}", policy_name, run_id, (run_id, keep))


def _flags(
    info: TokenInfo, state: str, cls: str, policy: Policy | None, facts: _Facts, now: datetime,
    unmanaged_max_age: timedelta,
) -> tuple[tuple[str, ...], timedelta | None]:
    flags = []
    if state == "active" and info.expires_at is None:
        flags.append(NO_EXPIRY)
    if state == "expired":
        flags.append(EXPIRED_NOT_REVOKED)
    # Age since the token came to be: its creation at the issuer, or its publication where the issuer
    # does not say (what max_age bounds); a bootstrapped token was created before it was published.
    published = facts.published_at.get(info.token_id)
    born = min((t for t in (published, info.created_at) if t is not None), default=None)
    age = now - born if born is not None else None
    limit = max_age_of(policy) if policy is not None and cls == MANAGED else unmanaged_max_age
    if state == "active" and age is not None and age > limit:
        flags.append(TOO_OLD)
    return tuple(flags), age


def take_inventory(
    targets: Sequence[Target],
    journal: Journal | None,
    known: Sequence[Policy],
    now: datetime,
    *,
    unmanaged_max_age: timedelta = DEFAULT_UNMANAGED_MAX_AGE,
    include_revoked: bool = False,
) -> Inventory:
    """List and classify every target's tokens; a target that fails is reported in ``errors``."""
    by_name = {p.name: p for p in known}
    inv = Inventory(targets=[t.name for t in targets], labels={t.name: t.label for t in targets})
    classifier = _Classifier(journal, known, targets, now) if journal is not None else None
    for target in targets:
        on_target = classifier.policies_on(target) if classifier is not None else frozenset()
        inv.policies_on[target.name] = on_target
        facts = classifier.facts_for(target.kind) if classifier is not None else _Facts()
        # the current tokens the journal speaks for here, and those of the policies of this very place:
        # each of those is listed here, or gone
        ours = {token_id: policy for token_id, policy in facts.current.items()
                if classifier is not None and classifier.owns(policy, target, on_target)}  # fmt: skip
        expected = {token_id: policy for token_id, policy in ours.items() if policy in on_target}
        tokens = _list_target(target, inv)
        if tokens is None:
            continue
        missing = _unlisted_current(target, tokens, expected, inv)
        for info in tokens.values():
            state = _state(info, now)
            current = info.token_id in ours
            # (a policy's current token is shown revoked too: the stores hand out a dead token)
            if state == "revoked" and not include_revoked and not current:
                continue
            if classifier is None:
                found = _Class(*_classify_without_journal(info, state))
            else:
                found = _classify(info, state, classifier, target, on_target)
            policy = by_name.get(found.policy) if found.policy else None
            flags, age = _flags(info, state, found.cls, policy, facts, now, unmanaged_max_age)
            shown_id = _masked(info.token_id) or ""
            inv.entries.append(Entry(
                target=target.name, kind=target.kind, token_id=shown_id,
                description=_masked(info.description) or "", state=state, cls=found.cls, flags=flags,
                reason=_masked(found.reason) or "", policy=found.policy, run_id=found.run_id,
                created_at=info.created_at, expires_at=info.expires_at, revoked_at=info.revoked_at, age=age,
                sweep=found.sweep, current=current, listed_id=info.token_id if shown_id != info.token_id else "",
                abandoned=found.abandoned,
            ))  # fmt: skip
        for token_id in missing:
            name = expected[token_id]
            shown_id = _masked(token_id) or ""
            inv.entries.append(Entry(
                target=target.name, kind=target.kind, token_id=shown_id, description="", state=MISSING, cls=MANAGED,
                flags=(), reason=_masked(f"current token not found at the issuer: the stores hold a token that no "
                                         f"longer works (`rotator rotate {name}` replaces it)") or "",
                policy=name, current=True, listed_id=token_id if shown_id != token_id else "",
            ))  # fmt: skip
    return inv


def _unlisted_current(target: Target, tokens: dict[str, TokenInfo], expected: Mapping[str, str],
                      inv: Inventory) -> list[str]:  # fmt: skip
    """The ids of ``expected`` (current token id -> policy) the issuer does not have, after a complete
    listing of ``target`` (none after a partial one: "not listed" proves nothing there).

    Where an issuer's listing may leave tokens out (:func:`with_unlisted`), each one it does not show
    is looked up by id, through its policy's own issuer where the target lists through it; one found is
    added to ``tokens``. A lookup that fails makes the listing a partial one (an error of the target)."""
    if any(name == target.name for name, _ in inv.errors):
        return []
    missing, errors = [], []
    for token_id, policy in sorted(expected.items()):
        if token_id in tokens:
            continue
        _, issuer, credential = min(target.listers, key=lambda lister: lister[0] is None or lister[0].name != policy)
        try:
            found = with_unlisted(issuer, [], token_id, credential())
        except RotatorError as exc:
            errors.append(one_line(f"could not look up the current token of policy {policy!r}: "
                                   f"{REDACTOR.redact(str(exc))}"))  # fmt: skip
            continue
        if found:
            tokens[token_id] = found[0]
        else:
            missing.append(token_id)
    if errors:
        inv.errors.append((target.name, "listed only partly: " + "; ".join(errors)))
        return []
    return missing


def _classify_without_journal(
    info: TokenInfo, state: str
) -> tuple[str, str, str | None, str | None, tuple[str, str | None] | None]:
    tags = _tags(info.description)
    if not tags:
        return UNMANAGED, "no rotator tag (no journal to compare with)", None, None, None
    policy_name, run_id = _masked(tags[0][0]), _masked(tags[0][1])
    if state != "active":
        return RETIRED, "rotator tag, no longer valid (no journal to compare with)", policy_name, run_id, None
    return SUSPICIOUS, "rotator tag, but no journal to confirm it", policy_name, run_id, None


def _tags(description: str) -> list[tuple[str, str]]:
    """The (policy, run id) of each rotator tag in ``description``, sorted, once each.

    A run id that is part of a token-shaped text is none: an InfluxDB v2 token in standard base64 pasted
    after ``rotator:<policy>:`` nearly always has a + or / in its first 64 characters, and what comes
    before it was read as a run id, shown unmasked (the description masks the whole value) and counted
    as a suspicious tag. Whatever follows the run id is not refused for it: ``rotator:p:<run>/x`` is a tag.
    """
    return sorted({(match.group(1), match.group(2)) for match in _TAG.finditer(description)
                   if not starts_a_token(description, match.start(2), match.group(2))})


def _masked(text: str | None) -> str | None:
    """``text`` with token-shaped parts masked: the issuer's text (descriptions, names) is anyone's, and
    a value pasted into it must not reach a table, a CSV file or a log (REDACTOR knows only the values
    this process holds)."""
    return None if text is None else mask_tokens(REDACTOR.redact(text))


def _list_target(target: Target, inv: Inventory) -> dict[str, TokenInfo] | None:
    """Every token of the target, listed through each of its policies' issuers and merged by id.

    Listing per policy matters where an issuer derives the tag from the policy (InfluxDB 3 names
    ``<prefix>-<run id>``): the description that carries a tag wins.
    """
    merged: dict[str, TokenInfo] = {}
    errors = []
    for policy, issuer, credential in target.listers:
        try:
            tokens = issuer.list_tokens(credential())
        except RotatorError as exc:
            where = f" (through policy {policy.name})" if policy is not None else ""
            # (an issuer's error may quote its server's text: one line, no control character of it)
            errors.append(one_line(f"{REDACTOR.redact(str(exc))}{where}" + (f" (fix: {exc.hint})" if exc.hint else "")))
            continue
        for info in tokens:
            seen = merged.get(info.token_id)
            if seen is None or (_tags(info.description) and not _tags(seen.description)):
                merged[info.token_id] = info
    if errors and not merged:
        inv.errors.append((target.name, "; ".join(errors)))
        inv.unlisted.append(target.name)
        return None
    if errors:
        inv.errors.append((target.name, "listed only partly: " + "; ".join(errors)))
    return merged


# ---------------------------------------------------------------------------------- revoking orphans
#: recheck(tokens, now) -> token id -> None (still the run's orphan: revoke it) or why not
_Recheck = Callable[[Sequence[TokenInfo], datetime], Mapping[str, str | None]]


class _OrphanSweeper(Engine):
    """The engine's own tag sweep, run for one orphan's run: the same rules as recovery."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The sweep revokes one token at a time, and one that fails leaves those before it revoked: what
        # it did is kept here for a sweep that raises.
        #: the ids whose revocation was tried (the failed one among them: it may have taken effect)
        self.tried: list[str] = []
        #: the ids whose revocation went through (the issuer took it, or had revoked the token already)
        self.sent: list[str] = []

    def _safe_revoke(self, claim: Claim, credential: Secret | None,
                     states: dict[str, StoreState] | None = None) -> bool:  # fmt: skip
        self.tried.append(claim.token_id)
        done = super()._safe_revoke(claim, credential, states)
        self.sent.append(claim.token_id)
        return done

    def sweep_run(self, run: RunRecord, keep: str | None, token_ids: Sequence[str],
                  recheck: _Recheck) -> tuple[dict[str, str], list[str]]:  # fmt: skip
        """Under the policy's lease: list the policy's own issuer, classify each of ``token_ids`` again
        (``recheck``), and sweep the run's tag revoking only the ids still confirmed (an allow-list:
        not another token with the tag, such as one the listing called suspicious or one created since).

        Returns (token id -> why it was not handed to the sweep, the ids the sweep revoked)."""
        with self._lease("revoke_orphans"):
            credential = self._credential_from(self._read_stores())
            tokens: list[TokenInfo] = self._call(lambda: self.issuer.list_tokens(credential), "list tokens")
            for token_id in token_ids:
                if not any(t.token_id == token_id for t in tokens):  # (a listing that may leave some out)
                    tokens = self._call(partial(with_unlisted, self.issuer, tokens, token_id, credential),
                                        f"look up token {token_id}")
            listed = {t.token_id: t for t in tokens}
            verdicts = recheck([listed[t] for t in token_ids if t in listed], self.clock.now())
            refused = {t: "not revoked: not found at the issuer" for t in token_ids if t not in listed}
            refused |= {t: f"not revoked: no longer an orphan ({why})" for t, why in verdicts.items() if why}
            confirmed = [t for t in token_ids if t not in refused]
            self._event("inventory", "revoke_orphans", run.run_id, token_ids=confirmed, kept=keep,
                        refused=sorted(refused) or None)
            revoked = self._sweep_run_tag(run.run_id, credential, keep, only=confirmed) if confirmed else []
        return refused, revoked


def revoke_orphans(
    inv: Inventory, journal: Journal, known: Sequence[Policy], engine_options: Mapping[str, Any] | None = None
) -> list[tuple[Entry, str]]:
    """Revoke every ``orphan`` entry through its policy's engine; returns (entry, outcome) pairs, the
    outcome ``"revoked"`` for each one revoked.

    Only an entry listed on a target of its policy (its cluster or instance) is acted on. Under the
    policy's lease each one is classified again from the policy's own issuer and the journal as they
    are then; the engine's sweep of the run's tag then revokes exactly the ids still confirmed (never
    another token carrying the tag, nor the token the run published, nor one a store holds as current),
    and every revocation is a journal event.
    """
    by_name = {p.name: p for p in known}
    grouped: dict[tuple[str, str, str | None], list[Entry]] = {}
    results: list[tuple[Entry, str]] = []
    for entry in inv.entries:
        if entry.cls != ORPHAN or entry.sweep is None or entry.policy not in by_name:
            continue
        if entry.policy not in inv.policies_on.get(entry.target, ()):
            results.append((entry, f"not revoked: {entry.target} is not the cluster or instance of policy "
                                   f"{entry.policy!r}"))  # fmt: skip
            continue
        grouped.setdefault((entry.policy, *entry.sweep), []).append(entry)
    for (policy_name, run_id, keep), entries in grouped.items():
        policy = by_name[policy_name]
        run = journal.get_run(run_id)
        if run is None or run.policy != policy_name or run.state in RunState.OPEN:
            results += [(e, "skipped: the run changed since the listing") for e in entries]
            continue
        sweeper = _OrphanSweeper(policy, journal, **(engine_options or {}))
        own = Target(f"{policy.issuer_type}:{policy.name}", policy.issuer_type,
                     [(policy, sweeper.issuer, lambda: None)], _where(policy))  # fmt: skip

        def recheck(tokens: Sequence[TokenInfo], now: datetime, policy_name: str = policy_name, run_id: str = run_id,
                    keep: str | None = keep, own: Target = own) -> dict[str, str | None]:  # fmt: skip
            classifier = _Classifier(journal, known, [own], now)  # the journal as it is now, under the lease
            on_target = classifier.policies_on(own)
            verdicts: dict[str, str | None] = {}
            for info in tokens:
                state = _state(info, now)
                found = _classify(info, state, classifier, own, on_target)
                still = (state == "active" and found.cls == ORPHAN and found.policy == policy_name
                         and found.sweep == (run_id, keep))  # fmt: skip
                verdicts[info.token_id] = None if still else _masked(f"{found.cls}, {state}: {found.reason}")
            return verdicts

        ids = list(dict.fromkeys(e.listed_id or e.token_id for e in entries))
        failed: str | None = None  # the outcome of each id the sweep did not revoke before it failed
        try:
            refused, revoked = sweeper.sweep_run(run, keep, ids, recheck)
        except RotatorError as exc:
            # Those it revoked before the failure are revoked, and --check must not count them: the
            # listing below confirms them like any other.
            failed = f"not revoked: {REDACTOR.redact(str(exc))}"
            refused, revoked = {}, list(sweeper.tried)
        try:
            listed = {t.token_id: t for t in
                      sweeper.issuer.list_tokens(sweeper._credential_from(sweeper._read_stores()))}  # fmt: skip
        except RotatorError as exc:
            check = f"the listing that confirms it failed: {REDACTOR.redact(str(exc))}"
            for e in entries:
                token_id = e.listed_id or e.token_id
                if token_id in refused:
                    results.append((e, refused[token_id]))
                elif failed is not None and token_id not in sweeper.sent:
                    results.append((e, failed))
                else:
                    results.append((e, f"revoke sent, not confirmed ({check})"))
            continue
        now = sweeper.clock.now()
        for e in entries:
            token_id = e.listed_id or e.token_id
            info = listed.get(token_id)
            if token_id in refused:
                outcome = refused[token_id]
            elif token_id in revoked and (info is None or not info.is_active(now)):
                outcome = "revoked"  # (an issuer that deletes what it revokes lists it no more)
            elif failed is not None:
                outcome = failed
            elif info is None:
                outcome = "not revoked: not found at the issuer"
            elif info.is_active(now):
                outcome = "still active (not found by the run's tag sweep)"
            else:
                outcome = "not revoked by rotator: no longer active at the issuer"
            results.append((e, outcome))
    return results


# ---------------------------------------------------------------------------------- suggestions
def suggest_policy(entry: Entry, source: Mapping[str, Any] | None, issuer_table: Mapping[str, Any] | None,
                   taken: Iterable[str]) -> str:
    """The ``[[policy]]`` TOML that would rotate ``entry`` (an unmanaged token), to append to the file.

    ``source`` is the raw ``[[policy]]`` table of a policy on the same target: its issuer table
    (or ``issuer_table``, a bare target's) is reused, and its stores are copied with their secret
    path changed, so the suggestion validates as it is.
    """
    # The entry's text is the issuer's: masked again here, for an entry built elsewhere than take_inventory
    # (a token value pasted into a description must reach neither the comment nor the policy name).
    description, token_id = _masked(entry.description) or "", _masked(entry.token_id) or ""
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", (description or token_id).strip()).strip("-._")
    name = ("adopt-" + (base or "token"))[:60].rstrip("-._")
    names = set(taken)
    candidate, n = name, 2
    while candidate in names:
        candidate, n = f"{name[:56]}-{n}", n + 1
    policy_raw = source
    issuer = dict(issuer_table or (policy_raw or {}).get("issuer", {}))
    if "token_name_prefix" in issuer:
        issuer["token_name_prefix"] = f"rotator-{candidate}"[:100]
    # The source policy's former prefixes name its own old tokens: the new policy would tag them as its own.
    issuer.pop("former_token_name_prefixes", None)
    stores = [dict(s) for s in (policy_raw or {}).get("store", [])]
    #: a comment for the store at that index: what to change before it is used
    notes: dict[int, str] = {}
    for index, store in enumerate(stores):
        for key in ("path", "secret_id"):
            if isinstance(store.get(key), str):
                store[key] = f"{store[key].rstrip('/')}-{candidate}"
        if store.get("type") == "influxctl-profile":
            # A profile holds one token under its key: the source policy's profile is that policy's (the
            # suggestion would publish over its token). A profile of its own, which a person creates.
            config = store.get("config")
            where = f"to {one_line(config)}" if isinstance(config, str) else "to the influxctl config file"
            store["profile"] = candidate
            notes[index] = (f"# CHANGE: add a [[profile]] named {json.dumps(candidate)} {where} for this token "
                            "(or name another profile): the source policy's profile holds that policy's token")
    lines = [
        f"# Brings token {one_line(token_id)} ({one_line(description) or 'no description'}) of "
        f"{one_line(entry.target)} under rotation.",
        "# Check the schedule, the grace period and the store path, append this to the policy file, then:",
        "#   rotator validate",
        # An InfluxDB 3 token's id is its name, which whoever creates the token chooses: one line of the
        # comment, and one word of the command a person pastes into a shell.
        f"#   rotator bootstrap {candidate} --token-file FILE-HOLDING-THE-TOKEN "
        f"--token-id {shlex.quote(one_line(token_id))}",
        *(["#   (the id looks like a token value, so it is masked: copy it from the issuer's own listing)"]
          if token_id != entry.token_id or entry.listed_id else []),
        "[[policy]]",
        f"name = {_toml(candidate)}",
        'schedule = "30d"',
        'grace = "24h"',
        "",
        "[policy.issuer]",
        *(f"{k} = {_toml(v)}" for k, v in issuer.items() if not isinstance(v, Mapping)),
    ]
    for key, table in issuer.items():
        if isinstance(table, Mapping):
            lines += ["", f"[policy.issuer.{key}]", *(f"{k} = {_toml(v)}" for k, v in table.items())]
    if not stores:
        stores = [{"type": "vault-kv2", "url": "https://vault.example.com:8200", "path": f"influx/{candidate}",
                   "auth": {"method": "token", "token": {"file": "/run/secrets/vault-token"}}}]
        lines.insert(2, "# CHANGE the store below: it is an example.")
    if notes:
        lines.insert(1, "# CHANGE the profile of the influxctl-profile store below: see its comment.")
    for index, store in enumerate(stores):
        scalars = [f"{k} = {_toml(v)}" for k, v in store.items() if not isinstance(v, Mapping)]
        lines += ["", *([notes[index]] if index in notes else []), "[[policy.store]]", *scalars]
        for key, table in store.items():
            if isinstance(table, Mapping):
                lines += [f"[policy.store.{key}]", *(f"{k} = {_toml(v)}" for k, v in table.items())]
    return "\n".join(lines) + "\n"


def _toml(value: Any) -> str:
    """A TOML value: strings (:func:`_toml_string`), numbers, booleans, arrays, inline tables."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_key(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_string(key)


#: What a TOML basic string must escape (a quote, a backslash, a control character), and everything else
#: outside printable ASCII: the suggestion is printed to a terminal, where a C1 control or a bidi override
#: of a policy's text would act, and pasted into a file.
_TOML_ESCAPED = re.compile(r'["\\]|[^\x20-\x7e]')
_TOML_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f",
                       "\r": "\\r"}  # fmt: skip


def _toml_string(text: str) -> str:
    """``text`` as a TOML basic string, in printable ASCII.

    Not json.dumps: it writes a character above U+FFFF as a UTF-16 surrogate pair, and TOML takes a
    ``\\u`` escape of a Unicode scalar value only (tomllib refuses the pair): ``\\UXXXXXXXX`` instead."""
    return '"' + _TOML_ESCAPED.sub(_toml_escape, text) + '"'


def _toml_escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _TOML_SHORT_ESCAPES:
        return _TOML_SHORT_ESCAPES[char]
    code = ord(char)
    if 0xD800 <= code <= 0xDFFF:
        # Only a str decoded with surrogateescape holds one (tomllib never makes one): no TOML string can.
        raise ValueError(f"cannot write a lone surrogate (U+{code:04X}) as TOML: the text is not valid UTF-8")
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def read_raw_config(path: Any) -> dict[str, Any]:
    with open(path, "rb") as fh:
        return tomllib.load(fh)


# ---------------------------------------------------------------------------------- bare targets
#: Where a problem with a bare target's setting is: ``(where, how to fix it)`` for a pydantic error
#: location. A bare target's settings come from flags and from an influxctl config file: the message
#: names the one the person has to fix.
_Locate = Callable[[tuple[int | str, ...]], tuple[str, str]]

#: The flag each setting of a ``--url`` target comes from.
_URL_FLAGS = {"base_url": "--url", "cluster_host": "--url", "credential": "--token-file",
              "management_token": "--token-file", "org_id": "--org-id", "product": "--product",
              "account_id": "--account-id", "cluster_id": "--cluster-id", "tls_verify": "--insecure"}  # fmt: skip
_URL_HINT = ("give --url as the bare address, e.g. https://influxdb.example.com:8181: no user:password@, no "
             "?query (the token is read from the file --token-file names)")


def _bare_issuer(kind: str, settings: Mapping[str, Any], locate: _Locate,
                 listing: bool = False) -> tuple[Issuer, str]:  # fmt: skip
    """The issuer of a bare target, and its cluster or instance (:func:`_where_key`; "": it names none).

    ``listing``: validate with the issuer's list-only settings (``listing_settings_model``, when it has
    one: no check that only verification needs), not those of a policy."""
    from pathlib import Path

    from pydantic import ValidationError

    from rotator.config import registry
    from rotator.config.adapter_settings import validate_settings
    from rotator.core.contracts import AdapterContext
    from rotator.core.errors import ConfigError

    cls = registry.load("issuer", kind)
    try:
        model = getattr(cls, "listing_settings_model", None) if listing else None
        validated = validate_settings(model or cls.settings_model, dict(settings))
    except ValidationError as exc:
        # Never str(exc): pydantic quotes the input, and a URL's password or a token may be in it. One
        # problem per place (a Management API's cluster_host is --url again: the same problem twice).
        found: dict[str, str] = {}
        hints: list[str] = []
        for err in exc.errors(include_url=False, include_input=False):
            where, hint = locate(tuple(err["loc"]))
            found.setdefault(where, err["msg"].removeprefix("Value error, "))
            if hint not in hints:
                hints.append(hint)
        text = "; ".join(f"{where}: {message}" for where, message in found.items())
        raise ConfigError(mask_tokens(f"inventory target {kind}: {text}"), hint=mask_tokens("; ".join(hints))) \
            from None
    issuer = cls.from_config(validated, AdapterContext(policy="inventory", base_dir=Path.cwd()))
    return issuer, _where_key(kind, validated) or ""


def _locate_url_flag(loc: tuple[int | str, ...]) -> tuple[str, str]:
    flag = _URL_FLAGS.get(str(loc[0])) if loc else None
    if flag == "--url":
        return flag, _URL_HINT
    if flag is not None:
        return flag, f"check {flag} (see `rotator inventory --help`)"
    return "the --url target", "check --url, --kind and the flags of that kind (see `rotator inventory --help`)"


#: Settings a bare target needs only to satisfy an issuer's model: they serve minting, which the
#: inventory never does (it only lists). influxctl-database's are validated with its list-only model
#: (:func:`influxctl_profile_targets`): listing queries no database and, on Cloud Dedicated, needs no host.
_LIST_ONLY: dict[str, dict[str, Any]] = {
    "influxdb2": {"permissions": [{"action": "read", "resource": {"type": "buckets"}}]},
    "management-api": {"permissions": [{"action": "read", "resource": "*"}], "verify": {"database": "unused"}},
    "influxctl-database": {"permissions": {"read": ["*"]}},
}


def url_target(url: str, kind: str, token_file: str, *, org_id: str | None = None, product: str | None = None,
               account_id: str | None = None, cluster_id: str | None = None, tls_verify: bool = True) -> Target:
    """A bare InfluxDB 3 / v2 instance or Management API given on the command line."""
    ref = {"file": token_file}
    settings: dict[str, Any]
    if kind == "influxdb3":
        settings = {"base_url": url, "credential": ref, "tls_verify": tls_verify}
    elif kind == "influxdb2":
        settings = {"base_url": url, "credential": ref, "org_id": org_id, "tls_verify": tls_verify,
                    **_LIST_ONLY[kind]}
    else:
        from urllib.parse import urlsplit

        parts = urlsplit(url)  # the data plane is never called when listing: any address without a path
        settings = {"product": product or "clustered", "base_url": url,
                    "cluster_host": f"{parts.scheme}://{parts.netloc}",
                    "management_token": ref, "tls_verify": tls_verify, **_LIST_ONLY[kind]}
        if account_id:
            settings.update(account_id=account_id, cluster_id=cluster_id)
    settings = {k: v for k, v in settings.items() if v is not None}
    issuer, where = _bare_issuer(kind, settings, _locate_url_flag)
    return Target(f"{kind}:{mask_tokens(url)}", kind, [(None, issuer, lambda: None)], where)


#: The largest influxctl config.toml read (a few KB in practice), as the policy file's bound
_MAX_CONFIG_BYTES = 16 * 1024 * 1024


class _NotAConfig(OSError):
    """A path that names no regular file of a config's size: a FIFO (an open would wait for a writer), a device
    (/dev/zero never ends), a directory, a huge file."""


def _read_config_file(path: Path) -> bytes:
    """``path``'s bytes: opened without blocking, a regular file of at most :data:`_MAX_CONFIG_BYTES`."""
    import stat

    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _NotAConfig("a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file")
        with open(fd, "rb", closefd=False) as fh:
            data = fh.read(_MAX_CONFIG_BYTES + 1)
        if len(data) > _MAX_CONFIG_BYTES:
            raise _NotAConfig(f"larger than {_MAX_CONFIG_BYTES // (1024 * 1024)} MiB")
        return data
    finally:
        os.close(fd)


def influxctl_profile_targets(spec: str, token_file: str | None, influxctl: str = "influxctl") -> list[Target]:
    """``PATH[:NAME]``: an influxctl config file's profile; its management tokens, and its database
    tokens when a management token is in a file (``token_file``) or the profile names an admin token file."""
    from pathlib import Path

    from rotator.core.errors import ConfigError

    # Split at the last ':', as rotator sync's --from FILE:POLICY: a directory's name may hold one. Without
    # NAME, such a path is the whole of spec: a file, where the part before its last ':' is none.
    path_text, colon, name = spec.rpartition(":")
    if not colon or (Path(spec).expanduser().is_file() and not Path(path_text).expanduser().is_file()):
        path_text, name = spec, ""
    path = Path(path_text).expanduser()
    try:
        data = tomllib.loads(_read_config_file(path).decode("utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        # (TOML's own message says where, "... (at line 3, column 9)", and quotes no value of the file)
        why = str(exc) if isinstance(exc, tomllib.TOMLDecodeError | _NotAConfig) else type(exc).__name__
        raise ConfigError(f"--influxctl-profile {path}: cannot read it as an influxctl config ({why})",
                          hint="give PATH[:PROFILE] of an influxctl config.toml") from None
    listed = data.get("profile", [])
    if not isinstance(listed, list):
        raise ConfigError(f"--influxctl-profile {path}: `profile` is not a list of profiles",
                          hint=f"write each profile as a [[profile]] table in {path}")
    profiles = [p for p in listed if isinstance(p, dict)]
    chosen = next((p for p in profiles if p.get("name") == (name or "default")), None)
    if chosen is None and not name and profiles:
        chosen = profiles[0]
    if chosen is None:
        known = ", ".join(str(p.get("name")) for p in profiles) or "(none)"
        raise ConfigError(f"--influxctl-profile {spec}: no profile {name or 'default'!r}", hint=f"profiles: {known}")
    label = f"{path}:{chosen.get('name', 'default')}"
    # The file is influxctl's, written by a person or another tool: a value of the wrong type is that
    # file's problem, named with its profile and key (never an internal error, never the value).
    in_file = f"--influxctl-profile {path}, profile {str(chosen.get('name', 'default'))!r}"
    fix = f"fix the profile in {path} (influxctl's config file; see influxctl's documentation)"

    def bad(key: str, what: str) -> ConfigError:
        return ConfigError(f"{in_file}: `{key}` {what}", hint=fix)

    profile = {k: chosen[k] for k in ("product", "host", "account_id", "cluster_id") if k in chosen}
    if "tls" in chosen:
        # How influxctl reaches the cluster (a private CA, a client certificate, ...): listing without it
        # would fail, or reach it otherwise than the operator's own profile does. Checked by the
        # profile's model like the rest (a key it does not know is named with the file's).
        if not isinstance(chosen["tls"], dict):
            raise bad("tls", "is not a table (write [profile.tls] ca = \"/path/to/ca.pem\")")
        profile["tls"] = dict(chosen["tls"])
    if "port" in chosen:
        port = chosen["port"]
        # influxctl writes the port as a string ("443"); a whole number is fine too. Not a bool or a
        # float: int() would turn true into port 1 and 443.9 into 443 without a word.
        if isinstance(port, str) and port.strip().isdigit() and port.strip().isascii():
            port = int(port)
        if not isinstance(port, int) or isinstance(port, bool):
            raise bad("port", "is not a port number (write e.g. port = \"443\")")
        profile["port"] = port
    auth_table = chosen.get("auth", {})
    if not isinstance(auth_table, dict):
        raise bad("auth", "is not a table (write [profile.auth.token] token_file = \"/path/to/admin-token\")")
    token_table = auth_table.get("token", {})
    if not isinstance(token_table, dict):
        raise bad("auth.token", "is not a table (write [profile.auth.token] token_file = \"/path/to/admin-token\")")
    admin_file = token_table.get("token_file")
    if admin_file is not None and not (isinstance(admin_file, str) and admin_file):
        raise bad("auth.token.token_file", "is not the path of a file (a non-empty string)")
    mgmt_value = chosen.get("mgmt_token")
    if mgmt_value is not None and not isinstance(mgmt_value, str):
        raise bad("mgmt_token", "is not a string")

    def locate(loc: tuple[int | str, ...]) -> tuple[str, str]:
        head = str(loc[0]) if loc else ""
        if head == "profile":
            # a check of the whole profile (product 'clustered' needs `host`) has no key of its own
            key = ".".join(str(p) for p in loc[1:] if isinstance(p, str)) or None
            return (f"{in_file}: `{key}`" if key else in_file), fix
        if head == "influxctl":
            return "--influxctl", "name the influxctl binary: a name on PATH or a path"
        if head == "auth" and token_file:
            return "--token-file", "give the path of a file holding a management token"
        if head == "auth":
            return f"{in_file}: `auth.token.token_file`", fix
        return in_file, fix

    targets = []
    auth: dict[str, Any] | None = None
    if token_file:
        auth = {"method": "mgmt_token", "token": {"file": token_file}}
    elif admin_file:
        auth = {"method": "token_file", "token_file": admin_file}
    common = {"influxctl": influxctl, "profile": profile}
    if auth is not None:
        mgmt, where = _bare_issuer("influxctl-management", {**common, "auth": auth}, locate)
        targets.append(Target(f"influxctl-management:{label}", "influxctl-management", [(None, mgmt, lambda: None)],
                              where))  # fmt: skip
        db, where = _bare_issuer("influxctl-database", {**common, "auth": auth, **_LIST_ONLY["influxctl-database"]},
                                 locate, listing=True)  # fmt: skip
        targets.append(Target(f"influxctl-database:{label}", "influxctl-database", [(None, db, lambda: None)], where))
    elif isinstance(mgmt_value, str) and mgmt_value:
        secret = Secret(mgmt_value)
        mgmt, where = _bare_issuer("influxctl-management", {**common, "auth": {"method": "self"}}, locate)
        targets.append(Target(f"influxctl-management:{label}", "influxctl-management", [(None, mgmt, lambda: secret)],
                              where))  # fmt: skip
    else:
        raise ConfigError(f"--influxctl-profile {spec}: the profile has no mgmt_token and no admin token file",
                          hint="pass --token-file FILE holding a management token")
    return targets
