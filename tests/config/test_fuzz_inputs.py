"""Generated inputs (hypothesis) against every parser of untrusted input (issue 11, "a fuzz suite").

Targets: the policy loader (TOML text and parsed structures), hook/webhook configuration,
influxctl output parsers, store payloads (Vault KV v2, Secrets Manager) and Lambda events.
The oracle is the same everywhere: only the project's documented errors escape (PolicyFileError /
ConfigError for a policy file, a pydantic ValidationError for a settings model, IssuerOutputError,
PermanentError and the other RotatorErrors for adapters and the Lambda), no message repeats a
token-looking value, and a policy file with a credential inline is never accepted.

Default run: ``FUZZ_EXAMPLES`` (200) examples per target, a few seconds each. The long run
(docs/security.md quotes its counts):

    ROTATOR_FUZZ=long .venv/bin/python -m pytest -n 0 -s tests/config/test_fuzz_inputs.py

runs 10,000 examples per target (``ROTATOR_FUZZ_EXAMPLES=N`` sets another number) and prints
how many inputs each target received and how each ended.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from rotator.adapters.aws.secretsmanager import AwsSecretsManagerSettings, AwsSecretsManagerStore
from rotator.adapters.influxctl.common import (
    parse_json_array,
    parse_timestamp,
    table_value,
    token_from_output,
    token_info,
)
from rotator.config.daemon_config import DaemonSettings
from rotator.config.inline_secrets import find_token, is_secret_name, string_values, url_problem
from rotator.config.policy import PolicyFileError, load_config, parse_config
from rotator.core.contracts import AdapterContext, TokenRecord
from rotator.core.errors import ConfigError, RotatorError
from rotator.runners.lambda_rotation import handle
from tests.adapters.test_vault_kv2_errors import FakeVault
from tests.adapters.test_vault_kv2_errors import make_store as make_vault_store

LONG = os.environ.get("ROTATOR_FUZZ") == "long"
FUZZ_EXAMPLES = int(os.environ.get("ROTATOR_FUZZ_EXAMPLES", "10000" if LONG else "200"))
FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,  # a cold import or a GC pause is not a hang; the per-test timeout catches hangs
    derandomize=not LONG,  # the default run is reproducible; the long run explores
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
pytestmark = pytest.mark.timeout(3600 if LONG else 300)

#: target -> outcome -> count (printed at the end of the module with -s).
COUNTS: defaultdict[str, Counter[str]] = defaultdict(Counter)
STARTED: dict[str, float] = {}
LAST: dict[str, float] = {}
WORK = Path(tempfile.mkdtemp(prefix="rotator-fuzz-"))


@pytest.fixture(scope="module", autouse=True)
def _print_counts() -> Iterator[None]:
    yield
    lines = [f"fuzz: {FUZZ_EXAMPLES} examples asked per target (ROTATOR_FUZZ={os.environ.get('ROTATOR_FUZZ', '')})"]
    for target, outcomes in COUNTS.items():
        total = sum(outcomes.values())
        took = LAST[target] - STARTED[target]
        detail = ", ".join(f"{k} {v}" for k, v in outcomes.most_common())
        lines.append(f"  {target}: {total} inputs in {took:.1f} s ({detail})")
    print("\n" + "\n".join(lines))


def _count(target: str, outcome: str) -> None:
    LAST[target] = time.monotonic()
    STARTED.setdefault(target, LAST[target])
    COUNTS[target][outcome] += 1


# -- strategies ---------------------------------------------------------------------------------------

_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
tokens = st.one_of(
    st.text(_ALNUM + "-_", min_size=8, max_size=40).map(lambda s: "M.V1." + s),
    st.text(_ALNUM + "_-", min_size=8, max_size=40).map(lambda s: "apiv3_" + s),
    st.text(_ALNUM, min_size=20, max_size=90).map(lambda s: "hvs." + s),
    st.text(_ALNUM, min_size=24, max_size=24).map(lambda s: "s." + s),
    st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", min_size=16, max_size=16).map(lambda s: "AKIA" + s),
    st.text(_ALNUM + "-_", min_size=86, max_size=86).map(lambda s: s + "=="),
)
durations = st.builds(lambda n, u: f"{n}{u}", st.integers(0, 10**40), st.sampled_from("smhdw"))
huge_digits = st.integers(1, 6000).map(lambda n: "9" * n)
words = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["30d", "1h", "rate(30 days)", "0 3 * * 1", "cron(0 3 ? * MON *)", "02:00-04:00", "{tag}",
                     "https://h.example/x", "postgresql://u@h:abc/db", "sqlite:///tmp/x.db", "..", "-", ""]),
    durations, huge_digits, tokens,
)  # fmt: skip
scalars = st.one_of(words, st.integers(), st.integers(-(10**50), 10**50), st.booleans(), st.floats(allow_nan=True))
keys = st.one_of(
    st.sampled_from(["name", "type", "schedule", "grace", "lifetime", "margin", "window", "description", "adopt",
                     "issuer", "store", "url", "path", "mount", "auth", "method", "token", "file", "env", "profile",
                     "host", "product", "secret_id", "region", "command", "timeout", "hooks", "webhooks", "secret",
                     "journal", "lease_ttl", "retry", "attempts", "listen", "seconds", "nanos", "id"]),
    st.text(min_size=1, max_size=12),
)  # fmt: skip
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4), max_leaves=12
)


def _nest(value: Any, depth: int, as_list: bool) -> Any:
    for _ in range(depth):
        value = [value] if as_list else {"a": value}
    return value


deep_values = st.builds(_nest, json_values, st.integers(0, 3500), st.booleans())
any_values = st.one_of(json_values, json_values, deep_values)


def _deep_text(inner: Any, depth: int, as_list: bool) -> str:
    """JSON nested ``depth`` deep, written without recursion (json.dumps would overflow first)."""
    core = json.dumps(inner)
    return "[" * depth + core + "]" * depth if as_list else '{"a": ' * depth + core + "}" * depth


json_texts = st.one_of(json_values.map(json.dumps), st.builds(_deep_text, json_values, st.integers(0, 5000),
                                                               st.booleans()))


def _valid_policy(hooks: list[dict[str, Any]] | None = None, webhooks: list[dict[str, Any]] | None = None,
                  journal: str = "rotator-journal.db") -> dict[str, Any]:  # fmt: skip
    data: dict[str, Any] = {
        "rotator": {"journal": journal, "lease_ttl": "15m"},
        "defaults": {"grace": "1d"},
        "policy": [{
            "name": "p1", "schedule": "30d",
            "issuer": {"type": "influxctl-management", "profile": {"product": "clustered", "host": "h.example"}},
            "store": [{"type": "vault-kv2", "url": "https://vault.example:8200", "path": "influx/mgmt",
                       "auth": {"method": "token", "token": {"env": "VAULT_TOKEN"}}}],
        }],
    }  # fmt: skip
    if hooks or webhooks:
        data["daemon"] = {"hooks": hooks or [], "webhooks": webhooks or []}
    return data


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if len(prefix) > 8:  # a generated deep value: its top is enough to mutate
        return found
    if isinstance(node, dict):
        for k, v in node.items():
            found += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found += _paths(v, (*prefix, i))
    return found


def _set(data: Any, path: tuple[Any, ...], value: Any, delete: bool) -> None:
    node = data
    for step in path[:-1]:
        node = node[step]
    if delete and isinstance(node, dict):
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value


@st.composite
def mutated_policies(draw: st.DrawFn) -> dict[str, Any]:
    data = _valid_policy(hooks=[{"command": ["systemctl", "reload", "app"]}],
                         webhooks=[{"url": "https://h.example/x", "secret": {"env": "K"}}])  # fmt: skip
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(data)
        path = draw(st.sampled_from(paths))
        if draw(st.booleans()) and isinstance(path[-1], str):  # a new key beside an existing one
            path = (*path[:-1], draw(keys))
        try:
            _set(data, path, draw(any_values), delete=draw(st.integers(0, 5)) == 0)
        except (TypeError, KeyError, IndexError):
            pass  # the path went through a value an earlier mutation replaced
    return data


def _toml_key(key: str) -> str:
    return json.dumps(key)


def _toml_value(value: Any, depth: int = 0) -> str:
    if depth > 100:  # deep TOML has its own generator (policy_texts, kind 1)
        return "[]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)  # inf and nan are TOML too
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v, depth + 1) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(str(k))} = {_toml_value(v, depth + 1)}" for k, v in value.items()) + "}"
    return '""'


def to_toml(data: Mapping[str, Any]) -> str:
    return "\n".join(f"{_toml_key(str(k))} = {_toml_value(v)}" for k, v in data.items()) + "\n"


VALID_TEXT = to_toml(_valid_policy())


@st.composite
def policy_texts(draw: st.DrawFn) -> str:
    kind = draw(st.integers(0, 4))
    if kind == 0:
        return draw(st.text(max_size=300))
    if kind == 1:  # TOML nested thousands deep, as arrays or inline tables
        depth = draw(st.integers(0, 5000))
        return "x = " + ("[" * depth + "]" * depth if draw(st.booleans()) else "{a = " * depth + "1" + "}" * depth)
    if kind == 2:  # a number of thousands of digits somewhere
        return VALID_TEXT + f"\n[zz]\nn = {draw(huge_digits)}\n"
    text = VALID_TEXT if kind == 3 else to_toml(draw(mutated_policies()))
    for _ in range(draw(st.integers(0, 3))):  # splice junk in
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.text(max_size=8)) + text[at + draw(st.integers(0, 4)):]
    return text


# -- oracles --------------------------------------------------------------------------------------------


def _no_token_in(text: str, where: str) -> None:
    assert not find_token(text), f"{where} repeats a token-looking value: {text[:300]!r}"


def _accepted_holds_no_secret(data: Mapping[str, Any]) -> None:
    """A policy file that validated: no credential anywhere in it."""
    for where, text in string_values(data, limit=100_000):
        assert not find_token(text), f"accepted a token-looking value at {where}"
        if "://" in text:
            assert url_problem(text, "") is None, f"accepted a URL with credentials at {where}"
    daemon = data.get("daemon") or {}
    for hook in daemon.get("hooks") or []:
        for name, value in (hook.get("env") or {}).items():
            assert not (is_secret_name(name) and value), f"accepted hook variable {name} with a value"


def _check_policy(target: str, data: Mapping[str, Any]) -> None:
    try:
        parse_config(data, WORK / "policy.toml")
    except PolicyFileError as exc:
        _count(target, "refused")
        _no_token_in(str(exc), "PolicyFileError")
    else:
        _count(target, "accepted")
        _accepted_holds_no_secret(data)


# -- targets -------------------------------------------------------------------------------------------


@FUZZ
@given(text=policy_texts())
def test_fuzz_policy_loader_on_toml_text(text: str) -> None:
    path = WORK / "fuzz.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_config(path)
    except PolicyFileError as exc:
        _count("policy file text", "refused")
        _no_token_in(str(exc), "PolicyFileError")
    except ConfigError as exc:  # e.g. not UTF-8 after surrogatepass
        _count("policy file text", "config error")
        _no_token_in(str(exc), "ConfigError")
    else:
        _count("policy file text", "accepted")


@FUZZ
@given(data=st.one_of(mutated_policies(), st.dictionaries(keys, any_values, max_size=4)))
def test_fuzz_policy_loader_on_structures(data: dict[str, Any]) -> None:
    _check_policy("policy structures", data)


_INJECTIONS: list[Callable[[str], dict[str, Any]]] = [
    lambda s: _valid_policy(hooks=[{"command": ["reload"], "env": {"VAULT_TOKEN": s}}]),
    lambda s: _valid_policy(hooks=[{"command": ["reload"], "env": {"BAO_TOKEN": s}}]),
    lambda s: _valid_policy(hooks=[{"command": ["reload"], "env": {"AWS_SECRET_ACCESS_KEY": s}}]),
    lambda s: _valid_policy(hooks=[{"command": ["reload"], "env": {"MY_API_KEY": s}}]),
    lambda s: _valid_policy(hooks=[{"command": ["reload", f"--token={s}"]}]),
    lambda s: _valid_policy(hooks=[{"command": ["reload", "--password", s]}]),
    lambda s: _valid_policy(hooks=[{"command": ["curl", "-H", f"Authorization: Bearer {s}"]}]),
    lambda s: _valid_policy(webhooks=[{"url": f"https://bot:{s}@h.example/x", "secret": {"env": "K"}}]),
    lambda s: _valid_policy(webhooks=[{"url": f"https://h.example/x?token={s}", "secret": {"env": "K"}}]),
    lambda s: _valid_policy(webhooks=[{"url": f"https://h.example/x?sig={s}", "secret": {"env": "K"}}]),
    lambda s: _valid_policy(journal=f"postgresql://rotator:{s}@db.example/rotator"),
    lambda s: _valid_policy(journal=f"postgresql://rotator@db.example/rotator?password={s}"),
]
# Passwords chosen to be URL- and TOML-safe, so the only reason to refuse them is that they are secrets.
passwords = st.one_of(tokens, st.text(_ALNUM + "-_.~", min_size=4, max_size=30))


@FUZZ
@given(where=st.integers(0, len(_INJECTIONS) - 1), secret=passwords, via_text=st.booleans())
def test_fuzz_an_injected_inline_secret_is_always_refused(where: int, secret: str, via_text: bool) -> None:
    data = _INJECTIONS[where](secret)
    with pytest.raises(PolicyFileError) as caught:
        if via_text:
            path = WORK / "inject.toml"
            path.write_text(to_toml(data))
            load_config(path)
        else:
            parse_config(data, WORK / "inject.toml")
    assert "inline secrets are refused" in str(caught.value)
    assert secret not in str(caught.value) and secret not in caught.value.hint
    _count("inline secrets injected", "refused")


hook_tables = st.fixed_dictionaries(
    {"command": st.lists(st.one_of(words, tokens.map(lambda t: f"--token={t}")), min_size=1, max_size=5)},
    optional={"env": st.dictionaries(st.one_of(keys, st.sampled_from(["VAULT_TOKEN", "PGPASSWORD", "TOKEN_FILE"])),
                                     st.one_of(words, tokens), max_size=4),
              "timeout": st.one_of(durations, words), "policies": st.lists(words, max_size=3)},
)  # fmt: skip
webhook_tables = st.fixed_dictionaries(
    {"url": st.one_of(words, st.builds(lambda u, p, q: f"https://{u}{p}h.example/x?{q}", words,
                                       st.sampled_from(["", ":", "@"]), words)),
     "secret": st.one_of(st.just({"env": "K"}), words, json_values)},
    optional={"on": st.lists(words, max_size=3), "timeout": st.one_of(durations, words), "attempts": st.integers()},
)  # fmt: skip


@FUZZ
@given(hooks=st.lists(hook_tables, max_size=2), webhooks=st.lists(webhook_tables, max_size=2))
def test_fuzz_hook_and_webhook_configuration(hooks: list[dict[str, Any]], webhooks: list[dict[str, Any]]) -> None:
    try:
        DaemonSettings.model_validate({"hooks": hooks, "webhooks": webhooks})
    except ValidationError:
        # pydantic's raw messages may quote a refused value (a duration's message does); what a user sees
        # goes through the policy loader, whose messages are checked below.
        _count("hooks and webhooks", "refused")
    else:
        _count("hooks and webhooks", "accepted")
        _accepted_holds_no_secret({"daemon": {"hooks": hooks, "webhooks": webhooks}})
    _check_policy("hooks and webhooks in a policy file", _valid_policy(hooks=hooks, webhooks=webhooks))


def _timestamp_values() -> st.SearchStrategy[Any]:
    seconds = st.one_of(st.integers(), st.integers(-(10**30), 10**30), huge_digits, words)
    return st.one_of(
        st.fixed_dictionaries({}, optional={"seconds": seconds, "nanos": st.one_of(st.integers(), words)}),
        words, scalars, st.none(),
    )


listing_items = st.fixed_dictionaries(
    {}, optional={"id": st.one_of(words, st.uuids().map(str)), "description": words, "created_at": _timestamp_values(),
                  "expires_at": _timestamp_values(), "revoked_at": _timestamp_values()},
)  # fmt: skip
influxctl_stdout = st.one_of(
    st.text(max_size=200),
    st.lists(listing_items, max_size=4).map(json.dumps),
    json_texts,
    st.builds(lambda k, v, t: f"+----+\n| {k} | {v} |\n+----+\n{t}\n", words, words, st.one_of(tokens, words)),
)


@FUZZ
@given(stdout=influxctl_stdout, key=st.sampled_from(["id", "ID", "token", ""]))
def test_fuzz_influxctl_output_parsers(stdout: str, key: str) -> None:
    command = "management list"
    outcomes = []
    for parse in (
        lambda: [token_info(i, item, command) for i, item in enumerate(parse_json_array(stdout, command))],
        lambda: token_from_output(stdout, "management create"),
        lambda: table_value(stdout, key),
    ):
        try:
            parse()
            outcomes.append("parsed")
        except RotatorError as exc:
            outcomes.append("refused")
            message = str(exc) + exc.hint
            for token in (t for t in stdout.split() if find_token(t)):
                assert token not in message, "an influxctl parser error repeats a token"
    _count("influxctl output", "/".join(outcomes))


UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: The protobuf Timestamp seconds a datetime holds: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
FIRST_SECOND, LAST_SECOND = -62_135_596_800, 253_402_300_799
#: How influxctl says "no time" (facts file 1.5: keys omitted when unset, epoch zero in table mode).
NO_TIME = [None, {}, {"seconds": 0}, {"nanos": 0}, {"seconds": 0, "nanos": 0}, {"seconds": "0"},
           "1970-01-01T00:00:00Z", "1970-01-01T00:00:00+00:00", "1970-01-01T01:00:00+01:00"]


def _instant(value: Any) -> datetime | None | str:
    """What parse_timestamp must give for ``value`` where that is plain: None for "no time", the UTC
    instant of a ``{seconds, nanos}`` of ints in range; "?" for anything else (refused or a string)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        return "?"
    seconds, nanos = value.get("seconds", 0), value.get("nanos", 0)
    if type(seconds) is not int or type(nanos) is not int:  # noqa: E721 - a bool is no int here
        return "?"
    if not (FIRST_SECOND <= seconds <= LAST_SECOND and 0 <= nanos < 1_000_000_000):
        return "?"
    if seconds == 0 and nanos == 0:
        return None
    return UNIX_EPOCH + timedelta(seconds=seconds, microseconds=nanos // 1000)


@FUZZ
@given(value=_timestamp_values())
@example(value={"seconds": 1710273527, "nanos": 622095000})
@example(value={"seconds": -1, "nanos": 999_999_999})
@example(value={"seconds": LAST_SECOND, "nanos": 999_999_999})
@example(value={"seconds": "--5"})  # passed str.isdigit() after lstrip("-"): int() raised ValueError
@example(value={"seconds": "\u00b2"})  # a superscript two is a digit to str.isdigit(), not to int()
def test_fuzz_influxctl_timestamps(value: Any) -> None:
    expected = _instant(value)
    try:
        parsed = parse_timestamp(value, "item 0 `created_at`", "management list")
    except RotatorError:
        assert expected == "?", f"{value!r} is a plain timestamp, refused"
        _count("influxctl timestamps", "refused")
        return
    _count("influxctl timestamps", "parsed")
    assert parsed is None or (parsed.tzinfo is not None and parsed.utcoffset() == timedelta(0)), parsed
    if expected != "?":
        assert parsed == expected, value


@FUZZ
@given(seconds=st.integers(FIRST_SECOND, LAST_SECOND), nanos=st.one_of(st.none(), st.integers(0, 999_999_999)),
       as_text=st.booleans())
@example(seconds=1, nanos=None, as_text=False)
@example(seconds=FIRST_SECOND, nanos=0, as_text=True)
def test_fuzz_influxctl_timestamps_in_range_are_that_instant(seconds: int, nanos: int | None, as_text: bool) -> None:
    """Any int64 seconds a datetime can hold (protojson writes it as a string: both are read), with or
    without nanos, is exactly that instant, in UTC; seconds and nanos both 0 is "no time"."""
    value: dict[str, Any] = {"seconds": str(seconds) if as_text else seconds}
    if nanos is not None:
        value["nanos"] = nanos
    parsed = parse_timestamp(value, "item 0 `expires_at`", "management list")
    if seconds == 0 and not nanos:
        assert parsed is None
        return
    assert parsed is not None and parsed.tzinfo is not None and parsed.utcoffset() == timedelta(0)
    assert parsed == UNIX_EPOCH + timedelta(seconds=seconds, microseconds=(nanos or 0) // 1000)


@pytest.mark.parametrize("seconds", ["--5", "\u00b2", "\u0661\u0662", "+12", " 12", "12 ", "1" * 20])
def test_influxctl_seconds_text_that_is_not_plain_ascii_digits_is_refused(seconds: str) -> None:
    """"١٢" (Arabic-Indic digits) was read as 12; "--5" and "²" escaped as a bare ValueError."""
    with pytest.raises(RotatorError, match="is not a {seconds, nanos} timestamp"):
        parse_timestamp({"seconds": seconds}, "item 0 `created_at`", "management list")


@pytest.mark.parametrize("value", NO_TIME, ids=repr)
def test_influxctl_no_time_values_are_none(value: Any) -> None:
    assert parse_timestamp(value, "item 0 `revoked_at`", "management list") is None


@pytest.mark.parametrize(("value", "shown"), [
    ({"seconds": 1710273527, "nanos": 622095000}, "2024-03-12T19:58:47.622095+00:00"),
    ({"seconds": "1710273809", "nanos": 948178000}, "2024-03-12T20:03:29.948178+00:00"),
    ({"seconds": 1710273809}, "2024-03-12T20:03:29+00:00"),
    ("2024-03-12T21:03:29+01:00", "2024-03-12T20:03:29+00:00"),
])  # fmt: skip
def test_influxctl_timestamps_of_the_docs_example_are_the_times_its_table_shows(value: Any, shown: str) -> None:
    """The facts file's 1.5 example: Client1's JSON created_at/revoked_at are the table's CREATED AT and
    REVOKED AT (2024-03-12T19:58:47Z, 2024-03-12T20:03:29Z)."""
    parsed = parse_timestamp(value, "item 0 `created_at`", "management list")
    assert parsed is not None and parsed.isoformat() == shown


#: Valid RFC 3339 at the ends of datetime's range: the first two overflow when moved to UTC (fromisoformat
#: accepts them, astimezone raised OverflowError through every store's read_current).
BOUNDARY_TIMES = ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59Z",
                  "0001-01-01T00:00:00Z", "9999-12-31T23:59:59+01:00", "0001-01-01T00:00:00-01:00"]


def _payload(created_at: str, expires_at: str) -> str:
    """A rotator payload, well-formed but for its times."""
    return json.dumps({"token": "M.V1.abcdefghijklmnopqrstuv", "token_id": "t1", "issuer": "influxctl-management",
                       "policy": "fuzz", "created_at": created_at, "expires_at": expires_at})


def _payload_texts(objects_only: bool = False) -> st.SearchStrategy[str]:
    times = st.sampled_from(BOUNDARY_TIMES)
    record = st.fixed_dictionaries(
        {}, optional={"token": st.one_of(tokens, words, scalars), "token_id": st.one_of(words, scalars),
                      "created_at": st.one_of(words, scalars, st.just("2026-01-01T00:00:00Z"), times),
                      "expires_at": st.one_of(words, scalars, st.none(), times), "issuer": json_values,
                      "policy": json_values},
    )  # fmt: skip
    with_deep = st.builds(lambda r, deep: json.dumps({**r, "x": "DEEP"}).replace('"DEEP"', deep), record,
                          json_texts)  # fmt: skip
    if objects_only:  # Vault's KV v2 `data` is always a JSON object
        return st.one_of(record.map(json.dumps), with_deep)
    return st.one_of(record.map(json.dumps), with_deep, json_texts, st.text(max_size=100))


class _JsonVault(FakeVault):
    """The payload arrives as JSON text and is decoded as hvac decodes it (json.loads)."""

    text: str = "{}"

    def read_latest(self, mount: str, path: str) -> Mapping[str, Any]:
        # read_current's own read: FakeVault's would hand it versions[-1], never the generated text
        answer = super().read_latest(mount, path)
        return {"data": {**answer["data"], "data": json.loads(self.text)}}

    def read_version(self, mount: str, path: str, version: int) -> Mapping[str, Any]:
        self._enter("read_version")
        return {"data": {"data": json.loads(self.text)}}


@FUZZ
@given(text=_payload_texts(objects_only=True), managed=st.booleans())
@example(text=_payload("2026-01-01T00:00:00Z", BOUNDARY_TIMES[0]), managed=True)
@example(text=_payload("2026-01-01T00:00:00Z", BOUNDARY_TIMES[0]), managed=False)
@example(text=_payload(BOUNDARY_TIMES[1], "2027-01-01T00:00:00Z"), managed=True)
@example(text=_payload(BOUNDARY_TIMES[1], "2027-01-01T00:00:00Z"), managed=False)
def test_fuzz_vault_payloads(text: str, managed: bool) -> None:
    fake = _JsonVault(versions=[{}], custom_metadata={"managed-by": "rotator"} if managed else {})
    fake.text = text
    store = make_vault_store(fake, WORK)
    try:
        state = store.read_current()
        _count("vault payloads", "record" if state.record else "no record")
    except RotatorError as exc:
        _count("vault payloads", "refused")
        _no_token_in(str(exc) + exc.hint, "vault store error")
        assert managed, f"a payload of a secret rotator does not manage was refused ({type(exc).__name__})"


class _FakeSecretsManager:
    """One secret, whose current value is ``text``; every write is refused."""

    ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:fuzz/influx-AbCdEf"

    def __init__(self, text: str, tags: Mapping[str, str], *, pending: bool = True) -> None:
        self.text, self.tags = text, tags
        self.stages = {"v-cur": ["AWSCURRENT"], **({"v-pend": ["AWSPENDING"]} if pending else {})}

    def describe_secret(self, **kw: Any) -> Mapping[str, Any]:
        if kw.get("SecretId") not in (self.ARN, "fuzz/influx"):
            raise _client_error("ResourceNotFoundException", "DescribeSecret")
        return {"ARN": self.ARN, "Name": "fuzz/influx", "RotationEnabled": True,
                "Tags": [{"Key": k, "Value": v} for k, v in self.tags.items()],
                "VersionIdsToStages": self.stages}  # fmt: skip

    def get_secret_value(self, **kw: Any) -> Mapping[str, Any]:
        # ARN and Name as Secrets Manager always sends them: an answer without them is refused as not its own.
        version = "v-cur" if kw.get("VersionStage") == "AWSCURRENT" or kw.get("VersionId") == "v-cur" else "v-pend"
        return {"ARN": self.ARN, "Name": "fuzz/influx", "VersionId": version, "SecretString": self.text}

    def __getattr__(self, name: str) -> Callable[..., Any]:
        def refuse(**kw: Any) -> Any:
            raise _client_error("AccessDeniedException", name)

        return refuse


def _client_error(code: str, operation: str) -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError({"Error": {"Code": code, "Message": "fuzz"}}, operation)


@FUZZ
@given(text=_payload_texts(), managed=st.booleans())
@example(text=_payload("2026-01-01T00:00:00Z", BOUNDARY_TIMES[0]), managed=True)
@example(text=_payload("2026-01-01T00:00:00Z", BOUNDARY_TIMES[0]), managed=False)
@example(text=_payload(BOUNDARY_TIMES[1], "2027-01-01T00:00:00Z"), managed=True)
@example(text=_payload(BOUNDARY_TIMES[1], "2027-01-01T00:00:00Z"), managed=False)
def test_fuzz_secrets_manager_payloads(text: str, managed: bool) -> None:
    # No rotation under way (AWSPENDING elsewhere would stop read_current before the payload is parsed).
    api = _FakeSecretsManager(text, {"managed-by": "rotator"} if managed else {}, pending=False)
    model = AwsSecretsManagerSettings(secret_id=_FakeSecretsManager.ARN, region="eu-west-1", max_attempts=1)
    store = AwsSecretsManagerStore.from_config(model, AdapterContext(policy="fuzz"), client_factory=lambda s, p: api)
    try:
        state = store.read_current()
        _count("secrets manager payloads", "record" if state.record else "no record")
    except RotatorError as exc:
        _count("secrets manager payloads", "refused")
        _no_token_in(str(exc) + exc.hint, "secrets manager store error")
        assert managed, f"a payload of a secret rotator does not manage was refused ({type(exc).__name__})"
    try:
        TokenRecord.from_payload(json.loads(text), where="fuzz")
    except (ValueError, RecursionError):
        pass  # not JSON: what read_stage turns into "no payload"; covered above
    except RotatorError as exc:
        _no_token_in(str(exc), "TokenRecord.from_payload error")


LAMBDA_POLICY = WORK / "lambda.toml"
LAMBDA_POLICY.write_text(f"""
[rotator.retry]
attempts = 1
[[policy]]
name = "fuzz"
schedule = "30d"
grace = "1h"
[policy.issuer]
type = "influxctl-management"
influxctl = "{WORK / 'no-such-influxctl'}"
[policy.issuer.profile]
product = "clustered"
host = "cluster.test.invalid"
[[policy.store]]
type = "aws-secretsmanager"
secret_id = "{_FakeSecretsManager.ARN}"
region = "eu-west-1"
""")

_STEPS = ["createSecret", "setSecret", "testSecret", "finishSecret"]
lambda_events = st.one_of(
    st.fixed_dictionaries(  # well-formed: reaches the steps, which read the (generated) payloads
        {"Step": st.sampled_from(_STEPS), "SecretId": st.just(_FakeSecretsManager.ARN),
         "ClientRequestToken": st.sampled_from(["v-cur", "v-pend"])},
    ),
    st.just({"action": "revoke-expired"}),
    st.fixed_dictionaries(
        {},
        optional={
            "Step": st.one_of(st.sampled_from(["createSecret", "setSecret", "testSecret", "finishSecret",
                                               "create_secret"]), words, json_values),
            "SecretId": st.one_of(st.sampled_from([_FakeSecretsManager.ARN, "fuzz/influx"]), words, json_values),
            "ClientRequestToken": st.one_of(st.sampled_from(["v-cur", "v-pend"]), words, json_values),
            "RotationToken": st.one_of(words, json_values),
            "action": st.one_of(st.just("revoke-expired"), words, json_values),
        },
    ),
    st.dictionaries(keys, json_values, max_size=4),
    json_values,
)  # fmt: skip


@FUZZ
@given(event=lambda_events, depth=st.one_of(st.just(0), st.integers(0, 3500)), as_list=st.booleans(),
       text=_payload_texts(), revoke_tag=st.one_of(st.none(), words))  # fmt: skip
def test_fuzz_lambda_events(event: Any, depth: int, as_list: bool, text: str, revoke_tag: str | None) -> None:
    # Nested here, not in the strategy: hypothesis's own printer would overflow on a deep argument.
    # `action` is left shallow here: test_a_deep_lambda_action_is_an_error_not_a_crash covers it.
    if depth and isinstance(event, dict) and [k for k in event if k != "action"]:
        key = sorted((k for k in event if k != "action"), key=str)[0]
        event = {**event, key: _nest(event[key], depth, as_list)}
    elif depth:
        event = _nest(event, depth, as_list)
    tags = {"managed-by": "rotator", "policy": "fuzz"}
    if revoke_tag is not None:
        tags["rotator:revoke:0b2d4c06-1f6c-4d7e-9d1e-3f8a2b7c9e10"] = revoke_tag
    try:
        handle(event, None, client=_FakeSecretsManager(text, tags), config_path=LAMBDA_POLICY)  # type: ignore[arg-type]
        _count("lambda events", "done")
    except RotatorError as exc:
        _count("lambda events", type(exc).__name__)
        # The stored token never appears in an error (event fields are no secret: a message may name them).
        try:
            stored = json.loads(text).get("token")
        except (ValueError, RecursionError, AttributeError):
            stored = None
        in_event = any(stored in f"{at} {s}" for at, s in string_values(event)) if isinstance(stored, str) else True
        if isinstance(stored, str) and len(stored) >= 8 and not in_event:  # a message may name the event's text
            assert stored not in str(exc) + exc.hint, "a Lambda error repeats the stored token"


def test_a_deep_lambda_action_is_an_error_not_a_crash() -> None:
    event = {"action": _nest("revoke-expired", 3000, False)}
    with pytest.raises(RotatorError):
        handle(event, None, client=_FakeSecretsManager("{}", {}), config_path=LAMBDA_POLICY)  # type: ignore[arg-type]


@pytest.mark.parametrize(("parse", "text"), [
    ("parse_duration", "1d" * 1_000_000),
    ("parse_duration", " 1 d" * 500_000),
    ("parse_schedule", "1d" * 1_000_000),
    ("parse_schedule", "0," * 1_000_000 + "0 * * * *"),
])  # fmt: skip
def test_a_huge_duration_or_schedule_is_refused_before_it_costs_memory(parse: str, text: str) -> None:
    """``grace = "1d1d1d..."`` of 2 MB peaked at ~370 MB (the duration regex's repeated group, then
    ``findall``): a bad ConfigMap edit under `watch` took the daemon past its 256Mi limit."""
    import tracemalloc

    from rotator.config import schedule

    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="is not a (duration|schedule): it is [0-9,]+ characters long") as caught:
            getattr(schedule, parse)(text)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000, f"{parse} peaked at {peak / 1e6:.1f} MB"
    assert len(str(caught.value)) < 400 and "write " in str(caught.value)
