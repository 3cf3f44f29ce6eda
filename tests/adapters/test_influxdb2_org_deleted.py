"""influxdb2: an authorization whose organization was deleted is not "gone".

InfluxDB OSS 2.x keeps an organization's authorizations when the organization is deleted
(tenant/service_org.go DeleteOrganization), and its authentication middleware checks only the
token's user, so their tokens keep working. Every answer that names such an authorization fails on
the org lookup (authorization/http_server.go newAuthResponse): ``GET`` answers 404 ``{"code": "not
found", "message": "organization not found"}``, the listing leaves it out. rotator used to take that
404 for "the authorization does not exist" and record the revocation as done while the token still
authenticated. Now only ``authorization not found`` (and ``user not found``: a token whose user is
gone is refused) counts as gone; ``organization not found`` is NeedsAttention, and the engine marks
the revocation failed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from rotator.adapters.http.influxdb2 import InfluxDB2Issuer, InfluxDB2Settings
from rotator.core.clock import FakeClock
from rotator.core.contracts import AdapterContext
from rotator.core.engine import Engine
from rotator.core.errors import NeedsAttention, TransientError
from rotator.core.journal import RevocationState, open_journal
from rotator.core.retry import RetryPolicy
from rotator.core.secret import Secret
from rotator.testing import MemoryStore
from tests.engine.test_state_machine import GRACE, POLICY, World
from tests.fakes.influxdb2_fake import BUCKET_ID, ORG_ID, InfluxDB2Fake

ADMIN_ENV = "INFLUXDB2_ADMIN_FOR_ORG_DELETED_TEST"
READ_BUCKET = [{"action": "read", "resource": {"type": "buckets", "id": BUCKET_ID, "orgID": ORG_ID}}]
AUTH_ID = "0123456789abcdef"


def _settings(url: str) -> InfluxDB2Settings:
    return InfluxDB2Settings.model_validate({"base_url": url, "org_id": ORG_ID, "credential": {"env": ADMIN_ENV},
                                             "permissions": READ_BUCKET, "timeout_s": 5})


def _issuer(url: str, transport: httpx.BaseTransport | None = None,
            clock: FakeClock | None = None) -> InfluxDB2Issuer:  # fmt: skip
    ctx = AdapterContext(policy=POLICY) if clock is None else AdapterContext(policy=POLICY, clock=clock)
    return InfluxDB2Issuer.from_config(_settings(url), ctx, transport=transport)


@pytest.fixture
def fake(influxdb2_fake: InfluxDB2Fake, monkeypatch: pytest.MonkeyPatch) -> InfluxDB2Fake:
    monkeypatch.setenv(ADMIN_ENV, influxdb2_fake.operator_value)
    return influxdb2_fake


def _authenticates(fake: InfluxDB2Fake, value: str) -> bool:
    """Whether the server takes ``value``: ``GET /api/v2/buckets`` answers 200 (an unknown token: 401)."""
    with httpx.Client(base_url=fake.url) as client:
        return client.get("/api/v2/buckets", headers={"Authorization": f"Token {value}"}).status_code == 200


def _still_works(fake: InfluxDB2Fake, value: str, token_id: str) -> None:
    assert fake.problem(value) is None and _authenticates(fake, value), "the token still authenticates"
    assert (fake.authorization(token_id) or {}).get("status") == "active"


def test_revoke_after_the_org_was_deleted_needs_attention_and_changes_nothing(fake: InfluxDB2Fake) -> None:
    value, token_id = fake.add_authorization("an app's", READ_BUCKET)
    fake.delete_org()
    with pytest.raises(NeedsAttention, match="organization not found") as caught:
        _issuer(fake.url).revoke(token_id, None)
    text = f"{caught.value} {caught.value.hint}"
    assert "may still authenticate" in text and "not counted as revoked" in text
    assert "curl -X DELETE" in caught.value.hint and f"{fake.url}/api/v2/authorizations/{token_id}" in caught.value.hint
    assert f"--retry-failed {POLICY}" in caught.value.hint
    assert value not in text
    assert fake.api.calls_to("PATCH", "/api/v2/authorizations/{authID}") == [], "nothing was sent after the GET"
    _still_works(fake, value, token_id)


def test_token_info_after_the_org_was_deleted_is_no_none(fake: InfluxDB2Fake) -> None:
    """None would tell the engine "gone at the issuer": the revocation would be recorded done."""
    value, token_id = fake.add_authorization("an app's", READ_BUCKET)
    fake.delete_org()
    assert token_id not in [t.token_id for t in _issuer(fake.url).list_tokens(None)], "the listing skips it"
    with pytest.raises(NeedsAttention, match="organization not found"):
        _issuer(fake.url).token_info(token_id, None)
    _still_works(fake, value, token_id)


def test_org_deleted_between_the_read_and_the_deactivation_needs_attention(fake: InfluxDB2Fake) -> None:
    """OSS applies the PATCH, then fails to name the org (404): rotator cannot tell, so it does not
    count the revocation as done."""
    _, token_id = fake.add_authorization("an app's", READ_BUCKET)
    upstream = httpx.Client(base_url=fake.url)

    def handler(req: httpx.Request) -> httpx.Response:
        if req.method == "PATCH":
            fake.delete_org()
        forwarded = upstream.request(req.method, req.url.raw_path.decode(), headers=req.headers, content=req.content)
        return httpx.Response(forwarded.status_code, content=forwarded.content, headers=forwarded.headers)

    with pytest.raises(NeedsAttention, match="organization not found"):
        _issuer("http://influx.invalid:8086", transport=httpx.MockTransport(handler)).revoke(token_id, None)
    upstream.close()


def test_a_missing_authorization_still_counts_as_gone(fake: InfluxDB2Fake) -> None:
    _, token_id = fake.add_authorization("an app's", READ_BUCKET)
    with httpx.Client(base_url=fake.url) as client:
        deleted = client.delete(f"/api/v2/authorizations/{token_id}",
                                headers={"Authorization": f"Token {fake.operator_value}"})
    assert deleted.status_code == 204
    assert _issuer(fake.url).token_info(token_id, None) is None
    _issuer(fake.url).revoke(token_id, None)  # gone: revoked, no error


def test_an_org_deleted_authorization_can_still_be_deleted_by_id(fake: InfluxDB2Fake) -> None:
    """What the hint tells the operator to do: DELETE names no org, so OSS deletes it (204); then it is gone."""
    value, token_id = fake.add_authorization("an app's", READ_BUCKET)
    fake.delete_org()
    with httpx.Client(base_url=fake.url) as client:
        deleted = client.delete(f"/api/v2/authorizations/{token_id}",
                                headers={"Authorization": f"Token {fake.operator_value}"})
    assert deleted.status_code == 204 and fake.problem(value) == "unknown token"
    assert _issuer(fake.url).token_info(token_id, None) is None


@pytest.mark.parametrize(
    ("body", "gone"),
    [
        ({"code": "not found", "message": "authorization not found"}, True),
        ({"code": "not found", "message": "Authorization not found "}, True),
        # its user was deleted: the middleware refuses the token (isUserActive)
        ({"code": "not found", "message": "user not found"}, True),
        ({"code": "not found", "message": "organization not found"}, NeedsAttention),
        ({"code": "not found", "message": "bucket not found"}, TransientError),
        ({"code": "not found", "message": "path not found"}, TransientError),
        ({"code": "not found"}, TransientError),
    ],
)
def test_only_the_404s_that_mean_gone_count_as_gone(
    monkeypatch: pytest.MonkeyPatch, body: dict[str, str], gone: bool | type[Exception]
) -> None:
    monkeypatch.setenv(ADMIN_ENV, "an-admin-token")

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith(AUTH_ID):
            return httpx.Response(404, json=body)
        return httpx.Response(200, json={"authorizations": [], "links": {}})

    issuer = _issuer("http://influx.invalid:8086", transport=httpx.MockTransport(handler))
    if gone is True:
        assert issuer.token_info(AUTH_ID, None) is None
        issuer.revoke(AUTH_ID, None)
        return
    assert isinstance(gone, type)
    with pytest.raises(gone):
        issuer.token_info(AUTH_ID, None)
    with pytest.raises(gone) as caught:
        issuer.revoke(AUTH_ID, None)
    if body.get("message") == "bucket not found":
        assert "'bucket not found'" in str(caught.value) and "authorization not found" in str(caught.value)


def _engine(tmp_path: Path, fake: InfluxDB2Fake, clock: FakeClock, stores: dict[str, MemoryStore]) -> Engine:
    policy = World(tmp_path).policy._replace(issuer_type="influxdb2", issuer_settings=_settings(fake.url))
    return Engine(policy, open_journal(f"sqlite:///{tmp_path / 'journal.db'}"), issuer=_issuer(fake.url, clock=clock),
                  stores=list(stores.items()), clock=clock, retry=RetryPolicy(3, 0.01, 0.05))


def test_the_engine_does_not_record_the_revocation_as_done(tmp_path: Path, fake: InfluxDB2Fake) -> None:
    """Bootstrap, rotate, the org is deleted, grace passes: the old token's revocation fails and needs
    attention (not done), and the token still authenticates. Once an operator deletes the
    authorization by id, as the hint says, the retried revocation records it gone."""
    clock = FakeClock(datetime.now(UTC))
    stores = {name: MemoryStore(name) for name in ("a", "b")}
    value, token_id = fake.add_authorization("made by a human", READ_BUCKET)
    assert _engine(tmp_path, fake, clock, stores).bootstrap(Secret(value), token_id, None).ok
    assert _engine(tmp_path, fake, clock, stores).rotate().ok
    fake.delete_org()
    clock.advance(GRACE + timedelta(minutes=1))
    engine = _engine(tmp_path, fake, clock, stores)
    actions = engine.revoke_due()
    assert any(token_id in a and "revocation failed" in a and "organization not found" in a for a in actions), actions
    assert engine.failed_revocations() == [token_id]
    assert [r.token_id for r in engine.journal.revocations(POLICY, RevocationState.DONE)] == []
    _still_works(fake, value, token_id)

    with httpx.Client(base_url=fake.url) as client:
        client.delete(f"/api/v2/authorizations/{token_id}", headers={"Authorization": f"Token {fake.operator_value}"})
    actions = engine.revoke_due(retry_failed=True)
    assert any(token_id in a and "already gone" in a for a in actions), actions
    assert [r.token_id for r in engine.journal.revocations(POLICY, RevocationState.DONE)] == [token_id]
