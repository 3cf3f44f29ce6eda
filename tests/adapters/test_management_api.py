"""The ``management-api`` issuer against the OpenAPI-validated fake cluster, over real HTTP.

Every test runs for Cloud Dedicated and for Clustered (the ``management_api_fake`` fixture is
parametrised), and the fixture fails the test if any request or answer broke the spec.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from rotator.adapters.http.management_api import ManagementApiIssuer, ManagementApiSettings
from rotator.adapters.vault.kv2 import VaultKV2Settings, VaultKV2Store
from rotator.config.policy import PolicyFileError, parse_config
from rotator.core.contracts import AdapterContext, MintRequest, TokenRecord
from rotator.core.errors import ConfigError, IssuerOutputError, PermanentError, RotatorError, TransientError
from rotator.core.secret import Secret
from tests.fakes.management_api_fake import ManagementApiFake
from tests.fakes.openapi_fake import Fault, SpecMismatchError, json_response

NOW = datetime.now(UTC).replace(microsecond=0)


# --------------------------------------------------------------------------------------------
# helpers


def settings_for(fake: ManagementApiFake, token_file: Path | None = None, **overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "product": fake.product,
        "base_url": fake.base_url,
        "cluster_host": fake.cluster_url,
        "permissions": [{"action": "read", "resource": "telemetry"}, {"action": "write", "resource": "telemetry"}],
        "verify": {"database": "telemetry"},
        "timeout_s": 2,
    }
    if token_file is not None:
        raw["management_token"] = {"file": str(token_file)}
    if fake.product == "dedicated":
        raw |= {"account_id": fake.account_id, "cluster_id": fake.cluster_id}
    raw.update(overrides)
    return raw


def make_issuer(fake: ManagementApiFake, tmp_path: Path, **overrides: Any) -> tuple[ManagementApiIssuer, str, str]:
    """An issuer authenticating with a fresh management token in a file; returns (issuer, value, id)."""
    value, token_id = fake.add_management_token()
    token_file = tmp_path / "mgmt-token"
    token_file.write_text(value + "\n")
    token_file.chmod(0o600)  # as a credential file should be: one readable by others is warned about
    settings = ManagementApiSettings.model_validate(settings_for(fake, token_file, **overrides))
    issuer = ManagementApiIssuer.from_config(settings, AdapterContext(policy="db", base_dir=tmp_path))
    return issuer, value, token_id


def mint_request(run_id: str = "run1", days: int = 30) -> MintRequest:
    return MintRequest("db", run_id, f"rotator:db:{run_id}", NOW + timedelta(days=days))


def assert_clean_message(exc: BaseException, *values: str) -> None:
    text = f"{exc} {getattr(exc, 'hint', '')}"
    for value in values:
        assert value not in text, "a token value leaked into an error message"


# --------------------------------------------------------------------------------------------
# the contract, end to end over HTTP


def test_mint_verify_list_revoke_round_trip(management_api_fake, tmp_path):
    fake = management_api_fake
    issuer, mgmt_value, mgmt_id = make_issuer(fake, tmp_path)

    minted = issuer.mint(mint_request(), credential=None)
    record = fake.token_by_id(minted.token_id)
    assert record is not None
    assert record["description"] == "rotator:db:run1"
    assert record["permissions"] == [{"action": "read", "resource": "telemetry"},
                                     {"action": "write", "resource": "telemetry"}]
    assert minted.expires_at == NOW + timedelta(days=30)
    assert datetime.fromisoformat(record["expiresAt"]) == NOW + timedelta(days=30)
    assert fake.is_active(minted.value.reveal())
    assert all(call.principal == mgmt_id for call in fake.calls()), "every call used the management token"

    issuer.verify(minted.value)
    query = fake.calls("query")[-1]
    assert query.status == 200 and query.principal == minted.token_id
    assert query.query == {"db": ["telemetry"], "q": ["SHOW MEASUREMENTS LIMIT 1"]}

    listed = {info.token_id: info for info in issuer.list_tokens(credential=None)}
    assert listed[minted.token_id].description == "rotator:db:run1"
    assert listed[minted.token_id].is_active(datetime.now(UTC))
    assert listed[minted.token_id].created_at is not None

    issuer.revoke(minted.token_id, credential=None)
    assert not fake.is_active(minted.value.reveal())
    assert fake.token_by_id(minted.token_id)["revokedAt"] is not None
    info = {i.token_id: i for i in issuer.list_tokens(None)}[minted.token_id]
    assert info.revoked_at is not None and not info.is_active(datetime.now(UTC))
    issuer.revoke(minted.token_id, credential=None)  # idempotent
    issuer.revoke("99999999-9999-4999-8999-999999999999", credential=None)  # unknown: counts as revoked
    assert [c.status for c in fake.calls("delete")] == [204, 204, 404]


def test_an_expiry_the_cluster_ignored_is_not_recorded_as_kept(management_api_fake, tmp_path, caplog):
    """A cluster that ignores ``expiresAt`` (one that also wants the how-to's ``expirationType``,
    which the spec does not have) answers without ``expiresAt``: the token never expires. The
    minted token then says no expiry, and a WARNING names its id (never its value)."""
    fake = management_api_fake
    fake.ignores_expires_at = True
    issuer, mgmt_value, _ = make_issuer(fake, tmp_path)
    with caplog.at_level(logging.WARNING, logger="rotator.adapters.management_api"):
        minted = issuer.mint(mint_request(), credential=None)
    assert minted.expires_at is None
    assert fake.token_by_id(minted.token_id)["expiresAt"] is None  # truly no expiry on the cluster
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert minted.token_id in warning and "does not expire by itself" in warning
    assert minted.value.reveal() not in caplog.text and mgmt_value not in caplog.text


def test_revoke_when_delete_removes_the_token(management_api_fake, tmp_path):
    fake = management_api_fake
    fake.delete_mode = "remove"
    issuer, _, _ = make_issuer(fake, tmp_path)
    minted = issuer.mint(mint_request(), None)
    issuer.revoke(minted.token_id, None)
    assert minted.token_id not in {i.token_id for i in issuer.list_tokens(None)}
    assert [c.status for c in fake.calls("get")] == [404]
    assert not fake.is_active(minted.value.reveal())


def test_new_token_answers_401_until_active(management_api_fake, tmp_path):
    fake = management_api_fake
    fake.activation_delay_s = 1.0
    issuer, _, _ = make_issuer(fake, tmp_path)
    minted = issuer.mint(mint_request(), None)
    with pytest.raises(TransientError) as caught:
        issuer.verify(minted.value)
    assert "HTTP 401" in str(caught.value) and "few seconds to a few minutes" in caught.value.hint
    assert_clean_message(caught.value, minted.value.reveal())
    time.sleep(1.1)
    issuer.verify(minted.value)
    assert [c.status for c in fake.calls("query")] == [401, 200]


def test_a_management_token_rotated_in_the_file_is_picked_up_by_the_next_call(management_api_fake, tmp_path):
    fake = management_api_fake
    issuer, _, first_id = make_issuer(fake, tmp_path)
    issuer.list_tokens(None)
    second, second_id = fake.add_management_token("rotated")
    (tmp_path / "mgmt-token").write_text(second)
    issuer.list_tokens(None)
    assert [c.principal for c in fake.calls("list")] == [first_id, second_id]


# --------------------------------------------------------------------------------------------
# error statuses


MANAGEMENT_ERRORS = [
    # (operation, status, error class, words in the message or hint)
    ("create", 400, PermanentError, "permissions"),
    ("create", 401, PermanentError, "not accepted"),
    ("create", 403, PermanentError, "may not manage database tokens"),
    ("create", 404, PermanentError, "base_url"),
    ("create", 409, PermanentError, "conflict"),
    ("create", 500, TransientError, "rotator retries"),
    ("list", 400, PermanentError, "permissions"),
    ("list", 401, PermanentError, "not accepted"),
    ("list", 403, PermanentError, "may not manage"),
    ("list", 404, PermanentError, "base_url"),
    ("list", 500, TransientError, "rotator retries"),
]


@pytest.mark.parametrize(("operation", "status", "error", "words"), MANAGEMENT_ERRORS)
def test_management_api_error_statuses(management_api_fake, tmp_path, operation, status, error, words):
    fake = management_api_fake
    issuer, mgmt_value, _ = make_issuer(fake, tmp_path)
    fake.fail_next(operation, status, message=f"the server says {status}")
    with pytest.raises(RotatorError) as caught:
        if operation == "create":
            issuer.mint(mint_request(), None)
        else:
            issuer.list_tokens(None)
    exc = caught.value
    assert type(exc) is error
    text = f"{exc} {exc.hint}"
    assert f"HTTP {status}" in str(exc) and f"the server says {status}" in str(exc)
    assert words in text
    if status == 404 and fake.product == "dedicated":
        assert "account_id" in exc.hint
    if status == 401:
        assert "file" in exc.hint and str(tmp_path / "mgmt-token") in exc.hint
    assert_clean_message(exc, mgmt_value)
    assert fake.tokens() == [], "nothing was created"


@pytest.mark.parametrize("status", [400, 401, 403, 500])
def test_revoke_errors_keep_the_delete_failure_when_the_token_is_still_live(management_api_fake, tmp_path, status):
    fake = management_api_fake
    issuer, mgmt_value, _ = make_issuer(fake, tmp_path)
    minted = issuer.mint(mint_request(), None)
    fake.fail_next("delete", status)
    with pytest.raises(RotatorError) as caught:
        issuer.revoke(minted.token_id, None)
    assert f"HTTP {status}" in str(caught.value)
    assert isinstance(caught.value, TransientError) == (status == 500)
    assert fake.is_active(minted.value.reveal())
    assert_clean_message(caught.value, mgmt_value, minted.value.reveal())
    issuer.revoke(minted.token_id, None)  # the next try revokes it
    assert not fake.is_active(minted.value.reveal())


def test_revoke_names_a_delete_404_that_the_get_contradicts(management_api_fake, tmp_path):
    """DELETE answers the API's own 404 "not found", yet GET lists the token unrevoked: the message
    says what DELETE answered (not a made-up 204) and that the server contradicts itself."""
    fake = management_api_fake
    issuer, mgmt_value, _ = make_issuer(fake, tmp_path)
    minted = issuer.mint(mint_request(), None)
    fake.fail_next("delete", 404, message="not found")
    with pytest.raises(TransientError) as caught:
        issuer.revoke(minted.token_id, None)
    text = str(caught.value)
    assert "DELETE answered 404 (not found)" in text and "contradicts itself" in text
    assert "answered 204" not in text
    assert minted.token_id in text
    assert fake.is_active(minted.value.reveal())
    assert_clean_message(caught.value, mgmt_value, minted.value.reveal())
    issuer.revoke(minted.token_id, None)  # the next try revokes it
    assert not fake.is_active(minted.value.reveal())


def test_revoke_confirms_through_get_when_the_delete_answer_is_lost(management_api_fake, tmp_path):
    """The DELETE took effect but its connection dropped before the answer: the GET that confirms the
    revocation is still sent, and its revokedAt makes the revoke a success."""
    fake = management_api_fake
    issuer, _, _ = make_issuer(fake, tmp_path)
    minted = issuer.mint(mint_request(), None)
    fake.drop_next("delete", after_effect=True)
    issuer.revoke(minted.token_id, None)  # DELETE's connection dropped, GET shows revokedAt: done
    assert not fake.is_active(minted.value.reveal())
    # The DELETE alone revoked the token: only the fake's record of requests shows the GET went out.
    calls = [(c.method, c.path.rsplit("/", 1)[-1], c.status) for c in fake.calls()]
    deleted = calls.index(("DELETE", minted.token_id, None))  # (None: dropped)
    assert ("GET", minted.token_id, 200) in calls[deleted + 1:], f"the confirming GET was not sent: {calls}"


def test_verify_error_statuses(management_api_fake, tmp_path):
    fake = management_api_fake
    issuer, _, _ = make_issuer(fake, tmp_path)
    minted = issuer.mint(mint_request(), None)

    fake.fail_next("query", 400)
    with pytest.raises(PermanentError) as bad:
        issuer.verify(minted.value)
    assert "HTTP 400" in str(bad.value) and "verify.query" in bad.value.hint

    fake.databases = {"other"}
    with pytest.raises(PermanentError) as missing:
        issuer.verify(minted.value)
    assert "HTTP 404" in str(missing.value) and "'telemetry'" in missing.value.hint
    fake.databases = None

    write_only, _ = fake.add_token("write only", [{"action": "write", "resource": "telemetry"}])
    with pytest.raises(PermanentError) as forbidden:
        issuer.verify(Secret(write_only))
    assert "HTTP 403" in str(forbidden.value) and "may not read" in forbidden.value.hint

    with pytest.raises(TransientError):
        issuer.verify(Secret("apiv1_" + "0" * 80))  # unknown: 401, which is "not active yet" until verify_timeout
    for exc in (bad.value, missing.value, forbidden.value):
        assert_clean_message(exc, minted.value.reveal(), write_only)


def test_timeouts_and_lost_connections_are_transient(management_api_fake, tmp_path):
    fake = management_api_fake
    issuer, _, _ = make_issuer(fake, tmp_path, timeout_s=0.5)
    fake.delay_next("list", 2.0)
    with pytest.raises(TransientError) as slow:
        issuer.list_tokens(None)
    assert "within 0.5s" in str(slow.value)

    fake.drop_next("create", after_effect=True)  # created, but the answer is lost
    with pytest.raises(TransientError) as dropped:
        issuer.mint(mint_request("lost"), None)
    assert "cannot reach" in str(dropped.value)
    # The engine sweeps the run's tag before retrying: the token is findable by its description.
    assert [i.description for i in issuer.list_tokens(None)] == ["rotator:db:lost"]


def test_unreachable_cluster_is_transient(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    (tmp_path / "t").write_text("M.V1.not-a-real-token-0000")
    settings = ManagementApiSettings.model_validate({
        "product": "clustered", "cluster_host": f"http://127.0.0.1:{port}",
        "permissions": [{"action": "read", "resource": "*"}], "verify": {"database": "x"},
        "management_token": {"file": str(tmp_path / "t")}, "timeout_s": 1,
    })
    issuer = ManagementApiIssuer.from_config(settings, AdapterContext(policy="db", base_dir=tmp_path))
    with pytest.raises(TransientError) as caught:
        issuer.list_tokens(None)
    assert f"cannot reach http://127.0.0.1:{port}" in str(caught.value)


def mocked_issuer(tmp_path: Path, handler: Callable[[httpx.Request], httpx.Response]) -> ManagementApiIssuer:
    """An issuer whose every request ``handler`` answers (the transport seam: what the fake cannot send)."""
    (tmp_path / "t").write_text("M.V1.not-a-real-token-0000")
    settings = ManagementApiSettings.model_validate({
        "product": "clustered", "cluster_host": "https://cluster.example.test",
        "permissions": [{"action": "read", "resource": "*"}], "verify": {"database": "x"},
        "management_token": {"file": str(tmp_path / "t")},
    })
    client = httpx.Client(transport=httpx.MockTransport(handler))
    return ManagementApiIssuer.from_config(settings, AdapterContext(policy="db", base_dir=tmp_path), client=client)


def test_answers_that_cannot_be_read_are_issuer_output_errors(tmp_path):
    """Through the transport seam: a 200 whose body is not what the spec says (the fake cannot send that)."""
    answers = {
        "POST": httpx.Response(200, json={"id": "55555555-5555-4555-8555-555555555555"}),
        "GET": httpx.Response(200, text="<html>proxy login</html>"),
    }
    issuer = mocked_issuer(tmp_path, lambda request: answers[request.method])
    with pytest.raises(IssuerOutputError, match="token 55555555-5555-4555-8555-555555555555 was created"):
        issuer.mint(mint_request(), None)
    with pytest.raises(IssuerOutputError, match="is not JSON"):
        issuer.list_tokens(None)


#: InfluxDB's v1 /query answers as they come: a statement without rows, one with a series, and two statements
INFLUXDB_QUERY_ANSWERS = [
    {"results": [{"statement_id": 0}]},
    {"results": [{"statement_id": 0, "series": [{"name": "measurements", "columns": ["name"], "values": [["cpu"]]}]}]},
    {"results": [{"statement_id": 0}, {"statement_id": 1, "series": []}]},
]


@pytest.mark.parametrize("answer", INFLUXDB_QUERY_ANSWERS)
def test_verify_passes_on_influxdb_s_query_answer(tmp_path, answer):
    issuer = mocked_issuer(tmp_path, lambda request: httpx.Response(200, json=answer))
    issuer.verify(Secret("apiv1_" + "2" * 80))


@pytest.mark.parametrize(("answer", "problem"), [
    (httpx.Response(200, json={"results": []}), "its `results` list is empty"),
    (httpx.Response(200, json={"results": [{}]}), "result 0 has no integer `statement_id`"),
    (httpx.Response(200, json={"results": [{"statement_id": 0}, {"series": []}]}),
     "result 1 has no integer `statement_id`"),
    (httpx.Response(200, json={"results": [{"statement_id": "0"}]}), "result 0 has no integer `statement_id`"),
    (httpx.Response(200, json={"results": [{"statement_id": True}]}), "result 0 has no integer `statement_id`"),
    (httpx.Response(200, json={"results": ["ok"]}), "result 0 has no integer `statement_id`"),
    (httpx.Response(200, json={"status": "ok"}), "it has no `results` list"),
    (httpx.Response(200, text="<html><body>Welcome to nginx!</body></html>",
                    headers={"Content-Type": "text/html"}), "the answer (HTTP 200) is not JSON"),
])
def test_verify_refuses_a_200_that_is_not_influxdb_s_query_answer(tmp_path, answer, problem):
    """A catch-all server (or a proxy's default backend) at `cluster_host` answers any path with 200: its
    `{"results": []}` passed as a verified token, which proved nothing of the token, and the engine published it.
    InfluxDB answers every statement with a result naming its `statement_id`: anything else is not its answer."""
    issuer = mocked_issuer(tmp_path, lambda request: answer)
    with pytest.raises(IssuerOutputError) as caught:
        issuer.verify(Secret("apiv1_" + "2" * 80))
    assert problem in str(caught.value), caught.value
    assert "`cluster_host`" in (caught.value.hint or "") and "InfluxDB" in (caught.value.hint or ""), caught.value.hint
    assert "Management API v0" not in (caught.value.hint or ""), caught.value.hint  # (the data plane's answer)


def test_verify_s_401_stays_not_yet_accepted_behind_the_answer_check(tmp_path):
    """The answer check reads only a 200: a 401 is still "not active yet", retried until verify_timeout."""
    from rotator.core.errors import NotYetAccepted

    answer = httpx.Response(401, json={"error": "unauthorized access", "data": None})
    issuer = mocked_issuer(tmp_path, lambda request: answer)
    with pytest.raises(NotYetAccepted):
        issuer.verify(Secret("apiv1_" + "2" * 80))


def test_redirects_and_tls_failures_are_permanent(tmp_path):
    """Through the transport seam: what the fake cannot produce (a redirect, a TLS handshake failure)."""
    import ssl

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/query":
            try:
                raise ssl.SSLCertVerificationError("certificate verify failed")
            except ssl.SSLError as exc:
                raise httpx.ConnectError("tls", request=request) from exc
        return httpx.Response(301, headers={"Location": "https://elsewhere.example.test/api/v0/tokens"})

    issuer = mocked_issuer(tmp_path, handler)
    with pytest.raises(PermanentError) as redirect:
        issuer.list_tokens(None)
    assert "HTTP 301" in str(redirect.value) and "`base_url`" in redirect.value.hint
    with pytest.raises(PermanentError) as tls:
        issuer.verify(Secret("apiv1_" + "1" * 80))
    assert "TLS handshake with https://cluster.example.test failed" in str(tls.value)
    assert "ca_bundle" in tls.value.hint
    assert_clean_message(tls.value, "apiv1_" + "1" * 80)


# --------------------------------------------------------------------------------------------
# the fake's validation bites


def test_the_fake_refuses_a_request_that_breaks_the_spec(management_api_fake, tmp_path):
    """A deliberately malformed request: caught by the spec, answered 500, failed at teardown."""
    fake = management_api_fake
    issuer, mgmt_value, _ = make_issuer(fake, tmp_path)
    # An issuer whose settings skipped validation sends a 65-character database name: the spec's
    # ClusterDatabaseName allows 64. The fake answers 500, which the issuer reports as transient.
    bad = issuer.settings.model_copy(update={"permissions": [
        issuer.settings.permissions[0].model_copy(update={"resource": "x" * 65})]})
    broken = ManagementApiIssuer(bad, AdapterContext(policy="db", base_dir=tmp_path))
    with pytest.raises(TransientError, match="HTTP 500"):
        broken.mint(mint_request(), None)
    # Raw requests: one without the required `description`, one without a bearer token.
    create_url = fake.base_url + fake.templates["create"][1].format(accountId=fake.account_id,
                                                                     clusterId=fake.cluster_id)
    no_description = httpx.post(create_url, json={"permissions": []}, headers={"Authorization": f"Bearer {mgmt_value}"})
    no_bearer = httpx.post(create_url, json={"description": "x"})
    assert no_description.status_code == no_bearer.status_code == 500
    found = fake.take_mismatches()
    assert [m.kind for m in found] == ["request", "request", "request"]
    too_long = repr("x" * 65)
    assert f"permissions/0/resource: {too_long} is not valid under any of the given schemas" in found[0].detail
    assert "'description' is a required property" in found[1].detail
    assert "SecurityValidationError" in found[2].detail
    assert fake.tokens() == [], "the handler never ran"
    for mismatch in found:
        assert mgmt_value not in str(mismatch)


def test_the_fake_refuses_an_answer_that_breaks_the_spec(management_api_fake, tmp_path):
    fake = management_api_fake
    issuer, _, _ = make_issuer(fake, tmp_path)
    method, template = fake.templates["list"]
    # 409 is not documented for GET .../tokens; a 401 body with code 403 breaks the response's
    # `code: {enum: [401]}` beside `$ref: Error` (checked by the framework's 3.1 second pass).
    fake.api.inject(method, template, Fault(response=json_response(409, {"code": 409, "message": "conflict"})))
    fake.api.inject(method, template, Fault(response=json_response(401, {"code": 403, "message": "x"})))
    fake.api.inject(method, template, Fault(response=json_response(200, [{"id": "not-a-uuid"}])))
    for _ in range(3):
        with pytest.raises(TransientError, match="HTTP 500"):
            issuer.list_tokens(None)
    found = fake.take_mismatches()
    assert [m.kind for m in found] == ["response"] * 3
    assert "ResponseNotFound" in found[0].detail
    assert "403 is not one of [401]" in found[1].detail
    assert "uuid" in found[2].detail and "required" in found[2].detail


def test_mismatches_fail_the_test_at_teardown():
    fake = ManagementApiFake("clustered")
    with pytest.raises(SpecMismatchError, match="did not match the spec"):
        with fake.running():
            httpx.get(f"{fake.base_url}/tokens")  # no Authorization header: the spec requires a bearer


# --------------------------------------------------------------------------------------------
# no token in logs


def test_no_token_value_in_logs_or_urls(management_api_fake, tmp_path, caplog):
    fake = management_api_fake
    caplog.set_level(logging.DEBUG)
    issuer, mgmt_value, _ = make_issuer(fake, tmp_path)
    # (1 s: a verify answered 0.4 s after the mint on a loaded CI machine found the token already active)
    fake.activation_delay_s = 1.0
    minted = issuer.mint(mint_request(), None)
    with pytest.raises(TransientError):
        issuer.verify(minted.value)
    deadline = time.monotonic() + 10
    while True:  # until the data plane takes it
        try:
            issuer.verify(minted.value)
            break
        except TransientError:
            assert time.monotonic() < deadline, "the token never became active"
            time.sleep(0.1)
    issuer.list_tokens(None)
    fake.fail_next("delete", 403)
    with pytest.raises(PermanentError):
        issuer.revoke(minted.token_id, None)
    issuer.revoke(minted.token_id, None)
    text = caplog.text
    assert "HTTP Request: POST" in text and "HTTP Request: GET" in text, "httpx's request lines were captured"
    for value in (mgmt_value, minted.value.reveal()):
        assert value not in text
        assert all(value not in call.path and value not in json.dumps(call.query) for call in fake.api.calls)
        assert all(value not in json.dumps(call.query) for call in fake.data.calls)


# --------------------------------------------------------------------------------------------
# the management token read from another policy's store


def _vault_settings(openbao, path: str, token_file: Path) -> dict[str, Any]:
    return {"type": "vault-kv2", "url": openbao.url, "path": path,
            "auth": {"method": "token", "token": {"file": str(token_file)}}}


def _publish(openbao, path: str, token_file: Path, value: str, token_id: str, version: str | None,
             expires_at: datetime | None = None) -> str:
    raw = dict(_vault_settings(openbao, path, token_file))
    raw.pop("type")
    store = VaultKV2Store.from_config(VaultKV2Settings.model_validate(raw), AdapterContext(policy="mgmt"))
    record = TokenRecord(Secret(value), token_id, "influxctl-management", "mgmt", NOW, expires_at)
    return store.publish(record, version)


@pytest.mark.parametrize("management_api_fake", ["clustered"], indirect=True)
def test_management_token_from_a_store_follows_each_rotation(management_api_fake, openbao, kv_path, tmp_path):
    fake = management_api_fake
    vault_token = tmp_path / "vault-token"
    vault_token.write_text(openbao.root_token)
    first, first_id = fake.add_management_token("first")
    version = _publish(openbao, kv_path, vault_token, first, first_id, None)
    settings = ManagementApiSettings.model_validate(
        settings_for(fake, management_token_from=_vault_settings(openbao, kv_path, vault_token)))
    issuer = ManagementApiIssuer.from_config(settings, AdapterContext(policy="db", base_dir=tmp_path))
    issuer.list_tokens(None)
    second, second_id = fake.add_management_token("second")
    _publish(openbao, kv_path, vault_token, second, second_id, version)
    issuer.mint(mint_request(), None)
    assert [c.principal for c in fake.calls()] == [first_id, second_id]

    fake.revoke_management_token(second_id)  # revoked behind rotator's back
    with pytest.raises(PermanentError) as revoked:
        issuer.list_tokens(None)
    assert "HTTP 401" in str(revoked.value)
    assert f"token {second_id}, published by policy 'mgmt'" in revoked.value.hint
    assert f"vault:{openbao.url}/secret/data/{kv_path}" in revoked.value.hint
    assert_clean_message(revoked.value, first, second)


@pytest.mark.parametrize("management_api_fake", ["dedicated"], indirect=True)
def test_management_token_store_problems_are_named(management_api_fake, openbao, kv_path, tmp_path):
    fake = management_api_fake
    root = tmp_path / "root-token"
    root.write_text(openbao.root_token)
    settings = ManagementApiSettings.model_validate(
        settings_for(fake, management_token_from=_vault_settings(openbao, kv_path, root)))
    issuer = ManagementApiIssuer.from_config(settings, AdapterContext(policy="db", base_dir=tmp_path))
    location = f"vault:{openbao.url}/secret/data/{kv_path}"

    with pytest.raises(PermanentError) as empty:
        issuer.list_tokens(None)
    assert str(empty.value) == f"{location} holds no management token"
    assert "rotate or bootstrap that policy first" in empty.value.hint

    value, token_id = fake.add_management_token()
    _publish(openbao, kv_path, root, value, token_id, None, expires_at=NOW - timedelta(minutes=1))
    with pytest.raises(PermanentError, match=f"token {token_id}, policy 'mgmt'.*expired"):
        issuer.list_tokens(None)

    denied = tmp_path / "denied-token"
    denied.write_text(openbao.create_token(openbao.policy_for("other-path", f"{kv_path}-other", "read")))
    settings = ManagementApiSettings.model_validate(
        settings_for(fake, management_token_from=_vault_settings(openbao, kv_path, denied)))
    issuer = ManagementApiIssuer.from_config(settings, AdapterContext(policy="db", base_dir=tmp_path))
    with pytest.raises(PermanentError) as unreadable:
        issuer.list_tokens(None)
    assert str(unreadable.value).startswith(f"cannot read the management token from {location}: ")
    assert "HTTP 403" in str(unreadable.value)
    assert "another policy rotates" in unreadable.value.hint
    assert fake.calls() == [], "no Management API call without a management token"


# --------------------------------------------------------------------------------------------
# settings


BASE = {
    "product": "clustered",
    "cluster_host": "https://cluster.example.test",
    "permissions": [{"action": "read", "resource": "telemetry"}],
    "verify": {"database": "telemetry"},
    "management_token": {"env": "MGMT_TOKEN"},
}
DEDICATED = {**BASE, "product": "dedicated", "account_id": "11111111-1111-4111-8111-111111111111",
             "cluster_id": "33333333-3333-4333-8333-333333333333"}


def test_settings_defaults():
    clustered = ManagementApiSettings.model_validate({**BASE, "cluster_host": "cluster.example.test:8443/"})
    assert clustered.cluster_host == "https://cluster.example.test:8443"
    assert clustered.management_base == "https://cluster.example.test:8443/api/v0"
    assert clustered.verify.query == "SHOW MEASUREMENTS LIMIT 1"
    dedicated = ManagementApiSettings.model_validate(DEDICATED)
    assert dedicated.management_base == "https://console.influxdata.com/api/v0"
    assert ManagementApiSettings.model_json_schema()["title"] == "ManagementApiSettings"


BAD_SETTINGS = [
    ("dedicated without ids", {**BASE, "product": "dedicated"}, "needs account_id and cluster_id"),
    ("ids on clustered", {**BASE, "account_id": DEDICATED["account_id"]}, "are for product 'dedicated'"),
    ("id not a uuid", {**DEDICATED, "cluster_id": "my-cluster"}, "must be a UUID"),
    ("inline token", {**BASE, "management_token": "M.V1.abc"}, "inline secrets are refused"),
    ("no token", {k: v for k, v in BASE.items() if k != "management_token"}, "give exactly one of"),
    ("two tokens", {**BASE, "management_token_from": {"type": "vault-kv2"}}, ""),
    ("unreadable verify db", {**BASE, "verify": {"database": "other"}}, "is not readable with `permissions`"),
    ("write only", {**BASE, "permissions": [{"action": "write", "resource": "*"}]}, "is not readable"),
    ("bad action", {**BASE, "permissions": [{"action": "admin", "resource": "x"}]}, "'read' or 'write'"),
    ("long resource", {**BASE, "permissions": [{"action": "read", "resource": "x" * 65}]}, "at most 64"),
    ("no permissions", {**BASE, "permissions": []}, "at least 1"),
    ("host with path", {**BASE, "cluster_host": "https://h.example/api/v0"}, "without a path"),
    ("base url creds", {**BASE, "base_url": "https://u:p@h.example/api/v0"}, "must not carry credentials"),
    ("ftp", {**BASE, "base_url": "ftp://h.example"}, "https:// address"),
    ("unknown store", {**{k: v for k, v in BASE.items() if k != "management_token"},
                       "management_token_from": {"type": "no-such-store"}}, "no store adapter named 'no-such-store'"),
    ("bad store settings", {**{k: v for k, v in BASE.items() if k != "management_token"},
                            "management_token_from": {"type": "vault-kv2", "url": "https://v.example"}},
     "settings of store 'vault-kv2' are invalid: path: Field required; auth: Field required"),
    ("ca without verify", {**BASE, "tls_verify": False, "ca_bundle": "ca.pem"}, "has no effect"),
]


@pytest.mark.parametrize(("raw", "words"), [pytest.param(raw, words, id=name) for name, raw, words in BAD_SETTINGS])
def test_bad_settings_are_refused_with_a_clear_message(raw, words):
    with pytest.raises(ValidationError) as caught:
        ManagementApiSettings.model_validate(raw)
    messages = " | ".join(f"{e['loc']}: {e['msg']}" for e in caught.value.errors(include_input=False))
    assert words in messages
    assert "M.V1.abc" not in messages


def test_policy_file_problems_name_the_place(tmp_path):
    data = {"policy": [{
        "name": "db", "schedule": "30d",
        "issuer": {**{k: v for k, v in BASE.items() if k != "management_token"}, "type": "management-api",
                   "management_token_from": {"type": "vault-kv2", "url": "https://v.example", "path": "p",
                                             "auth": {"method": "token", "token": "s.inline"}}},
        "store": [{"type": "vault-kv2", "url": "https://v.example", "path": "db",
                   "auth": {"method": "token", "token": {"file": "t"}}}],
    }]}
    with pytest.raises(PolicyFileError) as caught:
        parse_config(data, tmp_path / "rotator.toml")
    assert "policy[0] 'db'.issuer.management_token_from.auth.token: inline secrets are refused" in str(caught.value)
    assert "s.inline" not in str(caught.value)


def test_an_inline_management_token_is_not_echoed_by_the_policy_loader(tmp_path):
    data = {"policy": [{
        "name": "db", "schedule": "30d", "issuer": {**BASE, "type": "management-api", "management_token": "M.V1.abc"},
        "store": [{"type": "vault-kv2", "url": "https://v.example", "path": "db",
                   "auth": {"method": "token", "token": {"file": "t"}}}],
    }]}
    with pytest.raises(PolicyFileError) as caught:
        parse_config(data, tmp_path / "rotator.toml")
    assert "issuer.management_token: inline secrets are refused" in str(caught.value)
    assert "M.V1.abc" not in str(caught.value)


def test_missing_credential_file_is_a_config_error(management_api_fake, tmp_path):
    fake = management_api_fake
    settings = ManagementApiSettings.model_validate(settings_for(fake, tmp_path / "absent"))
    issuer = ManagementApiIssuer.from_config(settings, AdapterContext(policy="db", base_dir=tmp_path))
    with pytest.raises(ConfigError, match="cannot read credential file"):
        issuer.list_tokens(None)
    assert fake.calls() == []


# --------------------------------------------------------------------------------------------
# hardening


@pytest.mark.parametrize("token_id", [
    "--force", "not-a-uuid", "55555555-5555-4555-8555-555555555555/..", "../../accounts",
    "55555555-5555-4555-8555-55555555555%2F", "55555555-5555-4555-8555-555555555555\n",
])
def test_a_token_id_that_is_not_a_uuid_is_refused_before_any_request(management_api_fake, tmp_path, token_id):
    """Issue 10 §2(c): ids go into the URL path; only UUIDs do (percent-encoded anyway)."""
    issuer, _, _ = make_issuer(management_api_fake, tmp_path)
    before = len(management_api_fake.api.calls)
    with pytest.raises(PermanentError, match="is not a database token id") as err:
        issuer.revoke(token_id, None)
    assert "correct the record" in err.value.hint
    assert len(management_api_fake.api.calls) == before


def test_answers_nested_thousands_deep_are_issuer_output_errors(tmp_path):
    """Issue 11.10: a RecursionError inside the JSON decoder is a clear error, also in an error answer."""
    deep = ("[" * 3000 + "]" * 3000).encode()
    (tmp_path / "t").write_text("M.V1.not-a-real-token-0000")
    settings = ManagementApiSettings.model_validate({
        "product": "clustered", "cluster_host": "https://cluster.example.test",
        "permissions": [{"action": "read", "resource": "*"}], "verify": {"database": "x"},
        "management_token": {"file": str(tmp_path / "t")},
    })

    def issuer_answering(statuses: dict[str, int]) -> ManagementApiIssuer:
        def answer(request: httpx.Request) -> httpx.Response:
            status = statuses[request.method]
            return httpx.Response(status, content=b"" if status == 204 else deep)

        client = httpx.Client(transport=httpx.MockTransport(answer))
        return ManagementApiIssuer.from_config(settings, AdapterContext(policy="db", base_dir=tmp_path), client=client)

    issuer = issuer_answering({"GET": 200, "DELETE": 204})
    with pytest.raises(IssuerOutputError, match="nested too deeply"):
        issuer.list_tokens(None)
    with pytest.raises(IssuerOutputError, match="nested too deeply"):  # the GET that confirms the DELETE
        issuer.revoke("55555555-5555-4555-8555-555555555555", None)
    with pytest.raises(TransientError, match=r"HTTP 500$"):  # an error answer's text is dropped, nothing escapes
        issuer_answering({"GET": 500}).list_tokens(None)


def test_call_timeout_seconds(management_api_fake, tmp_path):
    issuer, _, _ = make_issuer(management_api_fake, tmp_path)  # timeout_s = 2, the token from a file
    # revoke: DELETE, GET and (after a 404) the listing, each connect + write + read plus a margin.
    assert issuer.call_timeout_seconds == 3 * (3 * 2 + 5)


def test_a_minted_token_id_that_is_not_a_uuid_is_refused_and_not_logged(tmp_path, caplog):
    """An id revoke would refuse later (it goes into a URL path) is refused at mint, before it is
    logged or recorded: whatever a server or proxy put there may be a secret."""
    odd = "c2VjcmV0LXZhbHVlLWZyb20tYS1wcm94eQ=="
    answer = {"id": odd, "accessToken": "apiv1_value-of-the-new-token", "expiresAt": "2030-01-01T00:00:00Z"}
    issuer = mocked_issuer(tmp_path, lambda request: httpx.Response(200, json=answer))
    caplog.set_level(logging.DEBUG)
    with pytest.raises(IssuerOutputError, match="token `id` is not a UUID") as err:
        issuer.mint(mint_request(), None)
    assert odd not in str(err.value) and odd not in caplog.text


@pytest.mark.parametrize(("answer", "gone"), [
    (httpx.Response(404, json={"code": 404, "message": "not found"}), True),  # the API's own (spec: NotFound)
    (httpx.Response(404, text="<html>Not Found</html>"), False),  # a proxy's or a router's
])
def test_only_the_api_s_own_404_means_a_revoked_token_is_gone(tmp_path, answer, gone):
    """revoke's DELETE and its confirming GET both allow 404 (an unknown id counts as revoked, once the
    listing agrees); a 404 that is not the Management API's says nothing about the token and is transient."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/tokens"):
            return httpx.Response(200, json=[])  # the listing: the token is not there
        return answer

    issuer = mocked_issuer(tmp_path, handler)
    token_id = "55555555-5555-4555-8555-555555555555"
    if gone:
        issuer.revoke(token_id, None)
    else:
        with pytest.raises(TransientError, match="HTTP 404 without the Management API's `not found` answer"):
            issuer.revoke(token_id, None)


