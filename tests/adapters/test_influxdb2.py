"""The influxdb2 issuer against the spec-validated InfluxDB OSS v2 fake, over real HTTP on loopback.

Every request and answer is validated against the official OSS v2 spec by the fake; the fixture
fails a test with any mismatch left. Statuses no spec-valid answer can carry go through the
issuer's transport seam (``httpx.MockTransport``).
"""

from __future__ import annotations

import json
import logging
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from rotator.adapters.http.influxdb2 import InfluxDB2Issuer, InfluxDB2Settings
from rotator.core.clock import SYSTEM_CLOCK, Clock, FakeClock, SystemClock
from rotator.core.contracts import AdapterContext, MintRequest
from rotator.core.errors import ConfigError, IssuerOutputError, PermanentError, TransientError
from rotator.core.retry import RetryPolicy, call_with_retry
from rotator.core.secret import Secret
from tests.fakes.influxdb2_fake import BUCKET_ID, ORG_ID, InfluxDB2Fake

POLICY = "ingest"
READ_WRITE_BUCKET = [
    {"action": "read", "resource": {"type": "buckets", "id": BUCKET_ID, "orgID": ORG_ID}},
    {"action": "write", "resource": {"type": "buckets", "id": BUCKET_ID, "orgID": ORG_ID}},
]
ADMIN_ENV = "INFLUXDB2_ADMIN_FOR_TEST"


def make(
    url: str, transport: httpx.BaseTransport | None = None, policy: str = POLICY, clock: Clock = SYSTEM_CLOCK,
    **settings: Any,
) -> InfluxDB2Issuer:
    settings.setdefault("credential", {"env": ADMIN_ENV})
    if "copy_from_authorization_id" not in settings:
        settings.setdefault("permissions", READ_WRITE_BUCKET)
    model = InfluxDB2Settings.model_validate({"base_url": url, "org_id": ORG_ID, **settings})
    return InfluxDB2Issuer.from_config(model, AdapterContext(policy=policy, clock=clock), transport=transport)


def request(run_id: str = "0123456789abcdef", policy: str = POLICY) -> MintRequest:
    return MintRequest(policy, run_id, f"rotator:{policy}:{run_id}", datetime.now(UTC) + timedelta(days=30))


@pytest.fixture
def admin(influxdb2_fake: InfluxDB2Fake, monkeypatch: pytest.MonkeyPatch) -> Secret:
    """The operator token, as the credential the issuer reads from $INFLUXDB2_ADMIN_FOR_TEST."""
    monkeypatch.setenv(ADMIN_ENV, influxdb2_fake.operator_value)
    return Secret(influxdb2_fake.operator_value)


def mock(handler: Any) -> httpx.MockTransport:
    return httpx.MockTransport(handler)


# ---------------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"permissions": []}, "exactly one of `permissions`"),
        ({"copy_from_authorization_id": "0123456789abcdef"}, "exactly one of `permissions`"),
        ({"org_id": "my-org"}, "should match pattern"),
        ({"permissions": [{"action": "read", "resource": {"type": "bucket"}}]}, "unknown resource type 'bucket'"),
        ({"permissions": [{"action": "delete", "resource": {"type": "buckets"}}]}, "'read' or 'write'"),
        ({"permissions": [{"action": "read", "resource": {"type": "buckets", "id": "short"}}]}, "pattern"),
        ({"delete_after": "a week"}, "is not a duration"),
        ({"credential": {"file": "a", "env": "B"}}, "exactly one of `file` or `env`"),
    ],
)
def test_settings_refuse_what_cannot_work(settings: dict[str, Any], message: str) -> None:
    data = {
        "base_url": "https://influx.example:8086",
        "org_id": ORG_ID,
        "credential": {"env": "X"},
        "permissions": READ_WRITE_BUCKET,
        **settings,
    }
    with pytest.raises(ValidationError) as err:
        InfluxDB2Settings.model_validate(data)
    assert message in str(err.value)


def test_settings_defaults() -> None:
    model = InfluxDB2Settings.model_validate(
        {
            "base_url": "http://influx:8086",
            "org_id": ORG_ID,
            "credential": "self",
            "copy_from_authorization_id": BUCKET_ID,
        }
    )
    assert model.delete_after == timedelta(days=7) and model.permissions == []


# ---------------------------------------------------------------------------------- the cycle


def test_mint_verify_list_and_revoke_in_two_stages(influxdb2_fake: InfluxDB2Fake, admin: Secret) -> None:
    fake = influxdb2_fake
    issuer = make(fake.url)
    minted = issuer.mint(request(), None)
    assert minted.expires_at is None  # v2 authorizations do not expire
    stored = fake.authorization(minted.token_id)
    assert stored is not None and stored["description"] == "rotator:ingest:0123456789abcdef"
    assert [p["action"] for p in stored["permissions"]] == ["read", "write"]
    assert stored["status"] == "active" and stored["userID"]
    issuer.verify(minted.value)

    infos = {t.token_id: t for t in issuer.list_tokens(None)}
    assert infos[minted.token_id].revoked_at is None and infos[minted.token_id].is_active(datetime.now(UTC))

    # Stage 1: inactive (reversible), marked, confirmed; the token stops working at once.
    issuer.revoke(minted.token_id, None)
    stored = fake.authorization(minted.token_id)
    assert stored is not None and stored["status"] == "inactive"
    assert re.fullmatch(rf"rotator:ingest:0123456789abcdef \[rotator-revoked:ingest:{minted.token_id}@\d+\]",
                        stored["description"]), stored["description"]
    assert fake.problem(minted.value.reveal()) == "inactive"
    info = next(t for t in issuer.list_tokens(None) if t.token_id == minted.token_id)
    assert info.revoked_at is not None and not info.is_active(datetime.now(UTC))
    assert "rotator:ingest:0123456789abcdef" in info.description  # the tag survives the marker
    assert fake.deleted == []  # deleted only after delete_after

    # Reversible: an operator can bring it back (influx auth active).
    fake.set_status(minted.token_id, "active")
    assert fake.problem(minted.value.reveal()) is None


