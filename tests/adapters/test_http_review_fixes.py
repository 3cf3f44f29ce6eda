"""Fixes from the review of the HTTP issuers (``influxdb3``, ``influxdb2``, ``management-api``, common.py).

- a year past 9999 in system.tokens (InfluxDB 3 prints ``+22025-...``) is a far-future time, and
  an unreadable time of a token that is not the policy's no longer fails every listing;
- a 3xx answer gets a redirect hint naming where it points (scheme, host, port only);
- a Management API answer with an integer Python refuses to read is an IssuerOutputError;
- an error body is redacted before it is cut, so no piece of a known secret survives the cut;
- a base_url with a path is refused, and InfluxDB v2's ``path not found`` is no "gone";
- a server address with a ``?`` or ``#``, even an empty one, is refused;
- verify of an admin kind refuses an empty system.tokens answer, as a listing does.

Each test goes through the issuers' transport seam (``httpx.MockTransport``): the fakes cannot
send these answers.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from rotator.adapters.aws.secretsmanager import AwsSecretsManagerSettings
from rotator.adapters.http.common import error_text, parse_time, redact_detail
from rotator.adapters.http.influxdb2 import InfluxDB2Issuer, InfluxDB2Settings
from rotator.adapters.http.influxdb3 import InfluxDB3Issuer, InfluxDB3Settings
from rotator.adapters.http.management_api import ManagementApiIssuer, ManagementApiSettings
from rotator.adapters.vault.kv2 import VaultKV2Settings
from rotator.config.schedule import format_duration
from rotator.config.timefmt import rfc3339_micro
from rotator.core.contracts import AdapterContext
from rotator.core.errors import IssuerOutputError, PermanentError, TransientError
from rotator.core.secret import Secret

ADMIN = Secret("apiv3_" + "A" * 60)
ORG = "0123456789abcdef"
AUTH_ID = "0a1b2c3d4e5f6a7b"
ENV = "ADMIN_FOR_HTTP_REVIEW_FIXES"
OURS = "rotator-app-0123456789abcdef"
CREATED = "2025-06-01T10:00:00.123"
#: What a year past 9999 is read as (common.FAR_FUTURE)
FAR_FUTURE = datetime.max.replace(tzinfo=UTC)


def v3(handler: Any, **settings: Any) -> InfluxDB3Issuer:
    model = InfluxDB3Settings.model_validate(
        {"base_url": "https://influx.example.test:8181", "credential": "self", **settings}
    )
    return InfluxDB3Issuer.from_config(model, AdapterContext(policy="app"), transport=httpx.MockTransport(handler))


def v2(handler: Any, monkeypatch: pytest.MonkeyPatch, url: str = "http://influx.example.test:8086") -> InfluxDB2Issuer:
    monkeypatch.setenv(ENV, "x" * 40)
    model = InfluxDB2Settings.model_validate({
        "base_url": url, "org_id": ORG, "credential": {"env": ENV},
        "permissions": [{"action": "read", "resource": {"type": "buckets"}}],
    })  # fmt: skip
    return InfluxDB2Issuer.from_config(model, AdapterContext(policy="app"), transport=httpx.MockTransport(handler))


def management(tmp_path: Path, handler: Any) -> ManagementApiIssuer:
    (tmp_path / "t").write_text("M.V1.not-a-real-token-0000")
    settings = ManagementApiSettings.model_validate({
        "product": "clustered", "cluster_host": "https://cluster.example.test",
        "permissions": [{"action": "read", "resource": "*"}], "verify": {"database": "x"},
        "management_token": {"file": str(tmp_path / "t")},
    })  # fmt: skip
    client = httpx.Client(transport=httpx.MockTransport(handler))
    return ManagementApiIssuer.from_config(settings, AdapterContext(policy="db", base_dir=tmp_path), client=client)


def system_tokens(rows: list[dict[str, Any]], deleted: list[str] | None = None) -> Any:
    """A server whose system.tokens holds ``rows`` (JSON lines); a DELETE removes the named row."""
    gone = deleted if deleted is not None else []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v3/query_sql":
            live = [r for r in rows if r["name"] not in gone]
            return httpx.Response(200, content="".join(json.dumps(r) + "\n" for r in live).encode())
        gone.append(request.url.params["token_name"])
        return httpx.Response(200)

    return handler


def row(name: str, expiry: object = None, **extra: Any) -> dict[str, Any]:
    return {"name": name, "hash": "abcdef012", "created_at": CREATED, "expiry": expiry, "permissions": "*:*:*", **extra}


# ------------------------------------------------------------------ a year past 9999 (InfluxDB 3)


@pytest.mark.parametrize("text", ["+22025-06-01T10:00:00.123", "22025-06-01T10:00:00Z", "+10000-01-01T00:00:00+02:00"])
def test_a_year_past_9999_is_read_as_the_far_future(text: str) -> None:
    assert parse_time(text, "t") == FAR_FUTURE


@pytest.mark.parametrize(
    ("text", "problem"),
    [("+22025-13-01T10:00:00", "not an RFC 3339 time"), ("-0001-06-01T10:00:00", "out of range")],
)
def test_an_expanded_year_with_a_wrong_date_or_before_year_1_is_still_refused(text: str, problem: str) -> None:
    with pytest.raises(IssuerOutputError, match=problem):
        parse_time(text, "t")


def test_a_signed_four_digit_year_is_the_plain_year() -> None:
    assert parse_time("+2025-06-01T10:00:00", "t") == datetime(2025, 6, 1, 10, tzinfo=UTC)


def test_the_far_future_survives_what_reports_do_with_an_expiry() -> None:
    """`rotator inventory` / `status` subtract now and format the rest; the journal writes it as text."""
    now = datetime.now(UTC)
    assert FAR_FUTURE > now
    # "…7h44m" in a whole minute: format_duration leaves out a zero part
    assert re.fullmatch(r"\d+d(\d+h)?(\d+m)?(\d+s)?", format_duration(FAR_FUTURE - now))
    assert rfc3339_micro(FAR_FUTURE).startswith("9999-12-31T23:59:59")
    assert FAR_FUTURE.timestamp() > now.timestamp()  # the metrics' expiry gauge


def test_one_far_future_expiry_in_system_tokens_breaks_neither_the_listing_nor_revoke() -> None:
    """A human's token made with ``--expiry 20000y``: the confirming listing of a revoke (after the
    DELETE) failed on it, so every revocation on that server failed for ever."""
    deleted: list[str] = []
    rows = [row("_admin"), row(OURS, "2026-06-01T10:00:00.123"), row("ops-forever", "+22025-06-01T10:00:00.123")]
    issuer = v3(system_tokens(rows, deleted))
    listed = {t.token_id: t for t in issuer.list_tokens(ADMIN)}
    assert listed["ops-forever"].expires_at == FAR_FUTURE
    issuer.revoke(OURS, ADMIN)
    assert deleted == [OURS]


def test_an_unreadable_time_of_someone_elses_token_is_left_unknown_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    odd = "not-a-time-VALUE-Q9"
    rows = [row("_admin"), row(OURS, "2026-06-01T10:00:00.123"), row("ops-odd", odd)]
    with caplog.at_level(logging.WARNING, logger="rotator.adapters.influxdb3"):
        listed = {t.token_id: t for t in v3(system_tokens(rows)).list_tokens(ADMIN)}
    assert listed["ops-odd"].expires_at is None
    assert listed[OURS].expires_at == datetime(2026, 6, 1, 10, 0, 0, 123000, tzinfo=UTC)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "'ops-odd'" in warnings[0] and "`expiry`" in warnings[0], warnings
    assert odd not in warnings[0]


def test_an_unreadable_time_of_the_policys_own_token_fails_with_a_hint_and_the_row_it_is_in() -> None:
    """Rows are numbered from 1, as the lines of the answer are ("line 3 is not JSON")."""
    rows = [row("_admin"), row("ops"), row(OURS, "yesterday")]
    with pytest.raises(IssuerOutputError) as caught:
        v3(system_tokens(rows)).list_tokens(ADMIN)
    assert f"row 3 (token '{OURS}') `expiry` is not an RFC 3339 time" in str(caught.value)
    assert caught.value.hint and "influxdb3 show tokens" in caught.value.hint
    assert "yesterday" not in str(caught.value) + caught.value.hint


def test_the_operator_tokens_own_row_is_the_policys_with_kind_operator() -> None:
    rows = [row("_admin", "yesterday")]
    issuer = v3(system_tokens(rows), kind="operator", allow_no_grace=True)
    with pytest.raises(IssuerOutputError, match="row 1 .*`expiry`"):
        issuer.list_tokens(ADMIN)


# ------------------------------------------------------------------ redirects


def redirect_to(location: str) -> Any:
    return lambda request: httpx.Response(301, headers={"Location": location})


def test_a_redirect_gets_a_redirect_hint_naming_only_the_origin_it_points_to(monkeypatch: pytest.MonkeyPatch) -> None:
    location = "https://login.example.test:8443/sso/start?state=SECRET-STATE#frag"
    issuer = v2(redirect_to(location), monkeypatch)
    with pytest.raises(PermanentError) as caught:
        issuer.list_tokens(None)
    hint = caught.value.hint or ""
    assert "redirect to https://login.example.test:8443," in hint and "`base_url`" in hint, hint
    assert "sso" not in hint + str(caught.value) and "SECRET-STATE" not in hint + str(caught.value)
    assert "server's log" not in hint


def test_a_relative_redirect_names_the_servers_own_origin() -> None:
    issuer = v3(redirect_to("/signin?next=/api/v3/query_sql"))
    with pytest.raises(PermanentError) as caught:
        issuer.list_tokens(ADMIN)
    assert "redirect to https://influx.example.test:8181," in (caught.value.hint or ""), caught.value.hint
    assert "signin" not in (caught.value.hint or "")


def test_management_api_redirect_hint_names_the_origin_and_not_the_path(tmp_path: Path) -> None:
    issuer = management(tmp_path, redirect_to("https://elsewhere.example.test/api/v0/tokens?sig=abc"))
    with pytest.raises(PermanentError) as caught:
        issuer.list_tokens(None)
    hint = caught.value.hint or ""
    assert "redirect to https://elsewhere.example.test:443," in hint and "`base_url`" in hint, hint
    assert "sig=abc" not in hint and "/api/v0/tokens" not in hint


# ------------------------------------------------------------------ management-api: a huge integer


def test_management_api_answer_with_an_integer_of_5000_digits_is_an_issuer_output_error(tmp_path: Path) -> None:
    """Python's json refuses an integer of more than 4300 digits with a bare ValueError ("an adapter bug")."""
    body = '[{"id":"55555555-5555-4555-8555-555555555555","description":"d","n":%s}]' % ("9" * 5000)
    issuer = management(tmp_path, lambda request: httpx.Response(200, content=body.encode()))
    with pytest.raises(IssuerOutputError, match="is not JSON"):
        issuer.list_tokens(None)