_GATEWAY_404 = {"code": 404, "message": "The current request is not defined by this API."}  # ESPv2's shape


def _listed(revoked_at: str | None = None) -> dict[str, Any]:
    row = {"id": "55555555-5555-4555-8555-555555555555", "description": "rotator:db:run1", "permissions": [],
           "createdAt": "2026-01-01T00:00:00Z"}
    return row if revoked_at is None else {**row, "revokedAt": revoked_at}


@pytest.mark.parametrize(("listing", "gone"), [
    ([_listed()], False),  # listed active: the 404 was a gateway's, the token still works
    ([_listed(revoked_at="1970-01-01T00:00:00Z")], False),  # the zero time: unset, still active
    ([_listed(revoked_at="2026-01-02T00:00:00Z")], True),  # listed revoked
    ([], True),  # not listed: gone
    ([{**_listed(), "id": "66666666-6666-4666-8666-666666666666"}], True),  # only another token listed
], ids=["listed-active", "listed-zero-revoked-at", "listed-revoked", "not-listed", "another-listed"])
@pytest.mark.parametrize("delete", [404, 204])
def test_a_json_404_for_the_token_is_confirmed_by_the_listing(tmp_path, caplog, listing, gone, delete):
    """A gateway that routes /tokens but not /tokens/{id} answers DELETE and GET with its own JSON
    ``{"code": 404, ...}``, the API's shape: taken for "gone", the revocation would be recorded done while
    the token stays live (an orphan). The listing decides, as influxdb3's revoke confirms its DELETE."""
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(f"{request.method} {request.url.path.rsplit('/', 1)[-1]}")
        if request.url.path.endswith("/tokens"):
            return httpx.Response(200, json=listing)
        if request.method == "DELETE" and delete == 204:
            return httpx.Response(204)
        return httpx.Response(404, json=_GATEWAY_404)

    issuer = mocked_issuer(tmp_path, handler)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        if gone:
            issuer.revoke(TOKEN_ID, None)
        else:
            with pytest.raises(TransientError) as caught:
                issuer.revoke(TOKEN_ID, None)
            text = str(caught.value)
            which = "DELETE and GET" if delete == 404 else "GET"
            assert f"the server contradicts itself, {which} answered 404 (not found) for the token" in text
            assert "listing of the cluster's tokens shows it active" in text and TOKEN_ID in text
            assert "`base_url`" in caught.value.hint and "/tokens/{id}" in caught.value.hint
    assert calls == ["DELETE " + TOKEN_ID, "GET " + TOKEN_ID, "GET tokens"]
    assert "M.V1.not-a-real-token" not in caplog.text


