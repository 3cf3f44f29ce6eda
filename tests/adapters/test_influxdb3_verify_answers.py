"""influxdb3 ``verify`` counts only answers that can come from the InfluxDB 3 server that issued
the token; ``mint`` only a 201 answer about the token it asked for.

A firewall, a proxy or a login page in front of ``base_url`` answers too: its HTML 403, its HTML
200, a catch-all's ``{"status":"ok"}`` must not pass for "the new token works" (the engine would
publish a token that may be dead). Those answers go through the issuer's transport seam
(``httpx.MockTransport``: no spec-valid server sends them); what a real server answers goes
through the spec-validated fake.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from rotator.adapters.http.influxdb3 import VERIFY_QUERY_REQUESTS, InfluxDB3Issuer, InfluxDB3Settings
from rotator.core.contracts import AdapterContext, MintRequest
from rotator.core.errors import IssuerOutputError, PermanentError, TransientError
from rotator.core.secret import Secret
from tests.fakes.influxdb3_fake import InfluxDB3Fake, token_hash

POLICY = "app"
NEW = "apiv3_the-new-token-value-0123456789"
DB_READ = [{"resource_type": "db", "resource_names": ["sensors"], "actions": ["read"]}]
DB_WRITE = [{"resource_type": "db", "resource_names": ["sensors"], "actions": ["write"]}]
WAF_403 = httpx.Response(403, text="<html><body><h1>403 Forbidden</h1>nginx</body></html>",
                         headers={"content-type": "text/html"})
PORTAL_200 = httpx.Response(200, text="<html>Please log in</html>", headers={"content-type": "text/html"})


def make(url: str, transport: httpx.BaseTransport | None = None, **settings: Any) -> InfluxDB3Issuer:
    settings.setdefault("credential", "self")
    model = InfluxDB3Settings.model_validate({"base_url": url, **settings})
    return InfluxDB3Issuer.from_config(model, AdapterContext(policy=POLICY, base_dir=Path(".")), transport=transport)


def request(run_id: str = "0123456789abcdef") -> MintRequest:
    return MintRequest(POLICY, run_id, f"rotator:{POLICY}:{run_id}", datetime.now(UTC) + timedelta(days=30))


def resource(transport: httpx.BaseTransport, permissions: list[dict[str, Any]] = DB_READ) -> InfluxDB3Issuer:
    return make("https://influx.invalid:8181", transport, kind="resource", credential={"env": "UNUSED"},
                permissions=permissions)


def admin(transport: httpx.BaseTransport, kind: str) -> InfluxDB3Issuer:
    extra = {"allow_no_grace": True} if kind == "operator" else {}
    return make("https://influx.invalid:8181", transport, kind=kind, **extra)


class Recorder:
    """A MockTransport handler answering ``answer(value)`` for the bearer value, recording each."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.seen: list[str] = []

    def __call__(self, req: httpx.Request) -> httpx.Response:
        value = req.headers.get("Authorization", "").removeprefix("Bearer ")
        self.seen.append(value)
        answer = self.answer(value)
        return httpx.Response(answer.status_code, content=answer.content, headers=answer.headers)


def _no_value_in(err: BaseException, caplog: pytest.LogCaptureFixture) -> None:
    text = f"{err} {getattr(err, 'hint', '')} {caplog.text}"
    assert NEW not in text and NEW[6:20] not in text


# ---------------------------------------------------------------------------------- resource tokens: 403


@pytest.mark.parametrize("decoy_answer", [WAF_403, httpx.Response(200, text='{"Int64(1)":1}\n')],
                         ids=["decoy-403", "decoy-200"])
def test_a_403_that_a_made_up_token_gets_too_proves_nothing(
    decoy_answer: httpx.Response, caplog: pytest.LogCaptureFixture
) -> None:
    """A WAF's HTML 403 (or a server that lets any token in) is no proof the server knows the token."""
    caplog.set_level(logging.DEBUG)
    handler = Recorder(lambda value: WAF_403 if value == NEW else decoy_answer)
    with pytest.raises(PermanentError) as err:
        resource(httpx.MockTransport(handler)).verify(Secret(NEW))
    assert not isinstance(err.value, TransientError | IssuerOutputError)
    assert "answered 403" in str(err.value) and "proves nothing" in str(err.value)
    assert f"made-up token answered {decoy_answer.status_code}" in str(err.value)
    assert "base_url" in err.value.hint and "read" in err.value.hint
    assert len(handler.seen) == 2 and handler.seen[0] == NEW
    assert handler.seen[1].startswith("apiv3_rotator-decoy-") and handler.seen[1] != NEW
    _no_value_in(err.value, caplog)


def test_a_403_counts_where_a_made_up_token_gets_401() -> None:
    handler = Recorder(lambda value: httpx.Response(403) if value == NEW else httpx.Response(401, json={
        "error": "cannot authenticate token", "data": None}))
    resource(httpx.MockTransport(handler)).verify(Secret(NEW))
    assert len(handler.seen) == 2 and handler.seen[0] == NEW and handler.seen[1] != NEW


