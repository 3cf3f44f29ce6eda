"""Which token rotator may revoke: DESIGN.md invariants 1 and 8, written once.

The engine (CLI, daemon) and the AWS Lambda rotation function both ask :func:`check_revocable`
before every revocation. A token id that comes from a store payload, a secret tag or a file is a
*claim*; the rule turns it into an order only when two independent records agree:

1. rotator's own record names the token: the journal's run that minted it (the engine), or the
   secret's version history kept by Secrets Manager (the Lambda function, which has no journal;
   see rotator/runners/lambda_rotation.py), or the id recorded when a human's token was bootstrapped;
2. the issuer's listing shows the token, and its description carries this policy's tag
   ``rotator:<policy>:<run-id>`` for one of the run ids of that record. Only a holder of the
   issuer's credential writes descriptions, so a person who can edit a store cannot forge this.
   A bootstrapped human token carries no tag; for it the id recorded at bootstrap is the record.

And never a token that a store still holds as current (invariant 1), whatever the records say.

Nor is a token judged at an issuer that names another place than the one its run recorded (the
policy's issuer pointed at another cluster since, :func:`check_same_target`): there it is simply not
listed, and "not listed" would read as "revoked already" while it stays valid where it was minted.

A refused claim raises :class:`NeedsAttention` (exit 4 in the CLI, a failed revocation and an
alert in the daemon): nothing is revoked, a person looks.

A claim that the issuer no longer shows needs no order: nothing is revoked. Where rotator's record
names the token (:func:`in_record`), it was rotator's and is gone: the revocation is done. Where it
does not (a store named an id rotator never minted nor bootstrapped, and the issuer never had or no
longer has it), nothing proves a token of rotator's was ever there: the engine records the revocation
dismissed with :func:`unrecorded_gone_reason`, never done "confirmed by the issuer".
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import NamedTuple

from rotator.config.timefmt import as_utc
from rotator.core.contracts import TokenInfo
from rotator.core.errors import NeedsAttention

__all__ = ["ABANDONED_PREFIX", "CLOCK_SLACK", "Claim", "abandoned_note", "carries_tag", "check_not_current",
           "check_revocable", "check_run_target", "check_same_target", "in_record", "read_abandoned_note",
           "unrecorded_gone_reason"]

#: an abandoned run's ``error`` starts with this, and the person's reason follows (Engine.abandon_run)
ABANDONED_PREFIX = "abandoned by hand: "
_MINTED_ON = "; minted on "
_NOT_SEARCHED = ", not searched or revoked there (the policy's issuer names "


def abandoned_note(reason: str, minted_on: str, target: str) -> str:
    """What an abandoned run's row keeps in ``error``: the person's reason and where the run minted.
    The row outlives a prune of the run's ``recover`` / ``abandoned`` event, so the report reads it
    back (:func:`read_abandoned_note`) where the chain no longer holds that event."""
    return f"{ABANDONED_PREFIX}{reason}{_MINTED_ON}{minted_on}{_NOT_SEARCHED}{target})"


def read_abandoned_note(error: str | None) -> tuple[str, str | None] | None:
    """The reason and where the run minted, from a row :func:`abandoned_note` wrote (None: not one of
    those). The reason is a person's text and may hold anything, "; minted on " included: the last one
    starts the part rotator wrote (no target holds it)."""
    if not error or not error.startswith(ABANDONED_PREFIX):
        return None
    text = error[len(ABANDONED_PREFIX):]
    reason, found, rest = text.rpartition(_MINTED_ON)
    if not found or _NOT_SEARCHED not in rest:
        return text, None  # (a row edited since, or written by hand: the reason is all there is)
    return reason, rest.partition(_NOT_SEARCHED)[0]


class Claim(NamedTuple):
    """What rotator's own record says about a token it is about to revoke."""

    token_id: str
    policy: str
    #: the run ids that may have minted it (their tag must be in the issuer's description)
    minted_by: Collection[str] = ()
    #: the id was recorded at bootstrap (a human-made token, no tag in its description)
    bootstrapped: bool = False
    #: what the claim came from, for the message (e.g. "journal run 1a2b", "tag rotator:revoke:X")
    source: str = ""
    #: for a bootstrapped id: when rotator last recorded it (a bootstrap; the token existed then)
    recorded_at: datetime | None = None
    #: where the record's run says the token lives (journal.RunRecord.issuer_target); None: unknown
    minted_on: str | None = None