def test_a_failed_delete_is_raised_when_the_listing_contradicts_the_get_s_404(tmp_path):
    """DELETE failed (HTTP 500) and GET answered a JSON 404 while the listing shows the token active:
    the DELETE's failure is what is raised, not a success."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/tokens"):
            return httpx.Response(200, json=[_listed()])
        if request.method == "DELETE":
            return httpx.Response(500, json={"code": 500, "message": "internal error"})
        return httpx.Response(404, json=_GATEWAY_404)

    with pytest.raises(TransientError, match=r"revoke database token .* failed: HTTP 500"):
        mocked_issuer(tmp_path, handler).revoke(TOKEN_ID, None)


def test_a_listing_that_fails_after_a_404_is_no_revocation(tmp_path):
    """The listing that would confirm a 404 fails: its error is raised (the token may still work)."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/tokens"):
            return httpx.Response(503, json={"code": 503, "message": "unavailable"})
        return httpx.Response(404, json={"code": 404, "message": "not found"})

    with pytest.raises(TransientError, match=r"list database tokens to confirm that token .* is gone failed: HTTP 503"):
        mocked_issuer(tmp_path, handler).revoke(TOKEN_ID, None)


@pytest.mark.parametrize("delete", [httpx.Response(204), httpx.ReadTimeout("timed out")], ids=["deleted", "timed-out"])
@pytest.mark.parametrize("confirm", [httpx.Response(204), httpx.Response(200)], ids=["204", "200-empty"])
def test_an_empty_answer_to_the_confirming_get_is_not_a_revocation(tmp_path, delete, confirm):
    """Only the API's own 404 says the token is gone, and only a token with ``revokedAt`` that it is
    revoked: a 2xx without a body (a gateway's?) proves neither, whatever the DELETE answered."""

    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "DELETE":
            if isinstance(delete, Exception):
                raise delete
            return delete
        return confirm

    issuer = mocked_issuer(tmp_path, answer)
    with pytest.raises(RotatorError) as caught:
        issuer.revoke("55555555-5555-4555-8555-555555555555", None)
    if isinstance(delete, Exception):
        assert isinstance(caught.value, TransientError), "the DELETE's own failure is what is reported"
    else:
        assert isinstance(caught.value, IssuerOutputError) and "has no body" in str(caught.value)


