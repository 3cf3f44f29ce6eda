"""The lifetime check of a policy with a window holds over years of rotations.

Validation refuses a ``lifetime`` that is not longer than ``schedule.longest_gap + grace``
(rotator/config/policy.py), and ``longest_gap`` counts how much later than nominally due a window
lets a rotation happen (``Window.max_delay``). Whatever that bound is, a token minted with the
shortest lifetime validation accepts must never expire while it is current: here each policy
rotates for a simulated year or more, every run minting at its target time and publishing a
random while later (as the daemon does: ``Schedule.next_due`` from the last publication).
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rotator.config.policy import PolicyFileError, load_config_bytes
from rotator.config.policy_types import Policy
from rotator.config.schedule import format_duration
from tests.config.policy_text import POLICY

GRACE = timedelta(hours=1)
START = datetime(2026, 3, 2, tzinfo=UTC)


def _load(schedule: str, window: str, lifetime: timedelta) -> Policy:
    extra = f'window = "{window}"\ngrace = "{format_duration(GRACE)}"\nlifetime = "{format_duration(lifetime)}"'
    text = '[rotator]\njournal = "j.db"\n' + POLICY.format(name="p", schedule=schedule, extra=extra)
    return load_config_bytes(text.encode(), Path("/nonexistent/rotator.toml")).policies[0]


def _shortest_accepted(schedule: str, window: str) -> Policy:
    """The policy with the shortest lifetime validation accepts (durations are whole seconds)."""
    probe = _load(schedule, window, timedelta(days=3650))
    needed = probe.schedule.longest_gap + GRACE
    with pytest.raises(PolicyFileError, match="tokens would expire while still in use"):
        _load(schedule, window, needed)
    policy = _load(schedule, window, needed + timedelta(seconds=1))
    assert policy.lifetime == needed + timedelta(seconds=1)
    return policy


@pytest.mark.parametrize(("schedule", "window", "rotations"), [
    ("1d", "02:00-04:00", 400),
    ("rate(1 day)", "08:00-21:00", 400),  # a window longer than half a day
    ("1d2h1m", "02:00-04:00", 400),  # nominally due a minute after the window closed
    ("30h", "23:00-01:00", 400),
    ("7d", "22:00-02:00", 120),
    ("1h", "02:00-04:00", 1500),  # several rotations per occurrence
    ("12h", "00:00-24:00", 800),
    ("0 4 * * *", "02:00-04:00", 400),  # cron: fires as the window closes
    ("0 3 * * 1", "02:00-04:00", 80),
])  # fmt: skip
def test_a_token_with_the_shortest_valid_lifetime_never_expires_while_current(
        schedule: str, window: str, rotations: int) -> None:
    policy = _shortest_accepted(schedule, window)
    sched = policy.schedule
    assert sched.window is not None
    rng = random.Random(f"{schedule}|{window}")
    for _ in range(3):  # from a first publication anywhere in the day (a bootstrap, inside the window or not)
        published = START + timedelta(seconds=rng.uniform(0, 86400))
        minted, took = published, timedelta(0)
        for _ in range(rotations):
            target = sched.next_due(published, published)
            assert target > published and sched.window.contains(target), (published, target)
            # The run starts at its target and mints; it publishes after PLAN, MINT, VERIFY (up to
            # a few minutes: a new token may answer 401 for a while).
            run = timedelta(seconds=rng.choice((0.2, 1.5, 30.0, rng.uniform(0.1, 300.0))))
            next_published = target + run
            expires = minted + policy.lifetime
            assert expires > next_published, (
                f"{schedule} in {window}: the token minted at {minted} expires at {expires}, while current "
                f"until {next_published}")
            # It lives through its grace too, short of at most the two runs' durations (margin is for those).
            assert expires >= next_published + GRACE - took - run, (minted, next_published)
            published, minted, took = next_published, target, run
