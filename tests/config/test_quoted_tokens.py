"""A message that quotes a rejected value never prints a piece of a token in it.

Messages cut a long value (``'ZGVmZ2hpamtsbW5vcHFy...oKGiow=='``) and every problem is masked; cut first,
the pieces no longer looked like a token and were printed, beside the "inline secrets are refused" problem
of the same key. And a store's ``name`` and an adapter's ``type``, which reach the journal, logs, metric
labels and status, were never searched for a token at all."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest

from rotator.config.policy import PolicyFileError, load_config
from rotator.config.schedule import parse_duration, parse_schedule
from rotator.runners import cli
from tests.config.policy_text import POLICY


def _random(seed: str, size: int) -> bytes:
    return b"".join(hashlib.sha256(f"{seed}{i}".encode()).digest() for i in range(size // 32 + 1))[:size]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


V2 = base64.b64encode(_random("v2", 64)).decode()  # an InfluxDB v2 token: 86 characters and "=="
HVS = "hvs.CAESI" + _b64url(_random("hvs", 66))  # a Vault service token as Vault prints it, 97 characters
HVS_45 = "hvs." + _b64url(_random("hvs45", 31))[:41]  # 45 characters: its last 8 were printed
JWT = ".".join(["eyJ" + _b64url(_random("header", 24)), "eyJ" + _b64url(_random("payload", 120)),
                _b64url(_random("signature", 256))])
TOKENS = {"v2": V2, "hvs": HVS, "hvs45": HVS_45, "jwt": JWT}

#: (place, how to write the token there): every key whose message quotes its value, cut
PLACES = {
    "grace": lambda t: POLICY.format(name="p1", schedule="30d", extra=f'grace = "{t}"'),
    "margin": lambda t: POLICY.format(name="p1", schedule="30d", extra=f'margin = "{t}"'),
    "lifetime": lambda t: POLICY.format(name="p1", schedule="30d", extra=f'lifetime = "{t}"'),
    "max_age": lambda t: POLICY.format(name="p1", schedule="30d", extra=f'max_age = "{t}"'),
    "verify_timeout": lambda t: POLICY.format(name="p1", schedule="30d", extra=f'verify_timeout = "{t}"'),
    "schedule": lambda t: POLICY.format(name="p1", schedule=t, extra=""),
    "schedule_rate": lambda t: POLICY.format(name="p1", schedule=f"rate({t})", extra=""),
    "window": lambda t: POLICY.format(name="p1", schedule="30d", extra=f'window = "{t}"'),
    "defaults.schedule": lambda t: f'[defaults]\nschedule = "{t}"\n' + POLICY.format(
        name="p1", schedule="30d", extra=""),
    "defaults.grace": lambda t: f'[defaults]\ngrace = "{t}"\n' + POLICY.format(name="p1", schedule="30d", extra=""),
    "rotator.lease_ttl": lambda t: f'[rotator]\nlease_ttl = "{t}"\n' + POLICY.format(
        name="p1", schedule="30d", extra=""),
    "rotator.keep_history": lambda t: f'[rotator]\nkeep_history = "{t}"\n' + POLICY.format(
        name="p1", schedule="30d", extra=""),
    "daemon.misfire_grace": lambda t: POLICY.format(name="p1", schedule="30d", extra="")
    + f'\n[daemon]\nmisfire_grace = "{t}"\n',
    # a hook's and a webhook's tables are searched by their own checks, which do not cover their durations
    "daemon.hooks.timeout": lambda t: POLICY.format(name="p1", schedule="30d", extra="")
    + f'\n[[daemon.hooks]]\ncommand = ["true"]\ntimeout = "{t}"\n',
    "daemon.webhooks.backoff": lambda t: POLICY.format(name="p1", schedule="30d", extra="")
    + f'\n[[daemon.webhooks]]\nurl = "https://h.example/x"\nsecret = {{ env = "K" }}\nbackoff = "{t}"\n',
    "daemon.hooks.policies": lambda t: POLICY.format(name="p1", schedule="30d", extra="")
    + f'\n[[daemon.hooks]]\ncommand = ["true"]\npolicies = ["{t}"]\n',
    "store.name": lambda t: POLICY.format(name="p1", schedule="30d", extra="").replace(
        'type = "influxctl-profile"', f'type = "influxctl-profile"\nname = "{t}"'),
    "store.type": lambda t: POLICY.format(name="p1", schedule="30d", extra="").replace(
        'type = "influxctl-profile"', f'type = "{t}"'),
    "issuer.type": lambda t: POLICY.format(name="p1", schedule="30d", extra="").replace(
        'type = "influxctl-management"', f'type = "{t}"'),
}


#: places whose tables have checks of their own, which search no duration for a token: masked all the same
_UNSCANNED = {"daemon.hooks.timeout", "daemon.webhooks.backoff"}


def _pieces(token: str) -> list[str]:
    return [token[i : i + 6] for i in range(len(token) - 5)]


def _leaked(token: str, text: str) -> list[str]:
    return [piece for piece in _pieces(token) if piece in text]


def test_the_samples_have_the_shapes_they_stand_for() -> None:
    assert len(V2) == 88 and V2.endswith("==") and len(HVS) > 90 and len(HVS_45) == 45
    assert all(not _leaked(token, POLICY) for token in TOKENS.values())  # no piece is in the policy by chance


@pytest.mark.parametrize("token", TOKENS.values(), ids=TOKENS.keys())
@pytest.mark.parametrize("place", PLACES, ids=PLACES.keys())
def test_no_piece_of_a_token_is_quoted(tmp_path: Path, capsys: pytest.CaptureFixture[str], place: str,
                                       token: str) -> None:
    path = tmp_path / "rotator.toml"
    path.write_text(PLACES[place](token))
    with pytest.raises(PolicyFileError) as caught:
        load_config(path)
    assert not _leaked(token, str(caught.value)), str(caught.value)
    if place not in _UNSCANNED:
        assert any("looks like a token" in problem.message for problem in caught.value.problems), str(caught.value)

    capsys.readouterr()
    try:
        code = cli.main(["validate", "--output", "json", str(path)])
    except SystemExit as stop:
        code = int(stop.code or 0)
    out, err = capsys.readouterr()
    assert code != 0 and not json.loads(out)["valid"]
    assert not _leaked(token, out + err), out + err


@pytest.mark.parametrize("token", TOKENS.values(), ids=TOKENS.keys())
@pytest.mark.parametrize(("key", "where"), [
    ("grace", "policy[0] 'p1'.grace"),
    ("schedule", "policy[0] 'p1'.schedule"),
    ("defaults.schedule", "defaults.schedule"),
    ("rotator.lease_ttl", "rotator.lease_ttl"),
    ("daemon.misfire_grace", "daemon.misfire_grace"),
    ("store.name", "policy[0] 'p1'.store[0].name"),
    ("store.type", "policy[0] 'p1'.store[0].type"),
    ("issuer.type", "policy[0] 'p1'.issuer.type"),
])  # fmt: skip
def test_a_key_holding_a_token_has_that_one_problem(tmp_path: Path, key: str, where: str, token: str) -> None:
    """Its type or parse problem beside it would only quote the token again."""
    path = tmp_path / "rotator.toml"
    path.write_text(PLACES[key](token))
    with pytest.raises(PolicyFileError) as caught:
        load_config(path)
    assert [(p.where, p.message) for p in caught.value.problems if p.where == where] == [
        (where, "inline secrets are refused: the value looks like a token")], str(caught.value)


@pytest.mark.parametrize("token", TOKENS.values(), ids=TOKENS.keys())
@pytest.mark.parametrize("text", ["{}", "1d {}", "{} 1d", "rate({})"])
def test_duration_and_schedule_errors_mask_before_cutting(text: str, token: str) -> None:
    """Where no policy file's scan ran first (the daemon's hooks, a Python caller)."""
    for parse in (parse_duration, parse_schedule):
        with pytest.raises(ValueError) as caught:
            parse(text.format(token))
        assert not _leaked(token, str(caught.value)), str(caught.value)


@pytest.mark.parametrize("name", ["s.1a2b3c4d5e6f7g8h9i0j1k2l", "AKIAIOSFODNN7EXAMPLE", HVS_45, HVS, V2, JWT],
                         ids=["s.", "AKIA", "hvs45", "hvs", "v2", "jwt"])
def test_a_store_name_that_looks_like_a_token_is_refused(tmp_path: Path, name: str) -> None:
    """As a policy's name is: a store name reaches the journal, logs, metric labels and status."""
    path = tmp_path / "rotator.toml"
    path.write_text(PLACES["store.name"](name))
    with pytest.raises(PolicyFileError) as caught:
        load_config(path)
    assert [(p.where, p.message) for p in caught.value.problems] == [
        ("policy[0] 'p1'.store[0].name", "inline secrets are refused: the value looks like a token")]
    assert name not in str(caught.value) and not _leaked(name, str(caught.value))


@pytest.mark.parametrize("table", ["issuer", "store"])
def test_an_adapter_type_that_looks_like_a_token_is_refused_as_such(tmp_path: Path, table: str) -> None:
    path = tmp_path / "rotator.toml"
    path.write_text(PLACES[f"{table}.type"]("AKIAIOSFODNN7EXAMPLE"))
    with pytest.raises(PolicyFileError) as caught:
        load_config(path)
    where = "policy[0] 'p1'." + ("issuer" if table == "issuer" else "store[0]") + ".type"
    assert (where, "inline secrets are refused: the value looks like a token") in [
        (p.where, p.message) for p in caught.value.problems]
    assert "AKIAIOSFODNN7EXAMPLE" not in str(caught.value)


def test_a_store_name_like_a_word_still_passes(tmp_path: Path) -> None:
    """Store names of letters, digits, '.', '_' and '-', a Vault-like or an AWS-like word among them."""
    path = tmp_path / "rotator.toml"
    path.write_text(PLACES["store.name"]("s.primary-vault"))
    assert [b.name for b in load_config(path).policies[0].stores] == ["s.primary-vault"]