def test_stage_two_deletes_only_an_authorization_whose_marker_is_its_own_and_unchanged_since(
    influxdb2_fake: InfluxDB2Fake, admin: Secret
) -> None:
    """The marker names the authorization's id and the time of rotator's PATCH: a marker copied with
    a description onto another token, or a token made active again by hand and inactive again later
    by someone else, is not rotator's to delete; nor is a token with the marker of rotator before ids
    (no id: a description copied from one, onto a token a human set inactive, would carry it)."""
    fake = influxdb2_fake
    issuer = make(fake.url)
    retired = issuer.mint(request("0000000000000001"), None)
    issuer.revoke(retired.token_id, None)
    description = fake.authorization(retired.token_id)["description"]  # type: ignore[index]
    _, copied = fake.add_authorization(description, READ_WRITE_BUCKET, status="inactive")
    brought_back = issuer.mint(request("0000000000000002"), None)
    # Retired an hour ago (its marker says so), made active again by an operator (influx auth
    # active) and inactive again now, by someone else.
    make(fake.url, clock=FakeClock(datetime.now(UTC) - timedelta(hours=1))).revoke(brought_back.token_id, None)
    fake.set_status(brought_back.token_id, "active")
    fake.set_status(brought_back.token_id, "inactive")
    _, legacy = fake.add_authorization("rotator:ingest:0000000000000003 [rotator-revoked:ingest]", READ_WRITE_BUCKET,
                                       status="inactive")
    # A marker with a time no datetime holds (written by hand?) is not rotator's, and stops nothing.
    _, odd = fake.add_authorization("x", READ_WRITE_BUCKET, status="inactive")
    fake.set_description(odd, f"[rotator-revoked:ingest:{odd}@999999999999]")
    for auth_id in (retired.token_id, copied, legacy, odd):
        fake.age(auth_id, 8 * 86400)
    later = make(fake.url, clock=FakeClock(datetime.now(UTC) + timedelta(days=8)))  # brought_back: past delete_after
    later.revoke("00000000000000ff", None)  # a revocation (of an id the server does not know) runs stage 2
    assert fake.deleted == [retired.token_id]
    for kept in (copied, brought_back.token_id, legacy, odd):
        assert fake.authorization(kept) is not None
    # revoke() of the legacy token marks it anew (the rule never asks: inactive is revoked), and stage 2 deletes it
    issuer.revoke(legacy, None)
    assert f"[rotator-revoked:ingest:{legacy}@" in fake.authorization(legacy)["description"]  # type: ignore[index]
    assert fake.deleted == [retired.token_id]
    fake.age(legacy, 8 * 86400)
    later.revoke("00000000000000ff", None)
    assert fake.deleted == [retired.token_id, legacy]


def test_revoking_twice_does_not_restart_the_inactive_clock(influxdb2_fake: InfluxDB2Fake, admin: Secret) -> None:
    issuer = make(influxdb2_fake.url)
    minted = issuer.mint(request(), None)
    issuer.revoke(minted.token_id, None)
    first = influxdb2_fake.authorization(minted.token_id)
    issuer.revoke(minted.token_id, None)
    assert influxdb2_fake.authorization(minted.token_id) == first
    assert len(influxdb2_fake.api.calls_to("PATCH", "/api/v2/authorizations/{authID}")) == 1
    issuer.revoke("00000000000000ff", None)  # unknown: revoked


def test_stage_two_deletes_only_what_rotator_retired_long_enough_ago(
    influxdb2_fake: InfluxDB2Fake, admin: Secret
) -> None:
    fake = influxdb2_fake
    issuer = make(fake.url)
    old = issuer.mint(request("0000000000000001"), None)
    issuer.revoke(old.token_id, None)
    fake.age(old.token_id, 8 * 86400)  # inactive for 8 days
    recent = issuer.mint(request("0000000000000002"), None)
    issuer.revoke(recent.token_id, None)
    # Inactive, tagged, old, but deactivated by a human (no marker): kept.
    human_value, human_id = fake.add_authorization("rotator:ingest:0000000000000003", READ_WRITE_BUCKET)
    fake.set_status(human_id, "inactive")
    fake.age(human_id, 30 * 86400)
    # Retired by another policy: that policy's business.
    other = make(fake.url, policy="other")
    foreign = other.mint(request("0000000000000004", policy="other"), None)
    other.revoke(foreign.token_id, None)
    fake.age(foreign.token_id, 30 * 86400)
    # Active and old: never deleted.
    active = issuer.mint(request("0000000000000005"), None)
    fake.age(active.token_id, 30 * 86400)

    third = issuer.mint(request("0000000000000006"), None)
    issuer.revoke(third.token_id, None)  # the revocation that runs stage 2
    assert fake.deleted == [old.token_id]
    assert fake.authorization(old.token_id) is None
    for kept in (recent.token_id, human_id, foreign.token_id, active.token_id, third.token_id):
        assert fake.authorization(kept) is not None
    assert human_value  # made by the fake for the human


def test_delete_after_zero_deletes_at_the_revocation(influxdb2_fake: InfluxDB2Fake, admin: Secret) -> None:
    issuer = make(influxdb2_fake.url, delete_after="0s")
    minted = issuer.mint(request(), None)
    issuer.revoke(minted.token_id, None)
    assert influxdb2_fake.deleted == [minted.token_id]
    issuer.revoke(minted.token_id, None)  # gone: still revoked


