"""Unit tests of the core pieces: schedules, journal (migrations, leases), retry, secrets, registry."""

from __future__ import annotations

import base64
import json
import logging
import random
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from rotator.config import registry
from rotator.config.schedule import parse_duration, parse_schedule
from rotator.config.timefmt import parse_rfc3339, rfc3339, rfc3339_micro, rfc3339_or_none, rfc3339_seconds
from rotator.core.clock import FakeClock
from rotator.core.contracts import checked_settings
from rotator.core.errors import ConfigError, JournalError, LeaseBusy, PermanentError, TransientError, describe
from rotator.core.journal import Journal, Revocation, RunRecord, RunState, open_journal
from rotator.core.retry import RetryPolicy, call_with_retry, doubling
from rotator.core.secret import REDACTOR, Secret
from rotator.observe.logs import JsonFormatter, RedactingFilter

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


# -- schedules ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "seconds"), [
    ("30d", 30 * 86400), ("12h", 43200), ("90m", 5400), ("45s", 45), ("1d12h", 129600), ("2w", 1209600),
    ("rate(30 days)", 30 * 86400), ("rate(1 day)", 86400), ("rate(4 hours)", 14400),
])  # fmt: skip
def test_interval_schedules(text: str, seconds: int) -> None:
    schedule = parse_schedule(text)
    assert schedule.interval == timedelta(seconds=seconds)
    assert schedule.next_due(T0, T0) == T0 + timedelta(seconds=seconds)
    assert schedule.next_due(None, T0) == T0, "never rotated: due now"


def test_cron_schedule_is_utc_and_interval_is_the_longest_gap() -> None:
    schedule = parse_schedule("0 3 * * 1")  # Mondays 03:00 UTC
    assert schedule.interval == timedelta(days=7)
    nxt = schedule.next_due(T0, T0)  # 2026-03-01 is a Sunday
    assert nxt == datetime(2026, 3, 2, 3, 0, tzinfo=UTC)
    assert parse_schedule("0 3 * * 0").next_due(T0, T0) == datetime(2026, 3, 8, 3, 0, tzinfo=UTC)  # Sunday
    assert parse_schedule("0 3 * * 7").next_due(T0, T0) == datetime(2026, 3, 8, 3, 0, tzinfo=UTC)  # Sunday
    weekdays = parse_schedule("30 1 * * 1-5")
    assert weekdays.next_due(T0, T0) == datetime(2026, 3, 2, 1, 30, tzinfo=UTC)
    assert weekdays.interval == timedelta(days=3)  # Friday -> Monday
    monthly = parse_schedule("0 0 1 * *")
    assert monthly.interval == timedelta(days=31)


