"""What the HTTP issuers keep of a server's error text (rotator/adapters/http/common.py
``redact_detail``), and times no datetime holds in UTC (``parse_time``).

Token shapes are masked even when rotator does not know the value; an InfluxDB v2 resource path,
as long as a token, is what the operator must read to fix a refusal and is kept.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from rotator.adapters.http.common import bad_token_id, parse_time, redact_detail
from rotator.adapters.http.influxdb2 import InfluxDB2Issuer, InfluxDB2Settings
from rotator.core.contracts import AdapterContext, MintRequest
from rotator.core.errors import IssuerOutputError, PermanentError
from rotator.core.secret import Secret

ORG, BUCKET = "0a0b0c0d0e0f1011", "2a2b2c2d2e2f3031"
_RAW = bytes(range(190, 254))  # 64 bytes whose base64 has '+' and '/', base64url '-' and '_'
V2_URLSAFE = base64.urlsafe_b64encode(_RAW).decode()  # an OSS v2 token: 88 characters, ending "=="
V2_STANDARD = base64.b64encode(_RAW).decode()
V3 = "apiv3_" + base64.urlsafe_b64encode(_RAW).decode().rstrip("=")


@pytest.mark.parametrize("path", [
    f"orgs/{ORG}/buckets/{BUCKET}",
    f"orgs/{ORG}/notificationEndpoints",
    f"orgs/{ORG}/notificationEndpoints/{BUCKET}",
])  # fmt: skip
def test_an_influxdb_resource_path_is_kept(path: str) -> None:
    assert len(path) >= 40, "as long as the token shape: the case this test is about"
    for text in (f"permission read:{path} is not allowed", f"write:{path} is unauthorized"):
        assert redact_detail(text) == text


@pytest.mark.parametrize("token", [
    V2_URLSAFE,
    V2_STANDARD,
    V2_STANDARD.rstrip("="),
    V3,
    "apiv3_short-one",
    "ab" * 32,  # a long hex run
    "Q" * 40,  # letters only
    f"orgs/{ORG}/buckets/{BUCKET}/{V2_STANDARD}",  # a token behind a path is no path
    f"{V2_STANDARD.rstrip('=')}/orgs/{ORG}/buckets/{BUCKET}",
    f"orgs/{ORG}/buckets/{BUCKET}==",
])  # fmt: skip
def test_token_shapes_are_still_masked(token: str) -> None:
    masked = redact_detail(f"bad token {token} for request")
    assert masked == "bad token *** for request", masked
    assert token not in str(bad_token_id(token, "influxdb2", "an id"))


def test_a_403_of_influxdb2_names_the_missing_permission_and_no_token() -> None:
    """The reviewer's case: the refusal OSS sends when the credential lacks a permission it grants,
    with a token-shaped value beside it in the same text."""
    message = f"permission read:orgs/{ORG}/buckets/{BUCKET} is not allowed"

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(403, json={"code": "forbidden", "message": f"{message} ({V2_URLSAFE})"})

    settings = InfluxDB2Settings.model_validate({
        "base_url": "https://influx.example", "org_id": ORG, "credential": "self",
        "permissions": [{"action": "read", "resource": {"type": "buckets", "id": BUCKET, "orgID": ORG}}],
    })  # fmt: skip
    issuer = InfluxDB2Issuer.from_config(
        settings, AdapterContext(policy="app"), transport=httpx.MockTransport(handler)
    )
    with pytest.raises(PermanentError) as err:
        issuer.mint(MintRequest("app", "run1", "rotator:app:run1", datetime.now(UTC) + timedelta(days=1)),
                    Secret("x" * 40))
    assert f"HTTP 403: {message} (***)" in str(err.value)
    assert V2_URLSAFE not in str(err.value) + err.value.hint


@pytest.mark.parametrize("text", ["9999-12-31T23:30:00-01:00", "0001-01-01T00:30:00+01:00"])
def test_a_time_whose_utc_is_past_what_a_datetime_holds_is_an_issuer_output_error(text: str) -> None:
    with pytest.raises(IssuerOutputError, match="authorization x `updatedAt` is out of range"):
        parse_time(text, "authorization x `updatedAt`")


def test_times_at_the_edges_that_fit_are_read() -> None:
    assert parse_time("9999-12-31T22:30:00-01:00", "t").year == 9999  # type: ignore[union-attr]
    assert parse_time("0001-01-01T00:30:00-01:00", "t").year == 1  # type: ignore[union-attr]
    assert parse_time("9999-12-31T23:59:59", "t").tzinfo is not None  # type: ignore[union-attr]
