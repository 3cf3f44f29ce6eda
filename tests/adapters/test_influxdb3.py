"""The influxdb3 issuer against the spec-validated InfluxDB 3 fake, over real HTTP on loopback.

Every request the issuer sends and every answer it gets is validated against the official Core
(or Enterprise) spec by the fake; the fixture fails a test with any mismatch left. Failures a
spec-valid server cannot send (statuses the spec does not document, TLS errors) go through the
issuer's transport seam (``httpx.MockTransport``) instead.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from rotator.adapters.http.common import map_http_errors
from rotator.adapters.http.influxdb3 import InfluxDB3Issuer, InfluxDB3Settings, operator_token_id
from rotator.core.clock import SystemClock
from rotator.core.contracts import AdapterContext, MintRequest
from rotator.core.errors import ConfigError, IssuerOutputError, NeedsAttention, PermanentError, TransientError
from rotator.core.retry import RetryPolicy, call_with_retry
from rotator.core.secret import Secret
from tests.fakes.influxdb3_fake import InfluxDB3Fake, token_hash
from tests.fakes.openapi_fake import Fault, json_response

POLICY = "app"
DB_WRITE = [{"resource_type": "db", "resource_names": ["sensors"], "actions": ["write"]}]


def make(
    url: str, tmp_path: Path | None = None, transport: httpx.BaseTransport | None = None, **settings: Any
) -> InfluxDB3Issuer:
    settings.setdefault("credential", "self")
    model = InfluxDB3Settings.model_validate({"base_url": url, **settings})
    ctx = AdapterContext(policy=POLICY, base_dir=tmp_path or Path("."))
    return InfluxDB3Issuer.from_config(model, ctx, transport=transport)


def request(run_id: str = "0123456789abcdef", days: float = 30) -> MintRequest:
    return MintRequest(POLICY, run_id, f"rotator:{POLICY}:{run_id}", datetime.now(UTC) + timedelta(days=days))


def mock(handler: Any) -> httpx.MockTransport:
    return httpx.MockTransport(handler)


# ---------------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"kind": "operator"}, "no grace period"),
        ({"kind": "named_admin", "allow_no_grace": True}, "only for kind = 'operator'"),
        ({"kind": "operator", "allow_no_grace": True, "token_name_prefix": "x"}, "no effect with kind = 'operator'"),
        ({"kind": "resource", "credential": {"env": "T"}}, "needs `permissions`"),
        ({"kind": "resource", "permissions": DB_WRITE}, "cannot use credential = 'self'"),
        ({"permissions": DB_WRITE}, "only for kind = 'resource'"),
        ({"token_name_prefix": "bad name"}, "should match pattern"),
        ({"former_token_name_prefixes": ["rotator-app", "bad name"]}, "former_token_name_prefixes.1"),
        ({"former_token_name_prefixes": ["svc\n"]}, "should match pattern"),
        ({"kind": "operator", "allow_no_grace": True, "former_token_name_prefixes": ["x"]}, "have no effect"),
        (
            {
                "kind": "resource",
                "credential": {"env": "T"},
                "permissions": [{"resource_type": "system", "resource_names": ["health"], "actions": ["write"]}],
            },
            "only have the action 'read'",
        ),
        ({"base_url": "https://user:pw@influx.example"}, "must not carry credentials"),
        ({"base_url": "ftp://influx.example"}, "http:// or https://"),
        ({"credential": "the-token-itself"}, "Input should be"),
    ],
)
def test_settings_refuse_what_cannot_work(settings: dict[str, Any], message: str) -> None:
    data = {"base_url": "https://influx.example:8181", "credential": "self", **settings}
    with pytest.raises(ValidationError) as err:
        InfluxDB3Settings.model_validate(data)
    assert message in str(err.value)


def test_settings_accept_each_kind() -> None:
    base = {"base_url": "https://influx.example:8181/"}
    named = InfluxDB3Settings.model_validate({**base, "credential": {"method": "self"}})
    assert named.kind == "named_admin" and named.base_url == "https://influx.example:8181"
    InfluxDB3Settings.model_validate(
        {**base, "credential": {"file": "admin"}, "kind": "resource", "permissions": DB_WRITE}
    )
    InfluxDB3Settings.model_validate({**base, "credential": "self", "kind": "operator", "allow_no_grace": True})


def test_cli_validate_explains_why_operator_needs_allow_no_grace(tmp_path: Path) -> None:
    import subprocess
    import sys

    config = tmp_path / "rotator.toml"
    config.write_text("""
