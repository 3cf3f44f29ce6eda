"""A store payload's ``expires_at``, ``issuer`` and ``policy`` are what rotator writes, or the store's fault.

Before, any falsy ``expires_at`` (0, false, "", [], {}) read as "never expires", so an edit of the store
hid an expired token from sync's warning and from the Lambda's expiry check, while 1 and true were
refused; ``issuer`` and ``policy`` went through str(), so null became the policy named "None".
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from rotator.core.contracts import MALFORMED_HINT, TokenRecord
from rotator.core.errors import MalformedPayload

WHERE = "vault:http://127.0.0.1:8200/secret/data/influx/app"
TOKEN = "M.V1." + "s3cr3t" * 8


def _payload(**fields: Any) -> dict[str, Any]:
    base = {
        "token": TOKEN,
        "token_id": "8b2c5f9e-1d7a-4c3e-9f0b-2a6d4e8c1f37",
        "issuer": "influxctl-management",
        "policy": "mgmt-prod",
        "created_at": "2026-01-01T00:00:00Z",
        "expires_at": "2026-04-02T12:00:00Z",
    }
    return {**base, **fields}


def _refused(payload: dict[str, Any], key: str) -> str:
    with pytest.raises(MalformedPayload) as info:
        TokenRecord.from_payload(payload, where=WHERE)
    message = str(info.value)
    assert message.startswith(f"{WHERE}: payload key {key!r} "), message
    assert info.value.hint == MALFORMED_HINT
    assert TOKEN not in message + info.value.hint
    return message


@pytest.mark.parametrize(
    "value",
    [0, False, "", [], {}, 1, True, 0.0, [TOKEN], {"token": TOKEN}],
    ids=["zero", "false", "empty", "list", "object", "one", "true", "float", "list-token", "object-token"],
)
def test_an_expiry_that_is_not_text_is_refused_saying_how_to_write_one(value: object) -> None:
    message = _refused(_payload(expires_at=value), "expires_at")
    assert "not an RFC 3339 time" in message and "or null if the token never expires" in message, message


@pytest.mark.parametrize("value", ["0", "never", "2026-13-01T00:00:00Z", " "])
def test_an_expiry_string_that_is_not_a_time_is_refused_as_before(value: str) -> None:
    message = _refused(_payload(expires_at=value), "created_at/expires_at")
    assert "is not an RFC 3339 time" in message, message


NO_EXPIRY = [_payload(expires_at=None), {k: v for k, v in _payload().items() if k != "expires_at"}]


@pytest.mark.parametrize("payload", NO_EXPIRY, ids=["null", "missing"])
def test_a_null_or_missing_expiry_is_a_token_that_never_expires(payload: dict[str, Any]) -> None:
    assert TokenRecord.from_payload(payload, where=WHERE).expires_at is None


@pytest.mark.parametrize("text", ["2026-04-02T12:00:00Z", "2026-04-02T14:00:00+02:00", "2026-04-02T12:00:00.000000Z"])
def test_an_rfc_3339_expiry_is_read(text: str) -> None:
    record = TokenRecord.from_payload(_payload(expires_at=text), where=WHERE)
    assert record.expires_at == datetime(2026, 4, 2, 12, tzinfo=UTC)


def test_what_payload_writes_reads_back_the_same_with_and_without_an_expiry() -> None:
    for expires in (datetime(2026, 4, 2, 12, tzinfo=UTC), None):
        record = TokenRecord.from_payload(_payload(), where=WHERE)._replace(expires_at=expires)
        assert TokenRecord.from_payload(record.payload(), where=WHERE) == record


@pytest.mark.parametrize("key", ["issuer", "policy"])
@pytest.mark.parametrize(
    "value",
    [0, 5, 1.5, True, False, ["mgmt-prod"], {"name": "mgmt-prod"}, [TOKEN]],
    ids=["zero", "five", "float", "true", "false", "list", "object", "list-token"],
)
def test_an_issuer_or_policy_that_is_not_text_is_refused(key: str, value: object) -> None:
    message = _refused(_payload(**{key: value}), key)
    assert "not text" in message and "as a JSON string" in message, message


CONTROLLED = ["mgmt\nprod INFO forged", "a\x00b", "\x1b[31mred", "x\u2028y", "x\u202ey", "del\x7f"]


@pytest.mark.parametrize("key", ["issuer", "policy"])
@pytest.mark.parametrize("value", CONTROLLED, ids=["newline", "nul", "ansi", "u2028", "bidi", "del"])
def test_an_issuer_or_policy_with_a_control_character_is_refused_without_quoting_it(key: str, value: str) -> None:
    message = _refused(_payload(**{key: value}), key)
    assert "control character" in message, message
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or c in "\u2028\u2029\u202e" for c in message), message


@pytest.mark.parametrize("key", ["issuer", "policy"])
def test_a_token_value_in_the_issuer_or_policy_is_not_quoted(key: str) -> None:
    """A payload with its fields shuffled: the value must not reach the message, whatever it says."""
    message = _refused(_payload(**{key: {"token": TOKEN}}), key)
    assert "s3cr3t" not in message, message


@pytest.mark.parametrize("key", ["issuer", "policy"])
@pytest.mark.parametrize("how", ["missing", "null", "empty"])
def test_an_issuer_or_policy_not_named_reads_as_empty_text(key: str, how: str) -> None:
    """Not "None": that is a policy name. Callers read "" as not named (sync and the profile store skip
    the issuer check; the engine reads the store as holding another policy's token)."""
    payload = _payload()
    if how == "missing":
        del payload[key]
    else:
        payload[key] = None if how == "null" else ""
    assert getattr(TokenRecord.from_payload(payload, where=WHERE), key) == ""


def test_an_issuer_and_policy_as_rotator_writes_them_are_read() -> None:
    record = TokenRecord.from_payload(_payload(policy="Team token: ingest / eu (Ölçü)"), where=WHERE)
    assert (record.issuer, record.policy) == ("influxctl-management", "Team token: ingest / eu (Ölçü)")