@pytest.mark.parametrize("bad", ["", "soon", "30x", "rate(0 days)", "rate(3 weeks)", "0 3 * *", "61 * * * *"])
def test_bad_schedules(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_schedule(bad)


def test_duration_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("3 days")


# -- durations (one type for the policy file, [daemon] and adapters: rotator/config/durations.py) -----------
def _duration_models() -> list[tuple[str, Any]]:
    """A model per place that declares duration settings, each validating one field."""
    from rotator.adapters.http.influxdb2 import InfluxDB2Settings
    from rotator.config.daemon_config import DaemonSettings
    from rotator.config.policy import Defaults

    def policy_grace(value: object) -> timedelta:
        return Defaults.model_validate({"grace": value}).grace  # type: ignore[no-any-return]

    def daemon_sweep(value: object) -> timedelta:
        return DaemonSettings.model_validate({"sweep_interval": value}).sweep_interval  # type: ignore[no-any-return]

    def influxdb2_delete_after(value: object) -> timedelta:
        settings = InfluxDB2Settings.model_validate(
            {"base_url": "https://influx.example:8086", "org_id": "0123456789abcdef", "credential": {"env": "T"},
             "permissions": [{"action": "read", "resource": {"type": "buckets"}}], "delete_after": value})
        return settings.delete_after  # type: ignore[no-any-return]

    return [("policy", policy_grace), ("daemon", daemon_sweep), ("influxdb2", influxdb2_delete_after)]


#: What docs/policy.md (Value types) accepts: a string of <number><unit> parts, units s m h d w.
ACCEPTED_DURATIONS = [
    ("90s", timedelta(seconds=90)), ("15m", timedelta(minutes=15)), ("12h", timedelta(hours=12)),
    ("30d", timedelta(days=30)), ("2w", timedelta(weeks=2)), ("1d12h", timedelta(days=1, hours=12)),
    ("36525d", timedelta(days=36525)),
]
#: ... and what it refuses: numbers (seconds? minutes?), ISO 8601, words, unknown units, > 100 years.
REFUSED_DURATIONS: list[object] = [5, 5.0, True, "PT5S", "P1D", "3 days", "30", "1y", "1ms", "-5m", "36526d", "", None]


@pytest.mark.parametrize(("text", "expected"), ACCEPTED_DURATIONS)
def test_every_duration_setting_accepts_the_documented_forms(text: str, expected: timedelta) -> None:
    for where, validate in _duration_models():
        assert validate(text) == expected, where


@pytest.mark.parametrize("bad", REFUSED_DURATIONS, ids=repr)
def test_every_duration_setting_refuses_the_same_forms(bad: object) -> None:
    """The three copies differed: [daemon] took a number as seconds; now every setting refuses one."""
    from pydantic import ValidationError

    for where, validate in _duration_models():
        with pytest.raises(ValidationError, match="duration") as caught:
            validate(bad)
        assert caught.value.error_count() == 1, where


def test_a_duration_is_written_back_in_the_policy_file_form() -> None:
    """JSON (a policy bundle, `rotator schema` defaults) writes durations as the file does, [daemon] too."""
    from rotator.config.daemon_config import DaemonSettings
    from rotator.config.policy import Defaults

    assert Defaults.model_validate({"grace": "1d12h"}).model_dump(mode="json")["grace"] == "1d12h"
    daemon = DaemonSettings.model_validate({"sweep_interval": "90s"}).model_dump(mode="json")
    assert (daemon["sweep_interval"], daemon["failure_backoff_max"]) == ("1m30s", "1h")
    schema = DaemonSettings.model_json_schema()["properties"]["misfire_grace"]
    assert schema["default"] == "5m" and schema["type"] == "string"


# -- time formats (rotator/config/timefmt.py) -----------------------------------------------------------
def test_rfc3339_forms() -> None:
    plus2 = timezone(timedelta(hours=2))
    at = datetime(2026, 3, 1, 14, 0, 5, tzinfo=plus2)
    assert rfc3339(at) == "2026-03-01T12:00:05Z"
    assert rfc3339(at.replace(microsecond=120)) == "2026-03-01T12:00:05.000120Z"
    assert rfc3339(datetime(2026, 3, 1, 12, 0, 5)) == "2026-03-01T12:00:05Z", "naive is UTC"
    assert rfc3339_or_none(None) is None and rfc3339_or_none(at) == rfc3339(at)
    assert rfc3339_seconds(at.replace(microsecond=999999)) == "2026-03-01T12:00:05Z"
    with pytest.raises(ValueError, match="naive"):
        rfc3339_seconds(datetime(2026, 3, 1))  # sent to an issuer: never guessed
    assert rfc3339_micro(at) == "2026-03-01T12:00:05.000000Z"
    for text in ("2026-03-01T12:00:05Z", "2026-03-01T14:00:05+02:00", "2026-03-01T12:00:05"):
        parsed = parse_rfc3339(text)
        assert parsed == datetime(2026, 3, 1, 12, 0, 5, tzinfo=UTC) and parsed.tzinfo == UTC
    with pytest.raises(ValueError):
        parse_rfc3339("yesterday")


def test_a_runs_store_versions_are_dumped_by_value_whatever_was_dumped_before() -> None:
    """The memo of the versions' JSON must not give one value's text for another that compares equal
    (1, 1.0 and True are one dict key): only text and null versions, what stores give, are kept."""
    from rotator.core.journal import _versions_text

    for versions in ({"v": "1"}, {"v": 1}, {"v": True}, {"v": 1.0}, {"v": None}, {"v": "1"}, {}, {"b": "2", "a": "1"}):
        assert _versions_text(versions) == json.dumps(versions, sort_keys=True), versions


def test_the_journals_fixed_width_time_text_and_its_reader_agree_with_strftime() -> None:
    """rfc3339_micro and the journal's reader (_dt) take fast paths (isoformat, fromisoformat with its
    Z); strftime/strptime are the reference, over zero and non-zero fractions, offsets and naive times."""
    from rotator.core.journal import _dt, ts

    rng = random.Random(12)
    for _ in range(2000):
        zone = rng.choice([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8)), None])
        at = datetime(rng.randint(1000, 9999), rng.randint(1, 12), rng.randint(1, 28), rng.randint(0, 23),
                      rng.randint(0, 59), rng.randint(0, 59), rng.choice([0, 1, rng.randint(0, 999999)]), tzinfo=zone)
        utc = at.replace(tzinfo=UTC) if zone is None else at.astimezone(UTC)
        text = utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        assert rfc3339_micro(at) == ts(utc) == text
        back = _dt(text)
        assert back == utc and back.tzinfo is UTC
        assert back == datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert rfc3339_micro(datetime.min) == "1-01-01T00:00:00.000000Z"  # strftime's form, unpadded, as before


