"""`rotator inventory`: every token an issuer holds, and whose it is (docs/compliance.md).

For each issuer the policy file uses (policies on the same cluster or instance are listed once,
as one *target*) and for bare targets given on the command line, list every token
(:meth:`Issuer.list_tokens`) and classify it against rotator's **journal** (not the stores):

``managed``
    the current token of a policy, a previous one waiting for (or failing) its revocation, or the
    candidate of a run still in progress (the token the journal records for it; a token with the
    run's tag only while the journal records none yet).
``orphan``
    a live token that carries the tag ``rotator:<policy>:<run-id>`` of a run the journal knows, of
    that policy, that never published it (the run failed or aborted, or published another token).
    Only these are revoked by ``--revoke-orphans``: the engine's own tag sweep revokes them, under
    the policy's lease, after checking no store holds them (DESIGN invariants 1 and 8).
``suspicious`` (``orphan?``)
    a live token whose tag rotator cannot confirm: the run id is unknown to the journal (the AWS
    Lambda function's runs, which keep no journal, among them), the tag names a policy that does
    not use this issuer or is not in the file, the description carries several tags, the tag names
    a run in progress whose journal records another candidate, or the journal says rotator revoked
    it and the issuer lists it active. A tag is a claim anyone able to create tokens can write;
    rotator never revokes on a claim alone.
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
import re
import shlex
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from rotator.config import registry
from rotator.config.inline_secrets import mask_tokens
from rotator.config.policy_types import Policy
from rotator.config.timefmt import rfc3339_or_none
from rotator.core.clock import Clock
from rotator.core.contracts import Issuer, TokenInfo, read_for_reading
from rotator.core.engine import Engine
from rotator.core.errors import RotatorError
from rotator.core.journal import Journal, Revocation, RunRecord, RunState
from rotator.core.secret import REDACTOR, Secret
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
#: The age above which a token of no policy is flagged (CIS: rotate access keys every 90 days).
DEFAULT_UNMANAGED_MAX_AGE = timedelta(days=90)

#: A run id is the engine's (16 letters and digits; up to 64 accepted) or the AWS Lambda function's, its
#: ClientRequestToken (32-64 letters, digits and hyphens, a UUID as Secrets Manager makes it:
#: rotator/runners/lambda_rotation.py). The bound keeps a token value pasted after a tag (an InfluxDB v2
#: token is 86 such characters and ``==``) from being read as a run id, and shown as one.
_TAG = re.compile(
    r"rotator:([A-Za-z0-9][A-Za-z0-9._-]{0,62}):([A-Za-z0-9]{1,64}|[A-Za-z0-9-]{32,64})(?![A-Za-z0-9_-])"
)
#: Settings that name the cluster or instance an issuer talks to: policies whose issuers agree on
#: these (and on the type) see the same tokens, so the target is listed once.
_WHERE_ATTRS = ("profile", "base_url", "org_id", "product", "account_id", "cluster_id", "cluster_host")


@dataclass
class Target:
    """One cluster or instance to list: an issuer, how to get its credential, the policies on it."""

    name: str
    kind: str
    #: (policy, issuer, credential reader); a bare target has one entry with policy None
    listers: list[tuple[Policy | None, Issuer, Callable[[], Secret | None]]]

    @property
    def policies(self) -> list[Policy]:
        return [p for p, _, _ in self.listers if p is not None]


@dataclass(frozen=True)
class Entry:
    """One token of one target, classified. Never a value."""

    target: str
    kind: str
    token_id: str
    description: str
    state: str  # active | expired | revoked
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
    #: the id as the issuer lists it, for finding the token again (revoke_orphans); ``token_id`` is
    #: what is shown, with token-shaped text masked (an InfluxDB 3 token's id is its name, anyone's
    #: choice). Empty: the same as ``token_id``. Never printed.
    listed_id: str = field(default="", repr=False)

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

    def counts(self) -> dict[tuple[str, str], int]:
        """``(target, class) -> count`` of the tokens that are not revoked (every class, zeros included)."""
        out = {(t, c): 0 for t in self.targets for c in CLASSES}
        for e in self.entries:
            if e.state != "revoked":
                out[(e.target, e.cls)] = out.get((e.target, e.cls), 0) + 1
        return out

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
    settings = policy.issuer_settings
    parts = [policy.issuer_type]
    for attr in _WHERE_ATTRS:
        value = getattr(settings, attr, None)
        if value is not None:
            parts.append(f"{attr}={value!r}")
    if len(parts) == 1:  # an adapter that names its target otherwise: no merging
        parts.append(f"policy={policy.name}")
    return "|".join(parts)


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
    for members in groups.values():
        kind = members[0].issuer_type
        name = f"{kind}:{','.join(sorted(p.name for p in members))}"
        targets.append(Target(name, kind, [
            (p, registry.build_issuer(p, p.context(clock)), store_credential(p, clock)) for p in members
        ]))
    return targets


# ---------------------------------------------------------------------------------- classification
@dataclass
class _Facts:
    """What the journal says about the policies of one target."""

    current: dict[str, str] = field(default_factory=dict)  # token id -> policy
    revocations: dict[str, Revocation] = field(default_factory=dict)  # token id -> its revocation
    minted: dict[str, RunRecord] = field(default_factory=dict)  # token id -> the (latest) run that minted it
    published_at: dict[str, datetime] = field(default_factory=dict)  # token id -> when it was published


def _facts(journal: Journal, policies: Iterable[Policy]) -> _Facts:
    facts = _Facts()
    for policy in policies:
        last = journal.last_success(policy.name)
        if last is not None and last.new_token_id:
            facts.current[last.new_token_id] = policy.name
        for rev in journal.revocations(policy.name):
            facts.revocations[rev.token_id] = rev
        for run in reversed(journal.runs(policy.name, limit=0)):  # oldest first: the latest run wins
            if run.new_token_id:
                facts.minted[run.new_token_id] = run
                if run.published_at is not None:
                    facts.published_at[run.new_token_id] = run.published_at
    return facts


def _state(info: TokenInfo, now: datetime) -> str:
    if info.revoked_at is not None:
        return "revoked"
    if info.expires_at is not None and info.expires_at <= now:
        return "expired"
    return "active"


def _classify(
    info: TokenInfo, state: str, facts: _Facts, journal: Journal, target: Target, known: Mapping[str, Policy]
) -> tuple[str, str, str | None, str | None, tuple[str, str | None] | None]:
    """(class, reason, policy, run id, sweep) of one token."""
    live = state == "active"
    token_id = info.token_id
    if token_id in facts.current:
        return MANAGED, "current token", facts.current[token_id], None, None
    rev = facts.revocations.get(token_id)
    if rev is not None:
        due, done = rfc3339_or_none(rev.due_at), rfc3339_or_none(rev.done_at)
        if rev.state == "pending":
            return MANAGED, f"previous token, revocation due {due}", rev.policy, rev.run_id, None
        if rev.state == "failed":
            return MANAGED, "previous token, revocation FAILED: revoke it by hand", rev.policy, rev.run_id, None
        if rev.state == "dismissed":  # a person decided it stays valid (revoke-expired --dismiss)
            if live:
                return (MANAGED, f"previous token, revocation dismissed {done}: kept valid on purpose", rev.policy,
                        rev.run_id, None)  # fmt: skip
            return RETIRED, f"no longer active at the issuer; its revocation was dismissed {done}", rev.policy, \
                rev.run_id, None
        if live:
            return (SUSPICIOUS, f"the journal says rotator revoked it at {done}, the issuer lists it "
                    "active", rev.policy, rev.run_id, None)  # fmt: skip
        return RETIRED, f"revoked by rotator {done}", rev.policy, rev.run_id, None
    run = facts.minted.get(token_id)
    if run is not None:
        if run.state in RunState.OPEN:
            why = f"candidate of run {run.run_id}, still in progress ({run.state})"
            return MANAGED, why, run.policy, run.run_id, None
        if not live:
            return RETIRED, f"minted by run {run.run_id} ({run.state})", run.policy, run.run_id, None
        if run.published_at is None:
            return (ORPHAN, f"minted by run {run.run_id}, which {run.state} without publishing it", run.policy,
                    run.run_id, (run.run_id, None))  # fmt: skip
        return (SUSPICIOUS, f"published by run {run.run_id}, superseded, and no revocation recorded", run.policy,
                run.run_id, None)  # fmt: skip
    tags = sorted(set(_TAG.findall(info.description)))
    if not tags:
        return UNMANAGED, "no rotator tag, unknown to the journal", None, None, None
    policy_name, run_id = tags[0] if len(tags) == 1 else (None, None)

    def doubtful(why: str) -> tuple[str, str, str | None, str | None, None]:
        # Suspicious is for a token that still works. One that no longer does is retired, whatever its
        # tag names: a revocation that finds its token expired records it done without revoking it, and
        # the issuer goes on listing it after the journal pruned its run or the policy left the file.
        # The names are the description's (anyone's text): shown masked, as the description is.
        return (SUSPICIOUS if live else RETIRED, why if live else f"{why}; no longer active ({state})",
                _masked(policy_name), _masked(run_id), None)  # fmt: skip

    if policy_name is None or run_id is None:
        return doubtful("the description carries several rotator tags")
    on_target = {p.name for p in target.policies}
    if policy_name not in known:
        return doubtful(f"tag names policy {policy_name!r}, which is not in this policy file")
    if on_target and policy_name not in on_target:
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
            return (MANAGED, f"candidate of run {run_id}, still in progress ({tagged.state})", policy_name, run_id,
                    None)  # fmt: skip
        return doubtful(f"tag names run {run_id}, still in progress ({tagged.state}), whose candidate is "
                        f"{tagged.new_token_id}, not this token")
    if not live:
        return RETIRED, f"tagged by run {run_id} ({tagged.state})", policy_name, run_id, None
    what = "published another token" if tagged.published_at is not None else f"{tagged.state} without publishing"
    keep = tagged.new_token_id if tagged.published_at is not None else None
    return ORPHAN, f"tagged by run {run_id}, which {what}", policy_name, run_id, (run_id, keep)


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
    inv = Inventory(targets=[t.name for t in targets])
    for target in targets:
        tokens = _list_target(target, inv)
        if tokens is None:
            continue
        facts = _facts(journal, target.policies or known) if journal is not None else _Facts()
        for info in tokens.values():
            state = _state(info, now)
            if state == "revoked" and not include_revoked:
                continue
            if journal is None:
                cls, reason, pname, run_id, sweep = _classify_without_journal(info, state)
            else:
                cls, reason, pname, run_id, sweep = _classify(info, state, facts, journal, target, by_name)
            policy = by_name.get(pname) if pname else None
            flags, age = _flags(info, state, cls, policy, facts, now, unmanaged_max_age)
            shown_id = _masked(info.token_id) or ""
            inv.entries.append(Entry(
                target=target.name, kind=target.kind, token_id=shown_id,
                description=_masked(info.description) or "", state=state, cls=cls, flags=flags,
                reason=_masked(reason) or "", policy=pname, run_id=run_id, created_at=info.created_at,
                expires_at=info.expires_at, revoked_at=info.revoked_at, age=age, sweep=sweep,
                listed_id=info.token_id if shown_id != info.token_id else "",
            ))  # fmt: skip
    return inv


def _classify_without_journal(
    info: TokenInfo, state: str
) -> tuple[str, str, str | None, str | None, tuple[str, str | None] | None]:
    tags = sorted(set(_TAG.findall(info.description)))
    if not tags:
        return UNMANAGED, "no rotator tag (no journal to compare with)", None, None, None
    policy_name, run_id = _masked(tags[0][0]), _masked(tags[0][1])
    if state != "active":
        return RETIRED, "rotator tag, no longer valid (no journal to compare with)", policy_name, run_id, None
    return SUSPICIOUS, "rotator tag, but no journal to confirm it", policy_name, run_id, None


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
            errors.append(f"{REDACTOR.redact(str(exc))}{where}" + (f" (fix: {exc.hint})" if exc.hint else ""))
            continue
        for info in tokens:
            seen = merged.get(info.token_id)
            if seen is None or (_TAG.search(info.description) and not _TAG.search(seen.description)):
                merged[info.token_id] = info
    if errors and not merged:
        inv.errors.append((target.name, "; ".join(errors)))
        return None
    if errors:
        inv.errors.append((target.name, "listed only partly: " + "; ".join(errors)))
    return merged


# ---------------------------------------------------------------------------------- revoking orphans
class _OrphanSweeper(Engine):
    """The engine's own tag sweep, run for one orphan's run: the same rules as recovery."""

    def sweep_run(self, run: RunRecord, keep: str | None, token_ids: Sequence[str]) -> None:
        with self._lease("revoke_orphans"):
            self._event("inventory", "revoke_orphans", run.run_id, token_ids=list(token_ids), kept=keep)
            self._sweep_tag(run, self._credential_from(self._read_stores()), keep=keep)


def revoke_orphans(
    inv: Inventory, journal: Journal, known: Sequence[Policy], engine_options: Mapping[str, Any] | None = None
) -> list[tuple[Entry, str]]:
    """Revoke every ``orphan`` entry through its policy's engine; returns (entry, outcome) pairs.

    The engine's sweep revokes the live tokens that carry the run's tag, except the token that
    run published, and never one a store holds as current; every revocation is a journal event.
    """
    by_name = {p.name: p for p in known}
    grouped: dict[tuple[str, str, str | None], list[Entry]] = {}
    for entry in inv.entries:
        if entry.cls == ORPHAN and entry.sweep is not None and entry.policy in by_name:
            grouped.setdefault((entry.policy, *entry.sweep), []).append(entry)
    results: list[tuple[Entry, str]] = []
    for (policy_name, run_id, keep), entries in grouped.items():
        policy = by_name[policy_name]
        run = journal.get_run(run_id)
        if run is None or run.policy != policy_name or run.state in RunState.OPEN:
            results += [(e, "skipped: the run changed since the listing") for e in entries]
            continue
        sweeper = _OrphanSweeper(policy, journal, **(engine_options or {}))
        try:
            sweeper.sweep_run(run, keep, [e.listed_id or e.token_id for e in entries])
        except RotatorError as exc:
            results += [(e, f"not revoked: {REDACTOR.redact(str(exc))}") for e in entries]
            continue
        listed = {t.token_id: t for t in sweeper.issuer.list_tokens(sweeper._credential_from(sweeper._read_stores()))}
        now = sweeper.clock.now()
        for e in entries:
            info = listed.get(e.listed_id or e.token_id)
            gone = info is None or not info.is_active(now)
            results.append((e, "revoked" if gone else "still active (not found by the run's tag sweep)"))
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
    for store in stores:
        for key in ("path", "secret_id"):
            if isinstance(store.get(key), str):
                store[key] = f"{store[key].rstrip('/')}-{candidate}"
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
    for store in stores:
        scalars = [f"{k} = {_toml(v)}" for k, v in store.items() if not isinstance(v, Mapping)]
        lines += ["", "[[policy.store]]", *scalars]
        for key, table in store.items():
            if isinstance(table, Mapping):
                lines += [f"[policy.store.{key}]", *(f"{k} = {_toml(v)}" for k, v in table.items())]
    return "\n".join(lines) + "\n"


def _toml(value: Any) -> str:
    """A TOML value: strings (JSON escapes are TOML escapes), numbers, booleans, arrays, inline tables."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_key(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


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