[[policy]]
name = "ops"
schedule = "30d"
[policy.issuer]
type = "influxdb3"
base_url = "https://influx.example:8181"
kind = "operator"
credential = "self"
[[policy.store]]
type = "vault-kv2"
url = "https://vault.example"
path = "influx/ops"
auth = { method = "token", token = { env = "VAULT_TOKEN" } }
""")
    proc = subprocess.run(
        [sys.executable, "-m", "rotator.runners.cli", "validate", str(config)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "policy[0] 'ops'.issuer" in proc.stderr
    assert "revokes the previous value at that very moment" in proc.stderr
    assert "allow_no_grace = true" in proc.stderr


# ---------------------------------------------------------------------------------- named admin


def test_mint_verify_list_revoke_named_admin(influxdb3_fake: InfluxDB3Fake) -> None:
    fake = influxdb3_fake
    current = Secret(fake.add_named_admin("human-bootstrap"))
    issuer = make(fake.url)
    req = request("aaaabbbbccccdddd", days=30)
    minted = issuer.mint(req, current)

    assert minted.token_id == "rotator-app-aaaabbbbccccdddd"
    row = fake.token(minted.token_id)
    assert row is not None and row["permissions"] == "*:*:*"
    # The expiry was explicit: the server's expiry is the one asked for (to the second).
    assert minted.expires_at is not None
    assert abs((minted.expires_at - req.expires_at).total_seconds()) < 2
    assert fake.problem(minted.value.reveal()) is None
    issuer.verify(minted.value)

    infos = {t.token_id: t for t in issuer.list_tokens(current)}
    assert infos[minted.token_id].description == "rotator:app:aaaabbbbccccdddd"  # the engine's tag
    assert infos[minted.token_id].expires_at == minted.expires_at
    assert infos["human-bootstrap"].description == ""  # not ours: no tag
    assert operator_token_id(fake.hash_of("_admin")) in infos

    # Self-rotation: the new named admin token mints and revokes (here: the bootstrap token).
    issuer.revoke("human-bootstrap", minted.value)
    assert "human-bootstrap" not in fake.names()
    assert fake.problem(current.reveal()) == "unknown token"
    issuer.revoke("human-bootstrap", minted.value)  # twice: not an error
    issuer.revoke("never-existed", minted.value)  # unknown: revoked
    assert fake.deleted == ["human-bootstrap"]
    sent = [c for c in fake.api.calls if c.template == "/api/v3/configure/token/named_admin"]
    assert [c.principal for c in sent] == ["human-bootstrap"]


def test_mint_sends_expiry_secs_rounded_up(influxdb3_fake: InfluxDB3Fake) -> None:
    seen: list[dict[str, Any]] = []
    real = httpx.HTTPTransport()

    def spy(req: httpx.Request) -> httpx.Response:
        if req.url.path.endswith("/named_admin"):
            seen.append(json.loads(req.content))
        return real.handle_request(req)

    issuer = make(influxdb3_fake.url, transport=mock(spy))
    issuer.mint(request(days=1), Secret(influxdb3_fake.operator_value))
    assert len(seen) == 1 and seen[0]["token_name"] == "rotator-app-0123456789abcdef"
    assert 86390 <= seen[0]["expiry_secs"] <= 86400


@pytest.mark.parametrize("kind", ["named_admin", "resource"])
def test_an_expiry_the_server_does_not_keep_is_not_recorded_as_kept(
    influxdb3_enterprise_fake: InfluxDB3Fake, caplog: pytest.LogCaptureFixture, kind: str, monkeypatch: Any
) -> None:
    """A server that ignores ``expiry_secs`` answers ``"expiry": null`` (spec: never expires): the
    minted token says no expiry, and a WARNING names the token (never its value)."""
    fake = influxdb3_enterprise_fake
    fake.honours_expiry = False
    monkeypatch.setenv("INFLUXDB3_ADMIN_FOR_TEST", fake.operator_value)
    extra = {"kind": "resource", "permissions": DB_WRITE} if kind == "resource" else {}
    issuer = make(fake.url, credential={"env": "INFLUXDB3_ADMIN_FOR_TEST"}, **extra)
    with caplog.at_level(logging.WARNING, logger="rotator.adapters.influxdb3"):
        minted = issuer.mint(request(), None)
    assert minted.expires_at is None
    assert fake.token(minted.token_id)["expiry"] is None  # type: ignore[index]  # truly no expiry on the server
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    text = warning.getMessage()
    assert minted.token_id in text and "does not expire by itself" in text and "expiry: null" in text
    assert minted.value.reveal() not in caplog.text and fake.operator_value not in caplog.text


@pytest.mark.parametrize(
    ("extra", "confirmed"),
    [
        ({"expiry": "2030-01-02T03:04:05.000Z"}, datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)),  # the server's own
        ({"expiry_secs": "same"}, "asked"),  # a ResourceTokenObject echoing the lifetime asked for
        ({"expiry_secs": 60}, None),  # another lifetime: not the one asked for
        ({}, None),  # no word on the expiry
        ({"expiry": None, "expiry_secs": "same"}, None),  # the server's own null wins over an echo
    ],
)
def test_only_a_confirmed_expiry_is_returned(
    extra: dict[str, Any], confirmed: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INFLUXDB3_ADMIN_FOR_TEST", "apiv3_admin-credential-value")

    def handler(req: httpx.Request) -> httpx.Response:
        sent = json.loads(req.content)
        answer = {"id": 7, "name": sent["token_name"], "token": "apiv3_" + "A" * 86, **extra}
        if answer.get("expiry_secs") == "same":
            answer["expiry_secs"] = sent["expiry_secs"]
        return httpx.Response(201, json=answer)

    req = request()
    issuer = make("http://influx.invalid:8181", transport=mock(handler), kind="resource",
                  credential={"env": "INFLUXDB3_ADMIN_FOR_TEST"}, permissions=DB_WRITE)
    with caplog.at_level(logging.WARNING, logger="rotator.adapters.influxdb3"):
        minted = issuer.mint(req, None)
    expected = req.expires_at.replace(microsecond=0) if confirmed == "asked" else confirmed
    assert minted.expires_at == expected
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert bool(warned) is (expected is None)
    assert all(minted.token_id in w and "AAAA" not in w for w in warned)


def test_token_prefix_setting_and_tags_of_other_prefixes(influxdb3_fake: InfluxDB3Fake) -> None:
    admin = Secret(influxdb3_fake.operator_value)
    issuer = make(influxdb3_fake.url, token_name_prefix="svc-ingest")
    minted = issuer.mint(request("feedfacefeedface"), admin)
    assert minted.token_id == "svc-ingest-feedfacefeedface"
    influxdb3_fake.add_named_admin("rotator-app-feedfacefeedface")  # another prefix: not this policy's
    influxdb3_fake.add_named_admin("svc-ingest-x-y")  # not <prefix>-<run id>
    lambda_run = "0f8fad5b-d9cb-469f-a165-70867728950e"  # the Lambda function's run ids are UUIDs
    assert issuer.mint(request(lambda_run), admin).token_id == f"svc-ingest-{lambda_run}"
    tags = {t.token_id: t.description for t in issuer.list_tokens(admin)}
    assert tags["svc-ingest-feedfacefeedface"] == "rotator:app:feedfacefeedface"
    assert tags[f"svc-ingest-{lambda_run}"] == f"rotator:app:{lambda_run}"
    assert tags["rotator-app-feedfacefeedface"] == "" and tags["svc-ingest-x-y"] == ""


def test_tokens_named_with_a_former_prefix_keep_their_tag(influxdb3_fake: InfluxDB3Fake) -> None:
    admin = Secret(influxdb3_fake.operator_value)
    make(influxdb3_fake.url, token_name_prefix="svc-ingest").mint(request("feedfacefeedface"), admin)
    influxdb3_fake.add_named_admin("svc-other-feedfacefeedface")  # a prefix this policy never used
    issuer = make(influxdb3_fake.url, token_name_prefix="svc-new", former_token_name_prefixes=["svc-ingest"])
    issuer.mint(request("0123456789abcdef"), admin)
    tags = {t.token_id: t.description for t in issuer.list_tokens(admin)}
    assert tags["svc-ingest-feedfacefeedface"] == "rotator:app:feedfacefeedface"
    assert tags["svc-new-0123456789abcdef"] == "rotator:app:0123456789abcdef"
    assert tags["svc-other-feedfacefeedface"] == ""


def test_the_operator_kind_reads_no_tag_from_a_name(influxdb3_fake: InfluxDB3Fake) -> None:
    """Its tokens are generations of _admin; a name under its default prefix is another policy's."""
    influxdb3_fake.add_named_admin("rotator-app-feedfacefeedface")
    issuer = make(influxdb3_fake.url, kind="operator", allow_no_grace=True)
    tags = {t.token_id: t.description for t in issuer.list_tokens(Secret(influxdb3_fake.operator_value))}
    assert tags["rotator-app-feedfacefeedface"] == ""


def test_duplicate_name_is_a_permanent_error_with_a_hint(influxdb3_fake: InfluxDB3Fake) -> None:
    influxdb3_fake.add_named_admin("rotator-app-0123456789abcdef")
    with pytest.raises(PermanentError) as err:
        make(influxdb3_fake.url).mint(request(), Secret(influxdb3_fake.operator_value))
    assert not isinstance(err.value, TransientError)
    assert "HTTP 409" in str(err.value) and "token name already exists" in str(err.value)
    assert "influxdb3 delete token --token-name" in err.value.hint