# -- error messages and adapter settings ---------------------------------------------------------
def test_describe_adds_the_hint_and_redacts() -> None:
    value = "s3cr3t-token-value-0123456789"
    REDACTOR.pin("t-1", Secret(value))
    try:
        assert describe(PermanentError(f"bad {value}", hint="do x")) == "bad *** (fix: do x)"
    finally:
        REDACTOR.unpin("t-1")
    assert describe(TimeoutError()) == "TimeoutError"
    assert describe(ValueError("plain")) == "plain"


def test_checked_settings_names_the_adapter_and_both_types() -> None:
    class Settings:
        pass

    class Adapter:
        kind = "my-store"

    settings = Settings()
    assert checked_settings(Adapter, settings, Settings) is settings
    with pytest.raises(TypeError, match="^my-store needs Settings, got dict$"):
        checked_settings(Adapter, {}, Settings)


# -- notifications read the time from the clock they are given (rotator/observe/notify.py) ---------------
def test_notifications_take_their_times_from_the_given_clock(tmp_path: Path) -> None:
    from rotator.config.daemon_config import HookSettings, WebhookSettings
    from rotator.observe.notify import CommandHook, WebhookSender, audit_record, verify_signature

    fake = FakeClock(T0)
    assert audit_record({"step": "plan", "result": "ok"}, fake)["time"] == "2026-03-01T12:00:00Z"
    sent: list[Any] = []

    class Answer:
        status = 204

        def __enter__(self) -> Answer:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

    class Opener:
        def open(self, request: Any, timeout: float) -> Answer:
            sent.append(request)
            return Answer()

    (tmp_path / "key").write_text("whsec_" + base64.b64encode(b"k" * 24).decode())  # Standard Webhooks form
    webhook = WebhookSender(
        WebhookSettings.model_validate({"url": "https://hooks.example/r", "secret": {"file": "key"}}), tmp_path,
        opener=Opener(), clock=fake)  # type: ignore[arg-type]
    webhook.submit("failure", {"policy": "p"})
    assert webhook.close(10)
    (request,) = sent
    headers = dict(request.header_items())
    assert headers["Webhook-timestamp"] == str(int(T0.timestamp()))
    verify_signature(b"k" * 24, headers, request.data, now=T0.timestamp())  # signed with that time

    events: list[Any] = []
    hook = CommandHook(HookSettings.model_validate({"command": ["true"]}), tmp_path, emit=events.append, clock=fake)
    hook.submit({"policy": "p", "step": "published", "result": "ok"})
    assert hook.close(10)
    assert [(e["step"], e["result"], e["at"]) for e in events] == [("hook", "ok", T0)]