# ------------------------------------------------------------------ error bodies: redacted, then cut


def error_response(body: str) -> httpx.Response:
    return httpx.Response(400, content=body.encode(), request=httpx.Request("GET", "https://x/"))


def test_a_known_token_cut_by_the_4096_character_window_leaves_no_piece_in_the_message() -> None:
    known = Secret(base64.urlsafe_b64encode(secrets.token_bytes(64)).decode())  # alive: the redactor knows it
    value = known.reveal()
    shown = redact_detail(error_text(error_response("\n" * 4060 + "Authorization: Token " + value)))
    assert value[:8] not in shown, shown
    assert shown == "Authorization: Token ***"


def test_a_known_secret_of_any_shape_is_redacted_even_past_the_first_redacted_window() -> None:
    """A secret with no token shape (the shapes would not mask its piece): redactions shrink the text, so
    the window that is redacted grows until enough is left past the part kept."""
    secret = Secret("p@ss!word;" * 100)  # 1000 characters, none of the token shapes' alphabet
    body = (secret.reveal() + " ") * 70  # 70 070 bytes: the 64 KiB window ends inside the 66th copy
    text = error_text(error_response(body))
    assert "p@ss" not in text and text.startswith("*** ***"), text[:80]


def test_a_cut_unknown_token_is_dropped_whole_rather_than_shown_in_part() -> None:
    unknown = base64.urlsafe_b64encode(secrets.token_bytes(64)).decode()  # no Secret: the redactor knows none
    shown = redact_detail(error_text(error_response("\n" * 4070 + "token " + unknown)))
    assert unknown[:8] not in shown and shown == "token", shown