def test_new_token_answers_401_until_active_and_verify_is_retried(influxdb3_fake: InfluxDB3Fake) -> None:
    influxdb3_fake.activation_delay_s = 1.0
    issuer = make(influxdb3_fake.url)
    minted = issuer.mint(request(), Secret(influxdb3_fake.operator_value))
    with pytest.raises(TransientError) as err:
        issuer.verify(minted.value)
    assert "HTTP 401" in str(err.value) and "verify_timeout" in err.value.hint
    started = time.monotonic()
    call_with_retry(
        lambda: issuer.verify(minted.value),
        what="verify",
        policy=RetryPolicy(20, 0.2, 0.4),
        clock=SystemClock(),
        deadline=datetime.now(UTC) + timedelta(seconds=10),
    )
    assert time.monotonic() - started < 5


def test_the_token_string_is_shown_once(influxdb3_fake: InfluxDB3Fake) -> None:
    issuer = make(influxdb3_fake.url)
    admin = Secret(influxdb3_fake.operator_value)
    minted = issuer.mint(request(), admin)
    value = minted.value.reveal()
    # The listing (what a second look at the server gives) holds 9 digits of the hash, never the value.
    listing = httpx.post(
        f"{influxdb3_fake.url}/api/v3/query_sql",
        json={"db": "_internal", "q": "SELECT * FROM system.tokens", "format": "jsonl"},
        headers={"Authorization": f"Bearer {admin.reveal()}", "Accept": "application/json"},
    )
    assert listing.status_code == 200
    assert value not in listing.text and f'"hash":"{token_hash(value)[:9]}"' in listing.text
    assert all(value not in json.dumps(row) for row in influxdb3_fake.tokens())


def test_self_credential_without_a_current_token_is_a_config_error(influxdb3_fake: InfluxDB3Fake) -> None:
    with pytest.raises(ConfigError) as err:
        make(influxdb3_fake.url).list_tokens(None)
    assert "no token is published yet" in str(err.value) and "rotator bootstrap" in err.value.hint
    assert influxdb3_fake.api.calls == []


def test_credential_from_a_file(influxdb3_fake: InfluxDB3Fake, tmp_path: Path) -> None:
    (tmp_path / "admin-token").write_text(influxdb3_fake.operator_value + "\n")
    issuer = make(influxdb3_fake.url, tmp_path, credential={"file": "admin-token"})
    minted = issuer.mint(request(), Secret("ignored-current-token-value"))
    assert influxdb3_fake.api.calls[-1].principal == "_admin"
    issuer.revoke(minted.token_id, None)
    assert minted.token_id not in influxdb3_fake.names()


def test_named_admin_mode_never_touches_the_operator_token(influxdb3_fake: InfluxDB3Fake) -> None:
    admin = Secret(influxdb3_fake.operator_value)
    operator_id = operator_token_id(influxdb3_fake.hash_of("_admin"))
    with pytest.raises(NeedsAttention) as err:
        make(influxdb3_fake.url).revoke(operator_id, admin)
    assert "never deletes or regenerates" in str(err.value) and "named admin token" in err.value.hint
    assert influxdb3_fake.problem(admin.reveal()) is None
    assert not influxdb3_fake.api.calls_to("DELETE", "/api/v3/configure/token")


# ---------------------------------------------------------------------------------- operator


def test_operator_mode_regenerates_and_the_old_value_dies_at_once(influxdb3_fake: InfluxDB3Fake) -> None:
    old = Secret(influxdb3_fake.operator_value)
    old_id = operator_token_id(influxdb3_fake.hash_of("_admin"))
    issuer = make(influxdb3_fake.url, kind="operator", allow_no_grace=True)
    assert any(t.token_id == old_id for t in issuer.list_tokens(old))  # what bootstrap looks for

    minted = issuer.mint(request(), old)
    assert minted.token_id == operator_token_id(token_hash(minted.value.reveal())) != old_id
    assert influxdb3_fake.problem(old.reveal()) == "unknown token"  # no grace at all
    issuer.verify(minted.value)
    issuer.revoke(old_id, minted.value)  # a past generation: confirmed dead, nothing sent
    assert not influxdb3_fake.api.calls_to("DELETE", "/api/v3/configure/token")
    assert len(influxdb3_fake.api.calls_to("POST", "/api/v3/configure/token/admin/regenerate")) == 1

    # Revoking the live generation would need another regeneration: refused, loudly.
    with pytest.raises(NeedsAttention) as err:
        issuer.revoke(minted.token_id, minted.value)
    assert "current value" in str(err.value) and "Recovering the operator token" in err.value.hint
    # With the dead value as credential (a run that died before publishing), the hint says why.
    with pytest.raises(PermanentError) as dead:
        issuer.revoke(minted.token_id, old)
    assert "HTTP 401" in str(dead.value) and "stores hold a dead value" in dead.value.hint
    assert influxdb3_fake.problem(minted.value.reveal()) is None


def test_only_the_operator_token_may_regenerate(influxdb3_fake: InfluxDB3Fake) -> None:
    named = Secret(influxdb3_fake.add_named_admin("not-the-operator"))
    issuer = make(influxdb3_fake.url, kind="operator", allow_no_grace=True)
    with pytest.raises(PermanentError) as err:
        issuer.mint(request(), named)
    assert "HTTP 401" in str(err.value) and "current _admin value" in err.value.hint


# ---------------------------------------------------------------------------------- resource tokens


def test_resource_token_on_enterprise(influxdb3_enterprise_fake: InfluxDB3Fake, monkeypatch: Any) -> None:
    fake = influxdb3_enterprise_fake
    monkeypatch.setenv("INFLUXDB3_ADMIN_FOR_TEST", fake.operator_value)
    issuer = make(fake.url, kind="resource", credential={"env": "INFLUXDB3_ADMIN_FOR_TEST"}, permissions=DB_WRITE)
    minted = issuer.mint(request(), None)
    assert fake.token(minted.token_id)["permissions"] == "db:sensors:write"  # type: ignore[index]
    before = len(fake.api.calls)
    issuer.verify(minted.value)  # SELECT 1 on sensors: 403 for a write-only token = accepted
    # ...because a made-up token gets 401 there: the server checked the new token and knew it
    used, decoy = fake.api.calls[before:]
    assert (used.status, used.principal, decoy.status, decoy.principal) == (403, minted.token_id, 401, None)
    assert any(t.description == "rotator:app:0123456789abcdef" for t in issuer.list_tokens(None))
    issuer.revoke(minted.token_id, None)
    assert minted.token_id not in fake.names()