# -- journal -------------------------------------------------------------------------------------
@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    return open_journal(f"sqlite:///{tmp_path / 'j.db'}")


def _run(policy: str = "p", state: str = RunState.PLANNED) -> RunRecord:
    return RunRecord(run_id="r1", policy=policy, state=state, kind="rotate", started_at=T0, updated_at=T0)


def test_journal_round_trip_and_open_runs(journal: Journal) -> None:
    run = _run()
    journal.begin_run(run)
    journal.update_run(run, state=RunState.MINTED, new_token_id="t-new", planned_versions={"v": "3"})
    again = journal.get_run("r1")
    assert again is not None and again.state == RunState.MINTED and again.planned_versions == {"v": "3"}
    assert [r.run_id for r in journal.open_runs("p")] == ["r1"]
    journal.publish_and_schedule(run, Revocation("p", "t-old", "r1", "superseded", T0 + timedelta(hours=1),
                                                 "pending"), state=RunState.PUBLISHED, published_at=T0)
    assert journal.open_runs("p") == []
    assert journal.last_success("p").run_id == "r1"  # type: ignore[union-attr]
    assert journal.due_revocations(T0, "p") == []
    assert [r.token_id for r in journal.due_revocations(T0 + timedelta(hours=1), "p")] == ["t-old"]


def test_journal_migrates_once_and_refuses_a_newer_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'j.db'}"
    open_journal(url).close()
    open_journal(url).close()  # idempotent
    import sqlite3

    conn = sqlite3.connect(tmp_path / "j.db")
    from rotator.core.journal import _MIGRATIONS

    assert conn.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == len(_MIGRATIONS)  # one row each
    conn.execute("INSERT INTO schema_version VALUES (99)")
    conn.commit()
    conn.close()
    with pytest.raises(JournalError, match="newer than this rotator"):
        open_journal(url)


def test_journal_file_is_private(tmp_path: Path) -> None:
    open_journal(f"sqlite:///{tmp_path / 'j.db'}").close()
    assert (tmp_path / "j.db").stat().st_mode & 0o077 == 0


def test_lease_excludes_a_second_holder_until_it_expires(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'j.db'}"
    a, b = open_journal(url), open_journal(url)  # two processes' connections
    fence1 = a.acquire_lease("p", "A", timedelta(seconds=30), T0)
    with pytest.raises(LeaseBusy) as busy:
        b.acquire_lease("p", "B", timedelta(seconds=30), T0 + timedelta(seconds=10))
    assert busy.value.holder == "A"
    assert a.acquire_lease("p", "A", timedelta(seconds=30), T0 + timedelta(seconds=5)) == fence1  # renewal
    fence2 = b.acquire_lease("p", "B", timedelta(seconds=30), T0 + timedelta(seconds=40))  # A's expired
    assert fence2 == fence1 + 1
    b.release_lease("p", "B")
    assert a.lease_holder("p", T0 + timedelta(seconds=41)) is None


def test_unsupported_journal_url() -> None:
    with pytest.raises(ConfigError):
        open_journal("mysql://x")


# -- retry ---------------------------------------------------------------------------------------
def test_retry_is_bounded_with_growing_jittered_delays() -> None:
    clock = FakeClock(T0)
    calls = []

    def always_transient() -> None:
        calls.append(clock.now())
        raise TransientError("503")

    with pytest.raises(TransientError):
        call_with_retry(always_transient, what="x", policy=RetryPolicy(4, 1.0, 60.0), clock=clock,
                        rng=random.Random(1))
    gaps = [(b - a).total_seconds() for a, b in zip(calls, calls[1:], strict=False)]
    assert len(calls) == 4
    assert 0.5 <= gaps[0] <= 1 and 1 <= gaps[1] <= 2 and 2 <= gaps[2] <= 4


