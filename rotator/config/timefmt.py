"""How rotator writes and reads moments in time: RFC 3339 in UTC with a ``Z``.

Every moment rotator prints, stores or sends (store payloads, audit lines, webhooks, inventory,
the status page, adapter requests) goes through one of these, so the forms cannot drift apart:

- :func:`rfc3339`: ``2026-01-01T03:00:00Z`` (``.123456`` when there are microseconds) — payloads,
  audit records, JSON outputs;
- :func:`rfc3339_seconds`: ``2026-01-01T03:00:00Z``, whole seconds — APIs and files that want no
  fraction (influxctl ``--expires-at``, the Management API, profile markers);
- :func:`rfc3339_micro`: ``2026-01-01T03:00:00.000000Z``, always six digits — text that sorts as
  it compares (the journal's columns, the status page).

rotator computes in aware UTC datetimes only. A naive datetime is taken as UTC where rotator
writes for itself; :func:`rfc3339_seconds`, the form sent to issuers, refuses one (ValueError)
rather than guess what an expiry means. :func:`parse_rfc3339` reads any of these forms back
(and any offset), always aware.
"""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["as_utc", "parse_rfc3339", "rfc3339", "rfc3339_micro", "rfc3339_or_none", "rfc3339_seconds"]


def as_utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive value is taken as UTC already."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def rfc3339(value: datetime) -> str:
    """``2026-01-01T03:00:00Z``, with microseconds only when there are some."""
    return (value if value.tzinfo is UTC else as_utc(value)).isoformat().replace("+00:00", "Z")


def rfc3339_or_none(value: datetime | None) -> str | None:
    """:func:`rfc3339`, or None for None (optional fields of JSON outputs)."""
    return None if value is None else rfc3339(value)


def rfc3339_seconds(value: datetime) -> str:
    """``2026-01-01T03:00:00Z``: whole seconds, the fraction dropped; ValueError for a naive datetime."""
    if value.tzinfo is None:
        raise ValueError("a naive datetime has no defined UTC time")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_micro(value: datetime) -> str:
    """``2026-01-01T03:00:00.000000Z``: fixed width, so that the text sorts as the times compare."""
    if value.tzinfo is not UTC:
        value = as_utc(value)
    if value.year < 1000:  # strftime does not pad the year (datetime.min gives "1-01-01..."): kept as it was
        return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    # isoformat is several times faster than strftime (the journal formats ~45 of these per rotation),
    # and without arguments faster again than with timespec or after replace(tzinfo=None), which
    # parse keywords: UTC's form ends "+00:00" and leaves out a fraction of zero.
    text = value.isoformat()
    return (text[:-6] if value.microsecond else text[:-6] + ".000000") + "Z"


def parse_rfc3339(text: str) -> datetime:
    """An aware datetime from RFC 3339 text (``Z`` or an offset); ValueError if it is not one.

    Text without an offset is taken as UTC, like a naive datetime above. A time whose UTC moment
    falls outside datetime's years 1-9999 (``9999-12-31T23:59:59-01:00``) is a ValueError too:
    fromisoformat accepts it, but moving it to UTC overflows, and every caller handles ValueError
    as "not a time" (an OverflowError escaped stores' payload parsing as an internal error).
    """
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    try:
        return as_utc(moment)
    except OverflowError:
        raise ValueError("the time is outside the years 1 to 9999 in UTC") from None