def test_resource_token_with_system_permission_is_verified_on_health(
    influxdb3_enterprise_fake: InfluxDB3Fake, tmp_path: Path
) -> None:
    (tmp_path / "admin").write_text(influxdb3_enterprise_fake.operator_value)
    perms = [{"resource_type": "system", "resource_names": ["health"], "actions": ["read"]}]
    issuer = make(
        influxdb3_enterprise_fake.url, tmp_path, kind="resource", credential={"file": "admin"}, permissions=perms
    )
    minted = issuer.mint(request(), None)
    issuer.verify(minted.value)
    decoy, used = influxdb3_enterprise_fake.api.calls[-2:]
    # first a made-up token, refused (so /health checks tokens), then the new one, accepted
    assert (decoy.template, decoy.status, decoy.principal) == ("/health", 401, None)
    assert (used.template, used.status, used.principal) == ("/health", 200, minted.token_id)
    with pytest.raises(TransientError, match="HTTP 401"):  # a value the server never issued: refused
        issuer.verify(Secret("not-a-token-at-all-garbage"))


def _system_token(fake: InfluxDB3Fake, tmp_path: Path, names: list[str]) -> tuple[InfluxDB3Issuer, Secret]:
    (tmp_path / "admin").write_text(fake.operator_value)
    perms = [{"resource_type": "system", "resource_names": names, "actions": ["read"]}]
    issuer = make(fake.url, tmp_path, kind="resource", credential={"file": "admin"}, permissions=perms)
    return issuer, issuer.mint(request(), None).value


@pytest.mark.parametrize("names", [["*"], ["health", "ping", "metrics"], ["health"], ["metrics"]])
def test_a_system_token_is_not_verified_where_the_server_checks_no_token(tmp_path: Path, names: list[str]) -> None:
    """``influxdb3 serve --disable-authz health,ping,metrics``: those answer 200 to any value, and
    /metrics documents nothing but 200 anyway. A 200 there proves nothing: verify fails, with a hint."""
    with InfluxDB3Fake("enterprise", disable_authz={"health", "ping", "metrics"}).running() as fake:
        issuer, value = _system_token(fake, tmp_path, names)
        before = len(fake.api.calls)
        for token in (value, Secret("not-a-token-at-all-garbage")):
            with pytest.raises(PermanentError) as err:
                issuer.verify(token)
            assert not isinstance(err.value, TransientError)
            assert "without checking tokens" in str(err.value) and "--disable-authz" in err.value.hint
            assert "permission" in err.value.hint
        sent = fake.api.calls[before:]
        assert sent and all(c.status == 200 and c.principal is None for c in sent), "only made-up tokens were sent"
        assert value.reveal() not in str(err.value) + err.value.hint


def test_a_system_token_is_verified_on_the_endpoint_that_still_checks_tokens(tmp_path: Path) -> None:
    """``--disable-authz health``: /health proves nothing, /ping still checks: verify uses /ping."""
    with InfluxDB3Fake("enterprise", disable_authz={"health"}).running() as fake:
        issuer, value = _system_token(fake, tmp_path, ["health", "ping"])
        before = len(fake.api.calls)
        issuer.verify(value)
        assert [(c.template, c.status) for c in fake.api.calls[before:]] == [
            ("/health", 200), ("/ping", 401), ("/ping", 200)]  # fmt: skip
        with pytest.raises(TransientError, match="HTTP 401"):
            issuer.verify(Secret("not-a-token-at-all-garbage"))


@pytest.mark.parametrize("checks", [True, False], ids=["metrics-checks-tokens", "metrics-open"])
def test_a_system_token_is_verified_on_metrics_only_where_metrics_refuses_a_made_up_token(checks: bool) -> None:
    """The spec documents only 200 for /metrics; a server that does refuse unknown tokens there
    (no fake can: the spec has no 401 for it) lets /metrics verify; one answering 200 to all does not."""
    new = "apiv3_the-new-token-value"
    seen: list[str] = []

    def handler(req: httpx.Request) -> httpx.Response:
        value = req.headers["Authorization"].removeprefix("Bearer ")
        seen.append(value)
        return httpx.Response(200 if value == new or not checks else 401, text="# metrics")

    perms = [{"resource_type": "system", "resource_names": ["metrics"], "actions": ["read"]}]
    issuer = make("http://influx.invalid:8181", transport=mock(handler), kind="resource",
                  credential={"env": "UNUSED"}, permissions=perms)
    if checks:
        issuer.verify(Secret(new))
        assert len(seen) == 2 and seen[0] != new and seen[1] == new
    else:
        with pytest.raises(PermanentError, match="/metrics"):
            issuer.verify(Secret(new))
        assert len(seen) == 1 and seen[0] != new, "the new token was not sent where it proves nothing"


def test_resource_tokens_on_core_say_enterprise_is_needed(tmp_path: Path) -> None:
    (tmp_path / "admin").write_text("admin-token-for-this-test")
    transport = mock(lambda req: httpx.Response(404, json={"error": "not found", "data": None}))
    issuer = make(
        "http://core.invalid:8181",
        tmp_path,
        transport,
        kind="resource",
        credential={"file": "admin"},
        permissions=DB_WRITE,
    )
    with pytest.raises(PermanentError) as err:
        issuer.mint(request(), None)
    assert "HTTP 404" in str(err.value) and "Enterprise" in err.value.hint


# ---------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("operation", "status", "call", "error", "hint"),
    [
        ("named_admin", 401, "mint", PermanentError, "credential is not accepted"),
        ("named_admin", 409, "mint", PermanentError, "exists already"),
        ("query", 400, "list", PermanentError, "refused the request"),
        ("query", 403, "list", PermanentError, "must be an admin token"),
        ("query", 404, "list", PermanentError, "check base_url"),
        ("query", 422, "list", PermanentError, "refused the request"),
        ("query", 401, "verify", TransientError, "verify_timeout"),
        ("delete", 401, "revoke", PermanentError, "credential is not accepted"),
    ],
)
def test_documented_error_statuses(
    influxdb3_fake: InfluxDB3Fake, operation: str, status: int, call: str, error: type[Exception], hint: str
) -> None:
    admin = Secret(influxdb3_fake.operator_value)
    issuer = make(influxdb3_fake.url)
    influxdb3_fake.fail_next(operation, status)
    with pytest.raises(error) as err:
        if call == "mint":
            issuer.mint(request(), admin)
        elif call == "list":
            issuer.list_tokens(admin)
        elif call == "verify":
            issuer.verify(admin)
        else:
            issuer.revoke("someone", admin)
    assert f"HTTP {status}" in str(err.value)
    assert hint in err.value.hint  # type: ignore[attr-defined]
    if error is PermanentError:
        assert not isinstance(err.value, TransientError)
    assert admin.reveal() not in str(err.value) + err.value.hint  # type: ignore[attr-defined]


def test_health_500_is_transient(influxdb3_enterprise_fake: InfluxDB3Fake, tmp_path: Path) -> None:
    (tmp_path / "admin").write_text(influxdb3_enterprise_fake.operator_value)
    perms = [{"resource_type": "system", "resource_names": ["*"], "actions": ["read"]}]
    issuer = make(
        influxdb3_enterprise_fake.url, tmp_path, kind="resource", credential={"file": "admin"}, permissions=perms
    )
    minted = issuer.mint(request(), None)
    influxdb3_enterprise_fake.fail_next("health", 500)
    with pytest.raises(TransientError, match="HTTP 500"):
        issuer.verify(minted.value)