def test_retry_until_deadline_and_permanent_errors_are_not_retried() -> None:
    clock = FakeClock(T0)
    attempts = 0

    def activating() -> str:
        nonlocal attempts
        attempts += 1
        if clock.now() < T0 + timedelta(seconds=20):
            raise TransientError("401 not active yet")
        return "ok"

    assert call_with_retry(activating, what="verify", policy=RetryPolicy(3, 1.0, 4.0), clock=clock,
                           deadline=T0 + timedelta(minutes=1)) == "ok"
    assert attempts > 3, "a deadline allows more tries than `attempts`"

    def permanent() -> None:
        raise PermanentError("403")

    with pytest.raises(PermanentError):
        call_with_retry(permanent, what="x", policy=RetryPolicy(5), clock=clock)


# -- secrets and redaction -----------------------------------------------------------------------
def test_secret_never_prints_its_value() -> None:
    secret = Secret("M.V1.supersecretvalue1234567890")
    assert "supersecret" not in repr(secret) + str(secret) + f"{secret}" + f"{[secret]}"
    assert secret.reveal().startswith("M.V1.")
    import pickle

    with pytest.raises(TypeError):
        pickle.dumps(secret)


def test_redacting_filter_scrubs_messages_args_extras_and_tracebacks() -> None:
    secret = Secret("apiv3_leakyleakyleakyleaky")
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "value %s", (secret.reveal(),), None)
    record.extra_field = f"also {secret.reveal()}"
    try:
        raise RuntimeError(f"sdk said {secret.reveal()}")
    except RuntimeError:
        import sys

        record.exc_info = sys.exc_info()
    RedactingFilter().filter(record)
    line = JsonFormatter().format(record)
    assert secret.reveal() not in line
    assert "***" in line


# -- registry ------------------------------------------------------------------------------------
def test_registry_loads_built_ins_and_names_the_alternatives() -> None:
    assert "influxctl-management" in registry.available("issuer")
    assert registry.load("store", "vault-kv2").kind == "vault-kv2"  # type: ignore[attr-defined]
    with pytest.raises(ConfigError) as err:
        registry.load("store", "nope")
    assert "vault-kv2" in err.value.hint
    assert isinstance(err.value, LookupError)


def test_registry_rejects_a_class_that_breaks_the_contract() -> None:
    class NotAStore:
        pass

    with pytest.raises(TypeError, match="does not implement the contract"):
        registry.force_register("store", "broken", NotAStore)


def test_doubling_waits_stay_at_their_cap_whatever_the_count() -> None:
    """Failures in a row have no bound: the wait doubles up to its cap and stays there (a float times
    2**1024 or a timedelta times 2**44 raises OverflowError)."""
    assert [doubling(1.0, 30.0, n) for n in (1, 2, 3, 5, 6, 2000)] == [1.0, 2.0, 4.0, 16.0, 30.0, 30.0]
    minute, hour = timedelta(minutes=1), timedelta(hours=1)
    assert doubling(minute, hour, 3) == timedelta(minutes=4) and doubling(minute, hour, 10**6) == hour
    assert doubling(0.0, 30.0, 10**6) == 0.0 and doubling(5.0, 30.0, 0) == 5.0