def test_a_401_of_the_data_plane_is_not_yet_accepted(management_api_fake, tmp_path):
    """As the other HTTP issuers say it: "not accepted (yet)", which the engine retries after a mint
    and stops at once on at bootstrap (a person's revoked token will not become active)."""
    from rotator.core.errors import NotYetAccepted

    fake = management_api_fake
    issuer, _, _ = make_issuer(fake, tmp_path)
    minted = issuer.mint(mint_request(), None)
    issuer.verify(minted.value)
    issuer.revoke(minted.token_id, None)
    with pytest.raises(NotYetAccepted) as err:
        issuer.verify(minted.value)
    assert "HTTP 401" in str(err.value) and "become active" in err.value.hint
    assert_clean_message(err.value, minted.value.reveal())


@pytest.mark.parametrize(("status", "plane"), [(429, "management"), (503, "management"), (503, "data")])
def test_a_retry_after_is_on_the_transient_error(tmp_path, status, plane):
    """The Management API's (or the data plane's) Retry-After: seconds, or an HTTP-date, read against
    the answer's own Date."""

    def answer(request: httpx.Request) -> httpx.Response:
        headers = {"Retry-After": "Wed, 21 Oct 2026 07:28:30 GMT", "Date": "Wed, 21 Oct 2026 07:28:00 GMT"}
        return httpx.Response(status, headers=headers, json={"code": status, "message": "busy"})

    issuer = mocked_issuer(tmp_path, answer)
    with pytest.raises(TransientError) as err:
        if plane == "data":
            issuer.verify(Secret("apiv1_" + "2" * 80))
        else:
            issuer.list_tokens(None)
    assert err.value.retry_after == 30
    assert f"HTTP {status}" in str(err.value) and "asks to wait 30s" in str(err.value)


