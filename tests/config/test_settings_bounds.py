"""Lower and upper bounds of settings whose extreme values validated and then did harm: a
``keep_history`` of one minute (a month meant) pruned the whole audit history, a ``lease_ttl`` of 0s
lets every rotator take a policy at once, and a description's format spec rendered hundreds of MB."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from rotator.config.policy import MAX_DESCRIPTION, PolicyFileError, load_config
from rotator.core.revocation_rule import carries_tag
from tests.config.policy_text import POLICY


def _file(tmp_path: Path, rotator: str = "", schedule: str = "30d", extra: str = "", policies: int = 1) -> Path:
    path = tmp_path / "rotator.toml"
    head = f"[rotator]\n{rotator}\n" if rotator else ""
    path.write_text(head + "".join(POLICY.format(name=f"p{i}", schedule=schedule, extra=extra)
                                   for i in range(policies)))  # fmt: skip
    return path


def _problems(path: Path) -> list[str]:
    with pytest.raises(PolicyFileError) as info:
        load_config(path)
    return [str(p) for p in info.value.problems]


# -- lease_ttl ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ttl", ["0s", "1s"])
def test_a_lease_shorter_than_two_seconds_is_refused(tmp_path: Path, ttl: str) -> None:
    assert _problems(_file(tmp_path, f'lease_ttl = "{ttl}"')) == [
        f"rotator.lease_ttl: is {ttl}: a lease must last at least 2s; keep it well above verify_timeout plus a "
        "few retries (default '15m')"]


@pytest.mark.parametrize("ttl", ["2s", "30s", "15m"])  # 2s: the fencing tests' leases (tests/core/test_fencing.py)
def test_short_leases_of_tests_still_load(tmp_path: Path, ttl: str) -> None:
    assert load_config(_file(tmp_path, f'lease_ttl = "{ttl}"')).settings.lease_ttl.total_seconds() >= 2


# -- keep_history -----------------------------------------------------------------------------------------
def test_a_history_of_one_minute_is_refused_with_a_hint_about_months(tmp_path: Path) -> None:
    assert _problems(_file(tmp_path, 'keep_history = "1m"')) == [
        "rotator.keep_history: is 1m, shorter than one day: `rotator prune` and the daemon would prune the journal's "
        "history of nearly every rotation (fix: write at least 1d (default 400d, a yearly audit period with margin); "
        "'m' is minutes: write months in days, e.g. '180d')"]


@pytest.mark.parametrize(("keep", "schedule"), [("0s", "1s"), ("12h", "30d"), ("23h", "1d")])
def test_a_history_shorter_than_a_day_is_refused(tmp_path: Path, keep: str, schedule: str) -> None:
    problems = _problems(_file(tmp_path, f'keep_history = "{keep}"', schedule=schedule))
    assert len(problems) == 1 and problems[0].startswith("rotator.keep_history: is ")


def test_one_policy_that_rotates_every_second_does_not_lower_the_floor_of_the_others(tmp_path: Path) -> None:
    path = _file(tmp_path, 'keep_history = "1m"', schedule="1s", policies=2)
    path.write_text(path.read_text().replace('schedule = "1s"', 'schedule = "30d"', 1))
    assert [p.split(",")[0] for p in _problems(path)] == ["rotator.keep_history: is 1m"]


def test_a_history_shorter_than_a_day_without_policies_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "rotator.toml"
    path.write_text('[rotator]\nkeep_history = "1h"\n')
    assert [p.split(":")[0] for p in _problems(path)] == ["rotator.keep_history"]


@pytest.mark.parametrize(("keep", "schedule"), [
    ("1d", "30d"), ("400d", "0 3 * * 1"),
    ("2s", "1s"),  # a daemon that rotates every second and prunes at once (tests/runners/test_daemon.py)
    ("1h", "1h"),
])  # fmt: skip
def test_a_history_of_a_day_or_of_the_longest_interval_loads(tmp_path: Path, keep: str, schedule: str) -> None:
    load_config(_file(tmp_path, f'keep_history = "{keep}"', schedule=schedule))


def test_the_floor_of_sub_daily_schedules_is_the_longest_of_their_intervals(tmp_path: Path) -> None:
    path = _file(tmp_path, 'keep_history = "30m"')
    path.write_text(path.read_text().replace('schedule = "30d"', 'schedule = "1h"'))
    assert _problems(path) == [
        "rotator.keep_history: is 30m, shorter than the longest schedule interval (1h): `rotator prune` and the "
        "daemon would prune the journal's history of nearly every rotation (fix: write at least 1h (default 400d, a "
        "yearly audit period with margin); 'm' is minutes: write months in days, e.g. '180d')"]


# -- description ----------------------------------------------------------------------------------------
def test_a_description_format_spec_is_refused_before_anything_is_rendered(tmp_path: Path) -> None:
    """``{policy:>50000000}`` rendered a 50 MB string at validation (the review: 420 MB for 400000000)."""
    path = _file(tmp_path, extra='description = "{tag} {policy:>50000000}"')
    tracemalloc.start()
    try:
        problems = _problems(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10_000_000, f"{peak:,} bytes"
    assert problems == [
        "policy[0] 'p0'.description: may only use the fields {tag} and {policy}, as they are (no format spec such as "
        "{policy:>10}, no conversion or attribute); write a literal brace as {{ or }}"]


@pytest.mark.parametrize("description", [
    "{tag} {policy:>10}", "{tag!r}", "{tag} {tag[0]}", "{tag.upper}", "{tag} {policy.__class__}", "{tag:{policy}}",
    "{tag} {}", "{tag} {0}", "{tag} {run}", "{tag} }", "{tag} {",
])  # fmt: skip
def test_a_description_may_use_tag_and_policy_as_they_are_only(tmp_path: Path, description: str) -> None:
    problems = _problems(_file(tmp_path, extra=f'description = "{description}"'))
    assert problems == ["policy[0] 'p0'.description: may only use the fields {tag} and {policy}, as they are "
                        "(no format spec such as {policy:>10}, no conversion or attribute); write a literal brace as "
                        "{{ or }}"], problems


def test_an_escaped_tag_is_no_tag(tmp_path: Path) -> None:
    """``{{tag}}`` renders as the text "{tag}": a token minted with it could not be found by its run's tag."""
    assert _problems(_file(tmp_path, extra='description = "{{tag}} by rotator"')) == [
        "policy[0] 'p0'.description: must contain {tag} so a token whose value was lost can be found and revoked"]