# -- settings values -----------------------------------------------------------------------------
def test_settings_values_compare_hash_and_print_as_dataclass_made_methods_would() -> None:
    """SettingsValue's __eq__, __hash__ and __repr__ (inherited instead of compiled per class) agree
    with the ones @dataclass writes, including fields left out of comparison, hash or repr, a
    subclass and a frozen instance."""
    import dataclasses

    from rotator.core.credentials import SettingsValue

    def pair(base: type) -> tuple[type, type]:
        ns = {"__annotations__": {"a": "int", "b": "str", "c": "list[int]", "d": "int", "e": "int"}, "b": "x",
              "c": dataclasses.field(default=(), compare=False), "d": dataclasses.field(default=0, repr=False),
              "e": dataclasses.field(default=0, hash=False)}
        plain = dataclasses.dataclass(frozen=True)(type("Value", (), dict(ns)))
        inherited = dataclasses.dataclass(frozen=True, eq=False, repr=False)(type("Value", (base,), dict(ns)))
        return plain, inherited

    plain, inherited = pair(SettingsValue)
    cases = [(1, "x", (1,), 0, 0), (1, "x", (2,), 0, 7), (1, "y", (), 0, 0), (2, "x", (), 5, 0), (2, "x", (), 5, 3)]
    for left in cases:
        for right in cases:
            assert (inherited(*left) == inherited(*right)) == (plain(*left) == plain(*right))
            assert (inherited(*left) != inherited(*right)) == (plain(*left) != plain(*right))
        assert repr(inherited(*left)) == repr(plain(*left))
        assert hash(inherited(*left)) == hash(plain(*left))
    assert inherited(1) != plain(1) and inherited(1) != (1, "x", (), 0, 0)
    sub = type("Sub", (inherited,), {})
    assert sub(1) != inherited(1) and repr(sub(1)).startswith("Sub(a=1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        inherited(1).a = 2  # type: ignore[misc]


def test_a_credential_reference_drops_a_byte_order_mark_and_refuses_invisible_characters(tmp_path, monkeypatch):
    from rotator.core.credentials import CredentialRef
    from rotator.core.errors import ConfigError

    (tmp_path / "bom").write_text("\ufeff  tok-123\n", encoding="utf-8")
    assert CredentialRef(file=Path("bom")).resolve(tmp_path).reveal() == "tok-123"
    monkeypatch.setenv("ROTATOR_TEST_CRED", "\ufefftok-456")
    assert CredentialRef(env="ROTATOR_TEST_CRED").resolve().reveal() == "tok-456"
    monkeypatch.setenv("ROTATOR_TEST_CRED", "tok\u200b456")
    with pytest.raises(ConfigError, match=r"environment variable ROTATOR_TEST_CRED holds .*U\+200B, character 4"):
        CredentialRef(env="ROTATOR_TEST_CRED").resolve()
    (tmp_path / "hmac").write_text("QUJD" * 19 + "\n" + "REVG" * 3 + "\n")  # `base64` wraps at 76 columns
    with pytest.raises(ConfigError, match=r"hmac holds .*U\+000A, character 77") as caught:
        CredentialRef(file=Path("hmac")).resolve(tmp_path)
    assert "base64 -w0" in (caught.value.hint or "") and "QUJD" not in str(caught.value)
    (tmp_path / "latin1").write_bytes(b"tok-\xe9\xe9")
    with pytest.raises(ConfigError, match=r"latin1 is not UTF-8 text \(byte 5\)") as caught:
        CredentialRef(file=Path("latin1")).resolve(tmp_path)
    assert "tok" not in str(caught.value)


def test_token_info_value_matches_by_prefix_or_digest_and_says_none_when_the_listing_shows_nothing() -> None:
    import hashlib

    from rotator.core.contracts import TokenInfo

    value = Secret("M.V1.abcdEFGH0123456789")
    assert TokenInfo("id", "", value_prefix="M.V1.abcd").value_matches(value) is True
    assert TokenInfo("id", "", value_prefix="M.V1.abce").value_matches(value) is False
    digest = hashlib.sha256(b"M.V1.abcdEFGH0123456789").hexdigest()
    assert TokenInfo("id", "", value_sha256=digest).value_matches(value) is True
    assert TokenInfo("id", "", value_sha256=digest).value_matches(Secret("M.V1.abcdEFGH012345678X")) is False
    # the digest decides when both are shown; an empty prefix shows nothing
    assert TokenInfo("id", "", value_prefix="M.V1.abcd", value_sha256="0" * 64).value_matches(value) is False
    assert TokenInfo("id", "", value_prefix="").value_matches(value) is None
    assert TokenInfo("id", "").value_matches(value) is None