def in_record(claim: Claim) -> bool:
    """Whether rotator's own record names ``claim``'s token: a run that may have minted it, or its bootstrap."""
    return bool(claim.minted_by) or claim.bootstrapped


def unrecorded_gone_reason(claim: Claim) -> str:
    """Why the revocation of a token that is not :func:`in_record` and that the issuer does not show
    is closed as dismissed, not done: nothing was revoked, and nothing says the token was rotator's."""
    source = f" (claimed by {claim.source})" if claim.source else ""
    return (f"token {claim.token_id}{source} is not one rotator minted or bootstrapped for policy "
            f"{claim.policy!r}, and the issuer has no active token under that id: nothing revoked (a store "
            "named an id that is not rotator's: its payload may have been edited)")


#: how far the issuer's clock may run ahead of rotator's before a token "created after it was
#: recorded" counts as another token under the same id
CLOCK_SLACK = timedelta(minutes=15)


def check_not_current(token_id: str, holders: Sequence[str]) -> None:
    """Invariant 1: never revoke a token a store still holds as current."""
    if holders:
        raise NeedsAttention(
            f"token {token_id} is still current in store(s) {', '.join(holders)}; refusing to revoke it",
            hint="finish publishing the new token (`rotator recover`), or rotate: the rotation that replaces "
            "this token schedules its revocation again",
        )


def check_same_target(claim: Claim, target: str | None) -> None:
    """Raise NeedsAttention when ``claim``'s token lives elsewhere than where the issuer points now
    (``target``, contracts.target_of), before the issuer is asked anything: the token is neither revoked
    nor found gone at the wrong cluster. Nothing is decided when either side is unknown (None)."""
    if claim.minted_on is None or target is None or claim.minted_on == target:
        return
    source = f" (claimed by {claim.source})" if claim.source else ""
    verb = "was bootstrapped" if claim.bootstrapped and not claim.minted_by else "was minted"
    raise NeedsAttention(
        f"token {claim.token_id}{source} {verb} on {claim.minted_on}, but the policy's issuer now names {target}, "
        f"where rotator can neither revoke it nor tell that it is gone: it may still be valid on {claim.minted_on}; "
        "nothing was revoked",
        hint=f"revoke token {claim.token_id} on {claim.minted_on} with the issuer's own tool, then record that: "
        f"`rotator revoke-expired --dismiss {claim.token_id} --reason TEXT {claim.policy}`; or point the policy's "
        f"issuer at {claim.minted_on} again until its revocations are done (`rotator revoke-expired --retry-failed "
        f"{claim.policy}`)",
    )


