"""management-api: server text in an error is masked for every token shape, not only Cloud's.

The issuer masked ``M.V1.`` and ``apiv*_`` tokens in the text of an error answer, but not the
generic long run of token characters the other HTTP issuers mask (common.redact_detail's shapes):
a management API, gateway or proxy that echoed a token of another shape (a v2 token, a management
token of another format) had it copied into the error's message, and from there into the journal,
the logs and the events. Now the generic shapes are masked too.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from rotator.adapters.http.management_api import ManagementApiIssuer, ManagementApiSettings
from rotator.core.contracts import AdapterContext
from rotator.core.errors import RotatorError
from rotator.core.secret import Secret

TOKEN_ID = "55555555-5555-4555-8555-555555555555"


def _issuer(tmp_path: Path, handler: Callable[[httpx.Request], httpx.Response]) -> ManagementApiIssuer:
    (tmp_path / "t").write_text("M.V1.not-a-real-token-0000")
    settings = ManagementApiSettings.model_validate({
        "product": "clustered", "cluster_host": "https://cluster.example.test",
        "permissions": [{"action": "read", "resource": "*"}], "verify": {"database": "x"},
        "management_token": {"file": str(tmp_path / "t")},
    })  # fmt: skip
    client = httpx.Client(transport=httpx.MockTransport(handler))
    return ManagementApiIssuer.from_config(settings, AdapterContext(policy="db", base_dir=tmp_path), client=client)


def _generic_token() -> str:
    """48 characters of base64url, no known prefix: the shape of many tokens (and of none of Cloud's)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(36)).decode()


def _calls(issuer: ManagementApiIssuer) -> dict[str, Callable[[], object]]:
    return {
        "list": lambda: issuer.list_tokens(None),
        "revoke": lambda: issuer.revoke(TOKEN_ID, None),
        "verify": lambda: issuer.verify(Secret("apiv1_" + "n" * 40)),
    }


@pytest.mark.parametrize("call", ["list", "revoke", "verify"])
@pytest.mark.parametrize("status", [400, 403, 500])
def test_an_echoed_token_of_another_shape_is_masked(tmp_path: Path, call: str, status: int) -> None:
    echoed = _generic_token()
    body = {"code": status, "message": f"token {echoed} is not allowed here (id {TOKEN_ID})"}
    issuer = _issuer(tmp_path, lambda request: httpx.Response(status, json=body))
    with pytest.raises(RotatorError) as caught:
        _calls(issuer)[call]()
    text, hint = str(caught.value), caught.value.hint or ""
    assert echoed not in text and echoed not in hint, "a token echoed by the server reached the error"
    assert echoed[:20] not in text, "not even a part of it"
    assert "token *** is not allowed here" in text, text
    assert TOKEN_ID in text, "a UUID (36 characters) is not token-shaped: the message still names it"


def test_an_echoed_token_in_a_query_error_is_masked(tmp_path: Path) -> None:
    """verify's other path for server text: a 200 whose ``results`` carry an error."""
    echoed = _generic_token()
    answer = {"results": [{"statement_id": 0, "error": f"authorization {echoed} failed"}]}
    issuer = _issuer(tmp_path, lambda request: httpx.Response(200, json=answer))
    with pytest.raises(RotatorError) as caught:
        issuer.verify(Secret("apiv1_" + "n" * 40))
    assert echoed not in f"{caught.value} {caught.value.hint}"
    assert "authorization *** failed" in str(caught.value)


@pytest.mark.parametrize("echoed", ["M.V1.abcdefgh.ijklmnop.qrstuvwx", "apiv1_abcdefghijklmnopqrstuvwxyz"])
def test_cloud_token_shapes_stay_masked_whole(tmp_path: Path, echoed: str) -> None:
    """The shapes masked before still are, dots and all (the generic run stops at a dot)."""
    body = {"code": 403, "message": f"token {echoed} may not"}
    issuer = _issuer(tmp_path, lambda request: httpx.Response(403, json=body))
    with pytest.raises(RotatorError) as caught:
        issuer.list_tokens(None)
    assert "token *** may not" in str(caught.value) and "ijkl" not in str(caught.value)