def test_a_failing_stage_two_does_not_fail_the_revocation(
    influxdb2_fake: InfluxDB2Fake, admin: Secret, caplog: pytest.LogCaptureFixture
) -> None:
    issuer = make(influxdb2_fake.url, delete_after="0s")
    minted = issuer.mint(request(), None)
    influxdb2_fake.fail_next("delete", 500)
    issuer.revoke(minted.token_id, None)
    assert influxdb2_fake.authorization(minted.token_id)["status"] == "inactive"  # type: ignore[index]
    assert "retried at the next revocation" in caplog.text and "HTTP 500" in caplog.text
    issuer.revoke(minted.token_id, None)  # the next revocation deletes it
    assert influxdb2_fake.deleted == [minted.token_id]


def test_permissions_copied_from_a_template(influxdb2_fake: InfluxDB2Fake, admin: Secret) -> None:
    _, template_id = influxdb2_fake.add_authorization("template", READ_WRITE_BUCKET[:1])
    issuer = make(influxdb2_fake.url, copy_from_authorization_id=template_id)
    minted = issuer.mint(request(), None)
    stored = influxdb2_fake.authorization(minted.token_id)
    template = influxdb2_fake.authorization(template_id)
    assert stored is not None and template is not None
    assert stored["permissions"] == template["permissions"]  # name/org re-derived by the server
    missing = make(influxdb2_fake.url, copy_from_authorization_id="00000000000000aa")
    with pytest.raises(PermanentError) as err:
        missing.mint(request("1"), None)
    assert "HTTP 404" in str(err.value) and "copy_from_authorization_id" in err.value.hint


def test_self_credential(influxdb2_fake: InfluxDB2Fake) -> None:
    everything = [
        {"action": a, "resource": {"type": t}}
        for t in ("authorizations", "buckets", "users")
        for a in ("read", "write")
    ]
    current_value, _ = influxdb2_fake.add_authorization("bootstrap", everything)
    issuer = make(influxdb2_fake.url, credential="self", permissions=everything)
    minted = issuer.mint(request(), Secret(current_value))
    issuer.verify(minted.value)
    assert minted.token_id in {t.token_id for t in issuer.list_tokens(minted.value)}
    with pytest.raises(ConfigError, match="no token is published yet"):
        issuer.list_tokens(None)


# ---------------------------------------------------------------------------------- values


def test_the_token_string_is_shown_once(influxdb2_fake: InfluxDB2Fake, admin: Secret) -> None:
    minted = make(influxdb2_fake.url).mint(request(), None)
    again = httpx.get(
        f"{influxdb2_fake.url}/api/v2/authorizations/{minted.token_id}",
        headers={"Authorization": f"Token {admin.reveal()}"},
    )
    listing = httpx.get(
        f"{influxdb2_fake.url}/api/v2/authorizations", headers={"Authorization": f"Token {admin.reveal()}"}
    )
    assert again.status_code == listing.status_code == 200
    assert "token" not in again.json()
    assert minted.value.reveal() not in again.text + listing.text