@pytest.mark.parametrize("operation", ["create", "list", "delete", "verify"])
@pytest.mark.parametrize("status", [501, 505, 520, 524])
def test_every_5xx_is_transient(tmp_path, status, operation):
    """Every 5xx, not only 500/502/503/504: a gateway's 524 on a create says nothing of whether the
    cluster made the token (the engine then searches for it by its tag), where a PermanentError is
    taken for "nothing was created". Its Retry-After is honoured as for the others."""

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, headers={"Retry-After": "7"}, json={"code": status, "message": "gateway"})

    issuer = mocked_issuer(tmp_path, answer)
    calls = {
        "create": lambda: issuer.mint(mint_request(), None),
        "list": lambda: issuer.list_tokens(None),
        "delete": lambda: issuer.revoke("55555555-5555-4555-8555-555555555555", None),
        "verify": lambda: issuer.verify(Secret("apiv1_" + "2" * 80)),
    }
    with pytest.raises(RotatorError) as err:
        calls[operation]()
    assert type(err.value) is TransientError
    assert f"HTTP {status}" in str(err.value) and err.value.retry_after == 7


STORED_TOKEN = "apiv1_" + "m" * 40


@pytest.mark.parametrize("stored", [STORED_TOKEN + "\n", STORED_TOKEN + " ", " " + STORED_TOKEN,
                                    "apiv1_mm mm", STORED_TOKEN + "\x7f", "apiv1_mmé"])