def _bare_issuer(kind: str, settings: Mapping[str, Any], locate: _Locate) -> Issuer:
    from pathlib import Path

    from pydantic import ValidationError

    from rotator.config import registry
    from rotator.config.adapter_settings import validate_settings
    from rotator.core.contracts import AdapterContext
    from rotator.core.errors import ConfigError

    cls = registry.load("issuer", kind)
    try:
        validated = validate_settings(cls.settings_model, dict(settings))
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
    return cls.from_config(validated, AdapterContext(policy="inventory", base_dir=Path.cwd()))


def _locate_url_flag(loc: tuple[int | str, ...]) -> tuple[str, str]:
    flag = _URL_FLAGS.get(str(loc[0])) if loc else None
    if flag == "--url":
        return flag, _URL_HINT
    if flag is not None:
        return flag, f"check {flag} (see `rotator inventory --help`)"
    return "the --url target", "check --url, --kind and the flags of that kind (see `rotator inventory --help`)"


#: Settings a bare target needs only to satisfy an issuer's model: they serve minting, which the
#: inventory never does (it only lists).
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
    issuer = _bare_issuer(kind, settings, _locate_url_flag)
    return Target(f"{kind}:{mask_tokens(url)}", kind, [(None, issuer, lambda: None)])


def influxctl_profile_targets(spec: str, token_file: str | None, influxctl: str = "influxctl") -> list[Target]:
    """``PATH[:NAME]``: an influxctl config file's profile; its management tokens, and its database
    tokens when a management token is in a file (``token_file``) or the profile names an admin token file."""
    from pathlib import Path

    from rotator.core.errors import ConfigError

    path_text, _, name = spec.partition(":")
    path = Path(path_text).expanduser()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--influxctl-profile {path}: cannot read it as an influxctl config ({type(exc).__name__})",
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
            key = next((str(p) for p in loc[1:] if isinstance(p, str)), None)
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
        mgmt = _bare_issuer("influxctl-management", {**common, "auth": auth}, locate)
        targets.append(Target(f"influxctl-management:{label}", "influxctl-management", [(None, mgmt, lambda: None)]))
        db = _bare_issuer("influxctl-database", {**common, "auth": auth, **_LIST_ONLY["influxctl-database"]}, locate)
        targets.append(Target(f"influxctl-database:{label}", "influxctl-database", [(None, db, lambda: None)]))
    elif isinstance(mgmt_value, str) and mgmt_value:
        secret = Secret(mgmt_value)
        mgmt = _bare_issuer("influxctl-management", {**common, "auth": {"method": "self"}}, locate)
        targets.append(Target(f"influxctl-management:{label}", "influxctl-management", [(None, mgmt, lambda: secret)]))
    else:
        raise ConfigError(f"--influxctl-profile {spec}: the profile has no mgmt_token and no admin token file",
                          hint="pass --token-file FILE holding a management token")
    return targets
