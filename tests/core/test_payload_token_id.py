"""A store payload's ``token_id`` that no issuer writes is the store's fault, said at the store.

Before, any non-empty string passed: a NUL reached PostgreSQL and the rotation failed blaming the
journal; a newline or an escape sequence travelled on into logs and terminals.
"""

from __future__ import annotations

from typing import Any

import pytest

from rotator.core.contracts import MALFORMED_HINT, TokenRecord
from rotator.core.errors import MalformedPayload
from tests.core.test_revocation_trust import _edit_payload
from tests.harness import make_scenario

WHERE = "vault:http://127.0.0.1:8200/secret/data/influx/app"


def _payload(token_id: str) -> dict[str, Any]:
    return {"token": "v" * 40, "token_id": token_id, "issuer": "influxctl-management", "policy": "p",
            "created_at": "2026-01-01T00:00:00Z", "expires_at": None}


@pytest.mark.parametrize("token_id", [
    "abc\x00def", "a\nb INFO forged line", "a\rb", "\x1b[31mred\x1b[0m", "tab\there", "del\x7f", "c1\x9b2J",
    "next\x85line", "ls\u2028x", "ps\u2029x", "x" * 257, "x" * 5000,
], ids=["nul", "newline", "cr", "ansi", "tab", "del", "csi", "nel", "u2028", "u2029", "257", "5000"])
def test_a_token_id_no_issuer_writes_is_refused_naming_the_store_and_key(token_id: str) -> None:
    with pytest.raises(MalformedPayload) as info:
        TokenRecord.from_payload(_payload(token_id), where=WHERE)
    message = str(info.value)
    assert message.startswith(f"{WHERE}: payload key 'token_id' "), message
    assert info.value.hint == MALFORMED_HINT
    assert token_id not in message
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or c in "\u2028\u2029" for c in message), message


@pytest.mark.parametrize("token_id", [
    "M.V1." + "A" * 40, "apiv3_" + "b" * 40, "apiv1_" + "c" * 40 + "==", "e" * 86 + "==",
], ids=["management", "apiv3", "apiv1", "v2"])
def test_a_token_value_in_the_id_field_is_refused_without_quoting_it(token_id: str) -> None:
    """The payload's token and token_id swapped: the value would be shown wherever ids are, unmasked."""
    with pytest.raises(MalformedPayload) as info:
        TokenRecord.from_payload(_payload(token_id), where=WHERE)
    message = str(info.value)
    assert "shape of a token value" in message, message
    assert token_id not in message


@pytest.mark.parametrize("token_id", [
    "8b2c5f9e-1d7a-4c3e-9f0b-2a6d4e8c1f37",  # influxctl / Management API: a UUID
    "0a1b2c3d4e5f6789",  # InfluxDB v2: 16 hex digits
    "_admin@0123456789abcdef",  # InfluxDB 3 operator token generation
    "rotator-app-20260101T000000Z-ab12",  # InfluxDB 3 token name
    # rotator's own InfluxDB 3 names for policies with a Vault-token-like part (s. and 20 characters)
    "rotator-eu.s.app-0123456789abcdef", "rotator-dc.b.ingest-8b2c5f9e-1d7a-4c3e-9f0b-2a6d4e8c1f37",
    "s.ci_admin_token_production",  # a person's InfluxDB 3 token name
    "Team token: ingest / eu-west (Ölçü)",  # a human's InfluxDB 3 name: any printable text
    "../../sys/seal", "-rf", "abc%2F..%2Fx",  # odd, but the adapters check and encode ids themselves
    "n" * 256,  # InfluxDB 3's longest name
])
def test_every_real_id_form_is_accepted(token_id: str) -> None:
    assert TokenRecord.from_payload(_payload(token_id), where=WHERE).token_id == token_id


@pytest.mark.parametrize("journal", ["sqlite", "pg"])
def test_a_nul_in_the_stored_id_fails_the_rotation_at_the_store_not_the_journal(
    tmp_path: Any, openbao: Any, fake_influxctl: Any, journal: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("pg_url") if journal == "pg" else None
    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=1, journal_url=url)
    _edit_payload(sc, token_id="abc\x00def")
    before = {t["id"] for t in sc.fake.tokens()}
    proc = sc.cli("rotate", sc.policy)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert f"secret/data/{sc.kv_path}" in out, out
    assert "payload key 'token_id' holds a control character (\\x00 at index 3)" in out, out
    assert "rotator bootstrap" in out, out  # MALFORMED_HINT: how to repair the store
    assert "journal" not in out.lower(), out
    assert {t["id"] for t in sc.fake.tokens()} == before, "nothing is minted over a payload rotator cannot read"