def test_a_management_token_from_a_store_that_no_header_carries_is_named_not_unreachable(
    management_api_fake, tmp_path, stored
):
    """A store payload written by hand with a line break: h11 refused the header, and that read as
    "cannot reach the cluster" (transient, retried for ever, a hint about the network). It is the
    store's payload that is wrong: a permanent error naming the store and how to repair it, never
    the value, and no request sent."""
    from rotator.core.errors import MalformedPayload
    from rotator.testing.memory import MemoryStore

    fake = management_api_fake
    store = MemoryStore("mgmt-token")
    store.publish(TokenRecord(Secret(stored), "mgmt-1", "influxctl-management", "mgmt", NOW, None), None)
    token_file = tmp_path / "unused"
    settings = ManagementApiSettings.model_validate(settings_for(fake, token_file))
    issuer = ManagementApiIssuer.from_config(settings, AdapterContext(policy="db", base_dir=tmp_path),
                                             token_store=store)
    with pytest.raises(MalformedPayload) as err:
        issuer.list_tokens(None)
    text = f"{err.value} {err.value.hint}"
    assert store.location in str(err.value) and "token mgmt-1, policy 'mgmt'" in str(err.value)
    assert "white space, a control character" in str(err.value)
    assert "rotator bootstrap mgmt --replace" in err.value.hint
    assert "mmmm" not in text and "apiv1_mm" not in text
    assert fake.calls() == [], "nothing sent"