def test_never_by_value_even_when_the_server_returns_values(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """OSS before hashed tokens lists every value in clear text: rotator keeps none, sends none."""
    caplog.set_level(logging.DEBUG)
    with InfluxDB2Fake(hashed_tokens=False).running() as fake:
        monkeypatch.setenv(ADMIN_ENV, fake.operator_value)
        issuer = make(fake.url)
        minted = issuer.mint(request(), None)
        raw = httpx.get(
            f"{fake.url}/api/v2/authorizations", headers={"Authorization": f"Token {fake.operator_value}"}
        ).text
        assert minted.value.reveal() in raw  # this server does show values
        infos = issuer.list_tokens(None)
        issuer.revoke(minted.token_id, None)
        assert minted.value.reveal() not in repr(infos) + caplog.text
        assert fake.operator_value not in repr(infos) + caplog.text
        assert all("token" not in call.query for call in fake.api.calls)  # never ?token=


# ---------------------------------------------------------------------------------- errors


def test_new_token_answers_401_until_active_and_verify_is_retried(influxdb2_fake: InfluxDB2Fake, admin: Secret) -> None:
    influxdb2_fake.activation_delay_s = 1.0
    issuer = make(influxdb2_fake.url)
    minted = issuer.mint(request(), None)
    with pytest.raises(TransientError) as err:
        issuer.verify(minted.value)
    assert "HTTP 401" in str(err.value) and "unauthorized access" in str(err.value)
    started = time.monotonic()
    call_with_retry(
        lambda: issuer.verify(minted.value),
        what="verify",
        policy=RetryPolicy(20, 0.2, 0.4),
        clock=SystemClock(),
        deadline=datetime.now(UTC) + timedelta(seconds=10),
    )
    assert time.monotonic() - started < 5


def test_a_credential_without_authorization_permissions(
    influxdb2_fake: InfluxDB2Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    weak_value, _ = influxdb2_fake.add_authorization("reads a bucket", READ_WRITE_BUCKET[:1])
    monkeypatch.setenv(ADMIN_ENV, weak_value)
    with pytest.raises(PermanentError) as err:
        make(influxdb2_fake.url).mint(request(), None)
    assert "HTTP 401" in str(err.value) and "authorizations is unauthorized" in str(err.value)
    assert "read and write on authorizations" in err.value.hint
    assert not isinstance(err.value, TransientError)


#: What a minting credential needs besides the permissions it grants: rw authorizations, rw the user.
MANAGES = [
    {"action": a, "resource": {"type": "authorizations", "orgID": ORG_ID}} for a in ("read", "write")
] + [{"action": a, "resource": {"type": "users"}} for a in ("read", "write")]


def test_a_credential_cannot_grant_a_permission_it_does_not_hold(
    influxdb2_fake: InfluxDB2Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OSS (authorizer.VerifyPermissions) answers 403 for a permission the credential lacks itself: the
    error names it whole (the operator must see what to grant) and the hint says what to do."""
    writes_only, _ = influxdb2_fake.add_authorization("manages tokens, writes the bucket", [*MANAGES, *WRITE_ONLY])
    monkeypatch.setenv(ADMIN_ENV, writes_only)
    with pytest.raises(PermanentError) as err:
        make(influxdb2_fake.url).mint(request(), None)
    assert f"HTTP 403: permission read:orgs/{ORG_ID}/buckets/{BUCKET_ID} is not allowed" in str(err.value)
    assert "only permissions it holds itself" in err.value.hint and "`permissions`" in err.value.hint
    assert not isinstance(err.value, TransientError)
    assert writes_only not in str(err.value) + err.value.hint
    assert [a["description"] for a in influxdb2_fake.authorizations()][1:] == ["manages tokens, writes the bucket"]


@pytest.mark.parametrize(("held", "granted"), [
    (READ_WRITE_BUCKET, True),  # the same permissions
    ([{"action": a, "resource": {"type": "buckets", "orgID": ORG_ID}} for a in ("read", "write")], True),  # the org's
    ([{"action": a, "resource": {"type": "buckets"}} for a in ("read", "write")], True),  # every bucket
    ([{"action": a, "resource": {"type": "buckets", "id": "ffffffffffffffff", "orgID": ORG_ID}}
      for a in ("read", "write")], False),  # another bucket
    ([{"action": a, "resource": {"type": "buckets", "orgID": "ffffffffffffffff"}} for a in ("read", "write")], False),
])  # fmt: skip
def test_the_fake_matches_a_granted_permission_as_oss_does(
    influxdb2_fake: InfluxDB2Fake, monkeypatch: pytest.MonkeyPatch, held: list[dict[str, Any]], granted: bool
) -> None:
    """Permission.Matches: same action and type, then no org and id (every one), the org only, or the id."""
    value, _ = influxdb2_fake.add_authorization("the credential", [*MANAGES, *held])
    monkeypatch.setenv(ADMIN_ENV, value)
    if granted:
        make(influxdb2_fake.url).mint(request(), None)
    else:
        with pytest.raises(PermanentError, match=r"HTTP 403: permission read:orgs/\S+/buckets/\S+ is not allowed"):
            make(influxdb2_fake.url).mint(request(), None)


def test_a_template_s_permissions_must_be_held_by_the_credential(
    influxdb2_fake: InfluxDB2Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, template_id = influxdb2_fake.add_authorization("template", READ_WRITE_BUCKET)
    value, _ = influxdb2_fake.add_authorization("the credential", [*MANAGES, *WRITE_ONLY])
    monkeypatch.setenv(ADMIN_ENV, value)
    with pytest.raises(PermanentError) as err:
        make(influxdb2_fake.url, copy_from_authorization_id=template_id).mint(request(), None)
    assert "HTTP 403" in str(err.value) and "copy_from_authorization_id" in err.value.hint


@pytest.mark.parametrize(
    ("operation", "status", "call", "error"),
    [
        ("create", 400, "mint", PermanentError),
        ("create", 401, "mint", PermanentError),
        ("create", 500, "mint", TransientError),
        ("list", 400, "list", PermanentError),
        ("list", 500, "list", TransientError),
        ("get", 400, "revoke", PermanentError),
        ("get", 401, "revoke", PermanentError),
        ("get", 500, "revoke", TransientError),
        ("patch", 429, "revoke", TransientError),
        ("patch", 409, "revoke", PermanentError),
        ("patch", 503, "revoke", TransientError),
        ("buckets", 401, "verify", TransientError),
        ("buckets", 500, "verify", TransientError),
    ],
)
def test_error_statuses(
    influxdb2_fake: InfluxDB2Fake, admin: Secret, operation: str, status: int, call: str, error: type[Exception]
) -> None:
    issuer = make(influxdb2_fake.url)
    target = issuer.mint(request(), None)
    influxdb2_fake.fail_next(operation, status, message="refused by the test")
    with pytest.raises(error) as err:
        if call == "mint":
            issuer.mint(request("2"), None)
        elif call == "list":
            issuer.list_tokens(None)
        elif call == "verify":
            issuer.verify(target.value)
        else:
            issuer.revoke(target.token_id, None)
    assert f"HTTP {status}" in str(err.value) and "refused by the test" in str(err.value)
    assert isinstance(err.value, TransientError) is (error is TransientError)
    assert err.value.hint  # type: ignore[attr-defined]
    for value in (admin.reveal(), target.value.reveal()):
        assert value not in str(err.value) + err.value.hint  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "token_id",
    [
        "not-an-id",
        "-0123456789abcde",
        "0123456789abcdef/..",
        "../../api/v2/me00",
        "0123456789ABCDEF",
        "0123456789abcdef\n",
    ],
)
def test_a_token_id_that_is_not_a_v2_id_is_refused_before_any_request(
    influxdb2_fake: InfluxDB2Fake, admin: Secret, token_id: str
) -> None:
    """Issue 10 §2(c): ids go into URL paths; only 16 lowercase hex digits do."""
    with pytest.raises(PermanentError, match="is not an authorization id") as err:
        make(influxdb2_fake.url).revoke(token_id, None)
    assert "correct the record" in err.value.hint
    assert influxdb2_fake.api.calls == []


def test_permission_for_another_org_is_refused_by_the_server(influxdb2_fake: InfluxDB2Fake, admin: Secret) -> None:
    other_org = [{"action": "read", "resource": {"type": "buckets", "orgID": "ffffffffffffffff"}}]
    with pytest.raises(PermanentError) as err:
        make(influxdb2_fake.url, permissions=other_org).mint(request(), None)
    assert "HTTP 400" in str(err.value) and "is not for org id" in str(err.value)
    assert "org_id, user_id and the permissions" in err.value.hint


def test_timeouts_and_lost_answers_are_transient(influxdb2_fake: InfluxDB2Fake, admin: Secret) -> None:
    issuer = make(influxdb2_fake.url, timeout_s=0.3)
    influxdb2_fake.delay_next("create", 1.0, after_handler=True)
    with pytest.raises(TransientError, match="timed out"):
        issuer.mint(request("00000000000000a1"), None)
    # The server created it: the engine finds it by the run tag and revokes it.
    [lost] = [t for t in issuer.list_tokens(None) if "rotator:ingest:00000000000000a1" in t.description]
    issuer.revoke(lost.token_id, None)
    influxdb2_fake.drop_next("list")
    with pytest.raises(TransientError, match="cannot reach"):
        issuer.list_tokens(None)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"id": "0123456789abcdef"}, "authorization 0123456789abcdef was created, but the answer has no `token`"),
        ({"token": "value-without-id"}, "has no authorization `id`"),
        ("just text", "expected an object"),
    ],
)
def test_unreadable_mint_answers(body: Any, problem: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ADMIN_ENV, "admin-token-for-a-mock-server")
    issuer = make("http://influx.invalid", transport=mock(lambda req: httpx.Response(201, json=body)))
    with pytest.raises(IssuerOutputError, match=problem):
        issuer.mint(request(), None)


def test_a_patch_that_leaves_the_token_active_is_not_a_revocation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ADMIN_ENV, "admin-token-for-a-mock-server")
    body = {"id": "0123456789abcdef", "status": "active", "description": "d"}
    transport = mock(
        lambda req: (
            httpx.Response(200, json=body)
            if req.method != "GET" or req.url.path.endswith("cdef")
            else httpx.Response(200, json={"authorizations": []})
        )
    )
    issuer = make("http://influx.invalid", transport=transport)
    with pytest.raises(TransientError, match="not 'inactive'"):
        issuer.revoke("0123456789abcdef", None)


# ---------------------------------------------------------------------------------- the spec bites


def test_spec_validation_catches_a_malformed_request(influxdb2_fake: InfluxDB2Fake, admin: Secret) -> None:
    headers = {"Authorization": f"Token {admin.reveal()}"}
    empty = httpx.post(
        f"{influxdb2_fake.url}/api/v2/authorizations", headers=headers, json={"orgID": ORG_ID, "permissions": []}
    )
    bad_status = httpx.patch(
        f"{influxdb2_fake.url}/api/v2/authorizations/{influxdb2_fake.operator_id}",
        headers=headers,
        json={"status": "revoked"},
    )
    assert empty.status_code == bad_status.status_code == 500
    details = [m.detail for m in influxdb2_fake.api.take_mismatches()]
    assert len(details) == 2
    assert "should be non-empty" in details[0] or "too short" in details[0]
    assert "'revoked' is not one of ['active', 'inactive']" in details[1]
    assert influxdb2_fake.authorization(influxdb2_fake.operator_id)["status"] == "active"  # type: ignore[index]


def test_every_request_of_a_rotation_matches_the_spec(influxdb2_fake: InfluxDB2Fake, admin: Secret) -> None:
    issuer = make(influxdb2_fake.url, delete_after="0s")
    first = issuer.mint(request("0000000000000001"), None)
    issuer.verify(first.value)
    second = issuer.mint(request("0000000000000002"), None)
    issuer.verify(second.value)
    issuer.revoke(first.token_id, None)
    assert {c.operation_id for c in influxdb2_fake.api.calls} == {
        "PostAuthorizations", "GetBuckets", "GetAuthorizationsID", "PatchAuthorizationsID", "GetAuthorizations",
        "DeleteAuthorizationsID",
    }  # fmt: skip


# ---------------------------------------------------------------------------------- no token in logs


def test_no_token_value_in_logs_or_errors(
    influxdb2_fake: InfluxDB2Fake, admin: Secret, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    issuer = make(influxdb2_fake.url, delete_after="0s")
    minted = issuer.mint(request(), None)
    issuer.verify(minted.value)
    influxdb2_fake.fail_next("list", 500, message=f"echo {minted.value.reveal()}")
    with pytest.raises(TransientError) as err:
        issuer.list_tokens(None)
    issuer.revoke(minted.token_id, None)
    texts = [caplog.text, str(err.value), err.value.hint, json.dumps([repr(t) for t in issuer.list_tokens(None)])]
    for value in (admin.reveal(), minted.value.reveal()):
        assert all(value not in text for text in texts)
    assert "created authorization" in caplog.text and "HTTP Request: PATCH" in caplog.text


def test_an_answer_nested_thousands_deep_is_an_output_error(influxdb2_fake: InfluxDB2Fake, admin: Secret) -> None:
    """Issue 11.10: a RecursionError inside json.loads is a clear IssuerOutputError, not a traceback."""
    deep = "[" * 3000 + "]" * 3000

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=deep.encode())

    issuer = make("https://influxdb.example.test", transport=mock(handler))
    with pytest.raises(IssuerOutputError, match="nested too deeply"):
        issuer.list_tokens(None)
    failing = make(
        "https://influxdb.example.test", transport=mock(lambda _r: httpx.Response(500, content=deep.encode()))
    )
    with pytest.raises(TransientError, match="HTTP 500$"):  # the error text is dropped, nothing escapes
        failing.list_tokens(None)


def test_call_timeout_seconds(influxdb2_fake: InfluxDB2Fake) -> None:
    # revoke: GET, PATCH, list, then GET + DELETE for at most two (7 requests), each connect + write + read,
    # plus a margin.
    assert make(influxdb2_fake.url, timeout_s=2).call_timeout_seconds == 7 * 3 * 2 + 5


def test_a_revocation_with_many_authorizations_to_delete_keeps_to_its_request_count(
    influxdb2_fake: InfluxDB2Fake, admin: Secret
) -> None:
    """call_timeout_seconds is requests_per_call whole requests: the engine's mint window and the
    Lambda function's time per issuer call count on it. Stage 2 deletes at most two authorizations
    per revocation (each read again, then deleted), the longest inactive first; the rest wait for
    the next revocations."""
    fake = influxdb2_fake
    issuer = make(fake.url)
    retired = []
    for number in range(5):
        minted = issuer.mint(request(f"000000000000000{number}"), None)
        issuer.revoke(minted.token_id, None)
        retired.append(minted.token_id)
    for number, auth_id in enumerate(retired):
        fake.age(auth_id, (8 + number) * 86400)  # inactive for 8 to 12 days: all due
    oldest_first = retired[::-1]
    last = issuer.mint(request("00000000000000ff"), None)
    before = len(fake.api.calls)
    issuer.revoke(last.token_id, None)
    revoke = [(c.method, c.template) for c in fake.api.calls[before:]]
    assert len(revoke) <= issuer.requests_per_call, revoke
    assert revoke.count(("DELETE", "/api/v2/authorizations/{authID}")) == 2
    assert fake.deleted == oldest_first[:2]
    issuer.revoke(last.token_id, None)  # inactive already: stage 2 goes on
    assert fake.deleted == oldest_first[:4]
    issuer.revoke(last.token_id, None)
    assert fake.deleted == oldest_first
    assert fake.authorization(last.token_id)["status"] == "inactive"  # type: ignore[index]  # not due yet


def test_a_minted_authorization_id_that_is_not_a_v2_id_is_refused_and_not_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """revoke only takes 16 hex digits (the id goes into a URL path): an answer with another `id`
    is refused at mint, before that id is logged or recorded (it may be a value a proxy echoed)."""
    monkeypatch.setenv(ADMIN_ENV, "admin-token-for-a-mock-server")
    odd = "c2VjcmV0LXZhbHVlLWZyb20tYS1wcm94eQ"
    body = {"id": odd, "token": "value-of-the-new-token"}
    issuer = make("http://influx.invalid", transport=mock(lambda req: httpx.Response(201, json=body)))
    caplog.set_level(logging.DEBUG)
    with pytest.raises(IssuerOutputError, match="is not a v2 authorization id") as err:
        issuer.mint(request(), None)
    assert odd not in str(err.value) and odd not in caplog.text
    assert "rotator:ingest:0123456789abcdef" in err.value.hint, "the hint names what to delete by hand"


def test_an_inactive_authorization_without_updated_at_is_not_deleted_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stage 2 deletes what was made inactive at least ``delete_after`` ago. A server that leaves out
    `updatedAt` gives no time of the deactivation: it is never taken from `createdAt` (old), which
    would delete the authorization in the very call that deactivated it."""
    monkeypatch.setenv(ADMIN_ENV, "admin-token-for-a-mock-server")
    auth_id = "0123456789abcdef"
    item = {"id": auth_id, "status": "active", "description": "rotator:ingest:00000000000000a1",
            "createdAt": "2020-01-01T00:00:00Z"}
    seen: list[str] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req.method)
        if req.method == "PATCH":
            item.update(json.loads(req.content))  # status and the marked description; no `updatedAt`
            return httpx.Response(200, json=item)
        if req.method == "DELETE":
            return httpx.Response(204)
        if req.url.path.endswith(auth_id):
            return httpx.Response(200, json=item)
        return httpx.Response(200, json={"authorizations": [item]})

    issuer = make("http://influx.invalid", transport=mock(handler))
    issuer.revoke(auth_id, None)
    assert item["status"] == "inactive" and issuer.marker in item["description"]
    assert "PATCH" in seen and "DELETE" not in seen, seen


def test_a_404_that_is_not_influxdb_s_is_not_taken_for_a_revoked_authorization(
    influxdb2_fake: InfluxDB2Fake, admin: Secret
) -> None:
    """Only InfluxDB's own 404 (``{"code": "not found"}``) means the authorization is gone. A proxy's
    or a router's 404 (an HTML page) is transient: the revocation is not recorded as done, and the
    next run against InfluxDB itself revokes it."""
    issuer = make(influxdb2_fake.url)
    minted = issuer.mint(request(), None)
    page = httpx.Response(404, text="<html>Not Found</html>")
    proxy = make("http://influx.invalid", transport=mock(lambda req: page))
    with pytest.raises(TransientError, match="HTTP 404 without InfluxDB's `not found` answer"):
        proxy.revoke(minted.token_id, None)
    issuer.revoke(minted.token_id, None)
    assert not [t for t in issuer.list_tokens(None) if t.token_id == minted.token_id and t.is_active(datetime.now(UTC))]
    issuer.revoke("00000000000000ff", None)  # InfluxDB's own 404 for an unknown id: gone, as before


def test_a_404_to_the_deactivation_that_is_not_influxdb_s_is_not_a_revocation(
    influxdb2_fake: InfluxDB2Fake, admin: Secret
) -> None:
    """The PATCH that deactivates is held to the same rule as the GET before it: a proxy that lets the
    GET through and answers the PATCH with its own 404 has revoked nothing."""
    issuer = make(influxdb2_fake.url)
    minted = issuer.mint(request(), None)
    upstream = httpx.Client(base_url=influxdb2_fake.url)

    def handler(req: httpx.Request) -> httpx.Response:
        if req.method == "PATCH":
            return httpx.Response(404, text="<html>Not Found</html>")
        forwarded = upstream.request(req.method, req.url.raw_path.decode(), headers=req.headers, content=req.content)
        return httpx.Response(forwarded.status_code, content=forwarded.content, headers=forwarded.headers)

    proxy = make("http://influx.invalid", transport=mock(handler))
    with pytest.raises(TransientError, match="HTTP 404 without InfluxDB's `not found` answer"):
        proxy.revoke(minted.token_id, None)
    assert [t for t in issuer.list_tokens(None) if t.token_id == minted.token_id and t.is_active(datetime.now(UTC))]
    upstream.close()


def test_stage_two_reads_a_token_again_before_deleting_it(influxdb2_fake: InfluxDB2Fake, admin: Secret) -> None:
    """rotator paused between stage 2's listing and its DELETE (SIGSTOP, a slow network) while an
    operator made the token active again (`influx auth active`), because a consumer still needed it:
    v2 has no conditional DELETE, so the token is read again just before, and left alone."""
    fake = influxdb2_fake
    minted = make(fake.url).mint(request("0000000000000001"), None)
    make(fake.url).revoke(minted.token_id, None)  # stage 1: inactive, with the marker
    fake.age(minted.token_id, 8 * 86400)
    real = httpx.HTTPTransport()

    class ReactivatedAfterTheListing(httpx.BaseTransport):
        def handle_request(self, req: httpx.Request) -> httpx.Response:
            response = real.handle_request(req)
            if req.method == "GET" and req.url.path == "/api/v2/authorizations":
                response.read()
                fake.set_status(minted.token_id, "active")
            return response

    later = make(fake.url, transport=ReactivatedAfterTheListing(),
                 clock=FakeClock(datetime.now(UTC) + timedelta(days=8)))
    later.revoke("00000000000000ff", None)  # a revocation runs stage 2
    assert fake.deleted == []
    assert fake.authorization(minted.token_id)["status"] == "active"  # type: ignore[index]
    make(fake.url, clock=FakeClock(datetime.now(UTC) + timedelta(days=8))).revoke("00000000000000ff", None)
    assert fake.deleted == [], "active: not rotator's to delete"


def test_token_info_looks_one_authorization_up_and_never_takes_unreadable_for_gone(
    influxdb2_fake: InfluxDB2Fake, admin: Secret
) -> None:
    """The lookup behind a token the listing does not show: the authorization as listed (of any
    organization), None only for InfluxDB's own 404, an error for a 401 (the credential may not read
    its user), a proxy's 404 or an answer about another id."""
    fake = influxdb2_fake
    minted = make(fake.url).mint(request(), None)
    info = make(fake.url).token_info(minted.token_id, None)
    assert info is not None and info.token_id == minted.token_id and "rotator:ingest:" in info.description
    assert info.foreign is None, "org_id's own authorization"
    assert make(fake.url).token_info("00000000000000ff", None) is None
    blind = [{"action": a, "resource": {"type": "authorizations", "orgID": ORG_ID}} for a in ("read", "write")]
    value, _ = fake.add_authorization("no read on the user", blind)
    with pytest.raises(PermanentError, match="401") as caught:
        make(fake.url, credential="self").token_info(minted.token_id, Secret(value))
    assert "read and write on the user" in (caught.value.hint or "")

    def proxy(req: httpx.Request) -> httpx.Response:
        return httpx.Response(404, text="<html>not here</html>")

    with pytest.raises(TransientError, match="without InfluxDB's `not found`"):
        make("http://influx.invalid:8086", transport=mock(proxy)).token_info(minted.token_id, None)

    def other(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"id": "00000000000000aa", "status": "active"})

    with pytest.raises(IssuerOutputError, match="is not authorization"):
        make("http://influx.invalid:8086", transport=mock(other)).token_info(minted.token_id, None)

    whose = {"ffffffffffffffff": "organization ffffffffffffffff", None: "no organization"}
    for org in ({"orgID": "ffffffffffffffff"}, {}):
        def foreign(req: httpx.Request, org: dict[str, str] = org) -> httpx.Response:
            return httpx.Response(200, json={"id": minted.token_id, "status": "active", **org,
                                             "description": f"rotator:{POLICY}:0123456789abcdef"})

        info = make("http://influx.invalid:8086", transport=mock(foreign)).token_info(minted.token_id, None)
        assert info is not None and info.revoked_at is None, \
            "another organization's (or no organization's) authorization exists all the same: never 'no such token'"
        # ...but marked, for bootstrap to refuse it (tests/engine/test_bootstrap_foreign_org.py)
        assert info.foreign is not None and info.foreign.startswith(whose[org.get("orgID")])
        assert info.foreign.endswith(f", not org_id {ORG_ID}")


def test_a_pending_revocation_of_an_authorization_of_another_org_revokes_it(
    influxdb2_fake: InfluxDB2Fake, admin: Secret
) -> None:
    """org_id corrected while a revocation was pending: the listing by the new org_id does not show
    the authorization rotator minted, and the lookup by id finds it active in the old one. "No such
    token" there made the engine record the revocation done ("already revoked") while it stayed
    active. Whose it is, the revocation rule decides as for any token (the journal's claim and the
    policy's tag); the PATCH works across organizations."""
    from rotator.core.contracts import with_unlisted
    from rotator.core.errors import NeedsAttention
    from rotator.core.revocation_rule import Claim, check_revocable

    fake = influxdb2_fake
    minted = make(fake.url).mint(request(), None)
    moved = make(fake.url, org_id="ffffffffffffffff")  # the setting now names another organization
    listed = moved.list_tokens(None)
    assert all(t.token_id != minted.token_id for t in listed)
    tokens = with_unlisted(moved, listed, minted.token_id, None)  # what the engine's _safe_revoke does
    assert [t.foreign for t in tokens] == [f"organization {ORG_ID}, not org_id ffffffffffffffff"]  # judged all the same
    claim = Claim(minted.token_id, POLICY, minted_by=["0123456789abcdef"], source="journal")
    assert check_revocable(claim, tokens, [], datetime.now(UTC)) is True, "not 'already revoked': it is active"
    moved.revoke(minted.token_id, None)
    assert fake.authorization(minted.token_id)["status"] == "inactive"  # type: ignore[index]
    _, human = fake.add_authorization("a person's", READ_WRITE_BUCKET)  # no tag: whatever a record claims
    with pytest.raises(NeedsAttention, match="does not carry"):
        check_revocable(claim._replace(token_id=human), with_unlisted(moved, listed, human, None), [],
                        datetime.now(UTC))
    assert fake.authorization(human)["status"] == "active"  # type: ignore[index]


@pytest.mark.parametrize(("token", "kept"), [
    ("a" * 86 + "==", True), ("redacted", False), ("****" + "a" * 20, False), ("short", False), (None, False),
    ("$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA", False),
    (12345678901234567890, False), (" " + "a" * 20, False),
])
def test_a_listed_token_value_is_kept_only_as_the_digest_of_a_whole_token(token: Any, kept: bool) -> None:
    """OSS before hashed tokens lists values in clear text: the issuer keeps only their SHA-256 (the
    bootstrap check of the id against the value), and nothing for a masked, redacted or odd one."""
    import hashlib

    from rotator.adapters.http.influxdb2 import _DIGEST_KEY, _keep_digest

    item: dict[str, Any] = {"id": "0" * 16, _DIGEST_KEY: "forged by the server"}
    _keep_digest(item, token)
    assert item.get(_DIGEST_KEY) == (hashlib.sha256(token.encode()).hexdigest() if kept else None)


# ---------------------------------------------------------------------------------- inactive tokens, as OSS answers


WRITE_ONLY = [{"action": "write", "resource": {"type": "buckets", "id": BUCKET_ID, "orgID": ORG_ID}}]


def test_the_fake_answers_an_inactive_token_as_oss_does(influxdb2_fake: InfluxDB2Fake, admin: Secret) -> None:
    """OSS authenticates an inactive token (the middleware never looks at its status); its permission
    set fails every check: listings leave everything out (200, empty), a check of one thing is 401."""
    fake = influxdb2_fake
    value, auth_id = fake.add_authorization("inactive reader", READ_WRITE_BUCKET)
    headers = {"Authorization": f"Token {value}"}
    assert httpx.get(f"{fake.url}/api/v2/buckets", headers=headers).json()["buckets"]
    fake.set_status(auth_id, "inactive")
    buckets = httpx.get(f"{fake.url}/api/v2/buckets", params={"limit": 1}, headers=headers)
    assert buckets.status_code == 200 and buckets.json()["buckets"] == []
    me = httpx.get(f"{fake.url}/api/v2/me", headers=headers)
    assert me.status_code == 401 and me.json() == {"code": "unauthorized", "message": "token is inactive"}
    unknown = httpx.get(f"{fake.url}/api/v2/me", headers={"Authorization": "Token not-a-token-of-this-server"})
    assert unknown.status_code == 401 and unknown.json()["message"] == "unauthorized access"


@pytest.mark.parametrize("permissions", [READ_WRITE_BUCKET, WRITE_ONLY], ids=["reads-the-bucket", "write-only"])
def test_verify_refuses_an_inactive_token_and_accepts_one_that_sees_no_bucket(
    influxdb2_fake: InfluxDB2Fake, admin: Secret, permissions: list[dict[str, Any]]
) -> None:
    """An empty bucket list proves nothing (an inactive token gets one too): ``/api/v2/me`` decides.
    A live token that may not read its user is refused there by a permission check, which proves
    its permission set was read: it is active."""
    from rotator.core.errors import NotYetAccepted

    fake = influxdb2_fake
    issuer = make(fake.url, permissions=permissions)
    minted = issuer.mint(request(), None)
    issuer.verify(minted.value)
    fake.set_status(minted.token_id, "inactive")
    with pytest.raises(NotYetAccepted, match="token is inactive") as err:
        issuer.verify(minted.value)
    assert minted.value.reveal() not in str(err.value) + err.value.hint
    fake.set_status(minted.token_id, "active")
    issuer.verify(minted.value)
    assert [c.status for c in fake.api.calls_to("GET", "/api/v2/me")] == (
        [401, 401, 401] if permissions is WRITE_ONLY else [401])


def test_verify_of_a_token_that_reads_a_bucket_needs_one_request(influxdb2_fake: InfluxDB2Fake, admin: Secret) -> None:
    issuer = make(influxdb2_fake.url)
    issuer.verify(admin)
    assert len(influxdb2_fake.api.calls) == 1


def test_a_retry_after_of_a_429_is_on_the_error(influxdb2_fake: InfluxDB2Fake, admin: Secret) -> None:
    issuer = make(influxdb2_fake.url)
    target = issuer.mint(request(), None)
    influxdb2_fake.fail_next("patch", 429, message="slow down", headers={"Retry-After": "7"})
    with pytest.raises(TransientError) as err:
        issuer.revoke(target.token_id, None)
    assert err.value.retry_after == 7
    assert "the server asks to wait 7s before trying again (Retry-After)" in str(err.value)