def test_an_error_body_within_the_window_is_read_whole() -> None:
    assert error_text(error_response(json.dumps({"error": "database 'x' not found"}))) == "database 'x' not found"
    assert error_text(error_response("word " * 800)).endswith("word")  # 4000 characters: not cut


# ------------------------------------------------------------------ base_url with a path; v2's "path not found"


@pytest.mark.parametrize("model", [InfluxDB2Settings, InfluxDB3Settings])
def test_a_base_url_with_a_path_is_refused(model: type[InfluxDB2Settings] | type[InfluxDB3Settings]) -> None:
    data: dict[str, Any] = {"base_url": "http://influx.example.test:8086/api/v2", "credential": "self"}
    if model is InfluxDB2Settings:
        data |= {"org_id": ORG, "permissions": [{"action": "read", "resource": {"type": "buckets"}}]}
    with pytest.raises(ValidationError, match="without a path"):
        model.model_validate(data)
    assert model.model_validate({**data, "base_url": "http://influx.example.test:8086/"}).base_url == (
        "http://influx.example.test:8086"
    )


#: Each parsed as an empty query or fragment ("" / b"", read as none) and passed validation: the API path
#: was then appended after the ``?`` or ``#``, so every request went to ``/`` (or to ``/api/v0`` itself).
EMPTY_QUERY_OR_FRAGMENT = ["https://h:8181/?", "https://h:8181?", "https://h:8181#", "https://h/api/v0#"]