def test_a_decoy_that_fails_otherwise_is_mapped_as_any_failure() -> None:
    """A 5xx to the made-up token says nothing yet: transient, retried like any other 5xx."""
    handler = Recorder(lambda value: httpx.Response(403) if value == NEW else httpx.Response(503))
    with pytest.raises(TransientError, match="refuses an unknown token"):
        resource(httpx.MockTransport(handler)).verify(Secret(NEW))


# ---------------------------------------------------------------------------------- resource tokens: 200


@pytest.mark.parametrize("answer", [
    PORTAL_200,
    httpx.Response(200, json={"status": "ok"}),
    httpx.Response(200, text=""),
    httpx.Response(200, text='{"Int64(1)":2}\n'),
    httpx.Response(200, text='{"Int64(1)":true}\n'),
    httpx.Response(200, text='{"Int64(1)":1}\n{"Int64(1)":1}\n'),
    httpx.Response(200, json=[]),
], ids=["html", "status-ok", "empty", "not-1", "true", "two-rows", "empty-array"])
def test_a_200_that_is_not_the_select_1_row_proves_nothing(
    answer: httpx.Response, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    handler = Recorder(lambda value: answer)
    with pytest.raises(IssuerOutputError) as err:
        resource(httpx.MockTransport(handler)).verify(Secret(NEW))
    assert "verify the new token" in str(err.value) and "base_url" in err.value.hint
    assert handler.seen == [NEW], "a 200 needs no made-up token"
    _no_value_in(err.value, caplog)


@pytest.mark.parametrize("body", ['{"Int64(1)":1}\n', '[{"Int64(1)":1}]'], ids=["jsonl", "json-array"])
def test_the_select_1_row_passes(body: str) -> None:
    handler = Recorder(lambda value: httpx.Response(200, text=body) if value == NEW else httpx.Response(401))
    resource(httpx.MockTransport(handler)).verify(Secret(NEW))
    assert handler.seen == [NEW]


def test_verify_of_a_database_token_counts_two_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    issuer = resource(httpx.MockTransport(lambda req: httpx.Response(500)), DB_WRITE)
    assert issuer.requests_in_longest_call() == 2
    assert issuer.call_timeout_seconds == make("https://influx.invalid:8181").call_timeout_seconds
    # Counted by verify itself, not only by the base of two that revoke needs
    monkeypatch.setattr(InfluxDB3Issuer, "requests_per_call", 1)
    assert issuer.requests_in_longest_call() == VERIFY_QUERY_REQUESTS == 2


# ---------------------------------------------------------------------------------- resource tokens: the fake


def test_a_write_only_token_passes_through_the_fake(influxdb3_enterprise_fake: InfluxDB3Fake) -> None:
    """The server's 403 ("may not read") after it authenticated the token: a made-up token gets 401."""
    fake = influxdb3_enterprise_fake
    name = "human-write-only"
    value = Secret(fake.add_resource_token(name, "db:sensors:write"))
    issuer = make(fake.url, kind="resource", credential={"env": "UNUSED"}, permissions=DB_WRITE)
    before = len(fake.api.calls)
    issuer.verify(value)
    assert [(c.status, c.principal) for c in fake.api.calls[before:]] == [(403, name), (401, None)]
    with pytest.raises(TransientError, match="HTTP 401"):  # a value the server never issued
        issuer.verify(Secret("apiv3_never-issued-0123456789"))


def test_a_read_token_passes_through_the_fake(influxdb3_enterprise_fake: InfluxDB3Fake) -> None:
    fake = influxdb3_enterprise_fake
    value = Secret(fake.add_resource_token("human-reader", "db:sensors:read"))
    issuer = make(fake.url, kind="resource", credential={"env": "UNUSED"}, permissions=DB_READ)
    before = len(fake.api.calls)
    issuer.verify(value)
    assert [(c.status, c.principal) for c in fake.api.calls[before:]] == [(200, "human-reader")]


# ---------------------------------------------------------------------------------- admin kinds


def _rows(*rows: dict[str, Any]) -> httpx.Response:
    return httpx.Response(200, text="".join(json.dumps(r) + "\n" for r in rows))


OTHER = {"token_id": 0, "name": "_admin", "hash": token_hash("apiv3_someone-else")[:9],
         "created_at": "2026-01-01T00:00:00.000"}
OWN = {"token_id": 7, "name": "rotator-app-0123456789abcdef", "hash": token_hash(NEW)[:9],
       "created_at": "2026-01-01T00:00:00.000"}


@pytest.mark.parametrize("kind", ["named_admin", "operator"])
@pytest.mark.parametrize("answer", [
    httpx.Response(200, json={"status": "ok"}),
    PORTAL_200,
    httpx.Response(200, json=[{"ok": True}]),
    _rows(OTHER),  # rows of a server, but not one that knows the new token
    _rows({**OTHER, "hash": None}, {**OWN, "hash": 12}),
], ids=["status-ok", "html", "nameless-array", "no-own-row", "hashes-no-text"])
def test_an_admin_verify_needs_system_tokens_rows_with_the_token_s_own(
    kind: str, answer: httpx.Response, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(IssuerOutputError) as err:
        admin(httpx.MockTransport(lambda req: answer), kind).verify(Secret(NEW))
    assert "verify the new token" in str(err.value) and "base_url" in err.value.hint
    _no_value_in(err.value, caplog)


@pytest.mark.parametrize("kind", ["named_admin", "operator"])
def test_an_admin_verify_passes_with_the_token_s_own_row(kind: str) -> None:
    own = OWN if kind == "named_admin" else {**OWN, "name": "_admin"}
    other = OTHER if kind == "named_admin" else {**OTHER, "name": "someone"}
    admin(httpx.MockTransport(lambda req: _rows(other, own)), kind).verify(Secret(NEW))
    upper = {**own, "hash": own["hash"].upper()}  # hex in either case
    admin(httpx.MockTransport(lambda req: _rows(other, upper)), kind).verify(Secret(NEW))


def test_an_admin_verify_without_a_hash_column_needs_named_rows() -> None:
    """A server started without auth shows no hash (tokens.rs): named rows are all there is to check."""
    rows = _rows({k: v for k, v in OTHER.items() if k != "hash"})
    admin(httpx.MockTransport(lambda req: rows), "named_admin").verify(Secret(NEW))


def test_a_named_admin_token_passes_through_the_fake(influxdb3_fake: InfluxDB3Fake) -> None:
    fake = influxdb3_fake
    issuer = make(fake.url)
    minted = issuer.mint(request(), Secret(fake.operator_value))
    issuer.verify(minted.value)
    issuer.verify(Secret(fake.operator_value))  # the operator token is an admin token too
    fake.started_with_auth = False
    issuer.verify(minted.value)


def test_an_operator_token_passes_through_the_fake(influxdb3_fake: InfluxDB3Fake) -> None:
    fake = influxdb3_fake
    issuer = make(fake.url, kind="operator", allow_no_grace=True)
    minted = issuer.mint(request(), Secret(fake.operator_value))
    issuer.verify(minted.value)


# ---------------------------------------------------------------------------------- mint: the name answered


@pytest.mark.parametrize(("kind", "key", "got", "shown"), [
    ("named_admin", "name", "someone-else", "'someone-else'"),
    ("named_admin", "name", 7, "a JSON int"),
    ("resource", "token_name", "someone-else", "'someone-else'"),
    ("resource", "name", "apiv3_" + "x" * 30, "'***'"),  # token-shaped: masked
    ("named_admin", "name", NEW, "(the answer's own `token` value, not shown)"),
])
def test_a_201_about_another_token_is_an_output_error(
    kind: str, key: str, got: object, shown: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("INFLUXDB3_ADMIN_FOR_TEST", "apiv3_admin-credential-for-a-mock")
    asked = "rotator-app-0123456789abcdef"
    answer = {"id": 3, "name": asked, "token_name": asked, "token": NEW, key: got}
    settings: dict[str, Any] = {"kind": kind}
    if kind == "resource":
        settings.update(credential={"env": "INFLUXDB3_ADMIN_FOR_TEST"}, permissions=DB_READ)
    transport = httpx.MockTransport(lambda req: httpx.Response(201, json=answer))
    issuer = make("https://influx.invalid:8181", transport, **settings)
    with pytest.raises(IssuerOutputError) as err:
        issuer.mint(request(), Secret("apiv3_admin-credential-for-a-mock"))
    assert f"names the created token {shown} in `{key}`, not {asked}" in str(err.value)
    assert asked in err.value.hint and "influxdb3 show tokens" in err.value.hint
    assert "x" * 20 not in str(err.value)
    _no_value_in(err.value, caplog)


def test_a_201_about_the_token_asked_for_passes(
    influxdb3_enterprise_fake: InfluxDB3Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fake answers ``name`` (the server's) and, for a resource token, ``token_name`` (the spec's)."""
    fake = influxdb3_enterprise_fake
    named = make(fake.url).mint(request("1111222233334444"), Secret(fake.operator_value))
    assert named.token_id == "rotator-app-1111222233334444"
    monkeypatch.setenv("INFLUXDB3_ADMIN_FOR_TEST", fake.operator_value)
    issuer = make(fake.url, kind="resource", credential={"env": "INFLUXDB3_ADMIN_FOR_TEST"}, permissions=DB_READ)
    minted = issuer.mint(request("5555666677778888"), None)
    assert minted.token_id == "rotator-app-5555666677778888"
    issuer.verify(minted.value)
    transport = httpx.MockTransport(lambda req: httpx.Response(201, json={"id": 1, "token": NEW}))
    bare = make("https://influx.invalid:8181", transport).mint(request(), Secret("apiv3_admin-for-a-mock"))
    assert bare.token_id == "rotator-app-0123456789abcdef", "an answer naming no token is not refused"