def check_run_target(policy: str, run_id: str, minted_on: str | None, target: str | None, *,
                     token_id: str | None = None, published: bool = False) -> None:  # fmt: skip
    """:func:`check_same_target` for what a run may have left behind that is found by its tag
    (``rotator:<policy>:<run_id>``): a search of that tag at another cluster finds nothing, which
    proves nothing. NeedsAttention, before the issuer is asked anything. Its hint also names the way out
    when the old target is gone for good, where pointing back cannot work: ``rotator recover --abandon``
    (Engine.abandon_run), which closes an open run, or, for a ``published`` run (the search of its tag
    after a mint try without an answer), ends that search and leaves the run as it is."""
    if minted_on is None or target is None or minted_on == target:
        return
    what = f"its token {token_id} and any token" if token_id else "any token"
    abandon = f"`rotator recover --abandon {run_id} --reason TEXT {policy}`"
    if published:
        way_out = (f"end the search of its tag without it: {abandon} (the run stays published; if {minted_on} still "
                   f"exists, revoke any token tagged rotator:{policy}:{run_id} there with the issuer's own tool)")
        closed = "nothing was revoked, and its tag is searched again at the next pass"
    else:
        way_out = (f"close the run without it: {abandon} (if {minted_on} still exists, revoke "
                   f"{'token ' + token_id if token_id else 'what the run left'} there with the issuer's own tool)")
        closed = "nothing was revoked or closed"
    raise NeedsAttention(
        f"run {run_id} of policy {policy!r} minted on {minted_on}, but the policy's issuer now names {target}: "
        f"{what} tagged rotator:{policy}:{run_id} lives on {minted_on}, where rotator cannot search or revoke it "
        f"now (finding none on {target} proves nothing); {closed}",
        hint=f"point the policy's issuer at {minted_on} again and run `rotator recover {policy}` (it searches "
        f"there, revokes what the run left and settles {'its search' if published else 'the run'}), then point it "
        f"at {target} again; if {minted_on} is gone for good, {way_out}",
    )


def check_revocable(claim: Claim, tokens: Sequence[TokenInfo], holders: Sequence[str], now: datetime) -> bool:
    """True: revoke ``claim.token_id``. False: the issuer lists it no more or not as active (nothing
    to do; for a claim not :func:`in_record`, no proof either that it was ever rotator's: the caller
    must not record it as revoked). Raises NeedsAttention when the records do not prove it is
    rotator's token to revoke.

    ``tokens`` must hold the token if the issuer has it: where a listing may leave tokens out, the
    caller adds what the issuer says of this one (contracts.with_unlisted)."""
    check_not_current(claim.token_id, holders)
    info = next((t for t in tokens if t.token_id == claim.token_id), None)
    if info is None or not info.is_active(now):
        return False  # revoked, expired or deleted already (e.g. a regenerated operator token): nothing to do
    source = f" (claimed by {claim.source})" if claim.source else ""
    if not in_record(claim):
        raise NeedsAttention(
            f"token {claim.token_id}{source} is not in rotator's record of tokens minted for policy "
            f"{claim.policy!r}; refusing to revoke it",
            hint="a token id read from a store or a tag is never trusted; if this token must go, revoke it "
            "yourself with the issuer's own tool",
        )
    if claim.bootstrapped:
        # Where an id is a name a person chose (InfluxDB 3 named tokens), the name may have been deleted
        # and given to a new token since the bootstrap: that one is not the token rotator recorded.
        if claim.recorded_at is not None and info.created_at is not None \
                and as_utc(info.created_at) > as_utc(claim.recorded_at) + CLOCK_SLACK:
            raise NeedsAttention(
                f"token {claim.token_id}{source} was created at {info.created_at.isoformat(timespec='seconds')}, "
                f"after rotator recorded it at bootstrap ({claim.recorded_at.isoformat(timespec='seconds')}): it is "
                "another token under the same id; refusing to revoke it",
                hint="the bootstrapped token is gone already (its id was given to a new token); if the new token must "
                "go too, revoke it yourself with the issuer's own tool",
            )
        return True
    tags = [f"rotator:{claim.policy}:{run}" for run in claim.minted_by]
    if not any(carries_tag(info.description, tag) for tag in tags):
        raise NeedsAttention(
            f"token {claim.token_id}{source}: the issuer's description of it does not carry "
            f"{' or '.join(tags[:3])}{' ...' if len(tags) > 3 else ''}; refusing to revoke it",
            hint="rotator revokes only tokens it minted for this policy; check who changed the store or the "
            "record, and revoke the token yourself if it must go",
        )
    return True


def carries_tag(description: str, tag: str) -> bool:
    """``tag`` appears in ``description`` as a whole word (``rotator:p:ab`` is not in ``rotator:p:abc``)."""
    start = description.find(tag)
    while start != -1:
        end = start + len(tag)
        if end == len(description) or not (description[end].isalnum() or description[end] in "-_"):
            return True
        start = description.find(tag, start + 1)
    return False