def address_settings(setting: str, url: str) -> None:
    """Validate the settings of one adapter whose server address ``setting`` is ``url``."""
    permissions: list[dict[str, Any]] = [{"action": "read", "resource": "db"}]
    management = {"product": "clustered", "cluster_host": "https://cluster.example.test",
                  "permissions": permissions, "verify": {"database": "db"}, "management_token": {"env": ENV}}
    if setting == "influxdb2 base_url":
        InfluxDB2Settings.model_validate({"base_url": url, "credential": "self", "org_id": ORG,
                                          "permissions": [{"action": "read", "resource": {"type": "buckets"}}]})
    elif setting == "influxdb3 base_url":
        InfluxDB3Settings.model_validate({"base_url": url, "credential": "self"})
    elif setting == "management-api base_url":
        ManagementApiSettings.model_validate({**management, "base_url": url})
    elif setting == "management-api cluster_host":
        ManagementApiSettings.model_validate({**management, "cluster_host": url})
    elif setting == "vault-kv2 url":
        VaultKV2Settings.model_validate({"url": url, "path": "influx/mgmt",
                                         "auth": {"method": "token", "token": {"env": ENV}}})
    elif setting == "aws endpoint_url":
        AwsSecretsManagerSettings(secret_id="influx/mgmt", region="eu-west-1", endpoint_url=url)
    else:
        AwsSecretsManagerSettings(secret_id="influx/mgmt", region="eu-west-1", sts_endpoint_url=url,
                                  role_arn="arn:aws:iam::123456789012:role/rotator")


SERVER_ADDRESSES = ["influxdb2 base_url", "influxdb3 base_url", "management-api base_url",
                    "management-api cluster_host", "vault-kv2 url", "aws endpoint_url", "aws sts_endpoint_url"]


@pytest.mark.parametrize("setting", SERVER_ADDRESSES)
@pytest.mark.parametrize("url", EMPTY_QUERY_OR_FRAGMENT)
def test_a_server_address_with_an_empty_query_or_fragment_is_refused(setting: str, url: str) -> None:
    with pytest.raises(ValueError, match=r"query or fragment \(a `\?` or `#`.*remove the `\?` or `#`"):
        address_settings(setting, url)


@pytest.mark.parametrize("setting", SERVER_ADDRESSES)
def test_a_server_address_without_query_or_fragment_stays_valid(setting: str) -> None:
    address_settings(setting, "https://h:8181/" if setting != "management-api base_url" else "https://h/api/v0")


def test_management_api_base_url_keeps_its_path() -> None:
    settings = ManagementApiSettings.model_validate({
        "product": "clustered", "cluster_host": "https://cluster.example.test",
        "base_url": "https://cluster.example.test/api/v0",
        "permissions": [{"action": "read", "resource": "*"}], "verify": {"database": "x"},
        "management_token": {"env": ENV},
    })  # fmt: skip
    assert settings.base_url == "https://cluster.example.test/api/v0"


def path_not_found(sent: list[str]) -> Any:
    """InfluxDB v2's router: every path it does not serve answers so."""

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.method)
        return httpx.Response(404, json={"code": "not found", "message": "path not found"})

    return handler


def test_v2_path_not_found_is_not_an_authorization_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[str] = []
    issuer = v2(path_not_found(sent), monkeypatch)
    with pytest.raises(TransientError, match="path not found") as caught:
        issuer.revoke(AUTH_ID, None)
    assert "`base_url`" in (caught.value.hint or "")
    assert sent == ["GET"]  # nothing else was tried, nothing recorded as revoked
    with pytest.raises(TransientError, match="path not found"):
        issuer.token_info(AUTH_ID, None)


def test_v2_authorization_not_found_is_still_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith(AUTH_ID):
            return httpx.Response(404, json={"code": "not found", "message": "authorization not found"})
        return httpx.Response(200, json={"authorizations": [], "links": {}})

    assert v2(handler, monkeypatch).token_info(AUTH_ID, None) is None


# ------------------------------------------------------------------ influxdb3 verify of admin kinds


def test_verify_of_an_admin_token_refuses_an_answer_without_a_row() -> None:
    """The new token is itself a row of system.tokens: an empty 200 (a catch-all host, a proxy) proves nothing."""
    issuer = v3(lambda request: httpx.Response(200, content=b""))
    with pytest.raises(IssuerOutputError, match="no row") as caught:
        issuer.verify(Secret("apiv3_" + "B" * 60))
    assert "`base_url`" in (caught.value.hint or "")


def test_verify_of_an_admin_token_accepts_its_own_row() -> None:
    value = "apiv3_" + "C" * 60
    own_hash = hashlib.sha512(value.encode()).hexdigest()[:9]  # system.tokens shows a hash's first 9 digits
    v3(system_tokens([row("rotator-app-1", hash=own_hash)])).verify(Secret(value))
