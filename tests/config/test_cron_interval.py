"""A cron schedule's interval: the longest gap between two fires over a full year of them (and more
for a schedule that fires on few days), counted from now. Token lifetimes, the lifetime check and the
default max_age are built from it, so an interval shorter than a real gap lets tokens expire months
before their rotation."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from rotator.config.policy import PolicyFileError, load_config
from rotator.config.schedule import (
    _CRONTAB_FIELDS,
    NoNextDue,
    _crontab_days,
    _trigger,
    _trigger_days,
    parse_schedule,
)

NOW = datetime(2026, 12, 6, 4, 0, tzinfo=UTC)


def _fires(expr: str, start: datetime, until: datetime) -> list[datetime]:
    """Every fire from ``start`` to the first one after ``until``, one APScheduler call each."""
    trigger = _trigger(expr)
    fires: list[datetime] = []
    moment, previous = start, None
    while not fires or fires[-1] <= until:
        fire = trigger.get_next_fire_time(previous, moment)
        if fire is None:
            break
        fires.append(fire)
        previous, moment = fire, fire + timedelta(seconds=1)
    return fires


def _longest(fires: list[datetime]) -> timedelta:
    return max(b - a for a, b in zip(fires, fires[1:], strict=False))


@pytest.mark.parametrize(("expr", "interval"), [
    ("0 3 1-14 * *", timedelta(days=18)),  # 14 January to 1 February
    ("0 3 * 1-6 *", timedelta(days=185)),  # 30 June to 1 January
    # the last Monday of June to the first of January: 24 June to 6 January in a year whose 30 June is a Sunday
    ("cron(0 3 ? JAN-JUN MON *)", timedelta(days=196)),
    ("cron(0 3 1-14 * ? *)", timedelta(days=18)),
    ("0 9-17 * * 1-5", timedelta(days=2, hours=16)),  # Friday 17:00 to Monday 09:00
    ("0 3,15 * * *", timedelta(hours=12)),
    ("* * * * *", timedelta(minutes=1)),
    ("0 3 29 2 *", timedelta(days=4 * 365 + 1)),  # leap days
    ("cron(0 3 29 2 ? *)", timedelta(days=4 * 365 + 1)),
    ("cron(0 3 ? * MON 2027,2030)", timedelta(days=742)),  # Monday 27 December 2027 to Monday 7 January 2030
])  # fmt: skip
def test_the_interval_is_the_longest_gap_of_a_whole_year_and_its_wrap(expr: str, interval: timedelta) -> None:
    assert parse_schedule(expr, now=NOW).interval == interval


@pytest.mark.parametrize(("expr", "last"), [
    ("0 3 1-14 * *", datetime(2027, 1, 14, 3, tzinfo=UTC)),
    ("0 3 * 1-6 *", datetime(2027, 6, 30, 3, tzinfo=UTC)),
    ("cron(0 3 ? JAN-JUN MON *)", datetime(2027, 6, 28, 3, tzinfo=UTC)),
])
def test_no_rotation_comes_later_than_the_interval(expr: str, last: datetime) -> None:
    """The review's examples: the next rotation after ``last`` is 18, 185 and 189 days later, and the
    interval (14 fires from 1 January 2026: 1, 1 and 7 days) must not be shorter."""
    schedule = parse_schedule(expr, now=NOW)
    assert schedule.next_due(last, last) - last <= schedule.interval


def test_generated_crontab_expressions_are_never_given_an_interval_below_a_real_gap() -> None:
    """Soundness on seeded random expressions of one or two times a day: every gap between two
    fires over a year and its wrap, found by asking APScheduler fire by fire, fits in the interval."""
    rng = random.Random(20261206)
    checked = 0
    while checked < 25:
        day_fields = [_random_field(rng, *spec[1:3]) for spec in _CRONTAB_FIELDS[2:]]
        expr = f"{rng.randint(0, 59)} {rng.choice(['3', '3,15'])} " + " ".join(day_fields)
        try:
            interval = parse_schedule(expr, now=NOW).interval
        except ValueError:
            continue  # fires too rarely (31 February)
        fires = _fires(expr, NOW, NOW + timedelta(days=370))
        if len(fires) > 1:
            assert interval >= _longest(fires), expr
            checked += 1


def _random_field(rng: random.Random, low: int, high: int) -> str:
    kind = rng.random()
    if kind < 0.3:
        return "*"
    first = rng.randint(low, high - 1)
    if kind < 0.5:
        return str(first)
    last = rng.randint(first + 1, high)
    return f"{first}-{last}" if kind < 0.8 else f"*/{rng.randint(2, max(2, (high - low) // 2))}"


def test_the_crontab_calendar_agrees_with_apscheduler_day_by_day() -> None:
    """The interval of a 5-field expression walks its days in Python (a year of APScheduler calls
    would be slow); they are the days APScheduler fires on, both day rules and leap years included."""
    rng = random.Random(61220)
    starts = (date(2026, 12, 6), date(2028, 2, 20), date(2099, 12, 1))
    for _ in range(120):
        expr = "0 3 " + " ".join(_random_field(rng, *spec[1:3]) for spec in _CRONTAB_FIELDS[2:])
        for start in starts:
            ours, theirs = _crontab_days(expr, start), _trigger_days(_trigger(expr), start)
            assert [d for _, d in zip(range(15), ours, strict=False)] == \
                [d for _, d in zip(range(15), theirs, strict=False)], (expr, start)


def test_the_interval_is_counted_from_now() -> None:
    """Mondays in 2026 and 2030: more than three years apart seen from 2026, a week once 2030 is near."""
    expr = "cron(0 3 ? * MON 2026,2030)"
    assert parse_schedule(expr, now=datetime(2026, 6, 1, tzinfo=UTC)).interval > timedelta(days=3 * 365)
    assert parse_schedule(expr, now=datetime(2029, 6, 1, tzinfo=UTC)).interval == timedelta(days=7)


@pytest.mark.parametrize("expr", ["cron(0 3 1 * ? 2030)", "cron(0 3 1 * ? 2040)"])
def test_a_schedule_whose_years_are_all_ahead_is_accepted(expr: str) -> None:
    schedule = parse_schedule(expr, now=NOW)
    assert schedule.interval == timedelta(days=31)
    assert schedule.next_due(NOW, NOW).year == int(expr[-5:-1])


@pytest.mark.parametrize("expr", [
    "cron(0 3 1 * ? 2025)",  # ended
    "cron(0 3 1 * ? 2026)",  # ended on 1 December
    "cron(0 3 15 * ? 2026)",  # one fire left, on 15 December
])  # fmt: skip
def test_a_schedule_that_ends_keeps_the_interval_of_its_years(expr: str) -> None:
    """Loading accepts a schedule that has ended (docs/policy.md): its policy has no next due time,
    which `validate`, `plan` and the daemon report for that policy alone."""
    schedule = parse_schedule(expr, now=NOW)
    assert schedule.interval == timedelta(days=31)
    last = datetime(2026, 12, 16, tzinfo=UTC)
    with pytest.raises(NoNextDue):
        schedule.next_due(last, last)


@pytest.mark.parametrize(("expr", "message"), [
    ("0 3 31 2 *", "fires fewer than twice in all"),
    ("cron(0 3 30 2 ? *)", "fires fewer than twice in all"),
    ("cron(0 3 1 1 ? 2025)", "fires fewer than twice in all"),  # once, in the past
    ("cron(0 3 1 1 ? 2030)", "fires fewer than twice in all"),  # once, ahead
    ("cron(0 3 1 1 ? 2030,2199)", "more than 36525 days \\(100 years\\) apart"),
])  # fmt: skip
def test_a_schedule_that_cannot_rotate_says_why(expr: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"fires too rarely to rotate on: .*{message}"):
        parse_schedule(expr, now=NOW)


POLICY = """
[[policy]]
name = "{name}"
schedule = "{schedule}"
{extra}
[policy.issuer]
type = "influxctl-management"
[policy.issuer.profile]
product = "clustered"
host = "h.example"
[[policy.store]]
type = "influxctl-profile"
config = "influxctl/config.toml"
"""


def _file(tmp_path: Path, *policies: tuple[str, str, str]) -> Path:
    path = tmp_path / "rotator.toml"
    path.write_text("".join(POLICY.format(name=n, schedule=s, extra=e) for n, s, e in policies))
    return path


def test_a_file_with_a_schedule_that_has_ended_still_loads(tmp_path: Path) -> None:
    """The review's two.toml: one policy's years have passed; the file loads (the daemon and `plan`
    go on with the other policies) and only that policy has no next due time."""
    config = load_config(_file(tmp_path, ("mgmt", "30d", ""), ("other", "cron(0 3 1 * ? 2025)", "")))
    mgmt, other = config.policies
    assert other.schedule.interval == timedelta(days=31)
    now = datetime.now(UTC)
    assert mgmt.schedule.next_due(now, now) == now + timedelta(days=30)
    with pytest.raises(NoNextDue):
        other.schedule.next_due(now, now)


def test_a_file_with_a_schedule_whose_years_are_ahead_loads(tmp_path: Path) -> None:
    config = load_config(_file(tmp_path, ("later", "cron(0 3 1 * ? 2190)", "")))
    assert config.policies[0].schedule.interval == timedelta(days=31)


def test_validate_refuses_a_lifetime_shorter_than_the_gap_between_bunched_fires(tmp_path: Path) -> None:
    """January to June: tokens of 30 days would expire five months before the rotation in January."""
    with pytest.raises(PolicyFileError) as info:
        load_config(_file(tmp_path, ("mgmt", "0 3 * 1-6 *", 'grace = "1h"\nlifetime = "30d"')))
    assert [str(p) for p in info.value.problems] == [
        "policy[0] 'mgmt'.lifetime: is not longer than schedule interval + grace: tokens would expire while still "
        "in use (fix: raise lifetime above 185d1h or shorten schedule/grace)"]
    config = load_config(_file(tmp_path, ("mgmt", "0 3 * 1-6 *", 'grace = "1h"')))
    assert config.policies[0].lifetime == timedelta(days=185 + 1, hours=1)  # + the default margin of 1 day
    assert config.policies[0].max_age == timedelta(days=185 + 1, hours=1)


def test_a_policy_never_rotated_has_no_next_due_time_once_its_schedule_ended() -> None:
    """"Due at once" holds for a schedule that still fires: one whose years have passed has none."""
    with pytest.raises(NoNextDue, match="never fires again"):
        parse_schedule("cron(0 3 1 * ? 2025)", now=NOW).next_due(None, NOW)
    assert parse_schedule("cron(0 3 1 * ? 2027)", now=NOW).next_due(None, NOW) == NOW
    assert parse_schedule("0 3 1 * *", now=NOW).next_due(None, NOW) == NOW


def test_plan_reports_the_policy_whose_schedule_ended_and_shows_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The review's `rotator plan -c two.toml`: not a whole file refused for "fires too rarely", but the
    other policy's row, then that policy's problem (exit 2), as docs/policy.md says."""
    from rotator.core.journal import open_journal
    from rotator.runners import cli

    monkeypatch.setenv("ROTATOR_CACHE_DIR", "")
    path = _file(tmp_path, ("mgmt", "30d", ""), ("other", "cron(0 3 1 * ? 2025)", ""))
    open_journal(f"sqlite:///{tmp_path / 'rotator-journal.db'}").close()  # plan only reads one
    try:
        code = cli.main(["plan", "-c", str(path)])
    except SystemExit as stop:
        code = int(stop.code or 0)
    out, err = capsys.readouterr()
    assert code == 2, out + err
    assert out.startswith("mgmt: no token yet") and "other" not in out
    assert "policy 'other': its schedule has no next due time: cron expression 'cron(0 3 1 * ? 2025)' never " \
           "fires again" in err
    assert "fires too rarely" not in err