def test_a_management_token_file_that_no_header_carries_is_a_config_error(management_api_fake, tmp_path):
    issuer, _, _ = make_issuer(management_api_fake, tmp_path)
    (tmp_path / "mgmt-token").write_text("apiv1_abc def\n")
    with pytest.raises(ConfigError, match="white space or a character that is not ASCII") as err:
        issuer.list_tokens(None)
    assert "mgmt-token" in str(err.value) and "abc" not in f"{err.value} {err.value.hint}"
    assert management_api_fake.calls() == []


@pytest.mark.parametrize(("access_token", "kept"), [
    ("  apiv1_new-token-value  ", "apiv1_new-token-value"),
    ("apiv1_new-token-value\n", "apiv1_new-token-value"),
    ("apiv1_new token", None),
    ("apiv1_new\x01token", None),
    ("apiv1_new-tokén", None),
])
def test_a_minted_access_token_is_one_word_of_ascii_without_surrounding_space(tmp_path, access_token, kept):
    """As the other HTTP issuers read a new token (http_common.token_value): surrounding white space
    is not part of it (kept, it would reach every store and fail every consumer's header); a value
    no header can carry is no usable token."""
    token_id = "55555555-5555-4555-8555-555555555555"
    answer = {"id": token_id, "accessToken": access_token, "expiresAt": "2030-01-01T00:00:00Z"}
    issuer = mocked_issuer(tmp_path, lambda request: httpx.Response(200, json=answer))
    if kept is None:
        with pytest.raises(IssuerOutputError, match=f"token {token_id} was created, but .* no usable `accessToken`"):
            issuer.mint(mint_request(), None)
    else:
        assert issuer.mint(mint_request(), None).value.reveal() == kept


@pytest.mark.parametrize(("answered_id", "confirmed"), [
    ("66666666-6666-4666-8666-666666666666", False),  # another token's revokedAt proves nothing
    ("55555555-5555-4555-8555-555555555555".upper(), True),  # a UUID in capitals is the same id
])
def test_the_confirming_get_must_be_about_the_revoked_token(tmp_path, answered_id, confirmed):
    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "DELETE":
            return httpx.Response(204)
        return httpx.Response(200, json={"id": answered_id, "description": "x", "createdAt": "2025-01-01T00:00:00Z",
                                         "revokedAt": "2025-01-02T00:00:00Z"})

    issuer = mocked_issuer(tmp_path, answer)
    if confirmed:
        issuer.revoke("55555555-5555-4555-8555-555555555555", None)
    else:
        with pytest.raises(IssuerOutputError, match="is not database token 55555555-5555-4555-8555-555555555555"):
            issuer.revoke("55555555-5555-4555-8555-555555555555", None)