@pytest.mark.parametrize(
    ("status", "transient"),
    [(400, False), (403, False), (404, False), (409, False), (429, True), (500, True), (502, True), (503, True)],
)
def test_statuses_no_fake_can_send_are_mapped(status: int, transient: bool) -> None:
    """Statuses the spec does not document for these operations: through the transport seam."""
    secret = "apiv3_" + "S" * 60  # a token-shaped value the server echoes in its error text
    body = {"error": f"bad token {secret} for request", "data": None}
    issuer = make("http://influx.invalid:8181", transport=mock(lambda req: httpx.Response(status, json=body)))
    with pytest.raises(TransientError if transient else PermanentError) as err:
        issuer.mint(request(), Secret("apiv3_the-current-admin-token-value"))
    assert isinstance(err.value, TransientError) is transient
    assert f"HTTP {status}" in str(err.value) and "bad token *** for request" in str(err.value)
    assert secret not in str(err.value) and "the-current-admin-token-value" not in str(err.value)


def test_timeout_dropped_connection_and_refused_are_transient(influxdb3_fake: InfluxDB3Fake) -> None:
    admin = Secret(influxdb3_fake.operator_value)
    issuer = make(influxdb3_fake.url, timeout_s=0.3)
    influxdb3_fake.delay_next("query", 1.0)
    with pytest.raises(TransientError, match=r"timed out after 0\.3s"):
        issuer.list_tokens(admin)
    influxdb3_fake.drop_next("query")
    with pytest.raises(TransientError, match="cannot reach"):
        make(influxdb3_fake.url).list_tokens(admin)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(TransientError, match="cannot reach http://127.0.0.1"):
        make(f"http://127.0.0.1:{port}").list_tokens(admin)


def test_a_mint_whose_answer_is_lost_leaves_a_token_the_tag_finds(influxdb3_fake: InfluxDB3Fake) -> None:
    admin = Secret(influxdb3_fake.operator_value)
    issuer = make(influxdb3_fake.url)
    influxdb3_fake.drop_next("named_admin", after_handler=True)
    with pytest.raises(TransientError):
        issuer.mint(request("1111222233334444"), admin)
    tagged = [t for t in issuer.list_tokens(admin) if "rotator:app:1111222233334444" in t.description]
    assert [t.token_id for t in tagged] == ["rotator-app-1111222233334444"]  # the engine sweeps it


@pytest.mark.parametrize("body", ["", "[]", "\n"])
def test_an_empty_token_list_is_not_a_list_without_tokens(body: str) -> None:
    """system.tokens always holds the admin token that asks: an empty 200 (a catch-all host, a proxy)
    is refused, not read as "every token is gone" (which would count a revocation as confirmed)."""
    issuer = make("https://influx.invalid:8181", transport=mock(lambda req: httpx.Response(200, text=body)))
    with pytest.raises(IssuerOutputError, match="no row, not even the token that asked") as err:
        issuer.list_tokens(Secret("x" * 20))
    assert "base_url" in err.value.hint
    with pytest.raises(IssuerOutputError):
        issuer.revoke("rotator-app-0123456789abcdef", Secret("x" * 20))


def test_tls_failure_is_permanent_with_a_ca_hint() -> None:
    import ssl

    def handler(req: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("handshake", request=req) from ssl.SSLCertVerificationError(
            "certificate verify failed"
        )

    with pytest.raises(PermanentError) as err:
        make("https://influx.invalid:8181", transport=mock(handler)).list_tokens(Secret("x" * 20))
    assert "TLS handshake" in str(err.value) and "ca_bundle" in err.value.hint
    assert not isinstance(err.value, TransientError)


@pytest.mark.parametrize("cut", ["eof", "reset"])
def test_a_tls_handshake_cut_short_is_transient_not_a_certificate_problem(cut: str) -> None:
    """A load balancer that restarts mid-handshake ends it with an EOF or a reset: retried (during
    verify that keeps the new token instead of discarding it), and no ca_bundle hint."""
    import ssl

    cause: Exception = (ssl.SSLEOFError(8, "EOF occurred in violation of protocol (_ssl.c:2427)") if cut == "eof"
                        else ConnectionResetError(104, "Connection reset by peer"))

    def handler(req: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("handshake", request=req) from cause

    with pytest.raises(TransientError) as err:
        make("https://influx.invalid:8181", transport=mock(handler)).list_tokens(Secret("x" * 20))
    assert "ca_bundle" not in err.value.hint


def test_ca_bundle_that_cannot_be_loaded_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("not a certificate")
    with pytest.raises(ConfigError, match="ca_bundle .*ca.pem cannot be loaded"):
        make("https://influx.example", tmp_path, ca_bundle="ca.pem").list_tokens(Secret("x" * 20))
    with pytest.raises(ValidationError, match="no effect with `tls_verify = false`"):
        make("https://influx.example", tmp_path, ca_bundle="ca.pem", tls_verify=False)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"id": 1, "name": "rotator-app-0123456789abcdef"}, "has no `token` string"),
        ({"id": 1, "token": "two words"}, "has no `token` string"),
        (["not", "an", "object"], "expected an object"),
    ],
)
def test_unreadable_mint_answers_name_the_created_token(body: Any, problem: str) -> None:
    issuer = make("http://influx.invalid", transport=mock(lambda req: httpx.Response(201, json=body)))
    with pytest.raises(IssuerOutputError) as err:
        issuer.mint(request(), Secret("y" * 20))
    assert problem in str(err.value) and "rotator-app-0123456789abcdef" in str(err.value)


def test_listing_accepts_a_json_array_and_refuses_garbage() -> None:
    rows = [
        {
            "token_id": 3,
            "name": "rotator-app-abc",
            "hash": "ab" * 32,
            "created_at": "2026-01-02T03:04:05.678",
            "expiry": 1767323045678,
            "description": None,
            "permissions": "*:*:*",
        }
    ]
    issuer = make("http://influx.invalid", transport=mock(lambda req: httpx.Response(200, json=rows)))
    [info] = issuer.list_tokens(Secret("z" * 20))
    assert info.token_id == "rotator-app-abc" and info.description == "rotator:app:abc"
    assert info.created_at == datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    assert info.expires_at == datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    garbage = make("http://influx.invalid", transport=mock(lambda req: httpx.Response(200, text="{oops\n")))
    with pytest.raises(IssuerOutputError, match="line 1 of the answer is not JSON"):
        garbage.list_tokens(Secret("z" * 20))


def test_a_delete_the_listing_contradicts_is_transient() -> None:
    rows = '{"token_id":1,"name":"stuck","hash":"00","created_at":"2026-01-01T00:00:00"}\n'

    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200) if req.method == "DELETE" else httpx.Response(200, text=rows)

    with pytest.raises(TransientError, match="still lists it"):
        make("http://influx.invalid", transport=mock(handler)).revoke("stuck", Secret("w" * 20))