def test_a_description_is_bounded_once_rendered(tmp_path: Path) -> None:
    longest = MAX_DESCRIPTION - 136 - 63 - 1  # {tag} renders to 136 characters at most, {policy} to 63
    fits = "x" * longest
    config = load_config(_file(tmp_path, extra=f'description = "{fits}{{tag}} {{policy}}"'))
    assert len(config.policies[0].token_description("r" * 64)) <= MAX_DESCRIPTION
    assert _problems(_file(tmp_path, extra=f'description = "{fits}x{{tag}} {{policy}}"')) == [
        f"policy[0] 'p0'.description: can render to {MAX_DESCRIPTION + 1} characters; keep it to {MAX_DESCRIPTION} "
        "(with {tag} at 136 and {policy} at 63 at most)"]
    huge = "x" * 5_000_000
    assert _problems(_file(tmp_path, extra=f'description = "{{tag}} {huge}"')) == [
        f"policy[0] 'p0'.description: is {5_000_006:,} characters long; keep it to {MAX_DESCRIPTION}".replace(",", "")]


@pytest.mark.parametrize("description", ["{tag}", "influxdb automation ({tag})", "{tag} by rotator for {policy}",
                                         "{{literal}} {tag}"])
def test_documented_descriptions_still_load(tmp_path: Path, description: str) -> None:
    config = load_config(_file(tmp_path, extra=f'description = "{description}"'))
    assert "rotator:p0:r1" in config.policies[0].token_description("r1")


@pytest.mark.parametrize("description", ["{tag}-auto", "{tag}_by_rotator", "{tag}x", "{tag}{policy}", "{tag}0"])
def test_a_tag_run_into_a_word_is_refused(tmp_path: Path, description: str) -> None:
    """The revocation rule finds a tag only as a whole word (``rotator:p:ab`` is not in ``rotator:p:abc``):
    ``{tag}-auto`` validated, and then every replaced token was refused its revocation (exit 4)."""
    assert _problems(_file(tmp_path, extra=f'description = "{description}"')) == [
        "policy[0] 'p0'.description: must have {tag} as a word of its own: follow it by a space, a '.', ':' or '/', "
        "or end the text with it (a letter, digit, '-' or '_' right after it hides the tag from the revocation "
        "check, and no replaced token would be revoked)"]


@pytest.mark.parametrize("description", ["{tag}", "{tag} auto", "{tag}.", "{tag}:{policy}", "({tag})",
                                         "{policy}-{tag}", "{tag}x {tag}", "{tag}/{policy}"])
def test_every_description_that_loads_carries_its_tag_for_the_revocation_rule(tmp_path: Path,
                                                                               description: str) -> None:
    policy = load_config(_file(tmp_path, extra=f'description = "{description}"')).policies[0]
    for run_id in ("r1", "0" * 16, "a" * 64):
        assert carries_tag(policy.token_description(run_id), f"rotator:p0:{run_id}")
