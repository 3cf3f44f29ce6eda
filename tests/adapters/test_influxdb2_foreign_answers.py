"""influxdb2: a 200 that InfluxDB did not write for the call proves nothing.

A gateway or mock integration that echoes the PATCH body (``{"status": "inactive", ...}``) made
``revoke`` return normally: the engine recorded the revocation done while the token stayed active.
An SPA or login page in front of ``/api/v2/me`` answered HTML 200, and ``verify`` accepted a token
whose bucket list was empty. Now revoke needs the authorization itself (its ``id``) in the GET and
PATCH answers, and verify needs a UserResponse (an ``id`` of 16 lowercase hex digits) from ``/me``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from rotator.adapters.http.influxdb2 import InfluxDB2Issuer, InfluxDB2Settings
from rotator.core.contracts import AdapterContext, MintRequest
from rotator.core.errors import IssuerOutputError, TransientError
from rotator.core.secret import Secret
from tests.fakes.influxdb2_fake import BUCKET_ID, ORG_ID, USER_ID, InfluxDB2Fake

ADMIN_ENV = "INFLUXDB2_ADMIN_FOR_FOREIGN_ANSWERS_TEST"
READ_BUCKET = [{"action": "read", "resource": {"type": "buckets", "id": BUCKET_ID, "orgID": ORG_ID}}]
#: may read its own user (so /api/v2/me answers 200) and no bucket (so the bucket list is empty)
READ_OWN_USER = [{"action": "read", "resource": {"type": "users", "id": USER_ID}}]
AUTH_ID = "0a1b2c3d4e5f6a7b"
TOKEN = "not-a-token-influxdb-knows-0000000000"
Handler = Callable[[httpx.Request], httpx.Response | None]


def make(url: str, transport: httpx.BaseTransport | None = None, permissions: Any = None) -> InfluxDB2Issuer:
    model = InfluxDB2Settings.model_validate({
        "base_url": url, "org_id": ORG_ID, "credential": {"env": ADMIN_ENV}, "permissions": permissions or READ_BUCKET,
    })  # fmt: skip
    return InfluxDB2Issuer.from_config(model, AdapterContext(policy="app"), transport=transport)


def request() -> MintRequest:
    return MintRequest("app", "00000000000000a1", "rotator:app:00000000000000a1", datetime.now(UTC) + timedelta(days=1))


@pytest.fixture
def admin(influxdb2_fake: InfluxDB2Fake, monkeypatch: pytest.MonkeyPatch) -> Secret:
    monkeypatch.setenv(ADMIN_ENV, influxdb2_fake.operator_value)
    return Secret(influxdb2_fake.operator_value)


@pytest.fixture
def proxy(influxdb2_fake: InfluxDB2Fake) -> Iterator[Callable[[Handler], InfluxDB2Issuer]]:
    """An issuer behind a gateway: ``intercept`` answers what it wants to (else None), the rest goes
    to the fake."""
    upstream = httpx.Client(base_url=influxdb2_fake.url)

    def build(intercept: Handler) -> InfluxDB2Issuer:
        def handler(req: httpx.Request) -> httpx.Response:
            answer = intercept(req)
            if answer is not None:
                return answer
            sent = upstream.request(req.method, req.url.raw_path.decode(), headers=req.headers, content=req.content)
            return httpx.Response(sent.status_code, content=sent.content, headers=sent.headers)

        return make("http://influx.invalid", transport=httpx.MockTransport(handler))

    yield build
    upstream.close()


def _active(fake: InfluxDB2Fake, auth_id: str) -> bool:
    return fake.authorization(auth_id)["status"] == "active"  # type: ignore[index]


# ------------------------------------------------------------------------------------ revoke


def test_a_patch_answer_that_echoes_the_request_is_no_revocation(
    influxdb2_fake: InfluxDB2Fake, admin: Secret, proxy: Callable[[Handler], InfluxDB2Issuer]
) -> None:
    """The gateway lets the GET through and answers the PATCH with its own body: nothing was sent on,
    the token is active, and revoke fails (transient) instead of returning as if it were revoked."""
    minted = make(influxdb2_fake.url).mint(request(), None)

    def echo(req: httpx.Request) -> httpx.Response | None:
        if req.method == "PATCH":
            return httpx.Response(200, content=req.content, headers={"content-type": "application/json"})
        return None

    with pytest.raises(TransientError, match="the PATCH answer .* is not authorization") as err:
        proxy(echo).revoke(minted.token_id, None)
    assert "base_url" in err.value.hint and "proxy" in err.value.hint
    assert _active(influxdb2_fake, minted.token_id)
    make(influxdb2_fake.url).revoke(minted.token_id, None)  # InfluxDB itself: revoked, as before
    assert not _active(influxdb2_fake, minted.token_id)


def test_a_patch_answer_naming_another_authorization_is_no_revocation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ADMIN_ENV, "admin-token-for-a-mock-server")
    other = {"id": "00000000000000ff", "status": "inactive", "description": ""}

    def handler(req: httpx.Request) -> httpx.Response:
        if req.method == "PATCH":
            return httpx.Response(200, json=other)
        if req.url.path.endswith(AUTH_ID):
            return httpx.Response(200, json={"id": AUTH_ID, "status": "active", "description": "rotator:app:r1"})
        return httpx.Response(200, json={"authorizations": []})

    with pytest.raises(TransientError, match=f"is not authorization {AUTH_ID}"):
        make("http://influx.invalid", transport=httpx.MockTransport(handler)).revoke(AUTH_ID, None)


def test_a_get_answer_that_is_not_the_authorization_decides_nothing(
    influxdb2_fake: InfluxDB2Fake, admin: Secret, proxy: Callable[[Handler], InfluxDB2Issuer]
) -> None:
    """The GET before the PATCH: another object (here one that looks retired by rotator) would make
    revoke skip the PATCH, or write another description onto the token. Nothing is sent after it."""
    minted = make(influxdb2_fake.url).mint(request(), None)
    seen: list[str] = []
    marker = f"[rotator-revoked:app:{minted.token_id}@{int(datetime.now(UTC).timestamp())}]"

    def cached(req: httpx.Request) -> httpx.Response | None:
        seen.append(req.method)
        if req.method == "GET" and req.url.path.endswith(minted.token_id):
            return httpx.Response(200, json={"status": "inactive", "description": f"x {marker}"})
        return None

    with pytest.raises(TransientError, match="the GET answer .* is not authorization"):
        proxy(cached).revoke(minted.token_id, None)
    assert seen == ["GET"] and _active(influxdb2_fake, minted.token_id)


# ------------------------------------------------------------------------------------ verify


def _spa(me: httpx.Response) -> httpx.MockTransport:
    """The buckets through to InfluxDB (an empty list: a write-only or an inactive token); /me elsewhere."""
    return httpx.MockTransport(
        lambda req: httpx.Response(200, json={"buckets": []}) if req.url.path == "/api/v2/buckets" else me
    )


@pytest.mark.parametrize(
    "me",
    [
        httpx.Response(200, text="<!doctype html><div id=root></div>", headers={"content-type": "text/html"}),
        httpx.Response(200, json={"ok": True}),
        httpx.Response(200, json={"id": "0A1B2C3D4E5F6A7B", "name": "upper-case id: no platform.ID"}),
        httpx.Response(200, json=[{"id": USER_ID}]),
        httpx.Response(200, json={"id": 1234, "name": "a number"}),
    ],
    ids=["html", "no-id", "upper-case-id", "a-list", "numeric-id"],
)
def test_verify_refuses_a_200_from_me_that_is_not_influxdb_s(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, me: httpx.Response
) -> None:
    monkeypatch.setenv(ADMIN_ENV, "admin-token-for-a-mock-server")
    caplog.set_level(logging.DEBUG)
    with pytest.raises(IssuerOutputError, match=r"the answer of GET /api/v2/me \(HTTP 200.*is not InfluxDB's") as err:
        make("http://influx.invalid", transport=_spa(me)).verify(Secret(TOKEN))
    assert "base_url" in err.value.hint
    text = str(err.value) + err.value.hint + caplog.text
    assert TOKEN not in text and "doctype" not in text and "root" not in text, "no body, no token"


def test_verify_accepts_influxdb_s_user_from_me(influxdb2_fake: InfluxDB2Fake, admin: Secret) -> None:
    """The real path: a token that may read its own user and no bucket is verified by /me's 200."""
    issuer = make(influxdb2_fake.url, permissions=READ_OWN_USER)
    minted = issuer.mint(request(), None)
    issuer.verify(minted.value)
    assert [c.status for c in influxdb2_fake.api.calls_to("GET", "/api/v2/me")] == [200]