def test_a_delete_answered_204_is_a_revocation_once_the_listing_agrees() -> None:
    deleted: list[str] = []

    admin_only = '{"token_id":0,"name":"_admin","hash":"0123456789abcdef","created_at":"2026-01-01T00:00:00"}\n'

    def handler(req: httpx.Request) -> httpx.Response:
        if req.method == "DELETE":
            deleted.append(req.url.params["token_name"])
            return httpx.Response(204)
        return httpx.Response(200, text=admin_only)

    make("http://influx.invalid", transport=mock(handler)).revoke("rotator-app-gone", Secret("w" * 20))
    assert deleted == ["rotator-app-gone"]


def test_map_http_errors_flags_401_as_transient_only_for_fresh_tokens() -> None:
    response = httpx.Response(401, request=httpx.Request("GET", "http://x/health"))
    from rotator.adapters.http.common import expect

    with pytest.raises(TransientError), map_http_errors("verify", unauthenticated_is_transient=True):
        expect(response)
    with pytest.raises(PermanentError) as err, map_http_errors("list"):
        expect(response)
    assert not isinstance(err.value, TransientError)


# ---------------------------------------------------------------------------------- the spec bites


def test_spec_validation_catches_a_malformed_request(influxdb3_fake: InfluxDB3Fake) -> None:
    admin = influxdb3_fake.operator_value
    url = f"{influxdb3_fake.url}/api/v3/configure/token/named_admin"
    bad_body = httpx.post(url, json={"token_name": 42}, headers={"Authorization": f"Bearer {admin}"})
    no_auth = httpx.post(url, json={"token_name": "x", "expiry_secs": 60})
    assert bad_body.status_code == no_auth.status_code == 500
    mismatches = influxdb3_fake.api.take_mismatches()
    assert [m.kind for m in mismatches] == ["request", "request"]
    assert "42 is not of type 'string'" in mismatches[0].detail
    assert "Security not found" in mismatches[1].detail
    assert "rotator-" not in influxdb3_fake.names()  # neither reached the handler


def test_spec_validation_catches_a_malformed_answer(influxdb3_fake: InfluxDB3Fake) -> None:
    bad = json_response(201, {"id": "seven", "name": "x", "token": "apiv3_x", "expiry": "tomorrow"})
    influxdb3_fake.api.inject("POST", "/api/v3/configure/token/named_admin", Fault(response=bad))
    with pytest.raises(TransientError, match="HTTP 500"):  # the client never sees the bad answer
        make(influxdb3_fake.url).mint(request(), Secret(influxdb3_fake.operator_value))
    [mismatch] = influxdb3_fake.api.take_mismatches()
    assert mismatch.kind == "response" and "'tomorrow' is not a 'date-time'" in mismatch.detail


def test_every_request_of_a_rotation_matches_the_spec(influxdb3_fake: InfluxDB3Fake) -> None:
    """A whole cycle; the fixture fails the test at teardown if any request or answer did not match."""
    issuer = make(influxdb3_fake.url)
    first = issuer.mint(request("aaaa000000000001"), Secret(influxdb3_fake.operator_value))
    issuer.verify(first.value)
    second = issuer.mint(request("aaaa000000000002"), first.value)
    issuer.verify(second.value)
    issuer.revoke(first.token_id, second.value)
    operations = {c.operation_id for c in influxdb3_fake.api.calls}
    assert operations == {"PostCreateNamedAdminToken", "PostExecuteQuerySQL", "DeleteToken"}
    assert all(c.status in (200, 201) for c in influxdb3_fake.api.calls)


# ---------------------------------------------------------------------------------- no token in logs


def test_no_token_value_in_logs_or_errors(influxdb3_fake: InfluxDB3Fake, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # httpx and httpcore included
    admin = Secret(influxdb3_fake.operator_value)
    issuer = make(influxdb3_fake.url)
    minted = issuer.mint(request(), admin)
    issuer.verify(minted.value)
    issuer.list_tokens(minted.value)
    influxdb3_fake.fail_next("query", 401, message=f"echo {minted.value.reveal()}")
    with pytest.raises(PermanentError) as err:
        issuer.list_tokens(minted.value)
    issuer.revoke(minted.token_id, admin)
    texts = [caplog.text, str(err.value), err.value.hint, repr(minted)]
    for value in (admin.reveal(), minted.value.reveal()):
        assert all(value not in text for text in texts)
    assert "HTTP Request: POST" in caplog.text  # the logs were captured at all
    assert "rotator-app-0123456789abcdef" in caplog.text


# ---------------------------------------------------------------------------------- hardening


@pytest.mark.parametrize("token_id", ["", " padded ", "line\nbreak", "tab\there", "x" * 257, "nul\x00"])
def test_a_token_name_that_cannot_be_one_is_refused_before_any_request(
    influxdb3_fake: InfluxDB3Fake, token_id: str
) -> None:
    """Issue 10 §2(c): a token id (a name here) is checked before it reaches the ``token_name`` query."""
    with pytest.raises(PermanentError, match="is not a token name") as err:
        make(influxdb3_fake.url).revoke(token_id, Secret(influxdb3_fake.operator_value))
    assert "correct the record" in err.value.hint
    assert influxdb3_fake.api.calls == []


def test_a_name_with_url_syntax_is_sent_as_a_query_value(influxdb3_fake: InfluxDB3Fake) -> None:
    """``&``, ``/``, ``..`` and ``%`` stay inside the ``token_name`` value: nothing else is deleted."""
    admin = Secret(influxdb3_fake.operator_value)
    issuer = make(influxdb3_fake.url)
    kept = issuer.mint(request("0000000000000001"), admin)
    issuer.revoke(f"../{kept.token_id}&token_name=x%2F..", admin)  # unknown: counts as revoked
    assert kept.token_id in {t.token_id for t in issuer.list_tokens(admin)}


def test_query_answers_nested_thousands_deep_are_output_errors() -> None:
    """Issue 11.10: RecursionError inside json.loads is a clear IssuerOutputError (array and JSON-lines answers)."""
    deep = "[" * 3000 + "]" * 3000
    for body in (deep, '{"a": ' * 3000 + "1" + "}" * 3000):
        issuer = make("https://influxdb3.example.test", transport=mock(lambda _r, b=body: httpx.Response(200, text=b)))
        with pytest.raises(IssuerOutputError, match="not a JSON array|nested too deeply"):
            issuer.list_tokens(Secret("apiv3_admin-0123456789abcdef"))
    created = make("https://influxdb3.example.test", transport=mock(lambda _r: httpx.Response(201, text=deep)))
    with pytest.raises(IssuerOutputError, match="was created, but the answer .* nested too deeply"):
        created.mint(request(), Secret("apiv3_admin-0123456789abcdef"))


def test_call_timeout_seconds() -> None:
    # DELETE then the system.tokens query, each connect + write + read, plus a margin.
    assert make("https://influxdb3.example.test", timeout_s=4).call_timeout_seconds == 2 * 3 * 4 + 5


def test_a_named_token_called_like_an_operator_generation_does_not_pass_for_the_live_one() -> None:
    """The live operator generation is the row named ``_admin``. A named token called
    ``_admin@0000...`` (its id is its name) listed first must not make the live generation look
    like a past one, which would record its revocation without the NeedsAttention that says
    revoking it needs another regeneration."""
    live_hash = "ab" * 32
    rows = [{"name": "_admin@0000000000000000", "hash": "cd" * 32, "created_at": "2026-01-01T00:00:00Z"},
            {"name": "_admin", "hash": live_hash, "created_at": "2026-01-01T00:00:00Z"}]
    body = "\n".join(json.dumps(r) for r in rows)
    issuer = make("http://influx.invalid", transport=mock(lambda req: httpx.Response(200, text=body)),
                  kind="operator", allow_no_grace=True)
    with pytest.raises(NeedsAttention):
        issuer.revoke(operator_token_id(live_hash), Secret("apiv3_operator-value-for-a-mock"))
    issuer.revoke("_admin@0000000000000000", Secret("apiv3_operator-value-for-a-mock"))  # not live: nothing sent


# ---------------------------------------------------------------------------------- credential text


def test_a_credential_file_with_a_byte_order_mark_works(influxdb3_fake: InfluxDB3Fake, tmp_path: Path) -> None:
    """An editor's UTF-8 signature (PowerShell 5's `-Encoding utf8`, Notepad) is not part of the token."""
    (tmp_path / "admin-token").write_text("\ufeff" + influxdb3_fake.operator_value + "\r\n", encoding="utf-8")
    issuer = make(influxdb3_fake.url, tmp_path, credential={"file": "admin-token"})
    assert issuer.mint(request(), None).token_id


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("apiv3_abc\u200bdef", r"U\+200B, character 10\) that no credential has"),
        ("apiv3_abc\x00def", r"U\+0000, character 10\)"),
        ("apiv3_abc\ndef", r"U\+000A, character 10\)"),
        ("apiv3_abc def", "white space or a character that is not ASCII"),
        ("apiv3_abcdéf", "not ASCII, which an HTTP header cannot carry"),
    ],
)
def test_a_credential_with_a_character_no_token_has_is_a_config_error_without_the_value(
    tmp_path: Path, text: str, message: str
) -> None:
    (tmp_path / "admin-token").write_text(text, encoding="utf-8")
    issuer = make("http://influx.invalid:8181", tmp_path, credential={"file": "admin-token"},
                  transport=mock(lambda req: httpx.Response(500)))
    with pytest.raises(ConfigError, match=message) as caught:
        issuer.mint(request(), None)
    assert "admin-token" in str(caught.value) and text not in str(caught.value) and "abc" not in str(caught.value)
    assert caught.value.__context__ is None or text not in repr(caught.value.__context__)