@pytest.mark.parametrize("when", ["9999-12-31T23:30:00-01:00", "0001-01-01T00:30:00+01:00"])
def test_a_time_whose_utc_is_past_what_a_datetime_holds_is_an_issuer_output_error(tmp_path, when):
    """A valid RFC 3339 text whose UTC time falls outside years 1-9999: the module's output error, not
    an OverflowError."""
    token = {"id": "55555555-5555-4555-8555-555555555555", "description": "x", "createdAt": when}
    issuer = mocked_issuer(tmp_path, lambda request: httpx.Response(200, json=[token]))
    with pytest.raises(IssuerOutputError, match="`createdAt` is out of range"):
        issuer.list_tokens(None)


TOKEN_ID = "55555555-5555-4555-8555-555555555555"
LOGGER = "rotator.adapters.management_api"


def _token(**times: str) -> dict[str, Any]:
    return {"id": TOKEN_ID, "description": "rotator:db:run1", "permissions": [], **times}


@pytest.mark.parametrize("revoked_at", ["1970-01-01T00:00:00Z", "0001-01-01T00:00:00Z", "2025-12-31T23:59:59Z"],
                         ids=["epoch-zero", "go-zero", "before-createdAt"])
@pytest.mark.parametrize("delete", [500, 204])
def test_a_revoked_at_that_is_unset_or_before_the_creation_does_not_confirm_a_revocation(
    tmp_path, caplog, revoked_at, delete
):
    """influxctl shows an unset time as 1970-01-01T00:00:00Z (facts §1.5), Go's zero time is year 1, and a
    revocation before the token's creation is a proxy's or a broken server's: none proves the token is
    revoked. After a failed DELETE it is the DELETE's failure that is raised (the token may still work:
    counted as revoked it would be an orphan); after a successful one, a TransientError naming the value."""

    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "DELETE":
            return httpx.Response(delete, json={"code": delete, "message": "internal server error"})
        return httpx.Response(200, json=_token(createdAt="2026-01-01T00:00:00Z", revokedAt=revoked_at))

    issuer = mocked_issuer(tmp_path, answer)
    with caplog.at_level(logging.INFO, logger="rotator.adapters.management_api"), \
            pytest.raises(TransientError) as caught:
        issuer.revoke(TOKEN_ID, None)
    text = str(caught.value)
    if delete == 500:
        assert "revoke database token" in text and "HTTP 500" in text
        assert "is revoked although the DELETE failed" not in caplog.text
    else:
        assert f"GET answers revokedAt {revoked_at!r}, which is no revocation" in text
        assert "revoke the token by hand" in caught.value.hint


@pytest.mark.parametrize("unset", ["1970-01-01T00:00:00Z", "1970-01-01T01:00:00+01:00", "0001-01-01T00:00:00Z"])
def test_the_zero_times_are_read_as_unset_in_a_listing(tmp_path, unset):
    """As the influxctl parser reads them (common.parse_timestamp): an unset revokedAt or expiresAt sent as
    the zero time is no revocation and no expiry, so the token lists active (the tag sweep revokes it)."""
    listed = [_token(createdAt=unset, expiresAt=unset, revokedAt=unset)]
    issuer = mocked_issuer(tmp_path, lambda request: httpx.Response(200, json=listed))
    [info] = issuer.list_tokens(None)
    assert (info.created_at, info.expires_at, info.revoked_at) == (None, None, None)
    assert info.is_active(datetime.now(UTC))


def test_a_listed_revocation_or_expiry_before_the_creation_is_read_as_unset(tmp_path, caplog):
    """A revokedAt before createdAt (or an expiresAt not after it) is not what the API sets: read as a time
    it would make a live token inactive, and a token listed inactive is never revoked. Warned about."""
    listed = [_token(createdAt="2026-01-01T00:00:00Z", expiresAt="2026-01-01T00:00:00Z",
                     revokedAt="2025-12-31T23:59:59.5Z"),
              _token(createdAt="2026-01-01T00:00:00Z", expiresAt="2026-01-01T00:00:01Z",
                     revokedAt="2026-01-01T00:00:00Z") | {"id": "66666666-6666-4666-8666-666666666666"}]
    issuer = mocked_issuer(tmp_path, lambda request: httpx.Response(200, json=listed))
    with caplog.at_level(logging.WARNING, logger="rotator.adapters.management_api"):
        odd, plausible = issuer.list_tokens(None)
    assert odd.revoked_at is None and odd.expires_at is None and odd.is_active(datetime.now(UTC))
    assert "before its createdAt" in caplog.text and "not after its createdAt" in caplog.text
    assert TOKEN_ID in caplog.text
    assert plausible.revoked_at == plausible.created_at == datetime(2026, 1, 1, tzinfo=UTC)
    assert plausible.expires_at == datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC)


@pytest.mark.parametrize("text", ["2026-01-02T03:04:05z", "2026-01-02t03:04:05Z", "2026-01-02t03:04:05.5z"])
def test_lower_case_t_and_z_are_rfc_3339(tmp_path, text):
    """RFC 3339 (5.6) allows "t" and "z" in lower case, as http_common.parse_time reads them."""
    issuer = mocked_issuer(tmp_path, lambda request: httpx.Response(200, json=[_token(createdAt=text)]))
    [info] = issuer.list_tokens(None)
    assert info.created_at is not None
    assert info.created_at.replace(microsecond=0) == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.mark.parametrize(("expires_at", "words"), [
    ("1970-01-01T00:00:00Z", "no `expiresAt` (or the zero time"),
    ("0001-01-01T00:00:00Z", "no `expiresAt` (or the zero time"),
    ("2026-01-01T00:00:00Z", "is not after its `createdAt`"),
    ("2025-06-01T00:00:00Z", "is not after its `createdAt`"),
])
def test_a_minted_expiry_that_is_unset_or_not_after_the_creation_is_no_expiry(tmp_path, caplog, expires_at, words):
    """The create answer's expiresAt as the zero time (unset) or at/before its createdAt is not an expiry the
    API set: the token may never expire, so it is recorded without one (never as expired), with a warning."""
    answer = {"id": TOKEN_ID, "accessToken": "apiv1_value-of-the-new-token", "createdAt": "2026-01-01T00:00:00Z",
              "expiresAt": expires_at}
    issuer = mocked_issuer(tmp_path, lambda request: httpx.Response(200, json=answer))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        minted = issuer.mint(mint_request(), None)
    assert minted.expires_at is None
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == LOGGER]
    assert words in warning and TOKEN_ID in warning and "rotator still revokes it" in warning
    assert "apiv1_value" not in caplog.text


def test_a_minted_expiry_after_the_creation_is_kept_and_an_unreadable_creation_ignored(tmp_path, caplog):
    answer = {"id": TOKEN_ID, "accessToken": "apiv1_value-of-the-new-token", "createdAt": "yesterday",
              "expiresAt": "2030-01-01T00:00:00Z"}
    issuer = mocked_issuer(tmp_path, lambda request: httpx.Response(200, json=answer))
    with caplog.at_level(logging.WARNING, logger="rotator.adapters.management_api"):
        assert issuer.mint(mint_request(), None).expires_at == datetime(2030, 1, 1, tzinfo=UTC)
        answer["createdAt"] = "2026-01-01T00:00:00Z"
        assert issuer.mint(mint_request(), None).expires_at == datetime(2030, 1, 1, tzinfo=UTC)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and r.name == LOGGER]