def test_a_header_httpx_cannot_encode_is_a_config_error_without_the_value() -> None:
    """The second layer, for a credential that reaches a header some other way (a management token
    read from a store): httpx's UnicodeEncodeError holds the whole header value in its arguments."""
    value = "Bearer apiv3_secret-é-value"
    with pytest.raises(ConfigError, match="not ASCII, which HTTP cannot carry") as caught:
        with map_http_errors("mint a token"):
            value.encode("ascii")
    assert "secret" not in repr(caught.value) and caught.value.__suppress_context__


def test_a_404_nested_too_deep_to_decode_is_not_taken_for_the_server_s_own() -> None:
    from rotator.adapters.http.common import error_code

    deep = httpx.Response(404, content=b"[" * 100_000 + b"]" * 100_000)
    assert error_code(deep) is None
    assert error_code(httpx.Response(404, json={"code": "not found", "message": "x"})) == "not found"


# ---------------------------------------------------------------------------------- what the real server does


def test_the_fake_refuses_an_accept_header_the_server_does_not_know(influxdb3_fake: InfluxDB3Fake) -> None:
    """InfluxDB 3 reads a query's Accept header before its body (QueryFormat::try_from_headers): the
    spec's own ``application/jsonl`` is no value it knows, and the answer is 500 "invalid mime type"."""
    admin = influxdb3_fake.operator_value
    body = {"db": "_internal", "q": "SELECT * FROM system.tokens", "format": "jsonl"}
    refused = httpx.post(f"{influxdb3_fake.url}/api/v3/query_sql", json=body,
                         headers={"Authorization": f"Bearer {admin}", "Accept": "application/jsonl"})
    assert refused.status_code == 500 and refused.text == "invalid mime type (application/jsonl)"
    taken = httpx.post(f"{influxdb3_fake.url}/api/v3/query_sql", json=body,
                       headers={"Authorization": f"Bearer {admin}", "Accept": "application/json"})
    assert taken.status_code == 200 and taken.headers["Content-Type"] == "application/jsonl"  # the body's format


@pytest.mark.parametrize("kind", ["named_admin", "operator", "resource"])
def test_queries_send_an_accept_header_the_server_knows(influxdb3_enterprise_fake: InfluxDB3Fake, kind: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Listing, revocation's confirmation and verify all query; each would answer 500 with the
    Accept header the server refuses."""
    fake = influxdb3_enterprise_fake
    monkeypatch.setenv("INFLUXDB3_ADMIN_FOR_TEST", fake.operator_value)
    admin = Secret(fake.operator_value)
    extra: dict[str, Any] = {
        "operator": {"kind": "operator", "allow_no_grace": True},
        "resource": {"kind": "resource", "credential": {"env": "INFLUXDB3_ADMIN_FOR_TEST"},
                     "permissions": [{"resource_type": "db", "resource_names": ["sensors"], "actions": ["read"]}]},
    }.get(kind, {})
    issuer = make(fake.url, **extra)
    assert any(t.token_id.startswith("_admin") for t in issuer.list_tokens(admin))
    minted = issuer.mint(request(), admin)
    issuer.verify(minted.value)
    if kind != "operator":
        issuer.revoke(minted.token_id, admin)
    queries = fake.api.calls_to("POST", "/api/v3/query_sql")
    assert queries and all(c.status == 200 for c in queries)


def test_operator_ids_keep_the_nine_hex_digits_system_tokens_shows(influxdb3_fake: InfluxDB3Fake) -> None:
    """system.tokens shows 9 hex digits of a token's hash (tokens.rs); the 201 answer of a
    regeneration shows all 128. The id mint records is the one the listing shows, so the live
    generation is recognised (and never reported revoked) and a past one is confirmed dead."""
    fake = influxdb3_fake
    old = Secret(fake.operator_value)
    issuer = make(fake.url, kind="operator", allow_no_grace=True)
    [listed_old] = [t.token_id for t in issuer.list_tokens(old) if t.token_id.startswith("_admin")]
    row = fake.token("_admin")
    assert row is not None and listed_old == "_admin@" + fake.hash_of("_admin")[:9] == "_admin@" + row["hash"]

    minted = issuer.mint(request(), old)
    [listed_new] = [t.token_id for t in issuer.list_tokens(minted.value) if t.token_id.startswith("_admin")]
    assert minted.token_id == listed_new == "_admin@" + token_hash(minted.value.reveal())[:9]
    issuer.revoke(listed_old, minted.value)  # a past generation: confirmed dead, nothing sent
    with pytest.raises(NeedsAttention, match="current value"):
        issuer.revoke(minted.token_id, minted.value)
    assert fake.problem(minted.value.reveal()) is None
    assert not fake.api.calls_to("DELETE", "/api/v3/configure/token")


def test_operator_ids_of_16_digits_from_an_earlier_version_are_matched_by_their_first_9(
    influxdb3_fake: InfluxDB3Fake,
) -> None:
    """A journal or a store written by rotator before holds ``_admin@<16 hex digits>``. The live
    generation under such an id is the live one still: revoking it is refused, and the engine's
    revocation rule (which looks the id up in the listing) sees it live rather than gone. A past
    generation's old id is confirmed revoked."""
    from rotator.core.contracts import with_unlisted
    from rotator.core.revocation_rule import Claim, check_revocable

    fake = influxdb3_fake
    past = "_admin@" + fake.hash_of("_admin")[:16]
    issuer = make(fake.url, kind="operator", allow_no_grace=True)
    minted = issuer.mint(request(), Secret(fake.operator_value))
    live = "_admin@" + fake.hash_of("_admin")[:16]
    assert live != minted.token_id and live.startswith(minted.token_id)

    with pytest.raises(NeedsAttention, match="current value"):
        issuer.revoke(live, minted.value)
    listing = issuer.list_tokens(minted.value)
    tokens = with_unlisted(issuer, listing, live, minted.value)
    [info] = [t for t in tokens if t.token_id == live]
    assert info.revoked_at is None and info.is_active(datetime.now(UTC))
    claim = Claim(live, POLICY, bootstrapped=True, recorded_at=datetime.now(UTC))
    assert check_revocable(claim, tokens, [], datetime.now(UTC)) is True  # so the engine asks revoke: refused

    issuer.revoke(past, minted.value)  # a past generation: nothing to do
    assert with_unlisted(issuer, listing, past, minted.value) == listing
    assert issuer.token_info("rotator-app-gone", minted.value) is None
    assert fake.problem(minted.value.reveal()) is None


def test_a_listing_without_a_hash_column_tells_no_operator_generation(influxdb3_fake: InfluxDB3Fake) -> None:
    """A server started without auth has no ``hash`` column (tokens.rs): the listing still works
    (the row is ``_admin``), and no generation is reported revoked, as none can be told apart."""
    fake = influxdb3_fake
    fake.started_with_auth = False
    admin = Secret(fake.operator_value)
    named = make(fake.url)
    minted = named.mint(request(), admin)
    assert {"_admin", minted.token_id} <= {t.token_id for t in named.list_tokens(admin)}
    named.revoke(minted.token_id, admin)
    operator = make(fake.url, kind="operator", allow_no_grace=True)
    with pytest.raises(NeedsAttention, match="cannot be told"):
        operator.revoke("_admin@0123456789abcdef", admin)
    with pytest.raises(NeedsAttention, match="current value"):
        operator.revoke("_admin", admin)


@pytest.mark.parametrize("digest", ["abc", "xyz123456789", 12345])
def test_an_admin_row_whose_hash_is_no_hash_is_an_output_error(digest: object) -> None:
    row = {"token_id": 0, "name": "_admin", "hash": digest, "created_at": "2026-01-01T00:00:00"}
    issuer = make("http://influx.invalid", transport=mock(lambda req: httpx.Response(200, text=json.dumps(row))))
    with pytest.raises(IssuerOutputError, match="`hash` is not hex of at least 9 digits"):
        issuer.list_tokens(Secret("apiv3_admin-0123456789abcdef"))


# ---------------------------------------------------------------------------------- a stored credential's text


@pytest.mark.parametrize("bad", ["{v}\n", "{v} ", " {v}", "{v}\x01", "é{v}", "{v}\r\n"])
def test_a_self_credential_no_header_carries_is_a_malformed_payload_not_an_unreachable_server(
    influxdb3_fake: InfluxDB3Fake, bad: str
) -> None:
    """credential = "self": the stores' current token is checked as a {file}/{env} credential is. A
    payload written by hand with a line break made h11 refuse the header, reported as "cannot reach"
    (transient: retried for ever, with a hint about the network). It is the store's payload that is
    wrong: permanent, saying how to repair it, without the value, and nothing sent."""
    from rotator.core.errors import MalformedPayload

    fake = influxdb3_fake
    value = bad.format(v=fake.operator_value)
    sent = len(fake.api.calls)
    with pytest.raises(MalformedPayload) as err:
        make(fake.url).list_tokens(Secret(value))
    text = f"{err.value} {err.value.hint}"
    assert "credential = 'self'" in str(err.value) and f"policy {POLICY!r}" in str(err.value)
    assert "white space, a control character" in str(err.value)
    assert f"rotator bootstrap {POLICY} --replace" in (err.value.hint or "")
    assert fake.operator_value not in text and fake.operator_value[:12] not in text
    assert len(fake.api.calls) == sent, "nothing sent"


@pytest.mark.parametrize(("answer", "kept"), [
    ("  apiv3_abc  ", "apiv3_abc"), ("apiv3_abc\n", "apiv3_abc"), ("apiv3_a b", None), ("apiv3_a\x01b", None),
    ("apiv3_é", None), ("", None), (None, None), (12, None),
])
def test_a_token_in_an_answer_is_one_word_of_printable_ascii(answer: object, kept: str | None) -> None:
    from rotator.adapters.http.common import token_value

    value = token_value(answer)
    assert (value.reveal() if value is not None else None) == kept


# ---------------------------------------------------------------------------------- a request without a body


def test_a_regenerate_whose_headers_were_sent_is_not_thrown_away_at_the_start_deadline(
    influxdb3_fake: InfluxDB3Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """POST .../admin/regenerate has no body: once its headers are written the server carries it out.
    The start-deadline check before the (empty) body threw the answer away as "not sent", and with
    it the only copy of the new _admin value (the old one revoked). Simulated: the start deadline
    passes between the headers and the body (a pause of the process right there)."""
    from rotator.adapters.http import common
    from rotator.core.child_process import start_children_within

    real = common._Watchdog.trace

    def paused_after_the_headers(self: Any, event: str, info: Any) -> None:
        if event == "http11.send_request_body.started":
            self._start_by = 0.0  # the start deadline has passed by now
        real(self, event, info)

    monkeypatch.setattr(common._Watchdog, "trace", paused_after_the_headers)
    fake = influxdb3_fake
    old = fake.operator_value
    issuer = make(fake.url, kind="operator", allow_no_grace=True)
    with start_children_within(60):
        minted = issuer.mint(request(), Secret(old))
    assert fake.operator_value != old, "the server regenerated _admin"
    assert minted.value.reveal() == fake.operator_value, "and rotator has the new value"
